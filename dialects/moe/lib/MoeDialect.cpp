//===- MoeDialect.cpp - the moe dialect -------------------------------------===//
#include "flexmoe/Dialect/Moe/MoeDialect.h"
#include "flexmoe/Dialect/Moe/MoeOps.h"

using namespace mlir;
using namespace flexmoe::moe;

#include "flexmoe/Dialect/Moe/MoeDialect.cpp.inc"

void MoeDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "flexmoe/Dialect/Moe/MoeOps.cpp.inc"
      >();
}
