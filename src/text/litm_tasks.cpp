#include "text/litm_tasks.h"

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

std::string kv_prompt(const std::vector<std::pair<std::string, std::string>>& records, const std::string& key) {
  LCX_CHECK(records.size() >= 2, "litm: a key-value prompt needs at least 2 records");
  std::string kv;
  for (size_t i = 0; i < records.size(); ++i)
    kv += std::string(i == 0 ? "{" : " ") + "\"" + records[i].first + "\": \"" + records[i].second + "\"" +
          (i + 1 < records.size() ? ",\n" : "}");
  return "Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n" + kv +
         "\n\nKey: \"" + key + "\"\nCorresponding value:";
}

std::string qa_prompt(const std::string& question, const std::vector<Document>& docs) {
  std::string results;
  for (size_t i = 0; i < docs.size(); ++i)
    results += (i ? "\n" : "") + ("Document [" + std::to_string(i + 1) + "](Title: " + docs[i].title + ") ") + docs[i].text;
  return "Write a high-quality answer for the given question using only the provided search results (some of which "
         "might be irrelevant).\n\n" + results + "\n\nQuestion: " + question + "\nAnswer:";
}

std::vector<int64_t> kv_positions(int64_t pairs, int64_t count) {
  LCX_CHECK(pairs >= 2 && count >= 2, "litm: kv needs at least 2 pairs and 2 positions (got ", pairs, ", ", count, ")");
  std::vector<int64_t> p;
  for (int64_t i = 0; i < count; ++i) {
    int64_t v = int64_t(std::lround(double(i) * double(pairs - 1) / double(count - 1)));
    if (p.empty() || p.back() != v) p.push_back(v);
  }
  return p;
}

std::vector<int64_t> qa_positions(int64_t docs) {
  LCX_CHECK(docs >= 2, "litm: qa needs at least 2 documents (got ", docs, ")");
  std::vector<int64_t> p{0};
  for (int64_t i = 4; i < docs - 1; i += 5) p.push_back(i);
  p.push_back(docs - 1);
  return p;
}

std::vector<Passage> sotu_passages(int64_t words) {
  std::vector<Passage> out;
  for (auto& d : load_corpus("sotu")) {
    // "sotu/1790_george_washington_n": year, the president's names, the party letter(s).
    std::string base = d.name.substr(d.name.find('/') + 1);
    std::vector<std::string> parts;
    std::stringstream ss(base);
    for (std::string p; std::getline(ss, p, '_');) parts.push_back(p);
    LCX_CHECK(parts.size() >= 4, "litm: unexpected SOTU document name '", d.name, "'");
    std::string president;
    for (size_t i = 1; i + 1 < parts.size(); ++i) {
      std::string w = parts[i];
      w[0] = char(std::toupper(static_cast<unsigned char>(w[0])));
      if (w.size() == 1) w += ".";
      president += (president.empty() ? "" : " ") + w;
    }
    std::string surname = president.substr(president.rfind(' ') + 1);
    std::vector<std::string> ws;
    std::istringstream in(d.text);
    for (std::string w; in >> w;) ws.push_back(w);
    for (size_t a = 0; a + size_t(words) <= ws.size(); a += size_t(words)) {
      std::string text;
      for (size_t i = a; i < a + size_t(words); ++i) text += (i > a ? " " : "") + ws[i];
      out.push_back({parts[0] + " State of the Union, " + president, text, president, surname});
    }
  }
  LCX_CHECK(!out.empty(), "litm: no SOTU passages (run `make data`)");
  return out;
}

namespace {

uint64_t setup_seed(uint64_t seed, const std::string& setup, int64_t size, int64_t gold, int64_t index) {
  return mix_seed(mix_seed(seed, fnv1a(setup), uint64_t(size)), uint64_t(gold), uint64_t(index));
}

}  // namespace

Sample kv_sample(int64_t pairs, int64_t gold, uint64_t seed, int64_t index) {
  LCX_CHECK(pairs >= 2 && gold >= 0 && gold < pairs, "litm: kv gold index ", gold, " outside 0..", pairs - 1);
  ruler::Rng rng(setup_seed(seed, "kv", pairs, gold, index));
  std::vector<std::pair<std::string, std::string>> records;
  std::set<std::string> keys;
  while (int64_t(records.size()) < pairs) {
    auto k = ruler::uuid4(rng);
    if (keys.insert(k).second) records.push_back({k, ruler::uuid4(rng)});
  }
  Sample s;
  s.setup = "kv";
  s.size = pairs;
  s.gold = gold;
  s.index = index;
  s.prompt = kv_prompt(records, records[gold].first);
  s.outputs = {records[gold].second};
  return s;
}

Sample qa_sample(const std::vector<Passage>& passages, int64_t docs, int64_t gold, uint64_t seed, int64_t index) {
  LCX_CHECK(docs >= 2 && gold >= 0 && gold < docs, "litm: qa gold index ", gold, " outside 0..", docs - 1);
  ruler::Rng rng(setup_seed(seed, "qa", docs, gold, index));
  // The gold passage and the quote: 8 consecutive words without a double quote (the question
  // puts the quote in double quotes).
  const Passage* gp = nullptr;
  std::string quote;
  for (int64_t tries = 0; quote.empty(); ++tries) {
    LCX_CHECK(tries < 1000, "litm: could not draw a quote of 8 words from the passages");
    gp = &passages[rng.uniform(0, int64_t(passages.size()) - 1)];
    std::vector<std::string> gw;
    std::istringstream in(gp->text);
    for (std::string w; in >> w;) gw.push_back(w);
    if (gw.size() < 8) continue;
    const int64_t q0 = rng.uniform(0, int64_t(gw.size()) - 8);
    for (int64_t i = q0; i < q0 + 8; ++i) quote += (i > q0 ? " " : "") + gw[i];
    if (quote.find('"') != std::string::npos) quote.clear();
  }
  const Passage& g = *gp;
  // Distractors: other presidents' passages that do not hold the quote.
  std::vector<Document> ds;
  std::set<size_t> used;
  for (int64_t tries = 0; int64_t(ds.size()) < docs - 1; ++tries) {
    LCX_CHECK(tries < 100000, "litm: could not draw ", docs - 1, " distractor passages");
    size_t i = size_t(rng.uniform(0, int64_t(passages.size()) - 1));
    const auto& p = passages[i];
    if (p.surname == g.surname || used.count(i) || p.text.find(quote) != std::string::npos) continue;
    used.insert(i);
    ds.push_back({p.title, p.text});
  }
  ds.insert(ds.begin() + gold, Document{g.title, g.text});
  Sample s;
  s.setup = "qa";
  s.size = docs;
  s.gold = gold;
  s.index = index;
  s.prompt = qa_prompt("Which president's State of the Union address says \"" + quote + "\"?", ds);
  s.outputs = {g.president, g.surname};
  return s;
}

Sample fit_sample(const std::string& setup, int64_t length, const Tokenizer& tok, const std::vector<Passage>& passages,
                  uint64_t seed, int64_t reserve) {
  LCX_CHECK(setup == "kv" || setup == "qa", "litm: unknown setup '", setup, "'");
  ruler::Rng rng(seed);
  const uint64_t gold_draw = rng.next(), sample_seed = rng.next();
  auto make = [&](int64_t n) {
    const int64_t gold = int64_t(gold_draw % uint64_t(n));
    return setup == "kv" ? kv_sample(n, gold, sample_seed, 0) : qa_sample(passages, n, gold, sample_seed, 0);
  };
  auto fits = [&](int64_t n) { return int64_t(tok.encode(make(n).prompt).size()) + reserve <= length; };
  LCX_CHECK(fits(2), "litm: a ", setup, " sample with 2 ", setup == "kv" ? "pairs" : "documents", " does not fit in ",
            length, " tokens");
  int64_t lo = 2, hi = 4;
  while (fits(hi)) lo = hi, hi *= 2;
  while (hi - lo > 1) {
    int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  return make(lo);
}

std::string reference_answer(const Sample& s) {
  LCX_CHECK(!s.outputs.empty(), "litm: a sample without an answer");
  return s.setup == "kv" ? " " + s.outputs[0] : " " + s.outputs[0] + ".";
}

std::string normalize(const std::string& s) {
  std::string t;
  for (unsigned char c : s) {
    if (std::ispunct(c)) continue;
    t += char(std::tolower(c));
  }
  std::istringstream in(t);
  std::string out;
  for (std::string w; in >> w;) {
    if (w == "a" || w == "an" || w == "the") continue;
    out += (out.empty() ? "" : " ") + w;
  }
  return out;
}

bool correct(const Sample& s, const std::string& prediction) {
  if (s.setup == "kv") {
    for (auto& o : s.outputs)
      if (prediction.find(o) != std::string::npos) return true;
    return false;
  }
  const std::string p = " " + normalize(prediction) + " ";
  for (auto& o : s.outputs)
    if (p.find(" " + normalize(o) + " ") != std::string::npos) return true;
  return false;
}

}  // namespace longctx::litm
