//===- DenseLayout.cu - transpose, roll, reduce_sum, embedding ------------===//

#include "runtime/backends/cuda/kernels/DenseCommon.cuh"

#include <climits>

namespace flexmoe::cuda {

namespace {

int64_t countOf(const Dims &dims) {
  int64_t n = 1;
  for (int d = 0; d < dims.rank; ++d)
    n *= dims.size[d];
  return n;
}

template <typename T>
__global__ void gatherKernelImpl(const T *x, Dims gather, int64_t n, T *out) {
  FLEXMOE_GRID_STRIDE(i, n) out[i] = x[stridedOffset(i, gather)];
}

__global__ void reduceSumKernelImpl(const float *x, Dims kept, Dims reduced,
                                    int64_t outSize, int64_t redSize,
                                    float *out) {
  FLEXMOE_GRID_STRIDE(o, outSize) {
    const int64_t base = stridedOffset(o, kept);
    double sum = 0;
    for (int64_t r = 0; r < redSize; ++r)
      sum += static_cast<double>(x[base + stridedOffset(r, reduced)]);
    out[o] = static_cast<float>(sum);
  }
}

/// shape.stride holds the input's row-major strides.
template <typename T>
__global__ void rollKernelImpl(const T *x, Dims shape, Dims shift, int64_t n,
                               T *out) {
  FLEXMOE_GRID_STRIDE(i, n) {
    int64_t rest = i, src = 0;
    for (int d = shape.rank - 1; d >= 0; --d) {
      const int64_t c = rest % shape.size[d];
      rest /= shape.size[d];
      src += ((c - shift.size[d] + shape.size[d]) % shape.size[d]) *
             shape.stride[d];
    }
    out[i] = x[src];
  }
}

__global__ void embeddingKernelImpl(const int32_t *ids, int64_t numIds,
                                    const float *table, int64_t vocab,
                                    int64_t dim, float *out) {
  FLEXMOE_GRID_STRIDE(i, numIds * dim) {
    const int64_t row = i / dim, col = i % dim;
    const int32_t id = ids[row];
    out[i] = id >= 0 && id < vocab ? table[id * dim + col] : 0.0f;
  }
}

__global__ void firstOccurrenceKernel(const int32_t *ids, int64_t numIds,
                                      int64_t vocab, int *first) {
  FLEXMOE_GRID_STRIDE(i, numIds) {
    const int32_t id = ids[i];
    if (id >= 0 && id < vocab)
      atomicMin(first + id, static_cast<int>(i));
  }
}

/// One block per id position; the block of an id's first occurrence owns
/// its table row and adds the rows of dy in id order, as the CPU does.
__global__ void embeddingGradOwnedKernel(const int32_t *ids, int64_t numIds,
                                         const float *dy, int64_t vocab,
                                         int64_t dim, const int *first,
                                         float *dtable) {
  for (int64_t i = blockIdx.x; i < numIds; i += gridDim.x) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab || first[id] != i)
      continue;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
      float acc = 0.0f;
      for (int64_t j = i; j < numIds; ++j)
        if (ids[j] == id)
          acc += dy[j * dim + c];
      dtable[id * dim + c] = acc;
    }
  }
}

__global__ void embeddingGradAtomicKernel(const int32_t *ids, int64_t numIds,
                                          const float *dy, int64_t vocab,
                                          int64_t dim, float *dtable) {
  FLEXMOE_GRID_STRIDE(i, numIds * dim) {
    const int32_t id = ids[i / dim];
    if (id >= 0 && id < vocab)
      atomicAdd(dtable + id * dim + i % dim, dy[i]);
  }
}

} // namespace

template <typename T>
Status gatherKernel(const T *x, Dims gather, T *out, cudaStream_t stream) {
  const int64_t n = countOf(gather);
  if (n == 0)
    return Status::ok();
  gatherKernelImpl<T><<<gridFor(n), kThreads, 0, stream>>>(x, gather, n, out);
  return launched("transpose kernel");
}
template Status gatherKernel<float>(const float *, Dims, float *, cudaStream_t);
template Status gatherKernel<int32_t>(const int32_t *, Dims, int32_t *,
                                      cudaStream_t);

Status reduceSumKernel(const float *x, Dims kept, Dims reduced, float *out,
                       cudaStream_t stream) {
  const int64_t outSize = countOf(kept), redSize = countOf(reduced);
  if (outSize == 0)
    return Status::ok();
  reduceSumKernelImpl<<<gridFor(outSize), kThreads, 0, stream>>>(
      x, kept, reduced, outSize, redSize, out);
  return launched("reduce_sum kernel");
}

template <typename T>
Status rollKernel(const T *x, Dims shape, Dims shift, T *out,
                  cudaStream_t stream) {
  const int64_t n = countOf(shape);
  if (n == 0)
    return Status::ok();
  rollKernelImpl<T>
      <<<gridFor(n), kThreads, 0, stream>>>(x, shape, shift, n, out);
  return launched("roll kernel");
}
template Status rollKernel<float>(const float *, Dims, Dims, float *,
                                  cudaStream_t);
template Status rollKernel<int32_t>(const int32_t *, Dims, Dims, int32_t *,
                                    cudaStream_t);

Status embeddingKernel(const int32_t *ids, int64_t numIds, const float *table,
                       int64_t vocab, int64_t dim, float *out,
                       cudaStream_t stream) {
  if (numIds * dim == 0)
    return Status::ok();
  embeddingKernelImpl<<<gridFor(numIds * dim), kThreads, 0, stream>>>(
      ids, numIds, table, vocab, dim, out);
  return launched("embedding kernel");
}

Status embeddingGradKernel(const int32_t *ids, int64_t numIds, const float *dy,
                           int64_t vocab, int64_t dim, float *dtable,
                           LaunchContext &context) {
  if (Status s =
          cudaStatus(cudaMemsetAsync(dtable, 0, vocab * dim * sizeof(float),
                                     context.stream),
                     "cudaMemsetAsync (embedding grad)");
      !s.isOk())
    return s;
  if (numIds * dim == 0)
    return Status::ok();
  if (!context.deterministic) {
    embeddingGradAtomicKernel<<<gridFor(numIds * dim), kThreads, 0,
                                context.stream>>>(ids, numIds, dy, vocab, dim,
                                                  dtable);
    return launched("embedding grad kernel");
  }
  if (numIds > INT_MAX)
    return errorf("embedding grad of ", numIds, " ids exceeds the ",
                  "deterministic kernel's 32-bit positions");
  StatusOr<void *> first = context.scratch(vocab * sizeof(int));
  if (!first)
    return first.status();
  int *firstIds = static_cast<int *>(*first);
  // 0x7f bytes: a position larger than any id's.
  if (Status s = cudaStatus(
          cudaMemsetAsync(firstIds, 0x7f, vocab * sizeof(int), context.stream),
          "cudaMemsetAsync (embedding grad owners)");
      !s.isOk())
    return s;
  firstOccurrenceKernel<<<gridFor(numIds), kThreads, 0, context.stream>>>(
      ids, numIds, vocab, firstIds);
  const unsigned blocks =
      static_cast<unsigned>(std::min<int64_t>(numIds, 65535 * 8));
  embeddingGradOwnedKernel<<<blocks, kThreads, 0, context.stream>>>(
      ids, numIds, dy, vocab, dim, firstIds, dtable);
  return launched("embedding grad kernel");
}

} // namespace flexmoe::cuda
