// tc_host_test.cu - the host-side parts of the tensor-core GEMM and the grouped-expert MoE
// (gemm_tc.cuh, moe_grouped.cuh) checked on the CPU: bf16 rounding and the split of x, the
// weight tile loaders, the mma.m16n8k16 fragment coordinates against the PTX ISA's tables, the
// block tile's coverage, the gate-up column pairing, and the expert bucketing / tile plan.
// Built by nvcc, run without a GPU: it calls no CUDA runtime function (test/gpu/CMakeLists.txt).
#include "phimoe_cuda/kernels.cuh"
#include "phimoe_rt/quant.h"
#include "test_weights.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

// q4_K and q6_K through the generic loader (values rounded to bf16): what adding a storage to the
// tensor-core path takes. linear() does not use them yet (see docs/cuda.md).
namespace phimoe_cuda::detail {
template <> struct TcLoad<phimoe_rt::block_q4k> : TcLoadViaElem<phimoe_rt::block_q4k> {};
template <> struct TcLoad<phimoe_rt::block_q6k> : TcLoadViaElem<phimoe_rt::block_q6k> {};
} // namespace phimoe_cuda::detail

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
    phimoe_rt::dequantize_row_q8_0(q.data() + r * K / 32,
                                   values.data() + static_cast<size_t>(r) * K, K);
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

// ---- a block's whole data flow on the CPU ---------------------------------------------------
// The kernels' phases (tc_gemm_rows / moe_*_rows, tc_load_tile, the fragment registers,
// tc_accumulate, the stores) run here as they do on the device, thread by thread; only mma.sync
// is emulated, from the PTX ISA's fragment tables (spec_a/b/c, written apart from the header's
// tc_a_row & co.), with the product summed in double.

void spec_a(int lane, int i, int &row, int &col) {
  const int group = lane >> 2, tig = lane % 4;
  row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
  col = tig * 2 + (i & 1) + (i >= 4 ? 8 : 0);
}
void spec_b(int lane, int i, int &k, int &n) {
  k = (lane % 4) * 2 + (i & 1) + (i >= 2 ? 8 : 0);
  n = lane >> 2;
}
void spec_c(int lane, int i, int &row, int &col) {
  row = i < 2 ? lane >> 2 : (lane >> 2) + 8;
  col = (lane % 4) * 2 + (i & 1);
}

using Frag = float[2][4][4];

// mma.m16n8k16 of warp `warp`, MMA tile (mi, ni), term t, k step ks: part += A . B.
template <int Terms>
void emu_mma(const TcShared<Terms> &s, int warp, int t, int mi, int ni, int ks, Frag *part) {
  const int wm = warp >> 1, wn = warp & 1;
  double A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 8; ++i) {
      int row, col;
      spec_a(lane, i, row, col);
      const uint32_t reg = tc_a_reg(s, t, wm * 32 + mi * 16, ks, lane, i / 2);
      A[row][col] = tc_bf16_value(static_cast<uint16_t>(reg >> (16 * (i % 2))));
    }
    for (int i = 0; i < 4; ++i) {
      int k, n;
      spec_b(lane, i, k, n);
      const uint32_t reg = tc_b_reg(s, wn * 32 + ni * 8, ks, lane, i / 2);
      B[k][n] = tc_bf16_value(static_cast<uint16_t>(reg >> (16 * (i % 2))));
    }
  }
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) {
      int row, col;
      spec_c(lane, i, row, col);
      double d = part[lane][mi][ni][i];
      for (int k = 0; k < 16; ++k)
        d += A[row][k] * B[k][col];
      part[lane][mi][ni][i] = static_cast<float>(d);
    }
}

template <class W, long long R, int K, int Terms>
void emu_mainloop(TcShared<Terms> &s, const float *x, const W *w, Frag (&acc)[4][32]) {
  static Frag part[4][32];
  for (int warp = 0; warp < 4; ++warp)
    for (int lane = 0; lane < 32; ++lane)
      tc_zero(acc[warp][lane]);
  for (int k0 = 0; k0 < K; k0 += kTcBK) {
    for (int tid = 0; tid < kTcThreads; ++tid)
      tc_load_tile<W, R, K, Terms>(s, x, w, k0, tid);
    for (int warp = 0; warp < 4; ++warp) {
      for (int lane = 0; lane < 32; ++lane)
        tc_zero(part[warp][lane]);
      for (int ks = 0; ks < kTcBK; ks += 16)
        for (int t = Terms - 1; t >= 0; --t)
          for (int mi = 0; mi < 2; ++mi)
            for (int ni = 0; ni < 4; ++ni)
              emu_mma(s, warp, t, mi, ni, ks, part[warp]);
      for (int lane = 0; lane < 32; ++lane)
        tc_accumulate<W>(s, warp, lane, part[warp][lane], acc[warp][lane]);
    }
  }
}

// A [rows, k] weight as the CUDA pack stores it, and the values it stands for.
template <class W> struct HostWeight {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
  const W *ptr() const { return reinterpret_cast<const W *>(bytes.data()); }
};
template <class W> HostWeight<W> host_weight(size_t rows, size_t k) {
  std::vector<float> x(rows * k);
  for (float &v : x)
    v = random_float(0.2f);
  phimoe_test::Weight<W> stored = phimoe_test::store_weight<W>(x, rows, k);
  HostWeight<W> w{std::move(stored.bytes), std::move(stored.values)};
  if constexpr (std::is_base_of<TcLoadViaElem<W>, TcLoad<W>>::value)
    for (float &v : w.values) // what the generic loader puts in the tiles
      v = tc_bf16_value(tc_bf16_round(v));
  return w;
}

double max_rel_error(const std::vector<float> &got, const std::vector<double> &want) {
  double err = 0.0, scale = 1e-30;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::fabs(want[i]));
    const double e = std::fabs(got[i] - want[i]);
    err = std::isnan(got[i]) ? INFINITY : std::max(err, e);
  }
  return err / scale;
}

void report(const char *what, double rel, double tol) {
  expect(rel <= tol, what);
  std::printf("%s %-52s max|d|/max|want| = %.3g (tol %.3g)\n", rel <= tol ? "PASS" : "FAIL", what,
              rel, tol);
}

// gemm_tc_kernel's blocks, emulated: out = x . W^T + bias against a double reference.
template <int N, int K, class W, int Terms = kTcXTerms>
void emu_gemm(const char *name, int n, double tol) {
  HostWeight<W> w = host_weight<W>(N, K);
  std::vector<float> x(static_cast<size_t>(n) * K), bias(N), out(static_cast<size_t>(n) * N, NAN);
  for (float &v : x)
    v = random_float(1.0f);
  for (float &v : bias)
    v = random_float(0.1f);
  static TcShared<Terms> s;
  static Frag acc[4][32];
  for (int by = 0; by * kTcBM < n; ++by)
    for (int bx = 0; bx * kTcBN < N; ++bx) {
      for (int tid = 0; tid < kTcThreads; ++tid)
        tc_gemm_rows(s.a_rows, s.b_rows, n, N, by * kTcBM, bx * kTcBN, tid);
      emu_mainloop<W, N, K, Terms>(s, x.data(), w.ptr(), acc);
      for (int warp = 0; warp < 4; ++warp)
        for (int lane = 0; lane < 32; ++lane)
          tc_gemm_store<N>(acc[warp][lane], warp, lane, n, by * kTcBM, bx * kTcBN, bias.data(),
                           out.data());
    }
  std::vector<double> want(out.size());
  for (int t = 0; t < n; ++t)
    for (int r = 0; r < N; ++r) {
      double d = bias[r];
      for (int k = 0; k < K; ++k)
        d += static_cast<double>(x[static_cast<size_t>(t) * K + k]) *
             w.values[static_cast<size_t>(r) * K + k];
      want[static_cast<size_t>(t) * N + r] = d;
    }
  char label[96];
  std::snprintf(label, sizeof label, "emulated gemm_tc<%d,%d> %s n=%d", N, K, name, n);
  report(label, max_rel_error(out, want), tol);
}

// The grouped MoE's kernels after the router, emulated: buckets (moe_bucket_serial, which the
// GPU test holds the bucket kernel to), gate-up and down blocks over the worst-case grid
// (idle tiles included), the combine; against a double reference. `favour` >= 0 puts that
// expert in every row; `shun` >= 0 keeps that expert out of every row.
template <int E, int H, int I, class W>
void emu_moe(const char *name, int n, int favour, int shun) {
  HostWeight<W> gate_up = host_weight<W>(static_cast<size_t>(E) * 2 * I, H);
  HostWeight<W> down = host_weight<W>(static_cast<size_t>(E) * H, I);
  std::vector<float> x(static_cast<size_t>(n) * H);
  for (float &v : x)
    v = random_float(1.0f);
  std::vector<DeviceRoute> routes(n);
  for (auto &r : routes) {
    std::uniform_int_distribution<int> pick(0, E - 1);
    do {
      r.i1 = favour >= 0 ? favour : pick(rng);
      r.i2 = pick(rng);
    } while (r.i1 == r.i2 || r.i1 == shun || r.i2 == shun);
    r.w1 = 0.5f + 0.5f * std::fabs(random_float(0.5f));
    r.w2 = 1.0f - r.w1 + 0.1f;
  }
  std::vector<int> plan(moe_plan_ints(E)), pairs(2 * n);
  moe_bucket_serial(routes.data(), n, E, kTcBM, plan.data(), pairs.data());
  std::vector<float> act(static_cast<size_t>(2) * n * I, NAN),
      y(static_cast<size_t>(2) * n * H, NAN), out(static_cast<size_t>(n) * H);
  static TcShared<kTcXTerms> s;
  static Frag acc[4][32];
  static int pair_of[kTcBM];
  const int tiles = moe_max_tiles(n, E, kTcBM);
  int used = 0;
  for (int by = 0; by < tiles; ++by) {
    int e, first, rows;
    if (!moe_tile(plan.data(), E, by, &e, &first, &rows))
      continue; // an idle block
    ++used;
    for (int bx = 0; bx * kGateUpCols < I; ++bx) {
      for (int tid = 0; tid < kTcThreads; ++tid)
        moe_gate_up_rows(s.a_rows, s.b_rows, pairs.data(), e, first, rows, bx * kGateUpCols, I,
                         tid);
      emu_mainloop<W, static_cast<long long>(E) * 2 * I, H, kTcXTerms>(s, x.data(), gate_up.ptr(),
                                                                       acc);
      for (int warp = 0; warp < 4; ++warp)
        for (int lane = 0; lane < 32; ++lane)
          moe_gate_up_store(acc[warp][lane], warp, lane, first, rows, bx * kGateUpCols, I,
                            act.data());
    }
  }
  for (int by = 0; by < tiles; ++by) {
    int e, first, rows;
    if (!moe_tile(plan.data(), E, by, &e, &first, &rows))
      continue;
    for (int bx = 0; bx * kTcBN < H; ++bx) {
      for (int tid = 0; tid < kTcThreads; ++tid)
        moe_down_rows(s.a_rows, s.b_rows, pair_of, pairs.data(), e, first, rows, bx * kTcBN, H,
                      tid);
      emu_mainloop<W, static_cast<long long>(E) * H, I, kTcXTerms>(s, act.data(), down.ptr(), acc);
      for (int warp = 0; warp < 4; ++warp)
        for (int lane = 0; lane < 32; ++lane)
          moe_down_store(acc[warp][lane], warp, lane, pair_of, rows, bx * kTcBN, H, y.data());
    }
  }
  for (int t = 0; t < n; ++t) // moe_combine_kernel
    for (int h = 0; h < H; ++h)
      out[static_cast<size_t>(t) * H + h] =
          routes[t].w1 * y[static_cast<size_t>(2 * t) * H + h] +
          routes[t].w2 * y[static_cast<size_t>(2 * t + 1) * H + h];
  std::vector<double> want(out.size());
  for (int t = 0; t < n; ++t) {
    std::vector<double> a(2 * I);
    for (int slot = 0; slot < 2; ++slot) {
      const size_t e = slot ? routes[t].i2 : routes[t].i1;
      for (int i = 0; i < I; ++i) {
        double g = 0, u = 0;
        for (int k = 0; k < H; ++k) {
          g += static_cast<double>(x[static_cast<size_t>(t) * H + k]) *
               gate_up.values[(e * 2 * I + i) * H + k];
          u += static_cast<double>(x[static_cast<size_t>(t) * H + k]) *
               gate_up.values[(e * 2 * I + I + i) * H + k];
        }
        a[slot * I + i] = g / (1.0 + std::exp(-g)) * u;
      }
    }
    for (int h = 0; h < H; ++h) {
      double y1 = 0, y2 = 0;
      for (int i = 0; i < I; ++i) {
        y1 += a[i] * down.values[(static_cast<size_t>(routes[t].i1) * H + h) * I + i];
        y2 += a[I + i] * down.values[(static_cast<size_t>(routes[t].i2) * H + h) * I + i];
      }
      want[static_cast<size_t>(t) * H + h] = routes[t].w1 * y1 + routes[t].w2 * y2;
    }
  }
  int empty = 0, most = 0;
  for (int e = 0; e < E; ++e)
    empty += plan[e] == 0, most = std::max(most, plan[e]);
  if (favour >= 0)
    expect(plan[favour] == n, "emulated moe: the favoured expert is in every row");
  if (shun >= 0)
    expect(plan[shun] == 0, "emulated moe: the shunned expert has no rows");
  char label[128];
  std::snprintf(label, sizeof label,
                "emulated moe<%d,%d,%d> %s n=%d (%d tiles of %d, %d empty, max %d)", E, H, I, name,
                n, used, tiles, empty, most);
  report(label, max_rel_error(out, want), 2e-5);
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
  emu_gemm<64, 64, bf16>("bf16 (tile multiples)", 64, 1e-5);
  emu_gemm<70, 37, bf16>("bf16 (K % 8 != 0)", 9, 1e-5);
  emu_gemm<130, 200, bf16>("bf16", 100, 1e-5);
  emu_gemm<130, 200, bf16, 3>("bf16, x in 3 terms", 70, 1e-6);
  emu_gemm<96, 160, block_q8_0>("q8_0", 70, 1e-5);
  emu_gemm<65, 4096, block_q8_0>("q8_0 (hidden width)", 10, 1e-5);
  emu_gemm<40, 512, phimoe_rt::block_q4k>("q4k via Elem (bf16-rounded values)", 20, 1e-5);
  emu_gemm<33, 256, phimoe_rt::block_q6k>("q6k via Elem (bf16-rounded values)", 9, 1e-5);
  emu_moe<6, 96, 200, bf16>("bf16, expert 0 in no row", 40, -1, 0);
  emu_moe<4, 64, 128, bf16>("bf16, expert 2 in every row", 150, 2, -1);
  emu_moe<5, 64, 96, block_q8_0>("q8_0", 37, -1, -1);
  std::printf("%s: %d of %d checks failed\n", failures ? "FAILED" : "OK", failures, checks);
  return failures ? 1 : 0;
}
