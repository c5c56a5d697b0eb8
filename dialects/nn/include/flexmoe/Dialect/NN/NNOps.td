//===- NNOps.td - nn dialect ops ---------------------------*- tablegen -*-===//
#ifndef FLEXMOE_DIALECT_NN_NNOPS
#define FLEXMOE_DIALECT_NN_NNOPS

include "flexmoe/Dialect/NN/NNDialect.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

// Every op prints as `nn.op %a, %b {attrs} : (operand types) -> result types`.
class NN_PureOp<string mnemonic, list<Trait> traits = []>
    : NN_Op<mnemonic, !listconcat(traits, [Pure])> {
  let assemblyFormat = "operands attr-dict `:` functional-type(operands, results)";
}

def NN_AddOp : NN_PureOp<"add", [InferTypeOpAdaptorWithIsCompatible]> {
  let summary = "elementwise addition with numpy broadcasting";
  let description = [{
    Adds two float tensors; shapes broadcast as in numpy.

    ```mlir
    %c = nn.add %a, %b : (tensor<8x16x64xf32>, tensor<16x64xf32>) -> tensor<8x16x64xf32>
    ```
  }];
  let arguments = (ins AnyTensor:$lhs, AnyTensor:$rhs);
  let results = (outs AnyTensor:$result);
}

#endif // FLEXMOE_DIALECT_NN_NNOPS
