//===- Pipelines.h - named pass pipelines -----------------------*- C++ -*-===//
#ifndef FLEXMOE_COMPILER_PIPELINES_H
#define FLEXMOE_COMPILER_PIPELINES_H

namespace flexmoe {

/// Registers the named pipelines (flexmoe-train-pipeline, ...) with MLIR's
/// pass registry, so that flexmoe-opt and --pass-pipeline know them.
void registerPipelines();

} // namespace flexmoe

#endif // FLEXMOE_COMPILER_PIPELINES_H
