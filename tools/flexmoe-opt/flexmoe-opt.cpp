//===- flexmoe-opt.cpp - the flexmoe IR optimizer driver
//-------------------===//
//
// A thin main over MlirOptMain: every flexmoe dialect, pass and pipeline plus
// the upstream ones they need, so that `flexmoe-opt --help` is the catalogue.
//
//===----------------------------------------------------------------------===//
#include "flexmoe/Compiler/Registration.h"

#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  flexmoe::registerAllDialects(registry);
  flexmoe::registerAllPasses();
  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv, "flexmoe optimizer driver: nn, moe and exec dialects\n",
      registry));
}
