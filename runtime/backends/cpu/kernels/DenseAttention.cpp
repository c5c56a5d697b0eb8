//===- DenseAttention.cpp - multi-head attention and its gradient ---------===//
//
// One task per (batch, head): a task owns that head's columns of out (and of
// dq, dk, dv), so tasks never share outputs and results do not depend on the
// thread count. The backward recomputes the probabilities row by row instead
// of saving the [S,S] matrix.
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cpu/kernels/DenseKernels.h"

#include <algorithm>
#include <cmath>

namespace flexmoe::cpu {

namespace {

/// The keys query i sees form one contiguous range [lo, hi].
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

/// p[j] = softmax_j(scale · q_i·k_j) over the range; returns nothing else.
template <typename T>
void rowProbabilities(const T *qi, const T *kh, int64_t ld, int64_t headDim,
                      KeyRange range, double scale, std::vector<double> &p) {
  double maxv = -INFINITY;
  for (int64_t j = range.lo; j <= range.hi; ++j) {
    const T *kj = kh + j * ld;
    double s = 0;
    for (int64_t c = 0; c < headDim; ++c)
      s += static_cast<double>(qi[c]) * kj[c];
    p[j] = s * scale;
    maxv = std::max(maxv, p[j]);
  }
  double sum = 0;
  for (int64_t j = range.lo; j <= range.hi; ++j) {
    p[j] = std::exp(p[j] - maxv);
    sum += p[j];
  }
  for (int64_t j = range.lo; j <= range.hi; ++j)
    p[j] /= sum;
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
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
#pragma omp parallel
  {
    std::vector<double> p(S), acc(hd);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < config.batch * H; ++task) {
      const int64_t b = task / H, h = task % H;
      const int64_t off = b * S * D + h * hd;
      for (int64_t i = 0; i < S; ++i) {
        const KeyRange range = visibleKeys(i, config);
        rowProbabilities(q + off + i * D, k + off, D, hd, range, scale, p);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = range.lo; j <= range.hi; ++j) {
          const T *vj = v + off + j * D;
          for (int64_t c = 0; c < hd; ++c)
            acc[c] += p[j] * vj[c];
        }
        T *oi = out + off + i * D;
        for (int64_t c = 0; c < hd; ++c)
          oi[c] = static_cast<T>(acc[c]);
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
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
#pragma omp parallel
  {
    std::vector<double> p(S), dp(S), dqi(hd);
    // dk and dv of one head accumulate over queries: kept in double here.
    std::vector<double> dkh(S * hd), dvh(S * hd);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < config.batch * H; ++task) {
      const int64_t b = task / H, h = task % H;
      const int64_t off = b * S * D + h * hd;
      std::fill(dkh.begin(), dkh.end(), 0.0);
      std::fill(dvh.begin(), dvh.end(), 0.0);
      for (int64_t i = 0; i < S; ++i) {
        const KeyRange range = visibleKeys(i, config);
        const T *qi = q + off + i * D;
        const T *dyi = dy + off + i * D;
        rowProbabilities(qi, k + off, D, hd, range, scale, p);
        // dp_j = dy_i·v_j; dv_j += p_j·dy_i; ds_j = p_j·(dp_j − Σ p·dp).
        double pdp = 0;
        for (int64_t j = range.lo; j <= range.hi; ++j) {
          const T *vj = v + off + j * D;
          double s = 0;
          for (int64_t c = 0; c < hd; ++c) {
            s += static_cast<double>(dyi[c]) * vj[c];
            dvh[j * hd + c] += p[j] * dyi[c];
          }
          dp[j] = s;
          pdp += p[j] * s;
        }
        std::fill(dqi.begin(), dqi.end(), 0.0);
        for (int64_t j = range.lo; j <= range.hi; ++j) {
          const double ds = p[j] * (dp[j] - pdp) * scale;
          const T *kj = k + off + j * D;
          for (int64_t c = 0; c < hd; ++c) {
            dqi[c] += ds * kj[c];
            dkh[j * hd + c] += ds * qi[c];
          }
        }
        T *dqo = dq + off + i * D;
        for (int64_t c = 0; c < hd; ++c)
          dqo[c] = static_cast<T>(dqi[c]);
      }
      for (int64_t j = 0; j < S; ++j)
        for (int64_t c = 0; c < hd; ++c) {
          dk[off + j * D + c] = static_cast<T>(dkh[j * hd + c]);
          dv[off + j * D + c] = static_cast<T>(dvh[j * hd + c]);
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
