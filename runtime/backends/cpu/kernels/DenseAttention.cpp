//===- DenseAttention.cpp - multi-head attention and its gradient ---------===//
//
// One task per (batch, head): a task owns that head's columns of out (and of
// dq, dk, dv), so tasks never share outputs and results do not depend on the
// thread count. Within a task, queries go in blocks of kQueryBlock: a block
// sees one contiguous range of keys (the union of its rows' masks), so its
// scores, probabilities and gradients are a few GEMMs on [block, keys]
// tiles, flash-style (tileGemm); nothing of size [S, S] is ever stored, and the
// backward recomputes the probabilities.
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cpu/kernels/DenseKernels.h"

#include <algorithm>
#include <cmath>

namespace flexmoe::cpu {

namespace {

constexpr int64_t kQueryBlock = 64;

/// C = alpha·op(A)·op(B) + beta·C on small tiles, row-major, for one thread.
/// Not OpenBLAS: these run inside the (batch, head) parallel loop, where a
/// threaded BLAS would oversubscribe the cores. Loop orders keep the inner
/// loop contiguous; the one reduction (B transposed) is a fixed-order simd
/// reduction, so results do not depend on the thread count.
template <typename T>
void tileGemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k,
              T alpha, const T *a, int64_t lda, const T *b, int64_t ldb, T beta,
              T *c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    T *ci = c + i * ldc;
    if (beta == T(0))
      std::fill_n(ci, n, T(0));
    else if (beta != T(1))
      for (int64_t j = 0; j < n; ++j)
        ci[j] *= beta;
    if (transB) {
      // c[i,j] += alpha · Σ_l op(A)[i,l] · B[j,l]
      for (int64_t j = 0; j < n; ++j) {
        const T *bj = b + j * ldb;
        T s = T(0);
        if (transA) {
          for (int64_t l = 0; l < k; ++l)
            s += a[l * lda + i] * bj[l];
        } else {
          const T *ai = a + i * lda;
#pragma omp simd reduction(+ : s)
          for (int64_t l = 0; l < k; ++l)
            s += ai[l] * bj[l];
        }
        ci[j] += alpha * s;
      }
    } else {
      // c[i,:] += alpha · Σ_l op(A)[i,l] · B[l,:]
      for (int64_t l = 0; l < k; ++l) {
        const T ail = alpha * (transA ? a[l * lda + i] : a[i * lda + l]);
        if (ail == T(0))
          continue; // masked probabilities: most of a window's tile
        const T *bl = b + l * ldb;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j)
          ci[j] += ail * bl[j];
      }
    }
  }
}

/// dst[c, r] = src[r, c] for a [rows, cols] tile with leading dimension ld:
/// turns q·kᵀ into a product with a contiguous inner loop.
template <typename T>
void transposeTile(const T *src, int64_t ld, int64_t rows, int64_t cols,
                   T *dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      dst[c * rows + r] = src[r * ld + c];
}

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
/// ([i1−i0, nk], row-major; scratch holds [hd, nk]): scaled scores by one
/// GEMM, then a stable
/// softmax of each row over its own visible keys; masked entries are 0.
template <typename T>
void blockProbabilities(const T *qh, const T *kh, int64_t ld, int64_t hd,
                        int64_t i0, int64_t i1, int64_t lo, int64_t nk,
                        double scale, const AttentionConfig &config, T *p,
                        T *scratch) {
  const int64_t bq = i1 - i0;
  transposeTile(kh + lo * ld, ld, nk, hd, scratch);
  tileGemm<T>(false, false, bq, nk, hd, static_cast<T>(scale), qh + i0 * ld, ld,
              scratch, nk, T(0), p, nk);
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
    std::vector<T> p(std::min(kQueryBlock, S) * S), scratch(hd * S);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < config.batch * H; ++task) {
      const int64_t b = task / H, h = task % H;
      const int64_t off = b * S * D + h * hd;
      for (int64_t i0 = 0; i0 < S; i0 += kQueryBlock) {
        const int64_t i1 = std::min(S, i0 + kQueryBlock);
        const int64_t lo = visibleKeys(i0, config).lo;
        const int64_t nk = visibleKeys(i1 - 1, config).hi - lo + 1;
        blockProbabilities(q + off, k + off, D, hd, i0, i1, lo, nk, scale,
                           config, p.data(), scratch.data());
        tileGemm<T>(false, false, i1 - i0, hd, nk, T(1), p.data(), nk,
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
    std::vector<T> p(tile), ds(tile), scratch(hd * S);
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
                           config, p.data(), scratch.data());
        const T *dyBlk = dy + off + i0 * D;
        // dv += pᵀ · dy
        tileGemm<T>(true, false, nk, hd, bq, T(1), p.data(), nk, dyBlk, D, T(1),
                    dv + off + lo * D, D);
        // dp = dy · vᵀ; ds = p ⊙ (dp − Σ_j p ⊙ dp) · scale (0 where masked).
        transposeTile(v + off + lo * D, D, nk, hd, scratch.data());
        tileGemm<T>(false, false, bq, nk, hd, T(1), dyBlk, D, scratch.data(),
                    nk, T(0), ds.data(), nk);
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
        tileGemm<T>(false, false, bq, hd, nk, T(1), ds.data(), nk,
                    k + off + lo * D, D, T(0), dq + off + i0 * D, D);
        tileGemm<T>(true, false, nk, hd, bq, T(1), ds.data(), nk,
                    q + off + i0 * D, D, T(1), dk + off + lo * D, D);
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
