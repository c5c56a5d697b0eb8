//===- LossScaler.cpp - dynamic loss scaling ------------------------------===//

#include "runtime/train/LossScaler.h"

#include <algorithm>
#include <cmath>

using namespace flexmoe;
using namespace flexmoe::train;

LossScaler::LossScaler(int64_t growthInterval, double initialScale)
    : growthInterval_(std::max<int64_t>(1, growthInterval)),
      scale_(std::clamp(initialScale, kMinScale, kMaxScale)) {}

bool LossScaler::update(bool overflowed) {
  double before = scale_;
  if (overflowed) {
    scale_ = std::max(kMinScale, scale_ / 2);
    goodSteps_ = 0;
  } else if (++goodSteps_ >= growthInterval_) {
    scale_ = std::min(kMaxScale, scale_ * 2);
    goodSteps_ = 0;
  }
  return scale_ != before;
}

Status LossScaler::restore(double scale, int64_t goodSteps) {
  int exponent = 0;
  if (!std::isfinite(scale) || std::frexp(scale, &exponent) != 0.5 ||
      scale < kMinScale || scale > kMaxScale)
    return errorf("a dynamic loss scale must be a power of two in [1, 2^24], "
                  "got ",
                  scale);
  if (goodSteps < 0 || goodSteps >= growthInterval_)
    return errorf("a dynamic loss scale's good-step count must lie in [0, ",
                  growthInterval_, "), got ", goodSteps);
  scale_ = scale;
  goodSteps_ = goodSteps;
  return Status::ok();
}
