// simt.h - runs the CUDA kernels of phimoe_cuda on the CPU, for tests on machines without a
// GPU. Force-included (g++ -include phimoe_emu/simt.h -DPHIMOE_CUDA_EMU) before a .cu file
// that is then compiled as C++: kernels.cuh, the generated model.cu, kernels_test.cu.
//
// Every CUDA thread of a block is a fiber (its own stack) on one OS thread; the fibers of a
// block run one after another until each reaches a barrier, so that
//  - __syncthreads waits for every thread of the block that has not exited,
//  - warp-collective operations (__shfl_*_sync, __ballot_sync, __syncwarp, mma.sync) wait for
//    every lane of their mask and exchange values then,
// and the blocks of a grid run one after another. A thread that reads shared memory another
// thread writes without a barrier in between sees the old value (threads run in turn, not in
// lockstep), a __syncthreads that only some threads reach, a collective whose mask names an
// exited or absent lane, or lanes that reach different collectives, stop the kernel with an
// error naming it. What this cannot tell: timing, memory coalescing, the exact rounding of the
// device's math functions (the host's libm here), and whatever the hardware does that the
// PTX ISA leaves undefined.
//
// The CUDA runtime calls the project uses (memory, streams, events, graphs captured from a
// stream) are implemented over host memory in simt.cpp, with the checks of the real runtime
// that catch bugs (stream capture refuses synchronous calls; graphs replay the launches as
// captured, arguments included).
#ifndef PHIMOE_EMU_SIMT_H
#define PHIMOE_EMU_SIMT_H

#ifndef PHIMOE_CUDA_EMU
#define PHIMOE_CUDA_EMU 1
#endif

// Before any CUDA header: host_defines.h keeps these when __CUDACC__ is not defined.
#define __global__
#define __device__
#define __host__
#define __shared__ static thread_local // blocks run in turn on their OS thread

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#undef __launch_bounds__
#define __launch_bounds__(...)

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

namespace phimoe_emu {

// The CUDA thread running now.
struct ThreadState {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
  int lane = 0, warp = 0;
};
const ThreadState &self();

// The order in which the threads of a block run from one barrier to the next, and the blocks
// of a grid: "forward" (by index; the default), "reverse", or "random[:SEED]" (a new
// permutation each time); PHIMOE_EMU_SCHEDULE sets it for a whole program. Results that change
// with it come from memory read without a barrier after another thread's write (or another
// block's, which no barrier orders).
void set_schedule(const std::string &mode);

void grid_dependency_wait();      // PHIMOE_CUDA_KERNEL_PROLOGUE (griddepcontrol.wait)
void sync_block();                // __syncthreads
void sync_warp(unsigned mask);    // __syncwarp
// Deposits `bytes` (at most kSlotBytes) of this lane's data, waits for the lanes of `mask`,
// and returns the warp's slots of this exchange: lane i's data at i * kSlotBytes.
constexpr size_t kSlotBytes = 64;
const unsigned char *warp_exchange(unsigned mask, const void *data, size_t bytes);
void *dynamic_shared();           // the launch's dynamic shared memory of this block
// An L2 prefetch of [p, p + bytes) (kernels.cuh, prefetch_l2): reads nothing, but the range
// must lie in one device allocation (a prefetch of the wrong rows is a bug that the results
// cannot show).
void prefetch_l2(const void *p, size_t bytes);
// Stops the kernel unless [p, p + bytes) lies in one device allocation (`what` names the
// access in the error).
void expect_device(const void *p, size_t bytes, const char *what);
[[noreturn]] void trap(const char *why);
// Whether this program checks the kernels' shared- and device-memory accesses for races (the emulation
// library built with PHIMOE_EMU_RACECHECK, kernels compiled with -fsanitize=thread: simt.cpp).
bool race_check_on();
// A __threadfence and a device-scope atomic of the running thread, for the race check (which
// holds accesses of one launch's blocks to each other's words to them); no-ops without it.
void race_fence();
void race_atomic();

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 with d as C and D (the PTX ISA's
// fragment layout): warp-collective.
void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);

// ldmatrix.sync.aligned.m8n8.x4.shared.b16 {d}, [row]: warp-collective; lane l gives the
// address of row l % 8 of matrix l / 8 (16 bytes, 16-byte aligned) and gets in d[i] the word
// l % 4 of row l / 4 of matrix i.
void ldmatrix_x4(const void *row, uint32_t (&d)[4]);

// cvt.rn.bf16x2.f32 d, hi, lo: hi and lo rounded to bf16 (to nearest, ties to even; a nan
// becomes the canonical 0x7fff, as on the GPU), hi in the upper half of d.
uint32_t cvt_rn_bf16x2_f32(float hi, float lo);

// A launch: runs fn on every thread of every block of grid (or records it in the graph that
// `stream` is capturing).
void submit(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream, const char *name,
            const void *kernel, std::function<void()> fn);

template <class... P> struct Launch {
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;
  const char *name;
  void (*kernel)(P...);
  template <class... A> void operator()(A &&...args) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launch: wrong number of arguments");
    // Arguments are converted to the parameters' types and copied, as a launch does.
    std::tuple<std::decay_t<P>...> params(static_cast<std::decay_t<P>>(args)...);
    auto k = kernel;
    submit(grid, block, shared_bytes, stream, name, reinterpret_cast<const void *>(k),
           [k, params]() { std::apply(k, params); });
  }
};
template <class... P>
Launch<P...> launch(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                    const char *name, void (*kernel)(P...)) {
  return Launch<P...>{grid, block, shared_bytes, stream, name, kernel};
}

} // namespace phimoe_emu

// cuda_runtime.h's overload for kernels (nvcc only).
template <class... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void *>(kernel), attr, value);
}

#define threadIdx (::phimoe_emu::self().thread_idx)
#define blockIdx (::phimoe_emu::self().block_idx)
#define blockDim (::phimoe_emu::self().block_dim)
#define gridDim (::phimoe_emu::self().grid_dim)

inline void __syncthreads() { phimoe_emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { phimoe_emu::sync_warp(mask); }
[[noreturn]] inline void __trap() { phimoe_emu::trap("__trap()"); }

namespace phimoe_emu {
template <class T> T lane_value(const unsigned char *slots, int lane) {
  T r;
  std::memcpy(&r, slots + static_cast<size_t>(lane) * kSlotBytes, sizeof(T));
  return r;
}
// The source lane of a shuffle within segments of `width` lanes (width a power of 2, <= 32).
inline int segment_base(int lane, int width) { return lane & ~(width - 1); }
} // namespace phimoe_emu

template <class T> T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  static_assert(sizeof(T) <= phimoe_emu::kSlotBytes, "shuffle of a large type");
  const unsigned char *slots = phimoe_emu::warp_exchange(mask, &v, sizeof(T));
  const int lane = phimoe_emu::self().lane;
  return phimoe_emu::lane_value<T>(slots,
                                   phimoe_emu::segment_base(lane, width) + (src & (width - 1)));
}
template <class T> T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const unsigned char *slots = phimoe_emu::warp_exchange(mask, &v, sizeof(T));
  const int lane = phimoe_emu::self().lane;
  int src = lane ^ lane_mask;
  if (src >= phimoe_emu::segment_base(lane, width) + width)
    src = lane; // outside the segment: the lane's own value
  return phimoe_emu::lane_value<T>(slots, src);
}
template <class T> T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const unsigned char *slots = phimoe_emu::warp_exchange(mask, &v, sizeof(T));
  const int lane = phimoe_emu::self().lane;
  int src = lane + static_cast<int>(delta);
  if (src >= phimoe_emu::segment_base(lane, width) + width)
    src = lane;
  return phimoe_emu::lane_value<T>(slots, src);
}
template <class T> T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const unsigned char *slots = phimoe_emu::warp_exchange(mask, &v, sizeof(T));
  const int lane = phimoe_emu::self().lane;
  int src = lane - static_cast<int>(delta);
  if (src < phimoe_emu::segment_base(lane, width))
    src = lane;
  return phimoe_emu::lane_value<T>(slots, src);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  const int p = predicate != 0;
  const unsigned char *slots = phimoe_emu::warp_exchange(mask, &p, sizeof(p));
  unsigned bits = 0;
  for (int i = 0; i < 32; ++i)
    if ((mask >> i & 1u) && phimoe_emu::lane_value<int>(slots, i))
      bits |= 1u << i;
  return bits;
}
// sm_80's warp reductions (REDUX) over the lanes of mask.
inline unsigned __reduce_max_sync(unsigned mask, unsigned value) {
  const unsigned char *slots = phimoe_emu::warp_exchange(mask, &value, sizeof(value));
  unsigned r = 0;
  for (int i = 0; i < 32; ++i)
    if (mask >> i & 1u)
      r = std::max(r, phimoe_emu::lane_value<unsigned>(slots, i));
  return r;
}
inline int __reduce_add_sync(unsigned mask, int value) {
  const unsigned char *slots = phimoe_emu::warp_exchange(mask, &value, sizeof(value));
  unsigned r = 0; // wraps as the hardware's does
  for (int i = 0; i < 32; ++i)
    if (mask >> i & 1u)
      r += static_cast<unsigned>(phimoe_emu::lane_value<int>(slots, i));
  return static_cast<int>(r);
}
// Device-scope atomics, fences and L2 loads (flash-decoding's last block, kernels.cuh). The
// blocks run one after another on one OS thread here: a read-modify-write is atomic as it is,
// and every write is seen by the blocks after it; the race check (simt.cpp) holds the blocks'
// accesses to each other's words to the fences and atomics between them. The atomic's word
// must be device memory.
// (An atomic's own read and write are not races: the race check does not see them.)
#if defined(__clang__)
#define PHIMOE_EMU_NOT_CHECKED __attribute__((no_sanitize("thread")))
#else
#define PHIMOE_EMU_NOT_CHECKED
#endif
PHIMOE_EMU_NOT_CHECKED inline int atomicAdd(int *p, int v) {
  phimoe_emu::expect_device(p, sizeof(int), "atomicAdd");
  const int old = *p;
  *p = old + v;
  phimoe_emu::race_atomic();
  return old;
}
inline void __threadfence() { phimoe_emu::race_fence(); }
template <class T> T __ldcg(const T *p) { return *p; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// The device's integer and float min/max overloads (CUDA's math headers declare them in the
// global namespace).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

#endif // PHIMOE_EMU_SIMT_H
