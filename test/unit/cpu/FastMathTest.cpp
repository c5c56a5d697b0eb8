//===- FastMathTest.cpp - the float tanh approximation --------------------===//

#include "runtime/backends/cpu/kernels/FastMath.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

using flexmoe::cpu::tanhApprox;

namespace {

TEST(FastMath, TanhFloatWithinAFewUlpsOfLibm) {
  double maxError = 0;
  for (double xd = -12; xd <= 12; xd += 1.0 / 4096) {
    const float x = static_cast<float>(xd);
    const double exact = std::tanh(static_cast<double>(x));
    const double error = std::fabs(tanhApprox(x) - exact);
    maxError = std::max(maxError, error);
    // Relative accuracy near 0 as well, where gelu's gradient needs it.
    if (std::fabs(x) < 1)
      ASSERT_LE(error, 4e-7 * std::fabs(exact) + 1e-30) << "x = " << x;
  }
  // Eight float ulps just below 1 (where |tanh| spends most of the line).
  EXPECT_LE(maxError, 8 * std::numeric_limits<float>::epsilon() / 2);
}

TEST(FastMath, TanhFloatIsOddAndBounded) {
  for (float x = 0; x < 30; x += 0.37f) {
    EXPECT_EQ(tanhApprox(-x), -tanhApprox(x));
    EXPECT_LE(std::fabs(tanhApprox(x)), 1.0f);
  }
}

TEST(FastMath, TanhFloatSpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(tanhApprox(inf), 1.0f);
  EXPECT_EQ(tanhApprox(-inf), -1.0f);
  EXPECT_TRUE(std::isnan(tanhApprox(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(tanhApprox(0.0f), 0.0f);
  EXPECT_TRUE(std::signbit(tanhApprox(-0.0f)));
  EXPECT_FLOAT_EQ(tanhApprox(1e-30f), 1e-30f);
}

TEST(FastMath, TanhDoubleIsLibm) {
  for (double x : {-3.5, -1e-9, 0.0, 0.25, 2.0, 40.0})
    EXPECT_EQ(tanhApprox(x), std::tanh(x));
}

} // namespace
