// stream_decoder.cpp - incremental decoding: text is shown once it is complete UTF-8.
#include "utf8.h"

#include "phimoe_rt/tokenizer.h"

#include <algorithm>

namespace phimoe_rt {

// What a Tokenizer that knows no better gives the stream decoder: its plain decode.
void Tokenizer::decode_append(const int32_t *ids, size_t n, bool skip_special, bool,
                              std::vector<std::string> &, std::string &out) const {
  out += decode(std::vector<int32_t>(ids, ids + n), skip_special);
}

// The text of the token after itself, less the text of the token alone: what a decoder strips
// or joins at the start of a text applies to the first copy only.
std::string Tokenizer::token_bytes(int32_t id) const {
  std::vector<std::string> scratch;
  std::string alone, twice;
  const int32_t ids[2] = {id, id};
  decode_append(ids, 1, false, true, scratch, alone);
  decode_append(ids, 2, false, true, scratch, twice);
  return twice.substr(std::min(alone.size(), twice.size()));
}

// The window ids_ starts with tokens already shown (ids_[0, read_), kept as context: decoders
// strip or join relative to their neighbours) and ends with tokens not shown yet. The new text
// is the decode of the window less the decode of its shown part.
void StreamDecoder::emit(bool at_end, std::string &out) {
  emitted_.clear();
  text_.clear();
  tokenizer_.decode_append(ids_.data(), read_, true, true, scratch_, emitted_);
  tokenizer_.decode_append(ids_.data(), ids_.size(), true, true, scratch_, text_);
  size_t common = 0; // decoders are prefix-stable, but be safe
  while (common < emitted_.size() && common < text_.size() && emitted_[common] == text_[common])
    ++common;
  if (text_.size() <= common)
    return; // nothing new (e.g. only skipped special tokens)
  std::string_view fresh = std::string_view(text_).substr(common);
  if (!at_end && tok::utf8_incomplete_tail(fresh) > 0)
    return; // a character still arriving in pieces
  tok::utf8_append_lossy(fresh, out);
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(read_));
  read_ = ids_.size();
}

void StreamDecoder::push(int32_t id, std::string &out) {
  ids_.push_back(id);
  emit(false, out);
}

void StreamDecoder::finish(std::string &out) {
  if (read_ < ids_.size())
    emit(true, out);
  reset();
}

void StreamDecoder::prime(const int32_t *context, size_t n) {
  reset();
  // A few tokens are enough context for every decoder step (spaces, byte fallback: a
  // character is at most 4 byte tokens). A special token ends the context: what follows
  // one (a chat reply after <|assistant|>) is a text of its own, as HF decodes it.
  size_t begin = n - std::min<size_t>(n, 8);
  for (size_t i = n; i > begin; --i)
    if (tokenizer_.is_special(context[i - 1])) {
      begin = i;
      break;
    }
  ids_.assign(context + begin, context + n);
  read_ = ids_.size();
}

void StreamDecoder::reset() {
  ids_.clear();
  read_ = 0;
  emitted_.clear();
  text_.clear();
}

} // namespace phimoe_rt
