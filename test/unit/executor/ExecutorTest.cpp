//===- ExecutorTest.cpp - arena binding, initialisation, dispatch ---------===//

#include "../program/ProgramBuilder.h"

#include "runtime/backends/cpu/CpuDevice.h"
#include "runtime/executor/Executor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

using namespace flexmoe;
using namespace flexmoe::testing;
using executor::Executor;
using executor::ExecutorOptions;

namespace {

constexpr int64_t kVocab = 8, kDim = 4, kTokens = 4;

/// tokens → embedding → linear head → cross entropy, on one device, with a
/// view of the hidden state and AdamW state for the embedding.
ProgramDesc denseProgram() {
  ProgramDesc desc;
  desc.worldSize = 1;
  BufferDesc tokens{
      "tokens", fb::BufferKind::InputTokens, fb::ElementType::I32, {kTokens}};
  desc.add(tokens);
  BufferDesc labels{
      "labels", fb::BufferKind::InputLabels, fb::ElementType::I32, {kTokens}};
  desc.add(labels);
  BufferDesc wte{
      "wte", fb::BufferKind::Parameter, fb::ElementType::F32, {kVocab, kDim}};
  wte.init = fb::InitKind::Normal;
  wte.initStd = 0.5f;
  wte.paramName = "wte";
  desc.add(wte);
  BufferDesc head{
      "head", fb::BufferKind::Parameter, fb::ElementType::F32, {kDim, kVocab}};
  head.init = fb::InitKind::Normal;
  head.initStd = 0.5f;
  head.paramName = "head";
  desc.add(head);
  BufferDesc gamma{
      "gamma", fb::BufferKind::Parameter, fb::ElementType::F32, {kDim}};
  gamma.init = fb::InitKind::Ones;
  gamma.paramName = "gamma";
  desc.add(gamma);
  BufferDesc m{
      "wte.m", fb::BufferKind::AdamM, fb::ElementType::F32, {kVocab, kDim}};
  m.stateOf = 2;
  desc.add(m);
  BufferDesc v = m;
  v.name = "wte.v";
  v.kind = fb::BufferKind::AdamV;
  desc.add(v);
  desc.add(
      {"h", fb::BufferKind::Activation, fb::ElementType::F32, {kTokens, kDim}});
  BufferDesc view{
      "h.view", fb::BufferKind::Activation, fb::ElementType::F32, {2, 2, kDim}};
  view.aliasOf = 7;
  desc.add(view);
  desc.add({"logits",
            fb::BufferKind::Activation,
            fb::ElementType::F32,
            {kTokens, kVocab}});
  desc.add({"loss", fb::BufferKind::Loss, fb::ElementType::F32, {}});
  desc.lossBuffer = 10;
  desc.layout();
  desc.instructions.push_back({fb::OpCode::Embedding, {0, 2}, {7}});
  desc.instructions.push_back({fb::OpCode::Linear, {7, 3}, {9}});
  InstructionDesc ce{fb::OpCode::CrossEntropy, {9, 1}, {10}};
  ce.attrsType = fb::OpAttrs::CrossEntropyAttrs;
  ce.attrs = [](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateCrossEntropyAttrs(b, -100).Union();
  };
  desc.instructions.push_back(ce);
  return desc;
}

program::LoadedProgram load(const ProgramDesc &desc) {
  StatusOr<program::LoadedProgram> loaded =
      program::loadProgramFromBytes(serialize(desc));
  EXPECT_TRUE(loaded.isOk()) << loaded.status().message();
  return std::move(loaded).value();
}

std::vector<float> values(const Executor &executor, uint32_t id) {
  const device::Operand &operand = executor.buffer(id);
  return {operand.as<float>(), operand.as<float>() + operand.numElements()};
}

struct Fixture {
  program::LoadedProgram program;
  cpu::CpuDevice device;
  device::SingleProcessCommunicator comm;
  std::unique_ptr<Executor> executor;

  explicit Fixture(const ProgramDesc &desc, uint64_t seed = 0)
      : program(load(desc)) {
    ExecutorOptions options;
    options.seed = seed;
    StatusOr<std::unique_ptr<Executor>> created =
        Executor::create(program, device, comm, options);
    EXPECT_TRUE(created.isOk()) << created.status().message();
    if (created)
      executor = std::move(created).value();
  }
};

TEST(Executor, BindsEveryBufferAtItsArenaOffset) {
  ProgramDesc desc = denseProgram();
  Fixture f(desc);
  ASSERT_TRUE(f.executor);
  ASSERT_EQ(f.executor->numBuffers(), desc.buffers.size());
  for (size_t id = 0; id < desc.buffers.size(); ++id) {
    const device::Operand &operand = f.executor->buffer(id);
    EXPECT_EQ(operand.data, f.executor->arenaBase() + desc.buffers[id].offset)
        << desc.buffers[id].name;
    EXPECT_EQ(operand.shape.size(), desc.buffers[id].shape.size());
    EXPECT_EQ(operand.name, desc.buffers[id].name);
  }
  // The view shares the hidden state's bytes under its own shape.
  EXPECT_EQ(f.executor->buffer(8).data, f.executor->buffer(7).data);
  EXPECT_EQ(f.executor->buffer(8).shape[0], 2);
  EXPECT_NE(f.executor->buffer(2).data, f.executor->buffer(3).data);
}

TEST(Executor, InitialisesParametersFromTheirSpecs) {
  Fixture f(denseProgram(), /*seed=*/42);
  ASSERT_TRUE(f.executor);
  // Normal: exactly initNormal's stream for the parameter's name.
  std::vector<float> expected(kVocab * kDim);
  executor::initNormal(42, "wte", -1, 0.5f, expected);
  EXPECT_EQ(values(*f.executor, 2), expected);
  for (float g : values(*f.executor, 4))
    EXPECT_EQ(g, 1.0f);
  for (uint32_t state : {5u, 6u})
    for (float x : values(*f.executor, state))
      EXPECT_EQ(x, 0.0f);
  // Two parameters of one shape get different values.
  EXPECT_NE(values(*f.executor, 2)[0], values(*f.executor, 3)[0]);
}

TEST(Executor, InitialisationIsDeterministicPerSeed) {
  Fixture a(denseProgram(), 7), b(denseProgram(), 7), c(denseProgram(), 8);
  ASSERT_TRUE(a.executor && b.executor && c.executor);
  EXPECT_EQ(values(*a.executor, 2), values(*b.executor, 2));
  EXPECT_EQ(values(*a.executor, 3), values(*b.executor, 3));
  EXPECT_NE(values(*a.executor, 2), values(*c.executor, 2));
  // initialize() restores the initial values after the arena was scribbled.
  std::memset(a.executor->buffer(2).data, 0xff,
              a.executor->buffer(2).numBytes());
  ASSERT_TRUE(a.executor->initialize().isOk());
  EXPECT_EQ(values(*a.executor, 2), values(*b.executor, 2));
}

TEST(Executor, InitNormalHasTheRequestedMoments) {
  std::vector<float> x(200001);
  executor::initNormal(3, "w", -1, 0.02f, x);
  double sum = 0, sumSq = 0;
  for (float v : x) {
    ASSERT_TRUE(std::isfinite(v));
    sum += v;
    sumSq += double(v) * v;
  }
  double mean = sum / x.size();
  double std = std::sqrt(sumSq / x.size() - mean * mean);
  EXPECT_NEAR(mean, 0.0, 3e-4);
  EXPECT_NEAR(std, 0.02, 3e-4);
  // Each expert of a parameter has its own stream.
  std::vector<float> e0(16), e1(16), e0Again(16);
  executor::initNormal(3, "w1", 0, 1.0f, e0);
  executor::initNormal(3, "w1", 1, 1.0f, e1);
  executor::initNormal(3, "w1", 0, 1.0f, e0Again);
  EXPECT_NE(e0, e1);
  EXPECT_EQ(e0, e0Again);
}

TEST(Executor, ComputesTheLossOfTheProgram) {
  Fixture f(denseProgram(), 1);
  ASSERT_TRUE(f.executor);
  std::vector<int32_t> tokens = {1, 5, 7, 1}, labels = {3, 0, 7, 2};
  ASSERT_TRUE(f.executor->setInputs(tokens, labels).isOk());
  StatusOr<float> loss = f.executor->step();
  ASSERT_TRUE(loss.isOk()) << loss.status().message();
  EXPECT_EQ(f.executor->stepsDone(), 1);

  // The same forward pass in double, from the initialised parameters.
  std::vector<float> wte = values(*f.executor, 2),
                     head = values(*f.executor, 3);
  double expected = 0;
  for (int64_t t = 0; t < kTokens; ++t) {
    std::vector<double> logits(kVocab, 0.0);
    for (int64_t j = 0; j < kVocab; ++j)
      for (int64_t d = 0; d < kDim; ++d)
        logits[j] += double(wte[tokens[t] * kDim + d]) * head[d * kVocab + j];
    double maxLogit = *std::max_element(logits.begin(), logits.end());
    double sumExp = 0;
    for (double l : logits)
      sumExp += std::exp(l - maxLogit);
    expected += maxLogit + std::log(sumExp) - logits[labels[t]];
  }
  expected /= kTokens;
  EXPECT_NEAR(*loss, expected, 1e-5);
}

TEST(Executor, ErrorsNameTheInstructionAndOpcode) {
  Fixture f(denseProgram());
  ASSERT_TRUE(f.executor);
  std::vector<int32_t> tokens = {1, 99, 0, 0}, labels = {0, 0, 0, 0};
  ASSERT_TRUE(f.executor->setInputs(tokens, labels).isOk());
  StatusOr<float> loss = f.executor->step();
  ASSERT_FALSE(loss.isOk());
  EXPECT_NE(loss.status().message().find("instruction 0 (nn.embedding)"),
            std::string::npos)
      << loss.status().message();
  EXPECT_NE(loss.status().message().find("99"), std::string::npos);
  EXPECT_EQ(f.executor->stepsDone(), 0);
}

TEST(Executor, RejectsInputsOfTheWrongSize) {
  Fixture f(denseProgram());
  ASSERT_TRUE(f.executor);
  std::vector<int32_t> tokens = {1, 2, 3}, labels = {0, 0, 0, 0};
  Status status = f.executor->setInputs(tokens, labels);
  ASSERT_FALSE(status.isOk());
  EXPECT_NE(status.message().find("'tokens' holds 4 ids but 3"),
            std::string::npos)
      << status.message();
}

TEST(Executor, RejectsAWorldSizeOtherThanTheCommunicators) {
  program::LoadedProgram program = load(tinyMoeProgram());
  cpu::CpuDevice device;
  device::SingleProcessCommunicator comm;
  StatusOr<std::unique_ptr<Executor>> created =
      Executor::create(program, device, comm);
  ASSERT_FALSE(created.isOk());
  EXPECT_NE(created.status().message().find("world size 2"), std::string::npos)
      << created.status().message();
}

/// moe.dispatch, then the layer's all-to-all there and back, at world size
/// 1 with two experts in two slots; the loss is a filled constant.
ProgramDesc allToAllProgram(bool combineFirst) {
  ProgramDesc desc;
  desc.worldSize = 1;
  MoeLayerDesc layer;
  layer.name = "moe0";
  layer.numExperts = 2;
  layer.dModel = 2;
  layer.ffnHidden = 3;
  layer.worldSize = 1;
  layer.slotsPerDevice = 2;
  layer.replicas = {{0}, {0}};
  desc.layers.push_back(layer);
  auto f32 = [](std::string name, std::vector<int64_t> shape) {
    return BufferDesc{std::move(name), fb::BufferKind::Activation,
                      fb::ElementType::F32, std::move(shape)};
  };
  auto i32 = [](std::string name, std::vector<int64_t> shape) {
    return BufferDesc{std::move(name), fb::BufferKind::Activation,
                      fb::ElementType::I32, std::move(shape)};
  };
  uint32_t x = desc.add(f32("x", {4, 2}));
  uint32_t ids = desc.add(i32("ids", {4, 1}));
  uint32_t routed = desc.add(f32("routed", {4, 2}));
  uint32_t positions = desc.add(i32("positions", {4, 1}));
  uint32_t counts = desc.add(i32("counts", {2}));
  uint32_t recv = desc.add(f32("recv", {4, 2}));
  uint32_t slotCounts = desc.add(i32("slot_counts", {2}));
  uint32_t back = desc.add(f32("back", {4, 2}));
  uint32_t backCounts = desc.add(i32("back_counts", {2}));
  BufferDesc loss = f32("loss", {});
  loss.kind = fb::BufferKind::Loss;
  desc.lossBuffer = static_cast<int32_t>(desc.add(loss));
  desc.layout();
  InstructionDesc dispatch{
      fb::OpCode::Dispatch, {x, ids}, {routed, positions, counts}, 0};
  dispatch.attrsType = fb::OpAttrs::DispatchAttrs;
  dispatch.attrs = [](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateDispatchAttrs(b, 2, 0).Union();
  };
  InstructionDesc toSlots{
      fb::OpCode::AllToAllDispatch, {routed, counts}, {recv, slotCounts}, 0};
  InstructionDesc fromSlots{
      fb::OpCode::AllToAllCombine, {recv, slotCounts}, {back, backCounts}, 0};
  InstructionDesc fill{
      fb::OpCode::Fill, {}, {static_cast<uint32_t>(desc.lossBuffer)}};
  fill.attrsType = fb::OpAttrs::FillAttrs;
  fill.attrs = [](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateFillAttrs(b, 0.25f).Union();
  };
  desc.instructions.push_back(dispatch);
  if (combineFirst)
    desc.instructions.push_back(fromSlots);
  desc.instructions.push_back(toSlots);
  desc.instructions.push_back(fromSlots);
  desc.instructions.push_back(fill);
  return desc;
}

TEST(Executor, AllToAllAtWorldSizeOneRoundTrips) {
  ProgramDesc desc = allToAllProgram(/*combineFirst=*/false);
  Fixture f(desc);
  ASSERT_TRUE(f.executor);
  float *x = f.executor->buffer(0).as<float>();
  int32_t *ids = f.executor->buffer(1).as<int32_t>();
  for (int i = 0; i < 8; ++i)
    x[i] = static_cast<float>(i + 1);
  // Tokens 0 and 2 to expert 1, tokens 1 and 3 to expert 0.
  ids[0] = 1, ids[1] = 0, ids[2] = 1, ids[3] = 0;
  for (int step = 1; step <= 2; ++step) {
    StatusOr<float> loss = f.executor->step();
    ASSERT_TRUE(loss.isOk()) << loss.status().message();
    EXPECT_EQ(*loss, 0.25f);
    // Slot s holds expert s: the slot-major rows are the expert-grouped
    // ones, and the combine brings back exactly the routed rows.
    std::vector<float> routed = values(*f.executor, 2);
    EXPECT_EQ(routed, (std::vector<float>{3, 4, 7, 8, 1, 2, 5, 6}));
    EXPECT_EQ(values(*f.executor, 5), routed);
    EXPECT_EQ(values(*f.executor, 7), routed);
    const int32_t *slotCounts = f.executor->buffer(6).as<int32_t>();
    const int32_t *backCounts = f.executor->buffer(8).as<int32_t>();
    EXPECT_EQ(slotCounts[0], 2);
    EXPECT_EQ(slotCounts[1], 2);
    EXPECT_EQ(backCounts[0], 2);
    EXPECT_EQ(backCounts[1], 2);
    const plan::DispatchPlan &plan = f.executor->dispatchPlan(0);
    EXPECT_EQ(plan.totalRows, 4);
    EXPECT_EQ(plan.crossDeviceRows, 0);
  }
}

TEST(Executor, TheFirstAllToAllOfAStepMustDispatch) {
  Fixture f(allToAllProgram(/*combineFirst=*/true));
  ASSERT_TRUE(f.executor);
  StatusOr<float> loss = f.executor->step();
  ASSERT_FALSE(loss.isOk());
  EXPECT_NE(loss.status().message().find(
                "instruction 1 (moe.all_to_all): layer 'moe0': the first "
                "all-to-all of a step must dispatch"),
            std::string::npos)
      << loss.status().message();
}

TEST(SingleProcessCommunicator, MovesRowsAndReducesAsIdentity) {
  device::SingleProcessCommunicator comm;
  std::vector<float> send = {1, 2, 3, 4, 5, 6}, recv(6, 0);
  std::vector<int64_t> counts = {3}, offsets = {0};
  ASSERT_TRUE(comm.allToAllV(reinterpret_cast<const std::byte *>(send.data()),
                             counts, offsets,
                             reinterpret_cast<std::byte *>(recv.data()), counts,
                             offsets, 2 * sizeof(float))
                  .isOk());
  EXPECT_EQ(recv, send);
  std::vector<int64_t> other = {2};
  EXPECT_FALSE(comm.allToAllV(reinterpret_cast<const std::byte *>(send.data()),
                              counts, offsets,
                              reinterpret_cast<std::byte *>(recv.data()), other,
                              offsets, 2 * sizeof(float))
                   .isOk());
  ASSERT_TRUE(comm.allReduce(send.data(), 6, device::ReduceOp::Mean).isOk());
  EXPECT_EQ(send[5], 6.0f);
  std::vector<int32_t> two = {0, 1};
  EXPECT_FALSE(comm.groupSum(send.data(), 6, two).isOk());
}

} // namespace
