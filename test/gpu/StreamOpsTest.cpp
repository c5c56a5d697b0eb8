//===- StreamOpsTest.cpp - CudaDevice's copies, sums and norms ------------===//
//
// The Stream operations between kernels (Device.h: copySegments, zero,
// addScaled, sumOfSquares) on a CudaDevice, against plain host
// computations: few (cudaMemcpyAsync) and many (> 8, one kernel) segments,
// unaligned offsets and sizes, in-place addScaled, and sums of squares of
// empty, small and multi-chunk (> 2^18 floats) ranges.
//
//===----------------------------------------------------------------------===//

#include "GpuTestUtil.h"

#include <array>

using namespace flexmoe;
using namespace flexmoe::gpu_testing;

namespace {

/// A device with one arena of `bytes` and one stream.
struct Fixture {
  std::unique_ptr<cuda::CudaDevice> device;
  std::unique_ptr<device::Arena> arena;
  std::unique_ptr<device::Stream> stream;

  Status open(size_t bytes) {
    StatusOr<std::unique_ptr<cuda::CudaDevice>> d = cuda::CudaDevice::create();
    if (!d)
      return d.status();
    device = std::move(*d);
    StatusOr<std::unique_ptr<device::Arena>> a = device->allocateArena(bytes);
    if (!a)
      return a.status();
    arena = std::move(*a);
    StatusOr<std::unique_ptr<device::Stream>> s = device->createStream();
    if (!s)
      return s.status();
    stream = std::move(*s);
    return Status::ok();
  }
  std::byte *at(size_t offset) { return arena->base() + offset; }
};

#define FLEXMOE_ASSERT_OK(expr)                                                \
  do {                                                                         \
    ::flexmoe::Status status_ = (expr);                                        \
    ASSERT_TRUE(status_.isOk()) << status_.message();                          \
  } while (false)

/// Seeded non-zero random bytes.
std::vector<std::byte> randomBytes(size_t n, uint32_t seed) {
  std::vector<std::byte> bytes(n);
  std::vector<int32_t> values = randomInts(n, seed, 1, 256);
  for (size_t i = 0; i < n; ++i)
    bytes[i] = static_cast<std::byte>(values[i]);
  return bytes;
}

/// Copies `segments` (offsets into a source half and a destination half of
/// the arena) on the device and on the host and compares the destination
/// half byte for byte, bytes outside every segment included.
void checkCopySegments(
    const std::vector<std::array<size_t, 3>> &segments /* src, dst, bytes */,
    size_t half) {
  Fixture f;
  FLEXMOE_ASSERT_OK(f.open(2 * half));
  std::vector<std::byte> host = randomBytes(2 * half, 7);
  FLEXMOE_ASSERT_OK(f.device->copyToDevice(f.at(0), host.data(), 2 * half));
  std::vector<device::CopySegment> table;
  for (const auto &[src, dst, bytes] : segments) {
    table.push_back({f.at(src), f.at(half + dst), bytes});
    std::copy_n(host.begin() + src, bytes, host.begin() + half + dst);
  }
  FLEXMOE_ASSERT_OK(f.stream->copySegments(table));
  FLEXMOE_ASSERT_OK(f.stream->synchronize());
  std::vector<std::byte> result(2 * half);
  FLEXMOE_ASSERT_OK(f.device->copyToHost(result.data(), f.at(0), 2 * half));
  size_t differing = 0, first = 0;
  for (size_t i = 0; i < result.size(); ++i)
    if (result[i] != host[i] && differing++ == 0)
      first = i;
  EXPECT_EQ(differing, 0u) << "first differing byte at " << first;
}

} // namespace

TEST(CudaStreamOps, CopySegmentsFewAndUnaligned) {
  FLEXMOE_REQUIRE_GPU();
  // ≤ 8 segments: cudaMemcpyAsync each; odd offsets and sizes and an empty
  // segment; destinations do not overlap.
  checkCopySegments({{0, 0, 1000},
                     {1001, 3001, 3},
                     {17, 1203, 0},
                     {4097, 5000, 999},
                     {2048, 7000, 4096}},
                    1 << 14);
}

TEST(CudaStreamOps, CopySegmentsManyAlignedAndUnaligned) {
  FLEXMOE_REQUIRE_GPU();
  // > 8 segments: one kernel. Mixed alignments exercise its 16-byte,
  // 4-byte and byte paths; one large segment needs several blocks.
  std::vector<std::array<size_t, 3>> segments;
  size_t dst = 0;
  const size_t sizes[] = {16, 4, 1, 7, 64, 48, 12, 3, 256, 1 << 20, 100, 5};
  size_t src = 0;
  for (size_t i = 0; i < std::size(sizes); ++i) {
    segments.push_back({src, dst, sizes[i]});
    // Alternate aligned and odd starts.
    src += sizes[i] + (i % 2 ? 16 : 3);
    dst += sizes[i] + (i % 3 ? 4 : 1);
  }
  checkCopySegments(segments, size_t(2) << 20);
}

TEST(CudaStreamOps, CopySegmentsMoreThanAGridRow) {
  FLEXMOE_REQUIRE_GPU();
  // 70000 segments: more than gridDim.y's 65535, so two launches.
  std::vector<std::array<size_t, 3>> segments;
  for (size_t i = 0; i < 70000; ++i)
    segments.push_back({(i * 37) % 500000, i * 5, 5});
  checkCopySegments(segments, 1 << 19);
}

TEST(CudaStreamOps, ZeroAndAddScaled) {
  FLEXMOE_REQUIRE_GPU();
  const int64_t n = 100003;
  Fixture f;
  FLEXMOE_ASSERT_OK(f.open(4 * 4 * (n + 64)));
  std::vector<float> a = randomFloats(n, 1), b = randomFloats(n, 2);
  float *da = reinterpret_cast<float *>(f.at(0));
  float *db = reinterpret_cast<float *>(f.at(4 * (n + 64)));
  float *dd = reinterpret_cast<float *>(f.at(8 * (n + 64)));
  FLEXMOE_ASSERT_OK(f.device->copyToDevice(f.at(0), a.data(), 4 * n));
  FLEXMOE_ASSERT_OK(
      f.device->copyToDevice(f.at(4 * (n + 64)), b.data(), 4 * n));
  FLEXMOE_ASSERT_OK(f.stream->addScaled(dd, da, db, n, 0.25f));
  // In place, a little unaligned, over a shorter count.
  FLEXMOE_ASSERT_OK(f.stream->addScaled(da + 1, da + 1, db, n - 3, -2.0f));
  FLEXMOE_ASSERT_OK(f.stream->addScaled(db, da, db, 0, 5.0f)); // nothing
  FLEXMOE_ASSERT_OK(
      f.stream->zero(reinterpret_cast<std::byte *>(db + 10), 4 * 7));
  FLEXMOE_ASSERT_OK(f.stream->synchronize());
  std::vector<float> d(n), a2(n), b2(n);
  FLEXMOE_ASSERT_OK(f.device->copyToHost(d.data(), f.at(8 * (n + 64)), 4 * n));
  FLEXMOE_ASSERT_OK(f.device->copyToHost(a2.data(), f.at(0), 4 * n));
  FLEXMOE_ASSERT_OK(f.device->copyToHost(b2.data(), f.at(4 * (n + 64)), 4 * n));
  std::vector<float> expectD(n), expectA = a, expectB = b;
  for (int64_t i = 0; i < n; ++i)
    expectD[i] = (a[i] + b[i]) * 0.25f;
  for (int64_t i = 0; i < n - 3; ++i)
    expectA[i + 1] = (a[i + 1] + b[i]) * -2.0f;
  for (int64_t i = 10; i < 17; ++i)
    expectB[i] = 0.0f;
  // The same float operations in the same order: bit for bit.
  EXPECT_TRUE(allClose(expectD, d, 0, 0));
  EXPECT_TRUE(allClose(expectA, a2, 0, 0));
  EXPECT_TRUE(allClose(expectB, b2, 0, 0));
}

TEST(CudaStreamOps, SumOfSquaresEmptySmallAndLarge) {
  FLEXMOE_REQUIRE_GPU();
  // A range larger than 2^18 floats spans several chunks (and a partial
  // last one); small ranges, an empty one, one unaligned.
  const int64_t large = (int64_t{1} << 18) * 3 + 12345;
  Fixture f;
  FLEXMOE_ASSERT_OK(f.open(4 * (large + 1024)));
  std::vector<float> values = randomFloats(large + 1024, 9, -2.0f, 2.0f);
  FLEXMOE_ASSERT_OK(
      f.device->copyToDevice(f.at(0), values.data(), 4 * values.size()));
  const float *base = reinterpret_cast<const float *>(f.at(0));
  std::vector<device::FloatRange> ranges = {
      {base, 0},     {base + 5, 1},  {base + 1, 1000}, {base + 1024, large},
      {base + 7, 0}, {base, 1 << 18}};
  std::vector<double> sums(ranges.size(), -1.0);
  FLEXMOE_ASSERT_OK(f.stream->sumOfSquares(ranges, sums));
  for (size_t r = 0; r < ranges.size(); ++r) {
    const int64_t offset = ranges[r].data - base;
    double expected = 0;
    for (int64_t i = 0; i < ranges[r].count; ++i)
      expected += double(values[offset + i]) * values[offset + i];
    // Double sums in another order: far below 1e-10 relative, while one
    // missing or repeated element of a range moves it by ~1/count.
    EXPECT_NEAR(sums[r], expected, 1e-10 * (expected + 1)) << "range " << r;
  }
  EXPECT_EQ(sums[0], 0.0);
  EXPECT_EQ(sums[4], 0.0);

  // No ranges: nothing to do; a count mismatch is an error.
  std::vector<double> none;
  FLEXMOE_ASSERT_OK(f.stream->sumOfSquares({}, none));
  std::vector<double> two(2);
  Status mismatch = f.stream->sumOfSquares(ranges, two);
  EXPECT_FALSE(mismatch.isOk());

  // A NaN makes its range's sum non-finite, and only that one.
  const float nan = NAN;
  FLEXMOE_ASSERT_OK(f.device->copyToDevice(f.at(4 * 3), &nan, 4));
  std::vector<device::FloatRange> withNan = {{base, 10}, {base + 4, 10}};
  std::vector<double> nanSums(2);
  FLEXMOE_ASSERT_OK(f.stream->sumOfSquares(withNan, nanSums));
  EXPECT_FALSE(std::isfinite(nanSums[0]));
  EXPECT_TRUE(std::isfinite(nanSums[1]));
}
