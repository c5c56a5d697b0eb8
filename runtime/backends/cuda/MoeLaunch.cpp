//===- MoeLaunch.cpp - the moe ops' CUDA launcher -------------------------===//
//
// launchMoe: reads a moe instruction's operands and attributes exactly as
// the CPU backend does (runtime/backends/cpu/CpuDevice.cpp) and enqueues the
// kernels of runtime/backends/cuda/kernels/MoeKernels.cuh on the context's
// stream. Operand counts and ranks are checked first, so that a malformed
// program is an error naming the op rather than an out-of-range read.
//
//===----------------------------------------------------------------------===//
#include "runtime/backends/cuda/CudaContext.h"
#include "runtime/backends/cuda/kernels/MoeKernels.cuh"

#include <initializer_list>
#include <string_view>

namespace flexmoe::cuda {

using device::KernelCall;
using device::Operand;

namespace {

/// The operands' count, each one's rank (-1: any rank) and element type
/// (types[i]: 'f' for f32, 'i' for i32).
Status checkOperands(const char *op, const char *side,
                     const std::vector<Operand> &operands,
                     std::initializer_list<int> ranks, std::string_view types) {
  if (operands.size() != ranks.size())
    return errorf(op, ": ", operands.size(), " ", side, ", expected ",
                  ranks.size());
  size_t i = 0;
  for (int rank : ranks) {
    const Operand &operand = operands[i];
    if (rank >= 0 && static_cast<int>(operand.shape.size()) != rank)
      return errorf(op, ": ", side, " ", i, " ('", operand.name, "') has rank ",
                    operand.shape.size(), ", expected ", rank);
    const fb::ElementType type =
        types[i] == 'i' ? fb::ElementType::I32 : fb::ElementType::F32;
    if (operand.elementType != type)
      return errorf(op, ": ", side, " ", i, " ('", operand.name, "') is ",
                    operand.elementType == fb::ElementType::I32 ? "i32" : "f32",
                    ", expected ",
                    type == fb::ElementType::I32 ? "i32" : "f32");
    ++i;
  }
  return Status::ok();
}

} // namespace

#define FLEXMOE_MOE_ATTRS(TYPE)                                                \
  const fb::TYPE *attrs = ins->attrs_as_##TYPE();                              \
  if (!attrs)                                                                  \
    return errorf(op, ": the instruction has no " #TYPE);

Status launchMoe(const KernelCall &call, LaunchContext &context) {
  const fb::Instruction *ins = call.instruction;
  if (!ins)
    return Status::error("launchMoe: no instruction");
  const std::vector<Operand> &in = call.inputs;
  const std::vector<Operand> &out = call.outputs;
  cudaStream_t stream = context.stream;
  const MoeScratch &scratch = context.scratch;
  if (!scratch)
    return Status::error("launchMoe: the launch context has no scratch memory");
  switch (ins->opcode()) {
  // The gate's GEMMs stay fp32 whatever context.precision says: top-k
  // routing is discrete (a bf16 logit flips near-ties between experts) and
  // its N is the expert count, far too narrow for tensor-core tiles.
  case fb::OpCode::Gate: {
    const char *op = "moe.gate";
    FLEXMOE_MOE_ATTRS(GateAttrs);
    FLEXMOE_RETURN_IF_ERROR(checkOperands(op, "inputs", in, {2, 2}, "ff"));
    FLEXMOE_RETURN_IF_ERROR(
        checkOperands(op, "outputs", out, {2, 2, 2}, "fif"));
    return moeGate(in[0].as<float>(), in[1].as<float>(), in[0].shape[0],
                   in[0].shape[1], in[1].shape[1], attrs->top_k(),
                   out[0].as<float>(), out[1].as<int32_t>(), out[2].as<float>(),
                   nullptr, call.logitBias, context.deterministic, stream,
                   scratch);
  }
  case fb::OpCode::GateGrad: {
    const char *op = "moe.gate_grad";
    FLEXMOE_MOE_ATTRS(GateAttrs);
    FLEXMOE_RETURN_IF_ERROR(
        checkOperands(op, "inputs", in, {2, 2, 2, 2, 2, 2}, "fffiff"));
    FLEXMOE_RETURN_IF_ERROR(checkOperands(op, "outputs", out, {2, 2}, "ff"));
    return moeGateGrad(in[0].as<float>(), in[1].as<float>(), in[2].as<float>(),
                       in[3].as<int32_t>(), in[4].as<float>(),
                       in[5].as<float>(), in[0].shape[0], in[0].shape[1],
                       in[1].shape[1], attrs->top_k(), out[0].as<float>(),
                       out[1].as<float>(), stream, scratch);
  }
  case fb::OpCode::AuxLoss: {
    const char *op = "moe.aux_loss";
    FLEXMOE_MOE_ATTRS(AuxLossAttrs);
    FLEXMOE_RETURN_IF_ERROR(checkOperands(op, "inputs", in, {2, 2}, "fi"));
    FLEXMOE_RETURN_IF_ERROR(checkOperands(op, "outputs", out, {-1}, "f"));
    return moeAuxLoss(in[0].as<float>(), in[1].as<int32_t>(), in[0].shape[0],
                      in[0].shape[1], in[1].shape[1], attrs->coef(),
                      out[0].as<float>(), stream, scratch);
  }
  case fb::OpCode::AuxLossGrad: {
    const char *op = "moe.aux_loss_grad";
    FLEXMOE_MOE_ATTRS(AuxLossAttrs);
    FLEXMOE_RETURN_IF_ERROR(checkOperands(op, "inputs", in, {2, 2, -1}, "fif"));
    FLEXMOE_RETURN_IF_ERROR(checkOperands(op, "outputs", out, {2}, "f"));
    // dLoss stays on the device: the kernel reads it.
    return moeAuxLossGrad(in[0].as<float>(), in[1].as<int32_t>(),
                          in[2].as<float>(), in[0].shape[0], in[0].shape[1],
                          in[1].shape[1], attrs->coef(), out[0].as<float>(),
                          stream, scratch);
  }
  case fb::OpCode::Dispatch: {
    const char *op = "moe.dispatch";
    FLEXMOE_MOE_ATTRS(DispatchAttrs);
    FLEXMOE_RETURN_IF_ERROR(checkOperands(op, "inputs", in, {2, 2}, "fi"));
    FLEXMOE_RETURN_IF_ERROR(
        checkOperands(op, "outputs", out, {2, 2, 1}, "fii"));
    return moeDispatch(in[0].as<float>(), in[1].as<int32_t>(), in[0].shape[0],
                       in[0].shape[1], attrs->num_experts(), in[1].shape[1],
                       attrs->capacity(), out[0].as<float>(),
                       out[1].as<int32_t>(), out[2].as<int32_t>(), nullptr,
                       stream, scratch);
  }
  case fb::OpCode::DispatchGrad: {
    const char *op = "moe.dispatch_grad";
    FLEXMOE_RETURN_IF_ERROR(checkOperands(op, "inputs", in, {2, 2}, "fi"));
    FLEXMOE_RETURN_IF_ERROR(checkOperands(op, "outputs", out, {2}, "f"));
    return moeDispatchGrad(in[0].as<float>(), in[1].as<int32_t>(),
                           in[0].shape[0], in[1].shape[0], in[0].shape[1],
                           in[1].shape[1], out[0].as<float>(), stream);
  }
  case fb::OpCode::Experts:
  case fb::OpCode::ExpertsGrad: {
    const bool forward = ins->opcode() == fb::OpCode::Experts;
    const char *op = forward ? "moe.experts" : "moe.experts_grad";
    FLEXMOE_MOE_ATTRS(ExpertsAttrs);
    if (forward)
      FLEXMOE_RETURN_IF_ERROR(
          checkOperands(op, "inputs", in, {2, 1, 3, 2, 3, 2}, "fiffff"));
    else
      FLEXMOE_RETURN_IF_ERROR(
          checkOperands(op, "inputs", in, {2, 1, 3, 2, 3, 2, 2}, "fifffff"));
    FLEXMOE_RETURN_IF_ERROR(
        checkOperands(op, "outputs", out,
                      forward ? std::initializer_list<int>{2}
                              : std::initializer_list<int>{2, 3, 2, 3, 2},
                      "fffff"));
    const MoeAct activation = attrs->activation() == fb::Activation::Relu
                                  ? MoeAct::Relu
                                  : MoeAct::Gelu;
    const Operand &w1 = in[2];
    const int64_t rows = in[0].shape[0], dim = in[0].shape[1];
    const int64_t hidden = w1.shape[2], groups = w1.shape[0];
    if (forward)
      return moeExperts(in[0].as<float>(), in[1].as<int32_t>(), w1.as<float>(),
                        in[3].as<float>(), in[4].as<float>(), in[5].as<float>(),
                        rows, dim, hidden, groups, attrs->capacity(),
                        activation, out[0].as<float>(), stream, scratch,
                        context.precision);
    return moeExpertsGrad(
        in[0].as<float>(), in[1].as<int32_t>(), w1.as<float>(),
        in[3].as<float>(), in[4].as<float>(), in[5].as<float>(),
        in[6].as<float>(), rows, dim, hidden, groups, attrs->capacity(),
        activation, out[0].as<float>(), out[1].as<float>(), out[2].as<float>(),
        out[3].as<float>(), out[4].as<float>(), stream, scratch,
        context.precision);
  }
  case fb::OpCode::Combine: {
    const char *op = "moe.combine";
    FLEXMOE_RETURN_IF_ERROR(checkOperands(op, "inputs", in, {2, 2, 2}, "fif"));
    FLEXMOE_RETURN_IF_ERROR(checkOperands(op, "outputs", out, {2}, "f"));
    return moeCombine(in[0].as<float>(), in[1].as<int32_t>(), in[2].as<float>(),
                      in[0].shape[0], in[1].shape[0], in[0].shape[1],
                      in[1].shape[1], out[0].as<float>(), stream);
  }
  case fb::OpCode::CombineGrad: {
    const char *op = "moe.combine_grad";
    FLEXMOE_RETURN_IF_ERROR(
        checkOperands(op, "inputs", in, {2, 2, 2, 2}, "fiff"));
    FLEXMOE_RETURN_IF_ERROR(checkOperands(op, "outputs", out, {2, 2}, "ff"));
    return moeCombineGrad(in[0].as<float>(), in[1].as<int32_t>(),
                          in[2].as<float>(), in[3].as<float>(), in[0].shape[0],
                          in[1].shape[0], in[0].shape[1], in[1].shape[1],
                          out[0].as<float>(), out[1].as<float>(), stream);
  }
  default:
    return Status::error("launchMoe: the opcode is not a moe compute op");
  }
}

#undef FLEXMOE_MOE_ATTRS

} // namespace flexmoe::cuda
