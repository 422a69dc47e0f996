// test_weights.h - weights for the CUDA tests: values quantized or rounded to a storage and
// laid out as the CUDA pack holds them (block types split field by field, through
// phimoe_rt::put_split, as the packers write them), with the values they stand for.
#ifndef PHIMOE_TEST_GPU_TEST_WEIGHTS_H
#define PHIMOE_TEST_GPU_TEST_WEIGHTS_H

#include "phimoe_rt/quant.h"
#include "phimoe_rt/runtime.h"
#include "phimoe_rt/split_layout.h"

#include <cstring>
#include <type_traits>
#include <vector>

namespace phimoe_test {

template <class W> struct Storage;
template <> struct Storage<float> {
  static constexpr const char *kName = "f32";
};
template <> struct Storage<phimoe_rt::bf16> {
  static constexpr const char *kName = "bf16";
};
template <> struct Storage<phimoe_rt::f16> {
  static constexpr const char *kName = "f16";
};
template <> struct Storage<phimoe_rt::block_q8_0> {
  static constexpr const char *kName = "q8_0";
  static constexpr const phimoe_rt::SplitLayout *kLayout = &phimoe_rt::kSplitQ8_0;
  static void quantize(const float *x, phimoe_rt::block_q8_0 *y, int64_t n) {
    phimoe_rt::quantize_row_q8_0(x, y, n);
  }
  static void dequantize(const phimoe_rt::block_q8_0 *x, float *y, int64_t n) {
    phimoe_rt::dequantize_row_q8_0(x, y, n);
  }
};
template <> struct Storage<phimoe_rt::block_q4k> {
  static constexpr const char *kName = "q4k";
  static constexpr const phimoe_rt::SplitLayout *kLayout = &phimoe_rt::kSplitQ4K;
  static void quantize(const float *x, phimoe_rt::block_q4k *y, int64_t n) {
    phimoe_rt::quantize_row_q4k(x, y, n);
  }
  static void dequantize(const phimoe_rt::block_q4k *x, float *y, int64_t n) {
    phimoe_rt::dequantize_row_q4k(x, y, n);
  }
};
template <> struct Storage<phimoe_rt::block_q6k> {
  static constexpr const char *kName = "q6k";
  static constexpr const phimoe_rt::SplitLayout *kLayout = &phimoe_rt::kSplitQ6K;
  static void quantize(const float *x, phimoe_rt::block_q6k *y, int64_t n) {
    phimoe_rt::quantize_row_q6k(x, y, n);
  }
  static void dequantize(const phimoe_rt::block_q6k *x, float *y, int64_t n) {
    phimoe_rt::dequantize_row_q6k(x, y, n);
  }
};

template <class W> constexpr bool kIsBlock = sizeof(W) > 4;

// A [rows, k] weight in storage W as the CUDA pack holds it, and the values it stands for.
template <class W> struct Weight {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

// `x` ([rows, k] floats) stored as W.
template <class W> Weight<W> store_weight(const std::vector<float> &x, size_t rows, size_t k) {
  Weight<W> w;
  w.values.resize(rows * k);
  if constexpr (kIsBlock<W>) {
    using S = Storage<W>;
    const size_t per_row = k / S::kLayout->block_values, blocks = rows * per_row;
    std::vector<W> plain(blocks);
    for (size_t r = 0; r < rows; ++r) {
      S::quantize(x.data() + r * k, plain.data() + r * per_row, static_cast<int64_t>(k));
      S::dequantize(plain.data() + r * per_row, w.values.data() + r * k, static_cast<int64_t>(k));
    }
    w.bytes.resize(blocks * sizeof(W));
    std::vector<uint8_t> scratch;
    phimoe_rt::put_split(*S::kLayout, reinterpret_cast<const uint8_t *>(plain.data()), blocks, 0,
                         blocks, scratch, [&](uint64_t at, const uint8_t *data, size_t size) {
                           std::memcpy(w.bytes.data() + at, data, size);
                         });
  } else {
    w.bytes.resize(rows * k * sizeof(W));
    for (size_t i = 0; i < rows * k; ++i) {
      W v;
      if constexpr (std::is_same<W, float>::value)
        v = x[i];
      else if constexpr (std::is_same<W, phimoe_rt::bf16>::value)
        v = phimoe_rt::float_to_bf16(x[i]);
      else
        v = phimoe_rt::float_to_f16(x[i]);
      std::memcpy(w.bytes.data() + i * sizeof(W), &v, sizeof(W));
      w.values[i] = phimoe_rt::to_float(v);
    }
  }
  return w;
}

} // namespace phimoe_test

#endif // PHIMOE_TEST_GPU_TEST_WEIGHTS_H
