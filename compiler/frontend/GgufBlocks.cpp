//===- GgufBlocks.cpp - values of llama.cpp's block formats ---------------===//

#include "compiler/frontend/GgufBlocks.h"

#include "phimoe_rt/quant.h"
#include "phimoe_rt/runtime.h"

#include <cstring>

using namespace phimoe;

namespace {

float half(const uint8_t *p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return phimoe_rt::f16_to_float(bits);
}

/// Stores the two values of quant byte j of a 32-value block: `lo` at j, `hi` at j + 16;
/// q · d + m with a min (`minAt`, Q4_1 and Q5_1), else (q - centre) · d.
void putPair(float *y, int j, int lo, int hi, float d, const uint8_t *minAt, int centre) {
  if (minAt) {
    const float m = half(minAt);
    y[j] = static_cast<float>(lo) * d + m;
    y[j + 16] = static_cast<float>(hi) * d + m;
  } else {
    y[j] = static_cast<float>(lo - centre) * d;
    y[j + 16] = static_cast<float>(hi - centre) * d;
  }
}

/// Q4_0 (d, 16 bytes of nibbles) and Q4_1 (d, m, nibbles): 32 values, the low nibbles
/// first, then the high ones; Q4_0 centres them on 8.
void q4_01(const uint8_t *b, float *y, int64_t blocks, bool withMin) {
  const size_t bytes = withMin ? 20 : 18;
  for (int64_t i = 0; i < blocks; ++i, b += bytes, y += 32) {
    const uint8_t *qs = b + (withMin ? 4 : 2);
    for (int j = 0; j < 16; ++j)
      putPair(y, j, qs[j] & 0xF, qs[j] >> 4, half(b), withMin ? b + 2 : nullptr, 8);
  }
}

/// Q5_0 (d, 4 bytes of fifth bits, nibbles) and Q5_1 (d, m, ...): value j's fifth bit is bit j
/// of the 32-bit qh, and Q5_0 centres the values on 16.
void q5_01(const uint8_t *b, float *y, int64_t blocks, bool withMin) {
  const size_t bytes = withMin ? 24 : 22;
  for (int64_t i = 0; i < blocks; ++i, b += bytes, y += 32) {
    const uint8_t *p = b + (withMin ? 4 : 2);
    uint32_t qh;
    std::memcpy(&qh, p, 4);
    const uint8_t *qs = p + 4;
    for (int j = 0; j < 16; ++j)
      putPair(y, j, (qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1) << 4),
              (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1) << 4), half(b),
              withMin ? b + 2 : nullptr, 16);
  }
}

/// Q2_K: 16 scale bytes (low nibble scale, high nibble min of each 16 values), 64 bytes of
/// 2-bit quants, d, dmin. Each 128 values take 32 quant bytes: four 2-bit planes, each plane
/// two runs of 16 values with their own scale.
void q2k(const uint8_t *b, float *y, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i, b += 84) {
    const uint8_t *scales = b, *q = b + 16;
    const float d = half(b + 80), dmin = half(b + 82);
    int is = 0;
    for (int n = 0; n < 256; n += 128, q += 32)
      for (int shift = 0; shift < 8; shift += 2)
        for (int half16 = 0; half16 < 2; ++half16) {
          const uint8_t sc = scales[is++];
          const float dl = d * static_cast<float>(sc & 0xF);
          const float ml = dmin * static_cast<float>(sc >> 4);
          for (int l = 0; l < 16; ++l)
            *y++ = dl * static_cast<float>((q[16 * half16 + l] >> shift) & 3) - ml;
        }
  }
}

/// Q3_K: 32 bytes of high-bit masks, 64 bytes of 2-bit quants, 12 bytes of sixteen 6-bit
/// scales (biased by 32), d. A value is its two low bits minus 4 unless its mask bit is set.
void q3k(const uint8_t *b, float *y, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i, b += 110) {
    const uint8_t *hmask = b, *q = b + 32, *packed = b + 96;
    const float d = half(b + 108);
    int scales[16];
    for (int j = 0; j < 16; ++j) {
      // Low 4 bits: the low nibbles of bytes 0..7 for j < 8, their high nibbles for j >= 8;
      // high 2 bits: bits 2 (j / 4) and 2 (j / 4) + 1 of byte 8 + j % 4.
      const int low = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
      const int high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
      scales[j] = (low | high << 4) - 32;
    }
    int is = 0;
    uint8_t m = 1;
    for (int n = 0; n < 256; n += 128, q += 32)
      for (int shift = 0; shift < 8; shift += 2, m <<= 1)
        for (int half16 = 0; half16 < 2; ++half16) {
          const float dl = d * static_cast<float>(scales[is++]);
          for (int l = 16 * half16; l < 16 * half16 + 16; ++l) {
            const int v = ((q[l] >> shift) & 3) - ((hmask[l] & m) ? 0 : 4);
            *y++ = dl * static_cast<float>(v);
          }
        }
  }
}

/// The 6-bit scale and min of sub-block j of a Q4_K/Q5_K block's 12 scale bytes.
void scaleMin(int j, const uint8_t *q, int &sc, int &m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

/// Q5_K: d, dmin, 12 scale bytes, 32 bytes of fifth bits, 128 bytes of nibbles; each 64
/// values: 32 low nibbles (fifth bit from plane 2k of qh), 32 high nibbles (plane 2k + 1).
void q5k(const uint8_t *b, float *y, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i, b += 176) {
    const float d = half(b), dmin = half(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
    for (int k = 0; k < 4; ++k, ql += 32) {
      int sc, m;
      scaleMin(2 * k, scales, sc, m);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
      scaleMin(2 * k + 1, scales, sc, m);
      const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l)
        *y++ = d1 * static_cast<float>((ql[l] & 0xF) + (((qh[l] >> (2 * k)) & 1) << 4)) - m1;
      for (int l = 0; l < 32; ++l)
        *y++ = d2 * static_cast<float>((ql[l] >> 4) + (((qh[l] >> (2 * k + 1)) & 1) << 4)) - m2;
    }
  }
}

} // namespace

void phimoe::dequantizeBlocks(DType dtype, const uint8_t *in, float *out, int64_t n) {
  const int64_t blocks = n / dtypeBlockValues(dtype);
  switch (dtype) {
  case DType::Q8_0:
    return phimoe_rt::dequantize_row_q8_0(reinterpret_cast<const phimoe_rt::block_q8_0 *>(in),
                                          out, n);
  case DType::Q4_K:
    return phimoe_rt::dequantize_row_q4k(reinterpret_cast<const phimoe_rt::block_q4k *>(in),
                                         out, n);
  case DType::Q6_K:
    return phimoe_rt::dequantize_row_q6k(reinterpret_cast<const phimoe_rt::block_q6k *>(in),
                                         out, n);
  case DType::Q4_0:
  case DType::Q4_1:
    return q4_01(in, out, blocks, dtype == DType::Q4_1);
  case DType::Q5_0:
  case DType::Q5_1:
    return q5_01(in, out, blocks, dtype == DType::Q5_1);
  case DType::Q2_K:
    return q2k(in, out, blocks);
  case DType::Q3_K:
    return q3k(in, out, blocks);
  case DType::Q5_K:
    return q5k(in, out, blocks);
  case DType::F32:
  case DType::F16:
  case DType::BF16:
    break;
  }
}
