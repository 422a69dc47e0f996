// stream_decoder_test.cpp - StreamDecoder: the pushed pieces add up to decode(ids, true), and a
// character split over byte pieces appears only when its last byte arrives.
#include "test_data.h"

#include "phimoe_rt/tokenizer.h"

#include <gtest/gtest.h>

using phimoe_rt::StreamDecoder;
using phimoe_rt::Tokenizer;
using namespace phimoe_test;

namespace {

std::string stream(const Tokenizer &t, const std::vector<int32_t> &ids,
                   std::vector<std::string> *pieces = nullptr) {
  StreamDecoder d(t);
  std::string all, piece;
  for (int32_t id : ids) {
    piece.clear();
    d.push(id, piece);
    if (pieces)
      pieces->push_back(piece);
    all += piece;
  }
  piece.clear();
  d.finish(piece);
  if (pieces)
    pieces->push_back(piece);
  return all + piece;
}

class Stream : public ::testing::TestWithParam<const char *> {};

// A shared vocabulary (ggml-vocab-NAME.gguf) and its test strings (`inp`), or null.
std::unique_ptr<Tokenizer> load_shared(const char *name, std::string &inp) {
  std::string base = vocab_dir() + "/ggml-vocab-" + name + ".gguf";
  std::string error;
  auto tok = Tokenizer::load_gguf(base, error);
  EXPECT_TRUE(tok) << error;
  EXPECT_TRUE(read_file(base + ".inp", inp)) << base << ".inp";
  return inp.empty() ? nullptr : std::move(tok);
}

} // namespace

TEST_P(Stream, AddsUpToDecode) {
  std::string inp;
  auto tok = load_shared(GetParam(), inp);
  ASSERT_TRUE(tok);
  for (const std::string &text : split_inp(lf(inp))) {
    std::vector<int32_t> ids = tok->encode(text, true);
    EXPECT_EQ(stream(*tok, ids), tok->decode(ids, true)) << text;
    EXPECT_EQ(stream(*tok, ids), text);
  }
}

INSTANTIATE_TEST_SUITE_P(Shared, Stream, ::testing::Values("phi-3", "llama-spm", "gpt-2"),
                         [](const auto &info) {
                           std::string n = info.param;
                           return n == "phi-3"   ? std::string("phi_3")
                                  : n == "gpt-2" ? std::string("gpt_2")
                                                 : std::string("llama_spm");
                         });

TEST(StreamDecoder, HoldsACharacterUntilItsLastByte) {
  std::string error;
  auto tok = Tokenizer::load_gguf(vocab_dir() + "/ggml-vocab-phi-3.gguf", error);
  ASSERT_TRUE(tok) << error;
  // "a🦙b": the llama emoji has no piece in this vocabulary, so it arrives as four bytes.
  std::vector<int32_t> ids = tok->encode("a\xF0\x9F\xA6\x99"
                                         "b",
                                         false);
  std::vector<std::string> pieces;
  std::string all = stream(*tok, ids, &pieces);
  EXPECT_EQ(all, "a\xF0\x9F\xA6\x99"
                 "b");
  size_t first_byte = 0;
  while (first_byte < ids.size() && ids[first_byte] != *tok->token_id("<0xF0>"))
    ++first_byte;
  ASSERT_LT(first_byte + 3, ids.size());
  for (size_t k = first_byte; k < first_byte + 3; ++k)
    EXPECT_EQ(pieces[k], "") << k;
  EXPECT_EQ(pieces[first_byte + 3], "\xF0\x9F\xA6\x99");

  // A sequence cut short is flushed as U+FFFD by finish(); an ill-formed one at once.
  int32_t f0 = *tok->token_id("<0xF0>"), x9f = *tok->token_id("<0x9F>");
  EXPECT_EQ(stream(*tok, {f0, x9f}), "\xEF\xBF\xBD");
  std::vector<int32_t> then_text = {f0};
  for (int32_t id : tok->encode("ok", false))
    then_text.push_back(id);
  EXPECT_EQ(stream(*tok, then_text), "\xEF\xBF\xBD ok");

  // Special tokens are not shown; reset() starts over.
  StreamDecoder d(*tok);
  std::string out;
  d.push(*tok->token_id("<|user|>"), out);
  EXPECT_EQ(out, "");
  d.reset();
  for (int32_t id : tok->encode("Hello world", false))
    d.push(id, out);
  d.finish(out);
  EXPECT_EQ(out, "Hello world");
}

// A continuation primed with its prompt reads on from it: prompt text + continuation text
// is the text of the whole, so the space that opens the continuation is not stripped.
TEST_P(Stream, PrimedContinuationReadsOnFromThePrompt) {
  std::string inp;
  auto tok = load_shared(GetParam(), inp);
  ASSERT_TRUE(tok);
  int checked = 0;
  for (const std::string &text : split_inp(lf(inp))) {
    std::vector<int32_t> ids = tok->encode(text, true);
    if (ids.size() < 3)
      continue;
    const std::string whole = tok->decode(ids, true);
    for (size_t cut : {ids.size() / 2, ids.size() - 1}) {
      std::vector<int32_t> head(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(cut));
      const std::string shown = tok->decode(head, true);
      // A prompt is whole characters: skip cuts inside one (byte pieces of one character).
      if (whole.compare(0, shown.size(), shown) != 0)
        continue;
      StreamDecoder d(*tok);
      d.prime(ids.data(), cut);
      std::string rest;
      for (size_t i = cut; i < ids.size(); ++i)
        d.push(ids[i], rest);
      d.finish(rest);
      EXPECT_EQ(shown + rest, whole) << text << " @" << cut;
      ++checked;
    }
  }
  EXPECT_GT(checked, 10);
}

// After a special token (a chat prompt's <|assistant|>) a reply is a text of its own: its
// opening space is dropped, as decode() of the reply alone drops it.
TEST(StreamDecoder, PrimedAfterASpecialTokenStartsAFreshText) {
  std::string error;
  auto tok = Tokenizer::load_gguf(vocab_dir() + "/ggml-vocab-phi-3.gguf", error);
  ASSERT_TRUE(tok) << error;
  std::vector<int32_t> prompt = tok->encode("<|user|>\nWho made the earth?<|end|>\n<|assistant|>", true);
  ASSERT_TRUE(tok->is_special(prompt.back()));
  std::vector<int32_t> reply = tok->encode("The LORD made it.", false);
  StreamDecoder d(*tok);
  d.prime(prompt.data(), prompt.size());
  std::string text;
  for (int32_t id : reply)
    d.push(id, text);
  d.finish(text);
  EXPECT_EQ(text, tok->decode(reply, true));
  EXPECT_EQ(text, "The LORD made it.");
}

// token_bytes: the bytes of the tokens of a text add up to the text as it reads on from
// other text: decode() of the same ids, with the leading space that decode() drops from a
// text's first SentencePiece word; a byte token alone is its byte.
TEST_P(Stream, TokenBytesAddUpToTheText) {
  std::string inp;
  auto tok = load_shared(GetParam(), inp);
  ASSERT_TRUE(tok);
  int checked = 0;
  for (const std::string &text : split_inp(lf(inp))) {
    std::vector<int32_t> ids = tok->encode(text, false);
    if (ids.empty())
      continue;
    std::string bytes;
    for (int32_t id : ids)
      bytes += tok->token_bytes(id);
    const std::string decoded = tok->decode(ids, false);
    if (std::string(GetParam()) == "gpt-2" || bytes == decoded)
      EXPECT_EQ(bytes, decoded) << text; // byte-level BPE strips nothing
    else
      EXPECT_EQ(bytes, " " + decoded) << text; // SentencePiece: the first word's space
    ++checked;
  }
  EXPECT_GT(checked, 10);
  if (auto byte = tok->token_id("<0xE2>")) {
    EXPECT_EQ(tok->token_bytes(*byte), "\xE2");
  }
  EXPECT_EQ(tok->token_bytes(-1), "");
}
