// attention_test.cpp - rope (short/long LongRoPE sets, mscale) and attention (KV-cache writes,
// causal GQA, prefill then decode, sliding window) against double-precision references.
#include "test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using namespace phimoe_rt;
using namespace phimoe_rt_test;

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---- KV cache ------------------------------------------------------------------------------

TEST(KVCache, ResizeZeroFillsAndIndexesLayerPositionRow) {
  phimoe_rt::KVCache cache;
  cache.resize(3, 5, 2, 4);
  EXPECT_EQ(cache.layers, 3);
  EXPECT_EQ(cache.capacity, 5);
  EXPECT_EQ(cache.row(), 8u);
  ASSERT_EQ(cache.k.size(), 3u * 5 * 8);
  ASSERT_EQ(cache.v.size(), 3u * 5 * 8);
  for (float x : cache.k)
    EXPECT_EQ(x, 0.0f);
  EXPECT_EQ(cache.k_at(2, 4) - cache.k.data(), (2 * 5 + 4) * 8);
  EXPECT_EQ(cache.v_at(1, 0) - cache.v.data(), 5 * 8);
  cache.k_at(1, 2)[3] = 7.0f;
  cache.resize(3, 5, 2, 4); // a resize starts from an empty (zero) cache
  EXPECT_EQ(cache.k_at(1, 2)[3], 0.0f);
  cache.resize(1, 2, 1, 3);
  EXPECT_EQ(cache.k.size(), 6u);
}

// ---- rope ----------------------------------------------------------------------------------

// The angles are part of the semantics: transformers computes inv_freq and pos * inv_freq in
// float32, so the reference does exactly that; cos, sin, mscale and the rotation in double.
// Tolerance 1e-6 * mscale * (|x_i| + |x_{i+D/2}|): cosf/sinf are within an ulp, then the
// kernel rounds the mscale product, two products and a sum (about 4u ~ 2.4e-7 of that scale).
// With R < D (partial rotary), lanes [R, D) of each head must come out unchanged.
template <int Heads, int D, int R = D>
void check_rope(const std::vector<float> &x, int n, const std::vector<int32_t> &pos,
                const std::vector<float> &factor, float theta, float mscale,
                const std::vector<float> &out) {
  constexpr int half = R / 2;
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < Heads; ++h)
      for (int i = R; i < D; ++i) {
        const size_t at = (static_cast<size_t>(t) * Heads + h) * D + i;
        ASSERT_EQ(out[at], x[at]) << "t=" << t << " h=" << h << " lane " << i << " moved";
      }
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < half; ++i) {
      const float inv_freq =
          1.0f / (factor[i] * std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(R)));
      const float angle = static_cast<float>(pos[t]) * inv_freq;
      const double c = std::cos(static_cast<double>(angle)) * mscale;
      const double s = std::sin(static_cast<double>(angle)) * mscale;
      for (int h = 0; h < Heads; ++h) {
        const size_t base = (static_cast<size_t>(t) * Heads + h) * D;
        const double a = x[base + i], b = x[base + i + half];
        const double tol = 1e-6 * mscale * (std::fabs(a) + std::fabs(b));
        ASSERT_NEAR(out[base + i], a * c - b * s, tol) << "t=" << t << " h=" << h << " i=" << i;
        ASSERT_NEAR(out[base + i + half], b * c + a * s, tol)
            << "t=" << t << " h=" << h << " i=" << i;
      }
    }
}

TEST(Rope, ShortAndLongSetsWithMscale) {
  constexpr int Heads = 3, D = 16;
  std::mt19937 rng(61);
  std::uniform_real_distribution<float> fdist(1.0f, 6.0f);
  std::vector<float> short_f(D / 2), long_f(D / 2);
  for (int i = 0; i < D / 2; ++i) {
    short_f[i] = fdist(rng);
    long_f[i] = fdist(rng) * 4.0f;
  }
  RopeParams p;
  p.theta = 10000.0f;
  p.original_max_position = 4096;
  p.short_mscale = 1.1f;
  p.long_mscale = 1.243163121016122f;
  p.short_factor = short_f.data();
  p.long_factor = long_f.data();
  for (bool use_long : {false, true})
    for (int threads : {1, 3})
      for (int n : {1, 7}) {
        TestContext tc(threads);
        tc.ctx.rope_long = use_long;
        std::vector<int32_t> pos(n);
        const int32_t positions[7] = {0, 1, 17, 4095, 4096, 70000, 131071};
        for (int t = 0; t < n; ++t)
          pos[t] = n == 1 ? 5000 : positions[t];
        const std::vector<float> x = random_floats(rng, static_cast<size_t>(n) * Heads * D);
        std::vector<float> out(x.size(), kNaN);
        rope<Heads, D>(tc.ctx, x.data(), n, pos.data(), p, out.data());
        check_rope<Heads, D>(x, n, pos, use_long ? long_f : short_f, p.theta,
                             use_long ? p.long_mscale : p.short_mscale, out);
        // in place (out == x) gives the same bits
        std::vector<float> inplace = x;
        rope<Heads, D>(tc.ctx, inplace.data(), n, pos.data(), p, inplace.data());
        EXPECT_TRUE(same_bits(inplace, out));
      }
}

// phi-2's partial rotary: the first R = 8 of 20 lanes of each head rotate (as a head of 8
// would), the other 12 pass through; out of place and in place.
TEST(Rope, PartialRotaryRotatesTheFirstLanes) {
  constexpr int Heads = 3, D = 20, R = 8;
  std::mt19937 rng(63);
  const std::vector<float> ones(R / 2, 1.0f);
  RopeParams p{10000.0f, 2048, 1.0f, 1.0f, ones.data(), ones.data()};
  for (int threads : {1, 3}) {
    TestContext tc(threads);
    const int n = 5;
    const std::vector<int32_t> pos = {0, 3, 100, 2047, 9};
    const std::vector<float> x = random_floats(rng, static_cast<size_t>(n) * Heads * D);
    std::vector<float> out(x.size(), kNaN);
    rope_partial<Heads, D, R>(tc.ctx, x.data(), n, pos.data(), p, out.data());
    check_rope<Heads, D, R>(x, n, pos, ones, p.theta, 1.0f, out);
    std::vector<float> inplace = x;
    rope_partial<Heads, D, R>(tc.ctx, inplace.data(), n, pos.data(), p, inplace.data());
    EXPECT_TRUE(same_bits(inplace, out));
    // and it is not the full rotation: rope over all 20 lanes differs in the first 8
    std::vector<float> full(x.size(), kNaN);
    const std::vector<float> ones_d(D / 2, 1.0f);
    RopeParams pd{10000.0f, 2048, 1.0f, 1.0f, ones_d.data(), ones_d.data()};
    rope<Heads, D>(tc.ctx, x.data(), n, pos.data(), pd, full.data());
    EXPECT_NE(full[(1 * Heads) * D + 1], out[(1 * Heads) * D + 1]);
  }
}

TEST(Kernels, AddIsElementwiseAndMayAlias) {
  std::mt19937 rng(64);
  const int n = 9;
  const std::vector<float> a = random_floats(rng, n * 24), b = random_floats(rng, n * 24);
  for (int threads : {1, 3}) {
    TestContext tc(threads);
    std::vector<float> out(a.size(), kNaN), alias = a;
    add<24>(tc.ctx, a.data(), b.data(), n, out.data());
    add<24>(tc.ctx, alias.data(), b.data(), n, alias.data());
    for (size_t i = 0; i < a.size(); ++i)
      ASSERT_EQ(out[i], a[i] + b[i]) << i;
    EXPECT_TRUE(same_bits(out, alias));
  }
}

// Position 0 is the identity times mscale: a direct check of the mscale on the output.
TEST(Rope, PositionZeroScalesByMscale) {
  constexpr int Heads = 2, D = 8;
  std::mt19937 rng(62);
  const std::vector<float> f = {1.0f, 1.5f, 2.0f, 3.0f};
  RopeParams p{10000.0f, 4096, 1.25f, 2.0f, f.data(), f.data()};
  const std::vector<float> x = random_floats(rng, Heads * D);
  const int32_t pos = 0;
  for (bool use_long : {false, true}) {
    TestContext tc(1);
    tc.ctx.rope_long = use_long;
    std::vector<float> out(x.size(), kNaN);
    rope<Heads, D>(tc.ctx, x.data(), 1, &pos, p, out.data());
    for (size_t j = 0; j < x.size(); ++j)
      EXPECT_EQ(out[j], x[j] * (use_long ? 2.0f : 1.25f)); // cos 0 = 1 and sin 0 = 0 exactly
  }
}

// ---- attention -----------------------------------------------------------------------------

// Reference attention of query row q (position p) over keys/values[lo..p] (rows of Hkv*D),
// in double. Also returns the tolerance of each output lane: 1e-5 * sum_j p_j |v_j[e]| plus the
// effect of the float rounding of the scores, each off by up to (D/8 + 4)u * scale *
// sum_e |q_e k_je| (the dot product's summation bound), which moves p_j by up to twice the
// largest such error relatively. The 1e-5 covers the float softmax and the weighted sum
// ((32 + L/32)u at most) with a wide margin; a wrong key, value or mask shows up far above it.
template <int Hq, int Hkv, int D>
void reference_attention(const float *q, const std::vector<const float *> &keys,
                         const std::vector<const float *> &values, double scale, double *out,
                         double *tol) {
  constexpr int group = Hq / Hkv;
  const size_t L = keys.size();
  for (int h = 0; h < Hq; ++h) {
    const int kvh = h / group;
    std::vector<double> s(L);
    double mx = -INFINITY, score_err = 0;
    for (size_t j = 0; j < L; ++j) {
      double d = 0, a = 0;
      for (int e = 0; e < D; ++e) {
        d += static_cast<double>(q[h * D + e]) * keys[j][kvh * D + e];
        a += std::fabs(static_cast<double>(q[h * D + e]) * keys[j][kvh * D + e]);
      }
      s[j] = d * scale;
      mx = std::max(mx, s[j]);
      score_err = std::max(score_err, (D / 8 + 4) * kFloatU * a * std::fabs(scale));
    }
    double sum = 0;
    for (double &v : s) {
      v = std::exp(v - mx);
      sum += v;
    }
    for (int e = 0; e < D; ++e) {
      double o = 0, m = 0;
      for (size_t j = 0; j < L; ++j) {
        o += s[j] / sum * values[j][kvh * D + e];
        m += s[j] / sum * std::fabs(values[j][kvh * D + e]);
      }
      out[h * D + e] = o;
      tol[h * D + e] = m * (1e-5 + 2 * score_err);
    }
  }
}

template <int Hq, int Hkv, int D>
void check_attention_rows(const std::vector<float> &q, const std::vector<int32_t> &pos,
                          const std::vector<const float *> &key_at,
                          const std::vector<const float *> &value_at, int window, float scale,
                          const std::vector<float> &out, const char *what) {
  for (size_t i = 0; i < pos.size(); ++i) {
    const int lo = window > 0 ? std::max(0, pos[i] - window + 1) : 0;
    std::vector<const float *> keys(key_at.begin() + lo, key_at.begin() + pos[i] + 1);
    std::vector<const float *> values(value_at.begin() + lo, value_at.begin() + pos[i] + 1);
    double want[Hq * D], tol[Hq * D];
    reference_attention<Hq, Hkv, D>(q.data() + i * Hq * D, keys, values, scale, want, tol);
    for (int e = 0; e < Hq * D; ++e)
      ASSERT_NEAR(out[i * Hq * D + e], want[e], tol[e]) << what << ": row " << i << " lane " << e;
  }
}

template <int Hq, int Hkv, int D> void test_attention_prefill_then_decode(int threads) {
  constexpr int layers = 2, layer = 1, capacity = 12, kv = Hkv * D;
  std::mt19937 rng(71 + threads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const std::vector<float> q = random_floats(rng, 6 * Hq * D);
  const std::vector<float> k = random_floats(rng, 6 * kv), v = random_floats(rng, 6 * kv);
  std::vector<int32_t> pos = {0, 1, 2, 3, 4, 5};
  std::vector<const float *> key_at, value_at;
  for (int j = 0; j < 6; ++j) {
    key_at.push_back(k.data() + j * kv);
    value_at.push_back(v.data() + j * kv);
  }

  // One call of 6 rows. The cache starts as nan everywhere: nothing unwritten may be read.
  TestContext one(threads, capacity);
  one.cache.resize(layers, capacity, Hkv, D);
  std::fill(one.cache.k.begin(), one.cache.k.end(), kNaN);
  std::fill(one.cache.v.begin(), one.cache.v.end(), kNaN);
  std::vector<float> out6(6 * Hq * D, kNaN);
  attention<Hq, Hkv, D>(one.ctx, q.data(), k.data(), v.data(), 6, pos.data(), layer, scale, 0,
                        out6.data());
  check_attention_rows<Hq, Hkv, D>(q, pos, key_at, value_at, 0, scale, out6, "6 rows");
  for (int j = 0; j < 6; ++j) // the rows are in the cache at their positions, layer 1 only
    for (int e = 0; e < kv; ++e) {
      ASSERT_EQ(one.cache.k_at(layer, j)[e], k[j * kv + e]);
      ASSERT_EQ(one.cache.v_at(layer, j)[e], v[j * kv + e]);
      ASSERT_TRUE(std::isnan(one.cache.k_at(0, j)[e]));
    }
  for (int j = 6; j < capacity; ++j)
    ASSERT_TRUE(std::isnan(one.cache.k_at(layer, j)[0]));

  // Prefill 5 rows at 0..4, then decode 1 row at 5: the same bits as the single call.
  TestContext two(threads, capacity);
  two.cache.resize(layers, capacity, Hkv, D);
  std::fill(two.cache.k.begin(), two.cache.k.end(), kNaN);
  std::fill(two.cache.v.begin(), two.cache.v.end(), kNaN);
  std::vector<float> out5(5 * Hq * D, kNaN), out1(Hq * D, kNaN);
  attention<Hq, Hkv, D>(two.ctx, q.data(), k.data(), v.data(), 5, pos.data(), layer, scale, 0,
                        out5.data());
  attention<Hq, Hkv, D>(two.ctx, q.data() + 5 * Hq * D, k.data() + 5 * kv, v.data() + 5 * kv, 1,
                        pos.data() + 5, layer, scale, 0, out1.data());
  std::vector<float> joined = out5;
  joined.insert(joined.end(), out1.begin(), out1.end());
  EXPECT_TRUE(same_bits(joined, out6)) << "Hq=" << Hq << " Hkv=" << Hkv << " threads=" << threads;
}

TEST(Attention, GqaTwoKvHeads) {
  for (int threads : {1, 3})
    test_attention_prefill_then_decode<4, 2, 16>(threads);
}
TEST(Attention, GqaOneKvHead) {
  for (int threads : {1, 3})
    test_attention_prefill_then_decode<4, 1, 16>(threads);
}
TEST(Attention, NoGroupingAndOddHeadDim) {
  for (int threads : {1, 3})
    test_attention_prefill_then_decode<2, 2, 20>(threads); // D % 8 != 0
}

// Sliding window: rows attend [pos - window + 1, pos]. Cache positions before the window hold
// nan, so reading them would show. Decode (n = 1) and a 3-row chunk, with pre-filled history.
TEST(Attention, SlidingWindow) {
  constexpr int Hq = 4, Hkv = 2, D = 16, capacity = 16, kv = Hkv * D, window = 3;
  for (int threads : {1, 3}) {
    std::mt19937 rng(81 + threads);
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    std::vector<float> k = random_floats(rng, capacity * kv), v = random_floats(rng, capacity * kv);
    std::vector<const float *> key_at, value_at;
    for (int j = 0; j < capacity; ++j) {
      key_at.push_back(k.data() + j * kv);
      value_at.push_back(v.data() + j * kv);
    }
    TestContext tc(threads, capacity);
    tc.cache.resize(1, capacity, Hkv, D);
    std::fill(tc.cache.k.begin(), tc.cache.k.end(), kNaN);
    std::fill(tc.cache.v.begin(), tc.cache.v.end(), kNaN);
    for (int j = 7; j <= 8; ++j) { // history inside the window of position 9
      std::copy(key_at[j], key_at[j] + kv, tc.cache.k_at(0, j));
      std::copy(value_at[j], value_at[j] + kv, tc.cache.v_at(0, j));
    }
    // decode at 9: attends 7..9
    std::vector<float> q = random_floats(rng, Hq * D), out(Hq * D, kNaN);
    std::vector<int32_t> pos = {9};
    attention<Hq, Hkv, D>(tc.ctx, q.data(), k.data() + 9 * kv, v.data() + 9 * kv, 1, pos.data(),
                          0, scale, window, out.data());
    check_attention_rows<Hq, Hkv, D>(q, pos, key_at, value_at, window, scale, out, "decode");
    // a chunk at 10..12: row 12 attends 10..12 only, row 10 attends 8..10
    q = random_floats(rng, 3 * Hq * D);
    out.assign(3 * Hq * D, kNaN);
    pos = {10, 11, 12};
    attention<Hq, Hkv, D>(tc.ctx, q.data(), k.data() + 10 * kv, v.data() + 10 * kv, 3,
                          pos.data(), 0, scale, window, out.data());
    check_attention_rows<Hq, Hkv, D>(q, pos, key_at, value_at, window, scale, out, "chunk");
  }
}

// Scores far apart (large q): the softmax must subtract the max (exp would overflow otherwise).
TEST(Attention, LargeScoresAreStable) {
  constexpr int Hq = 2, Hkv = 1, D = 8, capacity = 8, kv = Hkv * D;
  std::mt19937 rng(91);
  std::vector<float> q = random_floats(rng, 4 * Hq * D, 40.0f);
  const std::vector<float> k = random_floats(rng, 4 * kv), v = random_floats(rng, 4 * kv);
  std::vector<const float *> key_at, value_at;
  for (int j = 0; j < 4; ++j) {
    key_at.push_back(k.data() + j * kv);
    value_at.push_back(v.data() + j * kv);
  }
  TestContext tc(2, capacity);
  tc.cache.resize(1, capacity, Hkv, D);
  std::vector<int32_t> pos = {0, 1, 2, 3};
  std::vector<float> out(4 * Hq * D, kNaN);
  attention<Hq, Hkv, D>(tc.ctx, q.data(), k.data(), v.data(), 4, pos.data(), 0, 1.0f, 0,
                        out.data());
  for (float o : out)
    ASSERT_TRUE(std::isfinite(o));
  check_attention_rows<Hq, Hkv, D>(q, pos, key_at, value_at, 0, 1.0f, out, "large");
}

// Misuse is contained: positions outside the cache, a layer it lacks or a cache of another
// shape leave the cache untouched and give nan rows, the other rows being unaffected.
TEST(Attention, OutOfRangeIsContained) {
  constexpr int Hq = 2, Hkv = 1, D = 8, capacity = 4, kv = Hkv * D;
  std::mt19937 rng(92);
  const std::vector<float> q = random_floats(rng, 2 * Hq * D);
  const std::vector<float> k = random_floats(rng, 2 * kv), v = random_floats(rng, 2 * kv);
  TestContext tc(2, capacity);
  tc.cache.resize(1, capacity, Hkv, D);
  const std::vector<float> before = tc.cache.k;
  std::vector<int32_t> pos = {0, capacity}; // the second row is past the end
  std::vector<float> out(2 * Hq * D, 0.0f);
  attention<Hq, Hkv, D>(tc.ctx, q.data(), k.data(), v.data(), 2, pos.data(), 0, 1.0f, 0,
                        out.data());
  for (int e = 0; e < Hq * D; ++e) {
    EXPECT_TRUE(std::isfinite(out[e]));
    EXPECT_TRUE(std::isnan(out[Hq * D + e]));
  }
  for (int e = 0; e < kv; ++e) // row 0 attends only itself: its output is v row 0
    EXPECT_FLOAT_EQ(out[e], v[e]);

  for (int layer : {-1, 1}) {
    std::fill(out.begin(), out.end(), 0.0f);
    tc.cache.resize(1, capacity, Hkv, D);
    attention<Hq, Hkv, D>(tc.ctx, q.data(), k.data(), v.data(), 1, pos.data(), layer, 1.0f, 0,
                          out.data());
    EXPECT_TRUE(same_bits(tc.cache.k, before)) << "layer " << layer;
    EXPECT_TRUE(std::isnan(out[0])) << "layer " << layer;
  }
  tc.cache.resize(1, capacity, 2, D); // 2 kv heads, the kernel expects 1
  std::fill(out.begin(), out.end(), 0.0f);
  attention<Hq, Hkv, D>(tc.ctx, q.data(), k.data(), v.data(), 1, pos.data(), 0, 1.0f, 0,
                        out.data());
  EXPECT_TRUE(std::isnan(out[0]));
  for (float x : tc.cache.k)
    EXPECT_EQ(x, 0.0f);
}

} // namespace
