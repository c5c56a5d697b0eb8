//===- OpInfo.cpp - the signature of every program opcode -----------------===//
#include "runtime/program/OpInfo.h"

#include <array>
#include <cstddef>

using flexmoe::fb::OpAttrs;
using flexmoe::fb::OpCode;
using flexmoe::program::OpInfo;

namespace {

constexpr OpInfo fixed(std::string_view irName, std::string_view ins,
                       std::string_view outs, OpAttrs attrs = OpAttrs::NONE,
                       bool moe = false) {
  return OpInfo{irName,
                ins,
                outs,
                static_cast<int>(ins.size()),
                static_cast<int>(ins.size()),
                false,
                attrs,
                moe};
}

// Indexed by OpCode; the static_assert below keeps it in step with the schema.
constexpr std::array kOpInfos = {
    /*Embedding*/ fixed("nn.embedding", "if", "f"),
    /*EmbeddingGrad*/
    fixed("nn.embedding_grad", "if", "f", OpAttrs::EmbeddingGradAttrs),
    /*Linear: the bias is optional*/
    OpInfo{"nn.linear", "fff", "f", 2, 3},
    /*LinearGrad*/ fixed("nn.linear_grad", "fff", "ff"),
    /*Matmul*/ fixed("nn.matmul", "ff", "f", OpAttrs::MatmulAttrs),
    /*LayerNorm*/ fixed("nn.layer_norm", "fff", "f", OpAttrs::LayerNormAttrs),
    /*LayerNormGrad*/
    fixed("nn.layer_norm_grad", "fff", "fff", OpAttrs::LayerNormAttrs),
    /*Gelu*/ fixed("nn.gelu", "f", "f", OpAttrs::GeluAttrs),
    /*GeluGrad*/ fixed("nn.gelu_grad", "ff", "f", OpAttrs::GeluAttrs),
    /*Softmax*/ fixed("nn.softmax", "f", "f", OpAttrs::SoftmaxAttrs),
    /*SoftmaxGrad*/ fixed("nn.softmax_grad", "ff", "f", OpAttrs::SoftmaxAttrs),
    /*Attention*/ fixed("nn.attention", "fff", "f", OpAttrs::AttentionAttrs),
    /*AttentionGrad*/
    fixed("nn.attention_grad", "ffff", "fff", OpAttrs::AttentionAttrs),
    /*Add*/ fixed("nn.add", "ff", "f"),
    /*Mul*/ fixed("nn.mul", "ff", "f"),
    /*Scale*/ fixed("nn.scale", "f", "f", OpAttrs::ScaleAttrs),
    /*ReduceSum*/ fixed("nn.reduce_sum", "f", "f", OpAttrs::ReduceSumAttrs),
    /*Reshape*/ fixed("nn.reshape", "*", "*"),
    /*Transpose*/ fixed("nn.transpose", "*", "*", OpAttrs::TransposeAttrs),
    /*Roll*/ fixed("nn.roll", "*", "*", OpAttrs::RollAttrs),
    /*Dropout*/ fixed("nn.dropout", "f", "f", OpAttrs::DropoutAttrs),
    /*CrossEntropy*/
    fixed("nn.cross_entropy", "fi", "f", OpAttrs::CrossEntropyAttrs),
    /*CrossEntropyGrad*/
    fixed("nn.cross_entropy_grad", "fif", "f", OpAttrs::CrossEntropyAttrs),
    /*Fill*/ fixed("nn.fill", "", "f", OpAttrs::FillAttrs),
    /*AdamW*/ fixed("nn.adamw", "ffff", "fff", OpAttrs::AdamWAttrs),
    /*Gate*/ fixed("moe.gate", "ff", "fif", OpAttrs::GateAttrs, true),
    /*GateGrad*/
    fixed("moe.gate_grad", "fffiff", "ff", OpAttrs::GateAttrs, true),
    /*AuxLoss*/ fixed("moe.aux_loss", "fi", "f", OpAttrs::AuxLossAttrs, true),
    /*AuxLossGrad*/
    fixed("moe.aux_loss_grad", "fif", "f", OpAttrs::AuxLossAttrs, true),
    /*Dispatch*/
    fixed("moe.dispatch", "fi", "fii", OpAttrs::DispatchAttrs, true),
    /*DispatchGrad*/
    fixed("moe.dispatch_grad", "fi", "f", OpAttrs::NONE, true),
    /*Experts*/
    fixed("moe.experts", "fiffff", "f", OpAttrs::ExpertsAttrs, true),
    /*ExpertsGrad*/
    fixed("moe.experts_grad", "fifffff", "fffff", OpAttrs::ExpertsAttrs, true),
    /*Combine*/ fixed("moe.combine", "fif", "f", OpAttrs::NONE, true),
    /*CombineGrad*/
    fixed("moe.combine_grad", "fiff", "ff", OpAttrs::NONE, true),
    /*AllToAllDispatch*/
    fixed("moe.all_to_all", "fi", "fi", OpAttrs::NONE, true),
    /*AllToAllCombine*/
    fixed("moe.all_to_all", "fi", "fi", OpAttrs::NONE, true),
    /*ReplicaGradSync*/
    OpInfo{"moe.replica_grad_sync", "", "", 1, 1 << 20, true, OpAttrs::NONE,
           true},
    /*AllReduceMean*/ fixed("moe.all_reduce", "f", "f"),
    /*AllReduceSum*/ fixed("moe.all_reduce", "f", "f"),
    /*Copy*/ fixed("exec.copy", "*", "*"),
};
static_assert(kOpInfos.size() == static_cast<size_t>(OpCode::MAX) + 1,
              "every OpCode of program.fbs needs an OpInfo");

} // namespace

const OpInfo *flexmoe::program::lookupOpInfo(OpCode opcode) {
  auto index = static_cast<size_t>(opcode);
  return index < kOpInfos.size() ? &kOpInfos[index] : nullptr;
}
