//===- Device.cpp - the device interface ----------------------------------===//

#include "runtime/device/Device.h"

using namespace flexmoe;
using namespace flexmoe::device;

int64_t Operand::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

const char *flexmoe::device::precisionName(MathPrecision precision) {
  return precision == MathPrecision::BF16 ? "bf16" : "fp32";
}
