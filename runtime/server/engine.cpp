// engine.cpp - continuous batching over a paged KV cache (BatchEngine, see batch.h), whatever
// runs the forward (its BatchBackend: cpu_batch.cpp, or a CUDA build's).
#include "phimoe_rt/batch.h"

#include <algorithm>
#include <chrono>
#include <exception>

namespace phimoe_rt {


// ---- BatchEngine -------------------------------------------------------------------------

struct BatchEngine::Sequence {
  Sequence(GenerationRequest r, const Tokenizer &tokenizer, int vocab)
      : request(std::move(r)), sampler(request.sampling, vocab), decoder(tokenizer),
        tokens(request.prompt), prompt_tokens(static_cast<int>(request.prompt.size())) {
    // The reply reads on from the prompt (a leading space stays), as phimoe-bin's does, unless
    // it stands alone.
    decoder.prime(request.prompt.data(), request.reply_alone ? 0 : request.prompt.size());
    if (request.json_format)
      json = JsonPrefix(*request.json_format);
  }

  GenerationRequest request;
  std::shared_ptr<GenerationStream> stream = std::make_shared<GenerationStream>();
  Sampler sampler;
  StreamDecoder decoder;
  std::vector<int32_t> tokens; // prompt, then generated
  int prompt_tokens;
  int computed = 0;      // positions whose keys and values are in the cache (current set)
  bool rope_long = false;
  int slot = -1;
  std::vector<int32_t> blocks;
  int generated = 0;
  std::string text;  // the reply so far
  size_t sent = 0;   // bytes of text handed to the stream
  ReplyLogprobs logprobs; // when the request asks for them
  // Echo: the prompt's text length, where each prompt token's text begins, and the next prompt
  // position whose entry is due (prompt_tokens: none, or all given).
  size_t echo_bytes = 0;
  std::vector<size_t> echo_offsets;
  int echo_next = 0;
  JsonPrefix json;            // a structured reply: the reply so far
  std::vector<float> masked;  // the logits it samples from (with logit_bias or JSON mode)
  bool finished = false;

  // Whether prompt entries that come from rows with the short LongRoPE set are still due: the
  // entry of position t comes from row t - 1, run with the set of a forward over t tokens.
  bool short_entries_due(int original) const {
    return original > 0 && echo_next < prompt_tokens && echo_next <= original;
  }
};

BatchEngine::BatchEngine(const ModelInfo &info, std::unique_ptr<BatchBackend> backend,
                         const Tokenizer &tokenizer, const BatchOptions &options)
    : QueuedEngine(options), info_(info), tokenizer_(tokenizer), backend_(std::move(backend)) {
  options_.parallel = std::max(1, std::min(options_.parallel, info.max_tokens));
  options_.block_size = std::max(1, options_.block_size);
  max_blocks_ = (options_.ctx_size + options_.block_size - 1) / options_.block_size;
  int blocks = options_.kv_blocks > 0 ? options_.kv_blocks : options_.parallel * max_blocks_;
  blocks = std::max(blocks, max_blocks_); // one sequence of ctx_size always fits
  options_.kv_blocks = blocks;
  BatchLayout layout;
  layout.slots = options_.parallel;
  layout.blocks = blocks;
  layout.block_size = options_.block_size;
  layout.max_blocks = max_blocks_;
  layout.ctx_size = options_.ctx_size;
  layout.threads = options_.threads;
  backend_->allocate(layout);
  for (int b = blocks - 1; b >= 0; --b)
    free_blocks_.push_back(b);
  for (int s = options_.parallel - 1; s >= 0; --s)
    free_slots_.push_back(s);
  block_table_.assign(static_cast<size_t>(options_.parallel) * max_blocks_, -1);
  logits_.assign(static_cast<size_t>(info.max_tokens) * info.vocab, 0.0f);
  ids_.resize(info.max_tokens);
  positions_.resize(info.max_tokens);
  row_slot_.resize(info.max_tokens);
  row_long_.resize(info.max_tokens);

  metrics_.total_blocks = blocks;
  metrics_.free_blocks = blocks;
  thread_ = std::thread([this] { loop(); });
}

BatchEngine::~BatchEngine() { stop(); }

std::shared_ptr<GenerationStream> BatchEngine::submit(GenerationRequest request,
                                                      Refusal &why) {
  if (!accepts(request, why))
    return nullptr;
  auto seq = std::make_unique<Sequence>(std::move(request), tokenizer_, info_.vocab);
  std::shared_ptr<GenerationStream> stream = seq->stream;
  seq->echo_bytes = echo_prompt(*stream, tokenizer_, seq->request, seq->echo_offsets);
  seq->echo_next = seq->request.echo && seq->request.logprobs >= 0 ? 1 : seq->prompt_tokens;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!admit_locked(waiting_.size(), why))
      return nullptr;
    waiting_.push_back(std::move(seq));
    metrics_.queued = static_cast<int>(waiting_.size());
  }
  wake_.notify_all();
  return stream;
}

void BatchEngine::loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !waiting_.empty() || !running_.empty(); });
      if (stopping_) {
        for (auto &seq : waiting_)
          seq->stream->finish("", "the server is shutting down", seq->prompt_tokens,
                              seq->generated);
        waiting_.clear();
        for (auto &seq : running_) {
          seq->stream->finish("", "the server is shutting down", seq->prompt_tokens,
                              seq->generated);
          release(*seq);
        }
        running_.clear();
        metrics_.queued = metrics_.active = 0;
        return;
      }
    }
    const bool ran = step();
    if (ran && options_.step_delay_ms > 0) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait_for(lock, std::chrono::milliseconds(options_.step_delay_ms),
                     [&] { return stopping_; });
    }
    if (!ran) {
      // Nothing could run (e.g. every waiting request was cancelled): wait for news.
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait_for(lock, std::chrono::milliseconds(20));
    }
  }
}

void BatchEngine::release(Sequence &seq) {
  for (int32_t b : seq.blocks)
    free_blocks_.push_back(b);
  seq.blocks.clear();
  if (seq.slot >= 0) {
    std::fill(block_table_.begin() + static_cast<size_t>(seq.slot) * max_blocks_,
              block_table_.begin() + static_cast<size_t>(seq.slot + 1) * max_blocks_, -1);
    free_slots_.push_back(seq.slot);
    seq.slot = -1;
  }
}

// Gives seq blocks for its first `positions` positions; false when the pool is short.
bool BatchEngine::grow(Sequence &seq, int positions) {
  const int need = (positions + options_.block_size - 1) / options_.block_size;
  if (need > max_blocks_)
    return false;
  if (need - static_cast<int>(seq.blocks.size()) > static_cast<int>(free_blocks_.size()))
    return false;
  while (static_cast<int>(seq.blocks.size()) < need) {
    int32_t b = free_blocks_.back();
    free_blocks_.pop_back();
    block_table_[static_cast<size_t>(seq.slot) * max_blocks_ + seq.blocks.size()] = b;
    seq.blocks.push_back(b);
  }
  return true;
}

// Hands the text of the reply to the stream (emit_reply_text); true when a stop string cut it
// and the sequence finished.
bool BatchEngine::emit_text(Sequence &seq, bool at_end) {
  if (!emit_reply_text(*seq.stream, seq.text, seq.sent, seq.request.stop_strings, at_end)) {
    seq.logprobs.release(*seq.stream, seq.sent, false);
    return false;
  }
  finish(seq, "stop", false);
  return true;
}

// Ends the reply: what the decoder holds, then the end of the stream.
// With `flush` (a stop token or the length limit), the text the decoder and the stop-string
// check held back goes out first; a stop string cut the reply otherwise.
// A stop token's entry (`stop_entry`, when log-probabilities are asked for) comes last, at the
// end of the text.
void BatchEngine::finish(Sequence &seq, const std::string &reason, bool flush,
                         TokenLogprob *stop_entry) {
  if (seq.finished)
    return;
  seq.finished = true;
  if (flush) {
    std::string rest;
    seq.decoder.finish(rest);
    seq.text += rest;
    if (seq.text.size() > seq.sent)
      seq.stream->push(seq.text.substr(seq.sent));
    seq.sent = seq.text.size();
  }
  seq.logprobs.release(*seq.stream, seq.sent, true);
  if (stop_entry) {
    stop_entry->text_offset = seq.echo_bytes + seq.text.size();
    seq.stream->push(std::move(*stop_entry));
  }
  // The stream ends after the step has freed the sequence and updated the metrics (step()),
  // so that a client that got its answer sees them.
  ended_.push_back({seq.stream, reason, seq.prompt_tokens, seq.generated});
}

void BatchEngine::fail_running(const std::string &error) {
  std::vector<std::unique_ptr<Sequence>> failed;
  failed.swap(running_);
  for (auto &seq : failed)
    release(*seq);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    metrics_.active = 0;
    metrics_.free_blocks = static_cast<int>(free_blocks_.size());
  }
  // The streams end once the blocks are free and the metrics say so.
  for (auto &seq : failed)
    seq->stream->finish("", error, seq->prompt_tokens, seq->generated);
}

bool BatchEngine::step() {
  const double t0 = now_seconds();
  // Admission (and the requests whose client went away).
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = waiting_.begin(); it != waiting_.end();)
      it = (*it)->stream->cancelled() ? waiting_.erase(it) : it + 1;
    while (!waiting_.empty() && !free_slots_.empty()) {
      Sequence &seq = *waiting_.front();
      // Blocks for the prompt and the first generated token (at most a whole context).
      const int need = std::min(max_blocks_, (static_cast<int>(seq.tokens.size()) + 1 +
                                              options_.block_size - 1) / options_.block_size);
      if (need > static_cast<int>(free_blocks_.size()))
        break;
      seq.slot = free_slots_.back();
      free_slots_.pop_back();
      grow(seq, static_cast<int>(seq.tokens.size()));
      seq.computed = 0;
      // Past original_max_position the long set, except while prompt entries from short
      // rows are due (they come first; then every position again with the long set).
      const int original = info_.original_max_position;
      if (original > 0 && static_cast<int>(seq.tokens.size()) > original &&
          !seq.short_entries_due(original))
        seq.rope_long = true;
      if (seq.generated == 0)
        metrics_.prompt_tokens += seq.prompt_tokens;
      running_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
    metrics_.queued = static_cast<int>(waiting_.size());
  }
  // Drop what was cancelled: its slot and blocks are free from this step on.
  for (auto &seq : running_)
    if (seq->stream->cancelled()) {
      seq->finished = true;
      release(*seq);
    }
  running_.erase(std::remove_if(running_.begin(), running_.end(),
                                [](const std::unique_ptr<Sequence> &s) { return s->finished; }),
                 running_.end());

  // Rows: one for each decoding sequence first, then prompt (or recompute) chunks.
  // Rows [begin, begin + count) of a sequence; those from logit_from on get logits (the
  // last, for the next token, when `logits`; with echo, those whose next prompt token's
  // entry is due).
  struct Part {
    Sequence *seq;
    int begin, count;
    bool logits;
    int logit_from;
  };
  const int original = info_.original_max_position;
  std::vector<Part> parts;
  int budget = info_.max_tokens;
  std::vector<std::unique_ptr<Sequence>> preempted;
  for (int pass = 0; pass < 2; ++pass)
    for (auto &holder : running_) {
      Sequence &seq = *holder;
      const int pending = static_cast<int>(seq.tokens.size()) - seq.computed;
      if (pending <= 0 || budget <= 0 || (pass == 0) != (pending == 1))
        continue;
      int count = std::min(pending, budget);
      if (!seq.rope_long && seq.short_entries_due(original) && seq.prompt_tokens > original)
        count = std::min(count, original - seq.computed); // short rows first (see admission)
      if (!grow(seq, seq.computed + count)) {
        // The pool is short: this sequence goes back to the queue (its cache is
        // recomputed when it is admitted again; sampling state is kept).
        seq.finished = true;
        continue;
      }
      const int end = seq.computed + count;
      const bool next = end == static_cast<int>(seq.tokens.size());
      int from = next ? end - 1 : end;
      if (seq.echo_next < seq.prompt_tokens)
        from = std::min(from, std::max(seq.computed, seq.echo_next - 1));
      parts.push_back({&seq, seq.computed, count, next, from});
      budget -= count;
    }
  for (auto &holder : running_)
    if (holder->finished) {
      release(*holder);
      holder->finished = false;
      preempted.push_back(std::move(holder));
    }
  running_.erase(std::remove(running_.begin(), running_.end(), nullptr), running_.end());
  if (!preempted.empty()) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = preempted.rbegin(); it != preempted.rend(); ++it)
      waiting_.push_front(std::move(*it));
    metrics_.preempted += preempted.size();
    metrics_.queued = static_cast<int>(waiting_.size());
  }
  if (parts.empty()) {
    std::lock_guard<std::mutex> lock(mutex_);
    metrics_.active = static_cast<int>(running_.size());
    metrics_.free_blocks = static_cast<int>(free_blocks_.size());
    return false;
  }
  // Rows without logits first, then one row per sequence that gets its next token.
  int n = 0;
  auto add_row = [&](Sequence &seq, int p) {
    ids_[n] = seq.tokens[p];
    positions_[n] = p;
    row_slot_[n] = seq.slot;
    row_long_[n] = seq.rope_long ? 1 : 0;
    ++n;
  };
  for (const Part &part : parts)
    for (int p = part.begin; p < part.logit_from; ++p)
      add_row(*part.seq, p);
  int logit_rows = 0;
  for (const Part &part : parts)
    for (int p = part.logit_from; p < part.begin + part.count; ++p) {
      add_row(*part.seq, p);
      ++logit_rows;
    }
  try {
    backend_->forward(ids_.data(), positions_.data(), row_slot_.data(), row_long_.data(), n,
                      logit_rows, block_table_.data(), logits_.data());
  } catch (const std::exception &e) {
    fail_running(e.what());
    return true;
  }

  // Prompt entries; sample, stream, finish.
  int row = 0, produced = 0;
  for (const Part &part : parts) {
    Sequence &seq = *part.seq;
    const int end = part.begin + part.count;
    seq.computed = end;
    const float *logits = nullptr;
    for (int p = part.logit_from; p < end; ++p) {
      logits = logits_.data() + static_cast<size_t>(row++) * info_.vocab;
      if (p + 1 == seq.echo_next && seq.echo_next < seq.prompt_tokens &&
          seq.rope_long == (p + 1 > original && original > 0)) {
        TokenLogprob entry;
        token_logprob(logits, info_.vocab, seq.tokens[p + 1], seq.request.logprobs, entry);
        entry.text_offset = seq.echo_offsets[p + 1];
        seq.stream->push(std::move(entry));
        ++seq.echo_next;
      }
    }
    if (!seq.rope_long && original > 0 && end >= original &&
        seq.prompt_tokens > original && !seq.short_entries_due(original) &&
        end < static_cast<int>(seq.tokens.size())) {
      // The short rows' entries are in: every position again with the long set.
      seq.rope_long = true;
      seq.computed = 0;
    }
    if (!part.logits)
      continue;
    if (seq.request.json_format && !json_mask_)
      json_mask_ = std::make_unique<JsonMask>(tokenizer_, info_.vocab);
    const float *allowed = request_logits(seq.request, logits, info_.vocab, json_mask_.get(),
                                          seq.json, seq.masked);
    if (!allowed) {
      finish(seq, "stop", true); // nothing continues the object (no such vocabulary)
      continue;
    }
    const int32_t next = seq.sampler.sample(allowed, seq.tokens.data() + seq.prompt_tokens,
                                            seq.generated);
    ++seq.generated;
    ++produced;
    const std::vector<int32_t> &stops = seq.request.stop_ids;
    if (std::find(stops.begin(), stops.end(), next) != stops.end()) {
      TokenLogprob entry;
      if (seq.request.logprobs >= 0)
        token_logprob(logits, info_.vocab, next, seq.request.logprobs, entry);
      finish(seq, "stop", true, seq.request.logprobs >= 0 ? &entry : nullptr);
      continue;
    }
    seq.tokens.push_back(next);
    std::string piece;
    seq.decoder.push(next, piece);
    if (seq.request.logprobs >= 0)
      seq.logprobs.add(logits, info_.vocab, next, seq.request.logprobs, seq.echo_bytes,
                       seq.text.size(), seq.text.size() + piece.size());
    seq.text += piece;
    if (emit_text(seq, false))
      continue;
    if (seq.request.json_format && seq.json.push(json_mask_->bytes(next)) &&
        seq.json.complete()) {
      finish(seq, "stop", true);
      continue;
    }
    if (seq.generated >= seq.request.max_tokens ||
        static_cast<int>(seq.tokens.size()) > options_.ctx_size) {
      finish(seq, "length", true);
      continue;
    }
    if (!seq.rope_long && original > 0 && static_cast<int>(seq.tokens.size()) > original) {
      // Past original_max_position: every position again with the long set (as Session).
      seq.rope_long = true;
      seq.computed = 0;
    }
  }
  for (auto &seq : running_)
    if (seq->finished)
      release(*seq);
  running_.erase(std::remove_if(running_.begin(), running_.end(),
                                [](const std::unique_ptr<Sequence> &s) { return s->finished; }),
                 running_.end());
  const double t1 = now_seconds();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++metrics_.steps;
    metrics_.generated_tokens += produced;
    metrics_.busy_seconds += t1 - t0;
    metrics_.active = static_cast<int>(running_.size());
    metrics_.free_blocks = static_cast<int>(free_blocks_.size());
    if (produced > 0)
      recent_.push_back({t1, produced});
    while (recent_.size() > 4096)
      recent_.pop_front();
  }
  for (Ended &e : ended_)
    e.stream->finish(e.reason, "", e.prompt_tokens, e.completion_tokens);
  ended_.clear();
  return true;
}

} // namespace phimoe_rt
