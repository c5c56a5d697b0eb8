//===- ProgramBuilder.cpp - small programs for the loader tests -----------===//
#include "ProgramBuilder.h"
#include "runtime/plan/SlotTable.h"
#include "runtime/program/Program.h"

#include <cassert>

using namespace flexmoe;
using namespace flexmoe::testing;

uint32_t ProgramDesc::add(BufferDesc buffer) {
  uint64_t elements = 1;
  for (int64_t dim : buffer.shape)
    elements *= static_cast<uint64_t>(dim);
  buffer.size = elements * 4;
  buffers.push_back(std::move(buffer));
  return static_cast<uint32_t>(buffers.size() - 1);
}

void ProgramDesc::layout() {
  uint64_t offset = 0;
  for (BufferDesc &buffer : buffers) {
    if (buffer.aliasOf >= 0)
      continue;
    buffer.offset = offset;
    offset += (buffer.size + 63) / 64 * 64;
  }
  for (BufferDesc &buffer : buffers)
    if (buffer.aliasOf >= 0)
      buffer.offset = buffers[buffer.aliasOf].offset;
  arenaSize = offset;
}

static plan::Placement toPlan(const MoeLayerDesc &layer) {
  plan::Placement placement;
  placement.worldSize = layer.worldSize;
  placement.slotsPerDevice = layer.slotsPerDevice;
  for (const auto &devices : layer.replicas)
    placement.replicas.emplace_back(devices.begin(), devices.end());
  return placement;
}

static std::vector<int32_t> slotRule(const MoeLayerDesc &layer) {
  plan::SlotTable table = plan::buildSlotTable(toPlan(layer));
  std::vector<int32_t> flat;
  for (const auto &slots : table.slotExpert)
    flat.insert(flat.end(), slots.begin(), slots.end());
  return flat;
}

std::vector<uint8_t> flexmoe::testing::serialize(const ProgramDesc &desc) {
  flatbuffers::FlatBufferBuilder b;
  std::vector<flatbuffers::Offset<fb::Buffer>> buffers;
  for (size_t i = 0; i < desc.buffers.size(); ++i) {
    const BufferDesc &d = desc.buffers[i];
    buffers.push_back(fb::CreateBufferDirect(
        b, d.id < 0 ? static_cast<uint32_t>(i) : static_cast<uint32_t>(d.id),
        d.name.c_str(), d.kind, d.type, &d.shape, d.offset, d.size, d.init,
        d.initStd, d.paramName.empty() ? nullptr : d.paramName.c_str(),
        d.stateOf, d.moeLayer, d.aliasOf));
  }
  std::vector<flatbuffers::Offset<fb::MoeLayer>> layers;
  for (const MoeLayerDesc &l : desc.layers) {
    std::vector<flatbuffers::Offset<fb::ExpertReplicas>> replicas;
    std::vector<flatbuffers::Offset<fb::ReplicaGroup>> groups;
    for (const auto &devices : l.replicas)
      replicas.push_back(fb::CreateExpertReplicasDirect(b, &devices));
    MoeLayerDesc forGroups = l;
    if (!l.groupReplicas.empty())
      forGroups.replicas = l.groupReplicas;
    for (const plan::ReplicaGroup &group :
         plan::buildReplicaGroups(toPlan(forGroups))) {
      std::vector<int32_t> devices, slots;
      for (const plan::ReplicaMember &member : group.members) {
        devices.push_back(static_cast<int32_t>(member.device));
        slots.push_back(static_cast<int32_t>(member.slot));
      }
      groups.push_back(fb::CreateReplicaGroupDirect(
          b, static_cast<int32_t>(group.expert), &devices, &slots));
    }
    flatbuffers::Offset<fb::Placement> placement;
    if (!l.omitPlacement)
      placement = fb::CreatePlacementDirect(b, l.worldSize, l.slotsPerDevice,
                                            &replicas);
    std::vector<int32_t> slots =
        l.slotTable.empty() ? slotRule(l) : l.slotTable;
    layers.push_back(fb::CreateMoeLayerDirect(
        b, l.name.c_str(), l.numExperts, l.topK, l.dModel, l.ffnHidden,
        l.capacity, fb::Activation::Gelu, placement, &slots,
        l.omitReplicaGroups ? nullptr : &groups));
  }
  std::vector<flatbuffers::Offset<fb::Instruction>> instructions;
  for (const InstructionDesc &inst : desc.instructions) {
    flatbuffers::Offset<void> attrs = inst.attrs ? inst.attrs(b) : 0;
    instructions.push_back(
        fb::CreateInstructionDirect(b, inst.opcode, &inst.inputs, &inst.outputs,
                                    inst.moeLayer, inst.attrsType, attrs));
  }
  std::vector<flatbuffers::Offset<fb::InPlaceUpdate>> updates;
  for (auto [buffer, instruction] : desc.updates)
    updates.push_back(fb::CreateInPlaceUpdate(b, buffer, instruction));
  auto optimizer = fb::CreateOptimizerDefaults(b, desc.lr, desc.beta1,
                                               desc.beta2, 1e-8f, 0.01f);
  auto program = fb::CreateProgramDirect(
      b, desc.versionMajor, desc.versionMinor, "train_step", desc.worldSize,
      fb::ComputeType::F32, desc.arenaSize, &buffers, &layers, &instructions,
      desc.lossBuffer, &updates, optimizer);
  fb::FinishProgramBuffer(b, program);
  return std::vector<uint8_t>(b.GetBufferPointer(),
                              b.GetBufferPointer() + b.GetSize());
}

namespace {
using fb::BufferKind;
using fb::ElementType;
using fb::OpAttrs;
using fb::OpCode;

BufferDesc act(std::string name, std::vector<int64_t> shape,
               ElementType type = ElementType::F32) {
  return activation(std::move(name), std::move(shape), type);
}

BufferDesc param(std::string name, std::vector<int64_t> shape,
                 int32_t layer = -1) {
  BufferDesc d = act(name, std::move(shape));
  d.kind = BufferKind::Parameter;
  d.init = fb::InitKind::Normal;
  d.initStd = 0.02f;
  d.paramName = name;
  d.moeLayer = layer;
  return d;
}

BufferDesc state(BufferKind kind, const ProgramDesc &p, uint32_t of) {
  BufferDesc d =
      act(p.buffers[of].name + (kind == BufferKind::AdamM ? ".m" : ".v"),
          p.buffers[of].shape);
  d.kind = kind;
  d.stateOf = static_cast<int32_t>(of);
  d.moeLayer = p.buffers[of].moeLayer;
  return d;
}
} // namespace

ProgramDesc flexmoe::testing::tinyMoeProgram() {
  // B/W = 2, S = 4, D = 8, V = 16, E = 4 experts, 3 slots per device, H = 16;
  // expert 2 has a replica on both devices.
  ProgramDesc p;
  p.worldSize = 2;
  MoeLayerDesc layer;
  layer.name = "moe1";
  layer.slotsPerDevice = 3;
  layer.replicas = {{0}, {1}, {0, 1}, {1}};
  p.layers.push_back(layer);

  BufferDesc tokensDesc = act("tokens", {2, 4}, ElementType::I32);
  tokensDesc.kind = BufferKind::InputTokens;
  uint32_t tokens = p.add(tokensDesc);
  BufferDesc labelsDesc = act("labels", {2, 4}, ElementType::I32);
  labelsDesc.kind = BufferKind::InputLabels;
  uint32_t labels = p.add(labelsDesc);
  uint32_t wte = p.add(param("wte", {16, 8}));
  uint32_t gateW = p.add(param("moe1.gate_weight", {8, 4}));
  uint32_t w1 = p.add(param("moe1.w1", {3, 8, 16}, 0));
  uint32_t b1 = p.add(param("moe1.b1", {3, 16}, 0));
  uint32_t w2 = p.add(param("moe1.w2", {3, 16, 8}, 0));
  uint32_t b2 = p.add(param("moe1.b2", {3, 8}, 0));
  uint32_t head = p.add(param("head", {8, 16}));
  uint32_t headM = p.add(state(BufferKind::AdamM, p, head));
  uint32_t headV = p.add(state(BufferKind::AdamV, p, head));

  uint32_t x = p.add(act("x", {2, 4, 8}));
  BufferDesc flatDesc = act("x.flat", {8, 8});
  flatDesc.aliasOf = static_cast<int32_t>(x);
  uint32_t flat = p.add(flatDesc);
  uint32_t probs = p.add(act("probs", {8, 4}));
  uint32_t ids = p.add(act("expert_ids", {8, 1}, ElementType::I32));
  uint32_t weights = p.add(act("combine_weights", {8, 1}));
  uint32_t routed = p.add(act("routed", {8, 8}));
  uint32_t positions = p.add(act("positions", {8, 1}, ElementType::I32));
  uint32_t counts = p.add(act("counts", {4}, ElementType::I32));
  uint32_t recv = p.add(act("recv", {16, 8}));
  uint32_t slotCounts = p.add(act("slot_counts", {3}, ElementType::I32));
  uint32_t outLocal = p.add(act("out_local", {16, 8}));
  uint32_t out = p.add(act("out", {8, 8}));
  uint32_t outCounts = p.add(act("out_counts", {4}, ElementType::I32));
  uint32_t y = p.add(act("y", {8, 8}));
  uint32_t logits = p.add(act("logits", {8, 16}));
  BufferDesc lossDesc = act("loss", {});
  lossDesc.kind = BufferKind::Loss;
  uint32_t loss = p.add(lossDesc);
  BufferDesc dlossDesc = act("dloss", {});
  dlossDesc.kind = BufferKind::Gradient;
  uint32_t dloss = p.add(dlossDesc);
  BufferDesc dlogitsDesc = act("dlogits", {8, 16});
  dlogitsDesc.kind = BufferKind::Gradient;
  uint32_t dlogits = p.add(dlogitsDesc);
  BufferDesc dyDesc = act("dy", {8, 8});
  dyDesc.kind = BufferKind::Gradient;
  uint32_t dy = p.add(dyDesc);
  BufferDesc dheadDesc = act("dhead", {8, 16});
  dheadDesc.kind = BufferKind::Gradient;
  uint32_t dhead = p.add(dheadDesc);
  p.layout();
  p.lossBuffer = static_cast<int32_t>(loss);

  auto add = [&](OpCode op, std::vector<uint32_t> ins,
                 std::vector<uint32_t> outs, int32_t moeLayer = -1,
                 OpAttrs type = OpAttrs::NONE, AttrsFn attrs = nullptr) {
    p.instructions.push_back({op, std::move(ins), std::move(outs), moeLayer,
                              type, std::move(attrs)});
  };
  add(OpCode::Embedding, {tokens, wte}, {x});
  add(OpCode::Reshape, {x}, {flat});
  add(OpCode::Gate, {flat, gateW}, {probs, ids, weights}, 0, OpAttrs::GateAttrs,
      [](auto &b) { return fb::CreateGateAttrs(b, 1).Union(); });
  add(OpCode::Dispatch, {flat, ids}, {routed, positions, counts}, 0,
      OpAttrs::DispatchAttrs,
      [](auto &b) { return fb::CreateDispatchAttrs(b, 4, 0).Union(); });
  add(OpCode::AllToAllDispatch, {routed, counts}, {recv, slotCounts}, 0);
  add(OpCode::Experts, {recv, slotCounts, w1, b1, w2, b2}, {outLocal}, 0,
      OpAttrs::ExpertsAttrs, [](auto &b) {
        return fb::CreateExpertsAttrs(b, fb::Activation::Gelu, 0).Union();
      });
  add(OpCode::AllToAllCombine, {outLocal, slotCounts}, {out, outCounts}, 0);
  add(OpCode::Combine, {out, positions, weights}, {y}, 0);
  add(OpCode::Linear, {y, head}, {logits});
  add(OpCode::CrossEntropy, {logits, labels}, {loss}, -1,
      OpAttrs::CrossEntropyAttrs,
      [](auto &b) { return fb::CreateCrossEntropyAttrs(b, -100).Union(); });
  add(OpCode::Fill, {}, {dloss}, -1, OpAttrs::FillAttrs,
      [](auto &b) { return fb::CreateFillAttrs(b, 1.0f).Union(); });
  add(OpCode::CrossEntropyGrad, {logits, labels, dloss}, {dlogits}, -1,
      OpAttrs::CrossEntropyAttrs,
      [](auto &b) { return fb::CreateCrossEntropyAttrs(b, -100).Union(); });
  add(OpCode::LinearGrad, {y, head, dlogits}, {dy, dhead});
  add(OpCode::AllReduceMean, {dhead}, {dhead});
  add(OpCode::AdamW, {head, dhead, headM, headV}, {head, headM, headV}, -1,
      OpAttrs::AdamWAttrs, [](auto &b) {
        return fb::CreateAdamWAttrs(b, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f)
            .Union();
      });
  uint32_t adamw = static_cast<uint32_t>(p.instructions.size() - 1);
  p.updates = {{head, adamw}, {headM, adamw}, {headV, adamw}};
  return p;
}

size_t flexmoe::testing::findInstruction(const ProgramDesc &desc,
                                         fb::OpCode opcode) {
  for (size_t i = 0; i < desc.instructions.size(); ++i)
    if (desc.instructions[i].opcode == opcode)
      return i;
  assert(false && "no such instruction");
  return 0;
}

uint32_t flexmoe::testing::findBuffer(const ProgramDesc &desc,
                                      const std::string &name) {
  for (size_t i = 0; i < desc.buffers.size(); ++i)
    if (desc.buffers[i].name == name)
      return static_cast<uint32_t>(i);
  assert(false && "no such buffer");
  return 0;
}

BufferDesc flexmoe::testing::activation(std::string name,
                                        std::vector<int64_t> shape,
                                        fb::ElementType type) {
  BufferDesc d;
  d.name = std::move(name);
  d.shape = std::move(shape);
  d.type = type;
  return d;
}

std::string flexmoe::testing::verifyError(const ProgramDesc &desc) {
  std::vector<uint8_t> bytes = serialize(desc);
  StatusOr<const fb::Program *> result = program::verifyProgram(bytes);
  return result ? std::string() : result.status().message();
}
