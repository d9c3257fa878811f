#include "nn/attention_kernel.h"

#include "nn/blas.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>


namespace longctx::kernel {

namespace {

// Tile sizes, measured with bench/bench_attention.cpp on this machine (64 x 256 ran 15-30% slower):
constexpr int64_t kQBlock = 128;  // queries per task
constexpr int64_t kKChunk = 512;  // keys per score tile

// Row-major C[m x n] = alpha * op(A) op(B) + beta * C, as the column-major product C^T = op(B)^T op(A)^T.
template <typename T>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (m == 1) {
    // One row (decoding): c = alpha a op(B) + beta c as a matrix-vector product, which reads B in
    // place (a GEMM would pack it first). Column-major, B is [k x n] (tb) or [n x k], ld ldb.
    const char t = tb ? 'T' : 'N';
    const int M = int(tb ? k : n), N = int(tb ? n : k), LD = int(ldb), INCX = int(ta ? lda : 1), INCY = 1;
    if constexpr (std::is_same_v<T, float>)
      sgemv_(&t, &M, &N, &alpha, b, &LD, a, &INCX, &beta, c, &INCY);
    else
      dgemv_(&t, &M, &N, &alpha, b, &LD, a, &INCX, &beta, c, &INCY);
    return;
  }
  const int M = int(n), N = int(m), K = int(k), LDA = int(ldb), LDB = int(lda), LDC = int(ldc);
  const char TA = tb ? 'T' : 'N', TB = ta ? 'T' : 'N';
  if constexpr (std::is_same_v<T, float>)
    sgemm_(&TA, &TB, &M, &N, &K, &alpha, b, &LDA, a, &LDB, &beta, c, &LDC);
  else
    dgemm_(&TA, &TB, &M, &N, &K, &alpha, b, &LDA, a, &LDB, &beta, c, &LDC);
}

// exp(t) by Cephes' expf: t = n ln2 + r with |r| <= ln2 / 2, a degree-6 polynomial in r (about
// 1 ulp), times 2^n. Arguments below -87 give exactly 0 (no denormals).
inline float exp_scalar(float t) {
  if (t < -87.0f) return 0.0f;
  const float fx = std::nearbyint(t * 1.44269504088896341f);
  const float r = (t - fx * 0.693359375f) + fx * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const int32_t bits = (int32_t(fx) + 127) << 23;
  float p2;
  std::memcpy(&p2, &bits, sizeof p2);
  return y * p2;
}

// The same, 8 lanes at a time (AVX2 + FMA): x[i] = exp(x[i] - sub), returns the sum.
__attribute__((target("avx2,fma"))) float exp_sub_sum_avx2(float* x, int64_t n, float sub) {
  const __m256 vsub = _mm256_set1_ps(sub), lo = _mm256_set1_ps(-87.0f), log2e = _mm256_set1_ps(1.44269504088896341f);
  const __m256 c1 = _mm256_set1_ps(0.693359375f), c2 = _mm256_set1_ps(-2.12194440e-4f), one = _mm256_set1_ps(1.0f);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 t = _mm256_sub_ps(_mm256_loadu_ps(x + i), vsub);
    const __m256 u = _mm256_max_ps(t, lo);
    const __m256 fx = _mm256_round_ps(_mm256_mul_ps(u, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fx, c1, u);
    r = _mm256_fnmadd_ps(fx, c2, r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, one));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    y = _mm256_and_ps(y, _mm256_cmp_ps(t, lo, _CMP_GE_OQ));
    _mm256_storeu_ps(x + i, y);
    acc = _mm256_add_ps(acc, y);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float sum = 0;
  for (float l : lanes) sum += l;
  for (; i < n; ++i) sum += (x[i] = exp_scalar(x[i] - sub));
  return sum;
}

__attribute__((target("avx2"))) float row_max_avx2(const float* x, int64_t n) {
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float r = lanes[0];
  for (float l : lanes) r = std::max(r, l);
  for (; i < n; ++i) r = std::max(r, x[i]);
  return r;
}

// Asked once, on first use (a static initialiser could run before libgcc's CPU detection).
bool avx2() {
  static const bool yes = (__builtin_cpu_init(), __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
  return yes;
}

float exp_sub_sum(float* x, int64_t n, float sub) {
  if (avx2()) return exp_sub_sum_avx2(x, n, sub);
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += (x[i] = exp_scalar(x[i] - sub));
  return sum;
}

double exp_sub_sum(double* x, int64_t n, double sub) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - sub));
  return sum;
}

template <typename T>
T row_max(const T* x, int64_t n) {
  if constexpr (std::is_same_v<T, float>)
    if (avx2()) return row_max_avx2(x, n);
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

struct Segment {
  int64_t k0 = 0, k1 = 0;
  bool sink = false;
  int piece = 0;  // the piece of the keys [k0, k1) lie in
};
constexpr int kMaxPieces = KeyValues<float>::kMaxPieces;
constexpr int kMaxSegments = 2 * kMaxPieces;

// The key segments queries [i0, i0 + n) can see: the sinks, then one contiguous range, each
// split where the keys' pieces end (start[0..npieces], as KeyValues holds them).
int plan(const Shape& s, const Mask& m, int64_t n_sinkk, int64_t i0, int64_t n, const int64_t* start, int npieces,
         Segment seg[kMaxSegments]) {
  const int64_t* kp = m.k_pos;
  const int64_t pmin = m.q_pos[i0], pmax = m.q_pos[i0 + n - 1];
  const int64_t hi = std::upper_bound(kp, kp + s.Tk, pmax) - kp;
  int64_t lo = m.window > 0 ? std::lower_bound(kp, kp + s.Tk, pmin - m.window + 1) - kp : 0;
  Segment whole[2];
  int count = 0;
  if (n_sinkk > 0) {
    const int64_t e = std::min(n_sinkk, hi);
    if (e > 0) whole[count++] = {0, e, true};
    lo = std::max(lo, n_sinkk);
  }
  if (hi > lo) whole[count++] = {lo, hi, false};
  int out = 0;
  for (int i = 0; i < count; ++i)
    for (int p = 0; p < npieces; ++p) {
      const int64_t a = std::max(whole[i].k0, start[p]), e = std::min(whole[i].k1, start[p + 1]);
      if (a < e) seg[out++] = {a, e, whole[i].sink, p};
    }
  return out;
}

// The columns [a, e) of keys [c0, c1) that the query at position qp sees (relative to c0).
inline void visible_columns(const Mask& m, const Segment& g, int64_t c0, int64_t c1, int64_t qp, int64_t& a,
                            int64_t& e) {
  const int64_t* kp = m.k_pos;
  e = std::upper_bound(kp + c0, kp + c1, qp) - kp;
  a = (!g.sink && m.window > 0) ? std::lower_bound(kp + c0, kp + e, qp - m.window + 1) - kp : c0;
  a -= c0;
  e -= c0;
}

// One tile of scores: S [n x w] = scale Q K^T for keys [c0, c1) of segment g, the block's
// queries from i0 on. Columns a row cannot see are 0; visit(r, x, len) gets each row that sees
// at least one key with its visible scores x[0, len) (a row that sees none stays all 0).
template <typename T, typename Visit>
void score_tile(const Mask& m, const Segment& g, T scale, int64_t n, int64_t dk, const T* Q, int64_t ldq,
                const T* K, int64_t ldk, int64_t i0, int64_t c0, int64_t c1, T* S, Visit&& visit) {
  const int64_t w = c1 - c0;
  gemm<T>(false, true, n, w, dk, scale, Q, ldq, K, ldk, T(0), S, w);
  for (int64_t r = 0; r < n; ++r) {
    T* row = S + r * w;
    int64_t a, e;
    visible_columns(m, g, c0, c1, m.q_pos[i0 + r], a, e);
    if (a >= e) {
      std::fill(row, row + w, T(0));
      continue;
    }
    std::fill(row, row + a, T(0));
    std::fill(row + e, row + w, T(0));
    visit(r, row + a, e - a);
  }
}

int64_t sink_keys(const Shape& s, const Mask& m) {
  if (!m.split_sinks || m.n_sink <= 0) return 0;
  return std::lower_bound(m.k_pos, m.k_pos + s.Tk, m.n_sink) - m.k_pos;
}

}  // namespace

template <typename T>
void attention_forward(const Shape& s, const Mask& m, T scale, Strided<const T> q, Strided<const T> q_sink,
                       const KeyValues<T>& kv, Strided<T> out, T* lse) {
  const int64_t n_sinkk = sink_keys(s, m), group = s.H / s.Hk;
  const int64_t nqb = (s.Tq + kQBlock - 1) / kQBlock;
  const T inf = std::numeric_limits<T>::infinity();
  at::parallel_for(0, s.B * s.H * nqb, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> S(kQBlock * kKChunk), acc(kQBlock * s.dv), mx(kQBlock), l(kQBlock);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (s.H * nqb), h = task / nqb % s.H, i0 = task % nqb * kQBlock;
      const int64_t n = std::min(kQBlock, s.Tq - i0), hk = h / group;
      std::fill(acc.begin(), acc.begin() + n * s.dv, T(0));
      std::fill(mx.begin(), mx.end(), -inf);
      std::fill(l.begin(), l.end(), T(0));
      Segment seg[kMaxSegments];
      const int nseg = plan(s, m, n_sinkk, i0, n, kv.start, kv.n, seg);
      for (int gi = 0; gi < nseg; ++gi) {
        const Segment& g = seg[gi];
        const auto& qs = g.sink && q_sink.p ? q_sink : q;  // sinks are scored with q_sink when given
        const T* Q = qs.row(b, h, i0);
        const int64_t ldq = qs.s2;
        const Strided<const T>&k = kv.k[g.piece], &v = kv.v[g.piece];
        const int64_t off = kv.start[g.piece];  // the piece's first key
        for (int64_t c0 = g.k0; c0 < g.k1; c0 += kKChunk) {
          const int64_t c1 = std::min(c0 + kKChunk, g.k1), w = c1 - c0;
          score_tile<T>(m, g, scale, n, s.dk, Q, ldq, k.row(b, hk, c0 - off), k.s2, i0, c0, c1, S.data(),
                        [&](int64_t r, T* x, int64_t len) {
                          const T mnew = std::max(mx[r], row_max(x, len));
                          if (mnew > mx[r] && l[r] > 0) {  // rescale what was summed under the old max
                            const T c = std::exp(mx[r] - mnew);
                            l[r] *= c;
                            for (int64_t j = 0; j < s.dv; ++j) acc[r * s.dv + j] *= c;
                          }
                          mx[r] = mnew;
                          l[r] += exp_sub_sum(x, len, mnew);
                        });
          gemm<T>(false, false, n, s.dv, w, T(1), S.data(), w, v.row(b, hk, c0 - off), v.s2, T(1), acc.data(), s.dv);
        }
      }
      for (int64_t r = 0; r < n; ++r) {
        T* o = out.row(b, h, i0 + r);
        const T inv = l[r] > 0 ? T(1) / l[r] : T(0);
        for (int64_t j = 0; j < s.dv; ++j) o[j] = acc[r * s.dv + j] * inv;
        lse[(b * s.H + h) * s.Tq + i0 + r] = l[r] > 0 ? mx[r] + std::log(l[r]) : inf;
      }
    }
  });
}

template <typename T>
void attention_backward(const Shape& s, const Mask& m, T scale, Strided<const T> q, Strided<const T> q_sink,
                        Strided<const T> k, Strided<const T> v, Strided<const T> out, const T* lse,
                        Strided<const T> dout, Strided<T> dq, Strided<T> dq_sink, Strided<T> dk, Strided<T> dv) {
  const int64_t n_sinkk = sink_keys(s, m), group = s.H / s.Hk;
  // One task per key/value head: it alone writes that head's dk, dv and its queries' dq.
  at::parallel_for(0, s.B * s.Hk, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> P(kQBlock * kKChunk), dP(kQBlock * kKChunk), D(kQBlock);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / s.Hk, hk = task % s.Hk;
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        for (int64_t i0 = 0; i0 < s.Tq; i0 += kQBlock) {
          const int64_t n = std::min(kQBlock, s.Tq - i0);
          const T* L = lse + (b * s.H + h) * s.Tq + i0;
          const T* dO = dout.row(b, h, i0);
          for (int64_t r = 0; r < n; ++r) {
            const T* o = out.row(b, h, i0 + r);
            const T* g = dout.row(b, h, i0 + r);
            T d = 0;
            for (int64_t j = 0; j < s.dv; ++j) d += o[j] * g[j];
            D[r] = d;
          }
          Segment seg[kMaxSegments];
          const int64_t whole[2] = {0, s.Tk};  // one piece
          const int nseg = plan(s, m, n_sinkk, i0, n, whole, 1, seg);
          for (int gi = 0; gi < nseg; ++gi) {
            const Segment& g = seg[gi];
            const bool use_sink = g.sink && q_sink.p;
            const T* Q = (use_sink ? q_sink : q).row(b, h, i0);
            const int64_t ldq = (use_sink ? q_sink : q).s2;
            T* dQ = use_sink ? dq_sink.row(b, h, i0) : dq.row(b, h, i0);
            const int64_t lddq = use_sink ? dq_sink.s2 : dq.s2;
            for (int64_t c0 = g.k0; c0 < g.k1; c0 += kKChunk) {
              const int64_t c1 = std::min(c0 + kKChunk, g.k1), w = c1 - c0;
              score_tile<T>(m, g, scale, n, s.dk, Q, ldq, k.row(b, hk, c0), k.s2, i0, c0, c1, P.data(),
                            [&](int64_t r, T* x, int64_t len) {  // the forward's probabilities, from its lse
                              if (std::isfinite(L[r])) exp_sub_sum(x, len, L[r]);
                              else std::fill(x, x + len, T(0));
                            });
              // dV += P^T dO;  dP = dO V^T;  dS = P (dP - D);  dQ += scale dS K;  dK += scale dS^T Q
              gemm<T>(true, false, w, s.dv, n, T(1), P.data(), w, dO, dout.s2, T(1), dv.row(b, hk, c0), dv.s2);
              gemm<T>(false, true, n, w, s.dv, T(1), dO, dout.s2, v.row(b, hk, c0), v.s2, T(0), dP.data(), w);
              for (int64_t r = 0; r < n; ++r) {
                T* p = P.data() + r * w;
                const T* dp = dP.data() + r * w;
                for (int64_t j = 0; j < w; ++j) p[j] *= dp[j] - D[r];
              }
              gemm<T>(false, false, n, s.dk, w, scale, P.data(), w, k.row(b, hk, c0), k.s2, T(1), dQ, lddq);
              gemm<T>(true, false, w, s.dk, n, scale, P.data(), w, Q, ldq, T(1), dk.row(b, hk, c0), dk.s2);
            }
          }
        }
      }
    }
  });
}

template void attention_forward<float>(const Shape&, const Mask&, float, Strided<const float>, Strided<const float>,
                                       const KeyValues<float>&, Strided<float>, float*);
template void attention_forward<double>(const Shape&, const Mask&, double, Strided<const double>,
                                        Strided<const double>, const KeyValues<double>&, Strided<double>, double*);
template void attention_backward<float>(const Shape&, const Mask&, float, Strided<const float>, Strided<const float>,
                                        Strided<const float>, Strided<const float>, Strided<const float>, const float*,
                                        Strided<const float>, Strided<float>, Strided<float>, Strided<float>,
                                        Strided<float>);
template void attention_backward<double>(const Shape&, const Mask&, double, Strided<const double>,
                                         Strided<const double>, Strided<const double>, Strided<const double>,
                                         Strided<const double>, const double*, Strided<const double>,
                                         Strided<double>, Strided<double>, Strided<double>, Strided<double>);

}  // namespace longctx::kernel
