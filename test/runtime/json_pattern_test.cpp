// json_pattern_test.cpp - JSON Schema patterns as byte automata (ByteDfa) against std::regex's
// ECMAScript grammar, the one JSON Schema names: for each pattern, strings that match and
// their random edits, the automaton accepts a whole string exactly when std::regex_search finds
// the pattern in it (anchored patterns: the whole string). Then what std::regex cannot check
// here (characters beyond ASCII, the fewest characters left), the formats, and the patterns
// refused.
#include "phimoe_rt/json_mode.h"
#include "phimoe_rt/json_pattern.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <random>
#include <regex>

namespace {

using phimoe_rt::ByteDfa;
using phimoe_rt::PatternError;

bool matches(const ByteDfa &dfa, const std::string &s) {
  int32_t state = ByteDfa::kStart;
  for (unsigned char c : s) {
    state = dfa.next(state, c);
    if (state < 0)
      return false;
  }
  return dfa.accepting(state);
}

} // namespace

TEST(JsonPattern, AgreesWithStdRegex) {
  struct Case {
    const char *pattern;
    std::vector<std::string> matching;
  };
  const std::vector<Case> cases = {
      {"^[a-z]+$", {"abc", "z"}},
      {"^\\d{3}-\\d{4}$", {"555-1234"}},
      {"b", {"abc", "b"}},
      {"^(ab|cd)*e?$", {"ababcd", "", "cde"}},
      {"^a{2,4}b{0,}c{1}$", {"aac", "aaaabbbc"}},
      {"x+?y", {"xxy"}},
      {"^[^a-c]+[A-Z_]*$", {"xyzAB_", "1"}},
      {"^\\w+@\\w+\\.(com|org)$", {"me@x.org", "a_b@c.com"}},
      {"^(?:\\s|\\.)+$", {" . ", "."}},
      {"^[-+]?\\d+(\\.\\d+)?$", {"-1.5", "+3", "42"}},
      {"^\\S\\D\\W$", {"a.-", "1a-"}},
      {"^[\\d\\-x]{3}$", {"1-x", "xx9"}},
      {"^\\x41\\u0042[\\x61-\\x63]$", {"ABa", "ABc"}},
      {"^a|b$", {}}, // refused below
  };
  std::mt19937 rng(7);
  auto pick = [&](int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); };
  static const char alphabet[] = "abcdexyzABZ_019-+.@ ";
  for (const Case &c : cases) {
    if (std::string(c.pattern) == "^a|b$")
      continue;
    SCOPED_TRACE(c.pattern);
    const ByteDfa dfa = ByteDfa::compile(c.pattern);
    const std::regex re(c.pattern, std::regex::ECMAScript);
    for (const std::string &m : c.matching) {
      ASSERT_TRUE(std::regex_search(m, re)) << m;
      EXPECT_TRUE(matches(dfa, m)) << m;
    }
    int agree_true = 0;
    for (int i = 0; i < 3000; ++i) {
      std::string s = c.matching.empty() ? "" : c.matching[static_cast<size_t>(
                                                    pick(static_cast<int>(c.matching.size())))];
      for (int k = 0, n = pick(4); k < n; ++k) {
        const size_t at = s.empty() ? 0 : static_cast<size_t>(pick(static_cast<int>(s.size())));
        const char ch = alphabet[pick(static_cast<int>(sizeof alphabet) - 1)];
        switch (pick(3)) {
        case 0: s.insert(s.begin() + static_cast<long>(at), ch); break;
        case 1: if (!s.empty()) s.erase(at, 1); break;
        default: if (!s.empty()) s[at] = ch;
        }
      }
      const bool expected = std::regex_search(s, re);
      EXPECT_EQ(matches(dfa, s), expected) << "'" << s << "'";
      agree_true += expected;
    }
    EXPECT_GT(agree_true, 50);
  }
}

TEST(JsonPattern, CharactersBeyondAscii) {
  const ByteDfa two = ByteDfa::compile("^.{2}$");
  EXPECT_TRUE(matches(two, "\xc3\xa9\xe2\x82\xac")); // é€: two characters, five bytes
  EXPECT_TRUE(matches(two, "a\xf0\x9f\x98\x80"));
  EXPECT_FALSE(matches(two, "abc"));
  EXPECT_FALSE(matches(two, "\xc3\xa9"));
  const ByteDfa lit = ByteDfa::compile("^caf\xc3\xa9+\\u00e8$"); // é+ then \u00e8 (è)
  EXPECT_TRUE(matches(lit, "caf\xc3\xa9\xc3\xa9\xc3\xa8"));
  EXPECT_FALSE(matches(lit, "cafe\xc3\xa8"));
  EXPECT_TRUE(matches(ByteDfa::compile("^[^a]$"), "\xc3\xa9"));
  // What a reply writes only escaped never matches: '.' and [^a] leave out '"' and '\'.
  EXPECT_FALSE(matches(ByteDfa::compile("^.$"), "\""));
  EXPECT_FALSE(matches(ByteDfa::compile("^[^a]$"), "\\"));
}

TEST(JsonPattern, FewestCharactersLeft) {
  const ByteDfa d = ByteDfa::compile("^\\d{3}-\\d{4}$");
  EXPECT_EQ(d.chars_left(ByteDfa::kStart), 8u);
  EXPECT_EQ(d.chars_left(d.next(ByteDfa::kStart, '5')), 7u);
  const ByteDfa e = ByteDfa::compile("^\xc3\xa9{2}$");
  EXPECT_EQ(e.chars_left(ByteDfa::kStart), 2u);
  // After the first é's lead byte that character is counted: one more is left.
  EXPECT_EQ(e.chars_left(e.next(ByteDfa::kStart, 0xc3)), 1u);
}

TEST(JsonPattern, Formats) {
  const std::vector<std::pair<const char *, std::vector<std::pair<const char *, bool>>>> cases = {
      {"date", {{"2026-12-07", true}, {"2026-13-01", false}, {"2026-1-01", false}}},
      {"time", {{"23:59:60Z", false}, {"23:59:59Z", true}, {"08:30:00.25+05:30", true},
                {"08:30:00", false}}},
      {"date-time", {{"2026-12-07T10:00:00Z", true}, {"2026-12-07 10:00:00Z", false}}},
      {"uuid", {{"123e4567-e89b-12d3-a456-426614174000", true}, {"123e4567", false}}},
      {"email", {{"ada@example.org", true}, {"ada@example", false}, {"@x.org", false}}},
      {"ipv4", {{"192.168.0.255", true}, {"256.1.1.1", false}, {"1.2.3", false}}},
  };
  for (const auto &[name, values] : cases) {
    const ByteDfa d = ByteDfa::format(name);
    for (const auto &[value, ok] : values)
      EXPECT_EQ(matches(d, value), ok) << name << " " << value;
  }
  EXPECT_THROW(ByteDfa::format("hostname"), PatternError);
}

TEST(JsonPattern, RefusesWhatItCannotTake) {
  for (const char *bad : {"(?=a)", "(?<n>a)", "a\\1", "\\bword", "a^b", "a$b", "^a|b$", "*a",
                          "a**", "(a", "a)", "[a", "\\p{L}", "a{3,2}", "\"", "\\n", "[\xc3\xa9]",
                          "^[^\\x00-\\x7f]$x"}) {
    EXPECT_THROW(ByteDfa::compile(bad), PatternError) << bad;
  }
  // Strings that no reply can write: only '"'.
  EXPECT_THROW(ByteDfa::compile("^[\"]$"), PatternError);
}

TEST(JsonPattern, HeldInAStructuredReply) {
  using phimoe_rt::JsonGrammar;
  using phimoe_rt::JsonPrefix;
  const auto g = JsonGrammar::from_schema(nlohmann::ordered_json::parse(R"({
      "type": "object", "required": ["id", "when"], "additionalProperties": false,
      "properties": {"id": {"type": "string", "pattern": "^ab+$", "maxLength": 3},
                     "when": {"type": "string", "format": "date"}}})"));
  auto takes = [&](const std::string &text) { return JsonPrefix(*g).push(text); };
  auto whole = [&](const std::string &text) {
    JsonPrefix p(*g);
    return p.push(text) && p.complete();
  };
  EXPECT_TRUE(whole(R"({"id":"abb","when":"2026-12-07"})"));
  EXPECT_FALSE(takes(R"({"id":"abbb)"));    // past maxLength
  EXPECT_FALSE(takes(R"({"id":"a")"));      // not yet a match
  EXPECT_FALSE(takes(R"({"id":"b)"));       // no match begins so
  EXPECT_FALSE(takes(R"({"id":"a\u0062)")); // no escapes in a pattern's value
  EXPECT_FALSE(takes(R"({"id":"ab","when":"2026-13)"));
  // maxLength 1 leaves no room for "ab": the value cannot begin.
  const auto tight = JsonGrammar::from_schema(nlohmann::ordered_json::parse(
      R"({"type": "object", "properties": {"id": {"type": "string", "pattern": "^ab+$",
          "maxLength": 1}}})"));
  EXPECT_FALSE(JsonPrefix(*tight).push(R"({"id":"a)"));
}
