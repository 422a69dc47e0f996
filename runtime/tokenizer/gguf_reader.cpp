// gguf_reader.cpp - a bounds-checked reader of GGUF headers and metadata key/value pairs.
#include "gguf_reader.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <type_traits>

namespace phimoe_rt::tok {

const char *gguf_type_name(gguf_type t) {
  switch (t) {
  case gguf_type::u8:
    return "uint8";
  case gguf_type::i8:
    return "int8";
  case gguf_type::u16:
    return "uint16";
  case gguf_type::i16:
    return "int16";
  case gguf_type::u32:
    return "uint32";
  case gguf_type::i32:
    return "int32";
  case gguf_type::f32:
    return "float32";
  case gguf_type::boolean:
    return "bool";
  case gguf_type::string:
    return "string";
  case gguf_type::array:
    return "array";
  case gguf_type::u64:
    return "uint64";
  case gguf_type::i64:
    return "int64";
  case gguf_type::f64:
    return "float64";
  }
  return "unknown";
}

bool gguf_value::is_integer() const {
  switch (type) {
  case gguf_type::u8:
  case gguf_type::i8:
  case gguf_type::u16:
  case gguf_type::i16:
  case gguf_type::u32:
  case gguf_type::i32:
  case gguf_type::u64:
  case gguf_type::i64:
  case gguf_type::boolean:
    return true;
  default:
    return false;
  }
}

const gguf_value *gguf_metadata::find(const std::string &key) const {
  auto it = values.find(key);
  return it == values.end() ? nullptr : &it->second;
}

namespace {

// Reads little-endian values from a file, failing (once) with a message on a short read.
class reader {
public:
  reader(std::ifstream &in, uint64_t size) : in_(in), size_(size) {}

  bool bytes(void *dst, uint64_t n) {
    if (failed_ || n > size_ - pos_)
      return fail_short();
    in_.read(static_cast<char *>(dst), static_cast<std::streamsize>(n));
    if (!in_)
      return fail_short();
    pos_ += n;
    return true;
  }
  template <typename T> bool num(T &v) {
    unsigned char b[sizeof(T)];
    if (!bytes(b, sizeof b))
      return false;
    uint64_t u = 0;
    for (size_t k = sizeof(T); k-- > 0;)
      u = u << 8 | b[k];
    if constexpr (sizeof(T) == 8) {
      std::memcpy(&v, &u, 8);
    } else {
      auto narrow =
          static_cast<std::conditional_t<sizeof(T) == 4, uint32_t,
                                         std::conditional_t<sizeof(T) == 2, uint16_t, uint8_t>>>(u);
      std::memcpy(&v, &narrow, sizeof(T));
    }
    return true;
  }
  bool str(std::string &s) {
    uint64_t n = 0;
    if (!num(n))
      return false;
    if (n > size_ - pos_)
      return fail_short();
    s.resize(n);
    return n == 0 || bytes(s.data(), n);
  }
  uint64_t remaining() const { return size_ - pos_; }
  uint64_t pos() const { return pos_; }

private:
  bool fail_short() {
    failed_ = true;
    return false;
  }
  std::ifstream &in_;
  uint64_t size_, pos_ = 0;
  bool failed_ = false;
};

uint64_t min_size(gguf_type t) {
  switch (t) {
  case gguf_type::u8:
  case gguf_type::i8:
  case gguf_type::boolean:
    return 1;
  case gguf_type::u16:
  case gguf_type::i16:
    return 2;
  case gguf_type::u32:
  case gguf_type::i32:
  case gguf_type::f32:
    return 4;
  case gguf_type::u64:
  case gguf_type::i64:
  case gguf_type::f64:
  case gguf_type::string:
    return 8;
  case gguf_type::array:
    return 12;
  }
  return 1;
}

bool valid_type(uint32_t t) { return t <= 12; }

// Reads a T and stores it widened to int64 (integers, bools) or double (floats).
template <typename T, typename D> bool read_as(reader &r, D &dst) {
  T x;
  if (!r.num(x))
    return false;
  dst = static_cast<D>(x);
  return true;
}

// Reads one scalar of type t into v (integers to v.i, floats to v.f, strings to v.str).
bool read_scalar(reader &r, gguf_type t, gguf_value &v) {
  switch (t) {
  case gguf_type::u8:
    return read_as<uint8_t>(r, v.i);
  case gguf_type::i8:
    return read_as<int8_t>(r, v.i);
  case gguf_type::u16:
    return read_as<uint16_t>(r, v.i);
  case gguf_type::i16:
    return read_as<int16_t>(r, v.i);
  case gguf_type::u32:
    return read_as<uint32_t>(r, v.i);
  case gguf_type::i32:
    return read_as<int32_t>(r, v.i);
  case gguf_type::u64:
    return read_as<uint64_t>(r, v.i);
  case gguf_type::i64:
    return read_as<int64_t>(r, v.i);
  case gguf_type::f32:
    return read_as<float>(r, v.f);
  case gguf_type::f64:
    return read_as<double>(r, v.f);
  case gguf_type::boolean:
    if (!read_as<uint8_t>(r, v.i))
      return false;
    v.i = v.i != 0;
    return true;
  case gguf_type::string:
    return r.str(v.str);
  case gguf_type::array:
    return false;
  }
  return false;
}

// Reads an array (after its type tag); nested arrays are read through and only counted.
bool read_array(reader &r, gguf_value &v, std::string &why, int depth) {
  uint32_t et = 0;
  uint64_t n = 0;
  if (!r.num(et) || !r.num(n))
    return false;
  if (!valid_type(et)) {
    why = "unknown array element type " + std::to_string(et);
    return false;
  }
  v.elem = static_cast<gguf_type>(et);
  v.count = n;
  if (n > r.remaining() / min_size(v.elem)) {
    why = "array of " + std::to_string(n) + " elements is longer than the file";
    return false;
  }
  gguf_value e;
  for (uint64_t k = 0; k < n; ++k) {
    if (v.elem == gguf_type::array) {
      if (depth > 8) {
        why = "arrays nested too deeply";
        return false;
      }
      gguf_value inner;
      if (!read_array(r, inner, why, depth + 1))
        return false;
      continue;
    }
    if (!read_scalar(r, v.elem, e))
      return false;
    if (v.elem == gguf_type::string)
      v.strings.push_back(std::move(e.str));
    else if (v.elem == gguf_type::f32 || v.elem == gguf_type::f64)
      v.floats.push_back(e.f);
    else
      v.ints.push_back(e.i);
  }
  return true;
}

} // namespace

std::optional<gguf_metadata> read_gguf_metadata(const std::string &path, std::string &error) {
  return read_gguf(path, error, false);
}

std::optional<gguf_metadata> read_gguf(const std::string &path, std::string &error,
                                       bool with_tensors) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot open (" + std::strerror(errno) + ")";
    return std::nullopt;
  }
  in.seekg(0, std::ios::end);
  auto size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  reader r(in, size);
  char magic[4];
  if (!r.bytes(magic, 4) || std::memcmp(magic, "GGUF", 4) != 0) {
    error = path + ": not a GGUF file (no \"GGUF\" magic at the start)";
    return std::nullopt;
  }
  gguf_metadata m;
  uint64_t kv_count = 0;
  if (!r.num(m.version)) {
    error = path + ": truncated GGUF header";
    return std::nullopt;
  }
  if (m.version != 2 && m.version != 3) {
    if ((m.version & 0xFFFF) == 0 && m.version != 0)
      error = path + ": a big-endian GGUF file; only little-endian files are supported";
    else
      error = path + ": GGUF version " + std::to_string(m.version) +
              " is not supported (only versions 2 and 3)";
    return std::nullopt;
  }
  if (!r.num(m.tensor_count) || !r.num(kv_count)) {
    error = path + ": truncated GGUF header";
    return std::nullopt;
  }
  if (kv_count > r.remaining() / 12) {
    error = path + ": corrupt GGUF header (" + std::to_string(kv_count) +
            " metadata entries cannot fit in the file)";
    return std::nullopt;
  }
  for (uint64_t k = 0; k < kv_count; ++k) {
    const uint64_t begin = r.pos();
    std::string key;
    if (!r.str(key)) {
      error = path + ": truncated while reading the name of metadata entry " + std::to_string(k);
      return std::nullopt;
    }
    uint32_t type = 0;
    gguf_value v;
    std::string why;
    bool ok = r.num(type);
    if (ok && !valid_type(type)) {
      why = "unknown value type " + std::to_string(type);
      ok = false;
    }
    if (ok) {
      v.type = static_cast<gguf_type>(type);
      ok = v.type == gguf_type::array ? read_array(r, v, why, 0) : read_scalar(r, v.type, v);
    }
    if (!ok) {
      if (why.empty())
        why = "truncated";
      error = path + ": metadata '" + key + "': " + why;
      return std::nullopt;
    }
    v.entry_begin = begin;
    v.entry_end = r.pos();
    m.values[key] = std::move(v);
  }
  if (!with_tensors)
    return m;

  m.file_size = size;
  if (const gguf_value *a = m.find("general.alignment")) {
    if (!a->is_integer() || a->type == gguf_type::boolean || a->i <= 0 || (a->i & (a->i - 1))) {
      error = path + ": metadata 'general.alignment' is not a power of two";
      return std::nullopt;
    }
    m.alignment = static_cast<uint64_t>(a->i);
  }
  // A tensor entry takes at least 8 + 4 + 8 + 4 + 8 bytes.
  if (m.tensor_count > r.remaining() / 32) {
    error = path + ": corrupt GGUF header (" + std::to_string(m.tensor_count) +
            " tensors cannot fit in the file)";
    return std::nullopt;
  }
  for (uint64_t k = 0; k < m.tensor_count; ++k) {
    gguf_tensor t;
    uint32_t n_dims = 0;
    if (!r.str(t.name) || !r.num(n_dims)) {
      error = path + ": truncated in the tensor table (entry " + std::to_string(k) + ")";
      return std::nullopt;
    }
    const std::string where = path + ": tensor '" + t.name + "'";
    if (n_dims == 0 || n_dims > 4) {
      error = where + ": " + std::to_string(n_dims) + " dimensions (GGUF allows 1 to 4)";
      return std::nullopt;
    }
    t.dims.resize(n_dims);
    for (uint64_t &d : t.dims)
      if (!r.num(d)) {
        error = where + ": truncated in the tensor table";
        return std::nullopt;
      }
    if (!r.num(t.type) || !r.num(t.offset)) {
      error = where + ": truncated in the tensor table";
      return std::nullopt;
    }
    for (uint64_t d : t.dims)
      if (d == 0 || d > (uint64_t{1} << 40)) {
        error = where + ": a dimension of " + std::to_string(d);
        return std::nullopt;
      }
    if (t.offset % m.alignment != 0) {
      error = where + ": data offset " + std::to_string(t.offset) + " is not a multiple of " +
              "the alignment " + std::to_string(m.alignment);
      return std::nullopt;
    }
    m.tensors.push_back(std::move(t));
  }
  m.data_offset = (r.pos() + m.alignment - 1) / m.alignment * m.alignment;
  if (m.data_offset > size && m.tensor_count > 0) {
    error = path + ": truncated: no data section after the tensor table";
    return std::nullopt;
  }
  return m;
}

} // namespace phimoe_rt::tok
