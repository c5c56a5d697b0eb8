//===- CudaDeviceTest.cpp - CudaDevice's arena, streams and events --------===//

#include "GpuTestUtil.h"

using namespace flexmoe;
using namespace flexmoe::gpu_testing;

TEST(CudaDevice, ArenaIsZeroFilledAndAligned) {
  FLEXMOE_REQUIRE_GPU();
  auto device = cuda::CudaDevice::create(0);
  ASSERT_TRUE(device.isOk()) << device.status().message();
  const size_t bytes = 1000 * sizeof(float) + 3;
  auto arena = (*device)->allocateArena(bytes);
  ASSERT_TRUE(arena.isOk()) << arena.status().message();
  EXPECT_EQ((*arena)->size(), bytes);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*arena)->base()) % 256, 0u);
  std::vector<unsigned char> host(bytes, 0xab);
  ASSERT_TRUE(
      (*device)->copyToHost(host.data(), (*arena)->base(), bytes).isOk());
  for (size_t i = 0; i < bytes; ++i)
    ASSERT_EQ(host[i], 0) << "byte " << i;
}

TEST(CudaDevice, AnEventOrdersOneStreamAfterAnother) {
  FLEXMOE_REQUIRE_GPU();
  auto device = cuda::CudaDevice::create(0);
  ASSERT_TRUE(device.isOk()) << device.status().message();
  const int64_t n = 1 << 22;
  auto arena = (*device)->allocateArena(2 * n * sizeof(float));
  ASSERT_TRUE(arena.isOk());
  auto producer = (*device)->createStream();
  auto consumer = (*device)->createStream();
  auto event = (*device)->createEvent();
  ASSERT_TRUE(producer.isOk() && consumer.isOk() && event.isOk());
  const std::vector<int64_t> shape = {n};
  std::byte *a = (*arena)->base(), *b = a + n * sizeof(float);

  AttrsFn attrs = [](flatbuffers::FlatBufferBuilder &fbb) {
    return fb::CreateFillAttrs(fbb, 2.5f).Union();
  };
  InstructionBytes fill(fb::OpCode::Fill, fb::OpAttrs::FillAttrs, attrs);
  device::KernelCall fillCall = makeCall(fill.get(), {});
  HostTensor shapeOnly{shape};
  fillCall.outputs.push_back(operandOf(shapeOnly, a, 0));
  ASSERT_TRUE((*producer)->launch(fillCall).isOk());
  ASSERT_TRUE((*producer)->record(**event).isOk());
  ASSERT_TRUE((*consumer)->wait(**event).isOk());

  InstructionBytes copy(fb::OpCode::Copy);
  device::KernelCall copyCall = makeCall(copy.get(), {});
  copyCall.inputs.push_back(operandOf(shapeOnly, a, 0));
  copyCall.outputs.push_back(operandOf(shapeOnly, b, 1));
  ASSERT_TRUE((*consumer)->launch(copyCall).isOk());
  ASSERT_TRUE((*consumer)->synchronize().isOk());

  std::vector<float> host(n, 0.0f);
  ASSERT_TRUE((*device)->copyToHost(host.data(), b, n * sizeof(float)).isOk());
  for (int64_t i = 0; i < n; i += 4099)
    ASSERT_EQ(host[i], 2.5f) << "element " << i;
  EXPECT_EQ(host[n - 1], 2.5f);
}

TEST(CudaDevice, ACollectiveIsRejected) {
  FLEXMOE_REQUIRE_GPU();
  std::vector<HostTensor> out = {output({4}),
                                 output({2}, fb::ElementType::I32)};
  Status status = runOnGpu(InstructionBytes(fb::OpCode::AllToAllDispatch).get(),
                           {floats({4}, 1), ints({2}, {0, 0})}, out);
  ASSERT_FALSE(status.isOk());
  EXPECT_NE(status.message().find("moe.all_to_all: a collective"),
            std::string::npos)
      << status.message();
}
