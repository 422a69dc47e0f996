// gguf_reader_test.cpp - GGUF vocabularies written here: SentencePiece scores with byte
// fallback, UNUSED and user-defined pieces, the space prefix flag; malformed files and their
// messages; truncated copies of the shared Phi-3 file.
#include "test_data.h"

#include "phimoe_rt/tokenizer.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

using phimoe_rt::Tokenizer;
namespace fs = std::filesystem;

namespace {

// Builds a GGUF file in memory (little-endian).
class gguf_writer {
public:
  explicit gguf_writer(uint32_t version = 3) {
    raw("GGUF", 4);
    num(version);
    num(uint64_t{0}); // tensors
    num(uint64_t{0}); // metadata entries, patched in by bytes()
  }
  template <typename T> void num(T v) {
    unsigned char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T)); // the test machines are little-endian
    body_.append(reinterpret_cast<char *>(b), sizeof(T));
  }
  void raw(const char *p, size_t n) { body_.append(p, n); }
  void str(const std::string &s) {
    num(uint64_t{s.size()});
    body_ += s;
  }
  void key(const std::string &k, uint32_t type) {
    ++count_;
    str(k);
    num(type);
  }
  void kv_string(const std::string &k, const std::string &v) {
    key(k, 8);
    str(v);
  }
  void kv_u32(const std::string &k, uint32_t v) {
    key(k, 4);
    num(v);
  }
  void kv_bool(const std::string &k, bool v) {
    key(k, 7);
    num(uint8_t{v});
  }
  void kv_strings(const std::string &k, const std::vector<std::string> &v) {
    key(k, 9);
    num(uint32_t{8});
    num(uint64_t{v.size()});
    for (const auto &s : v)
      str(s);
  }
  void kv_floats(const std::string &k, const std::vector<float> &v) {
    key(k, 9);
    num(uint32_t{6});
    num(uint64_t{v.size()});
    for (float f : v)
      num(f);
  }
  void kv_ints(const std::string &k, const std::vector<int32_t> &v) {
    key(k, 9);
    num(uint32_t{5});
    num(uint64_t{v.size()});
    for (int32_t x : v)
      num(x);
  }
  // The file: header with the entry count patched in.
  std::string bytes() const {
    std::string out = body_;
    uint64_t n = count_;
    std::memcpy(out.data() + 16, &n, 8);
    return out;
  }

private:
  std::string body_;
  uint64_t count_ = 0;
};

struct piece {
  std::string text;
  int32_t type;
  float score;
};

const std::string sp = "\xE2\x96\x81";

std::vector<piece> small_vocab() {
  std::vector<piece> v = {{"<unk>", 2, 0}, {"<s>", 3, 0}, {"</s>", 3, 0}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    v.push_back({name, 6, 0});
  }
  // 259...
  for (piece p : std::vector<piece>{{sp, 1, -1},
                                    {"a", 1, -2},
                                    {"b", 1, -3},
                                    {"x", 1, -4},
                                    {"y", 1, -5},
                                    {sp + "a", 1, -0.5f},
                                    {"ab", 1, -0.7f},
                                    {"xy", 5, -0.1f},
                                    {"<|tool|>", 4, 0},
                                    {sp + "ab", 1, -0.6f}})
    v.push_back(p);
  return v;
}

gguf_writer llama_file(const std::vector<piece> &v, bool with_prefix_flag, bool prefix) {
  gguf_writer w;
  w.kv_string("general.architecture", "llama");
  w.kv_string("tokenizer.ggml.model", "llama");
  std::vector<std::string> texts;
  std::vector<float> scores;
  std::vector<int32_t> types;
  for (const piece &p : v) {
    texts.push_back(p.text);
    scores.push_back(p.score);
    types.push_back(p.type);
  }
  w.kv_strings("tokenizer.ggml.tokens", texts);
  w.kv_floats("tokenizer.ggml.scores", scores);
  w.kv_ints("tokenizer.ggml.token_type", types);
  w.kv_u32("tokenizer.ggml.bos_token_id", 1);
  w.kv_u32("tokenizer.ggml.eos_token_id", 2);
  w.kv_u32("tokenizer.ggml.unknown_token_id", 0);
  w.kv_bool("tokenizer.ggml.add_bos_token", false);
  if (with_prefix_flag)
    w.kv_bool("tokenizer.ggml.add_space_prefix", prefix);
  return w;
}

class Gguf : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("phimoe-gguf-" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string &bytes, const std::string &name = "v.gguf") {
    fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
  }
  std::string error_of(const std::string &bytes) {
    std::string error;
    auto t = Tokenizer::load_gguf(write(bytes), error);
    EXPECT_FALSE(t);
    EXPECT_NE(error.find("v.gguf"), std::string::npos) << error;
    return error;
  }
  fs::path dir_;
};

} // namespace

TEST_F(Gguf, SentencePieceScoresUnusedAndUserDefined) {
  std::string error;
  auto t = Tokenizer::load_gguf(write(llama_file(small_vocab(), false, true).bytes()), error);
  ASSERT_TRUE(t) << error;
  EXPECT_EQ(t->vocab_size(), 269);
  // "▁a" (-0.5) before "ab" (-0.7), then "▁ab" (-0.6).
  EXPECT_EQ(t->encode("ab", false), (std::vector<int32_t>{268}));
  // A user-defined piece is matched in the text; each text piece gets its "▁".
  EXPECT_EQ(t->encode("a<|tool|>b", false), (std::vector<int32_t>{264, 267, 259, 261}));
  // "xy" is UNUSED: it may merge, but comes out as its parts.
  EXPECT_EQ(t->encode("xy", false), (std::vector<int32_t>{259, 262, 263}));
  // No piece for "é": its bytes.
  EXPECT_EQ(t->encode("\xC3\xA9", false), (std::vector<int32_t>{259, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(t->decode({264, 267, 259, 261}, false), "a<|tool|> b");
  EXPECT_FALSE(t->is_special(267));
  EXPECT_TRUE(t->is_special(1));
  EXPECT_FALSE(t->add_bos());
  EXPECT_EQ(t->encode("ab", true), (std::vector<int32_t>{268}));
}

TEST_F(Gguf, Version2ReadsLikeVersion3) {
  std::string bytes = llama_file(small_vocab(), false, true).bytes();
  bytes[4] = 2; // the version field; v2 and v3 share the layout (v1 had 32-bit counts)
  std::string error;
  auto t = Tokenizer::load_gguf(write(bytes), error);
  ASSERT_TRUE(t) << error;
  EXPECT_EQ(t->encode("ab", false), (std::vector<int32_t>{268}));
}

TEST_F(Gguf, NoSpacePrefix) {
  std::string error;
  auto t = Tokenizer::load_gguf(write(llama_file(small_vocab(), true, false).bytes()), error);
  ASSERT_TRUE(t) << error;
  EXPECT_EQ(t->encode("ab", false), (std::vector<int32_t>{265}));
  EXPECT_EQ(t->encode(" ab", false), (std::vector<int32_t>{268}));
  EXPECT_EQ(t->decode({268}, false), " ab"); // nothing to strip
}

TEST_F(Gguf, MalformedFiles) {
  EXPECT_NE(error_of("").find("not a GGUF file"), std::string::npos);
  EXPECT_NE(error_of("GGML0000000000000000000").find("not a GGUF file"), std::string::npos);
  EXPECT_NE(error_of(gguf_writer(1).bytes()).find("version 1"), std::string::npos);
  EXPECT_NE(error_of(gguf_writer(0x03000000).bytes()).find("big-endian"), std::string::npos);
  EXPECT_NE(error_of(gguf_writer().bytes().substr(0, 12)).find("truncated"), std::string::npos);

  gguf_writer no_model;
  no_model.kv_strings("tokenizer.ggml.tokens", {"a"});
  EXPECT_NE(error_of(no_model.bytes()).find("tokenizer.ggml.model"), std::string::npos);

  gguf_writer bert;
  bert.kv_string("tokenizer.ggml.model", "bert");
  bert.kv_strings("tokenizer.ggml.tokens", {"a"});
  EXPECT_NE(error_of(bert.bytes()).find("'bert' is not supported"), std::string::npos);

  std::vector<piece> v = small_vocab();
  gguf_writer short_scores = llama_file(v, false, true);
  short_scores.kv_floats("tokenizer.ggml.scores", {1.0f}); // a second, wrong-sized entry wins
  std::string e = error_of(short_scores.bytes());
  EXPECT_NE(e.find("tokenizer.ggml.scores"), std::string::npos) << e;
  EXPECT_NE(e.find("1 entries for 269 tokens"), std::string::npos) << e;

  gguf_writer bad_type = llama_file(v, false, true);
  bad_type.key("general.weird", 13);
  e = error_of(bad_type.bytes());
  EXPECT_NE(e.find("general.weird"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown value type 13"), std::string::npos) << e;

  gguf_writer wrong_kind = llama_file(v, false, true);
  wrong_kind.kv_string("tokenizer.ggml.bos_token_id", "one");
  e = error_of(wrong_kind.bytes());
  EXPECT_NE(e.find("tokenizer.ggml.bos_token_id"), std::string::npos) << e;

  gguf_writer huge = llama_file(v, false, true);
  huge.key("general.big", 9);
  huge.num(uint32_t{8});
  huge.num(uint64_t{1} << 60);
  e = error_of(huge.bytes());
  EXPECT_NE(e.find("general.big"), std::string::npos) << e;

  gguf_writer merges_missing;
  merges_missing.kv_string("tokenizer.ggml.model", "gpt2");
  merges_missing.kv_strings("tokenizer.ggml.tokens", {"a", "b"});
  e = error_of(merges_missing.bytes());
  EXPECT_NE(e.find("tokenizer.ggml.merges"), std::string::npos) << e;
}

// Every cut of the real file fails cleanly, naming the file (and where it can, the key).
TEST_F(Gguf, TruncatedCopiesOfTheSharedFile) {
  std::string bytes;
  ASSERT_TRUE(phimoe_test::read_file(phimoe_test::vocab_dir() + "/ggml-vocab-phi-3.gguf", bytes));
  for (size_t cut : {size_t{0}, size_t{3}, size_t{8}, size_t{20}, size_t{100}, size_t{5000},
                     bytes.size() / 2, bytes.size() - 1}) {
    std::string e = error_of(bytes.substr(0, cut));
    if (cut > 5000 && cut < bytes.size() - 100) {
      EXPECT_NE(e.find("tokenizer.ggml."), std::string::npos) << cut << ": " << e;
    }
  }
  std::string error;
  EXPECT_TRUE(Tokenizer::load_gguf(write(bytes), error)) << error;
}
