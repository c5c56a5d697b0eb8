//===- Passes.td - flexmoe compiler passes -----------------*- tablegen -*-===//
//
// The training pipeline, in order (compiler/Pipelines.cpp):
//   nn-shape-inference → moe-initial-placement → moe-expand-layers →
//   build-train-step → spmd-partition → lower-to-exec → exec-buffer-reuse
// docs/IR.md describes the IR contract between consecutive passes.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXMOE_PASSES
#define FLEXMOE_PASSES

include "mlir/Pass/PassBase.td"

def ShapeInference : Pass<"nn-shape-inference", "mlir::ModuleOp"> {
  let summary = "Infer static tensor shapes from the function arguments";
  let description = [{
    Refines every unranked or partially dynamic tensor result in the model
    functions to the static type that the op's type inference
    (InferTypeOpInterface, so nn and moe ops alike) gives for its operands,
    and updates the function result types. Function arguments must be
    static. Callees are refined before their callers, and a `func.call`
    takes the refined signature of its callee.

    Ops that do not infer their results (`nn.reshape`, `nn.fill`, ops of
    other dialects) keep their declared result types, which must then be
    static. Each op is verified again once its operands are refined, so
    shape errors hidden behind `tensor<*xf32>` are reported at the op. Fails
    with a diagnostic at the first op whose shape cannot be inferred.

    ```mlir
    %y = nn.linear %x, %w : (tensor<8x64xf32>, tensor<64x32xf32>) -> tensor<*xf32>
    // becomes
    %y = nn.linear %x, %w : (tensor<8x64xf32>, tensor<64x32xf32>) -> tensor<8x32xf32>
    ```
  }];
}

def InitialPlacement : Pass<"moe-initial-placement", "mlir::ModuleOp"> {
  let summary = "Attach an initial #moe.placement to every MoE layer";
  let description = [{
    Round-robin expert parallelism by default: expert e lives on device
    e mod world-size, one replica each, with ceil(experts / world-size) slots
    per device unless `slots-per-device` says otherwise. With
    `placement-file`, reads the placement of each layer from a JSON file
    (docs/IR.md gives its format); its world_size must agree with
    `world-size` when that is given, and every layer needs an entry.

    The placement goes on every `moe.layer` and on every already-expanded
    moe op carrying the same `layer` name, replacing any placement there.
    Sets the module attribute `flexmoe.world_size`.
  }];
  let options = [
    Option<"worldSize", "world-size", "int64_t", "1", "Number of devices">,
    Option<"slotsPerDevice", "slots-per-device", "int64_t", "0",
           "Expert slots per device (0: ceil(experts / world-size))">,
    Option<"placementFile", "placement-file", "std::string", "\"\"",
           "JSON file with the placement of each MoE layer">,
  ];
}

def ExpandMoeLayers : Pass<"moe-expand-layers", "mlir::ModuleOp"> {
  let summary = "Expand moe.layer into gate, dispatch, experts and combine";
  let description = [{
    Replaces each statically shaped `moe.layer` by `nn.reshape` [B,S,D] to
    [T,D], `moe.gate`, `moe.aux_loss` (scaled by `aux_loss_coef`),
    `moe.dispatch` (capacity ceil(capacity_factor * T * top_k / E), or 0 when
    dropless), `moe.experts`, `moe.combine` and `nn.reshape` back. Every
    expanded op carries the layer's name as `layer` and its `placement`. The
    expert parameters (w1 b1 w2 b2), which must be arguments of the enclosing
    function, get the argument attribute `moe.layer = "<name>"`.
  }];
  let dependentDialects = ["::flexmoe::nn::NNDialect",
                           "::flexmoe::moe::MoeDialect"];
}

def BuildTrainStep : Pass<"build-train-step", "mlir::ModuleOp"> {
  let summary = "Differentiate the model and append the AdamW update";
  let description = [{
    Turns `func.func @forward(...) -> tensor<f32>` (the loss) into
    `func.func @train_step` computing the loss, the gradient of every
    parameter through the ops' GradientOpInterface rules, and the AdamW
    update of parameters and fp32 optimizer state (docs/IR.md, Stage 4).

    Arguments of `@train_step`: the inputs (`nn.input`) and the parameters
    (`nn.param`), each in `@forward`'s order, then the AdamW first moments
    and second moments, one per parameter (`nn.opt_state = "adam_m"` or
    `"adam_v"`, `nn.state_of = "<param>"`, and the parameter's `moe.layer`).
    Results: the loss (`nn.output = "loss"`), then the new parameters,
    moments m and moments v, each with `nn.updates = <argument index>`.

    The reverse sweep visits the ops that lie between a parameter and the
    loss in reverse order, seeds the loss gradient with `nn.fill 1.0` and
    sums the gradients of a value with several uses with `nn.add`; integer
    values get no gradient. It fails at an op on that path that has no
    gradient rule. A parameter that does not affect the loss gets a zero
    gradient and a warning. Unused ops are erased.

    ```mlir
    func.func @train_step(%x: tensor<4x8xf32> {nn.input = "x"},
                          %w: tensor<8x2xf32> {nn.param = "w"},
                          %m: tensor<8x2xf32> {nn.opt_state = "adam_m", nn.state_of = "w"},
                          %v: tensor<8x2xf32> {nn.opt_state = "adam_v", nn.state_of = "w"})
        -> (tensor<f32> {nn.output = "loss"}, tensor<8x2xf32> {nn.updates = 1 : i64},
            tensor<8x2xf32> {nn.updates = 2 : i64}, tensor<8x2xf32> {nn.updates = 3 : i64})
    ```
  }];
  let options = [
    Option<"learningRate", "lr", "double", "1e-3", "AdamW learning rate">,
    Option<"beta1", "beta1", "double", "0.9", "AdamW beta1">,
    Option<"beta2", "beta2", "double", "0.999", "AdamW beta2">,
    Option<"epsilon", "epsilon", "double", "1e-8", "AdamW epsilon">,
    Option<"weightDecay", "weight-decay", "double", "0.01",
           "AdamW decoupled weight decay">,
  ];
}

def SpmdPartition : Pass<"spmd-partition", "mlir::ModuleOp"> {
  let summary = "Partition the training step for data and expert parallelism";
  let description = [{
    Turns `@train_step` (Stage 4 of docs/IR.md) into the program of one
    device (Stage 5):

    - data parallelism: the leading (batch) dimension of every `nn.input`
      argument is divided by `world-size` and the new shapes are propagated
      through the body; dense parameters stay replicated and each dense
      gradient goes through `moe.all_reduce {reduction = "mean"}` right
      after the op producing it, so that the runtime can overlap it with the
      rest of the backward pass;
    - expert parallelism: expert parameters and their AdamW state become
      `[slots_per_device, ...]` according to each layer's `#moe.placement`;
      `moe.all_to_all` ops route tokens to the local expert slots and back
      around `moe.experts` and `moe.experts_grad` (which then run packed,
      `capacity = 0`); expert gradients are scaled by `1/world-size` and
      summed over each expert's replicas by one `moe.replica_grad_sync` per
      layer.

    The collectives are inserted for `world-size = 1` too, so that the shape
    of the program never depends on the number of devices. The returned
    loss is the loss of the device's own batch shard.

    ```mlir
    // before, world-size = 2
    func.func @train_step(%tokens: tensor<8x16xi32> {nn.input = "tokens"}, ...)
    // after
    module attributes {flexmoe.world_size = 2 : i64} {
      func.func @train_step(%tokens: tensor<4x16xi32> {nn.input = "tokens"}, ...)
    ```
  }];
  let options = [
    Option<"worldSize", "world-size", "int64_t", "1", "Number of devices">,
  ];
  let dependentDialects = ["::flexmoe::nn::NNDialect",
                           "::flexmoe::moe::MoeDialect"];
}

def LowerToExec : Pass<"lower-to-exec", "mlir::ModuleOp"> {
  let summary = "Lower the partitioned training step to the exec dialect";
  let description = [{
    Replaces Stage 5 `func.func @train_step` (docs/IR.md) by an
    `exec.program @train_step`: one `exec.buffer` per tensor value
    (arguments become parameter, optimizer-state and input buffers according
    to their `nn.param` / `nn.opt_state` / `nn.input` attributes), one
    `exec.kernel` or `exec.collective` per nn / moe op in program order, and
    one `exec.moe_layer` per MoE layer with its `#moe.placement`.
    `nn.reshape` becomes an `exec.view` of its input (no copy). A result
    with `nn.updates = i` is written straight into argument `i`'s buffer
    when that is safe (the argument is not read afterwards, and the producer
    is elementwise if it reads it); otherwise an `exec.kernel copy` at the
    end writes it back. Buffers get disjoint, 64-byte aligned offsets;
    `exec-buffer-reuse` packs them.
  }];
  let dependentDialects = ["::flexmoe::exec::ExecDialect"];
}

def BufferReuse : Pass<"exec-buffer-reuse", "mlir::ModuleOp"> {
  let summary = "Assign arena offsets to exec buffers, reusing dead ones";
  let description = [{
    Liveness-based memory planning over the instruction stream of every
    `exec.program`. A buffer is live from the first to the last instruction
    that touches it or a view of it (the loss until the end of the step).
    Persistent buffers (parameters, optimizer state, inputs) are laid out
    first, one after the other; activation, gradient, loss and scratch
    buffers whose live ranges do not overlap share the space after them,
    placed greedily, largest first, into the smallest gap that fits (best
    fit), 64-byte aligned. Sets every offset and the program's arena_size.
  }];
}

#endif // FLEXMOE_PASSES
