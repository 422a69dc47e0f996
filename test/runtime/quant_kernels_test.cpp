// quant_kernels_test.cpp - quant_kernels.h on every SIMD path this build has: activation
// quantization (bit-identical to the scalar reference, which follows its definition), the
// integer block sums of q8_0 / q4_K / q6_K dot products (bit-exact against the tests' own
// integer sums), and whole dot-product tiles (bit-identical to the scalar path, and within
// float rounding of the dequantized weights times the quantized activations in double).
#include "quant_test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using namespace phimoe_rt;
using namespace phimoe_rt_test;

using Paths = ::testing::Types<qk::Scalar
#if defined(__AVX2__)
                               ,
                               qk::Avx2
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__)
                               ,
                               qk::Avx512
#endif
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
                               ,
                               qk::Vnni
#endif
                               >;

template <class P> class QuantPath : public ::testing::Test {};
TYPED_TEST_SUITE(QuantPath, Paths, PathName);

// Activations with a few special blocks: all zeros, one value only, a negative maximum.
std::vector<float> activations(std::mt19937 &rng, int k, int block) {
  std::vector<float> x = random_floats(rng, static_cast<size_t>(k), 1.5f);
  if (k >= 4 * block) {
    std::fill(x.begin(), x.begin() + block, 0.0f);
    std::fill(x.begin() + block, x.begin() + 2 * block, 0.0f);
    x[block + 3] = -2.5f;
    x[2 * block + 7] = -40.0f; // dominates its block
  }
  return x;
}

// q = x * (127 / amax) rounded to nearest (ties to even), d = amax / 127, per block.
void check_definition(const float *x, int count, const int8_t *q, float d) {
  float amax = 0.0f;
  for (int i = 0; i < count; ++i)
    amax = std::max(amax, std::fabs(x[i]));
  ASSERT_EQ(d, amax / 127.0f);
  const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
  for (int i = 0; i < count; ++i) {
    const float v = x[i] * id;
    ASSERT_EQ(q[i], static_cast<int8_t>(std::nearbyint(v))) << "value " << i;
    ASSERT_LE(std::abs(q[i]), 127);
  }
}

TYPED_TEST(QuantPath, QuantizeQ8_0) {
  using P = TypeParam;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(301);
  constexpr int K = 32 * 9;
  for (int rep = 0; rep < 5; ++rep) {
    const std::vector<float> x = activations(rng, K, 32);
    std::vector<uint8_t> got(qk::act_bytes_q8_0(K)), want(qk::act_bytes_q8_0(K));
    P::quantize_q8_0(x.data(), K, reinterpret_cast<int8_t *>(got.data()),
                     reinterpret_cast<float *>(got.data() + K));
    qk::Scalar::quantize_q8_0(x.data(), K, reinterpret_cast<int8_t *>(want.data()),
                              reinterpret_cast<float *>(want.data() + K));
    ASSERT_EQ(got, want) << P::kName << " differs from the scalar reference";
    for (int b = 0; b < K / 32; ++b)
      check_definition(x.data() + 32 * b, 32, reinterpret_cast<int8_t *>(want.data()) + 32 * b,
                       reinterpret_cast<const float *>(want.data() + K)[b]);
  }
}

TYPED_TEST(QuantPath, QuantizeQ8K) {
  using P = TypeParam;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(302);
  constexpr int K = 256 * 5;
  for (int rep = 0; rep < 5; ++rep) {
    const std::vector<float> x = activations(rng, K, 256);
    std::vector<block_q8k> got(K / 256), want(K / 256);
    P::quantize_q8k(x.data(), K, got.data());
    qk::Scalar::quantize_q8k(x.data(), K, want.data());
    ASSERT_EQ(std::memcmp(got.data(), want.data(), sizeof(block_q8k) * got.size()), 0)
        << P::kName << " differs from the scalar reference";
    for (int b = 0; b < K / 256; ++b) {
      check_definition(x.data() + 256 * b, 256, want[b].qs, want[b].d);
      for (int j = 0; j < 16; ++j) {
        int sum = 0;
        for (int i = 0; i < 16; ++i)
          sum += want[b].qs[16 * j + i];
        ASSERT_EQ(want[b].bsums[j], sum) << "block " << b << " group " << j;
      }
    }
  }
}

// q4_K activations: the q8_K blocks, then each 32-value sub-block's value sum times the
// block scale, negated (what a sub-block's min multiplies), the same bytes on every path.
TYPED_TEST(QuantPath, QuantizeQ4KActivations) {
  using P = TypeParam;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(303);
  constexpr int K = 256 * 3;
  using F = qk::format<block_q4k>;
  for (int rep = 0; rep < 5; ++rep) {
    const std::vector<float> x = activations(rng, K, 256);
    std::vector<uint8_t> got(F::act_bytes(K)), want(F::act_bytes(K));
    F::quantize<P>(x.data(), K, got.data());
    F::quantize<qk::Scalar>(x.data(), K, want.data());
    ASSERT_EQ(got, want) << P::kName << " differs from the scalar reference";
    const auto *y = reinterpret_cast<const block_q8k *>(want.data());
    const auto *ms = reinterpret_cast<const float *>(want.data() + K / 256 * sizeof(block_q8k));
    for (int b = 0; b < K / 256; ++b)
      for (int l = 0; l < 8; ++l) {
        int sum = 0;
        for (int i = 0; i < 32; ++i)
          sum += y[b].qs[32 * l + i];
        ASSERT_EQ(ms[8 * b + l], -(y[b].d * static_cast<float>(sum))) << "block " << b << " sub-block " << l;
      }
  }
}

// Random int8 activations in [-127, 127] (what the quantizers produce), extremes included.
std::vector<int8_t> random_int8(std::mt19937 &rng, size_t n) {
  std::uniform_int_distribution<int> d(-127, 127);
  std::vector<int8_t> v(n);
  for (auto &x : v)
    x = static_cast<int8_t>(d(rng));
  v[0] = 127;
  v[n - 1] = -127;
  return v;
}

std::vector<block_q8k> random_q8k(std::mt19937 &rng, size_t blocks) {
  std::vector<block_q8k> v(blocks);
  std::uniform_real_distribution<float> d(0.001f, 0.1f);
  for (auto &b : v) {
    const std::vector<int8_t> q = random_int8(rng, 256);
    std::copy(q.begin(), q.end(), b.qs);
    b.d = d(rng);
    qk::q8k_bsums(b);
  }
  return v;
}

// ---- integer sums ------------------------------------------------------------------------

template <class P, int TT, int RR> void check_isums_q8_0(std::mt19937 &rng) {
  const std::vector<block_q8_0> w = random_q8_0(rng, RR * 8, 0.01f);
  std::vector<block_q8_0> extreme = w; // a row of -128 and 127 weights: the sign trick's edge
  for (int l = 0; l < 8; ++l)
    for (int i = 0; i < 32; ++i)
      extreme[l].qs[i] = static_cast<int8_t>(i % 2 ? -128 : 127);
  const std::vector<block_q8_0> *cases[2] = {&w, &extreme};
  for (const std::vector<block_q8_0> *ws : cases) {
    std::vector<std::vector<int8_t>> act;
    for (int t = 0; t < TT; ++t)
      act.push_back(random_int8(rng, 256));
    const block_q8_0 *wp[RR];
    const int8_t *ap[TT];
    for (int r = 0; r < RR; ++r)
      wp[r] = ws->data() + 8 * r;
    for (int t = 0; t < TT; ++t)
      ap[t] = act[t].data();
    for (int g : {8, 5, 1}) {
      int32_t s[TT][RR][qk::kGroup];
      P::template isums_q8_0<TT, RR>(wp, ap, g, s);
      for (int t = 0; t < TT; ++t)
        for (int r = 0; r < RR; ++r)
          for (int l = 0; l < 8; ++l) {
            int32_t want = 0;
            for (int i = 0; l < g && i < 32; ++i)
              want += decode(wp[r][l], i).q * act[t][32 * l + i];
            ASSERT_EQ(s[t][r][l], want) << P::kName << " TT=" << TT << " RR=" << RR
                                        << " g=" << g << " t=" << t << " r=" << r << " l=" << l;
          }
    }
  }
}

// The lanes of a q4_K super-block (Scalar::lanes_q4k defines them): S[l] sums a * q * y
// over the values i with i % 32 in [4l, 4l + 4); M[l] is the min of sub-block l.
template <class P, int TT, int RR> void check_lanes_q4k(std::mt19937 &rng) {
  std::vector<block_q4k> w = random_q4k(rng, RR, 0.01f);
  std::fill(std::begin(w[0].scales), std::end(w[0].scales), uint8_t{0xFF}); // all scales 63
  std::fill(std::begin(w[0].qs), std::end(w[0].qs), uint8_t{0xFF});         // all q 15
  const std::vector<block_q8k> a = random_q8k(rng, TT);
  const block_q4k *wp[RR];
  const block_q8k *ap[TT];
  for (int r = 0; r < RR; ++r)
    wp[r] = &w[r];
  for (int t = 0; t < TT; ++t)
    ap[t] = &a[t];
  int32_t S[TT][RR][8], M[RR][8];
  qk::lanes_q4k<P, TT, RR>(wp, ap, S, M);
  for (int r = 0; r < RR; ++r)
    for (int l = 0; l < 8; ++l)
      ASSERT_EQ(M[r][l], decode(w[r], 32 * l).m) << P::kName << " r=" << r << " lane " << l;
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < RR; ++r) {
      int32_t want_s[8] = {};
      for (int i = 0; i < 256; ++i) {
        const IntWeight v = decode(w[r], i);
        want_s[(i % 32) / 4] += v.a * v.q * a[t].qs[i];
      }
      for (int l = 0; l < 8; ++l)
        ASSERT_EQ(S[t][r][l], want_s[l]) << P::kName << " TT=" << TT << " RR=" << RR
                                         << " t=" << t << " r=" << r << " lane " << l;
    }
}

// The lanes of a q6_K super-block (Scalar::lanes_q6k): S[l] sums a * (q + 32) * y over the
// values i with i % 32 in [4l, 4l + 4), less 32 * a * y summed over values 32l .. 32l + 31.
template <class P, int TT, int RR> void check_lanes_q6k(std::mt19937 &rng) {
  std::vector<block_q6k> w = random_q6k(rng, RR, 0.01f);
  std::fill(std::begin(w[0].scales), std::end(w[0].scales), int8_t{-128});
  std::fill(std::begin(w[0].ql), std::end(w[0].ql), uint8_t{0}); // all q = 0 (-32 after offset)
  std::fill(std::begin(w[0].qh), std::end(w[0].qh), uint8_t{0});
  const std::vector<block_q8k> a = random_q8k(rng, TT);
  const block_q6k *wp[RR];
  const block_q8k *ap[TT];
  for (int r = 0; r < RR; ++r)
    wp[r] = &w[r];
  for (int t = 0; t < TT; ++t)
    ap[t] = &a[t];
  int32_t S[TT][RR][8];
  qk::lanes_q6k<P, TT, RR>(wp, ap, S);
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < RR; ++r) {
      int32_t want[8] = {}, total = 0;
      for (int i = 0; i < 256; ++i) {
        const IntWeight v = decode(w[r], i);
        want[(i % 32) / 4] += v.a * (v.q + 32) * a[t].qs[i];
        want[i / 32] -= 32 * v.a * a[t].qs[i];
        total += v.a * v.q * a[t].qs[i];
      }
      int32_t sum = 0;
      for (int l = 0; l < 8; ++l) {
        ASSERT_EQ(S[t][r][l], want[l]) << P::kName << " TT=" << TT << " RR=" << RR
                                       << " t=" << t << " r=" << r << " lane " << l;
        sum += S[t][r][l];
      }
      ASSERT_EQ(sum, total); // the lanes add up to the dot product of the quants
    }
}

TYPED_TEST(QuantPath, IntegerSumsQ8_0) {
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(311);
  for (int rep = 0; rep < 3; ++rep) {
    check_isums_q8_0<TypeParam, 1, 1>(rng);
    check_isums_q8_0<TypeParam, 1, 4>(rng);
    check_isums_q8_0<TypeParam, 4, 4>(rng);
    check_isums_q8_0<TypeParam, 3, 2>(rng);
  }
}

TYPED_TEST(QuantPath, LanesQ4K) {
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(312);
  for (int rep = 0; rep < 3; ++rep) {
    check_lanes_q4k<TypeParam, 1, 1>(rng);
    check_lanes_q4k<TypeParam, 1, 4>(rng);
    check_lanes_q4k<TypeParam, 4, 4>(rng);
    check_lanes_q4k<TypeParam, 3, 2>(rng);
  }
}

TYPED_TEST(QuantPath, LanesQ6K) {
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(313);
  for (int rep = 0; rep < 3; ++rep) {
    check_lanes_q6k<TypeParam, 1, 1>(rng);
    check_lanes_q6k<TypeParam, 1, 4>(rng);
    check_lanes_q6k<TypeParam, 4, 4>(rng);
    check_lanes_q6k<TypeParam, 3, 2>(rng);
  }
}

// ---- whole dot products -------------------------------------------------------------------

// TT activation rows against RR weight rows of K values: the path's tile equals the scalar
// tile bit for bit, and both are within float rounding of sum_k w_k * xq_k in double
// (tolerance 1e-5 * sum_k |w_k| |xq_k|, with |w_k| = |scaled part| + |min part|; the float
// error of the per-block combination is below (K/32 + 10) u of that).
template <class P, class W, int K, int TT, int RR> void check_tile(std::mt19937 &rng) {
  using F = qk::format<W>;
  const std::vector<W> w = random_blocks<W>(rng, static_cast<size_t>(RR) * (K / F::kBlock), 0.02f);
  const std::vector<double> wv = dequantized(w, RR, K), wm = magnitudes(w, RR, K);
  std::vector<QuantRow<W>> xq;
  for (int t = 0; t < TT; ++t) {
    const std::vector<float> x = random_floats(rng, K, 1.0f);
    xq.push_back(quantize_row<W>(x.data(), K));
  }
  const W *wp[RR];
  const uint8_t *ap[TT];
  for (int r = 0; r < RR; ++r)
    wp[r] = w.data() + static_cast<size_t>(r) * (K / F::kBlock);
  for (int t = 0; t < TT; ++t)
    ap[t] = xq[t].bytes.data();
  float got[TT][RR], ref[TT][RR];
  F::template tile<P, TT, RR>(wp, ap, K, got);
  F::template tile<qk::Scalar, TT, RR>(wp, ap, K, ref);
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < RR; ++r) {
      ASSERT_EQ(std::memcmp(&got[t][r], &ref[t][r], sizeof(float)), 0)
          << P::kName << " K=" << K << " t=" << t << " r=" << r << ": " << got[t][r] << " vs "
          << ref[t][r];
      double want = 0, scale = 0;
      for (int k = 0; k < K; ++k) {
        want += wv[static_cast<size_t>(r) * K + k] * xq[t].value[k];
        scale += wm[static_cast<size_t>(r) * K + k] * std::fabs(xq[t].value[k]);
      }
      ASSERT_NEAR(ref[t][r], want, 1e-5 * scale) << "K=" << K << " t=" << t << " r=" << r;
    }
}

TYPED_TEST(QuantPath, TilesQ8_0) {
  using P = TypeParam;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(321);
  check_tile<P, block_q8_0, 32 * 19, 1, 1>(rng); // two groups of 8 blocks and a tail of 3
  check_tile<P, block_q8_0, 32 * 19, 1, 4>(rng);
  check_tile<P, block_q8_0, 32 * 19, 4, 4>(rng);
  check_tile<P, block_q8_0, 32 * 8, 2, 3>(rng);
  check_tile<P, block_q8_0, 32, 3, 1>(rng); // a single block
}

TYPED_TEST(QuantPath, TilesQ4K) {
  using P = TypeParam;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(322);
  check_tile<P, block_q4k, 256 * 3, 1, 1>(rng);
  check_tile<P, block_q4k, 256 * 3, 1, 4>(rng);
  check_tile<P, block_q4k, 256 * 3, 4, 4>(rng);
  check_tile<P, block_q4k, 256, 2, 3>(rng);
}

TYPED_TEST(QuantPath, TilesQ6K) {
  using P = TypeParam;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(323);
  check_tile<P, block_q6k, 256 * 3, 1, 1>(rng);
  check_tile<P, block_q6k, 256 * 3, 1, 4>(rng);
  check_tile<P, block_q6k, 256 * 3, 4, 4>(rng);
  check_tile<P, block_q6k, 256, 2, 3>(rng);
}

// ---- interleaved q4_K (groups of 16 rows) ------------------------------------------------

TEST(QuantFormats, InterleaveQ4K16RoundTrips) {
  std::mt19937 rng(341);
  constexpr int nb = 3;
  const std::vector<block_q4k> rows = random_q4k(rng, 16 * nb, 0.02f);
  std::vector<block_q4k_16rows> g(nb);
  interleave_q4k16(rows.data(), nb, g.data());
  std::vector<block_q4k> back(16 * nb);
  deinterleave_q4k16(g.data(), nb, back.data());
  ASSERT_EQ(std::memcmp(rows.data(), back.data(), sizeof(block_q4k) * rows.size()), 0);
  // the layout quant.h states: row r's d at [r], its scale bytes 4p.. in scales[p][r], its
  // qs bytes 4v .. 4v+3 at qs[v][4r ..]
  for (int b = 0; b < nb; ++b)
    for (int r = 0; r < 16; ++r) {
      const block_q4k &x = rows[r * nb + b];
      ASSERT_EQ(g[b].d[r], x.d);
      ASSERT_EQ(g[b].dmin[r], x.dmin);
      ASSERT_EQ(std::memcmp(&g[b].scales[1][r], x.scales + 4, 4), 0);
      ASSERT_EQ(std::memcmp(&g[b].qs[9][4 * r], x.qs + 36, 4), 0);
    }
}

// Interleaved q4_K activations: the q8_K blocks, then the sub-block sum pairs, the same
// bytes on every path.
TYPED_TEST(QuantPath, QuantizeQ4K16Activations) {
  using P = TypeParam;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(342);
  constexpr int K = 256 * 3;
  using F = qk::format<block_q4k_x16>;
  for (int rep = 0; rep < 5; ++rep) {
    const std::vector<float> x = activations(rng, K, 256);
    std::vector<uint8_t> got(F::act_bytes(K)), want(F::act_bytes(K));
    F::quantize<P>(x.data(), K, got.data());
    F::quantize<qk::Scalar>(x.data(), K, want.data());
    ASSERT_EQ(got, want) << P::kName << " differs from the scalar reference";
    const auto *y = reinterpret_cast<const block_q8k *>(want.data());
    const auto *pairs = reinterpret_cast<const int32_t *>(want.data() + qk::act_bytes_q8k(K));
    for (int b = 0; b < K / 256; ++b) {
      std::vector<uint8_t> one(sizeof(block_q8k));
      P::quantize_q8k(x.data() + 256 * b, 256, reinterpret_cast<block_q8k *>(one.data()));
      ASSERT_EQ(std::memcmp(one.data(), &y[b], sizeof(block_q8k)), 0);
      int bs[8];
      for (int j = 0; j < 8; ++j) {
        bs[j] = 0;
        for (int i = 0; i < 32; ++i)
          bs[j] += y[b].qs[32 * j + i];
      }
      const int order[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
      for (int p = 0; p < 4; ++p) {
        const int32_t v = pairs[4 * b + p];
        ASSERT_EQ(static_cast<int16_t>(v & 0xFFFF), bs[order[p][0]]) << "block " << b << " pair " << p;
        ASSERT_EQ(static_cast<int16_t>(v >> 16), bs[order[p][1]]) << "block " << b << " pair " << p;
      }
    }
  }
}

// TT activation rows against a group of 16 interleaved rows (`rows`, 16 rows of K values in
// plain blocks, interleaved into W's groups): the path equals the scalar reference bit for
// bit, and both are within float rounding of the dequantized weights times the quantized
// activations in double. Token 0 is all ones (every activation quant 127), so that rows of
// extreme quants and scales give the largest sums the formats allow.
template <class P, class W, int K, int TT, class B, class G>
void check_group_tile(const std::vector<B> &rows, void (*interleave)(const B *, int64_t, G *),
                      std::mt19937 &rng) {
  constexpr int nb = K / block_values<W>();
  std::vector<G> g(nb);
  interleave(rows.data(), nb, g.data());
  const std::vector<double> wv = dequantized(rows, 16, K), wm = magnitudes(rows, 16, K);
  std::vector<QuantRow<W>> xq;
  for (int t = 0; t < TT; ++t) {
    std::vector<float> x = random_floats(rng, K, 1.0f);
    if (t == 0)
      std::fill(x.begin(), x.end(), 1.0f);
    xq.push_back(quantize_row<W>(x.data(), K));
  }
  const uint8_t *ap[TT];
  for (int t = 0; t < TT; ++t)
    ap[t] = xq[t].bytes.data();
  float got[TT][16], ref[TT][16];
  qk::tile_group<P, TT>(g.data(), ap, nb, got);
  qk::tile_group<qk::Scalar, TT>(g.data(), ap, nb, ref);
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < 16; ++r) {
      ASSERT_EQ(std::memcmp(&got[t][r], &ref[t][r], sizeof(float)), 0)
          << P::kName << " K=" << K << " TT=" << TT << " t=" << t << " r=" << r << ": "
          << got[t][r] << " vs " << ref[t][r];
      double want = 0, scale = 0;
      for (int k = 0; k < K; ++k) {
        want += wv[static_cast<size_t>(r) * K + k] * xq[t].value[k];
        scale += wm[static_cast<size_t>(r) * K + k] * std::fabs(xq[t].value[k]);
      }
      ASSERT_NEAR(ref[t][r], want, 1e-5 * scale) << "K=" << K << " t=" << t << " r=" << r;
    }
}

// q4_K: row 0 has every scale and min 63 and every quant 15.
template <class P, int K, int TT> void check_tile_q4k16(std::mt19937 &rng) {
  constexpr int nb = K / 256;
  std::vector<block_q4k> rows = random_q4k(rng, 16 * nb, 0.02f);
  for (int b = 0; b < nb; ++b) {
    std::fill(std::begin(rows[b].scales), std::end(rows[b].scales), uint8_t{0xFF});
    std::fill(std::begin(rows[b].qs), std::end(rows[b].qs), uint8_t{0xFF});
  }
  check_group_tile<P, block_q4k_x16, K, TT>(rows, interleave_q4k16, rng);
}

TYPED_TEST(QuantPath, TilesQ4K16) {
  using P = TypeParam;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(343);
  check_tile_q4k16<P, 256 * 3, 1>(rng);
  check_tile_q4k16<P, 256 * 3, 2>(rng);
  check_tile_q4k16<P, 256 * 2, 3>(rng);
  check_tile_q4k16<P, 256, 4>(rng);
  check_tile_q4k16<P, 256 * 16, 1>(rng);
}

TEST(QuantFormats, InterleaveQ8_016RoundTrips) {
  std::mt19937 rng(344);
  constexpr int nb = 5;
  std::vector<block_q8_0> rows = random_q8_0(rng, 16 * nb, 0.02f);
  rows[3].qs[7] = -128; // the extremes survive the bias
  rows[4].qs[0] = 127;
  std::vector<block_q8_0_16rows> g(nb);
  interleave_q8_016(rows.data(), nb, g.data());
  std::vector<block_q8_0> back(16 * nb);
  deinterleave_q8_016(g.data(), nb, back.data());
  ASSERT_EQ(std::memcmp(rows.data(), back.data(), sizeof(block_q8_0) * rows.size()), 0);
  for (int b = 0; b < nb; ++b)
    for (int r = 0; r < 16; ++r) {
      const block_q8_0 &x = rows[r * nb + b];
      ASSERT_EQ(g[b].d[r], x.d);
      for (int i = 0; i < 32; ++i)
        ASSERT_EQ(g[b].qs[i / 4][4 * r + i % 4], x.qs[i] + 128) << "b=" << b << " r=" << r;
    }
}

// Interleaved q8_0 activations: the q8_0 row, then -128 times each block's quant sum.
TYPED_TEST(QuantPath, QuantizeQ8_016Activations) {
  using P = TypeParam;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(345);
  constexpr int K = 32 * 9;
  using F = qk::format<block_q8_0_x16>;
  for (int rep = 0; rep < 5; ++rep) {
    const std::vector<float> x = activations(rng, K, 32);
    std::vector<uint8_t> got(F::act_bytes(K)), want(F::act_bytes(K));
    F::quantize<P>(x.data(), K, got.data());
    F::quantize<qk::Scalar>(x.data(), K, want.data());
    ASSERT_EQ(got, want) << P::kName << " differs from the scalar reference";
    std::vector<uint8_t> plain(qk::act_bytes_q8_0(K));
    qk::format<block_q8_0>::quantize<qk::Scalar>(x.data(), K, plain.data());
    ASSERT_TRUE(std::equal(plain.begin(), plain.end(), want.begin()));
    const auto *q = reinterpret_cast<const int8_t *>(want.data());
    const auto *c = reinterpret_cast<const int32_t *>(want.data() + qk::act_bytes_q8_0(K));
    for (int b = 0; b < K / 32; ++b) {
      int sum = 0;
      for (int i = 0; i < 32; ++i)
        sum += q[32 * b + i];
      ASSERT_EQ(c[b], -128 * sum) << "block " << b;
    }
  }
}

// q8_0: row 0 all -128, row 1 all 127.
template <class P, int K, int TT> void check_tile_q8_016(std::mt19937 &rng) {
  constexpr int nb = K / 32;
  std::vector<block_q8_0> rows = random_q8_0(rng, 16 * nb, 0.02f);
  for (int b = 0; b < nb; ++b) {
    std::fill(std::begin(rows[b].qs), std::end(rows[b].qs), int8_t{-128});
    std::fill(std::begin(rows[nb + b].qs), std::end(rows[nb + b].qs), int8_t{127});
  }
  check_group_tile<P, block_q8_0_x16, K, TT>(rows, interleave_q8_016, rng);
}

TYPED_TEST(QuantPath, TilesQ8_016) {
  using P = TypeParam;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(346);
  check_tile_q8_016<P, 32 * 19, 1>(rng);
  check_tile_q8_016<P, 32 * 19, 2>(rng);
  check_tile_q8_016<P, 32 * 3, 3>(rng);
  check_tile_q8_016<P, 32, 4>(rng);
  check_tile_q8_016<P, 32 * 128, 1>(rng);
}

TEST(QuantFormats, InterleaveQ6K16RoundTrips) {
  std::mt19937 rng(347);
  constexpr int nb = 3;
  const std::vector<block_q6k> rows = random_q6k(rng, 16 * nb, 0.02f);
  std::vector<block_q6k_16rows> g(nb);
  interleave_q6k16(rows.data(), nb, g.data());
  std::vector<block_q6k> back(16 * nb);
  deinterleave_q6k16(g.data(), nb, back.data());
  ASSERT_EQ(std::memcmp(rows.data(), back.data(), sizeof(block_q6k) * rows.size()), 0);
  for (int b = 0; b < nb; ++b)
    for (int r = 0; r < 16; ++r) {
      const block_q6k &x = rows[r * nb + b];
      ASSERT_EQ(g[b].d[r], x.d);
      ASSERT_EQ(g[b].scales[11][r], x.scales[11]);
      // n = 8h + k = 13 (h = 1, k = 5): ql[64h + 4k], ql[64h + 32 + 4k], qh[32h + 4k]
      ASSERT_EQ(std::memcmp(&g[b].q[39][4 * r], x.ql + 84, 4), 0);
      ASSERT_EQ(std::memcmp(&g[b].q[40][4 * r], x.ql + 116, 4), 0);
      ASSERT_EQ(std::memcmp(&g[b].q[41][4 * r], x.qh + 52, 4), 0);
    }
}

// q6_K: row 0 has every quant 0 (-32 after the offset) and every scale -128, row 1 every
// quant 63 and every scale 127.
template <class P, int K, int TT> void check_tile_q6k16(std::mt19937 &rng) {
  constexpr int nb = K / 256;
  std::vector<block_q6k> rows = random_q6k(rng, 16 * nb, 0.02f);
  for (int b = 0; b < nb; ++b) {
    block_q6k &lo = rows[b], &hi = rows[nb + b];
    std::fill(std::begin(lo.ql), std::end(lo.ql), uint8_t{0});
    std::fill(std::begin(lo.qh), std::end(lo.qh), uint8_t{0});
    std::fill(std::begin(lo.scales), std::end(lo.scales), int8_t{-128});
    std::fill(std::begin(hi.ql), std::end(hi.ql), uint8_t{0xFF});
    std::fill(std::begin(hi.qh), std::end(hi.qh), uint8_t{0xFF});
    std::fill(std::begin(hi.scales), std::end(hi.scales), int8_t{127});
  }
  check_group_tile<P, block_q6k_x16, K, TT>(rows, interleave_q6k16, rng);
}

TYPED_TEST(QuantPath, TilesQ6K16) {
  using P = TypeParam;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(348);
  check_tile_q6k16<P, 256 * 3, 1>(rng);
  check_tile_q6k16<P, 256 * 3, 2>(rng);
  check_tile_q6k16<P, 256 * 2, 3>(rng);
  check_tile_q6k16<P, 256, 4>(rng);
  check_tile_q6k16<P, 256 * 16, 1>(rng);
}

// The runtime's dequantization of a row (embeddings) against the tests' decoding: a few
// float roundings of d * scale * q - dmin * m.
template <class W> void check_dequantize(std::mt19937 &rng) {
  constexpr int K = 512;
  const std::vector<W> w = random_blocks<W>(rng, K / block_values<W>(), 0.05f);
  std::vector<float> got(K);
  qk::dequantize(w.data(), got.data(), K);
  for (int i = 0; i < K; ++i) {
    const IntWeight v = decode_at(w, K, 0, i);
    ASSERT_NEAR(got[i], v.value(), 4 * kFloatU * v.magnitude()) << "value " << i;
  }
}

TEST(QuantFormats, Dequantize) {
  std::mt19937 rng(331);
  check_dequantize<block_q8_0>(rng);
  check_dequantize<block_q4k>(rng);
  check_dequantize<block_q6k>(rng);
}

TEST(QuantFormats, BufferSizesCoverEveryFormat) {
  for (int k : {32, 96, 256, 4096, 6400, 6432})
    EXPECT_GE(quantized_row_bytes(k), qk::act_bytes_q8_0(k)) << k;
  for (int k : {256, 4096, 6400}) {
    EXPECT_GE(quantized_row_bytes(k), qk::format<block_q4k>::act_bytes(k)) << k;
    EXPECT_GE(quantized_row_bytes(k), qk::format<block_q6k>::act_bytes(k)) << k;
    EXPECT_GE(quantized_row_bytes(k), qk::format<block_q4k_x16>::act_bytes(k)) << k;
    EXPECT_GE(quantized_row_bytes(k), qk::format<block_q8_0_x16>::act_bytes(k)) << k;
  }
}

TEST(QuantFormats, BestPathIsTheWidestTheTargetHas) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  EXPECT_STREQ(qk::Best::kName, "vnni");
#elif defined(__AVX512F__) && defined(__AVX512BW__)
  EXPECT_STREQ(qk::Best::kName, "avx512");
#elif defined(__AVX2__)
  EXPECT_STREQ(qk::Best::kName, "avx2");
#else
  EXPECT_STREQ(qk::Best::kName, "scalar");
#endif
  std::printf("quantized kernels: %s path\n", qk::Best::kName);
}

} // namespace
