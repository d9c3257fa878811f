#include "model/hf.h"

#include <filesystem>
#include <map>
#include <set>

#include "io/fs.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/pretrained.h"
#include "text/bpe.h"
#include "text/tokenizer.h"
#include "util/error.h"

namespace longctx {

namespace {

int64_t req_int(const nlohmann::json& j, const char* k, const std::string& where) {
  LCX_CHECK(j.contains(k) && j[k].is_number_integer(), where, ": field '", k, "' must be an integer");
  return j[k].get<int64_t>();
}

}  // namespace

bool is_hf_folder(const std::string& dir) {
  const auto path = dir + "/config.json";
  if (!std::filesystem::exists(path)) return false;
  return is_hf_config(read_json_file(path));
}

bool is_hf_config(const nlohmann::json& j) {
  return j.is_object() && !j.contains("model") && (j.contains("model_type") || j.contains("architectures"));
}

// The attention's key/value heads and head width of a config (as the attention mixer reads them).
static std::pair<int64_t, int64_t> attention_shape(const ModelConfig& c) {
  const auto& mx = c.mixer;
  const int64_t kvh = mx.value("n_kv_heads", int64_t(0)) ? mx["n_kv_heads"].get<int64_t>() : c.n_heads;
  const int64_t hd = mx.value("head_dim", int64_t(0)) ? mx["head_dim"].get<int64_t>() : c.d_model / c.n_heads;
  return {kvh, hd};
}

nlohmann::json hf_to_longctx_config(const nlohmann::json& hf, const std::string& where) {
  LCX_CHECK(hf.is_object(), where, ": expected a JSON object");
  LCX_CHECK(hf.contains("model_type") && hf["model_type"].is_string(), where, ": no model_type");
  const auto type = hf["model_type"].get<std::string>();
  LCX_CHECK(type == "llama" || type == "mistral" || type == "qwen2" || type == "phi3", where, ": model_type '", type,
            "' is not supported (llama, mistral, qwen2, phi3)");
  const auto act = hf.value("hidden_act", std::string("silu"));
  LCX_CHECK(act == "silu", where, ": hidden_act '", act, "' is not supported (silu)");
  LCX_CHECK(!hf.value("mlp_bias", false), where, ": mlp_bias is not supported");
  if (type == "llama") LCX_CHECK(!hf.value("attention_bias", false), where, ": attention_bias (on q, k, v and o) is not supported");
  if (type == "qwen2") LCX_CHECK(!hf.value("use_sliding_window", false), where, ": use_sliding_window is not supported");
  const double partial = hf.contains("partial_rotary_factor") && hf["partial_rotary_factor"].is_number()
                             ? hf["partial_rotary_factor"].get<double>() : 1.0;
  LCX_CHECK(partial == 1.0, where, ": partial_rotary_factor ", partial, " is not supported (1.0)");

  const int64_t D = req_int(hf, "hidden_size", where), H = req_int(hf, "num_attention_heads", where);
  const int64_t L = req_int(hf, "num_hidden_layers", where);
  LCX_CHECK(H > 0 && D > 0, where, ": hidden_size and num_attention_heads must be > 0");
  nlohmann::json mixer = {{"type", "full_attention"}};
  if (hf.contains("num_key_value_heads") && !hf["num_key_value_heads"].is_null()) {
    const auto kvh = req_int(hf, "num_key_value_heads", where);
    if (kvh != H) mixer["n_kv_heads"] = kvh;
  }
  if (hf.contains("head_dim") && !hf["head_dim"].is_null()) {
    const auto hd = req_int(hf, "head_dim", where);
    if (hd * H != D) mixer["head_dim"] = hd;
  } else {
    LCX_CHECK(D % H == 0, where, ": hidden_size ", D, " is not a multiple of num_attention_heads ", H);
  }
  if (type == "qwen2") mixer["qkv_bias"] = true;
  const int64_t max_pos = hf.contains("max_position_embeddings") && hf["max_position_embeddings"].is_number_integer()
                              ? hf["max_position_embeddings"].get<int64_t>() : 0;
  if ((type == "mistral" || type == "phi3") && hf.contains("sliding_window") && hf["sliding_window"].is_number_integer()) {
    const auto w = hf["sliding_window"].get<int64_t>();
    if (w > 0 && (max_pos == 0 || w < max_pos)) mixer["type"] = "sliding_window", mixer["window"] = w;
  }

  // RoPE: rope_theta and rope_scaling, or transformers v5's rope_parameters holding both.
  double theta = hf.contains("rope_theta") && hf["rope_theta"].is_number() ? hf["rope_theta"].get<double>() : 10000.0;
  nlohmann::json scaling = hf.contains("rope_scaling") ? hf["rope_scaling"] : nlohmann::json();
  if (hf.contains("rope_parameters") && hf["rope_parameters"].is_object()) {
    auto rp = hf["rope_parameters"];
    if (rp.contains("rope_theta")) {
      LCX_CHECK(rp["rope_theta"].is_number(), where, ": rope_parameters.rope_theta must be a number");
      theta = rp["rope_theta"].get<double>();
      rp.erase("rope_theta");
    }
    LCX_CHECK(scaling.is_null(), where, ": both rope_scaling and rope_parameters are set");
    scaling = rp;
  }
  if (scaling.is_object()) {
    std::string rt = scaling.value("rope_type", scaling.value("type", std::string("default")));
    if (rt == "default") {
      scaling = nullptr;
    } else {
      if (rt == "su") rt = "longrope";  // Phi-3's first name for it
      scaling.erase("type");
      scaling["rope_type"] = rt;
      // Phi-3 keeps original_max_position_embeddings at the top level.
      if (!scaling.contains("original_max_position_embeddings") && hf.contains("original_max_position_embeddings"))
        scaling["original_max_position_embeddings"] = hf["original_max_position_embeddings"];
    }
  } else {
    LCX_CHECK(scaling.is_null(), where, ": rope_scaling must be an object or null");
  }

  nlohmann::json model = {
      {"vocab_size", req_int(hf, "vocab_size", where)},
      {"d_model", D},
      {"n_layers", L},
      {"n_heads", H},
      {"d_ff", req_int(hf, "intermediate_size", where)},
      {"norm_eps", hf.contains("rms_norm_eps") && hf["rms_norm_eps"].is_number() ? hf["rms_norm_eps"].get<double>() : 1e-6},
      {"tie_embeddings", hf.value("tie_word_embeddings", false)},
      {"rope_theta", theta},
      {"rope_scaling", scaling},
      {"mixer", mixer}};
  if (max_pos > 0) model["max_position_embeddings"] = max_pos;
  return {{"model", model}, {"hf_model_type", type}};
}

void load_hf_weights(const std::string& dir, const std::string& model_type, CausalLM& model, bool keep_stored) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  const auto index = dir + "/model.safetensors.index.json";
  if (fs::exists(index)) {
    auto j = read_json_file(index);
    LCX_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), index, ": no weight_map object");
    std::set<std::string> seen;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      LCX_CHECK(it.value().is_string(), index, ": weight_map['", it.key(), "'] must be a file name");
      const auto f = it.value().get<std::string>();
      LCX_CHECK(f.find('/') == std::string::npos && f.find("..") == std::string::npos, index, ": weight_map['", it.key(),
                "'] = '", f, "' is not a file of this folder");
      if (seen.insert(f).second) files.push_back(f);
    }
  } else {
    LCX_CHECK(fs::exists(dir + "/model.safetensors"), dir, ": no model.safetensors or model.safetensors.index.json");
    files.push_back("model.safetensors");
  }
  std::map<std::string, torch::Tensor> params;
  for (auto& [n, p] : named_weights(model)) params[n] = p;
  const auto matrices = matrix_weights(*model);
  std::set<std::string> filled;
  // The parameter `name` for a tensor of `origin` of this shape and dtype, checked.
  auto target = [&](const std::string& origin, const std::string& name, torch::IntArrayRef shape,
                    torch::ScalarType dtype) -> torch::Tensor& {
    auto it = params.find(name);
    LCX_CHECK(it != params.end(), origin, ": tensor '", name, "' is not a parameter of this ", model_type, " config");
    LCX_CHECK(shape == it->second.sizes(), origin, ": tensor '", name, "' has shape ", shape, ", the config gives ",
              it->second.sizes());
    LCX_CHECK(torch::isFloatingType(dtype), origin, ": tensor '", name, "' is not floating point");
    LCX_CHECK(filled.insert(name).second, origin, ": tensor '", name, "' appears twice");
    return it->second;
  };
  auto put = [&](const std::string& origin, const std::string& name, const torch::Tensor& t) {
    fill_weight(target(origin, name, t.sizes(), t.scalar_type()), t, keep_stored, matrices);
  };
  const auto& cfg = model->config();
  const auto [kvh, hd] = attention_shape(cfg);
  for (auto& f : files) {
    const auto path = dir + "/" + f;
    LCX_CHECK(fs::exists(path), path, ": a shard the index names is missing");
    SafetensorsReader tf(path);
    for (auto& e : tf.entries()) {
      const std::string& name = e.name;
      if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;  // a buffer older checkpoints kept
      if (name == "lm_head.weight" && cfg.tie_embeddings) continue;         // some tied models store it anyway
      auto ends = [&name](const std::string& s) { return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0; };
      if (model_type == "phi3" && ends(".self_attn.qkv_proj.weight")) {
        const auto base = name.substr(0, name.size() - std::string("qkv_proj.weight").size());
        const int64_t q = cfg.n_heads * hd, kv = kvh * hd;
        LCX_CHECK(e.shape.size() == 2 && e.shape[0] == q + 2 * kv, path, ": tensor '", name, "' has shape ",
                  torch::IntArrayRef(e.shape), ", the config gives [", q + 2 * kv, ", ", cfg.d_model, "]");
        auto parts = tf.read(e).split_with_sizes({q, kv, kv}, 0);
        put(path, base + "q_proj.weight", parts[0]);
        put(path, base + "k_proj.weight", parts[1]);
        put(path, base + "v_proj.weight", parts[2]);
      } else if (model_type == "phi3" && ends(".mlp.gate_up_proj.weight")) {
        const auto base = name.substr(0, name.size() - std::string("gate_up_proj.weight").size());
        LCX_CHECK(e.shape.size() == 2 && e.shape[0] == 2 * cfg.ffn_dim(), path, ": tensor '", name, "' has shape ",
                  torch::IntArrayRef(e.shape), ", the config gives [", 2 * cfg.ffn_dim(), ", ", cfg.d_model, "]");
        auto parts = tf.read(e).chunk(2, 0);
        put(path, base + "gate_proj.weight", parts[0]);
        put(path, base + "up_proj.weight", parts[1]);
      } else {
        fill_weight(target(path, name, e.shape, e.dtype), tf, e, keep_stored, matrices);
      }
    }
  }
  for (auto& [n, p] : params)
    LCX_CHECK(filled.count(n), dir, ": missing tensor '", n, "' (", model_type, " with this config.json needs it)");
}

std::string byte_tokenizer_json() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[gpt2_byte_chars()[size_t(b)]] = b;
  const nlohmann::json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false},
                                     {"use_regex", false}};
  return nlohmann::json({{"version", "1.0"},
                         {"truncation", nullptr},
                         {"padding", nullptr},
                         {"added_tokens", nlohmann::json::array()},
                         {"normalizer", nullptr},
                         {"pre_tokenizer", byte_level},
                         {"post_processor", nullptr},
                         {"decoder", byte_level},
                         {"model",
                          {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                           {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                           {"ignore_merges", false}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}})
      .dump();
}

void save_hf_folder(Pretrained& p, const std::string& out, const std::string& dtype) {
  namespace fs = std::filesystem;
  const auto& c = p.model_config;
  const auto& mx = c.mixer;
  const auto mtype = c.mixer_type();
  LCX_CHECK(mtype == "full_attention" || mtype == "sliding_window", "export --format hf: mixer '", mtype,
            "' has no Hugging Face architecture (full_attention -> llama, sliding_window -> mistral)");
  LCX_CHECK(mx.value("sinks", int64_t(0)) == 0, "export --format hf: attention sinks have no Hugging Face architecture");
  const bool bias = mx.value("qkv_bias", false);
  LCX_CHECK(!(bias && mtype == "sliding_window"), "export --format hf: q/k/v biases with a sliding window (no such family)");
  if (c.rope_scaling.is_object())
    LCX_CHECK(!c.rope_scaling.contains("n_hat"), "export --format hf: rope_scaling.n_hat is longctx's own field");
  const std::string family = bias ? "qwen2" : mtype == "sliding_window" ? "mistral" : "llama";
  const auto arch = family == "qwen2" ? "Qwen2ForCausalLM" : family == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM";
  const auto [kvh, hd] = attention_shape(c);
  const auto torch_dtype = dtype == "F32" ? "float32" : dtype == "F16" ? "float16" : "bfloat16";
  nlohmann::json hf = {{"architectures", {arch}},
                       {"model_type", family},
                       {"vocab_size", c.vocab_size},
                       {"hidden_size", c.d_model},
                       {"intermediate_size", c.ffn_dim()},
                       {"num_hidden_layers", c.n_layers},
                       {"num_attention_heads", c.n_heads},
                       {"num_key_value_heads", kvh},
                       {"head_dim", hd},
                       {"hidden_act", "silu"},
                       {"max_position_embeddings", c.max_position_embeddings > 0 ? c.max_position_embeddings : 131072},
                       {"rms_norm_eps", c.norm_eps},
                       {"rope_theta", c.rope_theta},
                       {"rope_scaling", c.rope_scaling},
                       {"tie_word_embeddings", c.tie_embeddings},
                       {"torch_dtype", torch_dtype},
                       {"use_cache", true}};
  if (family == "llama") hf["attention_bias"] = false, hf["mlp_bias"] = false;
  if (family == "mistral") hf["sliding_window"] = mx["window"];
  if (family == "qwen2") hf["use_sliding_window"] = false, hf["sliding_window"] = nullptr, hf["max_window_layers"] = c.n_layers;
  if (c.rope_scaling.is_object() && c.rope_scaling.value("rope_type", std::string()) == "longrope" &&
      c.rope_scaling.contains("original_max_position_embeddings"))
    hf["original_max_position_embeddings"] = c.rope_scaling["original_max_position_embeddings"];
  fs::create_directories(out);
  save_weights(out + "/model.safetensors", p.model, dtype, {{"exported_from", p.dir}});
  nlohmann::json gen = {{"do_sample", false}};
  const auto tt = p.tokenizer->type();
  if (tt == "byte") {
    write_file_atomic(out + "/tokenizer.json", byte_tokenizer_json());
    write_file_atomic(out + "/tokenizer_config.json",
                      nlohmann::json({{"tokenizer_class", "PreTrainedTokenizerFast"}, {"model_max_length", hf["max_position_embeddings"]},
                                      {"clean_up_tokenization_spaces", false}}).dump(2) + "\n");
  } else if (tt == "sentencepiece") {
    p.tokenizer->save(out);
    write_file_atomic(out + "/tokenizer_config.json",
                      nlohmann::json({{"tokenizer_class", "LlamaTokenizer"}, {"add_bos_token", false},
                                      {"clean_up_tokenization_spaces", false}}).dump(2) + "\n");
  } else {
    p.tokenizer->save(out);
    if (auto* b = dynamic_cast<const BpeTokenizer*>(p.tokenizer.get()); b && b->bos_id() >= 0) gen["bos_token_id"] = b->bos_id();
  }
  if (p.config.contains("generation_config") && p.config["generation_config"].is_object()) gen = p.config["generation_config"];
  write_file_atomic(out + "/generation_config.json", gen.dump(2) + "\n");
  write_file_atomic(out + "/config.json", hf.dump(2) + "\n");
}

}  // namespace longctx
