// added_tokens.h - finds added and special tokens in text before the model's pieces do.
#ifndef PHIMOE_RT_TOKENIZER_ADDED_TOKENS_H
#define PHIMOE_RT_TOKENIZER_ADDED_TOKENS_H

#include "spec.h"

#include <cstdint>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace phimoe_rt::tok {

// A part of a text: a run of plain text, or an added token (id >= 0) that covers the token and
// the whitespace its lstrip/rstrip took.
struct text_part {
  size_t begin, end;
  int32_t id; // -1: plain text
};

// Matches a set of added tokens as HF's AddedVocabulary does: leftmost-longest, a single_word
// token only between non-word characters, lstrip/rstrip taking the whitespace beside it.
class added_matcher {
public:
  // `patterns[i]` is what to look for (the content, or its normalized form) for tokens[i].
  void build(const std::vector<const added_token *> &tokens,
             const std::vector<std::string> &patterns);
  bool empty() const { return tokens_.empty(); }
  // Appends the parts of text (plain parts are never empty) to out.
  void split(std::string_view text, std::vector<text_part> &out) const;

private:
  // The longest pattern starting at text[pos] (its index and length), or -1.
  std::pair<int, size_t> longest_at(std::string_view text, size_t pos) const;

  std::vector<const added_token *> tokens_;
  std::unordered_map<uint64_t, int32_t> edges_; // (node << 8 | byte) -> child node
  std::vector<int32_t> terminal_;               // node -> token index, or -1
  bool first_byte_[256] = {};
};

} // namespace phimoe_rt::tok

#endif // PHIMOE_RT_TOKENIZER_ADDED_TOKENS_H
