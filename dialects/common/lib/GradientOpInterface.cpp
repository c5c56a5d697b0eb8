//===- GradientOpInterface.cpp --------------------------------------------===//
#include "flexmoe/Dialect/Common/GradientOpInterface.h"

#include "flexmoe/Dialect/Common/GradientOpInterface.cpp.inc"
