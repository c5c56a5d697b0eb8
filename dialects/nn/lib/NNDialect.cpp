//===- NNDialect.cpp - the nn dialect -------------------------------------===//
#include "flexmoe/Dialect/NN/NNDialect.h"
#include "flexmoe/Dialect/NN/NNOps.h"

using namespace mlir;
using namespace flexmoe::nn;

#include "flexmoe/Dialect/NN/NNDialect.cpp.inc"

void NNDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "flexmoe/Dialect/NN/NNOps.cpp.inc"
      >();
}
