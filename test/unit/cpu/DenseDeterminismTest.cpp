//===- DenseDeterminismTest.cpp - results independent of thread count -----===//
//
// Every dense kernel must give bitwise identical results with 1, 2 or 3
// OpenMP threads: data-parallel replicas compare and all-reduce gradients,
// so a kernel whose sums depend on the thread count would make replicas
// drift. Sizes are large enough that every parallel loop really splits.
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cpu/kernels/DenseKernels.h"
#include "runtime/backends/cpu/kernels/Parallel.h"
#include "test/unit/cpu/GradCheck.h"

#include <gtest/gtest.h>
#include <omp.h>

using namespace flexmoe::cpu;
using flexmoe::test::randomVectorAs;

namespace {

/// Runs every kernel once and returns all of their outputs.
std::vector<std::vector<float>> runAllKernels() {
  std::vector<std::vector<float>> outs;
  auto out = [&](size_t n) -> float * {
    outs.emplace_back(n, -7.f);
    return outs.back().data();
  };
  const int64_t V = 50, D = 48, rows = 300;
  std::vector<int32_t> ids(rows);
  for (int64_t i = 0; i < rows; ++i)
    ids[i] = static_cast<int32_t>((i * 7) % V); // heavy repetition
  const std::vector<float> x = randomVectorAs<float>(rows * D, 1, -3, 3);
  const std::vector<float> y = randomVectorAs<float>(rows * D, 2);
  const std::vector<float> table = randomVectorAs<float>(V * D, 3);
  const std::vector<float> w = randomVectorAs<float>(D * D, 4);
  const std::vector<float> g = randomVectorAs<float>(D, 5);

  EXPECT_TRUE(embedding(ids.data(), rows, table.data(), V, D, out(rows * D)));
  EXPECT_TRUE(embeddingGrad(ids.data(), rows, y.data(), V, D, out(V * D)));
  linear(x.data(), w.data(), g.data(), rows, D, D, out(rows * D));
  float *dx = out(rows * D);
  linearGrad(x.data(), w.data(), y.data(), rows, D, D, dx, out(D * D));
  layerNorm(x.data(), g.data(), g.data(), rows, D, 1e-5, out(rows * D));
  float *lx = out(rows * D), *lg = out(D);
  layerNormGrad(x.data(), g.data(), y.data(), rows, D, 1e-5, lx, lg, out(D));
  gelu(x.data(), rows * D, GeluApproximation::None, out(rows * D));
  geluGrad(x.data(), y.data(), rows * D, GeluApproximation::Tanh,
           out(rows * D));
  const int64_t shape3[] = {10, 30, D};
  softmax(x.data(), *splitAtAxis(shape3, 1), out(rows * D));
  softmaxGrad(x.data(), y.data(), *splitAtAxis(shape3, -1), out(rows * D));
  AttentionConfig ac{5, 60, D, 4, true, 9};
  EXPECT_TRUE(attention(x.data(), y.data(), x.data(), ac, out(rows * D)));
  float *dq = out(rows * D), *dk = out(rows * D);
  EXPECT_TRUE(attentionGrad(x.data(), y.data(), x.data(), y.data(), ac, dq, dk,
                            out(rows * D)));
  const int64_t bias[] = {D};
  EXPECT_TRUE(add(x.data(), shape3, g.data(), bias, out(rows * D)));
  EXPECT_TRUE(mul(x.data(), shape3, g.data(), bias, out(rows * D)));
  const int64_t r0[] = {0}, r02[] = {0, 2};
  EXPECT_TRUE(reduceSum(x.data(), shape3, r0, out(30 * D)));
  EXPECT_TRUE(reduceSum(x.data(), shape3, r02, out(30)));
  const int64_t perm[] = {2, 0, 1};
  EXPECT_TRUE(transpose(x.data(), shape3, perm, out(rows * D)));
  const int64_t shifts[] = {3, -5}, dims[] = {1, 2};
  EXPECT_TRUE(roll(x.data(), shape3, shifts, dims, out(rows * D)));
  EXPECT_TRUE(dropout(x.data(), rows * D, 0.25, 11, 3, out(rows * D)));
  std::vector<int32_t> labels(rows);
  for (int64_t i = 0; i < rows; ++i)
    labels[i] = i % 5 == 0 ? -100 : static_cast<int32_t>(i % D);
  EXPECT_TRUE(crossEntropy(x.data(), labels.data(), rows, D, -100, out(1)));
  EXPECT_TRUE(crossEntropyGrad(x.data(), labels.data(), rows, D, -100, 1.f,
                               out(rows * D)));
  // The second moment must be non-negative (a NaN would fail EXPECT_EQ).
  const std::vector<float> v = randomVectorAs<float>(rows * D, 7, 0.01, 1);
  float *np = out(rows * D), *nm = out(rows * D);
  EXPECT_TRUE(adamw(x.data(), y.data(), y.data(), v.data(), rows * D,
                    AdamWConfig{}, 3, np, nm, out(rows * D)));
  std::vector<float> big = randomVectorAs<float>(50000, 6);
  std::vector<GradBuffer<float>> bufs = {{big.data(), 50000}, {dx, rows * D}};
  *out(1) = static_cast<float>(clipByGlobalNorm<float>(bufs, 1.0));
  outs.push_back(big);
  return outs;
}

TEST(DenseDeterminism, BitwiseIdenticalAcrossThreadCounts) {
  const int saved = omp_get_max_threads();
  // Small loops stay serial by default; make every loop fork here.
  const int64_t savedWork = setMinParallelWork(0);
  omp_set_num_threads(1);
  const auto one = runAllKernels();
  omp_set_num_threads(2);
  const auto two = runAllKernels();
  omp_set_num_threads(3);
  const auto three = runAllKernels();
  omp_set_num_threads(saved);
  setMinParallelWork(savedWork);
  ASSERT_EQ(one.size(), two.size());
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_EQ(one[i], two[i]) << "kernel output " << i;
    EXPECT_EQ(one[i], three[i]) << "kernel output " << i;
    // Every output was written (no -7 sentinel left behind).
    EXPECT_EQ(std::count(one[i].begin(), one[i].end(), -7.f), 0)
        << "kernel output " << i;
  }
}

} // namespace

namespace {

// The norm is a double: compared at full precision (the float outputs above
// would hide a differently associated sum).
TEST(DenseDeterminism, GlobalNormIsIdenticalAcrossThreadCounts) {
  std::vector<float> a = randomVectorAs<float>(100003, 8);
  std::vector<float> b = randomVectorAs<float>(777, 9);
  std::vector<GradBuffer<float>> bufs = {{a.data(), 100003}, {b.data(), 777}};
  const int saved = omp_get_max_threads();
  std::vector<double> norms;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    norms.push_back(globalNorm<float>(bufs));
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(norms[0], norms[1]);
  EXPECT_EQ(norms[0], norms[2]);
}

} // namespace
