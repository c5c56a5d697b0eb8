//===- DatasetTest.cpp - formats, validation, splits and batches ----------===//

#include "TrainTestUtil.h"

#include "runtime/train/Dataset.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <numeric>

using namespace flexmoe;
using namespace flexmoe::testing;
using namespace flexmoe::train;

namespace {

DatasetOptions options(int64_t vocab, int64_t seqLen,
                       double evalFraction = 0.05) {
  DatasetOptions o;
  o.vocabSize = vocab;
  o.seqLen = seqLen;
  o.evalFraction = evalFraction;
  return o;
}

void expectError(const StatusOr<Dataset> &d, const std::string &part) {
  ASSERT_FALSE(d.isOk()) << "expected an error containing: " << part;
  EXPECT_NE(d.status().message().find(part), std::string::npos)
      << d.status().message();
}

/// ids 0, 1, 2, ...: a window's first token is its start offset.
Dataset iota(int64_t n, int64_t seqLen, double evalFraction = 0.05) {
  std::vector<int32_t> tokens(n);
  std::iota(tokens.begin(), tokens.end(), 0);
  StatusOr<Dataset> d =
      Dataset::fromTokens(tokens, options(n, seqLen, evalFraction));
  EXPECT_TRUE(d.isOk()) << d.status().message();
  return std::move(d).value();
}

TEST(Dataset, SplitMix64MatchesTheReferenceSequence) {
  SplitMix64 rng(1234567);
  EXPECT_EQ(rng.next(), 6457827717110365317ULL);
  EXPECT_EQ(rng.next(), 3203168211198807973ULL);
  EXPECT_EQ(rng.next(), 9817491932198370423ULL);
}

TEST(Dataset, ReadsTextAsBytes) {
  TempDir dir;
  std::string text = "hello, world\n\xff";
  writeText(dir.file("corpus.txt"), text);
  StatusOr<Dataset> d =
      Dataset::open(dir.file("corpus.txt"), options(256, 4, 0));
  ASSERT_TRUE(d.isOk()) << d.status().message();
  EXPECT_EQ(d->format(), DataFormat::Text);
  ASSERT_EQ(d->numTokens(), static_cast<int64_t>(text.size()));
  for (size_t i = 0; i < text.size(); ++i)
    EXPECT_EQ(d->tokens()[i], static_cast<uint8_t>(text[i]));
  EXPECT_EQ(d->tokens().back(), 255);
}

TEST(Dataset, ReadsU16AndI32LittleEndian) {
  TempDir dir;
  const uint8_t u16[] = {0x01, 0x00, 0x34, 0x12, 0xff, 0xff, 0x00, 0x01};
  writeBytes(dir.file("ids.bin"), u16, sizeof u16);
  StatusOr<Dataset> a =
      Dataset::open(dir.file("ids.bin"), options(65536, 2, 0));
  ASSERT_TRUE(a.isOk()) << a.status().message();
  EXPECT_EQ(a->format(), DataFormat::U16);
  EXPECT_EQ(std::vector<int32_t>(a->tokens().begin(), a->tokens().end()),
            (std::vector<int32_t>{1, 0x1234, 0xffff, 0x100}));

  const uint8_t i32[] = {0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
                         0x01, 0x00, 0x07, 0x00, 0x00, 0x00};
  writeBytes(dir.file("ids.i32"), i32, sizeof i32);
  StatusOr<Dataset> b =
      Dataset::open(dir.file("ids.i32"), options(100000, 2, 0));
  ASSERT_TRUE(b.isOk()) << b.status().message();
  EXPECT_EQ(b->format(), DataFormat::I32);
  EXPECT_EQ(std::vector<int32_t>(b->tokens().begin(), b->tokens().end()),
            (std::vector<int32_t>{1, 0x10000, 7}));

  // An explicit format wins over the extension.
  DatasetOptions asText = options(256, 2, 0);
  asText.format = DataFormat::Text;
  StatusOr<Dataset> c = Dataset::open(dir.file("ids.bin"), asText);
  ASSERT_TRUE(c.isOk()) << c.status().message();
  EXPECT_EQ(c->numTokens(), 8);
}

TEST(Dataset, ParsesAndResolvesFormats) {
  EXPECT_EQ(*parseDataFormat("u16"), DataFormat::U16);
  EXPECT_EQ(*parseDataFormat("auto"), DataFormat::Auto);
  StatusOr<DataFormat> bad = parseDataFormat("u8");
  ASSERT_FALSE(bad.isOk());
  EXPECT_NE(bad.status().message().find("'u8'"), std::string::npos);
  EXPECT_EQ(resolveDataFormat(DataFormat::Auto, "a/train.bin"),
            DataFormat::U16);
  EXPECT_EQ(resolveDataFormat(DataFormat::Auto, "x.i32"), DataFormat::I32);
  EXPECT_EQ(resolveDataFormat(DataFormat::Auto, "shakespeare.txt"),
            DataFormat::Text);
  EXPECT_EQ(resolveDataFormat(DataFormat::I32, "x.bin"), DataFormat::I32);
}

TEST(Dataset, RejectsAMissingOrEmptyFile) {
  TempDir dir;
  expectError(Dataset::open(dir.file("nope.txt"), options(256, 4)),
              "cannot open '" + dir.file("nope.txt") + "'");
  writeText(dir.file("empty.txt"), "");
  expectError(Dataset::open(dir.file("empty.txt"), options(256, 4)),
              "dataset '" + dir.file("empty.txt") + "' is empty");
  expectError(Dataset::open(dir.path(), options(256, 4)),
              "is not a regular file");
}

TEST(Dataset, RejectsASizeThatIsNotAMultipleOfTheIdWidth) {
  TempDir dir;
  writeText(dir.file("odd.bin"), "abc");
  expectError(Dataset::open(dir.file("odd.bin"), options(65536, 1, 0)),
              "has 3 bytes, not a multiple of the 2-byte u16 id width");
  writeText(dir.file("odd.i32"), "abcdef");
  expectError(Dataset::open(dir.file("odd.i32"), options(65536, 1, 0)),
              "has 6 bytes, not a multiple of the 4-byte i32 id width");
}

TEST(Dataset, RejectsIdsOutsideTheVocabulary) {
  TempDir dir;
  const uint16_t ids[] = {1, 2, 3, 70, 4, 5};
  writeBytes(dir.file("ids.bin"), ids, sizeof ids);
  expectError(Dataset::open(dir.file("ids.bin"), options(64, 2, 0)),
              "dataset '" + dir.file("ids.bin") +
                  "': token 3 is 70, outside the program's vocabulary [0, 64)");
  const int32_t negative[] = {1, 2, -5, 3};
  writeBytes(dir.file("neg.i32"), negative, sizeof negative);
  expectError(Dataset::open(dir.file("neg.i32"), options(64, 2, 0)),
              "token 2 is -5");
  // Text needs a byte vocabulary.
  writeText(dir.file("t.txt"), "abcdefgh");
  expectError(Dataset::open(dir.file("t.txt"), options(64, 2, 0)),
              "token 0 is 97, outside the program's vocabulary [0, 64) (text "
              "is read as bytes: vocabulary 256 needed)");
}

TEST(Dataset, RejectsTooFewTokensForAWindow) {
  std::vector<int32_t> ten(10, 1);
  expectError(Dataset::fromTokens(ten, options(8, 10, 0)),
              "the train split (10 tokens) needs at least seq_len + 1 = 11");
  std::vector<int32_t> hundred(100, 1);
  // 5% of 100 = 5 eval tokens < 9.
  expectError(Dataset::fromTokens(hundred, options(8, 8, 0.05)),
              "the eval split (5 tokens, eval fraction 0.05) needs at least "
              "seq_len + 1 = 9 for one window, so at least 180 tokens");
  EXPECT_TRUE(
      Dataset::fromTokens(std::vector<int32_t>(180, 1), options(8, 8, 0.05))
          .isOk());
  expectError(Dataset::fromTokens(hundred, options(8, 8, 1.0)),
              "eval fraction 1 must be in [0, 1)");
  expectError(Dataset::fromTokens(hundred, options(0, 8, 0)),
              "vocabulary size 0");
}

TEST(Dataset, SplitsOffTheLastEvalFraction) {
  Dataset d = iota(1000, 8, 0.05);
  EXPECT_EQ(d.numTokens(), 1000);
  EXPECT_EQ(d.numEvalTokens(), 50);
  EXPECT_EQ(d.numTrainTokens(), 950);
  EXPECT_EQ(d.vocabSeen(), 1000);
  Dataset none = iota(1000, 8, 0);
  EXPECT_EQ(none.numEvalTokens(), 0);
  EXPECT_EQ(none.numEvalBatches(1), 0);
}

TEST(Dataset, TrainBatchesAreWindowsOfTheTrainSplit) {
  Dataset d = iota(2000, 16, 0.1);
  StatusOr<Batch> b = d.trainBatch(/*seed=*/5, /*step=*/1, /*globalBatch=*/8);
  ASSERT_TRUE(b.isOk()) << b.status().message();
  ASSERT_EQ(b->rows, 8);
  ASSERT_EQ(b->tokens.size(), 8u * 16);
  ASSERT_EQ(b->labels.size(), 8u * 16);
  for (int64_t r = 0; r < 8; ++r) {
    int32_t start = b->tokens[r * 16];
    // The last label of the row is still a train token.
    EXPECT_LE(start + 16, d.numTrainTokens() - 1);
    for (int64_t t = 0; t < 16; ++t) {
      EXPECT_EQ(b->tokens[r * 16 + t], start + t);
      EXPECT_EQ(b->labels[r * 16 + t], start + t + 1);
    }
  }
}

TEST(Dataset, TrainBatchesFollowTheDocumentedRule) {
  // Golden starts from an independent implementation of the rule in
  // docs/data-and-checkpoints.md: changing it breaks every resume.
  Dataset d = iota(1000, 8, 0);
  StatusOr<Batch> b = d.trainBatch(/*seed=*/1, /*step=*/1, 6);
  ASSERT_TRUE(b.isOk()) << b.status().message();
  std::vector<int32_t> starts;
  for (int64_t r = 0; r < 6; ++r)
    starts.push_back(b->tokens[r * 8]);
  EXPECT_EQ(starts, (std::vector<int32_t>{577, 62, 983, 130, 687, 283}));
}

TEST(Dataset, TrainBatchesAreAFunctionOfSeedAndStep) {
  Dataset d = iota(5000, 8);
  auto batch = [&](uint64_t seed, int64_t step) {
    StatusOr<Batch> b = d.trainBatch(seed, step, 16);
    EXPECT_TRUE(b.isOk()) << b.status().message();
    return b->tokens;
  };
  EXPECT_EQ(batch(1, 7), batch(1, 7));
  EXPECT_NE(batch(1, 7), batch(1, 8));
  EXPECT_NE(batch(1, 7), batch(2, 7));
  // Order of requests does not matter: no hidden state.
  std::vector<int32_t> later = batch(3, 100);
  (void)batch(3, 1);
  EXPECT_EQ(batch(3, 100), later);
}

TEST(Dataset, RankShardsConcatenateToTheGlobalBatch) {
  Dataset d = iota(5000, 8);
  for (int64_t world : {1, 2, 4, 8}) {
    StatusOr<Batch> global = d.trainBatch(9, 3, 8);
    ASSERT_TRUE(global.isOk());
    std::vector<int32_t> tokens, labels;
    for (int64_t r = 0; r < world; ++r) {
      StatusOr<Batch> shard = d.trainBatch(9, 3, 8, r, world);
      ASSERT_TRUE(shard.isOk()) << shard.status().message();
      EXPECT_EQ(shard->rows, 8 / world);
      tokens.insert(tokens.end(), shard->tokens.begin(), shard->tokens.end());
      labels.insert(labels.end(), shard->labels.begin(), shard->labels.end());
    }
    EXPECT_EQ(tokens, global->tokens) << "world " << world;
    EXPECT_EQ(labels, global->labels) << "world " << world;
  }
  StatusOr<Batch> uneven = d.trainBatch(9, 3, 6, 0, 4);
  ASSERT_FALSE(uneven.isOk());
  EXPECT_NE(uneven.status().message().find(
                "global batch 6 must be a positive multiple of the world "
                "size 4"),
            std::string::npos);
  EXPECT_FALSE(d.trainBatch(9, 3, 8, 4, 4).isOk());
  StatusOr<Batch> zero = d.trainBatch(9, 0, 8);
  ASSERT_FALSE(zero.isOk());
  EXPECT_NE(zero.status().message().find("count from 1"), std::string::npos);
}

TEST(Dataset, TrainStartsAreRoughlyUniform) {
  // 1001 train tokens, seq 1: starts in [0, 1000).
  Dataset d = iota(1001, 1, 0);
  std::vector<int64_t> bins(10, 0);
  int64_t draws = 0;
  for (int64_t step = 1; step <= 2000; ++step) {
    StatusOr<Batch> b = d.trainBatch(11, step, 10);
    ASSERT_TRUE(b.isOk());
    for (int32_t start : b->tokens) {
      ASSERT_GE(start, 0);
      ASSERT_LT(start, 1000);
      ++bins[start / 100];
      ++draws;
    }
  }
  for (int64_t count : bins)
    EXPECT_NEAR(static_cast<double>(count), draws / 10.0, draws / 10.0 * 0.1);
}

TEST(Dataset, EvalBatchesAreConsecutiveWindows) {
  // 1000 tokens, 20% eval = 200 tokens = 22 windows of 9 (seq 8).
  Dataset d = iota(1000, 8, 0.2);
  EXPECT_EQ(d.numEvalBatches(4), 5);
  EXPECT_EQ(d.numEvalBatches(4, 3), 3);
  EXPECT_EQ(d.numEvalBatches(4, 0), 0);
  EXPECT_EQ(d.numEvalBatches(30), 0);
  for (int64_t i = 0; i < 5; ++i) {
    StatusOr<Batch> b = d.evalBatch(i, 4);
    ASSERT_TRUE(b.isOk()) << b.status().message();
    for (int64_t r = 0; r < 4; ++r) {
      int32_t start = 800 + static_cast<int32_t>((i * 4 + r) * 9);
      for (int64_t t = 0; t < 8; ++t) {
        EXPECT_EQ(b->tokens[r * 8 + t], start + t);
        EXPECT_EQ(b->labels[r * 8 + t], start + t + 1);
      }
    }
    // Rank shards concatenate to the batch.
    StatusOr<Batch> r0 = d.evalBatch(i, 4, 0, 2), r1 = d.evalBatch(i, 4, 1, 2);
    ASSERT_TRUE(r0.isOk() && r1.isOk());
    std::vector<int32_t> both = r0->tokens;
    both.insert(both.end(), r1->tokens.begin(), r1->tokens.end());
    EXPECT_EQ(both, b->tokens);
  }
  StatusOr<Batch> past = d.evalBatch(5, 4);
  ASSERT_FALSE(past.isOk());
  EXPECT_NE(past.status().message().find("eval batch 5 does not exist"),
            std::string::npos)
      << past.status().message();
}

TEST(Dataset, UnigramEntropyOfAKnownDistribution) {
  // p = (1/2, 1/4, 1/4): H = 1.5 ln 2.
  std::vector<int32_t> tokens;
  for (int i = 0; i < 400; ++i)
    tokens.push_back(i % 4 == 0 || i % 4 == 1 ? 3 : (i % 4 == 2 ? 0 : 5));
  StatusOr<Dataset> d = Dataset::fromTokens(tokens, options(8, 4, 0));
  ASSERT_TRUE(d.isOk()) << d.status().message();
  EXPECT_NEAR(d->unigramEntropy(), 1.5 * std::log(2.0), 1e-12);
  EXPECT_EQ(d->vocabSeen(), 3);
  EXPECT_EQ(d->tokenCount(3), 200);
  EXPECT_EQ(d->tokenCount(0), 100);
  EXPECT_EQ(d->tokenCount(1), 0);
  // Uniform over 4 ids: ln 4.
  StatusOr<Dataset> u = Dataset::fromTokens(
      std::vector<int32_t>{0, 1, 2, 3, 3, 2, 1, 0}, options(4, 2, 0));
  ASSERT_TRUE(u.isOk());
  EXPECT_NEAR(u->unigramEntropy(), std::log(4.0), 1e-12);
}

} // namespace
