// launch.h - how kernels are launched and take dynamic shared memory, written as macros so
// that test/gpu/emu can run the same kernels on the CPU (it compiles them as C++ with
// PHIMOE_CUDA_EMU defined; phimoe_emu/simt.h).
//
//   PHIMOE_CUDA_LAUNCH(grid, block, shared_bytes, stream, kernel<...>)(args...);
//   PHIMOE_CUDA_KERNEL_PROLOGUE();          // a kernel's first statement
//   PHIMOE_CUDA_DYNAMIC_SHARED(float, xs); // extern __shared__ float xs[] (16-byte aligned)
#ifndef PHIMOE_CUDA_LAUNCH_H
#define PHIMOE_CUDA_LAUNCH_H

#include "phimoe_cuda/check.h"
#include "phimoe_cuda/profile.h"

#include <cstdlib>
#include <cstring>
#include <utility>

// First statement of every kernel (after its __shared__ declarations; only L2 prefetches of
// weights, which no kernel writes, may come before it: gemv_kernel's): waits for the kernel
// before it in the stream to finish and its writes to be visible (griddepcontrol.wait), then
// lets the next kernel start launching (griddepcontrol.launch_dependents). Both are no-ops
// unless the kernel was launched with programmatic dependent launch (PHIMOE_CUDA_PDL=1 on
// sm_90 and later, below); so with PDL the next kernel's launch and block scheduling overlap
// this one's run, and nothing of it that reads activations runs before this one has finished.
#if defined(PHIMOE_CUDA_EMU)
#define PHIMOE_CUDA_KERNEL_PROLOGUE() ::phimoe_emu::grid_dependency_wait()
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define PHIMOE_CUDA_KERNEL_PROLOGUE()                                                         \
  asm volatile("griddepcontrol.wait;\n\tgriddepcontrol.launch_dependents;" ::: "memory")
#else
#define PHIMOE_CUDA_KERNEL_PROLOGUE()                                                         \
  do {                                                                                        \
  } while (0)
#endif

// (The stream goes through profile::begin, which records the kernel's first event when
// PHIMOE_CUDA_PROFILE is set; PHIMOE_CUDA_CHECK_LAUNCH records its last.)
#define PHIMOE_CUDA_PROFILED_STREAM(stream, ...)                                              \
  ::phimoe_cuda::profile::begin(stream, #__VA_ARGS__, __PRETTY_FUNCTION__)
#ifdef PHIMOE_CUDA_EMU
// (The emulation reads PHIMOE_CUDA_PDL itself: with it, every thread of every kernel must
// run PHIMOE_CUDA_KERNEL_PROLOGUE before anything else it does.)
#define PHIMOE_CUDA_LAUNCH(grid, block, shared_bytes, stream, ...)                             \
  ::phimoe_emu::launch(grid, block, shared_bytes,                                             \
                       PHIMOE_CUDA_PROFILED_STREAM(stream, __VA_ARGS__), #__VA_ARGS__,         \
                       __VA_ARGS__)
#define PHIMOE_CUDA_DYNAMIC_SHARED(type, name)                                                \
  type *const name = static_cast<type *>(::phimoe_emu::dynamic_shared())
#else
namespace phimoe_cuda::detail {

// PHIMOE_CUDA_PDL=1: launches with programmatic dependent launch (cudaLaunchKernelEx with
// cudaLaunchAttributeProgrammaticStreamSerialization), where the kernels were compiled for
// sm_90 or later (their PHIMOE_CUDA_KERNEL_PROLOGUE waits); in CUDA graphs too. Off by
// default until a GPU run has measured it (bench/bench_gpu.py times decode both ways).
inline bool pdl_requested() {
  static const bool on = [] {
    const char *v = std::getenv("PHIMOE_CUDA_PDL");
    return v && std::strcmp(v, "1") == 0;
  }();
  return on;
}

template <class... P> struct DeviceLaunch {
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;
  void (*kernel)(P...);
  template <class... A> void operator()(A &&...args) const {
    if (pdl_requested() && prologue_waits()) {
      cudaLaunchAttribute attribute[1];
      attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attribute[0].val.programmaticStreamSerializationAllowed = 1;
      cudaLaunchConfig_t config = {};
      config.gridDim = grid;
      config.blockDim = block;
      config.dynamicSmemBytes = shared_bytes;
      config.stream = stream;
      config.attrs = attribute;
      config.numAttrs = 1;
      PHIMOE_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<A>(args)...));
      return;
    }
    kernel<<<grid, block, shared_bytes, stream>>>(std::forward<A>(args)...);
  }
  // Whether the machine code that runs has the prologue's wait (an sm_80 build runs on an
  // sm_90 device without it): asked once per kernel signature (at the first launch, eager),
  // every kernel of a build being compiled for the same architecture.
  bool prologue_waits() const {
    static const bool waits = [k = kernel] {
      cudaFuncAttributes a{};
      return cudaFuncGetAttributes(&a, reinterpret_cast<const void *>(k)) == cudaSuccess &&
             a.binaryVersion >= 90;
    }();
    return waits;
  }
};
template <class... P>
DeviceLaunch<P...> device_launch(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                                 void (*kernel)(P...)) {
  return DeviceLaunch<P...>{grid, block, shared_bytes, stream, kernel};
}

} // namespace phimoe_cuda::detail

#define PHIMOE_CUDA_LAUNCH(grid, block, shared_bytes, stream, ...)                             \
  ::phimoe_cuda::detail::device_launch(grid, block, shared_bytes,                             \
                                       PHIMOE_CUDA_PROFILED_STREAM(stream, __VA_ARGS__),       \
                                       __VA_ARGS__)
#define PHIMOE_CUDA_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif

#endif // PHIMOE_CUDA_LAUNCH_H
