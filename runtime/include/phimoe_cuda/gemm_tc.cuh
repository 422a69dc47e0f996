// gemm_tc.cuh - the tensor-core GEMM of prefill: out[n, N] = x[n, K] . W^T + bias with
// mma.sync m16n8k16 (bf16 inputs, fp32 accumulation), for W in bf16 or q8_0 (and any storage
// that gives a TcLoad below). Included by kernels.cuh after Elem and blocks_for; linear() picks it
// for more than kGemvMaxRows rows. moe_grouped.cuh runs the same main loop over gathered rows.
//
// Precision. Activations are float: each is split into kTcXTerms bf16 terms (x = hi + lo + ...,
// each term the bf16 rounding of what the previous left), and every term is multiplied with the
// weight tile (one MMA per term). Two terms keep |x - hi - lo| <= 2^-16 |x|; three are exact
// (bf16 has float's exponent range, so x - hi - lo fits 8 bits). bf16 weights are exact, so
// for them the result differs from the float GEMM by the split's 2^-16 at most per product and
// by the summation order. The MMAs of one K tile (32) accumulate into a zeroed fragment that is
// then added in ordinary fp32 (round to nearest) to the running sum, so that the tensor core's
// own accumulation (not IEEE round-to-nearest) acts on short sums only.
// q8_0 tiles hold the int8 quants themselves (exact in bf16); the f16 scale of the 32-value
// block (the K tile) multiplies the tile's fp32 partial sum: no rounding of the weights at all.
//
// Tiles: a block of 128 threads (4 warps, 2 x 2) computes 64 rows x 64 columns, K in steps of
// 32; each warp 32 x 32 = 2 (m16) x 4 (n8) MMA tiles. Shared memory holds the split x tile
// (kTcXTerms x 64 x 32 bf16), the weight tile (64 x 32 bf16) and the scales; rows are padded to
// 40 bf16 (80 bytes), so that the fragment loads (8 rows x 4 words per warp) hit 32 distinct
// banks and 16-byte stores of weight units stay aligned. Loads are single-stage (no cp.async):
// correctness first.
#ifndef PHIMOE_CUDA_GEMM_TC_CUH
#define PHIMOE_CUDA_GEMM_TC_CUH

#include <cstdint>
#include <cstring>

namespace phimoe_cuda {
namespace detail {

constexpr int kTcBM = 64;     // rows (tokens) of a block tile
constexpr int kTcBN = 64;     // columns (weight rows) of a block tile
constexpr int kTcBK = 32;     // K per step
constexpr int kTcStride = 40; // bf16 per shared row (32 + 8 padding: 80 bytes)
constexpr int kTcThreads = 128;
constexpr int kTcXTerms = 2; // bf16 terms per activation (see the header)

// ---- bf16 / f16 bit arithmetic, the same on the host and the device --------------------
__host__ __device__ inline uint32_t tc_float_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}
__host__ __device__ inline float tc_bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}
// float -> bf16, round to nearest even (a nan stays a quiet nan).
__host__ __device__ inline uint16_t tc_bf16_round(float f) {
  const uint32_t u = tc_float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return static_cast<uint16_t>((u >> 16) | 0x0040u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__host__ __device__ inline float tc_bf16_value(uint16_t b) {
  return tc_bits_float(static_cast<uint32_t>(b) << 16);
}
// IEEE half bits -> float (subnormals, inf and nan included).
__host__ __device__ inline float tc_f16_value(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f; // mant * 2^-24, exact
    return tc_bits_float(tc_float_bits(v) | sign);
  }
  if (exp == 31)
    return tc_bits_float(sign | 0x7f800000u | (mant << 13));
  return tc_bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}
// x as Terms bf16 values whose sum approximates it (see the header); past an inf or nan the
// terms are zero.
template <int Terms> __host__ __device__ inline void tc_split(float x, uint16_t (&parts)[Terms]) {
  float rest = x;
  for (int t = 0; t < Terms; ++t) {
    parts[t] = tc_bf16_round(rest);
    const float v = tc_bf16_value(parts[t]);
    if ((tc_float_bits(v) & 0x7f800000u) == 0x7f800000u) {
      for (int u = t + 1; u < Terms; ++u)
        parts[u] = 0;
      return;
    }
    rest -= v; // exact: v is rest rounded to fewer bits
  }
}
__host__ __device__ inline uint4 tc_pack8(const uint16_t (&v)[8]) {
  uint4 u;
  u.x = v[0] | static_cast<uint32_t>(v[1]) << 16;
  u.y = v[2] | static_cast<uint32_t>(v[3]) << 16;
  u.z = v[4] | static_cast<uint32_t>(v[5]) << 16;
  u.w = v[6] | static_cast<uint32_t>(v[7]) << 16;
  return u;
}

// ---- weight tile loaders ----------------------------------------------------------------
// TcLoad<W> turns a weight of R rows of K values stored as W into bf16 tiles:
//   unit(w, R, K, r, k0): values k0 .. k0+7 of row r (k0 % 8 == 0) as 8 bf16 bits in a uint4
//     (low half of .x first); values at k >= K are 0;
//   kScaled: if true, unit() gives unscaled values and scale(w, R, K, r, k0) the factor of row
//     r over the whole K tile [k0, k0 + kTcBK) (k0 % kTcBK == 0), applied to the tile's fp32
//     partial sums.
// A storage without a specialisation (f32, f16) keeps the float GEMM. A new quantized storage
// whose Elem<W>::at exists gets a (bf16-rounding) loader with one line:
//   template <> struct TcLoad<NewType> : TcLoadViaElem<NewType> {};
template <class W> struct TcLoad { static constexpr bool kSupported = false; };

template <> struct TcLoad<phimoe_rt::bf16> {
  static constexpr bool kSupported = true, kScaled = false;
  __host__ __device__ static uint4 unit(const phimoe_rt::bf16 *w, size_t, int K, size_t r, int k0) {
    const uint16_t *p = reinterpret_cast<const uint16_t *>(w) + r * K + k0;
    if (K % 8 == 0 && k0 + 8 <= K)
      return *reinterpret_cast<const uint4 *>(p); // 16-byte aligned: K % 8 == 0, k0 % 8 == 0
    uint16_t v[8];
    for (int j = 0; j < 8; ++j)
      v[j] = k0 + j < K ? p[j] : static_cast<uint16_t>(0);
    return tc_pack8(v);
  }
  __host__ __device__ static float scale(const phimoe_rt::bf16 *, size_t, int, size_t, int) {
    return 1.0f;
  }
};

// q8_0 in the CUDA split layout (quants [R*K] int8, then scales [R*K/32] f16); K % 32 == 0.
template <> struct TcLoad<phimoe_rt::block_q8_0> {
  static constexpr bool kSupported = true, kScaled = true;
  __host__ __device__ static uint4 unit(const phimoe_rt::block_q8_0 *w, size_t, int K, size_t r,
                                        int k0) {
    const int8_t *q = reinterpret_cast<const int8_t *>(w) + r * K + k0;
    uint16_t v[8];
    for (int j = 0; j < 8; ++j) // |q| <= 128 has at most 8 significant bits: exact in bf16
      v[j] = k0 + j < K ? tc_bf16_round(static_cast<float>(q[j])) : static_cast<uint16_t>(0);
    return tc_pack8(v);
  }
  __host__ __device__ static float scale(const phimoe_rt::block_q8_0 *w, size_t R, int K, size_t r,
                                         int k0) {
    const uint16_t *d = reinterpret_cast<const uint16_t *>(reinterpret_cast<const int8_t *>(w) +
                                                           R * static_cast<size_t>(K));
    return tc_f16_value(d[(r * K + k0) / 32]);
  }
};

// Any storage with Elem<W>::at, its values rounded to bf16 (for quantized formats, whose own
// rounding is coarser than bf16's).
template <class W> struct TcLoadViaElem {
  static constexpr bool kSupported = true, kScaled = false;
  __host__ __device__ static uint4 unit(const W *w, size_t R, int K, size_t r, int k0) {
    uint16_t v[8];
    for (int j = 0; j < 8; ++j)
      v[j] = k0 + j < K ? tc_bf16_round(Elem<W>::at(w, R, K, r, k0 + j)) : uint16_t(0);
    return tc_pack8(v);
  }
  __host__ __device__ static float scale(const W *, size_t, int, size_t, int) { return 1.0f; }
};

// ---- fragments of mma.m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16") ------------
// With g = lane / 4 and q = lane % 4: register j of A (16 x 16, row-major) holds A[row][col],
// A[row][col + 1] (low half first) at row = g + 8 (j & 1), col = 2q + 8 (j >> 1); register j of
// B (16 x 8, "col": we read it from W[n][k]) holds B[k][n], B[k + 1][n] at k = 2q + 8j, n = g;
// accumulator c holds C[g + 8 (c >> 1)][2q + (c & 1)].
__host__ __device__ inline int tc_a_row(int lane, int j) { return (lane >> 2) + 8 * (j & 1); }
__host__ __device__ inline int tc_a_col(int lane, int j) { return 2 * (lane & 3) + 8 * (j >> 1); }
__host__ __device__ inline int tc_b_k(int lane, int j) { return 2 * (lane & 3) + 8 * j; }
__host__ __device__ inline int tc_b_n(int lane) { return lane >> 2; }
__host__ __device__ inline int tc_c_row(int lane, int c) { return (lane >> 2) + 8 * (c >> 1); }
__host__ __device__ inline int tc_c_col(int lane, int c) { return 2 * (lane & 3) + (c & 1); }
// Where accumulator c of MMA tile (mi, ni) of warp `warp` lies in the 64 x 64 block tile.
__host__ __device__ inline int tc_tile_row(int warp, int lane, int mi, int c) {
  return (warp >> 1) * 32 + mi * 16 + tc_c_row(lane, c);
}
__host__ __device__ inline int tc_tile_col(int warp, int lane, int ni, int c) {
  return (warp & 1) * 32 + ni * 8 + tc_c_col(lane, c);
}

__device__ __forceinline__ void tc_mma(float (&d)[4], const uint32_t (&a)[4],
                                       const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap(); // the CUDA targets are sm_80 and newer
#endif
}

// The shared memory of a block: split x tile, weight tile, the tile's scales, and which
// global row each tile row reads (-1: none, zeros).
template <int Terms> struct TcShared {
  alignas(16) uint16_t a[Terms][kTcBM][kTcStride];
  alignas(16) uint16_t b[kTcBN][kTcStride];
  float scale[kTcBN];
  int a_rows[kTcBM]; // row of x (row stride K)
  int b_rows[kTcBN]; // row of W
};

// The phases of a block's work are __host__ __device__ functions of (thread or warp, lane), so
// that test/gpu/tc_host_test.cu runs the whole data flow on the CPU (with an emulated MMA).

// Thread tid's share of loading K tile k0 into s (the split x rows, the weight units, scales).
#pragma nv_exec_check_disable
template <class W, long long R, int K, int Terms>
__host__ __device__ inline void tc_load_tile(TcShared<Terms> &s, const float *x, const W *w, int k0,
                                             int tid) {
  using L = TcLoad<W>;
  for (int i = tid; i < kTcBM * kTcBK; i += kTcThreads) {
    const int m = i / kTcBK, kk = i % kTcBK, row = s.a_rows[m], k = k0 + kk;
    const float v = row >= 0 && k < K ? x[static_cast<size_t>(row) * K + k] : 0.0f;
    uint16_t parts[Terms];
    tc_split<Terms>(v, parts);
    for (int t = 0; t < Terms; ++t)
      s.a[t][m][kk] = parts[t];
  }
  for (int u = tid; u < kTcBN * kTcBK / 8; u += kTcThreads) {
    const int n = u / (kTcBK / 8), ku = u % (kTcBK / 8), row = s.b_rows[n];
    const uint4 v = row >= 0 ? L::unit(w, R, K, static_cast<size_t>(row), k0 + 8 * ku)
                             : make_uint4(0u, 0u, 0u, 0u);
    *reinterpret_cast<uint4 *>(&s.b[n][8 * ku]) = v;
  }
  if constexpr (L::kScaled)
    for (int n = tid; n < kTcBN; n += kTcThreads)
      s.scale[n] =
          s.b_rows[n] >= 0 ? L::scale(w, R, K, static_cast<size_t>(s.b_rows[n]), k0) : 0.0f;
}

// Register j of the A fragment of term t, MMA rows row0 .. row0+15, k ks .. ks+15; of the B
// fragment of tile columns n0 .. n0+7.
template <int Terms>
__host__ __device__ inline uint32_t tc_a_reg(const TcShared<Terms> &s, int t, int row0, int ks,
                                             int lane, int j) {
  const uint16_t *p = &s.a[t][row0 + tc_a_row(lane, j)][ks + tc_a_col(lane, j)];
#ifdef __CUDA_ARCH__
  return *reinterpret_cast<const uint32_t *>(p); // 4-byte aligned: even column
#else
  return p[0] | static_cast<uint32_t>(p[1]) << 16;
#endif
}
template <int Terms>
__host__ __device__ inline uint32_t tc_b_reg(const TcShared<Terms> &s, int n0, int ks, int lane,
                                             int j) {
  const uint16_t *p = &s.b[n0 + tc_b_n(lane)][ks + tc_b_k(lane, j)];
#ifdef __CUDA_ARCH__
  return *reinterpret_cast<const uint32_t *>(p);
#else
  return p[0] | static_cast<uint32_t>(p[1]) << 16;
#endif
}

// The MMAs of one K tile of warp `warp` into part (zeroed by the caller). Device only (mma.sync
// is warp-collective); tc_host_test.cu emulates the same loop.
template <int Terms>
__device__ __forceinline__ void tc_tile_mma(const TcShared<Terms> &s, int warp, int lane,
                                            float (&part)[2][4][4]) {
  const int wm = warp >> 1, wn = warp & 1;
#pragma unroll
  for (int ks = 0; ks < kTcBK; ks += 16) {
    uint32_t bf[4][2];
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        bf[ni][j] = tc_b_reg(s, wn * 32 + ni * 8, ks, lane, j);
#pragma unroll
    for (int t = Terms - 1; t >= 0; --t) // the small terms first
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
        uint32_t af[4];
#pragma unroll
        for (int j = 0; j < 4; ++j)
          af[j] = tc_a_reg(s, t, wm * 32 + mi * 16, ks, lane, j);
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
          tc_mma(part[mi][ni], af, bf[ni]);
      }
  }
}

// acc += part (times the tile's scale of the column, for scaled storages), in fp32.
template <class W, int Terms>
__host__ __device__ inline void tc_accumulate(const TcShared<Terms> &s, int warp, int lane,
                                              const float (&part)[2][4][4], float (&acc)[2][4][4]) {
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        float v = part[mi][ni][c];
        if constexpr (TcLoad<W>::kScaled)
          v *= s.scale[tc_tile_col(warp, lane, ni, c)];
        acc[mi][ni][c] += v;
      }
}

__host__ __device__ inline void tc_zero(float (&v)[2][4][4]) {
  for (int mi = 0; mi < 2; ++mi)
    for (int ni = 0; ni < 4; ++ni)
      for (int c = 0; c < 4; ++c)
        v[mi][ni][c] = 0.0f;
}

// acc[mi][ni][c] = sum over k of x[a_rows[m]][k] * W[b_rows[n]][k] at the (m, n) of
// tc_tile_row / tc_tile_col. s.a_rows and s.b_rows must be set (and synced) by the caller.
// W is R rows of K values (R locates q8_0's scales). Block-collective, kTcThreads threads.
template <class W, long long R, int K, int Terms>
__device__ __forceinline__ void tc_mainloop(TcShared<Terms> &s, const float *x, const W *w,
                                            float (&acc)[2][4][4]) {
  static_assert(TcLoad<W>::kSupported, "tc_mainloop: no tensor-core loader for this storage");
  static_assert(!TcLoad<W>::kScaled || K % kTcBK == 0, "tc_mainloop: scaled tiles: K % 32");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  tc_zero(acc);
  for (int k0 = 0; k0 < K; k0 += kTcBK) {
    tc_load_tile<W, R, K, Terms>(s, x, w, k0, threadIdx.x);
    __syncthreads();
    float part[2][4][4];
    tc_zero(part);
    tc_tile_mma(s, warp, lane, part);
    tc_accumulate<W>(s, warp, lane, part, acc);
    __syncthreads(); // the tiles are overwritten by the next step
  }
}

// Storage values of a bias (host and device).
__host__ __device__ inline float tc_value(const float *p) { return *p; }
__host__ __device__ inline float tc_value(const phimoe_rt::bf16 *p) {
  return tc_bf16_value(p->bits);
}
__host__ __device__ inline float tc_value(const phimoe_rt::f16 *p) { return tc_f16_value(p->bits); }

// The rows a block tile (column tile r0, row tile t0) of the GEMM reads: thread tid's share.
__host__ __device__ inline void tc_gemm_rows(int *a_rows, int *b_rows, int n, int N, int t0, int r0,
                                             int tid) {
  for (int i = tid; i < kTcBM; i += kTcThreads)
    a_rows[i] = t0 + i < n ? t0 + i : -1;
  for (int i = tid; i < kTcBN; i += kTcThreads)
    b_rows[i] = r0 + i < N ? r0 + i : -1;
}

// out[t][r] = acc + bias[r] for the accumulators of (warp, lane) of block tile (t0, r0).
template <int N, class B>
__host__ __device__ inline void tc_gemm_store(const float (&acc)[2][4][4], int warp, int lane,
                                              int n, int t0, int r0, const B *bias, float *out) {
  for (int mi = 0; mi < 2; ++mi)
    for (int ni = 0; ni < 4; ++ni)
      for (int c = 0; c < 4; ++c) {
        const int t = t0 + tc_tile_row(warp, lane, mi, c), r = r0 + tc_tile_col(warp, lane, ni, c);
        if (t < n && r < N)
          out[static_cast<size_t>(t) * N + r] = acc[mi][ni][c] + (bias ? tc_value(bias + r) : 0.0f);
      }
}

// Block (column tile, row tile) of out[n, N] = x . W^T + bias.
template <int N, int K, class W, class B, int Terms>
__global__ void __launch_bounds__(kTcThreads)
    gemm_tc_kernel(const float *x, int n, const W *w, const B *bias, float *out) {
  __shared__ TcShared<Terms> s;
  const int t0 = blockIdx.y * kTcBM, r0 = blockIdx.x * kTcBN;
  tc_gemm_rows(s.a_rows, s.b_rows, n, N, t0, r0, threadIdx.x);
  __syncthreads();
  float acc[2][4][4];
  tc_mainloop<W, N, K, Terms>(s, x, w, acc);
  tc_gemm_store<N>(acc, threadIdx.x >> 5, threadIdx.x & 31, n, t0, r0, bias, out);
}

template <int N, int K, class W, class B>
void gemm_tc(cudaStream_t stream, const float *x, int n, const W *w, const B *bias, float *out) {
  dim3 grid(blocks_for(N, kTcBN), blocks_for(n, kTcBM));
  gemm_tc_kernel<N, K, W, B, kTcXTerms><<<grid, kTcThreads, 0, stream>>>(x, n, w, bias, out);
}

} // namespace detail
} // namespace phimoe_cuda

#endif // PHIMOE_CUDA_GEMM_TC_CUH
