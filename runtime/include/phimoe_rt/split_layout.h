// split_layout.h - the CUDA pack layout of block-quantized weights.
//
// A --target sm_XX build stores a q8_0, q4_K or q6_K weight of B blocks (row-major, every row
// whole blocks) field by field: for each field of the block, in the order listed below, that
// field of block 0, of block 1, ... of block B-1. The weight keeps the bytes of its B blocks
// (so the planned offsets do not change), and the quants of consecutive values sit together,
// where a GPU warp reads them with 16-byte loads (phimoe_cuda/kernels.cuh):
//
//   q8_0  (34 bytes):  qs[32] | d (f16)                          quants, then the scales
//   q4_K (144 bytes):  qs[128] | d, dmin, scales[12] (16 bytes)   quants, then 16 bytes a block
//   q6_K (210 bytes):  ql[128] | qh[64] | scales[16] | d (f16)
//
// Every region but the last starts at a multiple of 16 bytes from the weight's start.
// Host C++ only: phimoec's packer, phimoe-pack and the tests share it.
#ifndef PHIMOE_RT_SPLIT_LAYOUT_H
#define PHIMOE_RT_SPLIT_LAYOUT_H

#include "phimoe_rt/quant.h"

#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

namespace phimoe_rt {

struct SplitField {
  uint32_t offset, bytes; // where the field lies in a block
};

struct SplitLayout {
  const char *storage; // the pack table's name: q8_0, q4k, q6k
  uint32_t block_bytes, block_values;
  int count; // fields
  SplitField fields[4];
};

inline constexpr SplitLayout kSplitQ8_0{"q8_0", sizeof(block_q8_0), kQK8_0, 2, {{2, 32}, {0, 2}}};
inline constexpr SplitLayout kSplitQ4K{"q4k", sizeof(block_q4k), kQK_K, 2, {{16, 128}, {0, 16}}};
inline constexpr SplitLayout kSplitQ6K{
    "q6k", sizeof(block_q6k), kQK_K, 4, {{0, 128}, {128, 64}, {192, 16}, {208, 2}}};

// The split layout of a storage name (q8_0, q4k, q6k), or null.
inline const SplitLayout *split_layout(std::string_view storage) {
  for (const SplitLayout *l : {&kSplitQ8_0, &kSplitQ4K, &kSplitQ6K})
    if (storage == l->storage)
      return l;
  return nullptr;
}

// Where field `f` of block `block` of a weight of `total` blocks lies, from the weight's start.
inline uint64_t split_offset(const SplitLayout &l, int f, uint64_t total, uint64_t block) {
  uint64_t region = 0;
  for (int i = 0; i < f; ++i)
    region += total * l.fields[i].bytes;
  return region + block * l.fields[f].bytes;
}

// Writes `count` blocks (`blocks`: their plain bytes, consecutive), which are the blocks
// first .. first + count - 1 of a weight of `total` blocks, in the split layout: one call of
// put(offset from the weight's start, data, bytes) per field.
template <class Put>
void put_split(const SplitLayout &l, const uint8_t *blocks, uint64_t count, uint64_t first,
               uint64_t total, std::vector<uint8_t> &scratch, Put &&put) {
  for (int f = 0; f < l.count; ++f) {
    const SplitField field = l.fields[f];
    scratch.resize(count * field.bytes);
    for (uint64_t b = 0; b < count; ++b)
      std::memcpy(scratch.data() + b * field.bytes, blocks + b * l.block_bytes + field.offset,
                  field.bytes);
    put(split_offset(l, f, total, first), scratch.data(), scratch.size());
  }
}

// The inverse, for tests and tools: the plain bytes of blocks [first, first + count) of a
// weight of `total` blocks held in the split layout at `split`.
inline void get_split(const SplitLayout &l, const uint8_t *split, uint64_t first, uint64_t count,
                      uint64_t total, uint8_t *blocks) {
  for (int f = 0; f < l.count; ++f) {
    const SplitField field = l.fields[f];
    for (uint64_t b = 0; b < count; ++b)
      std::memcpy(blocks + b * l.block_bytes + field.offset,
                  split + split_offset(l, f, total, first + b), field.bytes);
  }
}

} // namespace phimoe_rt

#endif // PHIMOE_RT_SPLIT_LAYOUT_H
