//===- WeightPacker.cpp - weights.phw from a checkpoint -------------------===//

#include "codegen/WeightPacker.h"

#include "compiler/frontend/GgufBlocks.h"
#include "dialects/PhiMoE/PhiMoEOps.h"
#include "phimoe_rt/pack_format.h"
#include "phimoe_rt/quant.h"
#include "phimoe_rt/runtime.h"
#include "phimoe_rt/split_layout.h"

#include "llvm/Support/Format.h"
#include "llvm/Support/Threading.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <optional>
#include <thread>
#include <unistd.h>

using namespace mlir;
using namespace mlir::phimoe;
using llvm::Error;

namespace {

Error fail(const llvm::Twine &message) {
  return llvm::createStringError(message);
}

/// The progress bar on stderr (when it is a terminal): weights done, bytes written
/// and a percentage. add() may be called from any thread; draw() from one only.
class Progress {
public:
  Progress(bool enabled, size_t tensors, uint64_t bytes)
      : enabled(enabled), tensors(tensors), total(bytes) {}

  void startTensor(size_t index) {
    current = index + 1;
    draw(/*force=*/true);
  }
  void add(uint64_t bytes) { done.fetch_add(bytes, std::memory_order_relaxed); }
  /// Redraws at most every 100 ms unless forced.
  void draw(bool force = false) {
    if (!enabled)
      return;
    auto now = std::chrono::steady_clock::now();
    if (!force && now - last < std::chrono::milliseconds(100))
      return;
    last = now;
    uint64_t d = std::min<uint64_t>(done.load(std::memory_order_relaxed), total);
    double fraction = total ? static_cast<double>(d) / total : 1.0;
    constexpr int kWidth = 30;
    int filled = static_cast<int>(fraction * kWidth);
    std::string bar(filled, '#');
    bar.resize(kWidth, '.');
    bool giga = total >= 1e9;
    double unit = giga ? 1e9 : 1e6;
    llvm::errs() << "\rphimoec: packing [" << bar << "] " << current << "/" << tensors
                 << " weights, "
                 << llvm::format("%.2f/%.2f %s, %3d%%", d / unit, total / unit,
                                 giga ? "GB" : "MB", static_cast<int>(fraction * 100));
  }
  void finish() {
    if (!enabled)
      return;
    done.store(total);
    draw(/*force=*/true);
    llvm::errs() << "\n";
  }

private:
  bool enabled;
  size_t tensors, current = 0;
  uint64_t total;
  std::atomic<uint64_t> done{0};
  std::chrono::steady_clock::time_point last;
};

/// Checkpoint values as floats: converted, or dequantized from a GGUF's blocks (`count` a
/// whole number of blocks).
void toFloat(const uint8_t *in, ::phimoe::DType dtype, size_t count, float *out) {
  const auto n = static_cast<int64_t>(count);
  switch (dtype) {
  case ::phimoe::DType::F32:
    std::memcpy(out, in, count * 4);
    return;
  case ::phimoe::DType::BF16:
    for (size_t i = 0; i < count; ++i) {
      uint16_t bits;
      std::memcpy(&bits, in + 2 * i, 2);
      out[i] = phimoe_rt::to_float(phimoe_rt::bf16{bits});
    }
    return;
  case ::phimoe::DType::F16:
    for (size_t i = 0; i < count; ++i) {
      uint16_t bits;
      std::memcpy(&bits, in + 2 * i, 2);
      out[i] = phimoe_rt::f16_to_float(bits);
    }
    return;
  default:
    ::phimoe::dequantizeBlocks(dtype, in, out, n);
    return;
  }
}

/// The checkpoint format that holds `scheme`'s blocks as they are, if any.
std::optional<::phimoe::DType> sameBlocks(QuantScheme scheme) {
  switch (scheme) {
  case QuantScheme::Q8_0:
    return ::phimoe::DType::Q8_0;
  case QuantScheme::Q4K:
    return ::phimoe::DType::Q4_K;
  case QuantScheme::Q6K:
    return ::phimoe::DType::Q6_K;
  default:
    return std::nullopt;
  }
}

/// A block format's row quantizer (the runtime's: phimoe_rt/quant.h).
struct RowQuantizer {
  void (*quantize)(const float *x, void *y, int64_t n);
  int64_t blockValues;
  size_t blockBytes;
};

template <class Block, void (*Quantize)(const float *, Block *, int64_t)>
void quantizeInto(const float *x, void *y, int64_t n) {
  Quantize(x, static_cast<Block *>(y), n);
}

std::optional<RowQuantizer> rowQuantizer(QuantScheme scheme) {
  switch (scheme) {
  case QuantScheme::Q8_0:
    return RowQuantizer{quantizeInto<phimoe_rt::block_q8_0, phimoe_rt::quantize_row_q8_0>,
                        phimoe_rt::kQK8_0, sizeof(phimoe_rt::block_q8_0)};
  case QuantScheme::Q4K:
    return RowQuantizer{quantizeInto<phimoe_rt::block_q4k, phimoe_rt::quantize_row_q4k>,
                        phimoe_rt::kQK_K, sizeof(phimoe_rt::block_q4k)};
  case QuantScheme::Q6K:
    return RowQuantizer{quantizeInto<phimoe_rt::block_q6k, phimoe_rt::quantize_row_q6k>,
                        phimoe_rt::kQK_K, sizeof(phimoe_rt::block_q6k)};
  case QuantScheme::Q4_0:
  case QuantScheme::Q5K:
    return std::nullopt;
  }
  return std::nullopt;
}

class Packer {
public:
  Packer(ModuleOp module, const ::phimoe::Checkpoint &ckpt, int fd, const std::string &path,
         Progress &progress)
      : module(module), ckpt(ckpt), fd(fd), path(path), progress(progress),
        threads(std::max(1u, llvm::hardware_concurrency().compute_thread_count())) {}

  /// Writes `weight`, stored as `storage` (its logical shape), at `offset`.
  Error write(WeightOp weight, Type storage, uint64_t offset);
  /// Writes a whole weight (a root of the pack) at `offset`: with `splitBlocks`, a q8_0, q4_K
  /// or q6_K weight goes in the CUDA layout (field by field over all its blocks: the same bytes
  /// as its blocks, see phimoe_rt/split_layout.h), parts of a derived one included.
  Error writeRoot(WeightOp weight, uint64_t offset, bool splitBlocks) {
    auto q = dyn_cast<QWeightType>(weight.getType());
    split = splitBlocks && q ? ::phimoe_rt::split_layout(stringifyQuantScheme(q.getScheme()).str())
                             : nullptr;
    if (splitBlocks && q && !split)
      return fail("weight @" + weight.getSymName().str() + ": no CUDA layout for " +
                  stringifyQuantScheme(q.getScheme()).str());
    rootOffset = offset;
    rootBytes = getStorageBytes(weight.getType());
    if (Error e = write(weight, weight.getType(), offset))
      return e;
    if (weight->hasAttr("phimoe.rows16"))
      return interleaveRows16(weight, offset);
    return Error::success();
  }

private:
  Error writeLeaf(WeightOp weight, Type storage, uint64_t offset);
  /// `src`: the tensor's bytes (mapped, or a reordered copy: writeLeaf).
  Error writeFloats(const ::phimoe::TensorInfo &info, const uint8_t *src, Type element,
                    uint64_t offset);
  Error writeBlocks(const ::phimoe::TensorInfo &info, const uint8_t *src, QWeightType type,
                    uint64_t offset);
  Error put(const void *data, size_t bytes, uint64_t offset) {
    const char *p = static_cast<const char *>(data);
    while (bytes > 0) {
      ssize_t n = pwrite(fd, p, bytes, static_cast<off_t>(offset));
      if (n <= 0)
        return fail(path + ": write failed: " + std::strerror(errno));
      p += n;
      bytes -= n;
      offset += n;
    }
    return Error::success();
  }
  /// Rewrites the q4_K, q8_0 or q6_K root `weight` at `offset` (written row by row) in groups
  /// of 16 rows interleaved, as the CPU kernels read it (phimoe_rt::block_q4k_16rows,
  /// block_q8_0_16rows, block_q6k_16rows; the lowering marks such weights): group by group, each read back and
  /// written in place.
  Error interleaveRows16(WeightOp weight, uint64_t offset) {
    auto q = cast<QWeightType>(weight.getType());
    ArrayRef<int64_t> shape = q.getShape();
    int64_t rows = 1;
    for (int64_t d : shape.drop_back())
      rows *= d;
    if (rows % 16 != 0)
      return fail("weight @" + weight.getSymName().str() + ": " + std::to_string(rows) +
                  " rows do not make groups of 16");
    if (q.getScheme() == QuantScheme::Q4K)
      return interleaveGroups<phimoe_rt::block_q4k, phimoe_rt::block_q4k_16rows,
                              phimoe_rt::interleave_q4k16>(rows, shape.back() / phimoe_rt::kQK_K,
                                                          offset);
    if (q.getScheme() == QuantScheme::Q8_0)
      return interleaveGroups<phimoe_rt::block_q8_0, phimoe_rt::block_q8_0_16rows,
                              phimoe_rt::interleave_q8_016>(rows, shape.back() / phimoe_rt::kQK8_0,
                                                           offset);
    if (q.getScheme() == QuantScheme::Q6K)
      return interleaveGroups<phimoe_rt::block_q6k, phimoe_rt::block_q6k_16rows,
                              phimoe_rt::interleave_q6k16>(rows, shape.back() / phimoe_rt::kQK_K,
                                                          offset);
    return fail("weight @" + weight.getSymName().str() + ": no interleaved layout for " +
                stringifyQuantScheme(q.getScheme()).str());
  }
  template <class Block, class Group, void (*Interleave)(const Block *, int64_t, Group *)>
  Error interleaveGroups(int64_t rows, int64_t nb, uint64_t offset) {
    const size_t groupBytes = static_cast<size_t>(16 * nb) * sizeof(Block);
    std::vector<Block> plain(static_cast<size_t>(16 * nb));
    std::vector<Group> group(static_cast<size_t>(nb));
    for (int64_t g = 0; g < rows / 16; ++g) {
      const uint64_t at = offset + static_cast<uint64_t>(g) * groupBytes;
      if (pread(fd, plain.data(), groupBytes, static_cast<off_t>(at)) !=
          static_cast<ssize_t>(groupBytes))
        return fail(path + ": read back failed: " + std::strerror(errno));
      Interleave(plain.data(), nb, group.data());
      if (Error e = put(group.data(), groupBytes, at))
        return e;
    }
    return Error::success();
  }
  /// `bytes` bytes of blocks that the plain layout would put at `offset`, written in the split
  /// layout of the root instead (phimoe_rt::put_split).
  Error putSplit(const uint8_t *blocks, size_t bytes, uint64_t offset) {
    const uint64_t first = (offset - rootOffset) / split->block_bytes;
    std::vector<uint8_t> scratch;
    Error e = Error::success();
    ::phimoe_rt::put_split(*split, blocks, bytes / split->block_bytes, first,
                           rootBytes / split->block_bytes, scratch,
                           [&](uint64_t at, const uint8_t *data, size_t size) {
                             if (!e)
                               e = put(data, size, rootOffset + at);
                           });
    return e;
  }
  /// Drops the mapped pages of [begin, begin + count) elements of `info`.
  void release(const ::phimoe::TensorInfo &info, size_t begin, size_t count) {
    ckpt.files()[info.file]->release(info.offset + ::phimoe::dtypeBytes(info.dtype, begin),
                                     ::phimoe::dtypeBytes(info.dtype, count));
  }

  ModuleOp module;
  const ::phimoe::Checkpoint &ckpt;
  int fd;
  const std::string &path;
  Progress &progress;
  unsigned threads;
  // The CUDA layout of the root being written, when it is block-quantized for a GPU.
  const ::phimoe_rt::SplitLayout *split = nullptr;
  uint64_t rootOffset = 0;   // where the root starts in the file
  uint64_t rootBytes = 0;    // and its bytes (= its blocks' bytes)
  std::vector<float> floats;
  std::vector<uint8_t> buffer;
};

/// `storage`'s format with another logical shape.
Type withShape(Type storage, ArrayRef<int64_t> shape) {
  if (auto q = dyn_cast<QWeightType>(storage))
    return QWeightType::get(storage.getContext(), q.getScheme(), shape);
  return RankedTensorType::get(shape, cast<RankedTensorType>(storage).getElementType());
}

Error Packer::write(WeightOp weight, Type storage, uint64_t offset) {
  if (!weight.isDerived())
    return writeLeaf(weight, storage, offset);
  // Concatenation along rows and stacking are both the parts one after
  // another in row-major order.
  for (auto ref : weight.getPartsAttr().getAsRange<FlatSymbolRefAttr>()) {
    auto part = module.lookupSymbol<WeightOp>(ref);
    if (!part)
      return fail("weight @" + weight.getSymName() + ": part " + ref.getValue() +
                  " is not declared");
    Type partStorage = withShape(storage, getLogicalShape(part.getType()));
    if (Error e = write(part, partStorage, offset))
      return e;
    offset += getStorageBytes(partStorage);
  }
  return Error::success();
}

Error Packer::writeLeaf(WeightOp weight, Type storage, uint64_t offset) {
  const ::phimoe::TensorInfo *info = ckpt.find(weight.getSymName());
  if (!info)
    return fail(ckpt.dir() + ": tensor '" + weight.getSymName() + "' is missing");
  const uint8_t *src = ckpt.bytes(*info).data();
  std::vector<uint8_t> reordered;
  if (info->ropeHeadDim != 0) { // a llama GGUF's q or k: rows back in the checkpoint's order
    const int64_t rows = info->shape.front();
    const size_t rowBytes = info->numBytes / static_cast<size_t>(rows);
    reordered.resize(info->numBytes);
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(reordered.data() + r * rowBytes, src + info->sourceRow(r) * rowBytes,
                  rowBytes);
    src = reordered.data();
  }
  auto q = dyn_cast<QWeightType>(storage);
  Error e = q ? writeBlocks(*info, src, q, offset)
              : writeFloats(*info, src, cast<RankedTensorType>(storage).getElementType(),
                            offset);
  ckpt.release(*info);
  if (e)
    return fail("weight '" + weight.getSymName() + "': " + llvm::toString(std::move(e)));
  return Error::success();
}

/// f32, f16 or bf16: converted in chunks of 1M elements.
Error Packer::writeFloats(const ::phimoe::TensorInfo &info, const uint8_t *src, Type element,
                          uint64_t offset) {
  size_t outSize = element.isF32() ? 4 : 2;
  size_t count = static_cast<size_t>(info.numElements());
  constexpr size_t kChunk = 1 << 20; // a whole number of blocks of every block format
  floats.resize(std::min(kChunk, count));
  buffer.resize(std::min(kChunk, count) * outSize);
  for (size_t begin = 0; begin < count; begin += kChunk) {
    size_t n = std::min(kChunk, count - begin);
    toFloat(src + ::phimoe::dtypeBytes(info.dtype, begin), info.dtype, n, floats.data());
    for (size_t i = 0; i < n; ++i) {
      uint8_t *out = buffer.data() + i * outSize;
      if (element.isF32()) {
        std::memcpy(out, &floats[i], 4);
      } else {
        uint16_t bits = element.isBF16() ? phimoe_rt::float_to_bf16(floats[i]).bits
                                         : phimoe_rt::float_to_f16(floats[i]).bits;
        std::memcpy(out, &bits, 2);
      }
    }
    if (Error e = put(buffer.data(), n * outSize, offset + begin * outSize))
      return e;
    release(info, begin, n);
    progress.add(n * outSize);
    progress.draw();
  }
  return Error::success();
}

/// Block quantization, row by row (rows along the last dimension), on all cores:
/// each thread takes the next few rows, converts them to floats, quantizes them
/// and writes their blocks where they belong. The bytes of a row depend only on
/// that row, so the output is the same for any number of threads; each thread
/// holds a few rows, and the input pages are dropped as rows are done. Rows a GGUF
/// holds in the same format are copied as they are (quantizing their values again
/// would not give their bytes back).
Error Packer::writeBlocks(const ::phimoe::TensorInfo &info, const uint8_t *src,
                          QWeightType type, uint64_t offset) {
  std::optional<RowQuantizer> quantizer = rowQuantizer(type.getScheme());
  if (!quantizer)
    return fail("phimoec has no quantizer for " + stringifyQuantScheme(type.getScheme()));
  if (quantizer->blockValues != type.getBlockSize() ||
      static_cast<int64_t>(quantizer->blockBytes) != type.getBlockBytes())
    return fail("the " + stringifyQuantScheme(type.getScheme()) +
                " block of the dialect and of phimoe_rt differ (a phimoec bug)");
  int64_t rowLength = type.getShape().back();
  int64_t count = info.numElements();
  if (rowLength <= 0 || rowLength % quantizer->blockValues != 0 || count % rowLength != 0)
    return fail("cannot cut " + llvm::Twine(count) + " elements into rows of " +
                llvm::Twine(rowLength) + " for " + stringifyQuantScheme(type.getScheme()));
  int64_t rows = count / rowLength;
  size_t rowBytes =
      static_cast<size_t>(rowLength / quantizer->blockValues) * quantizer->blockBytes;
  const bool copy = sameBlocks(type.getScheme()) == info.dtype;
  // A few rows per step: up to 128 KiB of floats.
  int64_t batch = std::clamp<int64_t>((128 << 10) / (rowLength * 4), 1, 8);
  int64_t batches = (rows + batch - 1) / batch;
  if (batches == 0)
    return Error::success();

  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex errorMutex;
  std::string error;
  auto work = [&](bool mainThread) {
    std::vector<float> in(static_cast<size_t>(batch * rowLength));
    std::vector<uint8_t> out(batch * rowBytes);
    while (!failed.load(std::memory_order_relaxed)) {
      int64_t b = next.fetch_add(1);
      if (b >= batches)
        return;
      int64_t first = b * batch, n = std::min(batch, rows - first);
      size_t begin = static_cast<size_t>(first * rowLength);
      size_t values = static_cast<size_t>(n * rowLength);
      const uint8_t *rowsIn = src + ::phimoe::dtypeBytes(info.dtype, begin);
      if (copy) {
        std::memcpy(out.data(), rowsIn, n * rowBytes);
      } else {
        toFloat(rowsIn, info.dtype, values, in.data());
        for (int64_t r = 0; r < n; ++r)
          quantizer->quantize(in.data() + r * rowLength, out.data() + r * rowBytes, rowLength);
      }
      Error e = split ? putSplit(out.data(), n * rowBytes, offset + first * rowBytes)
                      : put(out.data(), n * rowBytes, offset + first * rowBytes);
      if (e) {
        std::lock_guard<std::mutex> lock(errorMutex);
        if (!failed.exchange(true))
          error = llvm::toString(std::move(e));
        else
          llvm::consumeError(std::move(e));
        return;
      }
      release(info, begin, values);
      progress.add(n * rowBytes);
      if (mainThread)
        progress.draw();
    }
  };
  unsigned helpers = static_cast<unsigned>(std::min<int64_t>(threads, batches)) - 1;
  std::vector<std::thread> pool;
  pool.reserve(helpers);
  for (unsigned t = 0; t < helpers; ++t)
    pool.emplace_back(work, false);
  work(true);
  for (std::thread &t : pool)
    t.join();
  if (failed)
    return fail(error);
  return Error::success();
}

/// The weights of the pack (those with a pack offset, in module order) and the JSON table
/// of weights.phw that lists them.
void collectRoots(ModuleOp planned, std::vector<std::pair<WeightOp, uint64_t>> &roots,
                  nlohmann::json &table) {
  table = nlohmann::json::array();
  for (WeightOp weight : planned.getOps<WeightOp>()) {
    auto offset = weight->getAttrOfType<IntegerAttr>("phimoe.pack_offset");
    if (!offset)
      continue;
    std::string type;
    llvm::raw_string_ostream(type) << weight.getType();
    nlohmann::json entry = {{"name", weight.getSymName().str()},
                            {"type", type},
                            {"offset", offset.getInt()},
                            {"bytes", getStorageBytes(weight.getType())}};
    if (weight->hasAttr("phimoe.rows16"))
      entry["layout"] = "rows16"; // groups of 16 rows interleaved (block_q4k_16rows, ...)
    table.push_back(std::move(entry));
    roots.emplace_back(weight, offset.getInt());
  }
}

/// The checkpoint tensors that make `weight`, in the order their values follow one another.
Error leafTensors(ModuleOp module, WeightOp weight, std::vector<std::string> &out) {
  if (!weight.isDerived()) {
    out.push_back(weight.getSymName().str());
    return Error::success();
  }
  for (auto ref : weight.getPartsAttr().getAsRange<FlatSymbolRefAttr>()) {
    auto part = module.lookupSymbol<WeightOp>(ref);
    if (!part)
      return fail("weight @" + weight.getSymName() + ": part " + ref.getValue() +
                  " is not declared");
    if (Error e = leafTensors(module, part, out))
      return e;
  }
  return Error::success();
}

} // namespace

namespace phimoe {
llvm::Expected<std::string> packPlan(ModuleOp planned) {
  auto hash = planned->getAttrOfType<IntegerAttr>("phimoe.model_hash");
  auto total = planned->getAttrOfType<IntegerAttr>("phimoe.pack_bytes");
  if (!hash || !total)
    return fail("the module is not planned (run phimoe-plan-memory)");
  std::vector<std::pair<WeightOp, uint64_t>> roots;
  nlohmann::json table;
  collectRoots(planned, roots, table);
  auto layout = planned->getAttrOfType<StringAttr>("phimoe.pack_layout");
  nlohmann::json weights = nlohmann::json::array();
  for (auto &[weight, offset] : roots) {
    std::string storage;
    Type type = weight.getType();
    if (auto q = dyn_cast<QWeightType>(type)) {
      storage = stringifyQuantScheme(q.getScheme()).str();
    } else {
      Type element = cast<RankedTensorType>(type).getElementType();
      storage = element.isF32() ? "f32" : element.isBF16() ? "bf16" : element.isF16() ? "f16" : "";
    }
    if (storage.empty() || (isa<QWeightType>(type) && !::phimoe_rt::split_layout(storage)))
      return fail("weight '" + weight.getSymName() + "': phimoe-pack has no " +
                  (storage.empty() ? std::string("such") : storage) + " storage");
    if (weight->hasAttr("phimoe.rows16"))
      return fail("weight '" + weight.getSymName() +
                  "': phimoe-pack does not write the CPU's interleaved rows");
    std::vector<std::string> parts;
    if (Error e = leafTensors(planned, weight, parts))
      return std::move(e);
    weights.push_back({{"name", weight.getSymName().str()},
                       {"offset", offset},
                       {"bytes", getStorageBytes(type)},
                       {"storage", storage},
                       {"row", getLogicalShape(type).back()},
                       {"parts", parts}});
  }
  nlohmann::json plan = {{"format", "phimoe-pack-plan"},
                         {"version", 1},
                         {"model_hash", hash.getValue().getZExtValue()},
                         {"data_bytes", total.getValue().getZExtValue()},
                         {"layout", layout ? layout.getValue().str() : std::string("cpu")},
                         {"table", table.dump()},
                         {"weights", weights}};
  return plan.dump(1) + "\n";
}

Error packWeights(ModuleOp planned, const Checkpoint &checkpoint, const std::string &path,
                  bool progress) {
  auto hash = planned->getAttrOfType<IntegerAttr>("phimoe.model_hash");
  auto total = planned->getAttrOfType<IntegerAttr>("phimoe.pack_bytes");
  if (!hash || !total)
    return fail("the module is not planned (run phimoe-plan-memory)");

  std::vector<std::pair<WeightOp, uint64_t>> roots;
  nlohmann::json table;
  collectRoots(planned, roots, table);
  std::string tableText = table.dump();
  phimoe_rt::PackHeader header{};
  std::memcpy(header.magic, phimoe_rt::kPackMagic, sizeof header.magic);
  header.version = phimoe_rt::kPackVersion;
  header.num_tensors = roots.size();
  header.model_hash = hash.getValue().getZExtValue();
  header.table_bytes = tableText.size();
  uint64_t align = phimoe_rt::kPackAlignment;
  header.data_offset = (sizeof header + tableText.size() + align - 1) / align * align;
  header.data_bytes = total.getValue().getZExtValue();

  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return fail(path + ": cannot create: " + std::strerror(errno));
  auto writeAll = [&]() -> Error {
    if (ftruncate(fd, static_cast<off_t>(header.data_offset + header.data_bytes)) != 0 ||
        pwrite(fd, &header, sizeof header, 0) != sizeof header ||
        pwrite(fd, tableText.data(), tableText.size(), sizeof header) !=
            static_cast<ssize_t>(tableText.size()))
      return fail(path + ": write failed: " + std::strerror(errno));
    uint64_t payload = 0;
    for (auto &root : roots)
      payload += getStorageBytes(root.first.getType());
    Progress bar(progress, roots.size(), payload);
    Packer packer(planned, checkpoint, fd, path, bar);
    auto layout = planned->getAttrOfType<StringAttr>("phimoe.pack_layout");
    bool splitBlocks = layout && layout.getValue() == "cuda";
    for (auto [i, root] : llvm::enumerate(roots)) {
      bar.startTensor(i);
      if (Error e = packer.writeRoot(root.first, header.data_offset + root.second, splitBlocks))
        return e;
    }
    bar.finish();
    return Error::success();
  };
  Error result = writeAll();
  if (::close(fd) != 0 && !result)
    return fail(path + ": write failed: " + std::strerror(errno));
  return result;
}
} // namespace phimoe
