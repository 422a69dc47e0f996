// pack_load_test.cpp - WeightPack: mapped and read weights are the same bytes, the reader's
// slices cover the file exactly, errors name the file, and Load::automatic's choice.
#include "phimoe_rt/pack_format.h"
#include "phimoe_rt/session.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using phimoe_rt::WeightPack;

struct TempFile {
  std::string path;
  explicit TempFile(const std::vector<uint8_t> &bytes) {
    char name[] = "/tmp/phimoe-pack-load-XXXXXX";
    const int fd = mkstemp(name);
    EXPECT_GE(fd, 0);
    path = name;
    EXPECT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    close(fd);
  }
  ~TempFile() { std::remove(path.c_str()); }
};

std::vector<uint8_t> random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto &b : v)
    b = static_cast<uint8_t>(rng());
  return v;
}

// A pack of `data_bytes` random bytes of weights for a model of hash 0x1234.
std::vector<uint8_t> make_pack(size_t data_bytes, phimoe_rt::ModelInfo &info) {
  phimoe_rt::PackHeader h{};
  std::memcpy(h.magic, phimoe_rt::kPackMagic, sizeof h.magic);
  h.version = phimoe_rt::kPackVersion;
  h.model_hash = 0x1234;
  h.data_offset = phimoe_rt::kPackAlignment;
  h.data_bytes = data_bytes;
  std::vector<uint8_t> file(h.data_offset, 0);
  std::memcpy(file.data(), &h, sizeof h);
  const std::vector<uint8_t> data = random_bytes(data_bytes, 7);
  file.insert(file.end(), data.begin(), data.end());
  info = phimoe_rt::ModelInfo{};
  info.hash = 0x1234;
  info.pack_bytes = data_bytes;
  return file;
}

TEST(PackLoad, SlicesCoverTheFileExactly) {
  // Sizes around the 2 MiB slice granularity, and slice counts with empty slices.
  for (size_t bytes : {size_t{1}, size_t{4097}, (size_t{5} << 20) + 4097, size_t{6} << 20}) {
    const std::vector<uint8_t> want = random_bytes(bytes, static_cast<unsigned>(bytes));
    TempFile f(want);
    const int fd = open(f.path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    for (size_t slices : {0, 1, 2, 3, 7}) {
      std::vector<uint8_t> got(bytes + 64, 0xa5);
      EXPECT_EQ(WeightPack::read_in_slices(fd, f.path, got.data(), bytes, slices), "")
          << bytes << " bytes, " << slices << " slices";
      EXPECT_EQ(std::memcmp(got.data(), want.data(), bytes), 0)
          << bytes << " bytes, " << slices << " slices";
      for (size_t i = bytes; i < got.size(); ++i) // nothing past the end
        ASSERT_EQ(got[i], 0xa5) << bytes << " bytes, " << slices << " slices";
    }
    close(fd);
  }
}

TEST(PackLoad, AShortFileIsAnErrorNamingIt) {
  TempFile f(random_bytes(3 << 20, 1));
  const int fd = open(f.path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::vector<uint8_t> got(5 << 20);
  for (size_t slices : {1, 3}) {
    const std::string error =
        WeightPack::read_in_slices(fd, f.path, got.data(), got.size(), slices);
    EXPECT_NE(error.find(f.path), std::string::npos) << error;
    EXPECT_NE(error.find("got shorter"), std::string::npos) << error;
  }
  close(fd);
}

TEST(PackLoad, ReadAndMappedWeightsAreTheSameBytes) {
  phimoe_rt::ModelInfo info;
  const std::vector<uint8_t> file = make_pack((size_t{3} << 20) + 12345, info);
  TempFile f(file);
  std::string error;
  auto mapped = WeightPack::open(f.path, info, error, WeightPack::Load::map);
  ASSERT_TRUE(mapped) << error;
  auto read = WeightPack::open(f.path, info, error, WeightPack::Load::read);
  ASSERT_TRUE(read) << error;
  EXPECT_FALSE(mapped->read_into_memory());
  EXPECT_TRUE(read->read_into_memory());
  EXPECT_NE(mapped->data(), read->data());
  EXPECT_EQ(std::memcmp(read->data(), file.data() + phimoe_rt::kPackAlignment, info.pack_bytes),
            0);
  EXPECT_EQ(std::memcmp(mapped->data(), read->data(), info.pack_bytes), 0);
  // The read copy starts on a 2 MiB boundary (the header's offset before the weights), so
  // that the kernel can back all of it with huge pages; it backs no more than it holds.
  const uintptr_t start = reinterpret_cast<uintptr_t>(read->data()) - phimoe_rt::kPackAlignment;
  EXPECT_EQ(start % (size_t{2} << 20), 0u);
  EXPECT_LE(read->huge_page_bytes(), size_t{4} << 20);
  EXPECT_TRUE(mapped->note().empty());
  EXPECT_TRUE(read->note().empty());
}

TEST(PackLoad, BothWaysRefuseAWrongPackBeforeLoadingIt) {
  phimoe_rt::ModelInfo info;
  std::vector<uint8_t> file = make_pack(1 << 20, info);
  for (auto load : {WeightPack::Load::map, WeightPack::Load::read}) {
    phimoe_rt::ModelInfo other = info;
    other.hash = 0x4321;
    TempFile f(file);
    std::string error;
    EXPECT_FALSE(WeightPack::open(f.path, other, error, load));
    EXPECT_NE(error.find(f.path), std::string::npos) << error;
    EXPECT_NE(error.find("another model or build"), std::string::npos) << error;
    std::vector<uint8_t> cut(file.begin(), file.end() - 4096);
    TempFile g(cut);
    EXPECT_FALSE(WeightPack::open(g.path, info, error, load));
    EXPECT_NE(error.find(g.path), std::string::npos) << error;
    EXPECT_NE(error.find("truncated"), std::string::npos) << error;
  }
}

TEST(PackLoad, AutomaticReadsWhatFitsWithAGigabyteToSpare) {
  using L = WeightPack::Load;
  const size_t gib = size_t{1} << 30;
  EXPECT_EQ(WeightPack::resolve(L::automatic, 20 * gib, 24 * gib), L::read);
  EXPECT_EQ(WeightPack::resolve(L::automatic, 20 * gib, 21 * gib), L::read);
  EXPECT_EQ(WeightPack::resolve(L::automatic, 20 * gib, 21 * gib - 1), L::map);
  EXPECT_EQ(WeightPack::resolve(L::automatic, 20 * gib, 8 * gib), L::map);
  EXPECT_EQ(WeightPack::resolve(L::automatic, 1, 0), L::map); // no /proc/meminfo: map
  EXPECT_EQ(WeightPack::resolve(L::read, 20 * gib, 0), L::read);
  EXPECT_EQ(WeightPack::resolve(L::map, 1, 24 * gib), L::map);
}

} // namespace
