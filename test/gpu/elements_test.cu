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
//   - byte_value turns every byte into its value without an integer conversion,
//   - get_split gives back the plain blocks.
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
    double want = 0.0, scale = 0.0;
    for (int k = 0; k < K; ++k) {
      want += static_cast<double>(w.values[r * K + k]) * x[k];
      scale += std::fabs(static_cast<double>(w.values[r * K + k]) * x[k]);
    }
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

// byte_value: every byte value at every position, with the biases the kernels use; and the
// host's byte_perm against PRMT's definition on a few selectors.
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
  }
  expect(wrong == 0, "byte_value: " + std::to_string(wrong) + " wrong values");
  expect(byte_perm(0x33221100u, 0x77665544u, 0x3210u) == 0x33221100u, "byte_perm: identity");
  expect(byte_perm(0x33221100u, 0x77665544u, 0x4567u) == 0x44556677u, "byte_perm: y reversed");
  expect(byte_perm(0x000000abu, 0x4b000000u, 0x7540u) == 0x4b0000abu, "byte_perm: 2^23 + byte");
}

} // namespace

int main() {
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
