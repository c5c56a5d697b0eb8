//===- DenseCommon.cuh - launch helpers of the dense kernels ----*- C++ -*-===//
#ifndef FLEXMOE_RUNTIME_BACKENDS_CUDA_KERNELS_DENSECOMMON_CUH
#define FLEXMOE_RUNTIME_BACKENDS_CUDA_KERNELS_DENSECOMMON_CUH

#include "runtime/backends/cuda/kernels/DenseKernels.h"

#include <algorithm>

namespace flexmoe::cuda {

constexpr int kThreads = 256;

/// Enough blocks for a grid-stride loop over n elements.
inline unsigned gridFor(int64_t n) {
  int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, 65535 * 8));
}

inline Status launched(const char *what) {
  return cudaStatus(cudaGetLastError(), what);
}

#define FLEXMOE_GRID_STRIDE(i, n)                                              \
  for (int64_t i =                                                             \
           blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;        \
       i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

/// Offset of element `linear` (row-major over dims.size) through dims.stride.
__device__ inline int64_t stridedOffset(int64_t linear, const Dims &dims) {
  int64_t offset = 0;
  for (int d = dims.rank - 1; d >= 0; --d) {
    offset += (linear % dims.size[d]) * dims.stride[d];
    linear /= dims.size[d];
  }
  return offset;
}

/// Sum over the block (blockDim.x == kThreads); every thread gets it.
template <typename T> __device__ T blockSum(T value) {
  __shared__ T partial[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2)
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads(); // partial may still be read by a previous call
  if (lane == 0)
    partial[warp] = value;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < kThreads / 32; ++w)
    total += partial[w];
  return total;
}

template <typename T> __device__ T blockMax(T value) {
  __shared__ T partial[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2)
    value = max(value, __shfl_xor_sync(0xffffffffu, value, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0)
    partial[warp] = value;
  __syncthreads();
  T total = partial[0];
  for (int w = 1; w < kThreads / 32; ++w)
    total = max(total, partial[w]);
  return total;
}

} // namespace flexmoe::cuda

#endif // FLEXMOE_RUNTIME_BACKENDS_CUDA_KERNELS_DENSECOMMON_CUH
