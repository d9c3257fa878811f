#include "eval/report.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "io/fs.h"
#include "util/error.h"

namespace longctx {

namespace {

std::string label_of(const std::vector<std::string>& labels, size_t i, const std::string& path) {
  if (i < labels.size() && !labels[i].empty()) return labels[i];
  auto p = std::filesystem::path(path);
  return (p.has_filename() ? p : p.parent_path()).filename().string();
}

}  // namespace

std::vector<Series> run_curves(const std::vector<std::string>& runs, const std::vector<std::string>& labels,
                               const std::string& metric) {
  std::vector<Series> out;
  for (size_t i = 0; i < runs.size(); ++i) {
    const std::string cfg_path = runs[i] + "/config.json", log_path = runs[i] + "/log.jsonl";
    LCX_CHECK(std::filesystem::exists(cfg_path), runs[i], ": not a run folder (no config.json)");
    LCX_CHECK(std::filesystem::exists(log_path), runs[i], ": no log.jsonl");
    auto cfg = nlohmann::json::parse(read_file(cfg_path));
    double per_step = 0;
    try {
      per_step = double(cfg.at("train").at("batch_size").get<int64_t>()) *
                 double(cfg.at("train").value("grad_accum", int64_t(1))) *
                 double(cfg.at("data").at("seq_len").get<int64_t>());
    } catch (const std::exception& e) {
      fail(cfg_path, ": cannot read train.batch_size / data.seq_len (", e.what(), ")");
    }
    Series s;
    s.label = label_of(labels, i, runs[i]);
    std::ifstream f(log_path);
    std::string line;
    int64_t n = 0;
    while (std::getline(f, line)) {
      ++n;
      if (line.empty()) continue;
      nlohmann::json r;
      try {
        r = nlohmann::json::parse(line);
      } catch (const std::exception&) {
        fail(log_path, ": line ", n, " is not JSON");
      }
      if (!r.contains(metric) || !r[metric].is_number() || !r.contains("step")) continue;
      s.points.push_back({r["step"].get<double>() * per_step, r[metric].get<double>()});
    }
    LCX_CHECK(!s.points.empty(), log_path, ": no row has the metric '", metric, "'");
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<Series> ppl_curves(const std::vector<std::string>& files, const std::vector<std::string>& labels) {
  std::vector<Series> out;
  for (size_t i = 0; i < files.size(); ++i) {
    // One series may be several files joined by '+' (e.g. one file per context).
    std::vector<std::string> parts;
    std::stringstream ss(files[i]);
    for (std::string f; std::getline(ss, f, '+');)
      if (!f.empty()) parts.push_back(f);
    LCX_CHECK(!parts.empty(), "compare --ppl: series ", i + 1, " names no file");
    Series s;
    for (auto& f : parts) {
      auto j = nlohmann::json::parse(read_file(f));
      LCX_CHECK(j.contains("results") && j["results"].is_array(), f, ": not an `eval ppl --json` file (no 'results')");
      if (s.label.empty()) s.label = label_of(labels, i, j.value("model", f));
      for (auto& r : j["results"]) {
        double ctx = r.at("context").get<double>();
        if (ctx <= 0) ctx = r.at("tokens_scored").get<double>() + 1;  // the whole document
        s.points.push_back({ctx, r.at("bits_per_byte").get<double>()});
      }
    }
    if (i < labels.size() && !labels[i].empty()) s.label = labels[i];
    std::sort(s.points.begin(), s.points.end());
    out.push_back(std::move(s));
  }
  return out;
}

std::string markdown_table(const std::vector<Series>& series, const std::string& xlabel) {
  std::set<double> xs;
  for (auto& s : series)
    for (auto& p : s.points) xs.insert(p.first);
  std::string t = "| " + xlabel + " |";
  for (auto& s : series) t += " " + s.label + " |";
  t += "\n|---|";
  for (size_t i = 0; i < series.size(); ++i) t += "---|";
  t += "\n";
  char buf[64];
  for (double x : xs) {
    std::snprintf(buf, sizeof buf, "%.0f", x);
    t += std::string("| ") + buf + " |";
    for (auto& s : series) {
      std::string cell;
      for (auto& p : s.points)
        if (p.first == x) std::snprintf(buf, sizeof buf, "%.4f", p.second), cell = buf;
      t += " " + cell + " |";
    }
    t += "\n";
  }
  return t;
}

}  // namespace longctx
