// launch.h - how kernels are launched and take dynamic shared memory, written as macros so
// that test/gpu/emu can run the same kernels on the CPU (it compiles them as C++ with
// PHIMOE_CUDA_EMU defined; phimoe_emu/simt.h).
//
//   PHIMOE_CUDA_LAUNCH(grid, block, shared_bytes, stream, kernel<...>)(args...);
//   PHIMOE_CUDA_DYNAMIC_SHARED(float, xs); // in a kernel: extern __shared__ float xs[];
#ifndef PHIMOE_CUDA_LAUNCH_H
#define PHIMOE_CUDA_LAUNCH_H

#include "phimoe_cuda/profile.h"

// (The stream goes through profile::begin, which records the kernel's first event when
// PHIMOE_CUDA_PROFILE is set; PHIMOE_CUDA_CHECK_LAUNCH records its last.)
#define PHIMOE_CUDA_PROFILED_STREAM(stream, ...)                                              \
  ::phimoe_cuda::profile::begin(stream, #__VA_ARGS__, __PRETTY_FUNCTION__)
#ifdef PHIMOE_CUDA_EMU
#define PHIMOE_CUDA_LAUNCH(grid, block, shared_bytes, stream, ...)                             \
  ::phimoe_emu::launch(grid, block, shared_bytes,                                             \
                       PHIMOE_CUDA_PROFILED_STREAM(stream, __VA_ARGS__), #__VA_ARGS__,         \
                       __VA_ARGS__)
#define PHIMOE_CUDA_DYNAMIC_SHARED(type, name)                                                \
  type *const name = static_cast<type *>(::phimoe_emu::dynamic_shared())
#else
#define PHIMOE_CUDA_LAUNCH(grid, block, shared_bytes, stream, ...)                             \
  __VA_ARGS__<<<grid, block, shared_bytes, PHIMOE_CUDA_PROFILED_STREAM(stream, __VA_ARGS__)>>>
#define PHIMOE_CUDA_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

#endif // PHIMOE_CUDA_LAUNCH_H
