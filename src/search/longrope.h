// LongRoPE's evolutionary search for per-frequency rescale factors (MECHANISMS.md section 8;
// arXiv 2402.13753). A candidate is (lambda_0..lambda_{d/2-1}, n_hat): lambda on a 0.01 grid in
// [1, cap], non-decreasing over dimensions, n_hat from the paper's set. The population is seeded
// with PI, NTK and YaRN for the target scale; each iteration keeps the best `parents`, adds
// `mutations` (each dimension resampled with probability 0.3 between its neighbours, so order
// is kept) and `crossovers` (parent 2's value per dimension with probability 0.15, then made
// non-decreasing), rejects duplicates, and keeps the best `population`. Fitness: bits per byte
// of the model with those factors on `samples` windows of the target length drawn from a
// search corpus (never the evaluation split or book), each window read in one call.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace longctx {

struct LongRopeCandidate {
  std::vector<double> lambda;  // d/2 divisors
  int64_t n_hat = 0;
  double fitness = 0;          // bits per byte (lower is better); NaN until evaluated
  std::string origin;          // "pi", "ntk", "yarn", "plain", "long", "previous", "mutation", "crossover"
  std::string key() const;     // identity for duplicate rejection
  nlohmann::json to_json() const;
  static LongRopeCandidate from_json(const nlohmann::json& j);
};

struct LongRopeSearchOptions {
  std::string model;             // model folder (config.json, model.safetensors, tokenizer)
  std::string out;               // output folder: the model with the factors, plus the search state
  int64_t target_length = 0;     // tokens
  int64_t original_length = 0;   // the trained context W (default: rope_scaling.original_max_position_embeddings, else data.seq_len)
  bool short_factors = false;    // search short_factor at the original length instead (recovery)
  int64_t population = 64, mutations = 16, crossovers = 16, iterations = 40, parents = 32;
  double mutate_p = 0.3, cross_p = 0.15;
  double cap = 0;                // max lambda; 0 = 1.25 s (long) or s (short: a lower cap)
  int64_t samples = 5;           // windows of the target length per fitness evaluation
  std::string data = "brown";    // corpus the samples come from (text/corpus.h names)
  std::vector<int64_t> n_hat_choices = {0, 1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 64, 128, 256};
  uint64_t seed = 0;
  bool progress = true;
};

struct LongRopeSearchResult {
  LongRopeCandidate best;
  std::vector<double> best_by_iteration;  // fitness of the best candidate after each iteration
  int64_t evaluations = 0;
  int64_t length = 0;  // tokens per sample the candidates were scored at (the target, or W for --short)
  bool hf = false;     // the output is a Hugging Face folder (the input was one)
};

// The paper's constraints on one candidate (grid, bounds, monotone, n_hat in the set); returns
// an empty string when they hold, else what is wrong.
std::string longrope_violation(const LongRopeCandidate& c, double cap, const std::vector<int64_t>& n_hat_choices);

// Runs (or resumes, from out/search_state.json) the search and writes out/ as a model folder
// whose config carries the factors as Hugging Face's rope_scaling "longrope". A Hugging Face
// folder comes out as one: its files copied, config.json with rope_scaling "longrope" in Phi-3's
// layout (original_max_position_embeddings at the top level), n_hat held at 0.
LongRopeSearchResult search_longrope(const LongRopeSearchOptions& o);

// The search's mutation and crossover, exposed for tests: both keep every constraint.
LongRopeCandidate longrope_mutate(const LongRopeCandidate& p, double cap, double prob,
                                  const std::vector<int64_t>& n_hat_choices, uint64_t seed);
LongRopeCandidate longrope_crossover(const LongRopeCandidate& a, const LongRopeCandidate& b, double prob,
                                     uint64_t seed);

}  // namespace longctx
