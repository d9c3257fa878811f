// longctx litm: lost in the middle (MECHANISMS.md section 6), accuracy by the answer's position.
#include <cstdio>

#include "commands.h"
#include "eval/litm.h"
#include "util/error.h"
#include "util/system.h"

namespace longctx::cli {

namespace {
struct Args {
  TargetArgs target;
  std::string setup = "kv", sizes, out;
  int64_t samples = 20, positions = 5, max_tokens = 100;
  uint64_t seed = 0;
};

int run(const Args& a) {
  litm::RunOptions lo;
  lo.setup = a.setup;
  LCX_CHECK(a.setup == "kv" || a.setup == "qa", "litm: --setup must be kv or qa (got '", a.setup, "')");
  lo.sizes = parse_lengths(a.sizes.empty() ? (a.setup == "kv" ? "75,140,300" : "10,20,30") : a.sizes, "--sizes");
  for (auto n : lo.sizes) LCX_CHECK(n >= 2, "--sizes: each size must be >= 2 (got ", n, ")");
  lo.positions = a.positions;
  lo.samples = a.samples;
  lo.max_tokens = a.max_tokens;
  lo.seed = a.seed;
  lo.out = a.out;
  auto target = make_target("litm", a.target);
  int64_t cells = 0;
  for (auto n : lo.sizes)
    cells += int64_t(a.setup == "kv" ? litm::kv_positions(n, a.positions).size() : litm::qa_positions(n).size());
  Progress bar("litm", cells * a.samples);
  int64_t k = 0;
  lo.log = [&](const std::string&) { bar.update(++k); };
  auto sum = litm::run(*target, lo);
  bar.finish();
  for (auto& [n, m] : sum.accuracy) {
    std::printf("%s %lld (%lld prompt tokens):", a.setup.c_str(), (long long)n, (long long)sum.prompt_tokens[n]);
    for (auto& [g, acc] : m) std::printf("  gold %lld: %.1f%%", (long long)g + 1, acc);
    std::printf("\n");
  }
  std::printf("wrote %s/summary.csv, summary.json, ucurve.svg\n", a.out.c_str());
  return 0;
}
}  // namespace

void add_litm(CLI::App& app, Commands& cmds) {
  auto a = std::make_shared<Args>();
  auto* lm = app.add_subcommand("litm", "lost in the middle (MECHANISMS.md section 6): accuracy by the answer's position, key-value retrieval or multi-document QA (resumable)");
  a->target.add_options(lm, "with --endpoint: 'byte' or a folder holding tokenizer.json or tokenizer.model (prompt lengths)");
  lm->add_option("--setup", a->setup, "kv (uuid key-value retrieval) or qa (multi-document QA from the SOTU addresses)");
  lm->add_option("--sizes", a->sizes, "comma-separated pairs (kv; default 75,140,300) or documents (qa; default 10,20,30)");
  lm->add_option("--positions", a->positions, "kv: evenly spaced gold positions per size");
  lm->add_option("--samples", a->samples, "samples per size and gold position");
  lm->add_option("--max-tokens", a->max_tokens, "tokens generated per answer");
  lm->add_option("--seed", a->seed, "seed");
  lm->add_option("--out", a->out, "output folder")->required();
  cmds.push_back({lm, [a] { return run(*a); }});
}

}  // namespace longctx::cli
