// pack_format.h - the layout of weights.phw, shared by phimoec's packer and phimoe-bin.
//
// [PackHeader][tensor table: JSON, table_bytes long][zero padding][data: data_bytes]
// data_offset is a multiple of kPackAlignment; each tensor's offset within the data
// section is what the generated code uses (phimoe-plan-memory decides them).
#ifndef PHIMOE_RT_PACK_FORMAT_H
#define PHIMOE_RT_PACK_FORMAT_H

#include <cstdint>

namespace phimoe_rt {

constexpr char kPackMagic[8] = {'P', 'H', 'I', 'M', 'O', 'E', 'W', '\0'};
// 2: q4_K, q8_0 and q6_K matrices of CPU builds in groups of 16 interleaved rows
// (block_q4k_16rows, block_q8_0_16rows, block_q6k_16rows; the table entry says "layout":
// "rows16").
constexpr uint32_t kPackVersion = 2;
constexpr uint64_t kPackAlignment = 4096;

struct PackHeader {
  char magic[8];
  uint32_t version;
  uint32_t num_tensors;
  uint64_t model_hash;  // must equal phimoe_model_info.hash
  uint64_t table_bytes; // the JSON table right after this header
  uint64_t data_offset; // from the start of the file
  uint64_t data_bytes;
  uint64_t reserved[2];
};
static_assert(sizeof(PackHeader) == 64, "PackHeader is 64 bytes");

} // namespace phimoe_rt

#endif // PHIMOE_RT_PACK_FORMAT_H
