//===- gpu_bench_util.h - helpers of the CUDA benchmarks ---------*- C++
//-*-===//
//
// What the GPU benchmarks share: one serialised fb::Instruction per op (the
// kernels read only its opcode and attributes, as in test/gpu), device
// tensors carved out of one CudaDevice arena and filled with seeded non-zero
// values, and a median-of-N timer.
//
// Timing: CudaDevice does not expose its streams' cudaStream_t, so a timed
// region is bracketed by Stream::synchronize() and a host steady clock. On
// the millisecond-scale regions timed here the synchronisation adds a few
// microseconds; every row is timed the same way, so the ratios are fair.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_BENCHMARKS_GPU_BENCH_UTIL_H
#define FLEXMOE_BENCHMARKS_GPU_BENCH_UTIL_H

#include "runtime/backends/cuda/CudaDevice.h"

#include <flatbuffers/flatbuffers.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace flexmoe::gpu_bench {

/// One serialised instruction with no buffer ids (calls carry operands).
class InstructionBytes {
public:
  using AttrsFn = std::function<flatbuffers::Offset<void>(
      flatbuffers::FlatBufferBuilder &)>;
  InstructionBytes(fb::OpCode opcode, fb::OpAttrs attrsType = fb::OpAttrs::NONE,
                   const AttrsFn &attrs = nullptr) {
    flatbuffers::FlatBufferBuilder builder;
    flatbuffers::Offset<void> attrsOffset = attrs ? attrs(builder) : 0;
    fb::InstructionBuilder instruction(builder);
    instruction.add_opcode(opcode);
    instruction.add_moe_layer(-1);
    if (attrs) {
      instruction.add_attrs_type(attrsType);
      instruction.add_attrs(attrsOffset);
    }
    builder.Finish(instruction.Finish());
    bytes_.assign(builder.GetBufferPointer(),
                  builder.GetBufferPointer() + builder.GetSize());
  }
  const fb::Instruction *get() const {
    return flatbuffers::GetRoot<fb::Instruction>(bytes_.data());
  }

private:
  std::vector<uint8_t> bytes_;
};

/// A tensor in the arena: shape, element type, device address.
struct DeviceTensor {
  std::vector<int64_t> shape;
  fb::ElementType type = fb::ElementType::F32;
  std::byte *data = nullptr;

  int64_t numElements() const {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    return n;
  }
  size_t numBytes() const { return static_cast<size_t>(numElements()) * 4; }
  device::Operand operand(uint32_t id) const {
    device::Operand o;
    o.data = data;
    o.shape = shape;
    o.elementType = type;
    o.id = id;
    o.name = "bench";
    return o;
  }
};

inline size_t alignUp(size_t bytes) { return (bytes + 255) / 256 * 256; }

/// Seeded values in ±[0.1, 1]·scale (never zero: zeros run faster than real
/// data on tensor cores and hide unwritten outputs).
inline std::vector<float> randomValues(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> magnitude(0.1f, 1.0f);
  std::bernoulli_distribution sign(0.5);
  std::vector<float> v(n);
  for (float &x : v)
    x = scale * (sign(rng) ? magnitude(rng) : -magnitude(rng));
  return v;
}

/// Fills `t` (f32) with seeded values: a pool of at most 4M values is
/// uploaded and repeated (a shifted start each time) so that multi-GB expert
/// weights fill in seconds.
inline Status fillRandom(device::Device &device, const DeviceTensor &t,
                         uint32_t seed, float scale) {
  const size_t n = static_cast<size_t>(t.numElements());
  const size_t pool = std::min<size_t>(n, size_t{1} << 22);
  std::vector<float> values = randomValues(pool + 97, seed, scale);
  for (size_t at = 0, round = 0; at < n; at += pool, ++round) {
    const size_t count = std::min(pool, n - at);
    if (Status s = device.copyToDevice(t.data + at * 4,
                                       values.data() + round % 97, count * 4);
        !s.isOk())
      return s;
  }
  return Status::ok();
}

/// Median of `iterations` timings of `region` in milliseconds, after
/// `warmup` untimed runs; `sync` waits for the device. Stops early (at
/// least 3 timings) once `maxSeconds` of timed work have passed.
inline StatusOr<double> medianMs(const std::function<Status()> &region,
                                 const std::function<Status()> &sync,
                                 int warmup, int iterations,
                                 double maxSeconds = 30.0) {
  for (int i = 0; i < warmup; ++i) {
    FLEXMOE_RETURN_IF_ERROR(region());
    FLEXMOE_RETURN_IF_ERROR(sync());
  }
  std::vector<double> times;
  double total = 0;
  for (int i = 0; i < std::max(iterations, 1); ++i) {
    FLEXMOE_RETURN_IF_ERROR(sync());
    auto start = std::chrono::steady_clock::now();
    FLEXMOE_RETURN_IF_ERROR(region());
    FLEXMOE_RETURN_IF_ERROR(sync());
    double ms = std::chrono::duration<double, std::milli>(
                    std::chrono::steady_clock::now() - start)
                    .count();
    times.push_back(ms);
    total += ms / 1e3;
    if (total > maxSeconds && times.size() >= 3)
      break;
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

/// float → bfloat16 bits, round to nearest even (NaN stays NaN).
inline uint16_t toBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x7fffffu))
    return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

} // namespace flexmoe::gpu_bench

#endif // FLEXMOE_BENCHMARKS_GPU_BENCH_UTIL_H
