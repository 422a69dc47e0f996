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

// `plain` ([rows, k] values in blocks of W, row-major) in the split layout, with its values.
template <class W>
Weight<W> store_blocks(const std::vector<W> &plain, size_t rows, size_t k) {
  using S = Storage<W>;
  Weight<W> w;
  w.values.resize(rows * k);
  const size_t per_row = k / S::kLayout->block_values, blocks = rows * per_row;
  for (size_t r = 0; r < rows; ++r)
    S::dequantize(plain.data() + r * per_row, w.values.data() + r * k, static_cast<int64_t>(k));
  w.bytes.resize(blocks * sizeof(W));
  std::vector<uint8_t> scratch;
  phimoe_rt::put_split(*S::kLayout, reinterpret_cast<const uint8_t *>(plain.data()), blocks, 0,
                       blocks, scratch, [&](uint64_t at, const uint8_t *data, size_t size) {
                         std::memcpy(w.bytes.data() + at, data, size);
                       });
  return w;
}

// `x` ([rows, k] floats) stored as W.
template <class W> Weight<W> store_weight(const std::vector<float> &x, size_t rows, size_t k) {
  if constexpr (kIsBlock<W>) {
    using S = Storage<W>;
    const size_t per_row = k / S::kLayout->block_values;
    std::vector<W> plain(rows * per_row);
    for (size_t r = 0; r < rows; ++r)
      S::quantize(x.data() + r * k, plain.data() + r * per_row, static_cast<int64_t>(k));
    return store_blocks(plain, rows, k);
  } else {
    Weight<W> w;
    w.values.resize(rows * k);
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
    return w;
  }
}

// A [rows, k] q4_K or q6_K weight of random blocks (every bit pattern of quants and packed
// scales is a valid block; d and dmin are drawn so that values stay within about +-1): for
// weights too large to quantize in a test (the k-quant quantizers run at a few million values a
// second). `seed` drives a splitmix64 stream.
template <class W> Weight<W> random_blocks(size_t rows, size_t k, uint64_t seed) {
  static_assert(std::is_same<W, phimoe_rt::block_q4k>::value ||
                    std::is_same<W, phimoe_rt::block_q6k>::value,
                "random_blocks: q4_K or q6_K");
  uint64_t state = seed;
  auto next = [&state] {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  auto unit = [&next] { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); };
  std::vector<W> plain(rows * k / phimoe_rt::kQK_K);
  for (W &b : plain) {
    uint8_t *bytes = reinterpret_cast<uint8_t *>(&b);
    for (size_t i = 0; i < sizeof(W); i += 8) {
      const uint64_t z = next();
      std::memcpy(bytes + i, &z, sizeof(W) - i < 8 ? sizeof(W) - i : 8);
    }
    if constexpr (std::is_same<W, phimoe_rt::block_q4k>::value) {
      b.d = phimoe_rt::float_to_f16((0.5f + 0.5f * unit()) / 1024.0f).bits; // d sc q <= 0.92
      b.dmin = phimoe_rt::float_to_f16(unit() / 256.0f).bits;              // dmin m <= 0.25
    } else {
      b.d = phimoe_rt::float_to_f16((0.5f + 0.5f * unit()) / 4096.0f).bits; // |value| <= 1
    }
  }
  return store_blocks(plain, rows, k);
}

} // namespace phimoe_test

#endif // PHIMOE_TEST_GPU_TEST_WEIGHTS_H
