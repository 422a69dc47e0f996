// json_mode.h - `response_format: {"type": "json_object"}` of phimoe-bin serve: the reply is
// held to a prefix of one JSON object (RFC 8259) token by token, and ends when the object
// closes.
//
// JsonPrefix reads bytes and says whether they still begin a JSON object, and when the object
// is complete; a string's bytes must be well-formed UTF-8 (a character may come over several
// tokens, as byte-fallback tokens spell it). JsonMask turns that into the tokens a sequence may take next: a token is allowed
// when all of its bytes continue the prefix (special tokens never are), and once the object is
// complete the reply ends. The masked logits are -infinity, so every sampler setting works on
// what is left.
#ifndef PHIMOE_RT_JSON_MODE_H
#define PHIMOE_RT_JSON_MODE_H

#include "phimoe_rt/tokenizer.h"

#include <cstdint>
#include <string>
#include <vector>

namespace phimoe_rt {

class JsonPrefix {
public:
  static constexpr int kMaxDepth = 32;     // nested objects and arrays
  static constexpr int kMaxWhitespace = 24; // consecutive whitespace bytes outside strings

  // Reads one byte; false when it cannot continue a JSON object here (the state is then
  // unspecified: callers that probe work on a copy).
  bool push(unsigned char c);
  bool push(const std::string &bytes);
  // The top-level object has closed (nothing may follow).
  bool complete() const { return state_ == State::done; }

private:
  enum class State : uint8_t {
    start,        // before the top-level '{', which comes first
    key_or_end,   // after '{': a key or '}'
    key,          // after ',' in an object: a key
    colon,        // after a key
    value,        // after ':' or ',' in an array: a value
    value_or_end, // after '[': a value or ']'
    after_value,  // ',' or the closing bracket of the container
    string,       // inside a string (in_key_: an object key; aux_: UTF-8 continuation bytes
                  // still due, the next in [utf8_lo_, utf8_hi_])
    escape,       // after a backslash in a string
    hex,          // in \uXXXX (aux_: hex digits left)
    number,       // in a number (aux_: its part, see push)
    literal,      // in true, false or null (literal_, aux_: bytes read)
    done,
  };
  bool value_start(unsigned char c);
  bool utf8_lead(unsigned char c);
  bool close(unsigned char c);
  bool structural_space(unsigned char c);

  State state_ = State::start;
  uint8_t aux_ = 0;
  bool in_key_ = false;
  uint8_t utf8_lo_ = 0x80, utf8_hi_ = 0xBF;
  const char *literal_ = nullptr;
  int depth_ = 0;
  char stack_[kMaxDepth] = {}; // '{' or '[' of each open container
  int whitespace_ = 0;
};

// The tokens a JSON-mode sequence may take, over one tokenizer's vocabulary.
class JsonMask {
public:
  JsonMask(const Tokenizer &tokenizer, int vocab);
  // Sets the logits of the tokens that cannot continue `prefix` to -infinity; returns how
  // many tokens remain.
  int apply(const JsonPrefix &prefix, float *logits) const;
  // The bytes token `id` adds to the reply (empty for special tokens and unknown ids).
  const std::string &bytes(int32_t id) const { return bytes_[static_cast<size_t>(id)]; }

private:
  std::vector<std::string> bytes_;
};

} // namespace phimoe_rt

#endif // PHIMOE_RT_JSON_MODE_H
