// longctx compare: plots and tables over runs (a log.jsonl metric against tokens), eval ppl
// results (bits per byte against context), RULER and lost-in-the-middle outputs.
#include <cstdio>

#include "commands.h"
#include "eval/report.h"
#include "io/fs.h"
#include "util/error.h"
#include "util/plot.h"

namespace longctx::cli {

namespace {
struct Args {
  std::string runs, ppl, ruler, litm, labels, metric = "val_bpb", out, title;
  int64_t size = 0;
};

int run(const Args& a) {
  LCX_CHECK(int(!a.runs.empty()) + int(!a.ppl.empty()) + int(!a.ruler.empty()) + int(!a.litm.empty()) == 1,
            "compare: give exactly one of --runs, --ppl, --ruler and --litm");
  auto labels = split_commas(a.labels);
  if (!a.ruler.empty()) {
    auto rows = ruler_rows(split_commas(a.ruler), labels);
    std::printf("%s", ruler_markdown(rows).c_str());
    if (!a.out.empty()) {
      write_file_atomic(a.out, ruler_heatmap(rows, a.title.empty() ? "RULER: average over tasks" : a.title));
      std::printf("wrote %s\n", a.out.c_str());
    }
    return 0;
  }
  PlotOptions po;
  std::vector<Series> series;
  int decimals = 4;
  if (!a.litm.empty()) {
    decimals = 1;  // accuracy in percent
    series = litm_curves(split_commas(a.litm), labels, a.size);
    po.xlabel = "gold position";
    po.ylabel = "accuracy (%)";
  } else if (!a.runs.empty()) {
    series = run_curves(split_commas(a.runs), labels, a.metric);
    po.xlabel = "training tokens";
    po.ylabel = a.metric;
  } else {
    series = ppl_curves(split_commas(a.ppl), labels);
    po.xlabel = "context (tokens)";
    po.ylabel = "bits per byte";
    po.logx = true;
  }
  po.title = a.title.empty() ? po.ylabel + " against " + po.xlabel : a.title;
  std::printf("%s", markdown_table(series, po.xlabel, decimals).c_str());
  if (!a.out.empty()) {
    write_file_atomic(a.out, svg_line_plot(series, po));
    std::printf("wrote %s\n", a.out.c_str());
  }
  return 0;
}
}  // namespace

void add_compare(CLI::App& app, Commands& cmds) {
  auto a = std::make_shared<Args>();
  auto* cmp = app.add_subcommand("compare", "plot and tabulate runs (a log.jsonl metric against tokens) or eval ppl results (bits per byte against context)");
  cmp->add_option("--runs", a->runs, "comma-separated run folders");
  cmp->add_option("--ppl", a->ppl, "comma-separated `eval ppl --json` files, one per series (a series may join several files with +)");
  cmp->add_option("--ruler", a->ruler, "comma-separated `longctx ruler --out` folders: per-length averages and effective lengths (table), model x length heatmap (--out)");
  cmp->add_option("--litm", a->litm, "comma-separated `longctx litm --out` folders: accuracy against the gold position, one series per folder and size");
  cmp->add_option("--size", a->size, "with --litm: only this size (pairs or documents)");
  cmp->add_option("--metric", a->metric, "log.jsonl key for --runs (val_bpb, val_loss, loss, answer_loss, ...)");
  cmp->add_option("--labels", a->labels, "comma-separated series names (default: folder or model names)");
  cmp->add_option("--title", a->title, "plot title");
  cmp->add_option("--out", a->out, "SVG file to write (the table goes to stdout)");
  cmds.push_back({cmp, [a] { return run(*a); }});
}

}  // namespace longctx::cli
