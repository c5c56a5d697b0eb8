//===- DenseLinearTest.cpp - embedding, linear and matmul kernels ---------===//

#include "runtime/backends/cpu/kernels/DenseKernels.h"
#include "test/unit/cpu/GradCheck.h"

#include <gtest/gtest.h>

using namespace flexmoe::cpu;
using flexmoe::test::checkGradient;
using flexmoe::test::dot;
using flexmoe::test::maxRelativeDifference;
using flexmoe::test::randomVector;
using flexmoe::test::randomVectorAs;

namespace {

constexpr double kGradTol = 1e-6;
constexpr double kFloatTol = 1e-5;

//===----------------------------------------------------------------------===//
// embedding
//===----------------------------------------------------------------------===//

TEST(DenseEmbedding, ForwardGathersRows) {
  const int64_t V = 7, D = 5;
  std::vector<int32_t> ids = {3, 0, 6, 3, 1, 5};
  std::vector<float> table = randomVectorAs<float>(V * D, 11);
  std::vector<float> out(ids.size() * D, -1.f);
  ASSERT_TRUE(
      embedding(ids.data(), ids.size(), table.data(), V, D, out.data()));
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t c = 0; c < D; ++c)
      EXPECT_EQ(out[i * D + c], table[ids[i] * D + c]) << i << "," << c;
}

TEST(DenseEmbedding, GradientMatchesFiniteDifferences) {
  const int64_t V = 6, D = 4;
  // Repeated ids: their gradients must accumulate.
  std::vector<int32_t> ids = {2, 5, 2, 0, 2, 1, 5};
  const int64_t n = ids.size();
  std::vector<double> table = randomVector(V * D, 1);
  std::vector<double> w = randomVector(n * D, 2);
  auto loss = [&](const std::vector<double> &t) {
    std::vector<double> y(n * D);
    EXPECT_TRUE(embedding(ids.data(), n, t.data(), V, D, y.data()));
    return dot(y, w);
  };
  std::vector<double> dtable(V * D, 99.0);
  ASSERT_TRUE(embeddingGrad(ids.data(), n, w.data(), V, D, dtable.data()));
  EXPECT_LT(checkGradient(loss, table, dtable).maxRelativeError, kGradTol);
  // Rows no id names are zero (overwritten, not accumulated into).
  for (int64_t c = 0; c < D; ++c) {
    EXPECT_EQ(dtable[3 * D + c], 0.0);
    EXPECT_EQ(dtable[4 * D + c], 0.0);
  }
}

TEST(DenseEmbedding, OutOfRangeIdsAreErrorsAndWriteNothing) {
  const int64_t V = 4, D = 3;
  std::vector<float> table = randomVectorAs<float>(V * D, 3);
  for (int32_t bad : {4, -1, 1000}) {
    std::vector<int32_t> ids = {0, 1, bad, 2};
    std::vector<float> out(ids.size() * D, 7.f);
    flexmoe::Status st =
        embedding(ids.data(), ids.size(), table.data(), V, D, out.data());
    ASSERT_FALSE(st);
    EXPECT_NE(st.message().find("token id " + std::to_string(bad)),
              std::string::npos)
        << st.message();
    EXPECT_NE(st.message().find("position 2"), std::string::npos);
    for (float x : out)
      EXPECT_EQ(x, 7.f);
    std::vector<float> dtable(V * D, 7.f);
    ASSERT_FALSE(
        embeddingGrad(ids.data(), ids.size(), out.data(), V, D, dtable.data()));
    for (float x : dtable)
      EXPECT_EQ(x, 7.f);
  }
}

//===----------------------------------------------------------------------===//
// linear
//===----------------------------------------------------------------------===//

std::vector<double> referenceLinear(const std::vector<float> &x,
                                    const std::vector<float> &w,
                                    const float *bias, int64_t M, int64_t K,
                                    int64_t N) {
  std::vector<double> y(M * N);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = bias ? bias[j] : 0.0;
      for (int64_t l = 0; l < K; ++l)
        s += static_cast<double>(x[i * K + l]) * w[l * N + j];
      y[i * N + j] = s;
    }
  return y;
}

TEST(DenseLinear, ForwardMatchesReferenceWithAndWithoutBias) {
  const int64_t M = 2 * 3, K = 7, N = 5; // x: [2,3,7] flattened
  std::vector<float> x = randomVectorAs<float>(M * K, 4);
  std::vector<float> w = randomVectorAs<float>(K * N, 5);
  std::vector<float> b = randomVectorAs<float>(N, 6);
  std::vector<float> y(M * N);
  linear(x.data(), w.data(), b.data(), M, K, N, y.data());
  EXPECT_LT(maxRelativeDifference(y, referenceLinear(x, w, b.data(), M, K, N)),
            kFloatTol);
  std::fill(y.begin(), y.end(), 123.f); // no bias: y is overwritten
  linear(x.data(), w.data(), static_cast<const float *>(nullptr), M, K, N,
         y.data());
  EXPECT_LT(maxRelativeDifference(y, referenceLinear(x, w, nullptr, M, K, N)),
            kFloatTol);
}

TEST(DenseLinear, GradientMatchesFiniteDifferences) {
  const int64_t M = 5, K = 4, N = 3;
  std::vector<double> x = randomVector(M * K, 7);
  std::vector<double> w = randomVector(K * N, 8);
  std::vector<double> b = randomVector(N, 9);
  std::vector<double> dy = randomVector(M * N, 10);
  auto forward = [&](const std::vector<double> &xs,
                     const std::vector<double> &ws,
                     const std::vector<double> &bs) {
    std::vector<double> y(M * N);
    linear(xs.data(), ws.data(), bs.data(), M, K, N, y.data());
    return dot(y, dy);
  };
  std::vector<double> dx(M * K), dw(K * N), db(N);
  linearGrad(x.data(), w.data(), dy.data(), M, K, N, dx.data(), dw.data());
  const int64_t dyShape[] = {M, N};
  const int64_t dims[] = {0};
  ASSERT_TRUE(reduceSum(dy.data(), dyShape, dims, db.data()));
  EXPECT_LT(checkGradient([&](auto &v) { return forward(v, w, b); }, x, dx)
                .maxRelativeError,
            kGradTol);
  EXPECT_LT(checkGradient([&](auto &v) { return forward(x, v, b); }, w, dw)
                .maxRelativeError,
            kGradTol);
  EXPECT_LT(checkGradient([&](auto &v) { return forward(x, w, v); }, b, db)
                .maxRelativeError,
            kGradTol);
}

//===----------------------------------------------------------------------===//
// matmul
//===----------------------------------------------------------------------===//

struct MatmulCase {
  int64_t batch, m, k, n;
  bool tl, tr, rhsBatched;
};

std::vector<double> referenceMatmul(const std::vector<float> &a,
                                    const std::vector<float> &b,
                                    const MatmulCase &c) {
  std::vector<double> out(c.batch * c.m * c.n);
  for (int64_t bi = 0; bi < c.batch; ++bi) {
    const float *A = a.data() + bi * c.m * c.k;
    const float *B = b.data() + (c.rhsBatched ? bi * c.k * c.n : 0);
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) {
        double s = 0;
        for (int64_t l = 0; l < c.k; ++l) {
          const double av = c.tl ? A[l * c.m + i] : A[i * c.k + l];
          const double bv = c.tr ? B[j * c.k + l] : B[l * c.n + j];
          s += av * bv;
        }
        out[(bi * c.m + i) * c.n + j] = s;
      }
  }
  return out;
}

TEST(DenseMatmul, ForwardMatchesReferenceForAllFlagCombinations) {
  int seed = 20;
  for (bool tl : {false, true})
    for (bool tr : {false, true})
      for (bool batched : {false, true}) {
        MatmulCase c{3, 4, 6, 5, tl, tr, batched};
        std::vector<float> a =
            randomVectorAs<float>(c.batch * c.m * c.k, ++seed);
        std::vector<float> b =
            randomVectorAs<float>((batched ? c.batch : 1) * c.k * c.n, ++seed);
        std::vector<float> out(c.batch * c.m * c.n);
        matmul(a.data(), b.data(), c.batch, c.m, c.k, c.n, tl, tr, batched,
               out.data());
        EXPECT_LT(maxRelativeDifference(out, referenceMatmul(a, b, c)),
                  kFloatTol)
            << "tl=" << tl << " tr=" << tr << " batched=" << batched;
      }
}

// The AD expresses matmul's gradient with matmuls (and reduce_sum for a
// broadcast rhs): checks that composition against finite differences.
TEST(DenseMatmul, GradientByMatmulsMatchesFiniteDifferences) {
  const int64_t B = 2, M = 3, K = 4, N = 5;
  for (bool batched : {true, false}) {
    std::vector<double> a = randomVector(B * M * K, 31);
    std::vector<double> b = randomVector((batched ? B : 1) * K * N, 32);
    std::vector<double> dy = randomVector(B * M * N, 33);
    auto loss = [&](const std::vector<double> &as,
                    const std::vector<double> &bs) {
      std::vector<double> y(B * M * N);
      matmul(as.data(), bs.data(), B, M, K, N, false, false, batched, y.data());
      return dot(y, dy);
    };
    // da = dy · bᵀ
    std::vector<double> da(B * M * K);
    matmul(dy.data(), b.data(), B, M, N, K, false, true, batched, da.data());
    // db = aᵀ · dy per batch, summed over the batch when b was broadcast.
    std::vector<double> dbAll(B * K * N), db((batched ? B : 1) * K * N);
    matmul(a.data(), dy.data(), B, K, M, N, true, false, true, dbAll.data());
    if (batched) {
      db = dbAll;
    } else {
      const int64_t shape[] = {B, K, N};
      const int64_t dims[] = {0};
      ASSERT_TRUE(reduceSum(dbAll.data(), shape, dims, db.data()));
    }
    EXPECT_LT(checkGradient([&](auto &v) { return loss(v, b); }, a, da)
                  .maxRelativeError,
              kGradTol);
    EXPECT_LT(checkGradient([&](auto &v) { return loss(a, v); }, b, db)
                  .maxRelativeError,
              kGradTol);
  }
}

} // namespace

namespace {

// Empty tensors (no tokens, an empty vocabulary slice) are no-ops, never
// out-of-bounds reads.
TEST(DenseEmptyTensors, KernelsAcceptZeroSizes) {
  std::vector<float> none;
  std::vector<int32_t> noIds;
  EXPECT_TRUE(embedding(noIds.data(), 0, none.data(), 0, 4, none.data()));
  linear(none.data(), none.data(), static_cast<const float *>(nullptr), 0, 3, 2,
         none.data());
  layerNorm(none.data(), none.data(), none.data(), 0, 8, 1e-5, none.data());
  const int64_t empty[] = {3, 0, 2};
  softmax(none.data(), *splitAtAxis(empty, 1), none.data());
  EXPECT_TRUE(attention(none.data(), none.data(), none.data(),
                        AttentionConfig{0, 4, 8, 2, true, 0}, none.data()));
  EXPECT_TRUE(add(none.data(), empty, none.data(), empty, none.data()));
  const int64_t perm[] = {2, 1, 0}, dims[] = {1};
  EXPECT_TRUE(transpose(none.data(), empty, perm, none.data()));
  EXPECT_TRUE(roll(none.data(), empty, dims, dims, none.data()));
  float loss = -1;
  EXPECT_TRUE(crossEntropy(none.data(), noIds.data(), 0, 5, -100, &loss));
  EXPECT_EQ(loss, 0.f);
  std::vector<float> out(6, -1.f);
  EXPECT_TRUE(reduceSum(none.data(), empty, dims, out.data()));
  for (float v : out)
    EXPECT_EQ(v, 0.f);
}

} // namespace
