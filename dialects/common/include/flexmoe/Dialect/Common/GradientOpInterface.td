//===- GradientOpInterface.td - per-op gradient rules ------*- tablegen -*-===//
//
// The autodiff pass builds a training step from per-op gradient rules. Each
// differentiable op implements this interface (as an external model, see
// passes/lib/Gradients*.cpp), so a new op only needs its rule to take part.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXMOE_DIALECT_COMMON_GRADIENTOPINTERFACE
#define FLEXMOE_DIALECT_COMMON_GRADIENTOPINTERFACE

include "mlir/IR/OpBase.td"

def GradientOpInterface : OpInterface<"GradientOpInterface"> {
  let description = [{
    An op whose operands' gradients can be expressed in IR from the gradients
    of its results (reverse-mode differentiation).
  }];
  let cppNamespace = "::flexmoe";
  let methods = [
    InterfaceMethod<[{
        Emits, at the builder's insertion point, the ops computing the
        gradient of the loss with respect to each operand. `resultGradients`
        has one entry per result; a null value means that result does not
        reach the loss. `operandGradients` receives one entry per operand; a
        null value means the operand is not differentiable (integer ids) or
        gets no gradient.
      }],
      "::mlir::LogicalResult", "buildGradient",
      (ins "::mlir::OpBuilder &":$builder,
           "::mlir::ArrayRef<::mlir::Value>":$resultGradients,
           "::llvm::SmallVectorImpl<::mlir::Value> &":$operandGradients)>
  ];
}

#endif // FLEXMOE_DIALECT_COMMON_GRADIENTOPINTERFACE
