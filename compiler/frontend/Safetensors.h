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
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace phimoe {

/// How a checkpoint stores a tensor's values: floats (safetensors, GGUF), or llama.cpp's
/// block formats (GGUF: rows of whole blocks, compiler/frontend/GgufBlocks.h). phimoec has
/// kernels for Q8_0, Q4_K and Q6_K; the others are read to be stored otherwise.
enum class DType { F32, F16, BF16, Q8_0, Q4_K, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q5_K };

/// Values per block of `dtype` (1 for the float types) and bytes per block.
int64_t dtypeBlockValues(DType dtype);
size_t dtypeBlockBytes(DType dtype);
/// Bytes of `count` values of `dtype` (a whole number of blocks).
inline uint64_t dtypeBytes(DType dtype, uint64_t count) {
  return count / static_cast<uint64_t>(dtypeBlockValues(dtype)) * dtypeBlockBytes(dtype);
}
/// Whether `dtype` is one of llama.cpp's block formats.
inline bool dtypeIsBlock(DType dtype) { return dtypeBlockValues(dtype) > 1; }
/// "F32", "F16", "BF16", "Q8_0", "Q4_K", ... as ggml names them.
const char *dtypeName(DType dtype);

/// Where one tensor's bytes lie.
struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  unsigned file;      // index into Checkpoint::files()
  uint64_t offset;    // from the start of the file
  uint64_t numBytes;
  /// Nonzero: the rows are in llama.cpp's interleaved-RoPE order for heads of this many
  /// rows (a llama GGUF's q and k): row h·D + 2i + j holds the checkpoint's row
  /// h·D + j·D/2 + i. sourceRow() maps a checkpoint row to its place.
  int64_t ropeHeadDim = 0;

  int64_t sourceRow(int64_t row) const {
    if (ropeHeadDim == 0)
      return row;
    const int64_t head = row / ropeHeadDim, within = row % ropeHeadDim, half = ropeHeadDim / 2;
    return head * ropeHeadDim + 2 * (within % half) + within / half;
  }

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
/// the shards named by model.safetensors.index.json; or of a GGUF file, under the names of
/// the checkpoint it was converted from (compiler/frontend/Gguf.h).
class Checkpoint {
public:
  static llvm::Expected<std::unique_ptr<Checkpoint>> open(const std::string &dir);
  /// An empty checkpoint over one mapped file (`dir` names it in errors): a GGUF
  /// reader adds its tensors with add(), and the other files of a split GGUF with addFile().
  static std::unique_ptr<Checkpoint> over(const std::string &dir,
                                          std::unique_ptr<MappedFile> file);
  /// Adds a file; returns its index.
  unsigned addFile(std::unique_ptr<MappedFile> file) {
    files_.push_back(std::move(file));
    return files_.size() - 1;
  }
  /// Adds a tensor of file `tensor.file` (its bytes lie within that file); false if the name
  /// is taken.
  bool add(TensorInfo tensor);
  /// For errors: the names of the file's own tensors (a GGUF's) and of its config.
  void setFileNames(std::function<std::string(llvm::StringRef)> tensorName,
                    std::string config) {
    fileTensorName_ = std::move(tensorName);
    configName_ = std::move(config);
  }
  /// A tensor as errors name it: 'model.norm.weight', or for a GGUF
  /// 'output_norm.weight' (model.norm.weight).
  std::string describe(llvm::StringRef name) const {
    std::string quoted = "'" + name.str() + "'";
    return fileTensorName_ ? "'" + fileTensorName_(name) + "' (" + name.str() + ")" : quoted;
  }
  /// Where the shapes of the tensors come from: "config.json", or a GGUF's metadata.
  const std::string &configName() const { return configName_; }

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
  std::function<std::string(llvm::StringRef)> fileTensorName_;
  std::string configName_ = "config.json";
  std::vector<std::unique_ptr<MappedFile>> files_;
  llvm::StringMap<TensorInfo> tensors_;
};

} // namespace phimoe

#endif // PHIMOE_COMPILER_FRONTEND_SAFETENSORS_H
