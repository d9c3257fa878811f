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
#include "io/json_file.h"
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
    auto cfg = read_json_file(cfg_path);
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
      auto j = read_json_file(f);
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

std::string markdown_table(const std::vector<Series>& series, const std::string& xlabel, int decimals) {
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
        if (p.first == x) std::snprintf(buf, sizeof buf, "%.*f", decimals, p.second), cell = buf;
      t += " " + cell + " |";
    }
    t += "\n";
  }
  return t;
}

namespace {
nlohmann::json read_summary(const std::string& dir, const char* what) {
  const std::string path = dir + "/summary.json";
  LCX_CHECK(std::filesystem::exists(path), path, ": no such file (run `longctx ", what, "` with --out ", dir, " first)");
  return read_json_file(path);
}
}  // namespace

std::vector<RulerRow> ruler_rows(const std::vector<std::string>& dirs, const std::vector<std::string>& labels) {
  std::vector<RulerRow> rows;
  for (size_t i = 0; i < dirs.size(); ++i) {
    auto j = read_summary(dirs[i], "ruler");
    RulerRow r;
    r.label = i < labels.size() && !labels[i].empty() ? labels[i] : j.value("target", dirs[i]);
    for (auto& [L, v] : j.at("average").items()) r.average[std::stoll(L)] = v.is_null() ? std::nan("") : v.get<double>();
    r.effective_length = j.value("effective_length", int64_t(0));
    rows.push_back(r);
  }
  return rows;
}

std::string ruler_markdown(const std::vector<RulerRow>& rows) {
  std::set<int64_t> Ls;
  for (auto& r : rows)
    for (auto& [L, v] : r.average) Ls.insert(L);
  std::string t = "| model |";
  for (auto L : Ls) t += " " + length_label(L) + " |";
  t += " effective length |\n|---|";
  for (size_t i = 0; i <= Ls.size(); ++i) t += "---|";
  t += "\n";
  char b[32];
  for (auto& r : rows) {
    t += "| " + r.label + " |";
    for (auto L : Ls) {
      auto it = r.average.find(L);
      if (it == r.average.end() || std::isnan(it->second)) t += " - |";
      else std::snprintf(b, sizeof b, " %.1f |", it->second), t += b;
    }
    t += " " + (r.effective_length ? length_label(r.effective_length) : std::string("< ") + length_label(*Ls.begin())) +
         " |\n";
  }
  return t;
}

std::string ruler_heatmap(const std::vector<RulerRow>& rows, const std::string& title) {
  std::set<int64_t> Ls;
  for (auto& r : rows)
    for (auto& [L, v] : r.average) Ls.insert(L);
  std::vector<std::string> names, cols;
  std::vector<std::vector<double>> v;
  for (auto L : Ls) cols.push_back(length_label(L));
  for (auto& r : rows) {
    names.push_back(r.label);
    v.emplace_back();
    for (auto L : Ls) v.back().push_back(r.average.count(L) ? r.average.at(L) / 100.0 : std::nan(""));
  }
  PlotOptions po;
  po.title = title;
  po.xlabel = "length (tokens)";
  return svg_heatmap(names, cols, v, po);
}

std::vector<Series> litm_curves(const std::vector<std::string>& dirs, const std::vector<std::string>& labels,
                                int64_t size) {
  std::vector<Series> out;
  for (size_t i = 0; i < dirs.size(); ++i) {
    auto j = read_summary(dirs[i], "litm");
    std::string label = i < labels.size() && !labels[i].empty() ? labels[i] : j.value("target", dirs[i]);
    const std::string unit = j.value("setup", "kv") == "kv" ? " pairs" : " documents";
    for (auto& [n, m] : j.at("accuracy").items()) {
      if (size && std::stoll(n) != size) continue;
      Series s;
      s.label = label + ", " + n + unit;
      for (auto& [g, a] : m.items()) s.points.push_back({double(std::stoll(g) + 1), a.get<double>()});
      std::sort(s.points.begin(), s.points.end());
      out.push_back(s);
    }
  }
  return out;
}

}  // namespace longctx
