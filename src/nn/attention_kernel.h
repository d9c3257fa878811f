// The fused CPU attention kernel behind attention() (nn/attention.h): raw pointers, no libtorch.
//
// Blocked over queries and keys with an online softmax (FlashAttention's schedule): each task
// owns a block of queries of one head, walks the keys that block can see in chunks, and keeps
// a running max, sum and output. Scores exist only as one [queries x chunk] tile; the mask is
// never materialised: visibility is computed per row from the sorted positions. Every product
// is a BLAS GEMM on strided views of the caller's tensors (no copies of q, k, v).
//
// Visibility (absolute positions; keys and queries sorted by position): key j is visible to
// query i iff k_pos[j] <= q_pos[i] and (window == 0 or q_pos[i] - k_pos[j] < window or
// k_pos[j] < n_sink). Keys at positions < n_sink form the "sink" segment; when q_sink is given
// they are scored with it instead of q. A query that sees no key gets a zero output.
#pragma once
#include <cstdint>

namespace longctx::kernel {

// A [B, H, T, d] tensor's data with the strides of its first three dimensions (the last is 1).
template <typename T>
struct Strided {
  T* p = nullptr;
  int64_t s0 = 0, s1 = 0, s2 = 0;
  T* row(int64_t b, int64_t h, int64_t t) const { return p + b * s0 + h * s1 + t * s2; }
};

// Keys and values in up to kMaxPieces pieces, in position order: piece i holds keys
// [start[i], start[i + 1]) of the Tk keys that k_pos describes (a sink cache and a window, a
// memory and the current window), read where they lie instead of concatenated. One piece is a
// plain k, v.
template <typename T>
struct KeyValues {
  static constexpr int kMaxPieces = 4;
  Strided<const T> k[kMaxPieces], v[kMaxPieces];
  int64_t start[kMaxPieces + 1] = {};
  int n = 0;
};

struct Shape {
  int64_t B = 0, H = 0, Hk = 0;  // query heads, key/value heads (H % Hk == 0: grouped queries)
  int64_t Tq = 0, Tk = 0, dk = 0, dv = 0;
};

struct Mask {
  const int64_t* q_pos = nullptr;  // [Tq], sorted
  const int64_t* k_pos = nullptr;  // [Tk], sorted
  int64_t window = 0, n_sink = 0;
  bool split_sinks = false;  // score keys at positions < n_sink as their own segment
};

// out: [B, H, Tq, dv]; lse: [B, H, Tq] contiguous (log-sum-exp of each row, +inf for a row that
// sees nothing). q_sink.p may be null.
template <typename T>
void attention_forward(const Shape& s, const Mask& m, T scale, Strided<const T> q, Strided<const T> q_sink,
                       const KeyValues<T>& kv, Strided<T> out, T* lse);

// Gradients of the forward above. dq, dq_sink, dk, dv must be zero-filled; dq_sink.p may be null.
template <typename T>
void attention_backward(const Shape& s, const Mask& m, T scale, Strided<const T> q, Strided<const T> q_sink,
                        Strided<const T> k, Strided<const T> v, Strided<const T> out, const T* lse,
                        Strided<const T> dout, Strided<T> dq, Strided<T> dq_sink, Strided<T> dk, Strided<T> dv);

}  // namespace longctx::kernel
