// MEGALODON (Ma et al., arXiv 2404.08801; official code XuezheMax/megalodon): the MEGA layer.
//
//   xt = TimestepNorm(x)                      cumulative group statistics (nn/timestep_norm.h)
//   xc = CEMA(xt)                             complex exponential moving average, below
//   mx = RMSNorm(xc)                          scale (1 + w)
//   z  = mx Wz + b, per head z_h = RMSNorm_noaffine(z_h)
//   q  = z (gamma_q + 1) / sqrt(Z/H) + beta_q,   k = z (gamma_k + 1) / sqrt(Z/H) + beta_k
//   v  = silu(xt Wv + b),   r = silu(mx Wr + b)
//   O  = softmax(q k^T + causal) v  inside each chunk of C tokens: softmax scale 1, RoPE
//        (adjacent pairs, base 10000) restarting at 0 in every chunk, nothing across chunks
//   h  = mx Wh1 + b + (O * r) Wh2                (the block adds the residual x)
//
// CEMA, per channel d and dimension n = 1..N (the official code's form, not the paper's Eq. 2):
//   alpha = sigmoid(a), delta = sigmoid(d), theta_{d,n} = n sigmoid(t_d) 2 pi / N
//   p = alpha,  q = (1 - alpha delta) exp(i theta),  eta = gamma / sqrt(N)  (gamma complex)
//   h_t = p x_t + q h_{t-1},   y_t = Re(sum_n eta_n h_{t,n}) + omega_d x_t
// Long inputs run as a causal convolution with kernel k_j = Re(sum_n eta_n p_n q_n^j) through
// an FFT of size 2 nextpow2(L), plus the incoming state's term Re(sum_n eta_n q_n^{t+1} h0_n);
// the state handed on is h_L = sum_j q^{L-1-j} p x_j + q^L h0. Short inputs (decoding) run
// the recurrence. Both give the same numbers (tested against a float64 loop). CEMA and the norm
// statistics are float32 whatever the compute dtype (float64 under float64).
//
// State: TimestepNorm (count, mean, var per group), CEMA h (real and imaginary parts, [B,D,N])
// and the current chunk's keys and values: O(C), independent of the tokens seen.
#pragma once
#include "io/json_fields.h"
#include "mixers/mechanism.h"
#include "mixers/mixer.h"
#include "nn/layers.h"
#include "nn/rope.h"
#include "nn/timestep_norm.h"

namespace longctx {

// CEMA coefficients in real form, all [D, N]: p, log|q|, arg q, Re eta, Im eta.
struct CemaCoeffs {
  torch::Tensor p, log_mag, angle, eta_re, eta_im;
};

// x [B, D, L] (float32/64); h0 real and imaginary parts [B, D, N] (undefined: zero state).
// Returns y [B, D, L] without the omega term; writes the final state into h_re, h_im when given.
torch::Tensor cema_fft(const torch::Tensor& x, const CemaCoeffs& c, const torch::Tensor& h0_re,
                       const torch::Tensor& h0_im, torch::Tensor* h_re = nullptr, torch::Tensor* h_im = nullptr);
torch::Tensor cema_recurrence(const torch::Tensor& x, const CemaCoeffs& c, const torch::Tensor& h0_re,
                              const torch::Tensor& h0_im, torch::Tensor* h_re = nullptr,
                              torch::Tensor* h_im = nullptr);

class CemaImpl : public torch::nn::Module {
 public:
  CemaImpl(int64_t dim, int64_t ndim = 16);
  void reset_parameters();  // the official initialisation (MECHANISMS.md section 2)
  CemaCoeffs coeffs(torch::Dtype dt) const;
  // x [B, T, D] -> [B, T, D]; state keys "cema_re", "cema_im" (not updated when !hand_on).
  torch::Tensor forward(const torch::Tensor& x, State& state, bool hand_on = true);
  int64_t recurrence_max = 16;  // calls of at most this many tokens use the recurrence

  torch::Tensor alpha, delta;  // [D, N] raw
  torch::Tensor theta;         // [D] raw
  torch::Tensor gamma;         // [D, N, 2]: real, imaginary
  torch::Tensor omega;         // [D]

 private:
  int64_t dim_, ndim_;
};
TORCH_MODULE(Cema);

struct MegalodonOptions {
  int64_t d_model = 256, n_heads = 1;
  int64_t z_dim = 64;     // Z: shared query/key width
  int64_t v_dim = 512;    // E: value width
  int64_t ndim = 16;      // N: CEMA dimensions per channel
  int64_t chunk = 2048;   // C: attention chunk
  int64_t groups = 32;    // G: TimestepNorm groups
  double eps = 1e-5;
  double rope_base = 10000;
  static MegalodonOptions parse(Fields& f, int64_t d_model, int64_t n_heads, double eps);
};

class MegalodonMixer : public Mixer {
 public:
  explicit MegalodonMixer(MegalodonOptions o);
  torch::Tensor forward(const torch::Tensor& x, State& state, StepContext& ctx) override;
  std::string kind() const override { return "megalodon"; }
  StateSchema state_schema() const override;
  bool state_bounded() const override { return true; }
  void reset_parameters();
  const MegalodonOptions& options() const { return o_; }

  TimestepNorm timenorm{nullptr};
  Cema cema{nullptr};
  RMSNorm rmsnorm{nullptr};
  Linear wz{nullptr}, wv{nullptr}, wr{nullptr}, wh1{nullptr}, wh2{nullptr};
  torch::Tensor gamma, beta;  // [2, Z]: rows q, k

 private:
  torch::Tensor chunk_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, State& state);
  MegalodonOptions o_;
  Rope rope_;
};

// MEGALODON's block (MECHANISMS.md section 2), with the "two-hop" residual: the feed-forward's
// residual is the block input, not the MEGA layer's output.
//   y = x + MEGA(x);   out = x + FFN(LayerNorm(y))      LayerNorm scale (1 + w)
class MegalodonBlock : public Block {
 public:
  MegalodonBlock(std::shared_ptr<MegalodonMixer> mixer, int64_t d_model, int64_t d_ff, double eps);
  torch::Tensor forward(const torch::Tensor& x, State& state, StepContext& ctx) override;
  Mixer* mixer() override { return mega.get(); }
  bool own_init() const override { return true; }
  void reset_parameters() override;

  std::shared_ptr<MegalodonMixer> mega;
  LayerNorm1p norm{nullptr};
  SwiGLU mlp{nullptr};
};

// megalodon, for the factory's registry: its own block, and a TimestepNorm with the mixer's
// groups before the output projection.
Mechanism megalodon_mechanism();

}  // namespace longctx
