// quant_rows16.h - dot products of interleaved q4_K, q8_0 and q6_K weights (block_q4k_16rows,
// block_q8_0_16rows, block_q6k_16rows: 16 rows per group, quant.h) with quantized
// activations: the CPU's matrix kernels for those types. (The q4_K part is described first;
// q8_0 and q6_K follow.)
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
#ifndef PHIMOE_RT_QUANT_ROWS16_H
#define PHIMOE_RT_QUANT_ROWS16_H

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

// Tokens per tile of each path, q4_K and q8_0 (the rows are always a group's 16).
template <class P> constexpr int rows16_tokens() {
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
inline void tile16_scalar(const block_q4k_16rows *g, const uint8_t *const *a, int nb,
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

// One token (decode): both halves of the group per super-block, so that the weights stream
// through memory once (half by half, the second half's pass reads the cache and leaves the
// memory idle); each quant vector is loaded once for both of its sub-blocks (the low nibbles
// are sub-block 2c, the high ones 2c + 1), and each activation broadcast serves both halves.
// The same integers and float steps as below. phimoe-rt-quant-bench on Zen 3, 4096 x 4096,
// 1 thread: 0.52-0.54 ms against 0.63-0.69 half by half (18 GB/s of the 19 one thread
// reads). The compute alone (a group read from L1 over and over) is slower than half by
// half: 56 ns per group super-block against 50, and 67 with the halves one after the other
// within each super-block (the first version). A prefetch as in the q6_K tile made no
// difference here.
inline void tile16_avx2_q4k_one(const block_q4k_16rows *g, const uint8_t *a, int nb,
                                float (&res)[1][16]) {
  const block_q8k *ab = reinterpret_cast<const block_q8k *>(a);
  const int32_t *pairs = reinterpret_cast<const int32_t *>(a + act_bytes_q8k(nb * kQK_K));
  const __m256i m4 = _mm256_set1_epi8(0x0F), m6 = _mm256_set1_epi8(0x3F),
                m30 = _mm256_set1_epi8(0x30), mff = _mm256_set1_epi32(0xFF),
                m16 = _mm256_set1_epi32(0x00FF00FF);
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int b = 0; b < nb; ++b) {
    const block_q4k_16rows &x = g[b];
    const block_q8k &y = ab[b];
    __m256i sc[2][2], S[2];
    for (int h = 0; h < 2; ++h) {
      const __m256i A = x86::load256(&x.scales[0][8 * h]), C = x86::load256(&x.scales[2][8 * h]);
      sc[h][0] = _mm256_and_si256(A, m6);
      sc[h][1] = _mm256_or_si256(_mm256_and_si256(C, m4),
                                 _mm256_and_si256(_mm256_srli_epi32(A, 2), m30));
      S[h] = _mm256_setzero_si256();
    }
    for (int c = 0; c < 4; ++c) {
      __m256i d[2][2];
      for (int h = 0; h < 2; ++h)
        d[h][0] = d[h][1] = _mm256_setzero_si256();
      for (int k = 0; k < 8; ++k) {
        const __m256i ylo = _mm256_set1_epi32(x86::load4(y.qs + 64 * c + 4 * k));
        const __m256i yhi = _mm256_set1_epi32(x86::load4(y.qs + 64 * c + 32 + 4 * k));
        for (int h = 0; h < 2; ++h) {
          const __m256i raw = x86::load256(x.qs[8 * c + k] + 32 * h);
          d[h][0] = _mm256_add_epi16(d[h][0], _mm256_maddubs_epi16(_mm256_and_si256(raw, m4), ylo));
          d[h][1] = _mm256_add_epi16(
              d[h][1], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4), yhi));
        }
      }
      for (int h = 0; h < 2; ++h) {
        const __m256i s = sc[h][c / 2];
        __m256i slo = _mm256_and_si256(_mm256_srli_epi32(s, 16 * (c % 2)), mff);
        __m256i shi = _mm256_and_si256(_mm256_srli_epi32(s, 16 * (c % 2) + 8), mff);
        slo = _mm256_or_si256(slo, _mm256_slli_epi32(slo, 16));
        shi = _mm256_or_si256(shi, _mm256_slli_epi32(shi, 16));
        S[h] = _mm256_add_epi32(S[h], _mm256_madd_epi16(d[h][0], slo));
        S[h] = _mm256_add_epi32(S[h], _mm256_madd_epi16(d[h][1], shi));
      }
    }
    const __m256 dy = _mm256_set1_ps(y.d);
    const int32_t *p = pairs + 4 * b;
    for (int h = 0; h < 2; ++h) {
      const __m256i B = x86::load256(&x.scales[1][8 * h]), C = x86::load256(&x.scales[2][8 * h]);
      const __m256i mn_lo = _mm256_and_si256(B, m6);
      const __m256i mn_hi =
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(C, 4), m4),
                          _mm256_and_si256(_mm256_srli_epi32(B, 2), m30));
      const __m256i mn = _mm256_add_epi32(
          _mm256_add_epi32(
              _mm256_madd_epi16(_mm256_and_si256(mn_lo, m16), _mm256_set1_epi32(p[0])),
              _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(mn_lo, 8), m16),
                                _mm256_set1_epi32(p[1]))),
          _mm256_add_epi32(
              _mm256_madd_epi16(_mm256_and_si256(mn_hi, m16), _mm256_set1_epi32(p[2])),
              _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(mn_hi, 8), m16),
                                _mm256_set1_epi32(p[3]))));
      const __m256 d = x86::halves8(x.d + 8 * h), dm = x86::halves8(x.dmin + 8 * h);
      acc[h] = x86::fma8(_mm256_cvtepi32_ps(S[h]), _mm256_mul_ps(d, dy), acc[h]);
      acc[h] = x86::fma8(x86::neg8(_mm256_cvtepi32_ps(mn)), _mm256_mul_ps(dm, dy), acc[h]);
    }
  }
  _mm256_storeu_ps(res[0], acc[0]);
  _mm256_storeu_ps(res[0] + 8, acc[1]);
}

// AVX2: the group as two halves of 8 rows (bytes 32h .. 32h+31 of each quant vector).
template <int TT>
inline void tile16_avx2(const block_q4k_16rows *g, const uint8_t *const *a, int nb,
                            float (&res)[TT][16]) {
  if constexpr (TT == 1) {
    tile16_avx2_q4k_one(g, a[0], nb, res);
    return;
  }
  const block_q8k *ab[TT];
  const int32_t *pairs[TT];
  for (int t = 0; t < TT; ++t) {
    ab[t] = reinterpret_cast<const block_q8k *>(a[t]);
    pairs[t] = reinterpret_cast<const int32_t *>(a[t] + act_bytes_q8k(nb * kQK_K));
  }
  const __m256i m4 = _mm256_set1_epi8(0x0F), m6 = _mm256_set1_epi8(0x3F),
                m30 = _mm256_set1_epi8(0x30), mff = _mm256_set1_epi32(0xFF),
                m16 = _mm256_set1_epi32(0x00FF00FF);
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
        // Scale j of each row in both 16-bit halves of the row's lane.
        const __m256i s32 = _mm256_and_si256(
            _mm256_srli_epi32(j < 4 ? sc_lo : sc_hi, 8 * (j % 4)), mff);
        const __m256i scj = _mm256_or_si256(s32, _mm256_slli_epi32(s32, 16));
        // The sub-block's pair sums stay 16-bit: |q0 y0 + q1 y1| <= 2 * 15 * 128 = 3840 per
        // step, at most 30720 after its 8 steps, so no sum saturates; one madd with the
        // scales then gives sc_j * (the sub-block's dot) per row, exactly.
        __m256i dot[TT];
        for (int t = 0; t < TT; ++t)
          dot[t] = _mm256_setzero_si256();
        for (int k = 0; k < 8; ++k) {
          const __m256i raw = x86::load256(x.qs[8 * c + k] + 32 * h);
          const __m256i q = (j % 2) ? _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4)
                                    : _mm256_and_si256(raw, m4);
          for (int t = 0; t < TT; ++t) {
            const __m256i y = _mm256_set1_epi32(x86::load4(ab[t][b].qs + 32 * j + 4 * k));
            dot[t] = _mm256_add_epi16(dot[t], _mm256_maddubs_epi16(q, y));
          }
        }
        for (int t = 0; t < TT; ++t)
          S[t] = _mm256_add_epi32(S[t], _mm256_madd_epi16(dot[t], scj));
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
inline void tile16_avx512(const block_q4k_16rows *g, const uint8_t *const *a, int nb,
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

// ---- q8_0 ---------------------------------------------------------------------------------
//
// Activations (act_bytes_q8_016): the q8_0 activation row (k int8, then k/32 float scales),
// then k/32 int32 c_b = -128 * (sum of the block's 32 quants): a dot product of the biased
// weight bytes (q + 128) starts from c_b.
//
// Exactness: per row, token and 32-value block every path computes the integer
// D = sum of q_i * y_i, then acc = fma(float(D), d * dy, acc) (acc from 0, one float per row
// and token).

constexpr size_t act_bytes_q8_016(int k) {
  return act_bytes_q8_0(k) + static_cast<size_t>(k / kQK8_0) * sizeof(int32_t);
}

template <class P> inline void quantize_q8_016(const float *x, int k, uint8_t *out) {
  int8_t *q = reinterpret_cast<int8_t *>(out);
  P::quantize_q8_0(x, k, q, reinterpret_cast<float *>(out + k));
  int32_t *c = reinterpret_cast<int32_t *>(out + act_bytes_q8_0(k));
  for (int b = 0; b < k / kQK8_0; ++b) {
    int32_t sum = 0;
    for (int i = 0; i < kQK8_0; ++i)
      sum += q[kQK8_0 * b + i];
    c[b] = -128 * sum;
  }
}

template <int TT>
inline void tile16_scalar(const block_q8_0_16rows *g, const uint8_t *const *a, int nb,
                               float (&res)[TT][16]) {
  float acc[TT][16] = {};
  for (int b = 0; b < nb; ++b)
    for (int r = 0; r < 16; ++r) {
      const float d = half_to_float(g[b].d[r]);
      for (int t = 0; t < TT; ++t) {
        const int8_t *y = reinterpret_cast<const int8_t *>(a[t]) + kQK8_0 * b;
        const float dy = reinterpret_cast<const float *>(a[t] + nb * kQK8_0)[b];
        int32_t dot = 0;
        for (int i = 0; i < kQK8_0; ++i)
          dot += (g[b].qs[i / 4][4 * r + i % 4] - 128) * y[i];
        const float s = d * dy;
        acc[t][r] = std::fma(static_cast<float>(dot), s, acc[t][r]);
      }
    }
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < 16; ++r)
      res[t][r] = acc[t][r];
}

#if defined(__AVX2__)
// One token (decode): both halves per block, as in the q4_K one-token tile, so that the
// weights stream through memory once, and each activation broadcast serves both halves.
inline void tile16_avx2_q8_0_one(const block_q8_0_16rows *g, const uint8_t *a, int nb,
                                 float (&res)[1][16]) {
  const __m256i bias = _mm256_set1_epi8(static_cast<char>(0x80)), ones = _mm256_set1_epi16(1);
  const float *dy = reinterpret_cast<const float *>(a + nb * kQK8_0);
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int b = 0; b < nb; ++b) {
    __m256i dot[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int k = 0; k < 8; ++k) {
      const __m256i y = _mm256_set1_epi32(x86::load4(a + kQK8_0 * b + 4 * k));
      for (int h = 0; h < 2; ++h) {
        const __m256i w = _mm256_xor_si256(x86::load256(g[b].qs[k] + 32 * h), bias);
        dot[h] = _mm256_add_epi32(
            dot[h], _mm256_madd_epi16(
                        _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w)),
                        ones));
      }
    }
    const __m256 dyb = _mm256_set1_ps(dy[b]);
    for (int h = 0; h < 2; ++h)
      acc[h] = x86::fma8(_mm256_cvtepi32_ps(dot[h]),
                         _mm256_mul_ps(x86::halves8(g[b].d + 8 * h), dyb), acc[h]);
  }
  _mm256_storeu_ps(res[0], acc[0]);
  _mm256_storeu_ps(res[0] + 8, acc[1]);
}

// AVX2: two halves of 8 rows; the weights unbiased and multiplied with the sign trick
// (maddubs of |w| and y with w's sign: pair sums stay below 2^15).
template <int TT>
inline void tile16_avx2(const block_q8_0_16rows *g, const uint8_t *const *a, int nb,
                             float (&res)[TT][16]) {
  if constexpr (TT == 1) {
    tile16_avx2_q8_0_one(g, a[0], nb, res);
    return;
  }
  const __m256i bias = _mm256_set1_epi8(static_cast<char>(0x80)), ones = _mm256_set1_epi16(1);
  for (int h = 0; h < 2; ++h) {
    __m256 acc[TT];
    for (int t = 0; t < TT; ++t)
      acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
      __m256i dot[TT];
      for (int t = 0; t < TT; ++t)
        dot[t] = _mm256_setzero_si256();
      for (int k = 0; k < 8; ++k) {
        const __m256i w = _mm256_xor_si256(x86::load256(g[b].qs[k] + 32 * h), bias);
        const __m256i aw = _mm256_sign_epi8(w, w);
        for (int t = 0; t < TT; ++t) {
          const __m256i y = _mm256_set1_epi32(x86::load4(a[t] + kQK8_0 * b + 4 * k));
          dot[t] = _mm256_add_epi32(
              dot[t], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(y, w)), ones));
        }
      }
      const __m256 d = x86::halves8(g[b].d + 8 * h);
      for (int t = 0; t < TT; ++t) {
        const float dy = reinterpret_cast<const float *>(a[t] + nb * kQK8_0)[b];
        acc[t] = x86::fma8(_mm256_cvtepi32_ps(dot[t]), _mm256_mul_ps(d, _mm256_set1_ps(dy)),
                           acc[t]);
      }
    }
    for (int t = 0; t < TT; ++t)
      _mm256_storeu_ps(res[t] + 8 * h, acc[t]);
  }
}
#endif // __AVX2__

#if defined(__AVX512F__) && defined(__AVX512BW__)
// AVX-512: with VNNI, dpbusd of the biased bytes from c_b; without, the sign trick.
template <bool Vnni, int TT>
inline void tile16_avx512(const block_q8_0_16rows *g, const uint8_t *const *a, int nb,
                               float (&res)[TT][16]) {
  const int32_t *c[TT];
  const float *dy[TT];
  for (int t = 0; t < TT; ++t) {
    dy[t] = reinterpret_cast<const float *>(a[t] + nb * kQK8_0);
    c[t] = reinterpret_cast<const int32_t *>(a[t] + act_bytes_q8_0(nb * kQK8_0));
  }
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80)), zero = _mm512_setzero_si512();
  __m512 acc[TT];
  for (int t = 0; t < TT; ++t)
    acc[t] = _mm512_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    __m512i dot[TT];
    for (int t = 0; t < TT; ++t)
      dot[t] = Vnni ? _mm512_set1_epi32(c[t][b]) : zero;
    for (int k = 0; k < 8; ++k) {
      const __m512i q = x86::load512(g[b].qs[k]);
#if defined(__AVX512VNNI__)
      if constexpr (Vnni) {
        for (int t = 0; t < TT; ++t)
          dot[t] = _mm512_dpbusd_epi32(
              dot[t], q, _mm512_set1_epi32(x86::load4(a[t] + kQK8_0 * b + 4 * k)));
        continue;
      }
#endif
      const __m512i w = _mm512_xor_si512(q, bias);
      const __mmask64 negw = _mm512_movepi8_mask(w);
      const __m512i aw = _mm512_abs_epi8(w);
      for (int t = 0; t < TT; ++t) {
        const __m512i y = _mm512_set1_epi32(x86::load4(a[t] + kQK8_0 * b + 4 * k));
        const __m512i ys = _mm512_mask_sub_epi8(y, negw, zero, y);
        dot[t] = _mm512_add_epi32(
            dot[t], _mm512_madd_epi16(_mm512_maddubs_epi16(aw, ys), _mm512_set1_epi16(1)));
      }
    }
    const __m512 d = _mm512_cvtph_ps(x86::load256(g[b].d));
    for (int t = 0; t < TT; ++t)
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[t]),
                               _mm512_mul_ps(d, _mm512_set1_ps(dy[t][b])), acc[t]);
  }
  for (int t = 0; t < TT; ++t)
    _mm512_storeu_ps(res[t], acc[t]);
}
#endif // __AVX512F__ && __AVX512BW__

template <> struct format<block_q8_0_x16> {
  static constexpr int kBlock = kQK8_0;
  static constexpr size_t act_bytes(int k) { return act_bytes_q8_016(k); }
  template <class P> static void quantize(const float *x, int k, uint8_t *out) {
    quantize_q8_016<P>(x, k, out);
  }
};

// ---- q6_K -----------------------------------------------------------------------------------
//
// Activations: the K/256 block_q8k of the row (as for row-by-row q6_K).
//
// Exactness: per row, token and super-block every path computes the integer
//   S = sum_j sc_j * (sum of q_i * y_i over sub-block j - 32 * bsums[j])   (q_i in 0..63)
// then acc = fma(float(S), d * dy, acc) (acc from 0, one float per row and token).
//
// Sub-block j (values 16j .. 16j+15) lies in half h = j / 8, quarter s = (j % 8) / 2 (32 values:
// the low (s < 2) or high nibbles of vectors q[3n + s % 2], bits 2s, 2s+1 of vectors q[3n + 2],
// n = 8h + k) and k = 4 (j % 2) .. 4 (j % 2) + 3. The vector paths go through the vectors in
// memory order: per h and m = j % 2, the four quarters' sums of 4 sub-blocks side by side.

template <int TT>
inline void tile16_scalar(const block_q6k_16rows *g, const uint8_t *const *a, int nb,
                              float (&res)[TT][16]) {
  float acc[TT][16] = {};
  for (int b = 0; b < nb; ++b)
    for (int r = 0; r < 16; ++r) {
      const float d = half_to_float(g[b].d[r]);
      for (int t = 0; t < TT; ++t) {
        const block_q8k &y = reinterpret_cast<const block_q8k *>(a[t])[b];
        int32_t s = 0;
        for (int j = 0; j < 16; ++j) {
          const int h = j / 8, quarter = (j % 8) / 2, m = j % 2;
          int32_t dot = -32 * y.bsums[j];
          for (int kk = 0; kk < 4; ++kk) {
            const int k = 4 * m + kk, n = 8 * h + k;
            for (int i = 0; i < 4; ++i) {
              const uint8_t lo = g[b].q[3 * n + quarter % 2][4 * r + i];
              const uint8_t hi = g[b].q[3 * n + 2][4 * r + i];
              const int q =
                  ((quarter < 2 ? lo : lo >> 4) & 0xF) | (((hi >> (2 * quarter)) & 3) << 4);
              dot += q * y.qs[128 * h + 32 * quarter + 4 * k + i];
            }
          }
          s += g[b].scales[j][r] * dot;
        }
        const float sd = d * y.d;
        acc[t][r] = std::fma(static_cast<float>(s), sd, acc[t][r]);
      }
    }
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < 16; ++r)
      res[t][r] = acc[t][r];
}

#if defined(__AVX2__)
namespace x86 {
// The 6-bit quants of one q6_K x16 vector pair (ql, qh) for quarter s: the low or high
// nibbles of ql with bits 2s, 2s+1 of qh above them. Shifts are 16-bit: the masks drop the
// bits that cross bytes.
PHIMOE_RT_INLINE __m256i q6k_quants(__m256i ql, __m256i qh, int s) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
  const __m256i nib = s < 2 ? _mm256_and_si256(ql, m4)
                            : _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4);
  const __m256i hb = s == 0   ? _mm256_slli_epi16(qh, 4)
                     : s == 1 ? _mm256_slli_epi16(qh, 2)
                     : s == 2 ? qh
                              : _mm256_srli_epi16(qh, 2);
  return _mm256_or_si256(nib, _mm256_and_si256(hb, m30));
}
} // namespace x86

// One token: madd by ones per step and mullo by the scales, both halves of the group per
// super-block, which is prefetched (phimoe-rt-quant-bench on Zen 3, 4096 x 4096, 1 thread:
// 1.07 ms, against 1.25 ms half by half without the prefetch and 1.6 ms for the pair form
// below, which is the faster from 3 tokens on: 195 ms against 250 ms for 512 tokens). Tried
// for one token and slower (1 thread, against 1.04-1.08 ms): both halves in each step with
// one broadcast, as in the q4_K one-token tile (1.21-1.25 ms); the pair form by super-block
// (1.27-1.30 ms); prefetch distances from 1 to 10 KiB made no difference.
template <int TT>
inline void tile16_avx2_q6k_steps(const block_q6k_16rows *g, const uint8_t *const *a, int nb,
                                  float (&res)[TT][16]) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[2][TT]; // rows 8 h8 .. 8 h8 + 7
  for (int h8 = 0; h8 < 2; ++h8)
    for (int t = 0; t < TT; ++t)
      acc[h8][t] = _mm256_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    const block_q6k_16rows &x = g[b];
    prefetch_span(&x, static_cast<int>(sizeof(x)));
    for (int h8 = 0; h8 < 2; ++h8) {
      __m256i S[TT];
      for (int t = 0; t < TT; ++t)
        S[t] = _mm256_setzero_si256();
#pragma unroll
      for (int h = 0; h < 2; ++h)
        for (int m = 0; m < 2; ++m)
          for (int q = 0; q < 4; ++q) { // quarter q: sub-block j
            const int j = 8 * h + 2 * q + m;
            const __m256i sc = _mm256_cvtepi8_epi32(_mm_loadl_epi64(
                reinterpret_cast<const __m128i *>(&x.scales[j][8 * h8])));
            __m256i dot[TT];
            for (int t = 0; t < TT; ++t)
              dot[t] =
                  _mm256_set1_epi32(-32 * reinterpret_cast<const block_q8k *>(a[t])[b].bsums[j]);
            for (int kk = 0; kk < 4; ++kk) {
              const int k = 4 * m + kk, n = 8 * h + k;
              const __m256i qv = x86::q6k_quants(x86::load256(x.q[3 * n + q % 2] + 32 * h8),
                                                 x86::load256(x.q[3 * n + 2] + 32 * h8), q);
              for (int t = 0; t < TT; ++t) {
                const block_q8k &y = reinterpret_cast<const block_q8k *>(a[t])[b];
                const __m256i yv = _mm256_set1_epi32(x86::load4(y.qs + 128 * h + 32 * q + 4 * k));
                dot[t] = _mm256_add_epi32(dot[t],
                                          _mm256_madd_epi16(_mm256_maddubs_epi16(qv, yv), ones));
              }
            }
            for (int t = 0; t < TT; ++t)
              S[t] = _mm256_add_epi32(S[t], _mm256_mullo_epi32(dot[t], sc));
          }
      const __m256 d = x86::halves8(x.d + 8 * h8);
      for (int t = 0; t < TT; ++t) {
        const float dy = reinterpret_cast<const block_q8k *>(a[t])[b].d;
        acc[h8][t] = x86::fma8(_mm256_cvtepi32_ps(S[t]), _mm256_mul_ps(d, _mm256_set1_ps(dy)),
                               acc[h8][t]);
      }
    }
  }
  for (int h8 = 0; h8 < 2; ++h8)
    for (int t = 0; t < TT; ++t)
      _mm256_storeu_ps(res[t] + 8 * h8, acc[h8][t]);
}

// The sums stay 16-bit over two steps (|q0 y0 + q1 y1| <= 2 * 63 * 128 = 16128 per step, so
// two sum to at most 32256) and a madd with the scale in both halves of a row's lane gives
// sc_j times them in 32 bits; the -32 * sum_j sc_j * bsums[j] of the integer S above is one
// more madd per sub-block (the scales against the token's bsums[j] with a zero beside it) and
// a shift at the end.
template <int TT>
inline void tile16_avx2(const block_q6k_16rows *g, const uint8_t *const *a, int nb,
                            float (&res)[TT][16]) {
  if constexpr (TT == 1) {
    tile16_avx2_q6k_steps<TT>(g, a, nb, res);
    return;
  }
  for (int h8 = 0; h8 < 2; ++h8) { // rows 8 h8 .. 8 h8 + 7
    __m256 acc[TT];
    for (int t = 0; t < TT; ++t)
      acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
      const block_q6k_16rows &x = g[b];
      __m256i S[TT], M[TT];
      for (int t = 0; t < TT; ++t)
        S[t] = M[t] = _mm256_setzero_si256();
      for (int h = 0; h < 2; ++h)
        for (int m = 0; m < 2; ++m)
          for (int q = 0; q < 4; ++q) { // quarter q: sub-block j
            const int j = 8 * h + 2 * q + m;
            const __m128i s8 =
                _mm_loadl_epi64(reinterpret_cast<const __m128i *>(&x.scales[j][8 * h8]));
            const __m256i sc = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(s8, s8));
            __m256i qv[4];
            for (int kk = 0; kk < 4; ++kk) {
              const int n = 8 * h + 4 * m + kk;
              qv[kk] = x86::q6k_quants(x86::load256(x.q[3 * n + q % 2] + 32 * h8),
                                       x86::load256(x.q[3 * n + 2] + 32 * h8), q);
            }
            for (int t = 0; t < TT; ++t) {
              const block_q8k &y = reinterpret_cast<const block_q8k *>(a[t])[b];
              const int8_t *yq = y.qs + 128 * h + 32 * q + 16 * m;
              auto step = [&](int kk) {
                return _mm256_maddubs_epi16(qv[kk], _mm256_set1_epi32(x86::load4(yq + 4 * kk)));
              };
              const __m256i p01 = _mm256_add_epi16(step(0), step(1));
              const __m256i p23 = _mm256_add_epi16(step(2), step(3));
              S[t] = _mm256_add_epi32(S[t], _mm256_add_epi32(_mm256_madd_epi16(p01, sc),
                                                             _mm256_madd_epi16(p23, sc)));
              const __m256i bs = _mm256_set1_epi32(static_cast<uint16_t>(y.bsums[j]));
              M[t] = _mm256_add_epi32(M[t], _mm256_madd_epi16(sc, bs));
            }
          }
      const __m256 d = x86::halves8(x.d + 8 * h8);
      for (int t = 0; t < TT; ++t) {
        const float dy = reinterpret_cast<const block_q8k *>(a[t])[b].d;
        S[t] = _mm256_sub_epi32(S[t], _mm256_slli_epi32(M[t], 5));
        acc[t] = x86::fma8(_mm256_cvtepi32_ps(S[t]), _mm256_mul_ps(d, _mm256_set1_ps(dy)), acc[t]);
      }
    }
    for (int t = 0; t < TT; ++t)
      _mm256_storeu_ps(res[t] + 8 * h8, acc[t]);
  }
}
#endif // __AVX2__

#if defined(__AVX512F__) && defined(__AVX512BW__)
namespace x86 {
PHIMOE_RT_INLINE __m512i q6k_quants512(__m512i ql, __m512i qh, int s) {
  const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
  const __m512i nib = s < 2 ? _mm512_and_si512(ql, m4)
                            : _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4);
  const __m512i hb = s == 0   ? _mm512_slli_epi16(qh, 4)
                     : s == 1 ? _mm512_slli_epi16(qh, 2)
                     : s == 2 ? qh
                              : _mm512_srli_epi16(qh, 2);
  return _mm512_or_si512(nib, _mm512_and_si512(hb, m30));
}
} // namespace x86

template <bool Vnni, int TT>
inline void tile16_avx512(const block_q6k_16rows *g, const uint8_t *const *a, int nb,
                              float (&res)[TT][16]) {
  __m512 acc[TT];
  for (int t = 0; t < TT; ++t)
    acc[t] = _mm512_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    const block_q6k_16rows &x = g[b];
    const block_q8k *y[TT];
    for (int t = 0; t < TT; ++t)
      y[t] = reinterpret_cast<const block_q8k *>(a[t]) + b;
    __m512i S[TT];
    for (int t = 0; t < TT; ++t)
      S[t] = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h)
      for (int m = 0; m < 2; ++m) {
        __m512i dot[TT][4]; // quarter q: sub-block 8h + 2q + m
        for (int t = 0; t < TT; ++t)
          for (int q = 0; q < 4; ++q)
            dot[t][q] = _mm512_set1_epi32(-32 * y[t]->bsums[8 * h + 2 * q + m]);
        for (int kk = 0; kk < 4; ++kk) {
          const int k = 4 * m + kk, n = 8 * h + k;
          const __m512i ql0 = x86::load512(x.q[3 * n]), ql1 = x86::load512(x.q[3 * n + 1]),
                        qh = x86::load512(x.q[3 * n + 2]);
          for (int q = 0; q < 4; ++q) {
            const __m512i qv = x86::q6k_quants512(q % 2 ? ql1 : ql0, qh, q);
            for (int t = 0; t < TT; ++t) {
              const __m512i yv =
                  _mm512_set1_epi32(x86::load4(y[t]->qs + 128 * h + 32 * q + 4 * k));
#if defined(__AVX512VNNI__)
              if constexpr (Vnni) {
                dot[t][q] = _mm512_dpbusd_epi32(dot[t][q], qv, yv);
                continue;
              }
#endif
              dot[t][q] = _mm512_add_epi32(
                  dot[t][q], _mm512_madd_epi16(_mm512_maddubs_epi16(qv, yv), _mm512_set1_epi16(1)));
            }
          }
        }
        for (int q = 0; q < 4; ++q) {
          const __m512i sc = _mm512_cvtepi8_epi32(x86::load128(x.scales[8 * h + 2 * q + m]));
          for (int t = 0; t < TT; ++t)
            S[t] = _mm512_add_epi32(S[t], _mm512_mullo_epi32(dot[t][q], sc));
        }
      }
    const __m512 d = _mm512_cvtph_ps(x86::load256(x.d));
    for (int t = 0; t < TT; ++t)
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(S[t]), _mm512_mul_ps(d, _mm512_set1_ps(y[t]->d)),
                               acc[t]);
  }
  for (int t = 0; t < TT; ++t)
    _mm512_storeu_ps(res[t], acc[t]);
}
#endif // __AVX512F__ && __AVX512BW__

template <> struct format<block_q6k_x16> {
  static constexpr int kBlock = kQK_K;
  static constexpr size_t act_bytes(int k) { return act_bytes_q8k(k); }
  template <class P> static void quantize(const float *x, int k, uint8_t *out) {
    P::quantize_q8k(x, k, reinterpret_cast<block_q8k *>(out));
  }
};

// ---- both -------------------------------------------------------------------------------------

// res[t][r] = dot(activation row t, row r of group g) over nb blocks (super-blocks), on
// path P; G is the group type (block_q4k_16rows, block_q8_0_16rows, block_q6k_16rows).
template <class P, int TT, class G>
PHIMOE_RT_INLINE void tile_group(const G *g, const uint8_t *const *a, int nb,
                                 float (&res)[TT][16]) {
  if constexpr (std::is_same_v<P, Scalar>) {
    tile16_scalar<TT>(g, a, nb, res);
  }
#if defined(__AVX512F__) && defined(__AVX512BW__)
  else if constexpr (std::is_same_v<P, Avx512>) {
    tile16_avx512<false, TT>(g, a, nb, res);
  }
#if defined(__AVX512VNNI__)
  else if constexpr (std::is_same_v<P, Vnni>) {
    tile16_avx512<true, TT>(g, a, nb, res);
  }
#endif
#endif
#if defined(__AVX2__)
  else {
    static_assert(std::is_same_v<P, Avx2>, "a path without group tiles");
    tile16_avx2<TT>(g, a, nb, res);
  }
#endif
}

// The interleaved types as the kernels see them: group block and values per block.
template <class W> struct rows16 {
  static constexpr bool kAny = false;
};
template <class Group, int Values> struct rows16_of {
  static constexpr bool kAny = true;
  using G = Group;
  static constexpr int kValues = Values;
};
template <> struct rows16<block_q4k_x16> : rows16_of<block_q4k_16rows, kQK_K> {};
template <> struct rows16<block_q8_0_x16> : rows16_of<block_q8_0_16rows, kQK8_0> {};
template <> struct rows16<block_q6k_x16> : rows16_of<block_q6k_16rows, kQK_K> {};

} // namespace qk
} // namespace phimoe_rt

#endif // PHIMOE_RT_QUANT_ROWS16_H
