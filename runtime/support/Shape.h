//===- Shape.h - small helpers over static shapes ---------------*- C++ -*-===//
//
// Shared by the CPU and CUDA backends' launchers: a shape in messages, and
// the row-major strides of a shape.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_SUPPORT_SHAPE_H
#define FLEXMOE_RUNTIME_SUPPORT_SHAPE_H

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace flexmoe {

/// "[2,3,4]".
inline std::string shapeString(std::span<const int64_t> shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    text += (i ? "," : "") + std::to_string(shape[i]);
  return text + "]";
}

/// Row-major strides of `shape`, in elements.
inline std::vector<int64_t> stridesOf(std::span<const int64_t> shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int64_t d = static_cast<int64_t>(shape.size()) - 2; d >= 0; --d)
    strides[d] = strides[d + 1] * shape[d + 1];
  return strides;
}

} // namespace flexmoe

#endif // FLEXMOE_RUNTIME_SUPPORT_SHAPE_H
