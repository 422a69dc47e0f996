// gguf_reader.h - reads the metadata of a GGUF file (v2/v3, little-endian) and, on request, its
// tensor table (the tokenizer reads only the metadata; phimoec's GGUF frontend both).
#ifndef PHIMOE_RT_TOKENIZER_GGUF_READER_H
#define PHIMOE_RT_TOKENIZER_GGUF_READER_H

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace phimoe_rt::tok {

enum class gguf_type : uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};
const char *gguf_type_name(gguf_type t);

// One metadata value. Scalars: integers (and bools) in `i` (u64 above INT64_MAX wraps), floats
// in `f`. Arrays: `elem` is the element type and the elements are in `strings`, `ints` or
// `floats` by kind; an array of arrays keeps only its length.
struct gguf_value {
  gguf_type type = gguf_type::u8;
  gguf_type elem = gguf_type::u8;
  int64_t i = 0;
  double f = 0;
  std::string str;
  uint64_t count = 0; // arrays
  std::vector<std::string> strings;
  std::vector<int64_t> ints;
  std::vector<double> floats;

  // Where the whole entry (key, type and value) lies in the file: [entry_begin, entry_end).
  uint64_t entry_begin = 0, entry_end = 0;

  bool is_integer() const;
  bool is_float() const { return type == gguf_type::f32 || type == gguf_type::f64; }
};

// One entry of the tensor table. dims[0] is the innermost (contiguous) dimension, as ggml's ne.
struct gguf_tensor {
  std::string name;
  std::vector<uint64_t> dims;
  uint32_t type = 0;   // a ggml_type number
  uint64_t offset = 0; // from the start of the data section
};

struct gguf_metadata {
  uint32_t version = 0;
  uint64_t tensor_count = 0;
  std::map<std::string, gguf_value> values;
  // Filled only by read_gguf(..., with_tensors = true):
  std::vector<gguf_tensor> tensors;
  uint64_t alignment = 32;  // general.alignment
  uint64_t data_offset = 0; // where the data section starts
  uint64_t file_size = 0;

  const gguf_value *find(const std::string &key) const;
};

// Reads the header and all key/value pairs; on failure says why, naming the file and the key.
std::optional<gguf_metadata> read_gguf_metadata(const std::string &path, std::string &error);
// The same, and with `with_tensors` the tensor table after the metadata (names, dimensions, types
// and offsets checked for form and against the file's size; the tensor data is not read).
std::optional<gguf_metadata> read_gguf(const std::string &path, std::string &error,
                                       bool with_tensors);

} // namespace phimoe_rt::tok

#endif // PHIMOE_RT_TOKENIZER_GGUF_READER_H
