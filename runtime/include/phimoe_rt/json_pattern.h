// json_pattern.h - a JSON schema's `pattern` (and the `format`s phimoe-bin holds replies to) as
// a deterministic automaton over the bytes a structured reply writes inside the string.
//
// The syntax is a subset of ECMA-262's, as JSON Schema has it: literals, `.`, classes `[a-z]`
// `[^"]`, the escapes \d \w \s \D \W \S and escaped punctuation, groups `(...)` `(?:...)`,
// alternation, the quantifiers * + ? {n} {n,} {n,m} (lazy or not: the same strings), and `^` and
// `$` at the ends of the pattern. A pattern matches anywhere in the value unless anchored, as in
// JSON Schema. Backreferences, lookaround, \b and anchors elsewhere are refused (PatternError).
// The value's text is written without escapes: `"`, `\` and control characters never match.
// `.` and negated classes match one whole character (a well-formed UTF-8 sequence).
#ifndef PHIMOE_RT_JSON_PATTERN_H
#define PHIMOE_RT_JSON_PATTERN_H

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace phimoe_rt {

class PatternError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

class ByteDfa {
public:
  static constexpr int kMaxStates = 4096;

  // The automaton of `pattern`; throws PatternError naming what it cannot take.
  static ByteDfa compile(const std::string &pattern);
  // The pattern of a JSON Schema `format` (date-time, date, time, uuid, email, ipv4); throws
  // PatternError for other formats.
  static ByteDfa format(const std::string &name);

  static constexpr int32_t kStart = 0;
  // The state after byte `c` from `state`; -1 when no matching value goes that way.
  int32_t next(int32_t state, unsigned char c) const {
    return table_[static_cast<size_t>(state) * 256 + c];
  }
  bool accepting(int32_t state) const { return accept_[static_cast<size_t>(state)] != 0; }
  // The fewest characters that take `state` to an accepting one.
  uint32_t chars_left(int32_t state) const { return left_[static_cast<size_t>(state)]; }
  size_t states() const { return accept_.size(); }

private:
  std::vector<int32_t> table_;
  std::vector<char> accept_;
  std::vector<uint32_t> left_;
};

} // namespace phimoe_rt

#endif // PHIMOE_RT_JSON_PATTERN_H
