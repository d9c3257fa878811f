// longctx generate: text from a prompt, streamed to stdout.
#include <algorithm>
#include <cstdio>

#include "commands.h"
#include "infer/session.h"
#include "model/pretrained.h"
#include "util/error.h"
#include "util/system.h"

namespace longctx::cli {

namespace {
struct Args {
  std::string model, prompt;
  int64_t max_tokens = 200;
  SamplingOptions so;
  std::vector<std::string> sets;
};

int run(const Args& a) {
  auto p = load_pretrained(a.model, a.sets);
  Session s(p.model);
  auto ids = p.tokenizer->encode(a.prompt);
  LCX_CHECK(!ids.empty(), "generate: the prompt is empty");
  s.feed(ids);
  std::fputs(a.prompt.c_str(), stdout);
  std::fflush(stdout);
  bool first = false;
  double t0 = now_seconds();
  const auto eos = eos_token_ids(p);  // a Hugging Face model's end of sequence ends the text
  auto out_ids = s.generate(a.max_tokens, a.so, [&](int64_t id) {
    if (std::find(eos.begin(), eos.end(), id) != eos.end()) return false;
    std::fputs(p.tokenizer->piece(id, first).c_str(), stdout);
    std::fflush(stdout);
    return true;
  });
  double dt = now_seconds() - t0;
  std::printf("\n");
  std::fprintf(stderr, "[%zu tokens in %.2fs, %.1f tokens/s; state %s]\n", out_ids.size(), dt, out_ids.size() / dt,
               human_bytes(s.state().bytes()).c_str());
  return 0;
}
}  // namespace

void add_generate(CLI::App& app, Commands& cmds) {
  auto a = std::make_shared<Args>();
  auto* gen = app.add_subcommand("generate", "generate text from a prompt, streamed to stdout");
  gen->add_option("--model", a->model, "model folder")->required();
  gen->add_option("--prompt", a->prompt, "prompt text")->required();
  gen->add_option("--max-tokens", a->max_tokens, "tokens to generate");
  gen->add_option("--temperature", a->so.temperature, "0 = greedy");
  gen->add_option("--top-k", a->so.top_k, "0 = off");
  gen->add_option("--top-p", a->so.top_p, "nucleus mass, 1 = off");
  gen->add_option("--seed", a->so.seed, "sampling seed");
  gen->add_option("--set", a->sets, "override a model config field");
  cmds.push_back({gen, [a] { return run(*a); }});
}

}  // namespace longctx::cli
