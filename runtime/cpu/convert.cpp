// convert.cpp - scalar float <-> bf16 / f16 conversions (round to nearest even; inf, nan, subnormals).
#include "phimoe_rt/runtime.h"

namespace phimoe_rt {
namespace {

uint32_t bits_of(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

float float_of(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

} // namespace

float f16_to_float(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1f) // inf or nan: keep the payload (a nan stays a nan)
    return float_of(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) // normal: rebias 15 -> 127
    return float_of(sign | ((exponent + 112) << 23) | (mantissa << 13));
  if (mantissa == 0)
    return float_of(sign);
  // Subnormal: mantissa * 2^-24; normalise so that the leading one becomes implicit.
  uint32_t e = 113; // biased exponent of 2^-14
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    --e;
  }
  return float_of(sign | (e << 23) | ((mantissa & 0x3ffu) << 13));
}

bf16 float_to_bf16(float x) {
  uint32_t u = bits_of(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) // nan: truncate and force the quiet bit
    return bf16{static_cast<uint16_t>((u >> 16) | 0x0040u)};
  // Adding 0x7fff plus the lowest kept bit rounds half to even; a carry into the
  // exponent is correct (including overflow of the largest finite values to inf).
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}

f16 float_to_f16(float x) {
  uint32_t u = bits_of(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) // nan: keep the top payload bits, force the quiet bit
    return f16{static_cast<uint16_t>(sign | 0x7e00u | ((u >> 13) & 0x3ffu))};
  if (u >= 0x477ff000u) // >= 65520 (halfway past 65504, ties to the even inf): inf
    return f16{static_cast<uint16_t>(sign | 0x7c00u)};
  if (u >= 0x38800000u) { // normal f16 range (>= 2^-14)
    u -= 112u << 23;      // rebias 127 -> 15
    u += 0xfffu + ((u >> 13) & 1u);
    return f16{static_cast<uint16_t>(sign | (u >> 13))};
  }
  // Subnormal f16 (or zero): the result is round(|x| * 2^24) units of 2^-24.
  const uint32_t exponent = u >> 23;
  if (exponent < 102) // |x| < 2^-25: rounds to zero (2^-25 itself ties to even zero)
    return f16{sign};
  const uint32_t mantissa = (u & 0x7fffffu) | 0x800000u; // value = mantissa * 2^(exponent-150)
  const uint32_t shift = 126 - exponent;                  // 14..24
  uint32_t m = mantissa >> shift;
  const uint32_t rest = mantissa & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (m & 1u)))
    ++m; // may carry into the smallest normal (0x400), which encodes correctly
  return f16{static_cast<uint16_t>(sign | m)};
}

} // namespace phimoe_rt
