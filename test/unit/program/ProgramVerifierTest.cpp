//===- ProgramVerifierTest.cpp - loading and verifying .fmoe files --------===//
#include "ProgramBuilder.h"
#include "runtime/program/Program.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <limits>
#include <random>

using namespace flexmoe;
using namespace flexmoe::testing;
using fb::BufferKind;
using fb::ElementType;
using fb::OpAttrs;
using fb::OpCode;

namespace {

TEST(ProgramVerifier, AcceptsTheTinyMoeProgram) {
  ProgramDesc desc = tinyMoeProgram();
  std::vector<uint8_t> bytes = serialize(desc);
  StatusOr<const fb::Program *> result = program::verifyProgram(bytes);
  ASSERT_TRUE(result) << result.status().message();
  const fb::Program &p = **result;
  EXPECT_EQ(p.world_size(), 2);
  EXPECT_EQ(p.buffers()->size(), desc.buffers.size());
  EXPECT_EQ(p.instructions()->size(), desc.instructions.size());
  ASSERT_EQ(p.moe_layers()->size(), 1u);
  EXPECT_EQ(p.moe_layers()->Get(0)->name()->str(), "moe1");
}

TEST(ProgramVerifier, LoadsFromAFileAndKeepsThePlacement) {
  std::vector<uint8_t> bytes = serialize(tinyMoeProgram());
  std::string path = ::testing::TempDir() + "/tiny.fmoe";
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char *>(bytes.data()), bytes.size());
  }
  StatusOr<program::LoadedProgram> loaded = program::loadProgram(path);
  ASSERT_TRUE(loaded) << loaded.status().message();
  // Moving the program keeps the flatbuffer valid: it points into the bytes.
  program::LoadedProgram moved = std::move(loaded).value();
  EXPECT_EQ(moved.program().instructions()->size(), 15u);
  ASSERT_EQ(moved.placements().size(), 1u);
  const plan::Placement &placement = moved.placements()[0];
  EXPECT_EQ(placement.worldSize, 2);
  EXPECT_EQ(placement.slotsPerDevice, 3);
  EXPECT_EQ(placement.replicas,
            (std::vector<std::vector<int64_t>>{{0}, {1}, {0, 1}, {1}}));
  std::remove(path.c_str());
}

TEST(ProgramVerifier, NamesAMissingFile) {
  StatusOr<program::LoadedProgram> loaded =
      program::loadProgram("/nonexistent/dir/x.fmoe");
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.status().message(),
            "cannot open program file '/nonexistent/dir/x.fmoe'");
}

TEST(ProgramVerifier, ErrorsFromAFileNameTheFile) {
  std::string path = ::testing::TempDir() + "/bad.fmoe";
  {
    std::ofstream out(path, std::ios::binary);
    out << "hello world, not a program";
  }
  StatusOr<program::LoadedProgram> loaded = program::loadProgram(path);
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.status().message(),
            path + ": not a flexmoe program (file identifier 'o wo', "
                   "expected 'FMOE')");
  std::remove(path.c_str());
}

TEST(ProgramVerifier, RejectsShortAndForeignFiles) {
  std::vector<uint8_t> empty;
  StatusOr<const fb::Program *> r = program::verifyProgram(empty);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().message(),
            "file is too short to be a program (0 bytes)");

  std::vector<uint8_t> bytes = serialize(tinyMoeProgram());
  bytes[4] = 'X';
  r = program::verifyProgram(bytes);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().message(),
            "not a flexmoe program (file identifier 'XMOE', expected 'FMOE')");
}

TEST(ProgramVerifier, RejectsEveryTruncationOfData) {
  std::vector<uint8_t> bytes = serialize(tinyMoeProgram());
  for (size_t length = 0; length < bytes.size(); ++length) {
    std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + length);
    StatusOr<const fb::Program *> r = program::verifyProgram(prefix);
    if (r) {
      // Only the builder's trailing alignment padding may go unnoticed.
      size_t dropped = bytes.size() - length;
      EXPECT_LT(dropped, 8u) << "a prefix of " << length << " bytes passed";
      for (size_t k = length; k < bytes.size(); ++k)
        ASSERT_EQ(bytes[k], 0) << "a prefix of " << length << " passed";
      continue;
    }
    EXPECT_FALSE(r.status().message().empty());
  }
}

TEST(ProgramVerifier, SurvivesRandomCorruption) {
  const std::vector<uint8_t> valid = serialize(tinyMoeProgram());
  std::mt19937 rng(20231125);
  std::uniform_int_distribution<size_t> position(0, valid.size() - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> flips(1, 8);
  int rejected = 0;
  const int trials = 5000;
  for (int trial = 0; trial < trials; ++trial) {
    std::vector<uint8_t> bytes = valid;
    for (int k = flips(rng); k > 0; --k)
      bytes[position(rng)] = static_cast<uint8_t>(byte(rng));
    StatusOr<const fb::Program *> r = program::verifyProgram(bytes);
    if (!r) {
      ++rejected;
      EXPECT_FALSE(r.status().message().empty());
      continue;
    }
    // Accepted: every field the verifier vouched for must be readable.
    const fb::Program &p = **r;
    for (const fb::Instruction *inst : *p.instructions())
      for (uint32_t id : *inst->inputs())
        ASSERT_LT(id, p.buffers()->size());
  }
  // Most random corruptions break something the verifier sees.
  EXPECT_GT(rejected, trials / 2);
}

TEST(ProgramVerifier, RejectsAnotherMajorVersion) {
  ProgramDesc desc = tinyMoeProgram();
  desc.versionMajor = 2;
  EXPECT_EQ(verifyError(desc),
            "program format 2.0 is not supported by this runtime (1.x)");
  desc.versionMajor = 1;
  desc.versionMinor = 7;
  EXPECT_EQ(verifyError(desc), "") << "a newer minor version is readable";
}

TEST(ProgramVerifier, ChecksBuffersAgainstTheArena) {
  ProgramDesc desc = tinyMoeProgram();
  uint32_t logits = findBuffer(desc, "logits");
  desc.buffers[logits].offset = desc.arenaSize - 64;
  EXPECT_REJECTED(desc,
                  "buffer " + std::to_string(logits) + " ('logits'): bytes [");
  EXPECT_REJECTED(desc, "lie outside the arena of");

  desc = tinyMoeProgram();
  desc.buffers[logits].offset = ~uint64_t(0) - 8; // offset + size overflows
  EXPECT_REJECTED(desc, "lie outside the arena");
}

TEST(ProgramVerifier, ChecksBufferSizesAgainstShapes) {
  ProgramDesc desc = tinyMoeProgram();
  uint32_t y = findBuffer(desc, "y");
  desc.buffers[y].size -= 4;
  EXPECT_REJECTED(desc, "buffer " + std::to_string(y) +
                            " ('y'): size 252 bytes does not match shape "
                            "[8, 8] x f32 (256 bytes)");

  desc = tinyMoeProgram();
  desc.buffers[y].shape = {1ll << 40, 1ll << 40};
  EXPECT_REJECTED(desc, "is too large");

  desc = tinyMoeProgram();
  desc.buffers[y].shape = {-8, -8};
  EXPECT_REJECTED(desc, "negative dimension");
}

TEST(ProgramVerifier, ChecksBufferIdsAndKinds) {
  ProgramDesc desc = tinyMoeProgram();
  desc.buffers[3].id = 4;
  EXPECT_REJECTED(desc, "has id 4 but sits at index 3");

  desc = tinyMoeProgram();
  desc.buffers[findBuffer(desc, "tokens")].type = ElementType::F32;
  EXPECT_REJECTED(desc, "input of token ids or labels and must be i32");

  desc = tinyMoeProgram();
  desc.buffers[findBuffer(desc, "head")].init = fb::InitKind::None;
  EXPECT_REJECTED(desc, "is a parameter without an initializer");

  desc = tinyMoeProgram();
  desc.buffers[findBuffer(desc, "head")].paramName = "wte";
  EXPECT_REJECTED(desc, "parameter name 'wte' is used twice");

  desc = tinyMoeProgram();
  desc.buffers[findBuffer(desc, "head")].kind = static_cast<BufferKind>(42);
  EXPECT_REJECTED(desc, "unknown buffer kind 42");
}

TEST(ProgramVerifier, ChecksOptimizerStateOwners) {
  ProgramDesc desc = tinyMoeProgram();
  uint32_t m = findBuffer(desc, "head.m");
  desc.buffers[m].stateOf = static_cast<int32_t>(findBuffer(desc, "y"));
  EXPECT_REJECTED(desc, "is optimizer state of buffer");
  EXPECT_REJECTED(desc, "which is not a parameter");

  desc = tinyMoeProgram();
  desc.buffers[m].stateOf = 1000;
  EXPECT_REJECTED(desc, "is optimizer state of buffer 1000, which does not "
                        "exist");
}

TEST(ProgramVerifier, ChecksExpertStateShapes) {
  ProgramDesc desc = tinyMoeProgram();
  uint32_t w1 = findBuffer(desc, "moe1.w1");
  desc.buffers[w1].shape = {4, 8, 12}; // same bytes, wrong slot count
  EXPECT_REJECTED(desc, "is expert state of layer 'moe1' and must have 3 "
                        "slots as leading dimension, not shape [4, 8, 12]");
}

TEST(ProgramVerifier, ChecksViews) {
  ProgramDesc desc = tinyMoeProgram();
  uint32_t flat = findBuffer(desc, "x.flat");
  desc.buffers[flat].offset += 64;
  EXPECT_REJECTED(desc, "is a view of buffer");
  EXPECT_REJECTED(desc, "but differs in offset, size or element type");
}

TEST(ProgramVerifier, ChecksInstructionArity) {
  ProgramDesc desc = tinyMoeProgram();
  size_t linear = findInstruction(desc, OpCode::Linear);
  desc.instructions[linear].inputs.resize(1);
  EXPECT_REJECTED(desc, "instruction " + std::to_string(linear) +
                            " (Linear): takes 2 to 3 inputs, not 1");

  desc = tinyMoeProgram();
  size_t gate = findInstruction(desc, OpCode::Gate);
  desc.instructions[gate].outputs.pop_back();
  EXPECT_REJECTED(desc, "(Gate): produces 3 outputs, not 2");
}

TEST(ProgramVerifier, ChecksBufferIdsInRange) {
  ProgramDesc desc = tinyMoeProgram();
  size_t combine = findInstruction(desc, OpCode::Combine);
  desc.instructions[combine].inputs[1] = 999;
  EXPECT_REJECTED(desc, "(Combine): input 1 names buffer 999 but the program "
                        "has");
}

TEST(ProgramVerifier, ChecksOperandElementTypes) {
  ProgramDesc desc = tinyMoeProgram();
  size_t dispatch = findInstruction(desc, OpCode::Dispatch);
  // expert ids must be i32: pass the f32 probabilities instead.
  desc.instructions[dispatch].inputs[1] = findBuffer(desc, "probs");
  EXPECT_REJECTED(desc, "(Dispatch): input 1 (buffer");
  EXPECT_REJECTED(desc, "('probs')) must be i32");
}

TEST(ProgramVerifier, ChecksLinearShapes) {
  ProgramDesc desc = tinyMoeProgram();
  size_t linear = findInstruction(desc, OpCode::Linear);
  // Fuzzing found this one: K = 8 still matches, but the kernel derives
  // the rows from x and wrote 16 rows of 16 into logits [8, 16].
  desc.instructions[linear].inputs[0] = findBuffer(desc, "recv"); // [16, 8]
  EXPECT_REJECTED(desc, "(Linear): output 0 (y, buffer");
  EXPECT_REJECTED(desc, "('logits')) has shape [8, 16], expected [16, 16]");
  desc.instructions[linear].inputs[0] = findBuffer(desc, "y"); // [8, 8]
  desc.instructions[linear].inputs[1] = findBuffer(desc, "moe1.gate_weight");
  EXPECT_REJECTED(desc, "('logits')) has shape [8, 16], expected [8, 4]");
  desc.instructions[linear].inputs[1] = findBuffer(desc, "wte"); // [16, 8]
  EXPECT_REJECTED(desc, "(Linear): x has K = 8 but the weight has 16 rows");
}

TEST(ProgramVerifier, ChecksAttributeTables) {
  ProgramDesc desc = tinyMoeProgram();
  size_t gate = findInstruction(desc, OpCode::Gate);
  desc.instructions[gate].attrsType = OpAttrs::DispatchAttrs;
  desc.instructions[gate].attrs = [](auto &b) {
    return fb::CreateDispatchAttrs(b, 4, 0).Union();
  };
  EXPECT_REJECTED(desc, "(Gate): carries attributes DispatchAttrs, expected "
                        "GateAttrs");

  desc = tinyMoeProgram();
  desc.instructions[gate].attrs = nullptr; // type set, table absent
  EXPECT_REJECTED(desc, "(Gate): has no GateAttrs table");
}

TEST(ProgramVerifier, ChecksMoeLayerReferences) {
  ProgramDesc desc = tinyMoeProgram();
  size_t experts = findInstruction(desc, OpCode::Experts);
  desc.instructions[experts].moeLayer = -1;
  EXPECT_REJECTED(desc, "(Experts): names MoE layer -1 but the program has 1");

  desc = tinyMoeProgram();
  desc.instructions[findInstruction(desc, OpCode::Linear)].moeLayer = 0;
  EXPECT_REJECTED(desc, "(Linear): is not a MoE op but names MoE layer 0");
}

TEST(ProgramVerifier, ChecksUnknownOpcodes) {
  ProgramDesc desc = tinyMoeProgram();
  desc.instructions[0].opcode = static_cast<OpCode>(500);
  EXPECT_REJECTED(desc, "instruction 0 has opcode 500, unknown to this "
                        "runtime");
}

TEST(ProgramVerifier, ChecksPlacements) {
  ProgramDesc desc = tinyMoeProgram();
  desc.layers[0].replicas[3] = {};
  EXPECT_REJECTED(
      desc, "MoE layer 0 ('moe1'): expert 3 of layer 'moe1' has no replica");

  desc = tinyMoeProgram();
  desc.layers[0].replicas[3] = {2};
  desc.layers[0].slotTable = {0, 2, -1, 1, 3, -1};
  EXPECT_REJECTED(
      desc, "device 2 of expert 3 in layer 'moe1' is out of range [0, 2)");

  desc = tinyMoeProgram();
  desc.layers[0].replicas = {{0}, {0}, {0, 1}, {0}};
  EXPECT_REJECTED(desc,
                  "device 0 holds 4 experts of layer 'moe1' but has 3 slots");

  desc = tinyMoeProgram();
  desc.layers[0].numExperts = 5;
  EXPECT_REJECTED(desc, "placement has 4 experts but the layer has 5");

  desc = tinyMoeProgram();
  desc.layers[0].worldSize = 4;
  EXPECT_REJECTED(desc, "placement is for world size 4 but the program runs "
                        "on 2");

  desc = tinyMoeProgram();
  desc.layers[0].omitPlacement = true;
  EXPECT_REJECTED(desc, "MoE layer 0 ('moe1'): has no placement");
}

TEST(ProgramVerifier, ChecksPlanTables) {
  ProgramDesc desc = tinyMoeProgram();
  desc.layers[0].slotTable = {2, 0, -1, 1, 2, 3};
  EXPECT_REJECTED(desc, "slot 0 of device 0 holds expert 2 but the placement "
                        "puts expert 0 there");

  desc = tinyMoeProgram();
  desc.layers[0].slotTable = {0, 2, 1};
  EXPECT_REJECTED(desc, "slot table has 3 entries, expected world_size x "
                        "slots_per_device = 6");

  desc = tinyMoeProgram();
  desc.layers[0].omitReplicaGroups = true;
  EXPECT_REJECTED(desc, "has 0 replica groups but the placement has 1 "
                        "replicated experts");
}

TEST(ProgramVerifier, ChecksLossAndUpdates) {
  ProgramDesc desc = tinyMoeProgram();
  desc.lossBuffer = -1;
  EXPECT_REJECTED(desc, "the loss buffer -1 does not exist");

  desc = tinyMoeProgram();
  desc.lossBuffer = static_cast<int32_t>(findBuffer(desc, "y"));
  EXPECT_REJECTED(desc, "is a Activation buffer, not a Loss buffer");

  desc = tinyMoeProgram();
  desc.updates[0].second = 0; // the embedding does not write the head
  EXPECT_REJECTED(desc, "in-place update 0: instruction 0 does not write "
                        "buffer");

  desc = tinyMoeProgram();
  desc.updates[0].first = findBuffer(desc, "y");
  EXPECT_REJECTED(desc, "which is not a parameter or optimizer state");
}

TEST(ProgramVerifier, ChecksOptimizerDefaults) {
  ProgramDesc desc = tinyMoeProgram();
  desc.beta1 = 1.0f;
  EXPECT_REJECTED(desc, "optimizer: betas (1, 0.999) must lie in [0, 1)");
  desc = tinyMoeProgram();
  desc.lr = -1.0f;
  EXPECT_REJECTED(desc, "optimizer: learning rate -1 is invalid");
}

TEST(ProgramVerifier, ChecksWorldSize) {
  ProgramDesc desc = tinyMoeProgram();
  desc.worldSize = 0;
  EXPECT_REJECTED(desc, "world size 0 must be in [1, ");
}

} // namespace

namespace {

TEST(ProgramVerifier, ChecksReplicaGroups) {
  // Groups written for a placement that replicates expert 3 instead of 2.
  ProgramDesc desc = tinyMoeProgram();
  desc.layers[0].groupReplicas = {{0}, {1}, {0}, {0, 1}};
  EXPECT_REJECTED(desc, "MoE layer 0 ('moe1'): replica group 0 does not match "
                        "the replicas of expert 2 in the placement");

  // Groups for a placement without replication: one group too few.
  desc = tinyMoeProgram();
  desc.layers[0].groupReplicas = {{0}, {1}, {0}, {1}};
  EXPECT_REJECTED(desc, "has 0 replica groups but the placement has 1 "
                        "replicated experts");
}

TEST(ProgramVerifier, ChecksStateShapesAndLayers) {
  ProgramDesc desc = tinyMoeProgram();
  uint32_t m = findBuffer(desc, "head.m");
  desc.buffers[m].shape = {16, 8};
  EXPECT_REJECTED(desc,
                  "has shape [16, 8] but its parameter has shape [8, 16]");

  desc = tinyMoeProgram();
  desc.buffers[m].moeLayer = 0;
  EXPECT_REJECTED(desc, "belongs to MoE layer 0 but its parameter to -1");

  desc = tinyMoeProgram();
  desc.buffers[findBuffer(desc, "y")].stateOf = 2;
  EXPECT_REJECTED(desc, "names a parameter (state_of) but is not optimizer "
                        "state");

  desc = tinyMoeProgram();
  desc.buffers[findBuffer(desc, "y")].moeLayer = 3;
  EXPECT_REJECTED(desc, "names MoE layer 3 but the program has 1");
}

TEST(ProgramVerifier, ChecksTheLossBufferShapeAndType) {
  ProgramDesc desc = tinyMoeProgram();
  uint32_t loss = findBuffer(desc, "loss");
  desc.buffers[loss].shape = {1};
  EXPECT_REJECTED(desc, "is the loss and must be a scalar, not [1]");

  desc = tinyMoeProgram();
  desc.buffers[loss].type = ElementType::I32;
  EXPECT_REJECTED(desc, "is a Loss buffer and must be f32");
}

TEST(ProgramVerifier, ChecksViewTargets) {
  ProgramDesc desc = tinyMoeProgram();
  uint32_t flat = findBuffer(desc, "x.flat");
  desc.buffers[flat].aliasOf = static_cast<int32_t>(flat);
  EXPECT_REJECTED(desc, "is a view of buffer " + std::to_string(flat) +
                            ", which does not exist");

  // A view of a view.
  desc = tinyMoeProgram();
  BufferDesc second = desc.buffers[flat];
  second.name = "x.flat2";
  second.aliasOf = static_cast<int32_t>(flat);
  desc.buffers.push_back(second);
  EXPECT_REJECTED(desc, "which is itself a view");
}

TEST(ProgramVerifier, ChecksAdamWAndCollectiveShapes) {
  ProgramDesc desc = tinyMoeProgram();
  size_t adamw = findInstruction(desc, OpCode::AdamW);
  desc.instructions[adamw].inputs[1] = findBuffer(desc, "logits"); // [8, 16]
  EXPECT_EQ(verifyError(desc), "") << "logits has the head's shape";
  desc.instructions[adamw].inputs[1] = findBuffer(desc, "y"); // [8, 8]
  EXPECT_REJECTED(desc, "(AdamW): input 1 (gradient, buffer");
  EXPECT_REJECTED(desc, "('y')) has shape [8, 8], expected [8, 16]");

  desc = tinyMoeProgram();
  size_t reduce = findInstruction(desc, OpCode::AllReduceMean);
  desc.instructions[reduce].outputs[0] = findBuffer(desc, "y");
  EXPECT_REJECTED(desc, "(AllReduceMean): output 0 (result, buffer");
}

TEST(ProgramVerifier, ChecksEmbeddingShapes) {
  ProgramDesc desc = tinyMoeProgram();
  size_t embedding = findInstruction(desc, OpCode::Embedding);
  desc.instructions[embedding].outputs[0] = findBuffer(desc, "x.flat");
  EXPECT_REJECTED(desc, "(Embedding): output 0 (y, buffer");
  EXPECT_REJECTED(desc, "('x.flat')) has shape [8, 8], expected [2, 4, 8]");
}

TEST(ProgramVerifier, ChecksNonFiniteOptimizerValues) {
  ProgramDesc desc = tinyMoeProgram();
  desc.lr = std::numeric_limits<float>::quiet_NaN();
  EXPECT_REJECTED(desc, "optimizer: learning rate nan is invalid");
}

} // namespace

namespace {

TEST(ProgramVerifier, AcceptsViewsOfParametersAndChecksTheirFields) {
  // A reshaped parameter: the view inherits kind and layer, but not the
  // parameter's name or initializer.
  ProgramDesc desc = tinyMoeProgram();
  uint32_t head = findBuffer(desc, "head");
  BufferDesc view = desc.buffers[head];
  view.name = "head.flat";
  view.shape = {128};
  view.init = fb::InitKind::None;
  view.paramName.clear();
  view.aliasOf = static_cast<int32_t>(head);
  desc.buffers.push_back(view);
  EXPECT_EQ(verifyError(desc), "");

  desc.buffers.back().paramName = "head";
  EXPECT_REJECTED(desc, "('head.flat'): is a view and cannot carry parameter "
                        "or optimizer state fields; its source does");

  desc.buffers.back().paramName.clear();
  desc.buffers.back().kind = BufferKind::Activation;
  EXPECT_REJECTED(desc, "but differs in kind or MoE layer");
}

} // namespace
