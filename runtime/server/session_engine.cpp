// session_engine.cpp - `phimoe-bin serve` one request at a time over a ModelSession (see
// batch.h): what a CUDA build serves with under --parallel 1 (its session decodes through graphs).
#include "phimoe_rt/batch.h"

#include <algorithm>
#include <chrono>
#include <exception>

namespace phimoe_rt {


SessionEngine::SessionEngine(std::unique_ptr<ModelSession> session, int vocab,
                             const Tokenizer &tokenizer, const BatchOptions &options)
    : QueuedEngine(options), session_(std::move(session)), vocab_(vocab), tokenizer_(tokenizer) {
  options_.parallel = 1;
  options_.ctx_size = session_->capacity();
  options_.kv_blocks = 0;
  thread_ = std::thread([this] { loop(); });
}

SessionEngine::~SessionEngine() { stop(); }

std::shared_ptr<GenerationStream> SessionEngine::submit(GenerationRequest request,
                                                        Refusal &why) {
  if (!accepts(request, why))
    return nullptr;
  auto stream = std::make_shared<GenerationStream>();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!admit_locked(waiting_.size(), why))
      return nullptr;
    waiting_.push_back({std::move(request), stream});
    metrics_.queued = static_cast<int>(waiting_.size());
  }
  wake_.notify_all();
  return stream;
}

void SessionEngine::loop() {
  while (true) {
    Pending pending;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !waiting_.empty(); });
      if (stopping_) {
        for (Pending &p : waiting_)
          p.stream->finish("", "the server is shutting down",
                           static_cast<int>(p.request.prompt.size()), 0);
        waiting_.clear();
        metrics_.queued = 0;
        return;
      }
      pending = std::move(waiting_.front());
      waiting_.pop_front();
      metrics_.queued = static_cast<int>(waiting_.size());
      metrics_.active = 1;
      metrics_.prompt_tokens += pending.request.prompt.size();
    }
    serve(pending);
    std::lock_guard<std::mutex> lock(mutex_);
    metrics_.active = 0;
  }
}

void SessionEngine::end(GenerationStream &stream, const std::string &reason,
                        const std::string &error, int prompt_tokens, int generated) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    metrics_.active = 0;
  }
  stream.finish(reason, error, prompt_tokens, generated);
}

// Runs one request to its end: prompt (after the cached common prefix), then a token per
// step, streaming text, until a stop token or string, max_tokens, the context, cancellation
// or stop().
void SessionEngine::serve(Pending &pending) {
  const GenerationRequest &request = pending.request;
  GenerationStream &stream = *pending.stream;
  if (stream.cancelled())
    return;
  const std::vector<int32_t> &prompt = request.prompt;
  const int prompt_tokens = static_cast<int>(prompt.size());
  int generated = 0;
  auto record = [&](double since, int produced) {
    const double now = now_seconds();
    std::lock_guard<std::mutex> lock(mutex_);
    ++metrics_.steps;
    metrics_.generated_tokens += produced;
    metrics_.busy_seconds += now - since;
    if (produced > 0)
      recent_.push_back({now, produced});
    while (recent_.size() > 4096)
      recent_.pop_front();
  };
  try {
    std::vector<size_t> echo_offsets;
    const size_t echo_bytes = echo_prompt(stream, tokenizer_, request, echo_offsets);
    const bool prompt_entries = request.echo && request.logprobs >= 0;
    // Keep the cache of the longest common prefix with what the session holds (none when
    // every prompt position's logits are wanted).
    const std::vector<int32_t> &held = session_->tokens();
    size_t common = 0;
    while (!prompt_entries && common < held.size() && common < prompt.size() &&
           held[common] == prompt[common])
      ++common;
    if (common == prompt.size())
      --common; // the last prompt token runs to give the next logits
    const int kept = session_->truncate(static_cast<int>(common));
    double t0 = now_seconds();
    const float *logits = nullptr;
    if (prompt_entries) {
      // From position 0 (kept is 0), in pieces, so that the logits of a long prompt are not
      // all held at once.
      std::vector<float> rows;
      for (int begin = kept; begin < prompt_tokens; begin += 256) {
        const int count = std::min(prompt_tokens - begin, 256);
        rows.clear();
        logits = session_->append(prompt.data() + begin, count, &rows);
        if (!logits)
          break;
        for (int r = 0; r < count && begin + r + 1 < prompt_tokens; ++r) {
          TokenLogprob entry;
          token_logprob(rows.data() + static_cast<size_t>(r) * vocab_, vocab_,
                        prompt[begin + r + 1], request.logprobs, entry);
          entry.text_offset = echo_offsets[begin + r + 1];
          stream.push(std::move(entry));
        }
      }
    } else {
      logits = session_->append(prompt.data() + kept, prompt_tokens - kept);
    }
    if (!logits) {
      end(stream, "", "the prompt does not fit the context", prompt_tokens, 0);
      return;
    }
    Sampler sampler(request.sampling, vocab_);
    StreamDecoder decoder(tokenizer_);
    // the reply reads on from the prompt, unless it stands alone
    decoder.prime(prompt.data(), request.reply_alone ? 0 : prompt.size());
    std::vector<int32_t> reply;
    std::string text, piece;
    size_t sent = 0;
    ReplyLogprobs logprobs;
    auto finish = [&](const std::string &reason, bool flush,
                      TokenLogprob *stop_entry = nullptr) {
      if (flush) {
        piece.clear();
        decoder.finish(piece);
        text += piece;
        if (text.size() > sent)
          stream.push(text.substr(sent));
        sent = text.size();
      }
      logprobs.release(stream, sent, true);
      if (stop_entry) { // a stop token's entry comes last, at the end of the text
        stop_entry->text_offset = echo_bytes + text.size();
        stream.push(std::move(*stop_entry));
      }
      end(stream, reason, "", prompt_tokens, generated);
    };
    JsonPrefix json = request.json_format ? JsonPrefix(*request.json_format) : JsonPrefix();
    std::vector<float> masked;
    if (request.json_format && !json_mask_)
      json_mask_ = std::make_unique<JsonMask>(tokenizer_, vocab_);
    while (true) {
      const float *allowed =
          request_logits(request, logits, vocab_, json_mask_.get(), json, masked);
      if (!allowed)
        return finish("stop", true); // nothing continues the object
      const int32_t next =
          sampler.sample(allowed, reply.data(), static_cast<int>(reply.size()));
      ++generated;
      record(t0, 1);
      bool stopping;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping = stopping_;
      }
      if (stopping)
        return end(stream, "", "the server is shutting down", prompt_tokens, generated);
      if (stream.cancelled())
        return;
      if (std::find(request.stop_ids.begin(), request.stop_ids.end(), next) !=
          request.stop_ids.end()) {
        TokenLogprob entry;
        if (request.logprobs >= 0)
          token_logprob(logits, vocab_, next, request.logprobs, entry);
        return finish("stop", true, request.logprobs >= 0 ? &entry : nullptr);
      }
      reply.push_back(next);
      piece.clear();
      decoder.push(next, piece);
      if (request.logprobs >= 0)
        logprobs.add(logits, vocab_, next, request.logprobs, echo_bytes, text.size(),
                     text.size() + piece.size());
      text += piece;
      if (emit_reply_text(stream, text, sent, request.stop_strings, false))
        return finish("stop", false);
      logprobs.release(stream, sent, false);
      if (request.json_format && json.push(json_mask_->bytes(next)) && json.complete())
        return finish("stop", true);
      if (generated >= request.max_tokens || prompt_tokens + generated > options_.ctx_size)
        return finish("length", true);
      t0 = now_seconds();
      logits = session_->append(&next, 1);
      if (!logits)
        return finish("length", true);
    }
  } catch (const std::exception &e) {
    // The session's device failed (e.g. a CUDA error): this request ends with the error.
    session_->reset();
    end(stream, "", e.what(), prompt_tokens, generated);
  }
}

} // namespace phimoe_rt
