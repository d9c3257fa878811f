// longctx search longrope: LongRoPE's evolutionary search for RoPE rescale factors (resumable).
#include <cstdio>

#include "commands.h"
#include "search/longrope.h"
#include "util/error.h"

namespace longctx::cli {

void add_search(CLI::App& app, Commands& cmds) {
  auto lro = std::make_shared<LongRopeSearchOptions>();
  auto* se = app.add_subcommand("search", "searches over a model's settings");
  se->require_subcommand(1);
  auto* slr = se->add_subcommand("longrope", "LongRoPE's evolutionary search for RoPE rescale factors (resumable)");
  slr->add_option("--model", lro->model, "model folder")->required();
  slr->add_option("--out", lro->out, "output folder: the model with the factors in its config, and the search state")->required();
  slr->add_option("--target-length", lro->target_length, "tokens the long factors are searched for");
  slr->add_flag("--short", lro->short_factors, "search the short factors at the original length (the model must carry long factors)");
  slr->add_option("--original-length", lro->original_length, "the trained context (default: the model's rope_scaling original_max_position_embeddings, else data.seq_len)");
  slr->add_option("--iterations", lro->iterations, "iterations (paper: 40)");
  slr->add_option("--population", lro->population, "population (paper: 64)");
  slr->add_option("--parents", lro->parents, "parents kept per iteration (paper: 32)");
  slr->add_option("--mutations", lro->mutations, "mutations per iteration (paper: 16)");
  slr->add_option("--crossovers", lro->crossovers, "crossovers per iteration (paper: 16)");
  slr->add_option("--samples", lro->samples, "windows of the target length per fitness evaluation (paper: 5)");
  slr->add_option("--cap", lro->cap, "largest factor (default 1.25 x scale; --short: the scale)");
  slr->add_option("--data", lro->data, "corpus of the fitness samples (never the evaluation split or book)");
  slr->add_option("--seed", lro->seed, "seed");
  cmds.push_back({slr, [lro] {
                    LCX_CHECK(lro->short_factors || lro->target_length > 0,
                              "search longrope: --target-length is required (or --short)");
                    auto r = search_longrope(*lro);
                    std::printf("best: %.4f bits/byte at %lld tokens (n_hat %lld, from %s), %lld evaluations\nfactors:",
                                r.best.fitness, (long long)r.length,
                                (long long)r.best.n_hat, r.best.origin.c_str(), (long long)r.evaluations);
                    for (double v : r.best.lambda) std::printf(" %.2f", v);
                    std::printf("\nwrote %s/config.json (rope_scaling longrope%s), search_state.json, search_result.json\n",
                                lro->out.c_str(), r.hf ? "; a Hugging Face folder, its other files copied" : "");
                    return 0;
                  }});
}

}  // namespace longctx::cli
