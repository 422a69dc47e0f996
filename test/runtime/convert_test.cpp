// convert_test.cpp - f16/bf16 conversions: exhaustive decoding, round-to-nearest-even encoding.
#include "phimoe_rt/simd.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace {

using namespace phimoe_rt;

uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}
float from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// The value of f16 bits by the IEEE definition (exact in double); inf as +-inf.
double f16_value(uint16_t h) {
  const int sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  double v;
  if (exponent == 31)
    v = mantissa ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (exponent == 0)
    v = std::ldexp(static_cast<double>(mantissa), -24);
  else
    v = std::ldexp(static_cast<double>(1024 + mantissa), exponent - 25);
  return sign ? -v : v;
}

// Nearest of two candidate encodings `lo` < `hi` (adjacent, same sign) of a value x, ties to
// the even encoding; `lo_v`, `hi_v` are their magnitudes, an overflowed hi counting as the
// next power of two (IEEE overflow rounding).
template <class T> T nearest_even(double x, T lo, double lo_v, T hi, double hi_v) {
  const double dlo = x - lo_v, dhi = hi_v - x;
  if (dlo < dhi)
    return lo;
  if (dhi < dlo)
    return hi;
  return (lo & 1) ? hi : lo;
}

// Reference float -> f16 (round to nearest even) by search over the f16 magnitudes.
uint16_t f16_reference(float f) {
  if (std::isnan(f))
    return 0x7e00;
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double x = std::fabs(static_cast<double>(f));
  // positive f16 encodings 0..0x7c00 are increasing in value; 0x7c00 (inf) rounds as 65536
  uint16_t lo = 0, hi = 0x7c00;
  auto mag = [](uint16_t h) { return h == 0x7c00 ? 65536.0 : f16_value(h); };
  if (x >= mag(hi))
    return sign | 0x7c00;
  while (hi - lo > 1) { // invariant: mag(lo) <= x < mag(hi)
    const uint16_t mid = static_cast<uint16_t>((lo + hi) / 2);
    (mag(mid) <= x ? lo : hi) = mid;
  }
  return sign | nearest_even<uint16_t>(x, lo, mag(lo), hi, mag(hi));
}

// Reference float -> bf16: the two bf16 neighbours of |x| by truncation, nearest, ties even.
uint16_t bf16_reference(float f) {
  const uint32_t u = bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  const uint32_t a = u & 0x7fffffffu;
  if (a == 0x7f800000u)
    return sign | 0x7f80;
  const uint16_t lo = static_cast<uint16_t>(a >> 16), hi = static_cast<uint16_t>(lo + 1);
  const double x = from_bits(a);
  const double lo_v = from_bits(static_cast<uint32_t>(lo) << 16);
  const double hi_v = hi == 0x7f80 ? std::ldexp(1.0, 128) : from_bits(static_cast<uint32_t>(hi) << 16);
  return sign | nearest_even<uint16_t>(x, lo, lo_v, hi, hi_v);
}

bool is_f16_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }

TEST(Convert, F16ToFloatExhaustive) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float got = f16_to_float(static_cast<uint16_t>(h));
    const double want = f16_value(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << h;
      ASSERT_EQ(std::signbit(got), (h & 0x8000) != 0) << std::hex << h;
      ASSERT_EQ((bits(got) >> 13) & 0x3ff, h & 0x3ff) << "payload of " << std::hex << h;
    } else {
      ASSERT_EQ(bits(got), bits(static_cast<float>(want))) << std::hex << h; // -0 included
    }
  }
}

// The kernels' inline vector and scalar f16/bf16 loads agree bit for bit with the library
// conversions for every 16-bit pattern. Only nans may differ, in the quiet bit (F16C's
// vcvtph2ps quiets a signalling nan): sign and the rest of the payload must match.
bool same_float(float got, float want) {
  if (std::isnan(want))
    return std::isnan(got) && ((bits(got) ^ bits(want)) & ~0x00400000u) == 0;
  return bits(got) == bits(want);
}

TEST(Convert, KernelLoadsMatchScalarConversions) {
  std::vector<f16> h(0x10000);
  std::vector<bf16> b(0x10000);
  for (uint32_t i = 0; i < 0x10000; ++i) {
    h[i].bits = static_cast<uint16_t>(i);
    b[i].bits = static_cast<uint16_t>(i);
  }
  for (uint32_t i = 0; i < 0x10000; i += 8) {
    const simd::vf8 vh = simd::load8(&h[i]), vb = simd::load8(&b[i]);
    for (uint32_t l = 0; l < 8; ++l) {
      const float want_h = f16_to_float(static_cast<uint16_t>(i + l));
      ASSERT_TRUE(same_float(vh[l], want_h)) << std::hex << i + l;
      ASSERT_TRUE(same_float(simd::load1(&h[i + l]), want_h)) << std::hex << i + l;
      ASSERT_EQ(bits(vb[l]), (i + l) << 16) << std::hex << i + l;
      ASSERT_EQ(bits(simd::load1(&b[i + l])), (i + l) << 16) << std::hex << i + l;
    }
  }
}

void expect_f16(float x, uint16_t want) {
  const uint16_t got = float_to_f16(x).bits;
  if (is_f16_nan(want)) {
    EXPECT_TRUE(is_f16_nan(got)) << x;
    EXPECT_EQ(got & 0x8000, want & 0x8000) << x;
  } else {
    EXPECT_EQ(got, want) << std::hexfloat << x;
  }
}

TEST(Convert, FloatToF16SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  expect_f16(0.0f, 0x0000);
  expect_f16(-0.0f, 0x8000);
  expect_f16(1.0f, 0x3c00);
  expect_f16(-2.0f, 0xc000);
  expect_f16(65504.0f, 0x7bff);                   // largest finite
  expect_f16(65519.99f, 0x7bff);                  // below the overflow midpoint
  expect_f16(65520.0f, 0x7c00);                   // the midpoint ties to the even inf
  expect_f16(1e9f, 0x7c00);
  expect_f16(-1e9f, 0xfc00);
  expect_f16(inf, 0x7c00);
  expect_f16(-inf, 0xfc00);
  expect_f16(std::ldexp(1.0f, -14), 0x0400);      // smallest normal
  expect_f16(std::ldexp(1.0f, -24), 0x0001);      // smallest subnormal
  expect_f16(std::ldexp(1.0f, -25), 0x0000);      // half of it: tie to even zero
  expect_f16(-std::ldexp(1.0f, -25), 0x8000);
  expect_f16(std::ldexp(1.5f, -25), 0x0001);      // above the tie
  expect_f16(std::ldexp(3.0f, -25), 0x0002);      // 1.5 units: tie to even 2
  expect_f16(std::ldexp(5.0f, -25), 0x0002);      // 2.5 units: tie to even 2
  expect_f16(std::ldexp(2047.0f, -25), 0x0400);   // 1023.5 units: carries into the normal range
  expect_f16(std::numeric_limits<float>::denorm_min(), 0x0000);
  expect_f16(1.0f + std::ldexp(1.0f, -11), 0x3c00); // tie between 1 and 1+2^-10: even (1)
  expect_f16(1.0f + std::ldexp(3.0f, -11), 0x3c02); // tie: even upper
  expect_f16(std::numeric_limits<float>::quiet_NaN(), 0x7e00);
  expect_f16(-std::numeric_limits<float>::quiet_NaN(), 0xfe00);
  expect_f16(from_bits(0x7f800001u), 0x7e00); // a signalling nan stays a nan (not inf)
  expect_f16(from_bits(0xff800001u), 0xfe00);
}

TEST(Convert, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if (is_f16_nan(static_cast<uint16_t>(h)))
      continue;
    ASSERT_EQ(float_to_f16(f16_to_float(static_cast<uint16_t>(h))).bits, h) << std::hex << h;
  }
}

// Every midpoint between adjacent f16 magnitudes (ties) and the floats just around it.
TEST(Convert, FloatToF16TiesAndNeighbours) {
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const double a = f16_value(static_cast<uint16_t>(h));
    const double b = h + 1 == 0x7c00 ? 65536.0 : f16_value(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((a + b) / 2);
    ASSERT_EQ(static_cast<double>(mid), (a + b) / 2); // exact in float
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      ASSERT_EQ(float_to_f16(x).bits, f16_reference(x)) << std::hexfloat << x;
      ASSERT_EQ(float_to_f16(-x).bits, f16_reference(-x)) << std::hexfloat << -x;
    }
    ASSERT_EQ(f16_reference(mid), (h & 1) ? h + 1 : h); // the reference itself ties to even
  }
}

TEST(Convert, FloatToF16Random) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<uint32_t> any;
  std::uniform_real_distribution<float> log2_mag(-27.0f, 17.0f), unit(1.0f, 2.0f);
  for (int i = 0; i < 300000; ++i) {
    const float x = from_bits(any(rng)); // all of float: mostly overflow or underflow
    if (std::isnan(x))
      continue;
    ASSERT_EQ(float_to_f16(x).bits, f16_reference(x)) << std::hexfloat << x;
  }
  for (int i = 0; i < 300000; ++i) { // magnitudes around the f16 range, both signs
    float x = std::ldexp(unit(rng), static_cast<int>(std::floor(log2_mag(rng))));
    if (i & 1)
      x = -x;
    ASSERT_EQ(float_to_f16(x).bits, f16_reference(x)) << std::hexfloat << x;
  }
}

TEST(Convert, FloatToBf16SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(float_to_bf16(0.0f).bits, 0x0000);
  EXPECT_EQ(float_to_bf16(-0.0f).bits, 0x8000);
  EXPECT_EQ(float_to_bf16(1.0f).bits, 0x3f80);
  EXPECT_EQ(float_to_bf16(inf).bits, 0x7f80);
  EXPECT_EQ(float_to_bf16(-inf).bits, 0xff80);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()).bits, 0x7f80); // overflows to inf
  EXPECT_EQ(float_to_bf16(from_bits(0x7f7f7fffu)).bits, 0x7f7f);           // just below the tie
  EXPECT_EQ(float_to_bf16(from_bits(0x7f7f8000u)).bits, 0x7f80);           // tie: even is inf
  EXPECT_EQ(float_to_bf16(from_bits(0x3f808000u)).bits, 0x3f80);           // tie: even lower
  EXPECT_EQ(float_to_bf16(from_bits(0x3f818000u)).bits, 0x3f82);           // tie: even upper
  EXPECT_EQ(float_to_bf16(from_bits(0x3f808001u)).bits, 0x3f81);           // above the tie
  EXPECT_EQ(float_to_bf16(from_bits(0x00000001u)).bits, 0x0000);           // subnormals
  EXPECT_EQ(float_to_bf16(from_bits(0x00008000u)).bits, 0x0000);
  EXPECT_EQ(float_to_bf16(from_bits(0x00018000u)).bits, 0x0002);
  EXPECT_EQ(float_to_bf16(from_bits(0x007fffffu)).bits, 0x0080);           // to the smallest normal
  EXPECT_EQ(float_to_bf16(from_bits(0x80008001u)).bits, 0x8001);
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0x7fffffffu, 0xff800001u, 0xffc00000u}) {
    const uint16_t got = float_to_bf16(from_bits(nan)).bits;
    EXPECT_EQ(got & 0x7f80, 0x7f80) << std::hex << nan;
    EXPECT_NE(got & 0x7f, 0) << std::hex << nan; // still a nan, never inf
    EXPECT_EQ(got & 0x8000, (nan >> 16) & 0x8000) << std::hex << nan;
  }
}

// Every bf16 midpoint (a tie) and its two float neighbours, over all finite magnitudes.
TEST(Convert, FloatToBf16TiesAndNeighbours) {
  for (uint32_t b = 0; b < 0x7f80; ++b) {
    const uint32_t mid = (b << 16) | 0x8000u;
    for (uint32_t u : {mid, mid - 1, mid + 1, b << 16}) {
      ASSERT_EQ(float_to_bf16(from_bits(u)).bits, bf16_reference(from_bits(u))) << std::hex << u;
      ASSERT_EQ(float_to_bf16(from_bits(u | 0x80000000u)).bits,
                bf16_reference(from_bits(u | 0x80000000u)))
          << std::hex << u;
    }
    ASSERT_EQ(float_to_bf16(from_bits(mid)).bits, (b & 1) ? b + 1 : b);
  }
}

TEST(Convert, FloatToBf16Random) {
  std::mt19937 rng(99);
  std::uniform_int_distribution<uint32_t> any;
  for (int i = 0; i < 1000000; ++i) {
    const float x = from_bits(any(rng));
    if (std::isnan(x))
      continue;
    ASSERT_EQ(float_to_bf16(x).bits, bf16_reference(x)) << std::hex << bits(x);
  }
}

} // namespace
