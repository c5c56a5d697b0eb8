//===- InitialPlacement.cpp - moe-initial-placement pass ------------------===//
//
// Attaches a #moe.placement to every MoE layer: round-robin expert
// parallelism (expert e on device e mod W) or the placement read from a JSON
// file. Also sets the placement of already-expanded ops of the same layer and
// the module attribute flexmoe.world_size.
//
//===----------------------------------------------------------------------===//
#include "flexmoe/Dialect/Moe/MoeAttrs.h"
#include "flexmoe/Dialect/Moe/MoeDialect.h"
#include "flexmoe/Dialect/Moe/MoeOps.h"
#include "flexmoe/Passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

namespace flexmoe {
#define GEN_PASS_DEF_INITIALPLACEMENT
#include "flexmoe/Passes/Passes.h.inc"
} // namespace flexmoe

using namespace mlir;
using namespace flexmoe::moe;

namespace {

using ReplicaLists = llvm::SmallVector<llvm::SmallVector<int64_t>>;

/// A placement file: {"world_size": W, "slots_per_device": S,
///                    "layers": {"<name>": [[devices of expert 0], ...]}}.
struct PlacementFile {
  int64_t worldSize = 0;
  int64_t slotsPerDevice = 0;
  llvm::StringMap<ReplicaLists> layers;
};

/// Reads and checks the shape of a placement file; the placement rules are
/// checked per layer later, where the layer's name and op are known.
FailureOr<PlacementFile> readPlacementFile(StringRef path, Operation *anchor) {
  auto fail = [&]() {
    return anchor->emitError() << "placement file '" << path << "': ";
  };
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
      llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer) {
    anchor->emitError() << "cannot open placement file '" << path
                        << "': " << buffer.getError().message();
    return failure();
  }
  llvm::Expected<llvm::json::Value> json =
      llvm::json::parse((*buffer)->getBuffer());
  if (!json) {
    // The JSON parser's message carries [line:column].
    fail() << "malformed JSON " << llvm::toString(json.takeError());
    return failure();
  }
  const llvm::json::Object *root = json->getAsObject();
  if (!root) {
    fail() << "expected a JSON object at the top level";
    return failure();
  }

  PlacementFile file;
  for (auto [key, target] :
       {std::pair<StringRef, int64_t *>{"world_size", &file.worldSize},
        {"slots_per_device", &file.slotsPerDevice}}) {
    std::optional<int64_t> value = root->getInteger(key);
    if (!value) {
      fail() << "'" << key << "' must be an integer";
      return failure();
    }
    *target = *value;
  }
  const llvm::json::Object *layers = root->getObject("layers");
  if (!layers) {
    fail() << "'layers' must be an object mapping layer names to replica "
              "lists";
    return failure();
  }
  for (const auto &[name, value] : *layers) {
    const llvm::json::Array *experts = value.getAsArray();
    if (!experts) {
      fail() << "layer '" << name.str()
             << "' must be a list of device lists, one per expert";
      return failure();
    }
    ReplicaLists &replicas = file.layers[name.str()];
    for (auto [expert, entry] : llvm::enumerate(*experts)) {
      const llvm::json::Array *devices = entry.getAsArray();
      if (!devices) {
        fail() << "expert " << expert << " of layer '" << name.str()
               << "' must be a list of device ids";
        return failure();
      }
      llvm::SmallVector<int64_t> &ids = replicas.emplace_back();
      for (const llvm::json::Value &device : *devices) {
        std::optional<int64_t> id = device.getAsInteger();
        if (!id) {
          fail() << "expert " << expert << " of layer '" << name.str()
                 << "' lists a device id that is not an integer";
          return failure();
        }
        ids.push_back(*id);
      }
    }
  }
  return file;
}

/// The number of experts of a layer seen only through its expanded ops.
std::optional<int64_t> numExpertsOfExpandedOp(Operation *op) {
  if (auto dispatch = dyn_cast<DispatchOp>(op))
    return dispatch.getNumExpertsAttr().getInt();
  if (auto gate = dyn_cast<GateOp>(op)) {
    auto weight = dyn_cast<RankedTensorType>(gate.getGateWeight().getType());
    if (weight && weight.getRank() == 2 && !weight.isDynamicDim(1))
      return weight.getDimSize(1);
  }
  return std::nullopt;
}

struct InitialPlacementPass
    : flexmoe::impl::InitialPlacementBase<InitialPlacementPass> {
  using InitialPlacementBase::InitialPlacementBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    MLIRContext *context = &getContext();
    if (worldSize < 1 || worldSize > PlacementAttr::kMaxWorldSize) {
      module.emitError() << "world-size must be in [1, "
                         << PlacementAttr::kMaxWorldSize << "], got "
                         << worldSize.getValue();
      return signalPassFailure();
    }
    if (slotsPerDevice < 0) {
      module.emitError() << "slots-per-device must be >= 0 (0: ceil(experts "
                            "/ world-size)), got "
                         << slotsPerDevice.getValue();
      return signalPassFailure();
    }

    // Every layer by name, with the ops that carry its name, in IR order.
    struct Layer {
      LayerOp layerOp;
      std::optional<int64_t> numExperts;
      SmallVector<Operation *> ops;
    };
    llvm::MapVector<StringRef, Layer> layers;
    WalkResult walk = module.walk([&](Operation *op) -> WalkResult {
      if (auto layerOp = dyn_cast<LayerOp>(op)) {
        Layer &layer = layers[layerOp.getName()];
        if (layer.layerOp) {
          layerOp.emitOpError()
              << "is the second layer named '" << layerOp.getName()
              << "'; layer names must be unique";
          return WalkResult::interrupt();
        }
        layer.layerOp = layerOp;
        layer.numExperts = layerOp.getNumExpertsAttr().getInt();
        layer.ops.push_back(op);
        return WalkResult::advance();
      }
      if (!isa_and_nonnull<MoeDialect>(op->getDialect()))
        return WalkResult::advance();
      auto name = op->getAttrOfType<StringAttr>("layer");
      if (!name)
        return WalkResult::advance();
      Layer &layer = layers[name.getValue()];
      if (!layer.numExperts)
        layer.numExperts = numExpertsOfExpandedOp(op);
      layer.ops.push_back(op);
      return WalkResult::advance();
    });
    if (walk.wasInterrupted())
      return signalPassFailure();

    std::optional<PlacementFile> file;
    if (!placementFile.empty()) {
      FailureOr<PlacementFile> read = readPlacementFile(placementFile, module);
      if (failed(read))
        return signalPassFailure();
      file = std::move(*read);
      if (worldSize.hasValue() && file->worldSize != worldSize) {
        module.emitError() << "placement file '" << placementFile
                           << "' has world_size " << file->worldSize
                           << " but the pass was given world-size = "
                           << worldSize.getValue();
        return signalPassFailure();
      }
      if (slotsPerDevice != 0 && file->slotsPerDevice != slotsPerDevice) {
        module.emitError() << "placement file '" << placementFile
                           << "' has slots_per_device " << file->slotsPerDevice
                           << " but the pass was given slots-per-device = "
                           << slotsPerDevice.getValue();
        return signalPassFailure();
      }
      for (const auto &entry : file->layers) {
        if (!layers.count(entry.getKey())) {
          module.emitError() << "placement file '" << placementFile
                             << "' has an entry for layer '" << entry.getKey()
                             << "', which is not in the module";
          return signalPassFailure();
        }
      }
    }
    int64_t devices = file ? file->worldSize : worldSize.getValue();

    // A world size already fixed on the module must agree.
    if (auto existing =
            module->getAttrOfType<IntegerAttr>("flexmoe.world_size")) {
      if (existing.getInt() != devices) {
        module.emitError() << "module has flexmoe.world_size = "
                           << existing.getInt() << " but the placement is for "
                           << devices << " devices";
        return signalPassFailure();
      }
    }

    for (auto &[name, layer] : layers) {
      Operation *anchor = layer.ops.front();
      auto emitError = [&]() { return anchor->emitOpError(); };
      ReplicaLists replicas;
      int64_t slots;
      if (file) {
        auto it = file->layers.find(name);
        if (it == file->layers.end()) {
          anchor->emitOpError()
              << "placement file has no entry for layer '" << name << "'";
          return signalPassFailure();
        }
        replicas = it->second;
        slots = file->slotsPerDevice;
      } else {
        if (!layer.numExperts) {
          anchor->emitOpError()
              << "cannot tell how many experts layer '" << name << "' has";
          return signalPassFailure();
        }
        int64_t numExperts = *layer.numExperts;
        for (int64_t expert = 0; expert < numExperts; ++expert)
          replicas.push_back({expert % devices});
        slots = slotsPerDevice != 0 ? static_cast<int64_t>(slotsPerDevice)
                                    : llvm::divideCeil(numExperts, devices);
      }
      SmallVector<ArrayRef<int64_t>> refs(replicas.begin(), replicas.end());
      if (failed(PlacementAttr::verifyRules(emitError, devices, slots, refs,
                                            name)))
        return signalPassFailure();
      if (layer.numExperts &&
          static_cast<int64_t>(replicas.size()) != *layer.numExperts) {
        anchor->emitOpError()
            << "layer '" << name << "' has " << *layer.numExperts
            << " experts but its placement lists " << replicas.size();
        return signalPassFailure();
      }
      auto placement = PlacementAttr::get(context, devices, slots, refs);
      for (Operation *op : layer.ops)
        op->setAttr("placement", placement);
    }

    module->setAttr("flexmoe.world_size",
                    IntegerAttr::get(IntegerType::get(context, 64), devices));
  }
};

} // namespace
