//===- File.cpp - whole-file reads, atomic writes and hashes --------------===//
#include "runtime/train/File.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace flexmoe;

namespace {

std::string reason() { return std::strerror(errno); }

/// fsync of the directory holding `path`, so that the rename survives a
/// crash. Best effort: some filesystems refuse to open directories.
void syncDirectoryOf(const std::string &path) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  if (dir.empty())
    dir = "/";
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0)
    return;
  (void)::fsync(fd);
  ::close(fd);
}

} // namespace

StatusOr<std::vector<std::byte>>
flexmoe::train::readFile(const std::string &path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0)
    return errorf("cannot open '", path, "': ", reason());
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    Status status = errorf("cannot stat '", path, "': ", reason());
    ::close(fd);
    return status;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return errorf("'", path, "' is not a regular file");
  }
  std::vector<std::byte> bytes(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      Status status = errorf("cannot read '", path, "': ", reason());
      ::close(fd);
      return status;
    }
    if (n == 0)
      break; // the file shrank under us: keep what is there
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  bytes.resize(done);
  return bytes;
}

Status flexmoe::train::writeFileAtomically(
    const std::string &path,
    std::span<const std::span<const std::byte>> pieces) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return errorf("cannot create '", tmp, "': ", reason());
  auto fail = [&](Status status) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return status;
  };
  for (std::span<const std::byte> piece : pieces) {
    size_t done = 0;
    while (done < piece.size()) {
      ssize_t n = ::write(fd, piece.data() + done, piece.size() - done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return fail(errorf("cannot write '", tmp, "': ", reason()));
      done += static_cast<size_t>(n);
    }
  }
  if (::fsync(fd) != 0)
    return fail(errorf("cannot sync '", tmp, "': ", reason()));
  if (::close(fd) != 0) {
    Status status = errorf("cannot close '", tmp, "': ", reason());
    ::unlink(tmp.c_str());
    return status;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status status =
        errorf("cannot rename '", tmp, "' to '", path, "': ", reason());
    ::unlink(tmp.c_str());
    return status;
  }
  syncDirectoryOf(path);
  return Status::ok();
}

Status flexmoe::train::writeFileAtomically(const std::string &path,
                                           std::string_view text) {
  std::span<const std::byte> piece(
      reinterpret_cast<const std::byte *>(text.data()), text.size());
  return writeFileAtomically(path, std::span(&piece, 1));
}

Status flexmoe::train::removeIfExists(const std::string &path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return errorf("cannot remove '", path, "': ", reason());
  return Status::ok();
}

uint64_t flexmoe::train::fnv1a64(std::span<const std::byte> bytes,
                                 uint64_t hash) {
  for (std::byte b : bytes) {
    hash ^= static_cast<uint8_t>(b);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

uint64_t flexmoe::train::fnv1a64(std::string_view text, uint64_t hash) {
  return fnv1a64(
      std::span(reinterpret_cast<const std::byte *>(text.data()), text.size()),
      hash);
}

std::string flexmoe::train::hashString(uint64_t hash) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "fnv1a64:%016llx",
                static_cast<unsigned long long>(hash));
  return buf;
}
