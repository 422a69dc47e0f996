// generate.h - phimoe-bin's text generation: completion and chat over one session.
#ifndef PHIMOE_RT_CLI_GENERATE_H
#define PHIMOE_RT_CLI_GENERATE_H

#include "phimoe_rt/chat.h"
#include "phimoe_rt/json_mode.h"
#include "phimoe_rt/sampler.h"
#include "phimoe_rt/model_session.h"
#include "phimoe_rt/tokenizer.h"

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace phimoe_rt {

struct GenerationStats {
  int prompt_tokens = 0, generated_tokens = 0;
  double prompt_seconds = 0, generation_seconds = 0;
  void add(const GenerationStats &other);
  // "prompt: 12 tokens, 340.1 tokens/s; generation: 64 tokens, 41.2 tokens/s"
  std::string summary() const;
};

class Generator {
public:
  // format: when set, each reply is held to one value of this grammar (json_mode.h) and ends
  // when the value closes.
  Generator(ModelSession &session, const Tokenizer &tokenizer, const SamplingParams &params,
            int vocab, std::shared_ptr<const JsonGrammar> format = nullptr);

  // Runs `prompt` (appended to what the session holds, after keeping its
  // longest common prefix), then samples at most max_tokens tokens, writing
  // their text to `out` as it forms, until a stop id. Returns false with
  // `error` set when the context is too small. reply_alone: the reply's text is decoded
  // from its tokens alone (ChatFormat::reply_stands_alone), not read on from the prompt's.
  bool generate(const std::vector<int32_t> &prompt, int max_tokens,
                const std::vector<int32_t> &stop_ids, FILE *out, std::string &reply,
                GenerationStats &stats, std::string &error, bool reply_alone = false);

private:
  ModelSession &session_;
  const Tokenizer &tokenizer_;
  Sampler sampler_;
  int vocab_;
  std::shared_ptr<const JsonGrammar> format_;
  std::unique_ptr<JsonMask> mask_; // with format_
};

} // namespace phimoe_rt

#endif // PHIMOE_RT_CLI_GENERATE_H
