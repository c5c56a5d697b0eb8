//===- File.h - whole-file reads, atomic writes and hashes ------*- C++ -*-===//
//
// Small file helpers shared by the dataset, safetensors and checkpoint code.
// Writes are atomic: the bytes go to `<path>.tmp`, are fsync'ed and renamed
// over `path`, so a reader sees the old file or the new one, never a part.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_TRAIN_FILE_H
#define FLEXMOE_RUNTIME_TRAIN_FILE_H

#include "runtime/support/Status.h"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace flexmoe::train {

/// Reads the whole file; errors name the file and the reason.
StatusOr<std::vector<std::byte>> readFile(const std::string &path);

/// Writes the concatenation of `pieces` to `path` atomically (tmp, fsync,
/// rename, fsync of the directory). On failure nothing is left behind: no
/// tmp file, and `path` keeps its old content (or stays absent).
Status writeFileAtomically(const std::string &path,
                           std::span<const std::span<const std::byte>> pieces);
Status writeFileAtomically(const std::string &path, std::string_view text);

/// Removes `path` if it exists; an error only when it exists and cannot be
/// removed.
Status removeIfExists(const std::string &path);

/// 64-bit FNV-1a, continued from `hash` (start with kFnvOffset).
inline constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
uint64_t fnv1a64(std::span<const std::byte> bytes, uint64_t hash = kFnvOffset);
uint64_t fnv1a64(std::string_view text, uint64_t hash = kFnvOffset);
/// "fnv1a64:" followed by 16 lower-case hex digits.
std::string hashString(uint64_t hash);

} // namespace flexmoe::train

#endif // FLEXMOE_RUNTIME_TRAIN_FILE_H
