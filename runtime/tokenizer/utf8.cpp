// utf8.cpp - UTF-8 decoding with the well-formed byte ranges of Unicode's Table 3-7.
#include "utf8.h"

namespace phimoe_rt::tok {

namespace {

// The number of bytes a sequence starting with `b` needs (0: b cannot start one) and the range
// allowed for its second byte.
struct lead_info {
  uint32_t len;
  uint8_t lo, hi;
};

lead_info lead(uint8_t b) {
  if (b < 0x80)
    return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF)
    return {2, 0x80, 0xBF};
  if (b == 0xE0)
    return {3, 0xA0, 0xBF};
  if (b == 0xED)
    return {3, 0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF)
    return {3, 0x80, 0xBF};
  if (b == 0xF0)
    return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3)
    return {4, 0x80, 0xBF};
  if (b == 0xF4)
    return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// How many bytes of s[i..] form the maximal well-formed prefix of a sequence, and whether that
// prefix is a complete character.
struct scan_result {
  uint32_t len;
  bool complete;
};

scan_result scan(std::string_view s, size_t i) {
  lead_info l = lead(static_cast<uint8_t>(s[i]));
  if (l.len == 0)
    return {1, false};
  if (l.len == 1)
    return {1, true};
  uint32_t n = 1;
  for (; n < l.len; ++n) {
    if (i + n >= s.size())
      return {n, false};
    uint8_t c = static_cast<uint8_t>(s[i + n]);
    uint8_t lo = n == 1 ? l.lo : 0x80, hi = n == 1 ? l.hi : 0xBF;
    if (c < lo || c > hi)
      return {n, false};
  }
  return {n, true};
}

} // namespace

utf8_char utf8_next(std::string_view s, size_t i) {
  scan_result r = scan(s, i);
  if (!r.complete)
    return {invalid_cp, 1};
  const auto *p = reinterpret_cast<const uint8_t *>(s.data() + i);
  switch (r.len) {
  case 1:
    return {p[0], 1};
  case 2:
    return {(p[0] & 0x1Fu) << 6 | (p[1] & 0x3Fu), 2};
  case 3:
    return {(p[0] & 0x0Fu) << 12 | (p[1] & 0x3Fu) << 6 | (p[2] & 0x3Fu), 3};
  default:
    return {(p[0] & 0x07u) << 18 | (p[1] & 0x3Fu) << 12 | (p[2] & 0x3Fu) << 6 | (p[3] & 0x3Fu), 4};
  }
}

void utf8_append(uint32_t cp, std::string &out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | cp >> 6);
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | cp >> 12);
    out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | cp >> 18);
    out += static_cast<char>(0x80 | (cp >> 12 & 0x3F));
    out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

void utf8_append_lossy(std::string_view s, std::string &out) {
  size_t i = 0, run = 0; // s[run, i) is well-formed and not yet copied
  while (i < s.size()) {
    scan_result r = scan(s, i);
    if (r.complete) {
      i += r.len;
      continue;
    }
    out.append(s.data() + run, i - run);
    out += "\xEF\xBF\xBD";
    i += r.len;
    run = i;
  }
  out.append(s.data() + run, i - run);
}

size_t utf8_incomplete_tail(std::string_view s) {
  // A sequence is at most 4 bytes: its lead byte is among the last 3.
  size_t first = s.size() > 3 ? s.size() - 3 : 0;
  for (size_t i = s.size(); i-- > first;) {
    auto b = static_cast<uint8_t>(s[i]);
    if ((b & 0xC0) == 0x80)
      continue; // a continuation byte: keep looking for the lead
    scan_result r = scan(s, i);
    return !r.complete && i + r.len == s.size() && lead(b).len > 1 ? s.size() - i : 0;
  }
  return 0;
}

bool utf8_valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    scan_result r = scan(s, i);
    if (!r.complete)
      return false;
    i += r.len;
  }
  return true;
}

} // namespace phimoe_rt::tok
