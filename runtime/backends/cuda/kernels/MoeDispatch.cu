//===- MoeDispatch.cu - moe.dispatch, moe.combine and their gradients -----===//
//
// Dispatch computes positions and counts on the device: one block per expert
// scans the (token, choice) copies in order with a block-wide prefix sum of
// "this copy goes to me", so each expert's group is stable in token order
// and the result is deterministic (no atomics decide a position). The row
// copies, the combine and the gradients are then embarrassingly parallel:
// each output row is written by one block, and every sum over a token's
// choices runs in choice order.
//
//===----------------------------------------------------------------------===//
#include "runtime/backends/cpu/kernels/MoeCommon.h"
#include "runtime/backends/cuda/kernels/MoeKernels.cuh"

namespace flexmoe::cuda {

using cpu::detail::checkNonNegative;
using cpu::detail::checkProduct;
using cpu::detail::kMaxRows;
using detail::opStatus;
using detail::scratchOf;

namespace {

constexpr int kBlock = 256;
constexpr int kRowThreads = 128;

/// Exclusive prefix sum of `value` over the block (kBlock threads); *total
/// gets the block's sum. Every thread must call it.
__device__ int64_t blockExclusiveScan(int64_t value, int64_t *total) {
  __shared__ int64_t warpSums[kBlock / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int64_t inclusive = value;
  for (int offset = 1; offset < 32; offset *= 2) {
    const int64_t up = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset)
      inclusive += up;
  }
  if (lane == 31)
    warpSums[warp] = inclusive;
  __syncthreads();
  int64_t warpBase = 0, sum = 0;
  for (int w = 0; w < kBlock / 32; ++w) {
    if (w < warp)
      warpBase += warpSums[w];
    sum += warpSums[w];
  }
  __syncthreads(); // warpSums is reused by the next call
  *total = sum;
  return warpBase + inclusive - value;
}

/// Block e: demand[e] = the number of copies routed to expert e.
__global__ void demandKernel(const int32_t *ids, int64_t n, int64_t *demand) {
  const int e = blockIdx.x;
  int64_t c = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    c += ids[i] == e;
  int64_t total;
  blockExclusiveScan(c, &total);
  if (threadIdx.x == 0)
    demand[e] = total;
}

/// Block e: positions of expert e's copies in (token, choice) order, its
/// kept count, and its dropped copies added to *numDropped.
__global__ void positionsKernel(const int32_t *ids, int64_t n,
                                const int64_t *demand, int64_t capacity,
                                int32_t *positions, int32_t *counts,
                                unsigned long long *numDropped) {
  const int e = blockIdx.x;
  int64_t base = 0;
  if (capacity != 0) {
    base = int64_t(e) * capacity;
  } else {
    int64_t part = 0, total;
    for (int i = threadIdx.x; i < e; i += blockDim.x)
      part += demand[i];
    blockExclusiveScan(part, &total);
    base = total;
  }
  int64_t rank = 0; // copies of e before this chunk
  for (int64_t start = 0; start < n; start += blockDim.x) {
    const int64_t i = start + threadIdx.x;
    const bool mine = i < n && ids[i] == e;
    int64_t chunk;
    const int64_t r = rank + blockExclusiveScan(mine ? 1 : 0, &chunk);
    if (mine)
      positions[i] =
          capacity != 0 && r >= capacity ? -1 : static_cast<int32_t>(base + r);
    rank += chunk;
  }
  if (threadIdx.x == 0) {
    const int64_t kept = capacity != 0 && rank > capacity ? capacity : rank;
    counts[e] = static_cast<int32_t>(kept);
    if (numDropped && rank > kept)
      atomicAdd(numDropped, static_cast<unsigned long long>(rank - kept));
  }
}

/// Copies whose expert id is outside [0, E) are dropped (never written by
/// positionsKernel).
__global__ void invalidIdsKernel(const int32_t *ids, int64_t n, int E,
                                 int32_t *positions) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n && (ids[i] < 0 || ids[i] >= E))
    positions[i] = -1;
}

/// Block i: copy i's token row to its routed row.
__global__ void copyRowsKernel(const float *x, const int32_t *positions, int K,
                               int64_t D, int64_t numRows, float *routed) {
  const int64_t i = blockIdx.x;
  const int32_t p = positions[i];
  if (p < 0 || p >= numRows)
    return;
  const float *src = x + (i / K) * D;
  float *dst = routed + int64_t(p) * D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
    dst[d] = src[d];
}

/// Block r of the E·C capacity rows: zero if past its expert's count.
__global__ void zeroPaddingKernel(const int32_t *counts, int64_t capacity,
                                  int64_t D, float *routed) {
  const int64_t r = blockIdx.x;
  if (r % capacity < counts[r / capacity])
    return;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
    routed[r * D + d] = 0.0f;
}

/// Block t: y[t] = Σ_j w_j · rows[positions[t][j]] in choice order (w = 1
/// when weights is null); invalid positions contribute nothing.
__global__ void gatherRowsKernel(const float *rows, const int32_t *positions,
                                 const float *weights, int64_t numRows, int K,
                                 int64_t D, float *y) {
  const int64_t t = blockIdx.x;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float sum = 0.0f;
    for (int j = 0; j < K; ++j) {
      const int32_t p = positions[t * K + j];
      if (p < 0 || p >= numRows)
        continue;
      const float v = rows[int64_t(p) * D + d];
      sum += weights ? weights[t * K + j] * v : v;
    }
    y[t * D + d] = sum;
  }
}

/// Block i (copy i): dExpertOut[p] = w·dy[t] and dCombineWeights[i] =
/// dy[t]·expertOut[p] (a fixed-order tree reduction), 0 when dropped.
__global__ void combineGradKernel(const float *expertOut,
                                  const int32_t *positions,
                                  const float *weights, const float *dy,
                                  int64_t numRows, int K, int64_t D,
                                  float *dExpertOut, float *dWeights) {
  const int64_t i = blockIdx.x;
  const int32_t p = positions[i];
  const bool kept = p >= 0 && p < numRows;
  __shared__ float part[kRowThreads];
  float dot = 0.0f;
  if (kept) {
    const float w = weights[i];
    const float *g = dy + (i / K) * D;
    const float *src = expertOut + int64_t(p) * D;
    float *dst = dExpertOut + int64_t(p) * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      dst[d] = w * g[d];
      dot = fmaf(g[d], src[d], dot);
    }
  }
  part[threadIdx.x] = dot;
  __syncthreads();
  for (int stride = kRowThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride)
      part[threadIdx.x] += part[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0)
    dWeights[i] = kept ? part[0] : 0.0f;
}

Status checkCombineShape(const char *op, int64_t numRows, int64_t numTokens,
                         int64_t modelDim, int64_t topK) {
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "expert row count", numRows));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "token count", numTokens));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "model dim", modelDim));
  if (topK < 1)
    return errorf(op, ": top_k is ", topK, ", expected ≥ 1");
  return checkProduct(op, "token copies", numTokens, topK, kMaxRows);
}

} // namespace

Status moeDispatch(const float *x, const int32_t *expertIds, int64_t numTokens,
                   int64_t modelDim, int64_t numExperts, int64_t topK,
                   int64_t capacity, float *routed, int32_t *positions,
                   int32_t *counts, int64_t *numDropped, cudaStream_t stream,
                   const MoeScratch &scratch) {
  const char *op = "moe.dispatch";
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "token count", numTokens));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "model dim", modelDim));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "capacity", capacity));
  if (numExperts < 1 || numExperts > kMaxRows)
    return errorf(op, ": expert count is ", numExperts, ", expected in [1, ",
                  kMaxRows, "]");
  if (topK < 1)
    return errorf(op, ": top_k is ", topK, ", expected ≥ 1");
  FLEXMOE_RETURN_IF_ERROR(
      checkProduct(op, "token copies", numTokens, topK, kMaxRows));
  FLEXMOE_RETURN_IF_ERROR(
      checkProduct(op, "routed rows", numExperts, capacity, kMaxRows));
  const int64_t E = numExperts, K = topK, D = modelDim, n = numTokens * K;
  const int64_t numRows = capacity == 0 ? n : E * capacity;
  StatusOr<int64_t *> demandOr = scratchOf<int64_t>(scratch, op, E);
  if (!demandOr)
    return demandOr.status();
  if (numDropped)
    FLEXMOE_RETURN_IF_ERROR(
        opStatus(op, cudaMemsetAsync(numDropped, 0, sizeof(int64_t), stream)));
  if (capacity == 0) {
    demandKernel<<<E, kBlock, 0, stream>>>(expertIds, n, *demandOr);
    FLEXMOE_RETURN_IF_ERROR(opStatus(op, cudaGetLastError()));
  }
  positionsKernel<<<E, kBlock, 0, stream>>>(
      expertIds, n, *demandOr, capacity, positions, counts,
      reinterpret_cast<unsigned long long *>(numDropped));
  FLEXMOE_RETURN_IF_ERROR(opStatus(op, cudaGetLastError()));
  if (n > 0) {
    invalidIdsKernel<<<(n + kBlock - 1) / kBlock, kBlock, 0, stream>>>(
        expertIds, n, static_cast<int>(E), positions);
    FLEXMOE_RETURN_IF_ERROR(opStatus(op, cudaGetLastError()));
    if (D > 0) {
      copyRowsKernel<<<n, kRowThreads, 0, stream>>>(
          x, positions, static_cast<int>(K), D, numRows, routed);
      FLEXMOE_RETURN_IF_ERROR(opStatus(op, cudaGetLastError()));
    }
  }
  // Capacity padding is zero so that moe.experts reads defined values.
  if (capacity != 0 && D > 0) {
    zeroPaddingKernel<<<numRows, kRowThreads, 0, stream>>>(counts, capacity, D,
                                                           routed);
    FLEXMOE_RETURN_IF_ERROR(opStatus(op, cudaGetLastError()));
  }
  return Status::ok();
}

Status moeDispatchGrad(const float *dRouted, const int32_t *positions,
                       int64_t numRows, int64_t numTokens, int64_t modelDim,
                       int64_t topK, float *dx, cudaStream_t stream) {
  const char *op = "moe.dispatch_grad";
  FLEXMOE_RETURN_IF_ERROR(
      checkCombineShape(op, numRows, numTokens, modelDim, topK));
  if (numTokens == 0 || modelDim == 0)
    return Status::ok();
  gatherRowsKernel<<<numTokens, kRowThreads, 0, stream>>>(
      dRouted, positions, nullptr, numRows, static_cast<int>(topK), modelDim,
      dx);
  return opStatus(op, cudaGetLastError());
}

Status moeCombine(const float *expertOut, const int32_t *positions,
                  const float *combineWeights, int64_t numRows,
                  int64_t numTokens, int64_t modelDim, int64_t topK, float *y,
                  cudaStream_t stream) {
  const char *op = "moe.combine";
  FLEXMOE_RETURN_IF_ERROR(
      checkCombineShape(op, numRows, numTokens, modelDim, topK));
  if (numTokens == 0 || modelDim == 0)
    return Status::ok();
  gatherRowsKernel<<<numTokens, kRowThreads, 0, stream>>>(
      expertOut, positions, combineWeights, numRows, static_cast<int>(topK),
      modelDim, y);
  return opStatus(op, cudaGetLastError());
}

Status moeCombineGrad(const float *expertOut, const int32_t *positions,
                      const float *combineWeights, const float *dy,
                      int64_t numRows, int64_t numTokens, int64_t modelDim,
                      int64_t topK, float *dExpertOut, float *dCombineWeights,
                      cudaStream_t stream) {
  const char *op = "moe.combine_grad";
  FLEXMOE_RETURN_IF_ERROR(
      checkCombineShape(op, numRows, numTokens, modelDim, topK));
  // Rows no copy reads stay zero.
  if (numRows > 0 && modelDim > 0)
    FLEXMOE_RETURN_IF_ERROR(opStatus(
        op, cudaMemsetAsync(dExpertOut, 0, numRows * modelDim * sizeof(float),
                            stream)));
  if (numTokens == 0)
    return Status::ok();
  combineGradKernel<<<numTokens * topK, kRowThreads, 0, stream>>>(
      expertOut, positions, combineWeights, dy, numRows, static_cast<int>(topK),
      modelDim, dExpertOut, dCombineWeights);
  return opStatus(op, cudaGetLastError());
}

} // namespace flexmoe::cuda
