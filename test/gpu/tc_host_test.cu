// tc_host_test.cu - the host-side parts of the tensor-core GEMM and the grouped-expert MoE
// (gemm_tc.cuh, moe_grouped.cuh) checked on the CPU: bf16 rounding and the split of x, the
// weight tile loaders, the mma.m16n8k16 fragment coordinates against the PTX ISA's tables, the
// block tile's coverage, the gate-up column pairing, and the expert bucketing / tile plan.
// Built by nvcc, run without a GPU: it calls no CUDA runtime function (test/gpu/CMakeLists.txt).
#include "phimoe_cuda/kernels.cuh"
#include "phimoe_rt/quant.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

using namespace phimoe_cuda;
using namespace phimoe_cuda::detail;
using phimoe_rt::bf16;
using phimoe_rt::block_q8_0;

namespace {

int failures = 0, checks = 0;
std::mt19937 rng(20261205);

void expect(bool ok, const char *what, long long a = 0, long long b = 0) {
  ++checks;
  if (!ok) {
    if (++failures <= 20)
      std::printf("FAIL %s (%lld, %lld)\n", what, a, b);
  }
}

float random_float(float scale) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  return d(rng) * scale;
}

// A float from random bits: any sign, exponent and mantissa (nan and inf included).
float random_bits_float() {
  const uint32_t u = rng();
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

void test_bf16_round() {
  for (int i = 0; i < 200000; ++i) {
    const float f = i < 100000 ? random_bits_float() : random_float(std::ldexp(1.0f, i % 60 - 30));
    const uint16_t got = tc_bf16_round(f);
    if (std::isnan(f)) {
      expect(std::isnan(tc_bf16_value(got)), "bf16_round keeps nan");
      continue;
    }
    expect(got == phimoe_rt::float_to_bf16(f).bits, "bf16_round == float_to_bf16", got,
           phimoe_rt::float_to_bf16(f).bits);
  }
  // Ties to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7.
  expect(tc_bf16_round(1.0f + std::ldexp(1.0f, -8)) == 0x3f80, "bf16 tie to even (down)");
  expect(tc_bf16_round(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82, "bf16 tie to even (up)");
}

void test_f16_value() {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float want = phimoe_rt::f16_to_float(static_cast<uint16_t>(h));
    const float got = tc_f16_value(static_cast<uint16_t>(h));
    if (std::isnan(want))
      expect(std::isnan(got), "f16 nan", h);
    else
      expect(tc_float_bits(got) == tc_float_bits(want), "f16_value == f16_to_float", h);
  }
}

void test_split() {
  double worst2 = 0.0;
  for (int i = 0; i < 200000; ++i) {
    const float x = random_float(std::ldexp(1.0f, i % 80 - 40));
    uint16_t two[2], three[3];
    tc_split<2>(x, two);
    tc_split<3>(x, three);
    expect(two[0] == tc_bf16_round(x), "split: the first term is bf16(x)");
    const double sum2 = static_cast<double>(tc_bf16_value(two[0])) + tc_bf16_value(two[1]);
    const double sum3 = static_cast<double>(tc_bf16_value(three[0])) + tc_bf16_value(three[1]) +
                        tc_bf16_value(three[2]);
    if (x != 0.0f)
      worst2 = std::max(worst2, std::fabs(sum2 - x) / std::fabs(x));
    expect(std::fabs(sum2 - x) <= std::ldexp(std::fabs(static_cast<double>(x)), -16),
           "split<2>: |x - hi - lo| <= 2^-16 |x|");
    expect(sum3 == static_cast<double>(x), "split<3> is exact");
  }
  std::printf("split<2>: worst relative error %.3g (bound 2^-16 = %.3g)\n", worst2,
              std::ldexp(1.0, -16));
  uint16_t p[2];
  tc_split<2>(INFINITY, p);
  expect(tc_bf16_value(p[0]) == INFINITY && p[1] == 0, "split: inf, then 0");
  tc_split<2>(NAN, p);
  expect(std::isnan(tc_bf16_value(p[0])) && p[1] == 0, "split: nan, then 0");
}

uint16_t unit_half(const uint4 &u, int j) {
  const uint32_t words[4] = {u.x, u.y, u.z, u.w};
  return static_cast<uint16_t>(words[j / 2] >> (16 * (j % 2)));
}

// TcLoad<bf16>: the vector path (K % 8 == 0) and the element path with tails (K % 8 != 0).
void test_load_bf16(int R, int K) {
  std::vector<uint16_t> w(static_cast<size_t>(R) * K + 8); // 16-byte aligned (vector storage)
  for (auto &b : w)
    b = phimoe_rt::float_to_bf16(random_float(0.3f)).bits;
  const bf16 *pw = reinterpret_cast<const bf16 *>(w.data());
  for (int r = 0; r < R; ++r)
    for (int k0 = 0; k0 < K; k0 += 8) {
      const uint4 u = TcLoad<bf16>::unit(pw, R, K, r, k0);
      for (int j = 0; j < 8; ++j)
        expect(unit_half(u, j) == (k0 + j < K ? w[static_cast<size_t>(r) * K + k0 + j] : 0),
               "TcLoad<bf16>::unit", r, k0 + j);
    }
  expect(TcLoad<bf16>::scale(pw, R, K, 0, 0) == 1.0f, "TcLoad<bf16>::scale is 1");
}

// TcLoad<q8_0> on the CUDA split layout: unit * scale == the dequantized value, exactly.
void test_load_q8_0(int R, int K) {
  const size_t blocks = static_cast<size_t>(R) * K / 32;
  std::vector<float> x(static_cast<size_t>(R) * K), values(x.size());
  for (float &v : x)
    v = random_float(0.2f);
  std::vector<block_q8_0> q(blocks);
  for (int r = 0; r < R; ++r)
    phimoe_rt::quantize_row_q8_0(x.data() + static_cast<size_t>(r) * K, q.data() + r * K / 32, K);
  for (int r = 0; r < R; ++r)
    phimoe_rt::dequantize_row_q8_0(q.data() + r * K / 32, values.data() + static_cast<size_t>(r) * K,
                                   K);
  std::vector<uint8_t> bytes(blocks * sizeof(block_q8_0));
  for (size_t b = 0; b < blocks; ++b) {
    std::memcpy(bytes.data() + b * 32, q[b].qs, 32);
    std::memcpy(bytes.data() + blocks * 32 + b * 2, &q[b].d, 2);
  }
  const block_q8_0 *pw = reinterpret_cast<const block_q8_0 *>(bytes.data());
  for (int r = 0; r < R; ++r)
    for (int k0 = 0; k0 < K; k0 += kTcBK) {
      const float d = TcLoad<block_q8_0>::scale(pw, R, K, r, k0);
      for (int ku = 0; ku < kTcBK; ku += 8) {
        const uint4 u = TcLoad<block_q8_0>::unit(pw, R, K, r, k0 + ku);
        for (int j = 0; j < 8; ++j) {
          const size_t i = static_cast<size_t>(r) * K + k0 + ku + j;
          const float quant = tc_bf16_value(unit_half(u, j));
          expect(quant == static_cast<float>(q[i / 32].qs[i % 32]), "q8_0 unit: the quant", r,
                 k0 + ku + j);
          expect(quant * d == values[i], "q8_0 unit * scale == dequantized", r, k0 + ku + j);
        }
      }
    }
}

// The fragment coordinates against the PTX ISA's tables for mma.m16n8k16 .bf16 (element i of
// a lane: A a0..a7, B b0..b3, C c0..c3, two 16-bit elements per 32-bit register, low first).
void test_fragments() {
  for (int lane = 0; lane < 32; ++lane) {
    const int group = lane >> 2, tig = lane % 4;
    for (int i = 0; i < 8; ++i) {
      const int row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
      const int col = tig * 2 + (i & 1) + (i >= 4 ? 8 : 0);
      const int reg = i / 2, half = i % 2; // we load a register as 2 consecutive k of one row
      expect(tc_a_row(lane, reg) == row, "A fragment row", lane, i);
      expect(tc_a_col(lane, reg) + half == col, "A fragment col", lane, i);
    }
    for (int i = 0; i < 4; ++i) {
      const int krow = tig * 2 + (i & 1) + (i >= 2 ? 8 : 0), ncol = group;
      expect(tc_b_k(lane, i / 2) + i % 2 == krow, "B fragment k", lane, i);
      expect(tc_b_n(lane) == ncol, "B fragment n", lane, i);
    }
    for (int i = 0; i < 4; ++i) {
      expect(tc_c_row(lane, i) == (i < 2 ? group : group + 8), "C fragment row", lane, i);
      expect(tc_c_col(lane, i) == tig * 2 + (i & 1), "C fragment col", lane, i);
    }
  }
  // Shared-memory bank of every 32-bit fragment load: 32 distinct banks per warp and register.
  for (int j = 0; j < 4; ++j) {
    unsigned banks = 0;
    for (int lane = 0; lane < 32; ++lane)
      banks |= 1u << ((tc_a_row(lane, j) * kTcStride + tc_a_col(lane, j)) / 2 % 32);
    expect(banks == 0xffffffffu, "A fragment loads: no bank conflicts", j);
  }
  for (int j = 0; j < 2; ++j) {
    unsigned banks = 0;
    for (int lane = 0; lane < 32; ++lane)
      banks |= 1u << ((tc_b_n(lane) * kTcStride + tc_b_k(lane, j)) / 2 % 32);
    expect(banks == 0xffffffffu, "B fragment loads: no bank conflicts", j);
  }
  static_assert(kTcStride % 8 == 0, "16-byte unit stores need rows of a multiple of 16 bytes");
}

// The 4 warps' accumulators cover the 64 x 64 block tile exactly once.
void test_tile_coverage() {
  std::vector<int> seen(kTcBM * kTcBN, 0);
  for (int warp = 0; warp < kTcThreads / 32; ++warp)
    for (int lane = 0; lane < 32; ++lane)
      for (int mi = 0; mi < 2; ++mi)
        for (int ni = 0; ni < 4; ++ni)
          for (int c = 0; c < 4; ++c) {
            const int m = tc_tile_row(warp, lane, mi, c), n = tc_tile_col(warp, lane, ni, c);
            expect(m >= 0 && m < kTcBM && n >= 0 && n < kTcBN, "tile coordinate in range", m, n);
            if (m >= 0 && m < kTcBM && n >= 0 && n < kTcBN)
              ++seen[m * kTcBN + n];
          }
  expect(std::all_of(seen.begin(), seen.end(), [](int s) { return s == 1; }),
         "the accumulators cover the block tile once");
}

// Gate-up tile: 32 gate and 32 up columns, each output column once of each, and the up row of
// the accumulator (mi, ni + 2, c) belongs to the same output column as the gate row of (mi, ni, c).
void test_gate_up_columns() {
  std::vector<int> gate(kGateUpCols, 0), up(kGateUpCols, 0);
  for (int s = 0; s < kTcBN; ++s) {
    const int c = moe_gate_up_col(s);
    expect(c >= 0 && c < kGateUpCols, "gate-up column in range", s, c);
    if (c >= 0 && c < kGateUpCols)
      ++(moe_gate_up_is_up(s) ? up : gate)[c];
  }
  expect(std::all_of(gate.begin(), gate.end(), [](int s) { return s == 1; }) &&
             std::all_of(up.begin(), up.end(), [](int s) { return s == 1; }),
         "gate-up: every output column has one gate and one up row");
  for (int warp = 0; warp < 4; ++warp)
    for (int lane = 0; lane < 32; ++lane)
      for (int ni = 0; ni < 2; ++ni)
        for (int c = 0; c < 4; ++c) {
          const int g = tc_tile_col(warp, lane, ni, c), u = tc_tile_col(warp, lane, ni + 2, c);
          expect(!moe_gate_up_is_up(g) && moe_gate_up_is_up(u), "gate-up: tiles 0,1 gate, 2,3 up",
                 g, u);
          expect(moe_gate_up_col(g) == moe_gate_up_col(u), "gate-up: g and u of one column", g, u);
        }
}

// Bucketing: counts, offsets, pairs in increasing order per expert, tiles within the grid's
// worst case, and every grid tile mapped to one (expert, row tile) of a nonempty bucket.
void check_buckets(const std::vector<DeviceRoute> &routes, int E, const char *what) {
  const int n = static_cast<int>(routes.size());
  std::vector<int> plan(moe_plan_ints(E)), pairs(2 * n, -1);
  moe_bucket_serial(routes.data(), n, E, kTcBM, plan.data(), pairs.data());
  const int *counts = plan.data(), *offsets = plan.data() + E, *tile_start = plan.data() + 2 * E;
  int total = 0;
  for (int e = 0; e < E; ++e) {
    expect(offsets[e] == total, what, e, offsets[e]);
    total += counts[e];
    for (int i = 0; i < counts[e]; ++i) {
      const int p = pairs[offsets[e] + i];
      expect(p >= 0 && p < 2 * n && moe_pair_expert(routes[p >> 1], p & 1) == e,
             "bucket holds its expert's pairs", e, p);
      if (i > 0)
        expect(pairs[offsets[e] + i - 1] < p, "bucket in increasing pair order", e, p);
    }
  }
  expect(total == 2 * n, "every pair bucketed", total, 2 * n);
  std::vector<int> sorted = pairs;
  std::sort(sorted.begin(), sorted.end());
  for (int p = 0; p < 2 * n; ++p)
    expect(sorted[p] == p, "each pair once", p, sorted[p]);
  const int tiles = moe_max_tiles(n, E, kTcBM);
  expect(tile_start[E] <= tiles, "tiles within the grid", tile_start[E], tiles);
  std::vector<int> covered(2 * n, 0);
  for (int b = 0; b < tiles + 3; ++b) {
    int e = -1, rt = -1;
    const bool found = moe_find_tile(tile_start, E, b, &e, &rt);
    expect(found == (b < tile_start[E]), "find_tile: exactly the planned tiles", b, found);
    if (!found)
      continue;
    expect(e >= 0 && e < E && rt >= 0 && rt * kTcBM < counts[e], "find_tile: a nonempty tile", e,
           rt);
    for (int m = 0; m < kTcBM && rt * kTcBM + m < counts[e]; ++m)
      ++covered[offsets[e] + rt * kTcBM + m];
  }
  expect(std::all_of(covered.begin(), covered.end(), [](int c) { return c == 1; }),
         "the tiles cover every bucket position once");
}

template <int E> phimoe_rt::Route random_route(int favour) {
  float logits[E];
  for (float &l : logits)
    l = random_float(3.0f);
  if (favour >= 0)
    logits[favour] = 1000.0f;
  return phimoe_rt::sparsemixer<E>(logits, 0.01f);
}

template <int E> void test_buckets() {
  for (int n : {1, 9, 31, 32, 33, 100, 512, 515}) {
    for (int mode = 0; mode < 3; ++mode) { // random routes, one favoured expert, one shunned
      std::vector<DeviceRoute> routes(n);
      for (auto &r : routes) {
        const phimoe_rt::Route route = random_route<E>(mode == 1 ? E / 2 : -1);
        r = DeviceRoute{route.i1, route.i2, route.w1, route.w2};
        if (mode == 2 && (r.i1 == 0 || r.i2 == 0)) // expert 0 gets no rows
          (r.i1 == 0 ? r.i1 : r.i2) = (r.i1 == 1 || r.i2 == 1) ? 2 : 1;
      }
      check_buckets(routes, E, "bucket offsets are the prefix sums");
    }
  }
  // The worst case of the grid: every expert holds one pair more than a multiple of the tile.
  std::vector<DeviceRoute> routes;
  for (int t = 0; t < (kTcBM + 1) * E / 2; ++t)
    routes.push_back(DeviceRoute{(2 * t) % E, (2 * t + 1) % E, 0.5f, 0.5f});
  check_buckets(routes, E, "worst case");
  std::vector<int> plan(moe_plan_ints(E)), pairs(2 * routes.size());
  moe_bucket_serial(routes.data(), static_cast<int>(routes.size()), E, kTcBM, plan.data(),
                    pairs.data());
  expect(plan[3 * E] == moe_max_tiles(static_cast<int>(routes.size()), E, kTcBM),
         "the worst case fills the grid", plan[3 * E]);
}

} // namespace

int main() {
  test_bf16_round();
  test_f16_value();
  test_split();
  test_load_bf16(5, 64);
  test_load_bf16(7, 37);
  test_load_bf16(3, 4);
  test_load_q8_0(6, 96);
  test_load_q8_0(3, 4096);
  test_fragments();
  test_tile_coverage();
  test_gate_up_columns();
  test_buckets<16>();
  test_buckets<4>();
  test_buckets<6>();
  std::printf("%s: %d of %d checks failed\n", failures ? "FAILED" : "OK", failures, checks);
  return failures ? 1 : 0;
}
