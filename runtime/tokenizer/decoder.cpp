// decoder.cpp - Replace, ByteFallback, Fuse, Strip, Metaspace and ByteLevel decoder steps.
#include "decoder.h"

#include "byte_level.h"
#include "utf8.h"

namespace phimoe_rt::tok {

namespace {

// A slot to build into (the one past n), grown on first use.
std::string &scratch_slot(std::vector<std::string> &tokens, size_t n) {
  if (tokens.size() <= n)
    tokens.resize(n + 1);
  return tokens[n];
}

void replace_in(std::vector<std::string> &tokens, size_t n, const std::string &pattern,
                const std::string &content) {
  if (pattern.empty())
    return;
  std::string &tmp = scratch_slot(tokens, n);
  for (size_t i = 0; i < n; ++i) {
    std::string &t = tokens[i];
    if (t.find(pattern) == std::string::npos)
      continue;
    tmp.clear();
    size_t pos = 0;
    for (size_t hit; (hit = t.find(pattern, pos)) != std::string::npos;
         pos = hit + pattern.size()) {
      tmp.append(t, pos, hit - pos);
      tmp.append(content);
    }
    tmp.append(t, pos, std::string::npos);
    t.swap(tmp);
  }
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

// The byte a "<0xNN>" piece stands for, or -1.
int byte_piece(const std::string &t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>')
    return -1;
  int hi = hex_digit(t[3]), lo = hex_digit(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// Runs of byte pieces become their text: one token if it is well-formed UTF-8 (or `raw`),
// else one U+FFFD per byte, as HF's ByteFallback decoder does.
size_t byte_fallback(std::vector<std::string> &tokens, size_t n, bool raw) {
  size_t w = 0;
  std::string &run = scratch_slot(tokens, n);
  run.clear();
  auto flush = [&] {
    if (run.empty())
      return;
    if (raw || utf8_valid(run)) {
      tokens[w++].swap(run);
    } else {
      // There are slots enough: the run came from run.size() pieces behind the reader.
      for (size_t k = 0; k < run.size(); ++k)
        tokens[w + k].assign("\xEF\xBF\xBD");
      w += run.size();
    }
    run.clear();
  };
  // Writing happens behind reading: w <= i always (a run of k pieces writes at most k slots).
  for (size_t i = 0; i < n; ++i) {
    int b = byte_piece(tokens[i]);
    if (b >= 0) {
      run += static_cast<char>(b);
      continue;
    }
    flush();
    if (w != i)
      tokens[w].swap(tokens[i]);
    ++w;
  }
  flush();
  return w;
}

size_t fuse(std::vector<std::string> &tokens, size_t n) {
  if (n == 0)
    return 0;
  for (size_t i = 1; i < n; ++i)
    tokens[0].append(tokens[i]);
  return 1;
}

// With `stream`, nothing is stripped from the end: a stream cannot take back what it showed, and
// what ends a piece now may be inside the text later.
void strip(std::vector<std::string> &tokens, size_t n, const dec_step &s, bool stream) {
  const std::string &c = s.content;
  if (c.empty())
    return;
  for (size_t i = 0; i < n; ++i) {
    std::string &t = tokens[i];
    size_t front = 0;
    for (size_t k = 0; k < s.start && t.compare(front, c.size(), c) == 0; ++k)
      front += c.size();
    size_t back = t.size();
    for (size_t k = 0; !stream && k < s.stop && back >= front + c.size() &&
                       t.compare(back - c.size(), c.size(), c) == 0;
         ++k)
      back -= c.size();
    t.erase(back);
    t.erase(0, front);
  }
}

void metaspace(std::vector<std::string> &tokens, size_t n, const dec_step &s) {
  const std::string &r = s.replacement;
  if (r.empty())
    return;
  std::string &tmp = scratch_slot(tokens, n);
  for (size_t i = 0; i < n; ++i) {
    bool drop = i == 0 && s.scheme != prepend_scheme::never;
    std::string &t = tokens[i];
    if (t.find(r) == std::string::npos)
      continue;
    tmp.clear();
    size_t pos = 0;
    for (size_t hit; (hit = t.find(r, pos)) != std::string::npos; pos = hit + r.size()) {
      tmp.append(t, pos, hit - pos);
      if (!drop)
        tmp += ' ';
    }
    tmp.append(t, pos, std::string::npos);
    t.swap(tmp);
  }
}

size_t byte_level(std::vector<std::string> &tokens, size_t n, bool raw) {
  if (n == 0)
    return 0;
  std::string &bytes = scratch_slot(tokens, n);
  bytes.clear();
  for (size_t i = 0; i < n; ++i)
    byte_level_decode(tokens[i], bytes);
  std::string &first = tokens[0];
  first.clear();
  if (raw)
    first.append(bytes);
  else
    utf8_append_lossy(bytes, first);
  return 1;
}

} // namespace

void run_decoder(const std::vector<dec_step> &steps, std::vector<std::string> &tokens, size_t n,
                 bool raw, std::string &out) {
  for (const dec_step &s : steps) {
    switch (s.k) {
    case dec_step::kind::replace:
      replace_in(tokens, n, s.pattern, s.content);
      break;
    case dec_step::kind::byte_fallback:
      n = byte_fallback(tokens, n, raw);
      break;
    case dec_step::kind::fuse:
      n = fuse(tokens, n);
      break;
    case dec_step::kind::strip:
      strip(tokens, n, s, raw);
      break;
    case dec_step::kind::metaspace:
      metaspace(tokens, n, s);
      break;
    case dec_step::kind::byte_level:
      n = byte_level(tokens, n, raw);
      break;
    }
  }
  for (size_t i = 0; i < n; ++i)
    out.append(tokens[i]);
}

} // namespace phimoe_rt::tok
