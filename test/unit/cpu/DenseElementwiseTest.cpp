//===- DenseElementwiseTest.cpp - broadcast, layout and dropout kernels ---===//

#include "runtime/backends/cpu/kernels/DenseKernels.h"
#include "runtime/backends/cpu/kernels/DenseRandom.h"
#include "test/unit/cpu/GradCheck.h"

#include <gtest/gtest.h>

#include <numeric>

using namespace flexmoe::cpu;
using flexmoe::test::checkGradient;
using flexmoe::test::dot;
using flexmoe::test::maxRelativeDifference;
using flexmoe::test::randomVector;
using flexmoe::test::randomVectorAs;

namespace {

constexpr double kGradTol = 1e-6;

using Dims = std::vector<int64_t>;

Dims unravel(int64_t index, const Dims &shape) {
  Dims c(shape.size());
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    c[d] = index % shape[d];
    index /= shape[d];
  }
  return c;
}

int64_t ravel(const Dims &coords, const Dims &shape) {
  int64_t index = 0;
  for (size_t d = 0; d < shape.size(); ++d)
    index = index * shape[d] + coords[d];
  return index;
}

/// Index into an operand of `shape` at broadcast coordinates `out`.
int64_t broadcastIndex(const Dims &out, const Dims &shape) {
  Dims c(shape.size());
  const size_t off = out.size() - shape.size();
  for (size_t d = 0; d < shape.size(); ++d)
    c[d] = shape[d] == 1 ? 0 : out[off + d];
  return ravel(c, shape);
}

struct BroadcastCase {
  Dims lhs, rhs, out;
};
const BroadcastCase kBroadcastCases[] = {
    {{2, 3, 4}, {2, 3, 4}, {2, 3, 4}},
    {{2, 3, 4}, {4}, {2, 3, 4}},
    {{2, 1, 4}, {3, 1}, {2, 3, 4}},
    {{1}, {2, 3}, {2, 3}},
    {{5, 1}, {1, 6}, {5, 6}},
    {{}, {3, 2}, {3, 2}},
    {{2, 3, 1, 5}, {3, 4, 1}, {2, 3, 4, 5}}};

TEST(DenseBroadcast, AddAndMulMatchReference) {
  int seed = 0;
  for (const BroadcastCase &bc : kBroadcastCases) {
    const int64_t n = numElements(bc.out);
    std::vector<float> l = randomVectorAs<float>(numElements(bc.lhs), ++seed);
    std::vector<float> r = randomVectorAs<float>(numElements(bc.rhs), ++seed);
    std::vector<float> sum(n), prod(n);
    ASSERT_TRUE(add(l.data(), bc.lhs, r.data(), bc.rhs, sum.data()));
    ASSERT_TRUE(mul(l.data(), bc.lhs, r.data(), bc.rhs, prod.data()));
    EXPECT_EQ(*broadcastShapes(bc.lhs, bc.rhs), bc.out);
    for (int64_t i = 0; i < n; ++i) {
      const Dims c = unravel(i, bc.out);
      const float a = l[broadcastIndex(c, bc.lhs)];
      const float b = r[broadcastIndex(c, bc.rhs)];
      EXPECT_EQ(sum[i], a + b) << i;
      EXPECT_EQ(prod[i], a * b) << i;
    }
  }
}

TEST(DenseBroadcast, Int32Add) {
  std::vector<int32_t> l = {1, 2, 3}, r = {10, 20}, out(6);
  const int64_t ls[] = {1, 3}, rs[] = {2, 1};
  ASSERT_TRUE(add(l.data(), ls, r.data(), rs, out.data()));
  EXPECT_EQ(out, (std::vector<int32_t>{11, 12, 13, 21, 22, 23}));
}

TEST(DenseBroadcast, IncompatibleShapesAreErrors) {
  std::vector<float> buf(24);
  const int64_t ls[] = {2, 3}, rs[] = {4, 3, 2};
  flexmoe::Status st = add(buf.data(), ls, buf.data(), rs, buf.data());
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("shapes [2,3] and [4,3,2] do not broadcast"),
            std::string::npos)
      << st.message();
  const int64_t g[] = {2, 3}, t[] = {4};
  EXPECT_FALSE(reduceToShape(buf.data(), g, t, buf.data()));
  // A target larger than the gradient does not broadcast *to* it.
  const int64_t g2[] = {3}, t2[] = {2, 3};
  EXPECT_FALSE(reduceToShape(buf.data(), g2, t2, buf.data()));
}

// add's and mul's backward: reduceToShape of dy (times the other operand for
// mul) against finite differences.
TEST(DenseBroadcast, GradientsByReduceToShapeMatchFiniteDifferences) {
  int seed = 100;
  for (const BroadcastCase &bc : kBroadcastCases) {
    const int64_t n = numElements(bc.out);
    const int64_t nl = numElements(bc.lhs), nr = numElements(bc.rhs);
    std::vector<double> l = randomVector(nl, ++seed);
    std::vector<double> r = randomVector(nr, ++seed);
    std::vector<double> dy = randomVector(n, ++seed);
    for (bool isMul : {false, true}) {
      auto loss = [&](const std::vector<double> &ls,
                      const std::vector<double> &rs) {
        std::vector<double> y(n);
        EXPECT_TRUE(isMul
                        ? mul(ls.data(), bc.lhs, rs.data(), bc.rhs, y.data())
                        : add(ls.data(), bc.lhs, rs.data(), bc.rhs, y.data()));
        return dot(y, dy);
      };
      std::vector<double> gl(n), gr(n), dl(nl), dr(nr);
      if (isMul) {
        ASSERT_TRUE(mul(dy.data(), bc.out, r.data(), bc.rhs, gl.data()));
        ASSERT_TRUE(mul(dy.data(), bc.out, l.data(), bc.lhs, gr.data()));
      } else {
        gl = gr = dy;
      }
      ASSERT_TRUE(reduceToShape(gl.data(), bc.out, bc.lhs, dl.data()));
      ASSERT_TRUE(reduceToShape(gr.data(), bc.out, bc.rhs, dr.data()));
      EXPECT_LT(checkGradient([&](auto &v) { return loss(v, r); }, l, dl)
                    .maxRelativeError,
                kGradTol);
      EXPECT_LT(checkGradient([&](auto &v) { return loss(l, v); }, r, dr)
                    .maxRelativeError,
                kGradTol);
    }
  }
}

//===----------------------------------------------------------------------===//
// reduce_sum, scale, fill
//===----------------------------------------------------------------------===//

TEST(DenseReduceSum, MatchesReferenceForDimSets) {
  const Dims shape = {2, 3, 4, 5};
  std::vector<float> x = randomVectorAs<float>(120, 7);
  const std::vector<Dims> dimSets = {
      {0},    {0, 1}, {1, 0, 2},    {3},          {-1},
      {1, 3}, {0, 2}, {-4, -2, -1}, {0, 1, 2, 3}, {}};
  for (const Dims &dims : dimSets) {
    std::vector<bool> red(4, false);
    for (int64_t d : dims)
      red[d < 0 ? d + 4 : d] = true;
    Dims outShape; // keep_dims layout: size-1 reduced dims
    for (int d = 0; d < 4; ++d)
      outShape.push_back(red[d] ? 1 : shape[d]);
    std::vector<double> ref(numElements(outShape), 0.0);
    for (int64_t i = 0; i < 120; ++i) {
      Dims c = unravel(i, shape);
      for (int d = 0; d < 4; ++d)
        if (red[d])
          c[d] = 0;
      ref[ravel(c, outShape)] += x[i];
    }
    std::vector<float> out(ref.size(), -1.f);
    ASSERT_TRUE(reduceSum(x.data(), shape, dims, out.data()));
    EXPECT_LT(maxRelativeDifference(out, ref), 1e-6) << "dims " << dims.size();
  }
}

// The prefix fast path ([R, C] over dim 0) adds in the same order as the
// general path: summing the transpose over its last dim is bitwise equal.
TEST(DenseReduceSum, PrefixFastPathMatchesGeneralPathBitwise) {
  const Dims shape = {300, 70}, tshape = {70, 300};
  std::vector<float> x = randomVectorAs<float>(21000, 21, -100, 100);
  std::vector<float> xt(21000), a(70), b(70);
  const int64_t perm[] = {1, 0}, d0[] = {0}, d1[] = {1};
  ASSERT_TRUE(transpose(x.data(), shape, perm, xt.data()));
  ASSERT_TRUE(reduceSum(x.data(), shape, d0, a.data()));
  ASSERT_TRUE(reduceSum(xt.data(), tshape, d1, b.data()));
  EXPECT_EQ(a, b);
}

TEST(DenseReduceSum, BadDimsAreErrors) {
  std::vector<float> x(6), out(6);
  const int64_t shape[] = {2, 3};
  const int64_t outOfRange[] = {2}, twice[] = {1, -1};
  flexmoe::Status st = reduceSum(x.data(), shape, outOfRange, out.data());
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("reduce_sum dim 2 is out of range"),
            std::string::npos)
      << st.message();
  st = reduceSum(x.data(), shape, twice, out.data());
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("listed twice"), std::string::npos);
}

TEST(DenseScaleFill, ScaleAndFill) {
  std::vector<double> x = randomVector(17, 8);
  std::vector<double> y(17);
  scale(x.data(), 17, -2.5, y.data());
  for (int i = 0; i < 17; ++i)
    EXPECT_EQ(y[i], -2.5 * x[i]);
  const std::vector<double> original = x;
  scale(x.data(), 17, 0.5, x.data()); // in place
  for (int i = 0; i < 17; ++i)
    EXPECT_EQ(x[i], 0.5 * original[i]);
  std::vector<float> f(9, 1.f);
  fill(f.data(), 9, 0.25);
  for (float v : f)
    EXPECT_EQ(v, 0.25f);
}

//===----------------------------------------------------------------------===//
// transpose, roll
//===----------------------------------------------------------------------===//

TEST(DenseTranspose, MatchesReferenceAndInverts) {
  const Dims shape = {2, 3, 4, 5};
  std::vector<float> x = randomVectorAs<float>(120, 9);
  Dims perm = {0, 1, 2, 3};
  do {
    Dims outShape(4);
    for (int d = 0; d < 4; ++d)
      outShape[d] = shape[perm[d]];
    std::vector<float> out(120), back(120);
    ASSERT_TRUE(transpose(x.data(), shape, perm, out.data()));
    for (int64_t i = 0; i < 120; ++i) {
      const Dims oc = unravel(i, outShape);
      Dims ic(4);
      for (int d = 0; d < 4; ++d)
        ic[perm[d]] = oc[d];
      ASSERT_EQ(out[i], x[ravel(ic, shape)]);
    }
    ASSERT_TRUE(
        transpose(out.data(), outShape, inversePermutation(perm), back.data()));
    EXPECT_EQ(back, x);
  } while (std::next_permutation(perm.begin(), perm.end()));
}

TEST(DenseTranspose, GradientIsInverseTranspose) {
  const Dims shape = {3, 2, 4};
  const Dims perm = {2, 0, 1}, outShape = {4, 3, 2};
  std::vector<double> x = randomVector(24, 10), dy = randomVector(24, 11);
  auto loss = [&](const std::vector<double> &xs) {
    std::vector<double> y(24);
    EXPECT_TRUE(transpose(xs.data(), shape, perm, y.data()));
    return dot(y, dy);
  };
  std::vector<double> dx(24);
  ASSERT_TRUE(
      transpose(dy.data(), outShape, inversePermutation(perm), dx.data()));
  EXPECT_LT(checkGradient(loss, x, dx).maxRelativeError, kGradTol);
}

TEST(DenseTranspose, BadPermutationsAreErrors) {
  std::vector<float> x(6), out(6);
  const int64_t shape[] = {2, 3};
  for (const Dims &perm : {Dims{0}, Dims{0, 0}, Dims{0, 2}}) {
    EXPECT_FALSE(transpose(x.data(), shape, perm, out.data()));
  }
}

TEST(DenseRoll, MatchesTorchRollSemantics) {
  const Dims shape = {3, 4, 5};
  std::vector<int32_t> x(60);
  std::iota(x.begin(), x.end(), 0);
  struct Case {
    Dims shifts, dims;
  };
  const Case cases[] = {{{1}, {2}},        {{-1}, {-1}},     {{2, -3}, {0, 2}},
                        {{7}, {1}},        {{1, 1}, {1, 1}}, {{0}, {0}},
                        {{-13, 4}, {2, 0}}};
  for (const Case &c : cases) {
    Dims shift(3, 0);
    for (size_t i = 0; i < c.dims.size(); ++i)
      shift[c.dims[i] < 0 ? c.dims[i] + 3 : c.dims[i]] += c.shifts[i];
    std::vector<int32_t> out(60);
    ASSERT_TRUE(roll(x.data(), shape, c.shifts, c.dims, out.data()));
    for (int64_t i = 0; i < 60; ++i) {
      Dims src = unravel(i, shape);
      for (int d = 0; d < 3; ++d)
        src[d] = (((src[d] - shift[d]) % shape[d]) + shape[d]) % shape[d];
      ASSERT_EQ(out[i], x[ravel(src, shape)]) << i;
    }
  }
  // Known value: torch.roll([0,1,2,3,4], 2) == [3,4,0,1,2].
  std::vector<int32_t> v = {0, 1, 2, 3, 4}, r(5);
  const int64_t s5[] = {5}, two[] = {2}, zero[] = {0};
  ASSERT_TRUE(roll(v.data(), s5, two, zero, r.data()));
  EXPECT_EQ(r, (std::vector<int32_t>{3, 4, 0, 1, 2}));
}

TEST(DenseRoll, GradientIsRollBack) {
  const Dims shape = {4, 6}, shifts = {1, -2}, back = {-1, 2}, dims = {0, 1};
  std::vector<double> x = randomVector(24, 12), dy = randomVector(24, 13);
  auto loss = [&](const std::vector<double> &xs) {
    std::vector<double> y(24);
    EXPECT_TRUE(roll(xs.data(), shape, shifts, dims, y.data()));
    return dot(y, dy);
  };
  std::vector<double> dx(24);
  ASSERT_TRUE(roll(dy.data(), shape, back, dims, dx.data()));
  EXPECT_LT(checkGradient(loss, x, dx).maxRelativeError, kGradTol);
}

TEST(DenseRoll, BadArgumentsAreErrors) {
  std::vector<float> x(6), out(6);
  const int64_t shape[] = {2, 3};
  const int64_t one[] = {1}, two[] = {1, 1}, bad[] = {2};
  EXPECT_FALSE(roll(x.data(), shape, two, one, out.data()));
  flexmoe::Status st = roll(x.data(), shape, one, bad, out.data());
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("roll dim 2"), std::string::npos);
}

//===----------------------------------------------------------------------===//
// dropout
//===----------------------------------------------------------------------===//

TEST(DenseDropout, MaskIsReproducibleAndDependsOnSeedAndStep) {
  const int64_t n = 4096;
  std::vector<float> x = randomVectorAs<float>(n, 14);
  std::vector<float> a(n), b(n), c(n), d(n);
  ASSERT_TRUE(dropout(x.data(), n, 0.3, 42, 7, a.data()));
  ASSERT_TRUE(dropout(x.data(), n, 0.3, 42, 7, b.data()));
  ASSERT_TRUE(dropout(x.data(), n, 0.3, 43, 7, c.data()));
  ASSERT_TRUE(dropout(x.data(), n, 0.3, 42, 8, d.data()));
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, d);
  for (int64_t i = 0; i < n; ++i)
    if (a[i] != 0.f)
      EXPECT_FLOAT_EQ(a[i], x[i] / 0.7f);
}

TEST(DenseDropout, DropRateMatchesRate) {
  const int64_t n = 200000;
  std::vector<float> x(n, 1.f), y(n);
  for (double rate : {0.1, 0.5, 0.9}) {
    ASSERT_TRUE(dropout(x.data(), n, rate, 5, 1, y.data()));
    const double dropped =
        std::count(y.begin(), y.end(), 0.f) / static_cast<double>(n);
    // 5 standard deviations of a binomial proportion.
    EXPECT_NEAR(dropped, rate, 5 * std::sqrt(rate * (1 - rate) / n));
    double mean = 0;
    for (float v : y)
      mean += v;
    EXPECT_NEAR(mean / n, 1.0, 0.02); // inverted dropout keeps the mean
  }
}

TEST(DenseDropout, RateZeroCopiesAndBadRatesAreErrors) {
  std::vector<double> x = randomVector(33, 15), y(33);
  ASSERT_TRUE(dropout(x.data(), 33, 0.0, 1, 1, y.data()));
  EXPECT_EQ(x, y);
  for (double bad : {1.0, -0.1, 1.5}) {
    flexmoe::Status st = dropout(x.data(), 33, bad, 1, 1, y.data());
    ASSERT_FALSE(st);
    EXPECT_NE(st.message().find("outside [0, 1)"), std::string::npos);
  }
}

TEST(DenseDropout, SameCallOnDyIsTheGradient) {
  const int64_t n = 64;
  std::vector<double> x = randomVector(n, 16), dy = randomVector(n, 17);
  auto loss = [&](const std::vector<double> &xs) {
    std::vector<double> y(n);
    EXPECT_TRUE(dropout(xs.data(), n, 0.4, 99, 3, y.data()));
    return dot(y, dy);
  };
  std::vector<double> dx(n);
  ASSERT_TRUE(dropout(dy.data(), n, 0.4, 99, 3, dx.data()));
  EXPECT_LT(checkGradient(loss, x, dx).maxRelativeError, kGradTol);
  EXPECT_GT(std::count(dx.begin(), dx.end(), 0.0), 0); // something dropped
}

TEST(DenseDropout, CounterRandomIsUniformish) {
  // Mean and first-bit balance of the hash over consecutive counters.
  const int n = 100000;
  double mean = 0;
  int odd = 0;
  for (int i = 0; i < n; ++i) {
    mean += counterUniform(1, 2, i);
    odd += counterRandom(1, 2, i) & 1;
  }
  EXPECT_NEAR(mean / n, 0.5, 0.005);
  EXPECT_NEAR(odd / double(n), 0.5, 0.01);
}

} // namespace
