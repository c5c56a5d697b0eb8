//===- CudaHostTest.cpp - CUDA backend pieces that need no GPU ------------===//

#include "GpuTestUtil.h"

#include "runtime/backends/cuda/CudaContext.h"

using namespace flexmoe;
using namespace flexmoe::gpu_testing;

TEST(CudaHost, CreateFailsCleanlyWithoutADeviceAndSucceedsWithOne) {
  StatusOr<std::unique_ptr<cuda::CudaDevice>> device =
      cuda::CudaDevice::create(0);
  if (gpuPresent()) {
    ASSERT_TRUE(device.isOk()) << device.status().message();
    EXPECT_EQ((*device)->name(), "cuda:0");
    EXPECT_FALSE((*device)->hostAccessible());
  } else {
    ASSERT_FALSE(device.isOk());
    const std::string &message = device.status().message();
    EXPECT_NE(message.find("CUDA"), std::string::npos) << message;
  }
}

TEST(CudaHost, CreateRejectsAnIndexOutOfRange) {
  StatusOr<std::unique_ptr<cuda::CudaDevice>> device =
      cuda::CudaDevice::create(4096);
  ASSERT_FALSE(device.isOk());
  EXPECT_NE(device.status().message().find("CUDA"), std::string::npos)
      << device.status().message();
  EXPECT_FALSE(cuda::CudaDevice::create(-1).isOk());
}

TEST(CudaHost, IsMoeOpcodeSplitsTheFamilies) {
  for (fb::OpCode op :
       {fb::OpCode::Gate, fb::OpCode::GateGrad, fb::OpCode::AuxLoss,
        fb::OpCode::AuxLossGrad, fb::OpCode::Dispatch, fb::OpCode::DispatchGrad,
        fb::OpCode::Experts, fb::OpCode::ExpertsGrad, fb::OpCode::Combine,
        fb::OpCode::CombineGrad})
    EXPECT_TRUE(cuda::isMoeOpcode(op)) << fb::EnumNameOpCode(op);
  for (fb::OpCode op :
       {fb::OpCode::Linear, fb::OpCode::Embedding, fb::OpCode::AdamW,
        fb::OpCode::Copy, fb::OpCode::AllToAllDispatch,
        fb::OpCode::AllToAllCombine, fb::OpCode::ReplicaGradSync,
        fb::OpCode::AllReduceSum, fb::OpCode::Attention})
    EXPECT_FALSE(cuda::isMoeOpcode(op)) << fb::EnumNameOpCode(op);
}

TEST(CudaHost, StatusMessagesNameTheCallAndTheError) {
  EXPECT_TRUE(cuda::cudaStatus(cudaSuccess, "x").isOk());
  Status oom =
      cuda::cudaStatus(cudaErrorMemoryAllocation, "cudaMalloc (arena)");
  ASSERT_FALSE(oom.isOk());
  EXPECT_EQ(oom.message(), std::string("cudaMalloc (arena): ") +
                               cudaGetErrorString(cudaErrorMemoryAllocation));
  EXPECT_TRUE(cuda::cublasStatus(CUBLAS_STATUS_SUCCESS, "y").isOk());
  Status lt = cuda::cublasStatus(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmul");
  ASSERT_FALSE(lt.isOk());
  EXPECT_EQ(lt.message().rfind("cublasLtMatmul: ", 0), 0u) << lt.message();
  EXPECT_GT(lt.message().size(), std::string("cublasLtMatmul: ").size());
}
