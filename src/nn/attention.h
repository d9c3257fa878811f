// The one attention kernel: softmax(q k^T * scale + mask) v, queries processed in blocks so
// memory is O(block x keys seen by the block), never O(T^2).
//
// Visibility is defined by absolute positions, so any chunking of a stream gives the same
// result: key j is visible to query i iff
//     k_pos[j] <= q_pos[i]   and   (window == 0  or  q_pos[i] - k_pos[j] < window  or  k_pos[j] < n_sink)
// Keys must be sorted by position. With `q_sink` given, keys at positions < n_sink are scored
// with q_sink instead of q (StreamingLLM: sinks keep their in-cache positions).
#pragma once
#include <torch/torch.h>

namespace longctx {

struct AttentionOptions {
  int64_t window = 0;     // 0: unbounded
  int64_t n_sink = 0;     // first positions always visible
  int64_t q_block = 256;  // queries per block
  double scale = 0;       // 0: 1/sqrt(head dim)
};

// q: [B, H, Tq, dh]; k, v: [B, H, Tk, dh]; q_pos: [Tq], k_pos: [Tk] int64 (CPU).
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& q_pos, const torch::Tensor& k_pos,
                        const AttentionOptions& o = {}, const torch::Tensor& q_sink = {});

// Plain reference: one masked softmax over all keys, for tests.
torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const torch::Tensor& q_pos, const torch::Tensor& k_pos,
                                  const AttentionOptions& o = {}, const torch::Tensor& q_sink = {});

}  // namespace longctx
