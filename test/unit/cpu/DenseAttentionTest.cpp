//===- DenseAttentionTest.cpp - multi-head attention and its gradient -----===//

#include "runtime/backends/cpu/kernels/DenseKernels.h"
#include "test/unit/cpu/GradCheck.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace flexmoe::cpu;
using flexmoe::test::checkGradient;
using flexmoe::test::dot;
using flexmoe::test::maxRelativeDifference;
using flexmoe::test::randomVector;
using flexmoe::test::randomVectorAs;

namespace {

constexpr double kGradTol = 1e-6;
constexpr double kFloatTol = 1e-5;

/// docs/IR.md's mask, written directly from its wording.
bool sees(int64_t i, int64_t j, bool causal, int64_t w) {
  if (causal && j > i)
    return false;
  if (w > 0)
    return causal ? (0 <= i - j && i - j < w) : std::abs(i - j) < w;
  return true;
}

/// Materialises each head's [S,S] score matrix with −∞ at masked entries.
std::vector<double> referenceAttention(const std::vector<float> &q,
                                       const std::vector<float> &k,
                                       const std::vector<float> &v,
                                       const AttentionConfig &c) {
  const int64_t S = c.seq, D = c.dim, hd = D / c.numHeads;
  std::vector<double> out(c.batch * S * D);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.numHeads; ++h) {
      std::vector<double> scores(S * S);
      for (int64_t i = 0; i < S; ++i)
        for (int64_t j = 0; j < S; ++j) {
          double s = 0;
          for (int64_t t = 0; t < hd; ++t)
            s += double(q[(b * S + i) * D + h * hd + t]) *
                 k[(b * S + j) * D + h * hd + t];
          scores[i * S + j] = sees(i, j, c.causal, c.window)
                                  ? s / std::sqrt(double(hd))
                                  : -INFINITY;
        }
      for (int64_t i = 0; i < S; ++i) {
        double maxv = -INFINITY, sum = 0;
        for (int64_t j = 0; j < S; ++j)
          maxv = std::max(maxv, scores[i * S + j]);
        for (int64_t j = 0; j < S; ++j)
          sum += std::exp(scores[i * S + j] - maxv);
        for (int64_t t = 0; t < hd; ++t) {
          double acc = 0;
          for (int64_t j = 0; j < S; ++j)
            acc += std::exp(scores[i * S + j] - maxv) / sum *
                   v[(b * S + j) * D + h * hd + t];
          out[(b * S + i) * D + h * hd + t] = acc;
        }
      }
    }
  return out;
}

struct Variant {
  bool causal;
  int64_t window;
};
constexpr Variant kVariants[] = {{false, 0}, {true, 0}, {false, 2},  {true, 3},
                                 {false, 1}, {true, 1}, {false, 100}};

TEST(DenseAttention, ForwardMatchesNaiveMaskedReference) {
  for (const Variant &var : kVariants)
    for (int64_t heads : {1, 2, 4}) {
      AttentionConfig c{2, 7, 8, heads, var.causal, var.window};
      const int64_t n = c.batch * c.seq * c.dim;
      std::vector<float> q = randomVectorAs<float>(n, 1, -2, 2);
      std::vector<float> k = randomVectorAs<float>(n, 2, -2, 2);
      std::vector<float> v = randomVectorAs<float>(n, 3);
      std::vector<float> out(n);
      ASSERT_TRUE(attention(q.data(), k.data(), v.data(), c, out.data()));
      EXPECT_LT(maxRelativeDifference(out, referenceAttention(q, k, v, c)),
                kFloatTol)
          << "causal=" << var.causal << " window=" << var.window
          << " heads=" << heads;
    }
}

TEST(DenseAttention, CausalFirstQueryCopiesFirstValue) {
  // Query 0 sees key 0 alone under a causal mask: its output is v[0].
  AttentionConfig c{1, 5, 4, 2, true, 0};
  std::vector<float> q = randomVectorAs<float>(20, 4);
  std::vector<float> k = randomVectorAs<float>(20, 5);
  std::vector<float> v = randomVectorAs<float>(20, 6);
  std::vector<float> out(20);
  ASSERT_TRUE(attention(q.data(), k.data(), v.data(), c, out.data()));
  for (int t = 0; t < 4; ++t)
    EXPECT_FLOAT_EQ(out[t], v[t]);
  // Window 1 (either direction): every query sees itself alone.
  c.causal = false;
  c.window = 1;
  ASSERT_TRUE(attention(q.data(), k.data(), v.data(), c, out.data()));
  for (int i = 0; i < 20; ++i)
    EXPECT_FLOAT_EQ(out[i], v[i]);
}

TEST(DenseAttention, GradientMatchesFiniteDifferences) {
  for (const Variant &var : kVariants) {
    AttentionConfig c{2, 5, 6, 2, var.causal, var.window};
    const int64_t n = c.batch * c.seq * c.dim;
    std::vector<double> q = randomVector(n, 7);
    std::vector<double> k = randomVector(n, 8);
    std::vector<double> v = randomVector(n, 9);
    std::vector<double> dy = randomVector(n, 10);
    auto loss = [&](const std::vector<double> &qs,
                    const std::vector<double> &ks,
                    const std::vector<double> &vs) {
      std::vector<double> y(n);
      EXPECT_TRUE(attention(qs.data(), ks.data(), vs.data(), c, y.data()));
      return dot(y, dy);
    };
    std::vector<double> dq(n, 7.0), dk(n, 7.0), dv(n, 7.0);
    ASSERT_TRUE(attentionGrad(q.data(), k.data(), v.data(), dy.data(), c,
                              dq.data(), dk.data(), dv.data()));
    SCOPED_TRACE(testing::Message()
                 << "causal=" << var.causal << " window=" << var.window);
    EXPECT_LT(checkGradient([&](auto &x) { return loss(x, k, v); }, q, dq)
                  .maxRelativeError,
              kGradTol);
    EXPECT_LT(checkGradient([&](auto &x) { return loss(q, x, v); }, k, dk)
                  .maxRelativeError,
              kGradTol);
    EXPECT_LT(checkGradient([&](auto &x) { return loss(q, k, x); }, v, dv)
                  .maxRelativeError,
              kGradTol);
  }
}

// Sequences longer than the kernel's query block (64): several blocks, each
// with its own key range, and windows that straddle block boundaries.
TEST(DenseAttention, LongSequencesMatchReference) {
  for (const Variant &var :
       {Variant{false, 0}, Variant{true, 0}, Variant{true, 17},
        Variant{false, 40}, Variant{true, 64}, Variant{false, 1}}) {
    AttentionConfig c{2, 150, 8, 2, var.causal, var.window};
    const int64_t n = c.batch * c.seq * c.dim;
    std::vector<float> q = randomVectorAs<float>(n, 21, -2, 2);
    std::vector<float> k = randomVectorAs<float>(n, 22, -2, 2);
    std::vector<float> v = randomVectorAs<float>(n, 23);
    std::vector<float> out(n);
    ASSERT_TRUE(attention(q.data(), k.data(), v.data(), c, out.data()));
    EXPECT_LT(maxRelativeDifference(out, referenceAttention(q, k, v, c)),
              kFloatTol)
        << "causal=" << var.causal << " window=" << var.window;
  }
}

TEST(DenseAttention, LongSequenceGradientMatchesFiniteDifferences) {
  for (const Variant &var : {Variant{true, 0}, Variant{false, 0},
                             Variant{false, 20}, Variant{true, 9}}) {
    AttentionConfig c{1, 66, 2, 1, var.causal, var.window};
    const int64_t n = c.batch * c.seq * c.dim;
    std::vector<double> q = randomVector(n, 24);
    std::vector<double> k = randomVector(n, 25);
    std::vector<double> v = randomVector(n, 26);
    std::vector<double> dy = randomVector(n, 27);
    auto loss = [&](const std::vector<double> &qs,
                    const std::vector<double> &ks,
                    const std::vector<double> &vs) {
      std::vector<double> y(n);
      EXPECT_TRUE(attention(qs.data(), ks.data(), vs.data(), c, y.data()));
      return dot(y, dy);
    };
    std::vector<double> dq(n), dk(n), dv(n);
    ASSERT_TRUE(attentionGrad(q.data(), k.data(), v.data(), dy.data(), c,
                              dq.data(), dk.data(), dv.data()));
    SCOPED_TRACE(testing::Message()
                 << "causal=" << var.causal << " window=" << var.window);
    EXPECT_LT(checkGradient([&](auto &x) { return loss(x, k, v); }, q, dq)
                  .maxRelativeError,
              kGradTol);
    EXPECT_LT(checkGradient([&](auto &x) { return loss(q, x, v); }, k, dk)
                  .maxRelativeError,
              kGradTol);
    EXPECT_LT(checkGradient([&](auto &x) { return loss(q, k, x); }, v, dv)
                  .maxRelativeError,
              kGradTol);
  }
}

TEST(DenseAttention, InvalidConfigurationsAreErrors) {
  std::vector<float> buf(2 * 3 * 6);
  AttentionConfig c{2, 3, 6, 4, false, 0};
  flexmoe::Status st =
      attention(buf.data(), buf.data(), buf.data(), c, buf.data());
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("num_heads 4 does not divide"), std::string::npos)
      << st.message();
  c.numHeads = 2;
  c.window = -1;
  st = attentionGrad(buf.data(), buf.data(), buf.data(), buf.data(), c,
                     buf.data(), buf.data(), buf.data());
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("window -1"), std::string::npos);
}

} // namespace
