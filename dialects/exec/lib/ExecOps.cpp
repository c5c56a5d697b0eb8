//===- ExecOps.cpp - exec dialect ops ---------------------------------------===//
#include "flexmoe/Dialect/Exec/ExecOps.h"

using namespace mlir;
using namespace flexmoe::exec;

#define GET_OP_CLASSES
#include "flexmoe/Dialect/Exec/ExecOps.cpp.inc"
