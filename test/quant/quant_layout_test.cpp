// quant_layout_test.cpp - dequantization of hand-built blocks laid out as llama.cpp lays them out.
#include "quant_test_util.h"

#include "phimoe_rt/runtime.h"

#include <cstddef>
#include <cstring>

using namespace phimoe_rt;

namespace {

uint16_t half(float v) { return float_to_f16(v).bits; }

TEST(QuantLayout, BlockSizesMatchLlamaCpp) {
  EXPECT_EQ(sizeof(block_q8_0), 34u);
  EXPECT_EQ(sizeof(block_q4k), 144u);
  EXPECT_EQ(sizeof(block_q6k), 210u);
  EXPECT_EQ(row_bytes_q8_0(4096), 4096u / 32 * 34);
  EXPECT_EQ(row_bytes_q4k(4096), 4096u / 256 * 144);
  EXPECT_EQ(row_bytes_q6k(4096), 4096u / 256 * 210);
  // Field offsets: q4_K is d, dmin, scales, qs; q6_K is ql, qh, scales, d.
  EXPECT_EQ(offsetof(block_q4k, scales), 4u);
  EXPECT_EQ(offsetof(block_q4k, qs), 16u);
  EXPECT_EQ(offsetof(block_q6k, qh), 128u);
  EXPECT_EQ(offsetof(block_q6k, scales), 192u);
  EXPECT_EQ(offsetof(block_q6k, d), 208u);
}

TEST(QuantLayout, Q8_0) {
  block_q8_0 b[2];
  for (int k = 0; k < 2; ++k) {
    b[k].d = half(k ? -0.75f : 0.5f);
    for (int i = 0; i < 32; ++i)
      b[k].qs[i] = static_cast<int8_t>(k ? 127 - 8 * i : i - 16);
  }
  float y[64];
  dequantize_row_q8_0(b, y, 64);
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(y[i], 0.5f * (i - 16)) << i;
    EXPECT_EQ(y[32 + i], -0.75f * (127 - 8 * i)) << i;
  }
}

// q4_K's 12 scale bytes: 6-bit sc[0..3] and m[0..3] in bytes 0-3 and 4-7, whose top
// 2 bits carry bits 4-5 of sc[4..7] and m[4..7]; bytes 8-11 hold their low nibbles
// (sc low, m high).
void pack_q4k_scales(const int *sc, const int *m, uint8_t *out) {
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    out[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    out[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
}

TEST(QuantLayout, Q4K) {
  int sc[8], m[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = 10 + 7 * j; // 10 .. 59: the high bits matter for j >= 1
    m[j] = 63 - 5 * j;
  }
  int q[256];
  for (int i = 0; i < 256; ++i)
    q[i] = (i * 7 + 3) % 16;
  block_q4k b;
  b.d = half(0.25f);
  b.dmin = half(-0.125f);
  pack_q4k_scales(sc, m, b.scales);
  // Each 32 bytes: values 64c + l in the low nibbles, 64c + 32 + l in the high ones.
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      b.qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  float y[256];
  dequantize_row_q4k(&b, y, 256);
  for (int i = 0; i < 256; ++i)
    EXPECT_EQ(y[i], 0.25f * sc[i / 32] * q[i] + 0.125f * m[i / 32]) << i;
}

TEST(QuantLayout, Q6K) {
  int8_t sc[16];
  for (int j = 0; j < 16; ++j)
    sc[j] = static_cast<int8_t>((j * 37) % 256 - 128); // -128 .. 127, both signs
  int q[256]; // stored 6-bit values, x = d * sc * (q - 32)
  for (int i = 0; i < 256; ++i)
    q[i] = (i * 11 + 5) % 64;
  block_q6k b;
  std::memset(&b, 0, sizeof b);
  b.d = half(0.5f);
  std::memcpy(b.scales, sc, 16);
  // Per half of 128 values: ql byte l holds values l (low) and l + 64 (high nibble),
  // byte l + 32 values l + 32 and l + 96; qh byte l the high 2 bits of values l,
  // l + 32, l + 64, l + 96 from the low bits up.
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const int *v = q + 128 * h + l;
      b.ql[64 * h + l] = static_cast<uint8_t>((v[0] & 15) | ((v[64] & 15) << 4));
      b.ql[64 * h + l + 32] = static_cast<uint8_t>((v[32] & 15) | ((v[96] & 15) << 4));
      b.qh[32 * h + l] = static_cast<uint8_t>((v[0] >> 4) | ((v[32] >> 4) << 2) |
                                              ((v[64] >> 4) << 4) | ((v[96] >> 4) << 6));
    }
  float y[256];
  dequantize_row_q6k(&b, y, 256);
  for (int i = 0; i < 256; ++i)
    EXPECT_EQ(y[i], 0.5f * sc[i / 16] * (q[i] - 32)) << i;
}

// A row of several blocks is its blocks one after another: quantizing a row equals
// quantizing each block's values alone (what lets the packer cut rows anywhere on a
// block boundary, and write a derived weight part by part).
TEST(QuantLayout, RowsAreBlocksInOrder) {
  const uint32_t seed = quant_test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  using quant_test::q4k, quant_test::q6k, quant_test::q8_0;
  for (const quant_test::Format *f : {&q8_0(), &q4k(), &q6k()}) {
    SCOPED_TRACE(f->name);
    const size_t n = 4 * 256;
    std::vector<float> x = quant_test::gaussian(rng, n);
    std::vector<uint8_t> whole = f->quantize_row(x);
    const size_t block_bytes = f->row_bytes(f->block);
    for (size_t b = 0; b < n / f->block; ++b) {
      std::vector<float> part(x.begin() + b * f->block, x.begin() + (b + 1) * f->block);
      std::vector<uint8_t> alone = f->quantize_row(part);
      ASSERT_EQ(0, std::memcmp(alone.data(), whole.data() + b * block_bytes, block_bytes)) << b;
    }
    EXPECT_EQ(whole, f->quantize_row(x)) << "not deterministic";
  }
}

} // namespace
