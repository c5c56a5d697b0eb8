//===- MoeAttrs.cpp - the #moe.placement attribute ------------------------===//
#include "flexmoe/Dialect/Moe/MoeAttrs.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace flexmoe::moe;

#define GET_ATTRDEF_CLASSES
#include "flexmoe/Dialect/Moe/MoeAttrs.cpp.inc"

void MoeDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "flexmoe/Dialect/Moe/MoeAttrs.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// Rules
//===----------------------------------------------------------------------===//

LogicalResult
PlacementAttr::verifyRules(function_ref<InFlightDiagnostic()> emitError,
                           int64_t worldSize, int64_t slotsPerDevice,
                           ArrayRef<ArrayRef<int64_t>> replicas,
                           StringRef layerName) {
  // The messages read naturally with and without a layer name:
  // "expert 3 has no replica" / "expert 3 of layer 'moe1' has no replica".
  std::string ofLayer, inLayer;
  if (!layerName.empty()) {
    ofLayer = (" of layer '" + layerName + "'").str();
    inLayer = (" in layer '" + layerName + "'").str();
  }
  if (worldSize < 1 || worldSize > kMaxWorldSize)
    return emitError() << "placement" << ofLayer << " has world_size "
                       << worldSize << "; it must be in [1, " << kMaxWorldSize
                       << "]";
  if (slotsPerDevice < 1 || slotsPerDevice > kMaxSlotsPerDevice)
    return emitError() << "placement" << ofLayer << " has slots_per_device "
                       << slotsPerDevice << "; it must be in [1, "
                       << kMaxSlotsPerDevice << "]";
  if (replicas.empty())
    return emitError() << "placement" << ofLayer << " has no experts";

  SmallVector<int64_t> load(worldSize, 0);
  for (auto [expert, devices] : llvm::enumerate(replicas)) {
    if (devices.empty())
      return emitError() << "expert " << expert << ofLayer << " has no replica";
    llvm::SmallDenseSet<int64_t, 8> seen;
    for (int64_t device : devices) {
      if (device < 0 || device >= worldSize)
        return emitError() << "device " << device << " of expert " << expert
                           << inLayer << " is out of range [0, " << worldSize
                           << ")";
      if (!seen.insert(device).second)
        return emitError() << "expert " << expert << ofLayer << " lists device "
                           << device << " twice";
      ++load[device];
    }
  }
  for (auto [device, held] : llvm::enumerate(load))
    if (held > slotsPerDevice)
      return emitError() << "device " << device << " holds " << held
                         << " experts" << ofLayer << " but has "
                         << slotsPerDevice << " slots";
  return success();
}

LogicalResult
PlacementAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                      int64_t worldSize, int64_t slotsPerDevice,
                      ArrayRef<ArrayRef<int64_t>> replicas) {
  return verifyRules(emitError, worldSize, slotsPerDevice, replicas,
                     /*layerName=*/"");
}

SmallVector<int64_t> PlacementAttr::getExpertsOnDevice(int64_t device) const {
  SmallVector<int64_t> experts;
  for (auto [expert, devices] : llvm::enumerate(getReplicas()))
    if (llvm::is_contained(devices, device))
      experts.push_back(expert);
  return experts;
}

//===----------------------------------------------------------------------===//
// Assembly: #moe.placement<world_size = 4, slots_per_device = 2,
//                          replicas = [[0], [1], [2, 3], [3]]>
//===----------------------------------------------------------------------===//

Attribute PlacementAttr::parse(AsmParser &parser, Type) {
  SMLoc loc = parser.getCurrentLocation();
  int64_t worldSize = 0, slotsPerDevice = 0;
  if (parser.parseLess() || parser.parseKeyword("world_size") ||
      parser.parseEqual() || parser.parseInteger(worldSize) ||
      parser.parseComma() || parser.parseKeyword("slots_per_device") ||
      parser.parseEqual() || parser.parseInteger(slotsPerDevice) ||
      parser.parseComma() || parser.parseKeyword("replicas") ||
      parser.parseEqual())
    return {};

  SmallVector<SmallVector<int64_t>> replicas;
  auto parseExpert = [&]() -> ParseResult {
    SmallVector<int64_t> &devices = replicas.emplace_back();
    return parser.parseCommaSeparatedList(AsmParser::Delimiter::Square, [&]() {
      return parser.parseInteger(devices.emplace_back());
    });
  };
  if (parser.parseCommaSeparatedList(AsmParser::Delimiter::Square,
                                     parseExpert) ||
      parser.parseGreater())
    return {};

  SmallVector<ArrayRef<int64_t>> refs(replicas.begin(), replicas.end());
  return parser.getChecked<PlacementAttr>(loc, parser.getContext(), worldSize,
                                          slotsPerDevice,
                                          ArrayRef<ArrayRef<int64_t>>(refs));
}

void PlacementAttr::print(AsmPrinter &printer) const {
  printer << "<world_size = " << getWorldSize()
          << ", slots_per_device = " << getSlotsPerDevice() << ", replicas = [";
  llvm::interleaveComma(getReplicas(), printer, [&](ArrayRef<int64_t> devices) {
    printer << '[';
    llvm::interleaveComma(devices, printer);
    printer << ']';
  });
  printer << "]>";
}
