//===- ProgramTranslation.h - exec → .fmoe program --------------*- C++ -*-===//
#ifndef FLEXMOE_COMPILER_PROGRAMTRANSLATION_H
#define FLEXMOE_COMPILER_PROGRAMTRANSLATION_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LogicalResult.h"
#include "llvm/Support/raw_ostream.h"

namespace flexmoe {

/// Serialises a module holding one exec.program into the flatbuffers program
/// format (runtime/schema/program.fbs). Emits diagnostics and fails on IR the
/// schema cannot express; writes nothing to `os` then.
mlir::LogicalResult translateExecToProgram(mlir::ModuleOp module,
                                           llvm::raw_ostream &os);

} // namespace flexmoe

#endif // FLEXMOE_COMPILER_PROGRAMTRANSLATION_H
