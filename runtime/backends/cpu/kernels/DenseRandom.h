//===- DenseRandom.h - counter-based random numbers -------------*- C++ -*-===//
//
// Dropout masks must be reproducible from (seed, step, element index) alone,
// independent of threads and of the order elements are visited, so the
// backward can regenerate the forward's mask. A stateless hash does that.
// The CUDA dropout kernel calls the same functions, so it draws the same
// mask.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_DENSERANDOM_H
#define FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_DENSERANDOM_H

#include "runtime/support/HostDevice.h"

#include <cstdint>

namespace flexmoe::cpu {

/// splitmix64's finaliser: a bijection on 64 bits with good avalanche.
FLEXMOE_HOST_DEVICE inline uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// 64 random bits for element `index` of draw (`seed`, `step`). Chained
/// hashing keeps (seed, step, index) triples from colliding by addition.
FLEXMOE_HOST_DEVICE inline uint64_t counterRandom(uint64_t seed, uint64_t step,
                                                  uint64_t index) {
  return splitmix64(splitmix64(splitmix64(seed) ^ step) ^ index);
}

/// Uniform in [0, 1) with 53 random bits.
FLEXMOE_HOST_DEVICE inline double counterUniform(uint64_t seed, uint64_t step,
                                                 uint64_t index) {
  return static_cast<double>(counterRandom(seed, step, index) >> 11) *
         0x1.0p-53;
}

} // namespace flexmoe::cpu

#endif // FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_DENSERANDOM_H
