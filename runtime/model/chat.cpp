// chat.cpp - chat prompts in the Phi-3 format, ChatML or Mistral's [INST], and history trimming.
#include "phimoe_rt/chat.h"

namespace phimoe_rt {

ChatFormat ChatFormat::from_template(const std::string &chat_template, std::string &notice) {
  notice.clear();
  if (chat_template.empty() || (chat_template.find("<|user|>") != std::string::npos &&
                                chat_template.find("<|end|>") != std::string::npos))
    return ChatFormat(Kind::Phi3);
  if (chat_template.find("<|im_start|>") != std::string::npos)
    return ChatFormat(Kind::ChatML);
  if (chat_template.find("[INST]") != std::string::npos &&
      chat_template.find("[/INST]") != std::string::npos)
    return ChatFormat(Kind::Mistral);
  notice = "the checkpoint's chat_template is not one phimoe-bin knows (Phi-3, ChatML or "
           "Mistral's [INST]); using the Phi-3 format";
  return ChatFormat(Kind::Phi3);
}

// Mixtral-Instruct's template: "[INST] user [/INST]" and "assistant</s>" turn by turn (the
// BOS comes from the tokenizer, as for the other formats). Its original template refuses a
// system message; as Mistral's later templates do, it goes before the first user message's
// text, a blank line between them. The model writes its reply right after [/INST]: there is
// no generation prompt to add.
static std::string render_mistral(const std::vector<ChatMessage> &messages) {
  std::string system, out;
  for (const ChatMessage &m : messages) {
    if (m.role == "system") {
      if (!m.content.empty())
        system += (system.empty() ? "" : "\n\n") + m.content;
    } else if (m.role == "assistant") {
      out += m.content + "</s>";
    } else {
      out += "[INST] " + (system.empty() ? "" : system + "\n\n") + m.content + " [/INST]";
      system.clear();
    }
  }
  return out;
}

std::string ChatFormat::render(const std::vector<ChatMessage> &messages,
                               bool add_generation_prompt) const {
  if (kind_ == Kind::Mistral)
    return render_mistral(messages);
  std::string out;
  for (const ChatMessage &m : messages) {
    if (kind_ == Kind::Phi3) {
      // Phi-3.5's template skips an empty system message.
      if (m.role == "system" && m.content.empty())
        continue;
      out += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
    } else {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    }
  }
  if (add_generation_prompt)
    out += kind_ == Kind::Phi3 ? "<|assistant|>\n" : "<|im_start|>assistant\n";
  return out;
}

std::vector<std::string> ChatFormat::stop_pieces() const {
  if (kind_ == Kind::Phi3)
    return {"<|end|>", "<|endoftext|>", "<|assistant|>"};
  if (kind_ == Kind::Mistral)
    return {"</s>", "[INST]"};
  return {"<|im_end|>", "<|endoftext|>"};
}

std::vector<int32_t> ChatFormat::stop_ids(const Tokenizer &tokenizer) const {
  std::vector<int32_t> ids;
  for (const std::string &piece : stop_pieces())
    if (auto id = tokenizer.token_id(piece))
      ids.push_back(*id);
  if (auto eos = tokenizer.eos())
    ids.push_back(*eos);
  return ids;
}

int trim_history(const ChatFormat &format, const Tokenizer &tokenizer,
                 std::vector<ChatMessage> &messages, int budget) {
  int dropped = 0;
  auto size = [&] {
    return static_cast<int>(tokenizer.encode(format.render(messages, true), true).size());
  };
  while (size() > budget) {
    // The oldest message that is neither the system message nor the last one.
    size_t victim = messages.size();
    for (size_t i = 0; i + 1 < messages.size(); ++i)
      if (messages[i].role != "system") {
        victim = i;
        break;
      }
    if (victim == messages.size())
      return -1;
    messages.erase(messages.begin() + static_cast<long>(victim));
    ++dropped;
  }
  return dropped;
}

} // namespace phimoe_rt
