//===- DenseLaunch.cpp - the dense ops of a KernelCall on a CUDA stream ---===//
//
// Reads each nn op's operands and attributes as CpuDevice.cpp does, checks
// on the host what the CPU kernels check (shapes, axes, rates, steps), and
// enqueues the kernels of kernels/Dense*.cu or a cuBLASLt GEMM. Data-
// dependent checks (ids and labels in range) cannot be made without a host
// round trip: out-of-range ids read zeros and out-of-range labels count as
// ignored (docs/cuda-backend.md).
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cuda/CudaContext.h"
#include "runtime/backends/cuda/kernels/DenseKernels.h"
#include "runtime/support/Shape.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

using namespace flexmoe;
using namespace flexmoe::cuda;
using device::KernelCall;
using device::Operand;

namespace {

using Shape = std::span<const int64_t>;

int64_t dimFromEnd(const Operand &operand, size_t fromEnd) {
  return operand.shape[operand.shape.size() - fromEnd];
}

template <typename V> std::span<const int64_t> spanOf(const V *vector) {
  if (!vector)
    return {};
  return {vector->data(), vector->size()};
}

StatusOr<int64_t> normalizeDim(int64_t dim, int64_t rank, const char *what) {
  if (dim < -rank || dim >= rank)
    return errorf(what, " ", dim, " is out of range for a tensor of rank ",
                  rank);
  return dim < 0 ? dim + rank : dim;
}

Status checkRank(size_t rank) {
  if (rank > static_cast<size_t>(kMaxRank))
    return errorf("rank ", rank, " exceeds the CUDA kernels' ", kMaxRank);
  return Status::ok();
}

/// Rank-0 tensors become rank 1 of size 1 (one element either way).
Dims dimsOf(Shape sizes, Shape strides) {
  Dims dims;
  dims.rank = std::max<int>(1, static_cast<int>(sizes.size()));
  dims.size[0] = 1;
  for (size_t d = 0; d < sizes.size(); ++d) {
    dims.size[d] = sizes[d];
    dims.stride[d] = strides[d];
  }
  return dims;
}

Status binary(bool multiply, const KernelCall &call, cudaStream_t stream) {
  const Operand &lhs = call.inputs[0], &rhs = call.inputs[1];
  const size_t rank = std::max(lhs.shape.size(), rhs.shape.size());
  std::vector<int64_t> out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t l =
        i < lhs.shape.size() ? lhs.shape[lhs.shape.size() - 1 - i] : 1;
    const int64_t r =
        i < rhs.shape.size() ? rhs.shape[rhs.shape.size() - 1 - i] : 1;
    if (l != r && l != 1 && r != 1)
      return errorf("shapes ", shapeString(lhs.shape), " and ",
                    shapeString(rhs.shape), " do not broadcast");
    out[rank - 1 - i] = l == 1 ? r : l;
  }
  if (Status s = checkRank(rank); !s.isOk())
    return s;
  auto broadcastStrides = [&](Shape shape) {
    std::vector<int64_t> own = stridesOf(shape), strides(rank, 0);
    const size_t offset = rank - shape.size();
    for (size_t d = 0; d < shape.size(); ++d)
      strides[offset + d] = shape[d] == 1 ? 0 : own[d];
    return strides;
  };
  std::vector<int64_t> ls = broadcastStrides(lhs.shape),
                       rs = broadcastStrides(rhs.shape);
  std::vector<int64_t> outStrides = stridesOf(out);
  return binaryKernel(multiply, lhs.as<float>(), dimsOf(out, ls),
                      rhs.as<float>(), dimsOf(out, rs), dimsOf(out, outStrides),
                      call.outputs[0].as<float>(), stream);
}

Status reduceSum(const KernelCall &call, std::span<const int64_t> dims,
                 cudaStream_t stream) {
  Shape shape = call.inputs[0].shape;
  const int64_t rank = static_cast<int64_t>(shape.size());
  if (Status s = checkRank(shape.size()); !s.isOk())
    return s;
  std::vector<bool> reduced(rank, false);
  for (int64_t dim : dims) {
    StatusOr<int64_t> d = normalizeDim(dim, rank, "reduce_sum dim");
    if (!d)
      return d.status();
    if (reduced[*d])
      return errorf("reduce_sum dim ", dim, " is listed twice");
    reduced[*d] = true;
  }
  const std::vector<int64_t> strides = stridesOf(shape);
  std::vector<int64_t> keptSizes, keptStrides, redSizes, redStrides;
  for (int64_t d = 0; d < rank; ++d) {
    (reduced[d] ? redSizes : keptSizes).push_back(shape[d]);
    (reduced[d] ? redStrides : keptStrides).push_back(strides[d]);
  }
  return reduceSumKernel(
      call.inputs[0].as<float>(), dimsOf(keptSizes, keptStrides),
      dimsOf(redSizes, redStrides), call.outputs[0].as<float>(), stream);
}

Status transpose(const KernelCall &call, std::span<const int64_t> permutation,
                 cudaStream_t stream) {
  Shape shape = call.inputs[0].shape;
  const int64_t rank = static_cast<int64_t>(shape.size());
  if (static_cast<int64_t>(permutation.size()) != rank)
    return errorf("permutation of ", permutation.size(),
                  " entries for a tensor of rank ", rank);
  if (Status s = checkRank(shape.size()); !s.isOk())
    return s;
  std::vector<bool> seen(rank, false);
  for (int64_t p : permutation) {
    if (p < 0 || p >= rank || seen[p])
      return errorf("permutation entry ", p, " is out of range or repeated");
    seen[p] = true;
  }
  const std::vector<int64_t> inStrides = stridesOf(shape);
  std::vector<int64_t> outShape(rank), strides(rank);
  for (int64_t d = 0; d < rank; ++d) {
    outShape[d] = shape[permutation[d]];
    strides[d] = inStrides[permutation[d]];
  }
  Dims gather = dimsOf(outShape, strides);
  if (call.inputs[0].elementType == fb::ElementType::I32)
    return gatherKernel(call.inputs[0].as<int32_t>(), gather,
                        call.outputs[0].as<int32_t>(), stream);
  return gatherKernel(call.inputs[0].as<float>(), gather,
                      call.outputs[0].as<float>(), stream);
}

Status roll(const KernelCall &call, std::span<const int64_t> shifts,
            std::span<const int64_t> dims, cudaStream_t stream) {
  Shape shape = call.inputs[0].shape;
  const int64_t rank = static_cast<int64_t>(shape.size());
  if (shifts.size() != dims.size())
    return errorf("roll has ", shifts.size(), " shifts but ", dims.size(),
                  " dims");
  if (Status s = checkRank(shape.size()); !s.isOk())
    return s;
  std::vector<int64_t> shift(rank, 0);
  for (size_t i = 0; i < dims.size(); ++i) {
    StatusOr<int64_t> d = normalizeDim(dims[i], rank, "roll dim");
    if (!d)
      return d.status();
    shift[*d] += shifts[i];
  }
  for (int64_t d = 0; d < rank; ++d)
    if (shape[d] > 0)
      shift[d] = ((shift[d] % shape[d]) + shape[d]) % shape[d];
  const std::vector<int64_t> strides = stridesOf(shape);
  Dims shapeDims = dimsOf(shape, strides);
  Dims shiftDims = dimsOf(shift, strides);
  if (call.inputs[0].elementType == fb::ElementType::I32)
    return rollKernel(call.inputs[0].as<int32_t>(), shapeDims, shiftDims,
                      call.outputs[0].as<int32_t>(), stream);
  return rollKernel(call.inputs[0].as<float>(), shapeDims, shiftDims,
                    call.outputs[0].as<float>(), stream);
}

StatusOr<std::pair<int64_t, std::array<int64_t, 3>>> splitAtAxis(Shape shape,
                                                                 int64_t axis) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  StatusOr<int64_t> a = normalizeDim(axis, rank, "axis");
  if (!a)
    return a.status();
  std::array<int64_t, 3> split = {1, 1, 1};
  for (int64_t d = 0; d < rank; ++d)
    split[d < *a ? 0 : (d == *a ? 1 : 2)] *= shape[d];
  return std::make_pair(*a, split);
}

Status copyBytes(const Operand &in, const Operand &out, cudaStream_t stream) {
  if (in.numBytes() != out.numBytes())
    return errorf("copies ", in.numBytes(), " bytes into ", out.numBytes());
  if (in.data == out.data || in.numBytes() == 0)
    return Status::ok();
  return cudaStatus(cudaMemcpyAsync(out.data, in.data, in.numBytes(),
                                    cudaMemcpyDeviceToDevice, stream),
                    "cudaMemcpyAsync");
}

#define FLEXMOE_ATTRS(TYPE)                                                    \
  const fb::TYPE *attrs = ins->attrs_as_##TYPE();                              \
  if (!attrs)                                                                  \
    return Status::error("missing " #TYPE);

} // namespace

Status flexmoe::cuda::launchDense(const KernelCall &call,
                                  LaunchContext &context) {
  const fb::Instruction *ins = call.instruction;
  const std::vector<Operand> &in = call.inputs;
  const std::vector<Operand> &out = call.outputs;
  cudaStream_t stream = context.stream;
  switch (ins->opcode()) {
  case fb::OpCode::Fill: {
    FLEXMOE_ATTRS(FillAttrs);
    return fillKernel(out[0].as<float>(), out[0].numElements(),
                      static_cast<float>(
                          static_cast<double>(attrs->value() * call.fillScale)),
                      stream);
  }
  case fb::OpCode::Reshape:
  case fb::OpCode::Copy:
    return copyBytes(in[0], out[0], stream);
  case fb::OpCode::Embedding:
    return embeddingKernel(in[0].as<int32_t>(), in[0].numElements(),
                           in[1].as<float>(), in[1].shape[0], in[1].shape[1],
                           out[0].as<float>(), stream);
  case fb::OpCode::EmbeddingGrad: {
    FLEXMOE_ATTRS(EmbeddingGradAttrs);
    if (out[0].numElements() != attrs->vocab_size() * dimFromEnd(out[0], 1))
      return errorf("the gradient table has ", out[0].numElements(),
                    " elements, not vocab_size ", attrs->vocab_size(), " x ",
                    dimFromEnd(out[0], 1));
    return embeddingGradKernel(in[0].as<int32_t>(), in[0].numElements(),
                               in[1].as<float>(), attrs->vocab_size(),
                               dimFromEnd(out[0], 1), out[0].as<float>(),
                               context);
  }
  case fb::OpCode::Linear: {
    int64_t k = in[1].shape[0], n = in[1].shape[1];
    GemmShape shape;
    shape.m = k == 0 ? 0 : in[0].numElements() / k;
    shape.n = n;
    shape.k = k;
    shape.lda = k;
    shape.ldb = n;
    shape.ldc = n;
    return gemm(shape, in[0].as<float>(), in[1].as<float>(),
                in.size() > 2 ? in[2].as<float>() : nullptr, out[0].as<float>(),
                context);
  }
  case fb::OpCode::LinearGrad: {
    int64_t k = in[1].shape[0], n = in[1].shape[1];
    int64_t m = k == 0 ? 0 : in[0].numElements() / k;
    // dx = dy · wᵀ (m × k), dw = xᵀ · dy (k × n).
    GemmShape dx{false, true, m, k, n, n, n, k};
    if (Status s = gemm(dx, in[2].as<float>(), in[1].as<float>(), nullptr,
                        out[0].as<float>(), context);
        !s.isOk())
      return s;
    GemmShape dw{true, false, k, n, m, k, n, n};
    return gemm(dw, in[0].as<float>(), in[2].as<float>(), nullptr,
                out[1].as<float>(), context);
  }
  case fb::OpCode::Matmul: {
    FLEXMOE_ATTRS(MatmulAttrs);
    const Operand &lhs = in[0], &rhs = in[1];
    if (lhs.shape.size() < 2 || rhs.shape.size() < 2)
      return Status::error("matmul operands must have rank >= 2");
    int64_t rows = dimFromEnd(lhs, 2), cols = dimFromEnd(lhs, 1);
    int64_t batch = rows * cols == 0 ? 0 : lhs.numElements() / (rows * cols);
    GemmShape shape;
    shape.transA = attrs->transpose_lhs();
    shape.transB = attrs->transpose_rhs();
    shape.m = shape.transA ? cols : rows;
    shape.k = shape.transA ? rows : cols;
    shape.n = shape.transB ? dimFromEnd(rhs, 2) : dimFromEnd(rhs, 1);
    shape.lda = shape.transA ? shape.m : shape.k;
    shape.ldb = shape.transB ? shape.k : shape.n;
    shape.ldc = shape.n;
    const bool rhsBatched = rhs.shape.size() > 2;
    if (!rhsBatched && !shape.transA) {
      // A broadcast rhs against a row-major lhs is one big GEMM.
      shape.m *= batch;
    } else {
      shape.batch = batch;
      shape.strideA = shape.m * shape.k;
      shape.strideB = rhsBatched ? shape.k * shape.n : 0;
      shape.strideC = shape.m * shape.n;
    }
    return gemm(shape, lhs.as<float>(), rhs.as<float>(), nullptr,
                out[0].as<float>(), context);
  }
  case fb::OpCode::Add:
  case fb::OpCode::Mul:
    return binary(ins->opcode() == fb::OpCode::Mul, call, stream);
  case fb::OpCode::Scale: {
    FLEXMOE_ATTRS(ScaleAttrs);
    return scaleKernel(in[0].as<float>(), in[0].numElements(),
                       static_cast<float>(static_cast<double>(attrs->factor())),
                       out[0].as<float>(), stream);
  }
  case fb::OpCode::ReduceSum: {
    FLEXMOE_ATTRS(ReduceSumAttrs);
    return reduceSum(call, spanOf(attrs->dims()), stream);
  }
  case fb::OpCode::Gelu:
  case fb::OpCode::GeluGrad: {
    FLEXMOE_ATTRS(GeluAttrs);
    const bool tanhApproximation =
        attrs->approximate() == fb::GeluApproximation::Tanh;
    if (ins->opcode() == fb::OpCode::Gelu)
      return geluKernel(in[0].as<float>(), in[0].numElements(),
                        tanhApproximation, out[0].as<float>(), stream);
    return geluGradKernel(in[0].as<float>(), in[1].as<float>(),
                          in[0].numElements(), tanhApproximation,
                          out[0].as<float>(), stream);
  }
  case fb::OpCode::LayerNorm: {
    FLEXMOE_ATTRS(LayerNormAttrs);
    int64_t dim = in[1].shape[0];
    return layerNormKernel(in[0].as<float>(), in[1].as<float>(),
                           in[2].as<float>(),
                           dim == 0 ? 0 : in[0].numElements() / dim, dim,
                           attrs->epsilon(), out[0].as<float>(), stream);
  }
  case fb::OpCode::LayerNormGrad: {
    FLEXMOE_ATTRS(LayerNormAttrs);
    int64_t dim = in[1].shape[0];
    return layerNormGradKernel(
        in[0].as<float>(), in[1].as<float>(), in[2].as<float>(),
        dim == 0 ? 0 : in[0].numElements() / dim, dim, attrs->epsilon(),
        out[0].as<float>(), out[1].as<float>(), out[2].as<float>(), context);
  }
  case fb::OpCode::Softmax:
  case fb::OpCode::SoftmaxGrad: {
    FLEXMOE_ATTRS(SoftmaxAttrs);
    auto split = splitAtAxis(in[0].shape, attrs->axis());
    if (!split)
      return split.status();
    auto [outer, axis, inner] = split->second;
    if (ins->opcode() == fb::OpCode::Softmax)
      return softmaxKernel(in[0].as<float>(), outer, axis, inner,
                           out[0].as<float>(), stream);
    return softmaxGradKernel(in[0].as<float>(), in[1].as<float>(), outer, axis,
                             inner, out[0].as<float>(), stream);
  }
  case fb::OpCode::CrossEntropy: {
    FLEXMOE_ATTRS(CrossEntropyAttrs);
    return crossEntropyKernel(in[0].as<float>(), in[1].as<int32_t>(),
                              in[1].numElements(), dimFromEnd(in[0], 1),
                              attrs->ignore_index(), out[0].as<float>(),
                              context);
  }
  case fb::OpCode::CrossEntropyGrad: {
    FLEXMOE_ATTRS(CrossEntropyAttrs);
    return crossEntropyGradKernel(in[0].as<float>(), in[1].as<int32_t>(),
                                  in[1].numElements(), dimFromEnd(in[0], 1),
                                  attrs->ignore_index(), in[2].as<float>(),
                                  out[0].as<float>(), context);
  }
  case fb::OpCode::AdamW: {
    FLEXMOE_ATTRS(AdamWAttrs);
    const double lr = call.lr > 0 ? call.lr : attrs->lr();
    const double beta1 = attrs->beta1(), beta2 = attrs->beta2();
    if (call.step < 1)
      return errorf("adamw step ", call.step, " must count from 1");
    if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1))
      return errorf("adamw betas (", beta1, ", ", beta2,
                    ") must lie in [0, 1)");
    const double step = static_cast<double>(call.step);
    const double decay = 1.0 - lr * attrs->weight_decay();
    const double bc1 = 1.0 - std::pow(beta1, step);
    const double bc2Sqrt = std::sqrt(1.0 - std::pow(beta2, step));
    return adamwKernel(in[0].as<float>(), in[1].as<float>(), in[2].as<float>(),
                       in[3].as<float>(), in[0].numElements(), lr / bc1, decay,
                       beta1, beta2, attrs->epsilon(), bc2Sqrt, call.gradScale,
                       out[0].as<float>(), out[1].as<float>(),
                       out[2].as<float>(), stream);
  }
  case fb::OpCode::Transpose: {
    FLEXMOE_ATTRS(TransposeAttrs);
    return transpose(call, spanOf(attrs->permutation()), stream);
  }
  case fb::OpCode::Roll: {
    FLEXMOE_ATTRS(RollAttrs);
    return roll(call, spanOf(attrs->shifts()), spanOf(attrs->dims()), stream);
  }
  case fb::OpCode::Dropout: {
    FLEXMOE_ATTRS(DropoutAttrs);
    const double rate = attrs->rate();
    if (!call.training)
      return copyBytes(in[0], out[0], stream);
    if (!(rate >= 0 && rate < 1))
      return errorf("dropout rate ", rate, " is outside [0, 1)");
    if (rate == 0)
      return copyBytes(in[0], out[0], stream);
    // As CpuDevice: shard 0 keeps the compiled seed.
    uint64_t seed = static_cast<uint64_t>(attrs->seed()) ^
                    (static_cast<uint64_t>(call.shard) * 0x9e3779b97f4a7c15ULL);
    return dropoutKernel(in[0].as<float>(), in[0].numElements(), rate, seed,
                         static_cast<uint64_t>(call.step), out[0].as<float>(),
                         stream);
  }
  case fb::OpCode::Attention:
  case fb::OpCode::AttentionGrad: {
    FLEXMOE_ATTRS(AttentionAttrs);
    const bool forward = ins->opcode() == fb::OpCode::Attention;
    if (in.size() != (forward ? 3u : 4u) || out.size() != (forward ? 1u : 3u))
      return errorf(forward ? "attention" : "attention_grad", " takes ",
                    forward ? 3 : 4, " operands and gives ", forward ? 1 : 3,
                    ", not ", in.size(), " and ", out.size());
    if (in[0].shape.size() != 3)
      return Status::error("attention operands must be [B, S, D]");
    // The kernels read every operand with q's shape.
    for (const std::vector<Operand> *list : {&in, &out})
      for (const Operand &operand : *list)
        if (!std::ranges::equal(operand.shape, in[0].shape))
          return errorf("attention operand '", operand.name, "' is ",
                        shapeString(operand.shape), ", not q's ",
                        shapeString(in[0].shape));
    AttentionConfig config;
    config.batch = in[0].shape[0];
    config.seq = in[0].shape[1];
    config.dim = in[0].shape[2];
    config.numHeads = attrs->num_heads();
    config.causal = attrs->causal();
    config.window = attrs->window();
    if (forward)
      return attentionKernel(in[0].as<float>(), in[1].as<float>(),
                             in[2].as<float>(), config, out[0].as<float>(),
                             stream);
    return attentionGradKernel(in[0].as<float>(), in[1].as<float>(),
                               in[2].as<float>(), in[3].as<float>(), config,
                               out[0].as<float>(), out[1].as<float>(),
                               out[2].as<float>(), context);
  }
  default:
    break;
  }
  return errorf("opcode ", fb::EnumNameOpCode(ins->opcode()),
                " is not a dense CUDA op");
}
