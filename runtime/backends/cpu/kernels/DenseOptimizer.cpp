//===- DenseOptimizer.cpp - AdamW and global-norm gradient clipping -------===//

#include "runtime/backends/cpu/kernels/DenseKernels.h"
#include "runtime/backends/cpu/kernels/Parallel.h"

#include <algorithm>
#include <cmath>

namespace flexmoe::cpu {

template <typename T>
Status adamw(const T *param, const T *grad, const T *m, const T *v, int64_t n,
             const AdamWConfig &config, int64_t step, T *newParam, T *newM,
             T *newV) {
  if (step < 1)
    return errorf("adamw step ", step, " must count from 1");
  if (!(config.beta1 >= 0 && config.beta1 < 1 && config.beta2 >= 0 &&
        config.beta2 < 1))
    return errorf("adamw betas (", config.beta1, ", ", config.beta2,
                  ") must lie in [0, 1)");
  // torch.optim.AdamW (single-tensor, amsgrad=False, maximize=False):
  //   param.mul_(1 - lr * weight_decay)
  //   m = beta1 * m + (1 - beta1) * grad
  //   v = beta2 * v + (1 - beta2) * grad * grad
  //   bias_correction1 = 1 - beta1 ** step
  //   bias_correction2 = 1 - beta2 ** step
  //   step_size = lr / bias_correction1
  //   denom = sqrt(v) / sqrt(bias_correction2) + eps
  //   param -= step_size * m / denom
  const double decay = 1.0 - config.lr * config.weightDecay;
  const double bc1 = 1.0 - std::pow(config.beta1, static_cast<double>(step));
  const double bc2Sqrt =
      std::sqrt(1.0 - std::pow(config.beta2, static_cast<double>(step)));
  const double stepSize = config.lr / bc1;
  const double b1 = config.beta1, b2 = config.beta2, eps = config.epsilon;
  const double gradScale = config.gradScale;
#pragma omp parallel for schedule(static) if (worthThreads(n))
  for (int64_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(grad[i]) * gradScale;
    const double mi = b1 * static_cast<double>(m[i]) + (1 - b1) * g;
    const double vi = b2 * static_cast<double>(v[i]) + (1 - b2) * g * g;
    const double denom = std::sqrt(vi) / bc2Sqrt + eps;
    const double p = static_cast<double>(param[i]) * decay;
    newParam[i] = static_cast<T>(p - stepSize * mi / denom);
    newM[i] = static_cast<T>(mi);
    newV[i] = static_cast<T>(vi);
  }
  return Status::ok();
}

template <typename T>
double globalNorm(std::span<const GradBuffer<T>> buffers) {
  // Fixed blocks (not per-thread partial sums) so that the summation order,
  // and thus the result, does not depend on the thread count.
  constexpr int64_t kBlock = 4096;
  double total = 0;
  std::vector<double> partial;
  for (const GradBuffer<T> &buf : buffers) {
    const int64_t blocks = (buf.size + kBlock - 1) / kBlock;
    partial.assign(blocks, 0.0);
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t lo = blk * kBlock, hi = std::min(buf.size, lo + kBlock);
      double s = 0;
      for (int64_t i = lo; i < hi; ++i)
        s += static_cast<double>(buf.data[i]) * buf.data[i];
      partial[blk] = s;
    }
    for (double s : partial)
      total += s;
  }
  return std::sqrt(total);
}

template <typename T>
double clipByGlobalNorm(std::span<const GradBuffer<T>> buffers,
                        double maxNorm) {
  const double total = globalNorm(buffers);
  const double coef = maxNorm / (total + 1e-6);
  if (coef < 1)
    for (const GradBuffer<T> &buf : buffers)
      scale(buf.data, buf.size, coef, buf.data);
  return total;
}

#define FLEXMOE_INSTANTIATE(T)                                                 \
  template Status adamw<T>(const T *, const T *, const T *, const T *,         \
                           int64_t, const AdamWConfig &, int64_t, T *, T *,    \
                           T *);                                               \
  template double globalNorm<T>(std::span<const GradBuffer<T>>);               \
  template double clipByGlobalNorm<T>(std::span<const GradBuffer<T>>, double);
FLEXMOE_INSTANTIATE(float)
FLEXMOE_INSTANTIATE(double)
#undef FLEXMOE_INSTANTIATE

} // namespace flexmoe::cpu
