// kernels.cuh - CUDA kernels of the PhiMoE forward pass, templates over the model's constant
// shapes, with the host launchers that the generated .cu calls (same names and arguments as
// the CPU kernels of phimoe_rt/kernels.h, on device pointers, queued on ctx.stream).
//
// Weights are row-major [rows, K] as nn.Linear stores them, in float, bf16, f16, or q8_0,
// q4_K, q6_K in the split layout of the CUDA pack (phimoe_rt/split_layout.h: the blocks' fields
// stored field by field, so that 16-byte loads of quants stay aligned); elements.cuh says how
// each is read.
// Activations are float. Every launch is checked (PHIMOE_CUDA_CHECK_LAUNCH).
//
// Decode (n <= kGemvMaxRows rows) multiplies with a warp per output row, 16-byte loads of
// weights and the input row staged in shared memory in the order the loads use it;
// longer prompts with tensor cores (gemm_tc.cuh: bf16, q8_0, q4_K and q6_K weights) or, for f32
// and f16, a shared-memory tiled kernel that converts weight tiles to float.
// The MoE reads the expert ids its router kernel wrote on the device: no host sync; prefill
// runs it as grouped-expert GEMMs (moe_grouped.cuh).
#ifndef PHIMOE_CUDA_KERNELS_CUH
#define PHIMOE_CUDA_KERNELS_CUH

#include "phimoe_cuda/elements.cuh"
#include "phimoe_cuda/launch.h"
#include "phimoe_cuda/runtime.h"
#include "phimoe_rt/quant.h"
#include "phimoe_rt/sparsemixer.h"

#include <cuda_fp16.h>

#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace phimoe_cuda {
namespace detail {

constexpr int kGemvMaxRows = 8; // up to this many tokens: GEMV kernels, then the tiled GEMM
constexpr int kWarps = 8;       // warps per block of the row kernels
constexpr int kThreads = 32 * kWarps;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The sum over the block of every thread's v; `part` is 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float *part) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0)
    part[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int i = 0; i < static_cast<int>((blockDim.x + 31) / 32); ++i)
    total += part[i];
  __syncthreads();
  return total;
}

// Rows rows[0..NR) of a [R, K] weight times the input row staged in xs by stage_row<W, K>,
// summed over the warp; every lane gets the results. Warp-collective. With whole units
// (Elem<W>::vec), lane u takes units u, u + 32, ...: its 16-byte loads of quants and its
// unit-major reads of xs are consecutive with its neighbours', and the unit's input values,
// loaded once into registers, serve the NR rows.
template <class W, long long R, int K, int NR>
__device__ __forceinline__ void rows_dot(const W *w, const size_t (&rows)[NR], const float *xs,
                                         float (&out)[NR]) {
  using E = Elem<W>;
  const int lane = threadIdx.x & 31;
  float acc[NR];
#pragma unroll
  for (int i = 0; i < NR; ++i)
    acc[i] = 0.0f;
  if constexpr (E::vec(K)) {
    constexpr int U = K / E::kUnit;
    // A known trip count, unrolled: the loads of several units are in flight at once (a loop
    // from `lane` waited for each unit's loads in turn; the sm_90 SASS of the q8_0 GEMV had
    // one 16-byte load a row per round trip). The same sums in the same order.
#pragma unroll
    for (int it = 0; it < (U + 31) / 32; ++it) {
      const int u = lane + 32 * it;
      if (U % 32 != 0 && u >= U)
        break;
      float xv[E::kUnit];
#pragma unroll
      for (int j = 0; j < E::kUnit; ++j)
        xv[j] = xs[j * U + u];
#pragma unroll
      for (int i = 0; i < NR; ++i)
        acc[i] += E::unit_dot(w, R, K, rows[i], u, xv);
    }
  } else {
    for (int k = lane; k < K; k += 32) {
      const float x = xs[k];
#pragma unroll
      for (int i = 0; i < NR; ++i)
        acc[i] += E::at(w, R, K, rows[i], k) * x;
    }
  }
#pragma unroll
  for (int i = 0; i < NR; ++i)
    out[i] = warp_sum(acc[i]);
}

template <class W, long long R, int K>
__device__ __forceinline__ float row_dot(const W *w, size_t r, const float *xs) {
  const size_t rows[1] = {r};
  float out[1];
  rows_dot<W, R, K, 1>(w, rows, xs, out);
  return out[0];
}

// Loops whose trip counts are constants run in blocks of `threads` threads: the emulation
// checks it.
__device__ __forceinline__ void expect_block_of(int threads) {
#ifdef PHIMOE_CUDA_EMU
  if (static_cast<int>(blockDim.x) != threads || blockDim.y != 1 || blockDim.z != 1)
    throw std::logic_error("a kernel of kernels.cuh ran with a block size it does not take");
#else
  (void)threads;
#endif
}

// Thread threadIdx.x's share of N items (columns, chunks) in blocks of Threads threads: items
// item(i) for i < per where has(i). Loops over it have constant trip counts, so a thread can
// issue all its loads before its first store: a loop bounded by blockDim.x that alternated
// them waited for one load at a time (the compiler cannot tell the stores from the loads).
template <int N, int Threads = kThreads> struct BlockShare {
  static constexpr int per = (N + Threads - 1) / Threads;
  __device__ static int item(int i) { return static_cast<int>(threadIdx.x) + i * Threads; }
  __device__ static bool has(int i) { return N % Threads == 0 || item(i) < N; }
};

// store(j, load(j)) for the block's N items, every load of a thread before its first store.
template <int N, int Threads, class T, class Load, class Store>
__device__ __forceinline__ void load_then_store(Load load, Store store) {
  using S = BlockShare<N, Threads>;
  expect_block_of(Threads);
  T v[S::per];
#pragma unroll
  for (int i = 0; i < S::per; ++i)
    if (S::has(i))
      v[i] = load(S::item(i));
#pragma unroll
  for (int i = 0; i < S::per; ++i)
    if (S::has(i))
      store(S::item(i), v[i]);
}

// Stages an input row of K floats for row_dot<W, R, K> (in Elem<W>'s unit-major order), with
// the block's kThreads threads (K / kThreads loads a thread in flight before the block's first
// dot product).
template <class W, int K> __device__ __forceinline__ void stage_row(float *dst, const float *src) {
  load_then_store<K, kThreads, float>([&](int j) { return src[staged_source<W, K>(j)]; },
                                      [&](int j, float v) { dst[j] = v; });
}

// Asks L2 for [p, p + bytes) from HBM, without waiting: the 16-byte-aligned part, by thread
// `issuer` of the block with one bulk prefetch on sm_90, else by every thread of the block, a
// 128-byte line each at a time. A hint: nothing waits for it and nothing is read.
__device__ __forceinline__ void prefetch_l2(const void *p, size_t bytes, int issuer) {
#if defined(PHIMOE_CUDA_EMU)
  if (static_cast<int>(threadIdx.x) == issuer)
    ::phimoe_emu::prefetch_l2(p, bytes);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const size_t global = __cvta_generic_to_global(p); // (the .global operand's address)
  const size_t start = (global + 15) & ~size_t{15}, end = (global + bytes) & ~size_t{15};
  if (static_cast<int>(threadIdx.x) == issuer && end > start)
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(start),
                 "r"(static_cast<uint32_t>(end - start)));
#elif defined(__CUDA_ARCH__)
  (void)issuer;
  const size_t global = __cvta_generic_to_global(p);
  for (size_t o = 128 * static_cast<size_t>(threadIdx.x); o < bytes; o += 128 * blockDim.x)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(global + o));
#else
  (void)p, (void)bytes, (void)issuer;
#endif
}

// Bytes of each field's range that prefetch_rows asks for: the start of a block's rows. A
// kernel's resident blocks (up to about 1000) then ask for at most 16 MB at once, well within
// an H100's 50 MB of L2, which a whole MoE projection (59 MB) or the LM head (108 MB) would
// overrun, evicting lines before their loads came.
constexpr size_t kPrefetchBytes = 16 * 1024;

// Prefetches rows [first, first + count) of an [R, K] weight into L2 (row_ranges: a range per
// field of its storage, the first kPrefetchBytes of each). The decode kernels call it before
// they stage their input row, so that their weights come from HBM while they copy it, and
// gemv_kernel even before its prologue: weights are written by no kernel, so under
// programmatic dependent launch (PHIMOE_CUDA_PDL=1) they stream in while the kernel before it
// still runs. Block-collective (no barrier); `lane0`: the first issuing thread (callers with
// several row ranges spread them).
template <class W>
__device__ __forceinline__ void prefetch_rows(const W *w, size_t R, int K, size_t first,
                                              size_t count, int lane0 = 0) {
  const RowRanges<W> g = row_ranges<W>(R, K, first, count);
#pragma unroll
  for (int i = 0; i < g.count; ++i) {
    const size_t bytes = g.bytes[i] < kPrefetchBytes ? g.bytes[i] : kPrefetchBytes;
    prefetch_l2(reinterpret_cast<const char *>(w) + g.offset[i], bytes, lane0 + i);
  }
}

// ---------------------------------------------------------------------------------------
// q4_K decode inputs in fixed point (elements.cuh, StagedQ4k): the kernel that writes a row
// also stages it, once, into ctx.staged, and the GEMV that reads the row next copies the
// staged row into shared memory and multiplies with dp4a (int_input). Staging in each GEMV
// block instead would repeat the row's maxima, rounding and planes in every one of 256 or
// more blocks: about as many instructions as the block's dot products.

// Whether decode multiplies W with an input row of K values in fixed point (q4_K rows of
// whole blocks), where the row comes staged.
template <class W, long long K> __host__ __device__ constexpr bool int_input() {
  return std::is_same<W, phimoe_rt::block_q4k>::value && Elem<W>::vec(K);
}

// Group g (columns 32g .. 32g + 31) of a row into `staged` (the row's StagedQ4k words), lane
// l holding column 32g + l. Warp-collective.
__device__ __forceinline__ void stage_q4k_group(uint32_t *staged, int g, float x) {
  const int lane = threadIdx.x & 31, k = 32 * g + lane;
  float step, inv;
  StagedQ4k::steps(__reduce_max_sync(0xffffffffu, float_bits(x) & 0x7fffffffu), step, inv);
  const int v = StagedQ4k::level(x, inv);
  const int low = __reduce_add_sync(0xffffffffu, lane < 16 ? v : 0); // |sum| <= 2^24
  const int high = __reduce_add_sync(0xffffffffu, lane < 16 ? 0 : v);
  StagedQ4k::put(staged, k, v);
  if (lane % 16 == 0)
    StagedQ4k::put_half(staged, k, step, step * static_cast<float>(lane < 16 ? low : high));
}

// Copies a staged row of K values into shared memory (16 bytes a thread at a time), with the
// block's kThreads threads.
template <int K> __device__ __forceinline__ void load_staged(float *dst, const uint32_t *src) {
  load_then_store<StagedQ4k::words(K) / 4, kThreads, uint4>(
      [&](int c) { return load_uint4(src + 4 * c); },
      [&](int c, uint4 v) { store_uint4(dst + 4 * c, v); });
}

// rows_dot of q4_K rows on a staged row in shared memory (xs, load_staged): per unit, the
// input's 28 words in registers serve the NR rows.
template <long long R, int K, int NR>
__device__ __forceinline__ void rows_dot_staged(const phimoe_rt::block_q4k *w,
                                                const size_t (&rows)[NR], const float *xs,
                                                float (&out)[NR]) {
  constexpr int U = K / 32;
  const uint32_t *staged = reinterpret_cast<const uint32_t *>(xs);
  const int lane = threadIdx.x & 31;
  float acc[NR];
#pragma unroll
  for (int i = 0; i < NR; ++i)
    acc[i] = 0.0f;
  // A known trip count: the loads of several units may be in flight at once.
#pragma unroll
  for (int it = 0; it < (U + 31) / 32; ++it) {
    const int u = lane + 32 * it;
    if (U % 32 == 0 || u < U) {
      const StagedQ4k::Unit xv = StagedQ4k::load(staged, u);
#pragma unroll
      for (int i = 0; i < NR; ++i)
        acc[i] += q4k_unit_dot(w, R, K, rows[i], u, xv);
    }
  }
#pragma unroll
  for (int i = 0; i < NR; ++i)
    out[i] = warp_sum(acc[i]);
}

// A decode kernel's input row in shared memory: the staged copy where one came (staged_row,
// int_input<W, K>), else the floats of x_row (stage_row). Whether it took the staged copy.
template <class W, int K>
__device__ __forceinline__ bool stage_input(float *xs, const float *x_row,
                                            const uint32_t *staged_row) {
  if constexpr (int_input<W, K>()) {
    if (staged_row) {
      load_staged<K>(xs, staged_row);
      return true;
    }
  }
  stage_row<W, K>(xs, x_row);
  return false;
}
// rows_dot on what stage_input put in xs (fixed: its staged copy).
template <class W, long long R, int K, int NR>
__device__ __forceinline__ void rows_dot_input(bool fixed, const W *w, const size_t (&rows)[NR],
                                               const float *xs, float (&out)[NR]) {
  if constexpr (int_input<W, K>()) {
    if (fixed) {
      rows_dot_staged<R, K, NR>(w, rows, xs, out);
      return;
    }
  }
  rows_dot<W, R, K, NR>(w, rows, xs, out);
}
// Row t of a buffer of staged rows of K values, or null.
template <int K> __device__ __forceinline__ const uint32_t *staged_row(const uint32_t *staged,
                                                                     size_t t) {
  return staged ? staged + t * StagedQ4k::words(K) : nullptr;
}

// Dynamic shared memory above the 48 KiB default needs an opt-in per kernel.
template <class Kernel> inline void allow_shared(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    PHIMOE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(bytes)));
}

inline int blocks_for(long long items, int per_block) {
  return static_cast<int>((items + per_block - 1) / per_block);
}

// ---------------------------------------------------------------------------------------
// A row per block of kThreads threads (load_then_store: in decode this is one block).
template <int V, int H, class W>
__global__ void embed_kernel(const int32_t *ids, const W *table, float *out) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  const int t = blockIdx.x;
  const int id = ids[t];
  const bool valid = id >= 0 && id < V;
  float *o = out + static_cast<size_t>(t) * H;
  load_then_store<H, kThreads, float>(
      [&](int j) { return valid ? Elem<W>::at(table, V, H, id, j) : 0.0f; },
      [&](int j, float v) { o[j] = v; });
}

// LayerNorm of row t by a block of kThreads threads (two passes over the row: mean, then
// biased variance); with Add, the row is a + b, also written to sum (which may alias a).
// FreshB: b was written by other blocks of the same launch (down_kernel's norm tail): read
// through L2.
// Each thread holds its H / kThreads columns in registers, and issues every load (the row,
// the weight, the bias) before its first store: a loop that stored to `sum` between loads
// would wait for each load in turn (the compiler cannot know sum from a), and reloading the
// row for the second and third passes would wait twice more. In decode this kernel is one
// block, so those waits were its time.
// Rms: Mixtral's RMSNorm instead, x / sqrt(mean(x²) + eps) * w: no mean, no bias (null).
template <int H, bool Add, class W, bool FreshB = false, bool Rms = false>
__device__ __forceinline__ void layer_norm_row(int t, const float *a, const float *b,
                                               const W *w, const W *bias, float eps, float *sum,
                                               float *out, float *part, uint32_t *staged) {
  using S = BlockShare<H>;
  expect_block_of(kThreads);
  const size_t row = static_cast<size_t>(t) * H;
  float v[S::per], wv[S::per], bv[S::per];
#pragma unroll
  for (int i = 0; i < S::per; ++i) {
    const int j = S::item(i);
    v[i] = S::has(i) ? a[row + j] : 0.0f;
    if constexpr (Add && FreshB)
      bv[i] = S::has(i) ? __ldcg(b + row + j) : 0.0f;
    else if constexpr (Add)
      bv[i] = S::has(i) ? b[row + j] : 0.0f;
  }
#pragma unroll
  for (int i = 0; i < S::per; ++i) {
    const int j = S::item(i);
    if constexpr (Add)
      v[i] += bv[i];
    wv[i] = S::has(i) ? ld(w + j) : 0.0f;
    bv[i] = S::has(i) && !Rms ? ld(bias + j) : 0.0f;
  }
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < S::per; ++i)
    if (S::has(i)) {
      if constexpr (Add)
        sum[row + S::item(i)] = v[i];
      s += v[i];
    }
  const float mean = Rms ? 0.0f : block_sum(s, part) / H;
  float q = 0.0f;
#pragma unroll
  for (int i = 0; i < S::per; ++i)
    if (S::has(i)) {
      const float d = v[i] - mean;
      q += d * d;
    }
  const float rstd = 1.0f / sqrtf(block_sum(q, part) / H + eps);
#pragma unroll
  for (int i = 0; i < S::per; ++i)
    if (S::has(i)) {
      const int j = S::item(i);
      const float y = (v[i] - mean) * rstd * wv[i] + bv[i];
      out[row + j] = y;
      if constexpr (H % 256 == 0) // (a warp's lanes: one group of 32 columns)
        if (staged)
          stage_q4k_group(staged + static_cast<size_t>(t) * StagedQ4k::words(H), j / 32, y);
    }
}
// (staged: null, or where the rows' StagedQ4k copies go: stage_for)
template <int H, bool Add, class W, bool Rms = false>
__global__ void layer_norm_kernel(const float *a, const float *b, const W *w, const W *bias,
                                  float eps, float *sum, float *out, uint32_t *staged) {
  __shared__ float part[32];
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  layer_norm_row<H, Add, W, false, Rms>(blockIdx.x, a, b, w, bias, eps, sum, out, part, staged);
}

template <class B> __device__ __forceinline__ float bias_at(const B *bias, int r) {
  return bias ? ld(bias + r) : 0.0f;
}

// Output rows per block of the decode kernels: each block stages its input row once, so as
// many rows as still leave about 256 blocks to spread over the SMs (16 or 32: every warp takes
// two rows at a time).
template <long long N> __host__ __device__ constexpr int gemv_rows() {
  return N / 256 >= 4 * kWarps ? 4 * kWarps : 2 * kWarps;
}

// gemv_kernel's rows of this block (for every token's blocks) into L2, before the kernel's
// prologue: it reads nothing that a kernel writes (launch.h).
template <int N, int K, class W> __device__ __forceinline__ void gemv_prefetch(const W *w) {
  constexpr int RB = gemv_rows<N>();
  const int first = static_cast<int>(blockIdx.x) * RB;
  if (blockIdx.y == 0)
    prefetch_rows(w, N, K, first, min(N, first + RB) - first);
}

// Decode: block (row group, token); a warp per two output rows at a time, x staged in shared
// memory xs (K floats; staged: null, or x's StagedQ4k rows for int_input<W, K>: dp4a).
template <int N, int K, class W, class B>
__device__ __forceinline__ void gemv_block(const float *x, const uint32_t *staged, const W *w,
                                           const B *bias, float *out, float *xs) {
  constexpr int RB = gemv_rows<N>();
  const int first = static_cast<int>(blockIdx.x) * RB, end = min(N, first + RB);
  const int t = blockIdx.y;
  const bool fixed =
      stage_input<W, K>(xs, x + static_cast<size_t>(t) * K, staged_row<K>(staged, t));
  __syncthreads();
  for (int r = first + 2 * static_cast<int>(threadIdx.x >> 5); r < end; r += 2 * kWarps) {
    const bool pair = r + 1 < end;
    const size_t rows[2] = {static_cast<size_t>(r), static_cast<size_t>(pair ? r + 1 : r)};
    float y[2];
    rows_dot_input<W, N, K, 2>(fixed, w, rows, xs, y);
    if ((threadIdx.x & 31) == 0) {
      out[static_cast<size_t>(t) * N + r] = y[0] + bias_at(bias, r);
      if (pair)
        out[static_cast<size_t>(t) * N + r + 1] = y[1] + bias_at(bias, r + 1);
    }
  }
}

template <int N, int K, class W, class B>
__global__ void gemv_kernel(const float *x, const uint32_t *staged, const W *w, const B *bias,
                            float *out) {
  PHIMOE_CUDA_DYNAMIC_SHARED(float, xs);
  gemv_prefetch<N, K>(w);
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  gemv_block<N, K>(x, staged, w, bias, out, xs);
}

// Prefill: a 32-token x 64-row tile per block of 256 threads (2 x 4 outputs each), K in steps
// of 32; weight tiles are converted to float in shared memory.
template <int N, int K, class W, class B>
__global__ void gemm_kernel(const float *x, int n, const W *w, const B *bias, float *out) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  constexpr int BM = 32, BN = 64, BK = 32;
  __shared__ float xs[BM][BK + 1];
  __shared__ float ws[BN][BK + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int t0 = blockIdx.y * BM, r0 = blockIdx.x * BN;
  float acc[2][4] = {};
  for (int k0 = 0; k0 < K; k0 += BK) {
    for (int i = threadIdx.x; i < BM * BK; i += blockDim.x) {
      const int tt = i / BK, kk = i % BK, t = t0 + tt, k = k0 + kk;
      xs[tt][kk] = t < n && k < K ? x[static_cast<size_t>(t) * K + k] : 0.0f;
    }
    for (int i = threadIdx.x; i < BN * BK; i += blockDim.x) {
      const int rr = i / BK, kk = i % BK, r = r0 + rr, k = k0 + kk;
      ws[rr][kk] = r < N && k < K ? Elem<W>::at(w, N, K, r, k) : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < BK; ++kk)
      for (int a = 0; a < 2; ++a) {
        const float xv = xs[ty * 2 + a][kk];
        for (int b = 0; b < 4; ++b)
          acc[a][b] += xv * ws[tx + 16 * b][kk];
      }
    __syncthreads();
  }
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 4; ++b) {
      const int t = t0 + ty * 2 + a, r = r0 + tx + 16 * b;
      if (t < n && r < N)
        out[static_cast<size_t>(t) * N + r] = acc[a][b] + bias_at(bias, r);
    }
}

template <int In, int Offset, int Width>
__global__ void copy_cols_kernel(const float *x, int n, float *out) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  const long long total = static_cast<long long>(n) * Width;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long t = i / Width, j = i % Width;
    out[i] = x[t * In + Offset + j];
  }
}

// Columns [0, W0), [W0, W0 + W1), [W0 + W1, W0 + W1 + W2) of x's rows (In wide) into three
// buffers: the q/k/v split of a fused projection in one launch instead of three.
template <int In, int W0, int W1, int W2>
__global__ void split_cols_kernel(const float *x, int n, float *o0, float *o1, float *o2) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  constexpr int Used = W0 + W1 + W2;
  const long long total = static_cast<long long>(n) * Used;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long t = i / Used;
    const int j = static_cast<int>(i % Used);
    const float v = x[t * In + j];
    if (j < W0)
      o0[t * W0 + j] = v;
    else if (j < W0 + W1)
      o1[t * W1 + (j - W0)] = v;
    else
      o2[t * W2 + (j - W0 - W1)] = v;
  }
}

// The inverse frequencies of both LongRoPE sets ([0] short, [1] long) and their mscales,
// computed on the host in float32 as the CPU kernel (and transformers) computes them, and which
// set row t takes: row_long[t] for serve's batches (KvPages::row_long), else `fixed` (the
// forward's set, Context::rope_long).
template <int D> struct RopeTable {
  float inv_freq[2][D / 2];
  float mscale[2];
  const uint8_t *row_long;
  int fixed;
  __device__ __forceinline__ int set(int t) const {
    return row_long ? (row_long[t] != 0 ? 1 : 0) : fixed;
  }
};

// Where position p of row t's sequence lies in each layer of the KV cache (the row of
// [capacity][kv_head][head_dim]), or -1 where it has no place (see KvPages).
__device__ __forceinline__ int kv_slot(const KvPages &pages, int capacity, int t, int p) {
  if (p < 0)
    return -1;
  if (!pages.block_table)
    return p < capacity ? p : -1;
  const int i = p >> pages.block_shift;
  if (i >= pages.max_blocks)
    return -1;
  const int b = pages.block_table[static_cast<size_t>(pages.row_slot[t]) * pages.max_blocks + i];
  if (b < 0)
    return -1;
  const int at = (b << pages.block_shift) | (p & ((1 << pages.block_shift) - 1));
  return at < capacity ? at : -1;
}

// Over a paged cache: whether the window [lo, p] of row t's sequence has a place for every
// position, as far as the calling thread checks it: the window's blocks first, first + stride,
// ... (block 0 of the window is lo's: lo is checked, then the first position of each block).
__device__ __forceinline__ bool window_mapped(const KvPages &pages, int capacity, int t, int lo,
                                              int p, int first, int stride) {
  const int b0 = lo >> pages.block_shift;
  for (int b = b0 + first; b <= p >> pages.block_shift; b += stride)
    if (kv_slot(pages, capacity, t, b == b0 ? lo : b << pages.block_shift) < 0)
      return false;
  return true;
}

// The RoPE of one pair (a, b) = (x[j], x[j + D/2]) of a head at `position` with set `set`:
// the one arithmetic of rope_kernel, rope_kv_write_kernel and qkv_rope_kernel.
template <int D>
__device__ __forceinline__ void rope_pair(const RopeTable<D> &table, int set, float position,
                                          int j, float a, float b, float &ra, float &rb) {
  const float angle = position * table.inv_freq[set][j];
  const float c = cosf(angle) * table.mscale[set], s = sinf(angle) * table.mscale[set];
  ra = a * c - b * s;
  rb = b * c + a * s;
}

// One token per block; out may alias x (each thread reads its pair, then writes it).
// R < D (partial rotary, phi-2): the first R lanes of each head of D rotate as a head of R
// would (table: R's frequencies); the others are copied.
template <int Heads, int D, int R = D>
__global__ void rope_kernel(const float *x, const int32_t *pos, RopeTable<R> table, float *out) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  constexpr int half = R / 2;
  const int t = blockIdx.x, set = table.set(t);
  const float position = static_cast<float>(pos[t]);
  for (int i = threadIdx.x; i < Heads * half; i += blockDim.x) {
    const int h = i / half, j = i % half;
    const size_t base = (static_cast<size_t>(t) * Heads + h) * D;
    rope_pair(table, set, position, j, x[base + j], x[base + j + half], out[base + j],
              out[base + j + half]);
  }
  if constexpr (R < D)
    if (out != x)
      for (int i = threadIdx.x; i < Heads * (D - R); i += blockDim.x) {
        const size_t at = (static_cast<size_t>(t) * Heads + i / (D - R)) * D + R + i % (D - R);
        out[at] = x[at];
      }
}

// out = a + b elementwise, W floats a row, a block per row; out may alias a or b.
template <int W>
__global__ void add_kernel(const float *a, const float *b, float *out) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  const size_t row = static_cast<size_t>(blockIdx.x) * W;
  for (int i = threadIdx.x; i < W; i += blockDim.x)
    out[row + i] = a[row + i] + b[row + i];
}

// RoPE of the keys fused with the KV-cache write: rotates the k rows of this forward as
// rope_kernel does and writes them, and the v rows, at their positions (rows outside the
// cache: not). The rotated keys go to the cache only.
template <int Hkv, int D>
__global__ void rope_kv_write_kernel(const float *k, const float *v, const int32_t *pos,
                                     RopeTable<D> table, int layer, int capacity, KvPages pages,
                                     float *k_cache, float *v_cache) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  constexpr int half = D / 2, row = Hkv * D;
  const int t = blockIdx.x, p = pos[t], at = kv_slot(pages, capacity, t, p), set = table.set(t);
  if (at < 0)
    return;
  const size_t src = static_cast<size_t>(t) * row;
  const size_t dst = (static_cast<size_t>(layer) * capacity + at) * row;
  const float position = static_cast<float>(p);
  for (int i = threadIdx.x; i < Hkv * half; i += blockDim.x) {
    const int h = i / half, j = i % half;
    rope_pair(table, set, position, j, k[src + h * D + j], k[src + h * D + j + half],
              k_cache[dst + h * D + j], k_cache[dst + h * D + j + half]);
  }
  for (int j = threadIdx.x; j < row; j += blockDim.x)
    v_cache[dst + j] = v[src + j];
}

// split_cols + rope (queries) + rope_kv_write (keys, values) of a fused q/k/v projection, one
// row of In floats per block ([Hq * D queries | Hkv * D keys | Hkv * D values | ...]): the
// rotated queries to q_out (rows of Hq * D), the rotated keys and the values into the cache,
// with rope_pair's arithmetic. Every read of the row comes before the barrier and every write
// of q_out after it, so q_out may overlap qkv when there is one row (the launcher's rule).
template <int In, int Hq, int Hkv, int D>
__global__ void qkv_rope_kernel(const float *qkv, const int32_t *pos, RopeTable<D> table,
                                int layer, int capacity, KvPages pages, float *k_cache,
                                float *v_cache, float *q_out) {
  PHIMOE_CUDA_DYNAMIC_SHARED(float, qs); // the row's Hq * D queries
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  constexpr int half = D / 2, q_row = Hq * D, kv_row = Hkv * D;
  const int t = blockIdx.x, p = pos[t], set = table.set(t);
  const float position = static_cast<float>(p);
  const float *x = qkv + static_cast<size_t>(t) * In;
  for (int i = threadIdx.x; i < q_row; i += blockDim.x)
    qs[i] = x[i];
  const int at = kv_slot(pages, capacity, t, p);
  if (at >= 0) { // (rows outside the cache: not written, as rope_kv_write_kernel)
    const size_t dst = (static_cast<size_t>(layer) * capacity + at) * kv_row;
    const float *k = x + q_row, *v = x + q_row + kv_row;
    for (int i = threadIdx.x; i < Hkv * half; i += blockDim.x) {
      const int h = i / half, j = i % half;
      rope_pair(table, set, position, j, k[h * D + j], k[h * D + j + half],
                k_cache[dst + h * D + j], k_cache[dst + h * D + j + half]);
    }
    for (int j = threadIdx.x; j < kv_row; j += blockDim.x)
      v_cache[dst + j] = v[j];
  }
  __syncthreads();
  float *o = q_out + static_cast<size_t>(t) * q_row;
  for (int i = threadIdx.x; i < Hq * half; i += blockDim.x) {
    const int h = i / half, j = i % half;
    rope_pair(table, set, position, j, qs[h * D + j], qs[h * D + j + half], o[h * D + j],
              o[h * D + j + half]);
  }
}

// Head h of row t of a fused q/k/v projection (x: the row) by D / 2 or more threads, a pair
// (j, j + D / 2) each: heads h < Hq rotated into q_out; the others, KV head h - Hq's rotated
// keys and its values into the cache (rows outside the cache: not, as rope_kv_write_kernel).
// Fresh: x was written by other blocks of the same launch (read through L2).
template <int Hq, int Hkv, int D, bool Fresh = false>
__device__ __forceinline__ void rope_qkv_head(const float *x, int t, int h, const int32_t *pos,
                                              const RopeTable<D> &table, int layer,
                                              int capacity, const KvPages &pages,
                                              float *k_cache, float *v_cache, float *q_out) {
  constexpr int half = D / 2, q_row = Hq * D, kv_row = Hkv * D;
  auto at_x = [&](int i) { return Fresh ? __ldcg(x + i) : x[i]; };
  const int p = pos[t], set = table.set(t);
  const float position = static_cast<float>(p);
  if (h < Hq) {
    float *o = q_out + static_cast<size_t>(t) * q_row + h * D;
    for (int j = threadIdx.x; j < half; j += blockDim.x)
      rope_pair(table, set, position, j, at_x(h * D + j), at_x(h * D + j + half), o[j],
                o[j + half]);
    return;
  }
  const int at = kv_slot(pages, capacity, t, p);
  if (at < 0)
    return;
  const int kvh = h - Hq;
  const size_t dst = (static_cast<size_t>(layer) * capacity + at) * kv_row + kvh * D;
  const int k = q_row + kvh * D, v = q_row + kv_row + kvh * D;
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    const float a = at_x(k + j), b = at_x(k + j + half), va = at_x(v + j),
                vb = at_x(v + j + half);
    rope_pair(table, set, position, j, a, b, k_cache[dst + j], k_cache[dst + j + half]);
    v_cache[dst + j] = va;
    v_cache[dst + j + half] = vb;
  }
}

// qkv_rope_kernel's work spread over the heads, where q_out does not overlap qkv: block
// (row t, head h) of D / 2 threads: rope_qkv_head.
// (In decode qkv_rope_kernel is one block that walks the row; this is Hq + Hkv blocks of one
// step each.)
template <int In, int Hq, int Hkv, int D>
__global__ void qkv_rope_heads_kernel(const float *qkv, const int32_t *pos, RopeTable<D> table,
                                      int layer, int capacity, KvPages pages, float *k_cache,
                                      float *v_cache, float *q_out) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  const int t = blockIdx.x;
  rope_qkv_head<Hq, Hkv, D>(qkv + static_cast<size_t>(t) * In, t, blockIdx.y, pos, table, layer,
                            capacity, pages, k_cache, v_cache, q_out);
}

// Writes the k and v rows of this forward at their positions (rows outside the cache: not).
template <int Hkv, int D>
__global__ void kv_write_kernel(const float *k, const float *v, const int32_t *pos, int layer,
                                int capacity, KvPages pages, float *k_cache, float *v_cache) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  constexpr int row = Hkv * D;
  const int t = blockIdx.x, at = kv_slot(pages, capacity, t, pos[t]);
  if (at < 0)
    return;
  const size_t dst = (static_cast<size_t>(layer) * capacity + at) * row;
  for (int j = threadIdx.x; j < row; j += blockDim.x) {
    k_cache[dst + j] = k[static_cast<size_t>(t) * row + j];
    v_cache[dst + j] = v[static_cast<size_t>(t) * row + j];
  }
}

constexpr int kAttnWarps = 4;
constexpr int kAttnUnroll = 4; // positions a warp of attention_partial_kernel has in flight
constexpr int kAttnBlocks = 256; // flash-decoding splits short contexts to about this many blocks
static_assert(64 % (kAttnWarps * kAttnUnroll) == 0, "attention_simt: whole steps per 64");

// Whether this block is the last of the `blocks` blocks that count themselves done on
// *counter (zero before the launch): after the barrier, thread 0 makes the block's writes
// visible device-wide (fence) before it counts; the block that counts last then sees every
// other's (fence, barrier) and sets the counter back to zero for the next launch or graph
// replay. Block-collective: every thread gets the answer. (With one block, no count.)
__device__ __forceinline__ bool last_block_of(int *counter, int blocks) {
  __shared__ int last;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    last = blocks == 1 || atomicAdd(counter, 1) == blocks - 1;
    if (last && blocks > 1) {
      *counter = 0; // (every block has counted)
      __threadfence();
    }
  }
  __syncthreads();
  return last != 0;
}

// Whether ctx has a last_block_of counter for each of `items` rows or (row, head) items.
inline bool has_counters(const Context &ctx, size_t items) {
  return ctx.counters && items <= ctx.counter_ints;
}

// Whether row t (position p) has a place in the cache for every position of its window: as
// kv_slot for p alone, and over a paged cache the whole window [lo, p] (a window with a
// position in no block gives nan, as on the CPU). Block-collective: every thread gets it.
__device__ __forceinline__ bool block_row_mapped(const KvPages &pages, int capacity, int t,
                                                 int p, int window) {
  bool mapped = kv_slot(pages, capacity, t, p) >= 0;
  if (pages.block_table && mapped) { // uniform over the block: its threads share the blocks
    __shared__ int unmapped;
    if (threadIdx.x == 0)
      unmapped = 0;
    __syncthreads();
    const int lo = window > 0 ? max(0, p - window + 1) : 0;
    if (!window_mapped(pages, capacity, t, lo, p, threadIdx.x, blockDim.x))
      unmapped = 1;
    __syncthreads();
    mapped = unmapped == 0;
  }
  return mapped;
}

// Flash-decoding, second half, for head h of row t: merges the (max, sum, acc[D]) of every
// split (item t * Hq + h of `partials`) into out's row t, head h, and where `staged` is not
// null (stage_for) the row's StagedQ4k copy. A row without its window in the cache (mapped
// false) gives nan. Warp-collective: lane i has the columns i, i + 32, ...; the splits' maxima
// and sums are spread over the lanes, the columns' sums run over the splits in order. Reads
// through L2 (__ldcg): in attention_partial_kernel's last block the partials are other
// blocks' writes of the same launch.
template <int Hq, int D>
__device__ __forceinline__ void combine_head(const float *partials, int splits, int t, int h,
                                             bool mapped, float *out, uint32_t *staged) {
  constexpr int per_lane = (D + 31) / 32;
  const int lane = threadIdx.x & 31;
  const size_t item = static_cast<size_t>(t) * Hq + h;
  const float *src = partials + item * splits * (D + 2);
  float y[per_lane];
  if (!mapped) {
    for (int i = 0; i < per_lane; ++i)
      y[i] = NAN;
  } else {
    float mx = -INFINITY;
    for (int s = lane; s < splits; s += 32)
      mx = fmaxf(mx, __ldcg(src + static_cast<size_t>(s) * (D + 2)));
    mx = warp_max(mx);
    float total = 0.0f;
    for (int s = lane; s < splits; s += 32) {
      const float ms = __ldcg(src + static_cast<size_t>(s) * (D + 2));
      if (ms != -INFINITY)
        total += __ldcg(src + static_cast<size_t>(s) * (D + 2) + 1) * expf(ms - mx);
    }
    total = warp_sum(total);
    float acc[per_lane];
    for (int i = 0; i < per_lane; ++i)
      acc[i] = 0.0f;
#pragma unroll 4
    for (int s = 0; s < splits; ++s) {
      const float *part = src + static_cast<size_t>(s) * (D + 2);
      const float ms = __ldcg(part); // (the same for every lane)
      const float w = expf(ms - mx);
#pragma unroll
      for (int i = 0; i < per_lane; ++i) {
        const int d = lane + 32 * i;
        const float a = d < D ? __ldcg(part + 2 + d) : 0.0f;
        if (ms != -INFINITY) // (a split without positions)
          acc[i] += a * w;
      }
    }
    for (int i = 0; i < per_lane; ++i)
      y[i] = acc[i] / total;
  }
  float *o = out + item * D;
#pragma unroll
  for (int i = 0; i < per_lane; ++i) {
    const int d = lane + 32 * i;
    if (d < D)
      o[d] = y[i];
  }
  if constexpr (D % 32 == 0) {
    if (staged) // (lane i holds column i of each of the head's groups of 32)
      for (int i = 0; i < per_lane; ++i)
        stage_q4k_group(staged + static_cast<size_t>(t) * StagedQ4k::words(Hq * D),
                        (h * D) / 32 + i, y[i]);
  }
}

// Flash-decoding, first half: block (row * Hq / G + head group, split) attends, for each of
// its G query heads (G = 1: one head; G = Hq / Hkv: every head of one KV head, whose key and
// value rows are then read once for the group), the split's share of the row's positions
// [lo, p] with an online softmax per warp, merges its warps and writes (max, sum, acc[D]) per
// head to `partials`. A split without positions writes (-inf, 0, 0...). Positions without a
// place in the cache are skipped here (the merge makes such rows nan).
// The second half, the merge of the splits (combine_head), follows in the same launch where
// `counters` is not null (ints zero before the launch, one per block row item; zero after
// it): the item's block that finishes last, as its count says, merges them into `out` (and
// `staged`). Else attention_combine_kernel does it.
template <int Hq, int Hkv, int D, int G>
__global__ void attention_partial_kernel(const float *q, const int32_t *pos, int layer,
                                         int capacity, KvPages pages, const float *k_cache,
                                         const float *v_cache, float scale, int window,
                                         float *partials, int *counters, float *out,
                                         uint32_t *staged) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  static_assert((Hq / Hkv) % G == 0, "attention: a head group shares one KV head");
  constexpr int per_lane = (D + 31) / 32;
  __shared__ float qs[G][D];
  __shared__ float wm[kAttnWarps][G], wl[kAttnWarps][G];
  __shared__ float wacc[kAttnWarps][G][D];
  const int item = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
  const int t = item / (Hq / G), h0 = item % (Hq / G) * G, kvh = h0 / (Hq / Hkv);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  load_then_store<G * D, 32 * kAttnWarps, float>(
      [&](int i) { return q[(static_cast<size_t>(t) * Hq + h0 + i / D) * D + i % D]; },
      [&](int i, float v) { qs[i / D][i % D] = v; });
  __syncthreads();
  const int p = pos[t];
  const bool valid = kv_slot(pages, capacity, t, p) >= 0;
  const int lo = window > 0 ? max(0, p - window + 1) : 0;
  const int len = valid ? p - lo + 1 : 0;
  const int chunk = (len + splits - 1) / splits;
  const int begin = lo + split * chunk, end = min(lo + len, begin + chunk);
  float m[G], l[G], acc[G][per_lane];
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
    for (int i = 0; i < per_lane; ++i)
      acc[g][i] = 0.0f;
  }
  const size_t layer_base = static_cast<size_t>(layer) * capacity;
  // A warp takes positions begin + warp, + kAttnWarps, ... in turn, kAttnUnroll at a time:
  // their key and value rows are loaded together and their scores reduced together (one
  // position at a time, each step would wait for its own loads and shuffles), then the
  // online softmax takes them in order.
  for (int j0 = begin + warp; j0 < end; j0 += kAttnUnroll * kAttnWarps) {
    float kv[kAttnUnroll][per_lane], vv[kAttnUnroll][per_lane], score[kAttnUnroll][G];
    bool live[kAttnUnroll];
#pragma unroll
    for (int u = 0; u < kAttnUnroll; ++u) {
      const int j = j0 + u * kAttnWarps;
      const int slot = j >= end ? -1 : pages.block_table ? kv_slot(pages, capacity, t, j) : j;
      live[u] = slot >= 0;
      const size_t at = ((layer_base + (live[u] ? slot : 0)) * Hkv + kvh) * D;
#pragma unroll
      for (int i = 0; i < per_lane; ++i) {
        const int d = lane + 32 * i;
        kv[u][i] = live[u] && d < D ? k_cache[at + d] : 0.0f;
        vv[u][i] = live[u] && d < D ? v_cache[at + d] : 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < kAttnUnroll; ++u)
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < per_lane; ++i) {
          const int d = lane + 32 * i;
          if (d < D)
            dot += qs[g][d] * kv[u][i];
        }
        score[u][g] = warp_sum(dot) * scale;
      }
#pragma unroll
    for (int u = 0; u < kAttnUnroll; ++u) {
      if (!live[u]) // (uniform over the warp)
        continue;
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float m_new = fmaxf(m[g], score[u][g]);
        const float correction = expf(m[g] - m_new), weight = expf(score[u][g] - m_new);
        l[g] = l[g] * correction + weight;
#pragma unroll
        for (int i = 0; i < per_lane; ++i) {
          const int d = lane + 32 * i;
          acc[g][i] = acc[g][i] * correction + (d < D ? weight * vv[u][i] : 0.0f);
        }
        m[g] = m_new;
      }
    }
  }
  for (int g = 0; g < G; ++g) {
    if (lane == 0) {
      wm[warp][g] = m[g];
      wl[warp][g] = l[g];
    }
    for (int i = 0; i < per_lane; ++i) {
      const int d = lane + 32 * i;
      if (d < D)
        wacc[warp][g][d] = acc[g][i];
    }
  }
  __syncthreads();
  for (int g = 0; g < G; ++g) {
    const size_t head_item = static_cast<size_t>(t) * Hq + h0 + g;
    float *dst = partials + (head_item * splits + split) * (D + 2);
    float mx = -INFINITY;
    for (int w = 0; w < kAttnWarps; ++w)
      mx = fmaxf(mx, wm[w][g]);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float a = 0.0f;
      for (int w = 0; w < kAttnWarps; ++w)
        if (wm[w][g] != -INFINITY)
          a += wacc[w][g][d] * expf(wm[w][g] - mx);
      dst[2 + d] = a;
    }
    if (threadIdx.x == 0) {
      float sum = 0.0f;
      for (int w = 0; w < kAttnWarps; ++w)
        if (wm[w][g] != -INFINITY)
          sum += wl[w][g] * expf(wm[w][g] - mx);
      dst[0] = mx;
      dst[1] = sum;
    }
  }
  if (!counters || !last_block_of(counters + item, splits))
    return;
  const bool mapped = block_row_mapped(pages, capacity, t, p, window);
  for (int g = warp; g < G; g += kAttnWarps)
    combine_head<Hq, D>(partials, splits, t, h0 + g, mapped, out, staged);
}

// A kernel choice that tests force (mode 0 or 1) and the environment can turn off: mode -1
// reads `variable` once (equal to `off`: 0, else 1). Whether the choice is on.
inline bool env_switch(int &mode, const char *variable, const char *off) {
  if (mode < 0) {
    const char *v = std::getenv(variable);
    mode = v && std::string(v) == off ? 0 : 1;
  }
  return mode == 1;
}

// How attention runs its first half where it can group heads: -1 from the environment
// (PHIMOE_CUDA_ATTENTION=per-head keeps a block per query head, a fallback), 0 per head,
// 1 grouped (kernels_test sets it to run both).
inline int &attention_grouping() {
  static int mode = -1;
  return mode;
}

// The query heads a block of attention_partial_kernel takes where it may group them: every
// head of a KV head for groups of 2 to 8 (registers: G * D / 32 accumulators a lane) within
// 40 KiB of shared memory; else 1.
template <int Hq, int Hkv, int D> constexpr int attention_group() {
  constexpr int G = Hq / Hkv;
  return G >= 2 && G <= 8 && G * D * (kAttnWarps + 1) * 4 <= 40 * 1024 ? G : 1;
}

// Whether attention groups the query heads of a KV head in one block.
template <int Hq, int Hkv, int D> inline bool attention_grouped() {
  if constexpr (attention_group<Hq, Hkv, D>() == 1) {
    return false;
  } else {
    return env_switch(attention_grouping(), "PHIMOE_CUDA_ATTENTION", "per-head");
  }
}

// Flash-decoding, second half, as a kernel of its own (PHIMOE_CUDA_COMBINE=kernel, or no
// counters): block (row, group of kAttnWarps heads), a warp per head (combine_head).
template <int Hq, int D>
__global__ void attention_combine_kernel(const float *partials, int splits, const int32_t *pos,
                                         int capacity, KvPages pages, int window, float *out,
                                         uint32_t *staged) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  constexpr int groups = (Hq + kAttnWarps - 1) / kAttnWarps;
  const int t = blockIdx.x / groups;
  const int h = blockIdx.x % groups * kAttnWarps + static_cast<int>(threadIdx.x >> 5);
  const bool mapped = block_row_mapped(pages, capacity, t, pos[t], window);
  if (h < Hq)
    combine_head<Hq, D>(partials, splits, t, h, mapped, out, staged);
}

// Where flash-decoding merges its splits: -1 from the environment (PHIMOE_CUDA_COMBINE=kernel:
// attention_combine_kernel, a launch of its own), 0 that kernel, 1 the last block of
// attention_partial_kernel (kernels_test sets it to run both).
inline int &attention_combine_mode() {
  static int mode = -1;
  return mode;
}

// The expert of the sparsemixer's scan over lanes `candidates` (E <= 32; lane j holds
// s[j]): the first candidate unless another holds a larger value, then the first of those
// with the largest; a nan is never taken except as the first candidate, which then stays (no
// comparison with it holds). Warp-collective; every lane gets it.
__device__ __forceinline__ int warp_scan_argmax(float v, unsigned candidates) {
  const int lane = threadIdx.x & 31, first = __ffs(static_cast<int>(candidates)) - 1;
  const bool nan = v != v;
  const bool first_nan = __shfl_sync(0xffffffffu, static_cast<int>(nan), first) != 0;
  const bool mine = (candidates >> lane & 1u) && !nan;
  float best = mine ? v : -INFINITY;
  int at = mine ? lane : 32; // (after every candidate among equals)
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oa = __shfl_xor_sync(0xffffffffu, at, o);
    if (ov > best || (ov == best && oa < at)) {
      best = ov;
      at = oa;
    }
  }
  return first_nan || at == 32 ? first : at;
}

// sum over j < E of lane j's term, added in order of j (the sequential loop's sum). Every
// lane gets it. Warp-collective.
template <int E> __device__ __forceinline__ float warp_ordered_sum(float term) {
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < E; ++j)
    sum += __shfl_sync(0xffffffffu, term, j);
  return sum;
}

// phimoe_rt::sparsemixer<E> over a warp (E <= 32, s in shared or global memory): the same
// route bit for bit, its two scans and softmax terms spread over the lanes (lane j: expert j)
// and its sums added in the same order (a term it skips is +0 here, which leaves a sum of
// non-negative terms as it is). Thread 0's sequential routing took about 390 instructions on
// sm_90, most of them one after another. Warp-collective; every lane gets the route.
template <int E>
__device__ __forceinline__ phimoe_rt::Route warp_sparsemixer(const float *s, float eps) {
  static_assert(E >= 2 && E <= 32, "warp_sparsemixer: 2 to 32 experts");
  const int lane = threadIdx.x & 31;
  const float threshold = 2.0f * eps, v = lane < E ? s[lane] : 0.0f;
  constexpr unsigned experts = E == 32 ? 0xffffffffu : (1u << E) - 1u;
  // Expert j's softmax term with maximum m, or +0 where the jitter test masks it.
  auto term = [&](float m, bool kept) {
    const float factor = fabsf(v) < m ? m : fabsf(v);
    return kept && !((m - v) / factor > threshold) ? expf(v - m) : 0.0f;
  };
  phimoe_rt::Route r;
  r.i1 = warp_scan_argmax(v, experts);
  const float m1 = __shfl_sync(0xffffffffu, v, r.i1);
  r.w1 = 1.0f / warp_ordered_sum<E>(term(m1, lane < E));
  r.i2 = warp_scan_argmax(v, experts & ~(1u << r.i1));
  const float m2 = __shfl_sync(0xffffffffu, v, r.i2);
  r.w2 = 1.0f / warp_ordered_sum<E>(term(m2, lane < E && lane != r.i1));
  return r;
}

// Router of row t of x (kThreads threads; xs: H + E floats of shared memory): a warp per
// expert logit, then warp 0 routes (up to 32 experts; more: thread 0).
// Routing (phimoe_rt::RouteKind): the sparsemixer, or Mixtral's softmax top-2 (thread
// 0, phimoe_rt::softmax_top2: E compares and one exp).
template <int E, int H, class R,
          phimoe_rt::RouteKind Routing = phimoe_rt::RouteKind::Sparsemixer>
__device__ __forceinline__ void route_row(int t, const float *x, const R *router, float eps,
                                          DeviceRoute *routes, float *xs) {
  float *logits = xs + H;
  stage_row<R, H>(xs, x + static_cast<size_t>(t) * H);
  __syncthreads();
  for (int e = threadIdx.x >> 5; e < E; e += kWarps) {
    const float y = row_dot<R, E, H>(router, e, xs);
    if ((threadIdx.x & 31) == 0)
      logits[e] = y;
  }
  __syncthreads();
  if constexpr (Routing == phimoe_rt::RouteKind::SoftmaxTop2) {
    if (threadIdx.x == 0) {
      const phimoe_rt::Route route = phimoe_rt::softmax_top2<E>(logits);
      routes[t] = DeviceRoute{route.i1, route.i2, route.w1, route.w2};
    }
  } else if constexpr (E <= 32) {
    // transformers' eval-mode sparsemixer: the CPU's code (phimoe_rt::sparsemixer), over a warp.
    if (threadIdx.x < 32) {
      const phimoe_rt::Route route = warp_sparsemixer<E>(logits, eps);
      if (threadIdx.x == 0)
        routes[t] = DeviceRoute{route.i1, route.i2, route.w1, route.w2};
    }
  } else if (threadIdx.x == 0) {
    const phimoe_rt::Route route = phimoe_rt::sparsemixer<E>(logits, eps);
    routes[t] = DeviceRoute{route.i1, route.i2, route.w1, route.w2};
  }
}

// Router: one row per block.
template <int E, int H, class R,
          phimoe_rt::RouteKind Routing = phimoe_rt::RouteKind::Sparsemixer>
__global__ void router_kernel(const float *x, const R *router, float eps, DeviceRoute *routes) {
  PHIMOE_CUDA_DYNAMIC_SHARED(float, xs); // H floats, then E logits
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  route_row<E, H, R, Routing>(blockIdx.x, x, router, eps, routes, xs);
}

// add_layer_norm of a row, then the router on the row it wrote (after a barrier, which makes
// the block's writes visible to the block): layer_norm_kernel's and router_kernel's
// arithmetic in one launch.
template <int H, class W, int E, class R>
__global__ void add_layer_norm_route_kernel(const float *a, const float *b, const W *w,
                                            const W *bias, float eps, float *sum, float *out,
                                            const R *router, float route_eps,
                                            DeviceRoute *routes, uint32_t *staged) {
  __shared__ float part[32];
  PHIMOE_CUDA_DYNAMIC_SHARED(float, xs); // H floats, then E logits
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  layer_norm_row<H, true, W>(blockIdx.x, a, b, w, bias, eps, sum, out, part, staged);
  __syncthreads();
  route_row<E, H, R>(blockIdx.x, out, router, route_eps, routes, xs);
}

// Rows of act per block of gate_up_kernel: whole groups of 32 where it stages act.
template <int I, bool StageAct> __host__ __device__ constexpr int gate_up_rows() {
  return StageAct ? 32 : gemv_rows<I>();
}

// transformers' gelu_new (NewGELUActivation), as phimoe_rt::detail::gelu_tanh computes it.
__device__ __forceinline__ float gelu_tanh(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * (x * x * x))));
}

// act[t][slot][r] = silu(gate_r . x) * (up_r . x) of the slot's expert (read on the device).
// staged: null, or x's StagedQ4k rows (int_input<GU, H>: dp4a). StageAct: also the act rows'
// StagedQ4k copies, row 2t + slot of staged_act, for the down projection.
// Gelu (phixtral's phi-2 MLP experts): gate_up is fc1 [E, I, H] with bias fc1_bias [E, I], and
// act[t][slot][r] = gelu_tanh(fc1_r . x + fc1_bias_r).
template <int E, int H, int I, class GU, bool StageAct, bool Gelu = false, class B1 = float>
__global__ void gate_up_kernel(const float *x, const uint32_t *staged, const GU *gate_up,
                               const DeviceRoute *routes, float *act, uint32_t *staged_act,
                               const B1 *fc1_bias) {
  PHIMOE_CUDA_DYNAMIC_SHARED(float, xs);
  __shared__ float block_act[StageAct ? 32 : 1];
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  const int slot = blockIdx.y, t = blockIdx.z;
  constexpr int RB = gate_up_rows<I, StageAct>();
  const DeviceRoute route = routes[t];
  const size_t e = static_cast<size_t>(slot ? route.i2 : route.i1);
  constexpr long long per_expert = Gelu ? I : 2LL * I;
  constexpr long long rows = static_cast<long long>(E) * per_expert;
  const int first = static_cast<int>(blockIdx.x) * RB, end = min(I, first + RB);
  constexpr int ranges = RowRanges<GU>::count; // (the second span's first issuing thread)
  prefetch_rows(gate_up, rows, H, e * per_expert + first, end - first); // gate (fc1) rows
  if constexpr (!Gelu)
    prefetch_rows(gate_up, rows, H, e * 2 * I + I + first, end - first, ranges); // up rows
  const bool fixed =
      stage_input<GU, H>(xs, x + static_cast<size_t>(t) * H, staged_row<H>(staged, t));
  __syncthreads();
  for (int r = first + static_cast<int>(threadIdx.x >> 5); r < end; r += kWarps) {
    float y;
    if constexpr (Gelu) {
      const size_t row[1] = {e * I + r};
      float f[1];
      rows_dot_input<GU, rows, H, 1>(fixed, gate_up, row, xs, f);
      y = gelu_tanh(f[0] + bias_at(fc1_bias, static_cast<int>(e * I + r)));
    } else {
      // The gate and up rows of r share the input values.
      const size_t pair[2] = {e * 2 * I + r, e * 2 * I + I + r};
      float gu[2];
      rows_dot_input<GU, rows, H, 2>(fixed, gate_up, pair, xs, gu);
      y = gu[0] / (1.0f + expf(-gu[0])) * gu[1];
    }
    if ((threadIdx.x & 31) == 0) {
      act[(static_cast<size_t>(t) * 2 + slot) * I + r] = y;
      if constexpr (StageAct)
        block_act[r - first] = y;
    }
  }
  if constexpr (StageAct) { // the block's 32 act values are one group
    __syncthreads();
    if (staged_act && threadIdx.x < 32)
      stage_q4k_group(staged_act + (static_cast<size_t>(t) * 2 + slot) * StagedQ4k::words(I),
                      first / 32, block_act[threadIdx.x]);
  }
}

// add_layer_norm of the rows a kernel writes, run by the kernel's last block of each row
// (last_block_of on counters[t]): sum = a + the row, out = LayerNorm(sum) with weight w and
// bias, and out's StagedQ4k copy where `staged` is not null (stage_for). W = void: none.
template <class W> struct NormTail {
  const float *a = nullptr;
  const W *w = nullptr, *bias = nullptr;
  float eps = 0.0f;
  float *sum = nullptr, *out = nullptr;
  uint32_t *staged = nullptr;
  int *counters = nullptr;
};

// out[t][r] = w1 * (down_i1[r] . act[t][0]) + w2 * (down_i2[r] . act[t][1]).
// (staged: null, or the act rows' StagedQ4k copies, gate_up_kernel's staged_act: dp4a)
// NW not void: then the add_layer_norm of `tail` on each row of out (in the row's last block).
// down_bias (phixtral's fc2 biases [E, H], or null): each expert's output adds its bias.
template <int E, int H, int I, class DW, class NW = void, class B2 = float>
__global__ void down_kernel(const float *act, const uint32_t *staged, const DW *down,
                            const DeviceRoute *routes, float *out, NormTail<NW> tail,
                            const B2 *down_bias) {
  PHIMOE_CUDA_DYNAMIC_SHARED(float, as); // 2 * I floats
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  const int t = blockIdx.y;
  constexpr int RB = gemv_rows<H>();
  const DeviceRoute route = routes[t];
  constexpr long long rows = static_cast<long long>(E) * H;
  const int first = static_cast<int>(blockIdx.x) * RB, end = min(H, first + RB);
  constexpr int ranges = RowRanges<DW>::count; // (the second span's first issuing thread)
  prefetch_rows(down, rows, I, static_cast<size_t>(route.i1) * H + first, end - first);
  prefetch_rows(down, rows, I, static_cast<size_t>(route.i2) * H + first, end - first, ranges);
  const bool fixed = stage_input<DW, I>(as, act + static_cast<size_t>(t) * 2 * I,
                                        staged_row<I>(staged, 2 * static_cast<size_t>(t)));
  stage_input<DW, I>(as + I, act + static_cast<size_t>(t) * 2 * I + I,
                     staged_row<I>(staged, 2 * static_cast<size_t>(t) + 1));
  __syncthreads();
  for (int r = first + 2 * static_cast<int>(threadIdx.x >> 5); r < end; r += 2 * kWarps) {
    const bool pair = r + 1 < end;
    const size_t r2 = pair ? r + 1 : r;
    const size_t e1 = static_cast<size_t>(route.i1) * H, e2 = static_cast<size_t>(route.i2) * H;
    const size_t rows1[2] = {e1 + r, e1 + r2}, rows2[2] = {e2 + r, e2 + r2};
    float y1[2], y2[2];
    rows_dot_input<DW, rows, I, 2>(fixed, down, rows1, as, y1);
    rows_dot_input<DW, rows, I, 2>(fixed, down, rows2, as + I, y2);
    if ((threadIdx.x & 31) == 0) {
      if (down_bias) {
        for (int k = 0; k < (pair ? 2 : 1); ++k) {
          y1[k] += bias_at(down_bias, static_cast<int>(e1 + r + k));
          y2[k] += bias_at(down_bias, static_cast<int>(e2 + r + k));
        }
      }
      out[static_cast<size_t>(t) * H + r] = route.w1 * y1[0] + route.w2 * y2[0];
      if (pair)
        out[static_cast<size_t>(t) * H + r + 1] = route.w1 * y1[1] + route.w2 * y2[1];
    }
  }
  if constexpr (!std::is_void<NW>::value) {
    if (!last_block_of(tail.counters + t, static_cast<int>(gridDim.x)))
      return;
    __shared__ float part[32];
    layer_norm_row<H, true, NW, true>(t, tail.a, out, tail.w, tail.bias, tail.eps, tail.sum,
                                      tail.out, part, tail.staged);
  }
}

// What the q/k/v projection's GEMV does with each head of its rows in the head's last block
// (gemv_qkv_rope_kernel): qkv_rope_kv_write's, with a counter per (row, query or KV head).
template <int D> struct QkvRopeTail {
  RopeTable<D> table;
  const int32_t *pos = nullptr;
  int layer = 0, capacity = 0;
  KvPages pages;
  float *k_cache = nullptr, *v_cache = nullptr, *q_out = nullptr;
  int *counters = nullptr;
};

// gemv_kernel of a fused q/k/v projection (N = (Hq + 2 Hkv) D outputs, D a multiple of the
// block's rows), then in the last block of each query head's rows, or of a KV head's keys and
// values, that head's RoPE and KV write (rope_qkv_head on the rows those blocks wrote).
template <int N, int K, class W, class B, int Hq, int Hkv, int D>
__global__ void gemv_qkv_rope_kernel(const float *x, const uint32_t *staged, const W *w,
                                     const B *bias, float *out, QkvRopeTail<D> tail) {
  PHIMOE_CUDA_DYNAMIC_SHARED(float, xs);
  gemv_prefetch<N, K>(w);
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  constexpr int RB = gemv_rows<N>();
  static_assert(N == (Hq + 2 * Hkv) * D && D % RB == 0,
                "gemv_qkv_rope_kernel: a head's rows across blocks");
  gemv_block<N, K>(x, staged, w, bias, out, xs);
  // The unit of this block's head: query head h, or KV head u - Hq with its keys and values
  // (the last of the blocks of both runs it).
  const int t = blockIdx.y, h = static_cast<int>(blockIdx.x) * RB / D;
  const int u = h < Hq ? h : Hq + (h - Hq) % Hkv;
  if (!last_block_of(tail.counters + static_cast<size_t>(t) * (Hq + Hkv) + u,
                     h < Hq ? D / RB : 2 * D / RB))
    return;
  rope_qkv_head<Hq, Hkv, D, true>(out + static_cast<size_t>(t) * N, t, u, tail.pos, tail.table,
                                  tail.layer, tail.capacity, tail.pages, tail.k_cache,
                                  tail.v_cache, tail.q_out);
}

// The router of the rows a NormTail normed, run after the norm by the same block: routes[t]
// of the sparsemixer over E experts (E = 0: none).
template <class R> struct RouteTail {
  const R *router = nullptr;
  float eps = 0.0f;
  DeviceRoute *routes = nullptr;
};

// gemv_kernel, then in the last block of each row the add_layer_norm of `tail` on that row of
// out (and with E > 0 the router of `route` on the normed row): o_proj's GEMV with the norm
// before the MoE. xs: max(K, N + E) floats.
template <int N, int K, class W, class B, class NW, int E, class R>
__global__ void gemv_norm_kernel(const float *x, const uint32_t *staged, const W *w,
                                 const B *bias, float *out, NormTail<NW> tail,
                                 RouteTail<R> route) {
  PHIMOE_CUDA_DYNAMIC_SHARED(float, xs);
  gemv_prefetch<N, K>(w);
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  gemv_block<N, K>(x, staged, w, bias, out, xs);
  const int t = blockIdx.y;
  if (!last_block_of(tail.counters + t, static_cast<int>(gridDim.x)))
    return;
  __shared__ float part[32];
  layer_norm_row<N, true, NW, true>(t, tail.a, out, tail.w, tail.bias, tail.eps, tail.sum,
                                    tail.out, part, tail.staged);
  if constexpr (E > 0) {
    __syncthreads(); // (the block's normed row, and xs free again)
    route_row<E, N, R>(t, tail.out, route.router, route.eps, route.routes, xs);
  }
}

} // namespace detail
} // namespace phimoe_cuda

// Tensor-core GEMM, grouped-expert MoE and attention of prefill (they use Elem, bias_at,
// blocks_for).
#include "phimoe_cuda/gemm_tc.cuh"
#include "phimoe_cuda/attention_tc.cuh"
#include "phimoe_cuda/moe_grouped.cuh"

namespace phimoe_cuda {

// ---------------------------------------------------------------------------------------
// Launchers: the CPU kernels' signatures (phimoe_rt/kernels.h), on device pointers.

template <class T> inline T *last_rows_of(T *x, int n, int rows, int width) {
  return x + static_cast<size_t>(n - rows) * width;
}
template <int Width> inline float *last_rows(float *x, int n, int rows) {
  return last_rows_of(x, n, rows, Width);
}

template <int V, int H, class W>
void embed(Context &ctx, const int32_t *ids, int n, const W *table, float *out) {
  if (n <= 0)
    return;
  PHIMOE_CUDA_LAUNCH(n, detail::kThreads, 0, ctx.stream, detail::embed_kernel<V, H, W>)
  (ids, table, out);
  PHIMOE_CUDA_CHECK_LAUNCH();
}

namespace detail {
// Whether producers stage q4_K GEMV inputs (stage_for, the MoE's act rows):
// PHIMOE_CUDA_DP4A=0 keeps the float GEMVs, to compare.
inline bool dp4a_enabled() {
  static int mode = -1;
  return env_switch(mode, "PHIMOE_CUDA_DP4A", "0");
}

// The hand-over of fixed-point rows from a producer to the GEMV of the next launch, whose
// weight is Next (phimoe-lower-to-emitc{target=cuda} names Next where the op that reads a
// producer's rows is next and has q4_K weights). The producer's launcher takes the buffer
// its kernel stages `n` rows of K values of `out` into: ctx.staged, or null where Next's GEMV
// reads floats, the rows are not decode's or do not fit (then nothing is handed over).
template <class Next, int K> uint32_t *stage_for(Context &ctx, const float *out, int n) {
  ctx.staged_of = nullptr;
  if constexpr (!std::is_void<Next>::value) {
    if constexpr (int_input<Next, K>()) {
      if (n > kGemvMaxRows || !ctx.staged || !dp4a_enabled() ||
          static_cast<size_t>(n) * StagedQ4k::words(K) > ctx.staged_words)
        return nullptr;
      ctx.staged_of = out;
      ctx.staged_n = n;
      ctx.staged_k = K;
      return ctx.staged;
    }
  }
  return nullptr;
}
// The consumer's side: x's staged rows, if the last producer staged exactly these (n rows of
// K values of x) for a W that takes them; null otherwise. Either way the hand-over ends.
template <class W, int K> const uint32_t *staged_input(Context &ctx, const float *x, int n) {
  const bool mine = ctx.staged_of == x && ctx.staged_n == n && ctx.staged_k == K;
  ctx.staged_of = nullptr;
  if constexpr (int_input<W, K>())
    return mine ? ctx.staged : nullptr; // (stage_for staged only decode rows)
  return nullptr;
}
} // namespace detail

// Next: the storage of the weight of the GEMV that reads `out` next, if phimoe-lower-to-emitc
// knows it (detail::stage_for).
template <int H, class Next = void, class W>
void layer_norm(Context &ctx, const float *x, int n, const W *w, const W *b, float eps,
                float *out) {
  if (n <= 0)
    return;
  uint32_t *staged = detail::stage_for<Next, H>(ctx, out, n);
  PHIMOE_CUDA_LAUNCH(n, detail::kThreads, 0, ctx.stream, detail::layer_norm_kernel<H, false, W>)
  (x, nullptr, w, b, eps, nullptr, out, staged);
  PHIMOE_CUDA_CHECK_LAUNCH();
}

template <int H, class Next = void, class W>
void add_layer_norm(Context &ctx, const float *a, const float *b, int n, const W *w,
                    const W *bias, float eps, float *sum, float *out) {
  if (n <= 0)
    return;
  uint32_t *staged = detail::stage_for<Next, H>(ctx, out, n);
  PHIMOE_CUDA_LAUNCH(n, detail::kThreads, 0, ctx.stream, detail::layer_norm_kernel<H, true, W>)
  (a, b, w, bias, eps, sum, out, staged);
  PHIMOE_CUDA_CHECK_LAUNCH();
}

// Mixtral's RMSNorm (weight only): layer_norm's kernel without the mean and the bias.
template <int H, class Next = void, class W>
void rms_norm(Context &ctx, const float *x, int n, const W *w, float eps, float *out) {
  if (n <= 0)
    return;
  uint32_t *staged = detail::stage_for<Next, H>(ctx, out, n);
  PHIMOE_CUDA_LAUNCH(n, detail::kThreads, 0, ctx.stream,
                     detail::layer_norm_kernel<H, false, W, true>)
  (x, nullptr, w, static_cast<const W *>(nullptr), eps, nullptr, out, staged);
  PHIMOE_CUDA_CHECK_LAUNCH();
}

// sum = a + b; out = rms_norm(sum). sum may alias a.
template <int H, class Next = void, class W>
void add_rms_norm(Context &ctx, const float *a, const float *b, int n, const W *w, float eps,
                  float *sum, float *out) {
  if (n <= 0)
    return;
  uint32_t *staged = detail::stage_for<Next, H>(ctx, out, n);
  PHIMOE_CUDA_LAUNCH(n, detail::kThreads, 0, ctx.stream,
                     detail::layer_norm_kernel<H, true, W, true>)
  (a, b, w, static_cast<const W *>(nullptr), eps, sum, out, staged);
  PHIMOE_CUDA_CHECK_LAUNCH();
}

// add_layer_norm, then the sparsemixer router of the MoE that reads its output, whose routes
// (ctx.routes) moe_sparsemixer<..., true> then takes: phimoe-lower-to-emitc{target=cuda} emits
// the pair where the MoE is the next op.
template <int H, int E, class Next = void, class W, class R>
void add_layer_norm_route(Context &ctx, const float *a, const float *b, int n, const W *w,
                          const W *bias, float eps, float *sum, float *out, const R *router,
                          float route_eps) {
  if (n <= 0)
    return;
  uint32_t *staged = detail::stage_for<Next, H>(ctx, out, n);
  constexpr size_t smem = sizeof(float) * (H + E);
  static bool configured =
      (detail::allow_shared(detail::add_layer_norm_route_kernel<H, W, E, R>, smem), true);
  (void)configured;
  PHIMOE_CUDA_LAUNCH(n, detail::kThreads, smem, ctx.stream,
                     detail::add_layer_norm_route_kernel<H, W, E, R>)
  (a, b, w, bias, eps, sum, out, router, route_eps, ctx.routes, staged);
  PHIMOE_CUDA_CHECK_LAUNCH();
}

namespace detail {
// That the KV cache has Hkv heads of D and a layer `layer` (else a phimoe-bin bug).
template <int Hkv, int D>
inline void check_cache_layer(const Context &ctx, int layer, const char *launcher) {
  if (ctx.kv_heads != Hkv || ctx.head_dim != D || layer < 0 || layer >= ctx.layers)
    throw std::runtime_error(std::string(launcher) +
                             ": the KV cache has another shape than layer " +
                             std::to_string(layer) + " (a phimoe-bin bug)");
}
} // namespace detail

template <int N, int K, class W, class B>
void linear(Context &ctx, const float *x, int n, const W *w, const B *bias, float *out) {
  static_assert(N > 0 && K > 0, "linear: empty shape");
  if (n <= 0)
    return;
  const uint32_t *staged = detail::staged_input<W, K>(ctx, x, n);
  if (n <= detail::kGemvMaxRows) {
    constexpr size_t smem = sizeof(float) * K;
    static bool configured = (detail::allow_shared(detail::gemv_kernel<N, K, W, B>, smem), true);
    (void)configured;
    dim3 grid(detail::blocks_for(N, detail::gemv_rows<N>()), n);
    PHIMOE_CUDA_LAUNCH(grid, detail::kThreads, smem, ctx.stream, detail::gemv_kernel<N, K, W, B>)
    (x, staged, w, bias, out);
  } else if constexpr (detail::tc_supported<W, K>()) {
    detail::gemm_tc<N, K, W, B>(ctx, x, n, w, bias, out); // tensor cores (gemm_tc.cuh)
  } else {
    dim3 grid(detail::blocks_for(N, 64), detail::blocks_for(n, 32));
    PHIMOE_CUDA_LAUNCH(grid, 256, 0, ctx.stream, detail::gemm_kernel<N, K, W, B>)
    (x, n, w, bias, out);
  }
  PHIMOE_CUDA_CHECK_LAUNCH();
}

namespace detail {
// Whether the add_layer_norms after a MoE and after a linear layer run in the last blocks of
// the kernel before (its down projection, its GEMV): -1 from the environment
// (PHIMOE_CUDA_NORM=apart: launches of their own), 0 apart, 1 in the last blocks
// (kernels_test sets it to run both).
inline int &norm_tail_mode() {
  static int mode = -1;
  return mode;
}

// linear<N, K>(x -> out), then add_layer_norm<N, Next> of norm.a and out's rows (E > 0:
// add_layer_norm_route<N, E, Next> with route's router): in decode, where ctx has the
// counters, in the GEMV's last block of each row; else launches of their own.
template <int N, int K, int E, class Next, class W, class B, class NW, class R>
void linear_then_norm(Context &ctx, const float *x, int n, const W *w, const B *bias,
                      float *out, NormTail<NW> norm, RouteTail<R> route) {
  static_assert(N > 0 && K > 0, "linear: empty shape");
  if (n <= 0)
    return;
  if (n <= kGemvMaxRows && has_counters(ctx, static_cast<size_t>(n)) &&
      env_switch(norm_tail_mode(), "PHIMOE_CUDA_NORM", "apart")) {
    constexpr size_t smem = sizeof(float) * (K > N + E ? K : N + E);
    static bool configured =
        (allow_shared(gemv_norm_kernel<N, K, W, B, NW, E, R>, smem), true);
    (void)configured;
    const uint32_t *staged = staged_input<W, K>(ctx, x, n);
    // The norm of row t writes ctx.staged's row t while the GEMV blocks of the other rows
    // may still read theirs: rows of the same width, or one row only.
    norm.staged = N == K || n == 1 ? stage_for<Next, N>(ctx, norm.out, n) : nullptr;
    norm.counters = ctx.counters;
    route.routes = ctx.routes;
    dim3 grid(blocks_for(N, gemv_rows<N>()), n);
    PHIMOE_CUDA_LAUNCH(grid, kThreads, smem, ctx.stream, gemv_norm_kernel<N, K, W, B, NW, E, R>)
    (x, staged, w, bias, out, norm, route);
    PHIMOE_CUDA_CHECK_LAUNCH();
    return;
  }
  linear<N, K>(ctx, x, n, w, bias, out);
  if constexpr (E > 0)
    add_layer_norm_route<N, E, Next>(ctx, norm.a, out, n, norm.w, norm.bias, norm.eps, norm.sum,
                                     norm.out, route.router, route.eps);
  else
    add_layer_norm<N, Next>(ctx, norm.a, out, n, norm.w, norm.bias, norm.eps, norm.sum,
                            norm.out);
}
} // namespace detail

// linear<N, K> into out, then add_layer_norm<N, Next>(ctx, a, out, n, w, bias, eps, sum,
// norm_out): in decode the GEMV's last block of each row runs the norm (one launch fewer;
// PHIMOE_CUDA_NORM=apart keeps it a launch of its own). phimoe-lower-to-emitc{target=cuda}
// emits it where the norm is the linear layer's next op (o_proj, then the residual add).
template <int N, int K, class Next = void, class W, class B, class NW>
void linear_add_layer_norm(Context &ctx, const float *x, int n, const W *w, const B *bias,
                           float *out, const float *a, const NW *nw, const NW *nbias, float eps,
                           float *sum, float *norm_out) {
  detail::linear_then_norm<N, K, 0, Next>(ctx, x, n, w, bias, out,
                                          detail::NormTail<NW>{a, nw, nbias, eps, sum, norm_out},
                                          detail::RouteTail<float>{});
}

// linear_add_layer_norm, with the router of the sparsemixer MoE that reads the normed rows
// after the norm (add_layer_norm_route's routes, which moe_sparsemixer<..., true> takes).
template <int N, int K, int E, class Next = void, class W, class B, class NW, class R>
void linear_add_layer_norm_route(Context &ctx, const float *x, int n, const W *w,
                                 const B *bias, float *out, const float *a, const NW *nw,
                                 const NW *nbias, float eps, float *sum, float *norm_out,
                                 const R *router, float route_eps) {
  static_assert(E >= 2, "linear_add_layer_norm_route: at least two experts");
  detail::linear_then_norm<N, K, E, Next>(
      ctx, x, n, w, bias, out, detail::NormTail<NW>{a, nw, nbias, eps, sum, norm_out},
      detail::RouteTail<R>{router, route_eps, nullptr});
}

template <int In, int Offset, int Width>
void copy_cols(Context &ctx, const float *x, int n, float *out) {
  static_assert(Offset >= 0 && Width > 0 && Offset + Width <= In, "copy_cols: out of range");
  if (n <= 0)
    return;
  const int blocks = detail::blocks_for(static_cast<long long>(n) * Width, 256);
  PHIMOE_CUDA_LAUNCH(blocks < 4096 ? blocks : 4096, 256, 0, ctx.stream,
                     detail::copy_cols_kernel<In, Offset, Width>)
  (x, n, out);
  PHIMOE_CUDA_CHECK_LAUNCH();
}

// copy_cols of three consecutive column ranges, [0, W0), [W0, W0 + W1), [W0 + W1, ... + W2),
// in one kernel (phimoe-lower-to-emitc{target=cuda} emits it for a three-way split).
template <int In, int W0, int W1, int W2>
void split_cols(Context &ctx, const float *x, int n, float *o0, float *o1, float *o2) {
  static_assert(W0 > 0 && W1 > 0 && W2 > 0 && W0 + W1 + W2 <= In, "split_cols: out of range");
  if (n <= 0)
    return;
  const int blocks = detail::blocks_for(static_cast<long long>(n) * (W0 + W1 + W2), 256);
  PHIMOE_CUDA_LAUNCH(blocks < 4096 ? blocks : 4096, 256, 0, ctx.stream,
                     detail::split_cols_kernel<In, W0, W1, W2>)
  (x, n, o0, o1, o2);
  PHIMOE_CUDA_CHECK_LAUNCH();
}

namespace detail {
// Both LongRoPE sets as the kernels take them, and which one each row uses: the forward's
// (ctx.rope_long), or each row's (ctx.pages.row_long) in serve's batches.
template <int D> RopeTable<D> rope_table(const Context &ctx, const phimoe_rt::RopeParams &p) {
  static_assert(D % 2 == 0 && D <= 512, "rope: head dimension");
  RopeTable<D> table;
  const float *factors[2] = {p.short_factor, p.long_factor};
  table.mscale[0] = p.short_mscale;
  table.mscale[1] = p.long_mscale;
  for (int set = 0; set < 2; ++set)
    for (int i = 0; i < D / 2; ++i)
      table.inv_freq[set][i] =
          1.0f / (factors[set][i] * std::pow(p.theta, static_cast<float>(2 * i) / D));
  table.row_long = ctx.pages.block_table ? ctx.pages.row_long : nullptr;
  table.fixed = ctx.rope_long ? 1 : 0;
  return table;
}
} // namespace detail

template <int Heads, int D>
void rope(Context &ctx, const float *x, int n, const int32_t *pos, const phimoe_rt::RopeParams &p,
          float *out) {
  if (n <= 0)
    return;
  PHIMOE_CUDA_LAUNCH(n, 128, 0, ctx.stream, detail::rope_kernel<Heads, D>)
  (x, pos, detail::rope_table<D>(ctx, p), out);
  PHIMOE_CUDA_CHECK_LAUNCH();
}

// Partial rotary (phi-2): the first R of each head's D lanes rotate, the others pass through.
template <int Heads, int D, int R>
void rope_partial(Context &ctx, const float *x, int n, const int32_t *pos,
                  const phimoe_rt::RopeParams &p, float *out) {
  if (n <= 0)
    return;
  PHIMOE_CUDA_LAUNCH(n, 128, 0, ctx.stream, detail::rope_kernel<Heads, D, R>)
  (x, pos, detail::rope_table<R>(ctx, p), out);
  PHIMOE_CUDA_CHECK_LAUNCH();
}

// out = a + b over n rows of W (phi-2's parallel block adds attention and MoE first).
template <int W> void add(Context &ctx, const float *a, const float *b, int n, float *out) {
  if (n <= 0)
    return;
  PHIMOE_CUDA_LAUNCH(n, 256, 0, ctx.stream, detail::add_kernel<W>)(a, b, out);
  PHIMOE_CUDA_CHECK_LAUNCH();
}

// The keys' RoPE fused with the KV-cache write of layer `layer` (k unrotated, v as is); the
// attention of that layer then runs with KvWritten. phimoe-lower-to-emitc{target=cuda} emits
// it where a rope's only use is an attention's keys.
template <int Hkv, int D>
void rope_kv_write(Context &ctx, const float *k, const float *v, int n, const int32_t *pos,
                   const phimoe_rt::RopeParams &p, int layer) {
  if (n <= 0)
    return;
  detail::check_cache_layer<Hkv, D>(ctx, layer, "rope_kv_write");
  PHIMOE_CUDA_LAUNCH(n, 128, 0, ctx.stream, detail::rope_kv_write_kernel<Hkv, D>)
  (k, v, pos, detail::rope_table<D>(ctx, p), layer, ctx.capacity, ctx.pages, ctx.k_cache,
   ctx.v_cache);
  PHIMOE_CUDA_CHECK_LAUNCH();
}

// split_cols of a fused q/k/v projection, rope of its queries into q_out and rope_kv_write of
// its keys and values, where nothing else runs between them (phimoe-lower-to-emitc{target=cuda}
// emits it for that sequence): one kernel, qkv_rope_heads_kernel (a block per row and head)
// where q_out does not overlap qkv (Disjoint: the lowering ruled it out from the memory plan),
// else qkv_rope_kernel (a block per row, which reads its row before writing any of it) for one
// row; for several rows that may overlap, where a block could overwrite another row before
// that block has read it, the three kernels, through the split buffers q_split, k_split,
// v_split.
template <int In, int Hq, int Hkv, int D, bool Disjoint>
void qkv_rope_kv_write(Context &ctx, const float *qkv, int n, const int32_t *pos,
                       const phimoe_rt::RopeParams &p, int layer, float *q_split,
                       float *k_split, float *v_split, float *q_out) {
  static_assert(Hq > 0 && Hkv > 0 && D % 2 == 0 && (Hq + 2 * Hkv) * D <= In,
                "qkv_rope_kv_write: the q/k/v row is too short");
  if (n <= 0)
    return;
  if (n > 1 && !Disjoint) {
    split_cols<In, Hq * D, Hkv * D, Hkv * D>(ctx, qkv, n, q_split, k_split, v_split);
    rope<Hq, D>(ctx, q_split, n, pos, p, q_out);
    rope_kv_write<Hkv, D>(ctx, k_split, v_split, n, pos, p, layer);
    return;
  }
  detail::check_cache_layer<Hkv, D>(ctx, layer, "qkv_rope_kv_write");
  if constexpr (Disjoint) {
    constexpr int threads = D / 2 < 256 ? D / 2 : 256;
    PHIMOE_CUDA_LAUNCH(dim3(n, Hq + Hkv), threads, 0, ctx.stream,
                       detail::qkv_rope_heads_kernel<In, Hq, Hkv, D>)
    (qkv, pos, detail::rope_table<D>(ctx, p), layer, ctx.capacity, ctx.pages, ctx.k_cache,
     ctx.v_cache, q_out);
    PHIMOE_CUDA_CHECK_LAUNCH();
    return;
  }
  constexpr size_t smem = sizeof(float) * Hq * D;
  static bool configured =
      (detail::allow_shared(detail::qkv_rope_kernel<In, Hq, Hkv, D>, smem), true);
  (void)configured;
  PHIMOE_CUDA_LAUNCH(n, 256, smem, ctx.stream, detail::qkv_rope_kernel<In, Hq, Hkv, D>)
  (qkv, pos, detail::rope_table<D>(ctx, p), layer, ctx.capacity, ctx.pages, ctx.k_cache,
   ctx.v_cache, q_out);
  PHIMOE_CUDA_CHECK_LAUNCH();
}

namespace detail {
// Whether the q/k/v projection's GEMV rotates the heads and writes the KV cache in its last
// blocks: -1 from the environment (PHIMOE_CUDA_QKV_ROPE=apart: qkv_rope_kv_write's launch of
// its own), 0 apart, 1 in the last blocks (kernels_test sets it to run both).
inline int &qkv_tail_mode() {
  static int mode = -1;
  return mode;
}
} // namespace detail

// linear<N, K> of a fused q/k/v projection into qkv, then qkv_rope_kv_write<N, Hq, Hkv, D,
// true>(ctx, qkv, n, pos, p, layer, ..., q_out) (q_out apart from qkv and from x): in decode
// the GEMV's last block of each head rotates it (queries to q_out, keys into the cache) or
// writes its values into the cache (one launch fewer; PHIMOE_CUDA_QKV_ROPE=apart keeps
// qkv_rope_kv_write a launch of its own). phimoe-lower-to-emitc{target=cuda} emits it where
// the split of the projection and both RoPEs follow it.
template <int N, int K, int Hq, int Hkv, int D, class W, class B>
void linear_qkv_rope_kv_write(Context &ctx, const float *x, int n, const W *w, const B *bias,
                              float *qkv, const int32_t *pos, const phimoe_rt::RopeParams &p,
                              int layer, float *q_out) {
  static_assert(N == (Hq + 2 * Hkv) * D, "linear_qkv_rope_kv_write: N is not the q/k/v heads");
  if (n <= 0)
    return;
  if constexpr (D % detail::gemv_rows<N>() == 0) {
    if (n <= detail::kGemvMaxRows &&
        detail::has_counters(ctx, static_cast<size_t>(n) * (Hq + Hkv)) &&
        detail::env_switch(detail::qkv_tail_mode(), "PHIMOE_CUDA_QKV_ROPE", "apart")) {
      detail::check_cache_layer<Hkv, D>(ctx, layer, "linear_qkv_rope_kv_write");
      constexpr size_t smem = sizeof(float) * K;
      static bool configured =
          (detail::allow_shared(detail::gemv_qkv_rope_kernel<N, K, W, B, Hq, Hkv, D>, smem),
           true);
      (void)configured;
      const uint32_t *staged = detail::staged_input<W, K>(ctx, x, n);
      detail::QkvRopeTail<D> tail;
      tail.table = detail::rope_table<D>(ctx, p);
      tail.pos = pos;
      tail.layer = layer;
      tail.capacity = ctx.capacity;
      tail.pages = ctx.pages;
      tail.k_cache = ctx.k_cache;
      tail.v_cache = ctx.v_cache;
      tail.q_out = q_out;
      tail.counters = ctx.counters;
      dim3 grid(detail::blocks_for(N, detail::gemv_rows<N>()), n);
      PHIMOE_CUDA_LAUNCH(grid, detail::kThreads, smem, ctx.stream,
                         detail::gemv_qkv_rope_kernel<N, K, W, B, Hq, Hkv, D>)
      (x, staged, w, bias, qkv, tail);
      PHIMOE_CUDA_CHECK_LAUNCH();
      return;
    }
  }
  linear<N, K>(ctx, x, n, w, bias, qkv);
  qkv_rope_kv_write<N, Hq, Hkv, D, true>(ctx, qkv, n, pos, p, layer, nullptr, nullptr, nullptr,
                                         q_out);
}

namespace detail {
// Flash-decoding (the SIMT kernels) of rows [0, n) of q, pos and out, whose sequences and
// LongRoPE sets `pages` gives from its row 0 on.
template <int Hq, int Hkv, int D>
void attention_simt(Context &ctx, const float *q, int n, const int32_t *pos, const KvPages &pages,
                    int layer, float scale, int window, float *out, uint32_t *staged = nullptr) {
  // A block per KV head's group of query heads where that fits, else a block per head.
  constexpr int G = attention_group<Hq, Hkv, D>();
  const bool grouped = attention_grouped<Hq, Hkv, D>();
  // Splits: one per 64 positions of seq_end (b of them), and where that gives fewer than
  // kAttnBlocks blocks, more, down to 16 positions a split (a block's step: kAttnWarps warps
  // of kAttnUnroll positions); as many as the partials buffer holds, at most 1024. A
  // function of b alone: a decode graph, captured at the end of its 64 positions, and an
  // eager step in them split alike.
  const size_t per_split = static_cast<size_t>(n) * Hq * (D + 2);
  const long long b = (ctx.seq_end + 63) / 64;
  const long long items = static_cast<long long>(n) * (grouped ? Hq / G : Hq);
  const long long fill = (kAttnBlocks + items - 1) / items;
  const long long most = b * (64 / (kAttnWarps * kAttnUnroll));
  long long splits = most < fill ? most : fill;
  splits = splits > b ? splits : b;
  const long long room = static_cast<long long>(ctx.attn_partial_floats / per_split);
  splits = splits < room ? splits : room;
  splits = splits < 1024 ? splits : 1024;
  if (splits < 1)
    throw std::runtime_error("attention: no room for the partial results (a phimoe-bin bug)");
  auto attention_partial =
      grouped ? attention_partial_kernel<Hq, Hkv, D, G> : attention_partial_kernel<Hq, Hkv, D, 1>;
  // The merge in the first half's last blocks where the context has a counter for every
  // item (one launch fewer), else a kernel of its own.
  const bool fused = has_counters(ctx, static_cast<size_t>(items)) &&
                     env_switch(attention_combine_mode(), "PHIMOE_CUDA_COMBINE", "kernel");
  dim3 grid(static_cast<unsigned>(items), static_cast<unsigned>(splits));
  PHIMOE_CUDA_LAUNCH(grid, 32 * kAttnWarps, 0, ctx.stream, attention_partial)
  (q, pos, layer, ctx.capacity, pages, ctx.k_cache, ctx.v_cache, scale, window,
   ctx.attn_partials, fused ? ctx.counters : nullptr, out, staged);
  PHIMOE_CUDA_CHECK_LAUNCH();
  if (fused)
    return;
  constexpr int groups = (Hq + kAttnWarps - 1) / kAttnWarps;
  PHIMOE_CUDA_LAUNCH(n * groups, 32 * kAttnWarps, 0, ctx.stream, attention_combine_kernel<Hq, D>)
  (ctx.attn_partials, static_cast<int>(splits), pos, ctx.capacity, pages, window, out, staged);
  PHIMOE_CUDA_CHECK_LAUNCH();
}

// `pages` for the rows from `first` on.
inline KvPages pages_from(const KvPages &pages, int first) {
  KvPages sub = pages;
  if (sub.block_table) {
    sub.row_slot += first;
    sub.row_long += first;
  }
  return sub;
}
} // namespace detail

// Writes k, v into the cache (unless KvWritten: rope_kv_write did), then attends: query row
// i (position pos[i]) to the positions [max(0, pos[i]-window+1), pos[i]] of layer `layer`,
// split over the context (flash-decoding) when it is long. Prefill chunks of kFaMinRows rows
// or more run on tensor cores (attention_tc.cuh): a whole forward of one sequence, or in
// serve's batches the runs of one sequence's rows that ctx.pages.runs names.
// Next: as for layer_norm (the flash-decoding path stages its rows for the GEMV).
template <int Hq, int Hkv, int D, bool KvWritten = false, class Next = void>
void attention(Context &ctx, const float *q, const float *k, const float *v, int n,
               const int32_t *pos, int layer, float scale, int window, float *out) {
  static_assert(Hkv > 0 && Hq % Hkv == 0, "attention: Hq must be a multiple of Hkv");
  ctx.staged_of = nullptr;
  if (n <= 0)
    return;
  detail::check_cache_layer<Hkv, D>(ctx, layer, "attention");
  if constexpr (!KvWritten) {
    PHIMOE_CUDA_LAUNCH(n, 256, 0, ctx.stream, detail::kv_write_kernel<Hkv, D>)
    (k, v, pos, layer, ctx.capacity, ctx.pages, ctx.k_cache, ctx.v_cache);
    PHIMOE_CUDA_CHECK_LAUNCH();
  }
  const size_t row = static_cast<size_t>(Hq) * D;
  if constexpr (detail::fa_supported<D>()) {
    if (n >= detail::kFaMinRows && detail::attention_tc_enabled()) {
      if (!ctx.pages.block_table) { // one sequence
        detail::attention_tc<Hq, Hkv, D>(ctx.stream, q, n, pos, layer, ctx.capacity, ctx.pages,
                                         ctx.k_cache, ctx.v_cache, scale, window, out);
        PHIMOE_CUDA_CHECK_LAUNCH();
        return;
      }
      // Rows of several sequences: the long runs of one on tensor cores, the rows between them
      // on the SIMT kernels.
      int done = 0;
      for (int r = 0; r < ctx.pages.run_count; ++r) {
        const int first = ctx.pages.runs[2 * r], rows = ctx.pages.runs[2 * r + 1];
        if (rows < detail::kFaMinRows || first < done || first + rows > n)
          continue;
        if (first > done)
          detail::attention_simt<Hq, Hkv, D>(ctx, q + done * row, first - done, pos + done,
                                             detail::pages_from(ctx.pages, done), layer, scale,
                                             window, out + done * row);
        detail::attention_tc<Hq, Hkv, D>(ctx.stream, q + first * row, rows, pos + first, layer,
                                         ctx.capacity, detail::pages_from(ctx.pages, first),
                                         ctx.k_cache, ctx.v_cache, scale, window,
                                         out + first * row);
        PHIMOE_CUDA_CHECK_LAUNCH();
        done = first + rows;
      }
      if (done < n)
        detail::attention_simt<Hq, Hkv, D>(ctx, q + done * row, n - done, pos + done,
                                           detail::pages_from(ctx.pages, done), layer, scale,
                                           window, out + done * row);
      return;
    }
  }
  uint32_t *staged = detail::stage_for<Next, Hq * D>(ctx, out, n);
  detail::attention_simt<Hq, Hkv, D>(ctx, q, n, pos, ctx.pages, layer, scale, window, out,
                                     staged);
}

namespace detail {
// moe_sparsemixer, then (NW not void) add_layer_norm<H, Next>(norm.a, out, ...) of its rows:
// in the down kernel's last block of each row where that kernel runs and ctx has the
// counters, else as a launch of its own.
// Routing: router_kernel's.
// Gelu: phi-2 MLP experts (gate_up_kernel's), with fc1 biases b1 [E, I] and fc2 biases b2 [E, H].
template <int E, int H, int I, bool Routed, class Next,
          phimoe_rt::RouteKind Routing = phimoe_rt::RouteKind::Sparsemixer, bool Gelu = false,
          class R, class GU, class DW, class NW, class B1 = float, class B2 = float>
void moe_then_norm(Context &ctx, const float *x, int n, const R *router, const GU *gate_up,
                   const DW *down, float eps, float *out, NormTail<NW> norm,
                   const B1 *b1 = nullptr, const B2 *b2 = nullptr) {
  static_assert(E >= 2 && H >= 1 && I >= 1, "moe_sparsemixer: bad shape");
  if (n <= 0)
    return;
  constexpr bool normed = !std::is_void<NW>::value;
  auto apart = [&] { // the norm as a launch of its own
    if constexpr (normed)
      add_layer_norm<H, Next>(ctx, norm.a, out, n, norm.w, norm.bias, norm.eps, norm.sum,
                              norm.out);
  };
  constexpr size_t router_smem = sizeof(float) * (H + E);
  constexpr size_t gate_smem = sizeof(float) * H;
  constexpr size_t down_smem = sizeof(float) * 2 * I;
  // q4_K down projections take the act rows staged by gate_up_kernel (StageAct).
  constexpr bool stage_act = int_input<DW, I>();
  static bool configured =
      (allow_shared(router_kernel<E, H, R, Routing>, router_smem),
       allow_shared(gate_up_kernel<E, H, I, GU, stage_act, Gelu, B1>, gate_smem),
       allow_shared(down_kernel<E, H, I, DW, void, B2>, down_smem),
       allow_shared(down_kernel<E, H, I, DW, NW, B2>, down_smem), true);
  (void)configured;
  const uint32_t *staged = staged_input<GU, H>(ctx, x, n);
  if constexpr (!Routed) {
    PHIMOE_CUDA_LAUNCH(n, kThreads, router_smem, ctx.stream, router_kernel<E, H, R, Routing>)
    (x, router, eps, ctx.routes);
    PHIMOE_CUDA_CHECK_LAUNCH();
  }
  if constexpr (tc_supported<GU, H>() && tc_supported<DW, I>()) {
    if (n > kGemvMaxRows) { // prefill: grouped-expert GEMMs (moe_grouped.cuh)
      moe_grouped<E, H, I, Gelu>(ctx, x, n, gate_up, down, out, b1, b2);
      PHIMOE_CUDA_CHECK_LAUNCH();
      apart();
      return;
    }
  }
  uint32_t *staged_act =
      stage_act && n <= kGemvMaxRows && dp4a_enabled() &&
              static_cast<size_t>(n) * 2 * StagedQ4k::words(I) <= ctx.moe_staged_words
          ? ctx.moe_staged
          : nullptr;
  dim3 gu_grid(blocks_for(I, gate_up_rows<I, stage_act>()), 2, n);
  PHIMOE_CUDA_LAUNCH(gu_grid, kThreads, gate_smem, ctx.stream,
                     gate_up_kernel<E, H, I, GU, stage_act, Gelu, B1>)
  (x, staged, gate_up, ctx.routes, ctx.moe_act, staged_act, b1);
  PHIMOE_CUDA_CHECK_LAUNCH();
  dim3 down_grid(blocks_for(H, gemv_rows<H>()), n);
  if constexpr (normed) {
    if (has_counters(ctx, static_cast<size_t>(n)) &&
        env_switch(norm_tail_mode(), "PHIMOE_CUDA_NORM", "apart")) {
      norm.staged = stage_for<Next, H>(ctx, norm.out, n);
      norm.counters = ctx.counters;
      PHIMOE_CUDA_LAUNCH(down_grid, kThreads, down_smem, ctx.stream,
                         down_kernel<E, H, I, DW, NW, B2>)
      (ctx.moe_act, staged_act, down, ctx.routes, out, norm, b2);
      PHIMOE_CUDA_CHECK_LAUNCH();
      return;
    }
  }
  PHIMOE_CUDA_LAUNCH(down_grid, kThreads, down_smem, ctx.stream,
                     down_kernel<E, H, I, DW, void, B2>)
  (ctx.moe_act, staged_act, down, ctx.routes, out, NormTail<void>{}, b2);
  PHIMOE_CUDA_CHECK_LAUNCH();
  apart();
}
} // namespace detail

// Router on the device, then the two experts of every row, whose ids the expert kernels read
// from the device: no host synchronisation. gate_up is [E, 2I, H], down [E, H, I]. Routed:
// add_layer_norm_route has written the routes already (router and eps are then unused).
template <int E, int H, int I, bool Routed = false, class R, class GU, class DW>
void moe_sparsemixer(Context &ctx, const float *x, int n, const R *router, const GU *gate_up,
                     const DW *down, float eps, float *out) {
  detail::moe_then_norm<E, H, I, Routed, void>(ctx, x, n, router, gate_up, down, eps, out,
                                               detail::NormTail<void>{});
}

// The same MoE with Mixtral's routing: softmax over the E router logits, the two largest,
// renormalised (phimoe_rt::softmax_top2). phimoe-lower-to-emitc fuses nothing into it.
template <int E, int H, int I, class R, class GU, class DW>
void moe_softmax_top2(Context &ctx, const float *x, int n, const R *router, const GU *gate_up,
                      const DW *down, float *out) {
  detail::moe_then_norm<E, H, I, false, void, phimoe_rt::RouteKind::SoftmaxTop2>(
      ctx, x, n, router, gate_up, down, 0.0f, out, detail::NormTail<void>{});
}

// phixtral's MoE: Mixtral's routing over phi-2 MLP experts, E(x) = fc2 · gelu_tanh(x · fc1ᵀ +
// fc1_bias) + fc2_bias (fc1 [E, I, H], fc1_bias [E, I], fc2 [E, H, I], fc2_bias [E, H]);
// decode and the grouped prefill as moe_softmax_top2. Nothing is fused into it.
template <int E, int H, int I, class R, class W1, class B1, class W2, class B2>
void moe_softmax_top2_gelu(Context &ctx, const float *x, int n, const R *router, const W1 *fc1,
                           const B1 *fc1_bias, const W2 *fc2, const B2 *fc2_bias, float *out) {
  detail::moe_then_norm<E, H, I, false, void, phimoe_rt::RouteKind::SoftmaxTop2, true>(
      ctx, x, n, router, fc1, fc2, 0.0f, out, detail::NormTail<void>{}, fc1_bias, fc2_bias);
}

// moe_sparsemixer into moe_out, then add_layer_norm<H, Next>(ctx, a, moe_out, n, w, bias,
// eps, sum, out): in decode the down projection's last block of each row runs the norm (one
// launch fewer; PHIMOE_CUDA_NORM=apart keeps it a launch of its own).
// phimoe-lower-to-emitc{target=cuda} emits it where the norm is the MoE's next op.
template <int E, int H, int I, bool Routed = false, class Next = void, class R, class GU,
          class DW, class W>
void moe_sparsemixer_add_layer_norm(Context &ctx, const float *x, int n, const R *router,
                                    const GU *gate_up, const DW *down, float route_eps,
                                    float *moe_out, const float *a, const W *w, const W *bias,
                                    float eps, float *sum, float *out) {
  detail::moe_then_norm<E, H, I, Routed, Next>(ctx, x, n, router, gate_up, down, route_eps,
                                               moe_out,
                                               detail::NormTail<W>{a, w, bias, eps, sum, out});
}

} // namespace phimoe_cuda

#endif // PHIMOE_CUDA_KERNELS_CUH
