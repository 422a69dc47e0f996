// phimoe_pack.cpp - phimoe-pack: writes weights.phw from a pack plan and a Hugging Face
// checkpoint, without MLIR. The plan (pack-plan.json, written by phimoec --emit-project) says
// which checkpoint tensors make each weight, in which storage and at which offset; the bytes
// are those phimoec's own packer writes (same conversions, same quantizers, same layouts).
//
//   phimoe-pack PLAN.json CHECKPOINT_DIR OUT.phw
#include "mini_json.h"
#include "phimoe_rt/pack_format.h"
#include "phimoe_rt/quant.h"
#include "phimoe_rt/runtime.h"
#include "phimoe_rt/split_layout.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <sstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

using phimoe_tools::Json;
using phimoe_tools::parse_json;

namespace {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string read_file(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

const Json &field(const Json &object, const std::string &key, Json::Kind kind,
                  const std::string &where) {
  const Json *v = object.find(key);
  if (!v || v->kind != kind)
    throw Error(where + ": field '" + key + "' is missing or has the wrong type");
  return *v;
}
uint64_t unsigned_field(const Json &object, const std::string &key, const std::string &where) {
  const Json &v = field(object, key, Json::Number, where);
  if (!v.integral || v.negative)
    throw Error(where + ": field '" + key + "' is not a non-negative integer");
  return v.magnitude;
}

enum class DType { F32, F16, BF16 };

// One tensor of a safetensors file, mapped.
struct Tensor {
  DType dtype;
  const uint8_t *data;
  uint64_t count;
  size_t element_size() const { return dtype == DType::F32 ? 4 : 2; }
};

class MappedFile {
public:
  explicit MappedFile(const std::string &path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      throw Error(path + ": cannot open: " + std::strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
      ::close(fd);
      throw Error(path + ": cannot stat: " + std::strerror(errno));
    }
    size_ = static_cast<size_t>(st.st_size);
    map_ = size_ ? mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0) : nullptr;
    ::close(fd);
    if (map_ == MAP_FAILED)
      throw Error(path + ": cannot map: " + std::strerror(errno));
  }
  ~MappedFile() {
    if (map_)
      munmap(map_, size_);
  }
  const uint8_t *data() const { return static_cast<const uint8_t *>(map_); }
  size_t size() const { return size_; }
  const std::string &path() const { return path_; }
  // Drops the pages of [p, p + bytes) (they are read again from the file when needed).
  void release(const uint8_t *p, size_t bytes) const {
    const uintptr_t page = 4096, begin = reinterpret_cast<uintptr_t>(p) / page * page;
    const uintptr_t end = reinterpret_cast<uintptr_t>(p) + bytes;
    if (end > begin)
      madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
  }

private:
  std::string path_;
  void *map_ = nullptr;
  size_t size_ = 0;
};

// The tensors of a checkpoint directory: model.safetensors, or the shards that
// model.safetensors.index.json names.
class Checkpoint {
public:
  explicit Checkpoint(const std::string &dir) : dir_(dir) {
    const std::string index = dir + "/model.safetensors.index.json";
    if (access(index.c_str(), F_OK) == 0) {
      Json json;
      try {
        json = parse_json(read_file(index));
      } catch (const std::runtime_error &e) {
        throw Error(index + ": " + e.what());
      }
      const Json &map = field(json, "weight_map", Json::Object, index);
      for (auto &[name, file] : map.fields) {
        if (file.kind != Json::String)
          throw Error(index + ": weight_map['" + name + "'] is not a file name");
        shard_of_[name] = file.text;
      }
    } else {
      open_shard("model.safetensors");
    }
  }

  const Tensor &find(const std::string &name) {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      auto shard = shard_of_.find(name);
      if (shard != shard_of_.end()) {
        open_shard(shard->second);
        it = tensors_.find(name);
      }
    }
    if (it == tensors_.end())
      throw Error(dir_ + ": tensor '" + name + "' is missing");
    return it->second.first;
  }
  const MappedFile &file_of(const std::string &name) { return *files_[tensors_.at(name).second]; }

private:
  void open_shard(const std::string &file) {
    for (auto &f : files_)
      if (f->path() == dir_ + "/" + file)
        return;
    files_.push_back(std::make_unique<MappedFile>(dir_ + "/" + file));
    const MappedFile &m = *files_.back();
    const std::string &path = m.path();
    uint64_t header = 0;
    if (m.size() < 8)
      throw Error(path + ": truncated: not a safetensors file");
    std::memcpy(&header, m.data(), 8);
    if (header > m.size() - 8)
      throw Error(path + ": header of " + std::to_string(header) + " bytes past the end");
    Json json;
    try {
      json = parse_json(std::string(reinterpret_cast<const char *>(m.data()) + 8, header));
    } catch (const std::runtime_error &e) {
      throw Error(path + ": bad header: " + e.what());
    }
    if (json.kind != Json::Object)
      throw Error(path + ": the header is not a JSON object");
    const uint64_t base = 8 + header;
    for (auto &[name, info] : json.fields) {
      if (name == "__metadata__")
        continue;
      const std::string where = path + ": tensor '" + name + "'";
      const std::string &dtype = field(info, "dtype", Json::String, where).text;
      Tensor t;
      if (dtype == "F32")
        t.dtype = DType::F32;
      else if (dtype == "F16")
        t.dtype = DType::F16;
      else if (dtype == "BF16")
        t.dtype = DType::BF16;
      else
        throw Error(where + ": dtype " + dtype + " (phimoe-pack reads F32, F16, BF16)");
      t.count = 1;
      for (const Json &d : field(info, "shape", Json::Array, where).items) {
        if (d.kind != Json::Number || !d.integral || d.negative)
          throw Error(where + ": bad shape");
        t.count *= d.magnitude;
      }
      const Json &offsets = field(info, "data_offsets", Json::Array, where);
      if (offsets.items.size() != 2)
        throw Error(where + ": data_offsets is not [begin, end]");
      const uint64_t begin = offsets.items[0].magnitude, end = offsets.items[1].magnitude;
      if (end < begin || base + end > m.size() || end - begin != t.count * t.element_size())
        throw Error(where + ": data_offsets [" + std::to_string(begin) + ", " +
                    std::to_string(end) + ") do not match its shape or the file size");
      t.data = m.data() + base + begin;
      tensors_[name] = {t, files_.size() - 1};
    }
  }

  std::string dir_;
  std::map<std::string, std::string> shard_of_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, std::pair<Tensor, size_t>> tensors_;
};

void to_float(const Tensor &t, uint64_t begin, size_t count, float *out) {
  const uint8_t *in = t.data + begin * t.element_size();
  for (size_t i = 0; i < count; ++i) {
    if (t.dtype == DType::F32) {
      std::memcpy(out + i, in + 4 * i, 4);
      continue;
    }
    uint16_t bits;
    std::memcpy(&bits, in + 2 * i, 2);
    out[i] = t.dtype == DType::BF16 ? phimoe_rt::to_float(phimoe_rt::bf16{bits})
                                    : phimoe_rt::f16_to_float(bits);
  }
}

class Writer {
public:
  Writer(const std::string &path) : path_(path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0)
      throw Error(path + ": cannot create: " + std::strerror(errno));
  }
  ~Writer() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  void put(const void *data, size_t bytes, uint64_t offset) {
    const char *p = static_cast<const char *>(data);
    while (bytes > 0) {
      ssize_t n = pwrite(fd_, p, bytes, static_cast<off_t>(offset));
      if (n <= 0)
        throw Error(path_ + ": write failed: " + std::strerror(errno));
      p += n;
      bytes -= static_cast<size_t>(n);
      offset += static_cast<uint64_t>(n);
    }
  }
  void resize(uint64_t bytes) {
    if (ftruncate(fd_, static_cast<off_t>(bytes)) != 0)
      throw Error(path_ + ": cannot resize: " + std::strerror(errno));
  }
  void close() {
    if (::close(fd_) != 0) {
      fd_ = -1;
      throw Error(path_ + ": write failed: " + std::strerror(errno));
    }
    fd_ = -1;
  }

private:
  std::string path_;
  int fd_ = -1;
};

// Quantizes `n` values (whole rows of `row` values) into plain blocks of `layout`'s type.
void quantize_rows(const phimoe_rt::SplitLayout &layout, const float *x, size_t n, uint64_t row,
                   uint8_t *out) {
  const size_t row_bytes = row / layout.block_values * layout.block_bytes;
  for (size_t r = 0; r < n / row; ++r) {
    const float *in = x + r * row;
    uint8_t *dst = out + r * row_bytes;
    const int64_t len = static_cast<int64_t>(row);
    if (&layout == &phimoe_rt::kSplitQ8_0)
      phimoe_rt::quantize_row_q8_0(in, reinterpret_cast<phimoe_rt::block_q8_0 *>(dst), len);
    else if (&layout == &phimoe_rt::kSplitQ4K)
      phimoe_rt::quantize_row_q4k(in, reinterpret_cast<phimoe_rt::block_q4k *>(dst), len);
    else
      phimoe_rt::quantize_row_q6k(in, reinterpret_cast<phimoe_rt::block_q6k *>(dst), len);
  }
}

// One weight of the plan: its parts converted to `storage`, one after another from `at`; a
// block-quantized weight goes in the CUDA layout with `split` (phimoe_rt/split_layout.h).
void pack_weight(const Json &w, size_t index, Checkpoint &ckpt, Writer &out, uint64_t data_offset,
                 bool split) {
  const std::string where = "pack plan: weights[" + std::to_string(index) + "]";
  const std::string &name = field(w, "name", Json::String, where).text;
  const std::string what = where + " ('" + name + "')";
  const std::string &storage = field(w, "storage", Json::String, what).text;
  const uint64_t offset = unsigned_field(w, "offset", what);
  const uint64_t bytes = unsigned_field(w, "bytes", what);
  const uint64_t row = unsigned_field(w, "row", what);
  const uint64_t root = data_offset + offset;
  const phimoe_rt::SplitLayout *blocks = phimoe_rt::split_layout(storage);
  size_t out_size = 0;
  if (storage == "f32")
    out_size = 4;
  else if (storage == "bf16" || storage == "f16")
    out_size = 2;
  else if (!blocks)
    throw Error(what + ": storage '" + storage +
                "' (phimoe-pack writes f32, bf16, f16, q8_0, q4k, q6k)");
  if (blocks && !split && blocks != &phimoe_rt::kSplitQ8_0)
    throw Error(what + ": storage '" + storage + "' in the cpu layout (phimoe-pack writes " +
                storage + " only in the cuda layout)");
  if (blocks && (row == 0 || row % blocks->block_values != 0))
    throw Error(what + ": rows of " + std::to_string(row) + " values are not whole " + storage +
                " blocks");
  const uint64_t root_blocks = blocks ? bytes / blocks->block_bytes : 0;

  uint64_t done = 0; // values of the weight written so far
  std::vector<float> floats;
  std::vector<uint8_t> buffer, scratch;
  for (const Json &part : field(w, "parts", Json::Array, what).items) {
    if (part.kind != Json::String)
      throw Error(what + ": a part is not a tensor name");
    const Tensor &t = ckpt.find(part.text);
    if (blocks && t.count % row != 0)
      throw Error(what + ": tensor '" + part.text + "' is not whole rows of " +
                  std::to_string(row));
    // 1M values per step (whole rows for block storages).
    const uint64_t step = blocks ? std::max<uint64_t>(1, (1u << 20) / row) * row : (1u << 20);
    for (uint64_t begin = 0; begin < t.count; begin += step) {
      const size_t n = static_cast<size_t>(std::min(step, t.count - begin));
      floats.resize(n);
      to_float(t, begin, n, floats.data());
      const uint64_t first = done + begin; // value index within the weight
      if (!blocks) {
        buffer.resize(n * out_size);
        for (size_t i = 0; i < n; ++i) {
          if (out_size == 4) {
            std::memcpy(buffer.data() + 4 * i, &floats[i], 4);
          } else {
            const uint16_t bits = storage == "bf16" ? phimoe_rt::float_to_bf16(floats[i]).bits
                                                    : phimoe_rt::float_to_f16(floats[i]).bits;
            std::memcpy(buffer.data() + 2 * i, &bits, 2);
          }
        }
        if ((first + n) * out_size > bytes)
          throw Error(what + ": its parts hold more values than its " + std::to_string(bytes) +
                      " bytes");
        out.put(buffer.data(), buffer.size(), root + first * out_size);
        continue;
      }
      const size_t count = n / blocks->block_values;
      buffer.resize(count * blocks->block_bytes);
      quantize_rows(*blocks, floats.data(), n, row, buffer.data());
      const uint64_t first_block = first / blocks->block_values;
      if (first_block + count > root_blocks)
        throw Error(what + ": its parts hold more values than its " + std::to_string(bytes) +
                    " bytes");
      if (!split) {
        out.put(buffer.data(), buffer.size(), root + first_block * blocks->block_bytes);
        continue;
      }
      phimoe_rt::put_split(*blocks, buffer.data(), count, first_block, root_blocks, scratch,
                           [&](uint64_t at, const uint8_t *data, size_t size) {
                             out.put(data, size, root + at);
                           });
    }
    ckpt.file_of(part.text).release(t.data, t.count * t.element_size());
    done += t.count;
  }
  const uint64_t written =
      blocks ? done / blocks->block_values * blocks->block_bytes : done * out_size;
  if (written != bytes)
    throw Error(what + ": its parts make " + std::to_string(written) + " bytes, the plan says " +
                std::to_string(bytes));
}

void pack(const std::string &plan_path, const std::string &checkpoint,
          const std::string &out_path) {
  Json plan;
  try {
    plan = parse_json(read_file(plan_path));
  } catch (const Error &) {
    throw;
  } catch (const std::runtime_error &e) {
    throw Error(plan_path + ": not JSON: " + e.what());
  }
  const std::string where = plan_path;
  if (field(plan, "format", Json::String, where).text != "phimoe-pack-plan")
    throw Error(where + ": not a phimoe pack plan (format)");
  if (unsigned_field(plan, "version", where) != 1)
    throw Error(where + ": pack plan version " +
                std::to_string(unsigned_field(plan, "version", where)) +
                ", this phimoe-pack reads version 1");
  const std::string &layout = field(plan, "layout", Json::String, where).text;
  if (layout != "cpu" && layout != "cuda")
    throw Error(where + ": layout '" + layout + "' (expected cpu or cuda)");
  const std::string &table = field(plan, "table", Json::String, where).text;
  const Json &weights = field(plan, "weights", Json::Array, where);

  phimoe_rt::PackHeader header{};
  std::memcpy(header.magic, phimoe_rt::kPackMagic, sizeof header.magic);
  header.version = phimoe_rt::kPackVersion;
  header.num_tensors = static_cast<uint32_t>(weights.items.size());
  header.model_hash = unsigned_field(plan, "model_hash", where);
  header.table_bytes = table.size();
  const uint64_t align = phimoe_rt::kPackAlignment;
  header.data_offset = (sizeof header + table.size() + align - 1) / align * align;
  header.data_bytes = unsigned_field(plan, "data_bytes", where);

  Checkpoint ckpt(checkpoint);
  Writer out(out_path);
  out.resize(header.data_offset + header.data_bytes);
  out.put(&header, sizeof header, 0);
  out.put(table.data(), table.size(), sizeof header);
  for (size_t i = 0; i < weights.items.size(); ++i) {
    const Json &w = weights.items[i];
    if (unsigned_field(w, "offset", where) + unsigned_field(w, "bytes", where) > header.data_bytes)
      throw Error(where + ": weights[" + std::to_string(i) + "] ends past data_bytes");
    pack_weight(w, i, ckpt, out, header.data_offset, layout == "cuda");
  }
  out.close();
}

} // namespace

int main(int argc, char **argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: phimoe-pack PLAN.json CHECKPOINT_DIR OUT.phw\n"
                         "writes the weights.phw that the plan (phimoec --emit-project) "
                         "describes, from a Hugging Face checkpoint directory\n");
    return 2;
  }
  try {
    pack(argv[1], argv[2], argv[3]);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "phimoe-pack: error: %s\n", e.what());
    (void)unlink(argv[3]);
    return 1;
  }
  return 0;
}
