// chat_test.cpp - chat prompts (Phi-3 format, ChatML, Mistral's [INST]) and history trimming.
#include "phimoe_rt/chat.h"

#include <gtest/gtest.h>

using namespace phimoe_rt;

namespace {

// One token per byte: sizes are easy to reason about.
class ByteTokenizer : public Tokenizer {
public:
  ByteTokenizer() { eos_ = 2; }
  std::vector<int32_t> encode(std::string_view text, bool) const override {
    return std::vector<int32_t>(text.begin(), text.end());
  }
  std::string decode(const std::vector<int32_t> &ids, bool) const override {
    return std::string(ids.begin(), ids.end());
  }
  int32_t vocab_size() const override { return 256; }
  std::optional<int32_t> token_id(std::string_view piece) const override {
    if (piece == "<|end|>")
      return 200;
    return std::nullopt;
  }
  bool is_special(int32_t) const override { return false; }
};

} // namespace

TEST(Chat, Phi3FormatAsTheTemplateRendersIt) {
  std::string notice;
  ChatFormat f = ChatFormat::from_template(
      "{% for message in messages %}{% if message['role'] == 'user' %}{{'<|user|>\n' + "
      "message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}",
      notice);
  EXPECT_TRUE(notice.empty());
  EXPECT_EQ(f.kind(), ChatFormat::Kind::Phi3);
  std::vector<ChatMessage> m = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."},
                                {"user", "Who?"}};
  EXPECT_EQ(f.render(m, true), "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n"
                               "<|assistant|>\nHello.<|end|>\n<|user|>\nWho?<|end|>\n"
                               "<|assistant|>\n");
  // An empty system message is skipped, as Phi-3.5's template does.
  EXPECT_EQ(f.render({{"system", ""}, {"user", "x"}}, false), "<|user|>\nx<|end|>\n");
}

TEST(Chat, ChatMLAndUnknownTemplates) {
  std::string notice;
  EXPECT_EQ(ChatFormat::from_template("{{'<|im_start|>' + m}}", notice).kind(),
            ChatFormat::Kind::ChatML);
  EXPECT_EQ(ChatFormat(ChatFormat::Kind::ChatML).render({{"user", "x"}}, true),
            "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(ChatFormat::from_template("{{ '<s>' + m }}", notice).kind(), ChatFormat::Kind::Phi3);
  EXPECT_FALSE(notice.empty());
  EXPECT_EQ(ChatFormat::from_template("", notice).kind(), ChatFormat::Kind::Phi3);
  EXPECT_TRUE(notice.empty());
}

// Mixtral-8x7B-Instruct-v0.1's template, as its tokenizer_config.json has it.
TEST(Chat, MistralFormatAsMixtralsTemplateRendersIt) {
  std::string notice;
  ChatFormat f = ChatFormat::from_template(
      "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
      "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
      "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ "
      "'[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' "
      "%}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and "
      "assistant roles are supported!') }}{% endif %}{% endfor %}",
      notice);
  EXPECT_TRUE(notice.empty());
  ASSERT_EQ(f.kind(), ChatFormat::Kind::Mistral);
  // What the template gives (without its bos_token, which the tokenizer adds): no generation
  // prompt, the reply follows [/INST].
  std::vector<ChatMessage> m = {{"user", "Hi"}, {"assistant", "Hello."}, {"user", "Who?"}};
  EXPECT_EQ(f.render(m, true), "[INST] Hi [/INST]Hello.</s>[INST] Who? [/INST]");
  EXPECT_EQ(f.render(m, false), f.render(m, true));
  // A system message (which that template refuses) goes before the first user text.
  EXPECT_EQ(f.render({{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Yo"},
                      {"user", "x"}},
                     true),
            "[INST] Be brief.\n\nHi [/INST]Yo</s>[INST] x [/INST]");
  EXPECT_EQ(f.render({{"system", ""}, {"user", "x"}}, true), "[INST] x [/INST]");
  EXPECT_EQ(f.stop_pieces(), (std::vector<std::string>{"</s>", "[INST]"}));
}

TEST(Chat, StopIdsAreTheKnownPiecesAndEos) {
  ByteTokenizer t;
  EXPECT_EQ(ChatFormat(ChatFormat::Kind::Phi3).stop_ids(t), (std::vector<int32_t>{200, 2}));
}

TEST(Chat, TrimHistoryDropsTheOldestTurnsOnly) {
  ByteTokenizer t;
  ChatFormat f(ChatFormat::Kind::Phi3);
  std::vector<ChatMessage> m = {{"system", "S"}, {"user", "aaaa"}, {"assistant", "bbbb"},
                                {"user", "cccc"}, {"assistant", "dddd"}, {"user", "last"}};
  int full = static_cast<int>(f.render(m, true).size());
  std::vector<ChatMessage> copy = m;
  EXPECT_EQ(trim_history(f, t, copy, full), 0);
  EXPECT_EQ(copy.size(), m.size());
  // One byte less: the oldest user message goes, then (the prompt still too
  // long) the oldest assistant message.
  int turn = static_cast<int>(std::string("<|user|>\naaaa<|end|>\n").size());
  copy = m;
  EXPECT_EQ(trim_history(f, t, copy, full - turn), 1);
  EXPECT_EQ(copy[1].content, "bbbb");
  copy = m;
  EXPECT_EQ(trim_history(f, t, copy, full - turn - 1), 2);
  EXPECT_EQ(copy[0].role, "system");
  EXPECT_EQ(copy[1].content, "cccc");
  EXPECT_EQ(copy.back().content, "last");
  // Nothing fits: the system message and the last user message are kept.
  copy = m;
  EXPECT_EQ(trim_history(f, t, copy, 5), -1);
  EXPECT_EQ(copy.front().role, "system");
  EXPECT_EQ(copy.back().content, "last");
}
