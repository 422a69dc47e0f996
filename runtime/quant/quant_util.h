// quant_util.h - helpers of the block quantizers: rounding, f16 round trips, packing rules.
#ifndef PHIMOE_RT_QUANT_UTIL_H
#define PHIMOE_RT_QUANT_UTIL_H

#include "phimoe_rt/runtime.h"

#include <cmath>
#include <cstdint>
#include <cstring>

// The quantizers' floating-point expressions are evaluated as written (no fused
// multiply-add), so that a weight pack is byte-identical whatever -march built
// phimoec. GCC contracts nothing in ISO C++ mode; clang needs to be told.
#ifdef __clang__
#pragma clang fp contract(off)
#endif

namespace phimoe_rt {
namespace quant_detail {

// Rounds half to even (as llama.cpp's quantizers round) without a libm call: adding
// 1.5 * 2^23 leaves round(v) + 2^22 in the low mantissa bits. Clamped to |v| < 2^22,
// so that any float, even inf or nan, gives a defined int.
inline int round_even(float v) {
  v = v < 4194303.f ? v : 4194303.f;
  v = v > -4194303.f ? v : -4194303.f; // a nan fails both tests and ends here
  float shifted = v + 12582912.f;
  uint32_t bits;
  std::memcpy(&bits, &shifted, 4);
  return static_cast<int>(bits & 0x007fffffu) - 0x00400000;
}

inline int clamp_int(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// The float an f16 field stores for v.
inline float f16_round(float v) { return f16_to_float(float_to_f16(v).bits); }

} // namespace quant_detail
} // namespace phimoe_rt

#endif // PHIMOE_RT_QUANT_UTIL_H
