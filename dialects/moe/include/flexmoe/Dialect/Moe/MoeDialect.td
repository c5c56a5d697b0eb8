//===- MoeDialect.td - the moe dialect ------------------------*- tablegen -*-===//
#ifndef FLEXMOE_DIALECT_MOE_MOEDIALECT
#define FLEXMOE_DIALECT_MOE_MOEDIALECT

include "mlir/IR/OpBase.td"

def Moe_Dialect : Dialect {
  let name = "moe";
  let summary = "Mixture-of-Experts layers, their expansion, routing and "
                "expert placement";
  let description = [{
    The `moe` dialect holds Mixture-of-Experts layers at two levels: the
    whole layer (`moe.layer`) as a model builder writes it, and its
    expansion into gate, dispatch, expert computation and combine (plus their
    gradients and the collectives that SPMD partitioning inserts). The
    `#moe.placement` attribute says which devices hold a replica of which
    expert; it is data, carried by every op of a placed layer.
  }];
  let cppNamespace = "::flexmoe::moe";
  let useDefaultAttributePrinterParser = 1;
  let extraClassDeclaration = [{
    /// Registers #moe.placement (in MoeAttrs.cpp, beside its storage).
    void registerAttributes();
  }];
}

class Moe_Op<string mnemonic, list<Trait> traits = []>
    : Op<Moe_Dialect, mnemonic, traits>;

#endif // FLEXMOE_DIALECT_MOE_MOEDIALECT
