//===- MoeExperts.cu - moe.experts and moe.experts_grad -------------------===//
//
// The expert FFN over groups whose row counts live on the device. A
// one-thread layout kernel turns the counts into each group's row start
// (packed or capacity layout), its start in the packed hidden buffers and
// its first GEMM tile; every GEMM is then one grouped-GEMM launch whose grid
// covers the worst case (numRows/64 + G tiles) and whose blocks find their
// group on the device and exit when past the real tile count. No host loop
// over groups, no read-back of counts.
//
//===----------------------------------------------------------------------===//
#include "runtime/backends/cpu/kernels/MoeCommon.h"
#include "runtime/backends/cuda/kernels/MoeKernels.cuh"

namespace flexmoe::cuda {

using cpu::detail::checkNonNegative;
using detail::GroupedGemm;
using detail::kTileM;
using detail::opStatus;
using detail::scratchOf;

namespace {

/// Device-side group layout (all arrays in one scratch allocation).
struct Layout {
  int32_t *counts;      ///< [G] clamped to what fits
  int32_t *start;       ///< [G] first row in routed-like buffers
  int32_t *hiddenStart; ///< [G + 1] first row in the packed buffers; [G] total
  int32_t *tileStart;   ///< [G + 1] first GEMM tile of each group
};

/// Single thread: counts are clamped to [0, capacity] (or to the rows left,
/// packed) so that no kernel leaves its buffers, whatever the counts hold.
__global__ void layoutKernel(const int32_t *counts, int64_t numGroups,
                             int64_t numRows, int64_t capacity, Layout l) {
  int64_t total = 0, tiles = 0;
  for (int64_t g = 0; g < numGroups; ++g) {
    int64_t n = counts[g];
    const int64_t bound = capacity != 0 ? capacity : numRows - total;
    n = n < 0 ? 0 : (n > bound ? bound : n);
    l.counts[g] = static_cast<int32_t>(n);
    l.start[g] = static_cast<int32_t>(capacity != 0 ? g * capacity : total);
    l.hiddenStart[g] = static_cast<int32_t>(total);
    l.tileStart[g] = static_cast<int32_t>(tiles);
    total += n;
    tiles += (n + kTileM - 1) / kTileM;
  }
  l.hiddenStart[numGroups] = static_cast<int32_t>(total);
  l.tileStart[numGroups] = static_cast<int32_t>(tiles);
}

/// Zeroes the rows of rows[numRows, width] that belong to no group.
__global__ void zeroOutsideKernel(Layout l, int64_t numGroups, int64_t capacity,
                                  int64_t width, float *rows) {
  const int64_t r = blockIdx.x;
  bool inGroup;
  if (capacity != 0) {
    const int64_t g = r / capacity;
    inGroup = g < numGroups && r % capacity < l.counts[g];
  } else {
    inGroup = r < l.hiddenStart[numGroups];
  }
  if (inGroup)
    return;
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x)
    rows[r * width + c] = 0.0f;
}

/// out[g][c] = Σ_r data[row r of group g][c] in row order (0 for an empty
/// group): deterministic.
__global__ void groupColumnSumsKernel(Layout l, const float *data, bool packed,
                                      int64_t width, float *out) {
  const int64_t g = blockIdx.y;
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= width)
    return;
  const int64_t start = packed ? l.hiddenStart[g] : l.start[g];
  const float *rows = data + start * width + c;
  float sum = 0.0f;
  for (int64_t r = 0; r < l.counts[g]; ++r)
    sum += rows[r * width];
  out[g * width + c] = sum;
}

struct Prepared {
  Layout layout;
  int64_t maxTiles;
};

StatusOr<Prepared> prepare(const char *op, const int32_t *counts,
                           int64_t numRows, int64_t modelDim, int64_t hiddenDim,
                           int64_t numGroups, int64_t capacity,
                           MoeAct activation, cudaStream_t stream,
                           const MoeScratch &scratch) {
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "row count", numRows));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "model dim", modelDim));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "hidden dim", hiddenDim));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "group count", numGroups));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "capacity", capacity));
  if (activation != MoeAct::Gelu && activation != MoeAct::Relu)
    return errorf(op, ": the activation must be gelu or relu");
  if (capacity != 0 && numGroups > numRows / capacity)
    return errorf(op, ": ", numGroups, " groups of capacity ", capacity,
                  " need ", numGroups, " × ", capacity, " rows, but there are ",
                  numRows);
  if (numRows > cpu::detail::kMaxRows || numGroups > 65535)
    return errorf(op, ": ", numRows, " rows in ", numGroups,
                  " groups exceed the CUDA kernels' limits (2^31 - 1 rows, "
                  "65535 groups)");
  StatusOr<int32_t *> memory =
      scratchOf<int32_t>(scratch, op, 4 * numGroups + 2);
  if (!memory)
    return memory.status();
  Prepared prepared;
  int32_t *base = *memory;
  prepared.layout = {base, base + numGroups, base + 2 * numGroups,
                     base + 3 * numGroups + 1};
  prepared.maxTiles = capacity != 0
                          ? numGroups * ((capacity + kTileM - 1) / kTileM)
                          : (numRows + kTileM - 1) / kTileM + numGroups;
  if (numGroups > 0)
    layoutKernel<<<1, 1, 0, stream>>>(counts, numGroups, numRows, capacity,
                                      prepared.layout);
  FLEXMOE_RETURN_IF_ERROR(opStatus(op, cudaGetLastError()));
  return prepared;
}

/// C_g = A_g·op(B_g) over the group's rows (M varies).
GroupedGemm rowsGemm(const Prepared &p, int64_t numGroups, int64_t numRows,
                     int64_t N, int64_t K, device::MathPrecision precision) {
  GroupedGemm gemm;
  gemm.precision = precision;
  gemm.var = GroupedGemm::Var::M;
  gemm.numGroups = numGroups;
  gemm.M = numRows;
  gemm.N = N;
  gemm.K = K;
  gemm.counts = p.layout.counts;
  gemm.tileStart = p.layout.tileStart;
  return gemm;
}

/// The first layer: preact (or hidden) = routed·w1 + b1, act fused.
Status firstLayer(const char *op, const Prepared &p, const float *routed,
                  const float *w1, const float *b1, int64_t numRows, int64_t D,
                  int64_t H, int64_t G, MoeAct activation, float *out,
                  float *activated, cudaStream_t stream,
                  device::MathPrecision precision) {
  GroupedGemm gemm = rowsGemm(p, G, numRows, H, D, precision);
  gemm.A = routed;
  gemm.lda = D;
  gemm.aRowStart = p.layout.start;
  gemm.aRowScale = D;
  gemm.B = w1;
  gemm.ldb = H;
  gemm.bGroupStride = D * H;
  gemm.C = out;
  gemm.ldc = H;
  gemm.cRowStart = p.layout.hiddenStart;
  gemm.cRowScale = H;
  gemm.bias = b1;
  gemm.biasGroupStride = H;
  gemm.act = activation;
  gemm.C2 = activated;
  return opStatus(op, detail::launchGroupedGemm(gemm, p.maxTiles, stream));
}

} // namespace

Status moeExperts(const float *routed, const int32_t *counts, const float *w1,
                  const float *b1, const float *w2, const float *b2,
                  int64_t numRows, int64_t modelDim, int64_t hiddenDim,
                  int64_t numGroups, int64_t capacity, MoeAct activation,
                  float *out, cudaStream_t stream, const MoeScratch &scratch,
                  device::MathPrecision precision) {
  const char *op = "moe.experts";
  StatusOr<Prepared> preparedOr =
      prepare(op, counts, numRows, modelDim, hiddenDim, numGroups, capacity,
              activation, stream, scratch);
  if (!preparedOr)
    return preparedOr.status();
  const Prepared &p = *preparedOr;
  const int64_t D = modelDim, H = hiddenDim, G = numGroups;
  if (numRows == 0 || D == 0)
    return Status::ok();
  if (G == 0) {
    return opStatus(
        op, cudaMemsetAsync(out, 0, numRows * D * sizeof(float), stream));
  }
  // The packed hidden rows are at most numRows (Σ counts ≤ numRows).
  StatusOr<float *> hiddenOr = scratchOf<float>(scratch, op, numRows * H);
  if (!hiddenOr)
    return hiddenOr.status();
  float *hidden = *hiddenOr;
  FLEXMOE_RETURN_IF_ERROR(firstLayer(op, p, routed, w1, b1, numRows, D, H, G,
                                     activation, hidden, nullptr, stream,
                                     precision));
  zeroOutsideKernel<<<numRows, 128, 0, stream>>>(p.layout, G, capacity, D, out);
  FLEXMOE_RETURN_IF_ERROR(opStatus(op, cudaGetLastError()));
  GroupedGemm second = rowsGemm(p, G, numRows, D, H, precision);
  second.A = hidden;
  second.lda = H;
  second.aRowStart = p.layout.hiddenStart;
  second.aRowScale = H;
  second.B = w2;
  second.ldb = D;
  second.bGroupStride = H * D;
  second.C = out;
  second.ldc = D;
  second.cRowStart = p.layout.start;
  second.cRowScale = D;
  second.bias = b2;
  second.biasGroupStride = D;
  return opStatus(op, detail::launchGroupedGemm(second, p.maxTiles, stream));
}

Status moeExpertsGrad(const float *routed, const int32_t *counts,
                      const float *w1, const float *b1, const float *w2,
                      const float * /*b2*/, const float *dy, int64_t numRows,
                      int64_t modelDim, int64_t hiddenDim, int64_t numGroups,
                      int64_t capacity, MoeAct activation, float *dRouted,
                      float *dw1, float *db1, float *dw2, float *db2,
                      cudaStream_t stream, const MoeScratch &scratch,
                      device::MathPrecision precision) {
  const char *op = "moe.experts_grad";
  StatusOr<Prepared> preparedOr =
      prepare(op, counts, numRows, modelDim, hiddenDim, numGroups, capacity,
              activation, stream, scratch);
  if (!preparedOr)
    return preparedOr.status();
  const Prepared &p = *preparedOr;
  const int64_t D = modelDim, H = hiddenDim, G = numGroups;
  if (numRows > 0 && D > 0) {
    if (G == 0) {
      FLEXMOE_RETURN_IF_ERROR(
          opStatus(op, cudaMemsetAsync(dRouted, 0, numRows * D * sizeof(float),
                                       stream)));
    } else {
      zeroOutsideKernel<<<numRows, 128, 0, stream>>>(p.layout, G, capacity, D,
                                                     dRouted);
      FLEXMOE_RETURN_IF_ERROR(opStatus(op, cudaGetLastError()));
    }
  }
  if (G == 0)
    return Status::ok();

  StatusOr<float *> buffersOr = scratchOf<float>(scratch, op, 3 * numRows * H);
  if (!buffersOr)
    return buffersOr.status();
  float *preact = *buffersOr, *hidden = preact + numRows * H,
        *dAct = hidden + numRows * H;
  // Recompute: preact = x·w1 + b1 (kept for act'), hidden = act(preact).
  FLEXMOE_RETURN_IF_ERROR(firstLayer(op, p, routed, w1, b1, numRows, D, H, G,
                                     activation, preact, hidden, stream,
                                     precision));

  // db2 = Σ rows of dy; dw2 = hᵀ·dy (K = the group's rows: zero if empty).
  if (D > 0) {
    groupColumnSumsKernel<<<dim3((D + 127) / 128, G), 128, 0, stream>>>(
        p.layout, dy, /*packed=*/false, D, db2);
    FLEXMOE_RETURN_IF_ERROR(opStatus(op, cudaGetLastError()));
  }
  GroupedGemm dw2Gemm;
  dw2Gemm.precision = precision;
  dw2Gemm.var = GroupedGemm::Var::K;
  dw2Gemm.numGroups = G;
  dw2Gemm.M = H;
  dw2Gemm.N = D;
  dw2Gemm.K = numRows;
  dw2Gemm.counts = p.layout.counts;
  dw2Gemm.A = hidden;
  dw2Gemm.lda = H;
  dw2Gemm.transA = true;
  dw2Gemm.aRowStart = p.layout.hiddenStart;
  dw2Gemm.aRowScale = H;
  dw2Gemm.B = dy;
  dw2Gemm.ldb = D;
  dw2Gemm.bRowStart = p.layout.start;
  dw2Gemm.bRowScale = D;
  dw2Gemm.C = dw2;
  dw2Gemm.ldc = D;
  dw2Gemm.cGroupStride = H * D;
  FLEXMOE_RETURN_IF_ERROR(
      opStatus(op, detail::launchGroupedGemm(dw2Gemm, 0, stream)));

  // dAct = (dy·w2ᵀ) ⊙ act'(preact), the derivative fused in the epilogue.
  GroupedGemm dhGemm = rowsGemm(p, G, numRows, H, D, precision);
  dhGemm.A = dy;
  dhGemm.lda = D;
  dhGemm.aRowStart = p.layout.start;
  dhGemm.aRowScale = D;
  dhGemm.B = w2;
  dhGemm.ldb = D;
  dhGemm.transB = true;
  dhGemm.bGroupStride = H * D;
  dhGemm.C = dAct;
  dhGemm.ldc = H;
  dhGemm.cRowStart = p.layout.hiddenStart;
  dhGemm.cRowScale = H;
  dhGemm.act = activation;
  dhGemm.derivOf = preact;
  FLEXMOE_RETURN_IF_ERROR(
      opStatus(op, detail::launchGroupedGemm(dhGemm, p.maxTiles, stream)));

  // db1 = Σ rows of dAct; dw1 = xᵀ·dAct; dx = dAct·w1ᵀ.
  if (H > 0) {
    groupColumnSumsKernel<<<dim3((H + 127) / 128, G), 128, 0, stream>>>(
        p.layout, dAct, /*packed=*/true, H, db1);
    FLEXMOE_RETURN_IF_ERROR(opStatus(op, cudaGetLastError()));
  }
  GroupedGemm dw1Gemm;
  dw1Gemm.precision = precision;
  dw1Gemm.var = GroupedGemm::Var::K;
  dw1Gemm.numGroups = G;
  dw1Gemm.M = D;
  dw1Gemm.N = H;
  dw1Gemm.K = numRows;
  dw1Gemm.counts = p.layout.counts;
  dw1Gemm.A = routed;
  dw1Gemm.lda = D;
  dw1Gemm.transA = true;
  dw1Gemm.aRowStart = p.layout.start;
  dw1Gemm.aRowScale = D;
  dw1Gemm.B = dAct;
  dw1Gemm.ldb = H;
  dw1Gemm.bRowStart = p.layout.hiddenStart;
  dw1Gemm.bRowScale = H;
  dw1Gemm.C = dw1;
  dw1Gemm.ldc = H;
  dw1Gemm.cGroupStride = D * H;
  FLEXMOE_RETURN_IF_ERROR(
      opStatus(op, detail::launchGroupedGemm(dw1Gemm, 0, stream)));

  GroupedGemm dxGemm = rowsGemm(p, G, numRows, D, H, precision);
  dxGemm.A = dAct;
  dxGemm.lda = H;
  dxGemm.aRowStart = p.layout.hiddenStart;
  dxGemm.aRowScale = H;
  dxGemm.B = w1;
  dxGemm.ldb = H;
  dxGemm.transB = true;
  dxGemm.bGroupStride = D * H;
  dxGemm.C = dRouted;
  dxGemm.ldc = D;
  dxGemm.cRowStart = p.layout.start;
  dxGemm.cRowScale = D;
  return opStatus(op, detail::launchGroupedGemm(dxGemm, p.maxTiles, stream));
}

} // namespace flexmoe::cuda
