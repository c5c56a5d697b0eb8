//===- MoeExperts.cpp - moe.experts and moe.experts_grad ------------------===//
//
// A grouped FFN: one pair of GEMMs per group (expert or slot) on that group's
// rows. Each stage runs every group's GEMMs together in one parallel region
// (gemmBatch: each GEMM cut into blocks that depend on its shape only, all
// blocks of all groups shared out), so many small groups and few large ones
// both keep the threads busy, and the results do not depend on the thread
// count.
//
//===----------------------------------------------------------------------===//
#include "runtime/backends/cpu/kernels/Blas.h"
#include "runtime/backends/cpu/kernels/FastMath.h"
#include "runtime/backends/cpu/kernels/MoeCommon.h"
#include "runtime/backends/cpu/kernels/MoeKernels.h"
#include "runtime/backends/cpu/kernels/Scratch.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace flexmoe::cpu {

using namespace detail;

namespace {

/// Where group g's rows live in `routed` (start) and in the scratch buffers
/// (hiddenStart, always packed).
struct GroupLayout {
  std::vector<int64_t> start;
  std::vector<int64_t> hiddenStart;
  int64_t totalRows = 0;
};

StatusOr<GroupLayout> layoutGroups(const char *op, const int32_t *counts,
                                   int64_t numRows, int64_t modelDim,
                                   int64_t hiddenDim, int64_t numGroups,
                                   int64_t capacity) {
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "row count", numRows));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "model dim", modelDim));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "hidden dim", hiddenDim));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "group count", numGroups));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "capacity", capacity));
  if (capacity != 0 && numGroups > numRows / capacity)
    return errorf(op, ": ", numGroups, " groups of capacity ", capacity,
                  " need ", numGroups, " × ", capacity, " rows, but there are ",
                  numRows);
  GroupLayout layout;
  layout.start.resize(numGroups);
  layout.hiddenStart.resize(numGroups);
  for (int64_t g = 0; g < numGroups; ++g) {
    const int64_t n = counts[g];
    if (n < 0)
      return errorf(op, ": count of group ", g, " is ", n, ", expected ≥ 0");
    if (capacity != 0 && n > capacity)
      return errorf(op, ": count of group ", g, " is ", n,
                    ", more than the capacity ", capacity);
    if (capacity == 0 && n > numRows - layout.totalRows)
      return errorf(op, ": counts sum to more than the ", numRows,
                    " rows (exceeded at group ", g, ")");
    layout.start[g] = capacity == 0 ? layout.totalRows : g * capacity;
    layout.hiddenStart[g] = layout.totalRows;
    layout.totalRows += n;
  }
  return layout;
}

/// Row r of `rows` belongs to a group iff inGroup[r].
std::vector<char> rowsInGroups(const GroupLayout &layout, const int32_t *counts,
                               int64_t numRows) {
  std::vector<char> inGroup(numRows, 0);
  for (size_t g = 0; g < layout.start.size(); ++g)
    std::fill_n(inGroup.begin() + layout.start[g], counts[g], 1);
  return inGroup;
}

constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kGeluCubic = 0.044715;

template <typename T> T activate(MoeActivation act, T a) {
  if (act == MoeActivation::Relu)
    return a > T(0) ? a : T(0);
  const T inner = T(kSqrt2OverPi) * (a + T(kGeluCubic) * a * a * a);
  return T(0.5) * a * (T(1) + tanhApprox(inner));
}

/// d act(a) / da (relu's derivative at 0 is taken as 0).
template <typename T> T activateDerivative(MoeActivation act, T a) {
  if (act == MoeActivation::Relu)
    return a > T(0) ? T(1) : T(0);
  const T inner = T(kSqrt2OverPi) * (a + T(kGeluCubic) * a * a * a);
  const T th = tanhApprox(inner);
  const T dInner = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCubic) * a * a);
  return T(0.5) * (T(1) + th) + T(0.5) * a * (T(1) - th * th) * dInner;
}

/// out[i] = act(in[i]); in and out may be the same. One loop per activation
/// so that each vectorises.
template <typename T>
void applyActivation(MoeActivation act, const T *in, int64_t n, T *out) {
  if (act == MoeActivation::Relu) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      out[i] = activate(MoeActivation::Relu, in[i]);
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      out[i] = activate(MoeActivation::Gelu, in[i]);
  }
}

/// Where group g's rows start: in `routed`-like buffers (start) or in the
/// packed scratch buffers (hiddenStart).
int64_t rowStart(const GroupLayout &layout, int64_t g, bool packed) {
  return packed ? layout.hiddenStart[g] : layout.start[g];
}

/// preact[rows of g] = routed[rows of g]·w1[g] + b1[g], packed by group: all
/// groups' GEMMs in one parallel region.
template <typename T>
void firstLayer(const GroupLayout &layout, const int32_t *counts,
                const T *routed, const T *w1, const T *b1, int64_t D, int64_t H,
                T *preact) {
  std::vector<GemmCall<T>> calls;
  for (size_t g = 0; g < layout.start.size(); ++g)
    if (counts[g] > 0)
      calls.push_back({false, false, counts[g], H, D, T(1),
                       routed + layout.start[g] * D, D, w1 + g * D * H, H, T(0),
                       preact + layout.hiddenStart[g] * H, H, b1 + g * H});
  gemmBatch<T>(calls);
}

/// Zeroes the rows of `rows` ([numRows, width]) that belong to no group.
template <typename T>
void zeroRowsOutsideGroups(const GroupLayout &layout, const int32_t *counts,
                           int64_t numRows, int64_t width, T *rows) {
  const std::vector<char> inGroup = rowsInGroups(layout, counts, numRows);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < numRows; ++r)
    if (!inGroup[r])
      std::fill(rows + r * width, rows + (r + 1) * width, T(0));
}

/// out[g][c] = Σ_r data[row r of group g][c], in row order (deterministic),
/// for every group (0 for an empty one), in one parallel region: tasks are
/// (group, block of columns), and walk the rows so that reads are contiguous.
template <typename T>
void groupColumnSums(const GroupLayout &layout, const int32_t *counts,
                     const T *data, bool packed, int64_t width, T *out) {
  constexpr int64_t kBlock = 64;
  const int64_t G = static_cast<int64_t>(layout.start.size());
  const int64_t blocks = (width + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < G * blocks; ++task) {
    const int64_t g = task / blocks, blk = task % blocks;
    const int64_t c0 = blk * kBlock, c1 = std::min(width, c0 + kBlock);
    T *sum = out + g * width;
    std::fill(sum + c0, sum + c1, T(0));
    const T *rows = data + rowStart(layout, g, packed) * width;
    for (int64_t r = 0; r < counts[g]; ++r) {
      const T *row = rows + r * width;
      for (int64_t c = c0; c < c1; ++c)
        sum[c] += row[c];
    }
  }
}

} // namespace

// Every stage below is one parallel region for all groups together (GEMMs
// through gemmBatch), so a layer costs a handful of fork-joins rather than a
// few per expert: on a loaded machine each fork-join can wait a scheduler
// time slice for a descheduled thread.

template <typename T>
Status moeExperts(const T *routed, const int32_t *counts, const T *w1,
                  const T *b1, const T *w2, const T *b2, int64_t numRows,
                  int64_t modelDim, int64_t hiddenDim, int64_t numGroups,
                  int64_t capacity, MoeActivation activation, T *out) {
  StatusOr<GroupLayout> layoutOr = layoutGroups(
      "moe.experts", counts, numRows, modelDim, hiddenDim, numGroups, capacity);
  if (!layoutOr)
    return layoutOr.status();
  const GroupLayout &layout = *layoutOr;
  const int64_t D = modelDim, H = hiddenDim, G = numGroups;

  T *hidden = scratch<T>(ScratchSlot::ExpertsHidden, layout.totalRows * H);
  firstLayer(layout, counts, routed, w1, b1, D, H, hidden);
  applyActivation(activation, hidden, layout.totalRows * H, hidden);
  zeroRowsOutsideGroups(layout, counts, numRows, D, out);

  std::vector<GemmCall<T>> calls;
  for (int64_t g = 0; g < G; ++g)
    if (counts[g] > 0)
      calls.push_back({false, false, counts[g], D, H, T(1),
                       hidden + layout.hiddenStart[g] * H, H, w2 + g * H * D, D,
                       T(0), out + layout.start[g] * D, D, b2 + g * D});
  gemmBatch<T>(calls);
  return Status::ok();
}

template <typename T>
Status moeExpertsGrad(const T *routed, const int32_t *counts, const T *w1,
                      const T *b1, const T *w2, const T *b2, const T *dy,
                      int64_t numRows, int64_t modelDim, int64_t hiddenDim,
                      int64_t numGroups, int64_t capacity,
                      MoeActivation activation, T *dRouted, T *dw1, T *db1,
                      T *dw2, T *db2) {
  (void)b2; // out's gradient does not depend on b2
  StatusOr<GroupLayout> layoutOr =
      layoutGroups("moe.experts_grad", counts, numRows, modelDim, hiddenDim,
                   numGroups, capacity);
  if (!layoutOr)
    return layoutOr.status();
  const GroupLayout &layout = *layoutOr;
  const int64_t D = modelDim, H = hiddenDim, G = numGroups;
  const int64_t total = layout.totalRows;

  // Recompute: preact = x·w1 + b1 (kept for act'), hidden = act(preact).
  T *preact = scratch<T>(ScratchSlot::ExpertsPreact, total * H);
  T *hidden = scratch<T>(ScratchSlot::ExpertsHidden, total * H);
  T *dAct = scratch<T>(ScratchSlot::ExpertsGradAct, total * H);
  firstLayer(layout, counts, routed, w1, b1, D, H, preact);
  applyActivation(activation, preact, total * H, hidden);
  zeroRowsOutsideGroups(layout, counts, numRows, D, dRouted);
  // Empty groups get zero weight gradients (their bias gradients come out
  // of groupColumnSums as 0).
  for (int64_t g = 0; g < G; ++g)
    if (counts[g] == 0) {
      std::fill(dw1 + g * D * H, dw1 + (g + 1) * D * H, T(0));
      std::fill(dw2 + g * H * D, dw2 + (g + 1) * H * D, T(0));
    }

  groupColumnSums(layout, counts, dy, /*packed=*/false, D, db2);
  // dw2 = hᵀ·dy and dh = dy·w2ᵀ (into dAct), every group at once.
  std::vector<GemmCall<T>> calls;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t n = counts[g];
    if (n == 0)
      continue;
    const T *gy = dy + layout.start[g] * D;
    const int64_t hs = layout.hiddenStart[g] * H;
    calls.push_back({true, false, H, D, n, T(1), hidden + hs, H, gy, D, T(0),
                     dw2 + g * H * D, D});
    calls.push_back({false, true, n, H, D, T(1), gy, D, w2 + g * H * D, D, T(0),
                     dAct + hs, H});
  }
  gemmBatch<T>(calls);
  // da = dh ⊙ act'(preact).
  if (activation == MoeActivation::Relu) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < total * H; ++i)
      dAct[i] *= activateDerivative(MoeActivation::Relu, preact[i]);
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < total * H; ++i)
      dAct[i] *= activateDerivative(MoeActivation::Gelu, preact[i]);
  }
  groupColumnSums(layout, counts, dAct, /*packed=*/true, H, db1);
  // dw1 = xᵀ·da and dx = da·w1ᵀ.
  calls.clear();
  for (int64_t g = 0; g < G; ++g) {
    const int64_t n = counts[g];
    if (n == 0)
      continue;
    const T *x = routed + layout.start[g] * D;
    const T *da = dAct + layout.hiddenStart[g] * H;
    calls.push_back(
        {true, false, D, H, n, T(1), x, D, da, H, T(0), dw1 + g * D * H, H});
    calls.push_back({false, true, n, D, H, T(1), da, H, w1 + g * D * H, H, T(0),
                     dRouted + layout.start[g] * D, D});
  }
  gemmBatch<T>(calls);
  return Status::ok();
}

#define FLEXMOE_INSTANTIATE(T)                                                 \
  template Status moeExperts<T>(                                               \
      const T *, const int32_t *, const T *, const T *, const T *, const T *,  \
      int64_t, int64_t, int64_t, int64_t, int64_t, MoeActivation, T *);        \
  template Status moeExpertsGrad<T>(                                           \
      const T *, const int32_t *, const T *, const T *, const T *, const T *,  \
      const T *, int64_t, int64_t, int64_t, int64_t, int64_t, MoeActivation,   \
      T *, T *, T *, T *, T *);
FLEXMOE_INSTANTIATE(float)
FLEXMOE_INSTANTIATE(double)
#undef FLEXMOE_INSTANTIATE

} // namespace flexmoe::cpu
