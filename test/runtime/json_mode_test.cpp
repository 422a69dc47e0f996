// json_mode_test.cpp - JSON mode's automaton (JsonPrefix) against nlohmann::json's parser:
// random JSON objects are accepted byte by byte and complete exactly at their last byte, and
// for their one-byte mutations JsonPrefix takes the whole string as a complete object exactly
// when nlohmann::json accepts it as one. JsonMask keeps exactly the tokens whose bytes continue
// the prefix, and no special token.
#include "phimoe_rt/json_mode.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <regex>

namespace {

using phimoe_rt::JsonPrefix;

class Gen {
public:
  explicit Gen(unsigned seed) : rng_(seed) {}
  int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

  void space(std::string &out) {
    static const char *spaces[] = {"", "", "", " ", "\n", "\t", "\r\n", "  "};
    out += spaces[pick(8)];
  }
  void string(std::string &out) {
    out += '"';
    for (int i = 0, n = pick(6); i < n; ++i) {
      switch (pick(6)) {
      case 0: out += "\\\""; break;
      case 1: out += "\\u00e9"; break;
      case 2: out += "\\n"; break;
      case 3: out += "\xc3\xa9"; break; // UTF-8 as it is
      default: out += static_cast<char>('a' + pick(26));
      }
    }
    out += '"';
  }
  void number(std::string &out) {
    static const char *numbers[] = {"0", "-0", "7", "-12", "3.25", "0.5e10", "1E-3", "-4e+2",
                                    "100", "6.02e23"};
    out += numbers[pick(10)];
  }
  void value(std::string &out, int depth) {
    const int kind = depth > 3 ? 3 + pick(4) : pick(7);
    switch (kind) {
    case 0: case 1: object(out, depth + 1); break;
    case 2: array(out, depth + 1); break;
    case 3: string(out); break;
    case 4: number(out); break;
    case 5: out += pick(2) ? "true" : "false"; break;
    default: out += "null";
    }
  }
  void object(std::string &out, int depth) {
    out += '{';
    space(out);
    for (int i = 0, n = pick(4); i < n; ++i) {
      if (i) {
        out += ',';
        space(out);
      }
      string(out);
      space(out);
      out += ':';
      space(out);
      value(out, depth);
      space(out);
    }
    out += '}';
  }
  void array(std::string &out, int depth) {
    out += '[';
    space(out);
    for (int i = 0, n = pick(4); i < n; ++i) {
      if (i) {
        out += ',';
        space(out);
      }
      value(out, depth);
      space(out);
    }
    out += ']';
  }

private:
  std::mt19937 rng_;
};

// `s` with its control and non-ASCII bytes as \xNN, for messages.
std::string shown(const std::string &s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

// Whether JsonPrefix takes all of `s` and ends complete.
bool complete_object(const std::string &s) {
  JsonPrefix p;
  return p.push(s) && p.complete();
}

// What nlohmann::json says of `s` as a reply of JSON mode: one object, from the first byte to
// the last.
bool is_object(const std::string &s) {
  return nlohmann::json::accept(s) && s.front() == '{' && s.back() == '}';
}

} // namespace

TEST(JsonPrefix, RandomObjectsCompleteAtTheirLastByte) {
  Gen gen(1);
  for (int i = 0; i < 2000; ++i) {
    std::string doc;
    gen.object(doc, 0);
    ASSERT_TRUE(nlohmann::json::accept(doc)) << doc;
    JsonPrefix p;
    for (size_t k = 0; k < doc.size(); ++k) {
      ASSERT_FALSE(p.complete()) << doc << " at " << k;
      ASSERT_TRUE(p.push(static_cast<unsigned char>(doc[k]))) << doc << " at " << k;
    }
    EXPECT_TRUE(p.complete()) << doc;
    EXPECT_FALSE(p.push('}'));
  }
}

TEST(JsonPrefix, MutationsAgreeWithAParser) {
  Gen gen(2);
  static const char alphabet[] = "{}[]\":,.-+eE0123456789tfnrulsa\\ \n\x01\xc3";
  const std::regex huge_exponent("[eE][+-]?[0-9]{3}");
  int accepted = 0, refused = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string doc;
    gen.object(doc, 0);
    const size_t at = static_cast<size_t>(gen.pick(static_cast<int>(doc.size())));
    const char c = alphabet[gen.pick(static_cast<int>(sizeof alphabet) - 1)];
    switch (gen.pick(3)) {
    case 0: doc.erase(at, 1); break;
    case 1: doc.insert(doc.begin() + static_cast<long>(at), c); break;
    default: doc[at] = c;
    }
    if (std::regex_search(doc, huge_exponent))
      continue; // JSON's grammar allows 1e999; nlohmann::json refuses it as out of range
    const bool expected = is_object(doc);
    EXPECT_EQ(complete_object(doc), expected) << shown(doc);
    (expected ? accepted : refused)++;
  }
  EXPECT_GT(accepted, 1000);
  EXPECT_GT(refused, 1000);
}

TEST(JsonPrefix, RefusesWhatNoObjectBeginsWith) {
  for (const char *bad : {"[1]", "\"a\"", "1", "{'a': 1}", "{a:1}", "{\"a\" 1}", "{\"a\":01}",
                          "{\"a\":1,}", "{\"a\":tru }", "{\"a\":-}", "{\"a\":1.}", "{\"a\":1e}",
                          "{\"a\":\"\\q\"}", "{\"a\":\"\\u12G4\"}", "{\"a\":\"\x01\"}", "{}}",
                          "{\"a\":[1}", "{\"a\":{]}"}) {
    JsonPrefix p;
    EXPECT_FALSE(p.push(std::string(bad)) && p.complete()) << bad;
  }
  // The object comes first; whitespace runs and nesting are bounded.
  EXPECT_FALSE(JsonPrefix().push(' '));
  JsonPrefix p;
  EXPECT_TRUE(p.push("{" + std::string(JsonPrefix::kMaxWhitespace, ' ')));
  EXPECT_FALSE(p.push(' '));
  JsonPrefix deep;
  EXPECT_TRUE(deep.push("{\"a\":" + std::string(JsonPrefix::kMaxDepth - 1, '[')));
  EXPECT_FALSE(deep.push('['));
}

TEST(JsonMask, KeepsTheTokensThatContinueThePrefix) {
  std::string error;
  auto tok = phimoe_rt::Tokenizer::load_hf(PHIMOE_EXAMPLE_DIR "/tokenizer.json", "", error);
  ASSERT_TRUE(tok) << error;
  const int vocab = tok->vocab_size();
  phimoe_rt::JsonMask mask(*tok, vocab);
  for (const char *prefix : {"", "{", "{\"ab", "{\"a\": [1, 2.5", "{\"a\": tr", "{\"\xc3"}) {
    JsonPrefix p;
    ASSERT_TRUE(p.push(std::string(prefix)));
    std::vector<float> logits(static_cast<size_t>(vocab), 0.5f);
    const int allowed = mask.apply(p, logits.data());
    int kept = 0;
    for (int32_t id = 0; id < vocab; ++id) {
      JsonPrefix probe = p;
      const std::string bytes = tok->token_bytes(id);
      const bool ok = !tok->is_special(id) && !bytes.empty() && probe.push(bytes);
      EXPECT_EQ(std::isinf(logits[static_cast<size_t>(id)]), !ok) << prefix << " " << id;
      kept += ok;
    }
    EXPECT_EQ(allowed, kept) << prefix;
    EXPECT_GT(kept, 0) << prefix;
  }
}
