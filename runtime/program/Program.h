//===- Program.h - loading and verifying .fmoe programs ---------*- C++ -*-===//
//
// A program file is untrusted input: loadProgram and verifyProgram run the
// flatbuffers verifier (structure) and then the semantic checks of
// docs/program-format.md (versions, buffers in the arena, instruction
// signatures, MoE placements), and return one clear message for the first
// problem found. Everything downstream may assume a verified program.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_PROGRAM_PROGRAM_H
#define FLEXMOE_RUNTIME_PROGRAM_PROGRAM_H

#include "runtime/plan/Placement.h"
#include "runtime/schema/program_generated.h"
#include "runtime/support/Status.h"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace flexmoe::program {

/// The program format this runtime reads: any minor version of this major.
inline constexpr uint32_t kFormatVersionMajor = 1;
inline constexpr uint32_t kFormatVersionMinor = 0;

/// Bytes per element of a buffer's element type.
int64_t elementSize(fb::ElementType type);

/// True for buffers that live across steps (parameters, optimizer state,
/// inputs): they never share arena space.
bool isPersistent(fb::BufferKind kind);

/// A verified program and the bytes it lives in.
class LoadedProgram {
public:
  LoadedProgram(std::vector<uint8_t> bytes,
                std::vector<plan::Placement> placements)
      : bytes_(std::move(bytes)), placements_(std::move(placements)) {}

  // The flatbuffer points into bytes_; moving the vector keeps its storage.
  LoadedProgram(LoadedProgram &&) = default;
  LoadedProgram &operator=(LoadedProgram &&) = default;
  LoadedProgram(const LoadedProgram &) = delete;
  LoadedProgram &operator=(const LoadedProgram &) = delete;

  const fb::Program &program() const { return *fb::GetProgram(bytes_.data()); }
  const std::vector<uint8_t> &bytes() const { return bytes_; }
  /// The initial placement of every MoE layer, in layer order.
  const std::vector<plan::Placement> &placements() const { return placements_; }

private:
  std::vector<uint8_t> bytes_;
  std::vector<plan::Placement> placements_;
};

/// Checks `bytes` (structure and semantics) and returns the program root,
/// which points into `bytes`.
StatusOr<const fb::Program *> verifyProgram(std::span<const uint8_t> bytes);

/// Takes ownership of `bytes` and verifies them.
StatusOr<LoadedProgram> loadProgramFromBytes(std::vector<uint8_t> bytes);

/// Reads and verifies a program file; errors name the file.
StatusOr<LoadedProgram> loadProgram(const std::string &path);

/// The placement of one MoE layer as the plan library sees it.
plan::Placement toPlacement(const fb::Placement &placement);

} // namespace flexmoe::program

#endif // FLEXMOE_RUNTIME_PROGRAM_PROGRAM_H
