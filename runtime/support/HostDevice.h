//===- HostDevice.h - functions both the CPU and the GPU call ----*- C++
//-*-===//
//
// A few pure functions must give the same bits on both backends (the
// dropout generator, the float tanh of GELU). They are written once and
// marked FLEXMOE_HOST_DEVICE, which nvcc reads as __host__ __device__ and a
// host compiler as nothing.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_SUPPORT_HOSTDEVICE_H
#define FLEXMOE_RUNTIME_SUPPORT_HOSTDEVICE_H

#if defined(__CUDACC__)
#define FLEXMOE_HOST_DEVICE __host__ __device__
#else
#define FLEXMOE_HOST_DEVICE
#endif

#endif // FLEXMOE_RUNTIME_SUPPORT_HOSTDEVICE_H
