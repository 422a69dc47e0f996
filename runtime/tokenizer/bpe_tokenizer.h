// bpe_tokenizer.h - the Tokenizer that every loader builds: a spec and the matchers made from it.
#ifndef PHIMOE_RT_TOKENIZER_BPE_TOKENIZER_H
#define PHIMOE_RT_TOKENIZER_BPE_TOKENIZER_H

#include "added_tokens.h"
#include "bpe.h"
#include "spec.h"

#include "phimoe_rt/tokenizer.h"

#include <memory>
#include <string>

namespace phimoe_rt::tok {

class bpe_tokenizer final : public Tokenizer {
public:
  // Checks the spec (ids in range, merges of known pieces) and builds the lookups; `source`
  // names the file for error messages.
  static std::unique_ptr<bpe_tokenizer> create(spec s, const std::string &source,
                                               std::string &error);

  std::vector<int32_t> encode(std::string_view text, bool add_special) const override;
  std::string decode(const std::vector<int32_t> &ids, bool skip_special) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(s_.pieces.size()); }
  std::optional<int32_t> token_id(std::string_view piece) const override;
  bool is_special(int32_t id) const override;

  void set_chat_template(std::string t) { chat_template_ = std::move(t); }

protected:
  void decode_append(const int32_t *ids, size_t n, bool skip_special, bool raw,
                     std::vector<std::string> &scratch, std::string &out) const override;

private:
  explicit bpe_tokenizer(spec s) : s_(std::move(s)) {}
  void encode_words(std::string_view segment, bool at_text_start, std::vector<std::string> &words,
                    bpe_workspace &ws, std::vector<int32_t> &out) const;

  spec s_;
  byte_table byte_ids_{};
  added_matcher raw_matcher_, normalized_matcher_;
  std::vector<uint8_t> special_; // by id
  piece_map added_ids_;          // added token content -> id
};

} // namespace phimoe_rt::tok

#endif // PHIMOE_RT_TOKENIZER_BPE_TOKENIZER_H
