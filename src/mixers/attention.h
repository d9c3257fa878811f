// Causal softmax attention with a KV cache, in two modes (like llama.cpp, where the sliding
// window is a mode of the KV cache):
//   full_attention   the cache keeps every past token: state grows O(L).
//   sliding_window   the cache keeps the last `window` tokens and the first `sinks` tokens
//                    (StreamingLLM, arXiv 2309.17453): state is bounded.
// Keys are cached after RoPE at absolute positions. With sinks, a query scores the sink keys
// as if it sat at cache position min(pos, sinks + window - 1), StreamingLLM's in-cache
// positions, so the relative distance to a sink never exceeds what training saw.
#pragma once
#include "io/json_fields.h"
#include "mixers/mechanism.h"
#include "mixers/mixer.h"
#include "nn/linear.h"
#include "nn/rope.h"
#include "nn/rope_scaling.h"

namespace longctx {

struct AttentionMixerOptions {
  int64_t d_model = 256, n_heads = 4, n_kv_heads = 0;  // n_kv_heads 0 = n_heads (GQA when fewer)
  int64_t head_dim = 0;   // 0 = d_model / n_heads (Mistral Nemo's 128 at width 5120 sets it)
  bool qkv_bias = false;  // biases on q, k and v (Qwen2)
  int64_t window = 0;  // 0 = full attention
  int64_t sinks = 0;
  int64_t q_block = 256;
  RopeOptions rope;
  // The RoPE-scaling family (PI, NTK, YaRN, LongRoPE). A call spanning positions [0, len) uses
  // plan(len), as Hugging Face does per forward call; when the plan changes (dynamic NTK past
  // the original length, LongRoPE's switch from short to long factors), the cached keys are
  // re-rotated from the old plan to the new one, so a cache that spans the switch holds exactly
  // the keys a single call over the whole sequence would have made (transformers#33129 garbled
  // Phi-3's output by keeping keys rotated with the short factors).
  RopeScaling scaling;
  static AttentionMixerOptions parse(Fields& f, int64_t d_model, int64_t n_heads, const RopeOptions& rope,
                                     bool sliding);
};

class AttentionMixer : public Mixer {
 public:
  explicit AttentionMixer(AttentionMixerOptions o);
  torch::Tensor forward(const torch::Tensor& x, State& state, StepContext& ctx) override;
  std::string kind() const override { return o_.window > 0 ? "sliding_window" : "full_attention"; }
  bool state_bounded() const override { return o_.window > 0; }
  StateSchema state_schema() const override;
  Rope& rope() { return rope_; }

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};  // [D, D] ...

 protected:  // Activation Beacon extends this mixer
  AttentionMixerOptions o_;
  Rope rope_;
  int64_t dh_;
};

// full_attention (sliding = false) and sliding_window, for the factory's registry.
Mechanism attention_mechanism(bool sliding);

}  // namespace longctx
