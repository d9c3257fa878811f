#include "eval/passkey.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <sstream>

#include "text/corpus.h"
#include "text/passkey.h"
#include "util/error.h"
#include "util/plot.h"
#include "util/system.h"

namespace longctx {

nlohmann::json PasskeyCell::to_json() const {
  return {{"length", length},          {"depth", depth},       {"samples", samples},
          {"correct", correct},        {"accuracy", accuracy}, {"seconds", seconds},
          {"peak_rss_bytes", peak_rss_bytes}, {"state_bytes", state_bytes}, {"status", status}};
}

namespace {

// Feeds rows [G, n] (given as one vector per row, or one shared row) in chunks; returns the
// logits after the last token, [G, V].
struct Feeder {
  CausalLM& model;
  int64_t chunk;
  // Progress while a long prompt is read: `log` (when set) hears "{label}: read N of L tokens"
  // at most every `every` seconds.
  std::function<void(const std::string&)> log;
  std::string label;
  double last_report = 0, every = 3.0;
  torch::Tensor feed_shared(ModelState& st, const PasskeyBuilder& pk, const PasskeyPrompt& p, int64_t from,
                            int64_t n, int64_t G) {
    torch::Tensor last;
    std::vector<int64_t> buf;
    for (int64_t i = 0; i < n; i += chunk) {
      int64_t c = std::min(chunk, n - i);
      buf.clear();
      pk.tokens(p, from + i, c, buf);
      auto t = torch::tensor(buf, torch::kInt64).view({1, c}).expand({G, c}).contiguous();
      last = step(st, t);
      if (log && !label.empty() && now_seconds() - last_report >= every) {
        last_report = now_seconds();
        log(label + ": read " + std::to_string(from + i + c) + " of " + std::to_string(p.length()) + " tokens" +
            (G > 1 ? " (" + std::to_string(G) + " prompts at once)" : std::string()));
      }
    }
    return last;
  }
  torch::Tensor step(ModelState& st, const torch::Tensor& tokens) {
    auto h = model->hidden(tokens.to(model->device()), st);
    return model->logits(h.select(1, h.size(1) - 1)).to(torch::kCPU, torch::kFloat32);
  }
};

bool finished(const std::string& s) {
  size_t i = s.find_first_of("0123456789");
  if (i == std::string::npos) return false;
  return s.find_first_not_of("0123456789", i) != std::string::npos;
}

}  // namespace

nlohmann::json PasskeyProbe::to_json() const {
  nlohmann::json j = {{"memory_norm", memory_norm}};
  if (!beta_key.empty()) j["beta_key"] = beta_key, j["beta_filler"] = beta_filler;
  if (!forget.empty()) j["forget"] = forget;
  return j;
}

PasskeyProbe passkey_probe(CausalLM& model, const Tokenizer& tok, int64_t length, double depth, int64_t key,
                           int64_t chunk) {
  torch::NoGradGuard ng;
  const bool was_training = model->is_training();
  model->eval();
  PasskeyBuilder pk(tok);
  auto p = pk.make(length, depth, key);
  const int64_t key0 = int64_t(p.head.size()) + p.n_prefix + p.key_begin;
  const int64_t key1 = int64_t(p.head.size()) + p.n_prefix + p.key_end;
  const int64_t info0 = int64_t(p.head.size()) + p.n_prefix, info1 = info0 + int64_t(p.info.size());
  const int64_t noise0 = int64_t(p.head.size()), noise1 = info1 + p.n_suffix;
  auto st = model->new_state();
  std::vector<std::map<std::string, torch::Tensor>> rec;
  st.record = &rec;
  std::vector<std::vector<torch::Tensor>> per_layer, decays;  // recording layer -> beta, log alpha pieces [H, T]
  const int64_t n = p.length();
  for (int64_t from = 0; from < n; from += chunk) {
    std::vector<int64_t> ids;
    const int64_t len = std::min(chunk, n - from);
    pk.tokens(p, from, len, ids);
    rec.clear();
    model->forward(torch::tensor(ids, torch::kInt64).view({1, -1}).to(model->device()), st);
    if (per_layer.size() < rec.size()) per_layer.resize(rec.size()), decays.resize(rec.size());
    for (size_t i = 0; i < rec.size(); ++i) {
      if (rec[i].count("beta")) per_layer[i].push_back(rec[i]["beta"][0].to(torch::kCPU, torch::kFloat64));
      if (rec[i].count("log_alpha")) decays[i].push_back(rec[i]["log_alpha"][0].to(torch::kCPU, torch::kFloat64));
    }
  }
  PasskeyProbe r;
  for (auto& pieces : per_layer) {
    if (pieces.empty()) continue;
    auto b = torch::cat(pieces, 1).mean(0);  // over heads: [T]
    auto acc = b.accessor<double, 1>();
    double sk = 0, sf = 0;
    int64_t nk = 0, nf = 0;
    for (int64_t t = 0; t < n; ++t) {
      if (t >= key0 && t < key1) sk += acc[t], ++nk;
      else if (t >= noise0 && t < noise1 && !(t >= info0 && t < info1)) sf += acc[t], ++nf;
    }
    r.beta_key.push_back(nk ? sk / double(nk) : 0.0);
    r.beta_filler.push_back(nf ? sf / double(nf) : 0.0);
  }
  for (auto& pieces : decays) {
    if (pieces.empty()) continue;
    auto f = (-torch::cat(pieces, 1)).mean(1).contiguous();  // [H]
    r.forget.emplace_back(f.data_ptr<double>(), f.data_ptr<double>() + f.numel());
  }
  for (auto& ls : st.layers) r.memory_norm.push_back(ls.has("M") ? ls.at("M").norm().item<double>() : 0.0);
  if (was_training) model->train();
  return r;
}

std::vector<nlohmann::json> passkey_trace(CausalLM& model, const Tokenizer& tok, const PasskeyTraceOptions& o) {
  torch::NoGradGuard ng;
  model->eval();
  LCX_CHECK(o.every >= 1 && o.chunk >= 1, "passkey trace: --every and --chunk must be >= 1");
  LCX_CHECK(o.key != o.other_key, "passkey trace: --key and --other-key must differ");
  PasskeyBuilder pk(tok);
  auto pa = pk.make(o.length, o.depth, o.key), pb = pk.make(o.length, o.depth, o.other_key);
  LCX_CHECK(pa.info.size() == pb.info.size() && pa.n_prefix == pb.n_prefix,
            "passkey trace: keys ", o.key, " and ", o.other_key, " take different token counts; pick keys of equal length");
  const int64_t info_end = int64_t(pa.head.size()) + pa.n_prefix + int64_t(pa.info.size());
  const int64_t body = pa.length() - int64_t(pa.ask.size());  // everything before the question
  const auto answer = pk.answer(o.key);
  const int64_t max_new = int64_t(answer.size()) + 2;

  auto st = model->new_state();
  std::vector<std::map<std::string, torch::Tensor>> rec;
  st.record = &rec;
  std::vector<double> read_ss, local_ss;  // per layer: sums of squares since the last point
  std::vector<int64_t> read_n;
  Feeder fd{model, o.chunk};
  auto feed = [&](ModelState& s, const std::vector<int64_t>& a, const std::vector<int64_t>& b) {  // -> [2, V]
    return fd.step(s, torch::stack({torch::tensor(a, torch::kInt64), torch::tensor(b, torch::kInt64)})).to(torch::kFloat64);
  };
  auto rms = [](const torch::Tensor& x) { return x.to(torch::kFloat64).pow(2).mean().sqrt().item<double>(); };
  std::vector<nlohmann::json> points;
  int64_t next = info_end;  // the first point: right after the info
  for (int64_t pos = 0; pos < body;) {
    const int64_t stop = pos < info_end ? std::min(info_end, body) : std::min(next, body);
    std::vector<int64_t> a, b;
    const int64_t len = std::min(o.chunk, stop - pos);
    pk.tokens(pa, pos, len, a);
    pk.tokens(pb, pos, len, b);
    rec.clear();
    feed(st, a, b);
    if (read_ss.size() < rec.size()) read_ss.resize(rec.size()), local_ss.resize(rec.size()), read_n.resize(rec.size());
    for (size_t i = 0; i < rec.size(); ++i)
      if (rec[i].count("read") && pos >= info_end) {
        auto r = rec[i]["read"][0].to(torch::kFloat64), l = rec[i]["local"][0].to(torch::kFloat64);
        read_ss[i] += r.pow(2).sum().item<double>(), local_ss[i] += l.pow(2).sum().item<double>();
        read_n[i] += r.numel();
      }
    pos += len;
    if (pos != next && pos != body) continue;
    // A point: ask a copy of the state the question, greedy, both rows.
    auto q = st.clone();
    std::vector<std::map<std::string, torch::Tensor>> qrec;
    q.record = &qrec;
    auto lg = feed(q, pa.ask, pb.ask);
    // Margins with the right answer fed (teacher forcing): log p(answer token) - best other token.
    std::vector<double> margins;
    {
      auto tf = q.clone();
      auto l = lg;
      for (size_t j = 0; j < answer.size(); ++j) {
        auto lp = torch::log_softmax(l[0], -1);
        auto others = lp.clone();
        others[answer[j]] = -std::numeric_limits<double>::infinity();
        margins.push_back(lp[answer[j]].item<double>() - others.max().item<double>());
        if (j + 1 < answer.size()) l = feed(tf, {answer[j]}, {answer[j]});
      }
    }
    double digit_min = std::numeric_limits<double>::infinity();  // over the key's digits
    for (size_t j = 0; j < answer.size(); ++j) {
      auto piece = tok.decode({answer[j]});
      if (piece.find_first_of("0123456789") != std::string::npos) digit_min = std::min(digit_min, margins[j]);
    }
    nlohmann::json pt = {{"position", pos}, {"filler_after_key", pos - info_end}, {"margin", digit_min},
                         {"margins", margins}};
    nlohmann::json layers = nlohmann::json::array();
    for (size_t i = 0; i < q.layers.size(); ++i) {
      nlohmann::json L = {{"layer", i}};
      const auto& ls = st.layers[i];
      if (ls.has("M")) {
        auto M = ls.at("M").to(torch::kFloat64);
        const double na = M[0].norm().item<double>();
        L["memory_norm"] = na;
        L["imprint"] = (M[0] - M[1]).norm().item<double>() / std::max(na, 1e-30);
      }
      if (i < qrec.size() && qrec[i].count("read")) {
        auto r = qrec[i]["read"].to(torch::kFloat64).select(2, -1);  // [2, H, d] at the question's last token
        L["read_diff"] = (r[0] - r[1]).norm().item<double>() / std::max(r[0].norm().item<double>(), 1e-30);
        L["read_rms_question"] = rms(r[0]);
      }
      if (i < read_n.size() && read_n[i] > 0) {
        L["read_rms"] = std::sqrt(read_ss[i] / double(read_n[i]));
        L["local_rms"] = std::sqrt(local_ss[i] / double(read_n[i]));
        read_ss[i] = local_ss[i] = 0, read_n[i] = 0;
      }
      layers.push_back(L);
    }
    pt["layers"] = layers;
    q.record = nullptr;
    std::vector<std::string> text(2);
    std::vector<int64_t> ids(2);
    for (int64_t j = 0; j < max_new; ++j) {
      for (int r = 0; r < 2; ++r) ids[size_t(r)] = lg[r].argmax().item<int64_t>(), text[size_t(r)] += tok.decode({ids[size_t(r)]});
      if (j + 1 < max_new) lg = feed(q, {ids[0]}, {ids[1]});
    }
    pt["answer"] = text[0];
    pt["correct"] = first_integer(text[0]) == o.key;
    pt["other_correct"] = first_integer(text[1]) == o.other_key;
    points.push_back(pt);
    if (o.on_point) o.on_point(pt);
    next = (pos == info_end ? info_end : next) + o.every;
  }
  return points;
}

std::vector<PasskeyCell> eval_passkey(CausalLM& model, const Tokenizer& tok, const PasskeyEvalOptions& o) {
  torch::NoGradGuard ng;
  model->eval();
  LCX_CHECK(o.samples >= 1, "passkey: --samples must be >= 1");
  LCX_CHECK(o.key_min >= 0 && o.key_max >= o.key_min, "passkey: key range [", o.key_min, ", ", o.key_max, "] is empty");
  PasskeyBuilder pk(tok);
  const int64_t max_new = o.max_new_tokens > 0 ? o.max_new_tokens : int64_t(std::to_string(o.key_max).size()) + 4;
  auto log = [&](const std::string& s) {
    if (o.log) o.log(s);
  };
  Feeder fd{model, std::max<int64_t>(1, o.chunk)};
  const bool bounded = model->state_bounded();
  if (o.log) fd.log = o.log;
  fd.every = o.progress_every;
  int64_t budget = o.memory_budget > 0 ? o.memory_budget : int64_t(0.8 * double(available_memory_bytes()));
  // A growing state's bytes per token, measured (not assumed) on a short probe.
  double bytes_per_token = 0;
  if (!bounded) {
    auto st = model->new_state();
    auto probe = pk.make(pk.fixed_tokens(o.key_max) + 64, 0.5, o.key_max);
    fd.feed_shared(st, pk, probe, 0, probe.length(), 1);
    bytes_per_token = double(st.bytes()) / double(probe.length());
  }

  std::vector<PasskeyCell> cells;
  for (int64_t L : o.lengths) {
    std::vector<double> depths = o.depths;
    std::sort(depths.begin(), depths.end());
    auto fresh = [&] {  // a state that knows the prompt's length (Activation Beacon plans by it)
      ModelState s = model->new_state();
      s.expected_tokens = L;
      return s;
    };
    ModelState prefix = fresh();
    int64_t prefix_pos = 0;
    for (double depth : depths) {
      LCX_CHECK(depth >= 0 && depth <= 100, "passkey: depth ", depth, " must be in [0, 100] (percent)");
      PasskeyCell cell;
      cell.length = L, cell.depth = depth, cell.samples = o.samples;
      reset_peak_rss();
      double t0 = now_seconds();
      fd.label = "length " + std::to_string(L) + " depth " + std::to_string(int(depth)) + "%";
      fd.last_report = t0;
      // Keys and prompts; samples grouped by prompt layout (equal for byte tokens).
      std::vector<PasskeyPrompt> prompts;
      for (int64_t i = 0; i < o.samples; ++i) {
        std::mt19937_64 rng(mix_seed(o.seed, static_cast<uint64_t>(L), static_cast<uint64_t>(depth * 1000) * 1000003ull + i));
        int64_t key = std::uniform_int_distribution<int64_t>(o.key_min, o.key_max)(rng);
        prompts.push_back(pk.make(L, depth / 100.0, key));
      }
      int64_t G = o.samples;
      if (!bounded) {
        double need = bytes_per_token * double(L);
        int64_t fit = need > 0 ? int64_t(double(budget) / need) - 1 : G;  // -1: the shared prefix
        if (fit < 1) {
          char buf[256];
          std::snprintf(buf, sizeof buf,
                        "skipped: the state grows %.0f bytes per token and would need %s at %lld tokens; the budget "
                        "is %s (80%% of available memory)",
                        bytes_per_token, human_bytes(need).c_str(), (long long)L, human_bytes(double(budget)).c_str());
          cell.status = buf;
          cell.seconds = now_seconds() - t0;
          log("length " + std::to_string(L) + " depth " + std::to_string(int(depth)) + ": " + cell.status);
          cells.push_back(cell);
          continue;
        }
        G = std::min(G, fit);
      }
      std::vector<size_t> order(prompts.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return std::make_pair(prompts[a].n_prefix, prompts[a].info.size()) <
               std::make_pair(prompts[b].n_prefix, prompts[b].info.size());
      });
      for (size_t g0 = 0; g0 < order.size();) {
        // A group: same prefix length and info length, at most G samples.
        size_t g1 = g0 + 1;
        const auto& p0 = prompts[order[g0]];
        while (g1 < order.size() && int64_t(g1 - g0) < G && prompts[order[g1]].n_prefix == p0.n_prefix &&
               prompts[order[g1]].info.size() == p0.info.size())
          ++g1;
        const int64_t n = int64_t(g1 - g0);
        // The shared prefix (task + noise), extended from the previous depth when possible.
        const int64_t pre = int64_t(p0.head.size()) + p0.n_prefix;
        if (pre < prefix_pos) prefix = fresh(), prefix_pos = 0;
        if (pre > prefix_pos) fd.feed_shared(prefix, pk, p0, prefix_pos, pre - prefix_pos, 1);
        prefix_pos = pre;
        ModelState st = prefix.clone();
        st.expand_batch(n);
        // Info (per sample), the rest of the noise and the question (shared).
        std::vector<int64_t> info;
        for (size_t i = g0; i < g1; ++i) {
          const auto& v = prompts[order[i]].info;
          info.insert(info.end(), v.begin(), v.end());
        }
        auto logits = fd.step(st, torch::tensor(info, torch::kInt64).view({n, int64_t(p0.info.size())}));
        int64_t rest = p0.length() - pre - int64_t(p0.info.size());
        if (rest > 0) logits = fd.feed_shared(st, pk, p0, pre + int64_t(p0.info.size()), rest, n);
        cell.state_bytes = st.bytes() / n;
        // Greedy generation for the whole group.
        std::vector<std::vector<int64_t>> gen(n);
        std::vector<std::string> text(n);
        for (int64_t s = 0; s < max_new; ++s) {
          auto next = logits.argmax(-1);
          bool all_done = true;
          for (int64_t i = 0; i < n; ++i) {
            gen[i].push_back(next[i].item<int64_t>());
            text[i] = tok.decode(gen[i]);
            all_done = all_done && finished(text[i]);
          }
          if (all_done || s + 1 == max_new) break;
          logits = fd.step(st, next.view({n, 1}));
        }
        for (int64_t i = 0; i < n; ++i) {
          const auto& p = prompts[order[g0 + i]];
          int64_t got = first_integer(text[i]);
          bool ok = got == p.key;
          cell.correct += ok;
          if (o.on_sample)
            o.on_sample({{"length", L},
                         {"depth", depth},
                         {"sample", int64_t(order[g0 + i])},
                         {"key", p.key},
                         {"info_position", int64_t(p.head.size()) + p.n_prefix},
                         {"generated", text[i]},
                         {"predicted", got},
                         {"correct", ok}});
        }
        g0 = g1;
      }
      cell.accuracy = double(cell.correct) / double(cell.samples);
      cell.seconds = now_seconds() - t0;
      cell.peak_rss_bytes = peak_rss_bytes();
      char buf[200];
      std::snprintf(buf, sizeof buf, "length %lld depth %g%%: %lld/%lld correct, %.1f s, peak RSS %s, state %s",
                    (long long)L, depth, (long long)cell.correct, (long long)cell.samples, cell.seconds,
                    human_bytes(double(cell.peak_rss_bytes)).c_str(), human_bytes(double(cell.state_bytes)).c_str());
      log(buf);
      cells.push_back(cell);
    }
  }
  return cells;
}

namespace {
// The distinct lengths and depths of a set of cells, sorted.
void axes(const std::vector<PasskeyCell>& cells, std::vector<int64_t>& lengths, std::vector<double>& depths) {
  for (auto& c : cells) {
    if (std::find(lengths.begin(), lengths.end(), c.length) == lengths.end()) lengths.push_back(c.length);
    if (std::find(depths.begin(), depths.end(), c.depth) == depths.end()) depths.push_back(c.depth);
  }
  std::sort(lengths.begin(), lengths.end());
  std::sort(depths.begin(), depths.end());
}
}  // namespace

std::string passkey_table(const std::vector<PasskeyCell>& cells) {
  std::vector<int64_t> lengths;
  std::vector<double> depths;
  axes(cells, lengths, depths);
  std::ostringstream s;
  s << "| length |";
  for (double d : depths) s << " depth " << d << "% |";
  s << " seconds | peak RSS | state |\n|---|";
  for (size_t i = 0; i < depths.size(); ++i) s << "---|";
  s << "---|---|---|\n";
  for (int64_t L : lengths) {
    s << "| " << L << " |";
    double secs = 0;
    int64_t rss = 0, state = 0;
    for (double d : depths) {
      auto it = std::find_if(cells.begin(), cells.end(), [&](auto& c) { return c.length == L && c.depth == d; });
      if (it == cells.end() || it->status != "ok") {
        s << " n/a |";
      } else {
        char b[32];
        std::snprintf(b, sizeof b, " %.0f%% |", 100 * it->accuracy);
        s << b;
      }
      if (it != cells.end()) secs += it->seconds, rss = std::max(rss, it->peak_rss_bytes), state = std::max(state, it->state_bytes);
    }
    char b[128];
    std::snprintf(b, sizeof b, " %.1f | %s | %s |\n", secs, rss ? human_bytes(double(rss)).c_str() : "n/a",
                  state ? human_bytes(double(state)).c_str() : "n/a");
    s << b;
  }
  return s.str();
}

std::string passkey_heatmap_svg(const std::vector<PasskeyCell>& cells, const std::string& title) {
  std::vector<int64_t> lengths;
  std::vector<double> depths;
  axes(cells, lengths, depths);
  std::vector<std::string> rows, cols;
  for (double d : depths) {
    char b[32];
    std::snprintf(b, sizeof b, "%g%%", d);
    rows.push_back(b);
  }
  for (auto L : lengths) cols.push_back(length_label(L));
  std::vector<std::vector<double>> v(depths.size(), std::vector<double>(lengths.size(), std::nan("")));
  for (auto& c : cells) {
    if (c.status != "ok") continue;
    size_t r = std::find(depths.begin(), depths.end(), c.depth) - depths.begin();
    size_t k = std::find(lengths.begin(), lengths.end(), c.length) - lengths.begin();
    v[r][k] = c.accuracy;
  }
  PlotOptions po;
  po.title = title;
  po.xlabel = "prompt length (tokens)";
  po.ylabel = "depth of the key";
  return svg_heatmap(rows, cols, v, po);
}

}  // namespace longctx
