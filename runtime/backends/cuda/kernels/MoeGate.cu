//===- MoeGate.cu - moe.gate, moe.aux_loss and their gradients ------------===//
//
// The gate's logits GEMM runs on the grouped GEMM (one group); softmax, top-k
// and the renormalised combine weights are one fused kernel, one thread per
// token. Reductions over tokens (aux loss) are block tree reductions in a
// fixed order: deterministic.
//
//===----------------------------------------------------------------------===//
#include "runtime/backends/cpu/kernels/MoeCommon.h"
#include "runtime/backends/cuda/kernels/MoeKernels.cuh"

#include <algorithm>
#include <cmath>
#include <limits>

namespace flexmoe::cuda {

using cpu::detail::checkNonNegative;
using cpu::detail::checkProduct;
using cpu::detail::kMaxRows;
using detail::GroupedGemm;
using detail::opStatus;
using detail::scratchOf;

namespace {

constexpr int kBlock = 256;

int64_t blocksFor(int64_t n, int64_t block = kBlock) {
  return (n + block - 1) / block;
}

/// NaN ranks below every probability, as on the CPU.
__device__ __forceinline__ float rankOf(float p) {
  return isnan(p) ? -INFINITY : p;
}

/// (ra, a) comes before (rb, b): probability descending, then id ascending.
__device__ __forceinline__ bool before(float ra, int a, float rb, int b) {
  return ra > rb || (ra == rb && a < b);
}

/// A logit bias small enough to travel as a kernel parameter (4 KiB, well
/// within the 32 KiB CUDA 12.1+ allows on sm_70 and later): no host-memory
/// copy, so the launch stays capturable in a CUDA graph.
constexpr int kInlineBias = 1024;
struct InlineBias {
  int count = 0;
  float values[kInlineBias];
};

/// probs holds the logits; per token: + bias (device `bias`, else
/// `inlineBias` when it has values), softmax, top-k, combine weights, and
/// (atomicCounts) the per-expert copy counts.
__global__ void gateRowsKernel(float *probs, const float *bias,
                               const InlineBias inlineBias, int64_t numTokens,
                               int E, int K, int32_t *ids, float *combine,
                               int32_t *atomicCounts) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= numTokens)
    return;
  float *p = probs + t * E;
  float maxLogit = -INFINITY;
  for (int e = 0; e < E; ++e) {
    if (bias)
      p[e] += bias[e];
    else if (inlineBias.count > 0)
      p[e] += inlineBias.values[e];
    maxLogit = fmaxf(maxLogit, p[e]);
  }
  float sum = 0.0f;
  for (int e = 0; e < E; ++e) {
    p[e] = expf(p[e] - maxLogit);
    sum += p[e];
  }
  for (int e = 0; e < E; ++e)
    p[e] /= sum;
  // The j-th choice is the first expert, in the strict total order, after
  // the (j−1)-th: K scans, no per-token memory.
  float selected = 0.0f, prevRank = INFINITY;
  int prev = -1;
  for (int j = 0; j < K; ++j) {
    int best = -1;
    float bestRank = 0.0f;
    for (int e = 0; e < E; ++e) {
      const float r = rankOf(p[e]);
      if (prev >= 0 && !before(prevRank, prev, r, e))
        continue;
      if (best < 0 || before(r, e, bestRank, best)) {
        best = e;
        bestRank = r;
      }
    }
    ids[t * K + j] = best;
    combine[t * K + j] = p[best];
    selected += p[best];
    if (atomicCounts)
      atomicAdd(atomicCounts + best, 1);
    prev = best;
    prevRank = bestRank;
  }
  if (K > 1)
    for (int j = 0; j < K; ++j)
      combine[t * K + j] /= selected;
}

/// Block e: how many of the n ids equal e (ids outside [0, E) count for
/// none), and, if probs is given, Σ_t probs[t][e] in double; both by a
/// fixed-order tree reduction.
__global__ void expertSumsKernel(const int32_t *ids, int64_t n,
                                 const float *probs, int64_t numTokens, int E,
                                 int32_t *counts, double *copies,
                                 double *probSums) {
  const int e = blockIdx.x;
  __shared__ int64_t countPart[kBlock];
  __shared__ double sumPart[kBlock];
  int64_t c = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    c += ids[i] == e;
  double s = 0.0;
  if (probs)
    for (int64_t t = threadIdx.x; t < numTokens; t += blockDim.x)
      s += static_cast<double>(probs[t * E + e]);
  countPart[threadIdx.x] = c;
  sumPart[threadIdx.x] = s;
  __syncthreads();
  for (int stride = kBlock / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      countPart[threadIdx.x] += countPart[threadIdx.x + stride];
      sumPart[threadIdx.x] += sumPart[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    if (counts)
      counts[e] = static_cast<int32_t>(countPart[0]);
    if (copies)
      copies[e] = static_cast<double>(countPart[0]);
    if (probSums)
      probSums[e] = sumPart[0];
  }
}

/// loss = coef · E · Σ_e f_e · P_e, summed in expert order.
__global__ void auxLossFinalKernel(const double *copies, const double *probSums,
                                   int64_t numTokens, int E, int K, double coef,
                                   float *loss) {
  double total = 0.0;
  for (int e = 0; e < E; ++e) {
    const double f = copies[e] / static_cast<double>(numTokens * K);
    total += f * (probSums[e] / static_cast<double>(numTokens));
  }
  *loss = static_cast<float>(coef * static_cast<double>(E) * total);
}

__global__ void auxLossGradKernel(const double *copies, const float *dLoss,
                                  int64_t numTokens, int E, int K, double coef,
                                  float *dProbs) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= numTokens * E)
    return;
  const int e = static_cast<int>(i % E);
  const double f = copies[e] / static_cast<double>(numTokens * K);
  dProbs[i] = static_cast<float>(static_cast<double>(*dLoss) * coef *
                                 static_cast<double>(E) * f /
                                 static_cast<double>(numTokens));
}

/// dLogits[t] from dProbs, dCombineWeights and the renormalisation, then
/// through the softmax (as the CPU's moeGateGrad), one thread per token.
__global__ void gateGradRowsKernel(const float *probs, const int32_t *ids,
                                   const float *dCombine, const float *dProbs,
                                   int64_t numTokens, int E, int K,
                                   float *dLogits) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= numTokens)
    return;
  const float *p = probs + t * E;
  const int32_t *id = ids + t * K;
  const float *dc = dCombine + t * K;
  float *dp = dLogits + t * E; // dp first, then dLogits in place
  for (int e = 0; e < E; ++e)
    dp[e] = dProbs[t * E + e];
  if (K == 1) {
    if (id[0] >= 0 && id[0] < E)
      dp[id[0]] += dc[0];
  } else {
    float s = 0.0f, weighted = 0.0f;
    for (int j = 0; j < K; ++j) {
      if (id[j] < 0 || id[j] >= E)
        continue;
      s += p[id[j]];
      weighted += dc[j] * p[id[j]];
    }
    const float shared = weighted / (s * s);
    for (int j = 0; j < K; ++j)
      if (id[j] >= 0 && id[j] < E)
        dp[id[j]] += dc[j] / s - shared;
  }
  float inner = 0.0f;
  for (int e = 0; e < E; ++e)
    inner += p[e] * dp[e];
  for (int e = 0; e < E; ++e)
    dp[e] = p[e] * (dp[e] - inner);
}

Status checkGateShape(const char *op, int64_t numTokens, int64_t modelDim,
                      int64_t numExperts, int64_t topK) {
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "token count", numTokens));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "model dim", modelDim));
  if (numExperts < 1 || numExperts > kMaxRows)
    return errorf(op, ": expert count is ", numExperts, ", expected in [1, ",
                  kMaxRows, "]");
  if (topK < 1 || topK > numExperts)
    return errorf(op, ": top_k is ", topK, ", expected in [1, ", numExperts,
                  "] (the expert count)");
  FLEXMOE_RETURN_IF_ERROR(checkProduct(op, "probs size", numTokens, numExperts,
                                       std::numeric_limits<int64_t>::max()));
  return checkProduct(op, "token copies", numTokens, topK, kMaxRows);
}

Status checkAuxShape(const char *op, int64_t numTokens, int64_t numExperts,
                     int64_t topK) {
  if (numTokens < 1)
    return errorf(op, ": token count is ", numTokens,
                  ", expected ≥ 1 (the loss averages over tokens)");
  if (numExperts < 1 || numExperts > kMaxRows)
    return errorf(op, ": expert count is ", numExperts, ", expected in [1, ",
                  kMaxRows, "]");
  if (topK < 1)
    return errorf(op, ": top_k is ", topK, ", expected ≥ 1");
  return checkProduct(op, "token copies", numTokens, topK, kMaxRows);
}

} // namespace

Status moeGate(const float *x, const float *gateWeight, int64_t numTokens,
               int64_t modelDim, int64_t numExperts, int64_t topK, float *probs,
               int32_t *expertIds, float *combineWeights, int32_t *counts,
               std::span<const float> logitBias, bool deterministic,
               cudaStream_t stream, const MoeScratch &scratch) {
  const char *op = "moe.gate";
  FLEXMOE_RETURN_IF_ERROR(
      checkGateShape(op, numTokens, modelDim, numExperts, topK));
  const int64_t E = numExperts, K = topK;
  float *bias = nullptr;
  InlineBias inlineBias;
  if (!logitBias.empty()) {
    if (static_cast<int64_t>(logitBias.size()) != E)
      return errorf(op, ": the logit bias has ", logitBias.size(),
                    " values for ", E, " experts");
    for (size_t e = 0; e < logitBias.size(); ++e)
      if (!std::isfinite(logitBias[e]))
        return errorf(op, ": the logit bias of expert ", e, " is not finite (",
                      logitBias[e], ")");
    if (E <= kInlineBias) {
      inlineBias.count = static_cast<int>(E);
      std::copy(logitBias.begin(), logitBias.end(), inlineBias.values);
    } else {
      StatusOr<float *> biasOr = scratchOf<float>(scratch, op, E);
      if (!biasOr)
        return biasOr.status();
      bias = *biasOr;
      // The bias is host memory of the call: staged now, in stream order.
      FLEXMOE_RETURN_IF_ERROR(opStatus(
          op, cudaMemcpyAsync(bias, logitBias.data(), E * sizeof(float),
                              cudaMemcpyHostToDevice, stream)));
    }
  }
  GroupedGemm gemm;
  gemm.M = numTokens;
  gemm.N = E;
  gemm.K = modelDim;
  gemm.A = x;
  gemm.lda = modelDim;
  gemm.B = gateWeight;
  gemm.ldb = E;
  gemm.C = probs;
  gemm.ldc = E;
  FLEXMOE_RETURN_IF_ERROR(
      opStatus(op, detail::launchGroupedGemm(gemm, 0, stream)));
  int32_t *atomicCounts = nullptr;
  if (counts && !deterministic) {
    FLEXMOE_RETURN_IF_ERROR(
        opStatus(op, cudaMemsetAsync(counts, 0, E * sizeof(int32_t), stream)));
    atomicCounts = counts;
  }
  if (numTokens > 0) {
    gateRowsKernel<<<blocksFor(numTokens, 128), 128, 0, stream>>>(
        probs, bias, inlineBias, numTokens, static_cast<int>(E),
        static_cast<int>(K), expertIds, combineWeights, atomicCounts);
    FLEXMOE_RETURN_IF_ERROR(opStatus(op, cudaGetLastError()));
  }
  if (counts && deterministic) {
    expertSumsKernel<<<E, kBlock, 0, stream>>>(expertIds, numTokens * K,
                                               nullptr, 0, static_cast<int>(E),
                                               counts, nullptr, nullptr);
    FLEXMOE_RETURN_IF_ERROR(opStatus(op, cudaGetLastError()));
  }
  return Status::ok();
}

Status moeGateGrad(const float *x, const float *gateWeight, const float *probs,
                   const int32_t *expertIds, const float *dCombineWeights,
                   const float *dProbs, int64_t numTokens, int64_t modelDim,
                   int64_t numExperts, int64_t topK, float *dx,
                   float *dGateWeight, cudaStream_t stream,
                   const MoeScratch &scratch) {
  const char *op = "moe.gate_grad";
  FLEXMOE_RETURN_IF_ERROR(
      checkGateShape(op, numTokens, modelDim, numExperts, topK));
  const int64_t E = numExperts, K = topK, D = modelDim;
  StatusOr<float *> dLogitsOr = scratchOf<float>(scratch, op, numTokens * E);
  if (!dLogitsOr)
    return dLogitsOr.status();
  float *dLogits = *dLogitsOr;
  if (numTokens > 0) {
    gateGradRowsKernel<<<blocksFor(numTokens, 128), 128, 0, stream>>>(
        probs, expertIds, dCombineWeights, dProbs, numTokens,
        static_cast<int>(E), static_cast<int>(K), dLogits);
    FLEXMOE_RETURN_IF_ERROR(opStatus(op, cudaGetLastError()));
  }
  // dx = dLogits · gateWeightᵀ.
  GroupedGemm dxGemm;
  dxGemm.M = numTokens;
  dxGemm.N = D;
  dxGemm.K = E;
  dxGemm.A = dLogits;
  dxGemm.lda = E;
  dxGemm.B = gateWeight;
  dxGemm.ldb = E;
  dxGemm.transB = true;
  dxGemm.C = dx;
  dxGemm.ldc = D;
  FLEXMOE_RETURN_IF_ERROR(
      opStatus(op, detail::launchGroupedGemm(dxGemm, 0, stream)));
  // dGateWeight = xᵀ · dLogits (zero when there are no tokens: K = 0).
  GroupedGemm dwGemm;
  dwGemm.M = D;
  dwGemm.N = E;
  dwGemm.K = numTokens;
  dwGemm.A = x;
  dwGemm.lda = D;
  dwGemm.transA = true;
  dwGemm.B = dLogits;
  dwGemm.ldb = E;
  dwGemm.C = dGateWeight;
  dwGemm.ldc = E;
  return opStatus(op, detail::launchGroupedGemm(dwGemm, 0, stream));
}

Status moeAuxLoss(const float *probs, const int32_t *expertIds,
                  int64_t numTokens, int64_t numExperts, int64_t topK,
                  double coef, float *loss, cudaStream_t stream,
                  const MoeScratch &scratch) {
  const char *op = "moe.aux_loss";
  FLEXMOE_RETURN_IF_ERROR(checkAuxShape(op, numTokens, numExperts, topK));
  const int64_t E = numExperts;
  StatusOr<double *> sumsOr = scratchOf<double>(scratch, op, 2 * E);
  if (!sumsOr)
    return sumsOr.status();
  double *copies = *sumsOr, *probSums = *sumsOr + E;
  expertSumsKernel<<<E, kBlock, 0, stream>>>(expertIds, numTokens * topK, probs,
                                             numTokens, static_cast<int>(E),
                                             nullptr, copies, probSums);
  FLEXMOE_RETURN_IF_ERROR(opStatus(op, cudaGetLastError()));
  auxLossFinalKernel<<<1, 1, 0, stream>>>(copies, probSums, numTokens,
                                          static_cast<int>(E),
                                          static_cast<int>(topK), coef, loss);
  return opStatus(op, cudaGetLastError());
}

Status moeAuxLossGrad(const float * /*probs*/, const int32_t *expertIds,
                      const float *dLoss, int64_t numTokens, int64_t numExperts,
                      int64_t topK, double coef, float *dProbs,
                      cudaStream_t stream, const MoeScratch &scratch) {
  const char *op = "moe.aux_loss_grad";
  FLEXMOE_RETURN_IF_ERROR(checkAuxShape(op, numTokens, numExperts, topK));
  const int64_t E = numExperts;
  StatusOr<double *> copiesOr = scratchOf<double>(scratch, op, E);
  if (!copiesOr)
    return copiesOr.status();
  expertSumsKernel<<<E, kBlock, 0, stream>>>(expertIds, numTokens * topK,
                                             nullptr, 0, static_cast<int>(E),
                                             nullptr, *copiesOr, nullptr);
  FLEXMOE_RETURN_IF_ERROR(opStatus(op, cudaGetLastError()));
  auxLossGradKernel<<<blocksFor(numTokens * E), kBlock, 0, stream>>>(
      *copiesOr, dLoss, numTokens, static_cast<int>(E), static_cast<int>(topK),
      coef, dProbs);
  return opStatus(op, cudaGetLastError());
}

} // namespace flexmoe::cuda
