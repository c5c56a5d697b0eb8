//===- Checkpoint.cpp - saving and restoring an executor's state ----------===//
#include "runtime/train/Checkpoint.h"

#include "runtime/program/Program.h"
#include "runtime/train/ExpertSlots.h"
#include "runtime/train/File.h"

#include <algorithm>
#include <map>
#include <sys/stat.h>

using namespace flexmoe;
using namespace flexmoe::train;
using nlohmann::json;

namespace {

std::string str(const flatbuffers::String *s) {
  return s ? s->str() : std::string();
}

std::string baseName(const std::string &path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

Dtype dtypeOf(fb::ElementType type) {
  return type == fb::ElementType::I32 ? Dtype::I32 : Dtype::F32;
}

/// The host bytes of every tensor of `layout`, in checkpoint form.
using HostTensors = std::vector<std::vector<std::byte>>;

/// Every rank's expert slots of one buffer, on rank 0 (point to point: the
/// bytes go to the one rank that writes). Other ranks get only their own.
constexpr int kGatherTag = 0x636b; // "ck"

StatusOr<std::vector<std::vector<std::byte>>>
gatherSlots(executor::Executor &executor, std::vector<std::byte> local) {
  device::Communicator &comm = executor.communicator();
  std::vector<std::vector<std::byte>> all;
  if (comm.rank() != 0) {
    FLEXMOE_RETURN_IF_ERROR(
        comm.send(local.data(), local.size(), 0, kGatherTag));
    all.push_back(std::move(local));
    return all;
  }
  size_t bytes = local.size();
  all.push_back(std::move(local));
  for (int64_t r = 1; r < comm.worldSize(); ++r) {
    std::vector<std::byte> theirs(bytes);
    FLEXMOE_RETURN_IF_ERROR(comm.recv(theirs.data(), bytes, r, kGatherTag));
    all.push_back(std::move(theirs));
  }
  return all;
}

/// Copies every tensor of `layout` from the device, experts in expert order.
StatusOr<HostTensors> readTensors(executor::Executor &executor,
                                  const std::vector<LayoutEntry> &layout) {
  FLEXMOE_RETURN_IF_ERROR(executor.device().synchronize());
  HostTensors tensors;
  for (const LayoutEntry &entry : layout) {
    const device::Operand &operand = executor.buffer(entry.buffer);
    std::vector<std::byte> host(operand.numBytes());
    FLEXMOE_RETURN_IF_ERROR(
        executor.device().copyToHost(host.data(), operand.data, host.size()));
    if (entry.moeLayer < 0) {
      tensors.push_back(std::move(host));
      continue;
    }
    // The executor's current placement: setPlacement may have moved the
    // experts since the program was compiled.
    SlotMap map = slotMapOf(executor.placement(entry.moeLayer));
    size_t expertBytes = host.size() / map.slotsPerDevice;
    StatusOr<std::vector<std::vector<std::byte>>> all =
        gatherSlots(executor, std::move(host));
    if (!all)
      return all.status();
    if (executor.communicator().rank() != 0) {
      tensors.emplace_back(); // only rank 0 writes
      continue;
    }
    std::vector<std::span<const std::byte>> spans(all->begin(), all->end());
    StatusOr<std::vector<std::byte>> experts =
        expertsFromSlots(map, spans, expertBytes);
    if (!experts)
      return errorf("tensor '", entry.name, "': ", experts.status().message());
    tensors.push_back(std::move(experts).value());
  }
  return tensors;
}

StatusOr<SafetensorsWriter> makeWriter(executor::Executor &executor,
                                       const std::vector<LayoutEntry> &layout,
                                       const std::string &format) {
  // Every rank takes part in the gathers; only rank 0 writes (the others'
  // writers stay empty).
  StatusOr<HostTensors> tensors = readTensors(executor, layout);
  if (!tensors)
    return tensors.status();
  SafetensorsWriter writer;
  if (executor.communicator().rank() != 0)
    return writer;
  for (size_t i = 0; i < layout.size(); ++i)
    FLEXMOE_RETURN_IF_ERROR(writer.add(layout[i].name, layout[i].dtype,
                                       layout[i].shape,
                                       std::move((*tensors)[i])));
  const fb::Program &program = executor.program().program();
  writer.setMetadata("format", format);
  writer.setMetadata("program_name", str(program.name()));
  writer.setMetadata("layout_hash", layoutHash(layout));
  writer.setMetadata("step", std::to_string(executor.stepsDone()));
  return writer;
}

bool isInteger(const json &value) {
  return value.is_number_integer() || value.is_number_unsigned();
}

/// Checks every tensor of `layout` against `file`: present, same dtype and
/// shape, nothing extra (but optimizer.* with ignoreOptimizerState).
Status checkTensors(const SafetensorsFile &file,
                    const std::vector<LayoutEntry> &layout, bool layoutDiffers,
                    bool ignoreOptimizerState) {
  std::string prefix =
      layoutDiffers
          ? "the program's parameter layout differs from the checkpoint's: "
          : "";
  for (const LayoutEntry &entry : layout) {
    const TensorInfo *info = file.find(entry.name);
    if (!info)
      return errorf(prefix, "tensor '", entry.name, "' ",
                    shapeString(entry.shape),
                    " of the program is missing from '", file.name(), "'");
    if (info->dtype != entry.dtype)
      return errorf(prefix, "tensor '", entry.name, "' is ",
                    dtypeName(info->dtype), " in the checkpoint but ",
                    dtypeName(entry.dtype), " in the program");
    if (info->shape != entry.shape)
      return errorf(prefix, "tensor '", entry.name, "' has shape ",
                    shapeString(info->shape), " in the checkpoint but ",
                    shapeString(entry.shape), " in the program");
  }
  for (const TensorInfo &info : file.tensors()) {
    if (ignoreOptimizerState && info.name.starts_with("optimizer."))
      continue;
    if (std::none_of(layout.begin(), layout.end(),
                     [&](const LayoutEntry &e) { return e.name == info.name; }))
      return errorf(prefix, "tensor '", info.name, "' ",
                    shapeString(info.shape),
                    " of the checkpoint is not in the program");
  }
  return Status::ok();
}

/// Copies the checked tensors of `layout` into the executor's buffers,
/// expert tensors into this rank's slots. Everything is staged on the host
/// first, so that a failure leaves the executor as it was.
Status copyTensors(executor::Executor &executor, const SafetensorsFile &file,
                   const std::vector<LayoutEntry> &layout) {
  int64_t rank = executor.communicator().rank();
  HostTensors staged;
  for (const LayoutEntry &entry : layout) {
    std::span<const std::byte> data = file.data(*file.find(entry.name));
    if (entry.moeLayer < 0) {
      staged.emplace_back(data.begin(), data.end());
      continue;
    }
    // Every rank reads the whole file and keeps its own slots: no scatter.
    SlotMap map = slotMapOf(executor.placement(entry.moeLayer));
    size_t expertBytes = map.numExperts ? data.size() / map.numExperts : 0;
    staged.push_back(slotsFromExperts(map, rank, data, expertBytes));
  }
  for (size_t i = 0; i < layout.size(); ++i) {
    const device::Operand &operand = executor.buffer(layout[i].buffer);
    if (operand.numBytes() != staged[i].size())
      return errorf("tensor '", layout[i].name, "' has ", staged[i].size(),
                    " bytes but its buffer ", operand.numBytes());
  }
  FLEXMOE_RETURN_IF_ERROR(executor.device().synchronize());
  for (size_t i = 0; i < layout.size(); ++i) {
    const device::Operand &operand = executor.buffer(layout[i].buffer);
    FLEXMOE_RETURN_IF_ERROR(executor.device().copyToDevice(
        operand.data, staged[i].data(), staged[i].size()));
  }
  return Status::ok();
}

} // namespace

std::string flexmoe::train::checkpointTensorsPath(const std::string &path) {
  return path + ".safetensors";
}

std::string flexmoe::train::checkpointSidecarPath(const std::string &path) {
  return path + ".json";
}

bool flexmoe::train::checkpointExists(const std::string &path) {
  struct stat st;
  return ::stat(checkpointSidecarPath(path).c_str(), &st) == 0;
}

StatusOr<std::vector<LayoutEntry>>
flexmoe::train::checkpointLayout(const fb::Program &program,
                                 bool optimizerState) {
  const auto *buffers = program.buffers();
  std::vector<LayoutEntry> layout;
  std::map<std::string, uint32_t> names;
  uint32_t numBuffers = buffers ? buffers->size() : 0;
  for (uint32_t id = 0; id < numBuffers; ++id) {
    const fb::Buffer &b = *buffers->Get(id);
    if (b.alias_of() >= 0)
      continue;
    const fb::Buffer *param = &b;
    std::string prefix;
    if (b.kind() == fb::BufferKind::Parameter) {
    } else if (optimizerState && (b.kind() == fb::BufferKind::AdamM ||
                                  b.kind() == fb::BufferKind::AdamV)) {
      if (b.state_of() < 0 || static_cast<uint32_t>(b.state_of()) >= numBuffers)
        return errorf("optimizer state '", str(b.name()),
                      "' belongs to no parameter");
      param = buffers->Get(b.state_of());
      prefix = b.kind() == fb::BufferKind::AdamM ? "optimizer.exp_avg."
                                                 : "optimizer.exp_avg_sq.";
    } else {
      continue;
    }
    LayoutEntry entry;
    entry.name = prefix + str(param->param_name());
    if (str(param->param_name()).empty())
      return errorf("parameter '", str(param->name()), "' has no param_name");
    entry.dtype = dtypeOf(b.element_type());
    entry.buffer = id;
    entry.moeLayer = b.moe_layer();
    if (b.shape())
      entry.shape.assign(b.shape()->begin(), b.shape()->end());
    if (entry.moeLayer >= 0) {
      // [slots_per_device, ...] on the device, [num_experts, ...] here.
      const fb::MoeLayer *layer = program.moe_layers()->Get(entry.moeLayer);
      if (entry.shape.empty())
        return errorf("expert tensor '", entry.name, "' has no slot dimension");
      entry.shape[0] = layer->num_experts();
    }
    auto [it, inserted] = names.emplace(entry.name, id);
    if (!inserted)
      return errorf("buffers '", str(buffers->Get(it->second)->name()),
                    "' and '", str(b.name()), "' both map to tensor '",
                    entry.name, "'");
    layout.push_back(std::move(entry));
  }
  return layout;
}

std::string flexmoe::train::layoutHash(const std::vector<LayoutEntry> &layout) {
  std::vector<std::string> lines;
  for (const LayoutEntry &entry : layout)
    lines.push_back(entry.name + " " + std::string(dtypeName(entry.dtype)) +
                    " " + shapeString(entry.shape) + "\n");
  std::sort(lines.begin(), lines.end());
  uint64_t hash = kFnvOffset;
  for (const std::string &line : lines)
    hash = fnv1a64(line, hash);
  return hashString(hash);
}

namespace {

/// Rank 0's outcome of a write, on every rank (a no-op at world size 1).
Status agreeOnRankZero(executor::Executor &executor, Status written) {
  device::Communicator &comm = executor.communicator();
  if (comm.worldSize() == 1)
    return written;
  std::byte ok{written.isOk() ? uint8_t{1} : uint8_t{0}};
  FLEXMOE_RETURN_IF_ERROR(comm.broadcast(&ok, 1, 0));
  if (comm.rank() == 0 || ok == std::byte{1})
    return written;
  return Status::error("rank 0 could not write the files");
}

/// Rank 0's part of saveCheckpoint: the tensors, then the sidecar.
Status writeCheckpoint(executor::Executor &executor, const std::string &path,
                       const std::vector<LayoutEntry> &layout,
                       const SafetensorsWriter &writer,
                       const json &trainerState) {
  const fb::Program &program = executor.program().program();
  json sidecar = {
      {"format", kCheckpointFormat},
      {"format_version", kCheckpointFormatVersion},
      {"program_name", str(program.name())},
      {"program_hash",
       hashString(fnv1a64(std::span(reinterpret_cast<const std::byte *>(
                                        executor.program().bytes().data()),
                                    executor.program().bytes().size())))},
      {"layout_hash", layoutHash(layout)},
      {"step", executor.stepsDone()},
      {"world_size", executor.communicator().worldSize()},
      {"tensors_file", baseName(checkpointTensorsPath(path))},
      {"tensors_hash", hashString(writer.fileHash())},
      {"num_tensors", writer.numTensors()},
      {"trainer", trainerState},
  };
  std::string sidecarText = sidecar.dump(2) + "\n";

  // The old sidecar goes first: while the tensors file is replaced, P is no
  // checkpoint at all rather than a sidecar paired with the wrong tensors.
  std::string tensorsPath = checkpointTensorsPath(path);
  std::string sidecarPath = checkpointSidecarPath(path);
  FLEXMOE_RETURN_IF_ERROR(removeIfExists(sidecarPath));
  FLEXMOE_RETURN_IF_ERROR(writer.write(tensorsPath));
  Status written = writeFileAtomically(sidecarPath, sidecarText);
  if (!written) {
    (void)removeIfExists(tensorsPath);
    return written;
  }
  return Status::ok();
}

} // namespace

Status flexmoe::train::saveCheckpoint(executor::Executor &executor,
                                      const std::string &path,
                                      const json &trainerState) {
  auto context = [&](Status status) {
    return std::move(status).withContext("saving checkpoint '" + path + "'");
  };
  const fb::Program &program = executor.program().program();
  StatusOr<std::vector<LayoutEntry>> layout = checkpointLayout(program, true);
  if (!layout)
    return context(layout.status());
  StatusOr<SafetensorsWriter> writer =
      makeWriter(executor, *layout, kCheckpointFormat);
  if (!writer)
    return context(writer.status());
  Status written =
      executor.communicator().rank() == 0
          ? writeCheckpoint(executor, path, *layout, *writer, trainerState)
          : Status::ok();
  return context(agreeOnRankZero(executor, std::move(written)));
}

StatusOr<json> flexmoe::train::readCheckpointSidecar(const std::string &path) {
  std::string sidecarPath = checkpointSidecarPath(path);
  auto fail = [&](auto &&...parts) {
    return errorf("checkpoint '", path, "': sidecar '", sidecarPath, "' ",
                  parts...);
  };
  struct stat st;
  if (::stat(sidecarPath.c_str(), &st) != 0)
    return errorf("checkpoint '", path, "' does not exist (no sidecar '",
                  sidecarPath, "')");
  StatusOr<std::vector<std::byte>> bytes = readFile(sidecarPath);
  if (!bytes)
    return errorf("checkpoint '", path, "': ", bytes.status().message());
  const char *text = reinterpret_cast<const char *>(bytes->data());
  json sidecar = json::parse(text, text + bytes->size(), nullptr,
                             /*allow_exceptions=*/false);
  if (sidecar.is_discarded())
    return fail("is not valid JSON");
  if (!sidecar.is_object())
    return fail("is not a JSON object");
  auto format = sidecar.find("format");
  if (format == sidecar.end() || *format != kCheckpointFormat)
    return fail("is not a flexmoe checkpoint sidecar (\"format\" is not \"",
                kCheckpointFormat, "\")");
  auto version = sidecar.find("format_version");
  if (version == sidecar.end() || !isInteger(*version))
    return fail("has no integer format_version");
  if (*version != kCheckpointFormatVersion)
    return fail("has format version ", version->dump(),
                " but this runtime reads version ", kCheckpointFormatVersion);
  for (const char *key : {"step", "world_size", "num_tensors"}) {
    auto it = sidecar.find(key);
    if (it == sidecar.end() || !isInteger(*it) || it->get<int64_t>() < 0)
      return fail("has no non-negative integer \"", key, "\"");
  }
  for (const char *key :
       {"program_name", "layout_hash", "tensors_hash", "tensors_file"}) {
    auto it = sidecar.find(key);
    if (it == sidecar.end() || !it->is_string())
      return fail("has no string \"", key, "\"");
  }
  if (!sidecar.contains("trainer"))
    return fail("has no \"trainer\" state");
  return sidecar;
}

StatusOr<json> flexmoe::train::loadCheckpoint(executor::Executor &executor,
                                              const std::string &path) {
  StatusOr<json> sidecar = readCheckpointSidecar(path);
  if (!sidecar)
    return sidecar.status();
  auto fail = [&](auto &&...parts) {
    return errorf("loading checkpoint '", path, "': ", parts...);
  };
  std::string tensorsPath = checkpointTensorsPath(path);
  StatusOr<SafetensorsFile> file = SafetensorsFile::read(tensorsPath);
  if (!file)
    return fail(file.status().message());
  if (hashString(fnv1a64(file->bytes())) !=
      (*sidecar)["tensors_hash"].get<std::string>())
    return fail("'", tensorsPath,
                "' is not the tensors file its sidecar was written with "
                "(content hash differs): the file was modified or replaced");

  const fb::Program &program = executor.program().program();
  StatusOr<std::vector<LayoutEntry>> layout = checkpointLayout(program, true);
  if (!layout)
    return fail(layout.status().message());
  std::string programLayout = layoutHash(*layout);
  std::string savedLayout = (*sidecar)["layout_hash"].get<std::string>();
  // The tensor checks name the first difference; the hash catches a
  // sidecar that does not match its tensors file.
  Status checked = checkTensors(*file, *layout,
                                /*layoutDiffers=*/programLayout != savedLayout,
                                /*ignoreOptimizerState=*/false);
  if (!checked)
    return fail(checked.message());
  if (programLayout != savedLayout)
    return fail("the program's parameter layout (", programLayout,
                ") differs from the checkpoint's (", savedLayout, ")");
  Status copied = copyTensors(executor, *file, *layout);
  if (!copied)
    return fail(copied.message());
  executor.setStepsDone((*sidecar)["step"].get<int64_t>());
  return (*sidecar)["trainer"];
}

Status flexmoe::train::saveParameters(executor::Executor &executor,
                                      const std::string &path) {
  auto context = [&](Status status) {
    return std::move(status).withContext("saving parameters to '" + path + "'");
  };
  StatusOr<std::vector<LayoutEntry>> layout =
      checkpointLayout(executor.program().program(), false);
  if (!layout)
    return context(layout.status());
  StatusOr<SafetensorsWriter> writer =
      makeWriter(executor, *layout, "flexmoe-parameters");
  if (!writer)
    return context(writer.status());
  Status written =
      executor.communicator().rank() == 0 ? writer->write(path) : Status::ok();
  return context(agreeOnRankZero(executor, std::move(written)));
}

Status flexmoe::train::loadParameters(executor::Executor &executor,
                                      const std::string &path) {
  auto context = [&](Status status) {
    return std::move(status).withContext("loading parameters from '" + path +
                                         "'");
  };
  StatusOr<std::vector<LayoutEntry>> layout =
      checkpointLayout(executor.program().program(), false);
  if (!layout)
    return context(layout.status());
  StatusOr<SafetensorsFile> file = SafetensorsFile::read(path);
  if (!file)
    return file.status();
  FLEXMOE_RETURN_IF_ERROR(context(checkTensors(*file, *layout,
                                               /*layoutDiffers=*/false,
                                               /*ignoreOptimizerState=*/true)));
  return context(copyTensors(executor, *file, *layout));
}
