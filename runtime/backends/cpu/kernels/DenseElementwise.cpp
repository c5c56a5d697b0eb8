//===- DenseElementwise.cpp - pointwise, broadcast and layout kernels -----===//
//
// gelu, scale, fill, dropout, broadcasting add/mul and their reductions,
// reduce_sum, transpose and roll.
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cpu/kernels/DenseKernels.h"
#include "runtime/backends/cpu/kernels/DenseRandom.h"
#include "runtime/backends/cpu/kernels/FastMath.h"
#include "runtime/backends/cpu/kernels/Parallel.h"
#include "runtime/support/Shape.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numbers>

namespace flexmoe::cpu {

namespace {

/// Strides of an operand of shape `shape` read at the coordinates of the
/// broadcast shape `out` (right-aligned; 0 along broadcast dimensions).
std::vector<int64_t> broadcastStrides(Shape shape, Shape out) {
  std::vector<int64_t> own = stridesOf(shape);
  std::vector<int64_t> strides(out.size(), 0);
  const size_t offset = out.size() - shape.size();
  for (size_t d = 0; d < shape.size(); ++d)
    strides[offset + d] = shape[d] == 1 ? 0 : own[d];
  return strides;
}

/// Normalises a possibly negative dimension index against `rank`.
StatusOr<int64_t> normalizeDim(int64_t dim, int64_t rank, const char *what) {
  if (dim < -rank || dim >= rank)
    return errorf(what, " ", dim, " is out of range for a tensor of rank ",
                  rank);
  return dim < 0 ? dim + rank : dim;
}

/// Offset of the start of row `row` of a tensor whose outer coordinates
/// (all but the last dimension of `out`) are decoded from `row`.
int64_t rowOffset(int64_t row, Shape out, const std::vector<int64_t> &strides) {
  int64_t offset = 0;
  for (int64_t d = static_cast<int64_t>(out.size()) - 2; d >= 0; --d) {
    offset += (row % out[d]) * strides[d];
    row /= out[d];
  }
  return offset;
}

template <typename T, typename Op>
Status broadcastBinary(const T *lhs, Shape lhsShape, const T *rhs,
                       Shape rhsShape, T *out, Op op) {
  StatusOr<std::vector<int64_t>> outShape = broadcastShapes(lhsShape, rhsShape);
  if (!outShape)
    return outShape.status();
  const std::vector<int64_t> &shape = *outShape;
  const int64_t total = numElements(shape);
  if (total == 0)
    return Status::ok();
  if (shape.empty()) {
    out[0] = op(lhs[0], rhs[0]);
    return Status::ok();
  }
  const std::vector<int64_t> ls = broadcastStrides(lhsShape, shape);
  const std::vector<int64_t> rs = broadcastStrides(rhsShape, shape);
  const int64_t inner = shape.back();
  const int64_t rows = total / inner;
  const int64_t li = ls.back(), ri = rs.back();
#pragma omp parallel for schedule(static) if (worthThreads(total))
  for (int64_t row = 0; row < rows; ++row) {
    const T *l = lhs + rowOffset(row, shape, ls);
    const T *r = rhs + rowOffset(row, shape, rs);
    T *o = out + row * inner;
    for (int64_t c = 0; c < inner; ++c)
      o[c] = op(l[c * li], r[c * ri]);
  }
  return Status::ok();
}

constexpr double kSqrt2OverPi = 0.7978845608028654; // √(2/π)
constexpr double kGeluCubic = 0.044715;

} // namespace

int64_t numElements(Shape shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

StatusOr<AxisSplit> splitAtAxis(Shape shape, int64_t axis) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  StatusOr<int64_t> a = normalizeDim(axis, rank, "axis");
  if (!a)
    return a.status();
  AxisSplit split;
  for (int64_t d = 0; d < rank; ++d) {
    if (d < *a)
      split.outer *= shape[d];
    else if (d == *a)
      split.axisSize = shape[d];
    else
      split.inner *= shape[d];
  }
  return split;
}

StatusOr<std::vector<int64_t>> broadcastShapes(Shape lhs, Shape rhs) {
  const size_t rank = std::max(lhs.size(), rhs.size());
  std::vector<int64_t> out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t l = i < lhs.size() ? lhs[lhs.size() - 1 - i] : 1;
    const int64_t r = i < rhs.size() ? rhs[rhs.size() - 1 - i] : 1;
    if (l != r && l != 1 && r != 1)
      return errorf("shapes ", shapeString(lhs), " and ", shapeString(rhs),
                    " do not broadcast");
    out[rank - 1 - i] = l == 1 ? r : l;
  }
  return out;
}

StatusOr<GeluApproximation> parseGeluApproximation(std::string_view name) {
  if (name == "tanh")
    return GeluApproximation::Tanh;
  if (name == "none")
    return GeluApproximation::None;
  return errorf("gelu approximation '", name,
                "' is neither \"tanh\" nor \"none\"");
}

template <typename T>
void gelu(const T *x, int64_t n, GeluApproximation approximate, T *y) {
  if (approximate == GeluApproximation::Tanh) {
#pragma omp parallel for schedule(static) if (worthThreads(n))
    for (int64_t i = 0; i < n; ++i) {
      const T v = x[i];
      const T inner = T(kSqrt2OverPi) * (v + T(kGeluCubic) * v * v * v);
      y[i] = T(0.5) * v * (T(1) + tanhApprox(inner));
    }
  } else {
#pragma omp parallel for schedule(static) if (worthThreads(n))
    for (int64_t i = 0; i < n; ++i)
      y[i] =
          T(0.5) * x[i] * (T(1) + std::erf(x[i] * T(std::numbers::sqrt2 / 2)));
  }
}

template <typename T>
void geluGrad(const T *x, const T *dy, int64_t n, GeluApproximation approximate,
              T *dx) {
  if (approximate == GeluApproximation::Tanh) {
#pragma omp parallel for schedule(static) if (worthThreads(n))
    for (int64_t i = 0; i < n; ++i) {
      const T v = x[i];
      const T inner = T(kSqrt2OverPi) * (v + T(kGeluCubic) * v * v * v);
      const T t = tanhApprox(inner);
      const T dInner = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCubic) * v * v);
      dx[i] =
          dy[i] * (T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * dInner);
    }
  } else {
    // d/dx x·Φ(x) = Φ(x) + x·φ(x).
    const T invSqrt2Pi = T(std::numbers::inv_sqrtpi / std::numbers::sqrt2);
#pragma omp parallel for schedule(static) if (worthThreads(n))
    for (int64_t i = 0; i < n; ++i) {
      const T v = x[i];
      const T cdf = T(0.5) * (T(1) + std::erf(v * T(std::numbers::sqrt2 / 2)));
      const T pdf = invSqrt2Pi * std::exp(T(-0.5) * v * v);
      dx[i] = dy[i] * (cdf + v * pdf);
    }
  }
}

template <typename T>
Status add(const T *lhs, Shape lhsShape, const T *rhs, Shape rhsShape, T *out) {
  return broadcastBinary(lhs, lhsShape, rhs, rhsShape, out,
                         [](T a, T b) { return a + b; });
}

template <typename T>
Status mul(const T *lhs, Shape lhsShape, const T *rhs, Shape rhsShape, T *out) {
  return broadcastBinary(lhs, lhsShape, rhs, rhsShape, out,
                         [](T a, T b) { return a * b; });
}

template <typename T>
Status reduceSum(const T *x, Shape shape, std::span<const int64_t> dims,
                 T *out) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  std::vector<bool> reduced(rank, false);
  for (int64_t dim : dims) {
    StatusOr<int64_t> d = normalizeDim(dim, rank, "reduce_sum dim");
    if (!d)
      return d.status();
    if (reduced[*d])
      return errorf("reduce_sum dim ", dim, " is listed twice");
    reduced[*d] = true;
  }
  const std::vector<int64_t> strides = stridesOf(shape);
  std::vector<int64_t> keptSizes, keptStrides, redSizes, redStrides;
  for (int64_t d = 0; d < rank; ++d) {
    (reduced[d] ? redSizes : keptSizes).push_back(shape[d]);
    (reduced[d] ? redStrides : keptStrides).push_back(strides[d]);
  }
  const int64_t outSize = numElements(keptSizes);
  const int64_t redSize = numElements(redSizes);
  const int64_t numRed = static_cast<int64_t>(redSizes.size());
  // Fast path for the common bias-gradient case, reduced dims a prefix
  // ([R, C] → [C]): row-major reads in column blocks. It adds in the same
  // order (r ascending) as the general loop below, so results are identical.
  const bool prefix =
      std::is_sorted(reduced.begin(), reduced.end(), std::greater<bool>());
  if (prefix && numRed > 0 && numRed < rank) {
    constexpr int64_t kBlock = 64;
    const int64_t numBlocks = (outSize + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (worthThreads(outSize * redSize))
    for (int64_t blk = 0; blk < numBlocks; ++blk) {
      const int64_t c0 = blk * kBlock, width = std::min(kBlock, outSize - c0);
      double acc[kBlock] = {};
      for (int64_t r = 0; r < redSize; ++r) {
        const T *row = x + r * outSize + c0;
        for (int64_t c = 0; c < width; ++c)
          acc[c] += static_cast<double>(row[c]);
      }
      for (int64_t c = 0; c < width; ++c)
        out[c0 + c] = static_cast<T>(acc[c]);
    }
    return Status::ok();
  }
  // Each output element sums its inputs alone, in row-major order of the
  // reduced coordinates: deterministic under any thread count.
#pragma omp parallel
  {
    std::vector<int64_t> counter(numRed);
#pragma omp for schedule(static)
    for (int64_t o = 0; o < outSize; ++o) {
      int64_t base = 0, rest = o;
      for (int64_t d = static_cast<int64_t>(keptSizes.size()) - 1; d >= 0;
           --d) {
        base += (rest % keptSizes[d]) * keptStrides[d];
        rest /= keptSizes[d];
      }
      std::fill(counter.begin(), counter.end(), 0);
      double sum = 0;
      int64_t offset = base;
      for (int64_t r = 0; r < redSize; ++r) {
        sum += static_cast<double>(x[offset]);
        // Odometer step over the reduced coordinates.
        for (int64_t d = numRed - 1; d >= 0; --d) {
          offset += redStrides[d];
          if (++counter[d] < redSizes[d])
            break;
          offset -= counter[d] * redStrides[d];
          counter[d] = 0;
        }
      }
      out[o] = static_cast<T>(sum);
    }
  }
  return Status::ok();
}

template <typename T>
Status reduceToShape(const T *grad, Shape gradShape, Shape targetShape,
                     T *out) {
  StatusOr<std::vector<int64_t>> b = broadcastShapes(gradShape, targetShape);
  if (!b)
    return b.status();
  if (!std::equal(b->begin(), b->end(), gradShape.begin(), gradShape.end()))
    return errorf("shape ", shapeString(targetShape),
                  " does not broadcast to the gradient's shape ",
                  shapeString(gradShape));
  std::vector<int64_t> dims;
  const size_t offset = gradShape.size() - targetShape.size();
  for (size_t d = 0; d < gradShape.size(); ++d)
    if (d < offset || (targetShape[d - offset] == 1 && gradShape[d] != 1))
      dims.push_back(static_cast<int64_t>(d));
  return reduceSum(grad, gradShape, dims, out);
}

template <typename T> void scale(const T *x, int64_t n, double factor, T *y) {
  const T f = static_cast<T>(factor);
#pragma omp parallel for schedule(static) if (worthThreads(n))
  for (int64_t i = 0; i < n; ++i)
    y[i] = f * x[i];
}

template <typename T> void fill(T *out, int64_t n, double value) {
  std::fill_n(out, n, static_cast<T>(value));
}

std::vector<int64_t> inversePermutation(std::span<const int64_t> permutation) {
  std::vector<int64_t> inverse(permutation.size());
  for (size_t i = 0; i < permutation.size(); ++i)
    inverse[permutation[i]] = static_cast<int64_t>(i);
  return inverse;
}

template <typename T>
Status transpose(const T *x, Shape shape, std::span<const int64_t> permutation,
                 T *out) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  if (static_cast<int64_t>(permutation.size()) != rank)
    return errorf("permutation of ", permutation.size(),
                  " entries for a tensor of rank ", rank);
  std::vector<bool> seen(rank, false);
  for (int64_t p : permutation) {
    if (p < 0 || p >= rank || seen[p])
      return errorf("permutation entry ", p, " is out of range or repeated");
    seen[p] = true;
  }
  const int64_t total = numElements(shape);
  if (total == 0)
    return Status::ok();
  if (rank == 0) {
    out[0] = x[0];
    return Status::ok();
  }
  const std::vector<int64_t> inStrides = stridesOf(shape);
  std::vector<int64_t> outShape(rank), strides(rank);
  for (int64_t d = 0; d < rank; ++d) {
    outShape[d] = shape[permutation[d]];
    strides[d] = inStrides[permutation[d]];
  }
  const int64_t inner = outShape.back();
  const int64_t innerStride = strides.back();
  const int64_t rows = total / inner;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    const T *src = x + rowOffset(row, outShape, strides);
    T *dst = out + row * inner;
    for (int64_t c = 0; c < inner; ++c)
      dst[c] = src[c * innerStride];
  }
  return Status::ok();
}

template <typename T>
Status roll(const T *x, Shape shape, std::span<const int64_t> shifts,
            std::span<const int64_t> dims, T *out) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  if (shifts.size() != dims.size())
    return errorf("roll has ", shifts.size(), " shifts but ", dims.size(),
                  " dims");
  // Shifts along a dimension listed twice add up, as in torch.roll.
  std::vector<int64_t> shift(rank, 0);
  for (size_t i = 0; i < dims.size(); ++i) {
    StatusOr<int64_t> d = normalizeDim(dims[i], rank, "roll dim");
    if (!d)
      return d.status();
    shift[*d] += shifts[i];
  }
  const int64_t total = numElements(shape);
  if (total == 0)
    return Status::ok();
  if (rank == 0) {
    out[0] = x[0];
    return Status::ok();
  }
  for (int64_t d = 0; d < rank; ++d)
    shift[d] = ((shift[d] % shape[d]) + shape[d]) % shape[d];
  const std::vector<int64_t> strides = stridesOf(shape);
  const int64_t inner = shape.back();
  const int64_t innerShift = shift.back();
  const int64_t rows = total / inner;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    // out[c] = x[c − shift] along each dimension.
    int64_t src = 0, rest = row;
    for (int64_t d = rank - 2; d >= 0; --d) {
      const int64_t c = rest % shape[d];
      rest /= shape[d];
      src += ((c - shift[d] + shape[d]) % shape[d]) * strides[d];
    }
    T *dst = out + row * inner;
    const T *s = x + src;
    for (int64_t c = 0; c < innerShift; ++c)
      dst[c] = s[inner - innerShift + c];
    for (int64_t c = innerShift; c < inner; ++c)
      dst[c] = s[c - innerShift];
  }
  return Status::ok();
}

template <typename T>
Status dropout(const T *x, int64_t n, double rate, int64_t seed, int64_t step,
               T *y) {
  if (!(rate >= 0 && rate < 1))
    return errorf("dropout rate ", rate, " is outside [0, 1)");
  if (rate == 0) {
    if (y != x)
      std::copy_n(x, n, y);
    return Status::ok();
  }
  const T keepScale = static_cast<T>(1 / (1 - rate));
#pragma omp parallel for schedule(static) if (worthThreads(n))
  for (int64_t i = 0; i < n; ++i) {
    const bool keep =
        counterUniform(static_cast<uint64_t>(seed), static_cast<uint64_t>(step),
                       static_cast<uint64_t>(i)) >= rate;
    y[i] = keep ? x[i] * keepScale : T(0);
  }
  return Status::ok();
}

#define FLEXMOE_INSTANTIATE_LAYOUT(T)                                          \
  template Status add<T>(const T *, Shape, const T *, Shape, T *);             \
  template Status mul<T>(const T *, Shape, const T *, Shape, T *);             \
  template Status transpose<T>(const T *, Shape, std::span<const int64_t>,     \
                               T *);                                           \
  template Status roll<T>(const T *, Shape, std::span<const int64_t>,          \
                          std::span<const int64_t>, T *);
#define FLEXMOE_INSTANTIATE_FLOAT(T)                                           \
  template void gelu<T>(const T *, int64_t, GeluApproximation, T *);           \
  template void geluGrad<T>(const T *, const T *, int64_t, GeluApproximation,  \
                            T *);                                              \
  template Status reduceSum<T>(const T *, Shape, std::span<const int64_t>,     \
                               T *);                                           \
  template Status reduceToShape<T>(const T *, Shape, Shape, T *);              \
  template void scale<T>(const T *, int64_t, double, T *);                     \
  template void fill<T>(T *, int64_t, double);                                 \
  template Status dropout<T>(const T *, int64_t, double, int64_t, int64_t, T *);
FLEXMOE_INSTANTIATE_LAYOUT(float)
FLEXMOE_INSTANTIATE_LAYOUT(double)
FLEXMOE_INSTANTIATE_LAYOUT(int32_t)
FLEXMOE_INSTANTIATE_FLOAT(float)
FLEXMOE_INSTANTIATE_FLOAT(double)
#undef FLEXMOE_INSTANTIATE_LAYOUT
#undef FLEXMOE_INSTANTIATE_FLOAT

} // namespace flexmoe::cpu
