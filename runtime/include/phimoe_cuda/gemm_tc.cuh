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
// then added in ordinary fp32 (round to nearest; tc_accumulate) to the running sum, so that the
// tensor core's own accumulation (not IEEE round-to-nearest) acts on short sums only.
// q8_0 tiles hold the int8 quants themselves (exact in bf16); the f16 scale of the 32-value
// block (the K tile) multiplies the tile's fp32 partial sum: no rounding of the weights at all.
// q4_K likewise: the tiles hold q (0..15), the K tile is one 32-value sub-block, and
// out += d sc P - dmin m S, with P the tile's partial sum and S the sum of the row's split x
// over the K tile (tc_split_kernel). q6_K: the tiles hold q - 32 and each k16
// MMA step (one 16-value sub-block) accumulates into its own zeroed fragment, scaled by
// d scales[j] of its row.
//
// Tiles: a block of 128 threads (4 warps, 2 x 2) computes 64 rows x 64 columns, K in steps of
// 32; each warp 32 x 32 = 2 (m16) x 4 (n8) MMA tiles. x comes split: a launch of
// tc_split_kernel before the GEMM writes its terms and row sums (TcX), once for all column
// blocks. Shared memory holds two K tiles, each the split x tile (kTcXTerms x 64 x 32 bf16),
// the weight tile (64 x 32 bf16), the scales, mins and row sums of x (q4_K); rows are padded to
// 40 bf16 (80 bytes), so that the fragment loads (ldmatrix: 8 rows of 16 bytes a phase) hit 32
// distinct banks and 16-byte stores stay aligned. The global loads of the next K tile go to
// registers before the MMAs of this one, their stores (the weights unpacked) to the other
// tile after (tc_mainloop). Not cp.async: the quants are unpacked on their way to shared
// memory.
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
// kTcXTerms (runtime.h): bf16 terms per activation (see the header)
static_assert(kTcBK == 32, "gemm_tc: runtime.h's tc_split_stride rounds K to tiles of 32");

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
// tc_split of x0 and x1 at once: term t of both in packed[t], x0's in the low half. On the
// device one cvt.rn.bf16x2.f32 rounds both (round to nearest even, as tc_bf16_round; only a
// nan's payload may differ), and the terms after an inf or nan (which only the first term can
// be) are masked to zero. The CUDA emulation runs the same code with the conversion emulated;
// the CPU tests, tc_split.
template <int Terms>
__host__ __device__ inline void tc_split_pair(float x0, float x1, uint32_t (&packed)[Terms]) {
#if (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800) || defined(PHIMOE_CUDA_EMU)
  float r0 = x0, r1 = x1;
  uint32_t keep = 0xffffffffu;
#pragma unroll
  for (int t = 0; t < Terms; ++t) {
#ifdef PHIMOE_CUDA_EMU
    uint32_t bits = ::phimoe_emu::cvt_rn_bf16x2_f32(r1, r0);
#else
    uint32_t bits;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(bits) : "f"(r1), "f"(r0));
#endif
    bits &= keep;
    packed[t] = bits;
    if (t == 0) { // a half with an exponent of all ones (inf or nan): nothing after it.
      // Exponent + 1 carries into the half's sign bit exactly then (no carry between halves).
      const uint32_t top = ((bits & 0x7f807f80u) + 0x00800080u) & 0x80008000u;
      keep = ~((top >> 15) * 0xffffu);
    }
    r0 -= bits_as_float(bits << 16); // exact: the rounding of r0 to fewer bits
    r1 -= bits_as_float(bits & 0xffff0000u);
  }
#else
  uint16_t p0[Terms], p1[Terms];
  tc_split<Terms>(x0, p0);
  tc_split<Terms>(x1, p1);
  for (int t = 0; t < Terms; ++t)
    packed[t] = p0[t] | static_cast<uint32_t>(p1[t]) << 16;
#endif
}

// Quad v (4 consecutive values of a row) as Terms bf16 terms: term t of v[0], v[1] in lo[t]
// (v[0] in the low half), of v[2], v[3] in hi[t]. Returns the fp32 sum of its terms, the
// small ones first; tc_tree8 of the 8 quads of a K tile is the row's sum there, which the
// mins multiply (so that min * sum is exactly what they contribute to the MMAs' products).
template <int Terms>
__host__ __device__ inline float tc_split_quad(const float (&v)[4], uint32_t (&lo)[Terms],
                                               uint32_t (&hi)[Terms]) {
  tc_split_pair<Terms>(v[0], v[1], lo);
  tc_split_pair<Terms>(v[2], v[3], hi);
  float sum = 0.0f;
#pragma unroll
  for (int term = Terms - 1; term >= 0; --term)
    sum += (bits_as_float(lo[term] << 16) + bits_as_float(lo[term] & 0xffff0000u)) +
           (bits_as_float(hi[term] << 16) + bits_as_float(hi[term] & 0xffff0000u));
  return sum;
}

// The sum of 8 values v[0..7] in the order of a butterfly over 8 lanes (xor 1, 2, 4), which
// gives every lane the same sum (fp32 addition commutes): how tc_split_kernel sums a K tile's
// quads on the device (shuffles), written out for the CPU.
__host__ __device__ inline float tc_tree8(const float (&v)[8]) {
  return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

__host__ __device__ inline uint4 tc_pack8(const uint16_t (&v)[8]) {
  uint4 u;
  u.x = v[0] | static_cast<uint32_t>(v[1]) << 16;
  u.y = v[2] | static_cast<uint32_t>(v[3]) << 16;
  u.z = v[4] | static_cast<uint32_t>(v[5]) << 16;
  u.w = v[6] | static_cast<uint32_t>(v[7]) << 16;
  return u;
}

// ---- the x operand, split once a GEMM ---------------------------------------------------
// The K loop reads x already split: a launch of tc_split_kernel before the GEMM writes each row
// of K values as kTcXTerms rows of bf16 terms of tc_stride<K>() values (K rounded up to whole K
// tiles, zeros past K), and the sum of each K tile's terms (tc_split_quad, tc_tree8), for
// the mins. Split in the K loop, every column block of the GEMM converted the same x again:
// about half of the loop's instructions (bench/sass_stats.py), and a tensor-core GEMM is
// bound by what it issues besides its MMAs.
template <long long K> __host__ __device__ constexpr int tc_stride() {
  return static_cast<int>(tc_split_stride(K)); // the session sizes Context::tc_split by it
}
// Row r's term t: terms + (r * Terms + t) * tc_stride<K>(); its sum over K tile j (values
// 32j .. 32j + 31): sums[r * (tc_stride<K>() / kTcBK) + j]. 16-byte aligned rows.
struct TcX {
  const uint16_t *terms;
  const float *sums;
};

// Row t of x (K values, row-major) into its terms and sums, as tc_split_kernel does it: the
// CPU tests' reference for the kernel, and what they feed the emulated blocks.
template <int K, int Terms>
__host__ __device__ inline void tc_split_row_serial(const float *x, int t, uint16_t *terms,
                                                    float *sums) {
  constexpr int S = tc_stride<K>();
  float part[8];
  for (int q = 0; q < S / 4; ++q) {
    float v[4];
    for (int e = 0; e < 4; ++e)
      v[e] = 4 * q + e < K ? x[static_cast<size_t>(t) * K + 4 * q + e] : 0.0f;
    uint32_t lo[Terms], hi[Terms];
    part[q % 8] = tc_split_quad<Terms>(v, lo, hi);
    for (int term = 0; term < Terms; ++term) {
      uint16_t *p = terms + (static_cast<size_t>(t) * Terms + term) * S + 4 * q;
      p[0] = static_cast<uint16_t>(lo[term]), p[1] = static_cast<uint16_t>(lo[term] >> 16);
      p[2] = static_cast<uint16_t>(hi[term]), p[3] = static_cast<uint16_t>(hi[term] >> 16);
    }
    if (q % 8 == 7)
      sums[static_cast<size_t>(t) * (S / kTcBK) + q / 8] = tc_tree8(part);
  }
}

// Block t: row t of x [n, K] split (see TcX). Each thread one quad at a time, 16-byte loads
// where x allows them; the 8 quads of a K tile lie in 8 consecutive lanes, whose sums the
// shuffles add in tc_tree8's order.
template <int K, int Terms>
__global__ void __launch_bounds__(kTcThreads)
    tc_split_kernel(const float *x, uint16_t *terms, float *sums) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  constexpr int S = tc_stride<K>(), Q = S / 4;
  static_assert(Q % 8 == 0 && kTcThreads % 8 == 0, "tc_split_kernel: a K tile's quads in a warp");
  const int t = blockIdx.x;
  const float *row = x + static_cast<size_t>(t) * K;
  const bool vec = K % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  for (int q0 = 0; q0 < Q; q0 += kTcThreads) { // (a bound the whole block shares: shuffles)
    const int q = q0 + static_cast<int>(threadIdx.x);
    float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (q < Q) {
      if (vec && 4 * q + 4 <= K) {
        const Words w = load16(row + 4 * q);
#pragma unroll
        for (int e = 0; e < 4; ++e)
          v[e] = bits_as_float(w.w[e]);
      } else {
#pragma unroll
        for (int e = 0; e < 4; ++e)
          v[e] = 4 * q + e < K ? row[4 * q + e] : 0.0f;
      }
    }
    uint32_t lo[Terms], hi[Terms];
    float sum = tc_split_quad<Terms>(v, lo, hi);
#pragma unroll
    for (int d = 1; d < kTcBK / 4; d *= 2)
      sum += __shfl_xor_sync(0xffffffffu, sum, d);
    if (q < Q) {
#pragma unroll
      for (int term = 0; term < Terms; ++term) // 8-byte aligned: S % 32 == 0
        store_uint2(terms + (static_cast<size_t>(t) * Terms + term) * S + 4 * q,
                    make_uint2(lo[term], hi[term]));
      if (q % (kTcBK / 4) == 0)
        sums[static_cast<size_t>(t) * (S / kTcBK) + q / (kTcBK / 4)] = sum;
    }
  }
}

// Rows [0, n) of x split into ctx.tc_split (terms, then sums): what the GEMM launched next reads.
template <int K>
inline TcX tc_split_rows(Context &ctx, const float *x, int n, const char *launcher) {
  if (!ctx.tc_split || tc_split_bytes(static_cast<size_t>(n), K) > ctx.tc_split_capacity)
    throw std::runtime_error(std::string(launcher) + ": no room to split " + std::to_string(n) +
                             " rows of " + std::to_string(K) +
                             " values for the tensor cores (Context::tc_split; a phimoe-bin bug)");
  uint16_t *terms = reinterpret_cast<uint16_t *>(ctx.tc_split);
  float *sums = reinterpret_cast<float *>(ctx.tc_split + static_cast<size_t>(n) * tc_stride<K>() *
                                                             2 * kTcXTerms);
  PHIMOE_CUDA_LAUNCH(n, kTcThreads, 0, ctx.stream, tc_split_kernel<K, kTcXTerms>)(x, terms, sums);
  PHIMOE_CUDA_CHECK_LAUNCH();
  return TcX{terms, sums};
}

// ---- weight tile loaders ----------------------------------------------------------------
// TcLoad<W> turns a weight of R rows of K values stored as W into bf16 tiles, in two phases
// so that the main loop can issue the global loads of the next K tile before the MMAs of this
// one and convert what they gave after them (registers in between, tc_mainloop):
//   kUnitValues, Raw, fetch(w, R, K, r, k0) -> Raw: the global loads of values k0 ..
//     k0 + kUnitValues - 1 of row r (k0 % kUnitValues == 0); unpack(raw, k0, dst): those
//     values as bf16 bits, 8 to a uint4 (low half of .x first) in dst[0 .. kUnitValues / 8);
//     values at k >= K are 0; tc_unit() does both;
//   kRowMultiple: K must be a multiple of it (whole blocks) for the loader to apply;
//   kScaled, kGroup, RawScales, fetch_scales(w, R, K, r, k0), scales_of(raw, k0) -> TcScales
//     (tc_scales() does both): the tile holds unscaled integers q; the K tile
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

// Unscaled storages fetch no scales.
struct TcNoScales {};

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
// a + b in each bf16 half, rounded to bf16: one packed FMA (a * 1 + b) on the device. The
// host (and the CUDA emulation) adds in float, which is exact for the small integers here.
__host__ __device__ inline uint32_t tc_bf16x2_add(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t d;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(0x3f803f80u), "r"(b));
  return d;
#else
  const float lo = bf16_bits(static_cast<uint16_t>(a)) + bf16_bits(static_cast<uint16_t>(b));
  const float hi =
      bf16_bits(static_cast<uint16_t>(a >> 16)) + bf16_bits(static_cast<uint16_t>(b >> 16));
  return tc_bf16_round(lo) | static_cast<uint32_t>(tc_bf16_round(hi)) << 16;
#endif
}
// The 4 bytes of `word`, each below 128, minus bias (neg_bias: the bf16 bits of -(128 + bias)
// in both halves; every byte - bias exact in bf16) as 4 bf16 in out[0] (bytes 0, 1) and out[1]
// (bytes 2, 3), two instructions a pair: a PRMT makes the bf16 pair 128 + byte (the byte as the
// mantissa of 2^7), tc_bf16x2_add subtracts. (tc_bytes_bf16 takes 3.5 a value.)
__host__ __device__ inline void tc_small_bytes_bf16(uint32_t word, uint32_t neg_bias,
                                                    uint32_t *out) {
  out[0] = tc_bf16x2_add(byte_perm(word, 0x43434343u, 0x4140u), neg_bias);
  out[1] = tc_bf16x2_add(byte_perm(word, 0x43434343u, 0x4342u), neg_bias);
}
__host__ __device__ inline void tc_store_units(const uint32_t *words, int count, uint4 *dst) {
  for (int i = 0; i < count; ++i)
    dst[i] = make_uint4(words[4 * i], words[4 * i + 1], words[4 * i + 2], words[4 * i + 3]);
}

template <> struct TcLoad<phimoe_rt::bf16> {
  static constexpr bool kSupported = true, kScaled = false, kMins = false;
  static constexpr int kUnitValues = 8, kRowMultiple = 1, kGroup = kTcBK;
  using Raw = uint4; // the unit itself
  using RawScales = TcNoScales;
  __host__ __device__ static Raw fetch(const phimoe_rt::bf16 *w, size_t, int K, size_t r, int k0) {
    const uint16_t *p = reinterpret_cast<const uint16_t *>(w) + r * K + k0;
    // 16-byte aligned: K % 8 == 0, k0 % 8 == 0; whole units in whole K tiles (K % 32 == 0,
    // which the compiler sees in the constant K: no fallback in the loop) or before K.
    if (K % kTcBK == 0 || (K % 8 == 0 && k0 + 8 <= K))
      return load_uint4(p);
    uint16_t v[8];
    for (int j = 0; j < 8; ++j)
      v[j] = k0 + j < K ? p[j] : static_cast<uint16_t>(0);
    return tc_pack8(v);
  }
  __host__ __device__ static void unpack(const Raw &raw, int, uint4 *dst) { *dst = raw; }
  __host__ __device__ static RawScales fetch_scales(const phimoe_rt::bf16 *, size_t, int, size_t,
                                                    int) {
    return {};
  }
  __host__ __device__ static TcScales scales_of(const RawScales &, int) {
    return TcScales{{1.0f, 1.0f}, 0.0f};
  }
};

// q8_0 in the CUDA split layout (quants [R*K] int8, then scales [R*K/32] f16): the tile holds
// the int8 quants (exact in bf16), the block's f16 scale multiplies the K tile's partial sum.
// A unit is 8 quants, one 8-byte load (aligned: K % 32 == 0, k0 % 8 == 0).
template <> struct TcLoad<phimoe_rt::block_q8_0> {
  static constexpr bool kSupported = true, kScaled = true, kMins = false;
  static constexpr int kUnitValues = 8, kRowMultiple = 32, kGroup = kTcBK;
  using Raw = uint2;
  using RawScales = uint32_t; // the block's f16 scale
  __host__ __device__ static Raw fetch(const phimoe_rt::block_q8_0 *w, size_t, int K, size_t r,
                                       int k0) {
    return load_uint2(reinterpret_cast<const int8_t *>(w) + r * K + k0);
  }
  __host__ __device__ static void unpack(const Raw &raw, int, uint4 *dst) {
    // q + 128 as an unsigned byte, minus 128: |q| <= 128 is exact in bf16
    uint32_t out[4];
    tc_bytes_bf16(raw.x ^ 0x80808080u, 128.0f, out);
    tc_bytes_bf16(raw.y ^ 0x80808080u, 128.0f, out + 2);
    tc_store_units(out, 1, dst);
  }
  __host__ __device__ static RawScales fetch_scales(const phimoe_rt::block_q8_0 *w, size_t R, int K,
                                                    size_t r, int k0) {
    const uint8_t *d = reinterpret_cast<const uint8_t *>(w) + R * static_cast<size_t>(K);
    return load_u16(d + 2 * ((r * K + k0) / 32));
  }
  __host__ __device__ static TcScales scales_of(const RawScales &raw, int) {
    return TcScales{{f16_bits(raw), 0.0f}, 0.0f};
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
  using Raw = Words;       // 16 qs bytes
  using RawScales = Words; // d, dmin | scales[12]
  __host__ __device__ static Raw fetch(const W *w, size_t, int K, size_t r, int k0) {
    const size_t block = r * (K / 256) + k0 / 256;
    const int j = k0 % 256, c = j / 64, l = j % 64; // l: 0, 16, 32 or 48
    return load16(reinterpret_cast<const uint8_t *>(w) + block * 128 + 32 * c + l % 32);
  }
  __host__ __device__ static void unpack(const Raw &q, int k0, uint4 *dst) {
    const int shift = k0 % 64 < 32 ? 0 : 4;
    uint32_t out[8];
    for (int i = 0; i < 4; ++i) // q - 0: bf16 -128 in both halves
      tc_small_bytes_bf16((q.w[i] >> shift) & 0x0f0f0f0fu, 0xc300c300u, out + 2 * i);
    tc_store_units(out, 2, dst);
  }
  __host__ __device__ static RawScales fetch_scales(const W *w, size_t R, int K, size_t r, int k0) {
    return load16(Elem<W>::meta(w, R, K, r * (K / 256) + k0 / 256));
  }
  __host__ __device__ static TcScales scales_of(const RawScales &m, int k0) {
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
  struct Raw {
    Words lo, hi; // 16 ql bytes, 16 qh bytes
  };
  struct RawScales {
    uint32_t d;      // f16
    uint32_t scales; // the K tile's two int8 scales (sub-blocks), first in the low byte
  };
  __host__ __device__ static Raw fetch(const W *w, size_t R, int K, size_t r, int k0) {
    const typename Elem<W>::Regions g = Elem<W>::regions(w, R, K);
    const size_t block = r * (K / 256) + k0 / 256;
    const int j = k0 % 256, n = j / 128, t = (j % 128) / 32, l0 = j % 32;
    return Raw{load16(g.ql + block * 128 + 64 * n + 32 * (t & 1) + l0),
               load16(g.qh + block * 64 + 32 * n + l0)};
  }
  __host__ __device__ static void unpack(const Raw &raw, int k0, uint4 *dst) {
    const int t = (k0 % 128) / 32;
    uint32_t out[8];
    for (int i = 0; i < 4; ++i) {
      const uint32_t low4 = (t < 2 ? raw.lo.w[i] : raw.lo.w[i] >> 4) & 0x0f0f0f0fu;
      const uint32_t high2 = ((raw.hi.w[i] >> (2 * t)) & 0x03030303u) << 4;
      tc_small_bytes_bf16(low4 | high2, 0xc320c320u, out + 2 * i); // q - 32: bf16 -160
    }
    tc_store_units(out, 2, dst);
  }
  __host__ __device__ static RawScales fetch_scales(const W *w, size_t R, int K, size_t r, int k0) {
    const typename Elem<W>::Regions g = Elem<W>::regions(w, R, K);
    const size_t block = r * (K / 256) + k0 / 256;
    // the K tile's two sub-blocks' scales: an even offset (k0 % 32 == 0)
    const uint8_t *sc = reinterpret_cast<const uint8_t *>(g.scales) + block * 16 + (k0 % 256) / 16;
    return RawScales{load_u16(g.d + 2 * block), load_u16(sc)};
  }
  __host__ __device__ static TcScales scales_of(const RawScales &raw, int) {
    const float d = f16_bits(raw.d);
    const float s0 = static_cast<float>(static_cast<int8_t>(raw.scales & 0xffu));
    const float s1 = static_cast<float>(static_cast<int8_t>(raw.scales >> 8));
    return TcScales{{d * s0, d * s1}, 0.0f}; // exact: 11-bit times 8-bit integers
  }
};

// One unit's values (fetch and unpack) and one K tile's scales of a row: what the main loop
// does in two phases, in one call (the CPU tests).
template <class W>
__host__ __device__ inline void tc_unit(const W *w, size_t R, int K, size_t r, int k0, uint4 *dst) {
  TcLoad<W>::unpack(TcLoad<W>::fetch(w, R, K, r, k0), k0, dst);
}
template <class W>
__host__ __device__ inline TcScales tc_scales(const W *w, size_t R, int K, size_t r, int k0) {
  return TcLoad<W>::scales_of(TcLoad<W>::fetch_scales(w, R, K, r, k0), k0);
}

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

// One K tile in shared memory: the split x tile, the weight tile, the tile's scales (per
// group) and mins, and the sums of the x tile's rows (for mins).
template <int Terms> struct TcTile {
  alignas(16) uint16_t a[Terms][kTcBM][kTcStride];
  alignas(16) uint16_t b[kTcBN][kTcStride];
  float scale[kTcBK / 16][kTcBN];
  float min[kTcBN];
  float xsum[kTcBM]; // sum over the K tile of the split x (hi + lo) of each tile row
};

// The K tiles in flight: the MMAs read one while the block stores the next into the other.
constexpr int kTcStages = 2;

// The shared memory of a block: its K tiles, and which global row each tile row reads. A
// tile row past the end of x or W reads a row that exists (the tile's first): row m of x only
// reaches row m of the product, row n of W only its column n, and those are not stored. So
// the loads need no conditions, and nothing is zeroed.
template <int Terms> struct TcShared {
  TcTile<Terms> tile[kTcStages];
  int a_rows[kTcBM]; // row of x (row stride K)
  int b_rows[kTcBN]; // row of W
};

// The phases of a block's work are __host__ __device__ functions of (thread or warp, lane), so
// that test/gpu/tc_host_test.cu runs the whole data flow on the CPU (with an emulated MMA).

// What thread tid loads of a K tile from global memory, held in registers from its loads
// (tc_fetch_tile) until its stores to shared memory (tc_store_tile): kXChunks 16-byte chunks
// of the split x tile, kUnits weight units, (threads below kTcBM) the x sum of tile row tid
// for mins, and (threads below kTcBN) the scales of weight row tid.
template <class W, int Terms> struct TcFetch {
  using L = TcLoad<W>;
  static constexpr int kXChunks = Terms * kTcBM * (kTcBK / 8) / kTcThreads;
  static constexpr int kUnitsPerRow = kTcBK / L::kUnitValues;
  static constexpr int kUnits = kTcBN * kUnitsPerRow / kTcThreads;
  static_assert(Terms * kTcBM * (kTcBK / 8) % kTcThreads == 0, "TcFetch: whole x chunks a thread");
  static_assert(kTcBN * kUnitsPerRow % kTcThreads == 0, "TcFetch: whole units a thread");
  static_assert(kTcBN <= kTcThreads && kTcBM <= kTcThreads, "TcFetch: a thread a row's scales");
  uint4 x[kXChunks];
  typename L::Raw w[kUnits];
  typename L::RawScales scales;
  float xsum;
};

// The term, tile row and column (a multiple of 8) of x chunk c (8 bf16) of K tile: c runs
// over a term's rows in groups of 8 chunks, rows m and m + 4 of a group of 8 rows (4 chunks
// each), so that a phase of 8 threads' 16-byte stores hits 32 distinct banks (rows of 80
// bytes: 4 rows apart is 64 bytes mod 128).
__host__ __device__ inline void tc_x_chunk(int c, int &term, int &m, int &col) {
  constexpr int kPerTerm = kTcBM * (kTcBK / 8);
  term = c / kPerTerm;
  const int j = c % kPerTerm, g = j / 8;
  m = 8 * (g / 4) + g % 4 + 4 * ((j / 4) % 2);
  col = 8 * (j % 4);
}

// Thread tid's global loads of K tile k0 (x rows s.a_rows of the split x, weight rows
// s.b_rows), every one issued before any of their values is used.
#pragma nv_exec_check_disable
template <class W, long long R, int K, int Terms>
__host__ __device__ inline void tc_fetch_tile(TcFetch<W, Terms> &f, const TcShared<Terms> &s,
                                              const TcX &x, const W *w, int k0, int tid) {
  using L = TcLoad<W>;
  using F = TcFetch<W, Terms>;
  constexpr int S = tc_stride<K>();
#pragma unroll
  for (int c = 0; c < F::kXChunks; ++c) {
    int term, m, col;
    tc_x_chunk(tid + c * kTcThreads, term, m, col);
    const size_t row = static_cast<size_t>(s.a_rows[m]); // 16-byte aligned: S % 32 == 0
    f.x[c] = load_uint4(x.terms + (row * Terms + term) * S + k0 + col);
  }
  if constexpr (L::kMins)
    if (tid < kTcBM)
      f.xsum = x.sums[static_cast<size_t>(s.a_rows[tid]) * (S / kTcBK) + k0 / kTcBK];
#pragma unroll
  for (int c = 0; c < F::kUnits; ++c) {
    const int u = tid + c * kTcThreads, n = u / F::kUnitsPerRow, ku = u % F::kUnitsPerRow;
    f.w[c] = L::fetch(w, R, K, static_cast<size_t>(s.b_rows[n]), k0 + L::kUnitValues * ku);
  }
  if constexpr (L::kScaled)
    if (tid < kTcBN)
      f.scales = L::fetch_scales(w, R, K, static_cast<size_t>(s.b_rows[tid]), k0);
}

// Thread tid's stores of what it fetched of K tile k0 into tile t: the x chunks and sums as
// they came, the weight units unpacked, the scales decoded.
#pragma nv_exec_check_disable
template <class W, int Terms>
__host__ __device__ inline void tc_store_tile(TcTile<Terms> &t, const TcShared<Terms> &s,
                                              const TcFetch<W, Terms> &f, int k0, int tid) {
  using L = TcLoad<W>;
  using F = TcFetch<W, Terms>;
#pragma unroll
  for (int c = 0; c < F::kXChunks; ++c) {
    int term, m, col;
    tc_x_chunk(tid + c * kTcThreads, term, m, col);
    store_uint4(&t.a[term][m][col], f.x[c]); // 16-byte aligned: rows of 80 bytes
  }
  if constexpr (L::kMins)
    if (tid < kTcBM)
      t.xsum[tid] = f.xsum;
  constexpr int V = L::kUnitValues;
#pragma unroll
  for (int c = 0; c < F::kUnits; ++c) {
    const int u = tid + c * kTcThreads, n = u / F::kUnitsPerRow, ku = u % F::kUnitsPerRow;
    uint4 v[V / 8];
    L::unpack(f.w[c], k0 + V * ku, v);
    for (int i = 0; i < V / 8; ++i) // 16-byte aligned: rows of 80 bytes, units of 16 or 32
      store_uint4(&t.b[n][V * ku + 8 * i], v[i]);
  }
  if constexpr (L::kScaled)
    if (tid < kTcBN) {
      const TcScales sc = L::scales_of(f.scales, k0);
      for (int g = 0; g < kTcBK / L::kGroup; ++g)
        t.scale[g][tid] = sc.scale[g];
      t.min[tid] = sc.min;
    }
}

// Register j of the A fragment of term `term`, MMA rows row0 .. row0+15, k ks .. ks+15; of the
// B fragment of tile columns n0 .. n0+7: what ldmatrix gives tc_tile_mma (tc_host_test holds
// the one to the other, and emulates the MMAs with these).
template <int Terms>
__host__ __device__ inline uint32_t tc_a_reg(const TcTile<Terms> &t, int term, int row0, int ks,
                                             int lane, int j) {
  const uint16_t *p = &t.a[term][row0 + tc_a_row(lane, j)][ks + tc_a_col(lane, j)];
  return p[0] | static_cast<uint32_t>(p[1]) << 16;
}
template <int Terms>
__host__ __device__ inline uint32_t tc_b_reg(const TcTile<Terms> &t, int n0, int ks, int lane,
                                             int j) {
  const uint16_t *p = &t.b[n0 + tc_b_n(lane)][ks + tc_b_k(lane, j)];
  return p[0] | static_cast<uint32_t>(p[1]) << 16;
}

// The fragments by ldmatrix.x4 (four 8 x 8 matrices of bf16; lane l gives the address of row
// l % 8 of matrix l / 8 and gets word l % 4 of row l / 4 of each): for A (tc_a_reg's registers
// 0-3 of MMA rows row0 .. row0+15 at k ks) the matrices are rows 0-7 and 8-15 at k 0-7, then at
// k 8-15; for B, W's rows n0 .. n0+7 at k 0-7 and 8-15, then rows n0+8 .. n0+15 likewise
// (tc_b_reg's registers 0, 1 of two column tiles). What lane l addresses: row and column
// (bf16) offsets.
__host__ __device__ inline int tc_lda_row(int lane) { return (lane & 7) + 8 * ((lane >> 3) & 1); }
__host__ __device__ inline int tc_lda_col(int lane) { return 8 * (lane >> 4); }
__host__ __device__ inline int tc_ldb_row(int lane) { return (lane & 7) + 8 * (lane >> 4); }
__host__ __device__ inline int tc_ldb_col(int lane) { return 8 * ((lane >> 3) & 1); }

// ldmatrix.sync.aligned.m8n8.x4.shared.b16 (sm_75 and newer; rows 16-byte aligned: shared
// rows of 80 bytes, columns 0, 8, 16 or 24).
__device__ __forceinline__ void tc_ldmatrix_x4(const uint16_t *row, uint32_t (&d)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(a));
#elif defined(PHIMOE_CUDA_EMU)
  ::phimoe_emu::ldmatrix_x4(row, d); // test/gpu/emu: the PTX ISA's rule on the CPU
#else
  __trap(); // the CUDA targets are sm_80 and newer
#endif
}

// The MMAs of k ks0 .. ks1 - 1 of the K tile (a group: the whole tile, or one k16 step) of warp
// `warp` into part (zeroed by the caller). Device only (ldmatrix and mma.sync are
// warp-collective); tc_host_test.cu emulates the same loop, and holds the ldmatrix
// addresses to tc_a_reg / tc_b_reg.
template <int Terms>
__device__ __forceinline__ void tc_tile_mma(const TcTile<Terms> &t, int warp, int lane,
                                            float (&part)[2][4][4], int ks0, int ks1) {
  const int wm = warp >> 1, wn = warp & 1;
#pragma unroll
  for (int ks = ks0; ks < ks1; ks += 16) {
    uint32_t bf[4][2];
#pragma unroll
    for (int np = 0; np < 2; ++np) {
      uint32_t r[4];
      tc_ldmatrix_x4(&t.b[wn * 32 + np * 16 + tc_ldb_row(lane)][ks + tc_ldb_col(lane)], r);
      bf[2 * np][0] = r[0], bf[2 * np][1] = r[1];
      bf[2 * np + 1][0] = r[2], bf[2 * np + 1][1] = r[3];
    }
#pragma unroll
    for (int term = Terms - 1; term >= 0; --term) // the small terms first
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
        uint32_t af[4];
        tc_ldmatrix_x4(&t.a[term][wm * 32 + mi * 16 + tc_lda_row(lane)][ks + tc_lda_col(lane)],
                       af);
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
          tc_mma(part[mi][ni], af, bf[ni]);
      }
  }
}

// acc += part of group g, in fp32: for scaled storages times the group's scale of the column
// (one fused multiply-add), and for storages with mins minus min (column) * xsum (row), the K
// tile's offset (another). fmaf rounds once on the host too: the CPU tests and the CUDA
// emulation compute what the device does (nvcc would contract a product and a sum anyway,
// clang within a statement only).
template <class W, int Terms>
__host__ __device__ inline void tc_accumulate(const TcTile<Terms> &t, int warp, int lane,
                                              const float (&part)[2][4][4], float (&acc)[2][4][4],
                                              int g) {
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int col = tc_tile_col(warp, lane, ni, c);
        float a = acc[mi][ni][c];
        if constexpr (TcLoad<W>::kScaled)
          a = fmaf(part[mi][ni][c], t.scale[g][col], a);
        else
          a += part[mi][ni][c];
        if constexpr (TcLoad<W>::kMins) // kGroup == kTcBK: one group, one min per K tile
          a = fmaf(-t.min[col], t.xsum[tc_tile_row(warp, lane, mi, c)], a);
        acc[mi][ni][c] = a;
      }
}

__host__ __device__ inline void tc_zero(float (&v)[2][4][4]) {
  for (int mi = 0; mi < 2; ++mi)
    for (int ni = 0; ni < 4; ++ni)
      for (int c = 0; c < 4; ++c)
        v[mi][ni][c] = 0.0f;
}

// acc[mi][ni][c] = sum over k of x[a_rows[m]][k] * W[b_rows[n]][k] at the (m, n) of
// tc_tile_row / tc_tile_col, x as split by tc_split_rows. s.a_rows and s.b_rows must be set
// (and synced) by the caller. W is R rows of K values (R locates q8_0's scales).
// Block-collective, kTcThreads threads.
//
// Two stages: each thread issues the global loads of K tile k + 1 (into registers, TcFetch)
// before the MMAs of tile k, and stores them into the other tile after: the loads' latency
// is spent on the MMAs of the block itself, not only on other blocks of the SM. One barrier
// a K tile.
template <class W, long long R, int K, int Terms>
__device__ __forceinline__ void tc_mainloop(TcShared<Terms> &s, const TcX &x, const W *w,
                                            float (&acc)[2][4][4]) {
  using L = TcLoad<W>;
  static_assert(tc_supported<W, K>(), "tc_mainloop: no tensor-core loader for this storage and K");
  static_assert(!L::kScaled || K % kTcBK == 0, "tc_mainloop: scaled tiles: K % 32");
  static_assert(L::kGroup == kTcBK || L::kGroup == 16, "tc_mainloop: groups of 32 or 16 values");
  static_assert(!L::kMins || L::kGroup == kTcBK, "tc_mainloop: mins need one group per K tile");
  static_assert(kTcStages == 2, "tc_mainloop: a tile in the MMAs, a tile being stored");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  tc_zero(acc);
  TcFetch<W, Terms> f;
  tc_fetch_tile<W, R, K>(f, s, x, w, 0, threadIdx.x);
  tc_store_tile<W>(s.tile[0], s, f, 0, threadIdx.x);
  __syncthreads();
  int cur = 0;
  for (int k0 = 0; k0 < K; k0 += kTcBK) {
    const bool more = k0 + kTcBK < K;
    if (more)
      tc_fetch_tile<W, R, K>(f, s, x, w, k0 + kTcBK, threadIdx.x);
    const TcTile<Terms> &t = s.tile[cur];
#pragma unroll
    for (int g = 0; g < kTcBK / L::kGroup; ++g) {
      float part[2][4][4];
      tc_zero(part);
      tc_tile_mma(t, warp, lane, part, g * L::kGroup, (g + 1) * L::kGroup);
      tc_accumulate<W>(t, warp, lane, part, acc, g);
    }
    // The other tile was last read before the previous iteration's barrier.
    if (more)
      tc_store_tile<W>(s.tile[cur ^ 1], s, f, k0 + kTcBK, threadIdx.x);
    __syncthreads(); // the next tile is stored; this one may be overwritten after the next MMAs
    cur ^= 1;
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
  for (int i = tid; i < kTcBM; i += kTcThreads) // (past the end: the tile's first, TcShared)
    a_rows[i] = t0 + i < n ? t0 + i : t0;
  for (int i = tid; i < kTcBN; i += kTcThreads)
    b_rows[i] = r0 + i < N ? r0 + i : r0;
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
    gemm_tc_kernel(TcX x, int n, const W *w, const B *bias, float *out) {
  __shared__ TcShared<Terms> s;
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  const int t0 = blockIdx.y * kTcBM, r0 = blockIdx.x * kTcBN;
  tc_gemm_rows(s.a_rows, s.b_rows, n, N, t0, r0, threadIdx.x);
  __syncthreads();
  float acc[2][4][4];
  tc_mainloop<W, N, K, Terms>(s, x, w, acc);
  tc_gemm_store<N>(acc, threadIdx.x >> 5, threadIdx.x & 31, n, t0, r0, bias, out);
}

// out[n, N] = x . W^T + bias: x split (tc_split_rows), then the GEMM.
template <int N, int K, class W, class B>
void gemm_tc(Context &ctx, const float *x, int n, const W *w, const B *bias, float *out) {
  const TcX xs = tc_split_rows<K>(ctx, x, n, "linear");
  dim3 grid(blocks_for(N, kTcBN), blocks_for(n, kTcBM));
  PHIMOE_CUDA_LAUNCH(grid, kTcThreads, 0, ctx.stream, gemm_tc_kernel<N, K, W, B, kTcXTerms>)
  (xs, n, w, bias, out);
}

} // namespace detail
} // namespace phimoe_cuda

#endif // PHIMOE_CUDA_GEMM_TC_CUH
