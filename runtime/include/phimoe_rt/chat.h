// chat.h - chat prompts: the Phi-3 format (or ChatML, or Mistral's [INST]), history trimmed to
// the context.
#ifndef PHIMOE_RT_CHAT_H
#define PHIMOE_RT_CHAT_H

#include "phimoe_rt/tokenizer.h"

#include <string>
#include <vector>

namespace phimoe_rt {

struct ChatMessage {
  std::string role; // system, user or assistant
  std::string content;
};

// How a conversation becomes a prompt. The checkpoint's chat_template (Jinja) is
// recognised by its markers: Phi-3's <|user|>/<|end|>, ChatML's <|im_start|>, or
// Mistral's [INST] (Mixtral-Instruct); a checkpoint without one gets the Phi-3 format, the
// model family's.
class ChatFormat {
public:
  enum class Kind { Phi3, ChatML, Mistral };
  // `notice` is set when the template is not recognised (Phi-3 is used then).
  static ChatFormat from_template(const std::string &chat_template, std::string &notice);
  explicit ChatFormat(Kind kind) : kind_(kind) {}

  Kind kind() const { return kind_; }
  // The prompt of `messages`, ending with the assistant's turn when
  // add_generation_prompt (as the template's add_generation_prompt does).
  std::string render(const std::vector<ChatMessage> &messages, bool add_generation_prompt) const;
  // Whether a reply is a text of its own, decoded from its tokens alone (HF's decode of the
  // reply ids: a leading space of its first word dropped): Mistral's, whose prompt ends in
  // the plain text [/INST]. (After the other formats' prompts, which end in a special token and
  // a newline, the reply reads on from that.)
  bool reply_stands_alone() const { return kind_ == Kind::Mistral; }
  // Text markers that end an assistant turn (as tokens: see stop_ids).
  std::vector<std::string> stop_pieces() const;
  // The ids of the stop pieces that the tokenizer has, and its EOS.
  std::vector<int32_t> stop_ids(const Tokenizer &tokenizer) const;

private:
  Kind kind_;
};

// Drops the oldest turns (never the system message or the last user message)
// until the prompt of `messages` is at most `budget` tokens. Returns the number
// of messages dropped, or -1 when even the system message and the last user
// message do not fit.
int trim_history(const ChatFormat &format, const Tokenizer &tokenizer,
                 std::vector<ChatMessage> &messages, int budget);

} // namespace phimoe_rt

#endif // PHIMOE_RT_CHAT_H
