//===- MoeTestUtil.h - helpers of the CUDA moe kernel tests ------*- C++
//-*-===//
//
// Self-contained (no dependency on the dense tests' harness): skip without a
// GPU, device buffers, a scratch allocator like the LaunchContext's, seeded
// non-zero random inputs, and element-wise comparison with a tolerance.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_TEST_GPU_MOETESTUTIL_H
#define FLEXMOE_TEST_GPU_MOETESTUTIL_H

#include "runtime/backends/cuda/kernels/MoeKernels.cuh"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace flexmoe::cuda::test {

/// Skips the test when no CUDA device can be used.
#define FLEXMOE_SKIP_WITHOUT_GPU()                                             \
  do {                                                                         \
    int deviceCount_ = 0;                                                      \
    if (cudaGetDeviceCount(&deviceCount_) != cudaSuccess || deviceCount_ == 0) \
      GTEST_SKIP() << "no CUDA device";                                        \
  } while (false)

#define FLEXMOE_CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr
#define FLEXMOE_STATUS_OK(expr)                                                \
  do {                                                                         \
    ::flexmoe::Status status_ = (expr);                                        \
    ASSERT_TRUE(status_.isOk()) << status_.message();                          \
  } while (false)

/// A device copy of a host vector (or n uninitialised values, filled with
/// a NaN-like byte pattern so that unwritten outputs show up).
template <typename T> class DeviceBuffer {
public:
  explicit DeviceBuffer(const std::vector<T> &host) : size_(host.size()) {
    allocate();
    if (size_)
      cudaMemcpy(data_, host.data(), size_ * sizeof(T), cudaMemcpyHostToDevice);
  }
  explicit DeviceBuffer(size_t size) : size_(size) {
    allocate();
    cudaMemset(data_, 0xff, bytes());
  }
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  ~DeviceBuffer() { cudaFree(data_); }

  T *get() const { return data_; }
  std::vector<T> download() const {
    std::vector<T> host(size_);
    cudaDeviceSynchronize();
    if (size_)
      cudaMemcpy(host.data(), data_, size_ * sizeof(T), cudaMemcpyDeviceToHost);
    return host;
  }

private:
  size_t bytes() const { return (size_ ? size_ : 1) * sizeof(T); }
  void allocate() { cudaMalloc(reinterpret_cast<void **>(&data_), bytes()); }
  size_t size_;
  T *data_ = nullptr;
};

/// LaunchContext::scratch for tests: plain allocations freed at the end.
class TestScratch {
public:
  TestScratch() {
    fn_ = [this](size_t bytes) -> StatusOr<void *> {
      void *p = nullptr;
      if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess)
        return Status::error("test scratch: cudaMalloc failed");
      blocks_.push_back(p);
      return p;
    };
  }
  ~TestScratch() {
    cudaDeviceSynchronize();
    for (void *p : blocks_)
      cudaFree(p);
  }
  const MoeScratch &fn() const { return fn_; }

private:
  MoeScratch fn_;
  std::vector<void *> blocks_;
};

/// n values in ±[0.1, 1] (never zero, so a skipped term changes a result).
inline std::vector<float> randomValues(size_t n, uint32_t seed,
                                       float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> mag(0.1f, 1.0f);
  std::bernoulli_distribution sign(0.5);
  std::vector<float> v(n);
  for (float &x : v)
    x = scale * (sign(rng) ? mag(rng) : -mag(rng));
  return v;
}

/// Expert ids in [0, E) drawn only from `used` experts (others stay empty),
/// skewed towards the first of them, distinct within a token.
inline std::vector<int32_t> randomExpertIds(int64_t T, int64_t K,
                                            const std::vector<int32_t> &used,
                                            uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(T * K);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < K; ++j) {
      int32_t e;
      bool repeated;
      do {
        // Squaring a uniform draw skews the choice towards low indices.
        const double u = std::uniform_real_distribution<double>(0, 1)(rng);
        e = used[static_cast<size_t>(u * u * used.size()) % used.size()];
        repeated = false;
        for (int64_t i = 0; i < j; ++i)
          repeated |= ids[t * K + i] == e;
      } while (repeated && static_cast<int64_t>(used.size()) > j);
      ids[t * K + j] = e;
    }
  return ids;
}

template <typename T>
void expectNear(const std::vector<T> &actual, const std::vector<T> &expected,
                double rtol, double atol, const std::string &what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  int failures = 0;
  for (size_t i = 0; i < actual.size() && failures < 5; ++i) {
    const double a = actual[i], e = expected[i];
    if (!(std::fabs(a - e) <= atol + rtol * std::fabs(e))) {
      ADD_FAILURE() << what << "[" << i << "] = " << a << ", expected " << e;
      ++failures;
    }
  }
}

template <typename T>
void expectEqual(const std::vector<T> &actual, const std::vector<T> &expected,
                 const std::string &what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  int failures = 0;
  for (size_t i = 0; i < actual.size() && failures < 5; ++i)
    if (actual[i] != expected[i]) {
      ADD_FAILURE() << what << "[" << i << "] = " << actual[i] << ", expected "
                    << expected[i];
      ++failures;
    }
}

} // namespace flexmoe::cuda::test

#endif // FLEXMOE_TEST_GPU_MOETESTUTIL_H
