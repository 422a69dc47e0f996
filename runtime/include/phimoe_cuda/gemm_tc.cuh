// gemm_tc.cuh - the tensor-core GEMM of prefill: out[n, N] = x[n, K] . W^T + bias with
// mma.sync m16n8k16 (bf16 inputs, fp32 accumulation), for W in bf16, q8_0, q4_K or q6_K (any
// storage that gives a TcLoad below). Included by kernels.cuh after Elem and blocks_for; linear()
// picks it for more than kGemvMaxRows rows. moe_grouped.cuh runs the same main loop over gathered
// rows.
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
// q4_K likewise: the tiles hold q (0..15), the K tile is one 32-value sub-block, and
// out += d sc P - dmin m S, with P the tile's partial sum and S the sum of the row's split x
// over the K tile (tc_row_sums). q6_K: the tiles hold q - 32 and each k16 MMA step (one 16-value
// sub-block) accumulates into its own zeroed fragment, scaled by d scales[j] of its row.
//
// Tiles: a block of 128 threads (4 warps, 2 x 2) computes 64 rows x 64 columns, K in steps of
// 32; each warp 32 x 32 = 2 (m16) x 4 (n8) MMA tiles. Shared memory holds the split x tile
// (kTcXTerms x 64 x 32 bf16), the weight tile (64 x 32 bf16), the scales, mins and row sums of
// x (q4_K); rows are padded to
// 40 bf16 (80 bytes), so that the fragment loads (8 rows x 4 words per warp) hit 32 distinct
// banks and 16-byte stores of weight units stay aligned. Loads are single-stage (no cp.async):
// correctness first.
#ifndef PHIMOE_CUDA_GEMM_TC_CUH
#define PHIMOE_CUDA_GEMM_TC_CUH

#include "phimoe_cuda/elements.cuh"
#include "phimoe_cuda/launch.h"

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
// float -> bf16, round to nearest even (a nan stays a quiet nan).
__host__ __device__ inline uint16_t tc_bf16_round(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return static_cast<uint16_t>((u >> 16) | 0x0040u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
// x as Terms bf16 values whose sum approximates it (see the header); past an inf or nan the
// terms are zero.
// (Unrolled, without an early exit: the terms stay in registers, no local memory.)
template <int Terms> __host__ __device__ inline void tc_split(float x, uint16_t (&parts)[Terms]) {
  float rest = x;
  bool past_inf = false;
#pragma unroll
  for (int t = 0; t < Terms; ++t) {
    parts[t] = past_inf ? 0 : tc_bf16_round(rest);
    const float v = bf16_bits(parts[t]);
    past_inf = past_inf || (float_bits(v) & 0x7f800000u) == 0x7f800000u;
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
//   kUnitValues, load(w, R, K, r, k0, dst): values k0 .. k0 + kUnitValues - 1 of row r
//     (k0 % kUnitValues == 0) as bf16 bits, 8 to a uint4 (low half of .x first) in
//     dst[0 .. kUnitValues / 8); values at k >= K are 0;
//   kRowMultiple: K must be a multiple of it (whole blocks) for the loader to apply;
//   kScaled, kGroup, scales(w, R, K, r, k0): the tile holds unscaled integers q; the K tile
//     [k0, k0 + kTcBK) of row r falls into groups of kGroup values (kTcBK or 16), and the
//     value of column k of group g is scale[g] * q - min: scale[g] multiplies the group's
//     fp32 partial sum (an MMA tile's zeroed fragment), and, if kMins, min times the sum of the
//     tile row's x over the K tile is subtracted (min is constant over the K tile).
// A storage without a specialisation (f32, f16) keeps the float GEMM.
template <class W> struct TcLoad { static constexpr bool kSupported = false; };

// What scales() gives for a K tile of a weight row (see above).
struct TcScales {
  float scale[kTcBK / 16];
  float min;
};

// Storage W takes the tensor-core path for rows of K values.
template <class W, long long K> __host__ __device__ constexpr bool tc_supported() {
  if constexpr (TcLoad<W>::kSupported)
    return K % TcLoad<W>::kRowMultiple == 0;
  else
    return false;
}

// Two bf16 bits from floats that bf16 holds exactly (small integers): the high halves.
__host__ __device__ inline uint32_t tc_pack_exact(float lo, float hi) {
  return (float_bits(lo) >> 16) | (float_bits(hi) & 0xffff0000u);
}
// The 4 bytes of `word`, each minus `bias` (bytes and bias integers, |byte - bias| < 256: exact
// in bf16), as 4 bf16 in out[0] (bytes 0, 1) and out[1] (bytes 2, 3). No integer-to-float
// conversion: byte_value's PRMT + FADD (elements.cuh).
__host__ __device__ inline void tc_bytes_bf16(uint32_t word, float bias, uint32_t *out) {
  out[0] = tc_pack_exact(byte_value<0>(word, bias), byte_value<1>(word, bias));
  out[1] = tc_pack_exact(byte_value<2>(word, bias), byte_value<3>(word, bias));
}
__host__ __device__ inline void tc_store_units(const uint32_t *words, int count, uint4 *dst) {
  for (int i = 0; i < count; ++i)
    dst[i] = make_uint4(words[4 * i], words[4 * i + 1], words[4 * i + 2], words[4 * i + 3]);
}

template <> struct TcLoad<phimoe_rt::bf16> {
  static constexpr bool kSupported = true, kScaled = false, kMins = false;
  static constexpr int kUnitValues = 8, kRowMultiple = 1, kGroup = kTcBK;
  __host__ __device__ static void load(const phimoe_rt::bf16 *w, size_t, int K, size_t r, int k0,
                                       uint4 *dst) {
    const uint16_t *p = reinterpret_cast<const uint16_t *>(w) + r * K + k0;
    if (K % 8 == 0 && k0 + 8 <= K) {
      *dst = load_uint4(p); // 16-byte aligned: K % 8 == 0, k0 % 8 == 0
      return;
    }
    uint16_t v[8];
    for (int j = 0; j < 8; ++j)
      v[j] = k0 + j < K ? p[j] : static_cast<uint16_t>(0);
    *dst = tc_pack8(v);
  }
  __host__ __device__ static TcScales scales(const phimoe_rt::bf16 *, size_t, int, size_t, int) {
    return TcScales{{1.0f, 1.0f}, 0.0f};
  }
};

// q8_0 in the CUDA split layout (quants [R*K] int8, then scales [R*K/32] f16): the tile holds
// the int8 quants (exact in bf16), the block's f16 scale multiplies the K tile's partial sum.
template <> struct TcLoad<phimoe_rt::block_q8_0> {
  static constexpr bool kSupported = true, kScaled = true, kMins = false;
  static constexpr int kUnitValues = 8, kRowMultiple = 32, kGroup = kTcBK;
  __host__ __device__ static void load(const phimoe_rt::block_q8_0 *w, size_t, int K, size_t r,
                                       int k0, uint4 *dst) {
    const int8_t *q = reinterpret_cast<const int8_t *>(w) + r * K + k0;
    uint16_t v[8];
    for (int j = 0; j < 8; ++j) // |q| <= 128 has at most 8 significant bits: exact in bf16
      v[j] = k0 + j < K ? tc_bf16_round(static_cast<float>(q[j])) : static_cast<uint16_t>(0);
    *dst = tc_pack8(v);
  }
  __host__ __device__ static TcScales scales(const phimoe_rt::block_q8_0 *w, size_t R, int K,
                                             size_t r, int k0) {
    const uint16_t *d = reinterpret_cast<const uint16_t *>(reinterpret_cast<const int8_t *>(w) +
                                                           R * static_cast<size_t>(K));
    return TcScales{{f16_bits(d[(r * K + k0) / 32]), 0.0f}, 0.0f};
  }
};

// q4_K's 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes held in three
// words (bytes 0-3, 4-7, 8-11), as Elem<block_q4k>::scale_min reads them from memory.
__host__ __device__ inline void tc_q4k_scale_min(uint32_t s0, uint32_t s1, uint32_t s2, int j,
                                                 float &sc, float &m) {
  const int shift = 8 * (j & 3);
  const uint32_t b0 = (s0 >> shift) & 0xffu, b1 = (s1 >> shift) & 0xffu;
  if (j < 4) {
    sc = static_cast<float>(b0 & 63u);
    m = static_cast<float>(b1 & 63u);
  } else {
    const uint32_t b2 = (s2 >> shift) & 0xffu;
    sc = static_cast<float>((b2 & 0xfu) | ((b0 >> 6) << 4));
    m = static_cast<float>((b2 >> 4) | ((b1 >> 6) << 4));
  }
}

// q4_K in the split layout (Elem<block_q4k>): a value is d * sc[s] * q - dmin * m[s], q in
// 0..15, s the 32-value sub-block = the K tile (k0 % 32 == 0, K % 256 == 0). A unit is 16
// columns of one sub-block: 16 consecutive qs bytes (one 16-byte load), one nibble of each
// (byte 32c + l: columns 64c + l, low nibble, and 64c + 32 + l, high nibble). The K tile of
// the other nibble reads the same bytes again (from L1/L2).
template <> struct TcLoad<phimoe_rt::block_q4k> {
  using W = phimoe_rt::block_q4k;
  static constexpr bool kSupported = true, kScaled = true, kMins = true;
  static constexpr int kUnitValues = 16, kRowMultiple = phimoe_rt::kQK_K, kGroup = kTcBK;
  __host__ __device__ static void load(const W *w, size_t, int K, size_t r, int k0, uint4 *dst) {
    const size_t block = r * (K / 256) + k0 / 256;
    const int j = k0 % 256, c = j / 64, l = j % 64; // l: 0, 16, 32 or 48
    const Words q = load16(reinterpret_cast<const uint8_t *>(w) + block * 128 + 32 * c + l % 32);
    const int shift = l < 32 ? 0 : 4;
    uint32_t out[8];
    for (int i = 0; i < 4; ++i)
      tc_bytes_bf16((q.w[i] >> shift) & 0x0f0f0f0fu, 0.0f, out + 2 * i);
    tc_store_units(out, 2, dst);
  }
  __host__ __device__ static TcScales scales(const W *w, size_t R, int K, size_t r, int k0) {
    const size_t block = r * (K / 256) + k0 / 256;
    const Words m = load16(Elem<W>::meta(w, R, K, block)); // d, dmin | scales[12]
    float sc, mn;
    tc_q4k_scale_min(m.w[1], m.w[2], m.w[3], (k0 % 256) / 32, sc, mn);
    const float d = f16_bits(static_cast<uint16_t>(m.w[0] & 0xffffu));
    const float dmin = f16_bits(static_cast<uint16_t>(m.w[0] >> 16));
    return TcScales{{d * sc, 0.0f}, dmin * mn}; // both exact: 11-bit times 6-bit integers
  }
};

// q6_K in the split layout (Elem<block_q6k>): a value is d * scales[j] * (q - 32), j the
// 16-value sub-block, q - 32 in -32..31 (exact in bf16); a group is one m16n8k16 MMA's k16.
// A unit is 16 columns 128n + 32t + l0 .. +15 (half n, quarter t, l0 = 0 or 16): 16 bytes of ql
// (one nibble each) and the 16 qh bytes with their 2 high bits, two 16-byte loads.
template <> struct TcLoad<phimoe_rt::block_q6k> {
  using W = phimoe_rt::block_q6k;
  static constexpr bool kSupported = true, kScaled = true, kMins = false;
  static constexpr int kUnitValues = 16, kRowMultiple = phimoe_rt::kQK_K, kGroup = 16;
  __host__ __device__ static void load(const W *w, size_t R, int K, size_t r, int k0, uint4 *dst) {
    const typename Elem<W>::Regions g = Elem<W>::regions(w, R, K);
    const size_t block = r * (K / 256) + k0 / 256;
    const int j = k0 % 256, n = j / 128, t = (j % 128) / 32, l0 = j % 32;
    const Words lo = load16(g.ql + block * 128 + 64 * n + 32 * (t & 1) + l0);
    const Words hi = load16(g.qh + block * 64 + 32 * n + l0);
    uint32_t out[8];
    for (int i = 0; i < 4; ++i) {
      const uint32_t low4 = (t < 2 ? lo.w[i] : lo.w[i] >> 4) & 0x0f0f0f0fu;
      const uint32_t high2 = ((hi.w[i] >> (2 * t)) & 0x03030303u) << 4;
      tc_bytes_bf16(low4 | high2, 32.0f, out + 2 * i);
    }
    tc_store_units(out, 2, dst);
  }
  __host__ __device__ static TcScales scales(const W *w, size_t R, int K, size_t r, int k0) {
    const typename Elem<W>::Regions g = Elem<W>::regions(w, R, K);
    const size_t block = r * (K / 256) + k0 / 256;
    const int8_t *sc = g.scales + block * 16 + (k0 % 256) / 16; // the K tile's two sub-blocks
    const float d = f16_bits(static_cast<uint16_t>(load_u16(g.d + 2 * block)));
    return TcScales{{d * sc[0], d * sc[1]}, 0.0f}; // exact: 11-bit times 8-bit integers
  }
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
#elif defined(PHIMOE_CUDA_EMU)
  ::phimoe_emu::mma_m16n8k16_bf16(d, a, b); // test/gpu/emu: the same fragments on the CPU
#else
  __trap(); // the CUDA targets are sm_80 and newer
#endif
}

// The shared memory of a block: split x tile, weight tile, the tile's scales (per group) and
// mins, the sums of the x tile's rows (for mins), and which global row each tile row reads
// (-1: none, zeros).
template <int Terms> struct TcShared {
  alignas(16) uint16_t a[Terms][kTcBM][kTcStride];
  alignas(16) uint16_t b[kTcBN][kTcStride];
  float scale[kTcBK / 16][kTcBN];
  float min[kTcBN];
  float xsum[kTcBM]; // sum over the K tile of the split x (hi + lo) of each tile row
  int a_rows[kTcBM]; // row of x (row stride K)
  int b_rows[kTcBN]; // row of W
};

// The phases of a block's work are __host__ __device__ functions of (thread or warp, lane), so
// that test/gpu/tc_host_test.cu runs the whole data flow on the CPU (with an emulated MMA).

// Thread tid's share of loading K tile k0 into s (the split x rows, the weight units, scales
// and mins).
#pragma nv_exec_check_disable
template <class W, long long R, int K, int Terms>
__host__ __device__ inline void tc_load_tile(TcShared<Terms> &s, const float *x, const W *w, int k0,
                                             int tid) {
  using L = TcLoad<W>;
  // The x tile, 4 consecutive values a load (16 bytes where x and K allow), every load of the
  // thread before its first split: a loop of one load, a split and a store per value would
  // take kTcBM * kTcBK / kTcThreads round trips to memory one after another, per K tile.
  constexpr int kQuads = kTcBK / 4, kPer = kTcBM * kQuads / kTcThreads;
  static_assert(kTcBM * kQuads % kTcThreads == 0, "tc_load_tile: whole quads a thread");
  const bool vec = K % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  float xv[kPer][4];
#pragma unroll
  for (int c = 0; c < kPer; ++c) {
    const int i = tid + c * kTcThreads, m = i / kQuads, k = k0 + 4 * (i % kQuads);
    const int row = s.a_rows[m];
    const float *p = x + static_cast<size_t>(row < 0 ? 0 : row) * K + k;
    if (row >= 0 && vec && k + 4 <= K) {
      const Words q = load16(p);
#pragma unroll
      for (int e = 0; e < 4; ++e)
        xv[c][e] = bits_as_float(q.w[e]);
    } else {
#pragma unroll
      for (int e = 0; e < 4; ++e)
        xv[c][e] = row >= 0 && k + e < K ? p[e] : 0.0f;
    }
  }
#pragma unroll
  for (int c = 0; c < kPer; ++c) {
    const int i = tid + c * kTcThreads, m = i / kQuads, kk = 4 * (i % kQuads);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      uint16_t parts[Terms];
      tc_split<Terms>(xv[c][e], parts);
      for (int t = 0; t < Terms; ++t)
        s.a[t][m][kk + e] = parts[t];
    }
  }
  constexpr int V = L::kUnitValues, kPerRow = kTcBK / V;
  for (int u = tid; u < kTcBN * kPerRow; u += kTcThreads) {
    const int n = u / kPerRow, ku = u % kPerRow, row = s.b_rows[n];
    uint4 v[V / 8];
    if (row >= 0)
      L::load(w, R, K, static_cast<size_t>(row), k0 + V * ku, v);
    else
      for (int i = 0; i < V / 8; ++i)
        v[i] = make_uint4(0u, 0u, 0u, 0u);
    for (int i = 0; i < V / 8; ++i) // 16-byte aligned: rows of 80 bytes, units of 16 or 32
      store_uint4(&s.b[n][V * ku + 8 * i], v[i]);
  }
  if constexpr (L::kScaled)
    for (int n = tid; n < kTcBN; n += kTcThreads) {
      const TcScales f = s.b_rows[n] >= 0 ? L::scales(w, R, K, static_cast<size_t>(s.b_rows[n]), k0)
                                          : TcScales{{0.0f, 0.0f}, 0.0f};
      for (int g = 0; g < kTcBK / L::kGroup; ++g)
        s.scale[g][n] = f.scale[g];
      s.min[n] = f.min;
    }
}

// For storages with mins, after the tile is loaded: xsum[m] = the sum of tile row m's split x
// (all terms, so that min * xsum is exactly what the mins contribute to the MMAs' products of
// the same x), in fp32; thread tid's share (threads 0 .. 63, warps 0 and 1: a row each).
template <int Terms> __host__ __device__ inline void tc_row_sums(TcShared<Terms> &s, int tid) {
  for (int m = tid; m < kTcBM; m += kTcThreads) {
    float sum = 0.0f;
    for (int t = Terms - 1; t >= 0; --t) // the small terms first
      for (int kk = 0; kk < kTcBK; ++kk)
        sum += bf16_bits(s.a[t][m][kk]);
    s.xsum[m] = sum;
  }
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

// The MMAs of k ks0 .. ks1 - 1 of the K tile (a group: the whole tile, or one k16 step) of warp
// `warp` into part (zeroed by the caller). Device only (mma.sync is warp-collective);
// tc_host_test.cu emulates the same loop.
template <int Terms>
__device__ __forceinline__ void tc_tile_mma(const TcShared<Terms> &s, int warp, int lane,
                                            float (&part)[2][4][4], int ks0, int ks1) {
  const int wm = warp >> 1, wn = warp & 1;
#pragma unroll
  for (int ks = ks0; ks < ks1; ks += 16) {
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

// acc += part of group g, in fp32: for scaled storages times the group's scale of the column,
// and for storages with mins minus min (column) * xsum (row), the K tile's offset.
template <class W, int Terms>
__host__ __device__ inline void tc_accumulate(const TcShared<Terms> &s, int warp, int lane,
                                              const float (&part)[2][4][4], float (&acc)[2][4][4],
                                              int g) {
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        float v = part[mi][ni][c];
        const int col = tc_tile_col(warp, lane, ni, c);
        if constexpr (TcLoad<W>::kScaled)
          v *= s.scale[g][col];
        if constexpr (TcLoad<W>::kMins) // kGroup == kTcBK: one group, one min per K tile
          v -= s.min[col] * s.xsum[tc_tile_row(warp, lane, mi, c)];
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
  using L = TcLoad<W>;
  static_assert(tc_supported<W, K>(), "tc_mainloop: no tensor-core loader for this storage and K");
  static_assert(!L::kScaled || K % kTcBK == 0, "tc_mainloop: scaled tiles: K % 32");
  static_assert(L::kGroup == kTcBK || L::kGroup == 16, "tc_mainloop: groups of 32 or 16 values");
  static_assert(!L::kMins || L::kGroup == kTcBK, "tc_mainloop: mins need one group per K tile");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  tc_zero(acc);
  for (int k0 = 0; k0 < K; k0 += kTcBK) {
    tc_load_tile<W, R, K, Terms>(s, x, w, k0, threadIdx.x);
    __syncthreads();
    if constexpr (L::kMins)
      tc_row_sums(s, threadIdx.x);
#pragma unroll
    for (int g = 0; g < kTcBK / L::kGroup; ++g) {
      float part[2][4][4];
      tc_zero(part);
      tc_tile_mma(s, warp, lane, part, g * L::kGroup, (g + 1) * L::kGroup);
      if constexpr (L::kMins)
        __syncthreads(); // xsum is written
      tc_accumulate<W>(s, warp, lane, part, acc, g);
    }
    __syncthreads(); // the tiles are overwritten by the next step
  }
}

// Storage values of a bias (host and device).
__host__ __device__ inline float tc_value(const float *p) { return *p; }
__host__ __device__ inline float tc_value(const phimoe_rt::bf16 *p) {
  return bf16_bits(p->bits);
}
__host__ __device__ inline float tc_value(const phimoe_rt::f16 *p) { return f16_bits(p->bits); }

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
  PHIMOE_CUDA_KERNEL_PROLOGUE();
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
  PHIMOE_CUDA_LAUNCH(grid, kTcThreads, 0, stream, gemm_tc_kernel<N, K, W, B, kTcXTerms>)
  (x, n, w, bias, out);
}

} // namespace detail
} // namespace phimoe_cuda

#endif // PHIMOE_CUDA_GEMM_TC_CUH
