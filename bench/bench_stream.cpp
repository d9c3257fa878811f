// Streaming prefill: tokens/s, peak RSS and state bytes at several context lengths, for
// Infini-attention, the sliding window and full attention (up to where it fits), in one run.
// Each (mixer, length) runs in a forked child so its peak RSS is its own (the sgemm peak too, so
// its matrices stay out of every later child). The fraction of the
// sgemm peak counts the dense FLOPs (2 x parameters per token; attention not counted).
//   build/bench_stream [--model DIR | --config configs/transformer-tiny.json] [--window 512]
//                      [--segment 512] [--lengths 4096,65536,1048576] [--full-max 65536]
//                      [--chunk 512] [--mixers infini_attention,sliding_window,full_attention]
// infini_attention:deltanet,infini_attention:linear runs the update rules side by side;
// infini_attention:deltanet+conv16+decay adds the short convolution and Gated DeltaNet's decay.
// With a TransformerFAM config, --mixers fam,bswa measures FAM against BSWA with the same blocks.
// A mixer named like the config's own (e.g. --config configs/megalodon-tiny.json --mixers
// megalodon) keeps every field of the config's mixer; with an Activation Beacon config,
// activation_beacon@N runs its beacons at ratio N (--model runs/beacon/train for trained weights).
// With --model DIR, the model's own mixer runs with its trained weights and any other (the
// full_attention reference) with random weights at the same shape. --profile DIR writes a
// Chrome trace of each timed stream (DIR/MIXER-LENGTH.trace; libtorch's profiler, which slows
// the run) for bench/profile_summary.py, which sums each op's own time.
#include <torch/csrc/autograd/profiler_legacy.h>

#include <cctype>
#include <filesystem>
#include <sstream>

#include "bench_common.h"
#include "infer/session.h"
#include "io/fs.h"
#include "model/pretrained.h"
#include "nn/attention.h"
#include "train/config.h"

using namespace longctx;

namespace {
struct Row {
  double tps, seconds;
  int64_t rss, state, params;
};

// own_mixer: the model's trained weights (see the header); otherwise random weights, seed 0.
CausalLM make_model(const ModelConfig& c, const std::string& model_dir, bool own_mixer) {
  torch::manual_seed(0);
  CausalLM m = !model_dir.empty() && own_mixer ? load_pretrained(model_dir, {"model.mixer=" + c.mixer.dump()}).model
                                               : CausalLM(c);
  m->eval();
  return m;
}

Row run(const ModelConfig& c, const std::string& model_dir, bool own_mixer, int64_t len, int64_t chunk,
        const std::string& trace = "") {
  CausalLM m = make_model(c, model_dir, own_mixer);
  Session s(m, chunk);
  auto toks = torch::randint(0, c.vocab_size, {len}, torch::kInt64);
  std::vector<int64_t> v(toks.data_ptr<int64_t>(), toks.data_ptr<int64_t>() + len);
  s.feed(std::vector<int64_t>(v.begin(), v.begin() + std::min<int64_t>(chunk, len)));  // warm-up
  s.reset();
  double t0 = now_seconds();
  if (trace.empty()) {
    s.feed(v);
  } else {
    torch::autograd::profiler::RecordProfile guard(trace);
    s.feed(v);
  }
  double dt = now_seconds() - t0;
  return {len / dt, dt, peak_rss_bytes(), s.state().bytes(), m->num_parameters()};
}
// Token-by-token generation after a prefill of `context` random tokens: greedy, one token per
// forward call (the decode path), timed over `n` generated tokens.
Row decode(const ModelConfig& c, const std::string& model_dir, bool own_mixer, int64_t context, int64_t n,
           int64_t chunk, const std::string& trace = "") {
  CausalLM m = make_model(c, model_dir, own_mixer);
  Session s(m, chunk);
  auto toks = torch::randint(0, c.vocab_size, {context}, torch::kInt64);
  s.feed(std::vector<int64_t>(toks.data_ptr<int64_t>(), toks.data_ptr<int64_t>() + context));
  SamplingOptions greedy;
  greedy.temperature = 0;
  s.generate(8, greedy);  // warm-up
  double t0 = now_seconds();
  std::vector<int64_t> out;
  if (trace.empty()) {
    out = s.generate(n, greedy);
  } else {
    torch::autograd::profiler::RecordProfile guard(trace);
    out = s.generate(n, greedy);
  }
  double dt = now_seconds() - t0;
  return {double(out.size()) / dt, dt, peak_rss_bytes(), s.state().bytes(), m->num_parameters()};
}
}  // namespace

int main(int argc, char** argv) {
  bench::check_flags(argc, argv, {"threads", "model", "config", "window", "segment", "lengths", "full-max", "chunk", "mixers", "profile", "decode", "decode-context", "attention"},
                     "usage: bench_stream [--model DIR | --config FILE] [--window 512] [--segment 512]\n"
                     "                    [--lengths 4096,65536,1048576] [--full-max 65536] [--chunk 512]\n"
                     "                    [--mixers infini_attention,sliding_window,full_attention] [--threads N]\n"
                     "                    [--profile DIR] [--decode N [--decode-context 1024]]\n"
                     "                    [--attention fused|blocked]\n");
  int threads = set_threads(std::atoi(bench::flag(argc, argv, "threads", "0").c_str()));
  tune_allocator();
  const std::string impl = bench::attention_flag(argc, argv);
  std::string model_dir = bench::flag(argc, argv, "model", "");
  ModelConfig base;
  // The parent runs no tensor code before forking (a forked child must not inherit a started
  // thread pool): read the config as JSON only.
  if (!model_dir.empty())
    base = ModelConfig::from_json(nlohmann::json::parse(read_file(model_dir + "/config.json"))["model"],
                                  model_dir + "/config.json");
  else base = RunConfig::from_file(bench::flag(argc, argv, "config", "configs/transformer-tiny.json")).model;
  // --window / --segment set the sliding window and Infini-attention segment; without them a
  // config's own mixer keeps its own, and others use 512.
  const std::string window_flag = bench::flag(argc, argv, "window", ""), segment_flag = bench::flag(argc, argv, "segment", "");
  auto own_or = [&](const std::string& type, const char* field, const std::string& flag) -> int64_t {
    if (!flag.empty()) return std::atoll(flag.c_str());
    if (base.mixer_type() == type && base.mixer.contains(field)) return base.mixer[field].get<int64_t>();
    return 512;
  };
  int64_t window = own_or("sliding_window", "window", window_flag);
  int64_t chunk = std::atoll(bench::flag(argc, argv, "chunk", "512").c_str());
  const std::string profile_dir = bench::flag(argc, argv, "profile", "");
  if (!profile_dir.empty()) std::filesystem::create_directories(profile_dir);
  int64_t full_max = std::atoll(bench::flag(argc, argv, "full-max", "65536").c_str());
  int64_t segment = own_or("infini_attention", "segment", segment_flag);
  std::vector<std::string> mixers;
  {
    std::stringstream ms(bench::flag(argc, argv, "mixers", "infini_attention,sliding_window,full_attention"));
    for (std::string x; std::getline(ms, x, ',');) mixers.push_back(x);
  }
  double peak = 0;  // in a child too: the parent runs no tensor code and keeps no heap
  if (!bench::in_child([] { return bench::sgemm_gflops(); }, peak)) return 1;
  std::vector<int64_t> lengths;
  std::stringstream ss(bench::flag(argc, argv, "lengths", "4096,65536,1048576"));
  for (std::string x; std::getline(ss, x, ',');) lengths.push_back(std::atoll(x.c_str()));
  std::printf("attention kernel: %s\n", impl.c_str());
  std::printf("model d_model %lld, %lld layers, %lld heads, %d threads; chunk %lld\n\n", (long long)base.d_model,
              (long long)base.n_layers, (long long)base.n_heads, threads, (long long)chunk);
  std::printf("sgemm peak in this run (2048^3 fp32): %.1f GFLOP/s\n\n", peak);
  std::printf("| mixer | tokens | prefill tokens/s | seconds | state bytes | peak RSS | fraction of sgemm peak |\n"
              "|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);
  const int64_t decode_n = std::atoll(bench::flag(argc, argv, "decode", "0").c_str());
  const int64_t decode_context = std::atoll(bench::flag(argc, argv, "decode-context", "1024").c_str());
  std::vector<std::pair<std::string, Row>> decoded;
  for (const std::string& mixer : mixers) {
    ModelConfig c = base;
    std::string label = mixer;
    if (mixer == "sliding_window") {
      c.mixer = mixer == base.mixer_type() ? base.mixer : nlohmann::json::object();  // its sinks and other fields too
      c.mixer["type"] = mixer;
      c.mixer["window"] = window;
      label += " (" + std::to_string(window) + ")";
    } else if (mixer == "infini_attention" || mixer.rfind("infini_attention:", 0) == 0) {
      // infini_attention:RULE sets the update rule (deltanet, delta, linear): the rules side by side.
      const bool ruled = mixer != "infini_attention";
      c.mixer = base.mixer_type() == "infini_attention" ? base.mixer : nlohmann::json::object();  // gates too
      c.mixer["type"] = "infini_attention";
      c.mixer["segment"] = segment;
      // deltanet+decay adds Gated DeltaNet's decay, +convK DeltaNet's short convolution of K taps.
      std::string rule = ruled ? mixer.substr(17) : "";
      for (size_t plus; ruled && (plus = rule.rfind('+')) != std::string::npos; rule.resize(plus)) {
        const auto opt = rule.substr(plus + 1);
        if (opt == "decay") c.mixer["decay"] = true;
        else if (opt.rfind("conv", 0) == 0) c.mixer["qk_conv"] = std::atoll(opt.c_str() + 4);
        else LCX_CHECK(false, "bench_stream: unknown option '+", opt, "' in ", mixer);
      }
      if (ruled) c.mixer["update"] = rule;
      if (ruled && c.mixer["update"] != "deltanet")
        for (auto f : {"chunk", "read", "local", "decay", "qk_conv"}) c.mixer.erase(f);  // DeltaNet's options only
      label = "infini_attention (segment " + std::to_string(segment) + ", " +
              c.mixer.value("update", std::string("delta")) +
              (c.mixer.value("local", std::string("segment")) == "window" ? ", window, token read" :
               c.mixer.value("read", std::string("segment")) == "token" ? ", token read" : "") +
              (c.mixer.value("qk_conv", 0) > 0 ? ", qk_conv " + c.mixer["qk_conv"].dump() : "") +
              (c.mixer.value("decay", false) ? ", decay" : "") + ")";
    } else if (mixer.rfind("activation_beacon@", 0) == 0 && base.mixer_type() == "activation_beacon") {
      // The config's beacons at one ratio: activation_beacon@8.
      c.mixer = base.mixer;
      c.mixer["ratio"] = std::atoll(mixer.c_str() + mixer.find('@') + 1);
      label = "activation_beacon (window " + c.mixer.value("window", nlohmann::json(256)).dump() + ", ratio " +
              c.mixer["ratio"].dump() + ")";
    } else if (mixer == base.mixer_type()) {
      c.mixer = base.mixer;  // the config's own mixer with all its fields (e.g. megalodon)
      if (mixer == "fam" || mixer == "bswa")
        label += " (block " + c.mixer.value("block", nlohmann::json(1024)).dump() + ", m " +
                 c.mixer.value("memory_blocks", nlohmann::json(3)).dump() +
                 (mixer == "fam" ? ", F " + c.mixer.value("fam_tokens", nlohmann::json(64)).dump() : "") + ")";
    } else if (mixer == "bswa" && base.mixer_type() == "fam") {
      // FAM's own blocks without the feedback memory: the cost of FAM over BSWA.
      c.mixer = base.mixer;
      c.mixer["type"] = "bswa";
      for (auto f : {"fam_tokens", "state_passing", "position_offset", "seed"}) c.mixer.erase(f);
      label += " (block " + c.mixer.value("block", nlohmann::json(1024)).dump() + ", m " +
               c.mixer.value("memory_blocks", nlohmann::json(3)).dump() + ")";
    } else {
      c.mixer = {{"type", mixer}};
    }
    if (decode_n > 0) {
      Row r{};
      int status = 0;
      std::string trace;
      if (!profile_dir.empty()) {
        trace = profile_dir + "/decode-" + mixer + ".trace";
        for (auto& ch : trace)
          if (ch == ':' || ch == '+') ch = '_';
      }
      if (bench::in_child([&] { return decode(c, model_dir, c.mixer_type() == base.mixer_type(), decode_context, decode_n, chunk, trace); }, r, &status))
        decoded.emplace_back(label, r);
      else
        std::fprintf(stderr, "bench_stream: decode of %s failed (child exit status %d)\n", label.c_str(), status);
    }
    for (auto len : lengths) {
      if (mixer == "full_attention" && len > full_max) {
        double kv = double(len) * c.n_layers * 2 * c.d_model * 4;
        std::printf("| %s | %lld | not run: KV cache %s and O(L^2) time; raise --full-max to try | | | | |\n", label.c_str(),
                    (long long)len, human_bytes(kv).c_str());
        continue;
      }
      Row r{};
      int status = 0;
      std::string trace;
      if (!profile_dir.empty()) {
        std::string name = mixer;
        for (auto& ch : name)
          if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
        trace = profile_dir + "/" + name + "-" + std::to_string(len) + ".trace";
      }
      if (!bench::in_child([&] { return run(c, model_dir, c.mixer_type() == base.mixer_type(), len, chunk, trace); }, r, &status)) {
        std::printf("| %s | %lld | failed (child exit status %d) | | | | |\n", label.c_str(), (long long)len, status);
        continue;
      }
      double frac = r.tps * 2.0 * double(r.params) / (peak * 1e9);
      std::printf("| %s | %lld | %.0f | %.1f | %s | %s | %.3f |\n", label.c_str(), (long long)len, r.tps, r.seconds,
                  human_bytes(r.state).c_str(), human_bytes(r.rss).c_str(), frac);
      std::fflush(stdout);
    }
  }
  if (!decoded.empty()) {
    std::printf("\nDecode: %lld tokens generated one per call (greedy) after a %lld-token prefill\n\n"
                "| mixer | decode tokens/s | ms per token | state bytes | peak RSS |\n|---|---|---|---|---|\n",
                (long long)decode_n, (long long)decode_context);
    for (auto& [label, r] : decoded)
      std::printf("| %s | %.0f | %.3f | %s | %s |\n", label.c_str(), r.tps, 1000.0 / r.tps, human_bytes(r.state).c_str(),
                  human_bytes(r.rss).c_str());
  }
  return 0;
}
