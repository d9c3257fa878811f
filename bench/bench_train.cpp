// Training throughput of a model config against the machine's sgemm peak, in one run.
//   build/bench_train [--config configs/transformer-tiny.json] [--batch 16] [--seq 256] [--steps 10]
// With train.trainable (Activation Beacon) only those parameters train, as in `longctx train`;
// the model FLOPs below still count the full 6 N.
// Model FLOPs per token: 6 N (N = non-embedding parameters) + 6 L T D (causal attention
// scores and values, forward + backward, half the T x T products skipped by causality).
#include <sstream>

#include "bench_common.h"
#include "model/lm.h"
#include "train/config.h"
#include "train/optim.h"

using namespace longctx;

int main(int argc, char** argv) {
  bench::check_flags(argc, argv, {"threads", "config", "batch", "seq", "steps", "attention"},
                     "usage: bench_train [--config configs/transformer-tiny.json] [--batch B] [--seq T] [--steps N] [--threads N]\n"
                     "                   [--attention fused|blocked]\n");
  bench::attention_flag(argc, argv);
  int threads = set_threads(std::atoi(bench::flag(argc, argv, "threads", "0").c_str()));
  tune_allocator_for_training();  // as `longctx train` does
  auto cfg = RunConfig::from_file(bench::flag(argc, argv, "config", "configs/transformer-tiny.json"));
  int64_t B = std::atoll(bench::flag(argc, argv, "batch", std::to_string(cfg.train.batch_size)).c_str());
  int64_t T = std::atoll(bench::flag(argc, argv, "seq", std::to_string(cfg.data.seq_len)).c_str());
  int steps = std::atoi(bench::flag(argc, argv, "steps", "10").c_str());
  double peak = 0;  // in a child: its matrices stay out of this process's peak RSS
  if (!bench::in_child([] { return bench::sgemm_gflops(); }, peak)) return 1;
  torch::manual_seed(0);
  CausalLM m(cfg.model);
  m->train();
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (auto& p : m->named_parameters()) named.push_back({p.key(), p.value()});
  // train.trainable (Activation Beacon: only the beacons train) freezes the rest, as the trainer does.
  int64_t trained = 0;
  if (!cfg.train.trainable.empty()) freeze_except(named, cfg.train.trainable);
  for (auto& [n, p] : named) trained += p.requires_grad() ? p.numel() : 0;
  auto groups = make_param_groups(named, cfg.train);
  AdamW opt(groups, 0.9, 0.95, 1e-8);
  auto x = torch::randint(0, cfg.model.vocab_size, {B, T}), y = torch::randint(0, cfg.model.vocab_size, {B, T});
  auto step = [&] {
    auto st = m->new_state();
    st.hand_on = false;  // as the trainer does: each row's state is dropped
    auto l = m->forward(x, st, true);
    torch::nn::functional::cross_entropy(l.reshape({-1, l.size(-1)}), y.reshape({-1})).backward();
    opt.step(1e-4);
    opt.zero_grad();
  };
  step();
  step();
  double t0 = now_seconds();
  for (int i = 0; i < steps; ++i) step();
  double dt = (now_seconds() - t0) / steps;
  int64_t n_emb = cfg.model.vocab_size * cfg.model.d_model;
  double N = double(m->num_parameters() - n_emb);  // the output projection counts: it is a GEMM
  double flops_tok = 6 * N + 6.0 * cfg.model.n_layers * T * cfg.model.d_model;
  double tps = B * T / dt;
  double achieved = tps * flops_tok / 1e9;
  std::printf("| config | params (trained) | batch x seq | threads | step s | tokens/s | model GFLOP/s | sgemm peak GFLOP/s | fraction of peak | peak RSS |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  std::printf("| %s | %.2fM (%.2fM) | %lld x %lld | %d | %.3f | %.0f | %.1f | %.1f | %.2f | %s |\n",
              bench::flag(argc, argv, "config", "configs/transformer-tiny.json").c_str(), m->num_parameters() / 1e6,
              trained / 1e6, (long long)B, (long long)T, threads, dt, tps, achieved, peak, achieved / peak,
              human_bytes(peak_rss_bytes()).c_str());
  return 0;
}
