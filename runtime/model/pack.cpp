// pack.cpp - maps weights.phw and checks it belongs to the generated model.
#include "phimoe_rt/pack_format.h"
#include "phimoe_rt/session.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace phimoe_rt {

std::unique_ptr<WeightPack> WeightPack::open(const std::string &path, const ModelInfo &info,
                                             std::string &error) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = path + ": cannot open: " + std::strerror(errno);
    return nullptr;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(PackHeader))) {
    ::close(fd);
    error = path + ": truncated or unreadable: not a phimoec weight pack";
    return nullptr;
  }
  size_t bytes = static_cast<size_t>(st.st_size);
  void *map = mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) {
    error = path + ": cannot map: " + std::strerror(errno);
    return nullptr;
  }
  std::unique_ptr<WeightPack> pack(new WeightPack());
  pack->map_ = map;
  pack->map_bytes_ = bytes;
  PackHeader header;
  std::memcpy(&header, map, sizeof header);
  auto hex = [](uint64_t v) {
    char buf[24];
    snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return std::string(buf);
  };
  if (std::memcmp(header.magic, kPackMagic, sizeof kPackMagic) != 0) {
    error = path + ": not a phimoec weight pack (bad magic)";
  } else if (header.version != kPackVersion) {
    error = path + ": weight pack version " + std::to_string(header.version) +
            ", this phimoe-bin reads version " + std::to_string(kPackVersion);
  } else if (header.model_hash != info.hash) {
    error = path + ": packed for another model or build (hash " + hex(header.model_hash) +
            ", this phimoe-bin expects " + hex(info.hash) + "): compile again with phimoec";
  } else if (header.data_bytes != info.pack_bytes) {
    error = path + ": holds " + std::to_string(header.data_bytes) +
            " bytes of weights, this model needs " + std::to_string(info.pack_bytes);
  } else if (header.data_offset % kPackAlignment != 0 ||
             header.data_offset + header.data_bytes > bytes) {
    error = path + ": truncated: " + std::to_string(bytes) + " bytes, the header needs " +
            std::to_string(header.data_offset + header.data_bytes);
  } else {
    pack->data_ = static_cast<const uint8_t *>(map) + header.data_offset;
    return pack;
  }
  return nullptr;
}

WeightPack::~WeightPack() {
  if (map_)
    munmap(map_, map_bytes_);
}

} // namespace phimoe_rt
