//===- MoeTestProgram.h - a small MoE training program for tests -*- C++ -*-//
//
// One MoE layer between an embedding and a head, with the whole backward
// pass and AdamW, built with ProgramBuilder: what the checkpoint and
// placement tests train. Any world size and placement of its 4 experts.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_TEST_UNIT_EXECUTOR_MOETESTPROGRAM_H
#define FLEXMOE_TEST_UNIT_EXECUTOR_MOETESTPROGRAM_H

#include "../program/ProgramBuilder.h"

#include <cstdint>
#include <string>
#include <vector>

namespace flexmoe::testing::moetest {

using fb::BufferKind;
using fb::ElementType;
using fb::OpAttrs;
using fb::OpCode;

constexpr int64_t kB = 2, kS = 4, kT = kB * kS, kD = 8, kV = 16, kE = 4, kK = 2,
                  kH = 16;

/// A complete one-device training step of a small MoE model: embedding,
/// top-2 gate, dispatch, all-to-all, experts, combine, head, cross entropy,
/// the whole backward pass and AdamW on every parameter. `slots` >= 4 local
/// expert slots (slots beyond the 4 experts stay empty).
inline ProgramDesc
moeProgram(int32_t slots = 4, int64_t hidden = kH, int32_t worldSize = 1,
           std::vector<std::vector<int32_t>> replicas = {{0}, {0}, {0}, {0}}) {
  ProgramDesc p;
  p.worldSize = worldSize;
  MoeLayerDesc layer;
  layer.name = "moe0";
  layer.numExperts = kE;
  layer.topK = kK;
  layer.dModel = kD;
  layer.ffnHidden = static_cast<int32_t>(hidden);
  layer.worldSize = worldSize;
  layer.slotsPerDevice = slots;
  layer.replicas = std::move(replicas);
  p.layers.push_back(layer);

  auto buf = [](std::string name, std::vector<int64_t> shape,
                BufferKind kind = BufferKind::Activation,
                ElementType type = ElementType::F32, int32_t moe = -1) {
    BufferDesc b{std::move(name), kind, type, std::move(shape)};
    b.moeLayer = moe;
    return b;
  };
  auto param = [&](std::string name, std::vector<int64_t> shape,
                   fb::InitKind init, int32_t moe = -1) {
    BufferDesc b = buf(name, std::move(shape), BufferKind::Parameter,
                       ElementType::F32, moe);
    b.init = init;
    b.initStd = 0.3f;
    b.paramName = name;
    return p.add(b);
  };
  auto view = [&](std::string name, uint32_t of, std::vector<int64_t> shape) {
    BufferDesc b = p.buffers[of];
    b.name = std::move(name);
    b.shape = std::move(shape);
    b.aliasOf = static_cast<int32_t>(of);
    b.id = -1;
    return p.add(b);
  };
  const auto I32 = ElementType::I32;
  const auto G = BufferKind::Gradient;

  uint32_t tokens =
      p.add(buf("tokens", {kB, kS}, BufferKind::InputTokens, I32));
  uint32_t labels =
      p.add(buf("labels", {kB, kS}, BufferKind::InputLabels, I32));
  uint32_t wte = param("wte", {kV, kD}, fb::InitKind::Normal);
  uint32_t gate = param("moe0.gate", {kD, kE}, fb::InitKind::Normal);
  uint32_t w1 = param("moe0.w1", {slots, kD, hidden}, fb::InitKind::Normal, 0);
  uint32_t b1 = param("moe0.b1", {slots, hidden}, fb::InitKind::Zeros, 0);
  uint32_t w2 = param("moe0.w2", {slots, hidden, kD}, fb::InitKind::Normal, 0);
  uint32_t b2 = param("moe0.b2", {slots, kD}, fb::InitKind::Zeros, 0);
  uint32_t head = param("head", {kD, kV}, fb::InitKind::Normal);
  std::vector<uint32_t> params = {wte, gate, w1, b1, w2, b2, head};
  std::vector<std::pair<uint32_t, uint32_t>> state;
  for (uint32_t id : params) {
    BufferDesc m = p.buffers[id];
    m.kind = BufferKind::AdamM;
    m.name += ".m";
    m.init = fb::InitKind::None;
    m.initStd = 0;
    m.paramName.clear();
    m.stateOf = static_cast<int32_t>(id);
    m.id = -1;
    BufferDesc v = m;
    v.kind = BufferKind::AdamV;
    v.name = p.buffers[id].name + ".v";
    uint32_t mId = p.add(m);
    state.push_back({mId, p.add(v)});
  }

  uint32_t x = p.add(buf("x", {kB, kS, kD}));
  uint32_t flat = view("x.flat", x, {kT, kD});
  uint32_t probs = p.add(buf("probs", {kT, kE}));
  uint32_t ids = p.add(buf("ids", {kT, kK}, BufferKind::Activation, I32));
  uint32_t weights = p.add(buf("weights", {kT, kK}));
  uint32_t routed = p.add(buf("routed", {kT * kK, kD}));
  uint32_t positions =
      p.add(buf("positions", {kT, kK}, BufferKind::Activation, I32));
  uint32_t counts = p.add(buf("counts", {kE}, BufferKind::Activation, I32));
  uint32_t recv = p.add(buf("recv", {kT * kK, kD}));
  uint32_t slotCounts =
      p.add(buf("slot_counts", {slots}, BufferKind::Activation, I32));
  uint32_t outLocal = p.add(buf("out_local", {kT * kK, kD}));
  uint32_t out = p.add(buf("out", {kT * kK, kD}));
  uint32_t outCounts =
      p.add(buf("out_counts", {kE}, BufferKind::Activation, I32));
  uint32_t y = p.add(buf("y", {kT, kD}));
  uint32_t y3 = view("y.3d", y, {kB, kS, kD});
  uint32_t logits = p.add(buf("logits", {kB, kS, kV}));
  uint32_t loss = p.add(buf("loss", {}, BufferKind::Loss));
  uint32_t dloss = p.add(buf("dloss", {}, G));
  uint32_t dlogits = p.add(buf("dlogits", {kB, kS, kV}, G));
  uint32_t dy3 = p.add(buf("dy", {kB, kS, kD}, G));
  uint32_t dhead = p.add(buf("dhead", {kD, kV}, G));
  uint32_t dyFlat = view("dy.flat", dy3, {kT, kD});
  uint32_t dout = p.add(buf("dout", {kT * kK, kD}, G));
  uint32_t dweights = p.add(buf("dweights", {kT, kK}, G));
  uint32_t drecv = p.add(buf("drecv", {kT * kK, kD}, G));
  uint32_t counts2 =
      p.add(buf("counts2", {slots}, BufferKind::Activation, I32));
  uint32_t dxe = p.add(buf("dxe", {kT * kK, kD}, G));
  uint32_t dw1 = p.add(buf("dw1", {slots, kD, hidden}, G, ElementType::F32, 0));
  uint32_t db1 = p.add(buf("db1", {slots, hidden}, G, ElementType::F32, 0));
  uint32_t dw2 = p.add(buf("dw2", {slots, hidden, kD}, G, ElementType::F32, 0));
  uint32_t db2 = p.add(buf("db2", {slots, kD}, G, ElementType::F32, 0));
  uint32_t drouted = p.add(buf("drouted", {kT * kK, kD}, G));
  uint32_t counts3 = p.add(buf("counts3", {kE}, BufferKind::Activation, I32));
  uint32_t dflat1 = p.add(buf("dflat1", {kT, kD}, G));
  uint32_t dprobs = p.add(buf("dprobs", {kT, kE}, G));
  uint32_t dflat2 = p.add(buf("dflat2", {kT, kD}, G));
  uint32_t dgate = p.add(buf("dgate", {kD, kE}, G));
  uint32_t dflat = p.add(buf("dflat", {kT, kD}, G));
  uint32_t dx3 = view("dx", dflat, {kB, kS, kD});
  uint32_t dwte = p.add(buf("dwte", {kV, kD}, G));
  p.layout();
  p.lossBuffer = static_cast<int32_t>(loss);

  auto add = [&](OpCode op, std::vector<uint32_t> ins,
                 std::vector<uint32_t> outs, int32_t moe = -1,
                 OpAttrs type = OpAttrs::NONE, AttrsFn attrs = nullptr) {
    p.instructions.push_back(
        {op, std::move(ins), std::move(outs), moe, type, std::move(attrs)});
  };
  auto ce = [](auto &b) {
    return fb::CreateCrossEntropyAttrs(b, -100).Union();
  };
  auto experts = [](auto &b) {
    return fb::CreateExpertsAttrs(b, fb::Activation::Gelu, 0).Union();
  };
  auto gateAttrs = [](auto &b) { return fb::CreateGateAttrs(b, kK).Union(); };
  auto fill = [](float value) {
    return [value](flatbuffers::FlatBufferBuilder &b) {
      return fb::CreateFillAttrs(b, value).Union();
    };
  };
  add(OpCode::Embedding, {tokens, wte}, {x});
  add(OpCode::Gate, {flat, gate}, {probs, ids, weights}, 0, OpAttrs::GateAttrs,
      gateAttrs);
  add(OpCode::Dispatch, {flat, ids}, {routed, positions, counts}, 0,
      OpAttrs::DispatchAttrs,
      [](auto &b) { return fb::CreateDispatchAttrs(b, kE, 0).Union(); });
  add(OpCode::AllToAllDispatch, {routed, counts}, {recv, slotCounts}, 0);
  add(OpCode::Experts, {recv, slotCounts, w1, b1, w2, b2}, {outLocal}, 0,
      OpAttrs::ExpertsAttrs, experts);
  add(OpCode::AllToAllCombine, {outLocal, slotCounts}, {out, outCounts}, 0);
  add(OpCode::Combine, {out, positions, weights}, {y}, 0);
  add(OpCode::Linear, {y3, head}, {logits});
  add(OpCode::CrossEntropy, {logits, labels}, {loss}, -1,
      OpAttrs::CrossEntropyAttrs, ce);
  add(OpCode::Fill, {}, {dloss}, -1, OpAttrs::FillAttrs, fill(1.0f));
  add(OpCode::CrossEntropyGrad, {logits, labels, dloss}, {dlogits}, -1,
      OpAttrs::CrossEntropyAttrs, ce);
  add(OpCode::LinearGrad, {y3, head, dlogits}, {dy3, dhead});
  add(OpCode::CombineGrad, {out, positions, weights, dyFlat}, {dout, dweights},
      0);
  add(OpCode::AllToAllDispatch, {dout, counts}, {drecv, counts2}, 0);
  add(OpCode::ExpertsGrad, {recv, slotCounts, w1, b1, w2, b2, drecv},
      {dxe, dw1, db1, dw2, db2}, 0, OpAttrs::ExpertsAttrs, experts);
  add(OpCode::AllToAllCombine, {dxe, slotCounts}, {drouted, counts3}, 0);
  add(OpCode::DispatchGrad, {drouted, positions}, {dflat1}, 0);
  add(OpCode::Fill, {}, {dprobs}, -1, OpAttrs::FillAttrs, fill(0.0f));
  add(OpCode::GateGrad, {flat, gate, probs, ids, dweights, dprobs},
      {dflat2, dgate}, 0, OpAttrs::GateAttrs, gateAttrs);
  add(OpCode::Add, {dflat1, dflat2}, {dflat});
  add(OpCode::EmbeddingGrad, {tokens, dx3}, {dwte}, -1,
      OpAttrs::EmbeddingGradAttrs,
      [](auto &b) { return fb::CreateEmbeddingGradAttrs(b, kV).Union(); });
  std::vector<uint32_t> grads = {dwte, dgate, dw1, db1, dw2, db2, dhead};
  for (size_t i = 0; i < params.size(); ++i) {
    auto [m, v] = state[i];
    add(OpCode::AdamW, {params[i], grads[i], m, v}, {params[i], m, v}, -1,
        OpAttrs::AdamWAttrs, [](auto &b) {
          return fb::CreateAdamWAttrs(b, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f)
              .Union();
        });
    auto at = static_cast<uint32_t>(p.instructions.size() - 1);
    p.updates.push_back({params[i], at});
    p.updates.push_back({m, at});
    p.updates.push_back({v, at});
  }
  return p;
}

} // namespace flexmoe::testing::moetest

#endif // FLEXMOE_TEST_UNIT_EXECUTOR_MOETESTPROGRAM_H
