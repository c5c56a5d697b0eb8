//===- DenseNormTest.cpp - layer_norm, softmax and gelu kernels -----------===//

#include "runtime/backends/cpu/kernels/DenseKernels.h"
#include "test/unit/cpu/GradCheck.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace flexmoe::cpu;
using flexmoe::test::checkGradient;
using flexmoe::test::dot;
using flexmoe::test::maxRelativeDifference;
using flexmoe::test::randomVector;
using flexmoe::test::randomVectorAs;

namespace {

constexpr double kGradTol = 1e-6;
constexpr double kFloatTol = 1e-5;

//===----------------------------------------------------------------------===//
// layer_norm
//===----------------------------------------------------------------------===//

TEST(DenseLayerNorm, ForwardMatchesReference) {
  const int64_t rows = 6, D = 9;
  const double eps = 1e-5;
  // Offset and spread rows: a naive one-pass variance would lose precision.
  std::vector<float> x = randomVectorAs<float>(rows * D, 1, 2.0, 5.0);
  std::vector<float> g = randomVectorAs<float>(D, 2);
  std::vector<float> b = randomVectorAs<float>(D, 3);
  std::vector<float> y(rows * D);
  layerNorm(x.data(), g.data(), b.data(), rows, D, eps, y.data());
  std::vector<double> ref(rows * D);
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < D; ++c)
      mean += x[r * D + c];
    mean /= D;
    for (int64_t c = 0; c < D; ++c)
      var += (x[r * D + c] - mean) * (x[r * D + c] - mean);
    var /= D;
    for (int64_t c = 0; c < D; ++c)
      ref[r * D + c] =
          (x[r * D + c] - mean) / std::sqrt(var + eps) * g[c] + b[c];
  }
  EXPECT_LT(maxRelativeDifference(y, ref), kFloatTol);
}

TEST(DenseLayerNorm, GradientMatchesFiniteDifferences) {
  const int64_t rows = 4, D = 7;
  const double eps = 1e-5;
  std::vector<double> x = randomVector(rows * D, 4);
  std::vector<double> g = randomVector(D, 5);
  std::vector<double> b = randomVector(D, 6);
  std::vector<double> dy = randomVector(rows * D, 7);
  auto loss = [&](const std::vector<double> &xs, const std::vector<double> &gs,
                  const std::vector<double> &bs) {
    std::vector<double> y(rows * D);
    layerNorm(xs.data(), gs.data(), bs.data(), rows, D, eps, y.data());
    return dot(y, dy);
  };
  std::vector<double> dx(rows * D), dg(D, 5.0), db(D, 5.0);
  layerNormGrad(x.data(), g.data(), dy.data(), rows, D, eps, dx.data(),
                dg.data(), db.data());
  EXPECT_LT(checkGradient([&](auto &v) { return loss(v, g, b); }, x, dx)
                .maxRelativeError,
            kGradTol);
  EXPECT_LT(checkGradient([&](auto &v) { return loss(x, v, b); }, g, dg)
                .maxRelativeError,
            kGradTol);
  EXPECT_LT(checkGradient([&](auto &v) { return loss(x, g, v); }, b, db)
                .maxRelativeError,
            kGradTol);
}

//===----------------------------------------------------------------------===//
// softmax
//===----------------------------------------------------------------------===//

TEST(DenseSoftmax, ForwardMatchesReferenceOnEveryAxis) {
  const int64_t shape[] = {3, 4, 5};
  // Large logits: a softmax without the max subtraction overflows in float.
  std::vector<float> x = randomVectorAs<float>(60, 8, -100.0, 100.0);
  for (int64_t axis : {0, 1, 2, -1, -3}) {
    auto split = splitAtAxis(shape, axis);
    ASSERT_TRUE(split.isOk());
    std::vector<float> y(60);
    softmax(x.data(), *split, y.data());
    const int64_t a = axis < 0 ? axis + 3 : axis;
    std::vector<double> ref(60);
    int64_t strides[] = {20, 5, 1};
    for (int64_t i = 0; i < 60; ++i) {
      const int64_t coord = (i / strides[a]) % shape[a];
      const int64_t base = i - coord * strides[a];
      double maxv = -INFINITY, sum = 0;
      for (int64_t t = 0; t < shape[a]; ++t)
        maxv = std::max(maxv, double(x[base + t * strides[a]]));
      for (int64_t t = 0; t < shape[a]; ++t)
        sum += std::exp(x[base + t * strides[a]] - maxv);
      ref[i] = std::exp(x[i] - maxv) / sum;
    }
    EXPECT_LT(maxRelativeDifference(y, ref), kFloatTol) << "axis " << axis;
    for (float v : y)
      EXPECT_TRUE(std::isfinite(v));
  }
}

TEST(DenseSoftmax, BadAxisIsAnError) {
  const int64_t shape[] = {3, 4};
  auto split = splitAtAxis(shape, 2);
  ASSERT_FALSE(split.isOk());
  EXPECT_NE(split.status().message().find("axis 2"), std::string::npos);
  EXPECT_FALSE(splitAtAxis(shape, -3).isOk());
}

TEST(DenseSoftmax, GradientMatchesFiniteDifferences) {
  const int64_t shape[] = {2, 5, 3};
  for (int64_t axis : {0, 1, 2}) {
    AxisSplit split = *splitAtAxis(shape, axis);
    std::vector<double> x = randomVector(30, 9 + axis, -3, 3);
    std::vector<double> dy = randomVector(30, 19 + axis);
    auto loss = [&](const std::vector<double> &xs) {
      std::vector<double> y(30);
      softmax(xs.data(), split, y.data());
      return dot(y, dy);
    };
    std::vector<double> y(30), dx(30);
    softmax(x.data(), split, y.data());
    softmaxGrad(y.data(), dy.data(), split, dx.data());
    EXPECT_LT(checkGradient(loss, x, dx).maxRelativeError, kGradTol)
        << "axis " << axis;
  }
}

//===----------------------------------------------------------------------===//
// gelu
//===----------------------------------------------------------------------===//

TEST(DenseGelu, ForwardMatchesFormulas) {
  std::vector<float> x = randomVectorAs<float>(200, 10, -6, 6);
  std::vector<float> y(200);
  gelu(x.data(), 200, GeluApproximation::Tanh, y.data());
  std::vector<double> ref(200);
  for (int i = 0; i < 200; ++i) {
    const double v = x[i];
    ref[i] = 0.5 * v *
             (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
  }
  EXPECT_LT(maxRelativeDifference(y, ref), kFloatTol);
  gelu(x.data(), 200, GeluApproximation::None, y.data());
  for (int i = 0; i < 200; ++i)
    ref[i] = 0.5 * x[i] * std::erfc(-x[i] / std::sqrt(2.0));
  EXPECT_LT(maxRelativeDifference(y, ref), kFloatTol);
  // Known values: gelu(1) = Φ(1) ≈ 0.841345 exactly; tanh form ≈ 0.841192.
  const float one = 1.f;
  float out;
  gelu(&one, 1, GeluApproximation::None, &out);
  EXPECT_NEAR(out, 0.8413447, 1e-6);
  gelu(&one, 1, GeluApproximation::Tanh, &out);
  EXPECT_NEAR(out, 0.8411920, 1e-6);
}

TEST(DenseGelu, GradientMatchesFiniteDifferences) {
  for (GeluApproximation a :
       {GeluApproximation::Tanh, GeluApproximation::None}) {
    std::vector<double> x = randomVector(50, 11, -4, 4);
    std::vector<double> dy = randomVector(50, 12);
    auto loss = [&](const std::vector<double> &xs) {
      std::vector<double> y(50);
      gelu(xs.data(), 50, a, y.data());
      return dot(y, dy);
    };
    std::vector<double> dx(50);
    geluGrad(x.data(), dy.data(), 50, a, dx.data());
    EXPECT_LT(checkGradient(loss, x, dx).maxRelativeError, kGradTol);
  }
}

TEST(DenseGelu, ParsesApproximationNames) {
  EXPECT_EQ(*parseGeluApproximation("tanh"), GeluApproximation::Tanh);
  EXPECT_EQ(*parseGeluApproximation("none"), GeluApproximation::None);
  auto bad = parseGeluApproximation("erf");
  ASSERT_FALSE(bad.isOk());
  EXPECT_NE(bad.status().message().find("'erf'"), std::string::npos);
}

} // namespace
