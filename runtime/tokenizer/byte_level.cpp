// byte_level.cpp - the byte-level alphabet and the GPT-2 split over Unicode classes.
#include "byte_level.h"

#include "unicode_classes.h"
#include "utf8.h"

namespace phimoe_rt::tok {

// bytes_to_unicode keeps '!'..'~', U+00A1..U+00AC and U+00AE..U+00FF as themselves and numbers
// the other 68 bytes 256, 257, ... in byte order: 0x00-0x20, then 0x7F-0xA0, then 0xAD.
uint32_t byte_to_codepoint(uint8_t b) {
  if (b <= 0x20)
    return 256 + b;
  if (b >= 0x7F && b <= 0xA0)
    return 256 + 33 + (b - 0x7F);
  if (b == 0xAD)
    return 256 + 33 + 34;
  return b;
}

int codepoint_to_byte(uint32_t cp) {
  if (cp < 256)
    return (cp <= 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD) ? -1 : static_cast<int>(cp);
  if (cp < 256 + 33)
    return static_cast<int>(cp - 256);
  if (cp < 256 + 33 + 34)
    return static_cast<int>(cp - 256 - 33 + 0x7F);
  if (cp == 256 + 33 + 34)
    return 0xAD;
  return -1;
}

void byte_level_encode(std::string_view bytes, std::string &out) {
  for (char c : bytes)
    utf8_append(byte_to_codepoint(static_cast<uint8_t>(c)), out);
}

void byte_level_decode(std::string_view token, std::string &out) {
  size_t mark = out.size();
  for (size_t i = 0; i < token.size();) {
    utf8_char ch = utf8_next(token, i);
    int b = ch.cp == invalid_cp ? -1 : codepoint_to_byte(ch.cp);
    if (b < 0) {
      out.resize(mark);
      out.append(token);
      return;
    }
    out += static_cast<char>(b);
    i += ch.len;
  }
}

namespace {

enum class cc : uint8_t { space, letter, number, other };

struct char_info {
  size_t pos;
  uint32_t cp;
  cc cls;
};

cc classify(uint32_t cp) {
  if (cp == invalid_cp)
    return cc::other;
  if (unicode_is_space(cp))
    return cc::space;
  switch (unicode_class(cp)) {
  case uclass::letter:
    return cc::letter;
  case uclass::number:
    return cc::number;
  default:
    return cc::other;
  }
}

// The length in characters of a contraction ('s 't 're 've 'm 'll 'd) at chars[i], or 0.
size_t contraction(const std::vector<char_info> &chars, size_t i) {
  if (chars[i].cp != '\'' || i + 1 >= chars.size())
    return 0;
  uint32_t a = chars[i + 1].cp;
  if (a == 's' || a == 't' || a == 'm' || a == 'd')
    return 2;
  if (i + 2 >= chars.size())
    return 0;
  uint32_t b = chars[i + 2].cp;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
    return 3;
  return 0;
}

} // namespace

void gpt2_split(std::string_view text, std::vector<std::pair<size_t, size_t>> &out) {
  std::vector<char_info> chars;
  chars.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    utf8_char ch = utf8_next(text, i);
    chars.push_back({i, ch.cp, classify(ch.cp)});
    i += ch.len;
  }
  const size_t n = chars.size();
  auto byte_pos = [&](size_t c) { return c < n ? chars[c].pos : text.size(); };
  size_t i = 0;
  while (i < n) {
    size_t end = i; // exclusive, in characters
    if (size_t len = contraction(chars, i)) {
      end = i + len;
    } else {
      // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
      size_t start = (chars[i].cp == ' ' && i + 1 < n && chars[i + 1].cls != cc::space) ? i + 1 : i;
      cc cls = chars[start].cls;
      if (cls != cc::space) {
        end = start;
        while (end < n && chars[end].cls == cls)
          ++end;
      } else {
        // `\s+(?!\S)`, else `\s+`: a run of spaces gives its last one to the word that follows.
        size_t j = i;
        while (j < n && chars[j].cls == cc::space)
          ++j;
        end = (j < n && j - i >= 2) ? j - 1 : j;
      }
    }
    out.emplace_back(byte_pos(i), byte_pos(end));
    i = end;
  }
}

} // namespace phimoe_rt::tok
