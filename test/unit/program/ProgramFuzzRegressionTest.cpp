//===- ProgramFuzzRegressionTest.cpp - programs the fuzzer broke ----------===//
//
// One test per problem that test/fuzz/fuzz_programs.py (or reading the
// kernels while triaging it) found: each is a program that the verifier
// used to accept although flexmoe-run then hung, ran out of memory, wrote
// outside a buffer or printed a broken error. Each must now be rejected
// with a message naming the buffer or instruction.
//
//===----------------------------------------------------------------------===//
#include "ProgramBuilder.h"
#include "runtime/program/Program.h"

#include <gtest/gtest.h>

#include <limits>

using namespace flexmoe;
using namespace flexmoe::testing;
using fb::BufferKind;
using fb::ElementType;
using fb::OpAttrs;
using fb::OpCode;

namespace {

TEST(ProgramFuzzRegression, TheTinyProgramStillPasses) {
  EXPECT_EQ(verifyError(tinyMoeProgram()), "");
}

// arena_size = 2^31 (one corrupted word) passed, since every buffer still
// lay inside it; flexmoe-run then zeroed gigabytes and ran past the
// fuzzer's timeout (at 2^40 and more the allocation failed cleanly).
TEST(ProgramFuzzRegression, RejectsAnArenaFarLargerThanItsBuffers) {
  ProgramDesc desc = tinyMoeProgram();
  uint64_t extent = desc.arenaSize;
  desc.arenaSize = uint64_t{1} << 31;
  EXPECT_REJECTED(desc, "arena_size 2147483648 bytes is far larger than the " +
                            std::to_string(extent) + " bytes its buffers");
  desc.arenaSize = extent + 4096;
  EXPECT_EQ(verifyError(desc), "") << "alignment padding is fine";
}

// A corrupted string length made a buffer's name swallow bytes with a
// newline: the error quoting it spanned two lines.
TEST(ProgramFuzzRegression, NamesInMessagesStayOnOneLine) {
  ProgramDesc desc = tinyMoeProgram();
  desc.buffers[findBuffer(desc, "logits")].name = "log\nits\x80";
  std::string message = verifyError(desc);
  EXPECT_NE(message.find("('log\\x0aits\\x80'): has a name with a control "
                         "character"),
            std::string::npos)
      << message;
  EXPECT_EQ(message.find('\n'), std::string::npos);

  desc = tinyMoeProgram();
  desc.layers[0].name = "moe\t1";
  EXPECT_REJECTED(desc, "MoE layer 0 ('moe\\x091'): the name has a control "
                        "character");

  // A long name is cut in messages.
  desc = tinyMoeProgram();
  uint32_t y = findBuffer(desc, "y");
  desc.buffers[y].name = std::string(1000, 'y');
  desc.buffers[y].offset += 4; // any error that quotes the buffer
  std::string cut = verifyError(desc);
  EXPECT_NE(cut.find(std::string(64, 'y') + "...'"), std::string::npos) << cut;
  EXPECT_LT(cut.size(), 300u);
}

// Found by UBSan: the flatbuffers verifier checks that a vector's length
// field is 4-byte aligned, not that int64 elements are 8-byte aligned, and a
// corrupted offset made the shape loop read misaligned int64s. The same
// bytes 4 bytes off an 8-byte boundary misalign every int64 vector.
TEST(ProgramFuzzRegression, RejectsMisalignedInt64Vectors) {
  std::vector<uint8_t> bytes = serialize(tinyMoeProgram());
  std::vector<uint64_t> storage(bytes.size() / 8 + 2);
  auto *shifted = reinterpret_cast<uint8_t *>(storage.data()) + 4;
  std::copy(bytes.begin(), bytes.end(), shifted);
  StatusOr<const fb::Program *> result =
      program::verifyProgram({shifted, bytes.size()});
  ASSERT_FALSE(result);
  EXPECT_EQ(result.status().message(),
            "buffer 0 ('tokens'): has a misaligned shape vector (a corrupted "
            "file)");
  // The same bytes 8-byte aligned pass.
  auto *aligned = reinterpret_cast<uint8_t *>(storage.data());
  std::copy(bytes.begin(), bytes.end(), aligned);
  EXPECT_TRUE(program::verifyProgram({aligned, bytes.size()}));
}

// A dimension of 0 made the kernels divide by zero (rows = elements / K).
TEST(ProgramFuzzRegression, RejectsZeroDimensions) {
  ProgramDesc desc = tinyMoeProgram();
  uint32_t y = findBuffer(desc, "y");
  desc.buffers[y].shape = {8, 0};
  desc.buffers[y].size = 0;
  EXPECT_REJECTED(desc, "('y'): has a zero dimension in shape [8, 0]");
}

// Every kernel sizes its loops from its operands' shapes: an operand id
// changed to another buffer of the right element type made them read or
// write past a buffer. One case per op family.
TEST(ProgramFuzzRegression, ChecksMoeOperandShapes) {
  ProgramDesc desc = tinyMoeProgram();
  size_t gate = findInstruction(desc, OpCode::Gate);
  desc.instructions[gate].outputs[0] = findBuffer(desc, "routed"); // [8, 8]
  EXPECT_REJECTED(desc, "instruction 2 (Gate): output 0 (probs, buffer");
  EXPECT_REJECTED(desc, "('routed')) has shape [8, 8], expected [8, 4]");

  desc = tinyMoeProgram();
  desc.layers[0].topK = 2;
  EXPECT_REJECTED(desc, "(Gate): top_k 1 differs from the layer's 2");

  desc = tinyMoeProgram();
  size_t dispatch = findInstruction(desc, OpCode::Dispatch);
  desc.instructions[dispatch].outputs[0] = findBuffer(desc, "recv"); // [16, 8]
  EXPECT_REJECTED(desc, "(Dispatch): output 0 (routed, buffer");
  EXPECT_REJECTED(desc, "('recv')) has shape [16, 8], expected [8, 8]");

  desc = tinyMoeProgram();
  size_t experts = findInstruction(desc, OpCode::Experts);
  desc.instructions[experts].inputs[1] = findBuffer(desc, "counts"); // [4]
  EXPECT_REJECTED(desc, "(Experts): input 1 (counts, buffer");
  EXPECT_REJECTED(desc, "('counts')) has shape [4], expected [3]");

  desc = tinyMoeProgram();
  size_t a2a = findInstruction(desc, OpCode::AllToAllDispatch);
  desc.instructions[a2a].outputs[1] = findBuffer(desc, "out_counts"); // [4]
  EXPECT_REJECTED(desc, "(AllToAllDispatch): output 1 (counts, buffer");

  desc = tinyMoeProgram();
  size_t combine = findInstruction(desc, OpCode::Combine);
  desc.instructions[combine].outputs[0] = findBuffer(desc, "logits");
  EXPECT_REJECTED(desc, "(Combine): output 0 (y, buffer");
  EXPECT_REJECTED(desc, "('logits')) has shape [8, 16], expected [8, 8]");
}

TEST(ProgramFuzzRegression, ChecksDenseOperandShapes) {
  ProgramDesc desc = tinyMoeProgram();
  size_t grad = findInstruction(desc, OpCode::LinearGrad);
  desc.instructions[grad].inputs[2] = findBuffer(desc, "y"); // [8, 8]
  EXPECT_REJECTED(desc, "(LinearGrad): input 2 (dy, buffer");
  EXPECT_REJECTED(desc, "('y')) has shape [8, 8], expected [8, 16]");

  desc = tinyMoeProgram();
  size_t ce = findInstruction(desc, OpCode::CrossEntropy);
  desc.instructions[ce].inputs[0] = findBuffer(desc, "y"); // [8, 8]
  EXPECT_EQ(verifyError(desc), "") << "8 rows for 8 labels";
  desc.instructions[ce].inputs[0] = findBuffer(desc, "recv"); // [16, 8]
  EXPECT_REJECTED(desc, "(CrossEntropy): 8 labels (buffer 1 ('labels')) for "
                        "16 rows of logits [16, 8]");

  // Found under AddressSanitizer: an nn.add whose output id was changed to
  // a scalar buffer wrote [32, 64] elements into it.
  desc = tinyMoeProgram();
  uint32_t y = findBuffer(desc, "y"), dloss = findBuffer(desc, "dloss");
  desc.instructions.push_back({OpCode::Add, {y, y}, {dloss}});
  EXPECT_REJECTED(desc, "(Add): output 0 (result, buffer");
  EXPECT_REJECTED(desc, "('dloss')) has shape [], expected [8, 8]");
  desc.instructions.back().inputs[1] = findBuffer(desc, "logits");
  EXPECT_REJECTED(desc, "(Add): shapes [8, 8] and [8, 16] do not broadcast");

  // Attention: heads must divide the model dimension.
  desc = tinyMoeProgram();
  uint32_t x = findBuffer(desc, "x");
  uint32_t att = desc.add(activation("att", {2, 4, 8}));
  desc.layout();
  desc.instructions.push_back(
      {OpCode::Attention,
       {x, x, x},
       {att},
       -1,
       OpAttrs::AttentionAttrs,
       [](auto &b) {
         return fb::CreateAttentionAttrs(b, 4, true, 0).Union();
       }});
  EXPECT_EQ(verifyError(desc), "");
  desc.instructions.back().attrs = [](auto &b) {
    return fb::CreateAttentionAttrs(b, 3, true, 0).Union();
  };
  EXPECT_REJECTED(desc, "(Attention): num_heads 3 does not divide the model "
                        "dimension 8");
  desc.instructions.back().attrs = [](auto &b) {
    return fb::CreateAttentionAttrs(b, 4, true, 0).Union();
  };
  desc.instructions.back().inputs[1] = findBuffer(desc, "x.flat");
  EXPECT_REJECTED(desc, "(Attention): input 1 (operand, buffer");

  // Transpose and reduce_sum: the result's shape follows the attributes.
  desc = tinyMoeProgram();
  uint32_t flat = findBuffer(desc, "y");        // [8, 8]
  uint32_t logits = findBuffer(desc, "logits"); // [8, 16]
  uint32_t dlogits = findBuffer(desc, "dlogits");
  uint32_t sum = desc.add(activation("sum", {16}));
  desc.layout();
  desc.instructions.push_back(
      {OpCode::Transpose,
       {flat},
       {logits},
       -1,
       OpAttrs::TransposeAttrs,
       [](auto &b) {
         return fb::CreateTransposeAttrs(
                    b, b.CreateVector(std::vector<int64_t>{1, 0}))
             .Union();
       }});
  EXPECT_REJECTED(desc, "(Transpose): output 0 (result, buffer");
  desc.instructions.back() = {
      OpCode::ReduceSum,
      {dlogits},
      {sum},
      -1,
      OpAttrs::ReduceSumAttrs,
      [](auto &b) {
        return fb::CreateReduceSumAttrs(
                   b, b.CreateVector(std::vector<int64_t>{0}), false)
            .Union();
      }};
  EXPECT_EQ(verifyError(desc), "");
  desc.instructions.back().attrs = [](auto &b) {
    return fb::CreateReduceSumAttrs(
               b, b.CreateVector(std::vector<int64_t>{0, -2}), false)
        .Union();
  };
  EXPECT_REJECTED(desc, "(ReduceSum): dim -2 is out of range or repeated");
}

// nn.roll adds up the shifts of a dim before reducing them: a repeated dim
// with huge shifts overflowed int64 (undefined behaviour).
TEST(ProgramFuzzRegression, ChecksRollAttributes) {
  ProgramDesc desc = tinyMoeProgram();
  uint32_t labels = findBuffer(desc, "labels");
  uint32_t rolled = desc.add(activation("rolled", {2, 4}, ElementType::I32));
  desc.layout();
  auto roll = [&](std::vector<int64_t> shifts, std::vector<int64_t> dims) {
    desc.instructions.push_back({OpCode::Roll,
                                 {labels},
                                 {rolled},
                                 -1,
                                 OpAttrs::RollAttrs,
                                 [=](auto &b) {
                                   return fb::CreateRollAttrs(
                                              b, b.CreateVector(shifts),
                                              b.CreateVector(dims))
                                       .Union();
                                 }});
  };
  roll({-1}, {1});
  EXPECT_EQ(verifyError(desc), "");
  desc.instructions.pop_back();
  roll({int64_t{1} << 62, int64_t{1} << 62}, {1, -1});
  EXPECT_REJECTED(desc, "(Roll): dim -1 is out of range or repeated");
  desc.instructions.pop_back();
  roll({std::numeric_limits<int64_t>::min()}, {1});
  EXPECT_REJECTED(desc, "(Roll): shift -9223372036854775808 is out of range");
}

// Kernels read their inputs while writing their outputs: an output sharing
// bytes with an input is only fine for ops that work in place, on exactly
// that input; and only the optimizer may write parameters.
TEST(ProgramFuzzRegression, ChecksWhatAnInstructionWrites) {
  ProgramDesc desc = tinyMoeProgram();
  uint32_t y = findBuffer(desc, "y");
  desc.buffers[y].offset = desc.buffers[findBuffer(desc, "out")].offset;
  EXPECT_REJECTED(desc, "(Combine): output 0 (buffer 24 ('y')) shares arena "
                        "bytes with input 0 (buffer");

  desc = tinyMoeProgram();
  size_t linear = findInstruction(desc, OpCode::Linear);
  desc.instructions[linear].outputs[0] = findBuffer(desc, "head"); // [8, 16]
  EXPECT_REJECTED(desc, "(Linear): output 0 (buffer 8 ('head')) is a "
                        "Parameter buffer, which only nn.adamw may write");

  desc = tinyMoeProgram();
  size_t adamw = findInstruction(desc, OpCode::AdamW);
  std::swap(desc.instructions[adamw].inputs[2],
            desc.instructions[adamw].inputs[3]);
  EXPECT_REJECTED(desc, "(AdamW): input 2 (buffer");
  EXPECT_REJECTED(desc, "('head.v')) must be a buffer of kind AdamM");
}

TEST(ProgramFuzzRegression, ChecksAttributeValuesAtLoad) {
  ProgramDesc desc = tinyMoeProgram();
  size_t adamw = findInstruction(desc, OpCode::AdamW);
  desc.instructions[adamw].attrs = [](auto &b) {
    return fb::CreateAdamWAttrs(b, 1e-3f, 0.9f, 1.5f, 1e-8f, 0.01f).Union();
  };
  EXPECT_REJECTED(desc, "(AdamW): has invalid AdamW hyper-parameters");
}

} // namespace
