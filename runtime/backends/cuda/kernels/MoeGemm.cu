//===- MoeGemm.cu - the grouped fp32 GEMM of the moe kernels --------------===//
//
// One tiled SIMT GEMM kernel serves every GEMM of the moe ops: the gate's
// (one group) and the experts' (one group per expert or slot, with the
// group's row count read on the device). A block computes a 64×64 tile of
// one group's C with 256 threads (4×4 values each, strided so that shared
// memory reads do not conflict), accumulating in fp32 in a fixed k order:
// results do not depend on the launch and are run-to-run deterministic.
//
//===----------------------------------------------------------------------===//
#include "runtime/backends/cpu/kernels/FastMath.h"
#include "runtime/backends/cuda/kernels/MoeKernels.cuh"

namespace flexmoe::cuda::detail {

namespace {

constexpr int kTileN = 64, kTileK = 16, kThreads = 256;

__device__ __forceinline__ float activate(MoeAct act, float a) {
  if (act == MoeAct::Relu)
    return a > 0.0f ? a : 0.0f;
  if (act == MoeAct::Gelu) {
    const float inner = 0.7978845608028654f * (a + 0.044715f * a * a * a);
    return 0.5f * a * (1.0f + cpu::tanhApproxFloat(inner));
  }
  return a;
}

/// d act(a) / da (relu's derivative at 0 is 0, as on the CPU). GELU's tanh
/// is the CPU's float fit, so both backends round alike.
__device__ __forceinline__ float activateDerivative(MoeAct act, float a) {
  if (act == MoeAct::Relu)
    return a > 0.0f ? 1.0f : 0.0f;
  if (act == MoeAct::Gelu) {
    const float inner = 0.7978845608028654f * (a + 0.044715f * a * a * a);
    const float th = cpu::tanhApproxFloat(inner);
    const float dInner =
        0.7978845608028654f * (1.0f + 3.0f * 0.044715f * a * a);
    return 0.5f * (1.0f + th) + 0.5f * a * (1.0f - th * th) * dInner;
  }
  return 1.0f;
}

__device__ __forceinline__ int64_t clampCount(const int32_t *counts, int64_t g,
                                              int64_t bound) {
  const int64_t n = counts[g];
  return n < 0 ? 0 : (n > bound ? bound : n);
}

__global__ void __launch_bounds__(kThreads)
    groupedGemmKernel(const GroupedGemm p) {
  int64_t g, M = p.M, K = p.K, mTile;
  if (p.var == GroupedGemm::Var::M) {
    // Flat tile index over all groups: find g with
    // tileStart[g] ≤ t < tileStart[g + 1] (binary search, non-decreasing).
    const int64_t t = blockIdx.x;
    if (t >= p.tileStart[p.numGroups])
      return;
    int64_t lo = 0, hi = p.numGroups - 1;
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (p.tileStart[mid] <= t)
        lo = mid;
      else
        hi = mid - 1;
    }
    g = lo;
    M = clampCount(p.counts, g, p.M);
    mTile = t - p.tileStart[g];
  } else {
    g = blockIdx.z;
    mTile = blockIdx.x;
    if (p.var == GroupedGemm::Var::K)
      K = clampCount(p.counts, g, p.K);
  }
  const int64_t m0 = mTile * kTileM, n0 = int64_t(blockIdx.y) * kTileN;
  if (m0 >= M)
    return;
  const float *A = p.A + g * p.aGroupStride +
                   (p.aRowStart ? int64_t(p.aRowStart[g]) * p.aRowScale : 0);
  const float *B = p.B + g * p.bGroupStride +
                   (p.bRowStart ? int64_t(p.bRowStart[g]) * p.bRowScale : 0);
  const int64_t cOffset =
      g * p.cGroupStride +
      (p.cRowStart ? int64_t(p.cRowStart[g]) * p.cRowScale : 0);

  __shared__ float As[kTileK][kTileM + 4];
  __shared__ float Bs[kTileK][kTileN + 4];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kTileK) {
#pragma unroll
    for (int l = 0; l < (kTileM * kTileK) / kThreads; ++l) {
      const int idx = threadIdx.x + l * kThreads;
      int mm, kk;
      if (p.transA) {
        kk = idx / kTileM;
        mm = idx % kTileM;
      } else {
        mm = idx / kTileK;
        kk = idx % kTileK;
      }
      const int64_t m = m0 + mm, k = k0 + kk;
      float v = 0.0f;
      if (m < M && k < K)
        v = p.transA ? A[k * p.lda + m] : A[m * p.lda + k];
      As[kk][mm] = v;
    }
#pragma unroll
    for (int l = 0; l < (kTileN * kTileK) / kThreads; ++l) {
      const int idx = threadIdx.x + l * kThreads;
      int nn, kk;
      if (p.transB) {
        nn = idx / kTileK;
        kk = idx % kTileK;
      } else {
        kk = idx / kTileN;
        nn = idx % kTileN;
      }
      const int64_t n = n0 + nn, k = k0 + kk;
      float v = 0.0f;
      if (n < p.N && k < K)
        v = p.transB ? B[n * p.ldb + k] : B[k * p.ldb + n];
      Bs[kk][nn] = v;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = As[kk][ty + 16 * i];
        b[i] = Bs[kk][tx + 16 * i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
          acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }

  const float *bias = p.bias ? p.bias + g * p.biasGroupStride : nullptr;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty + 16 * i;
    if (m >= M)
      continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx + 16 * j;
      if (n >= p.N)
        continue;
      float v = p.alpha * acc[i][j];
      if (bias)
        v += bias[n];
      const int64_t at = cOffset + m * p.ldc + n;
      if (p.derivOf) {
        p.C[at] = v * activateDerivative(p.act, p.derivOf[at]);
      } else if (p.C2) {
        p.C[at] = v;
        p.C2[at] = activate(p.act, v);
      } else {
        p.C[at] = activate(p.act, v);
      }
    }
  }
}

} // namespace

cudaError_t launchGroupedGemm(const GroupedGemm &gemm, int64_t maxTiles,
                              cudaStream_t stream) {
  if (gemm.N <= 0 || gemm.numGroups <= 0)
    return cudaSuccess;
  const bool varM = gemm.var == GroupedGemm::Var::M;
  const int64_t tilesM = varM ? maxTiles : (gemm.M + kTileM - 1) / kTileM;
  if (tilesM <= 0)
    return cudaSuccess;
  const int64_t tilesN = (gemm.N + kTileN - 1) / kTileN;
  const int64_t groups = varM ? 1 : gemm.numGroups;
  if (tilesM > 0x7fffffffLL || tilesN > 65535 || groups > 65535)
    return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(tilesM), static_cast<unsigned>(tilesN),
                  static_cast<unsigned>(groups));
  groupedGemmKernel<<<grid, kThreads, 0, stream>>>(gemm);
  return cudaGetLastError();
}

} // namespace flexmoe::cuda::detail
