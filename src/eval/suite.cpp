#include "eval/suite.h"

#include <malloc.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

#include "eval/passkey.h"
#include "eval/ppl.h"
#include "eval/ruler.h"
#include "eval/ruler_run.h"
#include "infer/session.h"
#include "io/fs.h"
#include "io/json_file.h"
#include "model/pretrained.h"
#include "text/passkey.h"
#include "text/tokenizer.h"
#include "util/error.h"
#include "util/plot.h"
#include "util/system.h"

namespace longctx {

namespace fs = std::filesystem;

nlohmann::json SuiteOptions::settings() const {
  return {{"passkey_lengths", passkey_lengths}, {"depths", depths},
          {"passkey_samples", passkey_samples}, {"ruler_lengths", ruler_lengths},
          {"ruler_tasks", ruler_tasks},         {"ruler_samples", ruler_samples},
          {"stream_tokens", stream_tokens},     {"chunk", chunk},
          {"ppl_context", ppl_context},         {"ppl_bytes", ppl_bytes},
          {"ppl", bool(ppl_text)},              {"seed", seed}};
}

namespace {

// JSON has no NaN: "not measured" is null.
nlohmann::json number_or_null(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }
double number_or_nan(const nlohmann::json& j) { return j.is_null() ? std::nan("") : j.get<double>(); }

nlohmann::json by_length(const std::map<int64_t, double>& m) {
  nlohmann::json j = nlohmann::json::object();
  for (auto& [L, v] : m) j[std::to_string(L)] = number_or_null(v);
  return j;
}
std::map<int64_t, double> by_length(const nlohmann::json& j) {
  std::map<int64_t, double> m;
  for (auto& [k, v] : j.items()) m[std::stoll(k)] = number_or_nan(v);
  return m;
}

void say(const SuiteOptions& o, const std::string& s) {
  if (o.log) o.log(s);
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

SuiteRow measure(const std::string& dir, const std::string& label, const SuiteOptions& o) {
  const double t0 = now_seconds();
  SuiteRow r;
  r.label = label;
  r.model = dir;
  auto p = load_pretrained(dir);
  r.mechanism = p.model_config.mixer_type();
  r.parameters = p.model->num_parameters();
  r.bounded = p.model->state_bounded();
  torch::NoGradGuard ng;

  if (o.ppl_text) {
    std::string text = o.ppl_text(dir);
    if (o.ppl_bytes > 0 && int64_t(text.size()) > o.ppl_bytes) text.resize(size_t(o.ppl_bytes));
    auto toks = p.tokenizer->encode(text);
    PplOptions po;
    po.context = o.ppl_context;
    if (po.context < 0) {
      const auto& d = p.config.contains("data") ? p.config["data"] : nlohmann::json::object();
      LCX_CHECK(d.contains("seq_len") && d["seq_len"].is_number_integer() && d["seq_len"].get<int64_t>() > 0,
                dir, "/config.json: data.seq_len (the trained context) is needed for the held-out bits per byte at "
                "the trained context; give the context instead");
      po.context = d["seq_len"].get<int64_t>();
    }
    po.chunk = o.chunk;
    po.progress = false;
    say(o, label + ": held-out bits per byte, " + std::to_string(toks.size()) + " tokens at context " +
               (po.context ? std::to_string(po.context) : std::string("all")));
    auto res = eval_bits_per_byte(p.model, toks, double(text.size()) / double(std::max<size_t>(1, toks.size())), po);
    r.bits_per_byte = res.bits_per_byte;
    r.ppl_context = po.context ? po.context : int64_t(toks.size());
    r.ppl_tokens = res.tokens_scored;
  }

  int64_t stream = o.stream_tokens;
  if (stream == 0)
    stream = o.passkey_lengths.empty() ? 4096 : *std::max_element(o.passkey_lengths.begin(), o.passkey_lengths.end());
  if (stream > 0) {
    say(o, label + ": streaming " + std::to_string(stream) + " tokens at batch 1");
    torch::manual_seed(int64_t(o.seed));
    auto x = torch::randint(0, p.tokenizer->vocab_size(), {stream}, torch::kInt64);
    std::vector<int64_t> toks(x.data_ptr<int64_t>(), x.data_ptr<int64_t>() + stream);
    malloc_trim(0);  // what earlier phases (and models) freed leaves the heap, so the peak is this stream's
    reset_peak_rss();
    Session s(p.model, o.chunk);
    const double ts = now_seconds();
    s.feed(toks);
    r.stream_tokens = stream;
    r.stream_tokens_per_s = double(stream) / std::max(1e-9, now_seconds() - ts);
    r.state_bytes = s.state().bytes();
    r.peak_rss_bytes = peak_rss_bytes();
    r.kv_bytes = 2 * p.model_config.n_layers * p.model_config.d_model * int64_t(sizeof(float)) * stream;
  }

  if (!o.passkey_lengths.empty()) {
    PasskeyEvalOptions po;
    po.lengths = o.passkey_lengths;
    po.depths = o.depths;
    po.samples = o.passkey_samples;
    po.seed = o.seed;
    po.chunk = o.chunk;
    po.log = [&](const std::string& s) { say(o, label + ": passkey: " + s); };
    auto cells = eval_passkey(p.model, *p.tokenizer, po);
    nlohmann::json summary = nlohmann::json::array();
    std::map<int64_t, std::pair<int64_t, int64_t>> tally;  // length -> correct, samples
    for (auto& c : cells) {
      summary.push_back(c.to_json());
      if (c.status != "ok") continue;
      tally[c.length].first += c.correct;
      tally[c.length].second += c.samples;
    }
    for (auto L : o.passkey_lengths)
      r.passkey[L] = tally[L].second ? double(tally[L].first) / double(tally[L].second) : std::nan("");
    fs::create_directories(o.out + "/" + label);
    write_file_atomic(o.out + "/" + label + "/passkey.json", summary.dump(2) + "\n");
  }

  if (!o.ruler_lengths.empty()) {
    std::shared_ptr<Tokenizer> tok(std::move(p.tokenizer));
    ruler::ModelCompleter target(p.model, tok, label, o.chunk);
    ruler::RunOptions ro;
    ro.tasks = o.ruler_tasks;
    ro.lengths = o.ruler_lengths;
    ro.samples = o.ruler_samples;
    ro.seed = o.seed;
    ro.out = o.out + "/" + label + "/ruler";
    int64_t n = 0;
    const int64_t total = int64_t(ro.tasks.size() * ro.lengths.size()) * ro.samples;
    ro.log = [&](const std::string&) {
      ++n;
      say(o, label + ": RULER sample " + std::to_string(n) + "/" + std::to_string(total));
    };
    static const ruler::Resources res = ruler::Resources::load();
    auto sum = ruler::run(target, res, ro);
    for (auto L : o.ruler_lengths) r.ruler[L] = sum.average.count(L) ? sum.average.at(L) : std::nan("");
  }
  r.seconds = now_seconds() - t0;
  return r;
}

}  // namespace

nlohmann::json SuiteRow::to_json() const {
  return {{"label", label},
          {"model", model},
          {"mechanism", mechanism},
          {"parameters", parameters},
          {"bounded", bounded},
          {"bits_per_byte", number_or_null(bits_per_byte)},
          {"ppl_context", ppl_context},
          {"ppl_tokens", ppl_tokens},
          {"stream_tokens", stream_tokens},
          {"stream_tokens_per_s", stream_tokens_per_s},
          {"state_bytes", state_bytes},
          {"kv_bytes", kv_bytes},
          {"peak_rss_bytes", peak_rss_bytes},
          {"passkey", by_length(passkey)},
          {"ruler", by_length(ruler)},
          {"seconds", seconds}};
}

SuiteRow SuiteRow::from_json(const nlohmann::json& j) {
  SuiteRow r;
  r.label = j.at("label").get<std::string>();
  r.model = j.at("model").get<std::string>();
  r.mechanism = j.at("mechanism").get<std::string>();
  r.parameters = j.at("parameters").get<int64_t>();
  r.bounded = j.at("bounded").get<bool>();
  r.bits_per_byte = number_or_nan(j.at("bits_per_byte"));
  r.ppl_context = j.at("ppl_context").get<int64_t>();
  r.ppl_tokens = j.at("ppl_tokens").get<int64_t>();
  r.stream_tokens = j.at("stream_tokens").get<int64_t>();
  r.stream_tokens_per_s = j.at("stream_tokens_per_s").get<double>();
  r.state_bytes = j.at("state_bytes").get<int64_t>();
  r.kv_bytes = j.at("kv_bytes").get<int64_t>();
  r.peak_rss_bytes = j.at("peak_rss_bytes").get<int64_t>();
  r.passkey = by_length(j.at("passkey"));
  r.ruler = by_length(j.at("ruler"));
  r.seconds = j.at("seconds").get<double>();
  return r;
}

std::vector<SuiteRow> run_suite(const std::vector<std::string>& models, const std::vector<std::string>& labels,
                                const SuiteOptions& o) {
  LCX_CHECK(!models.empty(), "eval suite: no model folders given");
  LCX_CHECK(labels.empty() || labels.size() == models.size(), "eval suite: ", labels.size(), " labels for ",
            models.size(), " models");
  LCX_CHECK(!o.out.empty(), "eval suite: an output folder is needed");
  LCX_CHECK(o.passkey_samples >= 1, "eval suite: passkey samples must be >= 1 (got ", o.passkey_samples, ")");
  LCX_CHECK(o.ruler_samples >= 1, "eval suite: RULER samples must be >= 1 (got ", o.ruler_samples, ")");
  LCX_CHECK(o.chunk >= 1, "eval suite: chunk must be >= 1 (got ", o.chunk, ")");
  for (auto L : o.passkey_lengths) LCX_CHECK(L > 0, "eval suite: passkey length ", L, " is not a length");
  for (auto L : o.ruler_lengths) LCX_CHECK(L > 0, "eval suite: RULER length ", L, " is not a length");
  for (auto& t : o.ruler_tasks) ruler::tokens_to_generate(t);  // names an unknown task
  // Every folder and label checked before anything runs.
  std::vector<std::string> names;
  std::set<std::string> seen;
  for (size_t i = 0; i < models.size(); ++i) {
    LCX_CHECK(fs::exists(models[i] + "/config.json"), "eval suite: ", models[i],
              " is not a model folder (no config.json)");
    std::string name = labels.empty() ? fs::path(models[i]).lexically_normal().filename().string() : labels[i];
    if (name.empty() || name == "." || name == "..") name = "model" + std::to_string(i);
    LCX_CHECK(name.find('/') == std::string::npos, "eval suite: label '", name, "' holds a '/'");
    LCX_CHECK(seen.insert(name).second, "eval suite: two models are labelled '", name,
              "'; give --labels to tell them apart");
    if (!o.passkey_lengths.empty()) {  // the shortest prompt must hold the passkey prompt's fixed part
      auto tok = load_folder_tokenizer(models[i]);
      const int64_t fixed = PasskeyBuilder(*tok).fixed_tokens(PasskeyEvalOptions().key_max);
      const int64_t shortest = *std::min_element(o.passkey_lengths.begin(), o.passkey_lengths.end());
      LCX_CHECK(shortest >= fixed, "eval suite: passkey length ", shortest, " is shorter than ", models[i],
                "'s passkey prompt without filler (", fixed, " tokens)");
    }
    // The held-out text is read once here, so that a model without it (e.g. --ppl-data val and no
    // split.json) is refused now rather than after the models before it were measured.
    if (o.ppl_text) o.ppl_text(models[i]);
    names.push_back(name);
  }
  fs::create_directories(o.out + "/rows");
  const auto settings = o.settings();
  std::vector<SuiteRow> rows;
  for (size_t i = 0; i < models.size(); ++i) {
    const std::string path = o.out + "/rows/" + names[i] + ".json";
    if (fs::exists(path)) {
      auto j = read_json_file(path);
      if (j.value("settings", nlohmann::json()) == settings && j.value("model_path", "") == models[i]) {
        say(o, names[i] + ": measured before (" + path + "), reused");
        rows.push_back(SuiteRow::from_json(j.at("row")));
        continue;
      }
    }
    say(o, "model " + std::to_string(i + 1) + "/" + std::to_string(models.size()) + ": " + names[i] + " (" +
               models[i] + ")");
    rows.push_back(measure(models[i], names[i], o));
    write_file_atomic(path, nlohmann::json({{"model_path", models[i]}, {"settings", settings},
                                            {"row", rows.back().to_json()}})
                                .dump(2) + "\n");
    say(o, names[i] + ": done in " + fmt("%.1f", rows.back().seconds) + " s");
  }
  return rows;
}

std::string suite_markdown(const std::vector<SuiteRow>& rows) {
  std::set<int64_t> pk, ru;
  for (auto& r : rows) {
    for (auto& [L, v] : r.passkey) pk.insert(L);
    for (auto& [L, v] : r.ruler) ru.insert(L);
  }
  std::ostringstream s;
  s << "| model | mechanism | parameters | bits/byte held out (context) | tokens/s, batch 1 | state after "
       "the stream | full attention's KV cache | peak RSS |";
  for (auto L : pk) s << " passkey " << length_label(L) << " |";
  for (auto L : ru) s << " RULER " << length_label(L) << " |";
  s << "\n|---|---|---:|---:|---:|---:|---:|---:|";
  for (size_t i = 0; i < pk.size() + ru.size(); ++i) s << "---:|";
  s << "\n";
  for (auto& r : rows) {
    s << "| " << r.label << " | " << r.mechanism << " | " << fmt("%.2fM", r.parameters / 1e6) << " | ";
    if (std::isnan(r.bits_per_byte))
      s << "n/a";
    else
      s << fmt("%.3f", r.bits_per_byte) << " (" << length_label(r.ppl_context) << ")";
    s << " | ";
    if (r.stream_tokens > 0)
      s << fmt("%.0f", r.stream_tokens_per_s) << " | " << human_bytes(double(r.state_bytes)) << " at "
        << length_label(r.stream_tokens) << (r.bounded ? " (bounded)" : " (grows)") << " | "
        << human_bytes(double(r.kv_bytes)) << " | " << human_bytes(double(r.peak_rss_bytes)) << " |";
    else
      s << "n/a | n/a | n/a | n/a |";
    for (auto L : pk) {
      auto it = r.passkey.find(L);
      s << " " << (it == r.passkey.end() || std::isnan(it->second) ? "n/a" : fmt("%.0f%%", 100 * it->second)) << " |";
    }
    for (auto L : ru) {
      auto it = r.ruler.find(L);
      s << " " << (it == r.ruler.end() || std::isnan(it->second) ? "n/a" : fmt("%.1f", it->second)) << " |";
    }
    s << "\n";
  }
  return s.str();
}

std::string suite_heatmap(const std::vector<SuiteRow>& rows, const std::string& title) {
  std::set<int64_t> pk, ru;
  for (auto& r : rows) {
    for (auto& [L, v] : r.passkey) pk.insert(L);
    for (auto& [L, v] : r.ruler) ru.insert(L);
  }
  std::vector<std::string> names, cols;
  for (auto L : pk) cols.push_back("passkey " + length_label(L));
  for (auto L : ru) cols.push_back("RULER " + length_label(L));
  std::vector<std::vector<double>> v;
  for (auto& r : rows) {
    names.push_back(r.label);
    std::vector<double> row;
    for (auto L : pk) row.push_back(r.passkey.count(L) ? r.passkey.at(L) : std::nan(""));
    for (auto L : ru) row.push_back(r.ruler.count(L) ? r.ruler.at(L) / 100.0 : std::nan(""));
    v.push_back(row);
  }
  PlotOptions po;
  po.title = title;
  po.xlabel = "task and length (tokens)";
  po.ylabel = "model";
  po.height = std::max(240, 90 + 40 * int(rows.size()));
  po.width = std::max(480, 260 + 110 * int(cols.size()));
  return svg_heatmap(names, cols, v, po);
}

}  // namespace longctx
