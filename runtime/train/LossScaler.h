//===- LossScaler.h - dynamic loss scaling ----------------------*- C++ -*-===//
//
// The dynamic loss scale of mixed-precision training (torch.amp.GradScaler's
// rule): start high; a step whose gradients overflow (the executor skips
// its update) halves the scale; `growthInterval` overflow-free steps in a
// row double it. The scale stays a power of two, so scaling and unscaling
// the gradients is exact, and within [1, 2^24].
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_TRAIN_LOSSSCALER_H
#define FLEXMOE_RUNTIME_TRAIN_LOSSSCALER_H

#include "runtime/support/Status.h"

#include <cstdint>

namespace flexmoe::train {

class LossScaler {
public:
  static constexpr double kInitialScale = 65536; ///< 2^16, as GradScaler
  static constexpr double kMaxScale = 16777216;  ///< 2^24
  static constexpr double kMinScale = 1;

  /// `growthInterval` >= 1 overflow-free steps double the scale.
  explicit LossScaler(int64_t growthInterval = 2000,
                      double initialScale = kInitialScale);

  /// The scale of the next step.
  double scale() const { return scale_; }
  /// Overflow-free steps since the last change.
  int64_t goodSteps() const { return goodSteps_; }
  int64_t growthInterval() const { return growthInterval_; }

  /// After a step: `overflowed` when its update was skipped for
  /// non-finite gradients. Returns true when the scale changed.
  bool update(bool overflowed);

  /// A resumed run's state (a checkpoint's scale and good steps); the
  /// scale must be a power of two within [kMinScale, kMaxScale].
  Status restore(double scale, int64_t goodSteps);

private:
  int64_t growthInterval_;
  double scale_;
  int64_t goodSteps_ = 0;
};

} // namespace flexmoe::train

#endif // FLEXMOE_RUNTIME_TRAIN_LOSSSCALER_H
