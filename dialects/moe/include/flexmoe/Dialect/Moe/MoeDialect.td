//===- MoeDialect.td - the moe dialect ------------------------*- tablegen -*-===//
#ifndef FLEXMOE_DIALECT_MOE_MOEDIALECT
#define FLEXMOE_DIALECT_MOE_MOEDIALECT

include "mlir/IR/OpBase.td"

def Moe_Dialect : Dialect {
  let name = "moe";
  let summary = "TODO(summary)";
  let cppNamespace = "::flexmoe::moe";
}

class Moe_Op<string mnemonic, list<Trait> traits = []>
    : Op<Moe_Dialect, mnemonic, traits>;

#endif // FLEXMOE_DIALECT_MOE_MOEDIALECT
