//===- CudaContext.h - what a CUDA kernel launch gets from the device -*- C++
//-*-//
//
// The CUDA backend (issue 6) splits like the CPU one: CudaDevice (arena,
// streams, events, copies) turns each KernelCall into a call of a kernel
// family's launcher, which reads the instruction's operands and attributes
// and enqueues CUDA kernels or cuBLASLt GEMMs on the context's stream. No
// launcher synchronises the host or reads device memory back (counts stay
// on the device); every error is a Status naming the op.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_BACKENDS_CUDA_CUDACONTEXT_H
#define FLEXMOE_RUNTIME_BACKENDS_CUDA_CUDACONTEXT_H

#include "runtime/device/Device.h"
#include "runtime/support/Status.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <memory>

namespace flexmoe::cuda {

/// cuBLASLt plans by GEMM shape (DenseGemm.cpp).
struct GemmPlanCache;

/// Everything a launcher may use. Owned by the stream the call runs on.
struct LaunchContext {
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  /// cuBLASLt's workspace for matmuls on this stream.
  void *workspace = nullptr;
  size_t workspaceBytes = 0;
  /// Stream-ordered scratch memory for this launch (valid for the work
  /// enqueued on `stream` by this launch; freed in stream order after it).
  std::function<StatusOr<void *>(size_t bytes)> scratch;
  /// Deterministic mode: no atomics whose order changes results.
  bool deterministic = false;
  /// BF16: GEMMs (cuBLASLt and the experts' grouped GEMM) round their
  /// operands to bfloat16 and accumulate in fp32 on tensor cores.
  device::MathPrecision precision = device::MathPrecision::F32;
  /// The cuBLASLt descriptors, layouts and chosen algorithms of the GEMM
  /// shapes met on this stream, made by the first gemm() that needs them. A
  /// plan's descriptor gets per-call pointers (the bias) set on it, so a
  /// cache serves one stream driven by one thread: gemm() replaces one made
  /// for another stream, handle or workspace size (a copied context).
  std::shared_ptr<GemmPlanCache> gemmPlans;
};

/// A Status for a CUDA runtime error ("<what>: <cudaGetErrorString>"), or
/// ok for cudaSuccess.
Status cudaStatus(cudaError_t error, const char *what);
/// The same for cuBLAS(Lt).
Status cublasStatus(cublasStatus_t status, const char *what);

/// True for the compute opcodes of the moe dialect (gate, aux loss,
/// dispatch, experts, combine and their gradients): launchMoe's.
bool isMoeOpcode(fb::OpCode opcode);

/// Every nn op and exec.copy, forward and backward.
Status launchDense(const device::KernelCall &call, LaunchContext &context);
/// Every moe compute op, forward and backward.
Status launchMoe(const device::KernelCall &call, LaunchContext &context);

// The Stream operations between kernels (Device.h), on `context.stream`
// (StreamOps.cu). sumOfSquares writes device doubles; the stream copies
// them to the host.
Status launchCopySegments(std::span<const device::CopySegment> segments,
                          LaunchContext &context);
Status launchAddScaled(float *dst, const float *a, const float *b,
                       int64_t count, float scale, LaunchContext &context);
Status launchSumOfSquares(std::span<const device::FloatRange> ranges,
                          double *deviceSums, LaunchContext &context);

} // namespace flexmoe::cuda

#endif // FLEXMOE_RUNTIME_BACKENDS_CUDA_CUDACONTEXT_H
