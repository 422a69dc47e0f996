// quant_quality_test.cpp - q8_0, q4k and q6k errors against naive quantizers and known levels.
//
// The naive quantizers below are the formats' plain round-to-nearest: per sub-block
// the range (q4_K: min and max; q6_K: max magnitude) mapped onto the quant levels,
// codes relative to the largest. Ours must be strictly better for q4_K and q6_K,
// and q8_0 is the round-to-nearest one by definition (llama.cpp's reference).
//
// Reference levels (relative RMSE, error RMS over signal RMS, on N(0, 1) rows; our
// measurement of llama.cpp's reference quantizers, ggml-quants.c, on the same kind
// of data): q8_0 0.00536, q4_K 0.0714, q6_K 0.0177. Ours: 0.00536, 0.0699, 0.0172.
#include "quant_test_util.h"

#include "phimoe_rt/runtime.h"

#include <algorithm>

using namespace quant_test;

namespace {

float f16r(float v) { return phimoe_rt::f16_to_float(phimoe_rt::float_to_f16(v).bits); }
int rnd(float v) { return static_cast<int>(std::nearbyint(v)); }
int clampi(int v, int lo, int hi) { return std::min(hi, std::max(lo, v)); }

std::vector<float> naive_q8_0(const std::vector<float> &x) {
  std::vector<float> y(x.size());
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0;
    for (size_t i = b; i < b + 32; ++i)
      amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127, inv = d ? 1 / d : 0;
    for (size_t i = b; i < b + 32; ++i)
      y[i] = f16r(d) * std::round(x[i] * inv);
  }
  return y;
}

std::vector<float> naive_q4k(const std::vector<float> &x) {
  std::vector<float> y(x.size());
  for (size_t b = 0; b < x.size(); b += 256) {
    float s[8], off[8], max_s = 0, max_off = 0;
    for (int j = 0; j < 8; ++j) {
      const auto first = x.begin() + static_cast<std::ptrdiff_t>(b + 32 * j);
      const auto [lo, hi] = std::minmax_element(first, first + 32);
      const float low = std::min(*lo, 0.f);
      s[j] = (*hi - low) / 15;
      off[j] = -low;
      max_s = std::max(max_s, s[j]);
      max_off = std::max(max_off, off[j]);
    }
    const float d = f16r(max_s / 63), dmin = f16r(max_off / 63);
    for (int j = 0; j < 8; ++j) {
      const int sc = d ? clampi(rnd(s[j] / d), 0, 63) : 0;
      const int m = dmin ? clampi(rnd(off[j] / dmin), 0, 63) : 0;
      const float step = d * sc, shift = dmin * m;
      for (size_t i = b + 32 * j; i < b + 32 * j + 32; ++i)
        y[i] = step * (step ? clampi(rnd((x[i] + shift) / step), 0, 15) : 0) - shift;
    }
  }
  return y;
}

std::vector<float> naive_q6k(const std::vector<float> &x) {
  std::vector<float> y(x.size());
  for (size_t b = 0; b < x.size(); b += 256) {
    float s[16], max_s = 0;
    for (int j = 0; j < 16; ++j) {
      float amax = 0;
      for (size_t i = b + 16 * j; i < b + 16 * j + 16; ++i)
        amax = std::max(amax, std::fabs(x[i]));
      s[j] = amax / 31;
      max_s = std::max(max_s, s[j]);
    }
    const float d = f16r(max_s / 127);
    for (int j = 0; j < 16; ++j) {
      const float step = d * (d ? clampi(rnd(s[j] / d), -128, 127) : 0);
      for (size_t i = b + 16 * j; i < b + 16 * j + 16; ++i)
        y[i] = step * (step ? clampi(rnd(x[i] / step), -32, 31) : 0);
    }
  }
  return y;
}

struct Case {
  const Format &format;
  std::vector<float> (*naive)(const std::vector<float> &);
  double level_max; // relative RMSE on N(0, 1) rows must stay below this
  double level_min; // and above this (a lower error would be a broken measurement)
  // The largest |code product| a value's f16 super-block scale is multiplied by
  // (q8_0: 127; q4_K: 63 * 15; q6_K: 128 * 32). Small blocks have subnormal f16
  // scales, whose absolute step 2^-24 then limits the precision (as in llama.cpp).
  double max_codes;
  double f16_floor() const { return std::ldexp(max_codes, -25); }
};

const Case &q8_0_case() {
  static Case c{q8_0(), naive_q8_0, 0.0060, 0.0045, 127};
  return c;
}
const Case &q4k_case() {
  static Case c{q4k(), naive_q4k, 0.0705, 0.060, 63 * 15};
  return c;
}
const Case &q6k_case() {
  static Case c{q6k(), naive_q6k, 0.0175, 0.015, 128 * 32};
  return c;
}

class QuantQuality : public ::testing::TestWithParam<const Case *> {
protected:
  void SetUp() override {
    seed = fresh_seed();
    rng.seed(seed);
  }
  // Ours against naive on `x`: strictly better for the k-quants, the same for q8_0.
  // Returns our relative RMSE.
  double compare(const std::vector<float> &x, const char *what) {
    const Case &c = *GetParam();
    std::vector<float> ours = c.format.round_trip(x), naive = c.naive(x);
    for (float v : ours)
      EXPECT_TRUE(std::isfinite(v)) << what;
    const double e_ours = rel_rmse(x, ours), e_naive = rel_rmse(x, naive);
    std::printf("[ %s ] %-24s ours %.6f naive %.6f (seed %u)\n", c.format.name.c_str(), what,
                e_ours, e_naive, seed);
    if (c.format.name == "q8_0")
      EXPECT_EQ(ours, naive) << what << ": q8_0 is llama.cpp's round-to-nearest";
    else
      EXPECT_LT(e_ours, e_naive) << what;
    return e_ours;
  }
  uint32_t seed = 0;
  std::mt19937 rng;
};

TEST_P(QuantQuality, GaussianRowsAtTheKnownLevel) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Case &c = *GetParam();
  std::vector<float> x = gaussian(rng, 64 * 4096);
  const double e = compare(x, "gaussian");
  EXPECT_LT(e, c.level_max);
  EXPECT_GT(e, c.level_min);
  // The level does not depend on the scale (within f16's normal range). As many values
  // as above: with 16 * 4096 the sampling spread of the q4k error (about 2e-4) put the
  // level within 3 spreads of level_max, and the test failed about one run in 500.
  for (float sigma : {0.02f, 30.f}) {
    std::vector<float> y = gaussian(rng, 64 * 4096, sigma);
    const double ey = compare(y, sigma < 1 ? "gaussian sigma 0.02" : "gaussian sigma 30");
    EXPECT_LT(ey, c.level_max);
    EXPECT_NEAR(ey, e, 0.02 * e); // the same level, up to sampling
  }
}

TEST_P(QuantQuality, TinyMagnitudeRows) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Case &c = *GetParam();
  // The f16 super-block scales of q4_K reach the subnormal range here (d ~ 1e-6).
  std::vector<float> x = gaussian(rng, 16 * 4096, 1e-3f);
  EXPECT_LT(compare(x, "gaussian sigma 1e-3"), c.level_max * 1.05);
}

TEST_P(QuantQuality, OneHugeOutlier) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Case &c = *GetParam();
  const size_t n = 4096;
  std::vector<float> x = gaussian(rng, n);
  const size_t at = std::uniform_int_distribution<size_t>(0, n - 1)(rng);
  x[at] = std::uniform_real_distribution<float>(0, 1)(rng) < 0.5 ? -500.f : 500.f;
  compare(x, "one outlier of 500 sigma");
  std::vector<float> y = c.format.round_trip(x);
  // The outlier itself survives (it sets its block's scale).
  EXPECT_NEAR(y[at], x[at], 0.01 * std::fabs(x[at]));
  // Blocks without it are unaffected: the usual error level there.
  const size_t block = static_cast<size_t>(c.format.block);
  std::vector<float> rest, rest_y;
  for (size_t i = 0; i < n; ++i)
    if (i / block != at / block) {
      rest.push_back(x[i]);
      rest_y.push_back(y[i]);
    }
  EXPECT_LT(rel_rmse(rest, rest_y), c.level_max * 1.1);
}

TEST_P(QuantQuality, HeavyTailedRows) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::student_t_distribution<float> t(3.f);
  std::vector<float> x(16 * 4096);
  for (float &v : x)
    v = t(rng);
  compare(x, "student t3");
}

TEST_P(QuantQuality, NegativeOnlyRows) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Case &c = *GetParam();
  std::vector<float> x = gaussian(rng, 16 * 4096);
  for (float &v : x)
    v = -std::fabs(v) - 0.5f;
  // Relative to the signal's RMS (which includes the offset), below the N(0, 1) level.
  EXPECT_LT(compare(x, "negative only"), c.level_max);
}

TEST_P(QuantQuality, ShiftedRows) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Case &c = *GetParam();
  std::vector<float> x = gaussian(rng, 16 * 4096, 1.f, 3.f); // all positive, mostly
  EXPECT_LT(compare(x, "gaussian mean 3"), c.level_max);
}

TEST_P(QuantQuality, AllEqualRows) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Case &c = *GetParam();
  for (int k = 0; k < 8; ++k) {
    const float mag = std::exp(std::uniform_real_distribution<float>(-5, 5)(rng));
    const float v = (k % 2 ? -1.f : 1.f) * mag;
    std::vector<float> x(1024, v);
    std::vector<float> y = c.format.round_trip(x);
    // Only the f16 (and 6-bit) representation of the scales is lost: 2^-11 relative,
    // or half the subnormal step of the scale times the codes.
    for (float yi : y)
      ASSERT_NEAR(yi, v, std::max(1e-3 * mag, c.f16_floor())) << c.format.name << " value " << v;
  }
}

TEST_P(QuantQuality, BlocksOfVeryDifferentScales) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Case &c = *GetParam();
  const size_t block = 256, n = 16 * block;
  std::vector<float> x = gaussian(rng, n);
  for (size_t b = 0; b < n / block; ++b)
    for (size_t i = b * block; i < (b + 1) * block; ++i)
      x[i] *= std::pow(10.f, static_cast<float>(b % 7) - 3.f); // 1e-3 .. 1e3
  std::vector<float> y = c.format.round_trip(x);
  for (size_t b = 0; b < n / block; ++b) {
    std::vector<float> xb(x.begin() + b * block, x.begin() + (b + 1) * block);
    std::vector<float> yb(y.begin() + b * block, y.begin() + (b + 1) * block);
    EXPECT_LT(rel_rmse(xb, yb), c.level_max * 1.3) << "block " << b;
  }
}

TEST_P(QuantQuality, ZeroAndSparseRows) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Case &c = *GetParam();
  std::vector<float> zero(1024, 0.f);
  for (float v : c.format.round_trip(zero))
    ASSERT_EQ(v, 0.f);
  // A few non-zero values among zeros: the others come back close, and the zeros
  // exactly zero in the symmetric formats and in q4_K's all-zero sub-blocks (a
  // sub-block with a negative value has a non-zero minimum: its zeros move a little).
  std::vector<float> x(1024, 0.f);
  for (int k = 0; k < 12; ++k)
    x[std::uniform_int_distribution<size_t>(0, x.size() - 1)(rng)] = gaussian(rng, 1)[0];
  std::vector<float> y = c.format.round_trip(x);
  auto amax = [&](size_t i, size_t len) {
    float m = 0.f;
    for (size_t k = i / len * len; k < (i / len + 1) * len; ++k)
      m = std::max(m, std::fabs(x[k]));
    return m;
  };
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] == 0.f && (c.format.name != "q4k" || amax(i, 32) == 0.f))
      EXPECT_EQ(y[i], 0.f) << i;
    // Codes are relative to the largest in the block: the error scales with it.
    EXPECT_NEAR(y[i], x[i], 0.1 * amax(i, static_cast<size_t>(c.format.block))) << i;
  }
}

TEST_P(QuantQuality, DequantizedRowsQuantizeBackClosely) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Case &c = *GetParam();
  std::vector<float> x = gaussian(rng, 8 * 4096);
  std::vector<uint8_t> first = c.format.quantize_row(x);
  std::vector<float> y = c.format.dequantize_row(first, x.size());
  std::vector<float> z = c.format.round_trip(y);
  if (c.format.name == "q8_0") {
    EXPECT_EQ(c.format.quantize_row(y), first); // a fixed point
  } else {
    // Values already on a grid of the format come back much closer than x did.
    EXPECT_LT(rel_rmse(y, z), 0.25 * rel_rmse(x, y));
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantQuality,
                         ::testing::Values(&q8_0_case(), &q4k_case(), &q6k_case()),
                         [](const ::testing::TestParamInfo<const Case *> &info) {
                           return info.param->format.name;
                         });

} // namespace
