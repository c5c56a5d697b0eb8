//===- DenseElementwise.cu - element-wise dense kernels -------------------===//

#include "runtime/backends/cpu/kernels/DenseRandom.h"
#include "runtime/backends/cpu/kernels/FastMath.h"
#include "runtime/backends/cuda/kernels/DenseCommon.cuh"

namespace flexmoe::cuda {

namespace {

constexpr double kSqrt2OverPi = 0.7978845608028654; // √(2/π)
constexpr double kGeluCubic = 0.044715;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327;

__global__ void fillKernelImpl(float *out, int64_t n, float value) {
  FLEXMOE_GRID_STRIDE(i, n) out[i] = value;
}

__global__ void scaleKernelImpl(const float *x, int64_t n, float factor,
                                float *y) {
  FLEXMOE_GRID_STRIDE(i, n) y[i] = factor * x[i];
}

template <bool Multiply>
__global__ void binaryKernelImpl(const float *lhs, Dims lhsDims,
                                 const float *rhs, Dims rhsDims, int64_t n,
                                 float *out) {
  FLEXMOE_GRID_STRIDE(i, n) {
    const float a = lhs[stridedOffset(i, lhsDims)];
    const float b = rhs[stridedOffset(i, rhsDims)];
    out[i] = Multiply ? a * b : a + b;
  }
}

__global__ void geluTanhKernel(const float *x, int64_t n, float *y) {
  FLEXMOE_GRID_STRIDE(i, n) {
    const float v = x[i];
    const float inner =
        float(kSqrt2OverPi) * (v + float(kGeluCubic) * v * v * v);
    y[i] = 0.5f * v * (1.0f + cpu::tanhApproxFloat(inner));
  }
}

__global__ void geluErfKernel(const float *x, int64_t n, float *y) {
  FLEXMOE_GRID_STRIDE(i, n) {
    y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * float(kInvSqrt2)));
  }
}

__global__ void geluGradTanhKernel(const float *x, const float *dy, int64_t n,
                                   float *dx) {
  FLEXMOE_GRID_STRIDE(i, n) {
    const float v = x[i];
    const float inner =
        float(kSqrt2OverPi) * (v + float(kGeluCubic) * v * v * v);
    const float t = cpu::tanhApproxFloat(inner);
    const float dInner =
        float(kSqrt2OverPi) * (1.0f + float(3 * kGeluCubic) * v * v);
    dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * dInner);
  }
}

__global__ void geluGradErfKernel(const float *x, const float *dy, int64_t n,
                                  float *dx) {
  FLEXMOE_GRID_STRIDE(i, n) {
    const float v = x[i];
    const float cdf = 0.5f * (1.0f + erff(v * float(kInvSqrt2)));
    const float pdf = float(kInvSqrt2Pi) * expf(-0.5f * v * v);
    dx[i] = dy[i] * (cdf + v * pdf);
  }
}

__global__ void dropoutKernelImpl(const float *x, int64_t n, double rate,
                                  uint64_t seed, uint64_t step, float keepScale,
                                  float *y) {
  const uint64_t base = cpu::splitmix64(cpu::splitmix64(seed) ^ step);
  FLEXMOE_GRID_STRIDE(i, n) {
    const uint64_t bits = cpu::splitmix64(base ^ static_cast<uint64_t>(i));
    const double uniform = static_cast<double>(bits >> 11) * 0x1.0p-53;
    y[i] = uniform >= rate ? x[i] * keepScale : 0.0f;
  }
}

__global__ void adamwKernelImpl(const float *param, const float *grad,
                                const float *m, const float *v, int64_t n,
                                double stepSize, double decay, double b1,
                                double b2, double eps, double bc2Sqrt,
                                double gradScale, float *newParam, float *newM,
                                float *newV) {
  FLEXMOE_GRID_STRIDE(i, n) {
    const double g = static_cast<double>(grad[i]) * gradScale;
    const double mi = b1 * static_cast<double>(m[i]) + (1 - b1) * g;
    const double vi = b2 * static_cast<double>(v[i]) + (1 - b2) * g * g;
    const double denom = sqrt(vi) / bc2Sqrt + eps;
    const double p = static_cast<double>(param[i]) * decay;
    newParam[i] = static_cast<float>(p - stepSize * mi / denom);
    newM[i] = static_cast<float>(mi);
    newV[i] = static_cast<float>(vi);
  }
}

} // namespace

Status fillKernel(float *out, int64_t n, float value, cudaStream_t stream) {
  if (n == 0)
    return Status::ok();
  fillKernelImpl<<<gridFor(n), kThreads, 0, stream>>>(out, n, value);
  return launched("fill kernel");
}

Status scaleKernel(const float *x, int64_t n, float factor, float *y,
                   cudaStream_t stream) {
  if (n == 0)
    return Status::ok();
  scaleKernelImpl<<<gridFor(n), kThreads, 0, stream>>>(x, n, factor, y);
  return launched("scale kernel");
}

Status binaryKernel(bool multiply, const float *lhs, Dims lhsDims,
                    const float *rhs, Dims rhsDims, Dims outDims, float *out,
                    cudaStream_t stream) {
  int64_t n = 1;
  for (int d = 0; d < outDims.rank; ++d)
    n *= outDims.size[d];
  if (n == 0)
    return Status::ok();
  // The operands' dims carry the output's sizes and their own strides.
  for (int d = 0; d < outDims.rank; ++d) {
    lhsDims.size[d] = outDims.size[d];
    rhsDims.size[d] = outDims.size[d];
  }
  lhsDims.rank = rhsDims.rank = outDims.rank;
  if (multiply)
    binaryKernelImpl<true><<<gridFor(n), kThreads, 0, stream>>>(
        lhs, lhsDims, rhs, rhsDims, n, out);
  else
    binaryKernelImpl<false><<<gridFor(n), kThreads, 0, stream>>>(
        lhs, lhsDims, rhs, rhsDims, n, out);
  return launched("broadcast kernel");
}

Status geluKernel(const float *x, int64_t n, bool tanhApproximation, float *y,
                  cudaStream_t stream) {
  if (n == 0)
    return Status::ok();
  if (tanhApproximation)
    geluTanhKernel<<<gridFor(n), kThreads, 0, stream>>>(x, n, y);
  else
    geluErfKernel<<<gridFor(n), kThreads, 0, stream>>>(x, n, y);
  return launched("gelu kernel");
}

Status geluGradKernel(const float *x, const float *dy, int64_t n,
                      bool tanhApproximation, float *dx, cudaStream_t stream) {
  if (n == 0)
    return Status::ok();
  if (tanhApproximation)
    geluGradTanhKernel<<<gridFor(n), kThreads, 0, stream>>>(x, dy, n, dx);
  else
    geluGradErfKernel<<<gridFor(n), kThreads, 0, stream>>>(x, dy, n, dx);
  return launched("gelu grad kernel");
}

Status dropoutKernel(const float *x, int64_t n, double rate, uint64_t seed,
                     uint64_t step, float *y, cudaStream_t stream) {
  if (n == 0)
    return Status::ok();
  const float keepScale = static_cast<float>(1 / (1 - rate));
  dropoutKernelImpl<<<gridFor(n), kThreads, 0, stream>>>(x, n, rate, seed, step,
                                                         keepScale, y);
  return launched("dropout kernel");
}

Status adamwKernel(const float *param, const float *grad, const float *m,
                   const float *v, int64_t n, double stepSize, double decay,
                   double beta1, double beta2, double epsilon, double bc2Sqrt,
                   double gradScale, float *newParam, float *newM, float *newV,
                   cudaStream_t stream) {
  if (n == 0)
    return Status::ok();
  adamwKernelImpl<<<gridFor(n), kThreads, 0, stream>>>(
      param, grad, m, v, n, stepSize, decay, beta1, beta2, epsilon, bc2Sqrt,
      gradScale, newParam, newM, newV);
  return launched("adamw kernel");
}

} // namespace flexmoe::cuda
