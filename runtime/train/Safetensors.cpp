//===- Safetensors.cpp - reading and writing safetensors files ------------===//
#include "runtime/train/Safetensors.h"

#include "runtime/train/File.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <sstream>

using namespace flexmoe;
using namespace flexmoe::train;
using nlohmann::json;

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would "
              "need byte swaps");

namespace {

struct DtypeInfo {
  Dtype dtype;
  std::string_view name;
  int64_t size;
};

constexpr std::array<DtypeInfo, 13> kDtypes = {{
    {Dtype::F64, "F64", 8},
    {Dtype::F32, "F32", 4},
    {Dtype::F16, "F16", 2},
    {Dtype::BF16, "BF16", 2},
    {Dtype::I64, "I64", 8},
    {Dtype::I32, "I32", 4},
    {Dtype::I16, "I16", 2},
    {Dtype::I8, "I8", 1},
    {Dtype::U64, "U64", 8},
    {Dtype::U32, "U32", 4},
    {Dtype::U16, "U16", 2},
    {Dtype::U8, "U8", 1},
    {Dtype::BOOL, "BOOL", 1},
}};

/// The reference implementation's bound: a larger header is an attack or a
/// corrupt file, not a checkpoint.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

/// numElements × elementSize, or nullopt on overflow.
std::optional<uint64_t> byteSize(std::span<const int64_t> shape,
                                 int64_t elementSize) {
  uint64_t n = static_cast<uint64_t>(elementSize);
  constexpr uint64_t kLimit = std::numeric_limits<int64_t>::max();
  for (int64_t d : shape) {
    if (d < 0)
      return std::nullopt;
    uint64_t ud = static_cast<uint64_t>(d);
    if (ud != 0 && n > kLimit / ud)
      return std::nullopt;
    n *= ud;
  }
  return n;
}

/// A non-negative JSON integer, or nullopt.
std::optional<uint64_t> asIndex(const json &value) {
  if (value.is_number_unsigned())
    return value.get<uint64_t>();
  if (value.is_number_integer()) {
    int64_t v = value.get<int64_t>();
    if (v >= 0)
      return static_cast<uint64_t>(v);
  }
  return std::nullopt;
}

} // namespace

std::string_view flexmoe::train::dtypeName(Dtype dtype) {
  for (const DtypeInfo &info : kDtypes)
    if (info.dtype == dtype)
      return info.name;
  return "?";
}

std::optional<Dtype> flexmoe::train::parseDtype(std::string_view name) {
  for (const DtypeInfo &info : kDtypes)
    if (info.name == name)
      return info.dtype;
  return std::nullopt;
}

int64_t flexmoe::train::dtypeSize(Dtype dtype) {
  for (const DtypeInfo &info : kDtypes)
    if (info.dtype == dtype)
      return info.size;
  return 0;
}

int64_t TensorInfo::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

std::string flexmoe::train::shapeString(std::span<const int64_t> shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i)
    os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

//===----------------------------------------------------------------------===//
// Writer
//===----------------------------------------------------------------------===//

Status SafetensorsWriter::add(std::string name, Dtype dtype,
                              std::vector<int64_t> shape,
                              std::vector<std::byte> data) {
  if (name.empty() || name == "__metadata__")
    return errorf("invalid tensor name '", name, "'");
  for (const Entry &entry : tensors_)
    if (entry.name == name)
      return errorf("tensor '", name, "' is added twice");
  std::optional<uint64_t> bytes = byteSize(shape, dtypeSize(dtype));
  if (!bytes)
    return errorf("tensor '", name, "' has an invalid shape ",
                  shapeString(shape));
  if (*bytes != data.size())
    return errorf("tensor '", name, "' of shape ", shapeString(shape), " and ",
                  dtypeName(dtype), " needs ", *bytes, " bytes, not ",
                  data.size());
  tensors_.push_back(
      {std::move(name), dtype, std::move(shape), std::move(data)});
  return Status::ok();
}

template <typename T>
static std::vector<std::byte> copyBytes(std::span<const T> data) {
  std::vector<std::byte> bytes(data.size_bytes());
  if (!bytes.empty())
    std::memcpy(bytes.data(), data.data(), bytes.size());
  return bytes;
}

Status SafetensorsWriter::addF32(std::string name, std::vector<int64_t> shape,
                                 std::span<const float> data) {
  return add(std::move(name), Dtype::F32, std::move(shape), copyBytes(data));
}
Status SafetensorsWriter::addI64(std::string name, std::vector<int64_t> shape,
                                 std::span<const int64_t> data) {
  return add(std::move(name), Dtype::I64, std::move(shape), copyBytes(data));
}
Status SafetensorsWriter::addI32(std::string name, std::vector<int64_t> shape,
                                 std::span<const int32_t> data) {
  return add(std::move(name), Dtype::I32, std::move(shape), copyBytes(data));
}

void SafetensorsWriter::setMetadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

std::string SafetensorsWriter::header() const {
  json header = json::object();
  uint64_t offset = 0;
  for (const Entry &entry : tensors_) {
    uint64_t end = offset + entry.data.size();
    header[entry.name] = {{"dtype", std::string(dtypeName(entry.dtype))},
                          {"shape", entry.shape},
                          {"data_offsets", {offset, end}}};
    offset = end;
  }
  if (!metadata_.empty())
    header["__metadata__"] = metadata_;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

std::vector<std::byte> SafetensorsWriter::serialize() const {
  std::string text = header();
  size_t total = 8 + text.size();
  for (const Entry &entry : tensors_)
    total += entry.data.size();
  std::vector<std::byte> out(total);
  uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  size_t at = 8 + text.size();
  for (const Entry &entry : tensors_) {
    if (!entry.data.empty())
      std::memcpy(out.data() + at, entry.data.data(), entry.data.size());
    at += entry.data.size();
  }
  return out;
}

Status SafetensorsWriter::write(const std::string &path) const {
  // Written piece by piece: a checkpoint's tensors are not copied again.
  std::string text = header();
  uint64_t n = text.size();
  std::array<std::byte, 8> length;
  std::memcpy(length.data(), &n, 8);
  std::vector<std::span<const std::byte>> pieces;
  pieces.push_back(length);
  pieces.push_back(
      std::span(reinterpret_cast<const std::byte *>(text.data()), text.size()));
  for (const Entry &entry : tensors_)
    pieces.push_back(entry.data);
  return writeFileAtomically(path, pieces);
}

uint64_t SafetensorsWriter::fileHash() const {
  std::string text = header();
  uint64_t n = text.size();
  std::array<std::byte, 8> length;
  std::memcpy(length.data(), &n, 8);
  uint64_t hash = fnv1a64(length);
  hash = fnv1a64(text, hash);
  for (const Entry &entry : tensors_)
    hash = fnv1a64(entry.data, hash);
  return hash;
}

//===----------------------------------------------------------------------===//
// Reader
//===----------------------------------------------------------------------===//

StatusOr<SafetensorsFile> SafetensorsFile::read(const std::string &path) {
  StatusOr<std::vector<std::byte>> bytes = readFile(path);
  if (!bytes)
    return bytes.status();
  return parse(std::move(bytes).value(), path);
}

StatusOr<SafetensorsFile> SafetensorsFile::parse(std::vector<std::byte> bytes,
                                                 std::string name) {
  auto fail = [&](auto &&...parts) {
    return errorf("safetensors file '", name, "': ", parts...);
  };
  if (bytes.size() < 8)
    return fail("only ", bytes.size(),
                " bytes, shorter than the 8-byte header length");
  uint64_t headerBytes = 0;
  std::memcpy(&headerBytes, bytes.data(), 8);
  if (headerBytes > bytes.size() - 8)
    return fail("header length ", headerBytes,
                " goes beyond the end of the file (", bytes.size(), " bytes)");
  if (headerBytes > kMaxHeaderBytes)
    return fail("header length ", headerBytes, " exceeds the limit of ",
                kMaxHeaderBytes, " bytes");
  const char *text = reinterpret_cast<const char *>(bytes.data() + 8);
  json header;
  try {
    header = json::parse(text, text + headerBytes, nullptr,
                         /*allow_exceptions=*/false);
  } catch (const std::exception &e) {
    return fail("header is not valid JSON: ", e.what());
  }
  if (header.is_discarded())
    return fail("header is not valid JSON");
  if (!header.is_object())
    return fail("header is not a JSON object");

  SafetensorsFile file;
  file.name_ = name;
  file.dataStart_ = 8 + headerBytes;
  uint64_t dataBytes = bytes.size() - file.dataStart_;
  try {
    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string &key = it.key();
      const json &value = it.value();
      if (key == "__metadata__") {
        if (!value.is_object())
          return fail("__metadata__ is not an object");
        for (auto m = value.begin(); m != value.end(); ++m) {
          if (!m.value().is_string())
            return fail("__metadata__ entry '", m.key(), "' is not a string");
          file.metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      auto bad = [&](auto &&...parts) {
        return fail("tensor '", key, "': ", parts...);
      };
      if (!value.is_object())
        return bad("entry is not an object");
      TensorInfo info;
      info.name = key;
      auto dtype = value.find("dtype");
      if (dtype == value.end() || !dtype->is_string())
        return bad("no dtype string");
      std::optional<Dtype> parsed = parseDtype(dtype->get<std::string>());
      if (!parsed)
        return bad("unknown dtype '", dtype->get<std::string>(), "'");
      info.dtype = *parsed;
      auto shape = value.find("shape");
      if (shape == value.end() || !shape->is_array())
        return bad("no shape array");
      for (const json &d : *shape) {
        std::optional<uint64_t> dim = asIndex(d);
        if (!dim || *dim > uint64_t(std::numeric_limits<int64_t>::max()))
          return bad("shape ", shape->dump(),
                     " has an entry that is not a non-negative integer");
        info.shape.push_back(static_cast<int64_t>(*dim));
      }
      auto offsets = value.find("data_offsets");
      if (offsets == value.end() || !offsets->is_array() ||
          offsets->size() != 2)
        return bad("data_offsets is not a pair [begin, end]");
      std::optional<uint64_t> begin = asIndex((*offsets)[0]);
      std::optional<uint64_t> end = asIndex((*offsets)[1]);
      if (!begin || !end)
        return bad("data_offsets ", offsets->dump(),
                   " are not non-negative integers");
      if (*begin > *end)
        return bad("data_offsets ", offsets->dump(), " end before they begin");
      if (*end > dataBytes)
        return bad("data_offsets ", offsets->dump(),
                   " go beyond the data section (", dataBytes, " bytes)");
      std::optional<uint64_t> expected =
          byteSize(info.shape, dtypeSize(info.dtype));
      if (!expected)
        return bad("shape ", shapeString(info.shape), " is too large");
      if (*expected != *end - *begin)
        return bad("shape ", shapeString(info.shape), " of ",
                   dtypeName(info.dtype), " needs ", *expected,
                   " bytes but data_offsets ", offsets->dump(), " hold ",
                   *end - *begin);
      info.begin = *begin;
      info.end = *end;
      file.tensors_.push_back(std::move(info));
    }
  } catch (const std::exception &e) {
    // Defensive: every access above is type-checked first.
    return fail("malformed header: ", e.what());
  }

  // The tensors must tile the data section: no overlap and no gap, as the
  // reference implementation requires.
  std::vector<const TensorInfo *> byOffset;
  for (const TensorInfo &info : file.tensors_)
    byOffset.push_back(&info);
  std::sort(byOffset.begin(), byOffset.end(), [](auto *a, auto *b) {
    return std::tie(a->begin, a->end) < std::tie(b->begin, b->end);
  });
  uint64_t covered = 0;
  const TensorInfo *previous = nullptr;
  for (const TensorInfo *info : byOffset) {
    if (info->begin < covered)
      return fail("tensors '", previous->name, "' and '", info->name,
                  "' overlap in the data section");
    if (info->begin > covered)
      return fail("bytes [", covered, ", ", info->begin,
                  ") of the data section belong to no tensor");
    covered = info->end;
    if (info->end > info->begin)
      previous = info;
  }
  if (covered != dataBytes)
    return fail("bytes [", covered, ", ", dataBytes,
                ") of the data section belong to no tensor");

  std::sort(
      file.tensors_.begin(), file.tensors_.end(),
      [](const TensorInfo &a, const TensorInfo &b) { return a.name < b.name; });
  file.bytes_ = std::move(bytes);
  return file;
}

const TensorInfo *SafetensorsFile::find(std::string_view name) const {
  auto it = std::lower_bound(
      tensors_.begin(), tensors_.end(), name,
      [](const TensorInfo &info, std::string_view n) { return info.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

std::span<const std::byte>
SafetensorsFile::data(const TensorInfo &tensor) const {
  return std::span(bytes_).subspan(dataStart_ + tensor.begin,
                                   tensor.end - tensor.begin);
}

template <typename T>
StatusOr<std::vector<T>> SafetensorsFile::readAs(std::string_view name,
                                                 Dtype dtype) const {
  const TensorInfo *info = find(name);
  if (!info)
    return errorf("safetensors file '", name_, "' has no tensor '", name, "'");
  if (info->dtype != dtype)
    return errorf("safetensors file '", name_, "': tensor '", name, "' is ",
                  dtypeName(info->dtype), ", expected ", dtypeName(dtype));
  std::span<const std::byte> bytes = data(*info);
  std::vector<T> values(bytes.size() / sizeof(T));
  if (!bytes.empty())
    std::memcpy(values.data(), bytes.data(), bytes.size());
  return values;
}

StatusOr<std::vector<float>>
SafetensorsFile::readF32(std::string_view name) const {
  return readAs<float>(name, Dtype::F32);
}
StatusOr<std::vector<int64_t>>
SafetensorsFile::readI64(std::string_view name) const {
  return readAs<int64_t>(name, Dtype::I64);
}
StatusOr<std::vector<int32_t>>
SafetensorsFile::readI32(std::string_view name) const {
  return readAs<int32_t>(name, Dtype::I32);
}
