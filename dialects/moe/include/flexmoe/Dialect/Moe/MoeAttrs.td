//===- MoeAttrs.td - moe dialect attributes -------------------*- tablegen -*-===//
#ifndef FLEXMOE_DIALECT_MOE_MOEATTRS
#define FLEXMOE_DIALECT_MOE_MOEATTRS

include "flexmoe/Dialect/Moe/MoeDialect.td"
include "mlir/IR/AttrTypeBase.td"

// A list of per-expert device lists, uniqued in the context: every inner list
// is copied into the attribute storage along with the outer one.
def Moe_ReplicaListParameter
    : AttrOrTypeParameter<"::llvm::ArrayRef<::llvm::ArrayRef<int64_t>>",
                          "devices holding a replica of each expert"> {
  let allocator = [{
    ::llvm::SmallVector<::llvm::ArrayRef<int64_t>> copies;
    copies.reserve($_self.size());
    for (::llvm::ArrayRef<int64_t> devices : $_self)
      copies.push_back($_allocator.copyInto(devices));
    $_dst = $_allocator.copyInto(
        ::llvm::ArrayRef<::llvm::ArrayRef<int64_t>>(copies));
  }];
}

def Moe_PlacementAttr : AttrDef<Moe_Dialect, "Placement"> {
  let mnemonic = "placement";
  let summary = "which devices hold a replica of which expert of a MoE layer";
  let description = [{
    `replicas[e]` lists the devices holding a replica of expert `e`.
    `world_size` and `slots_per_device` lie in [1, 4096]. Every expert has at
    least one replica, device ids lie in `[0, world_size)`, no
    device appears twice for one expert, and no device holds more than
    `slots_per_device` replicas.

    Device `d`'s local slot `s` holds the `s`-th expert, in ascending expert
    id, among those with a replica on `d` (`getExpertsOnDevice`).

    ```mlir
    #moe.placement<world_size = 4, slots_per_device = 2, replicas = [[0], [1], [2, 3], [3]]>
    ```
  }];
  let parameters = (ins "int64_t":$worldSize, "int64_t":$slotsPerDevice,
                        Moe_ReplicaListParameter:$replicas);
  let builders = [
    // Convenience for passes that assemble the lists in owning containers.
    AttrBuilder<(ins "int64_t":$worldSize, "int64_t":$slotsPerDevice,
                     "::llvm::ArrayRef<::llvm::SmallVector<int64_t>>":$replicas), [{
      ::llvm::SmallVector<::llvm::ArrayRef<int64_t>> refs(replicas.begin(),
                                                           replicas.end());
      return $_get($_ctxt, worldSize, slotsPerDevice,
                   ::llvm::ArrayRef<::llvm::ArrayRef<int64_t>>(refs));
    }]>,
  ];
  let skipDefaultBuilders = 0;
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// The runtime's bounds (runtime/plan/Placement.h), repeated because the
    /// dialect does not link the runtime: a placement the runtime would
    /// reject is rejected at compile time.
    static constexpr int64_t kMaxWorldSize = 4096;
    static constexpr int64_t kMaxSlotsPerDevice = 4096;

    /// The number of experts of the layer (the length of `replicas`).
    int64_t getNumExperts() const { return getReplicas().size(); }

    /// The devices holding a replica of `expert`, in the order written.
    ::llvm::ArrayRef<int64_t> getDevicesOf(int64_t expert) const {
      return getReplicas()[expert];
    }

    /// The experts in `device`'s local slots: slot s holds the s-th entry
    /// (ascending expert id); the list may be shorter than slots_per_device.
    ::llvm::SmallVector<int64_t> getExpertsOnDevice(int64_t device) const;

    /// Checks the placement rules of docs/IR.md. `layerName`, when not
    /// empty, is named in the messages ("expert 3 of layer 'moe1' has no
    /// replica"). Shared by the attribute verifier and the placement pass.
    static ::mlir::LogicalResult
    verifyRules(::llvm::function_ref<::mlir::InFlightDiagnostic()> emitError,
                int64_t worldSize, int64_t slotsPerDevice,
                ::llvm::ArrayRef<::llvm::ArrayRef<int64_t>> replicas,
                ::llvm::StringRef layerName);
  }];
}

#endif // FLEXMOE_DIALECT_MOE_MOEATTRS
