// stream.cpp - what every serve engine shares (see batch.h): the stream a request reads, the
// stop-string handling of reply text, and the recent generation rate.
#include "phimoe_rt/batch.h"

#include <algorithm>
#include <chrono>

namespace phimoe_rt {

// ---- GenerationStream --------------------------------------------------------------------

bool GenerationStream::next(Chunk &chunk, int timeout_ms) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!ready_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                       [&] { return !text_.empty() || !logprobs_.empty() || done_; }))
    return false;
  chunk = Chunk();
  chunk.text.swap(text_);
  chunk.logprobs.swap(logprobs_);
  chunk.done = done_;
  chunk.finish_reason = reason_;
  chunk.error = error_;
  chunk.prompt_tokens = prompt_;
  chunk.completion_tokens = completion_;
  return true;
}

void GenerationStream::push(const std::string &text) {
  if (text.empty())
    return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    text_ += text;
  }
  ready_.notify_all();
}

void GenerationStream::push(TokenLogprob &&entry) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    logprobs_.push_back(std::move(entry));
  }
  ready_.notify_all();
}

void GenerationStream::finish(const std::string &reason, const std::string &error, int prompt,
                              int completion) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (done_)
      return;
    done_ = true;
    reason_ = reason;
    error_ = error;
    prompt_ = prompt;
    completion_ = completion;
  }
  ready_.notify_all();
}

// ---- Reply text and metrics ---------------------------------------------------------------

bool emit_reply_text(GenerationStream &stream, std::string &text, size_t &sent,
                     const std::vector<std::string> &stop_strings, bool at_end) {
  size_t longest = 0;
  for (const std::string &s : stop_strings)
    longest = std::max(longest, s.size());
  if (longest > 0) {
    size_t from = sent >= longest ? sent - longest + 1 : 0;
    size_t cut = std::string::npos;
    for (const std::string &s : stop_strings) {
      size_t at = s.empty() ? std::string::npos : text.find(s, from);
      if (at != std::string::npos)
        cut = std::min(cut, at);
    }
    if (cut != std::string::npos) {
      if (cut > sent)
        stream.push(text.substr(sent, cut - sent));
      text.resize(std::max(cut, sent));
      sent = text.size();
      return true;
    }
  }
  size_t hold = 0;
  if (!at_end)
    for (const std::string &s : stop_strings) {
      if (s.empty())
        continue;
      for (size_t k = std::min(s.size() - 1, text.size()); k > hold; --k)
        if (text.compare(text.size() - k, k, s, 0, k) == 0) {
          hold = k;
          break;
        }
    }
  size_t upto = std::max(sent, text.size() - hold);
  if (upto > sent) {
    stream.push(text.substr(sent, upto - sent));
    sent = upto;
  }
  return false;
}

void ReplyLogprobs::add(const float *logits, int vocab, int32_t id, int top, size_t base,
                        size_t begin, size_t end) {
  Pending p{TokenLogprob(), begin, end};
  token_logprob(logits, vocab, id, top, p.entry);
  p.entry.text_offset = base + begin;
  pending_.push_back(std::move(p));
}

void ReplyLogprobs::release(GenerationStream &stream, size_t sent, bool at_end) {
  while (!pending_.empty()) {
    Pending &p = pending_.front();
    if (p.end > sent && !(at_end && p.begin < sent))
      break;
    stream.push(std::move(p.entry));
    pending_.pop_front();
  }
  if (at_end)
    pending_.clear();
}

size_t echo_prompt(GenerationStream &stream, const Tokenizer &tokenizer,
                   const GenerationRequest &request, std::vector<size_t> &offsets) {
  offsets.clear();
  if (!request.echo)
    return 0;
  StreamDecoder decoder(tokenizer);
  std::string text;
  for (int32_t id : request.prompt) {
    offsets.push_back(text.size());
    decoder.push(id, text);
  }
  decoder.finish(text);
  stream.push(text);
  if (request.logprobs >= 0 && !request.prompt.empty()) {
    TokenLogprob first;
    first.id = request.prompt[0];
    first.scored = false;
    stream.push(std::move(first));
  }
  return text.size();
}

const float *request_logits(const GenerationRequest &request, const float *logits, int vocab,
                            const JsonMask *mask, const JsonPrefix &json,
                            std::vector<float> &buffer) {
  if (!request.json_format && request.logit_bias.empty())
    return logits;
  buffer.assign(logits, logits + vocab);
  for (auto [id, bias] : request.logit_bias)
    if (id >= 0 && id < vocab)
      buffer[static_cast<size_t>(id)] += bias;
  if (request.json_format && mask->apply(json, buffer.data()) == 0)
    return nullptr;
  return buffer.data();
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool QueuedEngine::accepts(GenerationRequest &request, Refusal &why) const {
  why = Refusal::None;
  if (request.prompt.empty() || static_cast<int>(request.prompt.size()) > options_.ctx_size) {
    why = Refusal::TooLong;
    return false;
  }
  if (request.sampling.penalty_last_n <= 0)
    request.sampling.penalty_last_n = options_.ctx_size;
  return true;
}

bool QueuedEngine::admit_locked(size_t waiting, Refusal &why) {
  if (stopping_) {
    why = Refusal::Stopped;
    return false;
  }
  if (static_cast<int>(waiting) >= options_.queue_size) {
    ++metrics_.rejected;
    why = Refusal::QueueFull;
    return false;
  }
  ++metrics_.requests;
  return true;
}

void QueuedEngine::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

BatchMetrics QueuedEngine::metrics() {
  std::lock_guard<std::mutex> lock(mutex_);
  BatchMetrics m = metrics_;
  m.tokens_per_second = recent_tokens_per_second(recent_, now_seconds());
  return m;
}

double recent_tokens_per_second(std::deque<std::pair<double, int>> &recent, double now) {
  while (!recent.empty() && recent.front().first < now - 10.0)
    recent.pop_front();
  int tokens = 0;
  for (auto &entry : recent)
    tokens += entry.second;
  double span = recent.empty() ? 0.0 : std::max(1.0, now - recent.front().first);
  return span > 0 ? tokens / span : 0.0;
}

} // namespace phimoe_rt
