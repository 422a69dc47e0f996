// moe_test.cpp - sparsemixer routing (ties, nan ratios, several or one expert kept, negative
// logits) and the moe_sparsemixer kernel against a double-precision reference, including a
// check with page protection that only the selected experts' weights are read.
#include "test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace {

using namespace phimoe_rt;
using namespace phimoe_rt_test;

const float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kJitter = 0.01f; // router_jitter_noise of Phi-3.5-MoE

// ---- reference routing -------------------------------------------------------------------

struct RefRoute {
  int i1, i2;
  double w1, w2;
  double margin; // smallest |ratio - 2 eps| over all non-nan ratios (decision robustness)
};

int first_argmax(const std::vector<float> &s) {
  int best = 0;
  for (size_t j = 1; j < s.size(); ++j)
    if (s[j] > s[best])
      best = static_cast<int>(j);
  return best;
}

// softmax(gates) at index i, in double; -inf gates contribute nothing.
double softmax_at(const std::vector<float> &gates, int i) {
  const double mx = *std::max_element(gates.begin(), gates.end());
  double sum = 0;
  for (float g : gates)
    sum += std::exp(static_cast<double>(g) - mx);
  return std::exp(static_cast<double>(gates[i]) - mx) / sum;
}

// transformers' sparsemixer(scores, jitter_eps, training=False) transcribed step by step:
// masked_fill with -inf, the float32 ratio compared with 2*eps as a float32, softmax, gather.
RefRoute reference_route(const std::vector<float> &scores, float eps) {
  const float threshold = static_cast<float>(2.0 * eps);
  const float inf = std::numeric_limits<float>::infinity();
  RefRoute r;
  r.margin = INFINITY;
  auto mask = [&](const std::vector<float> &base, float m, std::vector<float> *gates) {
    for (size_t j = 0; j < scores.size(); ++j) {
      const float factor = std::max(std::fabs(scores[j]), m); // abs().clamp(min=m)
      const float ratio = (m - scores[j]) / factor;
      if (!std::isnan(ratio))
        r.margin = std::min(r.margin, std::fabs(static_cast<double>(ratio) - threshold));
      (*gates)[j] = ratio > threshold ? -inf : base[j];
    }
  };
  r.i1 = first_argmax(scores);
  std::vector<float> gates(scores.size());
  mask(scores, scores[r.i1], &gates);
  r.w1 = softmax_at(gates, r.i1);

  std::vector<float> masked_scores = scores;
  masked_scores[r.i1] = -inf;
  r.i2 = first_argmax(masked_scores);
  mask(masked_scores, masked_scores[r.i2], &gates);
  r.w2 = softmax_at(gates, r.i2);
  return r;
}

// transformers' MixtralSparseMoeBlock routing in double: softmax over all logits, topk(2)
// (first index on ties), the two probabilities renormalised. margin: how far the second
// choice lies above the best of the rest (the set of two is decided by it).
RefRoute reference_softmax_route(const std::vector<float> &scores) {
  RefRoute r;
  r.i1 = first_argmax(scores);
  std::vector<float> rest = scores;
  rest[r.i1] = -std::numeric_limits<float>::infinity();
  r.i2 = first_argmax(rest);
  const double p1 = softmax_at(scores, r.i1), p2 = softmax_at(scores, r.i2);
  r.w1 = p1 / (p1 + p2);
  r.w2 = p2 / (p1 + p2);
  rest[r.i2] = -std::numeric_limits<float>::infinity();
  r.margin = scores.size() > 2
                 ? static_cast<double>(scores[r.i2]) - rest[first_argmax(rest)]
                 : INFINITY;
  return r;
}

// ---- sparsemixer on crafted logits ----------------------------------------------------------

template <int E> void expect_route(const std::vector<float> &s, int i1, int i2, double w1,
                                   double w2, const char *what) {
  ASSERT_EQ(static_cast<int>(s.size()), E);
  const RefRoute ref = reference_route(s, kJitter);
  EXPECT_EQ(ref.i1, i1) << what;
  EXPECT_EQ(ref.i2, i2) << what;
  EXPECT_NEAR(ref.w1, w1, 1e-12) << what;
  EXPECT_NEAR(ref.w2, w2, 1e-12) << what;
  const Route got = sparsemixer<E>(s.data(), kJitter);
  EXPECT_EQ(got.i1, i1) << what;
  EXPECT_EQ(got.i2, i2) << what;
  // float softmax of <= E terms: a few ulps
  EXPECT_NEAR(got.w1, w1, 4 * E * kFloatU * w1) << what;
  EXPECT_NEAR(got.w2, w2, 4 * E * kFloatU * w2) << what;
}

TEST(Sparsemixer, OneExpertKeptPerStage) {
  // stage 1: only 5 survives (w1 = 1); stage 2: only 2 survives (w2 = 1)
  expect_route<4>({1.0f, 5.0f, 2.0f, -3.0f}, 1, 2, 1.0, 1.0, "dominant");
  const Route r = sparsemixer<4>(std::vector<float>{1.0f, 5.0f, 2.0f, -3.0f}.data(), kJitter);
  EXPECT_EQ(r.w1, 1.0f); // exactly 1, as in the reference
  EXPECT_EQ(r.w2, 1.0f);
}

TEST(Sparsemixer, SeveralExpertsKeptAndNotRenormalised) {
  // m1 = 10.1: 10.0 (ratio 0.0099) and 9.95 (0.0149) kept, 8.0 (0.26) masked.
  // m2 = 10.0: 9.95 (0.005) kept, 8.0 masked, 10.1 excluded as the first expert.
  const std::vector<float> s = {10.0f, 10.1f, 9.95f, 8.0f};
  const double w1 = 1.0 / (1.0 + std::exp(double(s[0]) - s[1]) + std::exp(double(s[2]) - s[1]));
  const double w2 = 1.0 / (1.0 + std::exp(double(s[2]) - s[0]));
  expect_route<4>(s, 1, 0, w1, w2, "close logits");
  EXPECT_GT(std::fabs(w1 + w2 - 1.0), 0.1); // the weights are not renormalised (0.87 here)
}

TEST(Sparsemixer, TiesTakeTheFirstIndex) {
  // 3.0 twice: i1 = 1 (first), and 3 keeps a zero ratio in stage 1, so w1 = 1/2; stage 2
  // picks 3 (the tie left) with only itself unmasked.
  expect_route<4>({1.0f, 3.0f, 0.5f, 3.0f}, 1, 3, 0.5, 1.0, "tie");
  // a three-way tie: 0, 2, 3 equal; i1 = 0, i2 = 2
  expect_route<4>({2.0f, -1.0f, 2.0f, 2.0f}, 0, 2, 1.0 / 3.0, 0.5, "three-way tie");
}

TEST(Sparsemixer, NanRatioKeepsTheExpert) {
  // m1 = 0 and s[3] = 0: ratio 0/0 = nan, not > 2 eps, so 3 is kept: w1 = 1/2. Stage 2: m2 = 0,
  // i2 = 3; 1 is excluded and the negative logits have ratio 1: w2 = 1.
  expect_route<4>({-1.0f, 0.0f, -2.0f, 0.0f}, 1, 3, 0.5, 1.0, "nan ratio");
  expect_route<4>({-1.0f, -0.0f, -2.0f, 0.0f}, 1, 3, 0.5, 1.0, "nan ratio, -0");
}

TEST(Sparsemixer, NegativeMaximumUsesMaxNotMin) {
  // m1 = -1: factor = max(|s_j|, -1) = |s_j|; -1.01 has ratio 0.0099 (kept), the others are
  // masked. (With a min the factor would be -1 and every ratio negative: all kept.)
  const std::vector<float> s = {-1.0f, -1.01f, -3.0f, -5.0f};
  expect_route<4>(s, 0, 1, 1.0 / (1.0 + std::exp(double(s[1]) - s[0])), 1.0, "negative");
}

TEST(Sparsemixer, StageTwoThresholdIsRelativeToTheSecondMaximum) {
  // Stage 1 keeps only 100. Stage 2 measures against m2 = 0.5, not m1: s_3 = 0.495 has ratio
  // 0.005/max(0.495, 0.5) = 0.01 (kept); s_2 = -0.505 has 1.005/max(0.505, 0.5) = 1.99 (masked).
  const std::vector<float> s = {100.0f, 0.5f, -0.505f, 0.495f};
  const double w2 = 1.0 / (1.0 + std::exp(double(s[3]) - s[1]));
  expect_route<4>(s, 0, 1, 1.0, w2, "stage 2");
}

// ---- softmax top-2 (Mixtral) on crafted logits ----------------------------------------------

template <int E> void expect_softmax_route(const std::vector<float> &s, int i1, int i2,
                                           const char *what) {
  ASSERT_EQ(static_cast<int>(s.size()), E);
  const RefRoute ref = reference_softmax_route(s);
  EXPECT_EQ(ref.i1, i1) << what;
  EXPECT_EQ(ref.i2, i2) << what;
  const Route got = softmax_top2<E>(s.data());
  EXPECT_EQ(got.i1, i1) << what;
  EXPECT_EQ(got.i2, i2) << what;
  EXPECT_NEAR(got.w1, ref.w1, 4 * kFloatU) << what;
  EXPECT_NEAR(got.w2, ref.w2, 4 * kFloatU) << what;
  EXPECT_NEAR(double(got.w1) + got.w2, 1.0, 2 * kFloatU) << what; // renormalised
  // route<> dispatches to it
  const Route via = route<RouteKind::SoftmaxTop2, E>(s.data(), 0.5f);
  EXPECT_TRUE(via.i1 == got.i1 && via.i2 == got.i2 && via.w1 == got.w1 && via.w2 == got.w2);
}

TEST(SoftmaxTop2, WeightsAreTheRenormalisedPair) {
  // p(5) : p(2) = e^3 : 1, whatever the other experts hold
  expect_softmax_route<4>({1.0f, 5.0f, 2.0f, -3.0f}, 1, 2, "spread");
  const Route r = softmax_top2<4>(std::vector<float>{1.0f, 5.0f, 2.0f, -3.0f}.data());
  EXPECT_NEAR(r.w1, 1.0 / (1.0 + std::exp(-3.0)), 4 * kFloatU);
  EXPECT_GT(r.w2, 0.04f); // not sparsemixer's single survivor (w2 would be its own softmax)
  expect_softmax_route<4>({10.0f, 10.1f, 9.95f, 8.0f}, 1, 0, "close");
  expect_softmax_route<8>({-1.0f, -0.5f, -3.0f, -0.25f, -7.0f, -0.6f, -2.0f, -9.0f}, 3, 1,
                          "negative");
}

TEST(SoftmaxTop2, TiesTakeTheFirstIndex) {
  expect_softmax_route<4>({1.0f, 3.0f, 0.5f, 3.0f}, 1, 3, "tie for first");
  expect_softmax_route<4>({2.0f, -1.0f, 2.0f, 2.0f}, 0, 2, "three-way tie");
  expect_softmax_route<4>({4.0f, 1.0f, 1.0f, 0.0f}, 0, 1, "tie for second");
  const Route r = softmax_top2<4>(std::vector<float>{2.0f, -1.0f, 2.0f, 2.0f}.data());
  EXPECT_EQ(r.w1, 0.5f);
  EXPECT_EQ(r.w2, 0.5f);
}

TEST(SoftmaxTop2, LargeGapsDoNotOverflow) {
  const Route r = softmax_top2<3>(std::vector<float>{-200.0f, 300.0f, 0.0f}.data());
  EXPECT_EQ(r.i1, 1);
  EXPECT_EQ(r.i2, 2);
  EXPECT_EQ(r.w1, 1.0f);
  EXPECT_EQ(r.w2, 0.0f);
}

// ---- the moe_sparsemixer kernel -------------------------------------------------------------

// Weights of a block: router [E, H], gate_up [E, 2I, H], down [E, H, I].
template <int E, int H, int I, class R, class W> struct Block {
  Weights<R> router;
  Weights<W> gate_up, down;
};

enum class Regime { kRandom, kClose, kTie, kNanRatio };

// Router rows for a regime. x has mean 0.5, so x . (c * ones / H) is about c / 2.
template <int E, int H> std::vector<float> router_rows(std::mt19937 &rng, Regime regime) {
  std::vector<float> r;
  switch (regime) {
  case Regime::kRandom: // logits spread out: usually one expert survives each stage
    return random_floats(rng, E * H, 2.0f / std::sqrt(static_cast<float>(H)));
  case Regime::kClose: { // a shared logit of ~4 plus +-0.04: several survive
    r = random_floats(rng, E * H, 0.004f);
    for (float &v : r)
      v += 8.0f / H;
    return r;
  }
  case Regime::kTie: { // experts 3 and 5 identical and dominant
    r = random_floats(rng, E * H, 0.1f / std::sqrt(static_cast<float>(H)));
    for (int j = 0; j < H; ++j)
      r[3 * H + j] = r[5 * H + j] = 8.0f / H + 0.01f * r[j];
    return r;
  }
  case Regime::kNanRatio: { // experts 0 and 2: logit exactly 0; the rest clearly negative
    r = random_floats(rng, E * H, 0.01f / std::sqrt(static_cast<float>(H)));
    for (int e = 0; e < E; ++e)
      for (int j = 0; j < H; ++j)
        r[e * H + j] = (e == 0 || e == 2) ? 0.0f : r[e * H + j] - 8.0f * (1.0f + 0.1f * e) / H;
    return r;
  }
  }
  return r;
}

// Expected outputs and per-lane tolerances of a block for rows x. Tolerance: 1e-5 times the
// first-order error scale of a float evaluation, i.e. each dot product (<= 8e-6 relative to
// its sum of |terms| for these lengths) propagated through silu*up, the down projection and
// the routing weights (logit errors move each weight by up to twice the logit error):
//   sum_s w_s * (sum_r |d_cr| (|h_r| + 1.1 |u_r| G_r + |silu(g_r)| U_r) + 2 |y_sc| Rmax)
// with G_r, U_r the sums of |terms| of gate and up row r and Rmax that of the router logits.
template <int E, int H, int I, class R, class W>
void reference_moe(const Block<E, H, I, R, W> &b, const std::vector<float> &x, int n,
                   std::vector<double> *out, std::vector<double> *tol,
                   std::vector<RefRoute> *routes, bool softmax = false) {
  out->assign(static_cast<size_t>(n) * H, 0.0);
  tol->assign(static_cast<size_t>(n) * H, 0.0);
  routes->clear();
  for (int t = 0; t < n; ++t) {
    const float *xt = x.data() + static_cast<size_t>(t) * H;
    std::vector<float> logits(E);
    double rmax = 0;
    for (int e = 0; e < E; ++e) {
      double s = 0, a = 0;
      for (int k = 0; k < H; ++k) {
        s += xt[k] * b.router.exact[e * H + k];
        a += std::fabs(xt[k] * b.router.exact[e * H + k]);
      }
      logits[e] = static_cast<float>(s); // the router's output is a float32 tensor
      rmax = std::max(rmax, a);
    }
    const RefRoute route =
        softmax ? reference_softmax_route(logits) : reference_route(logits, kJitter);
    routes->push_back(route);
    const int experts[2] = {route.i1, route.i2};
    const double weights[2] = {route.w1, route.w2};
    for (int slot = 0; slot < 2; ++slot) {
      const size_t gu = static_cast<size_t>(experts[slot]) * 2 * I * H;
      const size_t dw = static_cast<size_t>(experts[slot]) * H * I;
      std::vector<double> h(I), sens(I);
      for (int r = 0; r < I; ++r) {
        double g = 0, u = 0, ga = 0, ua = 0;
        for (int k = 0; k < H; ++k) {
          g += xt[k] * b.gate_up.exact[gu + static_cast<size_t>(r) * H + k];
          u += xt[k] * b.gate_up.exact[gu + static_cast<size_t>(I + r) * H + k];
          ga += std::fabs(xt[k] * b.gate_up.exact[gu + static_cast<size_t>(r) * H + k]);
          ua += std::fabs(xt[k] * b.gate_up.exact[gu + static_cast<size_t>(I + r) * H + k]);
        }
        const double silu = g / (1.0 + std::exp(-g));
        h[r] = silu * u;
        sens[r] = std::fabs(h[r]) + 1.1 * std::fabs(u) * ga + std::fabs(silu) * ua;
      }
      for (int c = 0; c < H; ++c) {
        double y = 0, s = 0;
        for (int r = 0; r < I; ++r) {
          y += b.down.exact[dw + static_cast<size_t>(c) * I + r] * h[r];
          s += std::fabs(b.down.exact[dw + static_cast<size_t>(c) * I + r]) * sens[r];
        }
        (*out)[static_cast<size_t>(t) * H + c] += weights[slot] * y;
        (*tol)[static_cast<size_t>(t) * H + c] +=
            1e-5 * weights[slot] * (s + 2 * std::fabs(y) * rmax);
      }
    }
  }
}

template <int E, int H, int I, class R, class W>
Block<E, H, I, R, W> make_block(std::mt19937 &rng, Regime regime) {
  Block<E, H, I, R, W> b;
  b.router = Weights<R>(router_rows<E, H>(rng, regime));
  b.gate_up = Weights<W>(random_floats(rng, static_cast<size_t>(E) * 2 * I * H,
                                       1.0f / std::sqrt(static_cast<float>(H))));
  b.down = Weights<W>(random_floats(rng, static_cast<size_t>(E) * H * I,
                                    1.0f / std::sqrt(static_cast<float>(I))));
  return b;
}

// Runs the kernel with 1 and 3 threads on n rows; checks the reference and determinism.
template <int E, int H, int I, class R, class W>
std::vector<RefRoute> run_moe(const Block<E, H, I, R, W> &b, const std::vector<float> &x,
                              int n, const char *what, bool softmax = false) {
  std::vector<double> want, tol;
  std::vector<RefRoute> routes;
  reference_moe(b, x, n, &want, &tol, &routes, softmax);
  for (const RefRoute &r : routes) // inputs must not sit on a routing decision boundary
    EXPECT_GT(r.margin, 1e-5) << what << ": pick another seed";
  std::vector<float> first;
  for (int threads : {1, 3}) {
    TestContext tc(threads, 0, H, I, E);
    std::vector<float> out(static_cast<size_t>(n) * H, kNaN);
    if (softmax)
      moe_softmax_top2<E, H, I>(tc.ctx, x.data(), n, b.router.data(), b.gate_up.data(),
                                b.down.data(), out.data());
    else
      moe_sparsemixer<E, H, I>(tc.ctx, x.data(), n, b.router.data(), b.gate_up.data(),
                               b.down.data(), kJitter, out.data());
    for (size_t i = 0; i < out.size(); ++i)
      EXPECT_NEAR(out[i], want[i], tol[i]) << what << ": row " << i / H << " lane " << i % H
                                           << ", threads " << threads;
    if (first.empty())
      first = out;
    else
      EXPECT_TRUE(same_bits(first, out)) << what << ": differs between 1 and 3 threads";
  }
  return routes;
}

template <class W> class Moe : public ::testing::Test {};
using WeightTypes = ::testing::Types<float, bf16, f16>;
TYPED_TEST_SUITE(Moe, WeightTypes, WeightTypeName);

TYPED_TEST(Moe, RandomRouterUsuallyOneExpertPerStage) {
  using W = TypeParam;
  std::mt19937 rng(101);
  const auto b = make_block<8, 64, 32, float, W>(rng, Regime::kRandom);
  bool one_kept = false;
  for (int n : {1, 7}) {
    const std::vector<float> x = random_floats(rng, n * 64, 1.0f, 0.5f);
    for (const RefRoute &r : run_moe(b, x, n, "random"))
      one_kept |= r.w1 == 1.0 && r.w2 == 1.0;
  }
  EXPECT_TRUE(one_kept) << "no row exercised the single-survivor case";
}

TYPED_TEST(Moe, CloseLogitsKeepSeveralExperts) {
  using W = TypeParam;
  std::mt19937 rng(102);
  const auto b = make_block<8, 64, 32, W, W>(rng, Regime::kClose); // router in W too
  bool several_kept = false;
  for (int n : {1, 7}) {
    const std::vector<float> x = random_floats(rng, n * 64, 1.0f, 0.5f);
    for (const RefRoute &r : run_moe(b, x, n, "close"))
      several_kept |= r.w1 < 0.9 && r.w2 < 0.9;
  }
  EXPECT_TRUE(several_kept) << "no row kept several experts in both stages";
}

TYPED_TEST(Moe, TiedExpertsFirstIndexWins) {
  using W = TypeParam;
  std::mt19937 rng(103);
  const auto b = make_block<8, 64, 32, float, W>(rng, Regime::kTie);
  const std::vector<float> x = random_floats(rng, 7 * 64, 1.0f, 0.5f);
  for (const RefRoute &r : run_moe(b, x, 7, "tie")) {
    EXPECT_EQ(r.i1, 3);
    EXPECT_EQ(r.i2, 5);
    EXPECT_EQ(r.w1, 0.5);
    EXPECT_EQ(r.w2, 1.0);
  }
}

TYPED_TEST(Moe, NanRatioKeepsTheExpert) {
  using W = TypeParam;
  std::mt19937 rng(104);
  const auto b = make_block<8, 64, 32, float, W>(rng, Regime::kNanRatio);
  const std::vector<float> x = random_floats(rng, 7 * 64, 1.0f, 0.5f);
  for (const RefRoute &r : run_moe(b, x, 7, "nan ratio")) {
    EXPECT_EQ(r.i1, 0);
    EXPECT_EQ(r.i2, 2);
    EXPECT_EQ(r.w1, 0.5);
    EXPECT_EQ(r.w2, 1.0);
  }
}

// Mixtral's routing through the same kernel: both weights of every row strictly between 0 and
// 1 and summing to one, which sparsemixer's routes (w = 1 for a single survivor) are not.
TYPED_TEST(Moe, SoftmaxTop2Routing) {
  using W = TypeParam;
  std::mt19937 rng(107);
  const auto b = make_block<8, 64, 32, float, W>(rng, Regime::kRandom);
  for (int n : {1, 7}) {
    const std::vector<float> x = random_floats(rng, n * 64, 1.0f, 0.5f);
    for (const RefRoute &r : run_moe(b, x, n, "softmax top-2", true)) {
      EXPECT_TRUE(r.w1 > 0.0 && r.w1 < 1.0 && r.w2 > 0.0) << r.w1 << " " << r.w2;
      EXPECT_NEAR(r.w1 + r.w2, 1.0, 1e-12);
    }
  }
  const auto c = make_block<5, 36, 20, W, W>(rng, Regime::kClose); // odd shapes, router in W
  for (int n : {1, 7})
    run_moe(c, random_floats(rng, n * 36, 1.0f, 0.5f), n, "softmax top-2, odd", true);
}

// Shapes with tails: E % 4 != 0, H % 8 != 0, I % 8 != 0.
TYPED_TEST(Moe, OddShapes) {
  using W = TypeParam;
  std::mt19937 rng(105);
  const auto b = make_block<5, 36, 20, float, W>(rng, Regime::kRandom);
  for (int n : {1, 7})
    run_moe(b, random_floats(rng, n * 36, 1.0f, 0.5f), n, "odd shapes");
  const auto c = make_block<5, 36, 20, W, W>(rng, Regime::kClose);
  for (int n : {1, 7})
    run_moe(c, random_floats(rng, n * 36, 1.0f, 0.5f), n, "odd shapes, close");
}

#if defined(__linux__)
// Copies of a tensor of E equal expert blocks in page-aligned memory; blocks can be made
// inaccessible, so that any read of them (not the kernel's business) faults.
template <class W> class GuardedExperts {
public:
  GuardedExperts(const std::vector<W> &data, int experts)
      : bytes_(data.size() * sizeof(W)), block_(bytes_ / experts) {
    mem_ = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem_ != MAP_FAILED)
      std::memcpy(mem_, data.data(), bytes_);
  }
  ~GuardedExperts() {
    if (mem_ != MAP_FAILED)
      munmap(mem_, bytes_);
  }
  bool ok() const {
    return mem_ != MAP_FAILED && block_ % static_cast<size_t>(sysconf(_SC_PAGESIZE)) == 0;
  }
  bool forbid(int expert) {
    return mprotect(static_cast<char *>(mem_) + expert * block_, block_, PROT_NONE) == 0;
  }
  const W *data() const { return static_cast<const W *>(mem_); }

private:
  size_t bytes_, block_;
  void *mem_;
};

// Only the selected experts are read: the others are mapped PROT_NONE (a read would crash
// the test). Decode (n = 1) and a 3-row chunk; the expected output still matches.
TYPED_TEST(Moe, ReadsOnlySelectedExperts) {
  using W = TypeParam;
  constexpr int E = 8, H = 64, I = 32; // expert blocks: 2*I*H and H*I weights, page multiples
  std::mt19937 rng(106);
  const auto b = make_block<E, H, I, float, W>(rng, Regime::kRandom);
  for (int n : {1, 3}) {
    const std::vector<float> x = random_floats(rng, n * H, 1.0f, 0.5f);
    std::vector<double> want, tol;
    std::vector<RefRoute> routes;
    reference_moe(b, x, n, &want, &tol, &routes);
    std::set<int> used;
    for (const RefRoute &r : routes)
      used.insert({r.i1, r.i2});
    GuardedExperts<W> gate_up(b.gate_up.stored, E), down(b.down.stored, E);
    if (!gate_up.ok() || !down.ok())
      GTEST_SKIP() << "expert blocks are not page multiples here";
    int forbidden = 0;
    for (int e = 0; e < E; ++e)
      if (!used.count(e)) {
        ASSERT_TRUE(gate_up.forbid(e) && down.forbid(e));
        ++forbidden;
      }
    ASSERT_GE(forbidden, E - 2 * n);
    for (int threads : {1, 3}) {
      TestContext tc(threads, 0, H, I, E);
      std::vector<float> out(static_cast<size_t>(n) * H, kNaN);
      moe_sparsemixer<E, H, I>(tc.ctx, x.data(), n, b.router.data(), gate_up.data(),
                               down.data(), kJitter, out.data());
      for (size_t i = 0; i < out.size(); ++i)
        ASSERT_NEAR(out[i], want[i], tol[i]) << "n=" << n << " lane " << i;
    }
  }
}
#endif

} // namespace
