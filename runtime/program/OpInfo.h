//===- OpInfo.h - the signature of every program opcode ---------*- C++ -*-===//
//
// What the program verifier (and the executor) know about each opcode: how
// many inputs and outputs it takes, the element type each operand must have
// where it is fixed, which attribute table it carries and whether it belongs
// to a MoE layer. docs/program-format.md lists the same table.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_PROGRAM_OPINFO_H
#define FLEXMOE_RUNTIME_PROGRAM_OPINFO_H

#include "runtime/schema/program_generated.h"

#include <string_view>

namespace flexmoe::program {

struct OpInfo {
  /// The op's name in docs/IR.md ("nn.linear", "moe.all_to_all", ...).
  std::string_view irName;
  /// One character per operand: 'f' (f32), 'i' (i32) or '*' (any; for the
  /// shape ops, the same element type as the first input). A trailing
  /// optional input is counted in `maxInputs` only.
  std::string_view inputTypes;
  std::string_view outputTypes;
  int minInputs;
  int maxInputs;
  /// True when inputs and outputs are variadic f32 lists of the same length
  /// (replica_grad_sync); the type strings are empty then.
  bool variadicSameCount = false;
  fb::OpAttrs attrs = fb::OpAttrs::NONE;
  /// The instruction must name its MoE layer.
  bool needsMoeLayer = false;
};

/// The last opcode this runtime knows; larger values are rejected.
inline constexpr fb::OpCode kMaxOpCode = fb::OpCode::MAX;

/// The signature of `opcode`; nullptr for an opcode this runtime does not
/// know (a file from a newer minor version).
const OpInfo *lookupOpInfo(fb::OpCode opcode);

} // namespace flexmoe::program

#endif // FLEXMOE_RUNTIME_PROGRAM_OPINFO_H
