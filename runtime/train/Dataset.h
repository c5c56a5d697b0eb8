//===- Dataset.h - token corpora and their stateless batches ----*- C++ -*-===//
//
// A dataset is one file of tokens: raw text read as bytes (token = byte
// value, vocab 256) or pre-tokenised ids (u16: little-endian uint16, the
// nanoGPT .bin convention; i32: little-endian int32). The last evalFraction
// of the tokens is the eval split, the rest the train split.
//
// Train batches are stateless: the global batch of step s is a pure
// function of (seed, s), so a resumed run sees exactly the batches an
// uninterrupted one would, whatever the rank count.
// docs/data-and-checkpoints.md gives the exact sampling rule.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_TRAIN_DATASET_H
#define FLEXMOE_RUNTIME_TRAIN_DATASET_H

#include "runtime/schema/program_generated.h"
#include "runtime/support/Status.h"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace flexmoe::train {

enum class DataFormat { Auto, Text, U16, I32 };

/// "auto", "text", "u16", "i32".
std::string_view dataFormatName(DataFormat format);
StatusOr<DataFormat> parseDataFormat(std::string_view name);
/// Auto's rule: `.bin` → U16, `.i32` → I32, anything else → Text. Other
/// formats are returned unchanged.
DataFormat resolveDataFormat(DataFormat format, std::string_view path);

struct DatasetOptions {
  DataFormat format = DataFormat::Auto;
  /// The program's vocabulary: every id must be in [0, vocabSize).
  int64_t vocabSize = 0;
  /// Tokens per row; a window is seqLen + 1 tokens.
  int64_t seqLen = 0;
  /// The last fraction of the tokens held out for evaluation, in [0, 1);
  /// 0 = no eval split.
  double evalFraction = 0.05;
};

/// One rank's share of a batch: `rows` rows of `seqLen` ids each, row-major,
/// labels[i] = the token after tokens[i].
struct Batch {
  int64_t rows = 0;
  int64_t seqLen = 0;
  std::vector<int32_t> tokens;
  std::vector<int32_t> labels;
};

/// What a program expects as input, from its InputTokens buffer
/// ([local batch rows, seqLen]) and its embedding table ([vocab, d_model]).
struct ProgramInputShape {
  int64_t vocabSize = 0;
  /// Rows per rank per step; the global batch is localBatch × worldSize.
  int64_t localBatch = 0;
  int64_t seqLen = 0;
  int64_t worldSize = 1;
};
StatusOr<ProgramInputShape> programInputShape(const fb::Program &program);

/// The splitmix64 generator (Steele et al.; the reference constants), used
/// for batch sampling so that the batches are the same with every standard
/// library.
class SplitMix64 {
public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t next();
  /// Uniform in [0, bound), bound > 0, by rejection (no modulo bias).
  uint64_t below(uint64_t bound);
  /// The generator of train step `step` of a run seeded with `seed`.
  static SplitMix64 forStep(uint64_t seed, int64_t step);

private:
  uint64_t state_;
};

class Dataset {
public:
  /// Reads and validates the file: it must exist and be non-empty, a
  /// multiple of the id width, hold only ids in [0, vocabSize), and leave at
  /// least one window of seqLen + 1 tokens in the train split and (if
  /// evalFraction > 0) in the eval split. Errors name the file.
  static StatusOr<Dataset> open(const std::string &path,
                                const DatasetOptions &options);
  /// The same from ids in memory (tests, generated data); `name` appears in
  /// messages. options.format is ignored.
  static StatusOr<Dataset> fromTokens(std::vector<int32_t> tokens,
                                      const DatasetOptions &options,
                                      std::string name = "<memory>");

  /// Rank `rank`'s rows of the global batch of train step `step` (1-based):
  /// globalBatch windows at start offsets drawn uniformly from the train
  /// split by SplitMix64::forStep(seed, step); rank r of worldSize gets rows
  /// [r·B/W, (r+1)·B/W). globalBatch must be a positive multiple of
  /// worldSize.
  StatusOr<Batch> trainBatch(uint64_t seed, int64_t step, int64_t globalBatch,
                             int64_t rank = 0, int64_t worldSize = 1) const;

  /// Full eval batches of globalBatch windows: the eval split cut into
  /// consecutive non-overlapping windows of seqLen + 1 tokens, capped at
  /// maxEvalBatches (negative = no cap).
  int64_t numEvalBatches(int64_t globalBatch,
                         int64_t maxEvalBatches = -1) const;
  /// Eval batch `index` (0-based): windows [index·B, (index+1)·B), rank
  /// shard as for train batches.
  StatusOr<Batch> evalBatch(int64_t index, int64_t globalBatch,
                            int64_t rank = 0, int64_t worldSize = 1) const;

  /// −Σ p ln p over the token frequencies of the whole corpus, in nats: the
  /// loss of the best model that ignores context.
  double unigramEntropy() const { return unigramEntropy_; }

  int64_t numTokens() const { return static_cast<int64_t>(tokens_.size()); }
  int64_t numTrainTokens() const { return numTrainTokens_; }
  int64_t numEvalTokens() const { return numTokens() - numTrainTokens_; }
  /// Distinct ids that occur in the corpus.
  int64_t vocabSeen() const { return vocabSeen_; }
  /// How often id `id` occurs (0 for ids outside the vocabulary).
  int64_t tokenCount(int64_t id) const;
  int64_t seqLen() const { return seqLen_; }
  int64_t vocabSize() const { return static_cast<int64_t>(counts_.size()); }
  /// The format the file was read as (never Auto).
  DataFormat format() const { return format_; }
  const std::string &name() const { return name_; }
  std::span<const int32_t> tokens() const { return tokens_; }

private:
  Dataset() = default;
  static StatusOr<Dataset> build(std::vector<int32_t> tokens,
                                 const DatasetOptions &options,
                                 std::string name, DataFormat format);
  Status checkShard(int64_t globalBatch, int64_t rank, int64_t worldSize) const;
  Batch windows(std::span<const int64_t> starts) const;

  std::string name_;
  DataFormat format_ = DataFormat::Text;
  std::vector<int32_t> tokens_;
  int64_t numTrainTokens_ = 0;
  int64_t seqLen_ = 0;
  std::vector<int64_t> counts_;
  int64_t vocabSeen_ = 0;
  double unigramEntropy_ = 0;
};

} // namespace flexmoe::train

#endif // FLEXMOE_RUNTIME_TRAIN_DATASET_H
