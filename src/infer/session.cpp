#include "infer/session.h"

#include "util/error.h"

namespace longctx {

Sampler::Sampler(SamplingOptions o) : o_(o), rng_(o.seed) {
  LCX_CHECK(o.temperature >= 0, "sampling: temperature ", o.temperature, " must be >= 0");
  LCX_CHECK(o.top_p > 0 && o.top_p <= 1, "sampling: top_p ", o.top_p, " must be in (0, 1]");
  LCX_CHECK(o.top_k >= 0, "sampling: top_k ", o.top_k, " must be >= 0");
}

int64_t Sampler::sample(const torch::Tensor& logits) {
  auto l = logits.to(torch::kFloat64).contiguous();
  if (o_.temperature == 0) return l.argmax().item<int64_t>();
  auto probs = torch::softmax(l / o_.temperature, -1);
  auto sorted = probs.sort(-1, /*descending=*/true);
  auto p = std::get<0>(sorted).contiguous();
  auto idx = std::get<1>(sorted).contiguous();
  const double* pp = p.data_ptr<double>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  int64_t n = p.numel();
  if (o_.top_k > 0) n = std::min(n, o_.top_k);
  // Nucleus: the smallest prefix whose mass reaches top_p.
  double cum = 0;
  int64_t keep = 0;
  for (; keep < n; ++keep) {
    cum += pp[keep];
    if (cum >= o_.top_p) {
      ++keep;
      break;
    }
  }
  keep = std::max<int64_t>(1, std::min(keep, n));
  double mass = 0;
  for (int64_t i = 0; i < keep; ++i) mass += pp[i];
  double u = std::uniform_real_distribution<double>(0.0, mass)(rng_);
  double acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += pp[i];
    if (u < acc) return ip[i];
  }
  return ip[keep - 1];
}

Session::Session(CausalLM model, int64_t chunk) : model_(std::move(model)), chunk_(chunk) {
  LCX_CHECK(chunk > 0, "session: chunk must be > 0");
  reset();
}

void Session::reset() {
  state_ = model_->new_state();
  last_logits_ = torch::Tensor();
}

torch::Tensor feed_tokens(CausalLM& model, ModelState& state, const std::vector<int64_t>& tokens, int64_t chunk,
                          const std::function<void(const torch::Tensor& hidden, size_t first)>& on_chunk) {
  LCX_CHECK(chunk > 0, "feed: chunk must be > 0");
  // Inference mode, not only no_grad: tensors made here carry no version counter or view
  // tracking, which is a part of every small op's cost when decoding one token per call.
  c10::InferenceMode im;
  torch::Tensor last;
  for (size_t i = 0; i < tokens.size(); i += size_t(chunk)) {
    const int64_t n = std::min<int64_t>(chunk, int64_t(tokens.size() - i));
    auto x = torch::from_blob(const_cast<int64_t*>(tokens.data() + i), {1, n}, torch::kInt64).clone();
    auto h = model->hidden(x, state);
    if (on_chunk) on_chunk(h, i);
    last = model->logits(h.select(1, n - 1)).squeeze(0);
  }
  return last;
}

torch::Tensor Session::feed(const std::vector<int64_t>& tokens) {
  auto last = feed_tokens(model_, state_, tokens, chunk_);
  if (last.defined()) last_logits_ = last;
  return last_logits_;
}

std::vector<int64_t> Session::generate(int64_t max_tokens, const SamplingOptions& o,
                                       const std::function<bool(int64_t)>& on_token) {
  LCX_CHECK(last_logits_.defined(), "generate: feed a prompt of at least one token first");
  Sampler s(o);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < max_tokens; ++i) {
    int64_t id = s.sample(last_logits_);
    out.push_back(id);
    if (on_token && !on_token(id)) break;
    if (i + 1 < max_tokens) feed({id});
  }
  return out;
}

}  // namespace longctx
