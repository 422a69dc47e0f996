// elements_test.cu - the CUDA kernels' weight access (phimoe_cuda/elements.cuh) checked on the
// CPU: built by nvcc, it calls only __host__ __device__ code from the host, so it runs on a
// machine without a GPU (ctest: cuda_elements_test).
//
// For every storage of the CUDA pack: a random weight is quantized with phimoe_rt's quantizer
// and written in the split layout with phimoe_rt::put_split (as the packers do); then
//   - at(r, k) equals phimoe_rt's dequantized value for every element,
//   - staged_source is a permutation of the row and k_of agrees with it,
//   - the sum of unit_dot over a row's units, on the input staged unit-major, equals the
//     double-precision dot product of the dequantized row with the input,
//   - byte_value and byte_at turn every byte into its value without an integer conversion,
//   - get_split gives back the plain blocks;
// and the fixed-point input of q4_K's decode kernels (test_q4k_int_input).
#include "phimoe_cuda/elements.cuh"
#include "phimoe_rt/split_layout.h"
#include "test_weights.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

using namespace phimoe_cuda::detail;
using phimoe_rt::bf16;
using phimoe_rt::f16;

namespace {

int failures = 0;
std::mt19937 rng(20261205);

void expect(bool ok, const std::string &what) {
  if (!ok) {
    ++failures;
    if (failures <= 20)
      std::printf("FAIL: %s\n", what.c_str());
  }
}

template <class W> using Traits = phimoe_test::Storage<W>;

// A weight as the CUDA pack holds it, in 16-byte aligned host memory, and its values.
template <class W> struct Weight {
  std::vector<uint4> storage;
  std::vector<float> values;
  const W *data() const { return reinterpret_cast<const W *>(storage.data()); }
};

template <class W> Weight<W> make_weight(size_t rows, int K) {
  std::normal_distribution<float> normal(0.0f, 0.3f);
  std::vector<float> x(rows * K);
  for (float &v : x)
    v = normal(rng);
  phimoe_test::Weight<W> packed = phimoe_test::store_weight<W>(x, rows, K);
  if constexpr (phimoe_test::kIsBlock<W>) {
    // get_split gives back the plain blocks.
    const phimoe_rt::SplitLayout &l = *Traits<W>::kLayout;
    const size_t blocks = rows * K / l.block_values;
    std::vector<W> plain(blocks), back(blocks);
    for (size_t r = 0; r < rows; ++r)
      Traits<W>::quantize(x.data() + r * K, plain.data() + r * (K / l.block_values), K);
    phimoe_rt::get_split(l, packed.bytes.data(), 0, blocks, blocks,
                         reinterpret_cast<uint8_t *>(back.data()));
    expect(std::memcmp(back.data(), plain.data(), blocks * sizeof(W)) == 0,
           std::string(Traits<W>::kName) + ": get_split does not invert put_split");
  }
  Weight<W> w;
  w.values = packed.values;
  w.storage.resize((packed.bytes.size() + 15) / 16);
  std::memcpy(w.storage.data(), packed.bytes.data(), packed.bytes.size());
  return w;
}

// Row r of a [rows, K] matrix of values times x in double precision, and the sum of the
// products' magnitudes (the scale of float rounding).
void row_reference(const std::vector<float> &values, const std::vector<float> &x, size_t r, int K,
                   double &want, double &scale) {
  want = 0.0, scale = 0.0;
  for (int k = 0; k < K; ++k) {
    want += static_cast<double>(values[r * K + k]) * x[k];
    scale += std::fabs(static_cast<double>(values[r * K + k]) * x[k]);
  }
}

template <class W, int K> void test(size_t rows) {
  using E = Elem<W>;
  const std::string name = std::string(Traits<W>::kName) + " K=" + std::to_string(K);
  Weight<W> w = make_weight<W>(rows, K);
  // at() is the dequantized value, everywhere.
  int wrong = 0;
  for (size_t r = 0; r < rows; ++r)
    for (int k = 0; k < K; ++k)
      wrong += E::at(w.data(), rows, K, r, k) != w.values[r * K + k];
  expect(wrong == 0, name + ": at() differs from the dequantized value at " +
                         std::to_string(wrong) + " elements");

  // row_ranges: for a few row spans, every byte outside the spans' ranges overwritten, at()
  // still gives the spans' values (the ranges hold all that those rows read), and the ranges
  // hold the rows' bytes and no more.
  size_t row_bytes = K * sizeof(W);
  if constexpr (phimoe_test::kIsBlock<W>)
    row_bytes = K / Traits<W>::kLayout->block_values * sizeof(W);
  for (const size_t span : {size_t{1}, rows / 2, rows - 1, rows}) {
    const size_t first = rows - span;
    if (span == 0)
      continue;
    const RowRanges<W> g = row_ranges<W>(rows, K, first, span);
    Weight<W> poisoned = w;
    std::vector<uint8_t> keep(poisoned.storage.size() * 16, 0);
    size_t held = 0;
    for (int i = 0; i < g.count; ++i) {
      held += g.bytes[i];
      expect(g.offset[i] + g.bytes[i] <= keep.size(), name + ": a row range past the weight");
      for (size_t b = g.offset[i]; b < g.offset[i] + g.bytes[i] && b < keep.size(); ++b)
        keep[b] = 1;
    }
    uint8_t *bytes = reinterpret_cast<uint8_t *>(poisoned.storage.data());
    for (size_t b = 0; b < keep.size(); ++b)
      if (!keep[b])
        bytes[b] = static_cast<uint8_t>(0x5a ^ b);
    int changed = 0;
    for (size_t r = first; r < rows; ++r)
      for (int k = 0; k < K; ++k)
        changed += E::at(poisoned.data(), rows, K, r, k) != w.values[r * K + k];
    expect(changed == 0, name + ": rows " + std::to_string(first) + "+" +
                             std::to_string(span) + " read " + std::to_string(changed) +
                             " values outside their row_ranges");
    expect(held == span * row_bytes, name + ": row_ranges of " + std::to_string(span) +
                                         " rows hold " + std::to_string(held) + " bytes");
  }

  // The staged row is a permutation of the row, and k_of agrees with it.
  std::vector<int> seen(K, 0);
  for (int i = 0; i < K; ++i) {
    const int src = staged_source<W, K>(i);
    if (src >= 0 && src < K)
      ++seen[src];
  }
  int missing = 0;
  for (int c : seen)
    missing += c != 1;
  expect(missing == 0, name + ": staging is not a permutation (" + std::to_string(missing) +
                           " columns taken other than once)");
  if constexpr (E::vec(K)) {
    constexpr int U = K / E::kUnit;
    for (int u = 0; u < U; ++u)
      for (int j = 0; j < E::kUnit; ++j)
        if (E::k_of(u, j) != staged_source<W, K>(j * U + u)) {
          expect(false, name + ": k_of and staged_source disagree");
          u = U;
          break;
        }
  }

  // Row dot products as the GEMV computes them (lanes' partial sums added in any order).
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(K), xs(K);
  for (float &v : x)
    v = normal(rng);
  for (int i = 0; i < K; ++i)
    xs[i] = x[staged_source<W, K>(i)];
  double worst = 0.0;
  for (size_t r = 0; r < rows; ++r) {
    double want, scale;
    row_reference(w.values, x, r, K, want, scale);
    double got = 0.0;
    if constexpr (E::vec(K)) {
      constexpr int U = K / E::kUnit;
      for (int u = 0; u < U; ++u) {
        float xv[E::kUnit]; // as rows_dot loads them from the staged row
        for (int j = 0; j < E::kUnit; ++j)
          xv[j] = xs[j * U + u];
        got += E::unit_dot(w.data(), rows, K, r, u, xv);
      }
    } else {
      for (int k = 0; k < K; ++k)
        got += E::at(w.data(), rows, K, r, k) * xs[k];
    }
    worst = std::max(worst, std::fabs(got - want) / (scale + 1e-30));
  }
  // float accumulation over K terms: a few ulps of the sum of magnitudes.
  expect(worst < 1e-5, name + ": unit_dot relative error " + std::to_string(worst));
  std::printf("%-5s K=%-5d rows=%-3zu unit=%-2d  max rel error of row dots %.2e\n",
              Traits<W>::kName, K, rows, E::kUnit, worst);
}

// byte_value and byte_at: every byte value at every position, with the biases the kernels
// use; and the host's byte_perm against PRMT's definition on a few selectors.
void test_byte_value() {
  int wrong = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const uint32_t word = b | ((b ^ 0x5a) << 8) | ((255 - b) << 16) | ((b * 7 & 0xff) << 24);
    const uint32_t bytes[4] = {b, b ^ 0x5a, 255 - b, b * 7 & 0xff};
    for (float bias : {0.0f, 32.0f, 128.0f}) {
      wrong += byte_value<0>(word, bias) != static_cast<float>(bytes[0]) - bias;
      wrong += byte_value<1>(word, bias) != static_cast<float>(bytes[1]) - bias;
      wrong += byte_value<2>(word, bias) != static_cast<float>(bytes[2]) - bias;
      wrong += byte_value<3>(word, bias) != static_cast<float>(bytes[3]) - bias;
    }
    for (int i = 0; i < 4; ++i)
      wrong += byte_at(word, i) != static_cast<float>(bytes[i]);
  }
  expect(wrong == 0, "byte_value: " + std::to_string(wrong) + " wrong values");
  expect(byte_perm(0x33221100u, 0x77665544u, 0x3210u) == 0x33221100u, "byte_perm: identity");
  expect(byte_perm(0x33221100u, 0x77665544u, 0x4567u) == 0x44556677u, "byte_perm: y reversed");
  expect(byte_perm(0x000000abu, 0x4b000000u, 0x7540u) == 0x4b0000abu, "byte_perm: 2^23 + byte");
}

// q4_K with the decode kernels' fixed-point input (StagedQ4k, q4k_unit_dot): the row staged
// as stage_row<q4_K, K> stages it (the same step, level, put and put_half, the group maxima
// and half sums computed here), then
//   - every column's planes give back its level, and step * level is within step / 2 of x,
//   - the sum of q4k_unit_dot over a row's units is the double-precision dot product of the
//     dequantized row with x, within the float path's bound (rows x values of every sign and
//     size: a normal row, one with a group of zeros, one with a value 10^4 times the others).
template <int K> void test_q4k_int_input(size_t rows) {
  using E = Elem<phimoe_rt::block_q4k>;
  const std::string name = "q4k int input K=" + std::to_string(K);
  constexpr int U = K / 32;
  static_assert(StagedQ4k::words(K) == 28 * U, "28 words a unit");
  Weight<phimoe_rt::block_q4k> w = make_weight<phimoe_rt::block_q4k>(rows, K);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  double worst[3] = {0.0, 0.0, 0.0};
  for (int variant = 0; variant < 3; ++variant) {
    std::vector<float> x(K);
    for (float &v : x)
      v = normal(rng);
    if (variant == 1)
      for (int k = 64; k < 96; ++k)
        x[k] = 0.0f;
    if (variant == 2)
      x[K / 3] = 1e4f;
    std::vector<uint32_t> staged(StagedQ4k::words(K), 0xdeadbeefu);
    std::vector<int> levels(K);
    for (int g = 0; g < K / 32; ++g) { // as stage_q4k_group stages a group
      uint32_t amax_bits = 0;
      for (int l = 0; l < 32; ++l)
        amax_bits = std::max(amax_bits, float_bits(x[32 * g + l]) & 0x7fffffffu);
      float step, inv;
      StagedQ4k::steps(amax_bits, step, inv);
      // D is the power of two with max|x| / D in [2^21, 2^22).
      const double ratio = amax_bits ? bits_as_float(amax_bits) / step : 0.0;
      expect(amax_bits ? ratio >= (1 << 21) && ratio < (1 << 22) : step == 0.0f && inv == 0.0f,
             name + ": the step of group " + std::to_string(g) + " is off");
      int sums[2] = {0, 0};
      for (int l = 0; l < 32; ++l) {
        const int k = 32 * g + l, v = levels[k] = StagedQ4k::level(x[k], inv);
        expect(std::fabs(x[k] - step * static_cast<double>(v)) <= 0.5 * step &&
                   std::abs(v) <= (1 << 22),
               name + ": level of column " + std::to_string(k) + " is off");
        StagedQ4k::put(staged.data(), k, v);
        sums[l / 16] += v;
      }
      for (int half = 0; half < 2; ++half)
        StagedQ4k::put_half(staged.data(), 32 * g + 16 * half, step,
                            step * static_cast<float>(sums[half]));
    }
    // The planes give back every level, and each half its group's step.
    int wrong = 0;
    for (int u = 0; u < U; ++u) {
      const StagedQ4k::Unit unit = StagedQ4k::load(staged.data(), u);
      for (int j = 0; j < 32; ++j) {
        const int k = E::k_of(u, j);
        auto byte = [&](int p) { return (unit.planes[p][j / 4] >> (8 * (j % 4))) & 255u; };
        const int v = static_cast<int8_t>(byte(2)) * 65536 + static_cast<int>(byte(1)) * 256 +
                      static_cast<int>(byte(0));
        wrong += v != levels[k];
        float step, inv;
        uint32_t amax_bits = 0;
        for (int l = 0; l < 32; ++l)
          amax_bits = std::max(amax_bits, float_bits(x[32 * (k / 32) + l]) & 0x7fffffffu);
        StagedQ4k::steps(amax_bits, step, inv);
        wrong += unit.step[j / 16] != step;
      }
    }
    expect(wrong == 0, name + ": " + std::to_string(wrong) + " staged values wrong");
    for (size_t r = 0; r < rows; ++r) {
      double want, scale;
      row_reference(w.values, x, r, K, want, scale);
      double got = 0.0;
      for (int u = 0; u < U; ++u)
        got += q4k_unit_dot(w.data(), rows, K, r, u, StagedQ4k::load(staged.data(), u));
      worst[variant] = std::max(worst[variant], std::fabs(got - want) / (scale + 1e-30));
    }
    expect(worst[variant] < 1e-5,
           name + ": q4k_unit_dot relative error " + std::to_string(worst[variant]));
  }
  std::printf("%-20s K=%-5d rows=%-3zu max rel error of row dots %.2e, %.2e (zeros), %.2e "
              "(an outlier)\n",
              "q4k int input", K, rows, worst[0], worst[1], worst[2]);
}

// StagedQ4k's steps at the edges: 1, a zero group, values too small to keep, inf and nan.
void test_q4k_steps() {
  float step, inv;
  StagedQ4k::steps(float_bits(1.0f), step, inv);
  expect(step == std::ldexp(1.0f, -21) && inv == std::ldexp(1.0f, 21), "steps: max|x| = 1");
  StagedQ4k::steps(float_bits(3.0f), step, inv);
  expect(step == std::ldexp(1.0f, -20) && inv == std::ldexp(1.0f, 20), "steps: max|x| = 3");
  StagedQ4k::steps(0u, step, inv);
  expect(step == 0.0f && inv == 0.0f && StagedQ4k::level(0.0f, inv) == 0, "steps: zeros");
  StagedQ4k::steps(float_bits(1e-33f), step, inv);
  expect(step == 0.0f && inv == 0.0f, "steps: below 2^-105");
  StagedQ4k::steps(float_bits(INFINITY), step, inv);
  expect(std::isnan(step) && inv == 0.0f && StagedQ4k::level(INFINITY, inv) == 0, "steps: inf");
  StagedQ4k::steps(float_bits(NAN) & 0x7fffffffu, step, inv);
  expect(std::isnan(step) && inv == 0.0f, "steps: nan");
  expect(StagedQ4k::level(-3.0f, std::ldexp(1.0f, 20)) == -(3 << 20) &&
             StagedQ4k::level(1.5f * std::ldexp(1.0f, -20), std::ldexp(1.0f, 20)) == 2 &&
             StagedQ4k::level(2.5f * std::ldexp(1.0f, -20), std::ldexp(1.0f, 20)) == 2,
         "level: exact multiples and ties to even");
}

// dot4 (dp4a on the GPU) on the host: signed bytes.
void test_dot4() {
  expect(dot4(0x0f0f0f0fu, 0x7f7f7f7fu, 5) == 5 + 4 * 15 * 127, "dot4: positive bytes");
  expect(dot4(0x01020304u, 0xff80017fu, 0) == 1 * -1 + 2 * -128 + 3 * 1 + 4 * 127,
         "dot4: signed bytes");
  expect(udot4(0x01020304u, 0xff80017fu, -7) == -7 + 1 * 255 + 2 * 128 + 3 * 1 + 4 * 127,
         "udot4: unsigned bytes");
}

} // namespace

int main() {
  test_dot4();
  test_q4k_steps();
  test_q4k_int_input<256>(6);
  test_q4k_int_input<4096>(5);
  test_q4k_int_input<6400>(3);
  test_byte_value();
  test<float, 64>(7);
  test<float, 50>(3); // not whole units: element by element
  test<bf16, 4096>(5);
  test<bf16, 52>(3);
  test<f16, 256>(4);
  test<phimoe_rt::block_q8_0, 96>(9);
  test<phimoe_rt::block_q8_0, 6400>(3);
  test<phimoe_rt::block_q4k, 256>(6);
  test<phimoe_rt::block_q4k, 4096>(5);
  test<phimoe_rt::block_q4k, 6400>(3);
  test<phimoe_rt::block_q6k, 256>(6);
  test<phimoe_rt::block_q6k, 4096>(5);
  test<phimoe_rt::block_q6k, 6400>(3);
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "OK", failures);
  return failures ? 1 : 0;
}
