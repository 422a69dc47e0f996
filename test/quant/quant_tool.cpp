// quant_tool.cpp - phimoe-quant: raw rows quantized or dequantized by phimoe_rt (for pytest).
//
//   phimoe-quant quantize   FORMAT ROW_LEN IN.f32 OUT.blocks
//   phimoe-quant dequantize FORMAT ROW_LEN IN.blocks OUT.f32
//
// FORMAT is q8_0, q4k or q6k; IN.f32 holds float32 rows of ROW_LEN values (native
// byte order), OUT.blocks the rows' blocks one after another, as weights.phw holds them.
#include "phimoe_rt/quant.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace {

struct Format {
  const char *name;
  size_t (*row_bytes)(int64_t);
  int64_t block;
  void (*quantize)(const float *, void *, int64_t);
  void (*dequantize)(const void *, float *, int64_t);
};

template <class Block, void (*Q)(const float *, Block *, int64_t)>
void quantize_as(const float *x, void *y, int64_t n) { Q(x, static_cast<Block *>(y), n); }
template <class Block, void (*D)(const Block *, float *, int64_t)>
void dequantize_as(const void *x, float *y, int64_t n) { D(static_cast<const Block *>(x), y, n); }

using namespace phimoe_rt;
const Format kFormats[] = {
    {"q8_0", row_bytes_q8_0, kQK8_0, quantize_as<block_q8_0, quantize_row_q8_0>,
     dequantize_as<block_q8_0, dequantize_row_q8_0>},
    {"q4k", row_bytes_q4k, kQK_K, quantize_as<block_q4k, quantize_row_q4k>,
     dequantize_as<block_q4k, dequantize_row_q4k>},
    {"q6k", row_bytes_q6k, kQK_K, quantize_as<block_q6k, quantize_row_q6k>,
     dequantize_as<block_q6k, dequantize_row_q6k>},
};

int usage() {
  std::fprintf(stderr, "usage: phimoe-quant {quantize|dequantize} {q8_0|q4k|q6k} ROW_LEN IN OUT\n");
  return 2;
}

} // namespace

int main(int argc, char **argv) {
  if (argc != 6)
    return usage();
  const std::string mode = argv[1];
  const Format *format = nullptr;
  for (const Format &f : kFormats)
    if (std::strcmp(f.name, argv[2]) == 0)
      format = &f;
  const int64_t n = std::atoll(argv[3]);
  if (!format || (mode != "quantize" && mode != "dequantize") || n <= 0 || n % format->block) {
    std::fprintf(stderr, "phimoe-quant: bad format, mode or row length (a multiple of %lld)\n",
                 static_cast<long long>(format ? format->block : 0));
    return usage();
  }
  std::ifstream in(argv[4], std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "phimoe-quant: cannot read %s\n", argv[4]);
    return 1;
  }
  std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t float_row = static_cast<size_t>(n) * sizeof(float), block_row = format->row_bytes(n);
  const bool quantize = mode == "quantize";
  const size_t in_row = quantize ? float_row : block_row;
  const size_t out_row = quantize ? block_row : float_row;
  if (data.size() % in_row) {
    std::fprintf(stderr, "phimoe-quant: %s: %zu bytes is not a whole number of rows of %zu\n",
                 argv[4], data.size(), in_row);
    return 1;
  }
  const size_t rows = data.size() / in_row;
  std::vector<char> out(rows * out_row);
  std::vector<float> row(static_cast<size_t>(n));
  for (size_t r = 0; r < rows; ++r) {
    if (quantize) {
      std::memcpy(row.data(), data.data() + r * in_row, float_row); // aligned copy
      format->quantize(row.data(), out.data() + r * out_row, n);
    } else {
      format->dequantize(data.data() + r * in_row, row.data(), n);
      std::memcpy(out.data() + r * out_row, row.data(), float_row);
    }
  }
  std::ofstream file(argv[5], std::ios::binary);
  file.write(out.data(), static_cast<std::streamsize>(out.size()));
  if (!file) {
    std::fprintf(stderr, "phimoe-quant: cannot write %s\n", argv[5]);
    return 1;
  }
  return 0;
}
