// hf_json_test.cpp - tokenizer.json and tokenizer_config.json: BPE merges in both spellings,
// normalizer and Metaspace variants, added tokens with their flags, decoders, config, errors.
#include "phimoe_rt/tokenizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

using phimoe_rt::Tokenizer;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string sp = "\xE2\x96\x81"; // ▁

// A small Llama-style BPE: characters, a few merges, byte fallback for the rest.
json llama_like() {
  json vocab = json::object();
  std::vector<std::string> pieces = {
      "<unk>",     "<s>",        "</s>", "<0x0A>", "<0xC3>", "<0xA9>", "<0x21>", sp,      "a",
      "b",         "h",          "e",    "l",      "o",      sp + "h", "he",     "ll",    sp + "he",
      sp + "hell", sp + "hello", "lo",   "ab",     sp + "a", sp + sp,  "<x>",    "[mask]"};
  for (size_t i = 0; i < pieces.size(); ++i)
    vocab[pieces[i]] = i;
  json merges = json::array();
  for (auto [a, b] : std::vector<std::pair<std::string, std::string>>{{sp, "h"},
                                                                      {sp + "h", "e"},
                                                                      {"l", "l"},
                                                                      {sp + "he", "ll"},
                                                                      {sp + "hell", "o"},
                                                                      {"a", "b"},
                                                                      {sp, "a"},
                                                                      {"h", "e"},
                                                                      {"l", "o"},
                                                                      {sp, sp}})
    merges.push_back(a + " " + b);
  json j;
  j["version"] = "1.0";
  j["model"] = {{"type", "BPE"},        {"vocab", vocab},        {"merges", merges},
                {"unk_token", "<unk>"}, {"byte_fallback", true}, {"fuse_unk", true},
                {"dropout", nullptr}};
  auto added = [](int id, const std::string &c, bool special) {
    return json{{"id", id},        {"content", c},        {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", special}};
  };
  j["added_tokens"] = {added(0, "<unk>", true), added(1, "<s>", true), added(2, "</s>", true)};
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", sp}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", sp}}}}};
  j["pre_tokenizer"] = nullptr;
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"pair", json::array()},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", sp}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  return j;
}

class HfJson : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("phimoe-tok-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string &name, const std::string &text) {
    fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
  std::unique_ptr<Tokenizer> load(const json &j, const json &config = nullptr) {
    std::string error;
    std::string cfg = config.is_null() ? "" : write("tokenizer_config.json", config.dump());
    auto t = Tokenizer::load_hf(write("tokenizer.json", j.dump()), cfg, error);
    EXPECT_TRUE(t) << error;
    return t;
  }
  // Loads and expects failure; returns the message.
  std::string load_error(const std::string &text) {
    std::string error;
    auto t = Tokenizer::load_hf(write("tokenizer.json", text), "", error);
    EXPECT_FALSE(t);
    return error;
  }

  fs::path dir_;
};

std::vector<int32_t> ids_of(const Tokenizer &t, const std::vector<std::string> &pieces) {
  std::vector<int32_t> ids;
  for (const std::string &p : pieces) {
    std::optional<int32_t> id = t.token_id(p);
    EXPECT_TRUE(id) << p;
    ids.push_back(id.value_or(-1));
  }
  return ids;
}

} // namespace

TEST_F(HfJson, BpeMergesByRankWithByteFallback) {
  auto t = load(llama_like());
  ASSERT_TRUE(t);
  EXPECT_EQ(t->encode("hello", false), ids_of(*t, {sp + "hello"}));
  // "▁▁" is the last merge, so "▁h" wins; "a b" outranks "▁ a"; "é" and "\n" are not
  // pieces: bytes.
  EXPECT_EQ(t->encode(" hello ab\n\xC3\xA9", false),
            ids_of(*t, {sp, sp + "hello", sp, "ab", "<0x0A>", "<0xC3>", "<0xA9>"}));
  // "x" has no piece and no byte piece: unk, and neighbouring unknowns fuse into one.
  EXPECT_EQ(t->encode("axy", false), ids_of(*t, {sp + "a", "<unk>"}));
  EXPECT_EQ(t->encode("hello", true), ids_of(*t, {"<s>", sp + "hello"}));
  EXPECT_EQ(t->encode("", false), std::vector<int32_t>{});
  EXPECT_EQ(t->encode("", true), ids_of(*t, {"<s>"}));
  EXPECT_EQ(t->decode(t->encode(" hello ab\n\xC3\xA9", true), true), " hello ab\n\xC3\xA9");
  EXPECT_TRUE(t->add_bos());
  EXPECT_EQ(t->bos(), t->token_id("<s>"));
}

TEST_F(HfJson, MergesAsPairsEqualMergesAsStrings) {
  json j = llama_like();
  json pairs = json::array();
  for (const json &m : j["model"]["merges"]) {
    std::string s = m.get<std::string>();
    size_t k = s.find(' ');
    pairs.push_back({s.substr(0, k), s.substr(k + 1)});
  }
  auto a = load(j);
  j["model"]["merges"] = pairs;
  auto b = load(j);
  ASSERT_TRUE(a && b);
  for (const char *text : {"hello", " hello ab", "abab hell", "  "})
    EXPECT_EQ(a->encode(text, false), b->encode(text, false)) << text;
}

TEST_F(HfJson, AddedTokensWithTheirFlags) {
  json j = llama_like();
  j["added_tokens"].push_back({{"id", 24},
                               {"content", "<x>"},
                               {"single_word", false},
                               {"lstrip", true},
                               {"rstrip", true},
                               {"normalized", false},
                               {"special", true}});
  j["added_tokens"].push_back({{"id", 25},
                               {"content", "[mask]"},
                               {"single_word", true},
                               {"lstrip", false},
                               {"rstrip", false},
                               {"normalized", false},
                               {"special", false}});
  auto t = load(j);
  ASSERT_TRUE(t);
  // lstrip/rstrip take the whitespace beside <x>; each piece of text gets its own "▁".
  EXPECT_EQ(t->encode("ab \n<x>\t ab", false), ids_of(*t, {sp, "ab", "<x>", sp, "ab"}));
  EXPECT_EQ(t->encode("<x>hello", false), ids_of(*t, {"<x>", sp + "hello"}));
  // single_word: only between non-word characters.
  EXPECT_EQ(t->encode("a [mask] b", false), ids_of(*t, {sp + "a", sp, "[mask]", sp + sp, "b"}));
  std::vector<int32_t> glued = t->encode("a[mask]", false);
  EXPECT_EQ(std::count(glued.begin(), glued.end(), *t->token_id("[mask]")), 0);
  EXPECT_TRUE(t->is_special(24));
  EXPECT_FALSE(t->is_special(25));
  EXPECT_EQ(t->decode(ids_of(*t, {sp + "a", "<x>", sp + "hello"}), false), "a<x> hello");
  EXPECT_EQ(t->decode(ids_of(*t, {sp + "a", "<x>", sp + "hello"}), true), "a hello");
}

TEST_F(HfJson, NormalizedAddedTokenMatchesItsNormalizedForm) {
  json j = llama_like();
  j["added_tokens"].push_back({{"id", 24},
                               {"content", "<x>"},
                               {"single_word", false},
                               {"lstrip", false},
                               {"rstrip", false},
                               {"normalized", true},
                               {"special", false}});
  auto t = load(j);
  ASSERT_TRUE(t);
  // The pattern is normalize("<x>") = "▁<x>": found at the start of a segment, not inside "a<x>".
  EXPECT_EQ(t->encode("<x>a", false), ids_of(*t, {"<x>", "a"}));
  std::vector<int32_t> inside = t->encode("a<x>", false);
  EXPECT_EQ(std::count(inside.begin(), inside.end(), 24), 0);
}

TEST_F(HfJson, MetaspacePreTokenizerSchemes) {
  json j = llama_like();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {
      {"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "first"}, {"split", false}};
  auto first = load(j);
  ASSERT_TRUE(first);
  // No second "▁" before a leading space; none after a special token.
  EXPECT_EQ(first->encode(" hello", false), ids_of(*first, {sp + "hello"}));
  EXPECT_EQ(first->encode("<s>hello", false), ids_of(*first, {"<s>", "he", "ll", "o"}));
  j["pre_tokenizer"]["prepend_scheme"] = "always";
  auto always = load(j);
  EXPECT_EQ(always->encode("<s>hello", false), ids_of(*always, {"<s>", sp + "hello"}));
  j["pre_tokenizer"]["prepend_scheme"] = "never";
  auto never = load(j);
  EXPECT_EQ(never->encode("hello", false), ids_of(*never, {"he", "ll", "o"}));
  // split: words end before each "▁", so "▁▁" is never formed.
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", sp}, {"add_prefix_space", true}};
  auto legacy = load(j);
  EXPECT_EQ(legacy->encode("a  b", false), ids_of(*legacy, {sp + "a", sp, sp, "b"}));
  j["pre_tokenizer"]["split"] = false;
  auto whole = load(j);
  EXPECT_EQ(whole->encode("a  b", false), ids_of(*whole, {sp + "a", sp + sp, "b"}));
}

TEST_F(HfJson, MetaspaceDecoderAndNoDecoder) {
  json j = llama_like();
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "always"}};
  auto t = load(j);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->decode(ids_of(*t, {sp + "hello", sp + "a", "b"}), false), "hello ab");
  j["decoder"] = nullptr;
  auto raw = load(j);
  EXPECT_EQ(raw->decode(ids_of(*raw, {sp + "hello", "b"}), false), sp + "hello b");
}

TEST_F(HfJson, ConfigDecidesBosEosAndTemplate) {
  json cfg = {
      {"add_bos_token", false},
      {"add_eos_token", true},
      {"bos_token", {{"content", "<s>"}, {"lstrip", false}}},
      {"eos_token", "</s>"},
      {"chat_template",
       {{{"name", "tool_use"}, {"template", "T"}}, {{"name", "default"}, {"template", "D"}}}}};
  auto t = load(llama_like(), cfg);
  ASSERT_TRUE(t);
  EXPECT_FALSE(t->add_bos());
  EXPECT_EQ(t->eos(), t->token_id("</s>"));
  EXPECT_EQ(t->encode("hello", true), ids_of(*t, {sp + "hello", "</s>"}));
  EXPECT_EQ(t->chat_template(), "D");

  cfg["eos_token"] = "<nope>";
  std::string error;
  auto bad = Tokenizer::load_hf(write("tokenizer.json", llama_like().dump()),
                                write("tokenizer_config.json", cfg.dump()), error);
  EXPECT_FALSE(bad);
  EXPECT_NE(error.find("tokenizer_config.json"), std::string::npos) << error;
  EXPECT_NE(error.find("<nope>"), std::string::npos) << error;
}

TEST_F(HfJson, LoadDirReadsConfigAndJinjaTemplate) {
  write("tokenizer.json", llama_like().dump());
  write("tokenizer_config.json", json{{"add_bos_token", true}, {"eos_token", "</s>"}}.dump());
  write("chat_template.jinja", "{{ messages }}");
  std::string error;
  auto t = Tokenizer::load_dir(dir_.string(), error);
  ASSERT_TRUE(t) << error;
  EXPECT_EQ(t->chat_template(), "{{ messages }}");
  EXPECT_TRUE(t->add_bos());
  EXPECT_EQ(t->eos(), t->token_id("</s>"));

  auto none = Tokenizer::load_dir((dir_ / "missing").string(), error);
  EXPECT_FALSE(none);
  EXPECT_NE(error.find("missing"), std::string::npos);
}

TEST_F(HfJson, ClearErrors) {
  std::string e = load_error("{\"model\": {\"type\": \"BPE\",");
  EXPECT_NE(e.find("tokenizer.json"), std::string::npos) << e;
  EXPECT_NE(e.find("malformed JSON"), std::string::npos) << e;

  json j = llama_like();
  j["model"]["type"] = "Unigram";
  e = load_error(j.dump());
  EXPECT_NE(e.find("Unigram"), std::string::npos) << e;

  j = llama_like();
  j["model"]["merges"].push_back("h zz");
  e = load_error(j.dump());
  EXPECT_NE(e.find("zz"), std::string::npos) << e;
  EXPECT_NE(e.find("merges[10]"), std::string::npos) << e;

  j = llama_like();
  j["normalizer"] = {{"type", "NFKC"}};
  e = load_error(j.dump());
  EXPECT_NE(e.find("NFKC"), std::string::npos) << e;

  j = llama_like();
  j["model"]["byte_fallback"] = "yes";
  e = load_error(j.dump());
  EXPECT_NE(e.find("byte_fallback"), std::string::npos) << e;

  e = load_error("[1, 2]");
  EXPECT_NE(e.find("object"), std::string::npos) << e;

  std::string error;
  EXPECT_FALSE(Tokenizer::load_hf((dir_ / "absent.json").string(), "", error));
  EXPECT_NE(error.find("absent.json"), std::string::npos) << error;
}
