// Hugging Face folders: small random checkpoints of each family, written in the hub's layout by
// scripts/make_hf_checkpoint.py, load and give the logits of a float64 implementation of the
// published architecture written here from the papers' and transformers' formulas (GQA, biases,
// fused Phi-3 tensors, llama3 and longrope RoPE, Mistral's window), in one call and streamed.
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "io/fs.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/hf.h"
#include "model/pretrained.h"
#include "nn/linear.h"
#include "test_util.h"

using namespace longctx;
using namespace longctx::testing;

namespace {

std::string make_checkpoint(const std::string& family, const std::string& extra = "") {
  const auto dir = temp_dir("hf-" + family + (extra.empty() ? "" : "-x"));
  const auto cmd = "python3 " + source_dir() + "/scripts/make_hf_checkpoint.py " + family + " " + dir + " " + extra +
                   " > /dev/null";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return dir;
}

// The folder's tensors as float64, read shard by shard, with the family's own names.
std::map<std::string, torch::Tensor> read_tensors(const std::string& dir) {
  std::vector<std::string> files;
  if (std::filesystem::exists(dir + "/model.safetensors.index.json")) {
    auto idx = nlohmann::json::parse(read_file(dir + "/model.safetensors.index.json"));
    std::set<std::string> s;
    for (auto& [k, v] : idx["weight_map"].items()) s.insert(v.get<std::string>());
    files.assign(s.begin(), s.end());
  } else {
    files = {"model.safetensors"};
  }
  std::map<std::string, torch::Tensor> w;
  for (auto& f : files)
    for (auto& [n, t] : load_safetensors(dir + "/" + f).tensors) w[n] = t.to(torch::kFloat64);
  return w;
}

// The published decoder in float64: RMSNorm, RoPE (rotate halves), grouped-query softmax
// attention with a causal (and for Mistral, sliding) mask, SwiGLU, tied or separate head.
torch::Tensor reference_logits(const std::string& dir, const std::vector<int64_t>& ids) {
  auto c = nlohmann::json::parse(read_file(dir + "/config.json"));
  auto w = read_tensors(dir);
  const std::string fam = c["model_type"];
  const int64_t D = c["hidden_size"], H = c["num_attention_heads"], L = c["num_hidden_layers"];
  const int64_t KVH = c.value("num_key_value_heads", H);
  const int64_t hd = c.contains("head_dim") ? c["head_dim"].get<int64_t>() : D / H;
  const int64_t F = c["intermediate_size"], T = int64_t(ids.size());
  const double eps = c["rms_norm_eps"];
  nlohmann::json rs = c.contains("rope_scaling") ? c["rope_scaling"] : nlohmann::json();
  double theta = c.contains("rope_theta") ? c["rope_theta"].get<double>() : 10000.0;
  if (c.contains("rope_parameters")) {
    theta = c["rope_parameters"]["rope_theta"];
    rs = c["rope_parameters"];
  }
  int64_t window = 0;
  if (fam == "mistral" && c["sliding_window"].is_number()) window = c["sliding_window"];

  // Inverse frequencies and the attention factor.
  std::vector<double> inv(size_t(hd / 2));
  double mscale = 1.0;
  for (int64_t i = 0; i < hd / 2; ++i) inv[size_t(i)] = std::pow(theta, -2.0 * double(i) / double(hd));
  const std::string rtype = rs.is_object() ? rs.value("rope_type", rs.value("type", std::string("default"))) : "default";
  if (rtype == "llama3") {
    const double factor = rs["factor"], lo = rs["low_freq_factor"], hi = rs["high_freq_factor"];
    const double old = rs["original_max_position_embeddings"];
    for (auto& f : inv) {
      const double wavelen = 2 * M_PI / f;
      if (wavelen > old / lo) {
        f /= factor;
      } else if (wavelen >= old / hi) {
        const double s = (old / wavelen - lo) / (hi - lo);
        f = (1 - s) * f / factor + s * f;
      }
    }
  } else if (rtype == "longrope") {
    const double orig = c["original_max_position_embeddings"], maxp = c["max_position_embeddings"];
    auto fac = rs[T > int64_t(orig) ? "long_factor" : "short_factor"].get<std::vector<double>>();
    for (size_t i = 0; i < inv.size(); ++i) inv[i] /= fac[i];
    const double scale = maxp / orig;
    if (scale > 1) mscale = std::sqrt(1 + std::log(scale) / std::log(orig));
  }
  auto rope = [&](torch::Tensor x) {  // [T, heads, hd]
    auto y = x.clone();
    auto a = x.accessor<double, 3>();
    auto b = y.accessor<double, 3>();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < x.size(1); ++h)
        for (int64_t i = 0; i < hd / 2; ++i) {
          const double ang = double(t) * inv[size_t(i)], co = std::cos(ang) * mscale, si = std::sin(ang) * mscale;
          b[t][h][i] = a[t][h][i] * co - a[t][h][i + hd / 2] * si;
          b[t][h][i + hd / 2] = a[t][h][i + hd / 2] * co + a[t][h][i] * si;
        }
    return y;
  };
  auto rms = [&](const torch::Tensor& x, const torch::Tensor& g) {
    return x * torch::rsqrt(x.pow(2).mean(-1, true) + eps) * g;
  };
  auto idx = torch::tensor(ids, torch::kInt64);
  auto x = w.at("model.embed_tokens.weight").index_select(0, idx);  // [T, D]
  for (int64_t l = 0; l < L; ++l) {
    const auto p = "model.layers." + std::to_string(l) + ".";
    auto h = rms(x, w.at(p + "input_layernorm.weight"));
    torch::Tensor wq, wk, wv;
    if (fam == "phi3") {
      auto qkv = w.at(p + "self_attn.qkv_proj.weight");
      wq = qkv.narrow(0, 0, H * hd), wk = qkv.narrow(0, H * hd, KVH * hd), wv = qkv.narrow(0, (H + KVH) * hd, KVH * hd);
    } else {
      wq = w.at(p + "self_attn.q_proj.weight"), wk = w.at(p + "self_attn.k_proj.weight"), wv = w.at(p + "self_attn.v_proj.weight");
    }
    auto q = h.matmul(wq.t()), k = h.matmul(wk.t()), v = h.matmul(wv.t());
    if (w.count(p + "self_attn.q_proj.bias"))
      q = q + w.at(p + "self_attn.q_proj.bias"), k = k + w.at(p + "self_attn.k_proj.bias"), v = v + w.at(p + "self_attn.v_proj.bias");
    q = rope(q.view({T, H, hd})), k = rope(k.view({T, KVH, hd}));
    v = v.view({T, KVH, hd});
    auto out = torch::zeros({T, H, hd}, torch::kFloat64);
    for (int64_t hh = 0; hh < H; ++hh) {
      const int64_t g = hh / (H / KVH);
      auto s = q.select(1, hh).matmul(k.select(1, g).t()) / std::sqrt(double(hd));  // [T, T]
      for (int64_t t = 0; t < T; ++t)
        for (int64_t u = 0; u < T; ++u)
          if (u > t || (window > 0 && t - u >= window)) s[t][u] = -INFINITY;
      out.select(1, hh).copy_(torch::softmax(s, -1).matmul(v.select(1, g)));
    }
    x = x + out.reshape({T, H * hd}).matmul(w.at(p + "self_attn.o_proj.weight").t());
    auto h2 = rms(x, w.at(p + "post_attention_layernorm.weight"));
    torch::Tensor gate, up;
    if (fam == "phi3") {
      auto gu = h2.matmul(w.at(p + "mlp.gate_up_proj.weight").t());
      gate = gu.narrow(1, 0, F), up = gu.narrow(1, F, F);
    } else {
      gate = h2.matmul(w.at(p + "mlp.gate_proj.weight").t()), up = h2.matmul(w.at(p + "mlp.up_proj.weight").t());
    }
    x = x + (gate * torch::sigmoid(gate) * up).matmul(w.at(p + "mlp.down_proj.weight").t());
  }
  x = rms(x, w.at("model.norm.weight"));
  auto head = w.count("lm_head.weight") ? w.at("lm_head.weight") : w.at("model.embed_tokens.weight");
  return x.matmul(head.t());
}

std::vector<int64_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> v(static_cast<size_t>(n), 0);
  for (auto& x : v) x = int64_t(rng() % uint64_t(vocab));
  return v;
}

torch::Tensor logits_of(Pretrained& p, const std::vector<int64_t>& ids, int64_t chunk) {
  torch::NoGradGuard ng;
  auto st = p.model->new_state();
  std::vector<torch::Tensor> outs;
  for (size_t i = 0; i < ids.size(); i += size_t(chunk)) {
    std::vector<int64_t> part(ids.begin() + int64_t(i), ids.begin() + int64_t(std::min(ids.size(), i + size_t(chunk))));
    outs.push_back(p.model->forward(torch::tensor(part, torch::kInt64).view({1, -1}), st)[0]);
  }
  return torch::cat(outs, 0).to(torch::kFloat64);
}

void expect_close(const torch::Tensor& a, const torch::Tensor& b, double tol, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double err = (a - b).abs().max().item<double>();
  EXPECT_LT(err, tol) << what << ": max |difference| " << err << " (logits up to " << b.abs().max().item<double>() << ")";
}

}  // namespace

TEST(HfCheckpoint, EachFamilyGivesTheFloat64ReferencesLogitsInOneCallAndStreamed) {
  for (std::string fam : {"llama", "mistral", "qwen2", "phi3"}) {
    SCOPED_TRACE(fam);
    const auto dir = make_checkpoint(fam, fam == "llama" ? "--shards 2" : fam == "qwen2" ? "--dtype F32" : fam == "mistral" ? "--dtype F16" : "");
    auto p = load_pretrained(dir);
    EXPECT_EQ(p.tokenizer->type(), "bpe");
    const auto ids = random_ids(100, p.model_config.vocab_size, 11);
    auto want = reference_logits(dir, ids);
    expect_close(logits_of(p, ids, 100), want, 1e-4, fam + " one call");
    if (fam != "phi3") {
      expect_close(logits_of(p, ids, 7), want, 1e-4, fam + " streamed in chunks of 7");
    } else {
      // Longrope: a call spanning more than the original 32 positions uses the long factors for
      // all of them, a shorter one the short factors. A stream whose first call is already past
      // the original length is the one call; the switch within a stream is the rope-scaling
      // tests' (the cached keys re-rotated).
      std::vector<int64_t> prefix(ids.begin(), ids.begin() + 20);
      expect_close(logits_of(p, prefix, 20), reference_logits(dir, prefix), 1e-4, "phi3 under the original length");
      expect_close(logits_of(p, ids, 40), want, 1e-4, "phi3 streamed in chunks of 40");
    }
    std::filesystem::remove_all(dir);
  }
}

TEST(HfCheckpoint, RopeParametersSpellingReadsTheSameModel) {
  const auto a = make_checkpoint("llama", "--seed 3"), b = make_checkpoint("qwen2", "--seed 3 --rope-parameters");
  const auto c = make_checkpoint("llama", "--seed 3 --rope-parameters");
  auto pa = load_pretrained(a), pc = load_pretrained(c);
  EXPECT_EQ(pa.model_config.to_json().dump(), pc.model_config.to_json().dump());
  const auto ids = random_ids(70, pa.model_config.vocab_size, 5);
  expect_close(logits_of(pc, ids, 70), logits_of(pa, ids, 70), 1e-6, "rope_parameters vs rope_theta + rope_scaling");
  auto pb = load_pretrained(b);
  expect_close(logits_of(pb, ids, 70), reference_logits(b, ids), 1e-4, "qwen2 with rope_parameters");
  for (auto& d : {a, b, c}) std::filesystem::remove_all(d);
}

TEST(HfCheckpoint, UnsupportedOrInconsistentFoldersGiveOneErrorNamingTheField) {
  const auto dir = make_checkpoint("mistral");
  auto cfg = nlohmann::json::parse(read_file(dir + "/config.json"));
  auto with = [&](auto edit) {
    auto c = cfg;
    edit(c);
    write_file_atomic(dir + "/config.json", c.dump());
    try {
      load_pretrained(dir);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(with([](auto& c) { c["model_type"] = "gpt_neox"; }).find("model_type 'gpt_neox' is not supported"), std::string::npos);
  EXPECT_NE(with([](auto& c) { c["hidden_act"] = "gelu"; }).find("hidden_act 'gelu'"), std::string::npos);
  EXPECT_NE(with([](auto& c) { c["num_hidden_layers"] = 3; }).find("missing tensor 'model.layers.2."), std::string::npos);
  EXPECT_NE(with([](auto& c) { c["num_hidden_layers"] = 1; }).find("'model.layers.1."), std::string::npos);
  EXPECT_NE(with([](auto& c) { c["intermediate_size"] = 100; }).find("has shape"), std::string::npos);
  EXPECT_NE(with([](auto& c) { c["rope_scaling"] = {{"rope_type", "mystery"}, {"factor", 2}}; }).find("rope_type"), std::string::npos);
  EXPECT_NE(with([](auto& c) { c.erase("hidden_size"); }).find("'hidden_size'"), std::string::npos);
  EXPECT_EQ(with([](auto&) {}), "");
  std::filesystem::remove(dir + "/model.safetensors");
  EXPECT_NE(with([](auto&) {}).find("no model.safetensors"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(HfCheckpoint, ExportWritesAFolderTheLoaderReadsBackWithTheSameLogitsAndByteIds) {
  auto p = load_pretrained(source_dir() + "/models/transformer-tiny");
  const auto dir = temp_dir("hf-export");
  save_hf_folder(p, dir, "F32");
  auto cfg = nlohmann::json::parse(read_file(dir + "/config.json"));
  EXPECT_EQ(cfg["model_type"], "llama");
  EXPECT_EQ(cfg["architectures"][0], "LlamaForCausalLM");
  EXPECT_TRUE(is_hf_folder(dir));
  auto back = load_pretrained(dir);
  EXPECT_EQ(back.tokenizer->type(), "bpe");
  const std::string text = "Fellow-citizens, h\xC3\xA9llo \xF0\x9F\x98\x80";
  EXPECT_EQ(back.tokenizer->encode(text), p.tokenizer->encode(text));  // ids are the bytes
  EXPECT_EQ(back.tokenizer->decode(back.tokenizer->encode(text)), text);
  const auto ids = random_ids(90, 256, 2);
  expect_close(logits_of(back, ids, 90), logits_of(p, ids, 90), 1e-5, "exported and read back");
  std::filesystem::remove_all(dir);

  auto inf = load_pretrained(source_dir() + "/models/infini-passkey");
  try {
    save_hf_folder(inf, dir, "F32");
    FAIL() << "an Infini-attention model was exported as a Hugging Face folder";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("mixer 'infini_attention' has no Hugging Face architecture"), std::string::npos) << e.what();
  }
}

// The suite's fuzz smoke for config.json (`make fuzz` runs libFuzzer on it for 10^6 executions):
// seeded mutations of the fuzzer's seeds, as text and as JSON values, each give a config or one
// error before any weights exist.
TEST(HfCheckpoint, MutatedConfigsConvertOrFailCleanly) {
  std::vector<std::string> seeds;
  for (auto& e : std::filesystem::directory_iterator(source_dir() + "/fuzz/corpus/hf_config")) seeds.push_back(read_file(e.path()));
  ASSERT_GE(seeds.size(), 4u);
  std::mt19937_64 rng(5);
  const std::vector<nlohmann::json> odd = {nullptr, -1, 0, 1, int64_t(1) << 40, 1e300, -0.5, "x", true,
                                           nlohmann::json::array(), nlohmann::json::object(), {{"rope_type", "yarn"}}};
  int ok = 0, refused = 0;
  for (int n = 0; n < 2000; ++n) {
    std::string text = seeds[size_t(n) % seeds.size()];
    if (n % 2) {  // a JSON-level mutation: a field set to an odd value or removed
      auto j = nlohmann::json::parse(text);
      auto it = j.begin();
      std::advance(it, int64_t(rng() % j.size()));
      if (rng() % 4 == 0) j.erase(it.key());
      else j[it.key()] = odd[rng() % odd.size()];
      text = j.dump();
    } else {  // a byte-level mutation
      for (int m = 1 + int(rng() % 3); m > 0; --m) text[rng() % text.size()] = "{}[]\",:0123456789-e.tn"[rng() % 22];
    }
    try {
      auto c = hf_to_longctx_config(nlohmann::json::parse(text), "mutated/config.json");
      ModelConfig::from_json(c["model"], "mutated/config.json");
      ++ok;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).size(), 0u);
      ++refused;
    }
  }
  EXPECT_GT(ok, 100);
  EXPECT_GT(refused, 100);
}

// generation_config.json's eos_token_id (a number or a list; else config.json's) ends `generate`:
// greedy text from the CLI, then the same with its first generated token made the EOS, is empty.
TEST(HfCheckpoint, EosTokenFromGenerationConfigEndsGeneration) {
  const auto dir = make_checkpoint("qwen2", "--seed 4");
  auto p = load_pretrained(dir);
  auto ids = eos_token_ids(p);
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(ids[0], nlohmann::json::parse(read_file(dir + "/generation_config.json"))["eos_token_id"].get<int64_t>());
  const auto exe = std::filesystem::read_symlink("/proc/self/exe").parent_path() / "longctx";
  auto run = [&] {
    const auto cmd = exe.string() + " --threads 1 generate --model " + dir +
                     " --prompt 'The sky is' --max-tokens 8 --temperature 0 2>/dev/null";
    std::string out;
    FILE* f = popen(cmd.c_str(), "r");
    char buf[256];
    while (f && fgets(buf, sizeof buf, f)) out += buf;
    if (f) pclose(f);
    return out;
  };
  const auto free_text = run();
  ASSERT_GT(free_text.size(), std::string("The sky is\n").size()) << free_text;
  // The first generated token: greedy from the prompt.
  torch::NoGradGuard ng;
  auto st = p.model->new_state();
  auto prompt = p.tokenizer->encode("The sky is");
  auto lg = p.model->forward(torch::tensor(prompt, torch::kInt64).view({1, -1}), st)[0][-1];
  const int64_t first = lg.argmax().item<int64_t>();
  auto gen = nlohmann::json::parse(read_file(dir + "/generation_config.json"));
  gen["eos_token_id"] = nlohmann::json::array({first, 9999});
  write_file_atomic(dir + "/generation_config.json", gen.dump());
  EXPECT_EQ(eos_token_ids(load_pretrained(dir)), (std::vector<int64_t>{first, 9999}));
  EXPECT_EQ(run(), "The sky is\n");
  std::filesystem::remove_all(dir);
}

namespace {
// Runs the command and returns its standard output.
std::string output_of(const std::string& cmd) {
  std::string out;
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  pclose(f);
  return out;
}

// Restores the process-wide weight policy when a test changes it.
struct PolicyGuard {
  WeightPolicy saved = weight_policy();
  ~PolicyGuard() { weight_policy() = saved; }
};
}  // namespace

TEST(HfCheckpoint, StoredDtypeMatricesStayStoredAndGiveTheFloat32ModelsLogitsBitForBit) {
  PolicyGuard guard;
  for (std::string fam : {"llama", "mistral", "qwen2", "phi3"}) {
    SCOPED_TRACE(fam);
    const std::string dtype = fam == "mistral" ? "F16" : "BF16";
    const auto dir = make_checkpoint(fam, "--dtype " + dtype + (fam == "llama" ? " --shards 2" : ""));
    const auto stored = dtype == "F16" ? torch::kFloat16 : torch::kBFloat16;
    weight_policy() = WeightPolicy{};  // the default: kept as stored
    auto kept = load_pretrained(dir);
    weight_policy().keep_stored = false;
    auto wide = load_pretrained(dir);
    std::map<std::string, torch::Tensor> w;
    for (auto& [n, p] : named_weights(kept.model)) w[n] = p;
    // Every Linear / Embedding matrix (Phi-3's split parts too) is held as stored; norms in float32.
    EXPECT_EQ(w.at("model.embed_tokens.weight").scalar_type(), stored);
    EXPECT_EQ(w.at("model.layers.1.self_attn.k_proj.weight").scalar_type(), stored);
    EXPECT_EQ(w.at("model.layers.0.mlp.up_proj.weight").scalar_type(), stored);
    EXPECT_EQ(w.at("model.layers.0.input_layernorm.weight").scalar_type(), torch::kFloat32);
    if (fam == "qwen2") {
      EXPECT_EQ(w.at("model.layers.0.self_attn.q_proj.bias").scalar_type(), torch::kFloat32);
    }
    for (auto& [n, p] : named_weights(wide.model)) EXPECT_EQ(p.scalar_type(), torch::kFloat32) << n;
    int64_t kept_bytes = 0, wide_bytes = 0;
    for (auto& p : kept.model->parameters()) kept_bytes += p.numel() * int64_t(p.element_size());
    for (auto& p : wide.model->parameters()) wide_bytes += p.numel() * int64_t(p.element_size());
    EXPECT_LT(double(kept_bytes), 0.55 * double(wide_bytes));
    // Widening per use is exact: the same logits as the model widened at load, in one call and streamed.
    const auto ids = random_ids(90, kept.model_config.vocab_size, 5);
    for (int64_t chunk : {90, 13}) {
      auto a = logits_of(kept, ids, chunk), b = logits_of(wide, ids, chunk);
      EXPECT_TRUE(torch::equal(a, b)) << "chunk " << chunk << ": max |difference| " << (a - b).abs().max().item<double>();
    }
    // BF16 products (--matmul-precision medium): close to the float32 model, not equal.
    if (stored == torch::kBFloat16) {
      weight_policy().bf16_matmul = true;
      auto m = logits_of(kept, ids, 90), b = logits_of(wide, ids, 90);
      const double err = (m - b).abs().max().item<double>(), scale = b.abs().max().item<double>();
      EXPECT_LT(err, 0.03 * scale) << "BF16 products drift past 3% of the logits' range";
      EXPECT_GT(err, 0.0) << "BF16 products were not used";
      weight_policy().bf16_matmul = false;
    }
    std::filesystem::remove_all(dir);
  }
}

TEST(HfCheckpoint, LargeStoredMatricesWidenedInBlocksGiveTheWholeProduct) {
  torch::manual_seed(4);
  auto w = (torch::randn({9000, 1024}) * 0.05).to(torch::kBFloat16);  // 9M elements: three blocks of 4M
  auto x = torch::randn({2, 5, 1024});
  torch::NoGradGuard ng;
  auto y = matmul_t(x, w);
  auto want = torch::matmul(x.to(torch::kFloat64), w.to(torch::kFloat64).t());
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 5, 9000}));
  EXPECT_EQ(y.scalar_type(), torch::kFloat32);
  EXPECT_LT((y.to(torch::kFloat64) - want).abs().max().item<double>(), 1e-4);
}

TEST(HfCheckpoint, PeakRssOfABf16CheckpointIsItsStoredBytesNotFloat32s) {
  // 24M parameters (48 MB in BF16): `longctx info` reports the peak RSS of loading it, kept as
  // stored and widened to float32 (96 MB of weights).
  const auto dir = temp_dir("hf-big-bf16");
  const auto gen = "python3 " + source_dir() + "/scripts/make_hf_checkpoint.py llama " + dir +
                   " --hidden 1024 --layers 2 --intermediate 2816 > /dev/null";
  ASSERT_EQ(std::system(gen.c_str()), 0);
  const double file = double(std::filesystem::file_size(dir + "/model.safetensors"));
  const auto exe = std::filesystem::read_symlink("/proc/self/exe").parent_path() / "longctx";
  auto measure = [&](const std::string& flags) {
    auto out = output_of(exe.string() + " --threads 1 " + flags + " info --model " + dir + " --tokens 16");
    auto at = out.find("memory_bytes: ");
    EXPECT_NE(at, std::string::npos) << out;
    if (at == std::string::npos) return std::make_pair(0.0, 0.0);
    auto j = nlohmann::json::parse(out.substr(at + 14, out.find('\n', at) - at - 14));
    return std::make_pair(j["peak_rss_loaded"].get<double>() - j["rss_before"].get<double>(), j["weights"].get<double>());
  };
  auto [stored_rss, stored_weights] = measure("");
  auto [wide_rss, wide_weights] = measure("--weights f32");
  EXPECT_LT(stored_weights, 1.01 * file);
  EXPECT_GT(wide_weights, 1.9 * file);
  // Read once, straight into the kept tensors: the load costs the stored bytes and little more.
  EXPECT_LT(stored_rss, 1.15 * file + 8e6) << "stored " << stored_rss << " bytes, file " << file;
  EXPECT_GT(wide_rss, 1.9 * file) << "the float32 load should cost twice the file";
  std::filesystem::remove_all(dir);
}

TEST(Linear, FreshLayersDrawTheSameNumbersAsTorchNnSoSeededRunsAreUnchanged) {
  for (bool bias : {false, true}) {
    torch::manual_seed(9);
    torch::nn::Linear a(torch::nn::LinearOptions(37, 23).bias(bias));
    auto after_a = torch::rand({3});
    torch::manual_seed(9);
    Linear b(torch::nn::LinearOptions(37, 23).bias(bias));
    auto after_b = torch::rand({3});
    EXPECT_TRUE(torch::equal(a->weight, b->weight));
    if (bias) {
      EXPECT_TRUE(torch::equal(a->bias, b->bias));
    }
    EXPECT_EQ(b->named_parameters().size(), bias ? 2u : 1u);
    EXPECT_TRUE(torch::equal(after_a, after_b)) << "the random stream continues alike";
    auto x = torch::randn({4, 37});
    EXPECT_TRUE(torch::equal(a(x), b(x)));
  }
  torch::manual_seed(10);
  torch::nn::Embedding e(31, 8);
  torch::manual_seed(10);
  Embedding f(31, 8);
  EXPECT_TRUE(torch::equal(e->weight, f->weight));
  auto ids = torch::randint(0, 31, {2, 6});
  EXPECT_TRUE(torch::equal(e(ids), f(ids)));
}
