//===- Checkpoint.h - saving and restoring an executor's state --*- C++ -*-===//
//
// A checkpoint at path P is two files:
//   P.safetensors  every parameter under its param_name, and the AdamW state
//                  as optimizer.exp_avg.<param_name> and
//                  optimizer.exp_avg_sq.<param_name>; expert tensors in
//                  expert order ([num_experts, ...]), whatever the placement
//   P.json         the sidecar: format version, program name and hashes,
//                  the step, the world size and the trainer's own state
// The tensors are written first and the sidecar last, each atomically, so a
// checkpoint exists iff its sidecar does, and the sidecar carries the hash of
// the tensors file it belongs to. docs/data-and-checkpoints.md has details.
//
// At world size > 1 saving is collective: every rank sends its expert slots
// to rank 0, which alone writes, and every rank returns rank 0's outcome.
// Loading needs no communication: each rank reads the file and keeps its
// own slots.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_TRAIN_CHECKPOINT_H
#define FLEXMOE_RUNTIME_TRAIN_CHECKPOINT_H

#include "runtime/executor/Executor.h"
#include "runtime/train/Safetensors.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace flexmoe::train {

/// The sidecar's "format_version"; load rejects any other.
inline constexpr int64_t kCheckpointFormatVersion = 1;
/// The sidecar's "format".
inline constexpr const char *kCheckpointFormat = "flexmoe-checkpoint";

/// P.safetensors and P.json.
std::string checkpointTensorsPath(const std::string &path);
std::string checkpointSidecarPath(const std::string &path);
/// True when P.json exists (the checkpoint is complete).
bool checkpointExists(const std::string &path);

/// One tensor of a checkpoint and the buffer it comes from.
struct LayoutEntry {
  std::string name;
  Dtype dtype = Dtype::F32;
  /// The checkpoint's shape: the buffer's, except that expert tensors have
  /// num_experts rows instead of slots_per_device.
  std::vector<int64_t> shape;
  uint32_t buffer = 0;
  /// The buffer's MoE layer, -1 for dense tensors.
  int32_t moeLayer = -1;
};

/// The tensors of a checkpoint of `program`, in buffer order: every
/// parameter, and with optimizerState its AdamM and AdamV buffers.
StatusOr<std::vector<LayoutEntry>> checkpointLayout(const fb::Program &program,
                                                    bool optimizerState = true);
/// A hash of the names, dtypes and shapes of `layout` (order-independent):
/// equal for programs of one model whatever their placement.
std::string layoutHash(const std::vector<LayoutEntry> &layout);

/// Writes the checkpoint P = `path` of the executor's parameters, optimizer
/// state and step counter, with `trainerState` stored verbatim under
/// "trainer" in the sidecar. An existing checkpoint at P is replaced; on
/// failure no new file (and no tmp file) is left, and P no longer exists as
/// a checkpoint if it was being overwritten.
Status saveCheckpoint(executor::Executor &executor, const std::string &path,
                      const nlohmann::json &trainerState);

/// Validates the checkpoint at P against the executor's program and
/// restores parameters, optimizer state and the step counter; returns the
/// trainer state saved with it. On error the executor is unchanged.
StatusOr<nlohmann::json> loadCheckpoint(executor::Executor &executor,
                                        const std::string &path);

/// Reads and validates P.json (format, version, field types) without
/// touching the tensors: for the trainer to inspect a checkpoint (step,
/// "trainer" state) before loading it.
StatusOr<nlohmann::json> readCheckpointSidecar(const std::string &path);

/// Writes the parameters only (no optimizer state; expert tensors in expert
/// order) to the safetensors file `path` (the full file name), atomically:
/// an export for other tools, e.g. a PyTorch cross-check.
Status saveParameters(executor::Executor &executor, const std::string &path);

/// Restores the parameters only from the safetensors file `path` (as
/// saveParameters writes it, or a checkpoint's P.safetensors, whose
/// optimizer.* tensors are ignored); optimizer state and the step counter
/// are left alone. Every parameter must be present with its checkpoint
/// shape; on error the executor is unchanged.
Status loadParameters(executor::Executor &executor, const std::string &path);

} // namespace flexmoe::train

#endif // FLEXMOE_RUNTIME_TRAIN_CHECKPOINT_H
