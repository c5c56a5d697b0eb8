//===- MoeGemm.cu - the grouped GEMMs of the moe kernels ------------------===//
//
// One grouped GEMM serves every GEMM of the moe ops: the gate's (one group)
// and the experts' (one group per expert or slot, with the group's row count
// read on the device). Two kernels share the tile schedule and epilogue:
// - fp32: a block computes a 64×64 tile of one group's C with 256 threads
//   (4×4 values each, strided so that shared memory reads do not conflict),
//   accumulating in fp32 FMA (SIMT, no TF32);
// - bf16 (MathPrecision::BF16): a 64×128 tile on tensor cores (WMMA), the
//   fp32 operands rounded to bfloat16 as they enter shared memory.
// Both accumulate in a fixed k order: results do not depend on the launch
// and are run-to-run deterministic.
//
//===----------------------------------------------------------------------===//
#include "runtime/backends/cpu/kernels/FastMath.h"
#include "runtime/backends/cuda/kernels/MoeKernels.cuh"

#include <cuda_bf16.h>
#include <mma.h>

namespace flexmoe::cuda::detail {

namespace {

constexpr int kTileN = kF32TileN, kTileK = 16, kThreads = 256;

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

/// The block's tile of a grouped GEMM: its group, the group's M and K and
/// where its operands start. False when the block has no tile (past the
/// real tile count, or past the group's rows): the whole block returns.
struct BlockTile {
  int64_t g, M, K, m0, n0, cOffset;
  const float *A, *B;
};

__device__ __forceinline__ bool locateTile(const GroupedGemm &p, int tileN,
                                           BlockTile &tile) {
  int64_t g, M = p.M, K = p.K, mTile;
  if (p.var == GroupedGemm::Var::M) {
    // Flat tile index over all groups: find g with
    // tileStart[g] ≤ t < tileStart[g + 1] (binary search, non-decreasing).
    const int64_t t = blockIdx.x;
    if (t >= p.tileStart[p.numGroups])
      return false;
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
  tile.g = g;
  tile.M = M;
  tile.K = K;
  tile.m0 = mTile * kTileM;
  tile.n0 = int64_t(blockIdx.y) * tileN;
  if (tile.m0 >= M)
    return false;
  tile.A = p.A + g * p.aGroupStride +
           (p.aRowStart ? int64_t(p.aRowStart[g]) * p.aRowScale : 0);
  tile.B = p.B + g * p.bGroupStride +
           (p.bRowStart ? int64_t(p.bRowStart[g]) * p.bRowScale : 0);
  tile.cOffset = g * p.cGroupStride +
                 (p.cRowStart ? int64_t(p.cRowStart[g]) * p.cRowScale : 0);
  return true;
}

/// The epilogue of one element (m, n) of the tile's group, from its fp32
/// accumulator.
__device__ __forceinline__ void storeElement(const GroupedGemm &p,
                                             const BlockTile &tile,
                                             const float *bias, int64_t m,
                                             int64_t n, float acc) {
  float v = p.alpha * acc;
  if (bias)
    v += bias[n];
  const int64_t at = tile.cOffset + m * p.ldc + n;
  if (p.derivOf) {
    p.C[at] = v * activateDerivative(p.act, p.derivOf[at]);
  } else if (p.C2) {
    p.C[at] = v;
    p.C2[at] = activate(p.act, v);
  } else {
    p.C[at] = activate(p.act, v);
  }
}

__global__ void __launch_bounds__(kThreads)
    groupedGemmKernel(const GroupedGemm p) {
  BlockTile tile;
  if (!locateTile(p, kTileN, tile))
    return;
  const int64_t M = tile.M, K = tile.K, m0 = tile.m0, n0 = tile.n0;
  const float *A = tile.A, *B = tile.B;

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

  const float *bias = p.bias ? p.bias + tile.g * p.biasGroupStride : nullptr;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty + 16 * i;
    if (m >= M)
      continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx + 16 * j;
      if (n < p.N)
        storeElement(p, tile, bias, m, n, acc[i][j]);
    }
  }
}

/// The bf16 tensor-core kernel: a 64×128 tile per block of 8 warps (2×4,
/// each 32×32 = 2×2 WMMA 16×16×16 fragments), k-steps of 32. Operands are
/// read as fp32 from global memory (zero outside the group's M, N, K),
/// rounded to bfloat16 (nearest even) while stored to shared memory, and
/// double-buffered: the next k-step's values are loaded into registers while
/// the current one is multiplied. The fp32 accumulators are staged through
/// shared memory so that each thread knows its element's row and column for
/// the epilogue.
constexpr int kBf16TileK = 32;
constexpr int kAPitch = kBf16TileK + 8;       // bf16; rows stay 32-byte aligned
constexpr int kBPitch = kBf16TileN + 8;       // bf16
constexpr int kCPitch = kBf16TileN + 4;       // float
constexpr int kAStage = kTileM * kAPitch;     // bf16 per A stage
constexpr int kBStage = kBf16TileK * kBPitch; // bf16 per B stage
constexpr int kALoads = kTileM * kBf16TileK / kThreads;
constexpr int kBLoads = kBf16TileK * kBf16TileN / kThreads;
constexpr size_t kOperandBytes =
    2 * size_t(kAStage + kBStage) * sizeof(__nv_bfloat16);
constexpr size_t kStagingBytes = size_t(kTileM) * kCPitch * sizeof(float);
constexpr size_t kBf16SmemBytes =
    kOperandBytes > kStagingBytes ? kOperandBytes : kStagingBytes;
static_assert(kALoads * kThreads == kTileM * kBf16TileK &&
                  kBLoads * kThreads == kBf16TileK * kBf16TileN,
              "the tiles must split evenly over the threads");
static_assert(kAPitch % 8 == 0 && kBPitch % 8 == 0 && kCPitch % 4 == 0,
              "WMMA needs 16-byte multiples as leading dimensions");
static_assert((kAStage * 2) % 32 == 0 && (kBStage * 2) % 32 == 0,
              "each stage must start 32-byte aligned for WMMA");
static_assert(kBf16SmemBytes <= 48 * 1024, "static shared memory limit");

/// Where thread-local load l of A or B sits in the tile: consecutive
/// threads walk the operand's contiguous dimension (coalesced reads).
__device__ __forceinline__ void aSlot(bool transA, int l, int &mm, int &kk) {
  const int idx = threadIdx.x + l * kThreads;
  if (transA) {
    kk = idx / kTileM;
    mm = idx % kTileM;
  } else {
    mm = idx / kBf16TileK;
    kk = idx % kBf16TileK;
  }
}
__device__ __forceinline__ void bSlot(bool transB, int l, int &nn, int &kk) {
  const int idx = threadIdx.x + l * kThreads;
  if (transB) {
    nn = idx / kBf16TileK;
    kk = idx % kBf16TileK;
  } else {
    kk = idx / kBf16TileN;
    nn = idx % kBf16TileN;
  }
}

/// This thread's share of the k-step at k0, in fp32 (0 outside bounds).
__device__ __forceinline__ void loadStep(const GroupedGemm &p,
                                         const BlockTile &tile, int64_t k0,
                                         float (&a)[kALoads],
                                         float (&b)[kBLoads]) {
#pragma unroll
  for (int l = 0; l < kALoads; ++l) {
    int mm, kk;
    aSlot(p.transA, l, mm, kk);
    const int64_t m = tile.m0 + mm, k = k0 + kk;
    a[l] = m < tile.M && k < tile.K
               ? (p.transA ? tile.A[k * p.lda + m] : tile.A[m * p.lda + k])
               : 0.0f;
  }
#pragma unroll
  for (int l = 0; l < kBLoads; ++l) {
    int nn, kk;
    bSlot(p.transB, l, nn, kk);
    const int64_t n = tile.n0 + nn, k = k0 + kk;
    b[l] = n < p.N && k < tile.K
               ? (p.transB ? tile.B[n * p.ldb + k] : tile.B[k * p.ldb + n])
               : 0.0f;
  }
}

/// Stores the registers of loadStep into one stage as bfloat16: A as
/// [m][k], B as [k][n] (both row-major for WMMA).
__device__ __forceinline__ void
storeStep(const GroupedGemm &p, const float (&a)[kALoads],
          const float (&b)[kBLoads], __nv_bfloat16 *As, __nv_bfloat16 *Bs) {
#pragma unroll
  for (int l = 0; l < kALoads; ++l) {
    int mm, kk;
    aSlot(p.transA, l, mm, kk);
    As[mm * kAPitch + kk] = __float2bfloat16_rn(a[l]);
  }
#pragma unroll
  for (int l = 0; l < kBLoads; ++l) {
    int nn, kk;
    bSlot(p.transB, l, nn, kk);
    Bs[kk * kBPitch + nn] = __float2bfloat16_rn(b[l]);
  }
}

__global__ void __launch_bounds__(kThreads)
    groupedGemmBf16Kernel(const GroupedGemm p) {
  namespace wmma = nvcuda::wmma;
  BlockTile tile;
  // Uniform over the block: every thread returns or none does, so the
  // __syncthreads below are reached by all.
  if (!locateTile(p, kBf16TileN, tile))
    return;
  // Two A and two B stages; after the k loop the same bytes hold the fp32
  // accumulators (the loop's last __syncthreads ends every read of them).
  __shared__ __align__(128) unsigned char smem[kBf16SmemBytes];
  __nv_bfloat16 *As = reinterpret_cast<__nv_bfloat16 *>(smem);
  __nv_bfloat16 *Bs = As + 2 * kAStage;
  float *Cs = reinterpret_cast<float *>(smem);

  const int warp = threadIdx.x / 32;
  const int wm = warp / 4, wn = warp % 4;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::fill_fragment(acc[i][j], 0.0f);

  float aRegs[kALoads], bRegs[kBLoads];
  const int64_t steps = (tile.K + kBf16TileK - 1) / kBf16TileK;
  if (steps > 0) {
    loadStep(p, tile, 0, aRegs, bRegs);
    storeStep(p, aRegs, bRegs, As, Bs);
  }
  __syncthreads();
  for (int64_t step = 0; step < steps; ++step) {
    const int current = static_cast<int>(step & 1);
    const bool more = step + 1 < steps;
    if (more)
      loadStep(p, tile, (step + 1) * kBf16TileK, aRegs, bRegs);
    const __nv_bfloat16 *a = As + current * kAStage;
    const __nv_bfloat16 *b = Bs + current * kBStage;
#pragma unroll
    for (int kk = 0; kk < kBf16TileK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>
          aFrag[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major>
          bFrag[2];
#pragma unroll
      for (int i = 0; i < 2; ++i)
        wmma::load_matrix_sync(aFrag[i], a + (wm * 32 + 16 * i) * kAPitch + kk,
                               kAPitch);
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::load_matrix_sync(bFrag[j], b + kk * kBPitch + wn * 32 + 16 * j,
                               kBPitch);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
          wmma::mma_sync(acc[i][j], aFrag[i], bFrag[j], acc[i][j]);
    }
    // The other stage was last read in the previous step, before its
    // closing __syncthreads.
    if (more)
      storeStep(p, aRegs, bRegs, As + (1 - current) * kAStage,
                Bs + (1 - current) * kBStage);
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(Cs + (wm * 32 + 16 * i) * kCPitch + wn * 32 +
                                  16 * j,
                              acc[i][j], kCPitch, wmma::mem_row_major);
  __syncthreads();
  const float *bias = p.bias ? p.bias + tile.g * p.biasGroupStride : nullptr;
  for (int idx = threadIdx.x; idx < kTileM * kBf16TileN; idx += kThreads) {
    const int r = idx / kBf16TileN, c = idx % kBf16TileN;
    const int64_t m = tile.m0 + r, n = tile.n0 + c;
    if (m < tile.M && n < p.N)
      storeElement(p, tile, bias, m, n, Cs[r * kCPitch + c]);
  }
}

} // namespace

cudaError_t launchGroupedGemm(const GroupedGemm &gemm, int64_t maxTiles,
                              cudaStream_t stream) {
  const GroupedGemmGrid grid = groupedGemmGrid(gemm, maxTiles);
  if (grid.empty())
    return cudaSuccess;
  if (!grid.fits)
    return cudaErrorInvalidConfiguration;
  const dim3 blocks(static_cast<unsigned>(grid.x),
                    static_cast<unsigned>(grid.y),
                    static_cast<unsigned>(grid.z));
  if (gemm.precision == device::MathPrecision::BF16)
    groupedGemmBf16Kernel<<<blocks, kThreads, 0, stream>>>(gemm);
  else
    groupedGemmKernel<<<blocks, kThreads, 0, stream>>>(gemm);
  return cudaGetLastError();
}

} // namespace flexmoe::cuda::detail
