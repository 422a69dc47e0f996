// simd.h - portable 8-lane vector helpers (GCC/Clang vector extensions) for the CPU kernels.
//
// Weight loads convert float, bf16 and f16 to float lanes on the fly. The dot-product tile
// gives every output the same sequence of operations whatever the tile shape, so kernel
// results do not depend on how work is split between threads.
#ifndef PHIMOE_RT_SIMD_H
#define PHIMOE_RT_SIMD_H

#include "phimoe_rt/runtime.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#define PHIMOE_RT_INLINE inline __attribute__((always_inline))

// GCC notes that returning 32-byte vectors without AVX changes the ABI; these helpers are
// always inlined, so there is no ABI to change.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace phimoe_rt {
namespace simd {

typedef float vf8 __attribute__((vector_size(32)));
typedef uint32_t vu8 __attribute__((vector_size(32)));
typedef uint16_t vh8 __attribute__((vector_size(16)));
typedef float vf4 __attribute__((vector_size(16)));
typedef double vd4 __attribute__((vector_size(32)));

template <class To, class From> PHIMOE_RT_INLINE To bit_cast(const From &from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between different sizes");
  To to;
  std::memcpy(&to, &from, sizeof to);
  return to;
}

// f16 bits to float without branches (exact for every input, nan payloads kept):
// rebias the exponent, then fix up inf/nan (exponent 31) and zero/subnormal (exponent 0,
// renormalised by subtracting 2^-14 in float arithmetic, which is exact).
PHIMOE_RT_INLINE vu8 f16_bits_to_f32_bits(vu8 h) {
  const vu8 em = (h & 0x7fffu) << 13;
  const vu8 e = em & 0x0f800000u;
  vu8 o = em + (112u << 23);
  const vu8 is_special = (vu8)(e == 0x0f800000u);
  o += is_special & (112u << 23);
  const vu8 is_small = (vu8)(e == 0u);
  const vf8 renorm = bit_cast<vf8>(vu8(o + (1u << 23))) - bit_cast<float>(0x38800000u);
  o = (o & ~is_small) | (bit_cast<vu8>(renorm) & is_small);
  return o | ((h & 0x8000u) << 16);
}

// Scalar loads of one weight as float.
PHIMOE_RT_INLINE float load1(const float *p) { return *p; }
PHIMOE_RT_INLINE float load1(const bf16 *p) { return to_float(*p); }
PHIMOE_RT_INLINE float load1(const f16 *p) {
  const vu8 h = {p->bits, 0, 0, 0, 0, 0, 0, 0};
  return bit_cast<float>(f16_bits_to_f32_bits(h)[0]);
}

// Loads of 8 consecutive values as float lanes (no alignment required).
PHIMOE_RT_INLINE vf8 load8(const float *p) {
  vf8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
PHIMOE_RT_INLINE vf8 load8(const bf16 *p) {
  vh8 h;
  std::memcpy(&h, p, sizeof h);
  return bit_cast<vf8>(vu8(__builtin_convertvector(h, vu8) << 16));
}
PHIMOE_RT_INLINE vf8 load8(const f16 *p) {
#if defined(__F16C__) // exact too; a signalling nan comes out quiet
  __m128i h;
  std::memcpy(&h, p, sizeof h);
  return (vf8)_mm256_cvtph_ps(h);
#else
  vh8 h;
  std::memcpy(&h, p, sizeof h);
  return bit_cast<vf8>(f16_bits_to_f32_bits(__builtin_convertvector(h, vu8)));
#endif
}
PHIMOE_RT_INLINE void store8(float *p, vf8 v) { std::memcpy(p, &v, sizeof v); }

// Four floats widened to double lanes.
PHIMOE_RT_INLINE vd4 load4d(const float *p) {
  vf4 v;
  std::memcpy(&v, p, sizeof v);
  return __builtin_convertvector(v, vd4);
}

// Sum of the lanes in a fixed order.
PHIMOE_RT_INLINE float hsum(vf8 v) {
  return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}
PHIMOE_RT_INLINE double hsum(vd4 v) { return (v[0] + v[2]) + (v[1] + v[3]); }

// Bytes ahead of the current position at which dot_tile prefetches each weight row: the
// hardware prefetcher alone does not keep up with 8 concurrent streams (measured
// 8.6 -> 13.8 GMAC/s for a bf16 GEMV on one core of an AMD EPYC).
constexpr int kPrefetchBytes = 512;

// res[t][r] = dot(x[t*ldx .. +K), w[r*K .. +K)) for TT input rows and RR weight rows:
// one 8-lane float accumulator per output over the first K/8*8 terms, a fixed-order
// lane sum, then the remaining terms in order.
template <int K, int TT, int RR, class W>
PHIMOE_RT_INLINE void dot_tile(const float *x, size_t ldx, const W *w, float (&res)[TT][RR]) {
  constexpr int K8 = K / 8 * 8;
  constexpr int line = 64 / static_cast<int>(sizeof(W)); // weights per cache line
  vf8 acc[TT][RR];
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < RR; ++r)
      acc[t][r] = vf8{};
  for (int k = 0; k < K8; k += 8) {
    if (k % line == 0)
      for (int r = 0; r < RR; ++r) // a prefetch never faults, even past the end of w
        __builtin_prefetch(reinterpret_cast<const char *>(w + static_cast<size_t>(r) * K + k) +
                           kPrefetchBytes);
    vf8 wv[RR];
    for (int r = 0; r < RR; ++r)
      wv[r] = load8(w + static_cast<size_t>(r) * K + k);
    for (int t = 0; t < TT; ++t) {
      const vf8 xv = load8(x + t * ldx + k);
      for (int r = 0; r < RR; ++r)
        acc[t][r] += xv * wv[r];
    }
  }
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < RR; ++r) {
      float s = hsum(acc[t][r]);
      for (int k = K8; k < K; ++k)
        s += x[t * ldx + k] * load1(w + static_cast<size_t>(r) * K + k);
      res[t][r] = s;
    }
}

// res[r] = dot(x, w row r) for RR rows (one input row).
template <int K, int RR, class W>
PHIMOE_RT_INLINE void dot_rows_fixed(const float *x, const W *w, float *res) {
  float r[1][RR];
  dot_tile<K, 1, RR>(x, 0, w, r);
  for (int i = 0; i < RR; ++i)
    res[i] = r[0][i];
}

// The largest number of rows dot_rows takes: 8 accumulators in flight for a GEMV.
constexpr int kMaxRows = 8;

// res[r] = dot(x, w row r) for `rows` (1..kMaxRows) rows chosen at run time.
template <int K, class W>
inline void dot_rows(const float *x, const W *w, int rows, float *res) {
  switch (rows) {
  case 1: return dot_rows_fixed<K, 1>(x, w, res);
  case 2: return dot_rows_fixed<K, 2>(x, w, res);
  case 3: return dot_rows_fixed<K, 3>(x, w, res);
  case 4: return dot_rows_fixed<K, 4>(x, w, res);
  case 5: return dot_rows_fixed<K, 5>(x, w, res);
  case 6: return dot_rows_fixed<K, 6>(x, w, res);
  case 7: return dot_rows_fixed<K, 7>(x, w, res);
  default: return dot_rows_fixed<K, 8>(x, w, res);
  }
}

} // namespace simd
} // namespace phimoe_rt

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif // PHIMOE_RT_SIMD_H
