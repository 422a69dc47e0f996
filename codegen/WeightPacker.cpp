//===- WeightPacker.cpp - weights.phw from a checkpoint -------------------===//

#include "codegen/WeightPacker.h"

#include "dialects/PhiMoE/PhiMoEOps.h"
#include "phimoe_rt/pack_format.h"
#include "phimoe_rt/runtime.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

using namespace mlir;
using namespace mlir::phimoe;
using llvm::Error;

namespace {

Error fail(const llvm::Twine &message) {
  return llvm::createStringError(message);
}

class Packer {
public:
  Packer(ModuleOp module, const ::phimoe::Checkpoint &ckpt, int fd, const std::string &path)
      : module(module), ckpt(ckpt), fd(fd), path(path) {}

  /// Writes `weight`, stored as `storage` (its logical shape), at `offset`.
  Error write(WeightOp weight, Type storage, uint64_t offset);

private:
  Error writeLeaf(WeightOp weight, Type storage, uint64_t offset);
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

  ModuleOp module;
  const ::phimoe::Checkpoint &ckpt;
  int fd;
  const std::string &path;
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
  auto tensor = dyn_cast<RankedTensorType>(storage);
  if (!tensor)
    return fail("weight '" + weight.getSymName() +
                "': block quantization is not implemented in the packer yet");
  Type element = tensor.getElementType();
  size_t outSize = element.isF32() ? 4 : 2;
  llvm::ArrayRef<uint8_t> src = ckpt.bytes(*info);
  size_t count = static_cast<size_t>(info->numElements());
  size_t inSize = ::phimoe::dtypeSize(info->dtype);
  constexpr size_t kChunk = 1 << 20;
  buffer.resize(kChunk * outSize);
  for (size_t begin = 0; begin < count; begin += kChunk) {
    size_t n = std::min(kChunk, count - begin);
    const uint8_t *in = src.data() + begin * inSize;
    for (size_t i = 0; i < n; ++i) {
      float f;
      const uint8_t *e = in + i * inSize;
      uint16_t half;
      switch (info->dtype) {
      case ::phimoe::DType::F32:
        std::memcpy(&f, e, 4);
        break;
      case ::phimoe::DType::BF16:
        std::memcpy(&half, e, 2);
        f = phimoe_rt::to_float(phimoe_rt::bf16{half});
        break;
      case ::phimoe::DType::F16:
        std::memcpy(&half, e, 2);
        f = phimoe_rt::f16_to_float(half);
        break;
      }
      uint8_t *out = buffer.data() + i * outSize;
      if (element.isF32()) {
        std::memcpy(out, &f, 4);
      } else {
        uint16_t bits = element.isBF16() ? phimoe_rt::float_to_bf16(f).bits
                                         : phimoe_rt::float_to_f16(f).bits;
        std::memcpy(out, &bits, 2);
      }
    }
    if (Error e = put(buffer.data(), n * outSize, offset + begin * outSize))
      return e;
  }
  ckpt.release(*info);
  return Error::success();
}

} // namespace

namespace phimoe {
Error packWeights(ModuleOp planned, const Checkpoint &checkpoint, const std::string &path,
                  bool progress) {
  auto hash = planned->getAttrOfType<IntegerAttr>("phimoe.model_hash");
  auto total = planned->getAttrOfType<IntegerAttr>("phimoe.pack_bytes");
  if (!hash || !total)
    return fail("the module is not planned (run phimoe-plan-memory)");

  std::vector<std::pair<WeightOp, uint64_t>> roots;
  nlohmann::json table = nlohmann::json::array();
  for (WeightOp weight : planned.getOps<WeightOp>()) {
    auto offset = weight->getAttrOfType<IntegerAttr>("phimoe.pack_offset");
    if (!offset)
      continue;
    std::string type;
    llvm::raw_string_ostream(type) << weight.getType();
    table.push_back({{"name", weight.getSymName().str()},
                     {"type", type},
                     {"offset", offset.getInt()},
                     {"bytes", getStorageBytes(weight.getType())}});
    roots.emplace_back(weight, offset.getInt());
  }
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

  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return fail(path + ": cannot create: " + std::strerror(errno));
  auto writeAll = [&]() -> Error {
    if (ftruncate(fd, static_cast<off_t>(header.data_offset + header.data_bytes)) != 0 ||
        pwrite(fd, &header, sizeof header, 0) != sizeof header ||
        pwrite(fd, tableText.data(), tableText.size(), sizeof header) !=
            static_cast<ssize_t>(tableText.size()))
      return fail(path + ": write failed: " + std::strerror(errno));
    Packer packer(planned, checkpoint, fd, path);
    for (auto [i, root] : llvm::enumerate(roots)) {
      if (progress)
        llvm::errs() << "\rphimoec: packing weight " << i + 1 << "/" << roots.size();
      if (Error e = packer.write(root.first, root.first.getType(),
                                 header.data_offset + root.second))
        return e;
    }
    if (progress)
      llvm::errs() << "\n";
    return Error::success();
  };
  Error result = writeAll();
  if (::close(fd) != 0 && !result)
    return fail(path + ": write failed: " + std::strerror(errno));
  return result;
}
} // namespace phimoe
