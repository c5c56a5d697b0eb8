//===- Status.h - errors as values for the runtime --------------*- C++ -*-===//
//
// The runtime reports errors as values that carry one clear message, so a
// tool can print a single line and exit non-zero instead of aborting.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_SUPPORT_STATUS_H
#define FLEXMOE_RUNTIME_SUPPORT_STATUS_H

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace flexmoe {

class [[nodiscard]] Status {
public:
  Status() = default;
  static Status ok() { return Status(); }
  static Status error(std::string message) {
    Status status;
    status.message_ = std::move(message);
    return status;
  }

  bool isOk() const { return !message_.has_value(); }
  explicit operator bool() const { return isOk(); }
  const std::string &message() const {
    assert(message_ && "message() of an ok Status");
    return *message_;
  }
  /// Prefixes the message with where the error was met ("loading x.fmoe").
  Status withContext(const std::string &context) && {
    if (message_)
      message_ = context + ": " + *message_;
    return std::move(*this);
  }

private:
  std::optional<std::string> message_;
};

/// A value or the error that prevented computing it.
template <typename T> class [[nodiscard]] StatusOr {
public:
  StatusOr(T value) : storage_(std::move(value)) {}
  StatusOr(Status status) : storage_(std::move(status)) {
    assert(!std::get<Status>(storage_).isOk() && "StatusOr from an ok Status");
  }

  bool isOk() const { return std::holds_alternative<T>(storage_); }
  explicit operator bool() const { return isOk(); }
  const Status &status() const {
    static const Status okStatus;
    return isOk() ? okStatus : std::get<Status>(storage_);
  }
  T &value() & { return std::get<T>(storage_); }
  const T &value() const & { return std::get<T>(storage_); }
  T &&value() && { return std::get<T>(std::move(storage_)); }
  T *operator->() { return &value(); }
  const T *operator->() const { return &value(); }
  T &operator*() & { return value(); }
  const T &operator*() const & { return value(); }

private:
  std::variant<T, Status> storage_;
};

/// Formats a message from streamable parts: errorf("expert ", e, " has no
/// replica").
template <typename... Parts> Status errorf(const Parts &...parts);

} // namespace flexmoe

#include <sstream>

template <typename... Parts>
flexmoe::Status flexmoe::errorf(const Parts &...parts) {
  std::ostringstream os;
  (os << ... << parts);
  return Status::error(os.str());
}

#define FLEXMOE_RETURN_IF_ERROR(expr)                                          \
  do {                                                                         \
    ::flexmoe::Status flexmoeStatus_ = (expr);                                 \
    if (!flexmoeStatus_.isOk())                                                \
      return flexmoeStatus_;                                                   \
  } while (false)

#endif // FLEXMOE_RUNTIME_SUPPORT_STATUS_H
