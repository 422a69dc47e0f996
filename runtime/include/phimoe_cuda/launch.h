// launch.h - how kernels are launched and take dynamic shared memory, written as macros so
// that test/gpu/emu can run the same kernels on the CPU (it compiles them as C++ with
// PHIMOE_CUDA_EMU defined; phimoe_emu/simt.h).
//
//   PHIMOE_CUDA_LAUNCH(grid, block, shared_bytes, stream, kernel<...>)(args...);
//   PHIMOE_CUDA_DYNAMIC_SHARED(float, xs); // in a kernel: extern __shared__ float xs[];
#ifndef PHIMOE_CUDA_LAUNCH_H
#define PHIMOE_CUDA_LAUNCH_H

#ifdef PHIMOE_CUDA_EMU
#define PHIMOE_CUDA_LAUNCH(grid, block, shared_bytes, stream, ...)                             \
  ::phimoe_emu::launch(grid, block, shared_bytes, stream, #__VA_ARGS__, __VA_ARGS__)
#define PHIMOE_CUDA_DYNAMIC_SHARED(type, name)                                                \
  type *const name = static_cast<type *>(::phimoe_emu::dynamic_shared())
#else
#define PHIMOE_CUDA_LAUNCH(grid, block, shared_bytes, stream, ...)                             \
  __VA_ARGS__<<<grid, block, shared_bytes, stream>>>
#define PHIMOE_CUDA_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

#endif // PHIMOE_CUDA_LAUNCH_H
