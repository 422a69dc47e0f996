//===- GgufBlocks.h - values of llama.cpp's block formats -------*- C++ -*-===//
//
// The block formats a GGUF file may hold, dequantized to floats for the packer: those
// phimoec also has kernels for (Q8_0, Q4_K, Q6_K: phimoe_rt's dequantizers) and those it
// reads only to store them otherwise (Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q5_K). The
// layouts are ggml's (ggml-common.h); every value is computed in float as ggml's reference
// dequantizers compute it.
//
//===----------------------------------------------------------------------===//

#ifndef PHIMOE_COMPILER_FRONTEND_GGUFBLOCKS_H
#define PHIMOE_COMPILER_FRONTEND_GGUFBLOCKS_H

#include "compiler/frontend/Safetensors.h"

namespace phimoe {

/// Writes the `n` values (a whole number of blocks) that the blocks at `in` hold to
/// `out`. `dtype` must be a block format.
void dequantizeBlocks(DType dtype, const uint8_t *in, float *out, int64_t n);

} // namespace phimoe

#endif // PHIMOE_COMPILER_FRONTEND_GGUFBLOCKS_H
