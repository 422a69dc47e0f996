// test_data.h - where the shared vocabularies are, and the reader of their .inp/.out files.
#ifndef PHIMOE_TEST_TOKENIZER_TEST_DATA_H
#define PHIMOE_TEST_TOKENIZER_TEST_DATA_H

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace phimoe_test {

inline std::string vocab_dir() {
  if (const char *env = std::getenv("PHIMOE_VOCAB_DIR"); env && *env)
    return env;
  return PHIMOE_VOCAB_DIR;
}

inline bool read_file(const std::string &path, std::string &out) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return false;
  std::stringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return true;
}

// The copies in shared/ have CRLF line ends (the strings of llama.cpp's files have none: no
// reference id list holds the "\r" token, which vocab_test checks); back to LF.
inline std::string lf(const std::string &s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i)
    if (!(s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n'))
      out += s[i];
  return out;
}

// llama.cpp's format: every string is followed by "\n__ggml_vocab_test__\n", so a string's own
// leading and trailing newlines are kept, and "" is a separator right after the previous one.
inline std::vector<std::string> split_inp(const std::string &text) {
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> out;
  size_t pos = 0;
  for (size_t hit; (hit = text.find(sep, pos)) != std::string::npos; pos = hit + sep.size())
    out.push_back(text.substr(pos, hit - pos));
  return out; // anything after the last separator is not a test string
}

// One line of ids per string (" 1 2 3"; an empty line for no ids).
inline std::vector<std::vector<int32_t>> parse_out(const std::string &text) {
  std::vector<std::vector<int32_t>> out;
  std::stringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    std::stringstream ss(line);
    std::vector<int32_t> ids;
    long v;
    while (ss >> v)
      ids.push_back(static_cast<int32_t>(v));
    out.push_back(ids);
  }
  return out;
}

} // namespace phimoe_test

#endif // PHIMOE_TEST_TOKENIZER_TEST_DATA_H
