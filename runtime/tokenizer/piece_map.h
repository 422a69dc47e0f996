// piece_map.h - an open-addressing hash map from piece text to id, looked up by string_view.
#ifndef PHIMOE_RT_TOKENIZER_PIECE_MAP_H
#define PHIMOE_RT_TOKENIZER_PIECE_MAP_H

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace phimoe_rt::tok {

// Owns copies of its keys (in one arena), so it can be moved freely. Lookups do not allocate.
class piece_map {
public:
  void reserve(size_t n);
  // Inserts or overwrites.
  void set(std::string_view key, int32_t id);
  // The id of key, or -1.
  int32_t find(std::string_view key) const;
  size_t size() const { return count_; }

private:
  struct slot {
    uint64_t hash = 0;
    uint32_t offset = 0, len = 0;
    int32_t id = -1; // -1: empty
  };
  static uint64_t hash_of(std::string_view key);
  void grow();
  std::string_view key_at(const slot &s) const { return {arena_.data() + s.offset, s.len}; }

  std::vector<slot> slots_;
  std::string arena_;
  size_t count_ = 0;
};

} // namespace phimoe_rt::tok

#endif // PHIMOE_RT_TOKENIZER_PIECE_MAP_H
