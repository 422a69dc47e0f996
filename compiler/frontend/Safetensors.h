//===- Safetensors.h - index a checkpoint's safetensors files -----*- C++ -*-===//
//
// Reads only the headers at open time; tensor bytes are mmapped and read one
// tensor at a time by the weight packer.
//
//===----------------------------------------------------------------------===//

#ifndef PHIMOE_COMPILER_FRONTEND_SAFETENSORS_H
#define PHIMOE_COMPILER_FRONTEND_SAFETENSORS_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace phimoe {

enum class DType { F32, F16, BF16 };

/// Bytes of one element of `dtype`.
size_t dtypeSize(DType dtype);
/// "F32", "F16", "BF16".
const char *dtypeName(DType dtype);

/// Where one tensor's bytes lie.
struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  unsigned file;      // index into Checkpoint::files()
  uint64_t offset;    // from the start of the file
  uint64_t numBytes;

  int64_t numElements() const;
};

/// A read-only memory map of one file.
class MappedFile {
public:
  static llvm::Expected<std::unique_ptr<MappedFile>> open(const std::string &path);
  ~MappedFile();
  MappedFile(const MappedFile &) = delete;
  MappedFile &operator=(const MappedFile &) = delete;

  const uint8_t *data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string &path() const { return path_; }
  /// Tells the kernel that [offset, offset + length) is no longer needed, so
  /// that packing a large model keeps few pages resident.
  void release(uint64_t offset, uint64_t length) const;

private:
  MappedFile() = default;
  std::string path_;
  const uint8_t *data_ = nullptr;
  uint64_t size_ = 0;
};

/// The tensors of a Hugging Face checkpoint directory: model.safetensors, or
/// the shards named by model.safetensors.index.json.
class Checkpoint {
public:
  static llvm::Expected<std::unique_ptr<Checkpoint>> open(const std::string &dir);

  /// The tensor named `name`, or null.
  const TensorInfo *find(llvm::StringRef name) const;
  /// The bytes of a tensor (mapped, not copied).
  llvm::ArrayRef<uint8_t> bytes(const TensorInfo &tensor) const;
  /// Drops the mapped pages of a tensor after use.
  void release(const TensorInfo &tensor) const;

  const std::vector<std::unique_ptr<MappedFile>> &files() const { return files_; }
  const std::string &dir() const { return dir_; }
  size_t size() const { return tensors_.size(); }

private:
  llvm::Error addFile(const std::string &path);
  std::string dir_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  llvm::StringMap<TensorInfo> tensors_;
};

} // namespace phimoe

#endif // PHIMOE_COMPILER_FRONTEND_SAFETENSORS_H
