//===- Bf16TestUtil.h - helpers of the bf16 GEMM tests ----------*- C++ -*-===//
//
// bfloat16 rounding on the host (round to nearest even, as
// __float2bfloat16_rn), inputs already representable in bf16, and the
// options of a BF16 CudaDevice (for GpuTestUtil.h's runOnGpu).
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_TEST_GPU_BF16TESTUTIL_H
#define FLEXMOE_TEST_GPU_BF16TESTUTIL_H

#include "GpuTestUtil.h"

#include <cstdint>
#include <cstring>

namespace flexmoe::gpu_testing {

/// v rounded to the nearest bfloat16 (ties to even), as a float. NaN stays
/// NaN; values past the largest bf16 round to infinity, as on the GPU.
inline float roundToBf16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u)
    return v;
  bits += 0x7fffu + ((bits >> 16) & 1u);
  bits &= 0xffff0000u;
  float rounded;
  std::memcpy(&rounded, &bits, sizeof(rounded));
  return rounded;
}

inline std::vector<float> roundedToBf16(std::vector<float> values) {
  for (float &v : values)
    v = roundToBf16(v);
  return values;
}

/// Seeded random floats in [lo, hi), each exactly representable in bf16
/// (and never zero: the rounding keeps GpuTestUtil's nudge away from 0).
inline HostTensor bf16Floats(std::vector<int64_t> shape, uint32_t seed,
                             float lo = -1.0f, float hi = 1.0f) {
  HostTensor t = floats(std::move(shape), seed, lo, hi);
  t.f32 = roundedToBf16(std::move(t.f32));
  return t;
}

/// The root mean square of `values` (1 for an empty vector).
inline double rms(const std::vector<float> &values) {
  if (values.empty())
    return 1.0;
  double sum = 0;
  for (float v : values)
    sum += double(v) * v;
  return std::sqrt(sum / values.size());
}

/// allClose with the absolute tolerance scaled to the output's size:
/// |actual − expected| ≤ rel · (|expected| + rms(expected)). Rounding
/// errors of a sum scale with its terms, not with its (possibly cancelled)
/// value, so elements near zero get the typical element's allowance.
inline ::testing::AssertionResult
closeRelativeToRms(const std::vector<float> &expected,
                   const std::vector<float> &actual, double rel) {
  return allClose(expected, actual, rel, rel * rms(expected));
}

inline cuda::CudaDeviceOptions bf16Options() {
  cuda::CudaDeviceOptions options;
  options.deterministic = true;
  options.precision = device::MathPrecision::BF16;
  return options;
}

} // namespace flexmoe::gpu_testing

#endif // FLEXMOE_TEST_GPU_BF16TESTUTIL_H
