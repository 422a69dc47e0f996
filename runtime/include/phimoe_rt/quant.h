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
