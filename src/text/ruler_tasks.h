// RULER (Hsieh et al., arXiv 2404.06654): the 13 synthetic tasks, their templates, the haystack
// fitted to a token budget with the model's own tokenizer, and the metrics. MECHANISMS.md
// section 5 is the specification; the templates are its strings, byte for byte.
//
// Offline data: the essay haystack is the State of the Union addresses joined; word keys are
// "adjective-noun" and the common-words task draws nouns, adjectives and verbs, all taken from
// Debian's word list (wamerican) with their part of speech from the Brown corpus tags (a word
// counts as an adjective, noun or verb when that is its most frequent Brown tag: JJ, NN, VB);
// the QA tasks read SQuAD v2 and HotpotQA JSON from paths the user gives.
//
// Everything here is text: no model, no torch (training mixtures and eval/ share it).
// Randomness is a splitmix64 stream seeded from
// (seed, task, index), so a sample is the same on every machine and with any other samples.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace longctx::ruler {

// A small deterministic random stream (splitmix64): the same numbers on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next();
  int64_t uniform(int64_t lo, int64_t hi);  // inclusive
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (int64_t i = int64_t(v.size()) - 1; i > 0; --i) std::swap(v[i], v[uniform(0, i)]);
  }

 private:
  uint64_t s_;
};

// A uuid4 in its text form (version and variant bits set), drawn from rng.
std::string uuid4(Rng& rng);

struct QaItem {
  std::string question;
  std::vector<std::string> answers;
  std::vector<std::string> gold;  // the documents that hold the answer
};

struct QaSet {
  std::vector<QaItem> items;
  std::vector<std::string> documents;  // every document of the file (the distractor pool)
};

// SQuAD v2 (its public JSON: data[].paragraphs[].{context, qas[].{question, answers[].text,
// is_impossible}}): answerable questions only. HotpotQA (distractor setting: a list of
// {question, answer, context: [[title, [sentences]]], supporting_facts: [[title, i]]}):
// documents "title\nsentences joined", gold = the supporting titles' documents.
QaSet read_squad(const std::string& path);
QaSet read_hotpotqa(const std::string& path);

struct Resources {
  std::vector<std::string> essay_words;           // the essay haystack's words, in order
  std::vector<std::string> adjectives, nouns, verbs;  // sorted, unique
  QaSet squad, hotpotqa;                          // empty when no path was given
  // Reads data/sotu, data/brown and /usr/share/dict/american-english ($LONGCTX_WORDS overrides
  // the word list); QA files only when the paths are not empty.
  static Resources load(const std::string& squad_path = "", const std::string& hotpot_path = "");
};

struct Sample {
  int64_t index = 0;
  std::string task;
  std::string input;                 // the prompt before the answer prefix
  std::string answer_prefix;         // starts with a space; the prompt is input + answer_prefix
  std::vector<std::string> outputs;  // the expected strings
  int64_t length = 0;                // the token budget: prompt + tokens_to_generate <= length
  int64_t tokens_to_generate = 0;
  int64_t prompt_tokens = 0;         // tokens of input + answer_prefix
  int64_t haystack = 0;              // the haystack size chosen by the search (task units)
};

// The 13 task names in RULER's order.
const std::vector<std::string>& tasks();
int64_t tokens_to_generate(const std::string& task);
// "string_match_all" or "string_match_part".
std::string metric(const std::string& task);
bool needs_qa(const std::string& task);

// One sample of `task` at `length` tokens: the largest haystack whose prompt plus the task's
// tokens to generate fits `length` with `tok` (binary search). Throws when even the smallest
// haystack does not fit, naming the task and length.
Sample generate(const std::string& task, int64_t length, const Tokenizer& tok, const Resources& r, uint64_t seed,
                int64_t index);
// The same sample with a given haystack size (what the search calls; tests use it).
Sample build(const std::string& task, int64_t haystack, const Resources& r, uint64_t seed, int64_t index);

// The answer a perfect model would generate after the answer prefix, in the format of RULER's
// worked examples, ending before any newline: NIAH " v." or " v1, v2, v3, v4."; vt the names
// joined by spaces (its prefix ends with a space); cwe " 1. w1 2. w2 ... 10. w10"; fwe
// " w1 w2 w3"; QA " " + the first answer. Training on the task mixture uses it as the target;
// every expected output occurs in it, so it scores 100.
std::string reference_answer(const Sample& s);

// The tasks of the training mixture at `max_length` tokens: `wanted` (empty = all 13) less the
// QA tasks without their file and the tasks whose smallest sample does not fit; `left_out` gets
// one line per task left out, saying why.
std::vector<std::string> mixture_tasks(const std::vector<std::string>& wanted, int64_t max_length,
                                       const Tokenizer& tok, const Resources& r, std::vector<std::string>* left_out);
// The smallest budget (tokens) that `task` fits in with `tok`, measured on one sample (index 0
// of `seed`): the prompt with the smallest haystack plus the tokens to generate.
int64_t min_length(const std::string& task, const Tokenizer& tok, const Resources& r, uint64_t seed = 0);

// RULER's post-processing: strip, control characters to newlines, strip.
std::string clean_prediction(const std::string& pred);
// Scores x100 over samples (predictions are cleaned first).
double string_match_all(const std::vector<std::string>& preds, const std::vector<std::vector<std::string>>& refs);
double string_match_part(const std::vector<std::string>& preds, const std::vector<std::vector<std::string>>& refs);
// One sample's score (0..100) with the task's metric.
double score(const std::string& task, const std::string& pred, const std::vector<std::string>& refs);

// The largest tested length whose score exceeds `threshold` (RULER: 85.6, Llama-2-7B-chat at
// 4K); 0 when none does.
int64_t effective_length(const std::map<int64_t, double>& score_by_length, double threshold = 85.6);

}  // namespace longctx::ruler
