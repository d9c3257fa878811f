#include "eval/ppl.h"

#include <cmath>
#include <string>

#include "util/error.h"
#include "util/system.h"

namespace longctx {

PplResult eval_bits_per_byte(CausalLM& model, const std::vector<int64_t>& tokens, double bytes_per_token,
                             const PplOptions& o) {
  torch::NoGradGuard ng;
  model->eval();
  const int64_t N = static_cast<int64_t>(tokens.size());
  LCX_CHECK(N >= 2, "eval ppl: the document has ", N, " tokens; need at least 2");
  int64_t C = o.context > 0 ? std::min(o.context, N - 1) : N - 1;
  int64_t nwin = (N - 1 + C - 1) / C;  // windows of C targets; the last may be shorter
  int64_t per_batch = std::max<int64_t>(1, o.batch_tokens / C);
  PplResult r;
  r.context = C;
  r.windows = nwin;
  double t0 = now_seconds();
  Progress bar("ppl @" + std::to_string(C), N - 1);
  auto all = torch::from_blob(const_cast<int64_t*>(tokens.data()), {N}, torch::kInt64);
  int64_t full = (N - 1) / C;  // windows with exactly C targets
  auto run = [&](int64_t w0, int64_t nw, int64_t len) {
    // nw windows starting at w0*C, each with len targets.
    std::vector<torch::Tensor> xs, ys;
    for (int64_t w = w0; w < w0 + nw; ++w) {
      xs.push_back(all.narrow(0, w * C, len));
      ys.push_back(all.narrow(0, w * C + 1, len));
    }
    auto x = torch::stack(xs), y = torch::stack(ys);
    auto st = model->new_state();
    st.expected_tokens = len;
    for (int64_t i = 0; i < len; i += o.chunk) {
      int64_t n = std::min(o.chunk, len - i);
      auto logits = model->forward(x.narrow(1, i, n), st);
      auto l = torch::nn::functional::cross_entropy(
          logits.reshape({-1, logits.size(-1)}), y.narrow(1, i, n).reshape({-1}),
          torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
      r.nll_nats += l.item<double>();
      r.tokens_scored += nw * n;
      if (o.progress) bar.update(r.tokens_scored);
    }
    r.state_bytes = std::max(r.state_bytes, st.bytes() / nw);
  };
  for (int64_t w = 0; w < full; w += per_batch) run(w, std::min(per_batch, full - w), C);
  if (full < nwin) run(full, 1, N - 1 - full * C);
  if (o.progress) bar.finish();
  r.seconds = now_seconds() - t0;
  r.tokens_per_s = r.tokens_scored / std::max(1e-9, r.seconds);
  r.bytes_scored = r.tokens_scored * bytes_per_token;
  r.nats_per_token = r.nll_nats / r.tokens_scored;
  r.bits_per_byte = r.nll_nats / std::log(2.0) / r.bytes_scored;
  r.peak_rss = peak_rss_bytes();
  return r;
}

}  // namespace longctx
