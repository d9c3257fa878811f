// longctx info: parameters, config, and the state's bytes after N tokens.
#include <algorithm>
#include <cstdio>
#include <map>
#include <string>

#include "commands.h"
#include "infer/session.h"
#include "model/pretrained.h"
#include "util/error.h"
#include "util/system.h"

namespace longctx::cli {

namespace {
struct Args {
  std::string model, tokens = "1024,4096,16384";
  std::vector<std::string> sets;
};

int run(const Args& a) {
  const int64_t rss0 = current_rss_bytes();
  auto p = load_pretrained(a.model, a.sets);
  const int64_t rss_loaded = peak_rss_bytes();
  std::printf("model: %s\nparameters: %lld (%.2fM)\nmixer: %s (state %s)\ntokenizer: %s, %lld tokens\nconfig hash: %s\n",
              a.model.c_str(), (long long)p.model->num_parameters(), p.model->num_parameters() / 1e6,
              p.model_config.mixer_type().c_str(),
              p.model->blocks[0]->mixer() && p.model->blocks[0]->mixer()->state_bounded() ? "bounded" : "grows with context",
              p.tokenizer->type().c_str(), (long long)p.tokenizer->vocab_size(), p.model_config.hash().c_str());
  std::printf("config: %s\n", p.config["model"].dump().c_str());
  int64_t weight_bytes = 0;
  std::map<std::string, int64_t> by_dtype;  // parameters held in each dtype
  for (auto& t : p.model->parameters()) {
    weight_bytes += t.numel() * int64_t(t.element_size());
    by_dtype[c10::toString(t.scalar_type())] += t.numel();
  }
  std::string held;
  for (auto& [d, n] : by_dtype) held += (held.empty() ? "" : ", ") + std::to_string(n) + " in " + d;
  std::printf("memory: peak RSS %s after loading (%s before); weights held: %s (%s parameters)\n",
              human_bytes(rss_loaded).c_str(), human_bytes(rss0).c_str(), human_bytes(weight_bytes).c_str(), held.c_str());
  std::printf("memory_bytes: {\"rss_before\": %lld, \"peak_rss_loaded\": %lld, \"weights\": %lld}\n", (long long)rss0,
              (long long)rss_loaded, (long long)weight_bytes);
  std::printf("%12s %14s\n", "tokens", "state bytes");
  torch::manual_seed(0);
  auto lens = parse_lengths(a.tokens, "--tokens");
  std::sort(lens.begin(), lens.end());
  Session s(p.model);
  int64_t fed = 0;
  for (auto L : lens) {
    LCX_CHECK(L > 0, "--tokens: 'all' is not a length here");
    auto x = torch::randint(0, p.tokenizer->vocab_size(), {L - fed}, torch::kInt64);
    s.feed(std::vector<int64_t>(x.data_ptr<int64_t>(), x.data_ptr<int64_t>() + x.numel()));
    fed = L;
    std::printf("%12lld %14lld  (%s)\n", (long long)L, (long long)s.state().bytes(), human_bytes(s.state().bytes()).c_str());
  }
  return 0;
}
}  // namespace

void add_info(CLI::App& app, Commands& cmds) {
  auto a = std::make_shared<Args>();
  auto* info = app.add_subcommand("info", "parameters, config, and state bytes after N tokens");
  info->add_option("--model", a->model, "model folder")->required();
  info->add_option("--tokens", a->tokens, "measure state bytes after streaming this many tokens");
  info->add_option("--set", a->sets, "override a model config field");
  cmds.push_back({info, [a] { return run(*a); }});
}

}  // namespace longctx::cli
