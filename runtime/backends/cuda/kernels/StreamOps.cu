//===- StreamOps.cu - copies, sums and norms between kernels --------------===//
//
// The Stream operations of Device.h that are not program instructions: the
// executor's dispatch reorder (copySegments), gradient accumulation
// (addScaled) and the global gradient norm (sumOfSquares). Tables of
// segments and ranges are copied to stream-ordered scratch with
// cudaMemcpyAsync from pageable host memory, which stages the bytes before
// it returns, so the caller's vectors may go away at once.
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cuda/CudaContext.h"
#include "runtime/backends/cuda/kernels/DenseCommon.cuh"

#include <vector>

namespace flexmoe::cuda {
namespace {

/// Up to this many segments are plain cudaMemcpyAsync calls; more become
/// one kernel (a dispatch reorder has experts × ranks segments).
constexpr size_t kMemcpySegments = 8;
/// Grid rows per launch (gridDim.y's limit).
constexpr size_t kMaxGridY = 65535;
/// sumOfSquares splits ranges into chunks of this many floats, one block
/// each, so that one large gradient uses many SMs.
constexpr int64_t kChunkFloats = 1 << 18;

struct DeviceSegment {
  const std::byte *src;
  std::byte *dst;
  size_t bytes;
};

__global__ void copySegmentsKernel(const DeviceSegment *segments) {
  const DeviceSegment segment = segments[blockIdx.y];
  const uintptr_t alignment = reinterpret_cast<uintptr_t>(segment.src) |
                              reinterpret_cast<uintptr_t>(segment.dst) |
                              segment.bytes;
  const size_t first =
                   blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x,
               stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  if (alignment % 16 == 0) {
    const int4 *src = reinterpret_cast<const int4 *>(segment.src);
    int4 *dst = reinterpret_cast<int4 *>(segment.dst);
    for (size_t i = first; i < segment.bytes / 16; i += stride)
      dst[i] = src[i];
  } else if (alignment % 4 == 0) {
    const uint32_t *src = reinterpret_cast<const uint32_t *>(segment.src);
    uint32_t *dst = reinterpret_cast<uint32_t *>(segment.dst);
    for (size_t i = first; i < segment.bytes / 4; i += stride)
      dst[i] = src[i];
  } else {
    for (size_t i = first; i < segment.bytes; i += stride)
      segment.dst[i] = segment.src[i];
  }
}

__global__ void addScaledKernel(float *dst, const float *a, const float *b,
                                int64_t count, float scale) {
  FLEXMOE_GRID_STRIDE(i, count) { dst[i] = (a[i] + b[i]) * scale; }
}

struct Chunk {
  const float *data;
  int64_t count;
};

/// partial[c] = the sum of squares of chunk c (blockIdx.y + offset), in
/// double, in a fixed order: the same bits on every run.
__global__ void chunkSquaresKernel(const Chunk *chunks, double *partial) {
  const Chunk chunk = chunks[blockIdx.x];
  double sum = 0;
  for (int64_t i = threadIdx.x; i < chunk.count; i += blockDim.x) {
    double v = chunk.data[i];
    sum += v * v;
  }
  sum = blockSum(sum);
  if (threadIdx.x == 0)
    partial[blockIdx.x] = sum;
}

/// sums[r] = partial[first[r]] + ... + partial[first[r + 1] - 1], in order.
__global__ void rangeSumsKernel(const double *partial, const int64_t *first,
                                int64_t numRanges, double *sums) {
  FLEXMOE_GRID_STRIDE(r, numRanges) {
    double sum = 0;
    for (int64_t c = first[r]; c < first[r + 1]; ++c)
      sum += partial[c];
    sums[r] = sum;
  }
}

/// A device copy of `values` in the launch's scratch.
template <typename T>
StatusOr<T *> upload(const std::vector<T> &values, LaunchContext &context,
                     const char *what) {
  StatusOr<void *> memory = context.scratch(values.size() * sizeof(T));
  if (!memory)
    return memory.status();
  FLEXMOE_RETURN_IF_ERROR(cudaStatus(
      cudaMemcpyAsync(*memory, values.data(), values.size() * sizeof(T),
                      cudaMemcpyHostToDevice, context.stream),
      what));
  return static_cast<T *>(*memory);
}

} // namespace

Status launchCopySegments(std::span<const device::CopySegment> segments,
                          LaunchContext &context) {
  std::vector<DeviceSegment> table;
  size_t largest = 0;
  for (const device::CopySegment &segment : segments)
    if (segment.bytes > 0 && segment.src != segment.dst) {
      table.push_back({segment.src, segment.dst, segment.bytes});
      largest = std::max(largest, segment.bytes);
    }
  if (table.size() <= kMemcpySegments) {
    for (const DeviceSegment &segment : table)
      FLEXMOE_RETURN_IF_ERROR(
          cudaStatus(cudaMemcpyAsync(segment.dst, segment.src, segment.bytes,
                                     cudaMemcpyDeviceToDevice, context.stream),
                     "cudaMemcpyAsync (segment)"));
    return Status::ok();
  }
  // A few blocks per segment: enough for the largest, bounded for the grid.
  unsigned blocksPerSegment = static_cast<unsigned>(
      std::clamp<size_t>((largest / 16 + kThreads - 1) / kThreads, 1, 64));
  for (size_t start = 0; start < table.size(); start += kMaxGridY) {
    size_t count = std::min(kMaxGridY, table.size() - start);
    std::vector<DeviceSegment> part(table.begin() + start,
                                    table.begin() + start + count);
    StatusOr<DeviceSegment *> onDevice =
        upload(part, context, "cudaMemcpyAsync (segment table)");
    if (!onDevice)
      return onDevice.status();
    copySegmentsKernel<<<dim3(blocksPerSegment, static_cast<unsigned>(count)),
                         kThreads, 0, context.stream>>>(*onDevice);
    FLEXMOE_RETURN_IF_ERROR(launched("copySegments"));
  }
  return Status::ok();
}

Status launchAddScaled(float *dst, const float *a, const float *b,
                       int64_t count, float scale, LaunchContext &context) {
  if (count <= 0)
    return Status::ok();
  addScaledKernel<<<gridFor(count), kThreads, 0, context.stream>>>(
      dst, a, b, count, scale);
  return launched("addScaled");
}

Status launchSumOfSquares(std::span<const device::FloatRange> ranges,
                          double *deviceSums, LaunchContext &context) {
  std::vector<Chunk> chunks;
  std::vector<int64_t> first;
  for (const device::FloatRange &range : ranges) {
    first.push_back(static_cast<int64_t>(chunks.size()));
    for (int64_t offset = 0; offset < range.count; offset += kChunkFloats)
      chunks.push_back(
          {range.data + offset, std::min(kChunkFloats, range.count - offset)});
  }
  first.push_back(static_cast<int64_t>(chunks.size()));
  int64_t numRanges = static_cast<int64_t>(ranges.size());
  StatusOr<int64_t *> firstOnDevice =
      upload(first, context, "cudaMemcpyAsync (range table)");
  if (!firstOnDevice)
    return firstOnDevice.status();
  double *partial = nullptr;
  if (!chunks.empty()) {
    StatusOr<Chunk *> chunksOnDevice =
        upload(chunks, context, "cudaMemcpyAsync (chunk table)");
    if (!chunksOnDevice)
      return chunksOnDevice.status();
    StatusOr<void *> memory = context.scratch(chunks.size() * sizeof(double));
    if (!memory)
      return memory.status();
    partial = static_cast<double *>(*memory);
    // One block per chunk; grids hold 2^31 - 1 blocks in x.
    chunkSquaresKernel<<<static_cast<unsigned>(chunks.size()), kThreads, 0,
                         context.stream>>>(*chunksOnDevice, partial);
    FLEXMOE_RETURN_IF_ERROR(launched("sumOfSquares (chunks)"));
  }
  rangeSumsKernel<<<gridFor(numRanges), kThreads, 0, context.stream>>>(
      partial, *firstOnDevice, numRanges, deviceSums);
  return launched("sumOfSquares (ranges)");
}

} // namespace flexmoe::cuda
