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
// Plans are cached per stream (LaunchContext::gemmPlans): the descriptor,
// the three layouts and the algorithm the heuristic chose, by everything
// that went into them, so a repeated shape costs one cublasLtMatmul call.
// A plan is what the uncached code built on every call, so F32 results do
// not change. Caching also pins the algorithm: the heuristic is not promised
// to choose the same one each time it is asked, but a cached plan always
// runs the same kernel, so repeated runs of a shape on a stream are
// reproducible bit for bit.
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cuda/kernels/DenseKernels.h"

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <utility>

namespace flexmoe::cuda {

namespace {

template <typename Handle, cublasStatus_t (*Destroy)(Handle)> struct LtHandle {
  Handle handle = nullptr;
  LtHandle() = default;
  LtHandle(const LtHandle &) = delete;
  LtHandle &operator=(const LtHandle &) = delete;
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

/// Everything a plan is made from: the shape, the epilogue, the compute
/// precision and the alignments the heuristic is told (of the operands, and
/// of the bias, whose pointer the heuristic reads for its alignment:
/// cublasLt.h, CUBLASLT_MATMUL_DESC_BIAS_POINTER). Two calls with equal keys
/// can share a descriptor, layouts and algorithm; only the pointers differ.
struct GemmPlanKey {
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t batch = 1;
  int64_t strideA = 0, strideB = 0, strideC = 0;
  bool transA = false, transB = false;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  device::MathPrecision precision = device::MathPrecision::F32;
  uint32_t alignA = 0, alignB = 0, alignC = 0, alignBias = 0;

  // Defaulted: a field added above takes part without being listed here.
  bool operator==(const GemmPlanKey &) const = default;
};

GemmPlanKey planKey(const GemmShape &shape, const float *a, const float *b,
                    const float *bias, const float *c,
                    device::MathPrecision precision) {
  GemmPlanKey key;
  key.m = shape.m;
  key.n = shape.n;
  key.k = shape.k;
  key.lda = shape.lda;
  key.ldb = shape.ldb;
  key.ldc = shape.ldc;
  key.batch = shape.batch;
  key.strideA = shape.strideA;
  key.strideB = shape.strideB;
  key.strideC = shape.strideC;
  key.transA = shape.transA;
  key.transB = shape.transB;
  key.epilogue = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  key.precision = precision;
  key.alignA = alignmentOf(a, shape.batch, shape.strideA);
  key.alignB = alignmentOf(b, shape.batch, shape.strideB);
  key.alignC = alignmentOf(c, shape.batch, shape.strideC);
  // The bias is one vector shared by every batch (batch stride 0).
  key.alignBias = bias ? alignmentOf(bias, 1, 0) : 0;
  return key;
}

struct GemmPlanKeyHash {
  size_t operator()(const GemmPlanKey &key) const {
    uint64_t hash = 0xcbf29ce484222325ull;
    auto mix = [&hash](uint64_t value) {
      hash ^= value + 0x9e3779b97f4a7c15ull + (hash << 6) + (hash >> 2);
    };
    for (int64_t value : {key.m, key.n, key.k, key.lda, key.ldb, key.ldc,
                          key.batch, key.strideA, key.strideB, key.strideC})
      mix(static_cast<uint64_t>(value));
    mix((uint64_t(key.transA) << 1) | uint64_t(key.transB));
    mix(static_cast<uint64_t>(key.epilogue));
    mix(static_cast<uint64_t>(key.precision));
    mix((uint64_t(key.alignA) << 32) | key.alignB);
    mix((uint64_t(key.alignC) << 32) | key.alignBias);
    return static_cast<size_t>(hash);
  }
};

/// What cublasLtMatmul needs besides the pointers. cuBLASLt's A and B are
/// our b and a (the transposition trick); C and D share one layout.
struct GemmPlan {
  MatmulDesc desc;
  Layout layoutA, layoutB, layoutC;
  cublasLtMatmulAlgo_t algo = {};
};

/// Builds the plan of `key`: the descriptor (with `bias` set on it, which the
/// heuristic reads for its alignment), the layouts, and the heuristic's
/// first algorithm for them within the context's workspace.
StatusOr<std::unique_ptr<GemmPlan>> makePlan(const GemmPlanKey &key,
                                             const float *bias,
                                             const LaunchContext &context) {
  auto plan = std::make_unique<GemmPlan>();
  // Column-major view: C'(n × m) = op'(B)(n × k) · op'(A)(k × m).
  const bool bf16 = key.precision == device::MathPrecision::BF16;
  FLEXMOE_LT(cublasLtMatmulDescCreate(&plan->desc.handle,
                                      bf16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                                           : CUBLAS_COMPUTE_32F,
                                      CUDA_R_32F),
             "cublasLtMatmulDescCreate");
  cublasOperation_t opA = key.transB ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t opB = key.transA ? CUBLAS_OP_T : CUBLAS_OP_N;
  FLEXMOE_LT(cublasLtMatmulDescSetAttribute(plan->desc.handle,
                                            CUBLASLT_MATMUL_DESC_TRANSA, &opA,
                                            sizeof(opA)),
             "cublasLtMatmulDescSetAttribute (transa)");
  FLEXMOE_LT(cublasLtMatmulDescSetAttribute(plan->desc.handle,
                                            CUBLASLT_MATMUL_DESC_TRANSB, &opB,
                                            sizeof(opB)),
             "cublasLtMatmulDescSetAttribute (transb)");
  if (key.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    cublasLtEpilogue_t epilogue = key.epilogue;
    FLEXMOE_LT(cublasLtMatmulDescSetAttribute(plan->desc.handle,
                                              CUBLASLT_MATMUL_DESC_EPILOGUE,
                                              &epilogue, sizeof(epilogue)),
               "cublasLtMatmulDescSetAttribute (epilogue)");
    FLEXMOE_LT(cublasLtMatmulDescSetAttribute(plan->desc.handle,
                                              CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                              &bias, sizeof(bias)),
               "cublasLtMatmulDescSetAttribute (bias)");
  }
  // The stored (column-major) shapes of the swapped operands.
  if (Status s = makeLayout(plan->layoutA, key.transB ? key.k : key.n,
                            key.transB ? key.n : key.k, key.ldb, key.batch,
                            key.strideB);
      !s.isOk())
    return s;
  if (Status s = makeLayout(plan->layoutB, key.transA ? key.m : key.k,
                            key.transA ? key.k : key.m, key.lda, key.batch,
                            key.strideA);
      !s.isOk())
    return s;
  if (Status s = makeLayout(plan->layoutC, key.n, key.m, key.ldc, key.batch,
                            key.strideC);
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
      {{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.alignB},
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.alignA},
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.alignC},
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.alignC}};
  for (const auto &[attribute, bytes] : alignments)
    FLEXMOE_LT(cublasLtMatmulPreferenceSetAttribute(
                   preference.handle, attribute, &bytes, sizeof(bytes)),
               "cublasLtMatmulPreferenceSetAttribute (alignment)");
  cublasLtMatmulHeuristicResult_t result = {};
  int found = 0;
  FLEXMOE_LT(cublasLtMatmulAlgoGetHeuristic(
                 context.lt, plan->desc.handle, plan->layoutA.handle,
                 plan->layoutB.handle, plan->layoutC.handle,
                 plan->layoutC.handle, preference.handle, 1, &result, &found),
             "cublasLtMatmulAlgoGetHeuristic");
  if (found == 0)
    return errorf("cuBLASLt has no algorithm for a ", key.m, "x", key.k, " by ",
                  key.k, "x", key.n, " ", bf16 ? "fp32 (bf16 compute)" : "fp32",
                  " matmul");
  plan->algo = result.algo;
  return plan;
}

} // namespace

/// The plans of one stream (LaunchContext::gemmPlans). Bounded: when full it
/// is emptied, since a model's GEMM shapes are few and repeat every step.
struct GemmPlanCache {
  static constexpr size_t kCapacity = 256;

  /// What every plan here was made for (the heuristic saw this handle and
  /// workspace size; the bias pointer on a descriptor is this stream's).
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  size_t workspaceBytes = 0;
  std::unordered_map<GemmPlanKey, std::unique_ptr<GemmPlan>, GemmPlanKeyHash>
      plans;

  // Emptying the map destroys every plan's descriptor and layouts. They are
  // host objects no enqueued matmul refers to once cublasLtMatmul returns
  // (the uncached code destroyed them right after the call), and they do
  // not depend on the handle, which the stream may destroy first.
  ~GemmPlanCache() = default;
};

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
  std::shared_ptr<GemmPlanCache> &cache = context.gemmPlans;
  if (!cache || cache->stream != context.stream || cache->lt != context.lt ||
      cache->workspaceBytes != context.workspaceBytes) {
    // A context copied for another stream gets a cache of its own here.
    cache = std::make_shared<GemmPlanCache>();
    cache->stream = context.stream;
    cache->lt = context.lt;
    cache->workspaceBytes = context.workspaceBytes;
  }
  const GemmPlanKey key = planKey(shape, a, b, bias, c, context.precision);
  GemmPlan *plan = nullptr;
  if (auto found = cache->plans.find(key); found != cache->plans.end()) {
    plan = found->second.get();
    // Same alignment as the bias the plan's algorithm was chosen for (the
    // key); a host attribute read when cublasLtMatmul enqueues the kernel.
    if (bias) {
      FLEXMOE_LT(cublasLtMatmulDescSetAttribute(
                     plan->desc.handle, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                     &bias, sizeof(bias)),
                 "cublasLtMatmulDescSetAttribute (bias)");
    }
  } else {
    StatusOr<std::unique_ptr<GemmPlan>> made = makePlan(key, bias, context);
    if (!made)
      return made.status();
    if (cache->plans.size() >= GemmPlanCache::kCapacity)
      cache->plans.clear();
    plan = cache->plans.emplace(key, std::move(*made)).first->second.get();
  }
  const float alpha = 1.0f, beta = 0.0f;
  FLEXMOE_LT(
      cublasLtMatmul(context.lt, plan->desc.handle, &alpha, b,
                     plan->layoutA.handle, a, plan->layoutB.handle, &beta, c,
                     plan->layoutC.handle, c, plan->layoutC.handle, &plan->algo,
                     context.workspace, context.workspaceBytes, context.stream),
      "cublasLtMatmul");
  return Status::ok();
}

#undef FLEXMOE_LT

} // namespace flexmoe::cuda
