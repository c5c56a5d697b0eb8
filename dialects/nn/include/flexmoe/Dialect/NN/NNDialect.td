//===- NNDialect.td - the nn dialect -----------------------*- tablegen -*-===//
#ifndef FLEXMOE_DIALECT_NN_NNDIALECT
#define FLEXMOE_DIALECT_NN_NNDIALECT

include "mlir/IR/OpBase.td"

def NN_Dialect : Dialect {
  let name = "nn";
  let summary = "ONNX-like tensor ops for transformer models and their gradients";
  let description = [{
    The `nn` dialect holds the dense part of a model on value-semantic
    tensors: embedding, linear, layer_norm, attention, activations, losses,
    the gradient ops the autodiff pass emits, and the AdamW update.
  }];
  let cppNamespace = "::flexmoe::nn";
}

class NN_Op<string mnemonic, list<Trait> traits = []>
    : Op<NN_Dialect, mnemonic, traits>;

#endif // FLEXMOE_DIALECT_NN_NNDIALECT
