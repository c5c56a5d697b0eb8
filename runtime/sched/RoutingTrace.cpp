//===- RoutingTrace.cpp - routing traces for the simulator ----------------===//
#include "runtime/sched/RoutingTrace.h"

#include "runtime/plan/Placement.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>

using namespace flexmoe;
using namespace flexmoe::sched;
using nlohmann::json;

namespace {

/// Keeps ranks x experts far from overflow whatever a file says; real
/// layers are far smaller.
constexpr int64_t kMaxTraceExperts = 1 << 20;

Status checkHeader(const TraceHeader &header) {
  if (header.worldSize < 1 || header.worldSize > plan::kMaxWorldSize)
    return errorf("world size ", header.worldSize, " is not in [1, ",
                  plan::kMaxWorldSize, "]");
  if (header.tokensPerRank < 0)
    return errorf("tokens per rank ", header.tokensPerRank,
                  " must not be negative");
  if (header.layers.empty())
    return errorf("the trace lists no MoE layer");
  for (size_t i = 0; i < header.layers.size(); ++i) {
    const TraceLayer &layer = header.layers[i];
    if (layer.numExperts < 1 || layer.numExperts > kMaxTraceExperts)
      return errorf("layer ", i, " ('", layer.name, "') has ", layer.numExperts,
                    " experts, not in [1, ", kMaxTraceExperts, "]");
    if (layer.topK < 1 || layer.topK > layer.numExperts)
      return errorf("layer ", i, " ('", layer.name, "') has top-k ", layer.topK,
                    ", not in [1, ", layer.numExperts, "]");
  }
  return Status::ok();
}

/// The checks a record gets on both sides of the file.
Status checkRecord(const TraceHeader &header, int64_t step, int64_t layer,
                   std::span<const int64_t> counts) {
  if (step < 1)
    return errorf("step ", step, " must be at least 1");
  if (layer < 0 || layer >= static_cast<int64_t>(header.layers.size()))
    return errorf("layer ", layer, " is out of range [0, ",
                  header.layers.size(), ")");
  const TraceLayer &info = header.layers[layer];
  const int64_t need = header.worldSize * info.numExperts;
  if (static_cast<int64_t>(counts.size()) != need)
    return errorf("record of layer ", layer, " ('", info.name, "') has ",
                  counts.size(), " counts but ", header.worldSize, " ranks x ",
                  info.numExperts, " experts need ", need);
  for (size_t i = 0; i < counts.size(); ++i)
    if (counts[i] < 0)
      return errorf("rank ", static_cast<int64_t>(i) / info.numExperts,
                    " routes ", counts[i], " tokens to expert ",
                    static_cast<int64_t>(i) % info.numExperts, " of layer ",
                    layer, " ('", info.name, "')");
  return Status::ok();
}

std::string systemError() { return std::strerror(errno); }

/// An integer member of a JSON object, or an error naming it.
Status getInt(const json &object, const char *key, int64_t &out) {
  auto it = object.find(key);
  if (it == object.end())
    return errorf("missing \"", key, "\"");
  if (!it->is_number_integer())
    return errorf("\"", key, "\" is not an integer: ", it->dump());
  if (it->is_number_unsigned() &&
      it->get<uint64_t>() >
          static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return errorf("\"", key, "\" is out of range: ", it->dump());
  out = it->get<int64_t>();
  return Status::ok();
}

Status getString(const json &object, const char *key, std::string &out) {
  auto it = object.find(key);
  if (it == object.end())
    return errorf("missing \"", key, "\"");
  if (!it->is_string())
    return errorf("\"", key, "\" is not a string: ", it->dump());
  out = it->get<std::string>();
  return Status::ok();
}

Status parseHeader(const json &line, TraceHeader &header) {
  if (!line.is_object())
    return errorf("the header is not a JSON object");
  std::string format;
  FLEXMOE_RETURN_IF_ERROR(getString(line, "format", format));
  if (format != kRoutingTraceFormat)
    return errorf("not a routing trace: format is '", format, "', expected '",
                  kRoutingTraceFormat, "'");
  int64_t version = 0;
  FLEXMOE_RETURN_IF_ERROR(getInt(line, "version", version));
  if (version != kRoutingTraceVersion)
    return errorf("routing trace version ", version,
                  " is not supported (this build reads version ",
                  kRoutingTraceVersion, ")");
  FLEXMOE_RETURN_IF_ERROR(getString(line, "program", header.program));
  FLEXMOE_RETURN_IF_ERROR(getInt(line, "world_size", header.worldSize));
  FLEXMOE_RETURN_IF_ERROR(
      getInt(line, "tokens_per_rank", header.tokensPerRank));
  auto layers = line.find("layers");
  if (layers == line.end())
    return errorf("missing \"layers\"");
  if (!layers->is_array())
    return errorf("\"layers\" is not an array");
  for (const json &entry : *layers) {
    if (!entry.is_object())
      return errorf("layer ", header.layers.size(), " is not a JSON object");
    TraceLayer layer;
    Status status = getString(entry, "name", layer.name);
    if (status)
      status = getInt(entry, "num_experts", layer.numExperts);
    if (status)
      status = getInt(entry, "top_k", layer.topK);
    if (!status)
      return std::move(status).withContext(
          "layer " + std::to_string(header.layers.size()));
    header.layers.push_back(std::move(layer));
  }
  return checkHeader(header);
}

Status parseRecord(const json &line, const TraceHeader &header,
                   RoutingTrace::Record &record) {
  if (!line.is_object())
    return errorf("the record is not a JSON object");
  FLEXMOE_RETURN_IF_ERROR(getInt(line, "step", record.step));
  FLEXMOE_RETURN_IF_ERROR(getInt(line, "layer", record.layer));
  auto counts = line.find("counts");
  if (counts == line.end())
    return errorf("missing \"counts\"");
  if (!counts->is_array())
    return errorf("\"counts\" is not an array");
  record.counts.reserve(counts->size());
  for (const json &value : *counts) {
    if (!value.is_number_integer() ||
        (value.is_number_unsigned() &&
         value.get<uint64_t>() >
             static_cast<uint64_t>(std::numeric_limits<int64_t>::max())))
      return errorf("count ", record.counts.size(),
                    " is not a 64-bit integer: ", value.dump());
    record.counts.push_back(value.get<int64_t>());
  }
  return checkRecord(header, record.step, record.layer, record.counts);
}

} // namespace

StatusOr<std::unique_ptr<RoutingTraceWriter>>
RoutingTraceWriter::create(const std::string &path, const TraceHeader &header) {
  if (Status status = checkHeader(header); !status)
    return std::move(status).withContext("routing trace '" + path + "'");
  json layers = json::array();
  for (const TraceLayer &layer : header.layers)
    layers.push_back({{"name", layer.name},
                      {"num_experts", layer.numExperts},
                      {"top_k", layer.topK}});
  // Members in a fixed order (nlohmann's object sorts them; build by hand).
  std::string line =
      "{\"format\":" + json(kRoutingTraceFormat).dump() +
      ",\"version\":" + std::to_string(kRoutingTraceVersion) +
      ",\"program\":" + json(header.program).dump() +
      ",\"world_size\":" + std::to_string(header.worldSize) +
      ",\"tokens_per_rank\":" + std::to_string(header.tokensPerRank) +
      ",\"layers\":" + layers.dump() + "}\n";

  std::unique_ptr<RoutingTraceWriter> writer(new RoutingTraceWriter());
  writer->path_ = path;
  writer->partial_ = path + ".partial";
  writer->header_ = header;
  writer->file_ = std::fopen(writer->partial_.c_str(), "w");
  if (!writer->file_)
    return errorf("cannot write routing trace '", writer->partial_,
                  "': ", systemError());
  if (std::fwrite(line.data(), 1, line.size(), writer->file_) != line.size())
    return errorf("cannot write routing trace '", writer->partial_,
                  "': ", systemError());
  return writer;
}

RoutingTraceWriter::~RoutingTraceWriter() {
  if (file_) {
    std::fclose(file_);
    std::remove(partial_.c_str());
  }
}

Status RoutingTraceWriter::write(int64_t step, int64_t layer,
                                 std::span<const int64_t> counts) {
  if (!file_)
    return errorf("routing trace '", path_, "' is already closed");
  if (Status status = checkRecord(header_, step, layer, counts); !status)
    return std::move(status).withContext("routing trace '" + path_ + "'");
  std::string line = "{\"step\":" + std::to_string(step) +
                     ",\"layer\":" + std::to_string(layer) + ",\"counts\":[";
  for (size_t i = 0; i < counts.size(); ++i) {
    if (i)
      line += ',';
    line += std::to_string(counts[i]);
  }
  line += "]}\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size())
    return errorf("cannot write routing trace '", partial_,
                  "': ", systemError());
  return Status::ok();
}

Status RoutingTraceWriter::close() {
  if (!file_)
    return errorf("routing trace '", path_, "' is already closed");
  bool failed = std::fflush(file_) != 0 || std::ferror(file_);
  std::string why = failed ? systemError() : "";
  if (std::fclose(file_) != 0 && !failed) {
    failed = true;
    why = systemError();
  }
  file_ = nullptr;
  if (failed) {
    std::remove(partial_.c_str());
    return errorf("cannot write routing trace '", partial_, "': ", why);
  }
  // The complete trace stays under the partial name if the rename fails.
  if (std::rename(partial_.c_str(), path_.c_str()) != 0)
    return errorf("cannot rename routing trace '", partial_, "' to '", path_,
                  "': ", systemError());
  return Status::ok();
}

StatusOr<RoutingTrace>
flexmoe::sched::readRoutingTrace(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return errorf("cannot open routing trace '", path, "': ", systemError());

  RoutingTrace trace;
  std::string line;
  int64_t lineNo = 0;
  while (std::getline(in, line)) {
    ++lineNo;
    auto fail = [&](const Status &status) {
      return errorf(path, ":", lineNo, ": ", status.message());
    };
    // The writer ends every line, so a line without its newline is the
    // tail of an interrupted write.
    if (in.eof())
      return fail(
          Status::error("truncated line (no newline at the end of the file)"));
    if (line.empty())
      return fail(Status::error("empty line"));
    json value;
    try {
      value = json::parse(line);
    } catch (const json::exception &error) {
      return fail(errorf("not valid JSON: ", error.what()));
    }
    if (lineNo == 1) {
      if (Status status = parseHeader(value, trace.header); !status)
        return fail(status);
      continue;
    }
    RoutingTrace::Record record;
    if (Status status = parseRecord(value, trace.header, record); !status)
      return fail(status);
    trace.records.push_back(std::move(record));
  }
  if (in.bad())
    return errorf("cannot read routing trace '", path, "': ", systemError());
  if (lineNo == 0)
    return errorf(path, ": empty file, not a routing trace");
  return trace;
}
