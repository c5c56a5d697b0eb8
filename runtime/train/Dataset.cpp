//===- Dataset.cpp - token corpora and their stateless batches ------------===//
#include "runtime/train/Dataset.h"

#include "runtime/train/File.h"

#include <cmath>
#include <cstring>

using namespace flexmoe;
using namespace flexmoe::train;

namespace {

/// splitmix64's output function.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

bool endsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.substr(s.size() - suffix.size()) == suffix;
}

} // namespace

uint64_t SplitMix64::next() {
  state_ += 0x9e3779b97f4a7c15ULL;
  return mix64(state_);
}

uint64_t SplitMix64::below(uint64_t bound) {
  // 2^64 mod bound: values below it would make the low residues likelier.
  uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    uint64_t r = next();
    if (r >= threshold)
      return r % bound;
  }
}

SplitMix64 SplitMix64::forStep(uint64_t seed, int64_t step) {
  return SplitMix64(mix64(seed ^ mix64(static_cast<uint64_t>(step))));
}

std::string_view flexmoe::train::dataFormatName(DataFormat format) {
  switch (format) {
  case DataFormat::Auto:
    return "auto";
  case DataFormat::Text:
    return "text";
  case DataFormat::U16:
    return "u16";
  case DataFormat::I32:
    return "i32";
  }
  return "?";
}

StatusOr<DataFormat> flexmoe::train::parseDataFormat(std::string_view name) {
  for (DataFormat f :
       {DataFormat::Auto, DataFormat::Text, DataFormat::U16, DataFormat::I32})
    if (dataFormatName(f) == name)
      return f;
  return errorf("unknown data format '", name,
                "' (expected auto, text, u16 or i32)");
}

DataFormat flexmoe::train::resolveDataFormat(DataFormat format,
                                             std::string_view path) {
  if (format != DataFormat::Auto)
    return format;
  if (endsWith(path, ".bin"))
    return DataFormat::U16;
  if (endsWith(path, ".i32"))
    return DataFormat::I32;
  return DataFormat::Text;
}

StatusOr<ProgramInputShape>
flexmoe::train::programInputShape(const fb::Program &program) {
  const auto *buffers = program.buffers();
  int64_t tokens = -1;
  for (uint32_t id = 0; buffers && id < buffers->size(); ++id) {
    const fb::Buffer *b = buffers->Get(id);
    if (b->kind() == fb::BufferKind::InputTokens && b->alias_of() < 0) {
      tokens = id;
      break;
    }
  }
  if (tokens < 0)
    return errorf("the program has no input tokens buffer");
  const fb::Buffer &tokenBuffer = *buffers->Get(tokens);
  if (!tokenBuffer.shape() || tokenBuffer.shape()->size() != 2)
    return errorf("the program's input tokens buffer must be [batch, seq]");
  ProgramInputShape shape;
  shape.localBatch = tokenBuffer.shape()->Get(0);
  shape.seqLen = tokenBuffer.shape()->Get(1);
  shape.worldSize = program.world_size();
  // The vocabulary is the row count of the table the tokens index.
  if (const auto *instructions = program.instructions())
    for (const fb::Instruction *inst : *instructions) {
      if (inst->opcode() != fb::OpCode::Embedding || !inst->inputs() ||
          inst->inputs()->size() < 2)
        continue;
      const fb::Buffer *ids = buffers->Get(inst->inputs()->Get(0));
      uint32_t root = ids->alias_of() >= 0 ? ids->alias_of() : ids->id();
      if (root != static_cast<uint32_t>(tokens))
        continue;
      const fb::Buffer *table = buffers->Get(inst->inputs()->Get(1));
      if (table->shape() && table->shape()->size() == 2) {
        shape.vocabSize = table->shape()->Get(0);
        return shape;
      }
    }
  return errorf("the program embeds its input tokens in no [vocab, d] table");
}

StatusOr<Dataset> Dataset::open(const std::string &path,
                                const DatasetOptions &options) {
  DataFormat format = resolveDataFormat(options.format, path);
  StatusOr<std::vector<std::byte>> read = readFile(path);
  if (!read)
    return errorf("dataset: ", read.status().message());
  const std::vector<std::byte> &bytes = *read;
  if (bytes.empty())
    return errorf("dataset '", path, "' is empty");
  size_t width = format == DataFormat::Text  ? 1
                 : format == DataFormat::U16 ? 2
                                             : 4;
  if (bytes.size() % width != 0)
    return errorf("dataset '", path, "' has ", bytes.size(),
                  " bytes, not a multiple of the ", width, "-byte ",
                  dataFormatName(format), " id width");
  std::vector<int32_t> tokens(bytes.size() / width);
  const auto *raw = reinterpret_cast<const uint8_t *>(bytes.data());
  for (size_t i = 0; i < tokens.size(); ++i) {
    // Little-endian by construction, whatever the host.
    const uint8_t *p = raw + i * width;
    switch (format) {
    case DataFormat::Text:
      tokens[i] = p[0];
      break;
    case DataFormat::U16:
      tokens[i] = static_cast<int32_t>(p[0] | (uint32_t(p[1]) << 8));
      break;
    default:
      tokens[i] =
          static_cast<int32_t>(uint32_t(p[0]) | (uint32_t(p[1]) << 8) |
                               (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24));
      break;
    }
  }
  return build(std::move(tokens), options, path, format);
}

StatusOr<Dataset> Dataset::fromTokens(std::vector<int32_t> tokens,
                                      const DatasetOptions &options,
                                      std::string name) {
  if (tokens.empty())
    return errorf("dataset '", name, "' is empty");
  return build(std::move(tokens), options, std::move(name), DataFormat::I32);
}

StatusOr<Dataset> Dataset::build(std::vector<int32_t> tokens,
                                 const DatasetOptions &options,
                                 std::string name, DataFormat format) {
  if (options.vocabSize <= 0)
    return errorf("dataset '", name, "': vocabulary size ", options.vocabSize,
                  " must be positive");
  if (options.seqLen <= 0)
    return errorf("dataset '", name, "': sequence length ", options.seqLen,
                  " must be positive");
  if (!(options.evalFraction >= 0 && options.evalFraction < 1))
    return errorf("dataset '", name, "': eval fraction ", options.evalFraction,
                  " must be in [0, 1)");
  Dataset d;
  d.counts_.assign(options.vocabSize, 0);
  for (size_t i = 0; i < tokens.size(); ++i) {
    int32_t id = tokens[i];
    if (id < 0 || id >= options.vocabSize)
      return errorf("dataset '", name, "': token ", i, " is ", id,
                    ", outside the program's vocabulary [0, ",
                    options.vocabSize, ")",
                    format == DataFormat::Text
                        ? " (text is read as bytes: vocabulary 256 needed)"
                        : "");
    ++d.counts_[id];
  }
  int64_t n = static_cast<int64_t>(tokens.size());
  int64_t window = options.seqLen + 1;
  auto evalTokens = static_cast<int64_t>(
      std::floor(static_cast<double>(n) * options.evalFraction));
  int64_t trainTokens = n - evalTokens;
  if (trainTokens < window)
    return errorf("dataset '", name, "' has ", n, " tokens: the train split (",
                  trainTokens, " tokens) needs at least seq_len + 1 = ", window,
                  " for one window");
  if (options.evalFraction > 0 && evalTokens < window)
    return errorf("dataset '", name, "' has ", n, " tokens: the eval split (",
                  evalTokens, " tokens, eval fraction ", options.evalFraction,
                  ") needs at least seq_len + 1 = ", window,
                  " for one window, so at "
                  "least ",
                  static_cast<int64_t>(std::ceil(static_cast<double>(window) /
                                                 options.evalFraction)),
                  " tokens in all (or eval fraction 0)");
  d.name_ = std::move(name);
  d.format_ = format;
  d.tokens_ = std::move(tokens);
  d.numTrainTokens_ = trainTokens;
  d.seqLen_ = options.seqLen;
  double entropy = 0;
  for (int64_t c : d.counts_)
    if (c > 0) {
      ++d.vocabSeen_;
      double p = static_cast<double>(c) / static_cast<double>(n);
      entropy -= p * std::log(p);
    }
  d.unigramEntropy_ = entropy;
  return d;
}

int64_t Dataset::tokenCount(int64_t id) const {
  return id >= 0 && id < vocabSize() ? counts_[id] : 0;
}

Status Dataset::checkShard(int64_t globalBatch, int64_t rank,
                           int64_t worldSize) const {
  if (worldSize <= 0 || rank < 0 || rank >= worldSize)
    return errorf("rank ", rank, " is not in a world of size ", worldSize);
  if (globalBatch <= 0 || globalBatch % worldSize != 0)
    return errorf("global batch ", globalBatch,
                  " must be a positive multiple of the world size ", worldSize);
  return Status::ok();
}

Batch Dataset::windows(std::span<const int64_t> starts) const {
  Batch batch;
  batch.rows = static_cast<int64_t>(starts.size());
  batch.seqLen = seqLen_;
  batch.tokens.reserve(starts.size() * seqLen_);
  batch.labels.reserve(starts.size() * seqLen_);
  for (int64_t start : starts) {
    const int32_t *w = tokens_.data() + start;
    batch.tokens.insert(batch.tokens.end(), w, w + seqLen_);
    batch.labels.insert(batch.labels.end(), w + 1, w + 1 + seqLen_);
  }
  return batch;
}

StatusOr<Batch> Dataset::trainBatch(uint64_t seed, int64_t step,
                                    int64_t globalBatch, int64_t rank,
                                    int64_t worldSize) const {
  FLEXMOE_RETURN_IF_ERROR(checkShard(globalBatch, rank, worldSize));
  if (step < 1)
    return errorf("train steps count from 1, not ", step);
  // Every rank draws the whole global batch (cheap) and keeps its rows, so
  // the shards of one step always concatenate to the same global batch.
  SplitMix64 rng = SplitMix64::forStep(seed, step);
  auto numStarts = static_cast<uint64_t>(numTrainTokens_ - seqLen_);
  int64_t rows = globalBatch / worldSize;
  std::vector<int64_t> starts;
  starts.reserve(rows);
  for (int64_t row = 0; row < (rank + 1) * rows; ++row) {
    auto start = static_cast<int64_t>(rng.below(numStarts));
    if (row >= rank * rows)
      starts.push_back(start);
  }
  return windows(starts);
}

int64_t Dataset::numEvalBatches(int64_t globalBatch,
                                int64_t maxEvalBatches) const {
  if (globalBatch <= 0)
    return 0;
  int64_t batches = numEvalTokens() / (seqLen_ + 1) / globalBatch;
  return maxEvalBatches >= 0 ? std::min(batches, maxEvalBatches) : batches;
}

StatusOr<Batch> Dataset::evalBatch(int64_t index, int64_t globalBatch,
                                   int64_t rank, int64_t worldSize) const {
  FLEXMOE_RETURN_IF_ERROR(checkShard(globalBatch, rank, worldSize));
  int64_t available = numEvalBatches(globalBatch);
  if (index < 0 || index >= available)
    return errorf("eval batch ", index, " does not exist: the eval split of '",
                  name_, "' holds ", available, " batches of ", globalBatch,
                  " windows");
  int64_t rows = globalBatch / worldSize;
  std::vector<int64_t> starts(rows);
  for (int64_t row = 0; row < rows; ++row)
    starts[row] = numTrainTokens_ +
                  (index * globalBatch + rank * rows + row) * (seqLen_ + 1);
  return windows(starts);
}
