//===- SafetensorsTest.cpp - round trips and rejected corruptions ---------===//

#include "TrainTestUtil.h"

#include "runtime/train/Dataset.h"
#include "runtime/train/File.h"
#include "runtime/train/Safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

using namespace flexmoe;
using namespace flexmoe::testing;
using namespace flexmoe::train;

namespace {

SafetensorsWriter sampleWriter() {
  SafetensorsWriter w;
  std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -0.0f};
  std::vector<int64_t> b = {1, -2, int64_t(1) << 40};
  std::vector<int32_t> c = {7};
  EXPECT_TRUE(w.addF32("layer.weight", {2, 3}, a).isOk());
  EXPECT_TRUE(w.addI64("counts", {3}, b).isOk());
  EXPECT_TRUE(w.addI32("scalar", {}, c).isOk());
  EXPECT_TRUE(w.addF32("empty", {0, 4}, {}).isOk());
  w.setMetadata("format", "test");
  w.setMetadata("step", "12");
  return w;
}

/// A file from a hand-written header and data section.
std::vector<std::byte> rawFile(const std::string &header,
                               std::vector<uint8_t> data,
                               int64_t lengthDelta = 0) {
  uint64_t n = header.size() + lengthDelta;
  std::vector<std::byte> out(8 + header.size() + data.size());
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  if (!data.empty())
    std::memcpy(out.data() + 8 + header.size(), data.data(), data.size());
  return out;
}

void expectRejected(const std::vector<std::byte> &bytes,
                    const std::string &part) {
  StatusOr<SafetensorsFile> file = SafetensorsFile::parse(bytes, "bad.st");
  ASSERT_FALSE(file.isOk()) << "expected an error containing: " << part;
  EXPECT_NE(file.status().message().find(part), std::string::npos)
      << file.status().message();
  EXPECT_NE(file.status().message().find("'bad.st'"), std::string::npos)
      << file.status().message();
}

TEST(Safetensors, RoundTripsTensorsAndMetadata) {
  TempDir dir;
  SafetensorsWriter w = sampleWriter();
  ASSERT_TRUE(w.write(dir.file("t.safetensors")).isOk());
  // Atomic write: no tmp file remains.
  EXPECT_EQ(dir.list(), std::vector<std::string>{"t.safetensors"});
  StatusOr<SafetensorsFile> file =
      SafetensorsFile::read(dir.file("t.safetensors"));
  ASSERT_TRUE(file.isOk()) << file.status().message();
  ASSERT_EQ(file->tensors().size(), 4u);
  EXPECT_EQ(*file->readF32("layer.weight"),
            (std::vector<float>{1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -0.0f}));
  EXPECT_TRUE(std::signbit((*file->readF32("layer.weight"))[5]));
  EXPECT_EQ(*file->readI64("counts"),
            (std::vector<int64_t>{1, -2, int64_t(1) << 40}));
  EXPECT_EQ(*file->readI32("scalar"), std::vector<int32_t>{7});
  EXPECT_TRUE(file->find("scalar")->shape.empty());
  EXPECT_EQ(file->find("empty")->shape, (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(file->find("layer.weight")->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(file->find("nope"), nullptr);
  EXPECT_EQ(file->metadata().at("step"), "12");
  EXPECT_EQ(file->metadata().at("format"), "test");
  // Wrong dtype requested.
  StatusOr<std::vector<float>> wrong = file->readF32("counts");
  ASSERT_FALSE(wrong.isOk());
  EXPECT_NE(wrong.status().message().find("'counts' is I64, expected F32"),
            std::string::npos);
  // The data section starts 8-byte aligned, and the hash is the file's.
  uint64_t headerBytes;
  std::memcpy(&headerBytes, file->bytes().data(), 8);
  EXPECT_EQ(headerBytes % 8, 0u);
  EXPECT_EQ(w.fileHash(), fnv1a64(file->bytes()));
  EXPECT_EQ(w.serialize(),
            std::vector<std::byte>(file->bytes().begin(), file->bytes().end()));
}

TEST(Safetensors, ReadsAHandWrittenFile) {
  // As the Python library writes it: keys in any order, F32 little-endian.
  std::string header =
      R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
      R"("a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
      R"("__metadata__":{"k":"v"}}   )";
  std::vector<uint8_t> data = {1, 2, 3, 4, 0x00, 0x00, 0x80, 0x3f};
  StatusOr<SafetensorsFile> file =
      SafetensorsFile::parse(rawFile(header, data));
  ASSERT_TRUE(file.isOk()) << file.status().message();
  EXPECT_EQ(*file->readF32("b"), std::vector<float>{1.0f});
  EXPECT_EQ(file->find("a")->dtype, Dtype::U8);
  EXPECT_EQ(file->data(*file->find("a"))[2], std::byte{3});
  EXPECT_EQ(file->metadata().at("k"), "v");
}

TEST(Safetensors, WriterRejectsBadTensors) {
  SafetensorsWriter w;
  std::vector<float> six(6);
  EXPECT_TRUE(w.addF32("x", {2, 3}, six).isOk());
  Status twice = w.addF32("x", {6}, six);
  ASSERT_FALSE(twice.isOk());
  EXPECT_NE(twice.message().find("'x' is added twice"), std::string::npos);
  Status size = w.addF32("y", {4}, six);
  ASSERT_FALSE(size.isOk());
  EXPECT_NE(size.message().find("needs 16 bytes, not 24"), std::string::npos)
      << size.message();
  EXPECT_FALSE(w.addF32("__metadata__", {6}, six).isOk());
  EXPECT_FALSE(w.addF32("", {6}, six).isOk());
  EXPECT_FALSE(w.addF32("neg", {-1}, {}).isOk());
}

TEST(Safetensors, AFailedWriteLeavesNothing) {
  TempDir dir;
  SafetensorsWriter w = sampleWriter();
  Status status = w.write(dir.file("missing/dir/t.safetensors"));
  ASSERT_FALSE(status.isOk());
  EXPECT_NE(status.message().find("cannot create"), std::string::npos);
  // An existing file survives a failed replacement.
  writeText(dir.file("t.safetensors"), "old");
  std::filesystem::create_directory(dir.file("t.safetensors.tmp"));
  EXPECT_FALSE(w.write(dir.file("t.safetensors")).isOk());
  EXPECT_EQ(readText(dir.file("t.safetensors")), "old");
}

TEST(Safetensors, RejectsEachCorruption) {
  const std::string ok =
      R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  std::vector<uint8_t> eight(8, 0);
  // Control: the well-formed file parses.
  ASSERT_TRUE(SafetensorsFile::parse(rawFile("{" + ok + "}", eight)).isOk());

  expectRejected(std::vector<std::byte>(5), "only 5 bytes");
  expectRejected(rawFile("{" + ok + "}", eight, 100),
                 "goes beyond the end of the file");
  expectRejected(rawFile("{" + ok, eight), "header is not valid JSON");
  expectRejected(rawFile("[1, 2]", {}), "header is not a JSON object");
  expectRejected(rawFile(R"({"t": 3})", {}),
                 "tensor 't': entry is not an object");
  expectRejected(
      rawFile(R"({"t":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}})",
              eight),
      "tensor 't': unknown dtype 'F31'");
  expectRejected(rawFile(R"({"t":{"shape":[2],"data_offsets":[0,8]}})", eight),
                 "no dtype");
  expectRejected(
      rawFile(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
              eight),
      "not a non-negative integer");
  expectRejected(
      rawFile(R"({"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})",
              eight),
      "not a non-negative integer");
  expectRejected(
      rawFile(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", eight),
      "data_offsets is not a pair");
  expectRejected(
      rawFile(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})",
              eight),
      "end before they begin");
  expectRejected(
      rawFile(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})",
              eight),
      "go beyond the data section (8 bytes)");
  expectRejected(
      rawFile(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
              eight),
      "shape [3] of F32 needs 12 bytes but data_offsets [0,8] hold 8");
  expectRejected(
      rawFile(R"({"t":{"dtype":"F32","shape":[4611686018427387904,4],)"
              R"("data_offsets":[0,8]}})",
              eight),
      "is too large");
  expectRejected(
      rawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
              R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
              eight),
      "tensors 'a' and 'b' overlap");
  expectRejected(
      rawFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
              eight),
      "bytes [0, 4) of the data section belong to no tensor");
  std::vector<uint8_t> twelve(12, 0);
  expectRejected(rawFile("{" + ok + "}", twelve),
                 "bytes [8, 12) of the data section belong to no tensor");
  expectRejected(rawFile(R"({"__metadata__":{"k":1}})", {}),
                 "__metadata__ entry 'k' is not a string");
  expectRejected(rawFile(R"({"__metadata__":[]})", {}),
                 "__metadata__ is not an object");
}

TEST(Safetensors, RandomCorruptionNeverCrashes) {
  std::vector<std::byte> good = sampleWriter().serialize();
  SplitMix64 rng(2024);
  int accepted = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    std::vector<std::byte> bytes = good;
    switch (trial % 4) {
    case 0:
      bytes.resize(rng.below(bytes.size()));
      break;
    case 1:
    case 2: {
      int flips = 1 + static_cast<int>(rng.below(4));
      for (int f = 0; f < flips; ++f) {
        // Mostly the length and the header, where the structure is.
        size_t limit =
            trial % 4 == 1 ? std::min<size_t>(bytes.size(), 200) : bytes.size();
        bytes[rng.below(limit)] ^= std::byte(1 + rng.below(255));
      }
      break;
    }
    default:
      bytes.insert(bytes.begin() + rng.below(bytes.size()),
                   std::byte(rng.below(256)));
      break;
    }
    StatusOr<SafetensorsFile> file = SafetensorsFile::parse(bytes);
    if (!file) {
      EXPECT_FALSE(file.status().message().empty());
      continue;
    }
    ++accepted;
    // Whatever was accepted is self-consistent.
    for (const TensorInfo &t : file->tensors()) {
      std::span<const std::byte> data = file->data(t);
      EXPECT_EQ(static_cast<int64_t>(data.size()),
                t.numElements() * dtypeSize(t.dtype));
      EXPECT_GE(data.data(), file->bytes().data());
      EXPECT_LE(data.data() + data.size(),
                file->bytes().data() + file->bytes().size());
    }
  }
  // Flips in the data section keep the file valid; most others do not.
  EXPECT_GT(accepted, 0);
  EXPECT_LT(accepted, 4000);
}

TEST(Safetensors, SurvivesDeeplyNestedHeaders) {
  // The JSON parser and destructor must not recurse once per level.
  std::string open(200000, '['), close(200000, ']');
  expectRejected(rawFile("{\"t\":" + open + close + "}", {}),
                 "tensor 't': entry is not an object");
  expectRejected(rawFile(open, {}), "header is not valid JSON");
}

} // namespace
