// Lost in the middle (Liu et al., arXiv 2307.03172; MECHANISMS.md section 6): accuracy as a
// function of where the answer sits in the context. Two setups, with the paper's prompts:
//
// - Key-value retrieval ("kv"): a JSON object of n uuid4 keys and values (n = 75, 140, 300 in
//   the paper), rendered as the paper's code renders it ({"k": "v",\n "k": "v",\n ... "k": "v"}),
//   the gold key at one of `positions` evenly spaced indexes 0..n-1. Correct when the gold value
//   occurs in the prediction.
// - Multi-document QA ("qa"), offline from the corpora: k documents (k = 10, 20, 30), each a
//   passage of about 100 words from a State of the Union address, titled
//   "{year} State of the Union, {President}"; the question quotes 8 consecutive words of the gold
//   passage and asks which president's address says them; the other k-1 passages come from other
//   presidents' addresses (so exactly one document answers). The gold document sits at index
//   0, 4, 9, ..., k-1 as in the paper. Scored like the paper's best_subspan_em: the normalized
//   prediction contains a normalized answer (the president's full name, or the surname).
//
// Text only: the prompts, samples and scoring (training mixtures use them); eval/litm.h runs a
// target over them.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "text/ruler_tasks.h"
#include "text/tokenizer.h"

namespace longctx::litm {

struct Sample {
  std::string setup;  // "kv" | "qa"
  int64_t size = 0;   // pairs (kv) or documents (qa)
  int64_t gold = 0;   // index of the gold pair / document, 0-based
  int64_t index = 0;  // sample number at this (setup, size, gold)
  std::string prompt;
  std::vector<std::string> outputs;  // any of them in the prediction counts as correct
};

// The paper's prompts, filled in.
std::string kv_prompt(const std::vector<std::pair<std::string, std::string>>& records, const std::string& key);
struct Document {
  std::string title, text;
};
std::string qa_prompt(const std::string& question, const std::vector<Document>& docs);

// Gold positions: kv, `count` evenly spaced indexes round(i (n - 1) / (count - 1)); qa, the
// paper's 0, 4, 9, ..., k - 1 (every fifth index and the last).
std::vector<int64_t> kv_positions(int64_t pairs, int64_t count = 5);
std::vector<int64_t> qa_positions(int64_t docs);

// The passages of the multi-document setup: every SOTU address cut into passages of
// `words` words (the last shorter piece dropped), with their address's year and president.
struct Passage {
  std::string title, text, president, surname;
};
std::vector<Passage> sotu_passages(int64_t words = 100);

Sample kv_sample(int64_t pairs, int64_t gold, uint64_t seed, int64_t index);
Sample qa_sample(const std::vector<Passage>& passages, int64_t docs, int64_t gold, uint64_t seed, int64_t index);

// The paper's normalization (lower case, punctuation and articles removed, spaces collapsed).
std::string normalize(const std::string& s);
// kv: the value occurs in the prediction; qa: a normalized answer occurs in the normalized one.
bool correct(const Sample& s, const std::string& prediction);

// For training mixtures: the largest sample of `setup` (most pairs or documents, at least 2)
// whose prompt plus `reserve` tokens fits `length` tokens of `tok`, the gold index drawn
// uniformly from `seed`. Throws when 2 do not fit.
Sample fit_sample(const std::string& setup, int64_t length, const Tokenizer& tok, const std::vector<Passage>& passages,
                  uint64_t seed, int64_t reserve = 48);
// What a perfect model answers: kv " {value}", qa " {President}."
std::string reference_answer(const Sample& s);

}  // namespace longctx::litm
