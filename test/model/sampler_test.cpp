// sampler_test.cpp - the sampler against what each option promises, on random logits.
#include "phimoe_rt/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <vector>

using phimoe_rt::Sampler;
using phimoe_rt::SamplingParams;

namespace {

std::vector<float> random_logits(int vocab, unsigned seed, float scale = 3.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> l(vocab);
  for (float &x : l)
    x = d(rng);
  return l;
}

int argmax(const std::vector<float> &l) {
  return static_cast<int>(std::max_element(l.begin(), l.end()) - l.begin());
}

std::vector<int> ranked(const std::vector<float> &l) {
  std::vector<int> ids(l.size());
  for (size_t i = 0; i < l.size(); ++i)
    ids[i] = static_cast<int>(i);
  std::sort(ids.begin(), ids.end(), [&](int a, int b) { return l[a] > l[b]; });
  return ids;
}

} // namespace

TEST(Sampler, GreedyIsArgmax) {
  SamplingParams p;
  p.temperature = 0;
  for (unsigned seed = 1; seed < 20; ++seed) {
    auto l = random_logits(500, seed);
    Sampler s(p, 500);
    EXPECT_EQ(s.sample(l.data(), nullptr, 0), argmax(l));
  }
}

TEST(Sampler, SameSeedSameTokensOtherSeedOtherTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  auto l = random_logits(200, 7, 0.5f);
  auto run = [&](uint64_t seed) {
    p.seed = seed;
    Sampler s(p, 200);
    std::vector<int> out;
    for (int i = 0; i < 50; ++i)
      out.push_back(s.sample(l.data(), nullptr, 0));
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(Sampler, TopKKeepsOnlyTheKBest) {
  SamplingParams p;
  p.temperature = 5.0f; // flat: every candidate gets drawn
  p.top_k = 5;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  auto l = random_logits(300, 3);
  auto best = ranked(l);
  std::set<int> allowed(best.begin(), best.begin() + 5), seen;
  Sampler s(p, 300);
  for (int i = 0; i < 2000; ++i)
    seen.insert(s.sample(l.data(), nullptr, 0));
  EXPECT_EQ(seen, allowed);
}

TEST(Sampler, TopPKeepsTheSmallestPrefixReachingP) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1: top_p 0.75 keeps 2.
  std::vector<float> l = {std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 0.75f;
  p.min_p = 0.0f;
  Sampler s(p, 4);
  std::map<int, int> counts;
  for (int i = 0; i < 4000; ++i)
    ++counts[s.sample(l.data(), nullptr, 0)];
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_GT(counts[1], counts[3]);
  // Renormalised 0.5 : 0.3 -> 62.5%; 4000 draws put it within a few percent.
  EXPECT_NEAR(counts[1] / 4000.0, 0.625, 0.04);
}

TEST(Sampler, MinPDropsTokensFarBelowTheBest) {
  std::vector<float> l = {std::log(0.6f), std::log(0.25f), std::log(0.1f), std::log(0.05f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.2f; // keeps p >= 0.12: tokens 0 and 1
  Sampler s(p, 4);
  std::set<int> seen;
  for (int i = 0; i < 2000; ++i)
    seen.insert(s.sample(l.data(), nullptr, 0));
  EXPECT_EQ(seen, (std::set<int>{0, 1}));
}

TEST(Sampler, PenaltiesLowerRecentTokens) {
  std::vector<float> l = {2.0f, 1.9f, -1.0f, 0.5f};
  std::vector<int32_t> recent = {0, 0, 0};
  SamplingParams p;
  p.temperature = 0;
  {
    Sampler s(p, 4);
    EXPECT_EQ(s.sample(l.data(), recent.data(), 3), 0);
  }
  p.repeat_penalty = 1.1f; // 2.0 / 1.1 = 1.82 < 1.9
  {
    Sampler s(p, 4);
    EXPECT_EQ(s.sample(l.data(), recent.data(), 3), 1);
  }
  p.repeat_penalty = 1.0f;
  p.frequency_penalty = 0.05f; // 2.0 - 3 * 0.05 = 1.85 < 1.9
  {
    Sampler s(p, 4);
    EXPECT_EQ(s.sample(l.data(), recent.data(), 3), 1);
  }
  p.frequency_penalty = 0.0f;
  p.presence_penalty = 0.05f; // 2.0 - 0.05 = 1.95 > 1.9: count does not matter
  {
    Sampler s(p, 4);
    EXPECT_EQ(s.sample(l.data(), recent.data(), 3), 0);
  }
  p.penalty_last_n = 0; // the window sees nothing
  p.presence_penalty = 1.0f;
  {
    Sampler s(p, 4);
    EXPECT_EQ(s.sample(l.data(), recent.data(), 3), 0);
  }
}

TEST(Sampler, RepeatPenaltyMultipliesNegativeLogits) {
  std::vector<float> l = {-1.0f, -1.05f};
  std::vector<int32_t> recent = {0};
  SamplingParams p;
  p.temperature = 0;
  p.repeat_penalty = 1.1f; // -1.0 * 1.1 = -1.1 < -1.05
  Sampler s(p, 2);
  EXPECT_EQ(s.sample(l.data(), recent.data(), 1), 1);
}

// token_logprob: log-softmax of the raw logits, against a long-double reference; the top
// alternatives most likely first, equal logits by id.
TEST(TokenLogprob, LogSoftmaxAndTheMostLikely) {
  for (unsigned seed = 0; seed < 4; ++seed) {
    const int vocab = 1000 + 37 * static_cast<int>(seed);
    std::vector<float> l = random_logits(vocab, seed, 4.0f);
    for (int i = 0; i < vocab; i += 97)
      l[i] = l[3]; // ties
    long double max = *std::max_element(l.begin(), l.end()), sum = 0;
    for (float x : l)
      sum += std::exp(static_cast<long double>(x) - max);
    const long double log_z = max + std::log(sum);
    std::vector<int> order(vocab);
    for (int i = 0; i < vocab; ++i)
      order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b]; });
    for (int top : {0, 1, 5, 20}) {
      const int chosen = static_cast<int>((seed * 131 + 7) % vocab);
      phimoe_rt::TokenLogprob out;
      phimoe_rt::token_logprob(l.data(), vocab, chosen, top, out);
      EXPECT_EQ(out.id, chosen);
      EXPECT_NEAR(out.logprob, static_cast<double>(l[chosen] - log_z), 1e-5);
      ASSERT_EQ(out.top.size(), static_cast<size_t>(top));
      for (int k = 0; k < top; ++k) {
        EXPECT_EQ(out.top[k].first, order[k]) << "seed " << seed << " rank " << k;
        EXPECT_NEAR(out.top[k].second, static_cast<double>(l[order[k]] - log_z), 1e-5);
      }
    }
  }
  // Ties everywhere: the lowest ids, each log(1/vocab); more than the vocabulary: all of it.
  std::vector<float> flat(50, 2.5f);
  phimoe_rt::TokenLogprob out;
  phimoe_rt::token_logprob(flat.data(), 50, 49, 80, out);
  ASSERT_EQ(out.top.size(), 50u);
  for (int k = 0; k < 50; ++k) {
    EXPECT_EQ(out.top[k].first, k);
    EXPECT_NEAR(out.top[k].second, -std::log(50.0), 1e-6);
  }
  EXPECT_NEAR(out.logprob, -std::log(50.0), 1e-6);
}
