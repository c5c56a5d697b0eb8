//===- Registration.cpp ---------------------------------------------------===//
#include "flexmoe/Compiler/Registration.h"

#include "flexmoe/Compiler/Pipelines.h"
#include "flexmoe/Dialect/Exec/ExecDialect.h"
#include "flexmoe/Dialect/Moe/MoeDialect.h"
#include "flexmoe/Dialect/NN/NNDialect.h"
#include "flexmoe/Passes/Gradients.h"
#include "flexmoe/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Transforms/Passes.h"

void flexmoe::registerAllDialects(mlir::DialectRegistry &registry) {
  registry.insert<mlir::func::FuncDialect, nn::NNDialect, moe::MoeDialect,
                  exec::ExecDialect>();
  registerGradientRules(registry);
}

void flexmoe::registerAllPasses() {
  mlir::registerTransformsPasses();
  registerFlexmoePasses();
  registerPipelines();
}
