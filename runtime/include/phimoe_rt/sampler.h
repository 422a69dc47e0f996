// sampler.h - next-token choice: greedy, temperature, top-k, top-p, min-p, penalties, seed.
#ifndef PHIMOE_RT_SAMPLER_H
#define PHIMOE_RT_SAMPLER_H

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace phimoe_rt {

struct SamplingParams {
  float temperature = 0.8f; // 0: greedy (argmax; penalties still apply)
  int top_k = 40;           // 0: off
  float top_p = 0.95f;      // 1: off
  float min_p = 0.05f;      // 0: off; keeps tokens with p >= min_p * p_max
  float repeat_penalty = 1.0f;    // llama.cpp's: logits of recent tokens / (or *) it
  float frequency_penalty = 0.0f; // OpenAI's: - count * it
  float presence_penalty = 0.0f;  // OpenAI's: - (count > 0) * it
  int penalty_last_n = 64;        // how many recent tokens the penalties look at
  uint64_t seed = 0;
};

// Picks tokens from logits. Buffers are sized once for the vocabulary: sampling
// allocates nothing. The same seed and inputs give the same tokens.
class Sampler {
public:
  Sampler(const SamplingParams &params, int vocab);
  // `recent` are the tokens so far (the penalties look at the last penalty_last_n).
  int32_t sample(const float *logits, const int32_t *recent, int n_recent);
  const SamplingParams &params() const { return params_; }

private:
  SamplingParams params_;
  int vocab_;
  std::mt19937_64 rng_;
  std::vector<float> logits_;
  std::vector<int32_t> ids_;
  std::vector<float> probs_;
  std::vector<int32_t> counts_;
};

// A chosen token's log-probability under the model: log-softmax of the raw logits (before
// temperature, penalties and truncation, which change how a token is picked, not what the
// model predicts), and the `top` most likely tokens with theirs.
struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top; // most likely first; equal ones by id
  size_t text_offset = 0; // where the token's text begins in the reply (bytes; set by the caller)
  bool scored = true;     // false for a prompt's first token: nothing predicts it
};

// Fills `out` for token `chosen` of logits[0, vocab), with the `top` (>= 0) most likely
// tokens. Sums in double; allocates only `out.top`.
void token_logprob(const float *logits, int vocab, int32_t chosen, int top, TokenLogprob &out);

} // namespace phimoe_rt

#endif // PHIMOE_RT_SAMPLER_H
