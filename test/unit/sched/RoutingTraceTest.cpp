//===- RoutingTraceTest.cpp - routing trace writer and reader -------------===//
#include "runtime/sched/RoutingTrace.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

using namespace flexmoe;
using namespace flexmoe::sched;

namespace {

using Vec = std::vector<int64_t>;
namespace fs = std::filesystem;

TraceHeader twoLayers() {
  TraceHeader header;
  header.program = "gpt \"moe\" tiny";
  header.worldSize = 2;
  header.tokensPerRank = 6;
  header.layers = {{"moe0", 3, 2}, {"moe1", 2, 1}};
  return header;
}

class SchedTrace : public ::testing::Test {
protected:
  void SetUp() override {
    dir =
        fs::path(::testing::TempDir()) /
        ("sched_trace_" +
         std::string(
             ::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }

  std::string path(const std::string &name) const { return dir / name; }

  /// Writes `text` as a trace file and returns the reader's error.
  std::string readError(const std::string &text) {
    std::string file = path("bad.jsonl");
    std::ofstream(file, std::ios::binary) << text;
    StatusOr<RoutingTrace> trace = readRoutingTrace(file);
    return trace ? std::string("ok") : trace.status().message();
  }

  std::string header() const {
    return R"({"format":"flexmoe-routing-trace","version":1,"program":"p",)"
           R"("world_size":2,"tokens_per_rank":4,)"
           R"("layers":[{"name":"moe0","num_experts":2,"top_k":1}]})"
           "\n";
  }

  fs::path dir;
};

TEST_F(SchedTrace, RoundTrip) {
  std::string file = path("trace.jsonl");
  {
    StatusOr<std::unique_ptr<RoutingTraceWriter>> writer =
        RoutingTraceWriter::create(file, twoLayers());
    ASSERT_TRUE(writer) << writer.status().message();
    EXPECT_TRUE(fs::exists(file + ".partial"));
    EXPECT_FALSE(fs::exists(file));
    ASSERT_TRUE((*writer)->write(1, 0, Vec{4, 2, 6, 0, 3, 9}));
    ASSERT_TRUE((*writer)->write(1, 1, Vec{6, 0, 0, 6}));
    ASSERT_TRUE((*writer)->write(2, 0, Vec{0, 0, 0, 1, 1, 1}));
    ASSERT_TRUE((*writer)->close());
    EXPECT_FALSE(fs::exists(file + ".partial"));
    EXPECT_TRUE(fs::exists(file));
    Status again = (*writer)->close();
    ASSERT_FALSE(again);
    EXPECT_EQ(again.message(),
              "routing trace '" + file + "' is already closed");
    Status late = (*writer)->write(3, 0, Vec(6, 0));
    ASSERT_FALSE(late);
    EXPECT_EQ(late.message(), "routing trace '" + file + "' is already closed");
  }
  // Closed traces survive the writer.
  ASSERT_TRUE(fs::exists(file));

  StatusOr<RoutingTrace> trace = readRoutingTrace(file);
  ASSERT_TRUE(trace) << trace.status().message();
  EXPECT_EQ(trace->header.program, "gpt \"moe\" tiny");
  EXPECT_EQ(trace->header.worldSize, 2);
  EXPECT_EQ(trace->header.tokensPerRank, 6);
  ASSERT_EQ(trace->header.layers.size(), 2u);
  EXPECT_EQ(trace->header.layers[1].name, "moe1");
  EXPECT_EQ(trace->header.layers[1].numExperts, 2);
  EXPECT_EQ(trace->header.layers[1].topK, 1);
  ASSERT_EQ(trace->records.size(), 3u);
  EXPECT_EQ(trace->records[0].step, 1);
  EXPECT_EQ(trace->records[0].layer, 0);
  EXPECT_EQ(trace->records[0].counts, (Vec{4, 2, 6, 0, 3, 9}));
  EXPECT_EQ(trace->records[1].layer, 1);
  EXPECT_EQ(trace->records[1].counts, (Vec{6, 0, 0, 6}));
  EXPECT_EQ(trace->records[2].step, 2);
}

// docs/scheduling.md shows these lines; keep them in sync.
TEST_F(SchedTrace, ExactLines) {
  std::string file = path("exact.jsonl");
  TraceHeader header;
  header.program = "gpt-moe-tiny";
  header.worldSize = 2;
  header.tokensPerRank = 8;
  header.layers = {{"moe0", 4, 2}};
  {
    auto writer = RoutingTraceWriter::create(file, header);
    ASSERT_TRUE(writer);
    ASSERT_TRUE((*writer)->write(1, 0, Vec{5, 3, 6, 2, 1, 7, 4, 4}));
    ASSERT_TRUE((*writer)->close());
  }
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(),
            R"({"format":"flexmoe-routing-trace","version":1,)"
            R"("program":"gpt-moe-tiny","world_size":2,"tokens_per_rank":8,)"
            R"("layers":[{"name":"moe0","num_experts":4,"top_k":2}]})"
            "\n"
            R"({"step":1,"layer":0,"counts":[5,3,6,2,1,7,4,4]})"
            "\n");
}

TEST_F(SchedTrace, WriterWithoutCloseRemovesThePartialFile) {
  std::string file = path("crashed.jsonl");
  {
    auto writer = RoutingTraceWriter::create(file, twoLayers());
    ASSERT_TRUE(writer);
    ASSERT_TRUE((*writer)->write(1, 1, Vec{1, 2, 3, 4}));
    EXPECT_TRUE(fs::exists(file + ".partial"));
  }
  EXPECT_FALSE(fs::exists(file + ".partial"));
  EXPECT_FALSE(fs::exists(file));
}

TEST_F(SchedTrace, WriterErrors) {
  std::string file = path("w.jsonl");
  auto writer = RoutingTraceWriter::create(file, twoLayers());
  ASSERT_TRUE(writer);
  auto errorOf = [&](int64_t step, int64_t layer, const Vec &counts) {
    Status status = (*writer)->write(step, layer, counts);
    return status ? std::string("ok") : status.message();
  };
  std::string prefix = "routing trace '" + file + "': ";
  EXPECT_EQ(errorOf(1, 2, Vec(4, 0)),
            prefix + "layer 2 is out of range [0, 2)");
  EXPECT_EQ(errorOf(0, 0, Vec(6, 0)), prefix + "step 0 must be at least 1");
  EXPECT_EQ(errorOf(1, 0, Vec(4, 0)),
            prefix + "record of layer 0 ('moe0') has 4 counts but 2 ranks x 3 "
                     "experts need 6");
  EXPECT_EQ(errorOf(1, 1, Vec{0, 0, -1, 0}),
            prefix + "rank 1 routes -1 tokens to expert 0 of layer 1 ('moe1')");

  TraceHeader bad = twoLayers();
  bad.layers[1].topK = 3;
  auto created = RoutingTraceWriter::create(path("x.jsonl"), bad);
  ASSERT_FALSE(created);
  EXPECT_EQ(created.status().message(),
            "routing trace '" + path("x.jsonl") +
                "': layer 1 ('moe1') has top-k 3, not in [1, 2]");
  EXPECT_FALSE(fs::exists(path("x.jsonl.partial")));
  bad = twoLayers();
  bad.layers.clear();
  created = RoutingTraceWriter::create(path("x.jsonl"), bad);
  ASSERT_FALSE(created);
  EXPECT_EQ(created.status().message(), "routing trace '" + path("x.jsonl") +
                                            "': the trace lists no MoE layer");

  std::string unwritable = path("no/such/dir/t.jsonl");
  created = RoutingTraceWriter::create(unwritable, twoLayers());
  ASSERT_FALSE(created);
  EXPECT_EQ(created.status().message(), "cannot write routing trace '" +
                                            unwritable +
                                            ".partial': No such file or "
                                            "directory");
}

TEST_F(SchedTrace, ReaderErrorsNameFileAndLine) {
  std::string file = path("bad.jsonl");
  EXPECT_EQ(readError(""), file + ": empty file, not a routing trace");
  EXPECT_EQ(readError(R"({"format":"other","version":1})"
                      "\n"),
            file + ":1: not a routing trace: format is 'other', expected "
                   "'flexmoe-routing-trace'");
  EXPECT_EQ(readError(R"({"format":"flexmoe-routing-trace","version":2})"
                      "\n"),
            file + ":1: routing trace version 2 is not supported (this "
                   "build reads version 1)");
  EXPECT_EQ(readError(R"({"version":1})"
                      "\n"),
            file + ":1: missing \"format\"");
  EXPECT_EQ(
      readError(R"({"format":"flexmoe-routing-trace","version":1,)"
                R"("program":"p","world_size":2,"tokens_per_rank":4,)"
                R"("layers":[{"name":"moe0","num_experts":"2","top_k":1}]})"
                "\n"),
      file + ":1: layer 0: \"num_experts\" is not an integer: \"2\"");
  EXPECT_EQ(readError(R"({"format":"flexmoe-routing-trace","version":1,)"
                      R"("program":"p","world_size":0,"tokens_per_rank":4,)"
                      R"("layers":[{"name":"moe0","num_experts":2,"top_k":1}]})"
                      "\n"),
            file + ":1: world size 0 is not in [1, 4096]");
  EXPECT_EQ(readError("[1,2]\n"), file + ":1: the header is not a JSON object");

  // Records.
  EXPECT_EQ(readError(header() + R"({"step":1,"layer":0,"counts":[1,2,3]})"
                                 "\n"),
            file + ":2: record of layer 0 ('moe0') has 3 counts but 2 ranks "
                   "x 2 experts need 4");
  EXPECT_EQ(readError(header() + R"({"step":1,"layer":0,"counts":[1,2,3,4]})"
                                 "\n"
                                 R"({"step":2,"layer":1,"counts":[1,2,3,4]})"
                                 "\n"),
            file + ":3: layer 1 is out of range [0, 1)");
  EXPECT_EQ(readError(header() + R"({"step":1,"layer":0,"counts":[1,2.5,3,4]})"
                                 "\n"),
            file + ":2: count 1 is not a 64-bit integer: 2.5");
  EXPECT_EQ(readError(header() + R"({"step":1,"layer":0,"counts":[1,-2,3,4]})"
                                 "\n"),
            file + ":2: rank 0 routes -2 tokens to expert 1 of layer 0 "
                   "('moe0')");
  EXPECT_EQ(
      readError(header() +
                R"({"step":1,"layer":0,"counts":[1,2,3,18446744073709551615]})"
                "\n"),
      file + ":2: count 3 is not a 64-bit integer: "
             "18446744073709551615");
  EXPECT_EQ(readError(header() + R"({"step":1,"layer":0})"
                                 "\n"),
            file + ":2: missing \"counts\"");
  EXPECT_EQ(readError(header() + "\n"), file + ":2: empty line");
  // A run killed mid-write leaves a line without its newline.
  EXPECT_EQ(readError(header() + R"({"step":1,"layer":0,"counts":[1,2)"),
            file + ":2: truncated line (no newline at the end of the file)");
  std::string garbage = readError(header() + "{\"step\":1,\n");
  EXPECT_EQ(garbage.rfind(file + ":2: not valid JSON: ", 0), 0u) << garbage;

  std::string missing = path("missing.jsonl");
  StatusOr<RoutingTrace> trace = readRoutingTrace(missing);
  ASSERT_FALSE(trace);
  EXPECT_EQ(trace.status().message(), "cannot open routing trace '" + missing +
                                          "': No such file or directory");
}

TEST_F(SchedTrace, HeaderOnlyTraceHasNoRecords) {
  StatusOr<RoutingTrace> trace = [&] {
    std::string file = path("h.jsonl");
    std::ofstream(file) << header();
    return readRoutingTrace(file);
  }();
  ASSERT_TRUE(trace) << trace.status().message();
  EXPECT_TRUE(trace->records.empty());
  EXPECT_EQ(trace->header.layers.size(), 1u);
}

} // namespace
