//===- ExecOps.h - exec dialect ops -----------------------------*- C++ -*-===//
#ifndef FLEXMOE_DIALECT_EXEC_EXECOPS_H
#define FLEXMOE_DIALECT_EXEC_EXECOPS_H

#include "flexmoe/Dialect/Exec/ExecDialect.h"
#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "flexmoe/Dialect/Exec/ExecEnums.h.inc"

#define GET_TYPEDEF_CLASSES
#include "flexmoe/Dialect/Exec/ExecTypes.h.inc"

#define GET_OP_CLASSES
#include "flexmoe/Dialect/Exec/ExecOps.h.inc"

namespace flexmoe::exec {

/// The kinds of value an instruction attribute can have.
enum class AttrKind { I64, F32, Bool, Str, I64Array };

/// One attribute of an opcode, under its docs/IR.md name. Attributes with a
/// default may be omitted on the source nn / moe op; lower-to-exec fills
/// them in, so that every exec instruction carries all of its attributes.
struct AttrSpec {
  llvm::StringLiteral name;
  AttrKind kind;
  bool hasDefault = false;
  double numericDefault = 0;
  llvm::StringLiteral stringDefault = "";
  /// For Str: the allowed values, separated by '|'.
  llvm::StringLiteral allowed = "";
};

/// The signature of an opcode: what lower-to-exec, the verifiers and the
/// program translation agree on.
struct OpcodeSpec {
  /// The op of docs/IR.md it comes from ("nn.linear").
  llvm::StringLiteral irName;
  /// One character per operand: 'f' (f32), 'i' (i32) or '*' (any).
  llvm::StringLiteral inputTypes;
  llvm::StringLiteral outputTypes;
  unsigned minInputs;
  unsigned maxInputs;
  bool variadicSameCount;
  bool needsLayer;
  bool isCollective;
  llvm::ArrayRef<AttrSpec> attrs;
};

const OpcodeSpec &getOpcodeSpec(Opcode opcode);

/// True for buffers that live across steps and never share arena space.
bool isPersistent(BufferKind kind);

} // namespace flexmoe::exec

#endif // FLEXMOE_DIALECT_EXEC_EXECOPS_H
