// pack.cpp - maps (or reads) weights.phw and checks it belongs to the generated model.
#include "phimoe_rt/pack_format.h"
#include "phimoe_rt/session.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace phimoe_rt {

namespace {

constexpr size_t kHugePage = size_t{2} << 20;

size_t huge_rounded(size_t bytes) { return (bytes + kHugePage - 1) / kHugePage * kHugePage; }

// `bytes` of anonymous memory starting at a 2 MiB boundary (so that the kernel can back all of
// it with huge pages), or null with errno set.
void *huge_aligned(size_t bytes) {
  const size_t size = huge_rounded(bytes);
  void *raw = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED)
    return nullptr;
  // Of the size + 2 MiB mapped, keep the aligned size; what lies before and after goes back
  // (after: begin + 2 MiB - start > 0 bytes, as start - begin < 2 MiB).
  const uintptr_t begin = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t start = huge_rounded(begin);
  if (start > begin)
    munmap(raw, start - begin);
  munmap(reinterpret_cast<void *>(start + size), begin + kHugePage - start);
  void *p = reinterpret_cast<void *>(start);
#ifdef MADV_HUGEPAGE
  (void)madvise(p, size, MADV_HUGEPAGE); // a hint: the kernel may have huge pages disabled
#endif
  return p;
}

// What is wrong with a pack of `bytes` bytes that starts with `header`, or "".
std::string check_header(const std::string &path, const PackHeader &header, size_t bytes,
                         const ModelInfo &info) {
  auto hex = [](uint64_t v) {
    char buf[24];
    snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return std::string(buf);
  };
  if (std::memcmp(header.magic, kPackMagic, sizeof kPackMagic) != 0)
    return path + ": not a phimoec weight pack (bad magic)";
  if (header.version != kPackVersion)
    return path + ": weight pack version " + std::to_string(header.version) +
           ", this phimoe-bin reads version " + std::to_string(kPackVersion);
  if (header.model_hash != info.hash)
    return path + ": packed for another model or build (hash " + hex(header.model_hash) +
           ", this phimoe-bin expects " + hex(info.hash) + "): compile again with phimoec";
  if (header.data_bytes != info.pack_bytes)
    return path + ": holds " + std::to_string(header.data_bytes) +
           " bytes of weights, this model needs " + std::to_string(info.pack_bytes);
  if (header.data_offset % kPackAlignment != 0 ||
      header.data_offset + header.data_bytes > bytes)
    return path + ": truncated: " + std::to_string(bytes) + " bytes, the header needs " +
           std::to_string(header.data_offset + header.data_bytes);
  return "";
}

// MemAvailable of /proc/meminfo in bytes (the kernel's estimate of what can be allocated
// without swapping, reclaimable page cache included), or 0 where it cannot be read.
size_t memory_available() {
  std::FILE *f = std::fopen("/proc/meminfo", "r");
  if (!f)
    return 0;
  char line[256];
  unsigned long long kib = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
      break;
  std::fclose(f);
  return static_cast<size_t>(kib) * 1024;
}

} // namespace

std::string WeightPack::read_in_slices(int fd, const std::string &path, uint8_t *dst,
                                       size_t bytes, size_t slices) {
  slices = std::max<size_t>(1, slices);
  const size_t per = std::max(kHugePage, huge_rounded((bytes + slices - 1) / slices)); // pages
  std::vector<std::string> errors(slices);
  auto read_slice = [&](size_t i) {
    size_t done = std::min(bytes, i * per);
    const size_t end = std::min(bytes, done + per);
    while (done < end) {
      const size_t chunk = std::min(end - done, size_t{64} << 20);
      const ssize_t got = pread(fd, dst + done, chunk, static_cast<off_t>(done));
      if (got < 0 && errno == EINTR)
        continue;
      if (got <= 0) {
        errors[i] = path + ": read failed at byte " + std::to_string(done) + " of " +
                    std::to_string(bytes) + ": " +
                    (got < 0 ? std::strerror(errno) : "the file got shorter");
        return;
      }
      done += static_cast<size_t>(got);
    }
  };
  std::vector<std::thread> threads;
  for (size_t i = 1; i < slices; ++i)
    threads.emplace_back(read_slice, i);
  read_slice(0);
  for (auto &t : threads)
    t.join();
  for (const std::string &e : errors)
    if (!e.empty())
      return e;
  return "";
}

WeightPack::Load WeightPack::resolve(Load load, size_t bytes, size_t available) {
  if (load != Load::automatic)
    return load;
  const size_t spare = size_t{1} << 30; // the KV cache, activations, everything else
  return available >= bytes && available - bytes >= spare ? Load::read : Load::map;
}

std::unique_ptr<WeightPack> WeightPack::open(const std::string &path, const ModelInfo &info,
                                             std::string &error, Load load) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = path + ": cannot open: " + std::strerror(errno);
    return nullptr;
  }
  struct stat st;
  PackHeader header;
  if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(PackHeader)) ||
      pread(fd, &header, sizeof header, 0) != static_cast<ssize_t>(sizeof header)) {
    ::close(fd);
    error = path + ": truncated or unreadable: not a phimoec weight pack";
    return nullptr;
  }
  const size_t bytes = static_cast<size_t>(st.st_size);
  error = check_header(path, header, bytes, info);
  if (!error.empty()) {
    ::close(fd);
    return nullptr;
  }
  std::unique_ptr<WeightPack> pack(new WeightPack());
  if (load == Load::automatic) {
    const size_t available = memory_available();
    load = resolve(load, bytes, available);
    if (load == Load::map)
      pack->note_ = path + ": " + std::to_string(bytes >> 20) + " MiB of weights, " +
                    std::to_string(available >> 20) +
                    " MiB of memory available: mapped from the file instead of read into "
                    "memory (slower decode; --no-mmap reads it anyway)";
  }
  if (load == Load::map) {
    void *map = mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (map == MAP_FAILED) {
      error = path + ": cannot map: " + std::strerror(errno);
      return nullptr;
    }
    pack->map_ = map;
    pack->map_bytes_ = bytes;
  } else {
    void *mem = huge_aligned(bytes);
    if (!mem) {
      error = path + ": cannot allocate " + std::to_string(bytes) +
              " bytes to read it into: " + std::strerror(errno) + " (--mmap maps the file instead)";
      ::close(fd);
      return nullptr;
    }
    pack->map_ = mem; // released by the destructor from here on
    pack->map_bytes_ = huge_rounded(bytes);
    pack->read_ = true;
    // A slice a core up to 8, of 256 MiB at least. Reading 1.7 GB from the page cache on 2
    // cores (2026-12-06): 3.8 s with one thread where the kernel first compacted memory for
    // the huge pages, 0.5 s after; 2.8 and 0.44 s with two.
    const size_t cores = std::max(1u, std::thread::hardware_concurrency());
    const size_t slices = std::min<size_t>({cores, 8, bytes / (size_t{256} << 20)});
    error = read_in_slices(fd, path, static_cast<uint8_t *>(mem), bytes, slices);
    ::close(fd);
    if (!error.empty())
      return nullptr;
    (void)mprotect(mem, pack->map_bytes_, PROT_READ); // as the mapping: nothing writes weights
  }
  pack->data_ = static_cast<const uint8_t *>(pack->map_) + header.data_offset;
  return pack;
}

WeightPack::~WeightPack() {
  if (map_)
    munmap(map_, map_bytes_);
}

size_t WeightPack::huge_page_bytes() const {
  std::FILE *f = std::fopen("/proc/self/smaps", "r");
  if (!f)
    return 0;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(map_);
  char line[512];
  bool inside = false;
  size_t kib = 0;
  while (std::fgets(line, sizeof line, f)) {
    unsigned long long lo = 0, hi = 0;
    char dash = 0;
    if (std::sscanf(line, "%llx%c%llx", &lo, &dash, &hi) == 3 && dash == '-') {
      // A mapping's first line; the weights may span several (the kernel splits a mapping
      // where its pages differ).
      inside = lo >= begin && hi <= begin + map_bytes_;
      continue;
    }
    unsigned long long v = 0;
    if (inside && (std::sscanf(line, "AnonHugePages: %llu kB", &v) == 1 ||
                   std::sscanf(line, "FilePmdMapped: %llu kB", &v) == 1))
      kib += v;
  }
  std::fclose(f);
  return kib * 1024;
}

} // namespace phimoe_rt
