//===- Safetensors.cpp - index a checkpoint's safetensors files -----------===//

#include "compiler/frontend/Safetensors.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

using namespace phimoe;
using llvm::createStringError;
using llvm::Error;
using llvm::Expected;

int64_t phimoe::dtypeBlockValues(DType dtype) {
  switch (dtype) {
  case DType::F32:
  case DType::F16:
  case DType::BF16:
    return 1;
  case DType::Q8_0:
  case DType::Q4_0:
  case DType::Q4_1:
  case DType::Q5_0:
  case DType::Q5_1:
    return 32;
  case DType::Q4_K:
  case DType::Q6_K:
  case DType::Q2_K:
  case DType::Q3_K:
  case DType::Q5_K:
    return 256;
  }
  return 1;
}

size_t phimoe::dtypeBlockBytes(DType dtype) {
  switch (dtype) {
  case DType::F32:
    return 4;
  case DType::F16:
  case DType::BF16:
    return 2;
  case DType::Q8_0:
    return 34;
  case DType::Q4_K:
    return 144;
  case DType::Q6_K:
    return 210;
  case DType::Q4_0:
    return 18;
  case DType::Q4_1:
    return 20;
  case DType::Q5_0:
    return 22;
  case DType::Q5_1:
    return 24;
  case DType::Q2_K:
    return 84;
  case DType::Q3_K:
    return 110;
  case DType::Q5_K:
    return 176;
  }
  return 0;
}

const char *phimoe::dtypeName(DType dtype) {
  switch (dtype) {
  case DType::F32:
    return "F32";
  case DType::F16:
    return "F16";
  case DType::BF16:
    return "BF16";
  case DType::Q8_0:
    return "Q8_0";
  case DType::Q4_K:
    return "Q4_K";
  case DType::Q6_K:
    return "Q6_K";
  case DType::Q4_0:
    return "Q4_0";
  case DType::Q4_1:
    return "Q4_1";
  case DType::Q5_0:
    return "Q5_0";
  case DType::Q5_1:
    return "Q5_1";
  case DType::Q2_K:
    return "Q2_K";
  case DType::Q3_K:
    return "Q3_K";
  case DType::Q5_K:
    return "Q5_K";
  }
  return "?";
}

int64_t TensorInfo::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

static Error fail(const llvm::Twine &message) {
  return createStringError(message);
}

//===----------------------------------------------------------------------===//
// MappedFile
//===----------------------------------------------------------------------===//

Expected<std::unique_ptr<MappedFile>> MappedFile::open(const std::string &path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return fail(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    return fail(path + ": cannot stat: " + std::strerror(errno));
  }
  std::unique_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<uint64_t>(st.st_size);
  if (file->size_ > 0) {
    void *data = mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
      ::close(fd);
      return fail(path + ": cannot map: " + std::strerror(errno));
    }
    file->data_ = static_cast<const uint8_t *>(data);
  }
  ::close(fd);
  return std::move(file);
}

MappedFile::~MappedFile() {
  if (data_)
    munmap(const_cast<uint8_t *>(data_), size_);
}

void MappedFile::release(uint64_t offset, uint64_t length) const {
  if (!data_ || length == 0)
    return;
  long page = sysconf(_SC_PAGESIZE);
  uint64_t begin = offset / page * page;
  uint64_t end = std::min(size_, offset + length);
  madvise(const_cast<uint8_t *>(data_) + begin, end - begin, MADV_DONTNEED);
}

//===----------------------------------------------------------------------===//
// Checkpoint
//===----------------------------------------------------------------------===//

static std::optional<DType> parseDType(const std::string &name) {
  if (name == "F32")
    return DType::F32;
  if (name == "F16")
    return DType::F16;
  if (name == "BF16")
    return DType::BF16;
  return std::nullopt;
}

Error Checkpoint::addFile(const std::string &path) {
  auto mapped = MappedFile::open(path);
  if (!mapped)
    return mapped.takeError();
  const MappedFile &file = **mapped;
  if (file.size() < 8)
    return fail(path + ": truncated: " + llvm::Twine(file.size()) +
                " bytes, less than the 8-byte header length");
  uint64_t headerSize = 0;
  std::memcpy(&headerSize, file.data(), 8); // little-endian, as x86-64
  if (headerSize > file.size() - 8)
    return fail(path + ": truncated: the header claims " + llvm::Twine(headerSize) +
                " bytes but the file has " + llvm::Twine(file.size() - 8) +
                " after the length");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(file.data() + 8, file.data() + 8 + headerSize);
  } catch (const nlohmann::json::exception &e) {
    return fail(path + ": malformed JSON header: " + e.what());
  }
  if (!header.is_object())
    return fail(path + ": the header is not a JSON object");
  uint64_t dataStart = 8 + headerSize;
  uint64_t dataSize = file.size() - dataStart;
  unsigned fileIndex = files_.size();
  for (auto &[name, entry] : header.items()) {
    if (name == "__metadata__")
      continue;
    std::string where = path + ": tensor '" + name + "'";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets"))
      return fail(where + ": needs dtype, shape and data_offsets");
    const auto &dtypeJson = entry["dtype"];
    auto dtype = dtypeJson.is_string() ? parseDType(dtypeJson.get<std::string>())
                                       : std::nullopt;
    if (!dtype)
      return fail(where + ": unsupported dtype " + dtypeJson.dump() +
                  " (phimoec reads F32, F16 and BF16)");
    TensorInfo info;
    info.name = name;
    info.dtype = *dtype;
    info.file = fileIndex;
    const auto &shape = entry["shape"];
    if (!shape.is_array())
      return fail(where + ": shape is not an array");
    for (const auto &d : shape) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        return fail(where + ": shape " + shape.dump() + " is not a list of sizes");
      info.shape.push_back(d.get<int64_t>());
    }
    const auto &offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned())
      return fail(where + ": data_offsets " + offsets.dump() + " is not [begin, end]");
    uint64_t begin = offsets[0], end = offsets[1];
    if (begin > end)
      return fail(where + ": data_offsets " + offsets.dump() + " run backwards");
    if (end > dataSize)
      return fail(where + ": truncated file: its data ends at byte " + llvm::Twine(end) +
                  " of the data section, which has " + llvm::Twine(dataSize));
    uint64_t expected = dtypeBytes(*dtype, static_cast<uint64_t>(info.numElements()));
    if (end - begin != expected)
      return fail(where + ": " + llvm::Twine(end - begin) + " bytes for shape " +
                  shape.dump() + " of " + dtypeName(*dtype) + ", which needs " +
                  llvm::Twine(expected));
    info.offset = dataStart + begin;
    info.numBytes = end - begin;
    if (tensors_.count(name))
      return fail(where + ": defined twice in the checkpoint");
    tensors_[name] = std::move(info);
  }
  files_.push_back(std::move(*mapped));
  return Error::success();
}

Expected<std::unique_ptr<Checkpoint>> Checkpoint::open(const std::string &dir) {
  std::unique_ptr<Checkpoint> checkpoint(new Checkpoint());
  checkpoint->dir_ = dir;
  llvm::SmallString<256> single(dir), index(dir);
  llvm::sys::path::append(single, "model.safetensors");
  llvm::sys::path::append(index, "model.safetensors.index.json");
  if (llvm::sys::fs::exists(index)) {
    std::ifstream in(std::string(index.str()));
    nlohmann::json json;
    try {
      json = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception &e) {
      return fail(index.str() + ": malformed JSON: " + e.what());
    }
    if (!json.is_object() || !json.contains("weight_map") || !json["weight_map"].is_object())
      return fail(index.str() + ": no \"weight_map\" object");
    std::set<std::string> shards;
    for (auto &[name, shard] : json["weight_map"].items()) {
      if (!shard.is_string())
        return fail(index.str() + ": weight_map entry '" + name + "' is not a file name");
      shards.insert(shard.get<std::string>());
    }
    for (const std::string &shard : shards) {
      llvm::SmallString<256> path(dir);
      llvm::sys::path::append(path, shard);
      if (Error e = checkpoint->addFile(std::string(path.str())))
        return std::move(e);
    }
    for (auto &[name, shard] : json["weight_map"].items()) {
      const TensorInfo *info = checkpoint->find(name);
      if (!info)
        return fail(index.str() + ": tensor '" + name + "' is not in its shard " +
                    shard.get<std::string>());
    }
  } else if (llvm::sys::fs::exists(single)) {
    if (Error e = checkpoint->addFile(std::string(single.str())))
      return std::move(e);
  } else {
    return fail(dir + ": no model.safetensors or model.safetensors.index.json");
  }
  return std::move(checkpoint);
}

std::unique_ptr<Checkpoint> Checkpoint::over(const std::string &dir,
                                             std::unique_ptr<MappedFile> file) {
  std::unique_ptr<Checkpoint> checkpoint(new Checkpoint());
  checkpoint->dir_ = dir;
  checkpoint->files_.push_back(std::move(file));
  return checkpoint;
}

bool Checkpoint::add(TensorInfo tensor) {
  std::string name = tensor.name;
  return tensors_.try_emplace(name, std::move(tensor)).second;
}

const TensorInfo *Checkpoint::find(llvm::StringRef name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

llvm::ArrayRef<uint8_t> Checkpoint::bytes(const TensorInfo &tensor) const {
  return {files_[tensor.file]->data() + tensor.offset, tensor.numBytes};
}

void Checkpoint::release(const TensorInfo &tensor) const {
  files_[tensor.file]->release(tensor.offset, tensor.numBytes);
}
