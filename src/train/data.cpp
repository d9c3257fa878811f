#include "train/data.h"

#include <algorithm>
#include <random>
#include <set>

#include "text/litm_tasks.h"
#include "util/error.h"

namespace longctx {

nlohmann::json RunData::split_json() const {
  nlohmann::json j = {{"train", split.train}, {"val", split.val}, {"train_tokens", train.tokens.size()},
                      {"val_tokens", val.tokens.size()}, {"train_bytes", train.bytes}, {"val_bytes", val.bytes}};
  if (!split.ref.empty()) j["ref"] = split.ref;
  if (noise.total_noise() > 0) {
    j["noise_bytes"] = noise.noise_bytes;
    j["clean_bytes"] = noise.clean_bytes;
    j["noise_share"] = double(noise.total_noise()) / double(noise.total_noise() + noise.clean_bytes);
  }
  return j;
}

TokenStream tokenize_documents(const std::vector<const Document*>& docs, const Tokenizer& tok,
                               const std::string& separator) {
  TokenStream s;
  auto sep = tok.encode(separator);
  for (auto* d : docs) {
    auto ids = tok.encode(d->text);
    s.tokens.insert(s.tokens.end(), ids.begin(), ids.end());
    s.boundary.push_back(1);
    s.boundary.resize(s.tokens.size(), 0);
    s.tokens.insert(s.tokens.end(), sep.begin(), sep.end());
    s.boundary.resize(s.tokens.size(), 1);
    s.bytes += static_cast<int64_t>(d->text.size() + separator.size());
  }
  return s;
}

RunData prepare_data(const DataConfig& d, const Tokenizer& tok) {
  RunData r;
  std::vector<std::vector<Document>> corpora;
  for (auto& name : d.train) corpora.push_back(load_corpus(name));
  r.split = split_by_document(corpora[0], d.val_docs, d.split_seed);
  if (d.ref_docs > 0) {
    // The reference set: a second seeded draw among the first corpus's training documents.
    std::vector<Document> rest;
    for (auto& doc : corpora[0])
      if (std::binary_search(r.split.train.begin(), r.split.train.end(), doc.name)) rest.push_back(doc);
    LCX_CHECK(d.ref_docs < static_cast<int64_t>(rest.size()), "data.ref_docs = ", d.ref_docs, " leaves no training documents (",
              rest.size(), " after the validation split)");
    auto rs = split_by_document(rest, d.ref_docs, mix_seed(d.split_seed, 0x7265665f64));
    r.split.ref = rs.val;
    r.split.train = rs.train;
  }
  std::set<std::string> val(r.split.val.begin(), r.split.val.end()), ref(r.split.ref.begin(), r.split.ref.end());
  std::vector<const Document*> tr, va;
  std::vector<Document> noisy;  // owns the noisy copies
  for (size_t c = 0; c < corpora.size(); ++c)
    for (auto& doc : corpora[c]) {
      if (c == 0 && val.count(doc.name)) va.push_back(&doc);
      else if (d.subset == "reference" ? (c == 0 && ref.count(doc.name)) : !(c == 0 && ref.count(doc.name)))
        tr.push_back(&doc);
    }
  if (d.subset == "main") {
    for (size_t c = 1; c < corpora.size(); ++c)
      for (auto& doc : corpora[c]) r.split.train.push_back(doc.name);
  } else {
    r.split.train = r.split.ref;
  }
  if (d.subset == "main" && d.noise.share > 0) {
    noisy.reserve(tr.size());
    for (auto* doc : tr) noisy.push_back({doc->name, add_noise(*doc, d.noise, &r.noise)});
    tr.clear();
    for (auto& doc : noisy) tr.push_back(&doc);
  }
  r.train = tokenize_documents(tr, tok, d.separator);
  r.val = tokenize_documents(va, tok, d.separator);
  return r;
}

TrainBatches::TrainBatches(const DataConfig& d, const TokenStream& train, const Tokenizer& tok, int64_t batch,
                           uint64_t seed)
    : d_(d), s_(train), text_(train, batch, d.seq_len, seed), pk_(tok), tok_(tok), newline_(tok.encode("\n")),
      b_(batch), seed_(seed) {
  if (d_.ruler.fraction > 0) {
    const auto& q = d_.ruler;
    ruler_res_ = std::make_shared<ruler::Resources>(ruler::Resources::load(q.squad, q.hotpotqa));
    // RULER's tasks, and the lost-in-the-middle setups by name (litm_kv, litm_qa; opt-in).
    std::vector<std::string> wanted, litm_wanted;
    for (auto& t : q.tasks) {
      if (t == "litm_kv" || t == "litm_qa") {
        litm_wanted.push_back(t);
        continue;
      }
      LCX_CHECK(std::find(ruler::tasks().begin(), ruler::tasks().end(), t) != ruler::tasks().end(),
                "data.ruler.tasks: unknown task '", t, "' (RULER's 13 tasks, litm_kv, litm_qa)");
      wanted.push_back(t);
    }
    if (q.tasks.empty() || !wanted.empty())
      ruler_tasks_ = ruler::mixture_tasks(wanted, q.max_length, tok, *ruler_res_, &ruler_left_out_);
    for (auto& t : ruler_tasks_) ruler_min_.push_back(ruler::min_length(t, tok, *ruler_res_));
    for (auto& t : litm_wanted) {
      const std::string setup = t.substr(5);
      if (setup == "qa" && passages_.empty()) passages_ = litm::sotu_passages();
      int64_t m = int64_t(tok.encode((setup == "kv" ? litm::kv_sample(2, 0, 0, 0) : litm::qa_sample(passages_, 2, 0, 0, 0)).prompt).size()) + 48;
      if (m > q.max_length) {
        ruler_left_out_.push_back(t + ": its smallest sample needs " + std::to_string(m) + " tokens; max_length is " +
                                  std::to_string(q.max_length));
        continue;
      }
      ruler_tasks_.push_back(t);
      ruler_min_.push_back(m);
    }
    LCX_CHECK(!ruler_tasks_.empty(), "data.ruler: no task fits max_length ", q.max_length, " (",
              ruler_left_out_.empty() ? std::string() : ruler_left_out_[0], ")");
  }
  if (d_.passkey.fraction > 0) {
    int64_t fixed = pk_.fixed_tokens(d_.passkey.key_max, /*with_task=*/d_.passkey.bare_fraction < 1);
    LCX_CHECK(d_.passkey.max_length >= fixed, "data.passkey.max_length ", d_.passkey.max_length,
              " is shorter than a passkey prompt without noise (", fixed, " tokens)");
  }
}

int64_t TrainBatches::max_prompt_length(int64_t step) const {
  const auto& p = d_.passkey;
  if (step < p.curriculum_hold) return p.min_length;
  int64_t s = step - p.curriculum_hold;
  if (p.curriculum_steps <= 0 || s >= p.curriculum_steps) return p.max_length;
  return p.min_length + (p.max_length - p.min_length) * s / p.curriculum_steps;
}

void TrainBatches::ruler_row(std::mt19937_64& rng, std::vector<int64_t>* row, std::vector<float>* wt) const {
  const auto& q = d_.ruler;
  const size_t k = std::uniform_int_distribution<size_t>(0, ruler_tasks_.size() - 1)(rng);
  // The smallest sample measured at construction can be a few tokens short of another
  // sample's smallest (other keys, other words): a margin, and max_length when it still fails.
  const int64_t lo = std::min(q.max_length, std::max(q.min_length, ruler_min_[k] + 16));
  const int64_t len = std::uniform_int_distribution<int64_t>(lo, q.max_length)(rng);
  const uint64_t sample_seed = rng();
  std::vector<int64_t> prompt, answer;
  if (ruler_tasks_[k].rfind("litm_", 0) == 0) {
    // Passages differ in length: when even 2 documents of this draw do not fit, max_length,
    // then other draws at max_length.
    litm::Sample s;
    for (int attempt = 0;; ++attempt) {
      try {
        s = litm::fit_sample(ruler_tasks_[k].substr(5), attempt == 0 ? len : q.max_length, tok_, passages_,
                             attempt < 2 ? sample_seed : mix_seed(sample_seed, uint64_t(attempt)));
        break;
      } catch (const Error&) {
        if (attempt == 16) throw;
      }
    }
    prompt = tok_.encode(s.prompt);
    answer = tok_.encode(litm::reference_answer(s));
  } else {
    ruler::Sample s;
    try {
      s = ruler::generate(ruler_tasks_[k], len, tok_, *ruler_res_, sample_seed, 0);
    } catch (const Error&) {
      s = ruler::generate(ruler_tasks_[k], q.max_length, tok_, *ruler_res_, sample_seed, 0);
    }
    prompt = tok_.encode(s.input + s.answer_prefix);
    answer = tok_.encode(ruler::reference_answer(s));
  }
  row->insert(row->end(), prompt.begin(), prompt.end());
  wt->resize(row->size(), q.prompt_loss ? 1.f : 0.f);
  for (auto t : answer) row->push_back(t), wt->push_back(float(q.answer_weight));
  for (auto t : newline_) row->push_back(t), wt->push_back(1.f);
}

int64_t distinct_digit_key(std::mt19937_64& rng, int64_t n) {
  LCX_CHECK(n >= 1 && n <= 10, "distinct_digit_key: ", n, " digits (1..10)");
  std::vector<int64_t> d = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  for (int64_t i = 9; i > 0; --i) std::swap(d[i], d[std::uniform_int_distribution<int64_t>(0, i)(rng)]);
  if (n > 1 && d[0] == 0) std::swap(d[0], d[n < 10 ? n : 9]);  // no leading zero: swap in an unused digit
  int64_t k = 0;
  for (int64_t i = 0; i < n; ++i) k = k * 10 + d[i];
  return k;
}

Batch TrainBatches::get(int64_t step, int64_t micro) const {
  auto [x, y] = text_.get(step, micro);
  auto valid = ~text_.boundary(step, micro);
  const auto& p = d_.passkey;
  const auto& q = d_.ruler;
  if (p.fraction <= 0 && q.fraction <= 0) return {x, y, {}, valid};
  auto va = valid.accessor<bool, 2>();
  const int64_t T = d_.seq_len;
  auto w = torch::ones({b_, T}, torch::kFloat32);
  auto xa = x.accessor<int64_t, 2>(), ya = y.accessor<int64_t, 2>();
  auto wa = w.accessor<float, 2>();
  const int64_t hi = max_prompt_length(step);
  for (int64_t b = 0; b < b_; ++b) {
    std::mt19937_64 rng(mix_seed(seed_ ^ 0x7061737320ull, static_cast<uint64_t>(step), static_cast<uint64_t>(micro * b_ + b)));
    const double u = std::uniform_real_distribution<double>(0, 1)(rng);
    if (u >= p.fraction + q.fraction) continue;  // a text row
    // Row: prompt, answer, newline (repeated while prompts fit, with pack), then ordinary text.
    std::vector<int64_t> row;
    std::vector<float> wt;
    if (u >= p.fraction) ruler_row(rng, &row, &wt);  // a RULER row
    else while (true) {
      int64_t key = std::uniform_int_distribution<int64_t>(p.key_min, p.key_max)(rng);
      if (p.distinct_digits > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < p.distinct_digits)
        key = distinct_digit_key(rng, int64_t(std::to_string(p.key_max).size()));
      double depth = std::uniform_real_distribution<double>(0, 1)(rng);
      bool task = p.bare_fraction <= 0 || std::uniform_real_distribution<double>(0, 1)(rng) >= p.bare_fraction;
      int64_t fixed = pk_.fixed_tokens(key, task);
      int64_t lo = task ? std::max(p.min_length, fixed) : fixed;
      int64_t len = std::uniform_int_distribution<int64_t>(lo, std::max(lo, hi))(rng);
      if (p.boundary_fraction > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < p.boundary_fraction) {
        // Within 4 tokens of a multiple of the period, in the row: the answer's first token
        // (half) or the key's first digit (the other half).
        const int64_t P = p.boundary_period, base = int64_t(row.size());
        const int64_t jitter = std::uniform_int_distribution<int64_t>(-4, 4)(rng);
        const bool on_answer = std::uniform_int_distribution<int>(0, 1)(rng) == 0;
        auto phase = [&](int64_t at) { return ((at - jitter) % P + P) % P; };  // tokens past the target
        auto align_answer = [&] {
          int64_t l2 = len - phase(base + len);
          if (l2 < lo) l2 += P;
          if (l2 > std::max(lo, hi)) return false;
          len = l2;
          return true;
        };
        auto align_key = [&] {  // moves the info within the noise (needs noise >= the offset)
          const auto parts = pk_.make(-1, 0.0, key, task);  // head (empty without the task) and info
          const int64_t noise = len - fixed, first = base + int64_t(parts.head.size()) + parts.key_begin;
          int64_t n = noise > 0 ? std::llround(depth * double(noise)) : 0;
          n -= phase(first + n);
          if (n < 0) n += P;
          if (n > noise) return false;
          depth = noise > 0 ? double(n) / double(noise) : 0.0;
          return true;
        };
        // The other kind when the drawn one cannot be placed (a prompt shorter than the period).
        if (on_answer ? !align_answer() : !align_key()) on_answer ? align_key() : align_answer();
      }
      auto ans = pk_.answer(key);
      if (!row.empty() && int64_t(row.size() + len + ans.size() + newline_.size()) > T + 1) break;
      auto prompt = pk_.make(len, depth, key, task);
      int64_t base = int64_t(row.size());
      auto toks = pk_.all_tokens(prompt);
      row.insert(row.end(), toks.begin(), toks.end());
      wt.resize(row.size(), p.prompt_loss ? 1.f : 0.f);
      int64_t kb = base + int64_t(prompt.head.size()) + prompt.n_prefix;
      for (int64_t i = kb + prompt.key_begin; i < kb + prompt.key_end; ++i) wt[i] = 0.f;  // unpredictable
      for (auto t : ans) row.push_back(t), wt.push_back(float(p.answer_weight));
      for (auto t : newline_) row.push_back(t), wt.push_back(1.f);
      if (!p.pack || int64_t(row.size()) >= T + 1) break;
    }
    uint64_t range = s_.tokens.size() - T - 1;
    uint64_t off = rng() % (range + 1);
    for (int64_t i = 0; int64_t(row.size()) < T + 1; ++i) row.push_back(s_.tokens[off + i]), wt.push_back(1.f);
    for (int64_t t = 0; t < T; ++t) {
      xa[b][t] = row[t];
      ya[b][t] = row[t + 1];
      wa[b][t] = wt[t + 1];
      va[b][t] = wt[t + 1] > 0;
    }
  }
  return {x, y, w, valid};
}

}  // namespace longctx
