// batch_engine_test.cpp - the continuous-batching scheduler (BatchEngine) over a fake model:
// many sequences with chunked prompts, LongRoPE recomputes and preemption for KV blocks must
// each produce exactly what the sequence alone produces; cancelled sequences free their
// blocks. The fake phimoe_forward reads everything through the batch descriptor and the paged
// cache, so a block-table mix-up, a stale position or a wrong LongRoPE set changes the output.
// SessionEngine (serve of a CUDA build: one request at a time over a ModelSession) runs over a
// fake session that gives the same model's logits: each request must produce what it would
// alone, keep the cache of the common prefix, and end alone when its device fails.
#include "phimoe_rt/batch.h"
#include "phimoe_rt/model.h"
#include "phimoe_rt/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <thread>

namespace {
constexpr int kVocab = 300, kOriginal = 16;
} // namespace

// rows per forward 8 (prompts go in chunks), one layer, one kv head of 8 floats.
const phimoe_rt::ModelInfo phimoe_model_info = {1, 0, 0, 8, kVocab, 8, 8, 1, 1, 1, 8,
                                                kOriginal, 64};

// The fake model: row t stores (token, LongRoPE set) at its position in its sequence's cache;
// the logits of a row pick hash(tokens and sets at positions 0..pos of the same sequence).
void phimoe_forward(phimoe_rt::Context &ctx, const int32_t *ids, const int32_t *pos, int32_t n,
                    int32_t logit_rows, float *logits) {
  const phimoe_rt::BatchRows &b = *ctx.batch;
  phimoe_rt::PagedKVCache &cache = *b.cache;
  const int bs = cache.block_size;
  for (int t = 0; t < n; ++t) {
    const int block = b.block_of(b.slot[t], pos[t]);
    ASSERT_GE(block, 0) << "row " << t << " has no block";
    float *k = cache.k_at(0, block, pos[t] % bs);
    k[0] = static_cast<float>(ids[t]);
    k[1] = b.rope_long[t] ? 1.0f : 0.0f;
  }
  for (int r = 0; r < logit_rows; ++r) {
    const int t = n - logit_rows + r;
    uint32_t h = 17;
    for (int j = 0; j <= pos[t]; ++j) {
      const float *k = cache.k_at(0, b.block_of(b.slot[t], j), j % bs);
      h = h * 31u + static_cast<uint32_t>(k[0]) * 7u + static_cast<uint32_t>(k[1]);
    }
    float *row = logits + static_cast<size_t>(r) * kVocab;
    std::fill(row, row + kVocab, 0.0f);
    row[3 + h % (kVocab - 3)] = 1.0f; // never 0..2 (special tokens)
  }
}

namespace {

using namespace phimoe_rt;

std::unique_ptr<Tokenizer> tokenizer() {
  std::string error;
  auto t = Tokenizer::load_hf(PHIMOE_EXAMPLE_DIR "/tokenizer.json", "", error);
  EXPECT_TRUE(t) << error;
  return t;
}

// What the fake model generates for one sequence alone (as Session would run it: the long
// set on every position once the sequence is longer than kOriginal).
std::string alone(const Tokenizer &tok, std::vector<int32_t> tokens, int max_tokens) {
  StreamDecoder decoder(tok);
  decoder.prime(tokens.data(), tokens.size());
  std::string text, piece;
  for (int i = 0; i < max_tokens; ++i) {
    const uint32_t set = tokens.size() > static_cast<size_t>(kOriginal) ? 1 : 0;
    uint32_t h = 17;
    for (int32_t id : tokens)
      h = h * 31u + static_cast<uint32_t>(id) * 7u + set;
    const int32_t next = static_cast<int32_t>(3 + h % (kVocab - 3));
    tokens.push_back(next);
    piece.clear();
    decoder.push(next, piece);
    text += piece;
  }
  piece.clear();
  decoder.finish(piece);
  return text + piece;
}

std::string drain(GenerationStream &stream, GenerationStream::Chunk &last) {
  std::string text;
  while (true) {
    if (!stream.next(last, 10000))
      return text + "<timeout>";
    text += last.text;
    if (last.done)
      return text;
  }
}

GenerationRequest greedy(std::vector<int32_t> prompt, int max_tokens) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0.0f;
  return r;
}

TEST(BatchEngine, EverySequenceGeneratesWhatItWouldAlone) {
  auto tok = tokenizer();
  ASSERT_TRUE(tok);
  for (int kv_blocks : {0, 14}) { // 14 blocks of 4 < 4 sequences x 12: preemption
    BatchOptions o;
    o.parallel = 4;
    o.ctx_size = 48;
    o.block_size = 4;
    o.kv_blocks = kv_blocks;
    o.threads = 1;
    o.step_delay_ms = 1; // all requests are in before the first steps end, however busy the host
    std::vector<GenerationRequest> requests;
    std::vector<std::string> expected;
    for (int i = 0; i < 12; ++i) {
      // Prompts of 1..23 tokens (some past kOriginal from the start), replies that cross it.
      std::vector<int32_t> prompt;
      for (int j = 0; j < 1 + (i * 7) % 23; ++j)
        prompt.push_back(100 + (i * 13 + j * 5) % 150);
      const int max_tokens = 10 + (i * 5) % 20;
      expected.push_back(alone(*tok, prompt, max_tokens));
      requests.push_back(greedy(prompt, max_tokens));
    }
    // Submitted together (the references computed first), so that their steps are shared.
    BatchEngine engine(phimoe_model_info, nullptr, *tok, o);
    std::vector<std::shared_ptr<GenerationStream>> streams;
    for (GenerationRequest &r : requests) {
      BatchEngine::Refusal why;
      streams.push_back(engine.submit(std::move(r), why));
      ASSERT_TRUE(streams.back()) << static_cast<int>(why);
    }
    for (size_t i = 0; i < streams.size(); ++i) {
      GenerationStream::Chunk last;
      EXPECT_EQ(drain(*streams[i], last), expected[i]) << "request " << i;
      EXPECT_EQ(last.finish_reason, "length");
      EXPECT_EQ(last.completion_tokens, 10 + (static_cast<int>(i) * 5) % 20);
    }
    BatchMetrics m = engine.metrics();
    EXPECT_EQ(m.active, 0);
    EXPECT_EQ(m.free_blocks, m.total_blocks);
    EXPECT_LT(m.steps, m.generated_tokens); // steps were shared
    if (kv_blocks)
      EXPECT_GT(m.preempted, 0u);
  }
}

TEST(BatchEngine, RefusesWhatDoesNotFitAndStopsCleanly) {
  auto tok = tokenizer();
  ASSERT_TRUE(tok);
  BatchOptions o;
  o.parallel = 2;
  o.ctx_size = 16;
  o.block_size = 4;
  BatchEngine engine(phimoe_model_info, nullptr, *tok, o);
  BatchEngine::Refusal why;
  EXPECT_FALSE(engine.submit(greedy(std::vector<int32_t>(17, 100), 4), why));
  EXPECT_EQ(why, BatchEngine::Refusal::TooLong);
  EXPECT_FALSE(engine.submit(greedy({}, 4), why));
  // A reply that reaches the end of the context ends with "length".
  auto s = engine.submit(greedy(std::vector<int32_t>(10, 100), 100), why);
  ASSERT_TRUE(s);
  GenerationStream::Chunk last;
  drain(*s, last);
  EXPECT_EQ(last.finish_reason, "length");
  EXPECT_EQ(last.completion_tokens, 7); // positions 10..15 run, the 7th token is not run
  engine.stop();
  EXPECT_FALSE(engine.submit(greedy({100}, 4), why));
  EXPECT_EQ(why, BatchEngine::Refusal::Stopped);
}

TEST(BatchEngine, CancelFreesTheSequenceAndItsBlocks) {
  auto tok = tokenizer();
  ASSERT_TRUE(tok);
  BatchOptions o;
  o.parallel = 2;
  o.ctx_size = 64;
  o.block_size = 4;
  o.step_delay_ms = 5; // about 0.3 s for the whole reply
  BatchEngine engine(phimoe_model_info, nullptr, *tok, o);
  BatchEngine::Refusal why;
  auto s = engine.submit(greedy({100, 101, 102}, 60), why);
  ASSERT_TRUE(s);
  GenerationStream::Chunk chunk;
  ASSERT_TRUE(s->next(chunk, 10000));
  s->cancel();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  BatchMetrics m;
  do {
    m = engine.metrics();
    if (m.active == 0)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1)); // polling the state
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(m.active, 0);
  EXPECT_EQ(m.free_blocks, m.total_blocks);
  EXPECT_LT(m.generated_tokens, 30u); // stopped long before its 60 tokens
}

TEST(BatchEngine, StopStringsCutTheReply) {
  auto tok = tokenizer();
  ASSERT_TRUE(tok);
  std::vector<int32_t> prompt = {120, 121};
  const std::string full = alone(*tok, prompt, 20);
  ASSERT_GT(full.size(), 10u);
  const std::string stop = full.substr(6, 3);
  BatchOptions o;
  o.ctx_size = 64;
  BatchEngine engine(phimoe_model_info, nullptr, *tok, o);
  GenerationRequest r = greedy(prompt, 20);
  r.stop_strings = {stop};
  BatchEngine::Refusal why;
  auto s = engine.submit(r, why);
  ASSERT_TRUE(s);
  GenerationStream::Chunk last;
  EXPECT_EQ(drain(*s, last), full.substr(0, full.find(stop)));
  EXPECT_EQ(last.finish_reason, "stop");
}

// ---- SessionEngine: one request at a time over a ModelSession ----------------------------

// A session whose logits are those of the fake model above, computed from its tokens (what a
// fresh forward over them gives, as ModelSession promises). It counts the positions it runs,
// and throws like a failing device when asked to.
class FakeSession final : public ModelSession {
public:
  explicit FakeSession(int capacity) : capacity_(capacity), logits_(kVocab) {}
  int capacity() const override { return capacity_; }
  int size() const override { return static_cast<int>(tokens_.size()); }
  const std::vector<int32_t> &tokens() const override { return tokens_; }
  const float *append(const int32_t *ids, int count,
                      std::vector<float> *all_logits = nullptr) override {
    if (fail_next) {
      fail_next = false;
      throw std::runtime_error("fake device failure");
    }
    if (count <= 0 || size() + count > capacity_)
      return nullptr;
    const size_t begin = tokens_.size();
    tokens_.insert(tokens_.end(), ids, ids + count);
    computed += count;
    for (size_t end = all_logits ? begin + 1 : tokens_.size(); end <= tokens_.size(); ++end) {
      const uint32_t set = end > static_cast<size_t>(kOriginal) ? 1 : 0;
      uint32_t h = 17;
      for (size_t j = 0; j < end; ++j)
        h = h * 31u + static_cast<uint32_t>(tokens_[j]) * 7u + set;
      std::fill(logits_.begin(), logits_.end(), 0.0f);
      logits_[3 + h % (kVocab - 3)] = 1.0f;
      if (all_logits)
        all_logits->insert(all_logits->end(), logits_.begin(), logits_.end());
    }
    return logits_.data();
  }
  void reset() override { tokens_.clear(); }
  int truncate(int n) override {
    tokens_.resize(std::min(n, size()));
    return size();
  }

  std::atomic<int> computed{0};
  std::atomic<bool> fail_next{false};

private:
  int capacity_;
  std::vector<int32_t> tokens_;
  std::vector<float> logits_;
};

TEST(SessionEngine, EveryRequestGeneratesWhatItWouldAloneInTurn) {
  auto tok = tokenizer();
  ASSERT_TRUE(tok);
  BatchOptions o;
  o.parallel = 4; // one at a time all the same
  o.ctx_size = 48;
  SessionEngine engine(std::make_unique<FakeSession>(48), kVocab, *tok, o);
  EXPECT_EQ(engine.options().parallel, 1);
  std::vector<std::shared_ptr<GenerationStream>> streams;
  std::vector<std::string> expected;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> prompt;
    for (int j = 0; j < 1 + (i * 7) % 23; ++j)
      prompt.push_back(100 + (i * 13 + j * 5) % 150);
    const int max_tokens = 10 + (i * 5) % 20;
    expected.push_back(alone(*tok, prompt, max_tokens));
    Engine::Refusal why;
    streams.push_back(engine.submit(greedy(prompt, max_tokens), why));
    ASSERT_TRUE(streams.back()) << static_cast<int>(why);
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    GenerationStream::Chunk last;
    EXPECT_EQ(drain(*streams[i], last), expected[i]) << "request " << i;
    EXPECT_EQ(last.finish_reason, "length");
    EXPECT_EQ(last.completion_tokens, 10 + (static_cast<int>(i) * 5) % 20);
  }
  const BatchMetrics m = engine.metrics();
  EXPECT_EQ(m.requests, 6u);
  EXPECT_EQ(m.active, 0);
  EXPECT_EQ(m.queued, 0);
}

TEST(SessionEngine, KeepsTheCacheOfTheCommonPrefix) {
  auto tok = tokenizer();
  ASSERT_TRUE(tok);
  auto owned = std::make_unique<FakeSession>(64);
  FakeSession &session = *owned;
  BatchOptions o;
  o.ctx_size = 64;
  SessionEngine engine(std::move(owned), kVocab, *tok, o);
  std::vector<int32_t> first = {100, 101, 102, 103, 104, 105, 106, 107, 108, 109};
  std::vector<int32_t> second = first;
  for (int32_t id : {110, 111, 112, 113, 114})
    second.push_back(id);
  Engine::Refusal why;
  GenerationStream::Chunk last;
  drain(*engine.submit(greedy(first, 3), why), last);
  EXPECT_EQ(session.computed, 10 + 2); // the prompt, then two of the three tokens
  const std::string text = drain(*engine.submit(greedy(second, 4), why), last);
  EXPECT_EQ(text, alone(*tok, second, 4));
  EXPECT_EQ(session.computed, 12 + 5 + 3); // only the 5 new prompt tokens ran
}

TEST(SessionEngine, StopsAtStopStringsAndTheContextAndRefusesWhatDoesNotFit) {
  auto tok = tokenizer();
  ASSERT_TRUE(tok);
  BatchOptions o;
  o.ctx_size = 16;
  SessionEngine engine(std::make_unique<FakeSession>(16), kVocab, *tok, o);
  Engine::Refusal why;
  EXPECT_FALSE(engine.submit(greedy(std::vector<int32_t>(17, 100), 4), why));
  EXPECT_EQ(why, Engine::Refusal::TooLong);
  EXPECT_FALSE(engine.submit(greedy({}, 4), why));
  std::vector<int32_t> prompt = {120, 121};
  const std::string full = alone(*tok, prompt, 12);
  ASSERT_GT(full.size(), 10u);
  const std::string stop = full.substr(6, 3);
  GenerationRequest r = greedy(prompt, 12);
  r.stop_strings = {stop};
  GenerationStream::Chunk last;
  EXPECT_EQ(drain(*engine.submit(r, why), last), full.substr(0, full.find(stop)));
  EXPECT_EQ(last.finish_reason, "stop");
  // As BatchEngine: positions 10..15 run, the 7th token is not run.
  drain(*engine.submit(greedy(std::vector<int32_t>(10, 100), 100), why), last);
  EXPECT_EQ(last.finish_reason, "length");
  EXPECT_EQ(last.completion_tokens, 7);
  engine.stop();
  EXPECT_FALSE(engine.submit(greedy({100}, 4), why));
  EXPECT_EQ(why, Engine::Refusal::Stopped);
}

TEST(SessionEngine, ADeviceErrorEndsOnlyItsRequest) {
  auto tok = tokenizer();
  ASSERT_TRUE(tok);
  auto owned = std::make_unique<FakeSession>(32);
  FakeSession &session = *owned;
  BatchOptions o;
  o.ctx_size = 32;
  SessionEngine engine(std::move(owned), kVocab, *tok, o);
  session.fail_next = true;
  Engine::Refusal why;
  GenerationStream::Chunk last;
  drain(*engine.submit(greedy({100, 101}, 4), why), last);
  EXPECT_TRUE(last.done);
  EXPECT_EQ(last.error, "fake device failure");
  EXPECT_EQ(drain(*engine.submit(greedy({100, 101}, 4), why), last),
            alone(*tok, {100, 101}, 4));
  EXPECT_TRUE(last.error.empty());
}

// A backend whose forward fails once (as a CUDA build's on a device error), else the CPU's.
class FailingOnce final : public BatchBackend {
public:
  explicit FailingOnce(bool &fail)
      : cpu_(cpu_batch_backend(phimoe_model_info, nullptr)), fail_(fail) {}
  void allocate(const BatchLayout &layout) override {
    layout_ = layout;
    cpu_->allocate(layout);
  }
  void forward(const int32_t *ids, const int32_t *positions, const int32_t *row_slot,
               const uint8_t *row_long, int n, int logit_rows, const int32_t *block_table,
               float *logits) override {
    if (fail_) {
      fail_ = false;
      throw std::runtime_error("fake device failure");
    }
    cpu_->forward(ids, positions, row_slot, row_long, n, logit_rows, block_table, logits);
  }
  BatchLayout layout_;

private:
  std::unique_ptr<BatchBackend> cpu_;
  bool &fail_;
};

TEST(BatchEngine, AFailedForwardEndsTheRunningRequestsAndFreesTheirBlocks) {
  auto tok = tokenizer();
  ASSERT_TRUE(tok);
  bool fail = false;
  auto owned = std::make_unique<FailingOnce>(fail);
  FailingOnce &backend = *owned;
  BatchOptions o;
  o.parallel = 3;
  o.ctx_size = 40;
  o.block_size = 4;
  o.step_delay_ms = 20;
  BatchEngine engine(phimoe_model_info, std::move(owned), *tok, o);
  // The engine hands the backend its layout before any forward.
  EXPECT_EQ(backend.layout_.slots, 3);
  EXPECT_EQ(backend.layout_.block_size, 4);
  EXPECT_EQ(backend.layout_.max_blocks, 10);
  EXPECT_EQ(backend.layout_.blocks, 30);
  Engine::Refusal why;
  auto a = engine.submit(greedy({100, 101, 102}, 30), why);
  auto b = engine.submit(greedy({110, 111}, 30), why);
  ASSERT_TRUE(a && b);
  GenerationStream::Chunk chunk;
  ASSERT_TRUE(a->next(chunk, 10000)); // both are running (the first step ran)
  fail = true;
  GenerationStream::Chunk last_a, last_b;
  drain(*a, last_a);
  drain(*b, last_b);
  EXPECT_EQ(last_a.error, "fake device failure");
  EXPECT_EQ(last_b.error, "fake device failure");
  // Their blocks are free again, and the engine serves the next request as if alone.
  EXPECT_EQ(engine.metrics().free_blocks, 30);
  EXPECT_EQ(drain(*engine.submit(greedy({100, 101}, 6), why), last_a),
            alone(*tok, {100, 101}, 6));
  EXPECT_TRUE(last_a.error.empty());
}

} // namespace

// ---- Log-probabilities of the reply's tokens ---------------------------------------------

namespace {

// What the fake model generates after `tokens` (alone()'s choices), and where the text of each
// token begins in the reply (the stream decoder's text before it; bytes of a character spelled
// by several byte tokens show with the last of them).
void alone_ids(std::vector<int32_t> tokens, int max_tokens, const Tokenizer &tok,
               std::vector<int32_t> &ids, std::vector<size_t> &offsets) {
  StreamDecoder decoder(tok);
  decoder.prime(tokens.data(), tokens.size());
  std::string text;
  for (int i = 0; i < max_tokens; ++i) {
    const uint32_t set = tokens.size() > static_cast<size_t>(kOriginal) ? 1 : 0;
    uint32_t h = 17;
    for (int32_t id : tokens)
      h = h * 31u + static_cast<uint32_t>(id) * 7u + set;
    ids.push_back(static_cast<int32_t>(3 + h % (kVocab - 3)));
    tokens.push_back(ids.back());
    offsets.push_back(text.size());
    decoder.push(ids.back(), text);
  }
}

// Text and entries to the end; no entry arrives before the text its token begins.
std::string drain_logprobs(GenerationStream &stream, GenerationStream::Chunk &last,
                           std::vector<TokenLogprob> &entries) {
  std::string text;
  while (true) {
    if (!stream.next(last, 10000))
      return text + "<timeout>";
    text += last.text;
    for (TokenLogprob &e : last.logprobs) {
      EXPECT_LE(e.text_offset, text.size()) << "entry " << entries.size();
      entries.push_back(std::move(e));
    }
    if (last.done)
      return text;
  }
}

// The fake model's logits are 1 at the chosen id and 0 elsewhere.
void expect_fake_entries(const std::vector<TokenLogprob> &entries,
                         const std::vector<int32_t> &ids, const std::vector<size_t> &offsets,
                         int top) {
  const double log_z = std::log(std::exp(1.0) + (kVocab - 1));
  ASSERT_LE(entries.size(), ids.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const TokenLogprob &e = entries[i];
    EXPECT_EQ(e.id, ids[i]) << i;
    EXPECT_EQ(e.text_offset, offsets[i]) << i;
    EXPECT_NEAR(e.logprob, 1.0 - log_z, 1e-6) << i;
    ASSERT_EQ(e.top.size(), static_cast<size_t>(top)) << i;
    for (int k = 0; k < top; ++k) {
      // The chosen token, then the others by id (equal logits).
      const int32_t want = k == 0 ? ids[i] : (k - 1 < ids[i] ? k - 1 : k);
      EXPECT_EQ(e.top[k].first, want) << i << " " << k;
      EXPECT_NEAR(e.top[k].second, (k == 0 ? 1.0 : 0.0) - log_z, 1e-6) << i << " " << k;
    }
  }
}

size_t begin_before(const std::vector<size_t> &offsets, size_t cut) {
  return static_cast<size_t>(std::count_if(offsets.begin(), offsets.end(),
                                           [&](size_t at) { return at < cut; }));
}

} // namespace

TEST(BatchEngine, LogprobsFollowTheTextAndStopWithIt) {
  auto tok = tokenizer();
  ASSERT_TRUE(tok);
  std::vector<int32_t> prompt = {120, 121};
  std::vector<int32_t> ids;
  std::vector<size_t> offsets;
  alone_ids(prompt, 20, *tok, ids, offsets);
  const std::string full = alone(*tok, prompt, 20);
  BatchOptions o;
  o.ctx_size = 64;
  BatchEngine engine(phimoe_model_info, nullptr, *tok, o);
  for (int top : {0, 3}) {
    GenerationRequest r = greedy(prompt, 20);
    r.logprobs = top;
    Engine::Refusal why;
    auto s = engine.submit(r, why);
    ASSERT_TRUE(s);
    GenerationStream::Chunk last;
    std::vector<TokenLogprob> entries;
    EXPECT_EQ(drain_logprobs(*s, last, entries), full);
    EXPECT_EQ(entries.size(), 20u);
    expect_fake_entries(entries, ids, offsets, top);
  }
  // A stop string: the entries of the tokens that begin before the cut, no more.
  const std::string stop = full.substr(6, 3);
  const size_t cut = full.find(stop);
  GenerationRequest r = greedy(prompt, 20);
  r.logprobs = 1;
  r.stop_strings = {stop};
  Engine::Refusal why;
  auto s = engine.submit(r, why);
  ASSERT_TRUE(s);
  GenerationStream::Chunk last;
  std::vector<TokenLogprob> entries;
  EXPECT_EQ(drain_logprobs(*s, last, entries), full.substr(0, cut));
  EXPECT_EQ(entries.size(), begin_before(offsets, cut));
  EXPECT_LT(entries.size(), 20u);
  expect_fake_entries(entries, ids, offsets, 1);
  // Without asking, none.
  entries.clear();
  drain_logprobs(*engine.submit(greedy(prompt, 5), why), last, entries);
  EXPECT_TRUE(entries.empty());
}

TEST(SessionEngine, LogprobsFollowTheTextAndStopWithIt) {
  auto tok = tokenizer();
  ASSERT_TRUE(tok);
  BatchOptions o;
  o.ctx_size = 48;
  SessionEngine engine(std::make_unique<FakeSession>(48), kVocab, *tok, o);
  std::vector<int32_t> prompt = {120, 121};
  std::vector<int32_t> ids;
  std::vector<size_t> offsets;
  alone_ids(prompt, 20, *tok, ids, offsets);
  const std::string full = alone(*tok, prompt, 20);
  GenerationRequest r = greedy(prompt, 20);
  r.logprobs = 2;
  Engine::Refusal why;
  GenerationStream::Chunk last;
  std::vector<TokenLogprob> entries;
  EXPECT_EQ(drain_logprobs(*engine.submit(r, why), last, entries), full);
  EXPECT_EQ(entries.size(), 20u);
  expect_fake_entries(entries, ids, offsets, 2);
  const std::string stop = full.substr(6, 3);
  const size_t cut = full.find(stop);
  r.stop_strings = {stop};
  entries.clear();
  EXPECT_EQ(drain_logprobs(*engine.submit(r, why), last, entries), full.substr(0, cut));
  EXPECT_EQ(entries.size(), begin_before(offsets, cut));
  EXPECT_LT(entries.size(), 20u);
  expect_fake_entries(entries, ids, offsets, 2);
}

// ---- Echo: the prompt's text and its tokens' entries first -------------------------------

namespace {

// The text a fresh stream decoder shows of `prompt`, and where each token's text begins.
std::string prompt_text(const Tokenizer &tok, const std::vector<int32_t> &prompt,
                        std::vector<size_t> &offsets) {
  StreamDecoder decoder(tok);
  std::string text;
  for (int32_t id : prompt) {
    offsets.push_back(text.size());
    decoder.push(id, text);
  }
  decoder.finish(text);
  return text;
}

// A prompt of `n` tokens that the fake model predicts token by token, each with the LongRoPE
// set of a fresh forward over the tokens before it (so an entry computed with the other set
// comes out as unlikely instead).
std::vector<int32_t> predicted_prompt(const Tokenizer &tok, int32_t first, int n) {
  std::vector<int32_t> prompt = {first}, ids;
  std::vector<size_t> unused;
  alone_ids(prompt, n - 1, tok, ids, unused);
  prompt.insert(prompt.end(), ids.begin(), ids.end());
  return prompt;
}

// Entries of an echoed request: the prompt's (the first unscored, each other one predicted),
// then the reply's as alone() makes it.
void expect_echo(const Tokenizer &tok, const std::vector<int32_t> &prompt, int max_tokens,
                 const std::string &text, const std::vector<TokenLogprob> &entries,
                 bool with_entries, const std::string &where) {
  std::vector<size_t> offsets;
  const std::string echoed = prompt_text(tok, prompt, offsets);
  EXPECT_EQ(text, echoed + alone(tok, prompt, max_tokens)) << where;
  if (!with_entries) {
    EXPECT_TRUE(entries.empty()) << where;
    return;
  }
  const size_t n = prompt.size();
  ASSERT_EQ(entries.size(), n + static_cast<size_t>(max_tokens)) << where;
  EXPECT_FALSE(entries[0].scored) << where;
  EXPECT_EQ(entries[0].id, prompt[0]) << where;
  const double log_z = std::log(std::exp(1.0) + (kVocab - 1));
  for (size_t t = 1; t < n; ++t) {
    const TokenLogprob &e = entries[t];
    EXPECT_TRUE(e.scored);
    EXPECT_EQ(e.id, prompt[t]) << where << " position " << t;
    EXPECT_NEAR(e.logprob, 1.0 - log_z, 1e-6) << where << " position " << t;
    ASSERT_EQ(e.top.size(), 1u);
    EXPECT_EQ(e.top[0].first, prompt[t]) << where << " position " << t;
    EXPECT_EQ(e.text_offset, offsets[t]) << where << " position " << t;
  }
  std::vector<int32_t> ids;
  std::vector<size_t> reply_offsets;
  alone_ids(prompt, max_tokens, tok, ids, reply_offsets);
  std::vector<TokenLogprob> reply(entries.begin() + static_cast<long>(n), entries.end());
  for (size_t &at : reply_offsets)
    at += echoed.size();
  expect_fake_entries(reply, ids, reply_offsets, 1);
}

} // namespace

TEST(BatchEngine, EchoGivesEachPromptTokenTheLogprobOfAFreshForward) {
  auto tok = tokenizer();
  ASSERT_TRUE(tok);
  const std::vector<int> lengths = {1, 5, kOriginal, kOriginal + 1, 30, 41};
  for (int kv_blocks : {0, 13}) { // 13 blocks of 4: the first 4 prompts fill them; preemption
    BatchOptions o;
    o.parallel = 4;
    o.ctx_size = 48;
    o.block_size = 4;
    o.kv_blocks = kv_blocks;
    BatchEngine engine(phimoe_model_info, nullptr, *tok, o);
    std::vector<std::shared_ptr<GenerationStream>> streams;
    for (size_t i = 0; i < lengths.size(); ++i) {
      GenerationRequest r = greedy(predicted_prompt(*tok, 100 + static_cast<int>(i), lengths[i]),
                                   6);
      r.echo = true;
      r.logprobs = i == 2 ? -1 : 1; // one echoes its text only
      Engine::Refusal why;
      streams.push_back(engine.submit(r, why));
      ASSERT_TRUE(streams.back());
    }
    for (size_t i = 0; i < lengths.size(); ++i) {
      GenerationStream::Chunk last;
      std::vector<TokenLogprob> entries;
      const std::string text = drain_logprobs(*streams[i], last, entries);
      expect_echo(*tok, predicted_prompt(*tok, 100 + static_cast<int>(i), lengths[i]), 6, text,
                  entries, i != 2,
                  "blocks " + std::to_string(kv_blocks) + " prompt " + std::to_string(i));
      EXPECT_EQ(last.finish_reason, "length");
    }
    if (kv_blocks)
      EXPECT_GT(engine.metrics().preempted, 0u);
  }
}

TEST(SessionEngine, EchoGivesEachPromptTokenTheLogprobOfAFreshForward) {
  auto tok = tokenizer();
  ASSERT_TRUE(tok);
  BatchOptions o;
  o.ctx_size = 64;
  SessionEngine engine(std::make_unique<FakeSession>(64), kVocab, *tok, o);
  for (int n : {1, 5, kOriginal, kOriginal + 1, 41, 30}) { // 30: a prefix of the one before
    GenerationRequest r = greedy(predicted_prompt(*tok, 100, n), 6);
    r.echo = true;
    r.logprobs = 1;
    Engine::Refusal why;
    GenerationStream::Chunk last;
    std::vector<TokenLogprob> entries;
    const std::string text = drain_logprobs(*engine.submit(r, why), last, entries);
    expect_echo(*tok, r.prompt, 6, text, entries, true, "prompt of " + std::to_string(n));
  }
}

TEST(BatchEngine, AStopTokenHasTheLastEntry) {
  auto tok = tokenizer();
  ASSERT_TRUE(tok);
  BatchOptions o;
  o.ctx_size = 64;
  BatchEngine engine(phimoe_model_info, nullptr, *tok, o);
  std::vector<int32_t> prompt = {120, 121}, ids;
  std::vector<size_t> offsets;
  alone_ids(prompt, 8, *tok, ids, offsets);
  GenerationRequest r = greedy(prompt, 20);
  r.logprobs = 0;
  r.stop_ids = {ids[5]};
  Engine::Refusal why;
  GenerationStream::Chunk last;
  std::vector<TokenLogprob> entries;
  const std::string text = drain_logprobs(*engine.submit(r, why), last, entries);
  EXPECT_EQ(last.finish_reason, "stop");
  EXPECT_EQ(last.completion_tokens, 6);
  ASSERT_EQ(entries.size(), 6u);
  EXPECT_EQ(entries[5].id, ids[5]);
  EXPECT_EQ(entries[5].text_offset, text.size());
  expect_fake_entries(std::vector<TokenLogprob>(entries.begin(), entries.begin() + 5), ids,
                      offsets, 0);
}

// ---- JSON mode and logit_bias: what a request does to the logits -------------------------

namespace {

// A batch engine and a session engine over the fake model, with a context of 64.
struct BothEngines {
  static BatchOptions options() {
    BatchOptions o;
    o.ctx_size = 64;
    return o;
  }
  std::unique_ptr<Tokenizer> tok = tokenizer();
  BatchEngine batch{phimoe_model_info, nullptr, *tok, options()};
  SessionEngine session{std::make_unique<FakeSession>(64), kVocab, *tok, options()};
  std::vector<Engine *> all() { return {&batch, &session}; }
};

} // namespace

TEST(BatchEngine, JsonModeKeepsTheReplyAnObjectPrefix) {
  BothEngines engines;
  for (Engine *engine : engines.all()) {
    GenerationRequest r = greedy({120, 121}, 30);
    r.json_format = phimoe_rt::JsonGrammar::any_object();
    Engine::Refusal why;
    GenerationStream::Chunk last;
    const std::string text = drain(*engine->submit(r, why), last);
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text[0], '{') << text;
    JsonPrefix prefix;
    EXPECT_TRUE(prefix.push(text)) << text;
    EXPECT_EQ(last.finish_reason, prefix.complete() ? "stop" : "length") << text;
    // Without JSON mode the same model's reply is no object.
    EXPECT_NE(drain(*engine->submit(greedy({120, 121}, 30), why), last)[0], '{');
  }
}

TEST(BatchEngine, LogitBiasMovesTheChoice) {
  BothEngines engines;
  std::vector<int32_t> prompt = {120, 121}, ids;
  std::vector<size_t> offsets;
  alone_ids(prompt, 1, *engines.tok, ids, offsets);
  for (Engine *engine : engines.all()) {
    // +2 on token 250 outweighs the model's 1 on its choice: 250 every time.
    GenerationRequest r = greedy(prompt, 6);
    r.logprobs = 0;
    r.logit_bias = {{250, 2.0f}};
    Engine::Refusal why;
    GenerationStream::Chunk last;
    std::vector<TokenLogprob> entries;
    drain_logprobs(*engine->submit(r, why), last, entries);
    ASSERT_EQ(entries.size(), 6u);
    for (const TokenLogprob &e : entries) {
      EXPECT_EQ(e.id, 250);
      EXPECT_LT(e.logprob, -std::log(static_cast<double>(kVocab)) + 1e-6); // the model's own
    }
    // -100 on the model's choice: another token (the lowest id of the rest, all at 0).
    r.logit_bias = {{ids[0], -100.0f}};
    entries.clear();
    drain_logprobs(*engine->submit(r, why), last, entries);
    ASSERT_FALSE(entries.empty());
    EXPECT_EQ(entries[0].id, ids[0] == 0 ? 1 : 0);
  }
}
