// text_pipeline.cpp - Prepend/Replace normalizers; Metaspace and ByteLevel pre-tokenizers.
#include "text_pipeline.h"

#include "byte_level.h"

#include <utility>

namespace phimoe_rt::tok {

namespace {

void replace_all(std::string_view in, std::string_view pattern, std::string_view content,
                 std::string &out) {
  out.clear();
  if (pattern.empty()) {
    out.append(in);
    return;
  }
  size_t pos = 0;
  for (size_t hit; (hit = in.find(pattern, pos)) != std::string_view::npos;
       pos = hit + pattern.size()) {
    out.append(in.substr(pos, hit - pos));
    out.append(content);
  }
  out.append(in.substr(pos));
}

bool starts_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.compare(0, p.size(), p) == 0;
}

// Metaspace on one word: spaces become the replacement, the prefix is added by the scheme, and
// with `split` the word is cut before every replacement (HF's MergedWithNext).
void metaspace(const pre_step &p, std::string_view word, bool first,
               std::vector<std::string> &out) {
  std::string text;
  replace_all(word, " ", p.replacement, text);
  bool prepend = p.scheme == prepend_scheme::always || (p.scheme == prepend_scheme::first && first);
  if (prepend && !starts_with(text, p.replacement))
    text.insert(0, p.replacement);
  if (!p.split || p.replacement.empty()) {
    out.push_back(std::move(text));
    return;
  }
  std::string_view t = text;
  size_t begin = 0;
  for (size_t hit = t.find(p.replacement, 1); hit != std::string_view::npos;
       hit = t.find(p.replacement, hit + p.replacement.size())) {
    if (hit > begin)
      out.emplace_back(t.substr(begin, hit - begin));
    begin = hit;
  }
  if (begin < t.size())
    out.emplace_back(t.substr(begin));
}

void byte_level(const pre_step &p, std::string_view word, std::vector<std::string> &out) {
  std::string text;
  if (p.add_prefix_space && !starts_with(word, " "))
    text = " ";
  text.append(word);
  std::vector<std::pair<size_t, size_t>> parts;
  if (p.use_regex)
    gpt2_split(text, parts);
  else
    parts.emplace_back(0, text.size());
  for (auto [b, e] : parts) {
    std::string mapped;
    byte_level_encode(std::string_view(text).substr(b, e - b), mapped);
    out.push_back(std::move(mapped));
  }
}

} // namespace

void normalize(const std::vector<norm_step> &steps, std::string_view in, std::string &out) {
  out.assign(in);
  std::string tmp;
  for (const norm_step &s : steps) {
    if (s.k == norm_step::kind::prepend) {
      if (!out.empty())
        out.insert(0, s.content);
    } else {
      replace_all(out, s.pattern, s.content, tmp);
      out.swap(tmp);
    }
  }
}

void pre_tokenize(const std::vector<pre_step> &steps, std::string_view segment, bool at_text_start,
                  std::vector<std::string> &words) {
  std::vector<std::string> cur, next;
  cur.emplace_back(segment);
  for (const pre_step &p : steps) {
    next.clear();
    for (size_t i = 0; i < cur.size(); ++i) {
      if (p.k == pre_step::kind::metaspace)
        metaspace(p, cur[i], at_text_start && i == 0, next);
      else
        byte_level(p, cur[i], next);
    }
    cur.swap(next);
  }
  for (std::string &w : cur)
    if (!w.empty())
      words.push_back(std::move(w));
}

} // namespace phimoe_rt::tok
