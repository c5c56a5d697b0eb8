//===- ExecOps.td - exec dialect ops ---------------------------*- tablegen -*-===//
#ifndef FLEXMOE_DIALECT_EXEC_EXECOPS
#define FLEXMOE_DIALECT_EXEC_EXECOPS

include "flexmoe/Dialect/Exec/ExecDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

//===----------------------------------------------------------------------===//
// Types
//===----------------------------------------------------------------------===//

def Exec_BufferType : TypeDef<Exec_Dialect, "Buffer"> {
  let mnemonic = "buffer";
  let summary = "a statically shaped region of the arena";
  let description = [{
    A buffer of `f32` or `i32` elements with a static shape, stored densely
    in row-major order: `!exec.buffer<8x16xf32>`, a scalar `!exec.buffer<f32>`.
  }];
  let parameters = (ins ArrayRefParameter<"int64_t">:$shape,
                        "::mlir::Type":$elementType);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Number of elements (1 for a scalar).
    int64_t getNumElements() const;
    /// Bytes the buffer occupies in the arena.
    int64_t getSizeInBytes() const;
  }];
}

//===----------------------------------------------------------------------===//
// Enums, shared by name and value with runtime/schema/program.fbs
//===----------------------------------------------------------------------===//

def Exec_BufferKind : I32EnumAttr<"BufferKind", "what a buffer holds", [
    I32EnumAttrCase<"Parameter", 0, "parameter">,
    I32EnumAttrCase<"Gradient", 1, "gradient">,
    I32EnumAttrCase<"AdamM", 2, "adam_m">,
    I32EnumAttrCase<"AdamV", 3, "adam_v">,
    I32EnumAttrCase<"InputTokens", 4, "input_tokens">,
    I32EnumAttrCase<"InputLabels", 5, "input_labels">,
    I32EnumAttrCase<"Activation", 6, "activation">,
    I32EnumAttrCase<"Loss", 7, "loss">,
    I32EnumAttrCase<"Scratch", 8, "scratch">]> {
  let cppNamespace = "::flexmoe::exec";
}

def Exec_Opcode : I32EnumAttr<"Opcode", "an instruction of the program", [
    I32EnumAttrCase<"Embedding", 0, "embedding">,
    I32EnumAttrCase<"EmbeddingGrad", 1, "embedding_grad">,
    I32EnumAttrCase<"Linear", 2, "linear">,
    I32EnumAttrCase<"LinearGrad", 3, "linear_grad">,
    I32EnumAttrCase<"Matmul", 4, "matmul">,
    I32EnumAttrCase<"LayerNorm", 5, "layer_norm">,
    I32EnumAttrCase<"LayerNormGrad", 6, "layer_norm_grad">,
    I32EnumAttrCase<"Gelu", 7, "gelu">,
    I32EnumAttrCase<"GeluGrad", 8, "gelu_grad">,
    I32EnumAttrCase<"Softmax", 9, "softmax">,
    I32EnumAttrCase<"SoftmaxGrad", 10, "softmax_grad">,
    I32EnumAttrCase<"Attention", 11, "attention">,
    I32EnumAttrCase<"AttentionGrad", 12, "attention_grad">,
    I32EnumAttrCase<"Add", 13, "add">,
    I32EnumAttrCase<"Mul", 14, "mul">,
    I32EnumAttrCase<"Scale", 15, "scale">,
    I32EnumAttrCase<"ReduceSum", 16, "reduce_sum">,
    I32EnumAttrCase<"Reshape", 17, "reshape">,
    I32EnumAttrCase<"Transpose", 18, "transpose">,
    I32EnumAttrCase<"Roll", 19, "roll">,
    I32EnumAttrCase<"Dropout", 20, "dropout">,
    I32EnumAttrCase<"CrossEntropy", 21, "cross_entropy">,
    I32EnumAttrCase<"CrossEntropyGrad", 22, "cross_entropy_grad">,
    I32EnumAttrCase<"Fill", 23, "fill">,
    I32EnumAttrCase<"AdamW", 24, "adamw">,
    I32EnumAttrCase<"Gate", 25, "gate">,
    I32EnumAttrCase<"GateGrad", 26, "gate_grad">,
    I32EnumAttrCase<"AuxLoss", 27, "aux_loss">,
    I32EnumAttrCase<"AuxLossGrad", 28, "aux_loss_grad">,
    I32EnumAttrCase<"Dispatch", 29, "dispatch">,
    I32EnumAttrCase<"DispatchGrad", 30, "dispatch_grad">,
    I32EnumAttrCase<"Experts", 31, "experts">,
    I32EnumAttrCase<"ExpertsGrad", 32, "experts_grad">,
    I32EnumAttrCase<"Combine", 33, "combine">,
    I32EnumAttrCase<"CombineGrad", 34, "combine_grad">,
    I32EnumAttrCase<"AllToAllDispatch", 35, "all_to_all_dispatch">,
    I32EnumAttrCase<"AllToAllCombine", 36, "all_to_all_combine">,
    I32EnumAttrCase<"ReplicaGradSync", 37, "replica_grad_sync">,
    I32EnumAttrCase<"AllReduceMean", 38, "all_reduce_mean">,
    I32EnumAttrCase<"AllReduceSum", 39, "all_reduce_sum">,
    I32EnumAttrCase<"Copy", 40, "copy">]> {
  let cppNamespace = "::flexmoe::exec";
}

def Exec_AnyBuffer : Type<CPred<"::llvm::isa<::flexmoe::exec::BufferType>($_self)">,
                          "exec buffer">;

//===----------------------------------------------------------------------===//
// Ops
//===----------------------------------------------------------------------===//

def Exec_ProgramOp : Exec_Op<"program", [
    Symbol, SymbolTable, IsolatedFromAbove, NoTerminator, SingleBlock,
    NoRegionArguments]> {
  let summary = "the training step of one device";
  let description = [{
    The root of the program file. Its block holds the buffer and MoE layer
    tables and the instruction stream, in program order. `arena_size` bytes
    of device memory hold every buffer; `exec-buffer-reuse` shrinks it.
    The optional `lr`, `beta1`, `beta2`, `epsilon` and `weight_decay` are the
    AdamW defaults recorded for the runtime.

    ```mlir
    exec.program @train_step attributes {world_size = 2 : i64,
        compute_dtype = "f32", arena_size = 4096 : i64} {
      %w = exec.buffer parameter "w" offset 0 size 256
          {param = "w", init = "normal", init_std = 0.02 : f32} : !exec.buffer<8x8xf32>
      ...
    }
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, I64Attr:$world_size,
                       StrAttr:$compute_dtype, I64Attr:$arena_size,
                       OptionalAttr<F32Attr>:$lr, OptionalAttr<F32Attr>:$beta1,
                       OptionalAttr<F32Attr>:$beta2,
                       OptionalAttr<F32Attr>:$epsilon,
                       OptionalAttr<F32Attr>:$weight_decay);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$sym_name attr-dict-with-keyword $body";
  let hasVerifier = 1;
}

def Exec_BufferOp : Exec_Op<"buffer", [
    DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "declares a buffer of the arena";
  let description = [{
    One entry of the program's buffer table: what it holds (`kind`), its
    name, its byte `offset` into the arena and its byte `size`, which must
    equal the elements of the result type times 4. Parameters carry `param`
    (their unique name), `init` (`"normal"`, `"zeros"` or `"ones"`) and, for
    `"normal"`, `init_std`; optimizer state names its parameter buffer with
    `of`; expert parameters, their gradients and state name their MoE layer
    with `layer`.

    ```mlir
    %w1 = exec.buffer parameter "moe1.w1" offset 0 size 1536
        {param = "moe1.w1", init = "normal", init_std = 0.02 : f32,
         layer = @moe1} : !exec.buffer<3x8x16xf32>
    %m = exec.buffer adam_m "moe1.w1.m" of %w1 offset 1536 size 1536
        {layer = @moe1} : !exec.buffer<3x8x16xf32>
    ```
  }];
  let arguments = (ins Exec_BufferKind:$kind, StrAttr:$name,
                       Optional<Exec_AnyBuffer>:$state_of, I64Attr:$offset,
                       I64Attr:$size, OptionalAttr<StrAttr>:$param,
                       OptionalAttr<StrAttr>:$init,
                       OptionalAttr<F32Attr>:$init_std,
                       OptionalAttr<FlatSymbolRefAttr>:$layer);
  let results = (outs Exec_AnyBuffer:$result);
  let assemblyFormat = [{
    $kind $name (`of` $state_of^ `:` type($state_of))? `offset` $offset `size` $size
    attr-dict `:` type($result)
  }];
  let hasVerifier = 1;
}

def Exec_ViewOp : Exec_Op<"view", [Pure]> {
  let summary = "a buffer sharing the storage of another (a reshape)";
  let description = [{
    Reinterprets a contiguous buffer with another shape of the same element
    count and element type; no data moves. In the program file it is a
    buffer whose `alias_of` names its source and whose offset and size are
    the source's.

    ```mlir
    %flat = exec.view %x : !exec.buffer<2x4x8xf32> -> !exec.buffer<8x8xf32>
    ```
  }];
  let arguments = (ins Exec_AnyBuffer:$source, StrAttr:$name);
  let results = (outs Exec_AnyBuffer:$result);
  let assemblyFormat = [{
    $source $name attr-dict `:` type($source) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Exec_MoeLayerOp : Exec_Op<"moe_layer", [Symbol]> {
  let summary = "one entry of the program's MoE layer table";
  let description = [{
    The static description of an expanded MoE layer and its initial
    placement (the data of `#moe.placement`): `replicas[e]` lists the devices
    holding expert `e`. The slot table and replica groups of the program
    file are derived from it by the plan library at translation.

    ```mlir
    exec.moe_layer @moe1 {num_experts = 4 : i64, top_k = 1 : i64,
        d_model = 8 : i64, ffn_hidden = 16 : i64, capacity = 0 : i64,
        activation = "gelu", world_size = 2 : i64, slots_per_device = 3 : i64,
        replicas = [array<i64: 0>, array<i64: 1>, array<i64: 0, 1>, array<i64: 1>]}
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, I64Attr:$num_experts,
                       I64Attr:$top_k, I64Attr:$d_model, I64Attr:$ffn_hidden,
                       I64Attr:$capacity, StrAttr:$activation,
                       I64Attr:$world_size, I64Attr:$slots_per_device,
                       TypedArrayAttrBase<DenseI64ArrayAttr,
                                          "per-expert device lists">:$replicas);
  let assemblyFormat = "$sym_name attr-dict";
  let hasVerifier = 1;
}

class Exec_InstructionOp<string mnemonic> : Exec_Op<mnemonic, [
    AttrSizedOperandSegments,
    DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let arguments = (ins Exec_Opcode:$opcode,
                       Arg<Variadic<Exec_AnyBuffer>, "", [MemRead]>:$inputs,
                       Arg<Variadic<Exec_AnyBuffer>, "", [MemWrite]>:$outputs,
                       OptionalAttr<FlatSymbolRefAttr>:$layer);
  let assemblyFormat = [{
    $opcode (`layer` $layer^)? `ins` `(` ($inputs^ `:` type($inputs))? `)`
    `outs` `(` $outputs `:` type($outputs) `)` attr-dict
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The op's attributes: everything in the attribute dictionary but
    /// opcode, layer and the operand segment sizes.
    ::llvm::SmallVector<::mlir::NamedAttribute> getOpAttrs();
  }];
}

def Exec_KernelOp : Exec_InstructionOp<"kernel"> {
  let summary = "one compute instruction";
  let description = [{
    Runs the kernel of `opcode` (one per nn / moe compute op of docs/IR.md,
    operands and results in the same order) on the `ins` buffers and writes
    the `outs` buffers. An output may be one of the inputs (AdamW updates
    parameter and state in place). The op's attributes are listed in the
    attribute dictionary under their docs/IR.md names, all of them present;
    MoE ops name their layer.

    ```mlir
    exec.kernel linear ins(%x, %w : !exec.buffer<8x8xf32>, !exec.buffer<8x16xf32>)
        outs(%y : !exec.buffer<8x16xf32>)
    exec.kernel layer_norm ins(%x, %g, %b : ...) outs(%y : ...) {epsilon = 1.0e-05 : f32}
    ```
  }];
}

def Exec_CollectiveOp : Exec_InstructionOp<"collective"> {
  let summary = "one communication instruction";
  let description = [{
    A collective across the devices: `all_to_all_dispatch` and
    `all_to_all_combine` (moe.all_to_all), `replica_grad_sync` and
    `all_reduce_mean` / `all_reduce_sum` (moe.all_reduce). The MoE ones name
    their layer, whose placement decides the plan.

    ```mlir
    exec.collective all_to_all_dispatch layer @moe1
        ins(%routed, %counts : !exec.buffer<8x8xf32>, !exec.buffer<4xi32>)
        outs(%recv, %slot_counts : !exec.buffer<16x8xf32>, !exec.buffer<3xi32>)
    exec.collective all_reduce_mean ins(%g : !exec.buffer<8xf32>) outs(%g : !exec.buffer<8xf32>)
    ```
  }];
}

#endif // FLEXMOE_DIALECT_EXEC_EXECOPS
