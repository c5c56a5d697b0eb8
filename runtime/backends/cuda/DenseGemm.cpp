//===- DenseGemm.cpp - row-major GEMMs through cuBLASLt -------------------===//
//
// cuBLASLt is column-major; a row-major C = op(A)·op(B) is the column-major
// Cᵀ = op(B)ᵀ·op(A)ᵀ, so the operands swap and no data moves. The bias
// epilogue adds one value per row of the column-major Cᵀ, i.e. per column
// of the row-major C: the Linear bias.
//
// Every matrix is fp32 in memory with an fp32 scale type. The compute type
// follows LaunchContext::precision: CUBLAS_COMPUTE_32F (F32: fp32 FMA, no
// TF32) or CUBLAS_COMPUTE_32F_FAST_16BF (BF16: cuBLASLt may round A and B to
// bfloat16 for the tensor cores, or to TF32 where it has no bf16 kernel for
// the shape, and accumulates in fp32), a combination cuBLASLt accepts for 32F
// A/B/C/D with the bias epilogue (the bias stays fp32, the type of D).
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cuda/kernels/DenseKernels.h"

#include <cstdint>
#include <memory>
#include <utility>

namespace flexmoe::cuda {

namespace {

template <typename Handle, cublasStatus_t (*Destroy)(Handle)> struct LtHandle {
  Handle handle = nullptr;
  ~LtHandle() {
    if (handle)
      Destroy(handle);
  }
};
using MatmulDesc = LtHandle<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using Layout = LtHandle<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using Preference =
    LtHandle<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

#define FLEXMOE_LT(call, what)                                                 \
  if (Status s = cublasStatus(call, what); !s.isOk())                          \
    return s;

/// A column-major rows × cols layout with leading dimension ld, batched.
Status makeLayout(Layout &layout, int64_t rows, int64_t cols, int64_t ld,
                  int64_t batch, int64_t stride) {
  FLEXMOE_LT(
      cublasLtMatrixLayoutCreate(&layout.handle, CUDA_R_32F, rows, cols, ld),
      "cublasLtMatrixLayoutCreate");
  if (batch > 1) {
    int32_t count = static_cast<int32_t>(batch);
    FLEXMOE_LT(cublasLtMatrixLayoutSetAttribute(
                   layout.handle, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                   sizeof(count)),
               "cublasLtMatrixLayoutSetAttribute (batch count)");
    FLEXMOE_LT(cublasLtMatrixLayoutSetAttribute(
                   layout.handle, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                   &stride, sizeof(stride)),
               "cublasLtMatrixLayoutSetAttribute (batch stride)");
  }
  return Status::ok();
}

/// The alignment cuBLASLt may assume for a matrix: the largest power of two
/// up to 256 bytes dividing its address and, when batched, its batch stride
/// in bytes (every batch's start). The heuristic otherwise assumes 256 and
/// may pick a kernel that the buffer's real alignment cannot serve.
uint32_t alignmentOf(const void *data, int64_t batch, int64_t stride) {
  uintptr_t bits = reinterpret_cast<uintptr_t>(data) | 256;
  if (batch > 1)
    bits |= static_cast<uintptr_t>(stride) * sizeof(float);
  return static_cast<uint32_t>(bits & (~bits + 1));
}

} // namespace

Status gemm(const GemmShape &shape, const float *a, const float *b,
            const float *bias, float *c, LaunchContext &context) {
  if (shape.m == 0 || shape.n == 0 || shape.batch == 0)
    return Status::ok();
  if (shape.k == 0) {
    // An empty sum: zeros, then the bias.
    if (shape.ldc != shape.n)
      return Status::error("gemm with k = 0 needs a dense output");
    if (Status s = fillKernel(c, shape.batch * shape.m * shape.n, 0.0f,
                              context.stream);
        !s.isOk() || !bias)
      return s;
    return Status::error("gemm with k = 0 and a bias is not supported");
  }
  // Column-major view: C'(n × m) = op'(B)(n × k) · op'(A)(k × m).
  const bool bf16 = context.precision == device::MathPrecision::BF16;
  MatmulDesc desc;
  FLEXMOE_LT(cublasLtMatmulDescCreate(&desc.handle,
                                      bf16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                                           : CUBLAS_COMPUTE_32F,
                                      CUDA_R_32F),
             "cublasLtMatmulDescCreate");
  cublasOperation_t opA = shape.transB ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t opB = shape.transA ? CUBLAS_OP_T : CUBLAS_OP_N;
  FLEXMOE_LT(cublasLtMatmulDescSetAttribute(
                 desc.handle, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof(opA)),
             "cublasLtMatmulDescSetAttribute (transa)");
  FLEXMOE_LT(cublasLtMatmulDescSetAttribute(
                 desc.handle, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof(opB)),
             "cublasLtMatmulDescSetAttribute (transb)");
  if (bias) {
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    FLEXMOE_LT(cublasLtMatmulDescSetAttribute(desc.handle,
                                              CUBLASLT_MATMUL_DESC_EPILOGUE,
                                              &epilogue, sizeof(epilogue)),
               "cublasLtMatmulDescSetAttribute (epilogue)");
    FLEXMOE_LT(cublasLtMatmulDescSetAttribute(desc.handle,
                                              CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                              &bias, sizeof(bias)),
               "cublasLtMatmulDescSetAttribute (bias)");
  }
  // The stored (column-major) shapes of the swapped operands.
  Layout layoutB, layoutA, layoutC;
  if (Status s = makeLayout(layoutB, shape.transB ? shape.k : shape.n,
                            shape.transB ? shape.n : shape.k, shape.ldb,
                            shape.batch, shape.strideB);
      !s.isOk())
    return s;
  if (Status s = makeLayout(layoutA, shape.transA ? shape.m : shape.k,
                            shape.transA ? shape.k : shape.m, shape.lda,
                            shape.batch, shape.strideA);
      !s.isOk())
    return s;
  if (Status s = makeLayout(layoutC, shape.n, shape.m, shape.ldc, shape.batch,
                            shape.strideC);
      !s.isOk())
    return s;

  Preference preference;
  FLEXMOE_LT(cublasLtMatmulPreferenceCreate(&preference.handle),
             "cublasLtMatmulPreferenceCreate");
  size_t workspace = context.workspaceBytes;
  FLEXMOE_LT(cublasLtMatmulPreferenceSetAttribute(
                 preference.handle, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                 &workspace, sizeof(workspace)),
             "cublasLtMatmulPreferenceSetAttribute (workspace)");
  // cuBLASLt's A and B are the swapped operands; C and D are both c.
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> alignments[] =
      {{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
        alignmentOf(b, shape.batch, shape.strideB)},
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        alignmentOf(a, shape.batch, shape.strideA)},
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
        alignmentOf(c, shape.batch, shape.strideC)},
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
        alignmentOf(c, shape.batch, shape.strideC)}};
  for (const auto &[attribute, bytes] : alignments)
    FLEXMOE_LT(cublasLtMatmulPreferenceSetAttribute(
                   preference.handle, attribute, &bytes, sizeof(bytes)),
               "cublasLtMatmulPreferenceSetAttribute (alignment)");
  cublasLtMatmulHeuristicResult_t result = {};
  int found = 0;
  FLEXMOE_LT(cublasLtMatmulAlgoGetHeuristic(
                 context.lt, desc.handle, layoutB.handle, layoutA.handle,
                 layoutC.handle, layoutC.handle, preference.handle, 1, &result,
                 &found),
             "cublasLtMatmulAlgoGetHeuristic");
  if (found == 0)
    return errorf("cuBLASLt has no algorithm for a ", shape.m, "x", shape.k,
                  " by ", shape.k, "x", shape.n, " ",
                  bf16 ? "fp32 (bf16 compute)" : "fp32", " matmul");
  const float alpha = 1.0f, beta = 0.0f;
  FLEXMOE_LT(cublasLtMatmul(context.lt, desc.handle, &alpha, b, layoutB.handle,
                            a, layoutA.handle, &beta, c, layoutC.handle, c,
                            layoutC.handle, &result.algo, context.workspace,
                            context.workspaceBytes, context.stream),
             "cublasLtMatmul");
  return Status::ok();
}

#undef FLEXMOE_LT

} // namespace flexmoe::cuda
