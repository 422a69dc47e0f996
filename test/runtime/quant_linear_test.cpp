// quant_linear_test.cpp - linear (and so the LM head) and embed with q8_0 / q4_K / q6_K weights,
// on the build's best SIMD path: against double references (the dequantized weights times the
// quantized activations to float rounding, and times the float activations within the
// quantization bound), n = 1, n within a tile and n past a token block, 1 and 3 threads,
// prompt rows equal to decode rows, and buffers that are too small.
#include "quant_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace {

using namespace phimoe_rt;
using namespace phimoe_rt_test;

const float kNaN = std::numeric_limits<float>::quiet_NaN();

template <class W> class QuantLinear : public ::testing::Test {};
using Blocks = ::testing::Types<block_q8_0, block_q4k, block_q6k>;
TYPED_TEST_SUITE(QuantLinear, Blocks, BlockName);

// out = x.W^T + b. Checks per output: (1) within 1e-5 * sum |w| |xq| (+ 4u |b|) of
// sum w xq + b in double, xq the scalar reference's quantization of x (which every path
// reproduces bit for bit); (2) within the quantization bound sum |w| amax_block / 254 of
// sum w x + b; (3) the same bits with 1 and 3 threads, and (4) for a prompt, the same bits
// as decode of each row alone.
template <class W, int N, int K, class B> void test_linear(std::mt19937 &rng, bool with_bias) {
  REQUIRE_TARGET_CPU();
  const std::vector<W> w = random_blocks<W>(rng, static_cast<size_t>(N) * K / block_values<W>(), 0.02f);
  const std::vector<double> wv = dequantized(w, N, K), wm = magnitudes(w, N, K);
  const Weights<B> bias(random_floats(rng, N, 0.5f));
  const B *b = with_bias ? bias.data() : nullptr;
  for (int n : {1, 3, 70}) { // 70: past one token block (64) and not a multiple of a tile
    const std::vector<float> x = random_floats(rng, static_cast<size_t>(n) * K);
    std::vector<QuantRow<W>> xq;
    for (int t = 0; t < n; ++t)
      xq.push_back(quantize_row<W>(x.data() + static_cast<size_t>(t) * K, K));
    std::vector<float> first;
    for (int threads : {1, 3}) {
      QuantContext qc(threads, n, K);
      std::vector<float> out(static_cast<size_t>(n) * N, kNaN);
      linear<N, K>(qc.ctx, x.data(), n, w.data(), b, out.data());
      for (int t = 0; t < n; ++t)
        for (int r = 0; r < N; ++r) {
          const double bv = b ? bias.exact[r] : 0.0;
          double want_q = bv, scale_q = 0, want_x = bv, bound_x = 0;
          for (int k = 0; k < K; ++k) {
            const size_t i = static_cast<size_t>(r) * K + k;
            want_q += wv[i] * xq[t].value[k];
            scale_q += wm[i] * std::fabs(xq[t].value[k]);
            want_x += wv[i] * x[static_cast<size_t>(t) * K + k];
            bound_x += std::fabs(wv[i]) * xq[t].half_step[k];
          }
          const double got = out[static_cast<size_t>(t) * N + r];
          const double tol_q = 1e-5 * scale_q + 4 * kFloatU * std::fabs(bv);
          ASSERT_NEAR(got, want_q, tol_q) << "N=" << N << " K=" << K << " n=" << n << " t=" << t
                                          << " r=" << r << " threads=" << threads;
          ASSERT_NEAR(got, want_x, bound_x + tol_q) << "N=" << N << " K=" << K << " t=" << t
                                                    << " r=" << r;
        }
      if (first.empty())
        first = out;
      else
        EXPECT_TRUE(same_bits(first, out)) << "N=" << N << " K=" << K << " n=" << n
                                           << ": differs between 1 and 3 threads";
    }
    if (n > 1) {
      QuantContext qc(2, 1, K);
      for (int t = 0; t < n; ++t) {
        std::vector<float> row(N, kNaN);
        linear<N, K>(qc.ctx, x.data() + static_cast<size_t>(t) * K, 1, w.data(), b, row.data());
        const std::vector<float> prompt_row(first.begin() + static_cast<size_t>(t) * N,
                                            first.begin() + static_cast<size_t>(t + 1) * N);
        ASSERT_TRUE(same_bits(row, prompt_row)) << "row " << t << " of " << n
                                                << ": prompt and decode differ";
      }
    }
  }
}

TYPED_TEST(QuantLinear, Linear) {
  using W = TypeParam;
  std::mt19937 rng(401);
  constexpr int K = std::is_same<W, block_q8_0>::value ? 32 * 19 : 256 * 3;
  test_linear<W, 150, K, float>(rng, false); // 150: panels of 64 with a tail; decode groups
  test_linear<W, 150, K, float>(rng, true);
  test_linear<W, 7, K, bf16>(rng, true); // fewer rows than one panel and one micro-tile
}

// The LM head is the same kernel with a vocabulary's rows (q6_K or q8_0 by policy).
TYPED_TEST(QuantLinear, LMHeadShape) {
  using W = TypeParam;
  std::mt19937 rng(402);
  test_linear<W, 1001, 256, f16>(rng, true);
}

// Interleaved q4_K (what phimoec packs for the CPU's q4k linear layers): rows in groups of
// 16, so the row counts are multiples of 16; the same checks as for the other types.
TEST(QuantLinearQ4K16, Linear) {
  std::mt19937 rng(403);
  test_linear<block_q4k_x16, 160, 256 * 3, float>(rng, false); // a panel of 128 and a tail
  test_linear<block_q4k_x16, 160, 256 * 3, float>(rng, true);
  test_linear<block_q4k_x16, 16, 256, bf16>(rng, true); // a single group
  test_linear<block_q4k_x16, 1008, 256, f16>(rng, true); // a vocabulary-like row count
}

TEST(QuantLinearQ8_016, Linear) {
  std::mt19937 rng(404);
  test_linear<block_q8_0_x16, 160, 32 * 19, float>(rng, false);
  test_linear<block_q8_0_x16, 160, 32 * 19, float>(rng, true);
  test_linear<block_q8_0_x16, 16, 32, bf16>(rng, true); // a single group of one block
  test_linear<block_q8_0_x16, 1008, 256, f16>(rng, true);
}

TEST(QuantLinearQ6K16, Linear) {
  std::mt19937 rng(405);
  test_linear<block_q6k_x16, 160, 256 * 3, float>(rng, false);
  test_linear<block_q6k_x16, 160, 256 * 3, float>(rng, true);
  test_linear<block_q6k_x16, 16, 256, bf16>(rng, true);
  test_linear<block_q6k_x16, 1008, 256, f16>(rng, true); // the LM head of a q4k build
}

TYPED_TEST(QuantLinear, NoPoolRunsOnTheCaller) {
  using W = TypeParam;
  REQUIRE_TARGET_CPU();
  constexpr int N = 70, K = 512;
  std::mt19937 rng(403);
  const std::vector<W> w = random_blocks<W>(rng, N * K / block_values<W>(), 0.02f);
  const std::vector<float> x = random_floats(rng, 9 * K);
  QuantContext qc(3, 9, K);
  std::vector<float> pooled(9 * N, kNaN), alone(9 * N, kNaN);
  linear<N, K>(qc.ctx, x.data(), 9, w.data(), static_cast<const float *>(nullptr), pooled.data());
  qc.ctx.pool = nullptr;
  linear<N, K>(qc.ctx, x.data(), 9, w.data(), static_cast<const float *>(nullptr), alone.data());
  EXPECT_TRUE(same_bits(pooled, alone));
}

// A qbuf too small for n rows (or none): every output is nan, nothing is written past qbuf.
TYPED_TEST(QuantLinear, TooSmallBufferGivesNan) {
  using W = TypeParam;
  REQUIRE_TARGET_CPU();
  constexpr int N = 20, K = 256;
  std::mt19937 rng(404);
  const std::vector<W> w = random_blocks<W>(rng, N * K / block_values<W>(), 0.02f);
  const std::vector<float> x = random_floats(rng, 5 * K);
  QuantContext qc(2, 4, K); // room for 4 rows
  qc.ctx.qbuf_bytes = qk::format<W>::act_bytes(K) * 4;
  std::vector<float> out(5 * N, 0.0f);
  linear<N, K>(qc.ctx, x.data(), 5, w.data(), static_cast<const float *>(nullptr), out.data());
  for (float v : out)
    ASSERT_TRUE(std::isnan(v));
  qc.ctx.qbuf = nullptr;
  std::fill(out.begin(), out.end(), 0.0f);
  linear<N, K>(qc.ctx, x.data(), 1, w.data(), static_cast<const float *>(nullptr), out.data());
  EXPECT_TRUE(std::isnan(out[0]) && std::isnan(out[N - 1]));
}

// embed: each row dequantized (a few float roundings of d * scale * q - dmin * m); invalid ids
// give zeros.
TYPED_TEST(QuantLinear, Embed) {
  using W = TypeParam;
  REQUIRE_TARGET_CPU();
  constexpr int V = 40, H = 512;
  std::mt19937 rng(405);
  const std::vector<W> table = random_blocks<W>(rng, V * H / block_values<W>(), 0.05f);
  std::uniform_int_distribution<int32_t> id(0, V - 1);
  for (int threads : {1, 3})
    for (int n : {1, 9}) {
      TestContext tc(threads);
      std::vector<int32_t> ids(n);
      for (int32_t &i : ids)
        i = id(rng);
      if (n > 2) {
        ids[1] = -1;
        ids[2] = V;
      }
      std::vector<float> out(static_cast<size_t>(n) * H, kNaN);
      embed<V, H>(tc.ctx, ids.data(), n, table.data(), out.data());
      for (int t = 0; t < n; ++t)
        for (int j = 0; j < H; ++j) {
          const float got = out[static_cast<size_t>(t) * H + j];
          if (ids[t] < 0 || ids[t] >= V) {
            ASSERT_EQ(got, 0.0f);
            continue;
          }
          const IntWeight v = decode_at(table, H, ids[t], j);
          ASSERT_NEAR(got, v.value(), 4 * kFloatU * v.magnitude()) << "t=" << t << " j=" << j;
        }
    }
}

} // namespace
