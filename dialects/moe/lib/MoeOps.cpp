//===- MoeOps.cpp - moe dialect ops ---------------------------------------===//
#include "flexmoe/Dialect/Moe/MoeOps.h"

using namespace mlir;
using namespace flexmoe::moe;

#define GET_OP_CLASSES
#include "flexmoe/Dialect/Moe/MoeOps.cpp.inc"
