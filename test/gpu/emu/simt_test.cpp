// simt_test.cpp - the CUDA emulation itself (phimoe_emu/simt.h): warp collectives against
// their definitions, barriers, the bugs it must expose (a missing __syncthreads, a
// __syncthreads in divergent code, a shuffle naming an exited lane, a misaligned vector load,
// a prefetch outside device memory, launch configurations the hardware refuses), stream
// capture and graph replay, mma.sync against a product of matrices laid out by the PTX ISA's
// fragment tables (gemm_tc.cuh's coordinates), ldmatrix and cvt.rn.bf16x2.f32 against their
// definitions. Built with the race check (cuda_emu_simt_racecheck_test), the races it must
// report and the orders it must accept instead of the missing barrier's wrong result.
// Built with -include phimoe_emu/simt.h (test/gpu/emu/CMakeLists.txt).
#include "phimoe_cuda/check.h"
#include "phimoe_cuda/kernels.cuh" // gemm_tc.cuh: the mma fragment coordinates
#include "phimoe_cuda/launch.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

int failures = 0, checks = 0;

void expect(bool ok, const std::string &what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL %s\n", what.c_str());
  }
}

template <class T> T *device(size_t n) {
  void *p = nullptr;
  PHIMOE_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
  return static_cast<T *>(p);
}
template <class T> std::vector<T> download(const T *p, size_t n) {
  std::vector<T> h(n);
  PHIMOE_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

// Every shuffle and ballot variant, per lane of 64 threads (two warps).
__global__ void collectives_kernel(int *out) {
  const int t = threadIdx.x, lane = t & 31;
  int *o = out + t * 8;
  o[0] = __shfl_xor_sync(0xffffffffu, t * 10, 5);
  o[1] = __shfl_down_sync(0xffffffffu, t * 10, 3);
  o[2] = __shfl_up_sync(0xffffffffu, t * 10, 2);
  o[3] = __shfl_sync(0xffffffffu, t * 10, 7);
  o[4] = __shfl_xor_sync(0xffffffffu, t * 10, 4, 8); // within segments of 8
  o[5] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
  o[6] = __shfl_sync(0xffffffffu, t * 10, 9, 16);
  float v = static_cast<float>(lane);
  for (int m = 16; m > 0; m >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, m);
  o[7] = static_cast<int>(v);
}

void test_collectives() {
  int *d = device<int>(64 * 8);
  PHIMOE_CUDA_LAUNCH(1, 64, 0, nullptr, collectives_kernel)(d);
  PHIMOE_CUDA_CHECK(cudaGetLastError());
  const std::vector<int> h = download(d, 64 * 8);
  for (int t = 0; t < 64; ++t) {
    const int lane = t & 31, base = t - lane;
    const int *o = &h[t * 8];
    unsigned ballot = 0;
    for (int i = 0; i < 32; i += 3)
      ballot |= 1u << i;
    expect(o[0] == (base + (lane ^ 5)) * 10, "shfl_xor");
    expect(o[1] == (lane + 3 < 32 ? t + 3 : t) * 10, "shfl_down (past the end: own value)");
    expect(o[2] == (lane >= 2 ? t - 2 : t) * 10, "shfl_up (before the start: own value)");
    expect(o[3] == (base + 7) * 10, "shfl (broadcast)");
    expect(o[4] == (base + (lane ^ 4)) * 10, "shfl_xor width 8");
    expect(static_cast<unsigned>(o[5]) == ballot, "ballot");
    expect(o[6] == (base + (lane & ~15) + 9) * 10, "shfl width 16");
    expect(o[7] == 31 * 32 / 2, "butterfly sum");
  }
  cudaFree(d);
}

// Thread 255 writes shared memory that thread 0 reads. With the barrier (Sync), thread 0
// sees this launch's value; without it, the emulation runs thread 0 to its end before thread
// 255 starts, so thread 0 reads what was there before: the missing barrier shows.
template <bool Sync> __global__ void shared_kernel(float v, float *out) {
  __shared__ float box[1];
  if (threadIdx.x == 255)
    box[0] = v;
  if constexpr (Sync)
    __syncthreads();
  if (threadIdx.x == 0)
    out[0] = box[0];
}

// Lanes 0-15 shuffle (full mask) while lanes 16-31 wait at __syncthreads: a deadlock on a GPU.
__global__ void divergent_barrier_kernel(float *out) {
  float v = static_cast<float>(threadIdx.x);
  if (threadIdx.x < 16)
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  else
    __syncthreads();
  out[threadIdx.x] = v;
}

// Lane 3 exits before a full-mask shuffle.
__global__ void exited_lane_kernel(float *out) {
  if (threadIdx.x == 3)
    return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

// A full-mask shuffle in a block of fewer than 32 threads.
__global__ void partial_warp_kernel(float *out) {
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

// Dynamic shared memory: written by every thread, read back reversed.
__global__ void dynamic_shared_kernel(int n, float *out) {
  PHIMOE_CUDA_DYNAMIC_SHARED(float, s);
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    s[i] = static_cast<float>(i);
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    out[i] = s[n - 1 - i];
}

// A 16-byte load at p + offset bytes (elements.cuh's load16, as the weight loads do it).
__global__ void vector_load_kernel(const unsigned char *p, int offset, unsigned *out) {
  out[0] = phimoe_cuda::detail::load16(p + offset).w[0];
}

// An L2 prefetch of `bytes` bytes at p (kernels.cuh's prefetch_l2, as the decode kernels ask
// for their weight rows).
__global__ void prefetch_kernel(const unsigned char *p, size_t bytes) {
  phimoe_cuda::detail::prefetch_l2(p, bytes, 0);
}

// Every block's thread 0 counts once on *counter (an atomic in device memory, as
// kernels.cuh's last_block_of does).
__global__ void count_blocks_kernel(int *counter) {
  if (threadIdx.x == 0)
    atomicAdd(counter, 1);
}

template <class Fn> std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const std::exception &e) {
    return e.what();
  }
  return "";
}

// Without the race check, a missing barrier shows in the results, in some orders.
void test_missing_barrier(float *d) {
  PHIMOE_CUDA_LAUNCH(1, 256, 0, nullptr, shared_kernel<false>)(9.0f, d);
  expect(download(d, 1)[0] != 9.0f, "a missing __syncthreads is exposed");
  // The other order (the writer first) hides it; a random one exposes it in some launches.
  phimoe_emu::set_schedule("reverse");
  PHIMOE_CUDA_LAUNCH(1, 256, 0, nullptr, shared_kernel<false>)(10.0f, d);
  expect(download(d, 1)[0] == 10.0f, "the reverse schedule runs thread 255 first");
  phimoe_emu::set_schedule("random:7");
  int exposed = 0;
  for (int i = 0; i < 8; ++i) {
    PHIMOE_CUDA_LAUNCH(1, 256, 0, nullptr, shared_kernel<false>)(11.0f + i, d);
    exposed += download(d, 1)[0] != 11.0f + i;
  }
  expect(exposed > 0 && exposed < 8, "a random schedule orders the threads differently");
  phimoe_emu::set_schedule("forward");
}

// Lane `writer` of warp 0 writes a shared word that lane `reader` then reads; Order: 0 nothing
// between them, 1 __syncwarp, 2 a shuffle (a warp collective: the race check takes it as
// ordering its lanes), 3 __syncwarp over lanes 0-15 only (the reader outside it).
template <int Order> __global__ void warp_pair_kernel(int writer, int reader, float *out) {
  __shared__ float word;
  if (threadIdx.x == writer)
    word = 5.0f;
  if constexpr (Order == 1)
    __syncwarp();
  if constexpr (Order == 2)
    (void)__shfl_sync(0xffffffffu, 1, 0);
  if constexpr (Order == 3) {
    if (threadIdx.x < 16)
      __syncwarp(0xffffu);
  }
  if (threadIdx.x == reader)
    out[0] = word;
}

// Thread i writes s[i] and reads s[i + 1] (dynamic shared memory), with or without a barrier
// between; then every thread reads s[0] and thread 0 writes it again after a barrier (Sync) or
// without one (a read then a write: WAR).
template <bool Sync> __global__ void neighbour_kernel(float *out) {
  PHIMOE_CUDA_DYNAMIC_SHARED(float, s);
  const int i = threadIdx.x;
  s[i] = static_cast<float>(i);
  if constexpr (Sync)
    __syncthreads();
  const float next = s[(i + 1) % blockDim.x];
  __syncthreads();
  const float first = s[0];
  if constexpr (Sync)
    __syncthreads();
  if (i == 0)
    s[0] = -1.0f;
  out[i] = next + first;
}

// Every thread that sees a condition stores the same flag (writes alone: no race), and reads
// it after the barrier.
__global__ void flag_kernel(float *out) {
  __shared__ int flag;
  if (threadIdx.x == 0)
    flag = 0;
  __syncthreads();
  if (threadIdx.x % 3 == 0)
    flag = 1;
  __syncthreads();
  out[threadIdx.x] = static_cast<float>(flag);
}

// The race check (PHIMOE_EMU_RACECHECK builds): what it must report, in every schedule, and
// what it must accept.
void test_race_check(float *d) {
  for (const char *mode : {"forward", "reverse", "random:5"}) {
    phimoe_emu::set_schedule(mode);
    const std::string e = error_of(
        [&] { PHIMOE_CUDA_LAUNCH(1, 256, 0, nullptr, shared_kernel<false>)(9.0f, d); });
    expect(e.find("shared-memory race") != std::string::npos &&
               e.find("shared_kernel") != std::string::npos &&
               e.find("static __shared__") != std::string::npos &&
               e.find("addr2line") != std::string::npos,
           std::string("a missing __syncthreads is a race (") + mode + " schedule): " + e);
  }
  phimoe_emu::set_schedule("forward");
  auto race = [&](auto launch) {
    const std::string e = error_of(launch);
    (void)cudaGetLastError();
    return e;
  };
  std::string e =
      race([&] { PHIMOE_CUDA_LAUNCH(1, 64, 0, nullptr, warp_pair_kernel<0>)(5, 3, d); });
  expect(e.find("shared-memory race") != std::string::npos,
         "lanes of one warp with nothing between a write and a read: " + e);
  e = race([&] { PHIMOE_CUDA_LAUNCH(1, 64, 0, nullptr, warp_pair_kernel<0>)(3, 5, d); });
  expect(e.find("thread 5 reads") != std::string::npos &&
             e.find("thread 3 wrote") != std::string::npos,
         "the report names the threads: " + e);
  e = race([&] { PHIMOE_CUDA_LAUNCH(1, 64, 0, nullptr, warp_pair_kernel<1>)(5, 3, d); });
  expect(e.empty() && download(d, 1)[0] == 5.0f, "__syncwarp orders lanes: " + e);
  e = race([&] { PHIMOE_CUDA_LAUNCH(1, 64, 0, nullptr, warp_pair_kernel<2>)(5, 3, d); });
  expect(e.empty(), "a shuffle orders its lanes: " + e);
  e = race([&] { PHIMOE_CUDA_LAUNCH(1, 64, 0, nullptr, warp_pair_kernel<3>)(5, 20, d); });
  expect(e.find("shared-memory race") != std::string::npos,
         "a __syncwarp without the reader's lane: " + e);
  e = race([&] { PHIMOE_CUDA_LAUNCH(1, 64, 0, nullptr, warp_pair_kernel<1>)(40, 3, d); });
  expect(e.find("shared-memory race") != std::string::npos,
         "a __syncwarp does not order lanes of two warps: " + e);
  e = race([&] {
    PHIMOE_CUDA_LAUNCH(1, 64, 64 * sizeof(float), nullptr, neighbour_kernel<true>)(d);
  });
  expect(e.empty(), "barriers between every write and read of dynamic shared memory: " + e);
  e = race([&] {
    PHIMOE_CUDA_LAUNCH(1, 64, 64 * sizeof(float), nullptr, neighbour_kernel<false>)(d);
  });
  expect(e.find("shared-memory race at byte 4 of the dynamic shared memory") !=
             std::string::npos,
         "a read of a neighbour's word before the barrier: " + e);
  e = race([&] { PHIMOE_CUDA_LAUNCH(1, 64, 0, nullptr, flag_kernel)(d); });
  expect(e.empty(), "threads that store the same flag: " + e);
}

void test_barriers() {
  float *d = device<float>(64);
  PHIMOE_CUDA_LAUNCH(1, 256, 0, nullptr, shared_kernel<true>)(7.0f, d);
  expect(download(d, 1)[0] == 7.0f, "__syncthreads orders shared memory");
  if (phimoe_emu::race_check_on()) { // then the missing barrier is a race it reports (below)
    test_race_check(d);
  } else {
    test_missing_barrier(d);
  }
  expect(error_of([] { phimoe_emu::set_schedule("sideways"); }).find("unknown schedule") !=
             std::string::npos,
         "an unknown schedule");

  std::string e = error_of(
      [&] { PHIMOE_CUDA_LAUNCH(1, 32, 0, nullptr, divergent_barrier_kernel)(d); });
  expect(e.find("deadlock") != std::string::npos &&
             e.find("divergent_barrier_kernel") != std::string::npos,
         "a __syncthreads in divergent code is a deadlock: " + e);
  e = error_of([&] { PHIMOE_CUDA_LAUNCH(1, 32, 0, nullptr, exited_lane_kernel)(d); });
  expect(e.find("lane 3, which has exited") != std::string::npos,
         "a shuffle naming an exited lane: " + e);
  e = error_of([&] { PHIMOE_CUDA_LAUNCH(1, 16, 0, nullptr, partial_warp_kernel)(d); });
  expect(e.find("does not have") != std::string::npos,
         "a full-mask shuffle in a block of 16 threads: " + e);

  // A vector load must be 16-byte aligned on the GPU; x86 would not mind.
  unsigned *word = device<unsigned>(8);
  const unsigned char *bytes = reinterpret_cast<const unsigned char *>(word);
  PHIMOE_CUDA_CHECK(cudaMemset(word, 0x5a, 8 * sizeof(unsigned)));
  PHIMOE_CUDA_LAUNCH(1, 1, 0, nullptr, vector_load_kernel)(bytes, 16, word);
  PHIMOE_CUDA_CHECK(cudaGetLastError());
  expect(download(word, 1)[0] == 0x5a5a5a5au, "an aligned 16-byte load");
  e = error_of([&] { PHIMOE_CUDA_LAUNCH(1, 1, 0, nullptr, vector_load_kernel)(bytes, 4, word); });
  expect(e.find("misaligned address") != std::string::npos &&
             e.find("vector_load_kernel") != std::string::npos,
         "a 16-byte load at a 4-byte offset: " + e);
  // A prefetch reads nothing, but its range must be device memory: one past the end is a
  // prefetch of the wrong rows.
  PHIMOE_CUDA_LAUNCH(1, 32, 0, nullptr, prefetch_kernel)(bytes, 8 * sizeof(unsigned));
  PHIMOE_CUDA_CHECK(cudaGetLastError());
  e = error_of([&] {
    PHIMOE_CUDA_LAUNCH(1, 32, 0, nullptr, prefetch_kernel)(bytes + 4, 8 * sizeof(unsigned));
  });
  expect(e.find("outside device memory") != std::string::npos &&
             e.find("prefetch_kernel") != std::string::npos,
         "a prefetch past the allocation: " + e);
  // Atomics: every block's count lands; one on host memory is a bug the emulation stops.
  int *counter = reinterpret_cast<int *>(word);
  PHIMOE_CUDA_CHECK(cudaMemset(counter, 0, sizeof(int)));
  PHIMOE_CUDA_LAUNCH(5, 32, 0, nullptr, count_blocks_kernel)(counter);
  PHIMOE_CUDA_CHECK(cudaGetLastError());
  int counted = 0;
  PHIMOE_CUDA_CHECK(cudaMemcpy(&counted, counter, sizeof(int), cudaMemcpyDeviceToHost));
  expect(counted == 5, "an atomicAdd by every block");
  int host_counter = 0;
  e = error_of([&] { PHIMOE_CUDA_LAUNCH(1, 32, 0, nullptr, count_blocks_kernel)(&host_counter); });
  expect(e.find("atomicAdd") != std::string::npos &&
             e.find("outside device memory") != std::string::npos && host_counter == 0,
         "an atomicAdd on host memory: " + e);
  cudaFree(word);

  // Launch configurations the hardware refuses: the launch's error, nothing runs.
  PHIMOE_CUDA_LAUNCH(1, 2048, 0, nullptr, divergent_barrier_kernel)(d);
  expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "2048 threads a block");
  expect(cudaGetLastError() == cudaSuccess, "cudaGetLastError clears the launch error");
  constexpr int n = 16 * 1024; // 64 KiB of dynamic shared memory: over the default 48 KiB
  float *big = device<float>(n);
  PHIMOE_CUDA_LAUNCH(1, 256, n * sizeof(float), nullptr, dynamic_shared_kernel)(n, big);
  expect(cudaGetLastError() == cudaErrorInvalidValue, "64 KiB of shared memory, no opt-in");
  PHIMOE_CUDA_CHECK(cudaFuncSetAttribute(dynamic_shared_kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         n * sizeof(float)));
  PHIMOE_CUDA_LAUNCH(1, 256, n * sizeof(float), nullptr, dynamic_shared_kernel)(n, big);
  PHIMOE_CUDA_CHECK(cudaGetLastError());
  const std::vector<float> h = download(big, n);
  bool reversed = true;
  for (int i = 0; i < n; ++i)
    reversed = reversed && h[i] == static_cast<float>(n - 1 - i);
  expect(reversed, "dynamic shared memory after the opt-in");
  cudaFree(big);
  cudaFree(d);
}

// Each block writes its index where the next block reads it: an order between blocks that
// nothing guarantees.
__global__ void chained_blocks_kernel(int *x) {
  if (threadIdx.x == 0)
    x[blockIdx.x + 1] = x[blockIdx.x] + 1;
}

// Each block writes its partial; the last block to count (kernels.cuh's last_block_of) sums
// them. Variant 0 as kernels.cuh has it; 1 without the fence before the count; 2 without the
// fence after it; 3 the sum read by every block, without counting; 4 every block also writes
// word 0 of the partials.
template <int Variant> __global__ void last_block_kernel(float *partials, int *counter,
                                                         float *sum) {
  __shared__ int last;
  if (threadIdx.x == 0)
    partials[blockIdx.x] = static_cast<float>(blockIdx.x + 1);
  if (Variant == 4 && threadIdx.x == 1)
    partials[0] = 1.0f;
  bool is_last;
  if constexpr (Variant == 0) {
    is_last = phimoe_cuda::detail::last_block_of(counter, static_cast<int>(gridDim.x));
  } else if constexpr (Variant == 3) {
    is_last = true;
  } else {
    __syncthreads();
    if (threadIdx.x == 0) {
      if (Variant != 1)
        __threadfence();
      last = atomicAdd(counter, 1) == static_cast<int>(gridDim.x) - 1;
      if (last) {
        *counter = 0;
        if (Variant != 2)
          __threadfence();
      }
    }
    __syncthreads();
    is_last = last != 0;
  }
  if (is_last && threadIdx.x == 32) { // (not the thread that counted: through the barrier)
    float total = 0.0f;
    for (unsigned b = 0; b < gridDim.x; ++b)
      total += partials[b];
    *sum = total;
  }
}

// Every thread writes its byte of p (a word holds four threads' bytes, as staged q4_K inputs
// do), block b at p + b * Stride; after the barrier thread 0 reads the first word.
template <int Stride> __global__ void byte_kernel(unsigned char *p, unsigned *out) {
  p[blockIdx.x * Stride + threadIdx.x] = static_cast<unsigned char>(threadIdx.x);
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned w;
    std::memcpy(&w, p + blockIdx.x * Stride, 4);
    out[blockIdx.x] = w;
  }
}

void test_last_block(float *partials, int *counter, float *sum) {
  auto run = [&](auto kernel) {
    PHIMOE_CUDA_CHECK(cudaMemset(counter, 0, sizeof(int)));
    const std::string e = error_of([&] { PHIMOE_CUDA_LAUNCH(6, 64, 0, nullptr, kernel)(
                                             partials, counter, sum); });
    (void)cudaGetLastError();
    return e;
  };
  for (const char *mode : {"forward", "reverse", "random:9"}) {
    phimoe_emu::set_schedule(mode);
    std::string e = run(last_block_kernel<0>);
    expect(e.empty() && download(sum, 1)[0] == 21.0f,
           std::string("last_block_of orders the blocks' partials before the sum (") + mode +
               "): " + e);
    e = run(last_block_kernel<1>);
    expect(e.find("device-memory race") != std::string::npos &&
               e.find("no fence and atomic") != std::string::npos,
           std::string("no fence before the count (") + mode + "): " + e);
    e = run(last_block_kernel<2>);
    expect(e.find("device-memory race") != std::string::npos,
           std::string("no fence after the count (") + mode + "): " + e);
    e = run(last_block_kernel<3>);
    expect(e.find("device-memory race") != std::string::npos,
           std::string("every block reads the others' partials (") + mode + "): " + e);
    e = run(last_block_kernel<4>);
    expect(e.find("device-memory race") != std::string::npos,
           std::string("two blocks write one word (") + mode + "): " + e);
  }
  phimoe_emu::set_schedule("forward");
  // Bytes of one word written by different threads: apart, no race; by two blocks, one.
  unsigned char *bytes = reinterpret_cast<unsigned char *>(partials);
  unsigned *words = reinterpret_cast<unsigned *>(sum);
  std::string e = error_of([&] { PHIMOE_CUDA_LAUNCH(1, 32, 0, nullptr, byte_kernel<32>)(
                                     bytes, words); });
  expect(e.empty() && download(words, 1)[0] == 0x03020100u,
         "threads writing the bytes of one word: " + e);
  e = error_of([&] { PHIMOE_CUDA_LAUNCH(2, 8, 0, nullptr, byte_kernel<4>)(bytes, words); });
  (void)cudaGetLastError();
  expect(e.find("device-memory race at byte 4") != std::string::npos,
         "two blocks writing a word's bytes: " + e);
}

void test_block_order() {
  int *x = device<int>(65);
  if (phimoe_emu::race_check_on()) { // the chain is a race between blocks
    PHIMOE_CUDA_CHECK(cudaMemset(x, 0, 65 * sizeof(int)));
    const std::string e =
        error_of([&] { PHIMOE_CUDA_LAUNCH(64, 32, 0, nullptr, chained_blocks_kernel)(x); });
    expect(e.find("device-memory race at byte 4") != std::string::npos &&
               e.find("block 0,0,0's thread 0 wrote it") != std::string::npos,
           "a chain between blocks is a race: " + e);
    float *partials = device<float>(8), *sum = device<float>(2);
    test_last_block(partials, x, sum);
    cudaFree(partials);
    cudaFree(sum);
    cudaFree(x);
    return;
  }
  auto run = [&](const char *mode) {
    phimoe_emu::set_schedule(mode);
    PHIMOE_CUDA_CHECK(cudaMemset(x, 0, 65 * sizeof(int)));
    PHIMOE_CUDA_LAUNCH(64, 32, 0, nullptr, chained_blocks_kernel)(x);
    return download(x, 65)[64];
  };
  expect(run("forward") == 64, "blocks in index order");
  expect(run("reverse") == 1, "blocks in reverse order");
  expect(run("random:3") < 64, "blocks in a random order break a chain between blocks");
  phimoe_emu::set_schedule("forward");
  cudaFree(x);
}

__global__ void add_kernel(float *x, float v) { x[threadIdx.x] += v; }

void test_graphs() {
  float *x = device<float>(4), *y = device<float>(4);
  const float zero[4] = {0, 0, 0, 0};
  PHIMOE_CUDA_CHECK(cudaMemcpy(x, zero, sizeof zero, cudaMemcpyHostToDevice));
  cudaStream_t s = nullptr;
  PHIMOE_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  PHIMOE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  float v = 1.0f;
  PHIMOE_CUDA_LAUNCH(1, 4, 0, s, add_kernel)(x, v);
  v = 100.0f; // the graph keeps the argument of its capture
  PHIMOE_CUDA_LAUNCH(1, 4, 0, s, add_kernel)(x, 2.0f);
  PHIMOE_CUDA_CHECK(cudaMemcpyAsync(y, x, sizeof zero, cudaMemcpyDeviceToDevice, s));
  cudaGraph_t graph = nullptr;
  PHIMOE_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
  expect(download(x, 4)[0] == 0.0f, "captured launches do not run");
  cudaGraphExec_t exec = nullptr;
  PHIMOE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  PHIMOE_CUDA_CHECK(cudaGraphLaunch(exec, s));
  PHIMOE_CUDA_CHECK(cudaGraphLaunch(exec, s));
  PHIMOE_CUDA_CHECK(cudaStreamSynchronize(s));
  expect(download(x, 4)[3] == 6.0f && download(y, 4)[3] == 6.0f,
         "a graph replays its launches and copies, with their captured arguments");

  // Synchronous calls during a capture are refused and spoil it.
  PHIMOE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  expect(cudaMemcpy(x, zero, sizeof zero, cudaMemcpyHostToDevice) ==
             cudaErrorStreamCaptureUnsupported,
         "cudaMemcpy during a capture");
  cudaGraph_t spoiled = nullptr;
  expect(cudaStreamEndCapture(s, &spoiled) == cudaErrorStreamCaptureInvalidated && !spoiled,
         "the capture is invalidated");
  PHIMOE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  PHIMOE_CUDA_LAUNCH(1, 4, 0, nullptr, add_kernel)(x, 1.0f);
  expect(cudaGetLastError() == cudaErrorStreamCaptureImplicit,
         "a launch on the legacy stream during a capture");
  expect(cudaMemcpyAsync(x, zero, sizeof zero, cudaMemcpyHostToDevice, s) ==
             cudaErrorStreamCaptureUnsupported,
         "a copy from pageable host memory into a graph");
  (void)cudaStreamEndCapture(s, &spoiled);
  (void)cudaGetLastError();
  expect(download(x, 4)[0] == 6.0f, "nothing of a spoiled capture ran");
  expect(cudaMemcpy(x, zero, 4, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue,
         "a copy whose direction does not match its pointers");
  (void)cudaGetLastError();
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
  cudaFree(x);
  cudaFree(y);
}

// One mma.sync per warp: A [16, 16] and B [16, 8] (as W[n][k]) in bf16, the fragments loaded
// with gemm_tc.cuh's coordinates.
__global__ void mma_kernel(const uint16_t *a, const uint16_t *w, const float *c, float *d) {
  using namespace phimoe_cuda::detail;
  const int lane = threadIdx.x;
  uint32_t ra[4], rb[2];
  for (int j = 0; j < 4; ++j) {
    const uint16_t *p = a + tc_a_row(lane, j) * 16 + tc_a_col(lane, j);
    ra[j] = p[0] | static_cast<uint32_t>(p[1]) << 16;
  }
  for (int j = 0; j < 2; ++j) {
    const uint16_t *p = w + tc_b_n(lane) * 16 + tc_b_k(lane, j);
    rb[j] = p[0] | static_cast<uint32_t>(p[1]) << 16;
  }
  float acc[4];
  for (int i = 0; i < 4; ++i)
    acc[i] = c[tc_c_row(lane, i) * 8 + tc_c_col(lane, i)];
  tc_mma(acc, ra, rb);
  for (int i = 0; i < 4; ++i)
    d[tc_c_row(lane, i) * 8 + tc_c_col(lane, i)] = acc[i];
}

void test_mma() {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> a(16 * 16), w(8 * 16);
  std::vector<float> c(16 * 8);
  auto bf16 = [&](float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return static_cast<uint16_t>(u >> 16);
  };
  auto value = [](uint16_t h) {
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return static_cast<double>(f);
  };
  for (auto &x : a)
    x = bf16(normal(rng));
  for (auto &x : w)
    x = bf16(normal(rng));
  for (auto &x : c)
    x = normal(rng);
  uint16_t *da = device<uint16_t>(a.size()), *dw = device<uint16_t>(w.size());
  float *dc = device<float>(c.size()), *dd = device<float>(c.size());
  PHIMOE_CUDA_CHECK(cudaMemcpy(da, a.data(), a.size() * 2, cudaMemcpyHostToDevice));
  PHIMOE_CUDA_CHECK(cudaMemcpy(dw, w.data(), w.size() * 2, cudaMemcpyHostToDevice));
  PHIMOE_CUDA_CHECK(cudaMemcpy(dc, c.data(), c.size() * 4, cudaMemcpyHostToDevice));
  PHIMOE_CUDA_LAUNCH(1, 32, 0, nullptr, mma_kernel)(da, dw, dc, dd);
  PHIMOE_CUDA_CHECK(cudaGetLastError());
  const std::vector<float> d = download(dd, c.size());
  double err = 0.0;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double want = c[m * 8 + n];
      for (int k = 0; k < 16; ++k)
        want += value(a[m * 16 + k]) * value(w[n * 16 + k]);
      err = std::max(err, std::fabs(d[m * 8 + n] - want));
    }
  expect(err < 1e-5, "mma.sync m16n8k16 against the matrix product (max|d| " +
                         std::to_string(err) + ")");
  cudaFree(da), cudaFree(dw), cudaFree(dc), cudaFree(dd);
}

// ldmatrix.x4 from shared memory: a 32 x 8 matrix of 16-bit values m * 8 + c (row m, column
// c), lane l addressing row l (4 matrices of 8 rows); lane l gets word l % 4 of row l / 4 of
// each matrix i, i.e. the values of row 8 i + l / 4 at columns 2 (l % 4), 2 (l % 4) + 1.
// Also a misaligned row address, which the hardware refuses.
__global__ void ldmatrix_kernel(uint32_t *out, int misalign) {
  struct alignas(16) Tile {
    uint16_t v[32][8]; // rows of 16 bytes
  };
  __shared__ Tile tile;
  const int l = threadIdx.x;
  for (int c = 0; c < 8; ++c)
    tile.v[l][c] = static_cast<uint16_t>(l * 8 + c);
  __syncwarp();
  uint32_t d[4];
  phimoe_cuda::detail::tc_ldmatrix_x4(&tile.v[l][0] + misalign, d); // the emulated ldmatrix
  for (int i = 0; i < 4; ++i)
    out[l * 4 + i] = d[i];
}

void test_ldmatrix() {
  uint32_t *d = device<uint32_t>(32 * 4);
  PHIMOE_CUDA_LAUNCH(1, 32, 0, nullptr, ldmatrix_kernel)(d, 0);
  PHIMOE_CUDA_CHECK(cudaGetLastError());
  const std::vector<uint32_t> h = download(d, 32 * 4);
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const uint32_t row = 8 * i + l / 4, col = 2 * (l % 4);
      expect(h[l * 4 + i] == ((row * 8 + col) | (row * 8 + col + 1) << 16),
             "ldmatrix.x4: lane " + std::to_string(l) + ", matrix " + std::to_string(i));
    }
  bool refused = false;
  try {
    PHIMOE_CUDA_LAUNCH(1, 32, 0, nullptr, ldmatrix_kernel)(d, 1);
    PHIMOE_CUDA_CHECK(cudaDeviceSynchronize());
  } catch (const std::exception &e) {
    refused = std::string(e.what()).find("16-byte aligned") != std::string::npos;
  }
  (void)cudaGetLastError();
  expect(refused, "ldmatrix: a misaligned row address is refused");
  cudaFree(d);
}

// cvt.rn.bf16x2.f32 against rounding by hand: ties to even, carries into the exponent and to
// inf, negative values, and nan (the canonical 0x7fff); the first operand in the upper half.
void test_cvt_bf16x2() {
  auto bits = [](uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  const struct {
    uint32_t in, want;
  } cases[] = {
      {0x3f800000u, 0x3f80u}, // 1
      {0x3f808000u, 0x3f80u}, // half-way, even below: down
      {0x3f818000u, 0x3f82u}, // half-way, odd below: up
      {0x3f808001u, 0x3f81u}, // above half-way: up
      {0x3f807fffu, 0x3f80u}, // below half-way: down
      {0xbf818000u, 0xbf82u}, // negative, half-way, odd: away from zero
      {0x3fffffffu, 0x4000u}, // carries into the exponent
      {0x7f7fffffu, 0x7f80u}, // the largest float: to inf
      {0xff800000u, 0xff80u}, // -inf
      {0x00000001u, 0x0000u}, // the smallest subnormal: to +0
      {0x80000000u, 0x8000u}, // -0
      {0x7fc00001u, 0x7fffu}, // nan
  };
  for (const auto &c : cases) {
    const uint32_t got = ::phimoe_emu::cvt_rn_bf16x2_f32(1.0f, bits(c.in));
    expect((got & 0xffffu) == c.want && got >> 16 == 0x3f80u,
           "cvt.rn.bf16x2.f32 of 0x" + std::to_string(c.in));
  }
}

} // namespace

int main() {
  try {
    test_collectives();
    test_barriers();
    test_block_order();
    test_graphs();
    test_mma();
    test_ldmatrix();
    test_cvt_bf16x2();
  } catch (const std::exception &e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d of %d checks failed\n", failures ? "FAILED" : "OK", failures, checks);
  return failures ? 1 : 0;
}
