//===- MoeOps.td - moe dialect ops ---------------------------*- tablegen -*-===//
//
// The ops of docs/IR.md, "The moe dialect". Every op prints in the uniform
// form `moe.op %a, %b {attrs} : (operand types) -> result types`, infers its
// result types, and carries an optional `placement` once its layer is placed.
//
// Type inference is deliberately lenient: it derives every result dimension it
// can and leaves the others dynamic, so that the op verifiers (which run after
// the inference check) report inconsistent operands in the user's terms.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXMOE_DIALECT_MOE_MOEOPS
#define FLEXMOE_DIALECT_MOE_MOEOPS

include "flexmoe/Dialect/Moe/MoeDialect.td"
include "flexmoe/Dialect/Moe/MoeAttrs.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

def Moe_FloatTensor : TensorOf<[AnyFloat]>;
def Moe_IntTensor : TensorOf<[I32]>;

// Uniform assembly, inferred result types and a C++ verifier.
class Moe_BaseOp<string mnemonic, list<Trait> traits = []>
    : Moe_Op<mnemonic, !listconcat(traits, [InferTypeOpAdaptorWithIsCompatible])> {
  let assemblyFormat = "operands attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

// Local computation: no side effects.
class Moe_PureOp<string mnemonic, list<Trait> traits = []>
    : Moe_BaseOp<mnemonic, !listconcat(traits, [Pure])>;

// Collectives communicate with the other devices: they are not Pure, so they
// are neither erased when unused nor merged by CSE.
class Moe_CollectiveOp<string mnemonic, list<Trait> traits = []>
    : Moe_BaseOp<mnemonic, traits>;

//===----------------------------------------------------------------------===//
// The whole layer
//===----------------------------------------------------------------------===//

def Moe_LayerOp : Moe_PureOp<"layer"> {
  let summary = "a Mixture-of-Experts feed-forward layer with top-k gating";
  let description = [{
    Routes every token of `x` to its `top_k` best experts (softmax gate over
    `x · gate_weight`), computes `act(x·w1[e] + b1[e])·w2[e] + b2[e]` in each
    chosen expert `e`, and sums the expert outputs weighted by the top-k gate
    probabilities (renormalised when `top_k > 1`). The second result is the
    load-balancing loss, already scaled by `aux_loss_coef`.

    `capacity_factor = 0` is dropless; otherwise each expert takes at most
    `ceil(capacity_factor · T · top_k / num_experts)` tokens (T = B·S) and
    the others are dropped. `moe-initial-placement` attaches `placement`;
    `moe-expand-layers` replaces the layer by the ops below.

    ```mlir
    %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
        {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64,
         ffn_hidden = 32 : i64, capacity_factor = 0.0 : f32,
         aux_loss_coef = 0.01 : f32, activation = "gelu"}
        : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>,
           tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>)
        -> (tensor<2x8x16xf32>, tensor<f32>)
    ```
  }];
  let arguments = (ins Moe_FloatTensor:$x, Moe_FloatTensor:$gate_weight,
                       Moe_FloatTensor:$w1, Moe_FloatTensor:$b1,
                       Moe_FloatTensor:$w2, Moe_FloatTensor:$b2,
                       StrAttr:$name, I64Attr:$num_experts, I64Attr:$top_k,
                       I64Attr:$ffn_hidden, F32Attr:$capacity_factor,
                       F32Attr:$aux_loss_coef,
                       DefaultValuedStrAttr<StrAttr, "gelu">:$activation,
                       OptionalAttr<Moe_PlacementAttr>:$placement);
  let results = (outs Moe_FloatTensor:$y, Moe_FloatTensor:$aux_loss);
}

//===----------------------------------------------------------------------===//
// Gate and load-balancing loss
//===----------------------------------------------------------------------===//

def Moe_GateOp : Moe_PureOp<"gate"> {
  let summary = "top-k softmax gate";
  let description = [{
    `probs = softmax(x · gate_weight)` over the experts; `expert_ids[t]` are
    the `top_k` experts of token `t` by descending probability (ties to the
    lower id) and `combine_weights[t]` their probabilities, renormalised to
    sum to one when `top_k > 1`.

    ```mlir
    %probs, %ids, %weights = moe.gate %x, %wg {layer = "moe1", top_k = 2 : i64}
        : (tensor<16x16xf32>, tensor<16x4xf32>)
        -> (tensor<16x4xf32>, tensor<16x2xi32>, tensor<16x2xf32>)
    ```
  }];
  let arguments = (ins Moe_FloatTensor:$x, Moe_FloatTensor:$gate_weight,
                       StrAttr:$layer, I64Attr:$top_k,
                       OptionalAttr<Moe_PlacementAttr>:$placement);
  let results = (outs Moe_FloatTensor:$probs, Moe_IntTensor:$expert_ids,
                      Moe_FloatTensor:$combine_weights);
}

def Moe_GateGradOp : Moe_PureOp<"gate_grad"> {
  let summary = "gradient of moe.gate";
  let description = [{
    The gradients of `x` and `gate_weight` given the gradients of the gate's
    combine weights (`d_combine_weights`) and of its probabilities
    (`d_probs`, from the load-balancing loss).

    ```mlir
    %dx, %dwg = moe.gate_grad %x, %wg, %probs, %ids, %dweights, %dprobs
        {layer = "moe1", top_k = 2 : i64}
        : (tensor<16x16xf32>, tensor<16x4xf32>, tensor<16x4xf32>,
           tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x4xf32>)
        -> (tensor<16x16xf32>, tensor<16x4xf32>)
    ```
  }];
  let arguments = (ins Moe_FloatTensor:$x, Moe_FloatTensor:$gate_weight,
                       Moe_FloatTensor:$probs, Moe_IntTensor:$expert_ids,
                       Moe_FloatTensor:$d_combine_weights,
                       Moe_FloatTensor:$d_probs,
                       StrAttr:$layer, I64Attr:$top_k,
                       OptionalAttr<Moe_PlacementAttr>:$placement);
  let results = (outs Moe_FloatTensor:$dx, Moe_FloatTensor:$d_gate_weight);
}

def Moe_AuxLossOp : Moe_PureOp<"aux_loss"> {
  let summary = "load-balancing loss of a gate";
  let description = [{
    The Switch-Transformer load-balancing loss
    `coef · E · sum_e f_e · P_e`, where `f_e` is the fraction of the `T·k`
    token choices routed to expert `e` and `P_e` the mean over tokens of
    `probs[t][e]`.

    ```mlir
    %aux = moe.aux_loss %probs, %ids {layer = "moe1", coef = 0.01 : f32}
        : (tensor<16x4xf32>, tensor<16x2xi32>) -> tensor<f32>
    ```
  }];
  let arguments = (ins Moe_FloatTensor:$probs, Moe_IntTensor:$expert_ids,
                       StrAttr:$layer, F32Attr:$coef,
                       OptionalAttr<Moe_PlacementAttr>:$placement);
  let results = (outs Moe_FloatTensor:$result);
}

def Moe_AuxLossGradOp : Moe_PureOp<"aux_loss_grad"> {
  let summary = "gradient of moe.aux_loss with respect to the probabilities";
  let description = [{
    The routing fractions `f_e` are not differentiated:
    `d_probs[t][e] = dloss · coef · E · f_e / T`.

    ```mlir
    %dprobs = moe.aux_loss_grad %probs, %ids, %dloss {layer = "moe1", coef = 0.01 : f32}
        : (tensor<16x4xf32>, tensor<16x2xi32>, tensor<f32>) -> tensor<16x4xf32>
    ```
  }];
  let arguments = (ins Moe_FloatTensor:$probs, Moe_IntTensor:$expert_ids,
                       Moe_FloatTensor:$dloss, StrAttr:$layer, F32Attr:$coef,
                       OptionalAttr<Moe_PlacementAttr>:$placement);
  let results = (outs Moe_FloatTensor:$d_probs);
}

//===----------------------------------------------------------------------===//
// Dispatch and combine
//===----------------------------------------------------------------------===//

def Moe_DispatchOp : Moe_PureOp<"dispatch"> {
  let summary = "group token copies by expert";
  let description = [{
    Copies every token once per chosen expert and groups the copies by expert
    in ascending expert id, stable in token order. Dropless
    (`capacity = 0`): `N = T·k` packed rows, `counts[e]` of them for expert
    `e`. With capacity `C`: `N = E·C`, expert `e` owns rows
    `[e·C, (e+1)·C)` and copies past `C` are dropped (`positions = -1`).
    `positions[t][j]` is the row of token `t`'s `j`-th choice.

    ```mlir
    %routed, %pos, %counts = moe.dispatch %x, %ids
        {layer = "moe1", num_experts = 4 : i64, capacity = 0 : i64}
        : (tensor<16x16xf32>, tensor<16x2xi32>)
        -> (tensor<32x16xf32>, tensor<16x2xi32>, tensor<4xi32>)
    ```
  }];
  let arguments = (ins Moe_FloatTensor:$x, Moe_IntTensor:$expert_ids,
                       StrAttr:$layer, I64Attr:$num_experts, I64Attr:$capacity,
                       OptionalAttr<Moe_PlacementAttr>:$placement);
  let results = (outs Moe_FloatTensor:$routed, Moe_IntTensor:$positions,
                      Moe_IntTensor:$counts);
}

def Moe_DispatchGradOp : Moe_PureOp<"dispatch_grad"> {
  let summary = "gradient of moe.dispatch: sum each token's copies";
  let description = [{
    `dx[t] = sum_j d_routed[positions[t][j]]`, skipping dropped copies
    (`positions = -1`).

    ```mlir
    %dx = moe.dispatch_grad %drouted, %pos {layer = "moe1"}
        : (tensor<32x16xf32>, tensor<16x2xi32>) -> tensor<16x16xf32>
    ```
  }];
  let arguments = (ins Moe_FloatTensor:$d_routed, Moe_IntTensor:$positions,
                       StrAttr:$layer,
                       OptionalAttr<Moe_PlacementAttr>:$placement);
  let results = (outs Moe_FloatTensor:$dx);
}

def Moe_CombineOp : Moe_PureOp<"combine"> {
  let summary = "weighted sum of each token's expert outputs";
  let description = [{
    `y[t] = sum_j combine_weights[t][j] · expert_out[positions[t][j]]`,
    skipping dropped copies (`positions = -1`).

    ```mlir
    %y = moe.combine %out, %pos, %weights {layer = "moe1"}
        : (tensor<32x16xf32>, tensor<16x2xi32>, tensor<16x2xf32>) -> tensor<16x16xf32>
    ```
  }];
  let arguments = (ins Moe_FloatTensor:$expert_out, Moe_IntTensor:$positions,
                       Moe_FloatTensor:$combine_weights, StrAttr:$layer,
                       OptionalAttr<Moe_PlacementAttr>:$placement);
  let results = (outs Moe_FloatTensor:$y);
}

def Moe_CombineGradOp : Moe_PureOp<"combine_grad"> {
  let summary = "gradient of moe.combine";
  let description = [{
    ```mlir
    %dout, %dweights = moe.combine_grad %out, %pos, %weights, %dy {layer = "moe1"}
        : (tensor<32x16xf32>, tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x16xf32>)
        -> (tensor<32x16xf32>, tensor<16x2xf32>)
    ```
  }];
  let arguments = (ins Moe_FloatTensor:$expert_out, Moe_IntTensor:$positions,
                       Moe_FloatTensor:$combine_weights, Moe_FloatTensor:$dy,
                       StrAttr:$layer,
                       OptionalAttr<Moe_PlacementAttr>:$placement);
  let results = (outs Moe_FloatTensor:$d_expert_out,
                      Moe_FloatTensor:$d_combine_weights);
}

//===----------------------------------------------------------------------===//
// Expert computation
//===----------------------------------------------------------------------===//

def Moe_ExpertsOp : Moe_PureOp<"experts"> {
  let summary = "the feed-forward networks of a group of experts";
  let description = [{
    For each group `g` (an expert before partitioning, a local slot after),
    computes `act(x·w1[g] + b1[g])·w2[g] + b2[g]` on the group's rows of
    `routed`: packed by `counts` when `capacity = 0`, else the rows
    `[g·capacity, g·capacity + counts[g])`. Other rows of `out` are zero.

    ```mlir
    %out = moe.experts %routed, %counts, %w1, %b1, %w2, %b2
        {layer = "moe1", activation = "gelu", capacity = 0 : i64}
        : (tensor<32x16xf32>, tensor<4xi32>, tensor<4x16x32xf32>,
           tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>)
        -> tensor<32x16xf32>
    ```
  }];
  let arguments = (ins Moe_FloatTensor:$routed, Moe_IntTensor:$counts,
                       Moe_FloatTensor:$w1, Moe_FloatTensor:$b1,
                       Moe_FloatTensor:$w2, Moe_FloatTensor:$b2,
                       StrAttr:$layer,
                       DefaultValuedStrAttr<StrAttr, "gelu">:$activation,
                       I64Attr:$capacity,
                       OptionalAttr<Moe_PlacementAttr>:$placement);
  let results = (outs Moe_FloatTensor:$out);
}

def Moe_ExpertsGradOp : Moe_PureOp<"experts_grad"> {
  let summary = "gradient of moe.experts";
  let description = [{
    The gradients of the routed rows and of the expert parameters, given the
    gradient `dy` of the experts' output.

    ```mlir
    %drouted, %dw1, %db1, %dw2, %db2 = moe.experts_grad %routed, %counts, %w1, %b1, %w2, %b2, %dy
        {layer = "moe1", activation = "gelu", capacity = 0 : i64}
        : (tensor<32x16xf32>, tensor<4xi32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
           tensor<4x32x16xf32>, tensor<4x16xf32>, tensor<32x16xf32>)
        -> (tensor<32x16xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
            tensor<4x32x16xf32>, tensor<4x16xf32>)
    ```
  }];
  let arguments = (ins Moe_FloatTensor:$routed, Moe_IntTensor:$counts,
                       Moe_FloatTensor:$w1, Moe_FloatTensor:$b1,
                       Moe_FloatTensor:$w2, Moe_FloatTensor:$b2,
                       Moe_FloatTensor:$dy, StrAttr:$layer,
                       DefaultValuedStrAttr<StrAttr, "gelu">:$activation,
                       I64Attr:$capacity,
                       OptionalAttr<Moe_PlacementAttr>:$placement);
  let results = (outs Moe_FloatTensor:$d_routed, Moe_FloatTensor:$dw1,
                      Moe_FloatTensor:$db1, Moe_FloatTensor:$dw2,
                      Moe_FloatTensor:$db2);
}

//===----------------------------------------------------------------------===//
// Collectives
//===----------------------------------------------------------------------===//

def Moe_AllToAllOp : Moe_CollectiveOp<"all_to_all"> {
  let summary = "exchange routed rows between devices";
  let description = [{
    `direction = "dispatch"`: takes this device's expert-grouped rows and
    their `counts: [E]`, and returns the rows its local slots receive,
    grouped by slot (ascending) then by source device (ascending), with
    `out_counts: [slots_per_device]`. `direction = "combine"` is the exact
    inverse: rows grouped by slot and the slot counts in, rows in the
    expert-grouped order and `counts: [E]` out. How an expert's rows split
    among its replicas is the runtime's dispatch plan (`runtime/plan`).

    The output row count is the dropless bound: `M = world_size · N` for
    `dispatch` and `M = N / world_size` for `combine`. Both `M` and the
    length of `out_counts` come from `placement`; without it they are
    inferred as dynamic, so the result types must be given explicitly.

    ```mlir
    %recv, %slot_counts = moe.all_to_all %routed, %counts
        {layer = "moe1", direction = "dispatch",
         placement = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0], [1]]>}
        : (tensor<32x16xf32>, tensor<4xi32>) -> (tensor<64x16xf32>, tensor<2xi32>)
    ```
  }];
  let arguments = (ins Moe_FloatTensor:$input, Moe_IntTensor:$counts,
                       StrAttr:$layer, StrAttr:$direction,
                       OptionalAttr<Moe_PlacementAttr>:$placement);
  let results = (outs Moe_FloatTensor:$output, Moe_IntTensor:$out_counts);
}

def Moe_ReplicaGradSyncOp : Moe_CollectiveOp<"replica_grad_sync"> {
  let summary = "sum expert-slot gradients over each expert's replicas";
  let description = [{
    Each operand is a gradient stored per local slot (`[slots_per_device,
    ...]`). Each slot's gradient is summed over the replica group of the
    expert in that slot (a no-op for experts with one replica), so that
    replicas stay bit-identical after the update.

    ```mlir
    %dw1s, %db1s = moe.replica_grad_sync %dw1, %db1 {layer = "moe1"}
        : (tensor<2x16x32xf32>, tensor<2x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x32xf32>)
    ```
  }];
  let arguments = (ins Variadic<Moe_FloatTensor>:$grads, StrAttr:$layer,
                       OptionalAttr<Moe_PlacementAttr>:$placement);
  let results = (outs Variadic<Moe_FloatTensor>:$results);
}

def Moe_AllReduceOp : Moe_CollectiveOp<"all_reduce"> {
  let summary = "all-reduce a dense gradient over all devices";
  let description = [{
    `reduction = "sum"` adds the operand over all devices; `"mean"` divides
    the sum by the world size.

    ```mlir
    %g = moe.all_reduce %dw {reduction = "mean"} : (tensor<16x16xf32>) -> tensor<16x16xf32>
    ```
  }];
  let arguments = (ins Moe_FloatTensor:$grad, StrAttr:$reduction);
  let results = (outs Moe_FloatTensor:$result);
}

#endif // FLEXMOE_DIALECT_MOE_MOEOPS
