//===- Safetensors.h - reading and writing safetensors files ----*- C++ -*-===//
//
// The safetensors format (huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON
//   {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]},
//    ..., "__metadata__": {"<key>": "<string value>", ...}}
// and then the data section; [b, e) are byte offsets into the data section,
// little-endian, row-major. The reader treats the file as untrusted: every
// offset, size and shape is checked, the tensors must tile the data section
// exactly (no overlap, no gap), and errors name the file and the tensor.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_TRAIN_SAFETENSORS_H
#define FLEXMOE_RUNTIME_TRAIN_SAFETENSORS_H

#include "runtime/support/Status.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace flexmoe::train {

/// The element types of safetensors. The library computes with F32, I32 and
/// I64; the others are read and written as opaque bytes.
enum class Dtype {
  F64,
  F32,
  F16,
  BF16,
  I64,
  I32,
  I16,
  I8,
  U64,
  U32,
  U16,
  U8,
  BOOL
};

/// "F32", "I64", ...
std::string_view dtypeName(Dtype dtype);
std::optional<Dtype> parseDtype(std::string_view name);
/// Bytes per element.
int64_t dtypeSize(Dtype dtype);

/// One tensor of a file: where its bytes are in the data section.
struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;
  /// Byte offsets into the data section, [begin, end).
  uint64_t begin = 0, end = 0;

  int64_t numElements() const;
};

/// "[2, 3]"; "[]" for a scalar.
std::string shapeString(std::span<const int64_t> shape);

/// Collects tensors and metadata, then writes them in one atomic write.
class SafetensorsWriter {
public:
  /// Adds a tensor; `data` must hold exactly numElements(shape) × the
  /// dtype's size bytes (little-endian). Names must be unique, non-empty and
  /// not "__metadata__".
  Status add(std::string name, Dtype dtype, std::vector<int64_t> shape,
             std::vector<std::byte> data);
  /// Convenience overloads that copy typed host data.
  Status addF32(std::string name, std::vector<int64_t> shape,
                std::span<const float> data);
  Status addI64(std::string name, std::vector<int64_t> shape,
                std::span<const int64_t> data);
  Status addI32(std::string name, std::vector<int64_t> shape,
                std::span<const int32_t> data);
  /// A "__metadata__" entry (string values only, as the format requires).
  void setMetadata(std::string key, std::string value);

  /// The complete file: header and data.
  std::vector<std::byte> serialize() const;
  /// Writes the file atomically (`<path>.tmp`, fsync, rename); on failure
  /// `path` keeps its previous content and no tmp file remains.
  Status write(const std::string &path) const;
  /// fnv1a64 of the bytes serialize() returns, computed without them.
  uint64_t fileHash() const;

  size_t numTensors() const { return tensors_.size(); }

private:
  struct Entry {
    std::string name;
    Dtype dtype;
    std::vector<int64_t> shape;
    std::vector<std::byte> data;
  };
  /// The JSON header, padded with spaces to a multiple of 8 bytes so that
  /// the data section is 8-byte aligned (as the Python library does).
  std::string header() const;

  std::vector<Entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// A parsed, validated safetensors file held in memory.
class SafetensorsFile {
public:
  /// Reads and validates `path`; errors name the file.
  static StatusOr<SafetensorsFile> read(const std::string &path);
  /// Validates `bytes`; `name` is used in messages (a path, "<memory>").
  static StatusOr<SafetensorsFile> parse(std::vector<std::byte> bytes,
                                         std::string name = "<memory>");

  /// Every tensor, ordered by name.
  const std::vector<TensorInfo> &tensors() const { return tensors_; }
  /// nullptr if there is no tensor called `name`.
  const TensorInfo *find(std::string_view name) const;
  /// The tensor's bytes (little-endian, row-major).
  std::span<const std::byte> data(const TensorInfo &tensor) const;
  /// The tensor's values; an error if it is not of that dtype.
  StatusOr<std::vector<float>> readF32(std::string_view name) const;
  StatusOr<std::vector<int64_t>> readI64(std::string_view name) const;
  StatusOr<std::vector<int32_t>> readI32(std::string_view name) const;

  const std::map<std::string, std::string> &metadata() const {
    return metadata_;
  }
  const std::string &name() const { return name_; }
  /// The whole file's bytes.
  std::span<const std::byte> bytes() const { return bytes_; }

private:
  template <typename T>
  StatusOr<std::vector<T>> readAs(std::string_view name, Dtype dtype) const;

  std::string name_;
  std::vector<std::byte> bytes_;
  size_t dataStart_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

} // namespace flexmoe::train

#endif // FLEXMOE_RUNTIME_TRAIN_SAFETENSORS_H
