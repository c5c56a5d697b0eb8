//===- ProgramBuilder.h - small programs for the loader tests ---*- C++ -*-===//
//
// A plain C++ description of a program that the tests mutate and serialise
// with the flatbuffers builder, so that every semantic check can be hit by
// changing one field of a valid program.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_TEST_UNIT_PROGRAM_PROGRAMBUILDER_H
#define FLEXMOE_TEST_UNIT_PROGRAM_PROGRAMBUILDER_H

#include "runtime/schema/program_generated.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace flexmoe::testing {

struct BufferDesc {
  std::string name;
  fb::BufferKind kind = fb::BufferKind::Activation;
  fb::ElementType type = fb::ElementType::F32;
  std::vector<int64_t> shape;
  uint64_t offset = 0;
  uint64_t size = 0;
  fb::InitKind init = fb::InitKind::None;
  float initStd = 0;
  std::string paramName;
  int32_t stateOf = -1;
  int32_t moeLayer = -1;
  int32_t aliasOf = -1;
  /// -1: the buffer's index.
  int64_t id = -1;
};

using AttrsFn =
    std::function<flatbuffers::Offset<void>(flatbuffers::FlatBufferBuilder &)>;

struct InstructionDesc {
  fb::OpCode opcode;
  std::vector<uint32_t> inputs;
  std::vector<uint32_t> outputs;
  int32_t moeLayer = -1;
  fb::OpAttrs attrsType = fb::OpAttrs::NONE;
  AttrsFn attrs;
};

struct MoeLayerDesc {
  std::string name;
  int32_t numExperts = 4;
  int32_t topK = 1;
  int32_t dModel = 8;
  int32_t ffnHidden = 16;
  int32_t capacity = 0;
  int32_t worldSize = 2;
  int32_t slotsPerDevice = 2;
  std::vector<std::vector<int32_t>> replicas;
  /// Empty: computed with the slot rule from `replicas`.
  std::vector<int32_t> slotTable;
  /// Non-empty: the replica groups are derived from these lists instead of
  /// `replicas` (to write inconsistent tables).
  std::vector<std::vector<int32_t>> groupReplicas;
  bool omitPlacement = false;
  bool omitReplicaGroups = false;
};

struct ProgramDesc {
  uint32_t versionMajor = 1;
  uint32_t versionMinor = 0;
  int32_t worldSize = 2;
  uint64_t arenaSize = 0;
  std::vector<BufferDesc> buffers;
  std::vector<MoeLayerDesc> layers;
  std::vector<InstructionDesc> instructions;
  int32_t lossBuffer = -1;
  std::vector<std::pair<uint32_t, uint32_t>> updates;
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;

  /// Appends a buffer with its size from the shape; returns its id.
  uint32_t add(BufferDesc buffer);
  /// Packs every non-view buffer one after the other and sets the arena
  /// size; views take the offset of their source.
  void layout();
};

/// Serialises `desc` exactly as given (no fix-ups).
std::vector<uint8_t> serialize(const ProgramDesc &desc);

/// A valid single-layer MoE training step on 2 devices: embedding, a MoE
/// layer (gate, dispatch, all-to-all, experts, combine), a linear head, the
/// loss, part of the backward pass and AdamW on the head.
ProgramDesc tinyMoeProgram();

/// The index of the first instruction with `opcode` in `desc`.
size_t findInstruction(const ProgramDesc &desc, fb::OpCode opcode);
/// The id of the buffer called `name`.
uint32_t findBuffer(const ProgramDesc &desc, const std::string &name);

/// An activation buffer of `shape` (the kind most test programs add).
BufferDesc activation(std::string name, std::vector<int64_t> shape,
                      fb::ElementType type = fb::ElementType::F32);

/// The error message of verifying `desc`, or "" when it is accepted.
std::string verifyError(const ProgramDesc &desc);

/// Expects the verifier to reject `desc` with a message containing
/// `substring`.
#define EXPECT_REJECTED(desc, substring)                                       \
  do {                                                                         \
    std::string message = ::flexmoe::testing::verifyError(desc);               \
    EXPECT_NE(message.find(substring), std::string::npos)                      \
        << "expected an error containing \"" << (substring) << "\", got \""    \
        << message << "\"";                                                    \
  } while (false)

} // namespace flexmoe::testing

#endif // FLEXMOE_TEST_UNIT_PROGRAM_PROGRAMBUILDER_H
