// runtime.h - what generated phimoe-bin code calls: context, weights, arena, KV cache, thread pool.
#ifndef PHIMOE_RT_RUNTIME_H
#define PHIMOE_RT_RUNTIME_H

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace phimoe_rt {

// Storage element types of weights (activations are always float).
struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};

inline float to_float(float x) { return x; }
inline float to_float(bf16 x) {
  uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
float f16_to_float(uint16_t bits);
inline float to_float(f16 x) { return f16_to_float(x.bits); }
// Round-to-nearest-even conversions (used by the weight packer and tests).
bf16 float_to_bf16(float x);
f16 float_to_f16(float x);

// A persistent pool of worker threads. parallel_for(n, fn) calls
// fn(begin, end, thread) on disjoint ranges covering [0, n), on the calling thread
// (thread 0) and the workers (1..size()-1), and returns when all are done. It
// allocates nothing per call. Between calls the workers (and the caller, waiting for
// them) spin for a short while before they sleep: a forward makes tens of calls a few
// hundred microseconds apart, and a wake-up from sleep costs tens of microseconds.
class ThreadPool {
public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  template <class F> void parallel_for(int64_t n, F &&fn) {
    if (n <= 0)
      return;
    if (workers_.empty() || n == 1) {
      fn(int64_t{0}, n, 0);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    run(n,
        [](void *f, int64_t b, int64_t e, int t) { (*static_cast<Fn *>(f))(b, e, t); },
        const_cast<void *>(static_cast<const void *>(&fn)));
  }

private:
  using Trampoline = void (*)(void *, int64_t, int64_t, int);
  void run(int64_t n, Trampoline call, void *fn);
  void worker(int index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::atomic<uint64_t> generation_{0}; // written under mutex_, read by spinning workers
  std::atomic<int> pending_{0};         // workers still running the current generation
  bool stop_ = false;
  int64_t n_ = 0;
  Trampoline call_ = nullptr;
  void *fn_ = nullptr;
};

// Keys (rotated) and values of every layer: [layer][position][kv_head][head_dim].
struct KVCache {
  int layers = 0, capacity = 0, kv_heads = 0, head_dim = 0;
  std::vector<float> k, v;

  void resize(int layers, int capacity, int kv_heads, int head_dim);
  size_t row() const { return static_cast<size_t>(kv_heads) * head_dim; }
  float *k_at(int layer, int pos) {
    return k.data() + (static_cast<size_t>(layer) * capacity + pos) * row();
  }
  float *v_at(int layer, int pos) {
    return v.data() + (static_cast<size_t>(layer) * capacity + pos) * row();
  }
};

// Keys (rotated) and values of many sequences in fixed-size blocks of positions:
// [layer][block][position in block][kv_head][head_dim]. Which blocks hold a sequence's
// positions says its block table (BatchRows); the server hands blocks out from a free list.
struct PagedKVCache {
  int layers = 0, blocks = 0, block_size = 0, kv_heads = 0, head_dim = 0;
  std::vector<float> k, v;

  void resize(int layers, int blocks, int block_size, int kv_heads, int head_dim) {
    this->layers = layers;
    this->blocks = blocks;
    this->block_size = block_size;
    this->kv_heads = kv_heads;
    this->head_dim = head_dim;
    const size_t floats = static_cast<size_t>(layers) * blocks * block_size * row();
    k.assign(floats, 0.0f);
    v.assign(floats, 0.0f);
  }
  size_t row() const { return static_cast<size_t>(kv_heads) * head_dim; }
  size_t offset(int layer, int block, int slot_in_block) const {
    return ((static_cast<size_t>(layer) * blocks + block) * block_size + slot_in_block) * row();
  }
  float *k_at(int layer, int block, int i) { return k.data() + offset(layer, block, i); }
  float *v_at(int layer, int block, int i) { return v.data() + offset(layer, block, i); }
};

// The rows of one forward that belong to several sequences (Context::batch). Row t
// belongs to the sequence in slot slot[t], lies at position pos[t] (the forward's
// positions) and uses the long LongRoPE set when rope_long[t] != 0. Position p of the
// sequence in slot s is kept in block block_table[s * max_blocks + p / block_size] of
// `cache` (-1: none). Attention of a row reads only its own sequence's positions, in
// the same order as with a contiguous KVCache, so a row's result does not depend on the
// other rows of the batch.
struct BatchRows {
  PagedKVCache *cache = nullptr;
  const int32_t *slot = nullptr;
  const uint8_t *rope_long = nullptr;
  const int32_t *block_table = nullptr;
  int max_blocks = 0;

  // The block of `pos` in `slot`'s sequence, or -1 when it has none.
  int block_of(int slot_index, int pos) const {
    if (pos < 0 || cache->block_size <= 0 || pos / cache->block_size >= max_blocks)
      return -1;
    const int b =
        block_table[static_cast<size_t>(slot_index) * max_blocks + pos / cache->block_size];
    return b >= 0 && b < cache->blocks ? b : -1;
  }
};

// LongRoPE parameters of a model (factor arrays of head_dim/2 floats).
struct RopeParams {
  float theta;
  int32_t original_max_position;
  float short_mscale, long_mscale;
  const float *short_factor;
  const float *long_factor;
};

// Everything one forward pass needs besides its inputs.
struct Context {
  ThreadPool *pool = nullptr;
  const uint8_t *weights = nullptr; // the data section of weights.phw
  float *arena = nullptr;           // activations, planned at compile time
  KVCache *cache = nullptr;
  // Per-thread scratch for kernels: thread t owns
  // [scratch + t * scratch_stride, scratch + (t + 1) * scratch_stride).
  // The runtime sizes it as scratch_floats() says.
  float *scratch = nullptr;
  size_t scratch_stride = 0;
  // Which LongRoPE set this forward uses: the runtime sets it from the
  // sequence length (long once it exceeds original_max_position).
  bool rope_long = false;
  // Several sequences in one forward (continuous batching): when set, rope takes
  // each row's LongRoPE set and attention its sequence and KV blocks from here, and
  // `cache` and `rope_long` are not used. Null: one sequence in `cache`.
  const BatchRows *batch = nullptr;
  // Quantized activations, for kernels with block-quantized weights (q8_0, q4_K,
  // q6_K): such a kernel quantizes its n input rows once into
  // [qbuf, qbuf + qbuf_bytes) and runs its dot products on them. Shared by all
  // threads of one kernel call; no alignment required. The runtime sizes it with
  // qbuf_bytes_for(max_tokens, widest input width of any linear or expert).
  // May be null in a model without quantized weights.
  uint8_t *qbuf = nullptr;
  size_t qbuf_bytes = 0;
  // Workspace of the MoE kernel with quantized experts: routes, the rows grouped by
  // expert, and the experts' intermediate rows (float and quantized). The runtime
  // sizes it with moe_work_bytes(max_tokens, intermediate, experts). May be null in
  // a model without quantized experts.
  uint8_t *work = nullptr;
  size_t work_bytes = 0;

  float *scratch_of(int thread) const { return scratch + thread * scratch_stride; }
};

// Floats of per-thread scratch that every kernel of a model fits in: attention
// scores over the cache capacity, and an expert's intermediate row (2 * I) plus
// router logits (E) and an output row (H).
inline size_t scratch_floats(int capacity, int hidden, int intermediate, int experts) {
  return static_cast<size_t>(capacity) + 2 * static_cast<size_t>(intermediate) +
         static_cast<size_t>(experts) + static_cast<size_t>(hidden) + 64;
}

// Bytes of one quantized activation row of k values, in any format the kernels use
// (q8_0 rows take 36 bytes per 32 values, q8_K blocks 292 per 256 and 32 more for q4_K).
inline size_t quantized_row_bytes(int k) { return static_cast<size_t>((k + 255) / 256) * 324; }

// Bytes of Context::qbuf for `rows` input rows (max_tokens) of at most widest_k values.
inline size_t qbuf_bytes_for(int rows, int widest_k) {
  return static_cast<size_t>(rows) * quantized_row_bytes(widest_k) + 64;
}

// Bytes of Context::work for a MoE over `rows` rows (max_tokens): 64-byte aligned
// regions for the routes (16 bytes a row), expert offsets (4 * (experts + 1)), two
// 12-byte entries a row, and max(rows, 2) intermediate rows of floats and quantized.
inline size_t moe_work_bytes(int rows, int intermediate, int experts) {
  auto a64 = [](size_t b) { return (b + 63) / 64 * 64; };
  const size_t r = static_cast<size_t>(rows), h = static_cast<size_t>(rows < 2 ? 2 : rows);
  return a64(16 * r) + a64(4 * (static_cast<size_t>(experts) + 1)) + a64(24 * r) +
         a64(4 * h * static_cast<size_t>(intermediate)) + a64(h * quantized_row_bytes(intermediate)) +
         64;
}

// What the generated code states about its model (phimoe_model_info).
struct ModelInfo {
  uint64_t hash;            // of the optimized IR; weights.phw must carry the same
  uint64_t pack_bytes;      // size of the weight data section
  uint64_t arena_floats;    // activation arena
  int32_t max_tokens;       // rows per forward call (prompt chunks)
  int32_t vocab, hidden, intermediate, experts, layers, kv_heads, head_dim;
  int32_t original_max_position, max_position;
};

template <class T> inline const T *weight(const Context &ctx, uint64_t offset) {
  return reinterpret_cast<const T *>(ctx.weights + offset);
}
inline float *act(const Context &ctx, uint64_t offset) { return ctx.arena + offset; }
// The last `rows` rows of an [n, width] activation.
template <int Width> inline float *last_rows(float *x, int n, int rows) {
  return x + static_cast<size_t>(n - rows) * Width;
}

} // namespace phimoe_rt

#endif // PHIMOE_RT_RUNTIME_H
