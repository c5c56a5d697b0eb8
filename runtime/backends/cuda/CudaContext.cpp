//===- CudaContext.cpp - CUDA errors as Status values, the opcode split ---===//

#include "runtime/backends/cuda/CudaContext.h"

#include <string>

using namespace flexmoe;

Status flexmoe::cuda::cudaStatus(cudaError_t error, const char *what) {
  if (error == cudaSuccess)
    return Status::ok();
  return Status::error(std::string(what) + ": " + cudaGetErrorString(error));
}

Status flexmoe::cuda::cublasStatus(cublasStatus_t status, const char *what) {
  if (status == CUBLAS_STATUS_SUCCESS)
    return Status::ok();
  return Status::error(std::string(what) + ": " +
                       cublasLtGetStatusString(status));
}

bool flexmoe::cuda::isMoeOpcode(fb::OpCode opcode) {
  switch (opcode) {
  case fb::OpCode::Gate:
  case fb::OpCode::GateGrad:
  case fb::OpCode::AuxLoss:
  case fb::OpCode::AuxLossGrad:
  case fb::OpCode::Dispatch:
  case fb::OpCode::DispatchGrad:
  case fb::OpCode::Experts:
  case fb::OpCode::ExpertsGrad:
  case fb::OpCode::Combine:
  case fb::OpCode::CombineGrad:
    return true;
  default:
    return false;
  }
}
