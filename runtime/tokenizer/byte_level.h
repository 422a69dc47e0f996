// byte_level.h - GPT-2's byte-level alphabet and its pre-tokenizer regex, written out by hand.
#ifndef PHIMOE_RT_TOKENIZER_BYTE_LEVEL_H
#define PHIMOE_RT_TOKENIZER_BYTE_LEVEL_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace phimoe_rt::tok {

// The code point GPT-2's bytes_to_unicode gives byte b, and its inverse (-1: not in the alphabet).
uint32_t byte_to_codepoint(uint8_t b);
int codepoint_to_byte(uint32_t cp);

// Appends the byte-level spelling of `bytes` (each byte as its alphabet character, in UTF-8).
void byte_level_encode(std::string_view bytes, std::string &out);
// Appends the bytes a byte-level token spells; a token with a character outside the alphabet
// contributes its own UTF-8 bytes instead (as HF's ByteLevel decoder does).
void byte_level_decode(std::string_view token, std::string &out);

// Splits text as GPT-2's pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// does, appending [begin, end) byte ranges that cover the text.
void gpt2_split(std::string_view text, std::vector<std::pair<size_t, size_t>> &out);

} // namespace phimoe_rt::tok

#endif // PHIMOE_RT_TOKENIZER_BYTE_LEVEL_H
