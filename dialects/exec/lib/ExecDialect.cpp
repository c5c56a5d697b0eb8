//===- ExecDialect.cpp - the exec dialect -------------------------------------===//
#include "flexmoe/Dialect/Exec/ExecDialect.h"
#include "flexmoe/Dialect/Exec/ExecOps.h"

using namespace mlir;
using namespace flexmoe::exec;

#include "flexmoe/Dialect/Exec/ExecDialect.cpp.inc"

void ExecDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "flexmoe/Dialect/Exec/ExecOps.cpp.inc"
      >();
}
