//===- MoeCommon.h - checks shared by the moe kernels ------------*- C++
//-*-===//
//
// Private to the Moe*.cpp kernel files: the validation every moe kernel runs
// before it touches memory.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_MOECOMMON_H
#define FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_MOECOMMON_H

#include "runtime/support/Status.h"

#include <cstdint>
#include <limits>

namespace flexmoe::cpu::detail {

/// Every size must be ≥ 0 (an empty batch is legal).
inline Status checkNonNegative(const char *op, const char *what,
                               int64_t value) {
  if (value < 0)
    return errorf(op, ": ", what, " is ", value, ", expected ≥ 0");
  return Status::ok();
}

/// a·b must fit in int64_t (and, for row counts, in the int32 positions).
inline Status checkProduct(const char *op, const char *what, int64_t a,
                           int64_t b, int64_t limit) {
  if (a != 0 && b > limit / a)
    return errorf(op, ": ", what, " (", a, " × ", b, ") exceeds ", limit);
  return Status::ok();
}

inline constexpr int64_t kMaxRows = std::numeric_limits<int32_t>::max();

/// Every expert id must lie in [0, numExperts).
inline Status checkExpertIds(const char *op, const int32_t *expertIds,
                             int64_t numTokens, int64_t topK,
                             int64_t numExperts) {
  for (int64_t t = 0; t < numTokens; ++t)
    for (int64_t j = 0; j < topK; ++j) {
      const int32_t e = expertIds[t * topK + j];
      if (e < 0 || e >= numExperts)
        return errorf(op, ": expert id ", e, " of token ", t, ", choice ", j,
                      " is outside [0, ", numExperts, ")");
    }
  return Status::ok();
}

/// Every position must lie in [-1, numRows) (−1 marks a dropped copy).
inline Status checkPositions(const char *op, const int32_t *positions,
                             int64_t numTokens, int64_t topK, int64_t numRows) {
  for (int64_t t = 0; t < numTokens; ++t)
    for (int64_t j = 0; j < topK; ++j) {
      const int32_t p = positions[t * topK + j];
      if (p < -1 || p >= numRows)
        return errorf(op, ": position ", p, " of token ", t, ", choice ", j,
                      " is outside [-1, ", numRows, ")");
    }
  return Status::ok();
}

} // namespace flexmoe::cpu::detail

#endif // FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_MOECOMMON_H
