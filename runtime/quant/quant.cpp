// quant.cpp - q8_0 rows: round-to-nearest quantization with d = amax / 127, and dequantization.
//
// The bytes are those of llama.cpp's reference q8_0 quantizer (which gguf's numpy
// port reproduces): d is computed in float and stored as f16, the quants are
// round(x / d) with ties away from zero.
#include "phimoe_rt/quant.h"

#include "quant_util.h"

namespace phimoe_rt {

void quantize_row_q8_0(const float *x, block_q8_0 *y, int64_t n) {
  for (int64_t b = 0; b < n / kQK8_0; ++b, x += kQK8_0) {
    float amax = 0.f;
    for (int i = 0; i < kQK8_0; ++i)
      amax = std::fmax(amax, std::fabs(x[i]));
    const float d = amax / 127.f;
    const float inv = d != 0.f ? 1.f / d : 0.f;
    y[b].d = float_to_f16(d).bits;
    for (int i = 0; i < kQK8_0; ++i) {
      // |x * inv| <= 127 up to rounding; the clamp only keeps a nan defined.
      float q = std::fmin(std::fmax(std::round(x[i] * inv), -127.f), 127.f);
      y[b].qs[i] = static_cast<int8_t>(q);
    }
  }
}

void dequantize_row_q8_0(const block_q8_0 *x, float *y, int64_t n) {
  for (int64_t b = 0; b < n / kQK8_0; ++b, y += kQK8_0) {
    const float d = f16_to_float(x[b].d);
    for (int i = 0; i < kQK8_0; ++i)
      y[i] = d * static_cast<float>(x[b].qs[i]);
  }
}

void interleave_q8_016(const block_q8_0 *rows, int64_t nb, block_q8_0_16rows *out) {
  for (int64_t b = 0; b < nb; ++b)
    for (int r = 0; r < 16; ++r) {
      const block_q8_0 &x = rows[r * nb + b];
      out[b].d[r] = x.d;
      for (int i = 0; i < kQK8_0; ++i)
        out[b].qs[i / 4][4 * r + i % 4] = static_cast<uint8_t>(x.qs[i] + 128);
    }
}

void deinterleave_q8_016(const block_q8_0_16rows *in, int64_t nb, block_q8_0 *rows) {
  for (int64_t b = 0; b < nb; ++b)
    for (int r = 0; r < 16; ++r) {
      block_q8_0 &x = rows[r * nb + b];
      x.d = in[b].d[r];
      for (int i = 0; i < kQK8_0; ++i)
        x.qs[i] = static_cast<int8_t>(in[b].qs[i / 4][4 * r + i % 4] - 128);
    }
}

} // namespace phimoe_rt
