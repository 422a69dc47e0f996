// piece_map.cpp - open addressing with linear probing over a power-of-two table.
#include "piece_map.h"

namespace phimoe_rt::tok {

uint64_t piece_map::hash_of(std::string_view key) {
  uint64_t h = 0xcbf29ce484222325ull; // FNV-1a, then a final mix
  for (char c : key) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

void piece_map::reserve(size_t n) {
  size_t want = 16;
  while (want < n * 2)
    want *= 2;
  if (want <= slots_.size())
    return;
  std::vector<slot> old = std::move(slots_);
  slots_.assign(want, slot{});
  size_t mask = want - 1;
  for (const slot &s : old) {
    if (s.id < 0)
      continue;
    size_t i = s.hash & mask;
    while (slots_[i].id >= 0)
      i = (i + 1) & mask;
    slots_[i] = s;
  }
}

void piece_map::grow() { reserve(slots_.empty() ? 8 : slots_.size()); }

void piece_map::set(std::string_view key, int32_t id) {
  if ((count_ + 1) * 2 > slots_.size())
    grow();
  uint64_t h = hash_of(key);
  size_t mask = slots_.size() - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    slot &s = slots_[i];
    if (s.id < 0) {
      s.hash = h;
      s.offset = static_cast<uint32_t>(arena_.size());
      s.len = static_cast<uint32_t>(key.size());
      s.id = id;
      arena_.append(key);
      ++count_;
      return;
    }
    if (s.hash == h && key_at(s) == key) {
      s.id = id;
      return;
    }
  }
}

int32_t piece_map::find(std::string_view key) const {
  if (slots_.empty())
    return -1;
  uint64_t h = hash_of(key);
  size_t mask = slots_.size() - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const slot &s = slots_[i];
    if (s.id < 0)
      return -1;
    if (s.hash == h && key_at(s) == key)
      return s.id;
  }
}

} // namespace phimoe_rt::tok
