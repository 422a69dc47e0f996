// generate.cpp - phimoe-bin's text generation: completion and chat over one session.
#include "generate.h"

#include <algorithm>
#include <chrono>

namespace phimoe_rt {

void GenerationStats::add(const GenerationStats &o) {
  prompt_tokens += o.prompt_tokens;
  generated_tokens += o.generated_tokens;
  prompt_seconds += o.prompt_seconds;
  generation_seconds += o.generation_seconds;
}

std::string GenerationStats::summary() const {
  char buf[160];
  auto rate = [](int n, double s) { return s > 0 ? n / s : 0.0; };
  snprintf(buf, sizeof buf, "prompt: %d tokens, %.1f tokens/s; generation: %d tokens, %.1f tokens/s",
           prompt_tokens, rate(prompt_tokens, prompt_seconds), generated_tokens,
           rate(generated_tokens, generation_seconds));
  return buf;
}

Generator::Generator(ModelSession &session, const Tokenizer &tokenizer,
                     const SamplingParams &params, int vocab,
                     std::shared_ptr<const JsonGrammar> format)
    : session_(session), tokenizer_(tokenizer), sampler_(params, vocab), vocab_(vocab),
      format_(std::move(format)) {
  if (format_)
    mask_ = std::make_unique<JsonMask>(tokenizer_, vocab_);
}

bool Generator::generate(const std::vector<int32_t> &prompt, int max_tokens,
                         const std::vector<int32_t> &stop_ids, FILE *out, std::string &reply,
                         GenerationStats &stats, std::string &error, bool reply_alone) {
  using clock = std::chrono::steady_clock;
  reply.clear();
  // Reuse the cache of the longest common prefix (chat turns extend the last).
  const std::vector<int32_t> &held = session_.tokens();
  size_t common = 0;
  while (common < held.size() && common < prompt.size() && held[common] == prompt[common])
    ++common;
  if (common == prompt.size() && common > 0)
    --common; // the last prompt token must run to give the next logits
  int kept = session_.truncate(static_cast<int>(common));
  int fresh = static_cast<int>(prompt.size()) - kept;
  if (static_cast<int>(prompt.size()) > session_.capacity()) {
    error = "the prompt is " + std::to_string(prompt.size()) +
            " tokens, which does not fit the context of " +
            std::to_string(session_.capacity()) + " (--ctx-size)";
    return false;
  }
  auto t0 = clock::now();
  const float *logits = session_.append(prompt.data() + kept, fresh);
  if (!logits) {
    error = "the prompt does not fit the context of " + std::to_string(session_.capacity()) +
            " tokens (--ctx-size)";
    return false;
  }
  auto t1 = clock::now();
  stats.prompt_tokens += fresh;
  stats.prompt_seconds += std::chrono::duration<double>(t1 - t0).count();

  StreamDecoder decoder(tokenizer_);
  // the reply reads on from the prompt, unless it stands alone
  decoder.prime(prompt.data(), reply_alone ? 0 : prompt.size());
  std::string piece;
  int generated = 0;
  JsonPrefix json = format_ ? JsonPrefix(*format_) : JsonPrefix();
  std::vector<float> masked;
  while (generated < max_tokens) {
    const std::vector<int32_t> &tokens = session_.tokens();
    const float *allowed = logits;
    if (format_) { // the tokens that keep the reply a prefix of a value of the format
      masked.assign(logits, logits + vocab_);
      if (mask_->apply(json, masked.data()) == 0)
        break; // none (a vocabulary that cannot spell the value)
      allowed = masked.data();
    }
    int32_t next = sampler_.sample(allowed, tokens.data(), static_cast<int>(tokens.size()));
    ++generated;
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end())
      break;
    piece.clear();
    decoder.push(next, piece);
    reply += piece;
    if (out && !piece.empty()) {
      std::fputs(piece.c_str(), out);
      std::fflush(out);
    }
    if (format_ && json.push(mask_->bytes(next)) && json.complete())
      break; // the value closed: the reply is done
    if (session_.size() >= session_.capacity())
      break; // the context is full: stop here
    logits = session_.append(&next, 1);
  }
  piece.clear();
  decoder.finish(piece);
  reply += piece;
  if (out && !piece.empty())
    std::fputs(piece.c_str(), out);
  stats.generated_tokens += generated;
  stats.generation_seconds += std::chrono::duration<double>(clock::now() - t1).count();
  return true;
}

} // namespace phimoe_rt
