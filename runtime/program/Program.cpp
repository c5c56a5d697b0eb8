//===- Program.cpp - loading and verifying .fmoe programs -----------------===//
#include "runtime/program/Program.h"
#include "runtime/plan/SlotTable.h"
#include "runtime/program/OpInfo.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <vector>

using namespace flexmoe;
using namespace flexmoe::program;

int64_t flexmoe::program::elementSize(fb::ElementType type) {
  switch (type) {
  case fb::ElementType::F32:
  case fb::ElementType::I32:
    return 4;
  }
  return 0;
}

bool flexmoe::program::isPersistent(fb::BufferKind kind) {
  switch (kind) {
  case fb::BufferKind::Parameter:
  case fb::BufferKind::AdamM:
  case fb::BufferKind::AdamV:
  case fb::BufferKind::InputTokens:
  case fb::BufferKind::InputLabels:
    return true;
  default:
    return false;
  }
}

plan::Placement flexmoe::program::toPlacement(const fb::Placement &placement) {
  plan::Placement result;
  result.worldSize = placement.world_size();
  result.slotsPerDevice = placement.slots_per_device();
  if (const auto *replicas = placement.replicas()) {
    for (const fb::ExpertReplicas *expert : *replicas) {
      std::vector<int64_t> devices;
      if (expert && expert->devices())
        devices.assign(expert->devices()->begin(), expert->devices()->end());
      result.replicas.push_back(std::move(devices));
    }
  }
  return result;
}

namespace {

template <typename Enum> bool inRange(Enum value) {
  using U = std::underlying_type_t<Enum>;
  return static_cast<U>(value) >= static_cast<U>(Enum::MIN) &&
         static_cast<U>(value) <= static_cast<U>(Enum::MAX);
}

std::string_view str(const flatbuffers::String *s) {
  return s ? std::string_view(s->c_str(), s->size()) : std::string_view();
}

/// True when `s` holds a control character: names end up in one-line
/// error messages, logs and checkpoint keys.
bool hasControlCharacter(const flatbuffers::String *s) {
  for (char c : str(s))
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return true;
  return false;
}

/// Bytes outside printable ASCII as \xNN.
std::string printable(std::string_view name) {
  std::string out;
  for (char c : name) {
    auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f) {
      out += c;
      continue;
    }
    const char *hex = "0123456789abcdef";
    out += "\\x";
    out += hex[byte >> 4];
    out += hex[byte & 15];
  }
  return out;
}

/// `s` for an error message: bytes outside printable ASCII as \xNN, so a
/// corrupted name can never break the message's single line, and at most
/// 64 of them.
std::string printable(const flatbuffers::String *s) {
  constexpr size_t kMaxBytes = 64;
  std::string_view name = str(s);
  if (name.size() > kMaxBytes)
    return printable(name.substr(0, kMaxBytes)) + "...";
  return printable(name);
}

/// The flatbuffers verifier checks a vector's length field (4-byte
/// aligned) but not that 8-byte elements are 8-byte aligned; reading a
/// misaligned int64 is undefined behaviour.
bool misaligned(const flatbuffers::Vector<int64_t> *v) {
  return v && v->size() > 0 &&
         reinterpret_cast<uintptr_t>(v->data()) % alignof(int64_t) != 0;
}

std::string shapeString(const flatbuffers::Vector<int64_t> *shape) {
  std::ostringstream os;
  os << '[';
  if (shape)
    for (flatbuffers::uoffset_t i = 0; i < shape->size(); ++i)
      os << (i ? ", " : "") << shape->Get(i);
  os << ']';
  return os.str();
}

const char *typeName(fb::ElementType type) {
  return type == fb::ElementType::I32 ? "i32" : "f32";
}

/// Checks one program after the flatbuffers verifier accepted its structure.
/// Every accessor result that may be absent is checked before use: a
/// structurally valid file can still omit any field.
class SemanticVerifier {
public:
  explicit SemanticVerifier(const fb::Program &program) : p(program) {}

  Status run() {
    FLEXMOE_RETURN_IF_ERROR(checkHeader());
    FLEXMOE_RETURN_IF_ERROR(checkMoeLayers());
    FLEXMOE_RETURN_IF_ERROR(checkBuffers());
    FLEXMOE_RETURN_IF_ERROR(checkInstructions());
    FLEXMOE_RETURN_IF_ERROR(checkUpdatesAndLoss());
    return checkOptimizer();
  }

private:
  // The plan library's bound: it keeps what a corrupted file can make the
  // verifier allocate small.
  static constexpr int64_t kMaxWorldSize = plan::kMaxWorldSize;

  const fb::Program &p;
  uint32_t numBuffers = 0;
  uint32_t numLayers = 0;
  /// The end of the last buffer in the arena.
  uint64_t extent = 0;

  std::string bufferRef(uint32_t id) const {
    std::ostringstream os;
    os << "buffer " << id;
    const fb::Buffer *b = p.buffers()->Get(id);
    if (b && b->name())
      os << " ('" << printable(b->name()) << "')";
    return os.str();
  }

  Status checkHeader() {
    if (p.version_major() != kFormatVersionMajor)
      return errorf("program format ", p.version_major(), ".",
                    p.version_minor(), " is not supported by this runtime (",
                    kFormatVersionMajor, ".x)");
    if (p.world_size() < 1 || p.world_size() > kMaxWorldSize)
      return errorf("world size ", p.world_size(), " must be in [1, ",
                    kMaxWorldSize, "]");
    if (!inRange(p.compute_type()))
      return errorf("unknown compute type ",
                    static_cast<int>(p.compute_type()));
    if (hasControlCharacter(p.name()))
      return errorf("the program's name has a control character");
    if (!p.buffers() || p.buffers()->size() == 0)
      return errorf("the program declares no buffers");
    if (!p.instructions())
      return errorf("the program has no instruction stream");
    numBuffers = p.buffers()->size();
    numLayers = p.moe_layers() ? p.moe_layers()->size() : 0;
    return Status::ok();
  }

  Status checkMoeLayers() {
    std::set<std::string_view> names;
    for (uint32_t l = 0; l < numLayers; ++l) {
      const fb::MoeLayer *layer = p.moe_layers()->Get(l);
      std::ostringstream ctx;
      ctx << "MoE layer " << l;
      if (!layer)
        return errorf(ctx.str(), " is missing");
      if (str(layer->name()).empty())
        return errorf(ctx.str(), " has no name");
      ctx << " ('" << printable(layer->name()) << "')";
      if (hasControlCharacter(layer->name()))
        return errorf(ctx.str(), ": the name has a control character");
      if (!names.insert(str(layer->name())).second)
        return errorf(ctx.str(), ": the name is used by another layer");
      Status status = checkMoeLayer(*layer);
      if (!status)
        return std::move(status).withContext(ctx.str());
    }
    return Status::ok();
  }

  Status checkMoeLayer(const fb::MoeLayer &layer) {
    if (layer.num_experts() < 1)
      return errorf("num_experts ", layer.num_experts(), " must be at least 1");
    if (layer.top_k() < 1 || layer.top_k() > layer.num_experts())
      return errorf("top_k ", layer.top_k(), " must be in [1, ",
                    layer.num_experts(), "]");
    if (layer.d_model() < 1 || layer.ffn_hidden() < 1)
      return errorf("d_model ", layer.d_model(), " and ffn_hidden ",
                    layer.ffn_hidden(), " must be positive");
    if (layer.capacity() < 0)
      return errorf("capacity ", layer.capacity(), " must not be negative");
    if (!inRange(layer.activation()))
      return errorf("unknown activation ",
                    static_cast<int>(layer.activation()));
    if (!layer.placement())
      return errorf("has no placement");
    const fb::Placement &fp = *layer.placement();
    if (fp.world_size() != p.world_size())
      return errorf("placement is for world size ", fp.world_size(),
                    " but the program runs on ", p.world_size());
    plan::Placement placement = toPlacement(fp);
    if (placement.numExperts() != layer.num_experts())
      return errorf("placement has ", placement.numExperts(),
                    " experts but the layer has ", layer.num_experts());
    FLEXMOE_RETURN_IF_ERROR(
        plan::validatePlacement(placement, str(layer.name())));

    // The tables must be exactly what the plan library derives from the
    // placement: the runtime re-plans from the placement and must agree with
    // the compiler about the initial state. Sizes first: the table's length
    // is bounded by the file, slots_per_device is not.
    const auto *table = layer.slot_table();
    uint64_t numSlots = static_cast<uint64_t>(placement.worldSize) *
                        static_cast<uint64_t>(placement.slotsPerDevice);
    if (!table || table->size() != numSlots)
      return errorf(
          "slot table has ", table ? table->size() : 0,
          " entries, expected world_size x slots_per_device = ", numSlots);
    plan::SlotTable slots = plan::buildSlotTable(placement);
    for (int64_t d = 0; d < placement.worldSize; ++d)
      for (int64_t s = 0; s < placement.slotsPerDevice; ++s) {
        int32_t stored = table->Get(d * placement.slotsPerDevice + s);
        if (stored != slots.slotExpert[d][s])
          return errorf("slot ", s, " of device ", d, " holds expert ", stored,
                        " but the placement puts expert ",
                        slots.slotExpert[d][s], " there");
      }
    std::vector<plan::ReplicaGroup> groups =
        plan::buildReplicaGroups(placement);
    const auto *stored = layer.replica_groups();
    uint32_t numStored = stored ? stored->size() : 0;
    if (numStored != groups.size())
      return errorf("has ", numStored, " replica groups but the placement has ",
                    groups.size(), " replicated experts");
    for (uint32_t g = 0; g < numStored; ++g) {
      const fb::ReplicaGroup *group = stored->Get(g);
      const plan::ReplicaGroup &expected = groups[g];
      bool same = group && group->expert() == expected.expert &&
                  group->devices() && group->slots() &&
                  group->devices()->size() == expected.members.size() &&
                  group->slots()->size() == expected.members.size();
      for (size_t i = 0; same && i < expected.members.size(); ++i)
        same = group->devices()->Get(i) == expected.members[i].device &&
               group->slots()->Get(i) == expected.members[i].slot;
      if (!same)
        return errorf("replica group ", g,
                      " does not match the replicas of "
                      "expert ",
                      expected.expert, " in the placement");
    }
    return Status::ok();
  }

  Status checkBuffers() {
    std::set<std::string_view> paramNames;
    for (uint32_t i = 0; i < numBuffers; ++i) {
      const fb::Buffer *b = p.buffers()->Get(i);
      if (!b)
        return errorf("buffer ", i, " is missing");
      Status status = checkBuffer(i, *b, paramNames);
      if (!status)
        return std::move(status).withContext(bufferRef(i));
      extent = std::max(extent, b->offset() + b->size());
    }
    // The runtime allocates (and zeroes) the whole arena up front: an arena
    // far larger than its buffers is a corrupted size, not a reason to run
    // out of memory. Allow alignment padding up to a page.
    constexpr uint64_t kArenaSlack = 4096;
    if (p.arena_size() > extent + kArenaSlack)
      return errorf("arena_size ", p.arena_size(),
                    " bytes is far larger than the ", extent,
                    " bytes its buffers occupy");
    return Status::ok();
  }

  Status checkBuffer(uint32_t i, const fb::Buffer &b,
                     std::set<std::string_view> &paramNames) {
    if (b.id() != i)
      return errorf("has id ", b.id(), " but sits at index ", i,
                    " of the buffer table");
    if (hasControlCharacter(b.name()) || hasControlCharacter(b.param_name()))
      return errorf("has a name with a control character");
    if (!inRange(b.kind()))
      return errorf("unknown buffer kind ", static_cast<int>(b.kind()));
    if (!inRange(b.element_type()))
      return errorf("unknown element type ",
                    static_cast<int>(b.element_type()));
    if (!inRange(b.init()))
      return errorf("unknown init kind ", static_cast<int>(b.init()));
    if (!b.shape())
      return errorf("has no shape");
    if (misaligned(b.shape()))
      return errorf("has a misaligned shape vector (a corrupted file)");
    uint64_t elements = 1;
    for (int64_t dim : *b.shape()) {
      // Kernels divide by dimensions (rows = elements / last dim); no op
      // of a program has an empty operand.
      if (dim <= 0)
        return errorf("has a ", dim < 0 ? "negative" : "zero",
                      " dimension in shape ", shapeString(b.shape()));
      if (__builtin_mul_overflow(elements, static_cast<uint64_t>(dim),
                                 &elements))
        return errorf("shape ", shapeString(b.shape()), " is too large");
    }
    uint64_t bytes;
    if (__builtin_mul_overflow(
            elements, static_cast<uint64_t>(elementSize(b.element_type())),
            &bytes))
      return errorf("shape ", shapeString(b.shape()), " is too large");
    if (bytes != b.size())
      return errorf("size ", b.size(), " bytes does not match shape ",
                    shapeString(b.shape()), " x ", typeName(b.element_type()),
                    " (", bytes, " bytes)");
    uint64_t end;
    if (__builtin_add_overflow(b.offset(), b.size(), &end) ||
        end > p.arena_size())
      return errorf("bytes [", b.offset(), ", ", b.offset(), " + ", b.size(),
                    ") lie outside the arena of ", p.arena_size(), " bytes");
    if (b.offset() % 4 != 0)
      return errorf("offset ", b.offset(), " is not 4-byte aligned");

    const bool isFloatKind = b.kind() != fb::BufferKind::InputTokens &&
                             b.kind() != fb::BufferKind::InputLabels &&
                             b.kind() != fb::BufferKind::Activation &&
                             b.kind() != fb::BufferKind::Scratch;
    if (isFloatKind && b.element_type() != fb::ElementType::F32)
      return errorf("is a ", fb::EnumNameBufferKind(b.kind()),
                    " buffer and must be f32");
    if (!isFloatKind &&
        (b.kind() == fb::BufferKind::InputTokens ||
         b.kind() == fb::BufferKind::InputLabels) &&
        b.element_type() != fb::ElementType::I32)
      return errorf("is an input of token ids or labels and must be i32");
    if (b.kind() == fb::BufferKind::Loss && b.shape()->size() != 0)
      return errorf("is the loss and must be a scalar, not ",
                    shapeString(b.shape()));

    if (b.alias_of() != -1) {
      int32_t root = b.alias_of();
      if (root < 0 || static_cast<uint32_t>(root) >= numBuffers ||
          static_cast<uint32_t>(root) == i)
        return errorf("is a view of buffer ", root, ", which does not exist");
      const fb::Buffer *target = p.buffers()->Get(root);
      if (!target || target->alias_of() != -1)
        return errorf("is a view of ", bufferRef(root),
                      ", which is itself a view");
      if (target->offset() != b.offset() || target->size() != b.size() ||
          target->element_type() != b.element_type())
        return errorf("is a view of ", bufferRef(root),
                      " but differs in offset, size or element type");
      if (target->kind() != b.kind() || target->moe_layer() != b.moe_layer())
        return errorf("is a view of ", bufferRef(root),
                      " but differs in kind or MoE layer");
      if (b.init() != fb::InitKind::None || b.param_name() ||
          b.state_of() != -1)
        return errorf("is a view and cannot carry parameter or optimizer "
                      "state fields; its source does");
      // A view is its source's storage under another shape: the source
      // carries the parameter, state and layer checks.
      return Status::ok();
    }

    if (b.kind() == fb::BufferKind::Parameter) {
      if (str(b.param_name()).empty())
        return errorf("is a parameter without a name");
      if (!paramNames.insert(str(b.param_name())).second)
        return errorf("parameter name '", printable(b.param_name()),
                      "' is used twice");
      if (b.init() == fb::InitKind::None)
        return errorf("is a parameter without an initializer");
      if (b.init() == fb::InitKind::Normal &&
          !(std::isfinite(b.init_std()) && b.init_std() >= 0))
        return errorf("has an invalid init_std ", b.init_std());
    }
    if (b.kind() == fb::BufferKind::AdamM ||
        b.kind() == fb::BufferKind::AdamV) {
      int32_t owner = b.state_of();
      if (owner < 0 || static_cast<uint32_t>(owner) >= numBuffers)
        return errorf("is optimizer state of buffer ", owner,
                      ", which does not exist");
      const fb::Buffer *param = p.buffers()->Get(owner);
      if (!param || param->kind() != fb::BufferKind::Parameter)
        return errorf("is optimizer state of ", bufferRef(owner),
                      ", which is not a parameter");
      if (!param->shape() || !sameShape(param->shape(), b.shape()))
        return errorf("has shape ", shapeString(b.shape()),
                      " but its parameter has shape ",
                      shapeString(param->shape()));
      if (param->moe_layer() != b.moe_layer())
        return errorf("belongs to MoE layer ", b.moe_layer(),
                      " but its parameter to ", param->moe_layer());
    } else if (b.state_of() != -1) {
      return errorf("names a parameter (state_of) but is not optimizer state");
    }
    if (b.moe_layer() < -1 || b.moe_layer() >= static_cast<int32_t>(numLayers))
      return errorf("names MoE layer ", b.moe_layer(), " but the program has ",
                    numLayers);
    if (b.moe_layer() >= 0 && isPersistent(b.kind())) {
      // Expert state is stored per device as [slots_per_device, ...].
      const fb::MoeLayer *layer = p.moe_layers()->Get(b.moe_layer());
      int64_t slots = layer->placement()->slots_per_device();
      if (b.shape()->size() == 0 || b.shape()->Get(0) != slots)
        return errorf("is expert state of layer '", printable(layer->name()),
                      "' and must have ", slots,
                      " slots as leading dimension, not shape ",
                      shapeString(b.shape()));
    }
    return Status::ok();
  }

  static bool sameShape(const flatbuffers::Vector<int64_t> *a,
                        const flatbuffers::Vector<int64_t> *b) {
    if (!a || !b || a->size() != b->size())
      return false;
    for (flatbuffers::uoffset_t i = 0; i < a->size(); ++i)
      if (a->Get(i) != b->Get(i))
        return false;
    return true;
  }

  Status checkInstructions() {
    for (uint32_t i = 0; i < p.instructions()->size(); ++i) {
      const fb::Instruction *inst = p.instructions()->Get(i);
      std::ostringstream ctx;
      ctx << "instruction " << i;
      if (!inst)
        return errorf(ctx.str(), " is missing");
      const OpInfo *info = lookupOpInfo(inst->opcode());
      if (!info)
        return errorf(ctx.str(), " has opcode ",
                      static_cast<int>(inst->opcode()),
                      ", unknown to this runtime");
      ctx << " (" << fb::EnumNameOpCode(inst->opcode()) << ")";
      Status status = checkInstruction(*inst, *info);
      if (!status)
        return std::move(status).withContext(ctx.str());
    }
    return Status::ok();
  }

  /// A possibly absent vector of buffer ids.
  struct IdList {
    explicit IdList(const flatbuffers::Vector<uint32_t> *ids) : ids(ids) {}
    int size() const { return ids ? static_cast<int>(ids->size()) : 0; }
    uint32_t Get(int k) const { return ids->Get(k); }
    const flatbuffers::Vector<uint32_t> *ids;
  };

  const fb::Buffer &buffer(uint32_t id) const { return *p.buffers()->Get(id); }
  const flatbuffers::Vector<int64_t> &shapeOf(uint32_t id) const {
    return *buffer(id).shape();
  }
  uint64_t elementsOf(uint32_t id) const {
    return buffer(id).size() / elementSize(buffer(id).element_type());
  }

  Status checkInstruction(const fb::Instruction &inst, const OpInfo &info) {
    // An absent vector reads as an empty one.
    IdList ins(inst.inputs()), outs(inst.outputs());
    int numIns = ins.size(), numOuts = outs.size();

    if (numIns < info.minInputs || numIns > info.maxInputs) {
      if (info.minInputs == info.maxInputs)
        return errorf("takes ", info.minInputs, " inputs, not ", numIns);
      return errorf("takes ", info.minInputs, " to ", info.maxInputs,
                    " inputs, not ", numIns);
    }
    int expectedOuts = info.variadicSameCount
                           ? numIns
                           : static_cast<int>(info.outputTypes.size());
    if (numOuts != expectedOuts)
      return errorf("produces ", expectedOuts, " outputs, not ", numOuts);

    for (int k = 0; k < numIns; ++k)
      if (ins.Get(k) >= numBuffers)
        return errorf("input ", k, " names buffer ", ins.Get(k),
                      " but the program has ", numBuffers);
    for (int k = 0; k < numOuts; ++k)
      if (outs.Get(k) >= numBuffers)
        return errorf("output ", k, " names buffer ", outs.Get(k),
                      " but the program has ", numBuffers);

    // Element types where the opcode fixes them.
    auto checkType = [&](const char *role, int k, uint32_t id,
                         char expected) -> Status {
      fb::ElementType actual = buffer(id).element_type();
      if (expected == 'f' && actual != fb::ElementType::F32)
        return errorf(role, " ", k, " (", bufferRef(id), ") must be f32");
      if (expected == 'i' && actual != fb::ElementType::I32)
        return errorf(role, " ", k, " (", bufferRef(id), ") must be i32");
      return Status::ok();
    };
    for (int k = 0; k < numIns; ++k) {
      char t = info.variadicSameCount ? 'f' : info.inputTypes[k];
      FLEXMOE_RETURN_IF_ERROR(checkType("input", k, ins.Get(k), t));
    }
    for (int k = 0; k < numOuts; ++k) {
      char t = info.variadicSameCount ? 'f' : info.outputTypes[k];
      if (t == '*')
        t = buffer(ins.Get(0)).element_type() == fb::ElementType::I32 ? 'i'
                                                                      : 'f';
      FLEXMOE_RETURN_IF_ERROR(checkType("output", k, outs.Get(k), t));
    }

    if (inst.attrs_type() != info.attrs)
      return errorf("carries attributes ",
                    fb::EnumNameOpAttrs(inst.attrs_type()), ", expected ",
                    fb::EnumNameOpAttrs(info.attrs));
    if (info.attrs != fb::OpAttrs::NONE && !inst.attrs())
      return errorf("has no ", fb::EnumNameOpAttrs(info.attrs), " table");

    FLEXMOE_RETURN_IF_ERROR(checkAttrValues(inst));

    if (info.needsMoeLayer) {
      if (inst.moe_layer() < 0 ||
          inst.moe_layer() >= static_cast<int32_t>(numLayers))
        return errorf("names MoE layer ", inst.moe_layer(),
                      " but the program has ", numLayers);
    } else if (inst.moe_layer() != -1) {
      return errorf("is not a MoE op but names MoE layer ", inst.moe_layer());
    }
    FLEXMOE_RETURN_IF_ERROR(checkStorage(inst, ins, outs));
    return checkShapes(inst, ins, outs, numIns);
  }

  /// Attribute values the kernels would only reject in the middle of a step.
  Status checkAttrValues(const fb::Instruction &inst) {
    bool badVector = false;
    if (const auto *a = inst.attrs_as_ReduceSumAttrs())
      badVector = misaligned(a->dims());
    if (const auto *a = inst.attrs_as_TransposeAttrs())
      badVector = misaligned(a->permutation());
    if (const auto *a = inst.attrs_as_RollAttrs())
      badVector = misaligned(a->shifts()) || misaligned(a->dims());
    if (badVector)
      return errorf("has a misaligned attribute vector (a corrupted file)");
    switch (inst.opcode()) {
    case fb::OpCode::AdamW: {
      const fb::AdamWAttrs &a = *inst.attrs_as_AdamWAttrs();
      if (!(std::isfinite(a.lr()) && a.lr() >= 0 && a.beta1() >= 0 &&
            a.beta1() < 1 && a.beta2() >= 0 && a.beta2() < 1 &&
            a.epsilon() > 0 && std::isfinite(a.epsilon()) &&
            std::isfinite(a.weight_decay()) && a.weight_decay() >= 0))
        return errorf("has invalid AdamW hyper-parameters (lr ", a.lr(),
                      ", betas ", a.beta1(), " and ", a.beta2(), ", epsilon ",
                      a.epsilon(), ", weight decay ", a.weight_decay(), ")");
      return Status::ok();
    }
    case fb::OpCode::Dropout: {
      float rate = inst.attrs_as_DropoutAttrs()->rate();
      if (!(rate >= 0 && rate < 1))
        return errorf("dropout rate ", rate, " must lie in [0, 1)");
      return Status::ok();
    }
    case fb::OpCode::LayerNorm:
    case fb::OpCode::LayerNormGrad: {
      float epsilon = inst.attrs_as_LayerNormAttrs()->epsilon();
      if (!(epsilon >= 0 && std::isfinite(epsilon)))
        return errorf("layer norm epsilon ", epsilon, " is invalid");
      return Status::ok();
    }
    default:
      return Status::ok();
    }
  }

  /// Ops whose kernels accept an output that is exactly one of their
  /// inputs (docs/program-format.md: "an output may equal an input").
  static bool mayWorkInPlace(fb::OpCode opcode) {
    switch (opcode) {
    case fb::OpCode::AdamW:
    case fb::OpCode::Scale:
    case fb::OpCode::Dropout:
    case fb::OpCode::Gelu:
    case fb::OpCode::GeluGrad:
    case fb::OpCode::Add:
    case fb::OpCode::Mul:
    case fb::OpCode::Reshape:
    case fb::OpCode::Copy:
    case fb::OpCode::ReplicaGradSync:
    case fb::OpCode::AllReduceMean:
    case fb::OpCode::AllReduceSum:
      return true;
    default:
      return false;
    }
  }

  /// What an instruction may write: kernels read their inputs while they
  /// write their outputs, so an output may share bytes with an operand only
  /// when it is exactly that input of an op that works in place; and only
  /// the optimizer writes persistent state.
  Status checkStorage(const fb::Instruction &inst, const IdList &ins,
                      const IdList &outs) {
    auto overlap = [&](uint32_t a, uint32_t b) {
      const fb::Buffer &x = buffer(a), &y = buffer(b);
      return x.offset() < y.offset() + y.size() &&
             y.offset() < x.offset() + x.size();
    };
    auto same = [&](uint32_t a, uint32_t b) {
      return buffer(a).offset() == buffer(b).offset() &&
             buffer(a).size() == buffer(b).size();
    };
    bool inPlace = mayWorkInPlace(inst.opcode());
    for (int o = 0; o < outs.size(); ++o) {
      uint32_t id = outs.Get(o);
      fb::BufferKind kind = buffer(id).kind();
      if (isPersistent(kind) && inst.opcode() != fb::OpCode::AdamW)
        return errorf("output ", o, " (", bufferRef(id), ") is a ",
                      fb::EnumNameBufferKind(kind),
                      " buffer, which only nn.adamw may write");
      for (int j = 0; j < o; ++j)
        if (overlap(id, outs.Get(j)))
          return errorf("outputs ", j, " and ", o, " (", bufferRef(outs.Get(j)),
                        " and ", bufferRef(id), ") share arena bytes");
      for (int k = 0; k < ins.size(); ++k)
        if (overlap(id, ins.Get(k)) && !(inPlace && same(id, ins.Get(k))))
          return errorf("output ", o, " (", bufferRef(id),
                        ") shares arena bytes with input ", k, " (",
                        bufferRef(ins.Get(k)), ")");
    }
    if (inst.opcode() == fb::OpCode::AdamW) {
      // In place on (parameter, m, v) = inputs 0, 2, 3.
      const int stateInput[3] = {0, 2, 3};
      const fb::BufferKind kinds[3] = {fb::BufferKind::Parameter,
                                       fb::BufferKind::AdamM,
                                       fb::BufferKind::AdamV};
      for (int o = 0; o < 3; ++o) {
        uint32_t id = ins.Get(stateInput[o]);
        if (buffer(id).kind() != kinds[o])
          return errorf("input ", stateInput[o], " (", bufferRef(id),
                        ") must be a buffer of kind ",
                        fb::EnumNameBufferKind(kinds[o]), " buffer");
        if (!same(outs.Get(o), id))
          return errorf("output ", o, " (", bufferRef(outs.Get(o)),
                        ") must update input ", stateInput[o], " (",
                        bufferRef(id), ") in place");
      }
      for (int k : {2, 3})
        if (buffer(ins.Get(k)).state_of() != static_cast<int32_t>(ins.Get(0)))
          return errorf("input ", k, " (", bufferRef(ins.Get(k)),
                        ") is not the optimizer state of input 0 (",
                        bufferRef(ins.Get(0)), ")");
    }
    return Status::ok();
  }

  using Dims = std::vector<int64_t>;

  Dims dims(uint32_t id) const {
    const auto &s = shapeOf(id);
    return Dims(s.begin(), s.end());
  }
  static std::string dimsString(const Dims &d) {
    std::ostringstream os;
    os << '[';
    for (size_t i = 0; i < d.size(); ++i)
      os << (i ? ", " : "") << d[i];
    os << ']';
    return os.str();
  }
  static Dims concat(Dims a, const Dims &b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }
  static Dims leading(const Dims &d, size_t drop) {
    return Dims(d.begin(), d.end() - std::min(drop, d.size()));
  }

  /// Buffer `id` (operand `k`, named `what` in the op's signature) must have
  /// exactly shape `expected`.
  Status expectShape(const char *role, int k, const char *what, uint32_t id,
                     const Dims &expected) const {
    if (dims(id) != expected)
      return errorf(role, " ", k, " (", what, ", ", bufferRef(id),
                    ") has shape ", shapeString(&shapeOf(id)), ", expected ",
                    dimsString(expected));
    return Status::ok();
  }
  Status expectRank(const char *role, int k, const char *what, uint32_t id,
                    size_t rank, bool atLeast = false) const {
    size_t actual = shapeOf(id).size();
    if (atLeast ? actual < rank : actual != rank)
      return errorf(role, " ", k, " (", what, ", ", bufferRef(id),
                    ") has shape ", shapeString(&shapeOf(id)), ", expected ",
                    atLeast ? "rank >= " : "rank ", rank);
    return Status::ok();
  }

  /// The numpy broadcast of two shapes, or nullopt.
  static std::optional<Dims> broadcast(const Dims &a, const Dims &b) {
    Dims out(std::max(a.size(), b.size()));
    for (size_t i = 0; i < out.size(); ++i) {
      int64_t x = i < a.size() ? a[a.size() - 1 - i] : 1;
      int64_t y = i < b.size() ? b[b.size() - 1 - i] : 1;
      if (x != y && x != 1 && y != 1)
        return std::nullopt;
      out[out.size() - 1 - i] = x == 1 ? y : x;
    }
    return out;
  }

  /// `dim` (negative counts from the end) as an index into a shape of
  /// `rank` dimensions, or -1.
  static int64_t normalizeDim(int64_t dim, size_t rank) {
    int64_t r = static_cast<int64_t>(rank);
    if (dim < -r || dim >= r)
      return -1;
    return dim < 0 ? dim + r : dim;
  }

  /// The relations between an instruction's operand shapes that its kernels
  /// rely on (docs/IR.md): every kernel sizes its loops from these shapes,
  /// so a program that passes here cannot make one read or write outside a
  /// buffer.
  Status checkShapes(const fb::Instruction &inst, const IdList &ins,
                     const IdList &outs, int numIns) {
#define FLEXMOE_CHECK(expr) FLEXMOE_RETURN_IF_ERROR(expr)
    auto in = [&](int k, const char *what, const Dims &expected) {
      return expectShape("input", k, what, ins.Get(k), expected);
    };
    auto out = [&](int k, const char *what, const Dims &expected) {
      return expectShape("output", k, what, outs.Get(k), expected);
    };
    auto inRank = [&](int k, const char *what, size_t rank,
                      bool atLeast = false) {
      return expectRank("input", k, what, ins.Get(k), rank, atLeast);
    };
    auto I = [&](int k) { return dims(ins.Get(k)); };
    const fb::MoeLayer *layer =
        inst.moe_layer() >= 0 ? p.moe_layers()->Get(inst.moe_layer()) : nullptr;

    switch (inst.opcode()) {
    case fb::OpCode::Embedding:
    case fb::OpCode::EmbeddingGrad: {
      bool forward = inst.opcode() == fb::OpCode::Embedding;
      // The table is input 1 of the forward, output 0 of the backward.
      Dims table = forward ? I(1) : dims(outs.Get(0));
      if (table.size() != 2)
        return errorf("the table has shape ", dimsString(table),
                      ", expected [vocab, dim]");
      if (!forward) {
        int64_t vocab = inst.attrs_as_EmbeddingGradAttrs()->vocab_size();
        if (vocab != table[0])
          return errorf("vocab_size ", vocab, " differs from the ", table[0],
                        " rows of the table gradient");
        return in(1, "dy", concat(I(0), {table[1]}));
      }
      return out(0, "y", concat(I(0), {table[1]}));
    }
    case fb::OpCode::Linear:
    case fb::OpCode::LinearGrad: {
      FLEXMOE_CHECK(inRank(1, "weight", 2));
      FLEXMOE_CHECK(inRank(0, "x", 1, true));
      Dims x = I(0), w = I(1);
      if (x.back() != w[0])
        return errorf("x has K = ", x.back(), " but the weight has ", w[0],
                      " rows");
      Dims y = concat(leading(x, 1), {w[1]});
      if (inst.opcode() == fb::OpCode::Linear) {
        if (numIns == 3)
          FLEXMOE_CHECK(in(2, "bias", {w[1]}));
        return out(0, "y", y);
      }
      FLEXMOE_CHECK(in(2, "dy", y));
      FLEXMOE_CHECK(out(0, "dx", x));
      return out(1, "dw", w);
    }
    case fb::OpCode::Matmul: {
      const fb::MatmulAttrs &a = *inst.attrs_as_MatmulAttrs();
      FLEXMOE_CHECK(inRank(0, "lhs", 2, true));
      FLEXMOE_CHECK(inRank(1, "rhs", 2, true));
      Dims lhs = I(0), rhs = I(1);
      int64_t rows = lhs[lhs.size() - 2], cols = lhs.back();
      int64_t m = a.transpose_lhs() ? cols : rows;
      int64_t k = a.transpose_lhs() ? rows : cols;
      int64_t rk = a.transpose_rhs() ? rhs.back() : rhs[rhs.size() - 2];
      int64_t n = a.transpose_rhs() ? rhs[rhs.size() - 2] : rhs.back();
      if (rk != k)
        return errorf("lhs ", dimsString(lhs), " and rhs ", dimsString(rhs),
                      " disagree on the contracted dimension (", k, " vs ", rk,
                      ")");
      // A batched rhs has the lhs's batch dimensions; a 2-D one is shared.
      if (rhs.size() > 2 && leading(rhs, 2) != leading(lhs, 2))
        return errorf("rhs ", dimsString(rhs),
                      " has other batch dimensions than lhs ", dimsString(lhs));
      return out(0, "result", concat(leading(lhs, 2), {m, n}));
    }
    case fb::OpCode::LayerNorm:
    case fb::OpCode::LayerNormGrad: {
      FLEXMOE_CHECK(inRank(0, "x", 1, true));
      Dims x = I(0);
      FLEXMOE_CHECK(in(1, "gamma", {x.back()}));
      if (inst.opcode() == fb::OpCode::LayerNorm) {
        FLEXMOE_CHECK(in(2, "beta", {x.back()}));
        return out(0, "y", x);
      }
      FLEXMOE_CHECK(in(2, "dy", x));
      FLEXMOE_CHECK(out(0, "dx", x));
      FLEXMOE_CHECK(out(1, "dgamma", {x.back()}));
      return out(2, "dbeta", {x.back()});
    }
    case fb::OpCode::Softmax:
    case fb::OpCode::SoftmaxGrad: {
      int64_t axis = inst.attrs_as_SoftmaxAttrs()->axis();
      if (normalizeDim(axis, shapeOf(ins.Get(0)).size()) < 0)
        return errorf("axis ", axis, " is out of range for shape ",
                      shapeString(&shapeOf(ins.Get(0))));
      for (int k = 1; k < numIns; ++k)
        FLEXMOE_CHECK(in(k, "operand", I(0)));
      return out(0, "result", I(0));
    }
    case fb::OpCode::GeluGrad:
    case fb::OpCode::Add:
    case fb::OpCode::Mul: {
      Dims expected = I(0);
      if (inst.opcode() == fb::OpCode::GeluGrad) {
        FLEXMOE_CHECK(in(1, "dy", expected));
      } else {
        std::optional<Dims> b = broadcast(I(0), I(1));
        if (!b)
          return errorf("shapes ", dimsString(I(0)), " and ", dimsString(I(1)),
                        " do not broadcast");
        expected = *b;
      }
      return out(0, "result", expected);
    }
    case fb::OpCode::Attention:
    case fb::OpCode::AttentionGrad: {
      const fb::AttentionAttrs &a = *inst.attrs_as_AttentionAttrs();
      FLEXMOE_CHECK(inRank(0, "q", 3));
      Dims q = I(0);
      if (a.num_heads() < 1 || q[2] % a.num_heads() != 0)
        return errorf("num_heads ", a.num_heads(),
                      " does not divide the model dimension ", q[2]);
      if (a.window() < 0)
        return errorf("window ", a.window(), " must not be negative");
      for (int k = 1; k < numIns; ++k)
        FLEXMOE_CHECK(in(k, "operand", q));
      for (int k = 0; k < static_cast<int>(outs.size()); ++k)
        FLEXMOE_CHECK(out(k, "result", q));
      return Status::ok();
    }
    case fb::OpCode::ReduceSum: {
      const fb::ReduceSumAttrs &a = *inst.attrs_as_ReduceSumAttrs();
      Dims x = I(0);
      std::vector<bool> reduced(x.size(), false);
      if (a.dims())
        for (int64_t dim : *a.dims()) {
          int64_t d = normalizeDim(dim, x.size());
          if (d < 0 || reduced[d])
            return errorf("dim ", dim, " is out of range or repeated for ",
                          "shape ", dimsString(x));
          reduced[d] = true;
        }
      Dims expected;
      for (size_t d = 0; d < x.size(); ++d)
        if (!reduced[d])
          expected.push_back(x[d]);
        else if (a.keep_dims())
          expected.push_back(1);
      return out(0, "result", expected);
    }
    case fb::OpCode::Transpose: {
      const auto *perm = inst.attrs_as_TransposeAttrs()->permutation();
      Dims x = I(0), expected;
      std::vector<bool> seen(x.size(), false);
      if (!perm || perm->size() != x.size())
        return errorf("the permutation has ", perm ? perm->size() : 0,
                      " entries for shape ", dimsString(x));
      for (int64_t d : *perm) {
        if (d < 0 || d >= static_cast<int64_t>(x.size()) || seen[d])
          return errorf("the permutation is not a permutation of ", x.size(),
                        " dimensions");
        seen[d] = true;
        expected.push_back(x[d]);
      }
      return out(0, "result", expected);
    }
    case fb::OpCode::Roll: {
      const fb::RollAttrs &a = *inst.attrs_as_RollAttrs();
      size_t numShifts = a.shifts() ? a.shifts()->size() : 0;
      size_t numDims = a.dims() ? a.dims()->size() : 0;
      if (numShifts != numDims)
        return errorf(numShifts, " shifts for ", numDims, " dims");
      // Each dim once, and shifts far from overflow: the kernel adds the
      // shifts of a dim before reducing them modulo its size.
      constexpr int64_t kMaxShift = int64_t{1} << 62;
      std::vector<bool> seen(shapeOf(ins.Get(0)).size(), false);
      for (size_t k = 0; k < numDims; ++k) {
        int64_t d = normalizeDim(a.dims()->Get(k), seen.size());
        if (d < 0 || seen[d])
          return errorf("dim ", a.dims()->Get(k),
                        " is out of range or repeated");
        seen[d] = true;
        int64_t shift = a.shifts()->Get(k);
        if (shift > kMaxShift || shift < -kMaxShift)
          return errorf("shift ", shift, " is out of range");
      }
      return out(0, "result", I(0));
    }
    case fb::OpCode::CrossEntropy:
    case fb::OpCode::CrossEntropyGrad: {
      // logits [..., V], labels of any shape: one label per row of logits.
      FLEXMOE_CHECK(inRank(0, "logits", 1, true));
      uint64_t rows = elementsOf(ins.Get(0)) / I(0).back();
      if (elementsOf(ins.Get(1)) != rows)
        return errorf(elementsOf(ins.Get(1)), " labels (",
                      bufferRef(ins.Get(1)), ") for ", rows, " rows of logits ",
                      dimsString(I(0)));
      if (inst.opcode() == fb::OpCode::CrossEntropy)
        return out(0, "loss", {});
      FLEXMOE_CHECK(in(2, "dloss", {}));
      return out(0, "dlogits", I(0));
    }
    case fb::OpCode::AdamW:
      for (int k = 1; k < 4; ++k)
        FLEXMOE_CHECK(in(k, k == 1 ? "gradient" : "state", I(0)));
      for (int k = 0; k < 3; ++k)
        FLEXMOE_CHECK(out(k, "state", I(0)));
      return Status::ok();
    case fb::OpCode::Gate:
    case fb::OpCode::GateGrad:
    case fb::OpCode::AuxLoss:
    case fb::OpCode::AuxLossGrad:
      return checkGateShapes(inst, *layer, ins, in, out, inRank);
    case fb::OpCode::Dispatch:
    case fb::OpCode::DispatchGrad:
    case fb::OpCode::Combine:
    case fb::OpCode::CombineGrad:
      return checkRouteShapes(inst, *layer, ins, in, out, inRank);
    case fb::OpCode::Experts:
    case fb::OpCode::ExpertsGrad: {
      // The experts' capacity is their rows' layout after the all-to-all
      // (0 = packed), not necessarily the layer's.
      int64_t capacity = inst.attrs_as_ExpertsAttrs()->capacity();
      if (capacity < 0)
        return errorf("capacity ", capacity, " must not be negative");
      FLEXMOE_CHECK(inRank(0, "routed", 2));
      FLEXMOE_CHECK(inRank(2, "w1", 3));
      Dims routed = I(0), w1 = I(2);
      int64_t rows = routed[0], d = routed[1], g = w1[0], h = w1[2];
      if (w1[1] != d)
        return errorf("w1 ", dimsString(w1), " does not match routed rows ",
                      dimsString(routed));
      int64_t needed;
      if (capacity > 0 &&
          (__builtin_mul_overflow(capacity, g, &needed) || needed > rows))
        return errorf(g, " groups of capacity ", capacity,
                      " need more rows than the ", rows, " of routed");
      FLEXMOE_CHECK(in(1, "counts", {g}));
      FLEXMOE_CHECK(in(3, "b1", {g, h}));
      FLEXMOE_CHECK(in(4, "w2", {g, h, d}));
      FLEXMOE_CHECK(in(5, "b2", {g, d}));
      if (inst.opcode() == fb::OpCode::Experts)
        return out(0, "result", routed);
      FLEXMOE_CHECK(in(6, "dy", routed));
      FLEXMOE_CHECK(out(0, "drouted", routed));
      for (int k = 1; k < 5; ++k)
        FLEXMOE_CHECK(out(k, "weight gradient", I(k + 1)));
      return Status::ok();
    }
    case fb::OpCode::AllToAllDispatch:
    case fb::OpCode::AllToAllCombine: {
      bool dispatch = inst.opcode() == fb::OpCode::AllToAllDispatch;
      FLEXMOE_CHECK(inRank(0, "rows", 2));
      int64_t d = I(0)[1];
      int64_t experts = layer->num_experts();
      int64_t slots = layer->placement()->slots_per_device();
      FLEXMOE_CHECK(in(1, "counts", {dispatch ? experts : slots}));
      FLEXMOE_CHECK(expectRank("output", 0, "rows", outs.Get(0), 2));
      if (dims(outs.Get(0))[1] != d)
        return errorf("rows of ", d, " columns become rows of ",
                      dims(outs.Get(0))[1]);
      return out(1, "counts", {dispatch ? slots : experts});
    }
    case fb::OpCode::ReplicaGradSync: {
      // Expert gradients, [slots_per_device, ...].
      int64_t slots = layer->placement()->slots_per_device();
      for (int k = 0; k < numIns; ++k) {
        FLEXMOE_CHECK(inRank(k, "gradient", 1, true));
        if (I(k)[0] != slots)
          return errorf("input ", k, " (", bufferRef(ins.Get(k)),
                        ") has shape ", dimsString(I(k)), ", expected ", slots,
                        " slots as leading dimension");
        FLEXMOE_CHECK(out(k, "gradient", I(k)));
      }
      return Status::ok();
    }
    case fb::OpCode::Reshape:
      if (elementsOf(outs.Get(0)) != elementsOf(ins.Get(0)))
        return errorf("reshapes ", elementsOf(ins.Get(0)), " elements into ",
                      elementsOf(outs.Get(0)));
      return Status::ok();
    case fb::OpCode::Gelu:
    case fb::OpCode::Scale:
    case fb::OpCode::Dropout:
    case fb::OpCode::AllReduceMean:
    case fb::OpCode::AllReduceSum:
    case fb::OpCode::Copy:
      return out(0, "result", I(0));
    case fb::OpCode::Fill:
      return Status::ok();
    }
    return Status::ok();
#undef FLEXMOE_CHECK
  }

  /// moe.gate, moe.aux_loss and their gradients: x [T, D], gate weight
  /// [D, E], probabilities [T, E], expert ids and weights [T, top_k].
  template <typename In, typename Out, typename InRank>
  Status checkGateShapes(const fb::Instruction &inst, const fb::MoeLayer &layer,
                         const IdList &ins, In &in, Out &out, InRank &inRank) {
    int64_t e = layer.num_experts();
    auto I = [&](int k) { return dims(ins.Get(k)); };
    if (inst.opcode() == fb::OpCode::Gate ||
        inst.opcode() == fb::OpCode::GateGrad) {
      int64_t k = inst.attrs_as_GateAttrs()->top_k();
      if (k != layer.top_k())
        return errorf("top_k ", k, " differs from the layer's ", layer.top_k());
      FLEXMOE_RETURN_IF_ERROR(inRank(0, "x", 2));
      int64_t t = I(0)[0], d = I(0)[1];
      FLEXMOE_RETURN_IF_ERROR(in(1, "gate weight", {d, e}));
      if (inst.opcode() == fb::OpCode::Gate) {
        FLEXMOE_RETURN_IF_ERROR(out(0, "probs", {t, e}));
        FLEXMOE_RETURN_IF_ERROR(out(1, "expert ids", {t, k}));
        return out(2, "combine weights", {t, k});
      }
      FLEXMOE_RETURN_IF_ERROR(in(2, "probs", {t, e}));
      FLEXMOE_RETURN_IF_ERROR(in(3, "expert ids", {t, k}));
      FLEXMOE_RETURN_IF_ERROR(in(4, "dcombine weights", {t, k}));
      FLEXMOE_RETURN_IF_ERROR(in(5, "dprobs", {t, e}));
      FLEXMOE_RETURN_IF_ERROR(out(0, "dx", {t, d}));
      return out(1, "dgate weight", {d, e});
    }
    FLEXMOE_RETURN_IF_ERROR(inRank(0, "probs", 2));
    int64_t t = I(0)[0];
    if (I(0)[1] != e)
      return errorf("probs ", dimsString(I(0)), " are not over the layer's ", e,
                    " experts");
    FLEXMOE_RETURN_IF_ERROR(in(1, "expert ids", {t, layer.top_k()}));
    if (inst.opcode() == fb::OpCode::AuxLoss)
      return out(0, "loss", {});
    FLEXMOE_RETURN_IF_ERROR(in(2, "dloss", {}));
    return out(0, "dprobs", {t, e});
  }

  /// moe.dispatch, moe.combine and their gradients: tokens [T, D], routed
  /// rows [N, D], positions and combine weights [T, top_k].
  template <typename In, typename Out, typename InRank>
  Status checkRouteShapes(const fb::Instruction &inst,
                          const fb::MoeLayer &layer, const IdList &ins, In &in,
                          Out &out, InRank &inRank) {
    int64_t e = layer.num_experts(), k = layer.top_k();
    auto I = [&](int j) { return dims(ins.Get(j)); };
    FLEXMOE_RETURN_IF_ERROR(inRank(0, "rows", 2));
    int64_t d = I(0)[1];
    if (inst.opcode() == fb::OpCode::Dispatch) {
      const fb::DispatchAttrs &a = *inst.attrs_as_DispatchAttrs();
      if (a.num_experts() != e || a.capacity() != layer.capacity())
        return errorf("num_experts ", a.num_experts(), " and capacity ",
                      a.capacity(), " differ from the layer's ", e, " and ",
                      layer.capacity());
      int64_t t = I(0)[0];
      FLEXMOE_RETURN_IF_ERROR(in(1, "expert ids", {t, k}));
      // Dropless: T·top_k packed rows; with capacity C: E·C rows. Both are
      // bounded by buffer sizes the arena check has seen, except E·C.
      int64_t rows;
      if (__builtin_mul_overflow(layer.capacity() > 0 ? e : t,
                                 layer.capacity() > 0 ? layer.capacity() : k,
                                 &rows))
        return errorf("the routed rows overflow");
      FLEXMOE_RETURN_IF_ERROR(out(0, "routed", {rows, d}));
      FLEXMOE_RETURN_IF_ERROR(out(1, "positions", {t, k}));
      return out(2, "counts", {e});
    }
    // The others take routed rows [N, D] and positions [T, top_k].
    FLEXMOE_RETURN_IF_ERROR(inRank(1, "positions", 2));
    int64_t t = I(1)[0];
    if (I(1)[1] != k)
      return errorf("positions ", dimsString(I(1)), " are not [T, ", k, "]");
    if (inst.opcode() == fb::OpCode::DispatchGrad)
      return out(0, "dx", {t, d});
    FLEXMOE_RETURN_IF_ERROR(in(2, "combine weights", {t, k}));
    if (inst.opcode() == fb::OpCode::Combine)
      return out(0, "y", {t, d});
    FLEXMOE_RETURN_IF_ERROR(in(3, "dy", {t, d}));
    FLEXMOE_RETURN_IF_ERROR(out(0, "drouted", I(0)));
    return out(1, "dcombine weights", {t, k});
  }

  Status checkUpdatesAndLoss() {
    int32_t loss = p.loss_buffer();
    if (loss < 0 || static_cast<uint32_t>(loss) >= numBuffers)
      return errorf("the loss buffer ", loss, " does not exist");
    if (buffer(loss).kind() != fb::BufferKind::Loss)
      return errorf("the loss buffer ", bufferRef(loss), " is a ",
                    fb::EnumNameBufferKind(buffer(loss).kind()),
                    " buffer, not a Loss buffer");
    if (!p.updates())
      return Status::ok();
    uint32_t numInstructions = p.instructions()->size();
    for (uint32_t u = 0; u < p.updates()->size(); ++u) {
      const fb::InPlaceUpdate *update = p.updates()->Get(u);
      if (!update)
        return errorf("in-place update ", u, " is missing");
      if (update->buffer() >= numBuffers)
        return errorf("in-place update ", u, " names buffer ", update->buffer(),
                      ", which does not exist");
      fb::BufferKind kind = buffer(update->buffer()).kind();
      if (kind != fb::BufferKind::Parameter && kind != fb::BufferKind::AdamM &&
          kind != fb::BufferKind::AdamV)
        return errorf("in-place update ", u, " writes ",
                      bufferRef(update->buffer()),
                      ", which is not a parameter or optimizer state");
      if (update->instruction() >= numInstructions)
        return errorf("in-place update ", u, " names instruction ",
                      update->instruction(), ", which does not exist");
      const fb::Instruction *inst =
          p.instructions()->Get(update->instruction());
      bool written = false;
      if (inst->outputs())
        for (uint32_t id : *inst->outputs())
          written |= id == update->buffer();
      if (!written)
        return errorf("in-place update ", u, ": instruction ",
                      update->instruction(), " does not write ",
                      bufferRef(update->buffer()));
    }
    return Status::ok();
  }

  Status checkOptimizer() {
    const fb::OptimizerDefaults *opt = p.optimizer();
    if (!opt)
      return Status::ok();
    if (!(std::isfinite(opt->lr()) && opt->lr() >= 0))
      return errorf("optimizer: learning rate ", opt->lr(), " is invalid");
    if (!(opt->beta1() >= 0 && opt->beta1() < 1 && opt->beta2() >= 0 &&
          opt->beta2() < 1))
      return errorf("optimizer: betas (", opt->beta1(), ", ", opt->beta2(),
                    ") must lie in [0, 1)");
    if (!(opt->epsilon() > 0 && std::isfinite(opt->epsilon())))
      return errorf("optimizer: epsilon ", opt->epsilon(), " must be positive");
    if (!(std::isfinite(opt->weight_decay()) && opt->weight_decay() >= 0))
      return errorf("optimizer: weight decay ", opt->weight_decay(),
                    " is invalid");
    return Status::ok();
  }
};

} // namespace

StatusOr<const fb::Program *>
flexmoe::program::verifyProgram(std::span<const uint8_t> bytes) {
  // Distinguish the common ways a file is not a program before running the
  // structural verifier, whose verdict is only yes or no.
  constexpr size_t kHeader =
      sizeof(flatbuffers::uoffset_t) + flatbuffers::kFileIdentifierLength;
  if (bytes.size() < kHeader)
    return errorf("file is too short to be a program (", bytes.size(),
                  " bytes)");
  if (!fb::ProgramBufferHasIdentifier(bytes.data())) {
    std::string id(reinterpret_cast<const char *>(bytes.data()) +
                       sizeof(flatbuffers::uoffset_t),
                   flatbuffers::kFileIdentifierLength);
    for (char &c : id)
      if (c < 0x20 || c > 0x7e)
        c = '?';
    return errorf("not a flexmoe program (file identifier '", id,
                  "', expected '", fb::ProgramIdentifier(), "')");
  }
  flatbuffers::Verifier verifier(bytes.data(), bytes.size());
  if (!fb::VerifyProgramBuffer(verifier))
    return errorf("program file is corrupted or truncated (", bytes.size(),
                  " bytes; flatbuffers verification failed)");
  const fb::Program *program = fb::GetProgram(bytes.data());
  FLEXMOE_RETURN_IF_ERROR(SemanticVerifier(*program).run());
  return program;
}

StatusOr<LoadedProgram>
flexmoe::program::loadProgramFromBytes(std::vector<uint8_t> bytes) {
  StatusOr<const fb::Program *> verified = verifyProgram(bytes);
  if (!verified)
    return verified.status();
  std::vector<plan::Placement> placements;
  if (const auto *layers = (*verified)->moe_layers())
    for (const fb::MoeLayer *layer : *layers)
      placements.push_back(toPlacement(*layer->placement()));
  return LoadedProgram(std::move(bytes), std::move(placements));
}

StatusOr<LoadedProgram> flexmoe::program::loadProgram(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return errorf("cannot open program file '", path, "'");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  if (in.bad())
    return errorf("cannot read program file '", path, "'");
  StatusOr<LoadedProgram> loaded = loadProgramFromBytes(std::move(bytes));
  if (!loaded)
    return Status(loaded.status()).withContext(path);
  return loaded;
}
