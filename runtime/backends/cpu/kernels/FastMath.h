//===- FastMath.h - vectorisable tanh for the float kernels ------*- C++
//-*-===//
//
// std::tanh is a scalar libm call, and the tanh-approximated GELU of every FFN
// and expert spends most of its time there. tanhApprox<float> is a branch-free
// rational approximation (the odd 13/even 6 minimax fit Eigen uses for
// float), which the compiler vectorises inside the kernels' loops; its error
// is a few float ulps over the whole line. double keeps std::tanh: the
// double kernels exist for gradient checks, which want libm's precision.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_FASTMATH_H
#define FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_FASTMATH_H

#include "runtime/support/HostDevice.h"

#include <cmath>

namespace flexmoe::cpu {

/// The float fit, also called by the CUDA kernels (so both backends round
/// alike).
FLEXMOE_HOST_DEVICE inline float tanhApproxFloat(float x) {
  // Beyond ±7.905 the fit's value rounds to ±1 in float; clamping also
  // keeps infinities out of the polynomials (NaN passes through).
  constexpr float kClamp = 7.90531110763549805f;
  const float c = x > kClamp ? kClamp : (x < -kClamp ? -kClamp : x);
  const float x2 = c * c;
  float p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = x2 * p + -8.60467152213735e-11f;
  p = x2 * p + 5.12229709037114e-08f;
  p = x2 * p + 1.48572235717979e-05f;
  p = x2 * p + 6.37261928875436e-04f;
  p = x2 * p + 4.89352455891786e-03f;
  p = c * p;
  float q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = x2 * q + 2.26843463243900e-03f;
  q = x2 * q + 4.89352518554385e-03f;
  return p / q;
}

template <typename T> inline T tanhApprox(T x) { return std::tanh(x); }

template <> inline float tanhApprox<float>(float x) {
  return tanhApproxFloat(x);
}

} // namespace flexmoe::cpu

#endif // FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_FASTMATH_H
