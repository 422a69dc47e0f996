// quant_q4k16.h - dot products of interleaved q4_K weights (block_q4k_16rows: 16 rows per
// group, quant.h) with quantized activations: the CPU's q4k matrix kernels.
//
// A group's super-block puts 4 quants of each of its 16 rows side by side, so one 512-bit
// vector (two 256-bit ones on AVX2) multiplies 4 values of 16 rows by the same 4 activations
// (a broadcast), and its 32-bit lanes are the 16 rows: the sums need no folding, and the
// scales and mins of 16 rows are decoded with a few vector operations. A tile is TT tokens
// times the 16 rows of a group.
//
// Activations (act_bytes_q4k16): the K/256 block_q8k of the row, then per super-block 4
// int32 holding the sub-block sums bs_j = bsums[2j] + bsums[2j + 1] as 16-bit pairs
//   [bs0 | bs2 << 16, bs1 | bs3 << 16, bs4 | bs6 << 16, bs5 | bs7 << 16]
// (what the mins multiply, paired as the mins' bytes pair up in their 32-bit lanes).
//
// Exactness: per row, token and super-block every path computes the same integers
//   S  = sum_j sc_j * (sum of q_i * y_i over sub-block j),   Mn = sum_j m_j * bs_j,
// then acc = fma(float(S), d * dy, acc) and acc = fma(-float(Mn), dmin * dy, acc) (acc from 0,
// one float per row and token: no lanes), so all paths agree bit for bit, decode rows equal
// prompt rows, and results do not depend on tiles or threads.
#ifndef PHIMOE_RT_QUANT_Q4K16_H
#define PHIMOE_RT_QUANT_Q4K16_H

#include "phimoe_rt/quant_kernels.h"

namespace phimoe_rt {
namespace qk {

constexpr size_t act_bytes_q4k16(int k) {
  return act_bytes_q8k(k) + static_cast<size_t>(k / kQK_K) * 4 * sizeof(int32_t);
}

// The sub-block sum pairs of nb activation blocks (the layout above).
inline void q4k16_pairs(const block_q8k *y, int nb, int32_t *pairs) {
  for (int b = 0; b < nb; ++b) {
    int32_t bs[8];
    for (int j = 0; j < 8; ++j)
      bs[j] = y[b].bsums[2 * j] + y[b].bsums[2 * j + 1];
    auto pair = [](int32_t lo, int32_t hi) {
      return static_cast<int32_t>((static_cast<uint32_t>(lo) & 0xFFFFu) |
                                  (static_cast<uint32_t>(hi) << 16));
    };
    pairs[4 * b + 0] = pair(bs[0], bs[2]);
    pairs[4 * b + 1] = pair(bs[1], bs[3]);
    pairs[4 * b + 2] = pair(bs[4], bs[6]);
    pairs[4 * b + 3] = pair(bs[5], bs[7]);
  }
}

template <class P> inline void quantize_q4k16(const float *x, int k, uint8_t *out) {
  block_q8k *y = reinterpret_cast<block_q8k *>(out);
  P::quantize_q8k(x, k, y);
  q4k16_pairs(y, k / kQK_K, reinterpret_cast<int32_t *>(out + act_bytes_q8k(k)));
}

// Tokens per tile of each path (the rows are always a group's 16).
template <class P> constexpr int q4k16_tokens() {
  if constexpr (std::is_same_v<P, Scalar>)
    return 2;
#if defined(__AVX512F__) && defined(__AVX512BW__)
  else if constexpr (!std::is_same_v<P, Avx2>)
    return 4;
#endif
  else
    return 3;
}

// Row r's 12 scale bytes decoded: sc[8], mn[8].
PHIMOE_RT_INLINE void q4k16_scales(const block_q4k_16rows &x, int r, uint8_t *sc, uint8_t *mn) {
  uint8_t s12[12];
  for (int p = 0; p < 3; ++p)
    std::memcpy(s12 + 4 * p, &x.scales[p][r], 4);
  q4k_scales(s12, sc, mn);
}

// The reference: res[t][r] = dot(activation row t, row r of the group) over nb super-blocks.
template <int TT>
inline void tile_q4k16_scalar(const block_q4k_16rows *g, const uint8_t *const *a, int nb,
                              float (&res)[TT][16]) {
  float acc[TT][16] = {};
  for (int b = 0; b < nb; ++b) {
    const block_q4k_16rows &x = g[b];
    for (int r = 0; r < 16; ++r) {
      uint8_t sc[8], mn[8];
      q4k16_scales(x, r, sc, mn);
      const float d = half_to_float(x.d[r]), dmin = half_to_float(x.dmin[r]);
      for (int t = 0; t < TT; ++t) {
        const block_q8k &y = reinterpret_cast<const block_q8k *>(a[t])[b];
        int32_t s = 0, m = 0;
        for (int j = 0; j < 8; ++j) {
          const int c = j / 2, shift = 4 * (j % 2);
          int32_t dot = 0;
          for (int l = 0; l < 32; ++l) {
            const int q = (x.qs[8 * c + l / 4][4 * r + l % 4] >> shift) & 0xF;
            dot += q * y.qs[32 * j + l];
          }
          s += sc[j] * dot;
          m += mn[j] * (y.bsums[2 * j] + y.bsums[2 * j + 1]);
        }
        const float sd = d * y.d, sm = dmin * y.d;
        acc[t][r] = std::fma(static_cast<float>(s), sd, acc[t][r]);
        acc[t][r] = std::fma(-static_cast<float>(m), sm, acc[t][r]);
      }
    }
  }
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < 16; ++r)
      res[t][r] = acc[t][r];
}

#if defined(__AVX2__)
namespace x86 {
PHIMOE_RT_INLINE int32_t load4(const void *p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
// 8 f16 as floats (exact).
PHIMOE_RT_INLINE __m256 halves8(const uint16_t *h) {
#if defined(__F16C__)
  return _mm256_cvtph_ps(load128(h));
#else
  alignas(32) float f[8];
  for (int i = 0; i < 8; ++i)
    f[i] = half_to_float(h[i]);
  return _mm256_load_ps(f);
#endif
}
// -v, exactly (the sign flipped, as the scalar path's unary minus).
PHIMOE_RT_INLINE __m256 neg8(__m256 v) { return _mm256_xor_ps(v, _mm256_set1_ps(-0.0f)); }
} // namespace x86

// AVX2: the group as two halves of 8 rows (bytes 32h .. 32h+31 of each quant vector).
template <int TT>
inline void tile_q4k16_avx2(const block_q4k_16rows *g, const uint8_t *const *a, int nb,
                            float (&res)[TT][16]) {
  const block_q8k *ab[TT];
  const int32_t *pairs[TT];
  for (int t = 0; t < TT; ++t) {
    ab[t] = reinterpret_cast<const block_q8k *>(a[t]);
    pairs[t] = reinterpret_cast<const int32_t *>(a[t] + act_bytes_q8k(nb * kQK_K));
  }
  const __m256i m4 = _mm256_set1_epi8(0x0F), m6 = _mm256_set1_epi8(0x3F),
                m30 = _mm256_set1_epi8(0x30), mff = _mm256_set1_epi32(0xFF),
                m16 = _mm256_set1_epi32(0x00FF00FF), ones = _mm256_set1_epi16(1);
  for (int h = 0; h < 2; ++h) {
    __m256 acc[TT];
    for (int t = 0; t < TT; ++t)
      acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
      const block_q4k_16rows &x = g[b];
      const __m256i A = x86::load256(&x.scales[0][8 * h]), B = x86::load256(&x.scales[1][8 * h]),
                    C = x86::load256(&x.scales[2][8 * h]);
      const __m256i sc_lo = _mm256_and_si256(A, m6);
      const __m256i sc_hi = _mm256_or_si256(_mm256_and_si256(C, m4),
                                            _mm256_and_si256(_mm256_srli_epi32(A, 2), m30));
      const __m256i mn_lo = _mm256_and_si256(B, m6);
      const __m256i mn_hi =
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(C, 4), m4),
                          _mm256_and_si256(_mm256_srli_epi32(B, 2), m30));
      __m256i S[TT];
      for (int t = 0; t < TT; ++t)
        S[t] = _mm256_setzero_si256();
      for (int j = 0; j < 8; ++j) {
        const int c = j / 2;
        const __m256i scj = _mm256_and_si256(
            _mm256_srli_epi32(j < 4 ? sc_lo : sc_hi, 8 * (j % 4)), mff);
        __m256i dot[TT];
        for (int t = 0; t < TT; ++t)
          dot[t] = _mm256_setzero_si256();
        for (int k = 0; k < 8; ++k) {
          const __m256i raw = x86::load256(x.qs[8 * c + k] + 32 * h);
          const __m256i q = (j % 2) ? _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4)
                                    : _mm256_and_si256(raw, m4);
          for (int t = 0; t < TT; ++t) {
            const __m256i y = _mm256_set1_epi32(x86::load4(ab[t][b].qs + 32 * j + 4 * k));
            dot[t] = _mm256_add_epi32(dot[t], _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), ones));
          }
        }
        for (int t = 0; t < TT; ++t)
          S[t] = _mm256_add_epi32(S[t], _mm256_mullo_epi32(dot[t], scj));
      }
      const __m256i m02 = _mm256_and_si256(mn_lo, m16),
                    m13 = _mm256_and_si256(_mm256_srli_epi32(mn_lo, 8), m16),
                    m46 = _mm256_and_si256(mn_hi, m16),
                    m57 = _mm256_and_si256(_mm256_srli_epi32(mn_hi, 8), m16);
      const __m256 d = x86::halves8(x.d + 8 * h), dm = x86::halves8(x.dmin + 8 * h);
      for (int t = 0; t < TT; ++t) {
        const int32_t *p = pairs[t] + 4 * b;
        const __m256i mn = _mm256_add_epi32(
            _mm256_add_epi32(_mm256_madd_epi16(m02, _mm256_set1_epi32(p[0])),
                             _mm256_madd_epi16(m13, _mm256_set1_epi32(p[1]))),
            _mm256_add_epi32(_mm256_madd_epi16(m46, _mm256_set1_epi32(p[2])),
                             _mm256_madd_epi16(m57, _mm256_set1_epi32(p[3]))));
        const __m256 dy = _mm256_set1_ps(ab[t][b].d);
        acc[t] = x86::fma8(_mm256_cvtepi32_ps(S[t]), _mm256_mul_ps(d, dy), acc[t]);
        acc[t] = x86::fma8(x86::neg8(_mm256_cvtepi32_ps(mn)), _mm256_mul_ps(dm, dy), acc[t]);
      }
    }
    for (int t = 0; t < TT; ++t)
      _mm256_storeu_ps(res[t] + 8 * h, acc[t]);
  }
}
#endif // __AVX2__

#if defined(__AVX512F__) && defined(__AVX512BW__)
template <bool Vnni, int TT>
inline void tile_q4k16_avx512(const block_q4k_16rows *g, const uint8_t *const *a, int nb,
                              float (&res)[TT][16]) {
  const block_q8k *ab[TT];
  const int32_t *pairs[TT];
  for (int t = 0; t < TT; ++t) {
    ab[t] = reinterpret_cast<const block_q8k *>(a[t]);
    pairs[t] = reinterpret_cast<const int32_t *>(a[t] + act_bytes_q8k(nb * kQK_K));
  }
  const __m512i m4 = _mm512_set1_epi8(0x0F), m6 = _mm512_set1_epi8(0x3F),
                m30 = _mm512_set1_epi8(0x30), mff = _mm512_set1_epi32(0xFF),
                m16 = _mm512_set1_epi32(0x00FF00FF);
  __m512 acc[TT];
  for (int t = 0; t < TT; ++t)
    acc[t] = _mm512_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    const block_q4k_16rows &x = g[b];
    const __m512i A = x86::load512(x.scales[0]), B = x86::load512(x.scales[1]),
                  C = x86::load512(x.scales[2]);
    const __m512i sc_lo = _mm512_and_si512(A, m6);
    const __m512i sc_hi = _mm512_or_si512(_mm512_and_si512(C, m4),
                                          _mm512_and_si512(_mm512_srli_epi32(A, 2), m30));
    const __m512i mn_lo = _mm512_and_si512(B, m6);
    const __m512i mn_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(C, 4), m4),
                                          _mm512_and_si512(_mm512_srli_epi32(B, 2), m30));
    __m512i S[TT];
    for (int t = 0; t < TT; ++t)
      S[t] = _mm512_setzero_si512();
    for (int j = 0; j < 8; ++j) {
      const int c = j / 2;
      const __m512i scj =
          _mm512_and_si512(_mm512_srli_epi32(j < 4 ? sc_lo : sc_hi, 8 * (j % 4)), mff);
      __m512i dot[TT];
      for (int t = 0; t < TT; ++t)
        dot[t] = _mm512_setzero_si512();
      for (int k = 0; k < 8; ++k) {
        const __m512i raw = x86::load512(x.qs[8 * c + k]);
        const __m512i q = (j % 2) ? _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4)
                                  : _mm512_and_si512(raw, m4);
        for (int t = 0; t < TT; ++t) {
          const __m512i y = _mm512_set1_epi32(x86::load4(ab[t][b].qs + 32 * j + 4 * k));
#if defined(__AVX512VNNI__)
          if constexpr (Vnni) {
            dot[t] = _mm512_dpbusd_epi32(dot[t], q, y);
            continue;
          }
#endif
          dot[t] = _mm512_add_epi32(
              dot[t], _mm512_madd_epi16(_mm512_maddubs_epi16(q, y), _mm512_set1_epi16(1)));
        }
      }
      for (int t = 0; t < TT; ++t)
        S[t] = _mm512_add_epi32(S[t], _mm512_mullo_epi32(dot[t], scj));
    }
    const __m512i m02 = _mm512_and_si512(mn_lo, m16),
                  m13 = _mm512_and_si512(_mm512_srli_epi32(mn_lo, 8), m16),
                  m46 = _mm512_and_si512(mn_hi, m16),
                  m57 = _mm512_and_si512(_mm512_srli_epi32(mn_hi, 8), m16);
    const __m512 d = _mm512_cvtph_ps(x86::load256(x.d)),
                 dm = _mm512_cvtph_ps(x86::load256(x.dmin));
    for (int t = 0; t < TT; ++t) {
      const int32_t *p = pairs[t] + 4 * b;
      __m512i mn = _mm512_madd_epi16(m02, _mm512_set1_epi32(p[0]));
      mn = x86::madd_acc<Vnni>(mn, m13, _mm512_set1_epi32(p[1]));
      mn = x86::madd_acc<Vnni>(mn, m46, _mm512_set1_epi32(p[2]));
      mn = x86::madd_acc<Vnni>(mn, m57, _mm512_set1_epi32(p[3]));
      const __m512 dy = _mm512_set1_ps(ab[t][b].d);
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(S[t]), _mm512_mul_ps(d, dy), acc[t]);
      acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mn), _mm512_mul_ps(dm, dy), acc[t]);
    }
  }
  for (int t = 0; t < TT; ++t)
    _mm512_storeu_ps(res[t], acc[t]);
}
#endif // __AVX512F__ && __AVX512BW__

// The activation format of interleaved q4_K weights (format<W> as for the other block types;
// the tiles are tile_q4k16's, by group).
template <> struct format<block_q4k_x16> {
  static constexpr int kBlock = kQK_K;
  static constexpr size_t act_bytes(int k) { return act_bytes_q4k16(k); }
  template <class P> static void quantize(const float *x, int k, uint8_t *out) {
    quantize_q4k16<P>(x, k, out);
  }
};

// res[t][r] = dot(activation row t, row r of group g) over nb super-blocks, on path P.
template <class P, int TT>
PHIMOE_RT_INLINE void tile_q4k16(const block_q4k_16rows *g, const uint8_t *const *a, int nb,
                                 float (&res)[TT][16]) {
  if constexpr (std::is_same_v<P, Scalar>) {
    tile_q4k16_scalar<TT>(g, a, nb, res);
  }
#if defined(__AVX512F__) && defined(__AVX512BW__)
  else if constexpr (std::is_same_v<P, Avx512>) {
    tile_q4k16_avx512<false, TT>(g, a, nb, res);
  }
#if defined(__AVX512VNNI__)
  else if constexpr (std::is_same_v<P, Vnni>) {
    tile_q4k16_avx512<true, TT>(g, a, nb, res);
  }
#endif
#endif
#if defined(__AVX2__)
  else {
    static_assert(std::is_same_v<P, Avx2>, "a path without a q4_K x16 tile");
    tile_q4k16_avx2<TT>(g, a, nb, res);
  }
#endif
}

} // namespace qk
} // namespace phimoe_rt

#endif // PHIMOE_RT_QUANT_Q4K16_H
