//===- ExecDialect.td - the exec dialect ------------------------*- tablegen -*-===//
#ifndef FLEXMOE_DIALECT_EXEC_EXECDIALECT
#define FLEXMOE_DIALECT_EXEC_EXECDIALECT

include "mlir/IR/OpBase.td"

def Exec_Dialect : Dialect {
  let name = "exec";
  let summary = "The per-device program: buffers in one arena, kernels, collectives";
  let description = [{
    `exec` is the last IR of the training pipeline and maps one to one onto
    the program file format (`runtime/schema/program.fbs`,
    docs/program-format.md): an `exec.program` holds the buffer table
    (`exec.buffer`, `exec.view`), the MoE layer table (`exec.moe_layer`) and
    the instruction stream (`exec.kernel`, `exec.collective`) in program
    order. Buffers are SSA values of type `!exec.buffer<shape x type>`;
    instructions read their `ins` and write their `outs`.
  }];
  let cppNamespace = "::flexmoe::exec";
  let useDefaultTypePrinterParser = 1;
}

class Exec_Op<string mnemonic, list<Trait> traits = []>
    : Op<Exec_Dialect, mnemonic, traits>;

#endif // FLEXMOE_DIALECT_EXEC_EXECDIALECT
