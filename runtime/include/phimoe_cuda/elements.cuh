// elements.cuh - how the CUDA kernels read a weight matrix in each storage of the CUDA pack.
//
// Host and device code (__host__ __device__, no CUDA runtime call): the kernels use it on the
// GPU, test/gpu/elements_test.cu checks it on the CPU against phimoe_rt's dequantizers.
//
// A weight is R rows of K values, row-major as nn.Linear stores them: float, bf16, f16, or a
// block type (q8_0, q4_K, q6_K) in the split layout of phimoe_rt/split_layout.h (field by field
// over all R*K/block_values blocks). For a matrix M of weights, Elem<W> gives:
//
//   at(w, R, K, r, k)   the value M[r][k] (one element; the prefill GEMM's tile loader).
//   kUnit, vec(K)       a row is read in units of kUnit values, one 16-byte load of quants
//                       (two or three for q6_K) each; vec(K) says when rows are whole units.
//   k_of(u, j)          the column of value j of unit u within a row: units need not hold
//                       consecutive columns (a q4_K byte holds columns c and c + 32).
//   unit_dot(w, R, K, r, u, xv)
//                       sum over j of M[r][k_of(u, j)] * xv[j]: the input values of unit u in
//                       registers. The kernels stage the input row "unit-major" (value j of
//                       unit u at j * U + u, U = K / kUnit) so that lane u of a warp loads
//                       xv[j] from the word next to its neighbours' (no bank conflicts), and
//                       a warp reuses those registers for several rows.
//
// Quantized bytes become floats without integer-to-float conversions (16 a clock per SM on
// sm_80/sm_90, a quarter of the FP32 rate, which would cap a q4_K GEMV near half of HBM
// bandwidth): byte_value() moves a byte into the low mantissa byte of 2^23 with one PRMT
// and subtracts 2^23 + bias with one FADD, exactly.
#ifndef PHIMOE_CUDA_ELEMENTS_CUH
#define PHIMOE_CUDA_ELEMENTS_CUH

#include "phimoe_rt/quant.h"
#include "phimoe_rt/runtime.h"

#include <cuda_fp16.h>
#include <vector_types.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#define PHIMOE_HD __host__ __device__ __forceinline__

namespace phimoe_cuda {
namespace detail {

PHIMOE_HD float bits_as_float(uint32_t bits) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
#endif
}
PHIMOE_HD uint32_t float_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
#endif
}
PHIMOE_HD float bf16_bits(uint32_t bits) { return bits_as_float(bits << 16); }
PHIMOE_HD float f16_bits(uint32_t bits) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits & 0xffffu)));
}
PHIMOE_HD float ld(const float *p) { return *p; }
PHIMOE_HD float ld(const phimoe_rt::bf16 *p) { return bf16_bits(p->bits); }
PHIMOE_HD float ld(const phimoe_rt::f16 *p) { return f16_bits(p->bits); }

// 16- and 8-byte loads and stores (one vector access each). The GPU stops a kernel whose
// vector access is not aligned to its size ("misaligned address"), x86 does not: on the host
// (the CPU tests and the CUDA emulation run these functions) the address is checked.
PHIMOE_HD void expect_aligned(const void *p, int bytes) {
#ifndef __CUDA_ARCH__
  if (reinterpret_cast<uintptr_t>(p) % bytes != 0) {
    char what[96];
    std::snprintf(what, sizeof what, "misaligned address: a %d-byte access at %p", bytes, p);
    throw std::logic_error(what);
  }
#endif
}
PHIMOE_HD uint4 load_uint4(const void *p) {
  expect_aligned(p, 16);
  return *static_cast<const uint4 *>(p);
}
PHIMOE_HD void store_uint4(void *p, uint4 v) {
  expect_aligned(p, 16);
  *static_cast<uint4 *>(p) = v;
}
PHIMOE_HD uint2 load_uint2(const void *p) {
  expect_aligned(p, 8);
  return *static_cast<const uint2 *>(p);
}
PHIMOE_HD void store_uint2(void *p, uint2 v) {
  expect_aligned(p, 8);
  *static_cast<uint2 *>(p) = v;
}

// 16 bytes at p (16-byte aligned) as four little-endian words.
struct Words {
  uint32_t w[4];
};
PHIMOE_HD Words load16(const void *p) {
  const uint4 q = load_uint4(p);
  return Words{{q.x, q.y, q.z, q.w}};
}
PHIMOE_HD uint32_t load_u16(const uint8_t *p) { return p[0] | (static_cast<uint32_t>(p[1]) << 8); }

// __byte_perm (PRMT): byte n of the result is byte (s >> 4n) & 7 of {x (0-3), y (4-7)}. On the
// host, the same selection by shifts: elements_test checks the selectors used below.
PHIMOE_HD uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t s) {
#ifdef __CUDA_ARCH__
  return __byte_perm(x, y, s);
#else
  const uint64_t both = x | (static_cast<uint64_t>(y) << 32);
  uint32_t r = 0;
  for (int n = 0; n < 4; ++n)
    r |= static_cast<uint32_t>((both >> (8 * ((s >> (4 * n)) & 7))) & 0xffu) << (8 * n);
  return r;
#endif
}

// Byte i of `word` minus `bias`, as a float: 0x4B0000bb is 2^23 + bb exactly.
template <int I> PHIMOE_HD float byte_value(uint32_t word, float bias) {
  static_assert(I >= 0 && I < 4, "byte_value: a word has 4 bytes");
  return bits_as_float(byte_perm(word, 0x4B000000u, 0x7540u + I)) - (8388608.0f + bias);
}

// Byte i (0-3, known only at run time) of `word` as a float, as byte_value does it.
PHIMOE_HD float byte_at(uint32_t word, int i) {
  return bits_as_float(byte_perm(word, 0x4B000000u, 0x7540u + i)) - 8388608.0f;
}

// acc += the 4 bytes of `word` (each minus `bias`) times x[0..3].
PHIMOE_HD float dot_bytes(uint32_t word, float bias, const float *x, float acc) {
  acc += byte_value<0>(word, bias) * x[0];
  acc += byte_value<1>(word, bias) * x[1];
  acc += byte_value<2>(word, bias) * x[2];
  acc += byte_value<3>(word, bias) * x[3];
  return acc;
}

// ---------------------------------------------------------------------------------------
// Float storages: a unit is 16 consecutive bytes of a row (4 floats, 8 bf16 or f16).
template <class W> struct Elem {
  static constexpr int kUnit = 16 / sizeof(W);
  PHIMOE_HD static constexpr bool vec(long long K) { return K % kUnit == 0; }
  PHIMOE_HD static int k_of(int u, int j) { return u * kUnit + j; }
  PHIMOE_HD static float at(const W *w, size_t, int K, size_t r, int k) {
    return ld(w + r * K + k);
  }
  PHIMOE_HD static float unit_dot(const W *w, size_t, int K, size_t r, int u, const float *xv) {
    const Words q = load16(w + r * K + static_cast<size_t>(u) * kUnit);
    float acc = 0.0f;
    if constexpr (sizeof(W) == 4) {
      for (int i = 0; i < 4; ++i)
        acc += bits_as_float(q.w[i]) * xv[i];
    } else {
      for (int i = 0; i < 4; ++i) {
        const bool bf = std::is_same<W, phimoe_rt::bf16>::value;
        const float lo = bf ? bf16_bits(q.w[i] & 0xffffu) : f16_bits(q.w[i]);
        const float hi = bf ? bits_as_float(q.w[i] & 0xffff0000u) : f16_bits(q.w[i] >> 16);
        acc += lo * xv[2 * i] + hi * xv[2 * i + 1];
      }
    }
    return acc;
  }
};

// q8_0: quants [R*K] int8, then scales [R*K/32] f16. A unit: 16 quants (half a block).
template <> struct Elem<phimoe_rt::block_q8_0> {
  using W = phimoe_rt::block_q8_0;
  static constexpr int kUnit = 16;
  PHIMOE_HD static constexpr bool vec(long long K) { return K % 32 == 0; }
  PHIMOE_HD static int k_of(int u, int j) { return u * kUnit + j; }
  PHIMOE_HD static float scale(const W *w, size_t R, int K, size_t index) {
    const uint8_t *d = reinterpret_cast<const uint8_t *>(w) + R * static_cast<size_t>(K);
    return f16_bits(load_u16(d + 2 * (index / 32)));
  }
  PHIMOE_HD static float at(const W *w, size_t R, int K, size_t r, int k) {
    const size_t i = r * K + k;
    return static_cast<float>(reinterpret_cast<const int8_t *>(w)[i]) * scale(w, R, K, i);
  }
  PHIMOE_HD static float unit_dot(const W *w, size_t R, int K, size_t r, int u, const float *xv) {
    const size_t i = r * K + static_cast<size_t>(u) * kUnit;
    const Words q = load16(reinterpret_cast<const int8_t *>(w) + i);
    float acc = 0.0f;
    for (int k = 0; k < 4; ++k) // q + 128 as unsigned bytes, minus 128
      acc = dot_bytes(q.w[k] ^ 0x80808080u, 128.0f, xv + 4 * k, acc);
    return acc * scale(w, R, K, i);
  }
};

// q4_K: quants [R*K/2] (each block's qs[128]), then 16 bytes a block (d, dmin, scales[12]).
// In a block, byte 32c + l (c < 4, l < 32) holds column 64c + l in its low nibble and column
// 64c + 32 + l in its high one; sub-block s (32 columns) has the 6-bit scale and min packed as
// llama.cpp packs them. A unit: 16 bytes of qs, i.e. 32 values of two sub-blocks.
template <> struct Elem<phimoe_rt::block_q4k> {
  using W = phimoe_rt::block_q4k;
  static constexpr int kUnit = 32;
  PHIMOE_HD static constexpr bool vec(long long K) { return K % phimoe_rt::kQK_K == 0; }
  // Unit u: block u / 8, 16 bytes p = u % 8 of its qs (chunk c = p / 2, offset 16 (p % 2)).
  PHIMOE_HD static int k_of(int u, int j) {
    const int p = u % 8, c = p / 2, o = 16 * (p % 2);
    return 256 * (u / 8) + 64 * c + (j < 16 ? o + j : 32 + o + j - 16);
  }
  PHIMOE_HD static void scale_min(const uint8_t *s, int j, float &sc, float &m) {
    if (j < 4) {
      sc = static_cast<float>(s[j] & 63);
      m = static_cast<float>(s[j + 4] & 63);
    } else {
      sc = static_cast<float>((s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4));
      m = static_cast<float>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
  }
  PHIMOE_HD static const uint8_t *meta(const W *w, size_t R, int K, size_t block) {
    return reinterpret_cast<const uint8_t *>(w) + R * static_cast<size_t>(K) / 2 + block * 16;
  }
  PHIMOE_HD static float at(const W *w, size_t R, int K, size_t r, int k) {
    const size_t i = r * K + k, block = i / 256;
    const int j = static_cast<int>(i % 256), c = j / 64, l = j % 64;
    const uint8_t byte = reinterpret_cast<const uint8_t *>(w)[block * 128 + 32 * c + l % 32];
    const int q = l < 32 ? byte & 0xf : byte >> 4;
    const uint8_t *m = meta(w, R, K, block);
    float sc, mn;
    scale_min(m + 4, j / 32, sc, mn);
    return f16_bits(load_u16(m)) * sc * q - f16_bits(load_u16(m + 2)) * mn;
  }
  PHIMOE_HD static float unit_dot(const W *w, size_t R, int K, size_t r, int u, const float *xv) {
    const size_t block = r * (K / 256) + u / 8;
    const int p = u % 8, c = p / 2;
    const Words q = load16(reinterpret_cast<const uint8_t *>(w) + block * 128 + 16 * p);
    float dot_lo = 0.0f, sum_lo = 0.0f, dot_hi = 0.0f, sum_hi = 0.0f;
    for (int k = 0; k < 4; ++k) {
      dot_lo = dot_bytes(q.w[k] & 0x0f0f0f0fu, 0.0f, xv + 4 * k, dot_lo);
      dot_hi = dot_bytes((q.w[k] >> 4) & 0x0f0f0f0fu, 0.0f, xv + 16 + 4 * k, dot_hi);
    }
    for (int i = 0; i < 16; ++i) {
      sum_lo += xv[i];
      sum_hi += xv[16 + i];
    }
    const uint8_t *m = meta(w, R, K, block);
    float sc_lo, m_lo, sc_hi, m_hi;
    scale_min(m + 4, 2 * c, sc_lo, m_lo);
    scale_min(m + 4, 2 * c + 1, sc_hi, m_hi);
    return f16_bits(load_u16(m)) * (sc_lo * dot_lo + sc_hi * dot_hi) -
           f16_bits(load_u16(m + 2)) * (m_lo * sum_lo + m_hi * sum_hi);
  }
};

// ---------------------------------------------------------------------------------------
// q4_K in decode: integer dot products (dp4a) with a fixed-point copy of the input row.
//
// Elem<q4_K>::unit_dot takes about 6.2 instructions a weight (each nibble made a float, the
// scales, the input's sums), and an SM issues one warp instruction a clock per scheduler: on
// an H100 that caps a q4_K GEMV at 80-90% of HBM bandwidth with every issue slot busy, on an
// H200 at 56-63% (docs/cuda.md, "Kernels"). Decode instead stages the input row in fixed
// point (once, in the kernel that writes it: kernels.cuh, stage_for): each group of 32
// consecutive values (one q4_K sub-block) has a step D, the power of two 2^(e - 21) for
// max|x| in [2^e, 2^(e+1)), and v = rint(x / D), |v| <= 2^22, stored as three planes of
// bytes, v = 2^16 p2 + 2^8 p1 + p0 (p2 signed, p1 and p0 unsigned), so that one dp4a
// multiplies 4 nibbles with 4 bytes of a plane, exactly, in int32 (16 nibbles times 2^22 stay
// below 2^31). x / D is exact (a power of two), so the rounding moves each input by at most
// D / 2, 2^-22 of its group's max|x|. The mins take the sums of the staged values,
// D * sum(v), so a row's dot product is that of the dequantized row with the staged input up
// to float rounding.
//
// The staged row (StagedQ4k::words(K) words) holds 28 words a unit, unit after unit, so
// that a lane loads its unit with seven 16-byte loads (8 lanes at a stride of 28 words touch
// 32 different banks). Word w of unit u:
//   w = 8 p + i, p < 3, i < 8: bytes 4i..4i+3 of plane p of the unit's 32 values (in
//                               Elem<q4_K>::k_of's order: byte j of the plane is value j);
//   w = 24 + s, s < 4:          floats: D of the unit's low and high half (the steps of its
//                               two sub-blocks), then D * sum(v) of each half (16 values).
struct StagedQ4k {
  PHIMOE_HD static constexpr int words(long long K) { return static_cast<int>(28 * (K / 32)); }
  // Unit u and value j (Elem<q4_K>::k_of(u, j) == k) of column k.
  PHIMOE_HD static void slot(int k, int &u, int &j) {
    const unsigned c = static_cast<unsigned>(k);
    u = static_cast<int>(((c >> 5) & ~1u) + ((c >> 4) & 1u)); // 8 (k / 256) + 2 chunk + half
    j = static_cast<int>(((c >> 1) & 16u) | (c & 15u));        // 16 (nibble) + k % 16
  }
  // D and 1 / D of a group whose max|x| has the bits amax_bits (of a non-negative float):
  // 0 and 0 below 2^-105 (such values are dropped), nan and 0 for inf and nan (the row's
  // results become nan, as with float inputs).
  PHIMOE_HD static void steps(uint32_t amax_bits, float &step, float &inv) {
    const uint32_t e = amax_bits >> 23; // biased exponent of max|x|
    step = e >= 255u ? bits_as_float(0x7fc00000u) : e < 22u ? 0.0f : bits_as_float((e - 21u) << 23);
    inv = e >= 255u || e < 22u ? 0.0f : bits_as_float((275u - e) << 23);
  }
  PHIMOE_HD static int level(float x, float inv) {
    if (inv == 0.0f)
      return 0;
#ifdef __CUDA_ARCH__
    return __float2int_rn(x * inv);
#else
    return static_cast<int>(std::nearbyint(x * inv));
#endif
  }
  // Input column k (value v) into its unit's three planes.
  PHIMOE_HD static void put(uint32_t *staged, int k, int v) {
    int u, j;
    slot(k, u, j);
    uint8_t *bytes = reinterpret_cast<uint8_t *>(staged + 28 * static_cast<size_t>(u)) + j;
    bytes[0] = static_cast<uint8_t>(v & 255);
    bytes[32] = static_cast<uint8_t>((v >> 8) & 255);
    bytes[64] = static_cast<uint8_t>(v >> 16);
  }
  // The step of the sub-block of column k and D * sum(v) of the 16 values of k's unit half.
  PHIMOE_HD static void put_half(uint32_t *staged, int k, float step, float sum) {
    int u, j;
    slot(k, u, j);
    staged[28 * static_cast<size_t>(u) + 24 + j / 16] = float_bits(step);
    staged[28 * static_cast<size_t>(u) + 26 + j / 16] = float_bits(sum);
  }
  struct Unit {
    uint32_t planes[3][8];
    float step[2], sum[2];
  };
  PHIMOE_HD static Unit load(const uint32_t *staged, int u) {
    const uint32_t *s = staged + 28 * static_cast<size_t>(u);
    Unit x;
    for (int q = 0; q < 6; ++q) { // 16-byte loads
      const Words v = load16(s + 4 * q);
      for (int i = 0; i < 4; ++i)
        x.planes[q / 2][4 * (q % 2) + i] = v.w[i];
    }
    const Words f = load16(s + 24);
    x.step[0] = bits_as_float(f.w[0]), x.step[1] = bits_as_float(f.w[1]);
    x.sum[0] = bits_as_float(f.w[2]), x.sum[1] = bits_as_float(f.w[3]);
    return x;
  }
};

// The sum of c and the products of the 4 bytes of a and b (dp4a), signed or unsigned.
PHIMOE_HD int dot4(uint32_t a, uint32_t b, int c) {
#ifdef __CUDA_ARCH__
  return __dp4a(static_cast<int>(a), static_cast<int>(b), c);
#else
  for (int i = 0; i < 4; ++i)
    c += static_cast<int8_t>(a >> (8 * i)) * static_cast<int8_t>(b >> (8 * i));
  return c;
#endif
}
PHIMOE_HD int udot4(uint32_t a, uint32_t b, int c) {
#ifdef __CUDA_ARCH__
  return static_cast<int>(__dp4a(a, b, static_cast<unsigned>(c)));
#else
  for (int i = 0; i < 4; ++i)
    c += static_cast<int>(((a >> (8 * i)) & 255u) * ((b >> (8 * i)) & 255u));
  return c;
#endif
}

// Unit u of row r (Elem<q4_K>'s unit) times the staged input x of unit u.
PHIMOE_HD float q4k_unit_dot(const phimoe_rt::block_q4k *w, size_t R, int K, size_t r, int u,
                             const StagedQ4k::Unit &x) {
  using E = Elem<phimoe_rt::block_q4k>;
  const size_t block = r * (K / 256) + u / 8;
  const int p = u % 8, c = p / 2;
  const Words q = load16(reinterpret_cast<const uint8_t *>(w) + block * 128 + 16 * p);
  int lo[3] = {0, 0, 0}, hi[3] = {0, 0, 0};
  for (int k = 0; k < 4; ++k) { // nibbles times the unsigned planes 0, 1 and the signed plane 2
    const uint32_t nl = q.w[k] & 0x0f0f0f0fu, nh = (q.w[k] >> 4) & 0x0f0f0f0fu;
    for (int pl = 0; pl < 2; ++pl) {
      lo[pl] = udot4(nl, x.planes[pl][k], lo[pl]);
      hi[pl] = udot4(nh, x.planes[pl][4 + k], hi[pl]);
    }
    lo[2] = dot4(nl, x.planes[2][k], lo[2]);
    hi[2] = dot4(nh, x.planes[2][4 + k], hi[2]);
  }
  // |sum| <= 16 * 15 * 2^22 < 2^31.
  const int vlo = lo[2] * 65536 + lo[1] * 256 + lo[0], vhi = hi[2] * 65536 + hi[1] * 256 + hi[0];
  // d, dmin and the 12 scale bytes; the 6-bit scales and mins of sub-blocks 0-3 and 4-7, a
  // byte each (Elem<q4_K>::scale_min, four at a time).
  const Words m = load16(E::meta(w, R, K, block));
  const uint32_t sc03 = m.w[1] & 0x3f3f3f3fu, mn03 = m.w[2] & 0x3f3f3f3fu;
  const uint32_t sc47 = (m.w[3] & 0x0f0f0f0fu) | ((m.w[1] >> 2) & 0x30303030u);
  const uint32_t mn47 = ((m.w[3] >> 4) & 0x0f0f0f0fu) | ((m.w[2] >> 2) & 0x30303030u);
  const uint32_t scw = c < 2 ? sc03 : sc47, mnw = c < 2 ? mn03 : mn47;
  const int b = 2 * (c & 1); // sub-blocks 2c and 2c + 1: bytes 2 (c % 2) and the next
  const float sc_lo = byte_at(scw, b), sc_hi = byte_at(scw, b + 1);
  const float m_lo = byte_at(mnw, b), m_hi = byte_at(mnw, b + 1);
  return f16_bits(m.w[0]) * (sc_lo * x.step[0] * static_cast<float>(vlo) +
                             sc_hi * x.step[1] * static_cast<float>(vhi)) -
         f16_bits(m.w[0] >> 16) * (m_lo * x.sum[0] + m_hi * x.sum[1]);
}

// q6_K: ql [R*K/2], qh [R*K/4], scales [R*K/16] int8, d [R*K/256] f16. In a block, half n
// (128 columns) has ql[64n + l], ql[64n + 32 + l] and qh[32n + l] for l < 32: column
// 128n + 32t + l (quarter t) has 4 low bits from ql[64n + l] (t = 0: low nibble, t = 2: high)
// or ql[64n + 32 + l] (t = 1, 3), 2 high bits (qh[32n + l] >> 2t) & 3, minus 32, and the
// scale scales[8n + l / 16 + 2t]. A unit: 16 consecutive l of one half, its 4 quarters: 64
// values from 3 loads of 16 bytes.
template <> struct Elem<phimoe_rt::block_q6k> {
  using W = phimoe_rt::block_q6k;
  static constexpr int kUnit = 64;
  PHIMOE_HD static constexpr bool vec(long long K) { return K % phimoe_rt::kQK_K == 0; }
  // Unit u: block u / 4, p = u % 4: half n = p / 2, l from 16 (p % 2).
  PHIMOE_HD static int k_of(int u, int j) {
    const int p = u % 4;
    return 256 * (u / 4) + 128 * (p / 2) + 32 * (j / 16) + 16 * (p % 2) + j % 16;
  }
  struct Regions {
    const uint8_t *ql, *qh;
    const int8_t *scales;
    const uint8_t *d;
  };
  PHIMOE_HD static Regions regions(const W *w, size_t R, int K) {
    const uint8_t *base = reinterpret_cast<const uint8_t *>(w);
    const size_t n = R * static_cast<size_t>(K);
    return Regions{base, base + n / 2, reinterpret_cast<const int8_t *>(base + n / 2 + n / 4),
                   base + n / 2 + n / 4 + n / 16};
  }
  PHIMOE_HD static float at(const W *w, size_t R, int K, size_t r, int k) {
    const Regions g = regions(w, R, K);
    const size_t i = r * K + k, block = i / 256;
    const int j = static_cast<int>(i % 256), n = j / 128, t = (j % 128) / 32, l = j % 32;
    const uint8_t low = g.ql[block * 128 + 64 * n + 32 * (t & 1) + l];
    const int lo4 = t < 2 ? low & 0xf : low >> 4;
    const int hi2 = (g.qh[block * 64 + 32 * n + l] >> (2 * t)) & 3;
    const float d = f16_bits(load_u16(g.d + 2 * block));
    return d * g.scales[block * 16 + 8 * n + l / 16 + 2 * t] * ((lo4 | (hi2 << 4)) - 32);
  }
  PHIMOE_HD static float unit_dot(const W *w, size_t R, int K, size_t r, int u, const float *xv) {
    const Regions g = regions(w, R, K);
    const size_t block = r * (K / 256) + u / 4;
    const int p = u % 4, n = p / 2, l0 = 16 * (p % 2);
    const Words a = load16(g.ql + block * 128 + 64 * n + l0);
    const Words b = load16(g.ql + block * 128 + 64 * n + 32 + l0);
    const Words h = load16(g.qh + block * 64 + 32 * n + l0);
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int k = 0; k < 4; ++k) { // 6-bit quants of 4 columns a word, minus 32
      const uint32_t la = a.w[k], lb = b.w[k], hb = h.w[k];
      const uint32_t q0 = (la & 0x0f0f0f0fu) | ((hb & 0x03030303u) << 4);
      const uint32_t q1 = (lb & 0x0f0f0f0fu) | (((hb >> 2) & 0x03030303u) << 4);
      const uint32_t q2 = ((la >> 4) & 0x0f0f0f0fu) | (((hb >> 4) & 0x03030303u) << 4);
      const uint32_t q3 = ((lb >> 4) & 0x0f0f0f0fu) | (((hb >> 6) & 0x03030303u) << 4);
      acc[0] = dot_bytes(q0, 32.0f, xv + 4 * k, acc[0]);
      acc[1] = dot_bytes(q1, 32.0f, xv + 16 + 4 * k, acc[1]);
      acc[2] = dot_bytes(q2, 32.0f, xv + 32 + 4 * k, acc[2]);
      acc[3] = dot_bytes(q3, 32.0f, xv + 48 + 4 * k, acc[3]);
    }
    const int8_t *sc = g.scales + block * 16 + 8 * n + p % 2;
    const float d = f16_bits(load_u16(g.d + 2 * block));
    return d * (sc[0] * acc[0] + sc[2] * acc[1] + sc[4] * acc[2] + sc[6] * acc[3]);
  }
};

// The bytes that rows [first, first + count) of an [R, K] weight occupy, from the weight's
// start: one range for float, bf16 and f16; for a block type (rows of whole blocks), one per
// field of phimoe_rt/split_layout.h (cuda_elements_test holds them to what at() reads). The
// decode kernels prefetch them (kernels.cuh, prefetch_rows).
template <class W> struct RowRanges {
  static constexpr bool q8 = std::is_same<W, phimoe_rt::block_q8_0>::value;
  static constexpr bool q4 = std::is_same<W, phimoe_rt::block_q4k>::value;
  static constexpr bool q6 = std::is_same<W, phimoe_rt::block_q6k>::value;
  static constexpr int count = q6 ? 4 : q8 || q4 ? 2 : 1;
  size_t offset[count], bytes[count];
};
template <class W>
PHIMOE_HD RowRanges<W> row_ranges(size_t R, int K, size_t first, size_t count) {
  using G = RowRanges<W>;
  G g;
  if constexpr (G::count > 1) {
    constexpr int values = G::q8 ? 32 : 256;
    constexpr uint32_t field_bytes[4] = {G::q8 ? 32u : 128u, G::q8 ? 2u : G::q4 ? 16u : 64u,
                                         16u, 2u};
    const size_t per_row = static_cast<size_t>(K) / values, total = R * per_row;
    size_t region = 0;
#pragma unroll
    for (int f = 0; f < G::count; ++f) {
      g.offset[f] = region + first * per_row * field_bytes[f];
      g.bytes[f] = count * per_row * field_bytes[f];
      region += total * field_bytes[f];
    }
  } else {
    g.offset[0] = first * static_cast<size_t>(K) * sizeof(W);
    g.bytes[0] = count * static_cast<size_t>(K) * sizeof(W);
  }
  return g;
}

// Where value idx of a staged row of K values comes from: with whole units, the unit-major
// order unit_dot reads (idx = j * U + u); otherwise the row as it is.
template <class W, int K> PHIMOE_HD int staged_source(int idx) {
  using E = Elem<W>;
  if constexpr (E::vec(K)) {
    constexpr int U = K / E::kUnit;
    return E::k_of(idx % U, idx / U);
  } else {
    return idx;
  }
}

} // namespace detail
} // namespace phimoe_cuda

#endif // PHIMOE_CUDA_ELEMENTS_CUH
