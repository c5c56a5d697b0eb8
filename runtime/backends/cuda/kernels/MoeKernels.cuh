//===- MoeKernels.cuh - CUDA kernels of the moe ops --------------*- C++
//-*-===//
//
// Host-callable launchers of the moe kernels on the GPU, mirroring the CPU
// templates of runtime/backends/cpu/kernels/MoeKernels.h for float: same
// arguments, same shapes, same results (up to float rounding), every buffer
// in device memory. Each launcher only enqueues work on `stream`: it never
// synchronises the host and never reads device data (ids, positions,
// counts) back, so the checks the CPU kernels make on such data cannot
// become errors here; the kernels instead skip (or clamp) any out-of-range
// id, position or count so that they never touch memory outside their
// buffers. Shape arguments are checked on the host as the CPU does, and a
// violation is a Status naming the op, returned before anything is enqueued.
//
// Temporary device memory comes from `scratch` (the LaunchContext's): valid
// for the work enqueued on `stream` by this launch.
//
// See docs/cuda-backend-moe.md for the algorithms and their determinism.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_BACKENDS_CUDA_KERNELS_MOEKERNELS_CUH
#define FLEXMOE_RUNTIME_BACKENDS_CUDA_KERNELS_MOEKERNELS_CUH

#include "runtime/device/Device.h"
#include "runtime/support/Status.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <span>

namespace flexmoe::cuda {

/// Stream-ordered scratch memory (LaunchContext::scratch).
using MoeScratch = std::function<StatusOr<void *>(size_t bytes)>;

/// The `activation` attribute of moe.experts / moe.experts_grad.
enum class MoeAct : int { None = 0, Gelu = 1, Relu = 2 };

/// moe.gate. logitBias is host memory (E finite values, or empty): it is
/// copied to scratch in stream order. counts may be null. With
/// `deterministic` the per-expert counts come from a block reduction, else
/// from integer atomics (both give the same integers).
Status moeGate(const float *x, const float *gateWeight, int64_t numTokens,
               int64_t modelDim, int64_t numExperts, int64_t topK, float *probs,
               int32_t *expertIds, float *combineWeights, int32_t *counts,
               std::span<const float> logitBias, bool deterministic,
               cudaStream_t stream, const MoeScratch &scratch);

/// moe.gate_grad. Needs a [T,E] float scratch buffer.
Status moeGateGrad(const float *x, const float *gateWeight, const float *probs,
                   const int32_t *expertIds, const float *dCombineWeights,
                   const float *dProbs, int64_t numTokens, int64_t modelDim,
                   int64_t numExperts, int64_t topK, float *dx,
                   float *dGateWeight, cudaStream_t stream,
                   const MoeScratch &scratch);

/// moe.aux_loss; *loss is a device scalar. Sums run in double, in a fixed
/// order (deterministic).
Status moeAuxLoss(const float *probs, const int32_t *expertIds,
                  int64_t numTokens, int64_t numExperts, int64_t topK,
                  double coef, float *loss, cudaStream_t stream,
                  const MoeScratch &scratch);

/// moe.aux_loss_grad; dLoss is a device scalar (the op's operand).
Status moeAuxLossGrad(const float *probs, const int32_t *expertIds,
                      const float *dLoss, int64_t numTokens, int64_t numExperts,
                      int64_t topK, double coef, float *dProbs,
                      cudaStream_t stream, const MoeScratch &scratch);

/// moe.dispatch: positions and counts computed on the device (per-expert
/// block scans in (token, choice) order: stable, deterministic).
/// numDropped is a device int64 scalar or null.
Status moeDispatch(const float *x, const int32_t *expertIds, int64_t numTokens,
                   int64_t modelDim, int64_t numExperts, int64_t topK,
                   int64_t capacity, float *routed, int32_t *positions,
                   int32_t *counts, int64_t *numDropped, cudaStream_t stream,
                   const MoeScratch &scratch);

/// moe.dispatch_grad (each token sums its copies in choice order).
Status moeDispatchGrad(const float *dRouted, const int32_t *positions,
                       int64_t numRows, int64_t numTokens, int64_t modelDim,
                       int64_t topK, float *dx, cudaStream_t stream);

/// moe.combine.
Status moeCombine(const float *expertOut, const int32_t *positions,
                  const float *combineWeights, int64_t numRows,
                  int64_t numTokens, int64_t modelDim, int64_t topK, float *y,
                  cudaStream_t stream);

/// moe.combine_grad. Kept positions must be distinct (moe.dispatch makes
/// them so); unlike the CPU kernel this is not checked.
Status moeCombineGrad(const float *expertOut, const int32_t *positions,
                      const float *combineWeights, const float *dy,
                      int64_t numRows, int64_t numTokens, int64_t modelDim,
                      int64_t topK, float *dExpertOut, float *dCombineWeights,
                      cudaStream_t stream);

/// moe.experts: a grouped GEMM whose blocks read the group counts on the
/// device (no host loop over groups), bias and activation in the epilogue.
/// activation is Gelu or Relu. With BF16 precision every GEMM rounds its
/// operands to bfloat16 and runs on tensor cores (fp32 accumulation).
Status moeExperts(const float *routed, const int32_t *counts, const float *w1,
                  const float *b1, const float *w2, const float *b2,
                  int64_t numRows, int64_t modelDim, int64_t hiddenDim,
                  int64_t numGroups, int64_t capacity, MoeAct activation,
                  float *out, cudaStream_t stream, const MoeScratch &scratch,
                  device::MathPrecision precision = device::MathPrecision::F32);

/// moe.experts_grad: recomputes the first GEMM, as the CPU kernel does.
Status moeExpertsGrad(
    const float *routed, const int32_t *counts, const float *w1,
    const float *b1, const float *w2, const float *b2, const float *dy,
    int64_t numRows, int64_t modelDim, int64_t hiddenDim, int64_t numGroups,
    int64_t capacity, MoeAct activation, float *dRouted, float *dw1, float *db1,
    float *dw2, float *db2, cudaStream_t stream, const MoeScratch &scratch,
    device::MathPrecision precision = device::MathPrecision::F32);

namespace detail {

/// One grouped GEMM: for every group g,
///   C_g[M_g × N] = alpha · op(A_g) · op(B_g) (+ bias_g per column),
/// then the epilogue. op(A) is A (row-major, lda) or Aᵀ when transA; the
/// same for B. X_g = X + g·xGroupStride + xRowStart[g]·xRowScale (a null
/// xRowStart means 0). At most one dimension varies with the group:
///   VarM: M_g = counts[g] (tile schedule from tileStart, see below),
///   VarK: K_g = counts[g] (an empty group gives C_g = 0 + bias),
/// the others are the fixed M, N, K.
struct GroupedGemm {
  enum class Var { None, M, K };
  Var var = Var::None;
  int64_t numGroups = 1;
  int64_t M = 0, N = 0, K = 0; ///< M or K is the bound when it varies
  const int32_t *counts = nullptr;
  /// VarM: numGroups + 1 exclusive prefix sums of ceil(M_g / kTileM).
  const int32_t *tileStart = nullptr;
  float alpha = 1.0f;

  const float *A = nullptr;
  int64_t lda = 0, aGroupStride = 0, aRowScale = 0;
  const int32_t *aRowStart = nullptr;
  bool transA = false;
  const float *B = nullptr;
  int64_t ldb = 0, bGroupStride = 0, bRowScale = 0;
  const int32_t *bRowStart = nullptr;
  bool transB = false;
  float *C = nullptr;
  int64_t ldc = 0, cGroupStride = 0, cRowScale = 0;
  const int32_t *cRowStart = nullptr;

  /// Epilogue: v = alpha·acc + bias[g·biasGroupStride + n];
  ///   C2 null: C = act(v); else C = v and C2 = act(v) (same layout as C);
  ///   derivOf non-null: C = v · act'(derivOf) (same layout as C).
  const float *bias = nullptr;
  int64_t biasGroupStride = 0;
  MoeAct act = MoeAct::None;
  float *C2 = nullptr;
  const float *derivOf = nullptr;

  /// BF16: operands rounded to bfloat16 (nearest even) as they are staged
  /// in shared memory, WMMA tensor-core products, fp32 accumulation and
  /// epilogue. F32: the SIMT fp32 kernel.
  device::MathPrecision precision = device::MathPrecision::F32;
};

/// Tile height of the grouped GEMM (the unit of tileStart), the same for
/// both kernels so that one tile schedule serves either precision.
inline constexpr int kTileM = 64;
/// Tile widths: the fp32 SIMT kernel's and the bf16 WMMA kernel's.
inline constexpr int kF32TileN = 64;
inline constexpr int kBf16TileN = 128;

/// The launch grid of a grouped GEMM: x = M tiles (VarM: the flat tile
/// list's bound), y = N tiles, z = groups (1 for VarM). Empty when there is
/// nothing to compute; `fits` is false when a dimension exceeds CUDA's grid
/// limits (2^31 − 1 in x, 65535 in y and z). Host-side, unit-tested.
struct GroupedGemmGrid {
  int64_t x = 0, y = 0, z = 0;
  bool fits = true;
  bool empty() const { return x <= 0 || y <= 0 || z <= 0; }
};
inline GroupedGemmGrid groupedGemmGrid(const GroupedGemm &gemm,
                                       int64_t maxTiles) {
  GroupedGemmGrid grid;
  if (gemm.N <= 0 || gemm.numGroups <= 0)
    return grid;
  const bool varM = gemm.var == GroupedGemm::Var::M;
  const int64_t tileN =
      gemm.precision == device::MathPrecision::BF16 ? kBf16TileN : kF32TileN;
  grid.x = varM ? maxTiles : (gemm.M + kTileM - 1) / kTileM;
  if (grid.x <= 0) {
    grid.x = 0;
    return grid;
  }
  grid.y = (gemm.N + tileN - 1) / tileN;
  grid.z = varM ? 1 : gemm.numGroups;
  grid.fits = grid.x <= 0x7fffffffLL && grid.y <= 65535 && grid.z <= 65535;
  return grid;
}

/// Enqueues a grouped GEMM. For VarM, maxTiles is an upper bound of
/// tileStart[numGroups] (the grid's size: blocks past the real count exit).
cudaError_t launchGroupedGemm(const GroupedGemm &gemm, int64_t maxTiles,
                              cudaStream_t stream);

/// "<op>: <cudaGetErrorString>" for an error, ok for cudaSuccess.
inline Status opStatus(const char *op, cudaError_t error) {
  if (error == cudaSuccess)
    return Status::ok();
  return errorf(op, ": ", cudaGetErrorString(error));
}

/// Scratch memory for `count` values of T, or the op's error.
template <typename T>
StatusOr<T *> scratchOf(const MoeScratch &scratch, const char *op,
                        int64_t count) {
  const size_t bytes = static_cast<size_t>(count < 1 ? 1 : count) * sizeof(T);
  StatusOr<void *> memory = scratch(bytes);
  if (!memory)
    return Status(memory.status()).withContext(op);
  return static_cast<T *>(*memory);
}

} // namespace detail

} // namespace flexmoe::cuda

#endif // FLEXMOE_RUNTIME_BACKENDS_CUDA_KERNELS_MOEKERNELS_CUH
