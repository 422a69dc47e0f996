// quant_test_util.h - fresh random rows, the three formats behind one interface, error measures.
#ifndef PHIMOE_TEST_QUANT_TEST_UTIL_H
#define PHIMOE_TEST_QUANT_TEST_UTIL_H

#include "phimoe_rt/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace quant_test {

// A seed from the system, printed with every failure of the test that uses it.
inline uint32_t fresh_seed() {
  static std::random_device device;
  return device();
}

inline std::vector<float> gaussian(std::mt19937 &rng, size_t n, float sigma = 1.f,
                                   float mean = 0.f) {
  std::normal_distribution<float> dist(mean, sigma);
  std::vector<float> x(n);
  for (float &v : x)
    v = dist(rng);
  return x;
}

// One block format: quantize rows into bytes and dequantize them back.
struct Format {
  std::string name;
  int64_t block; // values per block
  size_t (*row_bytes)(int64_t);
  void (*quantize)(const float *, void *, int64_t);
  void (*dequantize)(const void *, float *, int64_t);

  std::vector<uint8_t> quantize_row(const std::vector<float> &x) const {
    std::vector<uint8_t> y(row_bytes(static_cast<int64_t>(x.size())));
    quantize(x.data(), y.data(), static_cast<int64_t>(x.size()));
    return y;
  }
  std::vector<float> dequantize_row(const std::vector<uint8_t> &y, size_t n) const {
    std::vector<float> x(n);
    dequantize(y.data(), x.data(), static_cast<int64_t>(n));
    return x;
  }
  std::vector<float> round_trip(const std::vector<float> &x) const {
    return dequantize_row(quantize_row(x), x.size());
  }
};

template <class Block, void (*Q)(const float *, Block *, int64_t)>
void quantize_as(const float *x, void *y, int64_t n) { Q(x, static_cast<Block *>(y), n); }
template <class Block, void (*D)(const Block *, float *, int64_t)>
void dequantize_as(const void *x, float *y, int64_t n) { D(static_cast<const Block *>(x), y, n); }

inline const Format &q8_0() {
  static const Format f{"q8_0", phimoe_rt::kQK8_0, phimoe_rt::row_bytes_q8_0,
                        quantize_as<phimoe_rt::block_q8_0, phimoe_rt::quantize_row_q8_0>,
                        dequantize_as<phimoe_rt::block_q8_0, phimoe_rt::dequantize_row_q8_0>};
  return f;
}
inline const Format &q4k() {
  static const Format f{"q4k", phimoe_rt::kQK_K, phimoe_rt::row_bytes_q4k,
                        quantize_as<phimoe_rt::block_q4k, phimoe_rt::quantize_row_q4k>,
                        dequantize_as<phimoe_rt::block_q4k, phimoe_rt::dequantize_row_q4k>};
  return f;
}
inline const Format &q6k() {
  static const Format f{"q6k", phimoe_rt::kQK_K, phimoe_rt::row_bytes_q6k,
                        quantize_as<phimoe_rt::block_q6k, phimoe_rt::quantize_row_q6k>,
                        dequantize_as<phimoe_rt::block_q6k, phimoe_rt::dequantize_row_q6k>};
  return f;
}

inline double sq_error(const std::vector<float> &a, const std::vector<float> &b, size_t begin = 0,
                       size_t end = SIZE_MAX) {
  double s = 0;
  for (size_t i = begin; i < std::min(end, a.size()); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    s += d * d;
  }
  return s;
}

inline double rms(const std::vector<float> &x) {
  double s = 0;
  for (float v : x)
    s += static_cast<double>(v) * v;
  return std::sqrt(s / static_cast<double>(x.size()));
}

// RMSE of `approx` relative to the RMS of `x`.
inline double rel_rmse(const std::vector<float> &x, const std::vector<float> &approx) {
  return std::sqrt(sq_error(x, approx) / static_cast<double>(x.size())) / rms(x);
}

} // namespace quant_test

#endif // PHIMOE_TEST_QUANT_TEST_UTIL_H
