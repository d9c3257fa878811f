// The one attention kernel: softmax(q k^T * scale + mask) v. On the CPU a fused kernel blocked
// over queries and keys with an online softmax (nn/attention_kernel.h): no score matrix beyond
// one tile, no materialised mask, forward and backward. Elsewhere, libtorch ops per block of
// queries. Memory is O(block x keys), never O(T^2). q may be strided (a transposed view); k and
// v may have fewer heads than q (grouped-query attention: H % Hk == 0). A query that sees no key
// gets a zero output.
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

// attention() over keys and values given as pieces in position order (a sink cache and a
// window, a memory and the current window; k_pos covers all of them): the result over their
// concatenation along dim 2, which the CPU's no-gradient path never builds. Empty pieces are
// skipped; with gradients, off the CPU or past 4 pieces the pieces are concatenated.
torch::Tensor attention_pieces(const torch::Tensor& q, const std::vector<torch::Tensor>& k,
                               const std::vector<torch::Tensor>& v, const torch::Tensor& q_pos,
                               const torch::Tensor& k_pos, const AttentionOptions& o,
                               const torch::Tensor& q_sink = {});

// Which implementation attention() uses on the CPU: the fused kernel (nn/attention_kernel.h,
// default) or the previous one, libtorch ops per block of queries with a materialised mask bias
// (kept for same-run comparisons: bench_stream --attention blocked; always used off the CPU).
enum class AttentionImpl { fused, blocked };
void set_attention_impl(AttentionImpl impl);
AttentionImpl attention_impl();

// Plain reference: one masked softmax over all keys, for tests.
torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const torch::Tensor& q_pos, const torch::Tensor& k_pos,
                                  const AttentionOptions& o = {}, const torch::Tensor& q_sink = {});

}  // namespace longctx
