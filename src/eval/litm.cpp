#include "eval/litm.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "io/fs.h"
#include "io/json_fields.h"
#include "text/corpus.h"
#include "util/error.h"
#include "util/hash.h"
#include "util/plot.h"

namespace longctx::litm {

RunSummary run(ruler::Completer& target, const RunOptions& o) {
  namespace fs = std::filesystem;
  LCX_CHECK(o.setup == "kv" || o.setup == "qa", "litm: --setup must be kv or qa (got '", o.setup, "')");
  LCX_CHECK(!o.sizes.empty(), "litm: no sizes given");
  LCX_CHECK(o.samples >= 1, "litm: --samples must be >= 1");
  std::vector<Passage> passages;
  if (o.setup == "qa") passages = sotu_passages();
  RunSummary sum;
  std::string csv = "setup,size,gold,accuracy,samples,prompt_tokens\n";
  std::vector<Series> curves;
  for (int64_t n : o.sizes) {
    const std::string dir = o.out + "/" + o.setup + "-" + std::to_string(n);
    fs::create_directories(dir);
    auto positions = o.setup == "kv" ? kv_positions(n, o.positions) : qa_positions(n);
    Series curve;
    curve.label = std::to_string(n) + (o.setup == "kv" ? " pairs" : " documents");
    double tokens = 0;
    int64_t prompts = 0;
    for (int64_t gold : positions) {
      const std::string path = dir + "/gold-" + std::to_string(gold) + ".jsonl";
      auto done = resume_jsonl(path, o.samples);
      std::ofstream out(path, std::ios::app);
      int64_t right = 0;
      for (auto& d : done) right += d.at("correct").get<bool>() ? 1 : 0;
      for (int64_t i = 0; i < o.samples; ++i) {
        ++prompts;
        // A sample done earlier keeps its prompt's length in the file (files written before that
        // field existed are re-tokenized once).
        if (i < int64_t(done.size()) && done[size_t(i)].contains("prompt_tokens")) {
          tokens += done[size_t(i)].at("prompt_tokens").get<double>();
          continue;
        }
        auto s = o.setup == "kv" ? kv_sample(n, gold, o.seed, i) : qa_sample(passages, n, gold, o.seed, i);
        const int64_t prompt_tokens = int64_t(target.tokenizer().encode(s.prompt).size());
        tokens += double(prompt_tokens);
        if (i < int64_t(done.size())) continue;
        auto pred = target.complete(s.prompt, o.max_tokens);
        bool ok = correct(s, pred);
        right += ok ? 1 : 0;
        nlohmann::json j = {{"index", i},         {"size", n},         {"gold", gold},
                            {"input", s.prompt},  {"outputs", s.outputs}, {"prediction", pred},
                            {"correct", ok},      {"prompt_tokens", prompt_tokens}};
        out << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        out.flush();
        if (o.log) o.log(o.setup + " " + std::to_string(n) + " gold " + std::to_string(gold) + " sample " +
                         std::to_string(i + 1) + "/" + std::to_string(o.samples) + (ok ? ": right" : ": wrong"));
      }
      const double acc = 100.0 * double(right) / double(o.samples);
      sum.accuracy[n][gold] = acc;
      // Positions as 1-based indexes, like the paper's plots.
      curve.points.push_back({double(gold + 1), acc});
    }
    sum.prompt_tokens[n] = int64_t(std::lround(tokens / double(std::max<int64_t>(1, prompts))));
    for (auto& [gold, acc] : sum.accuracy[n]) {
      char b[160];
      std::snprintf(b, sizeof b, "%s,%lld,%lld,%.2f,%lld,%lld\n", o.setup.c_str(), (long long)n, (long long)gold, acc,
                    (long long)o.samples, (long long)sum.prompt_tokens[n]);
      csv += b;
    }
    curves.push_back(curve);
  }
  write_file_atomic(o.out + "/summary.csv", csv);
  nlohmann::json j;
  j["target"] = target.name();
  j["setup"] = o.setup;
  j["samples"] = o.samples;
  j["seed"] = o.seed;
  for (auto& [n, m] : sum.accuracy) {
    for (auto& [g, a] : m) j["accuracy"][std::to_string(n)][std::to_string(g)] = a;
    j["prompt_tokens"][std::to_string(n)] = sum.prompt_tokens[n];
  }
  write_file_atomic(o.out + "/summary.json", j.dump(2) + "\n");
  PlotOptions po;
  po.title = std::string("Lost in the middle (") + (o.setup == "kv" ? "key-value retrieval" : "multi-document QA") +
             "): " + target.name() + ", " + std::to_string(o.samples) + " samples per point";
  po.xlabel = o.setup == "kv" ? "position of the gold key (1-based)" : "position of the gold document (1-based)";
  po.ylabel = "accuracy (%)";
  write_file_atomic(o.out + "/ucurve.svg", svg_line_plot(curves, po));
  return sum;
}

}  // namespace longctx::litm
