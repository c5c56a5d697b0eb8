//===- MoeLaunchMissing.cpp - launchMoe until the moe kernels land --------===//
//
// The moe kernel family (kernels/Moe*.cu, MoeLaunch.cpp) is written on
// another branch; until it merges, this launcher keeps flexmoe_cuda_device
// linking and says which op has no kernel. Delete this file on that merge.
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cuda/CudaContext.h"
#include "runtime/program/OpInfo.h"

#include <string>

using namespace flexmoe;

Status flexmoe::cuda::launchMoe(const device::KernelCall &call,
                                LaunchContext &) {
  const program::OpInfo *info =
      program::lookupOpInfo(call.instruction->opcode());
  return Status::error(
      std::string("no CUDA kernel yet for ") +
      (info ? std::string(info->irName)
            : std::string(fb::EnumNameOpCode(call.instruction->opcode()))));
}
