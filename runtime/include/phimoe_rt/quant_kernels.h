// quant_kernels.h - per-token parts of the quantized CPU kernels: activation quantization and
// integer dot products of q8_0 / q4_K / q6_K weight blocks with quantized activations.
//
// Header-only: it is compiled with the generated code for the model's -march, and the paths
// are chosen at compile time from the target macros:
//   Scalar  portable C++, the reference;
//   Avx2    __AVX2__: maddubs (u8 x s8 -> s16 pairs) and madd (s16 x s16 -> s32 pairs);
//   Avx512  __AVX512F__ and __AVX512BW__: the same on 512-bit vectors;
//   Vnni    __AVX512VNNI__ as well: dpbusd (u8 x s8 -> s32, accumulating) and dpwssd.
// qk::Best is the widest path the target has; every path the target has is compiled, so a
// test binary can compare them all.
//
// Activations (formats of ours, not llama.cpp's; only the weights' layouts are fixed):
//   for q8_0 weights: a row of K values is K int8 then K/32 float scales, x ~ d[b] * q;
//   for q6_K weights: K/256 block_q8k (float scale, 256 int8, 16 sums of 16);
//   for q4_K weights: the same K/256 block_q8k, then K/256 x 8 floats
//     ms[b][l] = -(d_b * float(bsums[2l] + bsums[2l + 1])), the scaled value sum of each
//     32-value sub-block, negated: what a q4_K sub-block's min multiplies (q4k_msums).
// Each block of 32 (q8_0) or 256 values (q8_K) is scaled by amax/127 and rounded to nearest
// (ties to even), so the values stay in [-127, 127]: the AVX2 sign trick needs that.
//
// Exactness: every path computes the same integer sums, per block for q8_0 (a group of 8
// blocks at a time) and, for the k-quants, per 256-value super-block in 8 int32 lanes (which
// values go to which lane is fixed: see Scalar::lanes_q4k and lanes_q6k), and then the same
// float operations in the same order (qk::combine_q8_0, qk::fma_lanes, qk::lanes_sum). So all
// paths give bit-identical results, and a dot product does not depend on the tile it is
// computed in or on the number of threads. The k-quant lanes are accumulated in float lanes
// with fused multiply-adds and summed once per dot product, as vectors hold them: no
// horizontal sum per super-block.
#ifndef PHIMOE_RT_QUANT_KERNELS_H
#define PHIMOE_RT_QUANT_KERNELS_H

#include "phimoe_rt/quant.h"
#include "phimoe_rt/simd.h"

#include <cstddef>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <type_traits>

#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

// The combine steps must not be contracted to FMAs (paths would differ): each statement
// below holds one float operation, and clang contracts only within a statement by default.

namespace phimoe_rt {
namespace qk {

// ---- formats and scalar helpers shared by every path --------------------------------------

// Values per q8_0 scale group of the dot products (blocks summed as one integer vector).
constexpr int kGroup = 8;

// Bytes of one activation row of k values in each format.
constexpr size_t act_bytes_q8_0(int k) {
  return static_cast<size_t>(k) + static_cast<size_t>(k / kQK8_0) * sizeof(float);
}
constexpr size_t act_bytes_q8k(int k) { return static_cast<size_t>(k / kQK_K) * sizeof(block_q8k); }
constexpr size_t act_bytes_q4k(int k) {
  return act_bytes_q8k(k) + static_cast<size_t>(k / kQK_K) * 8 * sizeof(float);
}

PHIMOE_RT_INLINE float half_to_float(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h); // exact for every input
#else
  const f16 v{h};
  return simd::load1(&v);
#endif
}

// round(v) to nearest, ties to even, for |v| < 2^22 (what cvtps2dq does in the default
// rounding mode): adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits.
PHIMOE_RT_INLINE int32_t round_int(float v) {
  const float t = v + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &t, 4);
  return i - 0x4B400000;
}

// The 6-bit scales and mins of a q4_K block as 8 bytes each (sub-blocks 0..7).
PHIMOE_RT_INLINE void q4k_scales(const uint8_t *s12, uint8_t *sc, uint8_t *mn) {
  uint32_t a, b, c;
  std::memcpy(&a, s12, 4);
  std::memcpy(&b, s12 + 4, 4);
  std::memcpy(&c, s12 + 8, 4);
  const uint32_t sc_lo = a & 0x3F3F3F3Fu, mn_lo = b & 0x3F3F3F3Fu;
  const uint32_t sc_hi = (c & 0x0F0F0F0Fu) | ((a >> 2) & 0x30303030u);
  const uint32_t mn_hi = ((c >> 4) & 0x0F0F0F0Fu) | ((b >> 2) & 0x30303030u);
  std::memcpy(sc, &sc_lo, 4);
  std::memcpy(sc + 4, &sc_hi, 4);
  std::memcpy(mn, &mn_lo, 4);
  std::memcpy(mn + 4, &mn_hi, 4);
}


// The sums of 16 of a q8_K block's values.
PHIMOE_RT_INLINE void q8k_bsums(block_q8k &y) {
  for (int j = 0; j < kQK_K / 16; ++j) {
    int s = 0;
    for (int i = 0; i < 16; ++i)
      s += y.qs[16 * j + i];
    y.bsums[j] = static_cast<int16_t>(s);
  }
}

// The min sums of q4_K activations (see the top of the file) for nb blocks y, into ms.
// Scalar code shared by every path (the same float operations whatever the target).
inline void q4k_msums(const block_q8k *y, int nb, float *ms) {
  for (int b = 0; b < nb; ++b)
    for (int l = 0; l < 8; ++l) {
      const int s = y[b].bsums[2 * l] + y[b].bsums[2 * l + 1];
      const float v = y[b].d * static_cast<float>(s);
      ms[8 * b + l] = -v;
    }
}

// Scale and inverse scale of a block with largest magnitude amax (both 0 for a zero block).
PHIMOE_RT_INLINE void block_scale(float amax, float *d, float *id) {
  *d = amax / 127.0f;
  *id = amax > 0.0f ? 127.0f / amax : 0.0f;
}

// ---- the float combine steps (one operation per statement; see the top of the file) -------

// acc[l] += isum[l] * (dw[l] * da[l]) for the lanes of one q8_0 group.
PHIMOE_RT_INLINE void combine_q8_0(const int32_t *isum, const float *dw, const float *da,
                                   int lanes, float *acc) {
  for (int l = 0; l < lanes; ++l) {
    const float s = dw[l] * da[l];
    const float p = static_cast<float>(isum[l]) * s;
    acc[l] = acc[l] + p;
  }
}
// The 8 lanes of a q8_0 accumulator summed in a fixed order.
PHIMOE_RT_INLINE float lanes_sum(const float *acc) {
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}
// acc[l] = fma(float(lanes[l]), scale, acc[l]) for the 8 lanes of a k-quant super-block.
// A q4_K super-block adds its scaled lanes S with scale d * dy, then, lane l, the product
// (dmin * float(m_l)) * ms[l] (fused; the first product is exact: an f16 times a 6-bit
// integer); a q6_K super-block adds its lanes with d * dy (d of the weights, dy of the
// activations). The result is lanes_sum(acc).
PHIMOE_RT_INLINE void fma_lanes(const int32_t *lanes, float scale, float *acc) {
  for (int l = 0; l < 8; ++l)
    acc[l] = std::fma(static_cast<float>(lanes[l]), scale, acc[l]);
}

// ---- Scalar: the reference path -------------------------------------------------------------

// Micro-tile shapes of a path per weight format (q8_0, q4_K, q6_K): tokens and rows of a
// GEMM tile, rows of a GEMV (decode) tile. GEMM shapes: the fastest measured on AMD Zen 5
// (AVX2 with its 16 registers, -march=x86-64-v3); some other shapes spill badly: measure
// before changing. Decode reads each weight once, from memory: one row at a time, so a
// thread streams one sequential run of bytes. Measured on AMD Zen 4 (bench/gemv_micro.cpp,
// weights far larger than the caches, 2 threads): 1-row tiles stream q8_0 and q4_K at
// 24-27 GB/s, 2- and 4-row tiles (rows 4-5 KB apart, read side by side) at 10-14 GB/s,
// although 4-row tiles are faster when the weights sit in cache.
struct TileShape {
  int tt, rr, rr_decode;
};

struct Scalar {
  static constexpr const char *kName = "scalar";
  static constexpr TileShape kShape[3] = {{2, 2, 2}, {2, 2, 2}, {2, 2, 2}};

  static void quantize_q8_0(const float *x, int k, int8_t *qs, float *d) {
    for (int b = 0; b < k / kQK8_0; ++b) {
      const float *xb = x + kQK8_0 * b;
      float amax = 0.0f;
      for (int i = 0; i < kQK8_0; ++i) {
        const float v = xb[i] < 0.0f ? -xb[i] : xb[i];
        amax = amax < v ? v : amax;
      }
      float id;
      block_scale(amax, &d[b], &id);
      for (int i = 0; i < kQK8_0; ++i)
        qs[kQK8_0 * b + i] = static_cast<int8_t>(round_int(xb[i] * id));
    }
  }

  static void quantize_q8k(const float *x, int k, block_q8k *y) {
    for (int b = 0; b < k / kQK_K; ++b) {
      const float *xb = x + kQK_K * b;
      float amax = 0.0f;
      for (int i = 0; i < kQK_K; ++i) {
        const float v = xb[i] < 0.0f ? -xb[i] : xb[i];
        amax = amax < v ? v : amax;
      }
      float id;
      block_scale(amax, &y[b].d, &id);
      for (int i = 0; i < kQK_K; ++i)
        y[b].qs[i] = static_cast<int8_t>(round_int(xb[i] * id));
      q8k_bsums(y[b]);
    }
  }

  // s[t][r][l] = sum_i w[r][l].qs[i] * a[t][32 l + i] for the g <= 8 blocks of a group
  // (lanes l >= g are 0). w[r] points at the group's first block, a[t] at its first value.
  template <int TT, int RR>
  static PHIMOE_RT_INLINE void isums_q8_0(const block_q8_0 *const *w, const int8_t *const *a, int g,
                         int32_t (*s)[RR][kGroup]) {
    for (int t = 0; t < TT; ++t)
      for (int r = 0; r < RR; ++r)
        for (int l = 0; l < kGroup; ++l) {
          int32_t sum = 0;
          if (l < g)
            for (int i = 0; i < kQK8_0; ++i)
              sum += w[r][l].qs[i] * a[t][kQK8_0 * l + i];
          s[t][r][l] = sum;
        }
  }

  // The lanes of one q4_K super-block (value i, 0..255, in sub-block j = i / 32):
  //   S[l] = sum of sc_j * q_i * y_i over the values with i % 32 in [4l, 4l + 4),
  //   M[l] = m_l, the min of sub-block l (per weight row: it meets the activations' ms).
  template <int TT, int RR>
  static PHIMOE_RT_INLINE void lanes_q4k(const block_q4k *const *w, const block_q8k *const *a,
                                         int32_t (*S)[RR][8], int32_t (*M)[8]) {
    for (int r = 0; r < RR; ++r) {
      uint8_t sc[8], mn[8];
      q4k_scales(w[r]->scales, sc, mn);
      for (int l = 0; l < 8; ++l)
        M[r][l] = mn[l];
      for (int t = 0; t < TT; ++t) {
        for (int l = 0; l < 8; ++l)
          S[t][r][l] = 0;
        for (int j = 0; j < 8; ++j)
          for (int l = 0; l < 32; ++l) {
            const uint8_t byte = w[r]->qs[32 * (j / 2) + l];
            const int q = (j % 2) ? byte >> 4 : byte & 0xF;
            S[t][r][l / 4] += sc[j] * q * a[t]->qs[32 * j + l];
          }
      }
    }
  }

  // The lanes of one q6_K super-block (value i in sub-block j = i / 16, quant q_i - 32):
  //   S[l] = sum of sc_j * q_i * y_i over the values with i % 32 in [4l, 4l + 4)
  //          - 32 * (sc_{2l} * bsums[2l] + sc_{2l+1} * bsums[2l + 1]).
  template <int TT, int RR>
  static PHIMOE_RT_INLINE void lanes_q6k(const block_q6k *const *w, const block_q8k *const *a,
                                         int32_t (*S)[RR][8]) {
    for (int r = 0; r < RR; ++r) {
      uint8_t q[kQK_K];
      for (int half = 0; half < 2; ++half)
        for (int l = 0; l < 32; ++l) {
          const uint8_t *ql = w[r]->ql + 64 * half;
          const uint8_t h = w[r]->qh[32 * half + l];
          uint8_t *qv = q + 128 * half;
          qv[l] = static_cast<uint8_t>((ql[l] & 0xF) | ((h & 3) << 4));
          qv[l + 32] = static_cast<uint8_t>((ql[l + 32] & 0xF) | (((h >> 2) & 3) << 4));
          qv[l + 64] = static_cast<uint8_t>((ql[l] >> 4) | (((h >> 4) & 3) << 4));
          qv[l + 96] = static_cast<uint8_t>((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4));
        }
      for (int t = 0; t < TT; ++t) {
        for (int l = 0; l < 8; ++l)
          S[t][r][l] = -32 * (w[r]->scales[2 * l] * a[t]->bsums[2 * l] +
                              w[r]->scales[2 * l + 1] * a[t]->bsums[2 * l + 1]);
        for (int i = 0; i < kQK_K; ++i)
          S[t][r][(i % 32) / 4] += w[r]->scales[i / 16] * q[i] * a[t]->qs[i];
      }
    }
  }
};

// ---- Avx2 -----------------------------------------------------------------------------------

#if defined(__AVX2__)
namespace x86 {

PHIMOE_RT_INLINE __m256i load256(const void *p) {
  return _mm256_loadu_si256(static_cast<const __m256i *>(p));
}
PHIMOE_RT_INLINE __m128i load128(const void *p) {
  return _mm_loadu_si128(static_cast<const __m128i *>(p));
}

// The largest |x| of 8 lanes.
PHIMOE_RT_INLINE float hmax(__m256 m) {
  m = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
  m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0x4E));
  m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0xB1));
  return _mm256_cvtss_f32(m);
}
PHIMOE_RT_INLINE __m256 vabs(__m256 v) {
  return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

// 32 floats times id, rounded, as 32 int8 (in order).
PHIMOE_RT_INLINE void round32(const float *x, __m256 id, int8_t *out) {
  const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), id));
  const __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), id));
  const __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), id));
  const __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), id));
  const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
  _mm256_storeu_si256(reinterpret_cast<__m256i *>(out),
                      _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

// The q4_K scales as int16 [sc0..sc7] in both 128-bit lanes, and the mins as int32 [m0..m7].
PHIMOE_RT_INLINE void q4k_scales_avx2(const block_q4k *w, __m256i *sc16, __m256i *mn32) {
  // 16 bytes from the scales (the last 4 are qs, unused): q4k_scales with byte shuffles,
  // [sc0..sc7, m0..m7] = low bits | high bits
  const __m128i v = load128(w->scales);
  const __m128i a = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
  const __m128i b = _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
  const __m128i a_hi = _mm_srli_epi16(a, 4); // bytes 12..15: the high nibbles of bytes 8..11
  const __m128i low = _mm_and_si128(_mm_blend_epi16(a, a_hi, 0xC0),
                                    _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63,
                                                  15, 15, 15, 15));
  const __m128i high = _mm_and_si128(_mm_srli_epi16(b, 2), _mm_set1_epi8(0x30));
  const __m128i sm = _mm_or_si128(low, high);
  *sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
  *mn32 = _mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8));
}

// The quants of values 64j .. 64j+31 (lo) and 64j+32 .. 64j+63 (hi), one per byte.
PHIMOE_RT_INLINE void q4k_quants(const block_q4k *w, int j, __m256i *lo, __m256i *hi) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i q = load256(w->qs + 32 * j);
  *lo = _mm256_and_si256(q, m4);
  *hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
}

} // namespace x86

struct Avx2 {
  static constexpr const char *kName = "avx2";
  static constexpr TileShape kShape[3] = {{3, 3, 1}, {4, 2, 1}, {4, 2, 1}};

  static void quantize_q8_0(const float *x, int k, int8_t *qs, float *d) {
    for (int b = 0; b < k / kQK8_0; ++b) {
      const float *xb = x + kQK8_0 * b;
      const __m256 m = _mm256_max_ps(
          _mm256_max_ps(x86::vabs(_mm256_loadu_ps(xb)), x86::vabs(_mm256_loadu_ps(xb + 8))),
          _mm256_max_ps(x86::vabs(_mm256_loadu_ps(xb + 16)), x86::vabs(_mm256_loadu_ps(xb + 24))));
      float id;
      block_scale(x86::hmax(m), &d[b], &id);
      x86::round32(xb, _mm256_set1_ps(id), qs + kQK8_0 * b);
    }
  }

  static void quantize_q8k(const float *x, int k, block_q8k *y) {
    for (int b = 0; b < k / kQK_K; ++b) {
      const float *xb = x + kQK_K * b;
      __m256 m = _mm256_setzero_ps();
      for (int i = 0; i < kQK_K; i += 8)
        m = _mm256_max_ps(m, x86::vabs(_mm256_loadu_ps(xb + i)));
      float id;
      block_scale(x86::hmax(m), &y[b].d, &id);
      for (int i = 0; i < kQK_K; i += 32)
        x86::round32(xb + i, _mm256_set1_ps(id), y[b].qs + i);
      // sums of 16: maddubs with ones gives pair sums, madd with ones quad sums
      const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
      __m256i quads[8];
      for (int i = 0; i < 8; ++i)
        quads[i] = _mm256_madd_epi16(
            _mm256_maddubs_epi16(ones8, x86::load256(y[b].qs + 32 * i)), ones16);
      // quads[i] = [4-sums of values 32i .. 32i+31]; pairs of lanes make 16-sums
      for (int i = 0; i < 8; i += 2) {
        const __m256i h = _mm256_hadd_epi32(quads[i], quads[i + 1]); // 8-sums
        const __m256i s = _mm256_hadd_epi32(h, h);                   // 16-sums
        // lanes: [i:0-15, i:16-31 ... ] s lo lane = [q_i 16a, q_i 16b(no)...]
        int32_t tmp[8];
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(tmp), s);
        // lo lane of s: [i(0..15), i+1(0..15), i(0..15), i+1(0..15)];
        // hi lane: [i(16..31), i+1(16..31), ...]
        y[b].bsums[2 * i + 0] = static_cast<int16_t>(tmp[0]);
        y[b].bsums[2 * i + 1] = static_cast<int16_t>(tmp[4]);
        y[b].bsums[2 * i + 2] = static_cast<int16_t>(tmp[1]);
        y[b].bsums[2 * i + 3] = static_cast<int16_t>(tmp[5]);
      }
    }
  }

  template <int TT, int RR>
  static PHIMOE_RT_INLINE void isums_q8_0(const block_q8_0 *const *w, const int8_t *const *a, int g,
                         int32_t (*s)[RR][kGroup]) {
    const __m256i ones = _mm256_set1_epi16(1), zero = _mm256_setzero_si256();
    // h[t][r][p]: after blocks 2p, 2p+1: hadd of their vectors; q[t][r][k]: of 4 blocks.
    __m256i q[TT][RR][2];
    for (int half = 0; half < 2; ++half) {
      __m256i h[TT][RR][2];
      for (int p = 0; p < 2; ++p) {
        __m256i v[TT][RR][2];
        for (int e = 0; e < 2; ++e) {
          const int l = 4 * half + 2 * p + e;
          if (l >= g) {
            for (int t = 0; t < TT; ++t)
              for (int r = 0; r < RR; ++r)
                v[t][r][e] = zero;
            continue;
          }
          __m256i wq[RR], wa[RR];
          for (int r = 0; r < RR; ++r) {
            wq[r] = x86::load256(w[r][l].qs);
            wa[r] = _mm256_sign_epi8(wq[r], wq[r]);
          }
          for (int t = 0; t < TT; ++t) {
            const __m256i y = x86::load256(a[t] + kQK8_0 * l);
            for (int r = 0; r < RR; ++r)
              v[t][r][e] = _mm256_madd_epi16(
                  _mm256_maddubs_epi16(wa[r], _mm256_sign_epi8(y, wq[r])), ones);
          }
        }
        for (int t = 0; t < TT; ++t)
          for (int r = 0; r < RR; ++r)
            h[t][r][p] = _mm256_hadd_epi32(v[t][r][0], v[t][r][1]);
      }
      for (int t = 0; t < TT; ++t)
        for (int r = 0; r < RR; ++r)
          q[t][r][half] = _mm256_hadd_epi32(h[t][r][0], h[t][r][1]);
    }
    for (int t = 0; t < TT; ++t)
      for (int r = 0; r < RR; ++r) {
        const __m256i a4 = q[t][r][0], b4 = q[t][r][1];
        const __m256i sum = _mm256_add_epi32(_mm256_permute2x128_si256(a4, b4, 0x20),
                                             _mm256_permute2x128_si256(a4, b4, 0x31));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(s[t][r]), sum);
      }
  }

  // Scalar::lanes_q4k on vectors: lane l of the int32 vectors S and M.
  template <int TT, int RR>
  static PHIMOE_RT_INLINE void vlanes_q4k(const block_q4k *const *w, const block_q8k *const *a,
                                          __m256i (*S)[RR], __m256i *M) {
    __m256i sc16[RR];
    for (int r = 0; r < RR; ++r)
      x86::q4k_scales_avx2(w[r], &sc16[r], &M[r]);
    for (int j = 0; j < 4; ++j) {
      // sub-blocks 2j (values 64j .. 64j+31) and 2j+1 (the next 32)
      const __m256i pick_lo = _mm256_set1_epi16(static_cast<int16_t>(((4 * j + 1) << 8) | (4 * j)));
      const __m256i pick_hi =
          _mm256_set1_epi16(static_cast<int16_t>(((4 * j + 3) << 8) | (4 * j + 2)));
      __m256i lo[RR], hi[RR], slo[RR], shi[RR];
      for (int r = 0; r < RR; ++r) {
        x86::q4k_quants(w[r], j, &lo[r], &hi[r]);
        slo[r] = _mm256_shuffle_epi8(sc16[r], pick_lo);
        shi[r] = _mm256_shuffle_epi8(sc16[r], pick_hi);
      }
      for (int t = 0; t < TT; ++t) {
        const __m256i ylo = x86::load256(a[t]->qs + 64 * j);
        const __m256i yhi = x86::load256(a[t]->qs + 64 * j + 32);
        for (int r = 0; r < RR; ++r) {
          const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo[r], ylo), slo[r]);
          const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi[r], yhi), shi[r]);
          const __m256i p = _mm256_add_epi32(p0, p1);
          S[t][r] = j == 0 ? p : _mm256_add_epi32(S[t][r], p);
        }
      }
    }
  }

  // Scalar::lanes_q6k on vectors.
  template <int TT, int RR>
  static PHIMOE_RT_INLINE void vlanes_q6k(const block_q6k *const *w, const block_q8k *const *a,
                                          __m256i (*S)[RR]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    __m128i sc8[RR];
    __m256i sc32[RR]; // scales * 32 as int16, for the bsums correction
    for (int r = 0; r < RR; ++r) {
      sc8[r] = x86::load128(w[r]->scales);
      sc32[r] = _mm256_slli_epi16(_mm256_cvtepi8_epi16(sc8[r]), 5);
    }
    __m256i acc[TT][RR];
    for (int v = 0; v < 8; ++v) { // values 32v .. 32v+31: sub-blocks 2v, 2v+1
      const int half = v / 4, k = v % 4;
      const __m128i pick = _mm_setr_epi8(
          static_cast<char>(2 * v), static_cast<char>(2 * v), static_cast<char>(2 * v),
          static_cast<char>(2 * v), static_cast<char>(2 * v), static_cast<char>(2 * v),
          static_cast<char>(2 * v), static_cast<char>(2 * v), static_cast<char>(2 * v + 1),
          static_cast<char>(2 * v + 1), static_cast<char>(2 * v + 1), static_cast<char>(2 * v + 1),
          static_cast<char>(2 * v + 1), static_cast<char>(2 * v + 1), static_cast<char>(2 * v + 1),
          static_cast<char>(2 * v + 1));
      __m256i q[RR], sc[RR];
      for (int r = 0; r < RR; ++r) {
        const __m256i ql = x86::load256(w[r]->ql + 64 * half + 32 * (k & 1));
        const __m256i qh = x86::load256(w[r]->qh + 32 * half);
        const __m256i low = k < 2 ? _mm256_and_si256(ql, m4)
                                  : _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4);
        __m256i high; // bits 2k, 2k+1 of qh moved to bits 4, 5
        switch (k) {
        case 0: high = _mm256_slli_epi16(qh, 4); break;
        case 1: high = _mm256_slli_epi16(qh, 2); break;
        case 2: high = qh; break;
        default: high = _mm256_srli_epi16(qh, 2); break;
        }
        q[r] = _mm256_or_si256(low, _mm256_and_si256(high, m30));
        sc[r] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8[r], pick));
      }
      for (int t = 0; t < TT; ++t) {
        const __m256i y = x86::load256(a[t]->qs + 32 * v);
        for (int r = 0; r < RR; ++r) {
          const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q[r], y), sc[r]);
          acc[t][r] = v == 0 ? p : _mm256_add_epi32(acc[t][r], p);
        }
      }
    }
    for (int t = 0; t < TT; ++t) {
      const __m256i bs = x86::load256(a[t]->bsums);
      for (int r = 0; r < RR; ++r)
        S[t][r] = _mm256_sub_epi32(acc[t][r], _mm256_madd_epi16(sc32[r], bs));
    }
  }
};
#endif // __AVX2__

// ---- Avx512 and Vnni ------------------------------------------------------------------------

#if defined(__AVX512F__) && defined(__AVX512BW__)
namespace x86 {

PHIMOE_RT_INLINE __m512i load512(const void *p) { return _mm512_loadu_si512(p); }

// The sum of the two 256-bit halves.
PHIMOE_RT_INLINE __m256i fold(__m512i v) {
  return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

// Vectors of 16 int32 holding block pairs (2i, 2i+1) as [8 lanes of 2i | 8 lanes of 2i+1]:
// the 8 block sums in order.
PHIMOE_RT_INLINE __m256i reduce8_pairs(__m512i v01, __m512i v23, __m512i v45, __m512i v67) {
  const __m512i s1 =
      _mm512_add_epi32(_mm512_unpacklo_epi32(v01, v23), _mm512_unpackhi_epi32(v01, v23));
  const __m512i s2 =
      _mm512_add_epi32(_mm512_unpacklo_epi32(v45, v67), _mm512_unpackhi_epi32(v45, v67));
  // 128-bit lane k: [sum of lane k of v01, v23, v45, v67]
  const __m512i s3 =
      _mm512_add_epi32(_mm512_unpacklo_epi64(s1, s2), _mm512_unpackhi_epi64(s1, s2));
  // lanes 0 + 1: blocks 0, 2, 4, 6; lanes 2 + 3: blocks 1, 3, 5, 7
  const __m512i s4 = _mm512_add_epi32(s3, _mm512_shuffle_i32x4(s3, s3, 0xB1));
  const __m512i order = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_castsi512_si256(_mm512_permutexvar_epi32(order, s4));
}

// The quants of values 64c .. 64c+63 in one vector, one per byte.
PHIMOE_RT_INLINE __m512i q4k_quants512(const block_q4k *w, int c) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
  const __m512i b = _mm512_broadcast_i64x4(load256(w->qs + 32 * c));
  return _mm512_and_si512(_mm512_srlv_epi16(b, shift), m4);
}

// acc + madd(a, b): dpwssd with VNNI.
template <bool Vnni> PHIMOE_RT_INLINE __m512i madd_acc(__m512i acc, __m512i a, __m512i b) {
#if defined(__AVX512VNNI__)
  if constexpr (Vnni)
    return _mm512_dpwssd_epi32(acc, a, b);
#endif
  return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
}

PHIMOE_RT_INLINE float hmax512(__m512 m) { return _mm512_reduce_max_ps(m); }
PHIMOE_RT_INLINE __m512 vabs512(__m512 v) {
  return _mm512_castsi512_ps(
      _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7FFFFFFF)));
}
// 16 floats times id, rounded, as 16 int8.
PHIMOE_RT_INLINE void round16(const float *x, __m512 id, int8_t *out) {
  const __m512i i = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x), id));
  _mm_storeu_si128(reinterpret_cast<__m128i *>(out), _mm512_cvtepi32_epi8(i));
}

} // namespace x86

template <bool Vnni> struct Avx512T {
  static constexpr const char *kName = Vnni ? "vnni" : "avx512";
  static constexpr TileShape kShape[3] = {{3, 3, 1}, {4, 3, 1}, {4, 4, 1}};

  static void quantize_q8_0(const float *x, int k, int8_t *qs, float *d) {
    for (int b = 0; b < k / kQK8_0; ++b) {
      const float *xb = x + kQK8_0 * b;
      const __m512 m = _mm512_max_ps(x86::vabs512(_mm512_loadu_ps(xb)),
                                     x86::vabs512(_mm512_loadu_ps(xb + 16)));
      float id;
      block_scale(x86::hmax512(m), &d[b], &id);
      const __m512 idv = _mm512_set1_ps(id);
      x86::round16(xb, idv, qs + kQK8_0 * b);
      x86::round16(xb + 16, idv, qs + kQK8_0 * b + 16);
    }
  }

  static void quantize_q8k(const float *x, int k, block_q8k *y) {
    for (int b = 0; b < k / kQK_K; ++b) {
      const float *xb = x + kQK_K * b;
      __m512 m = _mm512_setzero_ps();
      for (int i = 0; i < kQK_K; i += 16)
        m = _mm512_max_ps(m, x86::vabs512(_mm512_loadu_ps(xb + i)));
      float id;
      block_scale(x86::hmax512(m), &y[b].d, &id);
      const __m512 idv = _mm512_set1_ps(id);
      for (int i = 0; i < kQK_K; i += 16) {
        const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + i), idv));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(y[b].qs + i), _mm512_cvtepi32_epi8(q));
        y[b].bsums[i / 16] = static_cast<int16_t>(_mm512_reduce_add_epi32(q));
      }
    }
  }

  // Two blocks (l, l+1) per 512-bit vector; VNNI: dpbusd of (w + 128) as u8 with y, started
  // from -128 * sum(y) (so that it sums w * y); otherwise the sign trick with maddubs.
  template <int TT, int RR>
  static PHIMOE_RT_INLINE void isums_q8_0(const block_q8_0 *const *w, const int8_t *const *a, int g,
                         int32_t (*s)[RR][kGroup]) {
    __m512i v[TT][RR][4];
    const __m512i zero = _mm512_setzero_si512();
    for (int p = 0; p < 4; ++p) {
      const int l = 2 * p;
      if (l >= g) {
        for (int t = 0; t < TT; ++t)
          for (int r = 0; r < RR; ++r)
            v[t][r][p] = zero;
        continue;
      }
      const bool both = l + 1 < g;
      __m512i wq[RR];
      for (int r = 0; r < RR; ++r) {
        const __m256i w0 = x86::load256(w[r][l].qs);
        const __m256i w1 = both ? x86::load256(w[r][l + 1].qs) : _mm256_setzero_si256();
        wq[r] = _mm512_inserti64x4(_mm512_castsi256_si512(w0), w1, 1);
      }
      for (int t = 0; t < TT; ++t) {
        const __m512i y = both ? x86::load512(a[t] + kQK8_0 * l)
                               : _mm512_zextsi256_si512(x86::load256(a[t] + kQK8_0 * l));
#if defined(__AVX512VNNI__)
        if constexpr (Vnni) {
          const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
          const __m512i neg = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, bias, y));
          for (int r = 0; r < RR; ++r)
            v[t][r][p] = _mm512_dpbusd_epi32(neg, _mm512_xor_si512(wq[r], bias), y);
          continue;
        }
#endif
        const __m512i ones = _mm512_set1_epi16(1);
        for (int r = 0; r < RR; ++r) {
          const __mmask64 negw = _mm512_movepi8_mask(wq[r]);
          const __m512i ys = _mm512_mask_sub_epi8(y, negw, zero, y);
          v[t][r][p] =
              _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(wq[r]), ys), ones);
        }
      }
    }
    for (int t = 0; t < TT; ++t)
      for (int r = 0; r < RR; ++r)
        _mm256_storeu_si256(
            reinterpret_cast<__m256i *>(s[t][r]),
            x86::reduce8_pairs(v[t][r][0], v[t][r][1], v[t][r][2], v[t][r][3]));
  }

  // Scalar::lanes_q4k: 64 values per vector (values 64c .. 64c+31 in the low half, the next
  // 32 in the high half), the halves added at the end.
  template <int TT, int RR>
  static PHIMOE_RT_INLINE void vlanes_q4k(const block_q4k *const *w, const block_q8k *const *a,
                                          __m256i (*S)[RR], __m256i *M) {
    __m512i sc16[RR];
    for (int r = 0; r < RR; ++r) {
      __m256i s;
      x86::q4k_scales_avx2(w[r], &s, &M[r]);
      sc16[r] = _mm512_castsi256_si512(s);
    }
    __m512i acc[TT][RR];
    for (int c = 0; c < 4; ++c) {
      const __m512i pick = _mm512_inserti64x4(_mm512_set1_epi16(static_cast<int16_t>(2 * c)),
                                              _mm256_set1_epi16(static_cast<int16_t>(2 * c + 1)), 1);
      __m512i q[RR], sc[RR];
      for (int r = 0; r < RR; ++r) {
        q[r] = x86::q4k_quants512(w[r], c);
        sc[r] = _mm512_permutexvar_epi16(pick, sc16[r]);
      }
      for (int t = 0; t < TT; ++t) {
        const __m512i y = x86::load512(a[t]->qs + 64 * c);
        for (int r = 0; r < RR; ++r) {
          const __m512i p = _mm512_maddubs_epi16(q[r], y);
          acc[t][r] = c == 0 ? _mm512_madd_epi16(p, sc[r]) : x86::madd_acc<Vnni>(acc[t][r], p, sc[r]);
        }
      }
    }
    for (int t = 0; t < TT; ++t)
      for (int r = 0; r < RR; ++r)
        S[t][r] = x86::fold(acc[t][r]);
  }

  // Scalar::lanes_q6k, 64 values per vector, the halves added at the end.
  template <int TT, int RR>
  static PHIMOE_RT_INLINE void vlanes_q6k(const block_q6k *const *w, const block_q8k *const *a,
                                          __m256i (*S)[RR]) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    // per 256-bit half: (qh << 4, qh << 2) for values 0..63 and (qh, qh >> 2) for 64..127
    const __m512i shl = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shr = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    __m512i sc16[RR];
    __m256i sc32[RR];
    for (int r = 0; r < RR; ++r) {
      const __m256i s = _mm256_cvtepi8_epi16(x86::load128(w[r]->scales));
      sc16[r] = _mm512_castsi256_si512(s);
      sc32[r] = _mm256_slli_epi16(s, 5);
    }
    __m512i acc[TT][RR];
    for (int v = 0; v < 4; ++v) { // values 64v .. 64v+63: sub-blocks 4v .. 4v+3
      const int half = v / 2;
      alignas(64) int16_t idx[32];
      for (int i = 0; i < 32; ++i)
        idx[i] = static_cast<int16_t>(4 * v + i / 8);
      const __m512i pick = _mm512_load_si512(idx);
      __m512i q[RR], sc[RR];
      for (int r = 0; r < RR; ++r) {
        const __m512i ql = x86::load512(w[r]->ql + 64 * half);
        const __m512i qh = _mm512_broadcast_i64x4(x86::load256(w[r]->qh + 32 * half));
        if (v % 2 == 0)
          q[r] = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                 _mm512_and_si512(_mm512_sllv_epi16(qh, shl), m30));
        else
          q[r] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                 _mm512_and_si512(_mm512_srlv_epi16(qh, shr), m30));
        sc[r] = _mm512_permutexvar_epi16(pick, sc16[r]);
      }
      for (int t = 0; t < TT; ++t) {
        const __m512i y = x86::load512(a[t]->qs + 64 * v);
        for (int r = 0; r < RR; ++r) {
          const __m512i p = _mm512_maddubs_epi16(q[r], y);
          acc[t][r] = v == 0 ? _mm512_madd_epi16(p, sc[r]) : x86::madd_acc<Vnni>(acc[t][r], p, sc[r]);
        }
      }
    }
    for (int t = 0; t < TT; ++t) {
      const __m256i bs = x86::load256(a[t]->bsums);
      for (int r = 0; r < RR; ++r)
        S[t][r] = _mm256_sub_epi32(x86::fold(acc[t][r]), _mm256_madd_epi16(sc32[r], bs));
    }
  }
};
using Avx512 = Avx512T<false>;
#if defined(__AVX512VNNI__)
using Vnni = Avx512T<true>;
#endif
#endif // __AVX512F__ && __AVX512BW__

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
using Best = Vnni;
#elif defined(__AVX512F__) && defined(__AVX512BW__)
using Best = Avx512;
#elif defined(__AVX2__)
using Best = Avx2;
#else
using Best = Scalar;
#endif

// ---- tiles: res[t][r] = dot(activation row t, weight row r) over nb blocks ------------------

// Bytes ahead of a weight row's current block that a tile prefetches.
constexpr int kPrefetchAhead = 1024;

PHIMOE_RT_INLINE void prefetch_span(const void *p, int bytes) {
  for (int off = 0; off < bytes; off += 64) // a prefetch never faults
    __builtin_prefetch(static_cast<const char *>(p) + kPrefetchAhead + off);
}

// q8_0 weights; a[t] is an activation row of nb blocks (act_bytes_q8_0 layout).
template <class P, int TT, int RR>
PHIMOE_RT_INLINE void tile_q8_0(const block_q8_0 *const *w, const uint8_t *const *a, int nb,
                                float (&res)[TT][RR]) {
#if defined(__AVX2__) && defined(__F16C__)
  // The same per-lane operations as combine_q8_0 (multiply, multiply, add: no fused
  // multiply-add), on 8-lane vectors kept in registers: whole groups of 8 blocks.
  __m256 accv[TT][RR];
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < RR; ++r)
      accv[t][r] = _mm256_setzero_ps();
  const int whole = nb / kGroup * kGroup;
  for (int b = 0; b < whole; b += kGroup) {
    const block_q8_0 *wb[RR];
    const int8_t *ab[TT];
    __m256 dw[RR], da[TT];
    for (int r = 0; r < RR; ++r) {
      wb[r] = w[r] + b;
      prefetch_span(wb[r], kGroup * static_cast<int>(sizeof(block_q8_0)));
      const block_q8_0 *x = wb[r];
      dw[r] = _mm256_cvtph_ps(_mm_setr_epi16(
          static_cast<short>(x[0].d), static_cast<short>(x[1].d), static_cast<short>(x[2].d),
          static_cast<short>(x[3].d), static_cast<short>(x[4].d), static_cast<short>(x[5].d),
          static_cast<short>(x[6].d), static_cast<short>(x[7].d)));
    }
    for (int t = 0; t < TT; ++t) {
      ab[t] = reinterpret_cast<const int8_t *>(a[t]) + kQK8_0 * b;
      const float *d = reinterpret_cast<const float *>(a[t] + static_cast<size_t>(nb) * kQK8_0);
      da[t] = _mm256_loadu_ps(d + b);
    }
    int32_t s[TT][RR][kGroup];
    P::template isums_q8_0<TT, RR>(wb, ab, kGroup, s);
    for (int t = 0; t < TT; ++t)
      for (int r = 0; r < RR; ++r) {
        const __m256 isum =
            _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(s[t][r])));
        accv[t][r] = _mm256_add_ps(accv[t][r], _mm256_mul_ps(isum, _mm256_mul_ps(dw[r], da[t])));
      }
  }
  float acc[TT][RR][kGroup];
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < RR; ++r)
      _mm256_storeu_ps(acc[t][r], accv[t][r]);
  const int first = whole;
#else
  float acc[TT][RR][kGroup];
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < RR; ++r)
      for (int l = 0; l < kGroup; ++l)
        acc[t][r][l] = 0.0f;
  const int first = 0;
#endif
  for (int b = first; b < nb; b += kGroup) {
    const int g = nb - b < kGroup ? nb - b : kGroup;
    const block_q8_0 *wb[RR];
    const int8_t *ab[TT];
    float dw[RR][kGroup] = {}, da[TT][kGroup] = {};
    for (int r = 0; r < RR; ++r) {
      wb[r] = w[r] + b;
      prefetch_span(wb[r], kGroup * static_cast<int>(sizeof(block_q8_0)));
      for (int l = 0; l < g; ++l)
        dw[r][l] = half_to_float(wb[r][l].d);
    }
    for (int t = 0; t < TT; ++t) {
      ab[t] = reinterpret_cast<const int8_t *>(a[t]) + kQK8_0 * b;
      const float *d = reinterpret_cast<const float *>(a[t] + static_cast<size_t>(nb) * kQK8_0);
      for (int l = 0; l < g; ++l)
        da[t][l] = d[b + l];
    }
    int32_t s[TT][RR][kGroup];
    P::template isums_q8_0<TT, RR>(wb, ab, g, s);
    for (int t = 0; t < TT; ++t)
      for (int r = 0; r < RR; ++r)
        combine_q8_0(s[t][r], dw[r], da[t], g, acc[t][r]);
  }
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < RR; ++r)
      res[t][r] = lanes_sum(acc[t][r]);
}

// The k-quant lanes of TT x RR super-blocks as int32 arrays: P::lanes_* for the scalar
// path, the vector lanes stored for the others (what the tests compare).
template <class P, int TT, int RR>
PHIMOE_RT_INLINE void lanes_q4k(const block_q4k *const *w, const block_q8k *const *a,
                                int32_t (*S)[RR][8], int32_t (*M)[8]) {
#if defined(__AVX2__)
  if constexpr (!std::is_same_v<P, Scalar>) {
    __m256i vs[TT][RR], vm[RR];
    P::template vlanes_q4k<TT, RR>(w, a, vs, vm);
    for (int r = 0; r < RR; ++r) {
      _mm256_storeu_si256(reinterpret_cast<__m256i *>(M[r]), vm[r]);
      for (int t = 0; t < TT; ++t)
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(S[t][r]), vs[t][r]);
    }
    return;
  }
#endif
  Scalar::lanes_q4k<TT, RR>(w, a, S, M);
}
template <class P, int TT, int RR>
PHIMOE_RT_INLINE void lanes_q6k(const block_q6k *const *w, const block_q8k *const *a,
                                int32_t (*S)[RR][8]) {
#if defined(__AVX2__)
  if constexpr (!std::is_same_v<P, Scalar>) {
    __m256i vs[TT][RR];
    P::template vlanes_q6k<TT, RR>(w, a, vs);
    for (int t = 0; t < TT; ++t)
      for (int r = 0; r < RR; ++r)
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(S[t][r]), vs[t][r]);
    return;
  }
#endif
  Scalar::lanes_q6k<TT, RR>(w, a, S);
}

#if defined(__AVX2__)
namespace x86 {
// res[t][r] = lanes_sum of acc[t][r]'s 8 lanes.
template <int TT, int RR>
PHIMOE_RT_INLINE void lanes_sums(const __m256 (&acc)[TT][RR], float (&res)[TT][RR]) {
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < RR; ++r) {
      float f[8];
      _mm256_storeu_ps(f, acc[t][r]);
      res[t][r] = lanes_sum(f);
    }
}

// acc + a * b, fused, lane by lane.
PHIMOE_RT_INLINE __m256 fma8(__m256 a, __m256 b, __m256 acc) {
#if defined(__FMA__)
  return _mm256_fmadd_ps(a, b, acc);
#else
  alignas(32) float x[8], y[8], z[8];
  _mm256_store_ps(x, a);
  _mm256_store_ps(y, b);
  _mm256_store_ps(z, acc);
  for (int l = 0; l < 8; ++l)
    z[l] = std::fma(x[l], y[l], z[l]);
  return _mm256_load_ps(z);
#endif
}
// fma_lanes on a vector: acc + float(lanes) * scale, fused.
PHIMOE_RT_INLINE __m256 fma_lanes(__m256i lanes, float scale, __m256 acc) {
#if defined(__FMA__)
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), _mm256_set1_ps(scale), acc);
#else
  alignas(32) int32_t l[8];
  alignas(32) float f[8];
  _mm256_store_si256(reinterpret_cast<__m256i *>(l), lanes);
  _mm256_store_ps(f, acc);
  qk::fma_lanes(l, scale, f);
  return _mm256_load_ps(f);
#endif
}
} // namespace x86
#endif

#if defined(__AVX2__)
// tile_q4k's vector paths.
template <class P, int TT, int RR>
PHIMOE_RT_INLINE void tile_q4k_vec(const block_q4k *const *w, const uint8_t *const *a, int nb,
                                   float (&res)[TT][RR]) {
  const block_q4k *wb[RR];
  const block_q8k *ab[TT];
  const float *ms[TT];
  for (int t = 0; t < TT; ++t)
    ms[t] = reinterpret_cast<const float *>(a[t] + static_cast<size_t>(nb) * sizeof(block_q8k));
  __m256 acc[TT][RR] = {};
  for (int b = 0; b < nb; ++b) {
    for (int r = 0; r < RR; ++r) {
      wb[r] = w[r] + b;
      prefetch_span(wb[r], static_cast<int>(sizeof(block_q4k)));
    }
    for (int t = 0; t < TT; ++t)
      ab[t] = reinterpret_cast<const block_q8k *>(a[t]) + b;
    __m256i S[TT][RR], M[RR];
    P::template vlanes_q4k<TT, RR>(wb, ab, S, M);
    __m256 msv[TT];
    for (int t = 0; t < TT; ++t)
      msv[t] = _mm256_loadu_ps(ms[t] + 8 * b);
    for (int r = 0; r < RR; ++r) {
      const float d = half_to_float(wb[r]->d);
      const __m256 mf = _mm256_mul_ps(_mm256_cvtepi32_ps(M[r]),
                                      _mm256_set1_ps(half_to_float(wb[r]->dmin)));
      for (int t = 0; t < TT; ++t) {
        acc[t][r] = x86::fma_lanes(S[t][r], d * ab[t]->d, acc[t][r]);
        acc[t][r] = x86::fma8(mf, msv[t], acc[t][r]);
      }
    }
  }
  x86::lanes_sums(acc, res);
}
#endif

// res[t][r] = lanes_sum of the float lanes that every super-block's lanes are added to:
// q4_K: acc = fma(S, d * dy, acc), then acc = fma(dmin * M, ms, acc) (ms: the activation
// row's min sums, after its blocks).
template <class P, int TT, int RR>
PHIMOE_RT_INLINE void tile_q4k(const block_q4k *const *w, const uint8_t *const *a, int nb,
                               float (&res)[TT][RR]) {
#if defined(__AVX2__)
  if constexpr (!std::is_same_v<P, Scalar>) {
    tile_q4k_vec<P, TT, RR>(w, a, nb, res);
    return;
  }
#endif
  const block_q4k *wb[RR];
  const block_q8k *ab[TT];
  const float *ms[TT];
  for (int t = 0; t < TT; ++t)
    ms[t] = reinterpret_cast<const float *>(a[t] + static_cast<size_t>(nb) * sizeof(block_q8k));
  float acc[TT][RR][8] = {};
  for (int b = 0; b < nb; ++b) {
    for (int r = 0; r < RR; ++r)
      wb[r] = w[r] + b;
    for (int t = 0; t < TT; ++t)
      ab[t] = reinterpret_cast<const block_q8k *>(a[t]) + b;
    int32_t S[TT][RR][8], M[RR][8];
    Scalar::lanes_q4k<TT, RR>(wb, ab, S, M);
    for (int r = 0; r < RR; ++r) {
      const float d = half_to_float(wb[r]->d), dmin = half_to_float(wb[r]->dmin);
      float mf[8];
      for (int l = 0; l < 8; ++l)
        mf[l] = static_cast<float>(M[r][l]) * dmin;
      for (int t = 0; t < TT; ++t) {
        fma_lanes(S[t][r], d * ab[t]->d, acc[t][r]);
        for (int l = 0; l < 8; ++l)
          acc[t][r][l] = std::fma(mf[l], ms[t][8 * b + l], acc[t][r][l]);
      }
    }
  }
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < RR; ++r)
      res[t][r] = lanes_sum(acc[t][r]);
}

// q6_K: acc = fma(S, d * dy, acc) per super-block; res = lanes_sum(acc).
template <class P, int TT, int RR>
PHIMOE_RT_INLINE void tile_q6k(const block_q6k *const *w, const uint8_t *const *a, int nb,
                               float (&res)[TT][RR]) {
  const block_q6k *wb[RR];
  const block_q8k *ab[TT];
#if defined(__AVX2__)
  if constexpr (!std::is_same_v<P, Scalar>) {
    __m256 acc[TT][RR] = {};
    for (int b = 0; b < nb; ++b) {
      for (int r = 0; r < RR; ++r) {
        wb[r] = w[r] + b;
        prefetch_span(wb[r], static_cast<int>(sizeof(block_q6k)));
      }
      for (int t = 0; t < TT; ++t)
        ab[t] = reinterpret_cast<const block_q8k *>(a[t]) + b;
      __m256i S[TT][RR];
      P::template vlanes_q6k<TT, RR>(wb, ab, S);
      for (int r = 0; r < RR; ++r) {
        const float d = half_to_float(wb[r]->d);
        for (int t = 0; t < TT; ++t)
          acc[t][r] = x86::fma_lanes(S[t][r], d * ab[t]->d, acc[t][r]);
      }
    }
    x86::lanes_sums(acc, res);
    return;
  }
#endif
  float acc[TT][RR][8] = {};
  for (int b = 0; b < nb; ++b) {
    for (int r = 0; r < RR; ++r)
      wb[r] = w[r] + b;
    for (int t = 0; t < TT; ++t)
      ab[t] = reinterpret_cast<const block_q8k *>(a[t]) + b;
    int32_t S[TT][RR][8];
    Scalar::lanes_q6k<TT, RR>(wb, ab, S);
    for (int r = 0; r < RR; ++r) {
      const float d = half_to_float(wb[r]->d);
      for (int t = 0; t < TT; ++t)
        fma_lanes(S[t][r], d * ab[t]->d, acc[t][r]);
    }
  }
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < RR; ++r)
      res[t][r] = lanes_sum(acc[t][r]);
}

// ---- per weight format: activation layout, quantization, tile -------------------------------

template <class W> struct format;

template <> struct format<block_q8_0> {
  static constexpr int kBlock = kQK8_0;
  static constexpr int kIndex = 0; // in the paths' kShape
  static constexpr size_t act_bytes(int k) { return act_bytes_q8_0(k); }
  template <class P> static void quantize(const float *x, int k, uint8_t *out) {
    P::quantize_q8_0(x, k, reinterpret_cast<int8_t *>(out),
                     reinterpret_cast<float *>(out + static_cast<size_t>(k)));
  }
  template <class P, int TT, int RR>
  static PHIMOE_RT_INLINE void tile(const block_q8_0 *const *w, const uint8_t *const *a, int k,
                                    float (&res)[TT][RR]) {
    tile_q8_0<P, TT, RR>(w, a, k / kBlock, res);
  }
};

template <> struct format<block_q4k> {
  static constexpr int kBlock = kQK_K;
  static constexpr int kIndex = 1;
  static constexpr size_t act_bytes(int k) { return act_bytes_q4k(k); }
  template <class P> static void quantize(const float *x, int k, uint8_t *out) {
    block_q8k *y = reinterpret_cast<block_q8k *>(out);
    P::quantize_q8k(x, k, y);
    q4k_msums(y, k / kQK_K, reinterpret_cast<float *>(out + act_bytes_q8k(k)));
  }
  template <class P, int TT, int RR>
  static PHIMOE_RT_INLINE void tile(const block_q4k *const *w, const uint8_t *const *a, int k,
                                    float (&res)[TT][RR]) {
    tile_q4k<P, TT, RR>(w, a, k / kBlock, res);
  }
};

template <> struct format<block_q6k> {
  static constexpr int kBlock = kQK_K;
  static constexpr int kIndex = 2;
  static constexpr size_t act_bytes(int k) { return act_bytes_q8k(k); }
  template <class P> static void quantize(const float *x, int k, uint8_t *out) {
    P::quantize_q8k(x, k, reinterpret_cast<block_q8k *>(out));
  }
  template <class P, int TT, int RR>
  static PHIMOE_RT_INLINE void tile(const block_q6k *const *w, const uint8_t *const *a, int k,
                                    float (&res)[TT][RR]) {
    tile_q6k<P, TT, RR>(w, a, k / kBlock, res);
  }
};

// ---- dequantization of one row (embeddings) -------------------------------------------------

inline void dequantize(const block_q8_0 *x, float *y, int k) {
  for (int b = 0; b < k / kQK8_0; ++b) {
    const float d = half_to_float(x[b].d);
    for (int i = 0; i < kQK8_0; ++i)
      y[kQK8_0 * b + i] = d * static_cast<float>(x[b].qs[i]);
  }
}

inline void dequantize(const block_q4k *x, float *y, int k) {
  for (int b = 0; b < k / kQK_K; ++b) {
    const float d = half_to_float(x[b].d), dmin = half_to_float(x[b].dmin);
    uint8_t sc[8], mn[8];
    q4k_scales(x[b].scales, sc, mn);
    for (int j = 0; j < 8; ++j) {
      const float scale = d * static_cast<float>(sc[j]);
      const float min = dmin * static_cast<float>(mn[j]);
      for (int l = 0; l < 32; ++l) {
        const uint8_t byte = x[b].qs[32 * (j / 2) + l];
        const int q = (j % 2) ? byte >> 4 : byte & 0xF;
        const float v = scale * static_cast<float>(q);
        y[kQK_K * b + 32 * j + l] = v - min;
      }
    }
  }
}

inline void dequantize(const block_q6k *x, float *y, int k) {
  for (int b = 0; b < k / kQK_K; ++b) {
    const float d = half_to_float(x[b].d);
    for (int half = 0; half < 2; ++half)
      for (int l = 0; l < 32; ++l) {
        const uint8_t *ql = x[b].ql + 64 * half;
        const uint8_t h = x[b].qh[32 * half + l];
        const int q[4] = {(ql[l] & 0xF) | ((h & 3) << 4), (ql[l + 32] & 0xF) | (((h >> 2) & 3) << 4),
                          (ql[l] >> 4) | (((h >> 4) & 3) << 4),
                          (ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)};
        for (int k4 = 0; k4 < 4; ++k4) {
          const int i = 128 * half + 32 * k4 + l;
          const float scale = d * static_cast<float>(x[b].scales[i / 16]);
          y[kQK_K * b + i] = scale * static_cast<float>(q[k4] - 32);
        }
      }
  }
}

} // namespace qk
} // namespace phimoe_rt

#endif // PHIMOE_RT_QUANT_KERNELS_H
