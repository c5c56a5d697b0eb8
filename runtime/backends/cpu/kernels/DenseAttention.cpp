//===- DenseAttention.cpp - multi-head attention and its gradient ---------===//
//
// One task per (batch, head): a task owns that head's columns of out (and of
// dq, dk, dv), so tasks never share outputs and results do not depend on the
// thread count. Within a task, queries go in blocks of kQueryBlock: a block
// sees one contiguous range of keys (the union of its rows' masks), so its
// scores, probabilities and gradients are a few GEMMs on [block, keys]
// tiles, flash-style; nothing of size [S, S] is ever stored, and the
// backward recomputes the probabilities. The tiles' GEMMs are single-threaded
// OpenBLAS calls (gemm runs on the calling thread inside a parallel region).
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cpu/kernels/Blas.h"
#include "runtime/backends/cpu/kernels/DenseKernels.h"

#include <algorithm>
#include <cmath>

namespace flexmoe::cpu {

namespace {

constexpr int64_t kQueryBlock = 64;

/// The keys query i sees form one contiguous range [lo, hi]; lo and hi never
/// decrease with i.
struct KeyRange {
  int64_t lo, hi;
};

KeyRange visibleKeys(int64_t i, const AttentionConfig &c) {
  int64_t lo = 0, hi = c.seq - 1;
  if (c.causal)
    hi = i;
  if (c.window > 0) {
    lo = std::max<int64_t>(0, i - c.window + 1);
    if (!c.causal)
      hi = std::min(c.seq - 1, i + c.window - 1);
  }
  return {lo, hi};
}

/// Probabilities of queries [i0, i1) over keys [lo, lo + nk) into p
/// ([i1−i0, nk], row-major): scaled scores by one GEMM, then a stable
/// softmax of each row over its own visible keys; masked entries are 0.
template <typename T>
void blockProbabilities(const T *qh, const T *kh, int64_t ld, int64_t hd,
                        int64_t i0, int64_t i1, int64_t lo, int64_t nk,
                        double scale, const AttentionConfig &config, T *p) {
  const int64_t bq = i1 - i0;
  gemm<T>(false, true, bq, nk, hd, static_cast<T>(scale), qh + i0 * ld, ld,
          kh + lo * ld, ld, T(0), p, nk);
  for (int64_t r = 0; r < bq; ++r) {
    const KeyRange range = visibleKeys(i0 + r, config);
    T *row = p + r * nk;
    const int64_t a = range.lo - lo, b = range.hi - lo; // inclusive
    T maxv = row[a];
    for (int64_t j = a + 1; j <= b; ++j)
      maxv = std::max(maxv, row[j]);
    double sum = 0;
    for (int64_t j = a; j <= b; ++j) {
      row[j] = std::exp(row[j] - maxv);
      sum += row[j];
    }
    const T inv = static_cast<T>(1.0 / sum);
    std::fill(row, row + a, T(0));
    for (int64_t j = a; j <= b; ++j)
      row[j] *= inv;
    std::fill(row + b + 1, row + nk, T(0));
  }
}

} // namespace

Status verifyAttentionConfig(const AttentionConfig &c) {
  if (c.batch < 0 || c.seq < 0 || c.dim < 0)
    return errorf("attention sizes [", c.batch, ",", c.seq, ",", c.dim,
                  "] must not be negative");
  if (c.numHeads <= 0 || c.dim % c.numHeads != 0)
    return errorf("attention num_heads ", c.numHeads,
                  " does not divide the model dimension ", c.dim);
  if (c.window < 0)
    return errorf("attention window ", c.window, " is negative");
  return Status::ok();
}

template <typename T>
Status attention(const T *q, const T *k, const T *v,
                 const AttentionConfig &config, T *out) {
  FLEXMOE_RETURN_IF_ERROR(verifyAttentionConfig(config));
  const int64_t S = config.seq, D = config.dim, H = config.numHeads;
  const int64_t hd = D / H;
  if (S == 0 || hd == 0)
    return Status::ok();
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
#pragma omp parallel
  {
    std::vector<T> p(std::min(kQueryBlock, S) * S);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < config.batch * H; ++task) {
      const int64_t b = task / H, h = task % H;
      const int64_t off = b * S * D + h * hd;
      for (int64_t i0 = 0; i0 < S; i0 += kQueryBlock) {
        const int64_t i1 = std::min(S, i0 + kQueryBlock);
        const int64_t lo = visibleKeys(i0, config).lo;
        const int64_t nk = visibleKeys(i1 - 1, config).hi - lo + 1;
        blockProbabilities(q + off, k + off, D, hd, i0, i1, lo, nk, scale,
                           config, p.data());
        gemm<T>(false, false, i1 - i0, hd, nk, T(1), p.data(), nk,
                v + off + lo * D, D, T(0), out + off + i0 * D, D);
      }
    }
  }
  return Status::ok();
}

template <typename T>
Status attentionGrad(const T *q, const T *k, const T *v, const T *dy,
                     const AttentionConfig &config, T *dq, T *dk, T *dv) {
  FLEXMOE_RETURN_IF_ERROR(verifyAttentionConfig(config));
  const int64_t S = config.seq, D = config.dim, H = config.numHeads;
  const int64_t hd = D / H;
  if (S == 0 || hd == 0)
    return Status::ok();
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
#pragma omp parallel
  {
    const int64_t tile = std::min(kQueryBlock, S) * S;
    std::vector<T> p(tile), ds(tile);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < config.batch * H; ++task) {
      const int64_t b = task / H, h = task % H;
      const int64_t off = b * S * D + h * hd;
      // dk and dv accumulate over query blocks, in block order.
      for (int64_t j = 0; j < S; ++j) {
        std::fill_n(dk + off + j * D, hd, T(0));
        std::fill_n(dv + off + j * D, hd, T(0));
      }
      for (int64_t i0 = 0; i0 < S; i0 += kQueryBlock) {
        const int64_t i1 = std::min(S, i0 + kQueryBlock), bq = i1 - i0;
        const int64_t lo = visibleKeys(i0, config).lo;
        const int64_t nk = visibleKeys(i1 - 1, config).hi - lo + 1;
        blockProbabilities(q + off, k + off, D, hd, i0, i1, lo, nk, scale,
                           config, p.data());
        const T *dyBlk = dy + off + i0 * D;
        // dv += pᵀ · dy
        gemm<T>(true, false, nk, hd, bq, T(1), p.data(), nk, dyBlk, D, T(1),
                dv + off + lo * D, D);
        // dp = dy · vᵀ; ds = p ⊙ (dp − Σ_j p ⊙ dp) · scale (0 where masked).
        gemm<T>(false, true, bq, nk, hd, T(1), dyBlk, D, v + off + lo * D, D,
                T(0), ds.data(), nk);
        for (int64_t r = 0; r < bq; ++r) {
          const T *pr = p.data() + r * nk;
          T *dr = ds.data() + r * nk;
          double dot = 0;
          for (int64_t j = 0; j < nk; ++j)
            dot += static_cast<double>(pr[j]) * dr[j];
          for (int64_t j = 0; j < nk; ++j)
            dr[j] = static_cast<T>(pr[j] * (dr[j] - dot) * scale);
        }
        // dq = ds · k;  dk += dsᵀ · q
        gemm<T>(false, false, bq, hd, nk, T(1), ds.data(), nk, k + off + lo * D,
                D, T(0), dq + off + i0 * D, D);
        gemm<T>(true, false, nk, hd, bq, T(1), ds.data(), nk, q + off + i0 * D,
                D, T(1), dk + off + lo * D, D);
      }
    }
  }
  return Status::ok();
}

#define FLEXMOE_INSTANTIATE(T)                                                 \
  template Status attention<T>(const T *, const T *, const T *,                \
                               const AttentionConfig &, T *);                  \
  template Status attentionGrad<T>(const T *, const T *, const T *, const T *, \
                                   const AttentionConfig &, T *, T *, T *);
FLEXMOE_INSTANTIATE(float)
FLEXMOE_INSTANTIATE(double)
#undef FLEXMOE_INSTANTIATE

} // namespace flexmoe::cpu
