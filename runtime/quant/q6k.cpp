// q6k.cpp - q6_K rows: the reference scale search, least-squares refinement, packing.
//
// A super-block of 256 values is 16 sub-blocks of 16: x ~ d * sc[j] * (q - 32), q
// 6-bit, sc int8. As for q4_K we build llama.cpp's reference choice (per sub-block a
// search over 19 trial scales for the x^2-weighted error, then int8 scales relative
// to the largest) and one for the plain squared error, keep the better, and refine
// it by exact steps that never increase the error of the dequantized block: d by
// least squares, and per sub-block the best int8 scale near its least-squares value.
#include "phimoe_rt/quant.h"

#include "quant_util.h"

namespace phimoe_rt {
namespace {

using quant_detail::clamp_int;
using quant_detail::f16_round;
using quant_detail::round_even;

constexpr int kSubLen = 16;            // values per sub-block
constexpr int kSubs = kQK_K / kSubLen; // sub-blocks per super-block
constexpr int kHalf = 32;              // quants are q - 32 in [-32, 31]
constexpr int kRefineRounds = 2;
constexpr float kZero = 1e-15f; // a sub-block (or block) this small is all zero

// A super-block before packing. d holds a value exactly representable as f16.
struct Q6kBlock {
  float d = 0.f;
  int8_t sc[kSubs] = {};
  int8_t q[kQK_K] = {}; // in [-32, 31]
};

// Fits x ~ scale * l (l in [-32, 31]) to one sub-block for the squared error
// weighted by w (x^2 when `square_weights`, else 1): the value of largest magnitude
// maps to -32 (the extra level), then inverse scales -(32 + 0.1 k) / max for k in
// -9..9 round the quants, each followed by its least-squares scale; the best is kept.
float fit_sub_block(const float *x, int8_t *l, bool square_weights) {
  float amax = 0.f, max = 0.f;
  for (int i = 0; i < kSubLen; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kZero) {
    std::memset(l, 0, kSubLen);
    return 0.f;
  }
  auto weight = [&](int i) { return square_weights ? x[i] * x[i] : 1.f; };
  auto trial = [&](float inv, float &sum_lx, float &sum_l2, int8_t *out) {
    sum_lx = sum_l2 = 0.f;
    for (int i = 0; i < kSubLen; ++i) {
      const int q = clamp_int(round_even(inv * x[i]), -kHalf, kHalf - 1);
      out[i] = static_cast<int8_t>(q);
      const float w = weight(i);
      sum_lx += w * x[i] * q;
      sum_l2 += w * q * q;
    }
  };
  float sum_lx, sum_l2;
  trial(-kHalf / max, sum_lx, sum_l2, l);
  float scale = sum_l2 != 0.f ? sum_lx / sum_l2 : 0.f;
  float best = scale * sum_lx; // the error is sum w x^2 - best
  int8_t cand[kSubLen];
  for (int k = -9; k <= 9; ++k) {
    if (k == 0)
      continue;
    trial(-(kHalf + 0.1f * k) / max, sum_lx, sum_l2, cand);
    if (sum_l2 > 0.f && sum_lx * sum_lx > best * sum_l2) {
      std::memcpy(l, cand, kSubLen);
      scale = sum_lx / sum_l2;
      best = scale * sum_lx;
    }
  }
  return scale;
}

// The super-block from per-sub-block scales: int8 codes with the largest magnitude at
// -128, an f16 d, and the quants re-rounded for the coded scales (a sub-block whose
// code is zero keeps its fit's quants). False if the whole block is zero.
bool assemble(const float *x, const float *scales, Q6kBlock &b) {
  float max_scale = 0.f, max_abs = 0.f;
  for (int j = 0; j < kSubs; ++j)
    if (std::fabs(scales[j]) > max_abs) {
      max_abs = std::fabs(scales[j]);
      max_scale = scales[j];
    }
  if (max_abs < kZero)
    return false;
  const float inv = -128.f / max_scale;
  b.d = f16_round(1.f / inv);
  for (int j = 0; j < kSubs; ++j)
    b.sc[j] = static_cast<int8_t>(clamp_int(round_even(inv * scales[j]), -128, 127));
  for (int j = 0; j < kSubs; ++j) {
    const float step = b.d * b.sc[j];
    if (step == 0.f)
      continue;
    for (int i = j * kSubLen; i < (j + 1) * kSubLen; ++i)
      b.q[i] = static_cast<int8_t>(clamp_int(round_even(x[i] / step), -kHalf, kHalf - 1));
  }
  return true;
}

// One candidate; false if the block is zero.
bool candidate(const float *x, bool square_weights, Q6kBlock &b) {
  float scales[kSubs];
  for (int j = 0; j < kSubs; ++j)
    scales[j] = fit_sub_block(x + j * kSubLen, b.q + j * kSubLen, square_weights);
  return assemble(x, scales, b);
}

// Squared error of sub-block j as dequantize_row_q6k reconstructs it.
double sub_error(const Q6kBlock &b, const float *x, int j) {
  const float step = b.d * b.sc[j];
  double err = 0.0;
  for (int i = j * kSubLen; i < (j + 1) * kSubLen; ++i) {
    const double diff = static_cast<double>(step * b.q[i]) - x[i];
    err += diff * diff;
  }
  return err;
}

double block_error(const Q6kBlock &b, const float *x) {
  double err = 0.0;
  for (int j = 0; j < kSubs; ++j)
    err += sub_error(b, x, j);
  return err;
}

// Re-rounds sub-block j's quants to the nearest level for its step; returns its error.
double requantize_sub(Q6kBlock &b, const float *x, int j) {
  const float step = b.d * b.sc[j];
  if (step != 0.f)
    for (int i = j * kSubLen; i < (j + 1) * kSubLen; ++i)
      b.q[i] = static_cast<int8_t>(clamp_int(round_even(x[i] / step), -kHalf, kHalf - 1));
  return sub_error(b, x, j);
}

// d by least squares for the current codes and quants (rounded to f16), the quants
// re-rounded. Returns the new error (the block is changed only if lower).
double refit_super_scale(Q6kBlock &b, const float *x, double err) {
  double saa = 0, sax = 0;
  for (int j = 0; j < kSubs; ++j)
    for (int i = j * kSubLen; i < (j + 1) * kSubLen; ++i) {
      const double a = static_cast<double>(b.sc[j]) * b.q[i];
      saa += a * a;
      sax += a * x[i];
    }
  if (!(saa > 0))
    return err;
  Q6kBlock t = b;
  t.d = f16_round(static_cast<float>(sax / saa));
  if (!std::isfinite(t.d) || t.d == 0.f)
    return err;
  double e = 0.0;
  for (int j = 0; j < kSubs; ++j)
    e += requantize_sub(t, x, j);
  if (e < err) {
    b = t;
    return e;
  }
  return err;
}

// Per sub-block, the int8 scale among the current one and c - 1, c, c + 1 and their
// negations (c: the code nearest the least-squares scale for the current quants)
// whose re-rounded quants give the least error.
double refit_sub_scales(Q6kBlock &b, const float *x) {
  double total = 0.0;
  for (int j = 0; j < kSubs; ++j) {
    const float *xs = x + j * kSubLen;
    int8_t *qs = b.q + j * kSubLen;
    double sll = 0, slx = 0;
    for (int i = 0; i < kSubLen; ++i) {
      sll += static_cast<double>(qs[i]) * qs[i];
      slx += qs[i] * static_cast<double>(xs[i]);
    }
    const int8_t sc0 = b.sc[j];
    double best = sub_error(b, x, j);
    int8_t best_sc = sc0, best_q[kSubLen];
    std::memcpy(best_q, qs, kSubLen);
    if (sll > 0 && b.d != 0.f) {
      const int c = round_even(static_cast<float>(slx / sll / b.d));
      for (int k = -1; k <= 1; ++k)
        for (int sign = -1; sign <= 1; sign += 2) {
          const int sc = clamp_int(sign * (c + k), -128, 127);
          if (sc == sc0)
            continue;
          b.sc[j] = static_cast<int8_t>(sc);
          const double e = requantize_sub(b, x, j);
          if (e < best) {
            best = e;
            best_sc = b.sc[j];
            std::memcpy(best_q, qs, kSubLen);
          }
        }
    }
    b.sc[j] = best_sc;
    std::memcpy(qs, best_q, kSubLen);
    total += best;
  }
  return total;
}

void pack(const Q6kBlock &b, block_q6k &y) {
  y.d = float_to_f16(b.d).bits;
  for (int j = 0; j < kSubs; ++j)
    y.scales[j] = b.sc[j];
  // Each half of 128 values: 64 bytes of low nibbles (values l and l + 64 share
  // byte l, values l + 32 and l + 96 byte l + 32) and 32 bytes of high 2-bit pairs
  // (values l, l + 32, l + 64, l + 96 in bits 0-1, 2-3, 4-5, 6-7 of byte l).
  for (int h = 0; h < 2; ++h) {
    const int8_t *q = b.q + 128 * h;
    uint8_t *ql = y.ql + 64 * h, *qh = y.qh + 32 * h;
    for (int l = 0; l < 32; ++l) {
      uint8_t u[4];
      for (int k = 0; k < 4; ++k)
        u[k] = static_cast<uint8_t>(q[l + 32 * k] + kHalf);
      ql[l] = static_cast<uint8_t>((u[0] & 0xf) | ((u[2] & 0xf) << 4));
      ql[l + 32] = static_cast<uint8_t>((u[1] & 0xf) | ((u[3] & 0xf) << 4));
      qh[l] = static_cast<uint8_t>((u[0] >> 4) | ((u[1] >> 4) << 2) | ((u[2] >> 4) << 4) |
                                   ((u[3] >> 4) << 6));
    }
  }
}

void quantize_block(const float *x, block_q6k &y) {
  Q6kBlock best;
  if (!candidate(x, /*square_weights=*/true, best)) { // llama.cpp's choice
    std::memset(&y, 0, sizeof y);
    return;
  }
  double err = block_error(best, x);
  Q6kBlock plain;
  if (candidate(x, /*square_weights=*/false, plain)) {
    const double plain_err = block_error(plain, x);
    if (plain_err < err) {
      best = plain;
      err = plain_err;
    }
  }
  for (int round = 0; round < kRefineRounds && err > 0.0; ++round) {
    const double before = err;
    err = refit_super_scale(best, x, err);
    err = refit_sub_scales(best, x);
    if (!(err < before * (1 - 1e-9)))
      break;
  }
  pack(best, y);
}

} // namespace

void quantize_row_q6k(const float *x, block_q6k *y, int64_t n) {
  for (int64_t b = 0; b < n / kQK_K; ++b)
    quantize_block(x + b * kQK_K, y[b]);
}

void dequantize_row_q6k(const block_q6k *x, float *y, int64_t n) {
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const float d = f16_to_float(x[b].d);
    for (int h = 0; h < 2; ++h) {
      const uint8_t *ql = x[b].ql + 64 * h, *qh = x[b].qh + 32 * h;
      const int8_t *sc = x[b].scales + 8 * h;
      for (int k = 0; k < 4; ++k)
        for (int l = 0; l < 32; ++l) {
          const int low = (ql[l + 32 * (k & 1)] >> (4 * (k >> 1))) & 0xf;
          const int high = (qh[l] >> (2 * k)) & 3;
          const float step = d * sc[l / 16 + 2 * k];
          y[128 * h + 32 * k + l] = step * static_cast<float>((low | (high << 4)) - kHalf);
        }
    }
    y += kQK_K;
  }
}

void interleave_q6k16(const block_q6k *rows, int64_t nb, block_q6k_16rows *out) {
  for (int64_t b = 0; b < nb; ++b)
    for (int r = 0; r < 16; ++r) {
      const block_q6k &x = rows[r * nb + b];
      out[b].d[r] = x.d;
      for (int j = 0; j < 16; ++j)
        out[b].scales[j][r] = x.scales[j];
      for (int h = 0; h < 2; ++h)
        for (int k = 0; k < 8; ++k) {
          const int n = 8 * h + k;
          std::memcpy(&out[b].q[3 * n][4 * r], x.ql + 64 * h + 4 * k, 4);
          std::memcpy(&out[b].q[3 * n + 1][4 * r], x.ql + 64 * h + 32 + 4 * k, 4);
          std::memcpy(&out[b].q[3 * n + 2][4 * r], x.qh + 32 * h + 4 * k, 4);
        }
    }
}

void deinterleave_q6k16(const block_q6k_16rows *in, int64_t nb, block_q6k *rows) {
  for (int64_t b = 0; b < nb; ++b)
    for (int r = 0; r < 16; ++r) {
      block_q6k &x = rows[r * nb + b];
      x.d = in[b].d[r];
      for (int j = 0; j < 16; ++j)
        x.scales[j] = in[b].scales[j][r];
      for (int h = 0; h < 2; ++h)
        for (int k = 0; k < 8; ++k) {
          const int n = 8 * h + k;
          std::memcpy(x.ql + 64 * h + 4 * k, &in[b].q[3 * n][4 * r], 4);
          std::memcpy(x.ql + 64 * h + 32 + 4 * k, &in[b].q[3 * n + 1][4 * r], 4);
          std::memcpy(x.qh + 32 * h + 4 * k, &in[b].q[3 * n + 2][4 * r], 4);
        }
    }
}

} // namespace phimoe_rt
