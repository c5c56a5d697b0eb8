//===- DenseFloatGradTest.cpp - float backward kernels agree with double --===//
//
// The finite-difference checks run the double instantiations; training runs
// the float ones. Running both on the same inputs catches a float-only bug
// (a narrowing cast, a float accumulator that loses the sum).
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cpu/kernels/DenseKernels.h"
#include "test/unit/cpu/GradCheck.h"

#include <gtest/gtest.h>

using namespace flexmoe::cpu;
using flexmoe::test::maxRelativeDifference;
using flexmoe::test::randomVector;

namespace {

constexpr double kTol = 2e-5;

std::vector<float> toFloat(const std::vector<double> &v) {
  return std::vector<float>(v.begin(), v.end());
}

/// Random doubles that are exactly representable as floats, so both
/// instantiations see identical inputs.
std::vector<double> floatExact(size_t n, uint64_t seed, double lo = -1,
                               double hi = 1) {
  std::vector<double> v = randomVector(n, seed, lo, hi);
  for (double &x : v)
    x = static_cast<float>(x);
  return v;
}

TEST(DenseFloatGrad, BackwardKernelsAgreeWithDouble) {
  const int64_t rows = 64, D = 40;
  const std::vector<double> x = floatExact(rows * D, 1, -2, 2);
  const std::vector<double> dy = floatExact(rows * D, 2);
  const std::vector<double> g = floatExact(D, 3);
  const std::vector<float> xf = toFloat(x), dyf = toFloat(dy), gf = toFloat(g);

  { // layer_norm
    std::vector<double> dx(rows * D), dg(D), db(D);
    std::vector<float> dxf(rows * D), dgf(D), dbf(D);
    layerNormGrad(x.data(), g.data(), dy.data(), rows, D, 1e-5, dx.data(),
                  dg.data(), db.data());
    layerNormGrad(xf.data(), gf.data(), dyf.data(), rows, D, 1e-5, dxf.data(),
                  dgf.data(), dbf.data());
    EXPECT_LT(maxRelativeDifference(dxf, dx), kTol);
    EXPECT_LT(maxRelativeDifference(dgf, dg), kTol);
    EXPECT_LT(maxRelativeDifference(dbf, db), kTol);
  }
  { // gelu, both forms
    for (GeluApproximation a :
         {GeluApproximation::Tanh, GeluApproximation::None}) {
      std::vector<double> dx(rows * D);
      std::vector<float> dxf(rows * D);
      geluGrad(x.data(), dy.data(), rows * D, a, dx.data());
      geluGrad(xf.data(), dyf.data(), rows * D, a, dxf.data());
      EXPECT_LT(maxRelativeDifference(dxf, dx), kTol);
    }
  }
  { // softmax
    const int64_t shape[] = {rows, D};
    AxisSplit split = *splitAtAxis(shape, -1);
    std::vector<double> y(rows * D), dx(rows * D);
    std::vector<float> yf(rows * D), dxf(rows * D);
    softmax(x.data(), split, y.data());
    softmax(xf.data(), split, yf.data());
    softmaxGrad(y.data(), dy.data(), split, dx.data());
    softmaxGrad(yf.data(), dyf.data(), split, dxf.data());
    EXPECT_LT(maxRelativeDifference(dxf, dx), kTol);
  }
  { // attention: [B=2, S=32, D=40], 4 heads, causal window 5
    AttentionConfig c{2, 32, D, 4, true, 5};
    std::vector<double> dq(rows * D), dk(rows * D), dv(rows * D);
    std::vector<float> dqf(rows * D), dkf(rows * D), dvf(rows * D);
    ASSERT_TRUE(attentionGrad(x.data(), dy.data(), x.data(), dy.data(), c,
                              dq.data(), dk.data(), dv.data()));
    ASSERT_TRUE(attentionGrad(xf.data(), dyf.data(), xf.data(), dyf.data(), c,
                              dqf.data(), dkf.data(), dvf.data()));
    EXPECT_LT(maxRelativeDifference(dqf, dq), kTol);
    EXPECT_LT(maxRelativeDifference(dkf, dk), kTol);
    EXPECT_LT(maxRelativeDifference(dvf, dv), kTol);
  }
  { // cross_entropy
    std::vector<int32_t> labels(rows);
    for (int64_t r = 0; r < rows; ++r)
      labels[r] = r % 7 == 0 ? -100 : static_cast<int32_t>((r * 13) % D);
    double loss;
    float lossf;
    ASSERT_TRUE(crossEntropy(x.data(), labels.data(), rows, D, -100, &loss));
    ASSERT_TRUE(crossEntropy(xf.data(), labels.data(), rows, D, -100, &lossf));
    EXPECT_NEAR(lossf, loss, kTol * std::max(1.0, std::abs(loss)));
    std::vector<double> dl(rows * D);
    std::vector<float> dlf(rows * D);
    ASSERT_TRUE(crossEntropyGrad(x.data(), labels.data(), rows, D, -100, 0.75,
                                 dl.data()));
    ASSERT_TRUE(crossEntropyGrad(xf.data(), labels.data(), rows, D, -100, 0.75f,
                                 dlf.data()));
    EXPECT_LT(maxRelativeDifference(dlf, dl), kTol);
  }
  { // embedding and linear
    std::vector<int32_t> ids(rows);
    for (int64_t r = 0; r < rows; ++r)
      ids[r] = static_cast<int32_t>((r * 5) % 9);
    std::vector<double> dt(9 * D);
    std::vector<float> dtf(9 * D);
    ASSERT_TRUE(embeddingGrad(ids.data(), rows, dy.data(), 9, D, dt.data()));
    ASSERT_TRUE(embeddingGrad(ids.data(), rows, dyf.data(), 9, D, dtf.data()));
    EXPECT_LT(maxRelativeDifference(dtf, dt), kTol);
    const std::vector<double> w = floatExact(D * D, 4);
    const std::vector<float> wf = toFloat(w);
    std::vector<double> dx(rows * D), dw(D * D);
    std::vector<float> dxf(rows * D), dwf(D * D);
    linearGrad(x.data(), w.data(), dy.data(), rows, D, D, dx.data(), dw.data());
    linearGrad(xf.data(), wf.data(), dyf.data(), rows, D, D, dxf.data(),
               dwf.data());
    EXPECT_LT(maxRelativeDifference(dxf, dx), kTol);
    EXPECT_LT(maxRelativeDifference(dwf, dw), kTol);
    // Null outputs are skipped.
    std::vector<float> only(rows * D, -1.f);
    linearGrad(xf.data(), wf.data(), dyf.data(), rows, D, D, only.data(),
               static_cast<float *>(nullptr));
    EXPECT_EQ(only, dxf);
  }
}

} // namespace
