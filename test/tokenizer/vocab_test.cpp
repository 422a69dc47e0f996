// vocab_test.cpp - the GGUF vocabularies of shared/testdata/vocab against their reference ids:
// every .inp string encodes to its .out line and decodes back to itself.
#include "test_data.h"

#include "phimoe_rt/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>

using phimoe_rt::Tokenizer;
using namespace phimoe_test;

namespace {

struct vocab_case {
  const char *name;
  bool sentencepiece;
};

void PrintTo(const vocab_case &c, std::ostream *os) { *os << c.name; }

class Vocab : public ::testing::TestWithParam<vocab_case> {
protected:
  void SetUp() override {
    base_ = vocab_dir() + "/ggml-vocab-" + GetParam().name + ".gguf";
    std::string error;
    tok_ = Tokenizer::load_gguf(base_, error);
    ASSERT_TRUE(tok_) << error;
    std::string inp, out;
    ASSERT_TRUE(read_file(base_ + ".inp", inp)) << base_ << ".inp";
    ASSERT_TRUE(read_file(base_ + ".out", out)) << base_ << ".out";
    texts_ = split_inp(lf(inp));
    ids_ = parse_out(lf(out));
    ASSERT_EQ(texts_.size(), ids_.size()) << "strings in .inp vs lines in .out";
    ASSERT_GT(texts_.size(), 40u);
  }

  std::string base_;
  std::unique_ptr<Tokenizer> tok_;
  std::vector<std::string> texts_;
  std::vector<std::vector<int32_t>> ids_;
};

std::string show(const std::vector<int32_t> &ids) {
  std::string s;
  for (int32_t id : ids)
    s += " " + std::to_string(id);
  return s;
}

} // namespace

// The reference ids are tokenizer.encode(text, add_special_tokens=False): no BOS, even where the
// vocabulary adds one (Phi-3 and llama-spm: add_bos_token true; "ied 4 ½ months" starts 474).
TEST_P(Vocab, EncodesEveryStringToTheReferenceIds) {
  int mismatches = 0;
  for (size_t i = 0; i < texts_.size(); ++i) {
    std::vector<int32_t> got = tok_->encode(texts_[i], false);
    EXPECT_EQ(show(got), show(ids_[i])) << "string " << i << ": '" << texts_[i] << "'";
    mismatches += got != ids_[i];
  }
  EXPECT_EQ(mismatches, 0) << "of " << texts_.size();
}

// SentencePiece: the decoder turns "▁" into spaces and drops the one space the encoder put in
// front, so decode(encode(s)) == s exactly, leading spaces included, for every s without a
// literal "▁" (U+2581) in it. Byte-level (GPT-2): every byte round-trips.
TEST_P(Vocab, DecodesBackToTheString) {
  for (size_t i = 0; i < texts_.size(); ++i) {
    ASSERT_EQ(texts_[i].find("\xE2\x96\x81"), std::string::npos);
    EXPECT_EQ(tok_->decode(ids_[i], false), texts_[i]) << "string " << i;
    EXPECT_EQ(tok_->decode(tok_->encode(texts_[i], true), true), texts_[i]) << "string " << i;
  }
}

// The CRLF line ends of the copies are not part of the strings: no reference holds "\r".
TEST_P(Vocab, ReferenceHoldsNoCarriageReturn) {
  std::optional<int32_t> cr = tok_->token_id(GetParam().sentencepiece ? "<0x0D>" : "\xC4\x8D");
  ASSERT_TRUE(cr);
  for (const auto &ids : ids_)
    EXPECT_EQ(std::count(ids.begin(), ids.end(), *cr), 0);
}

TEST_P(Vocab, SpecialTokensFollowTheVocabulary) {
  ASSERT_TRUE(tok_->bos());
  ASSERT_TRUE(tok_->eos());
  std::vector<int32_t> plain = tok_->encode("Hello world", false);
  std::vector<int32_t> with = tok_->encode("Hello world", true);
  if (tok_->add_bos()) {
    ASSERT_EQ(with.size(), plain.size() + 1);
    EXPECT_EQ(with[0], *tok_->bos());
  } else {
    EXPECT_EQ(with, plain);
  }
  EXPECT_TRUE(tok_->is_special(*tok_->eos()));
}

// Long inputs stay near linear: 100 KB (one "word" for SentencePiece) well under a second.
TEST_P(Vocab, LongTextIsFast) {
  std::string text;
  for (size_t i = 0; text.size() < 100000; i = (i + 1) % texts_.size())
    text += texts_[i] + " ";
  auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> ids = tok_->encode(text, false);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 0.5) << ids.size() << " ids";
  EXPECT_EQ(tok_->decode(ids, false), text);
  // A run of one repeated character is the worst case for a naive BPE.
  std::string same(100000, 'a');
  t0 = std::chrono::steady_clock::now();
  ids = tok_->encode(same, false);
  s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 0.5);
  EXPECT_EQ(tok_->decode(ids, false), same);
}

INSTANTIATE_TEST_SUITE_P(Shared, Vocab,
                         ::testing::Values(vocab_case{"phi-3", true}, vocab_case{"llama-spm", true},
                                           vocab_case{"gpt-2", false}),
                         [](const auto &info) {
                           std::string n = info.param.name;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// Phi-3's chat markers: matched in the text, the whitespace after the role and end tokens
// stripped (rstrip, as its tokenizer.json has it), "▁" put before the text that follows.
TEST(Phi3, ChatMarkersAndRstrip) {
  std::string error;
  auto tok = Tokenizer::load_gguf(vocab_dir() + "/ggml-vocab-phi-3.gguf", error);
  ASSERT_TRUE(tok) << error;
  int32_t user = *tok->token_id("<|user|>"), end = *tok->token_id("<|end|>"),
          assistant = *tok->token_id("<|assistant|>");
  EXPECT_EQ(user, 32010);
  EXPECT_EQ(end, 32007);
  EXPECT_EQ(assistant, 32001);
  std::vector<int32_t> hello = tok->encode("Hello", false);
  std::vector<int32_t> want = {user};
  want.insert(want.end(), hello.begin(), hello.end());
  want.push_back(end);
  want.push_back(assistant);
  EXPECT_EQ(tok->encode("<|user|>\nHello<|end|>\n<|assistant|>\n", false), want);
  // <|endoftext|> keeps what follows (no rstrip), and nothing of the markers is split.
  std::vector<int32_t> nl = tok->encode("\n", false);
  std::vector<int32_t> got = tok->encode("<|endoftext|>\n", false);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got[0], 32000);
  EXPECT_EQ(std::vector<int32_t>(got.begin() + 1, got.end()), nl);
  EXPECT_TRUE(tok->is_special(32007));
  EXPECT_EQ(tok->decode({user, hello[0], end}, false), "<|user|> Hello<|end|>");
  EXPECT_EQ(tok->decode({user, hello[0], end}, true), "Hello");
  EXPECT_FALSE(tok->chat_template().empty());
  EXPECT_EQ(*tok->eos(), 32000);
  EXPECT_TRUE(tok->add_bos());
}

TEST(Phi3, BytesOutsideTheVocabularyFallBackToByteTokens) {
  std::string error;
  auto tok = Tokenizer::load_gguf(vocab_dir() + "/ggml-vocab-phi-3.gguf", error);
  ASSERT_TRUE(tok) << error;
  // U+10FFFF is in no vocabulary: four <0xNN> pieces after the "▁".
  std::string text = "\xF4\x8F\xBF\xBF";
  std::vector<int32_t> ids = tok->encode(text, false);
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids[1], *tok->token_id("<0xF4>"));
  EXPECT_EQ(ids[4], *tok->token_id("<0xBF>"));
  EXPECT_EQ(tok->decode(ids, false), text);
  // An incomplete byte sequence decodes to U+FFFD per byte, as HF's ByteFallback does.
  EXPECT_EQ(tok->decode({ids[1], ids[2]}, false), "\xEF\xBF\xBD\xEF\xBF\xBD");
}
