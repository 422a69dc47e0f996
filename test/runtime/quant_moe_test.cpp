// quant_moe_test.cpp - moe_sparsemixer with quantized experts (gate_up and down of the same or of
// different block types, and mixed with a bf16 / f16 one) on the build's best SIMD path, and
// moe_softmax_top2_gelu (phixtral's biased gelu experts, float or quantized):
// against a double reference that follows the kernel's quantization of x and of the
// intermediate rows, decode and prompts (tokens grouped by expert, past a token block),
// 1 and 3 threads, prompt rows equal to decode rows, and page protection of the experts no
// token selected.
#include "quant_test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace {

using namespace phimoe_rt;
using namespace phimoe_rt_test;

const float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kJitter = 0.01f;
constexpr int H = 256, I = 256;

template <class W> constexpr bool is_block() { return detail::is_qblock<W>::value; }

// Weights of any storage type with their values (and |scaled| + |min| magnitudes) in double.
template <class W> struct AnyWeights {
  std::vector<W> stored;
  std::vector<double> value, mag;
};

// rows x k weights with a standard deviation of roughly sd.
template <class W> AnyWeights<W> make_weights(std::mt19937 &rng, int rows, int k, float sd) {
  AnyWeights<W> w;
  if constexpr (is_block<W>()) {
    const float scale = std::is_same<W, block_q8_0>::value || std::is_same<W, block_q8_0_x16>::value
                            ? sd / 74
                        : std::is_same<W, block_q4k>::value || std::is_same<W, block_q4k_x16>::value
                            ? sd / 8
                                                            : sd * 2;
    w.stored = random_blocks<W>(rng, static_cast<size_t>(rows) * k / block_values<W>(), scale);
    w.value = dequantized(w.stored, rows, k);
    w.mag = magnitudes(w.stored, rows, k);
  } else {
    const Weights<W> f(random_floats(rng, static_cast<size_t>(rows) * k, sd));
    w.stored = f.stored;
    w.value = f.exact;
    w.mag.resize(w.value.size());
    for (size_t i = 0; i < w.value.size(); ++i)
      w.mag[i] = std::fabs(w.value[i]);
  }
  return w;
}

template <class GU, class DW> struct Block {
  int experts;
  Weights<float> router;
  AnyWeights<GU> gate_up; // [E, 2I, H]; with gelu, fc1 [E, I, H]
  AnyWeights<DW> down;    // [E, H, I]
  bool gelu = false;      // phi-2 MLP experts: fc1 bias b1 [E, I], fc2 bias b2 [E, H]
  std::vector<float> b1, b2;
};

enum class Regime { kRandom, kClose };

template <class GU, class DW>
Block<GU, DW> make_block(std::mt19937 &rng, int E, Regime regime, bool gelu = false) {
  Block<GU, DW> b{E, {}, {}, {}, gelu, {}, {}};
  std::vector<float> r;
  if (regime == Regime::kRandom) {
    r = random_floats(rng, static_cast<size_t>(E) * H, 2.0f / std::sqrt(static_cast<float>(H)));
  } else { // a shared logit of ~4 plus +-0.04: several experts survive each stage
    r = random_floats(rng, static_cast<size_t>(E) * H, 0.004f);
    for (float &v : r)
      v += 8.0f / H;
  }
  b.router = Weights<float>(r);
  b.gate_up = make_weights<GU>(rng, E * (gelu ? 1 : 2) * I, H,
                               1.0f / std::sqrt(static_cast<float>(H)));
  b.down = make_weights<DW>(rng, E * H, I, 1.0f / std::sqrt(static_cast<float>(I)));
  if (gelu) {
    b.b1 = random_floats(rng, static_cast<size_t>(E) * I, 0.5f);
    b.b2 = random_floats(rng, static_cast<size_t>(E) * H, 0.5f);
  }
  return b;
}

// Smallest distance of a routing decision from its boundary: argmax gaps and |ratio - 2 eps|.
double route_margin(const std::vector<float> &s, const Route &r) {
  double margin = INFINITY;
  const int E = static_cast<int>(s.size());
  for (int stage = 0; stage < 2; ++stage) {
    const int top = stage == 0 ? r.i1 : r.i2;
    const float m = s[top];
    for (int j = 0; j < E; ++j) {
      if (j == top || (stage == 1 && j == r.i1))
        continue;
      margin = std::min(margin, std::fabs(static_cast<double>(m) - s[j]));
      const double ratio = (m - s[j]) / std::max<double>(std::fabs(s[j]), m);
      if (!std::isnan(ratio))
        margin = std::min(margin, std::fabs(ratio - 2.0 * kJitter));
    }
  }
  return margin;
}

double silu(double g) { return g / (1.0 + std::exp(-g)); }
double gelu_tanh(double z) {
  return 0.5 * z * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (z + 0.044715 * z * z * z)));
}

// Expected outputs and tolerances. The kernel quantizes x exactly as the scalar reference
// does, so gate and up are exact up to float rounding (1e-5 of their sums of |terms|); the
// intermediate rows h then carry an error rho (propagated through silu * up). With a
// quantized down projection the kernel quantizes its float h: the reference quantizes the
// exact h the same way and allows, per value, the scale's change (|q| rho_max / 127) and one
// step where h lies within its error of a rounding boundary.
template <class GU, class DW>
void reference(const Block<GU, DW> &b, const std::vector<float> &x, int n,
               std::vector<double> *out, std::vector<double> *tol, std::vector<Route> *routes,
               bool softmax = false) {
  const int E = b.experts;
  softmax = softmax || b.gelu;
  const size_t expert_rows = b.gelu ? I : 2 * I;
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
        s += xt[k] * b.router.exact[static_cast<size_t>(e) * H + k];
        a += std::fabs(xt[k] * b.router.exact[static_cast<size_t>(e) * H + k]);
      }
      logits[e] = static_cast<float>(s);
      rmax = std::max(rmax, a);
    }
    Route r{};
    switch (E) {
    case 4: r = softmax ? softmax_top2<4>(logits.data()) : sparsemixer<4>(logits.data(), kJitter);
      break;
    case 6: r = softmax ? softmax_top2<6>(logits.data()) : sparsemixer<6>(logits.data(), kJitter);
      break;
    case 8: r = softmax ? softmax_top2<8>(logits.data()) : sparsemixer<8>(logits.data(), kJitter);
      break;
    default: ADD_FAILURE() << "no routing instance for " << E << " experts";
    }
    if (softmax) { // the pair is decided by the gap between the second and the best of the rest
      double gap = INFINITY;
      for (int e = 0; e < E; ++e)
        if (e != r.i1 && e != r.i2)
          gap = std::min(gap, static_cast<double>(logits[r.i2]) - logits[e]);
      EXPECT_GT(gap, 1e-5) << "token " << t << ": pick another seed";
      EXPECT_NEAR(double(r.w1) + r.w2, 1.0, 1e-6);
    } else {
      EXPECT_GT(route_margin(logits, r), 1e-5) << "token " << t << ": pick another seed";
    }
    routes->push_back(r);

    std::vector<double> xin(H);
    if constexpr (is_block<GU>()) {
      const QuantRow<GU> q = quantize_row<GU>(xt, H);
      xin = q.value;
    } else {
      for (int k = 0; k < H; ++k)
        xin[k] = xt[k];
    }
    const int experts[2] = {r.i1, r.i2};
    const double weights[2] = {r.w1, r.w2};
    for (int slot = 0; slot < 2; ++slot) {
      const size_t gu = static_cast<size_t>(experts[slot]) * expert_rows * H;
      const size_t dw = static_cast<size_t>(experts[slot]) * H * I;
      std::vector<double> h(I), rho(I);
      for (int row = 0; row < I; ++row) {
        double g = 0, u = 0, ga = 0, ua = 0;
        for (int k = 0; k < H; ++k) {
          const size_t ig = gu + static_cast<size_t>(row) * H + k;
          g += b.gate_up.value[ig] * xin[k];
          ga += b.gate_up.mag[ig] * std::fabs(xin[k]);
          if (b.gelu)
            continue;
          const size_t iu = gu + static_cast<size_t>(I + row) * H + k;
          u += b.gate_up.value[iu] * xin[k];
          ua += b.gate_up.mag[iu] * std::fabs(xin[k]);
        }
        if (b.gelu) { // gelu_tanh's slope is below 1.2
          const double z = g + b.b1[static_cast<size_t>(experts[slot]) * I + row];
          h[row] = gelu_tanh(z);
          rho[row] = 1.2 * (1e-5 * ga + 2 * kFloatU * std::fabs(z)) +
                     4 * kFloatU * std::fabs(h[row]);
          continue;
        }
        h[row] = silu(g) * u;
        rho[row] = 1e-5 * (1.1 * std::fabs(u) * ga + std::fabs(silu(g)) * ua) +
                   4 * kFloatU * std::fabs(h[row]);
      }
      std::vector<double> hq(I), err(I);
      if constexpr (is_block<DW>()) {
        const int B = block_values<DW>();
        for (int b0 = 0; b0 < I; b0 += B) {
          double amax = 0, rho_max = 0;
          for (int i = b0; i < b0 + B; ++i) {
            amax = std::max(amax, std::fabs(h[i]));
            rho_max = std::max(rho_max, rho[i]);
          }
          const double d = amax / 127;
          for (int i = b0; i < b0 + B; ++i) {
            const double z = h[i] * 127 / amax;
            const double q = std::nearbyint(z);
            const double zeta = 1.5 * 127 * (rho[i] + std::fabs(h[i]) * rho_max / amax) / amax + 1e-4;
            const bool near = std::fabs(std::fabs(z - std::floor(z)) - 0.5) <= zeta;
            hq[i] = q * d;
            err[i] = std::fabs(q) * (1.5 * rho_max / 127 + d * 1e-6) + (near ? 1.01 * d : 0.0);
          }
        }
      } else {
        hq = h;
        err = rho;
      }
      for (int c = 0; c < H; ++c) {
        double y = 0, e = 0, s = 0;
        for (int row = 0; row < I; ++row) {
          const size_t id = dw + static_cast<size_t>(c) * I + row;
          y += b.down.value[id] * hq[row];
          e += std::fabs(b.down.value[id]) * err[row];
          s += b.down.mag[id] * std::fabs(hq[row]);
        }
        const double bias = b.gelu ? b.b2[static_cast<size_t>(experts[slot]) * H + c] : 0.0;
        (*out)[static_cast<size_t>(t) * H + c] += weights[slot] * (y + bias);
        (*tol)[static_cast<size_t>(t) * H + c] +=
            weights[slot] * (e + 1e-5 * s + 2 * std::fabs(y + bias) * 1e-5 * rmax +
                             4 * kFloatU * (std::fabs(y) + std::fabs(bias)));
      }
    }
  }
}

template <int E, class GU, class DW>
void call_moe(Context &ctx, const Block<GU, DW> &b, const GU *gate_up, const DW *down,
              const std::vector<float> &x, int n, float *out, bool softmax = false) {
  if (b.gelu)
    moe_softmax_top2_gelu<E, H, I>(ctx, x.data(), n, b.router.data(), gate_up, b.b1.data(),
                                   down, b.b2.data(), out);
  else if (softmax)
    moe_softmax_top2<E, H, I>(ctx, x.data(), n, b.router.data(), gate_up, down, out);
  else
    moe_sparsemixer<E, H, I>(ctx, x.data(), n, b.router.data(), gate_up, down, kJitter, out);
}

// Runs the kernel on n rows with 1 and 3 threads: the reference, thread independence, and
// (for a prompt) every row equal to decode of that row alone. Returns the routes.
template <int E, class GU, class DW>
std::vector<Route> run_moe(const Block<GU, DW> &b, const std::vector<float> &x, int n,
                           const char *what, bool softmax = false) {
  std::vector<double> want, tol;
  std::vector<Route> routes;
  reference(b, x, n, &want, &tol, &routes, softmax);
  std::vector<float> first;
  for (int threads : {1, 3}) {
    QuantContext qc(threads, n, std::max(H, I), H, I, E);
    std::vector<float> out(static_cast<size_t>(n) * H, kNaN);
    call_moe<E>(qc.ctx, b, b.gate_up.stored.data(), b.down.stored.data(), x, n, out.data(),
                softmax);
    for (size_t i = 0; i < out.size(); ++i)
      EXPECT_NEAR(out[i], want[i], tol[i]) << what << ": row " << i / H << " lane " << i % H
                                           << ", threads " << threads;
    if (first.empty())
      first = out;
    else
      EXPECT_TRUE(same_bits(first, out)) << what << ": differs between 1 and 3 threads";
  }
  if (n > 1) {
    QuantContext qc(2, 1, std::max(H, I), H, I, E);
    for (int t = 0; t < n; ++t) {
      const std::vector<float> xt(x.begin() + static_cast<size_t>(t) * H,
                                  x.begin() + static_cast<size_t>(t + 1) * H);
      std::vector<float> row(H, kNaN);
      call_moe<E>(qc.ctx, b, b.gate_up.stored.data(), b.down.stored.data(), xt, 1, row.data(),
                  softmax);
      const std::vector<float> prompt_row(first.begin() + static_cast<size_t>(t) * H,
                                          first.begin() + static_cast<size_t>(t + 1) * H);
      EXPECT_TRUE(same_bits(row, prompt_row)) << what << ": row " << t << " of " << n
                                              << ": prompt and decode differ";
    }
  }
  return routes;
}

template <class Pair> class QuantMoe : public ::testing::Test {};
struct PairName {
  template <class T> static std::string GetName(int) {
    auto name = [](auto *p) -> std::string {
      using W = std::remove_pointer_t<decltype(p)>;
      if constexpr (is_block<W>())
        return BlockName::GetName<W>(0);
      else
        return WeightTypeName::GetName<W>(0);
    };
    return name(static_cast<typename T::first_type *>(nullptr)) + "_" +
           name(static_cast<typename T::second_type *>(nullptr));
  }
};
using Pairs = ::testing::Types<std::pair<block_q4k, block_q4k>, std::pair<block_q6k, block_q6k>,
                               std::pair<block_q8_0, block_q8_0>, std::pair<block_q4k, block_q6k>,
                               std::pair<block_q8_0, block_q4k>, std::pair<bf16, block_q4k>,
                               std::pair<block_q6k, f16>, std::pair<block_q4k_x16, block_q4k_x16>,
                               std::pair<block_q4k_x16, block_q6k>,
                               std::pair<block_q8_0_x16, block_q8_0_x16>,
                               std::pair<block_q6k_x16, block_q6k_x16>>;
TYPED_TEST_SUITE(QuantMoe, Pairs, PairName);

TYPED_TEST(QuantMoe, DecodeAndShortPrompt) {
  using GU = typename TypeParam::first_type;
  using DW = typename TypeParam::second_type;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(501), xrng(511); // x apart: the routes do not depend on the weight types
  const auto b = make_block<GU, DW>(rng, 6, Regime::kRandom);
  for (int n : {1, 7})
    run_moe<6>(b, random_floats(xrng, static_cast<size_t>(n) * H, 1.0f, 0.5f), n, "random");
}

// 150 tokens over 4 experts: each expert's tokens span more than one token block.
TYPED_TEST(QuantMoe, LongPrompt) {
  using GU = typename TypeParam::first_type;
  using DW = typename TypeParam::second_type;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(502), xrng(512);
  const auto b = make_block<GU, DW>(rng, 4, Regime::kRandom);
  const std::vector<Route> routes =
      run_moe<4>(b, random_floats(xrng, 150 * H, 1.0f, 0.5f), 150, "long prompt");
  int most = 0;
  for (int e = 0; e < 4; ++e) {
    int count = 0;
    for (const Route &r : routes)
      count += r.i1 == e || r.i2 == e;
    most = std::max(most, count);
  }
  EXPECT_GT(most, 64) << "no expert had more than one token block";
}

// Mixtral's softmax top-2 routing through the same kernel: decode, a short prompt, and 150
// tokens (each expert's tokens over more than one token block).
TYPED_TEST(QuantMoe, SoftmaxTop2Routing) {
  using GU = typename TypeParam::first_type;
  using DW = typename TypeParam::second_type;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(504), xrng(514);
  const auto b = make_block<GU, DW>(rng, 8, Regime::kRandom);
  for (int n : {1, 7, 150}) {
    const auto routes = run_moe<8>(
        b, random_floats(xrng, static_cast<size_t>(n) * H, 1.0f, 0.5f), n, "softmax", true);
    for (const Route &r : routes)
      ASSERT_TRUE(r.w1 >= r.w2 && r.w2 > 0.0f) << r.w1 << " " << r.w2;
  }
}

// Routing weights below 1 (several experts kept in both stages) scale the experts.
TYPED_TEST(QuantMoe, CloseLogitsWeightTheExperts) {
  using GU = typename TypeParam::first_type;
  using DW = typename TypeParam::second_type;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(503), xrng(513);
  const auto b = make_block<GU, DW>(rng, 6, Regime::kClose);
  bool weighted = false;
  for (int n : {1, 7})
    for (const Route &r :
         run_moe<6>(b, random_floats(xrng, static_cast<size_t>(n) * H, 1.0f, 0.5f), n, "close"))
      weighted |= r.w1 < 0.9f && r.w2 < 0.9f && r.w1 != r.w2;
  EXPECT_TRUE(weighted) << "no row had two different weights below 1";
}

// phixtral's experts (fc2 · gelu_tanh(fc1 · x + b1) + b2, softmax top-2 routing) on the float
// path (moe_float) and the quantized one: decode, a short prompt and 150 tokens.
template <class Pair> class GeluMoe : public ::testing::Test {};
using GeluPairs = ::testing::Types<std::pair<float, float>, std::pair<bf16, f16>,
                                   std::pair<block_q4k, block_q6k>,
                                   std::pair<block_q8_0, block_q8_0>,
                                   std::pair<block_q4k_x16, block_q4k_x16>,
                                   std::pair<block_q6k_x16, block_q8_0_x16>>;
TYPED_TEST_SUITE(GeluMoe, GeluPairs, PairName);

TYPED_TEST(GeluMoe, BiasedGeluExperts) {
  using GU = typename TypeParam::first_type;
  using DW = typename TypeParam::second_type;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(505), xrng(515);
  const auto b = make_block<GU, DW>(rng, 4, Regime::kRandom, /*gelu=*/true);
  for (int n : {1, 7, 150}) {
    const auto routes =
        run_moe<4>(b, random_floats(xrng, static_cast<size_t>(n) * H, 1.0f, 0.5f), n, "gelu");
    for (const Route &r : routes)
      ASSERT_TRUE(r.w1 >= r.w2 && r.w2 > 0.0f) << r.w1 << " " << r.w2;
  }
}

// The biases are applied: without them the outputs move by more than the tolerance.
TYPED_TEST(GeluMoe, BiasesMatter) {
  using GU = typename TypeParam::first_type;
  using DW = typename TypeParam::second_type;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(507), xrng(517);
  auto b = make_block<GU, DW>(rng, 4, Regime::kRandom, /*gelu=*/true);
  const std::vector<float> x = random_floats(xrng, 3 * H, 1.0f, 0.5f);
  QuantContext qc(2, 3, std::max(H, I), H, I, 4);
  std::vector<float> with(3 * H, kNaN), without(3 * H, kNaN);
  call_moe<4>(qc.ctx, b, b.gate_up.stored.data(), b.down.stored.data(), x, 3, with.data());
  for (auto *bias : {&b.b1, &b.b2}) {
    std::vector<float> saved = *bias;
    std::fill(bias->begin(), bias->end(), 0.0f);
    call_moe<4>(qc.ctx, b, b.gate_up.stored.data(), b.down.stored.data(), x, 3, without.data());
    *bias = saved;
    double moved = 0;
    for (size_t i = 0; i < with.size(); ++i)
      moved = std::max(moved, static_cast<double>(std::fabs(with[i] - without[i])));
    EXPECT_GT(moved, 0.05) << (bias == &b.b1 ? "fc1" : "fc2") << " bias had no effect";
  }
}

TYPED_TEST(QuantMoe, TooSmallWorkspaceGivesNan) {
  using GU = typename TypeParam::first_type;
  using DW = typename TypeParam::second_type;
  REQUIRE_TARGET_CPU();
  std::mt19937 rng(504);
  const auto b = make_block<GU, DW>(rng, 4, Regime::kRandom);
  const std::vector<float> x = random_floats(rng, 5 * H, 1.0f, 0.5f);
  QuantContext qc(2, 4, std::max(H, I), H, I, 4); // buffers for 4 rows, called with 5
  std::vector<float> out(5 * H, 0.0f);
  call_moe<4>(qc.ctx, b, b.gate_up.stored.data(), b.down.stored.data(), x, 5, out.data());
  for (float v : out)
    ASSERT_TRUE(std::isnan(v));
}

TEST(QuantMoeWork, RuntimeSizesCoverTheLayout) {
  for (int rows : {1, 2, 7, 512})
    for (int inter : {256, 6400})
      for (int experts : {2, 16}) {
        const detail::MoeWork w(nullptr, rows, inter, experts, quantized_row_bytes(inter));
        EXPECT_LE(w.bytes, moe_work_bytes(rows, inter, experts))
            << rows << " " << inter << " " << experts;
      }
}

#if defined(__linux__)
// A copy of an [E, rows, k] weight tensor in page-aligned memory whose experts' interior pages
// can be made inaccessible (any read of them faults).
template <class W> class GuardedExperts {
public:
  GuardedExperts(const std::vector<W> &data, int experts)
      : bytes_(data.size() * sizeof(W)), expert_bytes_(bytes_ / experts) {
    mem_ = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem_ != MAP_FAILED)
      std::memcpy(mem_, data.data(), bytes_);
  }
  ~GuardedExperts() {
    if (mem_ != MAP_FAILED)
      munmap(mem_, bytes_);
  }
  bool ok() const { return mem_ != MAP_FAILED; }
  // Protects the pages that lie entirely inside expert e; returns the bytes protected.
  size_t forbid(int e) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t begin = (e * expert_bytes_ + page - 1) / page * page;
    const size_t end = (e + 1) * expert_bytes_ / page * page;
    if (end <= begin)
      return 0;
    return mprotect(static_cast<char *>(mem_) + begin, end - begin, PROT_NONE) == 0 ? end - begin
                                                                                  : 0;
  }
  const W *data() const { return static_cast<const W *>(mem_); }
  size_t expert_bytes() const { return expert_bytes_; }

private:
  size_t bytes_, expert_bytes_;
  void *mem_;
};

// Only the selected experts are read: the pages of the others are PROT_NONE. Decode and a
// 3-row prompt; the output still matches the unguarded run.
TYPED_TEST(QuantMoe, ReadsOnlySelectedExperts) {
  using GU = typename TypeParam::first_type;
  using DW = typename TypeParam::second_type;
  REQUIRE_TARGET_CPU();
  constexpr int E = 8;
  std::mt19937 rng(506), xrng(516);
  const auto b = make_block<GU, DW>(rng, E, Regime::kRandom);
  for (int n : {1, 3}) {
    const std::vector<float> x = random_floats(xrng, static_cast<size_t>(n) * H, 1.0f, 0.5f);
    std::vector<float> want(static_cast<size_t>(n) * H, kNaN);
    std::set<int> used;
    {
      QuantContext qc(1, n, std::max(H, I), H, I, E);
      call_moe<E>(qc.ctx, b, b.gate_up.stored.data(), b.down.stored.data(), x, n, want.data());
      std::vector<double> ref, tol;
      std::vector<Route> routes;
      reference(b, x, n, &ref, &tol, &routes);
      for (const Route &r : routes)
        used.insert({r.i1, r.i2});
    }
    GuardedExperts<GU> gate_up(b.gate_up.stored, E);
    GuardedExperts<DW> down(b.down.stored, E);
    ASSERT_TRUE(gate_up.ok() && down.ok());
    int forbidden = 0;
    for (int e = 0; e < E; ++e)
      if (!used.count(e)) {
        // at least 3/4 of each unselected expert's bytes are protected
        ASSERT_GE(4 * gate_up.forbid(e), 3 * gate_up.expert_bytes());
        ASSERT_GE(4 * down.forbid(e), 3 * down.expert_bytes());
        ++forbidden;
      }
    ASSERT_GE(forbidden, E - 2 * n);
    for (int threads : {1, 3}) {
      QuantContext qc(threads, n, std::max(H, I), H, I, E);
      std::vector<float> out(static_cast<size_t>(n) * H, kNaN);
      call_moe<E>(qc.ctx, b, gate_up.data(), down.data(), x, n, out.data());
      ASSERT_TRUE(same_bits(out, want)) << "n=" << n << " threads=" << threads;
    }
  }
}
#endif

} // namespace
