//===- ProgramTranslation.cpp - exec → .fmoe program ----------------------===//
#include "flexmoe/Compiler/ProgramTranslation.h"

mlir::LogicalResult flexmoe::translateExecToProgram(mlir::ModuleOp module,
                                                    llvm::raw_ostream &os) {
  (void)os;
  return module.emitError("program translation is not implemented yet");
}
