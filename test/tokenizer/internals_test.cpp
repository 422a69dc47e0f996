// internals_test.cpp - UTF-8 repair, the Unicode classes, the byte-level alphabet, the GPT-2
// split and the piece map.
#include "byte_level.h"
#include "piece_map.h"
#include "unicode_classes.h"
#include "utf8.h"

#include <gtest/gtest.h>

#include <random>

using namespace phimoe_rt::tok;

namespace {

std::string lossy(const std::string &s) {
  std::string out;
  utf8_append_lossy(s, out);
  return out;
}

std::vector<std::string> split(const std::string &text) {
  std::vector<std::pair<size_t, size_t>> parts;
  gpt2_split(text, parts);
  std::vector<std::string> out;
  for (auto [b, e] : parts)
    out.push_back(text.substr(b, e - b));
  return out;
}

const std::string fffd = "\xEF\xBF\xBD";

} // namespace

TEST(Utf8, LossyReplacesMaximalSubparts) {
  EXPECT_EQ(lossy("abc"), "abc");
  EXPECT_EQ(lossy("\xC3\xA9"), "\xC3\xA9");
  EXPECT_EQ(lossy("\xE2\x82"
                  "A"),
            fffd + "A");                                // a truncated sequence: one U+FFFD
  EXPECT_EQ(lossy("\xF0\x80\x80"), fffd + fffd + fffd); // F0 80: 80 is not allowed after F0
  EXPECT_EQ(lossy("\xED\xA0\x80"), fffd + fffd + fffd); // a surrogate
  EXPECT_EQ(lossy("\xFF"
                  "a\x80"),
            fffd + "a" + fffd);
  EXPECT_EQ(lossy("\xF0\x9F\x98"), fffd); // incomplete at the end
}

TEST(Utf8, IncompleteTail) {
  EXPECT_EQ(utf8_incomplete_tail(""), 0u);
  EXPECT_EQ(utf8_incomplete_tail("a\xF0\x9F\x98"), 3u);
  EXPECT_EQ(utf8_incomplete_tail("a\xF0\x9F\x98\x81"), 0u);
  EXPECT_EQ(utf8_incomplete_tail("\xE6"), 1u);
  EXPECT_EQ(utf8_incomplete_tail("\xE6"
                                 "a"),
            0u);
  EXPECT_EQ(utf8_incomplete_tail("\x80"), 0u);     // not a prefix of anything
  EXPECT_EQ(utf8_incomplete_tail("\xF0\x80"), 0u); // ill-formed, not incomplete
  EXPECT_EQ(utf8_incomplete_tail("\xC3\xA9\xE2\x82"), 2u);
}

TEST(UnicodeClasses, LettersNumbersSpaces) {
  EXPECT_EQ(unicode_class('a'), uclass::letter);
  EXPECT_EQ(unicode_class(0x00E9), uclass::letter); // é
  EXPECT_EQ(unicode_class(0x6211), uclass::letter); // 我
  EXPECT_EQ(unicode_class(0x0301), uclass::mark);   // combining acute
  EXPECT_EQ(unicode_class(0x0663), uclass::number); // Arabic-Indic 3
  EXPECT_EQ(unicode_class(0x00BD), uclass::number); // ½
  EXPECT_EQ(unicode_class(0x1F600), uclass::other); // 😀
  EXPECT_EQ(unicode_class('!'), uclass::other);
  EXPECT_EQ(unicode_class(0x10FFFF), uclass::other);
  EXPECT_TRUE(unicode_is_space(0x3000));
  EXPECT_TRUE(unicode_is_space(0x00A0));
  EXPECT_FALSE(unicode_is_space(0x200B));
  EXPECT_TRUE(unicode_is_word('_'));
  EXPECT_FALSE(unicode_is_word('-'));
}

TEST(ByteLevel, AlphabetIsABijection) {
  std::string all;
  for (int b = 0; b < 256; ++b) {
    uint32_t cp = byte_to_codepoint(static_cast<uint8_t>(b));
    EXPECT_EQ(codepoint_to_byte(cp), b);
    all += static_cast<char>(b);
  }
  EXPECT_EQ(byte_to_codepoint(' '), 0x120u);  // Ġ
  EXPECT_EQ(byte_to_codepoint('\n'), 0x10Au); // Ċ
  std::string spelled, back;
  byte_level_encode(all, spelled);
  byte_level_decode(spelled, back);
  EXPECT_EQ(back, all);
  back.clear();
  byte_level_decode("<|endoftext|>", back);
  EXPECT_EQ(back, "<|endoftext|>");
  back.clear();
  byte_level_decode("\xE2\x96\x81x", back); // "▁" is outside the alphabet: the token as is
  EXPECT_EQ(back, "\xE2\x96\x81x");
}

TEST(Gpt2Split, FollowsThePattern) {
  using v = std::vector<std::string>;
  EXPECT_EQ(split("Hello world"), (v{"Hello", " world"}));
  EXPECT_EQ(split("I've 'told he's"), (v{"I", "'ve", " '", "told", " he", "'s"}));
  EXPECT_EQ(split("a  b"), (v{"a", " ", " b"})); // \s+(?!\S) leaves the last space
  EXPECT_EQ(split("a \n b"), (v{"a", " \n", " b"}));
  EXPECT_EQ(split("x   "), (v{"x", "   "}));       // trailing spaces stay together
  EXPECT_EQ(split("\n\nx"), (v{"\n", "\n", "x"})); // a single \s before \S: \s+
  EXPECT_EQ(split("3.14 abc123"), (v{"3", ".", "14", " abc", "123"}));
  EXPECT_EQ(split("!!'s ??"), (v{"!!'", "s", " ??"}));
  EXPECT_EQ(split("caf\xC3\xA9 na\xC3\xAFve"), (v{"caf\xC3\xA9", " na\xC3\xAFve"}));
  EXPECT_EQ(split("e\xCC\x81"), (v{"e", "\xCC\x81"})); // a combining mark is not \p{L}
  EXPECT_EQ(split(" \xF0\x9F\x98\x81!"), (v{" \xF0\x9F\x98\x81!"}));
  EXPECT_EQ(split(""), v{});
  EXPECT_EQ(split("\xFF"
                  "ab"),
            (v{"\xFF", "ab"})); // an ill-formed byte: not a letter
}

TEST(PieceMap, FindsWhatWasSet) {
  piece_map m;
  std::mt19937 rng(1234);
  std::vector<std::string> keys;
  for (int i = 0; i < 5000; ++i)
    keys.push_back(std::to_string(rng()) + (i % 3 ? "\xE2\x96\x81" : ""));
  for (size_t i = 0; i < keys.size(); ++i)
    m.set(keys[i], static_cast<int32_t>(i));
  for (size_t i = 0; i < keys.size(); ++i)
    EXPECT_EQ(m.find(keys[i]), static_cast<int32_t>(i));
  EXPECT_EQ(m.find("absent"), -1);
  m.set(keys[0], 77);
  EXPECT_EQ(m.find(keys[0]), 77);
  piece_map moved = std::move(m);
  EXPECT_EQ(moved.find(keys[1]), 1);
}
