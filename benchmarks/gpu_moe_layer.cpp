//===- gpu_moe_layer.cpp - one MoE layer's step on the CUDA backend -------===//
//
// Times one MoE layer's forward and backward (moe.gate, aux_loss, dispatch,
// experts, combine and their gradients; top-k, GELU experts, no capacity)
// through CudaDevice streams, over a grid of d_model × experts × precision,
// and beside it a dense GEMM of the expert GEMMs' shape ([T·k, D] × [D, H])
// through nn.matmul on the same device and as a raw cuBLASLt bf16 GEMM: the
// ceiling the expert GEMMs are judged against.
//
//   gpu_moe_layer [--tokens 16384] [--d-model 1024,2048,4096]
//                 [--experts 8,16,64] [--hidden-mult 4] [--top-k 2]
//                 [--precision fp32,bf16] [--warmup 2] [--iters 10]
//                 [--max-seconds 20] [--jsonl FILE] [--csv FILE]
//
// Prints a table; --jsonl writes one JSON object per row (the format of
// benchmarks/torch_moe_layer.py, read by benchmarks/gpu_report.py), --csv
// the same as CSV. Rows: impl "flexmoe" (layer_ms = forward + backward,
// fwd_ms, experts_fwd_ms, experts_bwd_ms, expert_tflops = the forward
// expert GEMMs' 4·N·D·H FLOPs over experts_fwd_ms), "flexmoe-matmul" and
// "cublaslt-bf16" (gemm_ms, tflops of 2·N·D·H). A configuration that does
// not fit in the free device memory is a "skip" row. Without a CUDA device
// it prints "no CUDA device", a SKIP line, and exits 0.
//
//===----------------------------------------------------------------------===//
#include "benchmarks/gpu_bench_util.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <tuple>

using namespace flexmoe;
using namespace flexmoe::gpu_bench;

namespace {

struct Options {
  int64_t tokens = 16384;
  std::vector<int64_t> dModels = {1024, 2048, 4096};
  std::vector<int64_t> experts = {8, 16, 64};
  int64_t hiddenMult = 4;
  int64_t topK = 2;
  std::vector<std::string> precisions = {"fp32", "bf16"};
  int warmup = 2;
  int iters = 10;
  double maxSeconds = 20;
  std::string jsonl, csv;
};

[[noreturn]] void usage(const std::string &problem) {
  std::fprintf(stderr,
               "gpu_moe_layer: %s\nusage: gpu_moe_layer [--tokens N] "
               "[--d-model A,B,..] [--experts A,B,..] [--hidden-mult M] "
               "[--top-k K] [--precision fp32,bf16] [--warmup N] [--iters N] "
               "[--max-seconds S] [--jsonl FILE] [--csv FILE]\n",
               problem.c_str());
  std::exit(2);
}

int64_t parsePositive(const std::string &flag, const std::string &text) {
  char *end = nullptr;
  long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value <= 0)
    usage(flag + ": '" + text + "' is not a positive integer");
  return value;
}

std::vector<std::string> splitList(const std::string &text) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  for (std::string part; std::getline(stream, part, ',');)
    parts.push_back(part);
  return parts;
}

Options parseOptions(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h")
      usage("times one MoE layer (see the file's header)");
    if (i + 1 >= argc)
      usage(flag + " needs a value");
    const std::string value = argv[++i];
    auto ints = [&] {
      std::vector<int64_t> v;
      for (const std::string &part : splitList(value))
        v.push_back(parsePositive(flag, part));
      if (v.empty())
        usage(flag + " needs at least one value");
      return v;
    };
    if (flag == "--tokens")
      o.tokens = parsePositive(flag, value);
    else if (flag == "--d-model")
      o.dModels = ints();
    else if (flag == "--experts")
      o.experts = ints();
    else if (flag == "--hidden-mult")
      o.hiddenMult = parsePositive(flag, value);
    else if (flag == "--top-k")
      o.topK = parsePositive(flag, value);
    else if (flag == "--precision") {
      o.precisions = splitList(value);
      for (const std::string &p : o.precisions)
        if (p != "fp32" && p != "bf16")
          usage("--precision: '" + p + "' is neither fp32 nor bf16");
    } else if (flag == "--warmup")
      o.warmup = static_cast<int>(parsePositive(flag, value));
    else if (flag == "--iters")
      o.iters = static_cast<int>(parsePositive(flag, value));
    else if (flag == "--max-seconds")
      o.maxSeconds = static_cast<double>(parsePositive(flag, value));
    else if (flag == "--jsonl")
      o.jsonl = value;
    else if (flag == "--csv")
      o.csv = value;
    else
      usage("unknown option '" + flag + "'");
  }
  for (int64_t e : o.experts)
    if (o.topK > e)
      usage("--top-k " + std::to_string(o.topK) + " exceeds " +
            std::to_string(e) + " experts");
  return o;
}

/// One output row: ordered keys, numbers or strings.
struct Row {
  std::vector<std::pair<std::string, std::string>> fields;
  Row &num(const std::string &key, double value) {
    std::ostringstream s;
    s.precision(10);
    if (std::isfinite(value))
      s << value;
    else
      s << "null";
    fields.emplace_back(key, s.str());
    return *this;
  }
  Row &str(const std::string &key, const std::string &value) {
    std::string quoted = "\"";
    for (char c : value)
      quoted +=
          c == '"' || c == '\\' ? std::string("\\") + c : std::string(1, c);
    fields.emplace_back(key, quoted + "\"");
    return *this;
  }
  std::string json() const {
    std::string line = "{";
    for (size_t i = 0; i < fields.size(); ++i)
      line += (i ? ", \"" : "\"") + fields[i].first + "\": " + fields[i].second;
    return line + "}";
  }
};

class Output {
public:
  explicit Output(const Options &o) {
    if (!o.jsonl.empty()) {
      jsonl_.open(o.jsonl);
      if (!jsonl_)
        usage("cannot write --jsonl file '" + o.jsonl + "'");
    }
    if (!o.csv.empty()) {
      csv_.open(o.csv);
      if (!csv_)
        usage("cannot write --csv file '" + o.csv + "'");
      csv_ << "bench,impl,status,precision,tokens,d_model,hidden,experts,top_"
              "k,layer_ms,fwd_ms,experts_fwd_ms,experts_bwd_ms,expert_tflops,"
              "gemm_ms,tflops,reason\n";
    }
  }
  void add(const Row &row) {
    if (jsonl_.is_open())
      jsonl_ << row.json() << "\n" << std::flush;
    if (csv_.is_open()) {
      static const char *columns[] = {
          "bench",          "impl",          "status",  "precision",
          "tokens",         "d_model",       "hidden",  "experts",
          "top_k",          "layer_ms",      "fwd_ms",  "experts_fwd_ms",
          "experts_bwd_ms", "expert_tflops", "gemm_ms", "tflops",
          "reason"};
      std::string line;
      for (const char *column : columns) {
        if (!line.empty() || column != columns[0])
          line += ",";
        for (const auto &[key, value] : row.fields)
          if (key == column) {
            std::string v = value;
            if (!v.empty() && v.front() == '"')
              v = v.substr(1, v.size() - 2);
            if (v == "null")
              v.clear();
            std::replace(v.begin(), v.end(), ',', ';');
            line += v;
          }
      }
      csv_ << line << "\n" << std::flush;
    }
  }

private:
  std::ofstream jsonl_, csv_;
};

Row baseRow(const char *impl, const std::string &precision, int64_t tokens,
            int64_t d, int64_t h, int64_t e, int64_t k) {
  Row row;
  row.str("bench", "moe_layer")
      .str("impl", impl)
      .str("precision", precision)
      .num("tokens", static_cast<double>(tokens))
      .num("d_model", static_cast<double>(d))
      .num("hidden", static_cast<double>(h))
      .num("experts", static_cast<double>(e))
      .num("top_k", static_cast<double>(k));
  return row;
}

/// Lays tensors out in one arena.
class ArenaPlan {
public:
  DeviceTensor *add(std::vector<int64_t> shape,
                    fb::ElementType type = fb::ElementType::F32) {
    tensors_.push_back(std::make_unique<DeviceTensor>());
    DeviceTensor &t = *tensors_.back();
    t.shape = std::move(shape);
    t.type = type;
    offsets_.push_back(bytes_);
    bytes_ += alignUp(std::max<size_t>(t.numBytes(), 4));
    return &t;
  }
  size_t bytes() const { return bytes_; }
  Status allocate(device::Device &device) {
    StatusOr<std::unique_ptr<device::Arena>> arena =
        device.allocateArena(bytes_);
    if (!arena)
      return arena.status();
    arena_ = std::move(arena).value();
    for (size_t i = 0; i < tensors_.size(); ++i)
      tensors_[i]->data = arena_->base() + offsets_[i];
    return Status::ok();
  }

private:
  std::vector<std::unique_ptr<DeviceTensor>> tensors_;
  std::vector<size_t> offsets_;
  size_t bytes_ = 0;
  std::unique_ptr<device::Arena> arena_;
};

device::KernelCall makeCall(const InstructionBytes &ins,
                            const std::vector<DeviceTensor *> &inputs,
                            const std::vector<DeviceTensor *> &outputs) {
  device::KernelCall call;
  call.instruction = ins.get();
  uint32_t id = 0;
  for (DeviceTensor *t : inputs)
    call.inputs.push_back(t->operand(id++));
  for (DeviceTensor *t : outputs)
    call.outputs.push_back(t->operand(id++));
  return call;
}

double freeDeviceBytes() {
  size_t freeBytes = 0, totalBytes = 0;
  if (cudaMemGetInfo(&freeBytes, &totalBytes) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return static_cast<double>(freeBytes);
}

std::string gib(double bytes) {
  std::ostringstream s;
  s.precision(3);
  s << bytes / double(1 << 30) << " GiB";
  return s.str();
}

/// The MoE layer's forward + backward at one configuration.
Row benchLayer(device::Device &device, device::Stream &stream, const Options &o,
               const std::string &precision, int64_t d, int64_t e) {
  const int64_t T = o.tokens, K = o.topK, H = o.hiddenMult * d, N = T * K;
  Row row = baseRow("flexmoe", precision, T, d, H, e, K);
  using fb::ElementType;
  ArenaPlan plan;
  DeviceTensor *x = plan.add({T, d}), *wg = plan.add({d, e});
  DeviceTensor *probs = plan.add({T, e}),
               *ids = plan.add({T, K}, ElementType::I32),
               *combine = plan.add({T, K}), *aux = plan.add({});
  DeviceTensor *routed = plan.add({N, d}),
               *positions = plan.add({T, K}, ElementType::I32),
               *counts = plan.add({e}, ElementType::I32);
  DeviceTensor *w1 = plan.add({e, d, H}), *b1 = plan.add({e, H}),
               *w2 = plan.add({e, H, d}), *b2 = plan.add({e, d});
  DeviceTensor *expertOut = plan.add({N, d}), *y = plan.add({T, d});
  DeviceTensor *dy = plan.add({T, d}), *dRows = plan.add({N, d}),
               *dCombine = plan.add({T, K}), *dRouted = plan.add({N, d});
  DeviceTensor *dw1 = plan.add({e, d, H}), *db1 = plan.add({e, H}),
               *dw2 = plan.add({e, H, d}), *db2 = plan.add({e, d});
  DeviceTensor *dxDispatch = plan.add({T, d}), *dLoss = plan.add({}),
               *dProbs = plan.add({T, e}), *dxGate = plan.add({T, d}),
               *dwg = plan.add({d, e});
  // The experts' hidden activations live in stream-ordered scratch: count
  // three [N, H] buffers for them beside the arena, and in bf16 a bfloat16
  // copy of both weight tensors (if the kernels make one).
  double needed =
      static_cast<double>(plan.bytes()) + 3.0 * N * H * 4 + (256 << 20);
  if (precision == "bf16")
    needed += 2.0 * e * d * H * 2;
  const double available = freeDeviceBytes();
  if (needed > 0.92 * available)
    return row.str("status", "skip")
        .str("reason",
             "needs about " + gib(needed) + ", " + gib(available) + " free");
  if (Status s = plan.allocate(device); !s.isOk())
    return row.str("status", "skip").str("reason", s.message());

  Status filled = Status::ok();
  auto fill = [&](DeviceTensor *t, uint32_t seed, float scale) {
    if (filled.isOk())
      filled = fillRandom(device, *t, seed, scale);
  };
  // Scales that keep activations O(1): weights ~ 1/sqrt(fan-in).
  fill(x, 1, 1.0f);
  fill(wg, 2, 1.0f / std::sqrt(float(d)));
  fill(w1, 3, 1.0f / std::sqrt(float(d)));
  fill(b1, 4, 0.1f);
  fill(w2, 5, 1.0f / std::sqrt(float(H)));
  fill(b2, 6, 0.1f);
  fill(dy, 7, 1.0f);
  if (filled.isOk()) {
    const float one = 1.0f;
    filled = device.copyToDevice(dLoss->data, &one, 4);
  }
  if (!filled.isOk())
    return row.str("status", "error").str("reason", filled.message());

  using fb::OpAttrs;
  using fb::OpCode;
  auto gateAttrs = [&](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateGateAttrs(b, K).Union();
  };
  auto auxAttrs = [&](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateAuxLossAttrs(b, 0.01f).Union();
  };
  auto expertsAttrs = [&](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateExpertsAttrs(b, fb::Activation::Gelu, 0).Union();
  };
  auto dispatchAttrs = [&](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateDispatchAttrs(b, e, 0).Union();
  };
  const InstructionBytes gate(OpCode::Gate, OpAttrs::GateAttrs, gateAttrs),
      auxLoss(OpCode::AuxLoss, OpAttrs::AuxLossAttrs, auxAttrs),
      dispatch(OpCode::Dispatch, OpAttrs::DispatchAttrs, dispatchAttrs),
      experts(OpCode::Experts, OpAttrs::ExpertsAttrs, expertsAttrs),
      combineOp(OpCode::Combine), combineGrad(OpCode::CombineGrad),
      expertsGrad(OpCode::ExpertsGrad, OpAttrs::ExpertsAttrs, expertsAttrs),
      dispatchGrad(OpCode::DispatchGrad),
      auxLossGrad(OpCode::AuxLossGrad, OpAttrs::AuxLossAttrs, auxAttrs),
      gateGrad(OpCode::GateGrad, OpAttrs::GateAttrs, gateAttrs);

  const std::vector<device::KernelCall> forward = {
      makeCall(gate, {x, wg}, {probs, ids, combine}),
      makeCall(auxLoss, {probs, ids}, {aux}),
      makeCall(dispatch, {x, ids}, {routed, positions, counts}),
      makeCall(experts, {routed, counts, w1, b1, w2, b2}, {expertOut}),
      makeCall(combineOp, {expertOut, positions, combine}, {y})};
  const std::vector<device::KernelCall> backward = {
      makeCall(combineGrad, {expertOut, positions, combine, dy},
               {dRows, dCombine}),
      makeCall(expertsGrad, {routed, counts, w1, b1, w2, b2, dRows},
               {dRouted, dw1, db1, dw2, db2}),
      makeCall(dispatchGrad, {dRouted, positions}, {dxDispatch}),
      makeCall(auxLossGrad, {probs, ids, dLoss}, {dProbs}),
      makeCall(gateGrad, {x, wg, probs, ids, dCombine, dProbs}, {dxGate, dwg})};

  auto launchAll = [&](const std::vector<device::KernelCall> &calls) {
    for (const device::KernelCall &call : calls)
      FLEXMOE_RETURN_IF_ERROR(stream.launch(call));
    return Status::ok();
  };
  auto sync = [&] { return stream.synchronize(); };
  auto step = [&] {
    FLEXMOE_RETURN_IF_ERROR(launchAll(forward));
    return launchAll(backward);
  };
  StatusOr<double> layerMs =
      medianMs(step, sync, o.warmup, o.iters, o.maxSeconds);
  StatusOr<double> fwdMs = Status::error("not run");
  StatusOr<double> expertsFwdMs = Status::error("not run");
  StatusOr<double> expertsBwdMs = Status::error("not run");
  if (layerMs)
    fwdMs = medianMs([&] { return launchAll(forward); }, sync, 1, o.iters,
                     o.maxSeconds);
  if (fwdMs)
    expertsFwdMs = medianMs([&] { return stream.launch(forward[3]); }, sync, 1,
                            o.iters, o.maxSeconds);
  if (expertsFwdMs)
    expertsBwdMs = medianMs([&] { return stream.launch(backward[1]); }, sync, 1,
                            o.iters, o.maxSeconds);
  for (const StatusOr<double> *r :
       {&layerMs, &fwdMs, &expertsFwdMs, &expertsBwdMs})
    if (!*r) {
      // Scratch that did not fit is a skip, like an arena that does not.
      const std::string &message = r->status().message();
      const bool memory = message.find("out of memory") != std::string::npos;
      return row.str("status", memory ? "skip" : "error")
          .str("reason", message);
    }

  // A finite output and input gradient, or the timings are of a broken run.
  std::vector<float> out(static_cast<size_t>(T * d));
  for (DeviceTensor *t : {y, dxDispatch}) {
    if (Status s = device.copyToHost(out.data(), t->data, out.size() * 4);
        !s.isOk())
      return row.str("status", "error").str("reason", s.message());
    for (float v : out)
      if (!std::isfinite(v))
        return row.str("status", "error")
            .str("reason", "a non-finite value in the layer's output or "
                           "input gradient");
  }
  const double expertFlops = 4.0 * double(N) * double(d) * double(H);
  return row.str("status", "ok")
      .num("layer_ms", *layerMs)
      .num("fwd_ms", *fwdMs)
      .num("experts_fwd_ms", *expertsFwdMs)
      .num("experts_bwd_ms", *expertsBwdMs)
      .num("expert_tflops", expertFlops / *expertsFwdMs / 1e9);
}

/// nn.matmul [N, D] × [D, H] through the device (its precision).
Row benchDeviceMatmul(device::Device &device, device::Stream &stream,
                      const Options &o, const std::string &precision,
                      int64_t d) {
  const int64_t H = o.hiddenMult * d, N = o.tokens * o.topK;
  Row row = baseRow("flexmoe-matmul", precision, o.tokens, d, H, 0, o.topK);
  ArenaPlan plan;
  DeviceTensor *a = plan.add({N, d}), *b = plan.add({d, H}),
               *c = plan.add({N, H});
  if (static_cast<double>(plan.bytes()) + (256 << 20) >
      0.92 * freeDeviceBytes())
    return row.str("status", "skip").str("reason", "does not fit");
  if (Status s = plan.allocate(device); !s.isOk())
    return row.str("status", "skip").str("reason", s.message());
  Status filled = fillRandom(device, *a, 11, 1.0f);
  if (filled.isOk())
    filled = fillRandom(device, *b, 12, 1.0f / std::sqrt(float(d)));
  if (!filled.isOk())
    return row.str("status", "error").str("reason", filled.message());
  const InstructionBytes matmul(
      fb::OpCode::Matmul, fb::OpAttrs::MatmulAttrs,
      [](flatbuffers::FlatBufferBuilder &builder) {
        return fb::CreateMatmulAttrs(builder, false, false).Union();
      });
  const device::KernelCall call = makeCall(matmul, {a, b}, {c});
  StatusOr<double> ms = medianMs([&] { return stream.launch(call); },
                                 [&] { return stream.synchronize(); }, o.warmup,
                                 o.iters, o.maxSeconds);
  if (!ms)
    return row.str("status", "error").str("reason", ms.status().message());
  return row.str("status", "ok")
      .num("gemm_ms", *ms)
      .num("tflops", 2.0 * double(N) * double(d) * double(H) / *ms / 1e9);
}

#define BENCH_CUDA(expr, what)                                                 \
  do {                                                                         \
    cudaError_t error_ = (expr);                                               \
    if (error_ != cudaSuccess)                                                 \
      return errorf(what, ": ", cudaGetErrorString(error_));                   \
  } while (false)
#define BENCH_LT(expr, what)                                                   \
  do {                                                                         \
    cublasStatus_t status_ = (expr);                                           \
    if (status_ != CUBLAS_STATUS_SUCCESS)                                      \
      return errorf(what, ": cuBLAS status ", static_cast<int>(status_));      \
  } while (false)

/// A raw cuBLASLt GEMM, bf16 operands, fp32 accumulation and output.
class RawBf16Gemm {
public:
  ~RawBf16Gemm() {
    if (stream_)
      cudaStreamSynchronize(stream_);
    for (void *p : {a_, b_, c_, workspace_})
      if (p)
        cudaFree(p);
    if (layout_[0])
      for (cublasLtMatrixLayout_t l : layout_)
        cublasLtMatrixLayoutDestroy(l);
    if (desc_)
      cublasLtMatmulDescDestroy(desc_);
    if (lt_)
      cublasLtDestroy(lt_);
    if (stream_)
      cudaStreamDestroy(stream_);
  }

  /// Row-major C[N,H] = A[N,D]·B[D,H] is column-major Cᵀ = Bᵀ·Aᵀ: m = H,
  /// n = N, k = D, nothing transposed.
  Status setUp(int64_t n, int64_t d, int64_t h) {
    BENCH_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
               "cudaStreamCreate");
    BENCH_LT(cublasLtCreate(&lt_), "cublasLtCreate");
    BENCH_CUDA(cudaMalloc(&a_, n * d * 2), "cudaMalloc A");
    BENCH_CUDA(cudaMalloc(&b_, d * h * 2), "cudaMalloc B");
    BENCH_CUDA(cudaMalloc(&c_, n * h * 4), "cudaMalloc C");
    BENCH_CUDA(cudaMalloc(&workspace_, kWorkspace), "cudaMalloc workspace");
    for (auto [ptr, count, seed] :
         {std::tuple{a_, n * d, 21u}, std::tuple{b_, d * h, 22u}}) {
      const size_t pool = std::min<size_t>(count, size_t{1} << 22);
      std::vector<float> v = randomValues(pool, seed, 1.0f);
      std::vector<uint16_t> bits(pool);
      for (size_t i = 0; i < pool; ++i)
        bits[i] = toBf16(v[i]);
      for (size_t at = 0; at < static_cast<size_t>(count); at += pool)
        BENCH_CUDA(cudaMemcpy(static_cast<uint16_t *>(ptr) + at, bits.data(),
                              std::min(pool, count - at) * 2,
                              cudaMemcpyHostToDevice),
                   "cudaMemcpy");
    }
    BENCH_LT(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F),
             "cublasLtMatmulDescCreate");
    BENCH_LT(cublasLtMatrixLayoutCreate(&layout_[0], CUDA_R_16BF, h, d, h),
             "layout A");
    BENCH_LT(cublasLtMatrixLayoutCreate(&layout_[1], CUDA_R_16BF, d, n, d),
             "layout B");
    BENCH_LT(cublasLtMatrixLayoutCreate(&layout_[2], CUDA_R_32F, h, n, h),
             "layout C");
    cublasLtMatmulPreference_t preference = nullptr;
    BENCH_LT(cublasLtMatmulPreferenceCreate(&preference), "preference");
    size_t workspace = kWorkspace;
    cublasLtMatmulPreferenceSetAttribute(
        preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
        sizeof(workspace));
    int found = 0;
    cublasStatus_t heuristic = cublasLtMatmulAlgoGetHeuristic(
        lt_, desc_, layout_[0], layout_[1], layout_[2], layout_[2], preference,
        1, &heuristic_, &found);
    cublasLtMatmulPreferenceDestroy(preference);
    BENCH_LT(heuristic, "cublasLtMatmulAlgoGetHeuristic");
    if (found == 0)
      return Status::error("cuBLASLt found no bf16 algorithm");
    return Status::ok();
  }

  Status run() {
    const float alpha = 1.0f, beta = 0.0f;
    BENCH_LT(cublasLtMatmul(lt_, desc_, &alpha, b_, layout_[0], a_, layout_[1],
                            &beta, c_, layout_[2], c_, layout_[2],
                            &heuristic_.algo, workspace_, kWorkspace, stream_),
             "cublasLtMatmul");
    return Status::ok();
  }
  Status sync() {
    BENCH_CUDA(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    return Status::ok();
  }

private:
  static constexpr size_t kWorkspace = size_t{32} << 20;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t layout_[3] = {nullptr, nullptr, nullptr};
  cublasLtMatmulHeuristicResult_t heuristic_{};
  void *a_ = nullptr, *b_ = nullptr, *c_ = nullptr, *workspace_ = nullptr;
};

Row benchRawBf16(const Options &o, int64_t d) {
  const int64_t H = o.hiddenMult * d, N = o.tokens * o.topK;
  Row row = baseRow("cublaslt-bf16", "bf16", o.tokens, d, H, 0, o.topK);
  RawBf16Gemm gemm;
  Status s = gemm.setUp(N, d, H);
  if (!s.isOk())
    return row.str("status", "error").str("reason", s.message());
  StatusOr<double> ms =
      medianMs([&] { return gemm.run(); }, [&] { return gemm.sync(); },
               o.warmup, o.iters, o.maxSeconds);
  if (!ms)
    return row.str("status", "error").str("reason", ms.status().message());
  return row.str("status", "ok")
      .num("gemm_ms", *ms)
      .num("tflops", 2.0 * double(N) * double(d) * double(H) / *ms / 1e9);
}

std::string field(const Row &row, const std::string &key) {
  for (const auto &[k, v] : row.fields)
    if (k == key)
      return v.front() == '"' ? v.substr(1, v.size() - 2) : v;
  return "-";
}

void printRow(const Row &row) {
  const std::string status = field(row, "status");
  std::printf("%-15s %-5s %6s %6s %4s ", field(row, "impl").c_str(),
              field(row, "precision").c_str(), field(row, "d_model").c_str(),
              field(row, "hidden").c_str(), field(row, "experts").c_str());
  if (status != "ok") {
    std::printf("%s: %s\n", status.c_str(), field(row, "reason").c_str());
  } else if (field(row, "impl") == "flexmoe") {
    std::printf("layer %9.3f ms  fwd %9.3f ms  experts fwd %9.3f ms  bwd "
                "%9.3f ms  %7.1f TFLOP/s\n",
                std::stod(field(row, "layer_ms")),
                std::stod(field(row, "fwd_ms")),
                std::stod(field(row, "experts_fwd_ms")),
                std::stod(field(row, "experts_bwd_ms")),
                std::stod(field(row, "expert_tflops")));
  } else {
    std::printf("gemm %9.3f ms  %7.1f TFLOP/s\n",
                std::stod(field(row, "gemm_ms")),
                std::stod(field(row, "tflops")));
  }
  std::fflush(stdout);
}

} // namespace

int main(int argc, char **argv) {
  const Options o = parseOptions(argc, argv);
  Output output(o);
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    std::printf("gpu_moe_layer: no CUDA device\nSKIP gpu_moe_layer\n");
    Row skip;
    skip.str("bench", "moe_layer")
        .str("impl", "flexmoe")
        .str("status", "skip")
        .str("reason", "no CUDA device");
    output.add(skip);
    return 0;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("gpu_moe_layer: %s, %lld tokens, top-%lld, hidden = %lld x "
              "d_model, median of %d (after %d warm-up)\n",
              prop.name, static_cast<long long>(o.tokens),
              static_cast<long long>(o.topK),
              static_cast<long long>(o.hiddenMult), o.iters, o.warmup);
  std::printf("%-15s %-5s %6s %6s %4s\n", "impl", "prec", "d", "hidden", "E");
  int failures = 0;
  auto emit = [&](const Row &row) {
    printRow(row);
    output.add(row);
    failures += field(row, "status") == "error";
  };
  // One device (and stream) per precision; the grid runs the smaller
  // d_model first so that a run cut short keeps whole rows of both.
  std::vector<std::unique_ptr<cuda::CudaDevice>> devices;
  std::vector<std::unique_ptr<device::Stream>> streams;
  for (const std::string &precision : o.precisions) {
    cuda::CudaDeviceOptions options;
    options.precision = precision == "bf16" ? device::MathPrecision::BF16
                                            : device::MathPrecision::F32;
    StatusOr<std::unique_ptr<cuda::CudaDevice>> device =
        cuda::CudaDevice::create(options);
    if (!device) {
      std::fprintf(stderr, "gpu_moe_layer: %s\n",
                   device.status().message().c_str());
      return 1;
    }
    StatusOr<std::unique_ptr<device::Stream>> stream =
        (*device)->createStream();
    if (!stream) {
      std::fprintf(stderr, "gpu_moe_layer: %s\n",
                   stream.status().message().c_str());
      return 1;
    }
    devices.push_back(std::move(device).value());
    streams.push_back(std::move(stream).value());
  }
  for (int64_t d : o.dModels)
    for (size_t p = 0; p < o.precisions.size(); ++p) {
      const std::string &precision = o.precisions[p];
      emit(benchDeviceMatmul(*devices[p], *streams[p], o, precision, d));
      if (precision == "bf16")
        emit(benchRawBf16(o, d));
      for (int64_t e : o.experts)
        emit(benchLayer(*devices[p], *streams[p], o, precision, d, e));
    }
  if (failures)
    std::fprintf(stderr, "gpu_moe_layer: %d configuration(s) failed\n",
                 failures);
  return failures ? 1 : 0;
}
