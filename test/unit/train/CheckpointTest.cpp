//===- CheckpointTest.cpp - save, load, exact resume, expert order --------===//

#include "../executor/MoeTestProgram.h"
#include "../program/ProgramBuilder.h"
#include "TrainTestUtil.h"

#include "runtime/backends/cpu/CpuDevice.h"
#include "runtime/executor/Executor.h"
#include "runtime/train/Checkpoint.h"
#include "runtime/train/Dataset.h"
#include "runtime/train/ExpertSlots.h"
#include "runtime/train/File.h"

#include <gtest/gtest.h>

#include <cstring>

using namespace flexmoe;
using namespace flexmoe::testing;
using namespace flexmoe::testing::moetest;
using namespace flexmoe::train;
using executor::Executor;
using fb::BufferKind;
using fb::ElementType;
using fb::OpAttrs;
using fb::OpCode;
using nlohmann::json;

namespace {

program::LoadedProgram load(const ProgramDesc &desc) {
  StatusOr<program::LoadedProgram> loaded =
      program::loadProgramFromBytes(serialize(desc));
  EXPECT_TRUE(loaded.isOk()) << loaded.status().message();
  return std::move(loaded).value();
}

struct Trainer {
  program::LoadedProgram program;
  cpu::CpuDevice device;
  device::SingleProcessCommunicator comm;
  std::unique_ptr<Executor> executor;

  explicit Trainer(const ProgramDesc &desc, uint64_t seed = 3)
      : program(load(desc)) {
    executor::ExecutorOptions options;
    options.seed = seed;
    StatusOr<std::unique_ptr<Executor>> created =
        Executor::create(program, device, comm, options);
    EXPECT_TRUE(created.isOk()) << created.status().message();
    if (created)
      executor = std::move(created).value();
  }

  /// Runs train steps stepsDone()+1 .. `until` on the dataset's batches.
  void trainUntil(const Dataset &data, int64_t until) {
    while (executor->stepsDone() < until) {
      StatusOr<Batch> batch =
          data.trainBatch(/*seed=*/17, executor->stepsDone() + 1, kB);
      ASSERT_TRUE(batch.isOk()) << batch.status().message();
      ASSERT_TRUE(executor->setInputs(batch->tokens, batch->labels).isOk());
      StatusOr<float> loss = executor->step();
      ASSERT_TRUE(loss.isOk()) << loss.status().message();
      ASSERT_TRUE(std::isfinite(*loss));
    }
  }

  /// The bytes of every persistent buffer, by name.
  std::map<std::string, std::vector<std::byte>> persistent() const {
    std::map<std::string, std::vector<std::byte>> out;
    const auto *buffers = program.program().buffers();
    for (uint32_t id = 0; id < buffers->size(); ++id) {
      const fb::Buffer *b = buffers->Get(id);
      BufferKind k = b->kind();
      if (b->alias_of() >= 0 ||
          (k != BufferKind::Parameter && k != BufferKind::AdamM &&
           k != BufferKind::AdamV))
        continue;
      const device::Operand &op = executor->buffer(id);
      out[b->name()->str()] = {op.data, op.data + op.numBytes()};
    }
    return out;
  }

  std::vector<float> values(const std::string &name) const {
    const auto *buffers = program.program().buffers();
    for (uint32_t id = 0; id < buffers->size(); ++id)
      if (buffers->Get(id)->name()->str() == name) {
        const device::Operand &op = executor->buffer(id);
        return {op.as<float>(), op.as<float>() + op.numElements()};
      }
    ADD_FAILURE() << "no buffer " << name;
    return {};
  }

  /// Overwrites every persistent buffer with garbage and the step counter.
  void scribble() {
    const auto *buffers = program.program().buffers();
    for (uint32_t id = 0; id < buffers->size(); ++id) {
      BufferKind k = buffers->Get(id)->kind();
      if (k == BufferKind::Parameter || k == BufferKind::AdamM ||
          k == BufferKind::AdamV)
        std::memset(executor->buffer(id).data, 0x5a,
                    executor->buffer(id).numBytes());
    }
    executor->setStepsDone(999);
  }
};

Dataset corpus() {
  std::vector<int32_t> tokens(600);
  SplitMix64 rng(5);
  for (int32_t &t : tokens)
    t = static_cast<int32_t>(rng.below(kV));
  DatasetOptions options;
  options.vocabSize = kV;
  options.seqLen = kS;
  StatusOr<Dataset> d = Dataset::fromTokens(tokens, options);
  EXPECT_TRUE(d.isOk()) << d.status().message();
  return std::move(d).value();
}

std::string message(const StatusOr<json> &result) {
  return result.isOk() ? "<ok>" : result.status().message();
}

/// Rewrites P.json's tensors_hash for the current P.safetensors, so that
/// the tensor checks behind the hash check can be reached.
void rehash(const std::string &path) {
  json sidecar = json::parse(readText(checkpointSidecarPath(path)));
  std::string bytes = readText(checkpointTensorsPath(path));
  sidecar["tensors_hash"] = hashString(fnv1a64(bytes));
  writeText(checkpointSidecarPath(path), sidecar.dump());
}

TEST(Checkpoint, TheTestProgramTrains) {
  Trainer run(moeProgram());
  ASSERT_TRUE(run.executor);
  Dataset data = corpus();
  StatusOr<ProgramInputShape> shape = programInputShape(run.program.program());
  ASSERT_TRUE(shape.isOk()) << shape.status().message();
  EXPECT_EQ(shape->vocabSize, kV);
  EXPECT_EQ(shape->localBatch, kB);
  EXPECT_EQ(shape->seqLen, kS);
  EXPECT_EQ(shape->worldSize, 1);
  std::vector<float> w1 = run.values("moe0.w1"), head = run.values("head");
  run.trainUntil(data, 3);
  // Every parameter moves, experts included.
  EXPECT_NE(run.values("moe0.w1"), w1);
  EXPECT_NE(run.values("head"), head);
}

TEST(Checkpoint, RoundTripsParametersStateAndStep) {
  TempDir dir;
  Trainer run(moeProgram());
  ASSERT_TRUE(run.executor);
  run.trainUntil(corpus(), 3);
  auto before = run.persistent();
  std::string path = dir.file("ckpt");
  json trainer = {{"lr_schedule", "cosine"},
                  {"tokens_seen", 96},
                  {"nested", {{"a", {1, 2, 3}}}}};
  ASSERT_TRUE(saveCheckpoint(*run.executor, path, trainer).isOk());
  EXPECT_EQ(dir.list(),
            (std::vector<std::string>{"ckpt.json", "ckpt.safetensors"}));
  EXPECT_TRUE(checkpointExists(path));

  StatusOr<json> sidecar = readCheckpointSidecar(path);
  ASSERT_TRUE(sidecar.isOk()) << message(sidecar);
  EXPECT_EQ((*sidecar)["step"], 3);
  EXPECT_EQ((*sidecar)["world_size"], 1);
  EXPECT_EQ((*sidecar)["format_version"], kCheckpointFormatVersion);
  EXPECT_EQ((*sidecar)["trainer"], trainer);
  EXPECT_EQ((*sidecar)["num_tensors"], 21);

  // The tensors file: names, canonical shapes, values.
  StatusOr<SafetensorsFile> file =
      SafetensorsFile::read(checkpointTensorsPath(path));
  ASSERT_TRUE(file.isOk()) << file.status().message();
  EXPECT_EQ(file->tensors().size(), 21u);
  ASSERT_NE(file->find("optimizer.exp_avg.moe0.w1"), nullptr);
  ASSERT_NE(file->find("optimizer.exp_avg_sq.head"), nullptr);
  EXPECT_EQ(file->find("moe0.w1")->shape, (std::vector<int64_t>{kE, kD, kH}));
  EXPECT_EQ(*file->readF32("head"), run.values("head"));
  EXPECT_EQ(*file->readF32("optimizer.exp_avg_sq.moe0.b2"),
            run.values("moe0.b2.v"));

  run.scribble();
  StatusOr<json> restored = loadCheckpoint(*run.executor, path);
  ASSERT_TRUE(restored.isOk()) << message(restored);
  EXPECT_EQ(*restored, trainer);
  EXPECT_EQ(run.executor->stepsDone(), 3);
  EXPECT_EQ(run.persistent(), before);
}

TEST(Checkpoint, ResumeIsExact) {
  TempDir dir;
  Dataset data = corpus();
  constexpr int64_t kN = 8, kSaveAt = 3;
  Trainer straight(moeProgram());
  ASSERT_TRUE(straight.executor);
  straight.trainUntil(data, kN);

  std::string path = dir.file("resume");
  {
    Trainer first(moeProgram());
    ASSERT_TRUE(first.executor);
    first.trainUntil(data, kSaveAt);
    ASSERT_TRUE(saveCheckpoint(*first.executor, path, json::object()).isOk());
  }
  // A fresh executor with another init seed: nothing may survive but the
  // checkpoint.
  Trainer second(moeProgram(), /*seed=*/99);
  ASSERT_TRUE(second.executor);
  StatusOr<json> loaded = loadCheckpoint(*second.executor, path);
  ASSERT_TRUE(loaded.isOk()) << message(loaded);
  EXPECT_EQ(second.executor->stepsDone(), kSaveAt);
  second.trainUntil(data, kN);
  EXPECT_EQ(second.executor->stepsDone(), kN);
  EXPECT_EQ(second.persistent(), straight.persistent());
}

TEST(Checkpoint, ExpertsLoadIntoAnotherPlacement) {
  TempDir dir;
  Dataset data = corpus();
  Trainer four(moeProgram(4));
  ASSERT_TRUE(four.executor);
  four.trainUntil(data, 2);
  std::string path = dir.file("four");
  ASSERT_TRUE(saveCheckpoint(*four.executor, path, json::object()).isOk());

  // Six slots: experts 0..3 in slots 0..3, slots 4 and 5 empty. Same model,
  // same layout hash.
  Trainer six(moeProgram(6));
  ASSERT_TRUE(six.executor);
  StatusOr<json> loaded = loadCheckpoint(*six.executor, path);
  ASSERT_TRUE(loaded.isOk()) << message(loaded);
  for (const char *name :
       {"moe0.w1", "moe0.b1", "moe0.w2", "moe0.w2.m", "moe0.w1.v"}) {
    std::vector<float> from = four.values(name), to = six.values(name);
    ASSERT_EQ(to.size(), from.size() / 4 * 6) << name;
    std::vector<float> expected = from;
    expected.resize(to.size(), 0.0f);
    EXPECT_EQ(to, expected) << name;
  }
  EXPECT_EQ(six.values("head"), four.values("head"));

  // Saved again from the six-slot program, the tensors are the same.
  std::string again = dir.file("six");
  ASSERT_TRUE(saveCheckpoint(*six.executor, again, json::object()).isOk());
  StatusOr<SafetensorsFile> a =
      SafetensorsFile::read(checkpointTensorsPath(path));
  StatusOr<SafetensorsFile> b =
      SafetensorsFile::read(checkpointTensorsPath(again));
  ASSERT_TRUE(a.isOk() && b.isOk());
  ASSERT_EQ(a->tensors().size(), b->tensors().size());
  for (const TensorInfo &t : a->tensors()) {
    const TensorInfo *u = b->find(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(u->shape, t.shape) << t.name;
    std::span<const std::byte> x = a->data(t), y = b->data(*u);
    EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << t.name;
  }
  EXPECT_EQ(json::parse(readText(checkpointSidecarPath(path)))["layout_hash"],
            json::parse(readText(checkpointSidecarPath(again)))["layout_hash"]);

  // Both continue identically from there.
  four.trainUntil(data, 4);
  six.trainUntil(data, 4);
  std::vector<float> w = six.values("moe0.w2");
  w.resize(w.size() / 6 * 4);
  EXPECT_EQ(w, four.values("moe0.w2"));
}

TEST(ExpertSlots, CanonicalisesReplicatedPlacements) {
  // tinyMoeProgram: 2 ranks, 3 slots, expert 2 on both ranks:
  // rank 0 holds [0, 2, -], rank 1 [1, 2, 3].
  program::LoadedProgram program = load(tinyMoeProgram());
  SlotMap map = slotMapOf(*program.program().moe_layers()->Get(0));
  ASSERT_EQ(map.table, (std::vector<int32_t>{0, 2, -1, 1, 2, 3}));
  // Two floats per expert; slot values encode (rank, slot).
  auto slots = [](int r) {
    std::vector<float> v;
    for (int s = 0; s < 3; ++s)
      v.insert(v.end(), {float(10 * r + s), float(100 + 10 * r + s)});
    return v;
  };
  std::vector<float> r0 = slots(0), r1 = slots(1);
  auto bytes = [](const std::vector<float> &v) {
    return std::span(reinterpret_cast<const std::byte *>(v.data()),
                     v.size() * sizeof(float));
  };
  std::vector<std::span<const std::byte>> ranks = {bytes(r0), bytes(r1)};
  StatusOr<std::vector<std::byte>> experts =
      expertsFromSlots(map, ranks, 2 * sizeof(float));
  ASSERT_TRUE(experts.isOk()) << experts.status().message();
  std::vector<float> e(8);
  std::memcpy(e.data(), experts->data(), 32);
  // Expert 0 = rank 0 slot 0, expert 1 = rank 1 slot 0, expert 2 = its
  // first replica (rank 0 slot 1), expert 3 = rank 1 slot 2.
  EXPECT_EQ(e, (std::vector<float>{0, 100, 10, 110, 1, 101, 12, 112}));

  // Back to slots: each rank's slots get their experts, replicas alike,
  // empty slots zeros.
  std::vector<std::byte> back0 = slotsFromExperts(map, 0, *experts, 8);
  std::vector<std::byte> back1 = slotsFromExperts(map, 1, *experts, 8);
  std::vector<float> s0(6), s1(6);
  std::memcpy(s0.data(), back0.data(), 24);
  std::memcpy(s1.data(), back1.data(), 24);
  EXPECT_EQ(s0, (std::vector<float>{0, 100, 1, 101, 0, 0}));
  EXPECT_EQ(s1, (std::vector<float>{10, 110, 1, 101, 12, 112}));

  // An expert in no slot cannot be saved.
  map.table = {0, 2, -1, 1, 2, -1};
  StatusOr<std::vector<std::byte>> missing = expertsFromSlots(map, ranks, 8);
  ASSERT_FALSE(missing.isOk());
  EXPECT_NE(missing.status().message().find("expert 3 is in no slot"),
            std::string::npos);
}

TEST(Checkpoint, SaveParametersExportsParametersOnly) {
  TempDir dir;
  Trainer run(moeProgram(6));
  ASSERT_TRUE(run.executor);
  std::string path = dir.file("init.safetensors");
  ASSERT_TRUE(saveParameters(*run.executor, path).isOk());
  EXPECT_EQ(dir.list(), std::vector<std::string>{"init.safetensors"});
  StatusOr<SafetensorsFile> file = SafetensorsFile::read(path);
  ASSERT_TRUE(file.isOk()) << file.status().message();
  std::vector<std::string> names;
  for (const TensorInfo &t : file->tensors())
    names.push_back(t.name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"head", "moe0.b1", "moe0.b2", "moe0.gate",
                                      "moe0.w1", "moe0.w2", "wte"}));
  EXPECT_EQ(*file->readF32("wte"), run.values("wte"));
  // Experts in expert order: the empty slots are dropped, and each expert is
  // exactly initNormal's stream for it.
  EXPECT_EQ(file->find("moe0.w2")->shape, (std::vector<int64_t>{kE, kH, kD}));
  std::vector<float> w1 = *file->readF32("moe0.w1");
  for (int64_t e = 0; e < kE; ++e) {
    std::vector<float> expected(kD * kH);
    executor::initNormal(3, "moe0.w1", e, 0.3f, expected);
    EXPECT_TRUE(
        std::equal(expected.begin(), expected.end(), w1.begin() + e * kD * kH))
        << "expert " << e;
  }
  EXPECT_EQ(file->metadata().at("format"), "flexmoe-parameters");
}

TEST(Checkpoint, LoadRejectsABadSidecar) {
  TempDir dir;
  Trainer run(moeProgram());
  ASSERT_TRUE(run.executor);
  std::string path = dir.file("c");
  StatusOr<json> missing = loadCheckpoint(*run.executor, path);
  EXPECT_NE(message(missing).find("checkpoint '" + path +
                                  "' does not exist (no sidecar '" + path +
                                  ".json')"),
            std::string::npos)
      << message(missing);
  EXPECT_FALSE(checkpointExists(path));

  ASSERT_TRUE(saveCheckpoint(*run.executor, path, {{"k", 1}}).isOk());
  std::string good = readText(checkpointSidecarPath(path));
  writeText(checkpointSidecarPath(path), good.substr(0, good.size() / 2));
  EXPECT_NE(
      message(loadCheckpoint(*run.executor, path)).find("is not valid JSON"),
      std::string::npos);

  json sidecar = json::parse(good);
  sidecar["format_version"] = 2;
  writeText(checkpointSidecarPath(path), sidecar.dump());
  EXPECT_NE(message(loadCheckpoint(*run.executor, path))
                .find("has format version 2 but this runtime reads version 1"),
            std::string::npos)
      << message(loadCheckpoint(*run.executor, path));

  sidecar = json::parse(good);
  sidecar.erase("step");
  writeText(checkpointSidecarPath(path), sidecar.dump());
  EXPECT_NE(message(readCheckpointSidecar(path))
                .find("has no non-negative integer \"step\""),
            std::string::npos);

  sidecar = json::parse(good);
  sidecar["format"] = "something-else";
  writeText(checkpointSidecarPath(path), sidecar.dump());
  EXPECT_NE(message(readCheckpointSidecar(path))
                .find("is not a flexmoe checkpoint sidecar"),
            std::string::npos);

  // The tensors file was modified after the save.
  writeText(checkpointSidecarPath(path), good);
  std::string tensors = readText(checkpointTensorsPath(path));
  tensors[tensors.size() - 3] ^= 1;
  writeText(checkpointTensorsPath(path), tensors);
  EXPECT_NE(
      message(loadCheckpoint(*run.executor, path)).find("content hash differs"),
      std::string::npos);
  std::filesystem::remove(checkpointTensorsPath(path));
  EXPECT_NE(message(loadCheckpoint(*run.executor, path))
                .find("cannot open '" + path + ".safetensors'"),
            std::string::npos)
      << message(loadCheckpoint(*run.executor, path));
}

TEST(Checkpoint, LoadNamesAMissingExtraOrMismatchedTensor) {
  TempDir dir;
  Trainer run(moeProgram());
  ASSERT_TRUE(run.executor);
  run.trainUntil(corpus(), 1);
  std::string path = dir.file("c");
  ASSERT_TRUE(saveCheckpoint(*run.executor, path, json::object()).isOk());
  StatusOr<SafetensorsFile> file =
      SafetensorsFile::read(checkpointTensorsPath(path));
  ASSERT_TRUE(file.isOk());
  auto before = run.persistent();

  // Rewrites the tensors file through `edit` and checks the load error.
  auto expectLoadError = [&](auto edit, const std::string &part) {
    SafetensorsWriter w;
    for (const TensorInfo &t : file->tensors()) {
      std::span<const std::byte> d = file->data(t);
      TensorInfo copy = t;
      std::vector<std::byte> bytes(d.begin(), d.end());
      if (!edit(copy, bytes))
        continue;
      ASSERT_TRUE(w.add(copy.name, copy.dtype, copy.shape, bytes).isOk());
    }
    ASSERT_TRUE(w.write(checkpointTensorsPath(path)).isOk());
    rehash(path);
    StatusOr<json> result = loadCheckpoint(*run.executor, path);
    EXPECT_NE(message(result).find(part), std::string::npos) << message(result);
    // A failed load leaves the executor alone.
    EXPECT_EQ(run.persistent(), before);
  };
  expectLoadError(
      [](TensorInfo &t, auto &) { return t.name != "optimizer.exp_avg.head"; },
      "tensor 'optimizer.exp_avg.head' [8, 16] of the program is missing from");
  expectLoadError(
      [](TensorInfo &t, auto &bytes) {
        if (t.name == "moe0.b1")
          t.name = "moe0.bias1";
        return true;
      },
      "tensor 'moe0.b1' [4, 16] of the program is missing");
  expectLoadError(
      [](TensorInfo &t, auto &) {
        if (t.name == "head")
          t.shape = {kV, kD};
        return true;
      },
      "tensor 'head' has shape [16, 8] in the checkpoint but [8, 16] in the "
      "program");
  expectLoadError(
      [](TensorInfo &t, auto &) {
        if (t.name == "wte")
          t.dtype = Dtype::I32;
        return true;
      },
      "tensor 'wte' is I32 in the checkpoint but F32 in the program");
  bool added = false;
  expectLoadError(
      [&](TensorInfo &t, auto &) {
        if (t.name == "wte" && !added) {
          added = true;
          t.name = "zzz.extra";
        }
        return true;
      },
      "tensor 'wte' [16, 8] of the program is missing");
}

TEST(Checkpoint, LoadRejectsAProgramWithAnotherLayout) {
  TempDir dir;
  Trainer small(moeProgram(4, kH));
  ASSERT_TRUE(small.executor);
  std::string path = dir.file("c");
  ASSERT_TRUE(saveCheckpoint(*small.executor, path, json::object()).isOk());
  Trainer wide(moeProgram(4, 2 * kH));
  ASSERT_TRUE(wide.executor);
  StatusOr<json> result = loadCheckpoint(*wide.executor, path);
  EXPECT_NE(message(result).find(
                "the program's parameter layout differs from the "
                "checkpoint's: tensor 'moe0.w1' has shape [4, 8, 16] in the "
                "checkpoint but [4, 8, 32] in the program"),
            std::string::npos)
      << message(result);
}

TEST(Checkpoint, ExtraTensorsAreRejected) {
  TempDir dir;
  Trainer run(moeProgram());
  ASSERT_TRUE(run.executor);
  std::string path = dir.file("c");
  ASSERT_TRUE(saveCheckpoint(*run.executor, path, json::object()).isOk());
  StatusOr<SafetensorsFile> file =
      SafetensorsFile::read(checkpointTensorsPath(path));
  ASSERT_TRUE(file.isOk());
  SafetensorsWriter w;
  for (const TensorInfo &t : file->tensors()) {
    std::span<const std::byte> d = file->data(t);
    ASSERT_TRUE(w.add(t.name, t.dtype, t.shape, {d.begin(), d.end()}).isOk());
  }
  std::vector<float> one = {1};
  ASSERT_TRUE(w.addF32("stray", {1}, one).isOk());
  ASSERT_TRUE(w.write(checkpointTensorsPath(path)).isOk());
  rehash(path);
  StatusOr<json> result = loadCheckpoint(*run.executor, path);
  EXPECT_NE(message(result).find(
                "tensor 'stray' [1] of the checkpoint is not in the program"),
            std::string::npos)
      << message(result);
}

TEST(Checkpoint, AFailedSaveLeavesNoFiles) {
  TempDir dir;
  Trainer run(moeProgram());
  ASSERT_TRUE(run.executor);
  // No such directory.
  Status status =
      saveCheckpoint(*run.executor, dir.file("no/such/c"), json::object());
  ASSERT_FALSE(status.isOk());
  EXPECT_NE(status.message().find("saving checkpoint '" +
                                  dir.file("no/such/c") + "'"),
            std::string::npos)
      << status.message();
  EXPECT_TRUE(dir.list().empty());

  // The sidecar cannot be written after the tensors were: the tensors go.
  std::filesystem::create_directory(dir.file("c.json.tmp"));
  status = saveCheckpoint(*run.executor, dir.file("c"), json::object());
  ASSERT_FALSE(status.isOk());
  EXPECT_EQ(dir.list(), std::vector<std::string>{"c.json.tmp"});
  EXPECT_FALSE(checkpointExists(dir.file("c")));
  std::filesystem::remove(dir.file("c.json.tmp"));

  // Overwriting works, and a failed overwrite leaves no checkpoint rather
  // than a mismatched pair.
  ASSERT_TRUE(saveCheckpoint(*run.executor, dir.file("c"), {{"v", 1}}).isOk());
  ASSERT_TRUE(saveCheckpoint(*run.executor, dir.file("c"), {{"v", 2}}).isOk());
  EXPECT_EQ((*readCheckpointSidecar(dir.file("c")))["trainer"]["v"], 2);
  std::filesystem::create_directory(dir.file("c.json.tmp"));
  EXPECT_FALSE(saveCheckpoint(*run.executor, dir.file("c"), {{"v", 3}}).isOk());
  EXPECT_FALSE(checkpointExists(dir.file("c")));
  EXPECT_EQ(dir.list(), std::vector<std::string>{"c.json.tmp"});
}

/// A communicator of two ranks that never communicates: enough to bind a
/// world-size-2 program.
class TwoRanks final : public device::Communicator {
public:
  explicit TwoRanks(int64_t rank = 0) : rank_(rank) {}
  int64_t rank() const override { return rank_; }
  int64_t worldSize() const override { return 2; }
  Status allGather(std::span<const int64_t>, std::span<int64_t>) override {
    return errorf("unused");
  }
  Status allToAllV(const std::byte *, std::span<const int64_t>,
                   std::span<const int64_t>, std::byte *,
                   std::span<const int64_t>, std::span<const int64_t>,
                   size_t) override {
    return errorf("unused");
  }
  Status allReduce(float *, int64_t, device::ReduceOp) override {
    return errorf("unused");
  }
  Status allReduceHost(std::span<double>, device::ReduceOp) override {
    return errorf("unused");
  }
  Status groupSum(float *, int64_t, std::span<const int32_t>) override {
    return errorf("unused");
  }
  Status broadcast(std::byte *, size_t, int64_t) override {
    return errorf("unused");
  }
  Status send(const std::byte *, size_t, int64_t, int) override {
    return errorf("unused");
  }
  Status recv(std::byte *, size_t, int64_t, int) override {
    return errorf("unused");
  }
  Status barrier() override { return errorf("unused"); }

private:
  int64_t rank_;
};

TEST(Checkpoint, SavingAtWorldSizeTwoFailsCleanlyWhenTheGatherFails) {
  // Rank 0 gathers the other rank's expert slots over the communicator;
  // when that fails, the error says so and nothing is written. (The real
  // gather runs under mpirun in test/Distributed.)
  TempDir dir;
  program::LoadedProgram program = load(tinyMoeProgram());
  cpu::CpuDevice device;
  TwoRanks comm;
  StatusOr<std::unique_ptr<Executor>> created =
      Executor::create(program, device, comm);
  ASSERT_TRUE(created.isOk()) << created.status().message();
  Status status = saveCheckpoint(**created, dir.file("c"), json::object());
  ASSERT_FALSE(status.isOk());
  EXPECT_NE(status.message().find("unused"), std::string::npos)
      << status.message();
  EXPECT_TRUE(dir.list().empty());
  EXPECT_FALSE(saveParameters(**created, dir.file("p.safetensors")).isOk());
  EXPECT_TRUE(dir.list().empty());
}

TEST(Checkpoint, EachRankLoadsItsOwnSlotsAtWorldSizeTwo) {
  // A checkpoint of tinyMoeProgram's model written by hand (saving needs
  // world size 1 for now): every value encodes its tensor and position.
  TempDir dir;
  program::LoadedProgram program = load(tinyMoeProgram());
  StatusOr<std::vector<LayoutEntry>> layout =
      checkpointLayout(program.program());
  ASSERT_TRUE(layout.isOk()) << layout.status().message();
  SafetensorsWriter writer;
  std::map<std::string, std::vector<float>> saved;
  for (size_t t = 0; t < layout->size(); ++t) {
    const LayoutEntry &e = (*layout)[t];
    int64_t n = 1;
    for (int64_t d : e.shape)
      n *= d;
    std::vector<float> v(n);
    for (int64_t i = 0; i < n; ++i)
      v[i] = static_cast<float>(1000 * (t + 1) + i);
    ASSERT_TRUE(writer.addF32(e.name, e.shape, v).isOk());
    saved[e.name] = v;
  }
  std::string path = dir.file("c");
  ASSERT_TRUE(writer.write(checkpointTensorsPath(path)).isOk());
  json sidecar = {{"format", kCheckpointFormat},
                  {"format_version", kCheckpointFormatVersion},
                  {"program_name", "train_step"},
                  {"layout_hash", layoutHash(*layout)},
                  {"step", 5},
                  {"world_size", 2},
                  {"num_tensors", layout->size()},
                  {"tensors_file", "c.safetensors"},
                  {"tensors_hash", hashString(writer.fileHash())},
                  {"trainer", json::object()}};
  writeText(checkpointSidecarPath(path), sidecar.dump());

  // Rank 0 holds experts [0, 2, -], rank 1 [1, 2, 3]; b1 is [slots, 16].
  const std::vector<std::vector<int>> slotExperts = {{0, 2, -1}, {1, 2, 3}};
  for (int64_t rank : {0, 1}) {
    cpu::CpuDevice device;
    TwoRanks comm(rank);
    StatusOr<std::unique_ptr<Executor>> created =
        Executor::create(program, device, comm);
    ASSERT_TRUE(created.isOk()) << created.status().message();
    Executor &ex = **created;
    StatusOr<json> loaded = loadCheckpoint(ex, path);
    ASSERT_TRUE(loaded.isOk()) << message(loaded);
    EXPECT_EQ(ex.stepsDone(), 5);
    uint32_t b1 = findBuffer(tinyMoeProgram(), "moe1.b1");
    const float *slots = ex.buffer(b1).as<float>();
    const std::vector<float> &experts = saved["moe1.b1"];
    for (int s = 0; s < 3; ++s)
      for (int i = 0; i < 16; ++i) {
        int e = slotExperts[rank][s];
        EXPECT_EQ(slots[s * 16 + i], e < 0 ? 0.0f : experts[e * 16 + i])
            << "rank " << rank << " slot " << s;
      }
    uint32_t head = findBuffer(tinyMoeProgram(), "head");
    EXPECT_TRUE(std::equal(saved["head"].begin(), saved["head"].end(),
                           ex.buffer(head).as<float>()));
  }
}

TEST(Checkpoint, LoadParametersRestoresParametersOnly) {
  TempDir dir;
  Dataset data = corpus();
  Trainer run(moeProgram());
  ASSERT_TRUE(run.executor);
  run.trainUntil(data, 2);
  std::string path = dir.file("p.safetensors");
  ASSERT_TRUE(saveParameters(*run.executor, path).isOk());
  std::string ckpt = dir.file("c");
  ASSERT_TRUE(saveCheckpoint(*run.executor, ckpt, json::object()).isOk());
  std::vector<float> w1 = run.values("moe0.w1"), m = run.values("moe0.w1.m");
  run.trainUntil(data, 4);
  ASSERT_NE(run.values("moe0.w1"), w1);
  std::vector<float> mNow = run.values("moe0.w1.m");

  ASSERT_TRUE(loadParameters(*run.executor, path).isOk());
  EXPECT_EQ(run.values("moe0.w1"), w1);
  EXPECT_EQ(run.values("moe0.w1.m"), mNow); // optimizer state untouched
  EXPECT_EQ(run.executor->stepsDone(), 4);

  // A checkpoint's tensors file serves too: its optimizer.* are ignored.
  run.trainUntil(data, 5);
  ASSERT_TRUE(
      loadParameters(*run.executor, checkpointTensorsPath(ckpt)).isOk());
  EXPECT_EQ(run.values("moe0.w1"), w1);
  EXPECT_NE(run.values("moe0.w1.m"), m);

  // Another model's parameters are refused by name.
  Trainer wide(moeProgram(4, 2 * kH));
  ASSERT_TRUE(wide.executor);
  Status status = loadParameters(*wide.executor, path);
  ASSERT_FALSE(status.isOk());
  EXPECT_NE(status.message().find("loading parameters from '" + path +
                                  "': tensor 'moe0.w1' has shape [4, 8, 16] "
                                  "in the checkpoint but [4, 8, 32]"),
            std::string::npos)
      << status.message();
}

} // namespace
