//===- MoeDialect.cpp - the moe dialect -----------------------------------===//
#include "flexmoe/Dialect/Moe/MoeDialect.h"
#include "flexmoe/Dialect/Moe/MoeAttrs.h"
#include "flexmoe/Dialect/Moe/MoeOps.h"

#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace flexmoe::moe;

#include "flexmoe/Dialect/Moe/MoeDialect.cpp.inc"

namespace {
/// Prints placements once at the top of the module (`#placement = ...`): they
/// are long and every op of a placed layer carries the same one.
struct MoeOpAsmInterface : OpAsmDialectInterface {
  using OpAsmDialectInterface::OpAsmDialectInterface;

  AliasResult getAlias(Attribute attr, raw_ostream &os) const override {
    if (isa<PlacementAttr>(attr)) {
      os << "placement";
      return AliasResult::OverridableAlias;
    }
    return AliasResult::NoAlias;
  }
};
} // namespace

void MoeDialect::initialize() {
  registerAttributes();
  addOperations<
#define GET_OP_LIST
#include "flexmoe/Dialect/Moe/MoeOps.cpp.inc"
      >();
  addInterfaces<MoeOpAsmInterface>();
}
