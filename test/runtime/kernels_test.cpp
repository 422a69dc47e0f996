// kernels_test.cpp - embed, layer_norm, add_layer_norm, linear and copy_cols against scalar
// double-precision references, for float, bf16 and f16 weights, n = 1 and n > 1, 1 and 3 threads.
#include "test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using namespace phimoe_rt;
using namespace phimoe_rt_test;

template <class W> class Kernels : public ::testing::Test {};
using WeightTypes = ::testing::Types<float, bf16, f16>;
TYPED_TEST_SUITE(Kernels, WeightTypes, WeightTypeName);

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---- embed ---------------------------------------------------------------------------------

TYPED_TEST(Kernels, Embed) {
  using W = TypeParam;
  constexpr int V = 50, H = 37;
  std::mt19937 rng(11);
  const Weights<W> table(random_floats(rng, V * H));
  std::uniform_int_distribution<int32_t> id(0, V - 1);
  for (int threads : {1, 3})
    for (int n : {1, 7}) {
      TestContext tc(threads);
      std::vector<int32_t> ids(n);
      for (int32_t &i : ids)
        i = id(rng);
      if (n > 1)
        ids[n - 1] = ids[0]; // a repeated id
      std::vector<float> out(n * H, kNaN);
      embed<V, H>(tc.ctx, ids.data(), n, table.data(), out.data());
      for (int t = 0; t < n; ++t)
        for (int j = 0; j < H; ++j) // a conversion to float: exact
          ASSERT_EQ(out[t * H + j], table.exact[ids[t] * H + j]) << "t=" << t << " j=" << j;
    }
}

TEST(Kernels, EmbedOutOfRangeIdsGiveZeros) {
  constexpr int V = 8, H = 16;
  std::mt19937 rng(12);
  const std::vector<float> table = random_floats(rng, V * H);
  TestContext tc(2);
  const int32_t ids[3] = {-1, V, 3};
  std::vector<float> out(3 * H, kNaN);
  embed<V, H>(tc.ctx, ids, 3, table.data(), out.data());
  for (int j = 0; j < H; ++j) {
    EXPECT_EQ(out[j], 0.0f);
    EXPECT_EQ(out[H + j], 0.0f);
    EXPECT_EQ(out[2 * H + j], table[3 * H + j]);
  }
}

// ---- layer_norm, add_layer_norm ------------------------------------------------------------

// Tolerance of a LayerNorm output against the float64 reference: the kernel computes mean,
// variance and z = (x - mean) * rstd in double, then rounds z to float and computes z * w + b
// in float: |err| <= u * (|z w| + |z w| + |y|) to first order, within 4u * (|z w| + |b|), about
// 1e-6 on these inputs; the tests also keep the target max |err| <= 1e-5 over each run.
template <int H, class W>
void check_layer_norm_rows(const std::vector<float> &x, int n, const Weights<W> &w,
                           const Weights<W> &b, float eps, const std::vector<float> &out) {
  double worst = 0;
  for (int t = 0; t < n; ++t) {
    const float *xt = x.data() + t * H;
    double mean = 0, var = 0;
    for (int j = 0; j < H; ++j)
      mean += xt[j];
    mean /= H;
    for (int j = 0; j < H; ++j)
      var += (xt[j] - mean) * (xt[j] - mean);
    var /= H;
    const double rstd = 1.0 / std::sqrt(var + static_cast<double>(eps));
    for (int j = 0; j < H; ++j) {
      const double z = (xt[j] - mean) * rstd;
      const double want = z * w.exact[j] + b.exact[j];
      const double tol = 4 * kFloatU * (std::fabs(z * w.exact[j]) + std::fabs(b.exact[j]));
      const double err = std::fabs(out[t * H + j] - want);
      worst = std::max(worst, err);
      ASSERT_LE(err, tol) << "t=" << t << " j=" << j << " want " << want;
    }
  }
  EXPECT_LE(worst, 1e-5);
}

template <int H, class W> void test_layer_norm(std::mt19937 &rng) {
  const Weights<W> w(random_floats(rng, H, 0.3f, 1.0f)), b(random_floats(rng, H, 0.5f));
  const float eps = 1e-5f;
  for (int threads : {1, 3})
    for (int n : {1, 7}) {
      TestContext tc(threads);
      const std::vector<float> x = random_floats(rng, n * H, 1.5f, 3.0f); // mean far from 0
      std::vector<float> out(n * H, kNaN);
      layer_norm<H>(tc.ctx, x.data(), n, w.data(), b.data(), eps, out.data());
      check_layer_norm_rows<H>(x, n, w, b, eps, out);
    }
}

TYPED_TEST(Kernels, LayerNorm) {
  std::mt19937 rng(21);
  test_layer_norm<203, TypeParam>(rng); // not a multiple of 8: vector body and scalar tail
  test_layer_norm<4096, TypeParam>(rng); // the model's width
}

// A row with a tiny variance (x = 10 + noise of 1e-3): eps matters, and x - mean cancels
// badly (a mean rounded to float would already cost 1.8e-4 after scaling by rstd ~ 300).
TEST(Kernels, LayerNormNearlyConstantRow) {
  constexpr int H = 64;
  std::mt19937 rng(22);
  const Weights<float> w(random_floats(rng, H, 0.3f, 1.0f)), b(random_floats(rng, H, 0.5f));
  std::vector<float> x = random_floats(rng, H, 1e-3f, 0.0f);
  for (float &v : x)
    v += 10.0f;
  TestContext tc(1);
  std::vector<float> out(H, kNaN);
  layer_norm<H>(tc.ctx, x.data(), 1, w.data(), b.data(), 1e-5f, out.data());
  check_layer_norm_rows<H>(x, 1, w, b, 1e-5f, out);
}

// An add-then-norm kernel, run(ctx, a, d, n, sum, out), on 1 and 3 threads, n = 1 and 7, its
// sum apart from a and in place: the sum bit for bit (the residual add is a float add), then
// check(want_sum, n, out) for the normed rows.
template <int H, class Run, class Check>
void test_add_then_norm(std::mt19937 &rng, Run run, Check check) {
  for (int threads : {1, 3})
    for (int n : {1, 7})
      for (bool in_place : {false, true}) {
        TestContext tc(threads);
        std::vector<float> a = random_floats(rng, n * H, 1.0f, 2.0f);
        const std::vector<float> d = random_floats(rng, n * H, 0.5f);
        std::vector<float> want_sum(n * H);
        for (int i = 0; i < n * H; ++i)
          want_sum[i] = a[i] + d[i];
        std::vector<float> sum(n * H, kNaN), out(n * H, kNaN);
        float *sum_ptr = in_place ? a.data() : sum.data();
        run(tc.ctx, a.data(), d.data(), n, sum_ptr, out.data());
        const std::vector<float> got_sum(sum_ptr, sum_ptr + n * H);
        ASSERT_TRUE(same_bits(got_sum, want_sum));
        check(want_sum, n, out);
      }
}

template <int H, class W> void test_add_layer_norm(std::mt19937 &rng) {
  const Weights<W> w(random_floats(rng, H, 0.3f, 1.0f)), b(random_floats(rng, H, 0.5f));
  const float eps = 1e-5f;
  test_add_then_norm<H>(
      rng,
      [&](Context &ctx, const float *a, const float *d, int n, float *sum, float *out) {
        add_layer_norm<H>(ctx, a, d, n, w.data(), b.data(), eps, sum, out);
      },
      [&](const std::vector<float> &want_sum, int n, const std::vector<float> &out) {
        check_layer_norm_rows<H>(want_sum, n, w, b, eps, out);
      });
}

TYPED_TEST(Kernels, AddLayerNorm) {
  std::mt19937 rng(31);
  test_add_layer_norm<203, TypeParam>(rng);
  test_add_layer_norm<512, TypeParam>(rng);
}

// ---- rms_norm, add_rms_norm (Mixtral) ------------------------------------------------------

// The kernel computes the mean square and z = x * rstd in double, rounds z to float and
// multiplies by w in float: |err| <= 2u |z w| to first order; 4u leaves room.
template <int H, class W>
void check_rms_norm_rows(const std::vector<float> &x, int n, const Weights<W> &w, float eps,
                         const std::vector<float> &out) {
  for (int t = 0; t < n; ++t) {
    const float *xt = x.data() + t * H;
    double sq = 0;
    for (int j = 0; j < H; ++j)
      sq += static_cast<double>(xt[j]) * xt[j];
    const double rstd = 1.0 / std::sqrt(sq / H + static_cast<double>(eps));
    for (int j = 0; j < H; ++j) {
      const double want = xt[j] * rstd * w.exact[j];
      const double err = std::fabs(out[t * H + j] - want);
      ASSERT_LE(err, 4 * kFloatU * std::fabs(want) + 1e-30)
          << "t=" << t << " j=" << j << " want " << want << " got " << out[t * H + j];
    }
  }
}

template <int H, class W> void test_rms_norm(std::mt19937 &rng) {
  const Weights<W> w(random_floats(rng, H, 0.3f, 1.0f));
  for (float eps : {1e-5f, 1e-6f})
    for (int threads : {1, 3})
      for (int n : {1, 7}) {
        TestContext tc(threads);
        // mean far from 0: an RMSNorm does not subtract it (a LayerNorm would)
        const std::vector<float> x = random_floats(rng, n * H, 1.5f, 3.0f);
        std::vector<float> out(n * H, kNaN);
        rms_norm<H>(tc.ctx, x.data(), n, w.data(), eps, out.data());
        check_rms_norm_rows<H>(x, n, w, eps, out);
      }
}

TYPED_TEST(Kernels, RmsNorm) {
  std::mt19937 rng(41);
  test_rms_norm<203, TypeParam>(rng);
  test_rms_norm<4096, TypeParam>(rng);
}

// eps inside the square root matters for a row of tiny values.
TEST(Kernels, RmsNormTinyRowSeesEps) {
  constexpr int H = 16;
  const Weights<float> w(std::vector<float>(H, 1.0f));
  std::vector<float> x(H, 1e-3f);
  TestContext tc(1);
  std::vector<float> out(H, kNaN);
  rms_norm<H>(tc.ctx, x.data(), 1, w.data(), 1e-5f, out.data());
  // 1e-3 / sqrt(1e-6 + 1e-5) = 0.30151...
  EXPECT_NEAR(out[0], 1e-3 / std::sqrt(1e-6 + 1e-5), 1e-6);
  check_rms_norm_rows<H>(x, 1, w, 1e-5f, out);
}

template <int H, class W> void test_add_rms_norm(std::mt19937 &rng) {
  const Weights<W> w(random_floats(rng, H, 0.3f, 1.0f));
  const float eps = 1e-5f;
  test_add_then_norm<H>(
      rng,
      [&](Context &ctx, const float *a, const float *d, int n, float *sum, float *out) {
        add_rms_norm<H>(ctx, a, d, n, w.data(), eps, sum, out);
      },
      [&](const std::vector<float> &want_sum, int n, const std::vector<float> &out) {
        check_rms_norm_rows<H>(want_sum, n, w, eps, out);
      });
}

TYPED_TEST(Kernels, AddRmsNorm) {
  std::mt19937 rng(51);
  test_add_rms_norm<203, TypeParam>(rng);
  test_add_rms_norm<512, TypeParam>(rng);
}

// ---- linear --------------------------------------------------------------------------------

// out = x.W^T + b against a double reference. Tolerance 1e-5 * sum_k |x_k w_k| (+|b|): above
// the worst-case float error of the kernel's summation ((K/8 + 5)u <= 8e-6 for K <= 1024) and
// orders of magnitude below the effect of a wrong or missing term.
template <int N, int K, class W, class B>
void test_linear(std::mt19937 &rng, const char *bias_kind) {
  const Weights<W> w(random_floats(rng, N * K, 1.0f / std::sqrt(static_cast<float>(K))));
  const Weights<B> bias(random_floats(rng, N, 0.5f));
  const B *b = std::string(bias_kind) == "none" ? nullptr : bias.data();
  for (int n : {1, 7, 40}) { // 40: more than one block of 32 tokens
    const std::vector<float> x = random_floats(rng, static_cast<size_t>(n) * K);
    std::vector<float> first;
    for (int threads : {1, 3}) {
      TestContext tc(threads);
      std::vector<float> out(static_cast<size_t>(n) * N, kNaN);
      linear<N, K>(tc.ctx, x.data(), n, w.data(), b, out.data());
      for (int t = 0; t < n; ++t)
        for (int r = 0; r < N; ++r) {
          double want = b ? bias.exact[r] : 0.0, scale = b ? std::fabs(bias.exact[r]) : 0.0;
          for (int k = 0; k < K; ++k) {
            want += x[t * K + k] * w.exact[static_cast<size_t>(r) * K + k];
            scale += std::fabs(x[t * K + k] * w.exact[static_cast<size_t>(r) * K + k]);
          }
          ASSERT_NEAR(out[static_cast<size_t>(t) * N + r], want, 1e-5 * scale)
              << "N=" << N << " K=" << K << " n=" << n << " t=" << t << " r=" << r
              << " threads=" << threads << " bias=" << bias_kind;
        }
      if (first.empty())
        first = out;
      else // deterministic: the result does not depend on the number of threads
        EXPECT_TRUE(same_bits(first, out)) << "N=" << N << " K=" << K << " n=" << n;
    }
  }
}

TYPED_TEST(Kernels, Linear) {
  using W = TypeParam;
  std::mt19937 rng(41);
  test_linear<13, 37, W, float>(rng, "none");  // tails: N % 4 != 0, K % 8 != 0
  test_linear<13, 37, W, float>(rng, "f32");
  test_linear<64, 256, W, W>(rng, "same type as W");
  test_linear<9, 1024, W, float>(rng, "f32");
  test_linear<3, 16, W, W>(rng, "same type as W"); // fewer rows than one group of 4
}

// Without a pool (ctx.pool == nullptr) every kernel runs on the calling thread alone.
TEST(Kernels, NoPoolRunsOnTheCaller) {
  constexpr int N = 11, K = 24;
  std::mt19937 rng(42);
  const Weights<bf16> w(random_floats(rng, N * K, 0.2f));
  const std::vector<float> x = random_floats(rng, 3 * K);
  TestContext tc(3);
  std::vector<float> pooled(3 * N, kNaN), alone(3 * N, kNaN);
  linear<N, K>(tc.ctx, x.data(), 3, w.data(), static_cast<const float *>(nullptr), pooled.data());
  tc.ctx.pool = nullptr;
  linear<N, K>(tc.ctx, x.data(), 3, w.data(), static_cast<const float *>(nullptr), alone.data());
  EXPECT_TRUE(same_bits(pooled, alone));
}

// ---- copy_cols -----------------------------------------------------------------------------

TEST(Kernels, CopyCols) {
  constexpr int In = 23, Offset = 7, Width = 9;
  std::mt19937 rng(51);
  for (int n : {1, 7}) {
    const std::vector<float> x = random_floats(rng, n * In);
    std::vector<float> out(n * Width + 1, kNaN);
    TestContext tc(3);
    copy_cols<In, Offset, Width>(tc.ctx, x.data(), n, out.data());
    for (int t = 0; t < n; ++t)
      for (int j = 0; j < Width; ++j)
        ASSERT_EQ(out[t * Width + j], x[t * In + Offset + j]);
    EXPECT_TRUE(std::isnan(out[n * Width])); // nothing written past the end
  }
}

} // namespace
