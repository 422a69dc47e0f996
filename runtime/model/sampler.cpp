// sampler.cpp - next-token choice: penalties, then greedy or top-k/top-p/min-p/temperature.
#include "phimoe_rt/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace phimoe_rt {

Sampler::Sampler(const SamplingParams &params, int vocab)
    : params_(params), vocab_(vocab), rng_(params.seed), logits_(vocab), ids_(vocab),
      probs_(vocab), counts_(vocab, 0) {}

int32_t Sampler::sample(const float *logits, const int32_t *recent, int n_recent) {
  std::copy(logits, logits + vocab_, logits_.begin());
  const SamplingParams &p = params_;
  bool penalize = p.repeat_penalty != 1.0f || p.frequency_penalty != 0.0f ||
                  p.presence_penalty != 0.0f;
  if (penalize && n_recent > 0) {
    int first = std::max(0, n_recent - p.penalty_last_n);
    for (int i = first; i < n_recent; ++i)
      if (recent[i] >= 0 && recent[i] < vocab_)
        ++counts_[recent[i]];
    for (int i = first; i < n_recent; ++i) {
      int32_t t = recent[i];
      if (t < 0 || t >= vocab_ || counts_[t] == 0)
        continue;
      float &l = logits_[t];
      if (p.repeat_penalty != 1.0f)
        l = l > 0 ? l / p.repeat_penalty : l * p.repeat_penalty;
      l -= counts_[t] * p.frequency_penalty + p.presence_penalty;
      counts_[t] = 0; // each distinct token once; also leaves counts_ clean
    }
  }
  if (p.temperature <= 0.0f)
    return static_cast<int32_t>(std::max_element(logits_.begin(), logits_.end()) -
                                logits_.begin());

  // Candidates sorted by logit (top-k first narrows the sort).
  std::iota(ids_.begin(), ids_.end(), 0);
  int n = vocab_;
  auto byLogit = [&](int32_t a, int32_t b) {
    return logits_[a] > logits_[b] || (logits_[a] == logits_[b] && a < b);
  };
  if (p.top_k > 0 && p.top_k < n) {
    std::partial_sort(ids_.begin(), ids_.begin() + p.top_k, ids_.end(), byLogit);
    n = p.top_k;
  } else {
    std::sort(ids_.begin(), ids_.end(), byLogit);
  }
  // Softmax at the temperature over the candidates.
  float max = logits_[ids_[0]];
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    probs_[i] = std::exp((logits_[ids_[i]] - max) / p.temperature);
    sum += probs_[i];
  }
  for (int i = 0; i < n; ++i)
    probs_[i] = static_cast<float>(probs_[i] / sum);
  // min-p: drop what is far below the best.
  if (p.min_p > 0.0f) {
    int keep = 1;
    while (keep < n && probs_[keep] >= p.min_p * probs_[0])
      ++keep;
    n = keep;
  }
  // top-p: the smallest prefix whose mass reaches top_p.
  if (p.top_p < 1.0f) {
    double mass = 0;
    int keep = 0;
    while (keep < n) {
      mass += probs_[keep++];
      if (mass >= p.top_p)
        break;
    }
    n = keep;
  }
  double total = 0;
  for (int i = 0; i < n; ++i)
    total += probs_[i];
  double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  for (int i = 0; i < n; ++i) {
    r -= probs_[i];
    if (r < 0)
      return ids_[i];
  }
  return ids_[n - 1];
}

void token_logprob(const float *logits, int vocab, int32_t chosen, int top, TokenLogprob &out) {
  float max = -INFINITY;
  for (int i = 0; i < vocab; ++i)
    max = std::max(max, logits[i]);
  double sum = 0.0;
  for (int i = 0; i < vocab; ++i)
    sum += std::exp(static_cast<double>(logits[i]) - max);
  const double log_z = max + std::log(sum);
  auto logprob = [&](int32_t id) {
    return static_cast<float>(static_cast<double>(logits[id]) - log_z);
  };
  out.id = chosen;
  out.logprob = chosen >= 0 && chosen < vocab ? logprob(chosen) : -INFINITY;
  out.top.clear();
  top = std::min(std::max(top, 0), vocab);
  if (top == 0)
    return;
  // A bounded min-heap on (logit, -id): its root is the entry to drop first.
  auto better = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::vector<int32_t> heap;
  heap.reserve(static_cast<size_t>(top) + 1);
  for (int32_t i = 0; i < vocab; ++i) {
    if (static_cast<int>(heap.size()) == top && !better(i, heap.front()))
      continue;
    heap.push_back(i);
    std::push_heap(heap.begin(), heap.end(), better);
    if (static_cast<int>(heap.size()) > top) {
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.pop_back();
    }
  }
  std::sort(heap.begin(), heap.end(), better);
  for (int32_t id : heap)
    out.top.push_back({id, logprob(id)});
}

} // namespace phimoe_rt
