#include "text/ruler_tasks.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "io/fs.h"
#include "io/json_file.h"
#include "text/corpus.h"
#include "util/error.h"
#include "util/hash.h"

namespace longctx::ruler {

uint64_t Rng::next() {
  uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

int64_t Rng::uniform(int64_t lo, int64_t hi) { return lo + int64_t(next() % uint64_t(hi - lo + 1)); }

std::string uuid4(Rng& rng) {
  uint64_t a = rng.next(), b = rng.next();
  a = (a & ~0xf000ull) | 0x4000ull;                               // version 4
  b = (b & 0x3fffffffffffffffull) | 0x8000000000000000ull;       // variant 10
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08llx-%04llx-%04llx-%04llx-%012llx", (unsigned long long)(a >> 32),
                (unsigned long long)((a >> 16) & 0xffff), (unsigned long long)(a & 0xffff),
                (unsigned long long)(b >> 48), (unsigned long long)(b & 0xffffffffffffull));
  return buf;
}

namespace {

const char* kNoise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

// ---- the task table ----
struct TaskSpec {
  const char* name;
  const char* haystack;  // noise | essay | needle | vt | cwe | fwe | qa
  const char* key;       // words | uuids
  const char* value;     // numbers | uuids
  int keys, values, queries;
  int64_t generate;
};

const TaskSpec kTasks[] = {
    {"niah_single_1", "noise", "words", "numbers", 1, 1, 1, 128},
    {"niah_single_2", "essay", "words", "numbers", 1, 1, 1, 128},
    {"niah_single_3", "essay", "words", "uuids", 1, 1, 1, 128},
    {"niah_multikey_1", "essay", "words", "numbers", 4, 1, 1, 128},
    {"niah_multikey_2", "needle", "words", "numbers", 1, 1, 1, 128},
    {"niah_multikey_3", "needle", "uuids", "uuids", 1, 1, 1, 128},
    {"niah_multivalue", "essay", "words", "numbers", 1, 4, 1, 128},
    {"niah_multiquery", "essay", "words", "numbers", 1, 1, 4, 128},
    {"vt", "vt", "", "", 0, 0, 0, 30},
    {"cwe", "cwe", "", "", 0, 0, 0, 120},
    {"fwe", "fwe", "", "", 0, 0, 0, 50},
    {"qa_1", "qa", "", "", 0, 0, 0, 32},
    {"qa_2", "qa", "", "", 0, 0, 0, 32},
};

const TaskSpec& spec(const std::string& task) {
  for (auto& t : kTasks)
    if (task == t.name) return t;
  std::string known;
  for (auto& t : kTasks) known += std::string(known.empty() ? "" : ", ") + t.name;
  fail("ruler: unknown task '", task, "' (the tasks: ", known, ")");
}

// The 40 evenly spaced depths of RULER: round(linspace(0, 100, 40)).
std::vector<int64_t> depth_grid() {
  std::vector<int64_t> d;
  for (int i = 0; i < 40; ++i) d.push_back(int64_t(std::lround(100.0 * i / 39.0)));
  return d;
}

// k distinct depths from the grid, in draw order.
std::vector<int64_t> draw_depths(Rng& rng, int k) {
  auto grid = depth_grid();
  rng.shuffle(grid);
  return std::vector<int64_t>(grid.begin(), grid.begin() + k);
}

std::string draw_key(Rng& rng, const std::string& type, const Resources& r) {
  if (type == "uuids") return uuid4(rng);
  LCX_CHECK(!r.adjectives.empty() && !r.nouns.empty(), "ruler: the word vocabularies are empty");
  return r.adjectives[rng.uniform(0, int64_t(r.adjectives.size()) - 1)] + "-" +
         r.nouns[rng.uniform(0, int64_t(r.nouns.size()) - 1)];
}

std::string draw_value(Rng& rng, const std::string& type) {
  if (type == "uuids") return uuid4(rng);
  return std::to_string(rng.uniform(1000000, 9999999));
}

std::string needle(const std::string& value_type, const std::string& key, const std::string& value) {
  return "One of the special magic " + value_type + " for " + key + " is: " + value + ".";
}

// Inserts items (in their order) at positions int(n * depth / 100) of units[0..n), the depths
// sorted, and joins everything with `sep` (RULER's insertion, without empty pieces).
std::string insert_at_depths(const std::vector<std::string>& units, const std::vector<std::string>& items,
                             std::vector<int64_t> depths, const std::string& sep) {
  const int64_t n = int64_t(units.size());
  std::sort(depths.begin(), depths.end());
  std::vector<int64_t> pos;
  for (auto d : depths) pos.push_back(int64_t(double(n) * double(d) / 100.0));
  std::string out;
  auto add = [&](const std::string& s) {
    if (s.empty()) return;
    if (!out.empty()) out += sep;
    out += s;
  };
  int64_t u = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    for (; u < pos[i]; ++u) add(units[u]);
    add(items[i]);
  }
  for (; u < n; ++u) add(units[u]);
  return out;
}

// The first n words of the essays, as sentences (a sentence ends with a word ending in . ? !,
// quotes and brackets aside).
std::vector<std::string> essay_sentences(const std::vector<std::string>& words, int64_t n) {
  std::vector<std::string> sents;
  std::string cur;
  for (int64_t i = 0; i < n; ++i) {
    const auto& w = words[i];
    if (!cur.empty()) cur += ' ';
    cur += w;
    size_t e = w.find_last_not_of("\"')]");
    if (e != std::string::npos && (w[e] == '.' || w[e] == '?' || w[e] == '!')) sents.push_back(std::move(cur)), cur.clear();
  }
  if (!cur.empty()) sents.push_back(cur);
  return sents;
}

struct Built {
  std::string input, prefix;
  std::vector<std::string> outputs;
};

std::string niah_template(bool plural, const std::string& type /* number | uuid */, const std::string& context,
                          const std::string& query, std::string* prefix) {
  if (plural) {
    *prefix = " The special magic " + type + "s for " + query + " mentioned in the provided text are";
    return "Some special magic " + type + "s are hidden within the following text. Make sure to memorize it. I will "
           "quiz you about the " + type + "s afterwards.\n" + context + "\nWhat are all the special magic " + type +
           "s for " + query + " mentioned in the provided text?";
  }
  *prefix = " The special magic " + type + " for " + query + " mentioned in the provided text is";
  return "A special magic " + type + " is hidden within the following text. Make sure to memorize it. I will quiz you "
         "about the " + type + " afterwards.\n" + context + "\nWhat is the special magic " + type + " for " + query +
         " mentioned in the provided text?";
}

Built build_niah(const TaskSpec& t, int64_t n, const Resources& r, Rng& rng) {
  const std::string vtype = t.value;  // "numbers" | "uuids"
  // The needles: keys (distinct), values, depths; drawn before the haystack so that the haystack
  // size changes nothing else.
  const int nkeys = std::max(t.keys, t.queries);
  std::vector<std::string> keys;
  std::set<std::string> used;
  while (int(keys.size()) < nkeys) {
    auto k = draw_key(rng, t.key, r);
    if (used.insert(k).second) keys.push_back(k);
  }
  std::vector<std::string> needles, outputs;
  for (int v = 0; v < t.values; ++v) {  // the asked key's values
    auto val = draw_value(rng, vtype);
    needles.push_back(needle(vtype, keys[0], val));
    outputs.push_back(val);
  }
  for (int k = 1; k < nkeys; ++k) {  // other keys: distractors (multikey) or asked too (multiquery)
    auto val = draw_value(rng, vtype);
    needles.push_back(needle(vtype, keys[k], val));
    if (t.queries > 1) outputs.push_back(val);
  }
  auto depths = draw_depths(rng, int(needles.size()));
  std::string context;
  if (std::string(t.haystack) == "noise") {
    context = insert_at_depths(std::vector<std::string>(n, kNoise), needles, depths, "\n");
  } else if (std::string(t.haystack) == "essay") {
    LCX_CHECK(n <= int64_t(r.essay_words.size()), "ruler: the essay haystack has ", r.essay_words.size(),
              " words; ", n, " were asked for");
    context = insert_at_depths(essay_sentences(r.essay_words, n), needles, depths, " ");
  } else {  // distractor needles: other keys with their own values
    std::vector<std::string> hay;
    Rng hr(rng.next());
    for (int64_t i = 0; i < n; ++i) {
      std::string k;
      do k = draw_key(hr, t.key, r);
      while (used.count(k));
      hay.push_back(needle(vtype, k, draw_value(hr, vtype)));
    }
    context = insert_at_depths(hay, needles, depths, "\n");
  }
  std::string query = keys[0];
  if (t.queries > 1) {
    query.clear();
    for (int q = 0; q < t.queries; ++q)
      query += (q == 0 ? "" : q + 1 == t.queries ? ", and " : ", ") + keys[q];
  }
  const bool plural = t.values > 1 || t.queries > 1;
  Built b;
  b.input = niah_template(plural, vtype == "uuids" ? "uuid" : "number", context, query, &b.prefix);
  b.outputs = outputs;
  return b;
}

// Variable tracking: one chain of 4 hops in noise sentences, after one worked example.
Built vt_prompt(int64_t n, Rng& rng, int name_len, std::vector<std::string>* names_out) {
  std::vector<std::string> names;
  std::set<std::string> used;
  while (names.size() < 5) {
    std::string s;
    for (int i = 0; i < name_len; ++i) s += char('A' + rng.uniform(0, 25));
    if (used.insert(s).second) names.push_back(s);
  }
  const std::string value = std::to_string(rng.uniform(10000, 99998));
  std::vector<std::string> chain{"VAR " + names[0] + " = " + value + " "};
  for (int i = 1; i < 5; ++i) chain.push_back("VAR " + names[i] + " = VAR " + names[i - 1] + " ");
  auto depths = draw_depths(rng, 5);
  auto context = insert_at_depths(std::vector<std::string>(n, kNoise), chain, depths, "\n");
  Built b;
  b.input = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n" + context +
            "\nQuestion: Find all variables that are assigned the value " + value + " in the text above.";
  b.prefix = " Answer: According to the chain(s) of variable assignment in the text above, 5 variables are assigned "
             "the value " + value + ", they are: ";
  b.outputs = names;
  if (names_out) *names_out = names;
  return b;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

// The example is a completed prompt: its input, answer prefix and answer.
std::string worked(const Built& b, const std::string& answer) { return b.input + b.prefix + answer; }

Built build_vt(int64_t n, Rng& rng) {
  Rng ex(rng.next());
  auto example = vt_prompt(5, ex, 3, nullptr);
  Built b = vt_prompt(n, rng, 5, nullptr);
  b.input = worked(example, join(example.outputs, " ")) + "\n" + b.input;
  return b;
}

// The common-words vocabulary: nouns, adjectives and verbs, sorted and unique.
std::vector<std::string> cwe_vocabulary(const Resources& r) {
  std::vector<std::string> vocab;
  for (auto* v : {&r.nouns, &r.adjectives, &r.verbs}) vocab.insert(vocab.end(), v->begin(), v->end());
  std::sort(vocab.begin(), vocab.end());
  vocab.erase(std::unique(vocab.begin(), vocab.end()), vocab.end());
  return vocab;
}

Built cwe_prompt(const std::vector<std::string>& common, const std::vector<std::string>& rare, int common_reps,
                 int rare_reps, Rng& rng) {
  std::vector<std::string> list;
  for (auto& w : common)
    for (int i = 0; i < common_reps; ++i) list.push_back(w);
  for (auto& w : rare)
    for (int i = 0; i < rare_reps; ++i) list.push_back(w);
  rng.shuffle(list);
  std::string ctx;
  for (size_t i = 0; i < list.size(); ++i) ctx += (i ? " " : "") + std::to_string(i + 1) + ". " + list[i];
  Built b;
  b.input = "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones "
            "that appear most often.\n" + ctx + "\nQuestion: What are the 10 most common words in the above list?";
  b.prefix = " Answer: The top 10 words that appear most often in the list are:";
  b.outputs = common;
  return b;
}

Built build_cwe(int64_t n, const Resources& r, Rng& rng) {
  auto vocab = cwe_vocabulary(r);
  LCX_CHECK(int64_t(vocab.size()) >= 40 + n, "ruler: cwe needs ", 40 + n, " distinct words; the vocabulary has ",
            vocab.size());
  rng.shuffle(vocab);
  // The example: 10 common words x3 and 20 others x1; the task: 10 common x30 and n others x3.
  std::vector<std::string> ex_common(vocab.begin(), vocab.begin() + 10), ex_rare(vocab.begin() + 10, vocab.begin() + 30);
  std::vector<std::string> common(vocab.begin() + 30, vocab.begin() + 40), rare(vocab.begin() + 40, vocab.begin() + 40 + n);
  Rng ex(rng.next());
  auto example = cwe_prompt(ex_common, ex_rare, 3, 1, ex);
  std::string ex_answer;
  for (int i = 0; i < 10; ++i) ex_answer += " " + std::to_string(i + 1) + ". " + ex_common[i];
  Built b = cwe_prompt(common, rare, 30, 3, rng);
  b.input = worked(example, ex_answer) + "\n" + b.input;
  return b;
}

Built build_fwe(int64_t n, Rng& rng) {
  const double zeta2 = M_PI * M_PI / 6.0;
  // Rank 1 is the noise word "..."; ranks 2.. are random 6-letter coded words (drawn for as many
  // ranks as the largest haystack could use, so n changes nothing else).
  std::vector<std::string> words{"..."};
  std::set<std::string> used{"..."};
  while (words.size() < 2048) {
    std::string s;
    for (int i = 0; i < 6; ++i) s += char('a' + rng.uniform(0, 25));
    if (used.insert(s).second) words.push_back(s);
  }
  std::vector<std::string> list;
  for (int64_t k = 1; k <= int64_t(words.size()); ++k) {
    int64_t c = int64_t(std::floor(double(n) * std::pow(double(k), -2.0) / zeta2));
    if (c < 1) break;
    for (int64_t i = 0; i < c; ++i) list.push_back(words[k - 1]);
  }
  rng.shuffle(list);
  Built b;
  b.input = "Read the following coded text and track the frequency of each coded word. Find the three most frequently "
            "appeared coded words. " + join(list, " ") +
            "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three most "
            "frequently appeared words in the above coded text?";
  b.prefix = " Answer: According to the coded text above, the three most frequently appeared words are:";
  b.outputs = {words[1], words[2], words[3]};
  return b;
}

Built build_qa(const QaSet& qa, int64_t n, Rng& rng) {
  const auto& item = qa.items[rng.uniform(0, int64_t(qa.items.size()) - 1)];
  std::set<std::string> gold(item.gold.begin(), item.gold.end());
  std::vector<std::string> pool;
  for (auto& d : qa.documents)
    if (!gold.count(d)) pool.push_back(d);
  LCX_CHECK(n <= int64_t(pool.size()), "ruler: the QA file has ", pool.size(), " distractor documents; ", n,
            " were asked for");
  rng.shuffle(pool);
  std::vector<std::string> docs(pool.begin(), pool.begin() + n);
  for (auto& g : item.gold) {  // each gold document at a random place
    double f = double(rng.next() >> 11) / double(1ull << 53);
    docs.insert(docs.begin() + int64_t(f * double(docs.size() + 1)) % int64_t(docs.size() + 1), g);
  }
  std::string ctx;
  for (size_t i = 0; i < docs.size(); ++i) ctx += (i ? "\n\n" : "") + ("Document " + std::to_string(i + 1) + ":\n") + docs[i];
  const std::string instr =
      "Answer the question based on the given documents. Only give me the answer and do not output any other words.";
  Built b;
  b.input = instr + "\n\nThe following are given documents.\n\n" + ctx + "\n\n" + instr + "\n\nQuestion: " + item.question;
  b.prefix = " Answer:";
  b.outputs = item.answers;
  return b;
}

int64_t min_haystack(const TaskSpec& t) {
  std::string h = t.haystack;
  if (h == "fwe") return 100;  // below, ranks 2..4 need not be distinct in count
  if (h == "needle" || h == "cwe" || h == "qa") return 0;
  return 1;
}

int64_t max_haystack(const TaskSpec& t, const Resources& r) {
  std::string h = t.haystack;
  if (h == "essay") return int64_t(r.essay_words.size());
  if (h == "qa") {
    const auto& qa = std::string(t.name) == "qa_1" ? r.squad : r.hotpotqa;
    size_t gold = 0;  // every question must find that many distractors
    for (auto& it : qa.items) gold = std::max(gold, it.gold.size());
    return int64_t(qa.documents.size()) - int64_t(gold);
  }
  if (h == "cwe") return int64_t(cwe_vocabulary(r).size()) - 40;  // 40: the example's and the common words
  return int64_t(1) << 40;
}

std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> w;
  std::istringstream in(text);
  for (std::string s; in >> s;) w.push_back(s);
  return w;
}

}  // namespace

const std::vector<std::string>& tasks() {
  static const std::vector<std::string> v = [] {
    std::vector<std::string> t;
    for (auto& s : kTasks) t.push_back(s.name);
    return t;
  }();
  return v;
}

int64_t tokens_to_generate(const std::string& task) { return spec(task).generate; }
std::string metric(const std::string& task) {
  return std::string(spec(task).haystack) == "qa" ? "string_match_part" : "string_match_all";
}
bool needs_qa(const std::string& task) { return std::string(spec(task).haystack) == "qa"; }

Sample build(const std::string& task, int64_t haystack, const Resources& r, uint64_t seed, int64_t index) {
  const auto& t = spec(task);
  Rng rng(mix_seed(seed, fnv1a(task), uint64_t(index)));
  Built b;
  std::string h = t.haystack;
  if (h == "vt") b = build_vt(haystack, rng);
  else if (h == "cwe") b = build_cwe(haystack, r, rng);
  else if (h == "fwe") b = build_fwe(haystack, rng);
  else if (h == "qa") {
    const auto& qa = task == "qa_1" ? r.squad : r.hotpotqa;
    LCX_CHECK(!qa.items.empty(), "ruler: task ", task, " needs ", task == "qa_1" ? "SQuAD v2" : "HotpotQA",
              " JSON: give its path (", task == "qa_1" ? "--squad" : "--hotpotqa", " PATH)");
    b = build_qa(qa, haystack, rng);
  } else b = build_niah(t, haystack, r, rng);
  Sample s;
  s.index = index;
  s.task = task;
  s.input = std::move(b.input);
  s.answer_prefix = std::move(b.prefix);
  s.outputs = std::move(b.outputs);
  s.tokens_to_generate = t.generate;
  s.haystack = haystack;
  return s;
}

Sample generate(const std::string& task, int64_t length, const Tokenizer& tok, const Resources& r, uint64_t seed,
                int64_t index) {
  const auto& t = spec(task);
  auto tokens = [&](const Sample& s) { return int64_t(tok.encode(s.input + s.answer_prefix).size()); };
  auto fits = [&](int64_t n, Sample* out) {
    Sample s = build(task, n, r, seed, index);
    s.prompt_tokens = tokens(s);
    bool ok = s.prompt_tokens + t.generate <= length;
    if (ok && out) *out = std::move(s);
    return ok;
  };
  int64_t lo = min_haystack(t), cap = max_haystack(t, r);
  Sample best;
  LCX_CHECK(lo <= cap && fits(lo, &best), "ruler: task ", task, " does not fit in ", length,
            " tokens even with the smallest haystack (", lo, ")");
  // Grow until it does not fit, then bisect; then step up while the next size still fits (the
  // token count of a shuffled haystack need not grow by exactly one step per unit).
  int64_t hi = std::max<int64_t>(lo + 1, 16);
  while (hi <= cap && fits(hi, nullptr)) lo = hi, hi *= 2;
  hi = std::min(hi, cap + 1);
  while (hi - lo > 1) {
    int64_t mid = lo + (hi - lo) / 2;
    if (fits(mid, nullptr)) lo = mid;
    else hi = mid;
  }
  while (lo + 1 <= cap && fits(lo + 1, nullptr)) ++lo;
  LCX_CHECK(fits(lo, &best), "ruler: internal error fitting ", task);
  best.length = length;
  return best;
}

std::string reference_answer(const Sample& s) {
  const std::string h = spec(s.task).haystack;
  if (h == "vt") return join(s.outputs, " ");
  if (h == "cwe") {
    std::string a;
    for (size_t i = 0; i < s.outputs.size(); ++i) a += " " + std::to_string(i + 1) + ". " + s.outputs[i];
    return a;
  }
  if (h == "fwe") return " " + join(s.outputs, " ");
  if (h == "qa") return s.outputs.empty() ? std::string() : " " + s.outputs[0];
  return " " + join(s.outputs, ", ") + ".";
}

int64_t min_length(const std::string& task, const Tokenizer& tok, const Resources& r, uint64_t seed) {
  const auto& t = spec(task);
  auto s = build(task, min_haystack(t), r, seed, 0);
  return int64_t(tok.encode(s.input + s.answer_prefix).size()) + t.generate;
}

std::vector<std::string> mixture_tasks(const std::vector<std::string>& wanted, int64_t max_length,
                                       const Tokenizer& tok, const Resources& r, std::vector<std::string>* left_out) {
  std::vector<std::string> out;
  for (auto& task : wanted.empty() ? tasks() : wanted) {
    spec(task);  // the name is known
    std::string why;
    if (task == "qa_1" && r.squad.items.empty()) why = "no SQuAD v2 file given";
    else if (task == "qa_2" && r.hotpotqa.items.empty()) why = "no HotpotQA file given";
    else if (int64_t m = min_length(task, tok, r); m > max_length)
      why = "its smallest sample needs " + std::to_string(m) + " tokens; max_length is " + std::to_string(max_length);
    if (why.empty()) out.push_back(task);
    else if (left_out) left_out->push_back(task + ": " + why);
  }
  return out;
}

std::string clean_prediction(const std::string& pred) {
  auto strip = [](const std::string& s) {
    size_t a = s.find_first_not_of(" \t\n\r\f\v"), b = s.find_last_not_of(" \t\n\r\f\v");
    return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
  };
  std::string s = strip(pred);
  for (auto& c : s)
    if (static_cast<unsigned char>(c) < 0x20) c = '\n';
  return strip(s);
}

namespace {
std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
}  // namespace

double string_match_all(const std::vector<std::string>& preds, const std::vector<std::vector<std::string>>& refs) {
  LCX_CHECK(preds.size() == refs.size(), "ruler: ", preds.size(), " predictions for ", refs.size(), " references");
  if (preds.empty()) return 0;
  double total = 0;
  for (size_t i = 0; i < preds.size(); ++i) {
    if (refs[i].empty()) continue;
    auto p = lower(clean_prediction(preds[i]));
    double found = 0;
    for (auto& r : refs[i]) found += p.find(lower(r)) != std::string::npos;
    total += found / double(refs[i].size());
  }
  return 100.0 * total / double(preds.size());
}

double string_match_part(const std::vector<std::string>& preds, const std::vector<std::vector<std::string>>& refs) {
  LCX_CHECK(preds.size() == refs.size(), "ruler: ", preds.size(), " predictions for ", refs.size(), " references");
  if (preds.empty()) return 0;
  double total = 0;
  for (size_t i = 0; i < preds.size(); ++i) {
    auto p = lower(clean_prediction(preds[i]));
    double best = 0;
    for (auto& r : refs[i]) best = std::max(best, p.find(lower(r)) != std::string::npos ? 1.0 : 0.0);
    total += best;
  }
  return 100.0 * total / double(preds.size());
}

double score(const std::string& task, const std::string& pred, const std::vector<std::string>& refs) {
  return metric(task) == "string_match_part" ? string_match_part({pred}, {refs}) : string_match_all({pred}, {refs});
}

int64_t effective_length(const std::map<int64_t, double>& score_by_length, double threshold) {
  int64_t best = 0;
  for (auto& [len, s] : score_by_length)
    if (s > threshold) best = std::max(best, len);
  return best;
}

// ---- resources ----


QaSet read_squad(const std::string& path) try {
  auto j = read_json_file(path);
  LCX_CHECK(j.is_object() && j.contains("data") && j["data"].is_array(), path,
            ": not SQuAD JSON (expected an object with a 'data' array)");
  QaSet q;
  std::set<std::string> seen;
  for (auto& art : j["data"]) {
    LCX_CHECK(art.contains("paragraphs"), path, ": an article has no 'paragraphs'");
    for (auto& p : art["paragraphs"]) {
      LCX_CHECK(p.contains("context") && p.contains("qas"), path, ": a paragraph lacks 'context' or 'qas'");
      std::string ctx = p["context"].get<std::string>();
      if (seen.insert(ctx).second) q.documents.push_back(ctx);
      for (auto& qa : p["qas"]) {
        if (qa.value("is_impossible", false)) continue;
        QaItem it;
        it.question = qa.at("question").get<std::string>();
        std::set<std::string> uniq;
        for (auto& a : qa.at("answers"))
          if (uniq.insert(a.at("text").get<std::string>()).second) it.answers.push_back(a.at("text").get<std::string>());
        if (it.answers.empty()) continue;
        it.gold = {ctx};
        q.items.push_back(std::move(it));
      }
    }
  }
  LCX_CHECK(!q.items.empty(), path, ": no answerable question");
  return q;
} catch (const nlohmann::json::exception& e) {
  fail(path, ": not SQuAD v2 JSON (", e.what(), ")");
}

QaSet read_hotpotqa(const std::string& path) try {
  auto j = read_json_file(path);
  LCX_CHECK(j.is_array(), path, ": not HotpotQA JSON (expected an array of questions)");
  QaSet q;
  std::set<std::string> seen;
  for (auto& e : j) {
    LCX_CHECK(e.contains("question") && e.contains("answer") && e.contains("context"), path,
              ": a question lacks 'question', 'answer' or 'context'");
    std::set<std::string> support;
    if (e.contains("supporting_facts"))
      for (auto& f : e["supporting_facts"]) support.insert(f.at(0).get<std::string>());
    QaItem it;
    it.question = e["question"].get<std::string>();
    it.answers = {e["answer"].get<std::string>()};
    for (auto& c : e["context"]) {
      std::string title = c.at(0).get<std::string>(), text;
      for (auto& s : c.at(1)) text += s.get<std::string>();
      std::string doc = title + "\n" + text;
      if (seen.insert(doc).second) q.documents.push_back(doc);
      if (support.count(title)) it.gold.push_back(doc);
    }
    LCX_CHECK(!it.gold.empty(), path, ": question '", it.question, "' has no supporting document in its context");
    q.items.push_back(std::move(it));
  }
  LCX_CHECK(!q.items.empty(), path, ": no question");
  return q;
} catch (const nlohmann::json::exception& e) {
  fail(path, ": not HotpotQA JSON (", e.what(), ")");
}

Resources Resources::load(const std::string& squad_path, const std::string& hotpot_path) {
  namespace fs = std::filesystem;
  Resources r;
  std::string text;
  for (auto& d : load_corpus("sotu")) text += d.text + "\n\n";
  r.essay_words = split_words(text);

  const char* env = std::getenv("LONGCTX_WORDS");
  std::string dict = env && *env ? env : "/usr/share/dict/american-english";
  LCX_CHECK(fs::exists(dict), "ruler: word list ", dict, " not found (Debian package wamerican; or set LONGCTX_WORDS)");
  std::set<std::string> words;
  {
    std::ifstream in(dict);
    for (std::string w; std::getline(in, w);) {
      if (w.size() < 3 || w.size() > 12) continue;
      bool ok = true;
      for (char c : w) ok = ok && c >= 'a' && c <= 'z';
      if (ok) words.insert(w);
    }
  }
  // Part of speech from the Brown corpus: the tag a word carries most often.
  std::map<std::string, std::map<std::string, int64_t>> tags;
  std::string brown = data_dir() + "/brown";
  LCX_CHECK(fs::is_directory(brown), "ruler: ", brown, " not found (run `make data`)");
  for (auto& p : fs::directory_iterator(brown)) {
    auto name = p.path().filename().string();
    if (name.size() != 4 || name[0] != 'c') continue;
    std::istringstream in(read_file(p.path().string()));
    for (std::string tok; in >> tok;) {
      auto slash = tok.rfind('/');
      if (slash == std::string::npos || slash == 0) continue;
      auto w = lower(tok.substr(0, slash));
      if (words.count(w)) ++tags[w][tok.substr(slash + 1)];
    }
  }
  for (auto& [w, t] : tags) {
    auto best = std::max_element(t.begin(), t.end(), [](auto& a, auto& b) { return a.second < b.second; });
    if (best->first == "jj") r.adjectives.push_back(w);
    else if (best->first == "nn") r.nouns.push_back(w);
    else if (best->first == "vb") r.verbs.push_back(w);
  }
  if (!squad_path.empty()) r.squad = read_squad(squad_path);
  if (!hotpot_path.empty()) r.hotpotqa = read_hotpotqa(hotpot_path);
  return r;
}

}  // namespace longctx::ruler
