//===- BlasTest.cpp - the blocked, OpenMP-shared GEMM ---------------------===//
//
// gemm cuts large products into blocks of C's rows or columns shared out over
// the OpenMP threads: every transpose combination, both split directions and
// leading dimensions wider than the matrices must match a naive product, and
// the result must be bitwise the same for 1, 2 and 3 threads. Inside a
// parallel region the product is one OpenBLAS call (whose rounding may differ
// from the blocked one's), the same whatever the size of the team.
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cpu/kernels/Blas.h"
#include "test/unit/cpu/GradCheck.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>

using namespace flexmoe::cpu;
using flexmoe::test::randomVectorAs;

namespace {

struct Case {
  bool transA, transB;
  int64_t m, n, k;
};

/// C = alpha·op(A)·op(B) + beta·C in double, on padded leading dimensions.
std::vector<float> naive(const Case &c, const std::vector<float> &a,
                         int64_t lda, const std::vector<float> &b, int64_t ldb,
                         std::vector<float> cIn, int64_t ldc, float alpha,
                         float beta) {
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < c.n; ++j) {
      double s = 0;
      for (int64_t l = 0; l < c.k; ++l) {
        const double av = c.transA ? a[l * lda + i] : a[i * lda + l];
        const double bv = c.transB ? b[j * ldb + l] : b[l * ldb + j];
        s += av * bv;
      }
      cIn[i * ldc + j] =
          static_cast<float>(alpha * s + beta * double(cIn[i * ldc + j]));
    }
  return cIn;
}

std::vector<float> run(const Case &c, const std::vector<float> &a, int64_t lda,
                       const std::vector<float> &b, int64_t ldb,
                       std::vector<float> out, int64_t ldc, float alpha,
                       float beta) {
  gemm<float>(c.transA, c.transB, c.m, c.n, c.k, alpha, a.data(), lda, b.data(),
              ldb, beta, out.data(), ldc);
  return out;
}

TEST(Blas, MatchesNaiveProductAndIsThreadCountIndependent) {
  const Case cases[] = {
      {false, false, 300, 70, 90}, // split by rows
      {true, false, 70, 300, 90},  // split by columns
      {false, true, 257, 129, 65}, // ragged last block
      {true, true, 129, 257, 33},  //
      {false, false, 5, 7, 3},     // too small to split
      {false, false, 400, 64, 0},  // k = 0: C = beta·C
  };
  const int saved = omp_get_max_threads();
  for (const Case &c : cases) {
    SCOPED_TRACE(::testing::Message()
                 << "m=" << c.m << " n=" << c.n << " k=" << c.k
                 << " transA=" << c.transA << " transB=" << c.transB);
    const int64_t aRows = c.transA ? c.k : c.m, aCols = c.transA ? c.m : c.k;
    const int64_t bRows = c.transB ? c.n : c.k, bCols = c.transB ? c.k : c.n;
    const int64_t lda = aCols + 3, ldb = bCols + 5, ldc = c.n + 2;
    const auto a = randomVectorAs<float>(aRows * lda + 1, 1);
    const auto b = randomVectorAs<float>(bRows * ldb + 1, 2);
    const auto cInit = randomVectorAs<float>(c.m * ldc + 1, 3);
    const std::vector<float> want =
        naive(c, a, lda, b, ldb, cInit, ldc, 0.5f, 0.25f);

    omp_set_num_threads(1);
    const std::vector<float> one =
        run(c, a, lda, b, ldb, cInit, ldc, 0.5f, 0.25f);
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j)
        ASSERT_NEAR(one[i * ldc + j], want[i * ldc + j], 1e-5 * (1 + c.k))
            << "C[" << i << "," << j << "]";
    // The padding beyond each row of C is left alone.
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = c.n; j < ldc; ++j)
        ASSERT_EQ(one[i * ldc + j], cInit[i * ldc + j]);

    for (int threads : {2, 3}) {
      omp_set_num_threads(threads);
      EXPECT_EQ(run(c, a, lda, b, ldb, cInit, ldc, 0.5f, 0.25f), one)
          << threads << " threads";
    }
    // Inside a parallel region: one call on the calling thread.
    std::vector<float> inside[3];
    for (int threads : {1, 2, 3}) {
#pragma omp parallel num_threads(threads)
      {
#pragma omp single
        inside[threads - 1] = run(c, a, lda, b, ldb, cInit, ldc, 0.5f, 0.25f);
      }
    }
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j)
        ASSERT_NEAR(inside[0][i * ldc + j], want[i * ldc + j],
                    1e-5 * (1 + c.k));
    EXPECT_EQ(inside[1], inside[0]);
    EXPECT_EQ(inside[2], inside[0]);
  }
  omp_set_num_threads(saved);
}

TEST(Blas, BatchEqualsOneGemmPerCallWithBiasRows) {
  // Tall (split by rows), wide (split by columns, so each block takes its
  // columns of the bias) and small (one block) products, written side by side
  // into one buffer to check that no block strays outside its call.
  struct Shape {
    int64_t m, n, k;
  };
  const Shape shapes[] = {{300, 40, 64}, {40, 300, 64}, {6, 5, 4}};
  std::vector<std::vector<float>> as, bs, biases;
  std::vector<int64_t> offsets;
  int64_t size = 0;
  for (const Shape &sh : shapes) {
    as.push_back(randomVectorAs<float>(sh.m * sh.k, 10 + size));
    bs.push_back(randomVectorAs<float>(sh.k * sh.n, 20 + size));
    biases.push_back(randomVectorAs<float>(sh.n, 30 + size));
    offsets.push_back(size);
    size += sh.m * sh.n;
  }
  const auto init = randomVectorAs<float>(size, 7);

  // Reference: fill the bias rows, then gemm with beta = 1, one by one.
  std::vector<float> want = init;
  for (size_t i = 0; i < 3; ++i) {
    const Shape &sh = shapes[i];
    float *c = want.data() + offsets[i];
    for (int64_t r = 0; r < sh.m; ++r)
      std::copy(biases[i].begin(), biases[i].end(), c + r * sh.n);
    gemm<float>(false, false, sh.m, sh.n, sh.k, 1.f, as[i].data(), sh.k,
                bs[i].data(), sh.n, 1.f, c, sh.n);
  }

  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    std::vector<float> got = init;
    std::vector<GemmCall<float>> calls;
    for (size_t i = 0; i < 3; ++i) {
      const Shape &sh = shapes[i];
      calls.push_back({false, false, sh.m, sh.n, sh.k, 1.f, as[i].data(), sh.k,
                       bs[i].data(), sh.n, /*beta ignored*/ 0.5f,
                       got.data() + offsets[i], sh.n, biases[i].data()});
    }
    gemmBatch<float>(calls);
    EXPECT_EQ(got, want) << threads << " threads";
  }
  omp_set_num_threads(saved);
}

} // namespace
