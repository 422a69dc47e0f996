// added_tokens.cpp - a byte trie over the added tokens and the split with lstrip/rstrip rules.
#include "added_tokens.h"

#include "unicode_classes.h"
#include "utf8.h"

namespace phimoe_rt::tok {

void added_matcher::build(const std::vector<const added_token *> &tokens,
                          const std::vector<std::string> &patterns) {
  tokens_.clear();
  edges_.clear();
  terminal_.assign(1, -1);
  for (bool &b : first_byte_)
    b = false;
  for (size_t t = 0; t < tokens.size(); ++t) {
    const std::string &p = patterns[t];
    if (p.empty())
      continue;
    int idx = static_cast<int>(tokens_.size());
    tokens_.push_back(tokens[t]);
    first_byte_[static_cast<uint8_t>(p[0])] = true;
    int32_t node = 0;
    for (char c : p) {
      uint64_t key = static_cast<uint64_t>(node) << 8 | static_cast<uint8_t>(c);
      auto it = edges_.find(key);
      if (it == edges_.end()) {
        int32_t child = static_cast<int32_t>(terminal_.size());
        terminal_.push_back(-1);
        it = edges_.emplace(key, child).first;
      }
      node = it->second;
    }
    if (terminal_[node] < 0)
      terminal_[node] = idx; // the first of two equal patterns wins
  }
}

std::pair<int, size_t> added_matcher::longest_at(std::string_view text, size_t pos) const {
  int best = -1;
  size_t best_len = 0;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    auto it = edges_.find(static_cast<uint64_t>(node) << 8 | static_cast<uint8_t>(text[i]));
    if (it == edges_.end())
      break;
    node = it->second;
    if (terminal_[node] >= 0) {
      best = terminal_[node];
      best_len = i + 1 - pos;
    }
  }
  return {best, best_len};
}

namespace {

// The code point that ends at text[end) (or invalid_cp).
uint32_t last_cp(std::string_view text, size_t end) {
  size_t i = end;
  while (i > 0 && end - i < 4) {
    --i;
    if ((static_cast<uint8_t>(text[i]) & 0xC0) != 0x80)
      break;
  }
  utf8_char c = utf8_next(text, i);
  return i + c.len == end ? c.cp : invalid_cp;
}

bool word_before(std::string_view text, size_t pos) {
  return pos > 0 && unicode_is_word(last_cp(text, pos));
}

bool word_after(std::string_view text, size_t pos) {
  return pos < text.size() && unicode_is_word(utf8_next(text, pos).cp);
}

} // namespace

void added_matcher::split(std::string_view text, std::vector<text_part> &out) const {
  size_t done = 0; // text[0, done) is in out
  size_t pos = 0;
  while (!tokens_.empty() && pos < text.size()) {
    if (!first_byte_[static_cast<uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    auto [idx, len] = longest_at(text, pos);
    if (idx < 0) {
      ++pos;
      continue;
    }
    const added_token &t = *tokens_[idx];
    size_t start = pos, stop = pos + len;
    pos = stop; // the search goes on after this match, taken or not
    if (t.single_word && (word_before(text, start) || word_after(text, stop)))
      continue;
    if (t.lstrip) {
      while (start > done) {
        uint32_t cp = last_cp(text, start);
        if (cp == invalid_cp || !unicode_is_space(cp))
          break;
        start -= cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
      }
    }
    if (t.rstrip) {
      while (stop < text.size()) {
        utf8_char c = utf8_next(text, stop);
        if (c.cp == invalid_cp || !unicode_is_space(c.cp))
          break;
        stop += c.len;
      }
      pos = stop;
    }
    if (start > done)
      out.push_back({done, start, -1});
    out.push_back({start, stop, t.id});
    done = stop;
  }
  if (done < text.size())
    out.push_back({done, text.size(), -1});
}

} // namespace phimoe_rt::tok
