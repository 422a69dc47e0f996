// tc_host_test.cu - the host-side parts of the tensor-core GEMM and the grouped-expert MoE
// (gemm_tc.cuh, moe_grouped.cuh) checked on the CPU: bf16 rounding and the split of x, the
// weight tile loaders, the mma.m16n8k16 fragment coordinates against the PTX ISA's tables, the
// block tile's coverage, the gate-up column pairing, and the expert bucketing / tile plan; then
// the blocks' whole data flow, emulated (below). Loaders with deliberate bugs in the q4_K / q6_K
// scales and mins (negative controls) must fail the same comparisons.
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

// Negative controls: q4_K / q6_K bytes read by a loader with one deliberate bug in the scales
// or mins. The emulated GEMM and MoE must fail with every one of them.
enum class Bug { kNoMin, kMinSign, kOtherSubBlock, kSwapHalves, kScaleOfGroup0 };
template <class Base, Bug B> struct Mutant { Base block; };
namespace phimoe_cuda::detail {
template <class Base, Bug B> struct TcLoad<Mutant<Base, B>> {
  using L = TcLoad<Base>;
  using M = Mutant<Base, B>;
  static constexpr bool kSupported = true, kScaled = L::kScaled, kMins = L::kMins;
  static constexpr int kUnitValues = L::kUnitValues, kRowMultiple = L::kRowMultiple;
  static constexpr int kGroup = L::kGroup;
  using Raw = typename L::Raw;
  using RawScales = typename L::RawScales;
  __host__ __device__ static Raw fetch(const M *w, size_t R, int K, size_t r, int k0) {
    return L::fetch(reinterpret_cast<const Base *>(w), R, K, r, k0);
  }
  __host__ __device__ static void unpack(const Raw &raw, int k0, uint4 *dst) {
    L::unpack(raw, k0, dst);
  }
  __host__ __device__ static RawScales fetch_scales(const M *w, size_t R, int K, size_t r, int k0) {
    const Base *base = reinterpret_cast<const Base *>(w);
    return L::fetch_scales(base, R, K, r, B == Bug::kOtherSubBlock ? k0 ^ 32 : k0);
  }
  __host__ __device__ static TcScales scales_of(const RawScales &raw, int k0) {
    TcScales f = L::scales_of(raw, B == Bug::kOtherSubBlock ? k0 ^ 32 : k0);
    if (B == Bug::kNoMin)
      f.min = 0.0f;
    if (B == Bug::kMinSign)
      f.min = -f.min;
    if (B == Bug::kSwapHalves) {
      const float t = f.scale[0];
      f.scale[0] = f.scale[1];
      f.scale[1] = t;
    }
    if (B == Bug::kScaleOfGroup0)
      f.scale[1] = f.scale[0];
    return f;
  }
};
} // namespace phimoe_cuda::detail

using namespace phimoe_cuda;
using namespace phimoe_cuda::detail;
using phimoe_rt::bf16;
using phimoe_rt::block_q4k;
using phimoe_rt::block_q6k;
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
      expect(std::isnan(bf16_bits(got)), "bf16_round keeps nan");
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
    const float got = f16_bits(static_cast<uint16_t>(h));
    if (std::isnan(want))
      expect(std::isnan(got), "f16 nan", h);
    else
      expect(float_bits(got) == float_bits(want), "f16_value == f16_to_float", h);
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
    const double sum2 = static_cast<double>(bf16_bits(two[0])) + bf16_bits(two[1]);
    const double sum3 = static_cast<double>(bf16_bits(three[0])) + bf16_bits(three[1]) +
                        bf16_bits(three[2]);
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
  expect(bf16_bits(p[0]) == INFINITY && p[1] == 0, "split: inf, then 0");
  tc_split<2>(NAN, p);
  expect(std::isnan(bf16_bits(p[0])) && p[1] == 0, "split: nan, then 0");
}

// tc_split_row_serial (what the GPU test holds tc_split_kernel to, bit for bit): each value's
// terms are tc_split's, zeros past K up to whole K tiles, and each K tile's sum is the sum of
// its terms (to fp32 rounding; inf or nan where the tile has one).
template <int K, int Terms> void test_split_row(int n) {
  constexpr int S = tc_stride<K>();
  static_assert(S % kTcBK == 0 && S >= K && S - K < kTcBK, "tc_stride: K in whole tiles");
  std::vector<float> x(static_cast<size_t>(n) * K);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = random_float(std::ldexp(1.0f, static_cast<int>(i % 60) - 30));
  x[K / 2] = INFINITY, x[K + 1] = NAN; // rows 0 and 1
  std::vector<uint16_t> terms(static_cast<size_t>(n) * Terms * S, 0xffff);
  std::vector<float> sums(static_cast<size_t>(n) * (S / kTcBK), -1.0f);
  for (int t = 0; t < n; ++t)
    tc_split_row_serial<K, Terms>(x.data(), t, terms.data(), sums.data());
  int bad_terms = 0, bad_sums = 0;
  for (int t = 0; t < n; ++t)
    for (int j = 0; j < S / kTcBK; ++j) {
      double sum = 0.0, mass = 0.0;
      for (int k = kTcBK * j; k < kTcBK * (j + 1); ++k) {
        uint16_t want[Terms] = {};
        if (k < K)
          tc_split<Terms>(x[static_cast<size_t>(t) * K + k], want);
        for (int term = 0; term < Terms; ++term) {
          const uint16_t got = terms[(static_cast<size_t>(t) * Terms + term) * S + k];
          bad_terms += got != want[term];
          sum += bf16_bits(got);
          mass += std::fabs(bf16_bits(got));
        }
      }
      const float got = sums[static_cast<size_t>(t) * (S / kTcBK) + j];
      const bool ok = std::isfinite(sum) ? std::fabs(got - sum) <= 1e-6 * mass
                                         : std::isnan(sum) ? std::isnan(got) : got == sum;
      bad_sums += !ok;
    }
  char label[96];
  std::snprintf(label, sizeof label, "tc_split_row_serial<%d,%d>: terms are tc_split's", K, Terms);
  expect(bad_terms == 0, label, bad_terms);
  std::snprintf(label, sizeof label, "tc_split_row_serial<%d,%d>: tile sums", K, Terms);
  expect(bad_sums == 0, label, bad_sums);
}

// The x chunks of a K tile (tc_x_chunk): every (term, row, column of 8) once, and a phase of
// 8 threads' 16-byte stores on 32 distinct banks, 16-byte aligned.
template <int Terms> void test_x_chunks() {
  static TcTile<Terms> t;
  constexpr int kChunks = Terms * kTcBM * (kTcBK / 8);
  std::vector<int> seen(kChunks, 0);
  for (int c = 0; c < kChunks; ++c) {
    int term, m, col;
    tc_x_chunk(c, term, m, col);
    const bool in = term >= 0 && term < Terms && m >= 0 && m < kTcBM && col >= 0 && col < kTcBK &&
                    col % 8 == 0;
    expect(in, "x chunk inside the tile", c);
    if (in)
      ++seen[(term * kTcBM + m) * (kTcBK / 8) + col / 8];
    expect(reinterpret_cast<uintptr_t>(&t.a[term][m][col]) % 16 == 0, "x chunk aligned", c);
  }
  expect(std::count(seen.begin(), seen.end(), 1) == kChunks, "x chunks: each once");
  for (int c0 = 0; c0 < kChunks; c0 += 8) {
    unsigned banks = 0;
    for (int c = c0; c < c0 + 8; ++c) {
      int term, m, col;
      tc_x_chunk(c, term, m, col);
      const size_t word = (reinterpret_cast<uintptr_t>(&t.a[term][m][col]) / 4) % 32;
      for (int b = 0; b < 4; ++b)
        banks |= 1u << ((word + b) % 32);
    }
    expect(banks == 0xffffffffu, "x chunk stores: no bank conflicts", c0);
  }
}

uint16_t unit_half(const uint4 &u, int j) {
  const uint32_t words[4] = {u.x, u.y, u.z, u.w};
  return static_cast<uint16_t>(words[j / 2] >> (16 * (j % 2)));
}
uint16_t units_half(const uint4 *u, int j) { return unit_half(u[j / 8], j % 8); }

// TcLoad<bf16>: the vector path (K % 8 == 0) and the element path with tails (K % 8 != 0).
void test_load_bf16(int R, int K) {
  std::vector<uint16_t> w(static_cast<size_t>(R) * K + 8); // 16-byte aligned (vector storage)
  for (auto &b : w)
    b = phimoe_rt::float_to_bf16(random_float(0.3f)).bits;
  const bf16 *pw = reinterpret_cast<const bf16 *>(w.data());
  for (int r = 0; r < R; ++r)
    for (int k0 = 0; k0 < K; k0 += 8) {
      uint4 u;
      tc_unit(pw, R, K, r, k0, &u);
      for (int j = 0; j < 8; ++j)
        expect(unit_half(u, j) == (k0 + j < K ? w[static_cast<size_t>(r) * K + k0 + j] : 0),
               "TcLoad<bf16>: fetch and unpack", r, k0 + j);
    }
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
      const TcScales f = tc_scales(pw, R, K, r, k0);
      const float d = f.scale[0];
      expect(f.min == 0.0f, "q8_0: no min");
      for (int ku = 0; ku < kTcBK; ku += 8) {
        uint4 u;
        tc_unit(pw, R, K, r, k0 + ku, &u);
        for (int j = 0; j < 8; ++j) {
          const size_t i = static_cast<size_t>(r) * K + k0 + ku + j;
          const float quant = bf16_bits(unit_half(u, j));
          expect(quant == static_cast<float>(q[i / 32].qs[i % 32]), "q8_0 unit: the quant", r,
                 k0 + ku + j);
          expect(quant * d == values[i], "q8_0 unit * scale == dequantized", r, k0 + ku + j);
        }
      }
    }
}

// The packed 6-bit scales and mins of q4_K from registers == Elem<block_q4k>::scale_min.
void test_q4k_scale_min() {
  for (int i = 0; i < 20000; ++i) {
    uint8_t bytes[12];
    for (uint8_t &b : bytes)
      b = static_cast<uint8_t>(rng());
    uint32_t words[3];
    std::memcpy(words, bytes, 12);
    for (int j = 0; j < 8; ++j) {
      float sc, m, want_sc, want_m;
      tc_q4k_scale_min(words[0], words[1], words[2], j, sc, m);
      Elem<block_q4k>::scale_min(bytes, j, want_sc, want_m);
      expect(sc == want_sc && m == want_m, "tc_q4k_scale_min == Elem::scale_min", i, j);
    }
  }
}

// A random row block of q4_K / q6_K: raw values with a different scale and offset per 32-value
// sub-block, so that scales and mins differ from one sub-block to the next.
std::vector<float> varied_floats(size_t n) {
  std::vector<float> x(n);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (size_t s = 0; s < n; s += 32) {
    const float scale = 0.05f + 0.3f * u(rng), offset = 0.4f * (u(rng) - 0.5f);
    for (size_t i = s; i < s + 32 && i < n; ++i)
      x[i] = random_float(scale) + offset;
  }
  return x;
}

// TcLoad<q4_K / q6_K> on the CUDA split layout: the tile values are the integer quants
// (q, q - 32), and scale[g] * q - min == the dequantized value, exactly (the same float ops as
// phimoe_rt's dequantizers). `random`: blocks of random bits (phimoe_test::random_blocks, as
// kernels_test makes its largest weights), else quantized floats.
template <class W> void test_load_k(int R, int K, bool random) {
  using L = TcLoad<W>;
  const phimoe_test::Weight<W> w =
      random ? phimoe_test::random_blocks<W>(R, K, rng())
             : phimoe_test::store_weight<W>(varied_floats(static_cast<size_t>(R) * K), R, K);
  const W *pw = reinterpret_cast<const W *>(w.bytes.data());
  const char *name = phimoe_test::Storage<W>::kName;
  int exact = 0, total = 0;
  for (int r = 0; r < R; ++r)
    for (int k0 = 0; k0 < K; k0 += kTcBK) {
      const TcScales f = tc_scales(pw, R, K, r, k0);
      for (int ku = 0; ku < kTcBK; ku += L::kUnitValues) {
        uint4 u[L::kUnitValues / 8];
        tc_unit(pw, R, K, r, k0 + ku, u);
        for (int j = 0; j < L::kUnitValues; ++j) {
          const int k = k0 + ku + j, g = (ku + j) / L::kGroup;
          const float q = bf16_bits(units_half(u, j));
          const float want = w.values[static_cast<size_t>(r) * K + k];
          // the quant itself, from Elem::at (which the elements test holds to the dequantizer)
          const bool integer = q == std::floor(q) &&
                               (L::kMins ? q >= 0.0f && q <= 15.0f : q >= -32.0f && q <= 31.0f);
          expect(integer, "q4_K / q6_K tile value: an integer quant", r, k);
          const float got = f.scale[g] * q - f.min;
          exact += got == want;
          ++total;
          expect(got == want, name, r, k);
          expect(Elem<W>::at(pw, R, K, r, k) == want, "Elem::at == dequantized", r, k);
        }
      }
    }
  std::printf("TcLoad<%s>: %d of %d values exact (R=%d, K=%d%s)\n", name, exact, total, R, K,
              random ? ", random blocks" : "");
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

// tc_tile_mma's ldmatrix.x4 addresses (tc_lda_*, tc_ldb_*) against tc_a_reg / tc_b_reg on a
// tile of distinct values: ldmatrix modelled from the PTX ISA (lane l receives, in register
// i, the 32-bit word l % 4 of the row whose address lane 8 i + l / 4 gave); every row address
// 16-byte aligned; each 8-row phase of a matrix free of bank conflicts.
void test_ldmatrix() {
  static TcTile<2> t;
  for (int term = 0; term < 2; ++term)
    for (int m = 0; m < kTcBM; ++m)
      for (int k = 0; k < kTcStride; ++k)
        t.a[term][m][k] = static_cast<uint16_t>(term * 20000 + m * kTcStride + k);
  for (int n = 0; n < kTcBN; ++n)
    for (int k = 0; k < kTcStride; ++k)
      t.b[n][k] = static_cast<uint16_t>(50000 + n * kTcStride + k);
  auto ldmatrix = [](const uint16_t *const (&rows)[32], int lane, int i) {
    uint32_t w;
    std::memcpy(&w, rows[8 * i + lane / 4] + 2 * (lane % 4), 4);
    return w;
  };
  auto check_rows = [](const uint16_t *const (&rows)[32], const char *what) {
    for (int lane = 0; lane < 32; ++lane)
      expect(reinterpret_cast<uintptr_t>(rows[lane]) % 16 == 0, what, lane);
    for (int i = 0; i < 4; ++i) { // a matrix: 8 rows of 4 banks each
      unsigned banks = 0;
      for (int r = 0; r < 8; ++r) {
        const size_t word = (reinterpret_cast<uintptr_t>(rows[8 * i + r]) / 4) % 32;
        for (int b = 0; b < 4; ++b)
          banks |= 1u << ((word + b) % 32);
      }
      expect(banks == 0xffffffffu, what, i);
    }
  };
  for (int ks = 0; ks < kTcBK; ks += 16) {
    for (int term = 0; term < 2; ++term)
      for (int row0 = 0; row0 < kTcBM; row0 += 16) {
        const uint16_t *rows[32];
        for (int lane = 0; lane < 32; ++lane)
          rows[lane] = &t.a[term][row0 + tc_lda_row(lane)][ks + tc_lda_col(lane)];
        check_rows(rows, "A ldmatrix rows: aligned, no bank conflicts");
        for (int lane = 0; lane < 32; ++lane)
          for (int j = 0; j < 4; ++j)
            expect(ldmatrix(rows, lane, j) == tc_a_reg(t, term, row0, ks, lane, j),
                   "A fragment by ldmatrix == tc_a_reg", lane, j);
      }
    for (int n0 = 0; n0 < kTcBN; n0 += 16) {
      const uint16_t *rows[32];
      for (int lane = 0; lane < 32; ++lane)
        rows[lane] = &t.b[n0 + tc_ldb_row(lane)][ks + tc_ldb_col(lane)];
      check_rows(rows, "B ldmatrix rows: aligned, no bank conflicts");
      for (int lane = 0; lane < 32; ++lane)
        for (int i = 0; i < 4; ++i) // two column tiles, registers 0 and 1 of each
          expect(ldmatrix(rows, lane, i) == tc_b_reg(t, n0 + 8 * (i / 2), ks, lane, i % 2),
                 "B fragment by ldmatrix == tc_b_reg", lane, i);
    }
  }
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
// The kernels' phases (tc_gemm_rows / moe_*_rows, tc_fetch_tile and tc_store_tile, the
// fragment registers, tc_accumulate, the stores) run here as they do on the device, thread by
// thread; only mma.sync is emulated, from the PTX ISA's fragment tables (spec_a/b/c, written apart from the header's
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
void emu_mma(const TcTile<Terms> &s, int warp, int t, int mi, int ni, int ks, Frag *part) {
  const int wm = warp >> 1, wn = warp & 1;
  double A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 8; ++i) {
      int row, col;
      spec_a(lane, i, row, col);
      const uint32_t reg = tc_a_reg(s, t, wm * 32 + mi * 16, ks, lane, i / 2);
      A[row][col] = bf16_bits(static_cast<uint16_t>(reg >> (16 * (i % 2))));
    }
    for (int i = 0; i < 4; ++i) {
      int k, n;
      spec_b(lane, i, k, n);
      const uint32_t reg = tc_b_reg(s, wn * 32 + ni * 8, ks, lane, i / 2);
      B[k][n] = bf16_bits(static_cast<uint16_t>(reg >> (16 * (i % 2))));
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

// x [n, K] split as tc_split_kernel splits it (tc_split_row_serial): what the blocks read.
template <int Terms> struct HostSplit {
  std::vector<uint16_t> terms;
  std::vector<float> sums;
  TcX view() const { return TcX{terms.data(), sums.data()}; }
};
template <int K, int Terms> HostSplit<Terms> host_split(const std::vector<float> &x, int n) {
  constexpr int S = tc_stride<K>();
  HostSplit<Terms> h{std::vector<uint16_t>(static_cast<size_t>(n) * Terms * S, 0xffff),
                     std::vector<float>(static_cast<size_t>(n) * (S / kTcBK), NAN)};
  for (int t = 0; t < n; ++t)
    tc_split_row_serial<K, Terms>(x.data(), t, h.terms.data(), h.sums.data());
  return h;
}

// Every thread's tc_fetch_tile of K tile k0, then (emu_store) their tc_store_tile into t.
template <class W, long long R, int K, int Terms>
void emu_fetch(const TcShared<Terms> &s, const TcX &x, const W *w, int k0,
               TcFetch<W, Terms> (&fetched)[kTcThreads]) {
  for (int tid = 0; tid < kTcThreads; ++tid)
    tc_fetch_tile<W, R, K>(fetched[tid], s, x, w, k0, tid);
}
template <class W, int Terms>
void emu_store(TcTile<Terms> &t, const TcShared<Terms> &s,
               const TcFetch<W, Terms> (&fetched)[kTcThreads], int k0) {
  for (int tid = 0; tid < kTcThreads; ++tid)
    tc_store_tile<W>(t, s, fetched[tid], k0, tid);
}

// tc_mainloop's schedule, every thread's phase in turn between the barriers: the loads of
// K tile k + 1 before the MMAs of tile k, their stores into the other tile after.
template <class W, long long R, int K, int Terms>
void emu_mainloop(TcShared<Terms> &s, const TcX &x, const W *w, Frag (&acc)[4][32]) {
  using L = TcLoad<W>;
  static_assert(tc_supported<W, K>(), "emu_mainloop: tc_mainloop's condition");
  static Frag part[4][32];
  static TcFetch<W, Terms> fetched[kTcThreads];
  for (int warp = 0; warp < 4; ++warp)
    for (int lane = 0; lane < 32; ++lane)
      tc_zero(acc[warp][lane]);
  emu_fetch<W, R, K>(s, x, w, 0, fetched);
  emu_store<W>(s.tile[0], s, fetched, 0);
  int cur = 0;
  for (int k0 = 0; k0 < K; k0 += kTcBK) {
    const bool more = k0 + kTcBK < K;
    if (more)
      emu_fetch<W, R, K>(s, x, w, k0 + kTcBK, fetched);
    const TcTile<Terms> &t = s.tile[cur];
    for (int warp = 0; warp < 4; ++warp)
      for (int g = 0; g < kTcBK / L::kGroup; ++g) { // a zeroed fragment per group
        for (int lane = 0; lane < 32; ++lane)
          tc_zero(part[warp][lane]);
        for (int ks = g * L::kGroup; ks < (g + 1) * L::kGroup; ks += 16)
          for (int term = Terms - 1; term >= 0; --term)
            for (int mi = 0; mi < 2; ++mi)
              for (int ni = 0; ni < 4; ++ni)
                emu_mma(t, warp, term, mi, ni, ks, part[warp]);
        for (int lane = 0; lane < 32; ++lane)
          tc_accumulate<W>(t, warp, lane, part[warp][lane], acc[warp][lane], g);
      }
    if (more)
      emu_store<W>(s.tile[cur ^ 1], s, fetched, k0 + kTcBK);
    cur ^= 1;
  }
}

// A [rows, k] weight as the CUDA pack stores it, and the values it stands for (a mutant's:
// those of its base storage). q4_K and q6_K get a scale and offset per sub-block.
template <class W> struct StoredAs { using type = W; };
template <class Base, Bug B> struct StoredAs<Mutant<Base, B>> { using type = Base; };
template <class W> struct HostWeight {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
  const W *ptr() const { return reinterpret_cast<const W *>(bytes.data()); }
};
template <class W> HostWeight<W> host_weight(size_t rows, size_t k) {
  using S = typename StoredAs<W>::type;
  std::vector<float> x(rows * k);
  if (std::is_same<S, block_q4k>::value || std::is_same<S, block_q6k>::value)
    x = varied_floats(rows * k);
  else
    for (float &v : x)
      v = random_float(0.2f);
  phimoe_test::Weight<S> stored = phimoe_test::store_weight<S>(x, rows, k);
  return HostWeight<W>{std::move(stored.bytes), std::move(stored.values)};
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

// fail: a negative control, which must exceed the tolerance.
void report(const char *what, double rel, double tol, bool fail = false) {
  const bool ok = fail ? !(rel <= tol) : rel <= tol;
  expect(ok, what);
  std::printf("%s %-52s max|d|/max|want| = %.3g (tol %.3g%s)\n", ok ? "PASS" : "FAIL", what, rel,
              tol, fail ? ", must fail" : "");
}

// gemm_tc_kernel's blocks, emulated: out = x . W^T + bias against a double reference.
// x_mean: the mean of x (the mins' term grows with it). fail: a negative control.
template <int N, int K, class W, int Terms = kTcXTerms>
void emu_gemm(const char *name, int n, double tol, float x_mean = 0.0f, bool fail = false) {
  HostWeight<W> w = host_weight<W>(N, K);
  std::vector<float> x(static_cast<size_t>(n) * K), bias(N), out(static_cast<size_t>(n) * N, NAN);
  for (float &v : x)
    v = random_float(1.0f) + x_mean;
  for (float &v : bias)
    v = random_float(0.1f);
  static TcShared<Terms> s;
  static Frag acc[4][32];
  const HostSplit<Terms> xs = host_split<K, Terms>(x, n);
  for (int by = 0; by * kTcBM < n; ++by)
    for (int bx = 0; bx * kTcBN < N; ++bx) {
      for (int tid = 0; tid < kTcThreads; ++tid)
        tc_gemm_rows(s.a_rows, s.b_rows, n, N, by * kTcBM, bx * kTcBN, tid);
      emu_mainloop<W, N, K, Terms>(s, xs.view(), w.ptr(), acc);
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
  report(label, max_rel_error(out, want), tol, fail);
}

// The grouped MoE's kernels after the router, emulated: buckets (moe_bucket_serial, which the
// GPU test holds the bucket kernel to), gate-up and down blocks over the worst-case grid
// (idle tiles included), the combine; against a double reference. `favour` >= 0 puts that
// expert in every row; `shun` >= 0 keeps that expert out of every row.
template <int E, int H, int I, class W>
void emu_moe(const char *name, int n, int favour, int shun, bool fail = false) {
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
  const HostSplit<kTcXTerms> xs = host_split<H, kTcXTerms>(x, n);
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
      emu_mainloop<W, static_cast<long long>(E) * 2 * I, H, kTcXTerms>(s, xs.view(),
                                                                       gate_up.ptr(), acc);
      for (int warp = 0; warp < 4; ++warp)
        for (int lane = 0; lane < 32; ++lane)
          moe_gate_up_store(acc[warp][lane], warp, lane, first, rows, bx * kGateUpCols, I,
                            act.data());
    }
  }
  const HostSplit<kTcXTerms> acts = host_split<I, kTcXTerms>(act, 2 * n);
  for (int by = 0; by < tiles; ++by) {
    int e, first, rows;
    if (!moe_tile(plan.data(), E, by, &e, &first, &rows))
      continue;
    for (int bx = 0; bx * kTcBN < H; ++bx) {
      for (int tid = 0; tid < kTcThreads; ++tid)
        moe_down_rows(s.a_rows, s.b_rows, pair_of, pairs.data(), e, first, rows, bx * kTcBN, H,
                      tid);
      emu_mainloop<W, static_cast<long long>(E) * H, I, kTcXTerms>(s, acts.view(), down.ptr(),
                                                                   acc);
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
  report(label, max_rel_error(out, want), 2e-5, fail);
}

} // namespace

int main() {
  test_bf16_round();
  test_f16_value();
  test_split();
  test_split_row<37, 2>(3);
  test_split_row<200, 3>(2);
  test_split_row<4096, 2>(2);
  test_x_chunks<2>();
  test_x_chunks<3>();
  test_load_bf16(5, 64);
  test_load_bf16(7, 37);
  test_load_bf16(3, 4);
  test_load_q8_0(6, 96);
  test_load_q8_0(3, 4096);
  test_fragments();
  test_ldmatrix();
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
  test_q4k_scale_min();
  test_load_k<block_q4k>(5, 512, false);
  test_load_k<block_q4k>(3, 4096, false);
  test_load_k<block_q4k>(40, 512, true);
  test_load_k<block_q6k>(5, 512, false);
  test_load_k<block_q6k>(3, 4096, false);
  test_load_k<block_q6k>(40, 512, true);
  emu_gemm<40, 512, block_q4k>("q4k", 20, 1e-5);
  emu_gemm<70, 256, block_q4k>("q4k (x mean 1)", 9, 1e-5, 1.0f);
  emu_gemm<65, 4096, block_q4k>("q4k (hidden width)", 10, 1e-5, 0.3f);
  emu_gemm<33, 256, block_q6k>("q6k", 9, 1e-5);
  emu_gemm<64, 768, block_q6k>("q6k", 70, 1e-5, 0.5f);
  emu_gemm<65, 4096, block_q6k>("q6k (hidden width)", 10, 1e-5);
  // Negative controls: one bug in the scales or mins each, the same comparisons must fail.
  emu_gemm<40, 512, Mutant<block_q4k, Bug::kNoMin>>("q4k, mins dropped", 20, 1e-5, 0.0f, true);
  emu_gemm<40, 512, Mutant<block_q4k, Bug::kMinSign>>("q4k, mins added", 20, 1e-5, 0.0f, true);
  emu_gemm<40, 512, Mutant<block_q4k, Bug::kOtherSubBlock>>("q4k, the other nibble's sub-block", 20,
                                                            1e-5, 0.0f, true);
  emu_gemm<33, 256, Mutant<block_q6k, Bug::kSwapHalves>>("q6k, k16 groups' scales swapped", 9, 1e-5,
                                                         0.0f, true);
  emu_gemm<33, 256, Mutant<block_q6k, Bug::kScaleOfGroup0>>("q6k, one scale per K tile", 9, 1e-5,
                                                            0.0f, true);
  emu_moe<6, 96, 200, bf16>("bf16, expert 0 in no row", 40, -1, 0);
  emu_moe<4, 64, 128, bf16>("bf16, expert 2 in every row", 150, 2, -1);
  emu_moe<5, 64, 96, block_q8_0>("q8_0", 37, -1, -1);
  emu_moe<5, 256, 512, block_q4k>("q4k", 37, -1, -1);
  emu_moe<4, 256, 256, block_q4k>("q4k, expert 1 in every row", 70, 1, -1);
  emu_moe<3, 256, 256, block_q6k>("q6k", 20, -1, -1);
  emu_moe<5, 256, 512, Mutant<block_q4k, Bug::kNoMin>>("q4k, mins dropped", 37, -1, -1, true);
  std::printf("%s: %d of %d checks failed\n", failures ? "FAILED" : "OK", failures, checks);
  return failures ? 1 : 0;
}
