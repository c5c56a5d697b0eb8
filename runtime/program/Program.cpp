//===- Program.cpp - loading and verifying .fmoe programs -----------------===//
#include "runtime/program/Program.h"
#include "runtime/plan/SlotTable.h"
#include "runtime/program/OpInfo.h"

#include <cmath>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string_view>

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

  std::string bufferRef(uint32_t id) const {
    std::ostringstream os;
    os << "buffer " << id;
    const fb::Buffer *b = p.buffers()->Get(id);
    if (b && b->name())
      os << " ('" << str(b->name()) << "')";
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
      ctx << " ('" << str(layer->name()) << "')";
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
    }
    return Status::ok();
  }

  Status checkBuffer(uint32_t i, const fb::Buffer &b,
                     std::set<std::string_view> &paramNames) {
    if (b.id() != i)
      return errorf("has id ", b.id(), " but sits at index ", i,
                    " of the buffer table");
    if (!inRange(b.kind()))
      return errorf("unknown buffer kind ", static_cast<int>(b.kind()));
    if (!inRange(b.element_type()))
      return errorf("unknown element type ",
                    static_cast<int>(b.element_type()));
    if (!inRange(b.init()))
      return errorf("unknown init kind ", static_cast<int>(b.init()));
    if (!b.shape())
      return errorf("has no shape");
    uint64_t elements = 1;
    for (int64_t dim : *b.shape()) {
      if (dim < 0)
        return errorf("has a negative dimension in shape ",
                      shapeString(b.shape()));
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
        return errorf("parameter name '", str(b.param_name()),
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
        return errorf("is expert state of layer '", str(layer->name()),
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

    if (info.needsMoeLayer) {
      if (inst.moe_layer() < 0 ||
          inst.moe_layer() >= static_cast<int32_t>(numLayers))
        return errorf("names MoE layer ", inst.moe_layer(),
                      " but the program has ", numLayers);
    } else if (inst.moe_layer() != -1) {
      return errorf("is not a MoE op but names MoE layer ", inst.moe_layer());
    }
    return checkShapes(inst, ins, outs, numIns);
  }

  static int64_t dimFromEnd(const flatbuffers::Vector<int64_t> &shape, int k) {
    return shape.Get(shape.size() - k);
  }

  /// Shape relations that are cheap to check and catch most mistakes of a
  /// hand-written or corrupted program.
  Status checkShapes(const fb::Instruction &inst, const IdList &ins,
                     const IdList &outs, int numIns) {
    auto sameAs = [&](uint32_t a, uint32_t b) {
      return sameShape(&shapeOf(a), &shapeOf(b));
    };
    auto mismatch = [&](uint32_t a, uint32_t b) {
      return errorf(bufferRef(a), " has shape ", shapeString(&shapeOf(a)),
                    " but ", bufferRef(b), " has shape ",
                    shapeString(&shapeOf(b)));
    };
    switch (inst.opcode()) {
    case fb::OpCode::Linear: {
      const auto &x = shapeOf(ins.Get(0));
      const auto &w = shapeOf(ins.Get(1));
      const auto &y = shapeOf(outs.Get(0));
      if (w.size() != 2 || x.size() < 1 || y.size() != x.size())
        return errorf("expects x [..., K], weight [K, N] and y [..., N]; got ",
                      shapeString(&x), ", ", shapeString(&w), " and ",
                      shapeString(&y));
      if (dimFromEnd(x, 1) != w.Get(0))
        return errorf("x has K = ", dimFromEnd(x, 1), " but the weight has ",
                      w.Get(0), " rows");
      if (dimFromEnd(y, 1) != w.Get(1))
        return errorf("y has N = ", dimFromEnd(y, 1), " but the weight has ",
                      w.Get(1), " columns");
      if (numIns == 3 && (shapeOf(ins.Get(2)).size() != 1 ||
                          shapeOf(ins.Get(2)).Get(0) != w.Get(1)))
        return errorf("bias has shape ", shapeString(&shapeOf(ins.Get(2))),
                      ", expected [", w.Get(1), "]");
      return Status::ok();
    }
    case fb::OpCode::LinearGrad:
      if (!sameAs(outs.Get(0), ins.Get(0)))
        return mismatch(outs.Get(0), ins.Get(0));
      if (!sameAs(outs.Get(1), ins.Get(1)))
        return mismatch(outs.Get(1), ins.Get(1));
      return Status::ok();
    case fb::OpCode::Embedding: {
      const auto &ids = shapeOf(ins.Get(0));
      const auto &table = shapeOf(ins.Get(1));
      const auto &y = shapeOf(outs.Get(0));
      bool ok = table.size() == 2 && y.size() == ids.size() + 1 &&
                dimFromEnd(y, 1) == table.Get(1);
      for (flatbuffers::uoffset_t k = 0; ok && k < ids.size(); ++k)
        ok = ids.Get(k) == y.Get(k);
      if (!ok)
        return errorf("expects ids [...], table [V, D] and output [..., D]; "
                      "got ",
                      shapeString(&ids), ", ", shapeString(&table), " and ",
                      shapeString(&y));
      return Status::ok();
    }
    case fb::OpCode::LayerNorm:
    case fb::OpCode::LayerNormGrad: {
      const auto &x = shapeOf(ins.Get(0));
      const auto &gamma = shapeOf(ins.Get(1));
      if (x.size() < 1 || gamma.size() != 1 || gamma.Get(0) != dimFromEnd(x, 1))
        return errorf("gamma has shape ", shapeString(&gamma), ", expected [",
                      x.size() ? dimFromEnd(x, 1) : 0, "]");
      if (!sameAs(outs.Get(0), ins.Get(0)))
        return mismatch(outs.Get(0), ins.Get(0));
      return Status::ok();
    }
    case fb::OpCode::AdamW:
      for (int k = 1; k < 4; ++k)
        if (!sameAs(ins.Get(k), ins.Get(0)))
          return mismatch(ins.Get(k), ins.Get(0));
      for (int k = 0; k < 3; ++k)
        if (!sameAs(outs.Get(k), ins.Get(0)))
          return mismatch(outs.Get(k), ins.Get(0));
      return Status::ok();
    case fb::OpCode::Gelu:
    case fb::OpCode::Softmax:
    case fb::OpCode::Scale:
    case fb::OpCode::Dropout:
    case fb::OpCode::Roll:
    case fb::OpCode::AllReduceMean:
    case fb::OpCode::AllReduceSum:
    case fb::OpCode::Copy:
      if (!sameAs(outs.Get(0), ins.Get(0)))
        return mismatch(outs.Get(0), ins.Get(0));
      return Status::ok();
    case fb::OpCode::ReplicaGradSync:
      for (int k = 0; k < numIns; ++k)
        if (!sameAs(outs.Get(k), ins.Get(k)))
          return mismatch(outs.Get(k), ins.Get(k));
      return Status::ok();
    case fb::OpCode::Reshape:
      if (elementsOf(outs.Get(0)) != elementsOf(ins.Get(0)))
        return errorf("reshapes ", elementsOf(ins.Get(0)), " elements into ",
                      elementsOf(outs.Get(0)));
      return Status::ok();
    case fb::OpCode::CrossEntropy:
      if (shapeOf(outs.Get(0)).size() != 0)
        return errorf("the loss must be a scalar, not ",
                      shapeString(&shapeOf(outs.Get(0))));
      return Status::ok();
    default:
      return Status::ok();
    }
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
