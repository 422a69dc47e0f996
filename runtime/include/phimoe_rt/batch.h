// batch.h - the engines behind `phimoe-bin serve`: continuous batching, where many sequences
// share each forward over a paged KV cache (BatchEngine, CPU and CUDA builds), and one sequence
// at a time over a ModelSession (SessionEngine: CUDA builds with --parallel 1), behind one
// interface (Engine).
//
// A BatchEngine owns one scheduler thread. Each step it admits waiting requests while KV
// blocks and sequence slots are free, gathers the rows every running sequence needs (one
// token of each decoding sequence, prompt chunks of the others, up to max_tokens rows in
// all), runs ONE forward over them through its BatchBackend (the CPU's phimoe_forward with
// Context::batch saying which rows belong to which sequence, or a CUDA build's), samples each
// sequence's next token and hands its text to the request's stream. On the CPU, row results
// do not depend on the other rows of a batch (see BatchRows), so a request's greedy output is
// the same alone or in a batch. (On a GPU, a row's rounding may differ with the kernels that
// the batch's row count selects: GEMV up to 8 rows, tensor-core GEMM beyond.)
#ifndef PHIMOE_RT_BATCH_H
#define PHIMOE_RT_BATCH_H

#include "phimoe_rt/json_mode.h"
#include "phimoe_rt/model_session.h"
#include "phimoe_rt/runtime.h"
#include "phimoe_rt/sampler.h"
#include "phimoe_rt/tokenizer.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace phimoe_rt {

struct GenerationRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 16;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;        // tokens that end the reply (not shown)
  std::vector<std::string> stop_strings; // texts that end the reply (not shown)
  int logprobs = -1; // -1: none; else each reply token's log-probability (TokenLogprob) with
                     // this many most likely alternatives
  // The prompt first (completions' echo): its text goes to the stream before the reply's, and
  // with logprobs >= 0 an entry for each of its tokens too (the first unscored), the logits of
  // each position as a fresh forward over the tokens up to it gives them (LongRoPE's set by
  // its length). Reply entries' offsets then count from the start of the prompt's text.
  bool echo = false;
  // A structured reply (json_mode.h: JSON mode or a JSON schema) when set: each token keeps the
  // reply a prefix of one value of this grammar, and the reply ends ("stop") when it closes.
  std::shared_ptr<const JsonGrammar> json_format;
  // Added to the logits of these tokens before sampling (OpenAI's logit_bias).
  std::vector<std::pair<int32_t, float>> logit_bias;
  // The reply's text is decoded from its tokens alone, not read on from the prompt's
  // (ChatFormat::reply_stands_alone: a chat reply after Mistral's [/INST]).
  bool reply_alone = false;
};

// What a request receives: text as it forms, then the end. Written by the scheduler,
// read by the request's HTTP handler.
class GenerationStream {
public:
  struct Chunk {
    std::string text;
    std::vector<TokenLogprob> logprobs; // of the reply's tokens, in order (when asked)
    bool done = false;
    std::string finish_reason; // "stop" or "length" (when done without error)
    std::string error;         // when done because of an error (e.g. the server stops)
    int prompt_tokens = 0, completion_tokens = 0;
  };
  // Waits (at most timeout_ms) for text, log-probabilities or the end; returns false on
  // timeout. What it takes is removed from the stream.
  bool next(Chunk &chunk, int timeout_ms);
  // The client went away: the scheduler drops the sequence and frees its blocks at its
  // next step.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

private:
  friend class BatchEngine;
  friend class SessionEngine;
  friend bool emit_reply_text(GenerationStream &, std::string &, size_t &,
                              const std::vector<std::string> &, bool);
  friend class ReplyLogprobs;
  friend size_t echo_prompt(GenerationStream &, const Tokenizer &, const GenerationRequest &,
                            std::vector<size_t> &);
  void push(const std::string &text);
  void push(TokenLogprob &&entry);
  void finish(const std::string &reason, const std::string &error, int prompt, int completion);

  std::mutex mutex_;
  std::condition_variable ready_;
  std::string text_;
  std::vector<TokenLogprob> logprobs_;
  bool done_ = false;
  std::string reason_, error_;
  int prompt_ = 0, completion_ = 0;
  std::atomic<bool> cancelled_{false};
};

struct BatchOptions {
  int parallel = 4;    // sequences decoding together
  int ctx_size = 4096; // positions per sequence
  int queue_size = 64; // waiting requests beyond which submit refuses
  int threads = 1;     // compute threads of the forward
  int block_size = 16; // positions per KV block
  int kv_blocks = 0;   // blocks in the pool (0: parallel * ctx_size / block_size)
  int step_delay_ms = 0; // a pause after each step: emulates a slower model (tests)
};

struct BatchMetrics {
  uint64_t requests = 0, prompt_tokens = 0, generated_tokens = 0, steps = 0, rejected = 0;
  uint64_t preempted = 0;        // sequences sent back to the queue for lack of KV blocks
  double busy_seconds = 0;      // time spent in forward passes and sampling
  double tokens_per_second = 0; // generated tokens per second over the last few seconds
  int queued = 0, active = 0, free_blocks = 0, total_blocks = 0;
};

// What the HTTP API (server/http.cpp) hands requests to.
class Engine {
public:
  virtual ~Engine() = default;
  enum class Refusal { None, QueueFull, TooLong, Stopped };
  // Queues a request; null (and `why`) when the queue is full, the prompt does not fit a
  // sequence's context, or the engine is stopping.
  virtual std::shared_ptr<GenerationStream> submit(GenerationRequest request,
                                                   Refusal &why) = 0;
  // Ends every request (with an error) and the scheduler thread.
  virtual void stop() = 0;
  virtual BatchMetrics metrics() = 0;
  virtual const BatchOptions &options() const = 0;
};

// Hands `stream` the reply `text` past `sent` bytes, holding back what may still become one of
// `stop_strings` (unless at_end). Returns true when a stop string appeared: `text` is cut there
// and the stream got everything before it.
bool emit_reply_text(GenerationStream &stream, std::string &text, size_t &sent,
                     const std::vector<std::string> &stop_strings, bool at_end);

// The log-probabilities of a reply's tokens on their way to its stream, in step with the text:
// a token's entry goes out once the stream has all of the token's text, and a stop string that
// cuts the reply takes the entries of the tokens that begin at or after the cut with it.
class ReplyLogprobs {
public:
  // The entry of the next token, `id` under `logits` with `top` alternatives, whose text is
  // reply bytes [begin, end) (its text_offset counts from `base`: the echoed prompt's length).
  void add(const float *logits, int vocab, int32_t id, int top, size_t base, size_t begin,
           size_t end);
  // Hands `stream` the entries whose text lies within the first `sent` bytes of the reply;
  // with `at_end` (the reply is over and `sent` is its length), also those that begin before.
  void release(GenerationStream &stream, size_t sent, bool at_end);

private:
  struct Pending {
    TokenLogprob entry;
    size_t begin, end; // its text in the reply
  };
  std::deque<Pending> pending_;
};

// With request.echo: hands `stream` the prompt's text (what a stream decoder shows of it) and,
// where log-probabilities are asked for, the unscored entry of its first token. Returns the
// text's length; `offsets` gets where each prompt token's text begins in it.
size_t echo_prompt(GenerationStream &stream, const Tokenizer &tokenizer,
                   const GenerationRequest &request, std::vector<size_t> &offsets);

// The logits `request` samples from: the model's `logits` plus its logit_bias, less the tokens
// its json_format forbids after `json` (`mask`: the engine's, made by the first such request).
// Returns `logits` itself when the request changes nothing, else `buffer`'s data; null when
// JSON mode leaves no token.
const float *request_logits(const GenerationRequest &request, const float *logits, int vocab,
                            const JsonMask *mask, const JsonPrefix &json,
                            std::vector<float> &buffer);

// Generated tokens per second over the last 10 seconds of `recent` (time, tokens) entries,
// dropping older ones.
double recent_tokens_per_second(std::deque<std::pair<double, int>> &recent, double now);

// Seconds on a steady clock.
double now_seconds();

// What the engines share: their options, the queue's lock, the scheduler thread, the stop
// flag and the metrics, and submit's checks.
class QueuedEngine : public Engine {
public:
  // Ends the scheduler thread (its loop finishes what is queued with an error).
  void stop() override;
  BatchMetrics metrics() override;
  const BatchOptions &options() const override { return options_; }

protected:
  explicit QueuedEngine(const BatchOptions &options) : options_(options) {}
  // Whether `request` fits a sequence's context (else why = TooLong); gives it the default
  // repetition-penalty window (the context).
  bool accepts(GenerationRequest &request, Refusal &why) const;
  // With mutex_ held: whether a request may join `waiting` queued ones (else why = Stopped
  // or QueueFull, the latter counted); counts it as a request.
  bool admit_locked(size_t waiting, Refusal &why);

  BatchOptions options_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  BatchMetrics metrics_;
  std::deque<std::pair<double, int>> recent_; // (time, tokens) of recent steps
  std::thread thread_;
};

// The paged KV cache that a BatchEngine hands out: `slots` sequences at once, `blocks` blocks
// of `block_size` positions in all, at most `max_blocks` (ctx_size positions) a sequence.
struct BatchLayout {
  int slots = 0, blocks = 0, block_size = 0, max_blocks = 0, ctx_size = 0;
  int threads = 1; // BatchOptions::threads
};

// The forward that a BatchEngine runs each step, over the rows of several sequences (the
// semantics of Context::batch, see BatchRows): the CPU's phimoe_forward over a PagedKVCache
// (cpu_batch_backend), or a device's (a CUDA build's phimoe_cuda::BatchBackend).
class BatchBackend {
public:
  virtual ~BatchBackend() = default;
  // Sizes the cache and the buffers of the forward; called once, before any forward.
  // Throws std::exception when it cannot (e.g. device memory).
  virtual void allocate(const BatchLayout &layout) = 0;
  // Row t of [0, n) runs token ids[t] at position positions[t] of the sequence in slot
  // row_slot[t], with the long LongRoPE set where row_long[t] != 0; that sequence keeps
  // position p in block block_table[slot * max_blocks + p / block_size] ([slots][max_blocks],
  // -1: none). The logits of the last logit_rows rows go to `logits` ([logit_rows][vocab],
  // host memory). Throws std::exception on a device error.
  virtual void forward(const int32_t *ids, const int32_t *positions, const int32_t *row_slot,
                       const uint8_t *row_long, int n, int logit_rows,
                       const int32_t *block_table, float *logits) = 0;
};

// The CPU's backend: phimoe_forward (the generated model, or a test's) with `threads` threads.
std::unique_ptr<BatchBackend> cpu_batch_backend(const ModelInfo &info, const uint8_t *weights);

class BatchEngine final : public QueuedEngine {
public:
  // Over the CPU's forward (cpu_batch_backend).
  BatchEngine(const ModelInfo &info, const uint8_t *weights, const Tokenizer &tokenizer,
              const BatchOptions &options);
  // Over `backend`. A forward that throws ends every running request with its message; the
  // engine goes on with the queue.
  BatchEngine(const ModelInfo &info, std::unique_ptr<BatchBackend> backend,
              const Tokenizer &tokenizer, const BatchOptions &options);
  ~BatchEngine() override;
  BatchEngine(const BatchEngine &) = delete;
  BatchEngine &operator=(const BatchEngine &) = delete;

  std::shared_ptr<GenerationStream> submit(GenerationRequest request, Refusal &why) override;

private:
  struct Sequence;
  void loop();
  bool step(); // false when there was nothing to do
  void release(Sequence &seq);
  bool grow(Sequence &seq, int positions);
  void finish(Sequence &seq, const std::string &reason, bool flush,
              TokenLogprob *stop_entry = nullptr);
  bool emit_text(Sequence &seq, bool at_end);

  // Ends every running sequence with `error` (a forward threw) and frees its blocks.
  void fail_running(const std::string &error);

  const ModelInfo &info_;
  const Tokenizer &tokenizer_;
  std::unique_ptr<BatchBackend> backend_;
  std::unique_ptr<JsonMask> json_mask_; // made by the first structured request
  int max_blocks_ = 0; // per sequence
  std::vector<float> logits_;
  std::vector<int32_t> block_table_, free_blocks_, free_slots_;
  std::vector<int32_t> ids_, positions_, row_slot_;
  std::vector<uint8_t> row_long_;

  struct Ended {
    std::shared_ptr<GenerationStream> stream;
    std::string reason;
    int prompt_tokens, completion_tokens;
  };
  std::vector<Ended> ended_; // streams to end once this step's metrics are in
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
};

// Serves requests one at a time, in order, over one ModelSession (a CUDA build's with
// --parallel 1: its decode runs through CUDA graphs): options.parallel is 1 and a request waits
// for the one before it.
// The context is the session's capacity.
// The KV cache of the longest common prefix with the previous request is kept (a chat's
// next turn runs only its new tokens). Exceptions of the session (a CUDA error) end the
// request with that error; the engine goes on with the next.
class SessionEngine final : public QueuedEngine {
public:
  SessionEngine(std::unique_ptr<ModelSession> session, int vocab, const Tokenizer &tokenizer,
                const BatchOptions &options);
  ~SessionEngine() override;
  SessionEngine(const SessionEngine &) = delete;
  SessionEngine &operator=(const SessionEngine &) = delete;

  std::shared_ptr<GenerationStream> submit(GenerationRequest request, Refusal &why) override;

private:
  struct Pending {
    GenerationRequest request;
    std::shared_ptr<GenerationStream> stream;
  };
  void loop();
  void serve(Pending &pending);
  // Ends a request's stream, after the metrics stop counting it as active (a client that has
  // its last chunk sees an idle engine).
  void end(GenerationStream &stream, const std::string &reason, const std::string &error,
           int prompt_tokens, int generated);

  std::unique_ptr<ModelSession> session_;
  int vocab_;
  const Tokenizer &tokenizer_;
  std::unique_ptr<JsonMask> json_mask_; // made by the first structured request
  std::deque<Pending> waiting_;
};

} // namespace phimoe_rt

#endif // PHIMOE_RT_BATCH_H
