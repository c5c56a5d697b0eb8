//===- MoeExperts.cpp - moe.experts and moe.experts_grad ------------------===//
//
// A grouped FFN: one pair of GEMMs per group (expert or slot) on that group's
// rows. Large groups run one after another, so that OpenBLAS spreads each GEMM
// over every core, with the bias and activation passes OpenMP-parallel over
// rows. Many small groups (one process holding all experts of a small model)
// would leave OpenBLAS's threads idle, so they run in parallel across groups
// instead. Either way each group's arithmetic is the same, so the results do
// not depend on the schedule.
//
//===----------------------------------------------------------------------===//
#include "runtime/backends/cpu/kernels/Blas.h"
#include "runtime/backends/cpu/kernels/FastMath.h"
#include "runtime/backends/cpu/kernels/MoeCommon.h"
#include "runtime/backends/cpu/kernels/MoeKernels.h"

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

/// Below this many rows per group on average, threads take whole groups.
constexpr int64_t kMinRowsPerGroupForBlasThreads = 128;

bool groupsInParallel(const GroupLayout &layout) {
  const int64_t G = static_cast<int64_t>(layout.start.size());
  return G > 1 && layout.totalRows < kMinRowsPerGroupForBlasThreads * G;
}

/// body(g) for every group: threads take whole groups when byGroup, else the
/// groups go one after another outside any parallel region, so that each
/// GEMM can spread over the threads itself (gemm runs single-threaded inside
/// a parallel region, even an inactive one).
template <typename F>
void forEachGroup(int64_t numGroups, bool byGroup, F body) {
  if (byGroup) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t g = 0; g < numGroups; ++g)
      body(g);
  } else {
    for (int64_t g = 0; g < numGroups; ++g)
      body(g);
  }
}

/// preact[rows of g] = routed[rows of g]·w1[g] + b1[g], packed by group.
template <typename T>
void firstLayer(const GroupLayout &layout, const int32_t *counts,
                const T *routed, const T *w1, const T *b1, int64_t D, int64_t H,
                T *preact, bool byGroup) {
  const int64_t G = static_cast<int64_t>(layout.start.size());
  forEachGroup(G, byGroup, [&](int64_t g) {
    const int64_t n = counts[g];
    if (n == 0)
      return;
    T *a = preact + layout.hiddenStart[g] * H;
    const T *bias = b1 + g * H;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; ++r)
      std::copy(bias, bias + H, a + r * H);
    gemm<T>(false, false, n, H, D, T(1), routed + layout.start[g] * D, D,
            w1 + g * D * H, H, T(1), a, H);
  });
}

} // namespace

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

  std::vector<T> hidden(static_cast<size_t>(layout.totalRows * H));
  const bool byGroup = groupsInParallel(layout);
  firstLayer(layout, counts, routed, w1, b1, D, H, hidden.data(), byGroup);
  applyActivation(activation, hidden.data(), layout.totalRows * H,
                  hidden.data());

  const std::vector<char> inGroup = rowsInGroups(layout, counts, numRows);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < numRows; ++r)
    if (!inGroup[r])
      std::fill(out + r * D, out + (r + 1) * D, T(0));

  forEachGroup(G, byGroup, [&](int64_t g) {
    const int64_t n = counts[g];
    if (n == 0)
      return;
    T *y = out + layout.start[g] * D;
    const T *bias = b2 + g * D;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; ++r)
      std::copy(bias, bias + D, y + r * D);
    gemm<T>(false, false, n, D, H, T(1),
            hidden.data() + layout.hiddenStart[g] * H, H, w2 + g * H * D, D,
            T(1), y, D);
  });
  return Status::ok();
}

/// out[c] = Σ_r rows[r][c] over n rows, in row order (deterministic). Threads
/// take blocks of columns and walk the rows, so the reads stay contiguous.
template <typename T>
static void columnSums(const T *rows, int64_t n, int64_t width, T *out) {
  constexpr int64_t kBlock = 64;
  const int64_t numBlocks = (width + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n * width >= (1 << 15))
  for (int64_t blk = 0; blk < numBlocks; ++blk) {
    const int64_t c0 = blk * kBlock, c1 = std::min(width, c0 + kBlock);
    std::fill(out + c0, out + c1, T(0));
    for (int64_t r = 0; r < n; ++r) {
      const T *row = rows + r * width;
      for (int64_t c = c0; c < c1; ++c)
        out[c] += row[c];
    }
  }
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
  std::vector<T> preact(static_cast<size_t>(total * H));
  std::vector<T> hidden(static_cast<size_t>(total * H));
  const bool byGroup = groupsInParallel(layout);
  firstLayer(layout, counts, routed, w1, b1, D, H, preact.data(), byGroup);
  applyActivation(activation, preact.data(), total * H, hidden.data());

  const std::vector<char> inGroup = rowsInGroups(layout, counts, numRows);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < numRows; ++r)
    if (!inGroup[r])
      std::fill(dRouted + r * D, dRouted + (r + 1) * D, T(0));

  forEachGroup(G, byGroup, [&](int64_t g) {
    const int64_t n = counts[g];
    T *gw1 = dw1 + g * D * H, *gb1 = db1 + g * H;
    T *gw2 = dw2 + g * H * D, *gb2 = db2 + g * D;
    if (n == 0) {
      std::fill(gw1, gw1 + D * H, T(0));
      std::fill(gb1, gb1 + H, T(0));
      std::fill(gw2, gw2 + H * D, T(0));
      std::fill(gb2, gb2 + D, T(0));
      return;
    }
    const T *x = routed + layout.start[g] * D;
    const T *gy = dy + layout.start[g] * D;
    T *h = hidden.data() + layout.hiddenStart[g] * H;
    const T *a = preact.data() + layout.hiddenStart[g] * H;

    columnSums(gy, n, D, gb2);
    // dw2 = hᵀ·dy.
    gemm<T>(true, false, H, D, n, T(1), h, H, gy, D, T(0), gw2, D);
    // The hidden activations are no longer needed: reuse their storage for
    // dh = dy·w2ᵀ, then da = dh ⊙ act'(preact).
    gemm<T>(false, true, n, H, D, T(1), gy, D, w2 + g * H * D, D, T(0), h, H);
    if (activation == MoeActivation::Relu) {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n * H; ++i)
        h[i] *= activateDerivative(MoeActivation::Relu, a[i]);
    } else {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n * H; ++i)
        h[i] *= activateDerivative(MoeActivation::Gelu, a[i]);
    }
    columnSums(h, n, H, gb1);
    // dw1 = xᵀ·da, dx = da·w1ᵀ.
    gemm<T>(true, false, D, H, n, T(1), x, D, h, H, T(0), gw1, H);
    gemm<T>(false, true, n, D, H, T(1), h, H, w1 + g * D * H, H, T(0),
            dRouted + layout.start[g] * D, D);
  });
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
