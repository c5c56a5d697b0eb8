//===- ExecDialect.td - the exec dialect ------------------------*- tablegen -*-===//
#ifndef FLEXMOE_DIALECT_EXEC_EXECDIALECT
#define FLEXMOE_DIALECT_EXEC_EXECDIALECT

include "mlir/IR/OpBase.td"

def Exec_Dialect : Dialect {
  let name = "exec";
  let summary = "TODO(summary)";
  let cppNamespace = "::flexmoe::exec";
}

class Exec_Op<string mnemonic, list<Trait> traits = []>
    : Op<Exec_Dialect, mnemonic, traits>;

#endif // FLEXMOE_DIALECT_EXEC_EXECDIALECT
