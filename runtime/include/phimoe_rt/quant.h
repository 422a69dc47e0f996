// quant.h - llama.cpp's block formats (q8_0, q4_K, q6_K, and q8_K for activations):
// layouts, quantization of weight rows (for the packer) and dequantization.
// The per-token parts (activation quantization, dot products) are inline SIMD in
// quant_kernels.h, so that they are compiled for the model's target with the
// generated code.
//
// The layouts are llama.cpp's (a public file-format fact: GGUF tensors of these
// types have exactly these bytes); the code is ours.
#ifndef PHIMOE_RT_QUANT_H
#define PHIMOE_RT_QUANT_H

#include <cstddef>
#include <cstdint>

namespace phimoe_rt {

constexpr int kQK8_0 = 32;  // elements per q8_0 block
constexpr int kQK_K = 256;  // elements per k-quant super-block

// 32 values: x = d * qs[i].
struct block_q8_0 {
  uint16_t d; // f16
  int8_t qs[kQK8_0];
};
static_assert(sizeof(block_q8_0) == 34, "q8_0 block");

// 256 values in 8 sub-blocks of 32: x = d * sc[j] * q - dmin * m[j], q in [0, 15];
// sc and m are 6-bit, packed into `scales` as llama.cpp packs them.
struct block_q4k {
  uint16_t d;    // f16 super-block scale of the scales
  uint16_t dmin; // f16 super-block scale of the mins
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2]; // 4-bit quants, llama.cpp's nibble order
};
static_assert(sizeof(block_q4k) == 144, "q4_K block");

// 256 values in 16 sub-blocks of 16: x = d * scales[j] * (q - 32), q 6-bit split
// into 4 low bits (ql) and 2 high bits (qh), as llama.cpp lays them out.
struct block_q6k {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d; // f16
};
static_assert(sizeof(block_q6k) == 210, "q6_K block");

// Activations for k-quant dot products: 256 values, x = d * qs[i]; bsums[j] is the
// sum of qs over the j-th group of 16.
struct block_q8k {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};
static_assert(sizeof(block_q8k) == 292, "q8_K block");

// q4_K for the CPU's matrix kernels: 16 weight rows interleaved, so that a 512-bit vector
// holds 4 quants of each of the 16 rows and its 32-bit lanes are rows (no lanes to fold
// after a dot product). block_q4k_16rows is super-block b of 16 rows (the bytes of their 16
// block_q4k, rearranged): group g of a matrix of nb super-blocks a row is the 16 * nb *
// 144 bytes where its plain rows 16g .. 16g+15 would be, its super-blocks in order.
//   d, dmin: row r's f16 scales at [r];
//   scales[p][r]: bytes 4p .. 4p+3 of row r's 12 scale bytes (as block_q4k packs them);
//   qs[8c + k][4r + i] = row r's qs[32c + 4k + i] (c = 0..3, k = 0..7, i = 0..3): the low
//   nibble is value 64c + 4k + i, the high nibble value 64c + 32 + 4k + i.
// This layout is ours (llama.cpp's own repacking is another); a row's values and scales
// are exactly its block_q4k's.
struct block_q4k_16rows {
  uint16_t d[16];
  uint16_t dmin[16];
  uint32_t scales[3][16];
  uint8_t qs[32][64];
};
static_assert(sizeof(block_q4k_16rows) == 16 * sizeof(block_q4k), "16 q4_K blocks");

// The element type of an interleaved q4_K matrix as generated code declares it: a row's
// share (144 bytes) of a group, so that pointer arithmetic in rows stays that of block_q4k
// (row 16g of the matrix is where group g starts).
struct block_q4k_x16 {
  uint8_t bytes[sizeof(block_q4k)];
};
static_assert(sizeof(block_q4k_x16) == sizeof(block_q4k), "a row's share of a q4_K group");

// rows: 16 rows of nb blocks each, one after another; out: their nb interleaved blocks.
void interleave_q4k16(const block_q4k *rows, int64_t nb, block_q4k_16rows *out);
// The inverse: the 16 rows of nb plain blocks each.
void deinterleave_q4k16(const block_q4k_16rows *in, int64_t nb, block_q4k *rows);

// q8_0 for the CPU's matrix kernels, interleaved the same way: block b of 16 rows.
//   d: row r's f16 scale at [r];
//   qs[k][4r + i] = row r's qs[4k + i] + 128 (k = 0..7, i = 0..3), as unsigned bytes: the
//   u8 operand of the integer dot products (the activations' sums take the 128 back out).
struct block_q8_0_16rows {
  uint16_t d[16];
  uint8_t qs[8][64];
};
static_assert(sizeof(block_q8_0_16rows) == 16 * sizeof(block_q8_0), "16 q8_0 blocks");

// A row's share (34 bytes) of an interleaved q8_0 group, as block_q4k_x16 is for q4_K.
struct block_q8_0_x16 {
  uint8_t bytes[sizeof(block_q8_0)];
};
static_assert(sizeof(block_q8_0_x16) == sizeof(block_q8_0), "a row's share of a q8_0 group");

// q6_K interleaved the same way: super-block b of 16 rows, its quant bits in the order the
// kernels read them (one forward stream per group, as decode's memory prefetch needs):
//   q[3n + e][4r + i], n = 8h + k (h = 0..1, k = 0..7): row r's ql[64h + 4k + i] (e = 0),
//   ql[64h + 32 + 4k + i] (e = 1) and qh[32h + 4k + i] (e = 2);
//   scales[j][r]: row r's scale of sub-block j (16 values); d: row r's f16 scale at [r].
struct block_q6k_16rows {
  uint8_t q[48][64];
  int8_t scales[16][16];
  uint16_t d[16];
};
static_assert(sizeof(block_q6k_16rows) == 16 * sizeof(block_q6k), "16 q6_K blocks");

struct block_q6k_x16 {
  uint8_t bytes[sizeof(block_q6k)];
};
static_assert(sizeof(block_q6k_x16) == sizeof(block_q6k), "a row's share of a q6_K group");

void interleave_q6k16(const block_q6k *rows, int64_t nb, block_q6k_16rows *out);
void deinterleave_q6k16(const block_q6k_16rows *in, int64_t nb, block_q6k *rows);

void interleave_q8_016(const block_q8_0 *rows, int64_t nb, block_q8_0_16rows *out);
void deinterleave_q8_016(const block_q8_0_16rows *in, int64_t nb, block_q8_0 *rows);

// Quantizes one row of n floats (n a multiple of the block size) into blocks,
// minimising the squared error as well as llama.cpp's reference quantizers do
// (never worse at the same type on the same data).
void quantize_row_q8_0(const float *x, block_q8_0 *y, int64_t n);
void quantize_row_q4k(const float *x, block_q4k *y, int64_t n);
void quantize_row_q6k(const float *x, block_q6k *y, int64_t n);

void dequantize_row_q8_0(const block_q8_0 *x, float *y, int64_t n);
void dequantize_row_q4k(const block_q4k *x, float *y, int64_t n);
void dequantize_row_q6k(const block_q6k *x, float *y, int64_t n);

// Bytes of one row of n elements in each format.
inline size_t row_bytes_q8_0(int64_t n) { return static_cast<size_t>(n / kQK8_0) * sizeof(block_q8_0); }
inline size_t row_bytes_q4k(int64_t n) { return static_cast<size_t>(n / kQK_K) * sizeof(block_q4k); }
inline size_t row_bytes_q6k(int64_t n) { return static_cast<size_t>(n / kQK_K) * sizeof(block_q6k); }

} // namespace phimoe_rt

#endif // PHIMOE_RT_QUANT_H
