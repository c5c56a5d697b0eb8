//===- Parallel.h - when a kernel loop is worth the OpenMP threads -*- C++
//-*-===//
//
// A fork-join costs microseconds on an idle machine and up to a scheduler time
// slice on a loaded one (a thread of the team may be waiting for a core), so
// loops over little work (a bias's AdamW update, a layer norm of a few rows)
// run on the calling thread. The kernels are bitwise independent of the
// thread count, so the choice changes only the time.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_PARALLEL_H
#define FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_PARALLEL_H

#include <cstdint>

namespace flexmoe::cpu {

namespace detail {
inline int64_t &minParallelWork() {
  static int64_t work = int64_t(1) << 15;
  return work;
}
} // namespace detail

/// Whether a loop over `work` elements (or comparable units) should fork.
inline bool worthThreads(int64_t work) {
  return work >= detail::minParallelWork();
}

/// The threshold below which loops stay serial (default 2^15); returns the
/// previous one. Tests set 0 so that every loop really splits.
inline int64_t setMinParallelWork(int64_t work) {
  const int64_t previous = detail::minParallelWork();
  detail::minParallelWork() = work;
  return previous;
}

} // namespace flexmoe::cpu

#endif // FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_PARALLEL_H
