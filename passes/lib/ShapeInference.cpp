//===- ShapeInference.cpp - nn-shape-inference pass -----------------------===//
//
// Refines every tensor result in the module's functions to a static type,
// starting from the (static) argument types and going forward through each
// function in order. Ops take part through InferTypeOpInterface, so any
// dialect's ops (nn, moe, ...) are handled alike; ops that cannot infer their
// results (nn.reshape, nn.fill, ...) must state them statically.
//
// Callees are processed before their callers, so that a func.call sees the
// refined signature of the function it calls.
//
//===----------------------------------------------------------------------===//
#include "flexmoe/Passes/Passes.h"

#include "flexmoe/Dialect/Common/TypeUtils.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Interfaces/CallInterfaces.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "llvm/ADT/DenseSet.h"

namespace flexmoe {
#define GEN_PASS_DEF_SHAPEINFERENCE
#include "flexmoe/Passes/Passes.h.inc"
} // namespace flexmoe

using namespace mlir;

namespace {

bool allStatic(TypeRange types) {
  return llvm::all_of(types, flexmoe::hasStaticTensorShape);
}

/// Re-runs `op`'s type inference on its (already refined) operand types and
/// narrows its result types to what both the declaration and the inference
/// say. Leaves incompatible results alone: the verifier reports them.
void refineInferredResults(InferTypeOpInterface op) {
  Operation *operation = op.getOperation();
  SmallVector<Type> inferred;
  // No location: a failure here is reported by the verifier, which runs next.
  if (failed(op.inferReturnTypes(
          operation->getContext(), std::nullopt, operation->getOperands(),
          operation->getRawDictionaryAttrs(), operation->getPropertiesStorage(),
          operation->getRegions(), inferred)) ||
      inferred.size() != operation->getNumResults())
    return;
  for (auto [result, type] : llvm::zip(operation->getResults(), inferred))
    if (Type refined = flexmoe::meetTensorTypes(result.getType(), type))
      result.setType(refined);
}

/// Narrows a call's result types to the callee's (already refined) signature.
void refineCallResults(CallOpInterface call,
                       SymbolTableCollection &symbolTables) {
  auto callee =
      dyn_cast_or_null<func::FuncOp>(call.resolveCallable(&symbolTables));
  if (!callee || callee.getNumResults() != call.getOperation()->getNumResults())
    return;
  for (auto [result, type] :
       llvm::zip(call.getOperation()->getResults(), callee.getResultTypes()))
    if (Type refined = flexmoe::meetTensorTypes(result.getType(), type))
      result.setType(refined);
}

struct ShapeInferencePass
    : flexmoe::impl::ShapeInferenceBase<ShapeInferencePass> {
  using ShapeInferenceBase::ShapeInferenceBase;

  void runOnOperation() override {
    SymbolTableCollection tables;
    symbolTables = &tables;
    SmallVector<func::FuncOp> order;
    if (failed(orderCalleesFirst(order)))
      return signalPassFailure();
    for (func::FuncOp func : order)
      if (failed(inferFunction(func)))
        return signalPassFailure();
  }

private:
  // Set for the duration of runOnOperation (passes must stay copyable).
  SymbolTableCollection *symbolTables = nullptr;

  /// The module's function definitions, every callee before its callers.
  LogicalResult orderCalleesFirst(SmallVectorImpl<func::FuncOp> &order) {
    llvm::DenseSet<Operation *> done, inProgress;
    std::function<LogicalResult(func::FuncOp)> visit =
        [&](func::FuncOp func) -> LogicalResult {
      if (done.contains(func))
        return success();
      if (!inProgress.insert(func).second)
        return func.emitError("nn-shape-inference does not support recursive "
                              "calls; @")
               << func.getSymName()
               << " calls itself, directly or through other functions";
      WalkResult walk = func.walk([&](CallOpInterface call) {
        auto callee =
            dyn_cast_or_null<func::FuncOp>(call.resolveCallable(symbolTables));
        if (callee && !callee.isExternal() && failed(visit(callee)))
          return WalkResult::interrupt();
        return WalkResult::advance();
      });
      if (walk.wasInterrupted())
        return failure();
      inProgress.erase(func);
      done.insert(func);
      order.push_back(func);
      return success();
    };
    for (auto func : getOperation().getOps<func::FuncOp>())
      if (!func.isExternal() && failed(visit(func)))
        return failure();
    return success();
  }

  LogicalResult inferFunction(func::FuncOp func) {
    for (BlockArgument arg : func.getArguments())
      if (!flexmoe::hasStaticTensorShape(arg.getType()))
        return emitError(arg.getLoc())
               << "argument #" << arg.getArgNumber() << " of @"
               << func.getSymName() << " has type " << arg.getType()
               << "; nn-shape-inference needs static argument shapes";

    WalkResult walk = func.walk([&](Operation *op) {
      if (op == func.getOperation() || isa<func::ReturnOp>(op))
        return WalkResult::advance();
      if (failed(inferOp(op)))
        return WalkResult::interrupt();
      return WalkResult::advance();
    });
    if (walk.wasInterrupted())
      return failure();
    return updateSignature(func);
  }

  LogicalResult inferOp(Operation *op) {
    bool infers = false;
    if (auto inferring = dyn_cast<InferTypeOpInterface>(op)) {
      refineInferredResults(inferring);
      infers = true;
    } else if (auto call = dyn_cast<CallOpInterface>(op)) {
      refineCallResults(call, *symbolTables);
    }
    // Operands may have changed type since the input was verified; this is
    // where shape errors hidden behind unranked types come out.
    if (failed(verify(op, /*verifyRecursively=*/false)))
      return failure();
    for (OpResult result : op->getResults()) {
      if (flexmoe::hasStaticTensorShape(result.getType()))
        continue;
      if (infers)
        return op->emitError("cannot infer a static shape for result #")
               << result.getResultNumber() << " of '" << op->getName()
               << "' from its operands (inferred " << result.getType() << ")";
      return op->emitError("cannot infer the shape of '")
             << op->getName() << "'; give its result a static type";
    }
    return success();
  }

  /// Sets the function's result types to those of its return operands.
  LogicalResult updateSignature(func::FuncOp func) {
    SmallVector<Type> resultTypes;
    bool first = true;
    WalkResult walk = func.walk([&](func::ReturnOp ret) {
      if (ret->getParentOp() != func.getOperation())
        return WalkResult::advance();
      TypeRange types = ret.getOperandTypes();
      if (first) {
        resultTypes.assign(types.begin(), types.end());
        first = false;
        return WalkResult::advance();
      }
      if (TypeRange(resultTypes) != types) {
        ret.emitError("returns ")
            << types << " but an earlier return of @" << func.getSymName()
            << " returns " << TypeRange(resultTypes);
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    if (walk.wasInterrupted())
      return failure();
    if (first)
      return success(); // no return: nothing to update
    if (!allStatic(resultTypes))
      return func.emitError("cannot infer static result types for @")
             << func.getSymName();
    func.setType(FunctionType::get(func.getContext(), func.getArgumentTypes(),
                                   resultTypes));
    return verify(func);
  }
};

} // namespace
