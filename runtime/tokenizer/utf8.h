// utf8.h - UTF-8 helpers of the tokenizer: decoding one code point, encoding, lossy repair.
#ifndef PHIMOE_RT_TOKENIZER_UTF8_H
#define PHIMOE_RT_TOKENIZER_UTF8_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace phimoe_rt::tok {

// The code point that starts at s[i] and its length in bytes. A byte that does not start a
// well-formed sequence is returned alone as code point 0xFFFFFFFF with length 1.
struct utf8_char {
  uint32_t cp;
  uint32_t len;
};
constexpr uint32_t invalid_cp = 0xFFFFFFFFu;
utf8_char utf8_next(std::string_view s, size_t i);

void utf8_append(uint32_t cp, std::string &out);

// Appends s to out with every ill-formed part replaced by U+FFFD, one per maximal subpart
// (Unicode's recommended practice, as Rust's String::from_utf8_lossy does). A well-formed but
// incomplete sequence at the very end is replaced too.
void utf8_append_lossy(std::string_view s, std::string &out);

// The length of the incomplete but so far well-formed sequence at the end of s (0 to 3).
size_t utf8_incomplete_tail(std::string_view s);

bool utf8_valid(std::string_view s);

} // namespace phimoe_rt::tok

#endif // PHIMOE_RT_TOKENIZER_UTF8_H
