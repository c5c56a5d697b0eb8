//===- flexmoe-grad-dump.cpp - dump a program's steps for cross-checks ----===//
//
// A test driver for the PyTorch cross-check (test/pytorch): loads a .fmoe
// program of world size 1, binds it to the CPU device with the
// single-process communicator, and runs N training steps on seeded random
// batches, writing into a new folder:
//
//   config.json              the model read back from the program (dims,
//                            MoE layers, epsilon, AdamW hyper-parameters,
//                            every parameter's name and shape)
//   params0.safetensors      the parameters before step 1
//   stepN.safetensors        step N's tokens, labels and loss, every
//                            parameter's gradient ("grad.<name>") and its
//                            value after the update ("param.<name>"), and
//                            each MoE layer's routing ("stats.<layer>.kept"
//                            per expert, "stats.<layer>.dropped")
//
// Expert tensors are written in expert order [E, ...] (the program stores
// them per slot; the layer's slot table says which expert a slot holds).
//
//   flexmoe-grad-dump <program.fmoe> --out DIR [--steps N] [--seed S]
//                     [--init-params FILE.safetensors]
//
// --init-params replaces the initial parameters (names and shapes as in
// params0.safetensors, experts in expert order).
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cpu/CpuDevice.h"
#include "runtime/executor/Executor.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace flexmoe;
namespace fs = std::filesystem;

namespace {

int fail(const std::string &message) {
  std::fprintf(stderr, "flexmoe-grad-dump: %s\n", message.c_str());
  return 1;
}

std::string jsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\')
      out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string jsonShape(const std::vector<int64_t> &shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

/// Shortest decimal that reads back as the same float.
std::string jsonFloat(double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", value);
  return buf;
}

/// One tensor of a safetensors file (host copy, F32 or I32).
struct Tensor {
  std::string name;
  std::string dtype; // "F32" or "I32"
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};

/// The safetensors format: u64 LE header length, JSON header (padded with
/// spaces to 8 bytes), then the raw little-endian data.
Status writeSafetensors(const fs::path &path,
                        const std::vector<Tensor> &tensors) {
  std::string header = "{";
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor &t = tensors[i];
    header += (i ? "," : "") + jsonString(t.name) + ":{\"dtype\":\"" + t.dtype +
              "\",\"shape\":" + jsonShape(t.shape) + ",\"data_offsets\":[" +
              std::to_string(offset) + "," +
              std::to_string(offset + t.bytes.size()) + "]}";
    offset += t.bytes.size();
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  // Write next to the target and rename: no half-written file survives.
  fs::path tmp = path;
  tmp += ".tmp";
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  if (!out)
    return errorf("cannot create '", tmp.string(), "'");
  uint64_t size = header.size();
  unsigned char le[8];
  for (int i = 0; i < 8; ++i)
    le[i] = static_cast<unsigned char>(size >> (8 * i));
  out.write(reinterpret_cast<const char *>(le), 8);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  for (const Tensor &t : tensors)
    out.write(reinterpret_cast<const char *>(t.bytes.data()),
              static_cast<std::streamsize>(t.bytes.size()));
  out.close();
  if (!out)
    return errorf("cannot write '", tmp.string(), "'");
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec)
    return errorf("cannot rename '", tmp.string(), "' to '", path.string(),
                  "': ", ec.message());
  return Status::ok();
}

Status writeText(const fs::path &path, const std::string &text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out)
    return errorf("cannot write '", path.string(), "'");
  return Status::ok();
}

/// A parameter as the model sees it: expert parameters in expert order.
struct Param {
  const fb::Buffer *buffer = nullptr;
  std::string name;
  std::vector<int64_t> shape; // global shape ([E, ...] for experts)
  int32_t moeLayer = -1;
};

/// slot -> expert of rank 0 (-1 = empty slot).
std::vector<int32_t> slotExperts(const fb::MoeLayer &layer) {
  std::vector<int32_t> out;
  int32_t slots = layer.placement()->slots_per_device();
  for (int32_t s = 0; s < slots; ++s)
    out.push_back(layer.slot_table()->Get(s));
  return out;
}

/// Copies a [slots, ...] buffer into expert order [E, ...].
std::vector<std::byte> toExpertOrder(const Param &p, const fb::MoeLayer *layer,
                                     const std::byte *data) {
  int64_t total = 1;
  for (int64_t d : p.shape)
    total *= d;
  std::vector<std::byte> out(static_cast<size_t>(total) * 4);
  if (p.moeLayer < 0) {
    std::memcpy(out.data(), data, out.size());
    return out;
  }
  const size_t row = out.size() / static_cast<size_t>(p.shape[0]);
  std::vector<int32_t> experts = slotExperts(*layer);
  for (size_t s = 0; s < experts.size(); ++s)
    if (experts[s] >= 0)
      std::memcpy(out.data() + row * static_cast<size_t>(experts[s]),
                  data + row * s, row);
  return out;
}

/// The inverse of toExpertOrder: expert order [E, ...] into the slots.
void fromExpertOrder(const Param &p, const fb::MoeLayer *layer,
                     const std::byte *src, std::byte *data, size_t bytes) {
  if (p.moeLayer < 0) {
    std::memcpy(data, src, bytes);
    return;
  }
  const size_t row = bytes / static_cast<size_t>(p.shape[0]);
  std::vector<int32_t> experts = slotExperts(*layer);
  for (size_t s = 0; s < experts.size(); ++s)
    if (experts[s] >= 0)
      std::memcpy(data + row * s, src + row * static_cast<size_t>(experts[s]),
                  row);
}

/// One tensor's entry in a safetensors header.
struct HeaderEntry {
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

/// A minimal JSON reader for safetensors headers: objects, arrays, strings,
/// integers (and other scalars skipped).
class HeaderParser {
public:
  explicit HeaderParser(std::string_view text) : text_(text) {}

  StatusOr<std::map<std::string, HeaderEntry>> parse() {
    std::map<std::string, HeaderEntry> out;
    FLEXMOE_RETURN_IF_ERROR(expect('{'));
    if (peek() == '}')
      return ++pos_, out;
    while (true) {
      StatusOr<std::string> name = string();
      if (!name)
        return name.status();
      FLEXMOE_RETURN_IF_ERROR(expect(':'));
      if (*name == "__metadata__") {
        FLEXMOE_RETURN_IF_ERROR(skipValue());
      } else {
        HeaderEntry entry;
        FLEXMOE_RETURN_IF_ERROR(tensorEntry(*name, entry));
        out[*name] = std::move(entry);
      }
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      FLEXMOE_RETURN_IF_ERROR(expect('}'));
      return out;
    }
  }

private:
  char peek() {
    while (pos_ < text_.size() &&
           std::isspace(static_cast<unsigned char>(text_[pos_])))
      ++pos_;
    return pos_ < text_.size() ? text_[pos_] : '\0';
  }
  Status expect(char c) {
    if (peek() != c)
      return errorf("malformed safetensors header: expected '", c, "' at byte ",
                    pos_);
    ++pos_;
    return Status::ok();
  }
  StatusOr<std::string> string() {
    FLEXMOE_RETURN_IF_ERROR(expect('"'));
    std::string out;
    while (pos_ < text_.size() && text_[pos_] != '"') {
      if (text_[pos_] == '\\' && pos_ + 1 < text_.size())
        ++pos_;
      out += text_[pos_++];
    }
    FLEXMOE_RETURN_IF_ERROR(expect('"'));
    return out;
  }
  StatusOr<int64_t> integer() {
    peek();
    size_t start = pos_;
    if (pos_ < text_.size() && text_[pos_] == '-')
      ++pos_;
    while (pos_ < text_.size() &&
           std::isdigit(static_cast<unsigned char>(text_[pos_])))
      ++pos_;
    if (pos_ == start)
      return errorf("malformed safetensors header: expected an integer at "
                    "byte ",
                    pos_);
    return std::stoll(std::string(text_.substr(start, pos_ - start)));
  }
  StatusOr<std::vector<int64_t>> integers() {
    std::vector<int64_t> out;
    FLEXMOE_RETURN_IF_ERROR(expect('['));
    if (peek() == ']')
      return ++pos_, out;
    while (true) {
      StatusOr<int64_t> v = integer();
      if (!v)
        return v.status();
      out.push_back(*v);
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      FLEXMOE_RETURN_IF_ERROR(expect(']'));
      return out;
    }
  }
  Status skipValue() {
    char c = peek();
    if (c == '"')
      return string().status();
    if (c == '{' || c == '[') {
      char close = c == '{' ? '}' : ']';
      ++pos_;
      if (peek() == close)
        return ++pos_, Status::ok();
      while (true) {
        if (c == '{') {
          FLEXMOE_RETURN_IF_ERROR(string().status());
          FLEXMOE_RETURN_IF_ERROR(expect(':'));
        }
        FLEXMOE_RETURN_IF_ERROR(skipValue());
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        return expect(close);
      }
    }
    while (pos_ < text_.size() && text_[pos_] != ',' && text_[pos_] != '}' &&
           text_[pos_] != ']')
      ++pos_;
    return Status::ok();
  }
  Status tensorEntry(const std::string &name, HeaderEntry &entry) {
    FLEXMOE_RETURN_IF_ERROR(expect('{'));
    bool first = true;
    while (peek() != '}') {
      if (!first)
        FLEXMOE_RETURN_IF_ERROR(expect(','));
      first = false;
      StatusOr<std::string> key = string();
      if (!key)
        return key.status();
      FLEXMOE_RETURN_IF_ERROR(expect(':'));
      if (*key == "dtype") {
        StatusOr<std::string> v = string();
        if (!v)
          return v.status();
        entry.dtype = *v;
      } else if (*key == "shape" || *key == "data_offsets") {
        StatusOr<std::vector<int64_t>> v = integers();
        if (!v)
          return v.status();
        if (*key == "shape") {
          entry.shape = *v;
        } else {
          if (v->size() != 2 || (*v)[0] < 0 || (*v)[1] < (*v)[0])
            return errorf("tensor '", name, "': bad data_offsets");
          entry.begin = (*v)[0];
          entry.end = (*v)[1];
        }
      } else {
        FLEXMOE_RETURN_IF_ERROR(skipValue());
      }
    }
    ++pos_;
    return Status::ok();
  }

  std::string_view text_;
  size_t pos_ = 0;
};

/// Reads a safetensors file of f32 parameters into the executor's buffers;
/// every parameter must be present with its exact shape, and no other tensor.
Status
loadParams(const std::string &path, const std::vector<Param> &params,
           executor::Executor &executor,
           const std::function<const fb::MoeLayer *(const Param &)> &layerOf) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return errorf("cannot open the parameter file '", path, "'");
  std::vector<char> blob((std::istreambuf_iterator<char>(in)),
                         std::istreambuf_iterator<char>());
  if (blob.size() < 8)
    return errorf("'", path, "' is too short for a safetensors file");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | static_cast<unsigned char>(blob[i]);
  if (n > blob.size() - 8)
    return errorf("'", path, "': the header size ", n, " exceeds the file");
  StatusOr<std::map<std::string, HeaderEntry>> header =
      HeaderParser(std::string_view(blob.data() + 8, n)).parse();
  if (!header)
    return errorf("'", path, "': ", header.status().message());
  const uint64_t dataSize = blob.size() - 8 - n;
  const std::byte *data =
      reinterpret_cast<const std::byte *>(blob.data()) + 8 + n;
  for (const Param &p : params) {
    auto it = header->find(p.name);
    if (it == header->end())
      return errorf("'", path, "' has no tensor '", p.name, "'");
    const HeaderEntry &e = it->second;
    if (e.dtype != "F32")
      return errorf("'", path, "': tensor '", p.name, "' is ", e.dtype,
                    ", expected F32");
    if (e.shape != p.shape)
      return errorf("'", path, "': tensor '", p.name, "' has shape ",
                    jsonShape(e.shape), ", the program's is ",
                    jsonShape(p.shape));
    int64_t count = 1;
    for (int64_t d : p.shape)
      count *= d;
    if (e.end > dataSize || e.end - e.begin != static_cast<uint64_t>(count) * 4)
      return errorf("'", path, "': tensor '", p.name, "' has bad data offsets");
    const device::Operand &op = executor.buffer(p.buffer->id());
    fromExpertOrder(p, layerOf(p), data + e.begin, op.data,
                    static_cast<size_t>(count) * 4);
  }
  if (header->size() != params.size())
    for (const auto &[name, entry] : *header) {
      bool known = false;
      for (const Param &p : params)
        known = known || p.name == name;
      if (!known)
        return errorf("'", path, "' has the tensor '", name,
                      "', which is no parameter of the program");
    }
  return Status::ok();
}

template <typename T> std::vector<std::byte> bytesOf(const std::vector<T> &v) {
  std::vector<std::byte> out(v.size() * sizeof(T));
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

/// The block index b of a parameter named "h<b>.…".
std::optional<int64_t> blockOf(std::string_view name) {
  if (name.size() < 2 || name[0] != 'h')
    return std::nullopt;
  size_t dot = name.find('.');
  if (dot == std::string_view::npos || dot == 1)
    return std::nullopt;
  int64_t b = 0;
  for (size_t i = 1; i < dot; ++i) {
    if (name[i] < '0' || name[i] > '9')
      return std::nullopt;
    b = b * 10 + (name[i] - '0');
  }
  return b;
}

} // namespace

int main(int argc, char **argv) {
  std::string path, outDir, initParams;
  int64_t steps = 3;
  uint64_t seed = 0;
  const char *usage = "usage: flexmoe-grad-dump <program.fmoe> --out DIR "
                      "[--steps N >= 1] [--seed S] "
                      "[--init-params FILE.safetensors]";
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--steps" && i + 1 < argc)
      steps = std::atoll(argv[++i]);
    else if (arg == "--seed" && i + 1 < argc)
      seed = std::strtoull(argv[++i], nullptr, 10);
    else if (arg == "--out" && i + 1 < argc)
      outDir = argv[++i];
    else if (arg == "--init-params" && i + 1 < argc)
      initParams = argv[++i];
    else if (path.empty() && !arg.empty() && arg[0] != '-')
      path = arg;
    else
      return fail(usage);
  }
  if (path.empty() || outDir.empty() || steps < 1)
    return fail(usage);
  if (fs::exists(outDir))
    return fail("the output folder '" + outDir +
                "' already exists; remove it or name a new one");

  StatusOr<program::LoadedProgram> loaded = program::loadProgram(path);
  if (!loaded)
    return fail(loaded.status().message());
  const fb::Program &program = loaded->program();
  if (program.world_size() != 1)
    return fail("'" + path + "' is compiled for world size " +
                std::to_string(program.world_size()) +
                "; this tool runs one process: compile with --world-size 1");
  if (program.compute_type() != fb::ComputeType::F32)
    return fail("'" + path +
                "' computes in bf16; the cross-check needs f32 "
                "(compile with --dtype f32)");

  // --- The model, read back from the program. ------------------------------
  std::vector<Param> params;
  std::map<std::string, size_t> paramIndex;
  std::vector<int64_t> tokensShape;
  int64_t numTokens = 0, numLabels = 0;
  auto *moeLayers = program.moe_layers();
  for (const fb::Buffer *buffer : *program.buffers()) {
    if (buffer->alias_of() >= 0)
      continue;
    std::vector<int64_t> shape(buffer->shape()->begin(),
                               buffer->shape()->end());
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    if (buffer->kind() == fb::BufferKind::InputTokens) {
      numTokens = n;
      tokensShape = shape;
    }
    if (buffer->kind() == fb::BufferKind::InputLabels)
      numLabels = n;
    if (buffer->kind() != fb::BufferKind::Parameter)
      continue;
    if (buffer->element_type() != fb::ElementType::F32)
      return fail("parameter '" + buffer->param_name()->str() + "' is not f32");
    Param p{buffer, buffer->param_name()->str(), shape, buffer->moe_layer()};
    if (p.moeLayer >= 0) {
      if (!moeLayers || p.moeLayer >= static_cast<int32_t>(moeLayers->size()))
        return fail("parameter '" + p.name + "' names a missing MoE layer");
      const fb::MoeLayer *layer = moeLayers->Get(p.moeLayer);
      if (shape.empty() || shape[0] != layer->placement()->slots_per_device())
        return fail("expert parameter '" + p.name +
                    "' is not [slots_per_device, ...]");
      p.shape[0] = layer->num_experts();
    }
    paramIndex[p.name] = params.size();
    params.push_back(std::move(p));
  }
  if (tokensShape.size() != 2 || numLabels != numTokens)
    return fail("the program's token input is not [batch, seq] or its labels "
                "differ in size");

  int64_t vocab = 0, dModel = 0, numHeads = 0, window = 0;
  bool causal = false, haveAttention = false;
  double lnEps = 1e-5, dropout = 0;
  std::string geluApprox = "tanh";
  int64_t ignoreIndex = -100;
  std::vector<double> auxCoef(moeLayers ? moeLayers->size() : 0, -1);
  std::optional<const fb::AdamWAttrs *> adamw;
  bool adamwUniform = true;
  std::map<std::string, const fb::AdamWAttrs *> adamwOf;
  for (const fb::Instruction *in : *program.instructions()) {
    switch (in->opcode()) {
    case fb::OpCode::Embedding: {
      const fb::Buffer *table = program.buffers()->Get(in->inputs()->Get(1));
      vocab = table->shape()->Get(0);
      dModel = table->shape()->Get(1);
      break;
    }
    case fb::OpCode::Attention:
      if (const auto *a = in->attrs_as_AttentionAttrs()) {
        if (haveAttention && (a->num_heads() != numHeads ||
                              a->causal() != causal || a->window() != window))
          return fail("the attention layers differ in heads, causality or "
                      "window; the reference assumes one setting");
        numHeads = a->num_heads();
        causal = a->causal();
        window = a->window();
        haveAttention = true;
      }
      break;
    case fb::OpCode::LayerNorm:
      if (const auto *a = in->attrs_as_LayerNormAttrs())
        lnEps = a->epsilon();
      break;
    case fb::OpCode::Gelu:
      if (const auto *a = in->attrs_as_GeluAttrs())
        geluApprox =
            a->approximate() == fb::GeluApproximation::Tanh ? "tanh" : "none";
      break;
    case fb::OpCode::Dropout:
      if (const auto *a = in->attrs_as_DropoutAttrs())
        dropout = a->rate();
      break;
    case fb::OpCode::CrossEntropy:
      if (const auto *a = in->attrs_as_CrossEntropyAttrs())
        ignoreIndex = a->ignore_index();
      break;
    case fb::OpCode::AuxLoss:
      if (const auto *a = in->attrs_as_AuxLossAttrs();
          a && in->moe_layer() >= 0 &&
          in->moe_layer() < static_cast<int32_t>(auxCoef.size()))
        auxCoef[in->moe_layer()] = a->coef();
      break;
    case fb::OpCode::AdamW:
      if (const auto *a = in->attrs_as_AdamWAttrs()) {
        const fb::Buffer *param = program.buffers()->Get(in->inputs()->Get(0));
        if (param->param_name())
          adamwOf[param->param_name()->str()] = a;
        if (adamw &&
            ((*adamw)->lr() != a->lr() || (*adamw)->beta1() != a->beta1() ||
             (*adamw)->beta2() != a->beta2() ||
             (*adamw)->epsilon() != a->epsilon() ||
             (*adamw)->weight_decay() != a->weight_decay()))
          adamwUniform = false;
        adamw = a;
      }
      break;
    default:
      break;
    }
  }
  if (vocab <= 0 || !haveAttention || !adamw)
    return fail("the program lacks an embedding, an attention or an AdamW "
                "update: not a GPT-MoE training step");
  if (!adamwUniform)
    return fail("the parameters' AdamW hyper-parameters differ; the "
                "reference uses one setting");
  if (adamwOf.size() != params.size())
    return fail("not every parameter has an AdamW update");

  int64_t numLayers = 0, ffnHidden = 0;
  for (const Param &p : params)
    if (std::optional<int64_t> b = blockOf(p.name)) {
      numLayers = std::max(numLayers, *b + 1);
      if (p.name == "h" + std::to_string(*b) + ".mlp.fc1.weight")
        ffnHidden = p.shape[1];
    }

  std::ostringstream json;
  json << "{\n  \"format\": \"flexmoe-grad-dump/1\",\n"
       << "  \"program\": " << jsonString(path) << ",\n"
       << "  \"steps\": " << steps << ",\n  \"seed\": " << seed << ",\n"
       << "  \"world_size\": 1,\n"
       << "  \"vocab_size\": " << vocab << ",\n"
       << "  \"batch_size\": " << tokensShape[0] << ",\n"
       << "  \"seq_len\": " << tokensShape[1] << ",\n"
       << "  \"d_model\": " << dModel << ",\n"
       << "  \"num_heads\": " << numHeads << ",\n"
       << "  \"causal\": " << (causal ? "true" : "false") << ",\n"
       << "  \"window\": " << window << ",\n"
       << "  \"num_layers\": " << numLayers << ",\n"
       << "  \"ffn_hidden\": " << ffnHidden << ",\n"
       << "  \"layer_norm_epsilon\": " << jsonFloat(lnEps) << ",\n"
       << "  \"gelu_approximate\": " << jsonString(geluApprox) << ",\n"
       << "  \"ignore_index\": " << ignoreIndex << ",\n"
       << "  \"dropout\": " << jsonFloat(dropout) << ",\n"
       << "  \"adamw\": {\"lr\": " << jsonFloat((*adamw)->lr())
       << ", \"beta1\": " << jsonFloat((*adamw)->beta1())
       << ", \"beta2\": " << jsonFloat((*adamw)->beta2())
       << ", \"epsilon\": " << jsonFloat((*adamw)->epsilon())
       << ", \"weight_decay\": " << jsonFloat((*adamw)->weight_decay())
       << "},\n  \"moe_layers\": [";
  for (size_t l = 0; moeLayers && l < moeLayers->size(); ++l) {
    const fb::MoeLayer *layer = moeLayers->Get(l);
    std::optional<int64_t> block;
    for (const Param &p : params)
      if (p.moeLayer == static_cast<int32_t>(l))
        block = blockOf(p.name);
    if (!block)
      return fail("MoE layer '" + layer->name()->str() +
                  "' has no parameter named h<block>.…");
    if (auxCoef[l] < 0)
      return fail("MoE layer '" + layer->name()->str() + "' has no aux loss");
    json << (l ? ",\n" : "\n")
         << "    {\"name\": " << jsonString(layer->name()->str())
         << ", \"block\": " << *block
         << ", \"num_experts\": " << layer->num_experts()
         << ", \"top_k\": " << layer->top_k()
         << ", \"expert_hidden\": " << layer->ffn_hidden()
         << ", \"capacity\": " << layer->capacity()
         << ", \"aux_loss_coef\": " << jsonFloat(auxCoef[l])
         << ", \"activation\": "
         << (layer->activation() == fb::Activation::Relu ? "\"relu\""
                                                         : "\"gelu\"")
         << "}";
  }
  json << "\n  ],\n  \"params\": [";
  for (size_t i = 0; i < params.size(); ++i)
    json << (i ? ",\n" : "\n")
         << "    {\"name\": " << jsonString(params[i].name)
         << ", \"shape\": " << jsonShape(params[i].shape) << "}";
  json << "\n  ]\n}\n";

  // --- Run. ------------------------------------------------------------------
  cpu::CpuDevice device;
  device::SingleProcessCommunicator comm;
  executor::ExecutorOptions options;
  options.seed = seed;
  StatusOr<std::unique_ptr<executor::Executor>> created =
      executor::Executor::create(*loaded, device, comm, options);
  if (!created)
    return fail(created.status().message());
  executor::Executor &executor = **created;

  // Everything goes to DIR.partial first, renamed to DIR at the end.
  fs::path finalDir = outDir, dir = outDir + ".partial";
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (!fs::create_directories(dir, ec) || ec)
    return fail("cannot create '" + dir.string() + "': " + ec.message());
  auto abandon = [&](const std::string &message) {
    fs::remove_all(dir, ec);
    return fail(message);
  };

  auto layerOf = [&](const Param &p) -> const fb::MoeLayer * {
    return p.moeLayer < 0 ? nullptr : moeLayers->Get(p.moeLayer);
  };
  auto paramTensors = [&](const std::string &prefix) {
    std::vector<Tensor> out;
    for (const Param &p : params) {
      const device::Operand &op = executor.buffer(p.buffer->id());
      out.push_back({prefix + p.name, "F32", p.shape,
                     toExpertOrder(p, layerOf(p), op.data)});
    }
    return out;
  };
  // Optional start point other than the init specs (e.g. larger weights, so
  // that activations leave the near-linear regime of a fresh model).
  if (!initParams.empty())
    if (Status s = loadParams(initParams, params, executor, layerOf); !s.isOk())
      return abandon(s.message());
  if (Status s = writeText(dir / "config.json", json.str()); !s.isOk())
    return abandon(s.message());
  if (Status s =
          writeSafetensors(dir / "params0.safetensors", paramTensors(""));
      !s.isOk())
    return abandon(s.message());

  std::map<std::string, std::vector<std::byte>> grads;
  std::string observerError;
  executor.setGradientObserver(
      [&](const fb::Buffer &parameter, const device::Operand &gradient) {
        if (!parameter.param_name()) {
          observerError = "a gradient arrived for a buffer without a name";
          return;
        }
        auto it = paramIndex.find(parameter.param_name()->str());
        if (it == paramIndex.end()) {
          observerError = "a gradient arrived for the unknown parameter '" +
                          parameter.param_name()->str() + "'";
          return;
        }
        const Param &p = params[it->second];
        if (grads.count(p.name))
          observerError = "parameter '" + p.name + "' got two gradients";
        grads[p.name] = toExpertOrder(p, layerOf(p), gradient.data);
      });

  std::vector<int32_t> tokens(numTokens), labels(numLabels);
  std::string losses;
  for (int64_t s = 1; s <= steps; ++s) {
    // A fresh stream per step: step s's batch does not depend on N.
    std::mt19937_64 rng(seed * 1000003 + static_cast<uint64_t>(s));
    std::uniform_int_distribution<int32_t> id(0,
                                              static_cast<int32_t>(vocab - 1));
    for (int32_t &t : tokens)
      t = id(rng);
    for (int32_t &l : labels)
      l = id(rng);
    if (Status st = executor.setInputs(tokens, labels); !st.isOk())
      return abandon(st.message());
    grads.clear();
    StatusOr<float> loss = executor.step();
    std::string where = "step " + std::to_string(s) + ": ";
    if (!loss)
      return abandon(where + loss.status().message());
    if (!observerError.empty())
      return abandon(where + observerError);
    std::vector<Tensor> tensors;
    tensors.push_back({"tokens", "I32", tokensShape, bytesOf(tokens)});
    tensors.push_back({"labels", "I32", tokensShape, bytesOf(labels)});
    tensors.push_back({"loss", "F32", {}, bytesOf(std::vector<float>{*loss})});
    for (const Param &p : params) {
      auto it = grads.find(p.name);
      if (it == grads.end())
        return abandon(where + "the executor reported no gradient for '" +
                       p.name + "'");
      tensors.push_back({"grad." + p.name, "F32", p.shape, it->second});
    }
    for (Tensor &t : paramTensors("param."))
      tensors.push_back(std::move(t));
    // Routing: copies each expert kept and copies dropped for capacity.
    for (size_t l = 0; l < executor.numMoeLayers(); ++l) {
      const executor::LayerStats &stats = executor.layerStats(l);
      std::string name = moeLayers->Get(l)->name()->str();
      std::vector<int32_t> kept(stats.expertTokens.begin(),
                                stats.expertTokens.end());
      tensors.push_back({"stats." + name + ".kept",
                         "I32",
                         {static_cast<int64_t>(kept.size())},
                         bytesOf(kept)});
      tensors.push_back({"stats." + name + ".dropped",
                         "I32",
                         {},
                         bytesOf(std::vector<int32_t>{
                             static_cast<int32_t>(stats.droppedTokens)})});
    }
    if (Status st = writeSafetensors(
            dir / ("step" + std::to_string(s) + ".safetensors"), tensors);
        !st.isOk())
      return abandon(st.message());
    std::printf("step %lld loss %.6f\n", static_cast<long long>(s), *loss);
  }
  fs::rename(dir, finalDir, ec);
  if (ec)
    return abandon("cannot rename '" + dir.string() + "' to '" +
                   finalDir.string() + "': " + ec.message());
  std::printf("wrote %lld steps of %zu parameters to %s\n",
              static_cast<long long>(steps), params.size(), outDir.c_str());
  return 0;
}
