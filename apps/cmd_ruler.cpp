// longctx ruler [prepare]: RULER's 13 tasks (MECHANISMS.md section 5) run on a model or an
// endpoint (resumable), or only their data written as RULER's JSONL.
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "commands.h"
#include "eval/ruler.h"
#include "io/fs.h"
#include "util/error.h"
#include "util/system.h"

namespace longctx::cli {

namespace {
struct Args {
  TargetArgs target;
  std::string tasks = "all", lengths = "4096,8192", out, squad, hotpot;
  int64_t samples = 100;
  uint64_t seed = 0;
};

std::vector<std::string> task_list(const Args& a) {
  std::vector<std::string> tasks;
  if (a.tasks == "all") {
    for (auto& t : ruler::tasks())
      if (!ruler::needs_qa(t) || (t == "qa_1" ? !a.squad.empty() : !a.hotpot.empty())) tasks.push_back(t);
      else std::fprintf(stderr, "ruler: %s skipped: no %s given\n", t.c_str(), t == "qa_1" ? "--squad" : "--hotpotqa");
  } else {
    for (auto& t : split_commas(a.tasks)) ruler::tokens_to_generate(t), tasks.push_back(t);  // validates
  }
  return tasks;
}

int run(const Args& a) {
  auto target = make_target("ruler", a.target);
  ruler::RunOptions ro;
  ro.tasks = task_list(a);
  ro.lengths = parse_lengths(a.lengths, "--lengths");
  for (auto L : ro.lengths) LCX_CHECK(L > 0, "--lengths: 'all' is not a RULER length");
  ro.samples = a.samples;
  ro.seed = a.seed;
  ro.out = a.out;
  Progress bar("ruler", int64_t(ro.tasks.size() * ro.lengths.size()) * a.samples);
  int64_t n = 0;
  ro.log = [&](const std::string&) { bar.update(++n); };
  auto res = ruler::Resources::load(a.squad, a.hotpot);
  auto sum = ruler::run(*target, res, ro);
  bar.finish();
  std::printf("| task |");
  for (auto L : ro.lengths) std::printf(" %lld |", (long long)L);
  std::printf("\n|---|");
  for (size_t i = 0; i < ro.lengths.size(); ++i) std::printf("---|");
  std::printf("\n");
  for (auto& t : ro.tasks) {
    std::printf("| %s |", t.c_str());
    for (auto L : ro.lengths)
      std::isnan(sum.score[t][L]) ? std::printf(" n/a |") : std::printf(" %.1f |", sum.score[t][L]);
    std::printf("\n");
  }
  std::printf("| **average** |");
  for (auto L : ro.lengths) std::printf(" **%.1f** |", sum.average[L]);
  std::printf("\neffective length (> 85.6): %lld\nwrote %s/summary.csv, summary.json, heatmap.svg\n",
              (long long)sum.effective_length, a.out.c_str());
  return 0;
}

int prepare(const Args& a) {
  namespace fs = std::filesystem;
  std::unique_ptr<Tokenizer> tok;
  if (!a.target.model.empty()) {
    tok = load_folder_tokenizer(a.target.model);
  } else {
    tok = endpoint_tokenizer(a.target.tokenizer);
  }
  auto tasks = task_list(a);
  LCX_CHECK(a.samples >= 1, "ruler prepare: --samples must be >= 1");
  auto res = ruler::Resources::load(a.squad, a.hotpot);
  for (int64_t L : parse_lengths(a.lengths, "--lengths")) {
    LCX_CHECK(L > 0, "--lengths: 'all' is not a RULER length");
    fs::create_directories(a.out + "/" + std::to_string(L));
    for (auto& t : tasks) {
      std::string path = a.out + "/" + std::to_string(L) + "/" + t + ".jsonl";
      if (fs::exists(path)) continue;  // written whole (atomically) by an earlier run
      std::string lines;
      int64_t tokens = 0;
      for (int64_t i = 0; i < a.samples; ++i) {
        auto s = ruler::generate(t, L, *tok, res, a.seed, i);
        tokens += s.prompt_tokens;
        lines += nlohmann::json({{"index", s.index},
                                 {"input", s.input},
                                 {"outputs", s.outputs},
                                 {"length", s.length},
                                 {"answer_prefix", s.answer_prefix},
                                 {"tokens_to_generate", s.tokens_to_generate},
                                 {"prompt_tokens", s.prompt_tokens}})
                     .dump() + "\n";
      }
      write_file_atomic(path, lines);
      std::printf("%s: %lld samples, %.0f prompt tokens on average\n", path.c_str(), (long long)a.samples,
                  double(tokens) / double(a.samples));
    }
  }
  return 0;
}
}  // namespace

void add_ruler(CLI::App& app, Commands& cmds) {
  auto a = std::make_shared<Args>();
  auto* ru = app.add_subcommand("ruler", "RULER's 13 tasks (MECHANISMS.md section 5): run a model on them (resumable), or `ruler prepare` the data only");
  ru->require_subcommand(0, 1);
  auto* rup = ru->add_subcommand("prepare", "write the task data as RULER's JSONL ({out}/{length}/{task}.jsonl), nothing run");
  rup->fallthrough();  // the options below belong to `ruler` and may follow `prepare`
  a->target.add_options(ru, "without --model: 'byte' or a folder holding tokenizer.json or tokenizer.model (counts the prompt's tokens)");
  ru->add_option("--tasks", a->tasks, "comma-separated task names, or all");
  ru->add_option("--lengths", a->lengths, "comma-separated token budgets (prompt + tokens to generate)");
  ru->add_option("--samples", a->samples, "samples per task and length");
  ru->add_option("--seed", a->seed, "seed");
  ru->add_option("--squad", a->squad, "SQuAD v2 JSON (dev-v2.0.json) for qa_1");
  ru->add_option("--hotpotqa", a->hotpot, "HotpotQA JSON (distractor dev set) for qa_2");
  ru->add_option("--out", a->out, "output folder")->required();
  cmds.push_back({rup, [a] { return prepare(*a); }});  // before `ruler`: the first match runs
  cmds.push_back({ru, [a] { return run(*a); }});
}

}  // namespace longctx::cli
