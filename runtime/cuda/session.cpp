// session.cpp - one sequence over a generated CUDA model: upload, chunked prefill, decode,
// LongRoPE switch. Host C++ on the CUDA runtime API; the kernels are in the generated code.
#include "phimoe_cuda/session.h"

#include "phimoe_cuda/model.h"
#include "phimoe_cuda/profile.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace phimoe_cuda {

void allocate_forward(const phimoe_rt::ModelInfo &info, const uint8_t *weights, Context &ctx,
                      std::vector<void *> &owned) {
  PHIMOE_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking));
  uint8_t *device_weights = device_alloc<uint8_t>(owned, info.pack_bytes);
  PHIMOE_CUDA_CHECK(
      cudaMemcpy(device_weights, weights, info.pack_bytes, cudaMemcpyHostToDevice));
  ctx.weights = device_weights;
  ctx.arena = device_alloc<float>(owned, info.arena_floats);
  ctx.layers = info.layers;
  ctx.kv_heads = info.kv_heads;
  ctx.head_dim = info.head_dim;
  ctx.routes = device_alloc<DeviceRoute>(owned, info.max_tokens);
  ctx.moe_act =
      device_alloc<float>(owned, static_cast<size_t>(info.max_tokens) * 2 * info.intermediate);
  ctx.moe_pairs = device_alloc<int32_t>(owned, static_cast<size_t>(info.max_tokens) * 2);
  ctx.moe_plan_ints = 3 * info.experts + 1;
  ctx.moe_plan = device_alloc<int32_t>(owned, ctx.moe_plan_ints);
  ctx.moe_y = device_alloc<float>(owned, static_cast<size_t>(info.max_tokens) * 2 * info.hidden);
  ctx.attn_partial_floats = attention_partial_floats(info);
  ctx.attn_partials = device_alloc<float>(owned, ctx.attn_partial_floats);
  ctx.counter_ints = counter_ints(info);
  ctx.counters = device_alloc<int>(owned, ctx.counter_ints);
  PHIMOE_CUDA_CHECK(cudaMemset(ctx.counters, 0, ctx.counter_ints * sizeof(int)));
  ctx.staged_words = staged_words(info);
  ctx.staged = device_alloc<uint32_t>(owned, ctx.staged_words);
  ctx.moe_staged_words = moe_staged_words(info);
  ctx.moe_staged = device_alloc<uint32_t>(owned, ctx.moe_staged_words);
  ctx.tc_split_capacity = tc_split_bytes(info);
  ctx.tc_split = device_alloc<uint8_t>(owned, ctx.tc_split_capacity);
}

cudaGraphExec_t capture_graph(cudaStream_t stream, const std::function<void()> &record) {
  cudaGraph_t graph = nullptr;
  PHIMOE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    record();
  } catch (...) {
    (void)cudaStreamEndCapture(stream, &graph);
    if (graph)
      (void)cudaGraphDestroy(graph);
    throw;
  }
  PHIMOE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  try {
    PHIMOE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  } catch (...) {
    (void)cudaGraphDestroy(graph);
    throw;
  }
  (void)cudaGraphDestroy(graph);
  return exec;
}

bool graphs_enabled() {
  if (profile::enabled()) // a graph's replay has no per-kernel spans (profile.h)
    return false;
  const char *graphs = std::getenv("PHIMOE_CUDA_GRAPH");
  return !(graphs && std::strcmp(graphs, "0") == 0);
}

void free_forward(Context &ctx, std::vector<void *> &owned) {
  for (void *p : owned)
    (void)cudaFree(p);
  owned.clear();
  if (ctx.stream)
    (void)cudaStreamDestroy(ctx.stream);
  ctx.stream = nullptr;
}

Session::Session(const phimoe_rt::ModelInfo &info, const uint8_t *weights, int capacity)
    : info_(info), capacity_(capacity) {
  try {
    allocate_forward(info, weights, ctx_, buffers_);
    const size_t kv = static_cast<size_t>(info.layers) * capacity * info.kv_heads * info.head_dim;
    ctx_.k_cache = device_alloc<float>(buffers_, kv);
    ctx_.v_cache = device_alloc<float>(buffers_, kv);
    ctx_.capacity = capacity;
    ids_ = device_alloc<int32_t>(buffers_, info.max_tokens);
    logits_device_ =
        device_alloc<float>(buffers_, static_cast<size_t>(info.max_tokens) * info.vocab);
    // Positions 0..capacity-1, once: a forward over [begin, end) reads positions_ + begin.
    positions_ = device_alloc<int32_t>(buffers_, capacity);
    std::vector<int32_t> positions(capacity);
    for (int i = 0; i < capacity; ++i)
      positions[i] = i;
    PHIMOE_CUDA_CHECK(cudaMemcpy(positions_, positions.data(), sizeof(int32_t) * capacity,
                                 cudaMemcpyHostToDevice));
    decode_pos_ = device_alloc<int32_t>(buffers_, 1);
  } catch (...) {
    free_forward(ctx_, buffers_);
    throw;
  }
  logits_.assign(static_cast<size_t>(info.max_tokens) * info.vocab, 0.0f);
  tokens_.reserve(capacity);
  use_graphs_ = graphs_enabled();
}

Session::~Session() {
  for (auto &entry : graphs_)
    (void)cudaGraphExecDestroy(entry.second);
  free_forward(ctx_, buffers_);
}

void Session::reset() {
  tokens_.clear();
  rope_long_ = false;
}

void Session::run(int begin, int end, bool rope_long, std::vector<float> *all_logits) {
  ctx_.rope_long = rope_long;
  for (int chunk = begin; chunk < end; chunk += info_.max_tokens) {
    const int n = std::min(info_.max_tokens, end - chunk);
    const bool last = chunk + n == end;
    const int rows = all_logits ? n : (last ? 1 : 0);
    ctx_.seq_end = chunk + n;
    PHIMOE_CUDA_CHECK(cudaMemcpyAsync(ids_, tokens_.data() + chunk, sizeof(int32_t) * n,
                                      cudaMemcpyHostToDevice, ctx_.stream));
    if (n == 1 && rows == 1 && use_graphs_ && eager_decode_done_) {
      decode_graph(chunk, rope_long);
    } else {
      phimoe_forward(ctx_, ids_, positions_ + chunk, n, rows, logits_device_);
      eager_decode_done_ = eager_decode_done_ || (n == 1 && rows == 1);
    }
    if (rows > 0) {
      PHIMOE_CUDA_CHECK(cudaMemcpyAsync(logits_.data(), logits_device_,
                                        sizeof(float) * rows * info_.vocab,
                                        cudaMemcpyDeviceToHost, ctx_.stream));
    }
    // The ids buffer is reused by the next chunk, and the logits are read now.
    PHIMOE_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    if (all_logits)
      all_logits->insert(all_logits->end(), logits_.begin(),
                         logits_.begin() + static_cast<size_t>(rows) * info_.vocab);
    if (last && rows > 1)
      std::memmove(logits_.data(), logits_.data() + static_cast<size_t>(rows - 1) * info_.vocab,
                   sizeof(float) * info_.vocab);
  }
}

void Session::decode_graph(int position, bool rope_long) {
  // attention() splits the context by ceil(seq_end / 64) alone: every seq_end up to the next
  // multiple of 64 gives the same launch, and the kernels read the position from the device.
  const int bucket = (position + 1 + 63) / 64 * 64;
  const std::pair<int, bool> key(bucket, rope_long);
  PHIMOE_CUDA_CHECK(cudaMemcpyAsync(decode_pos_, positions_ + position, sizeof(int32_t),
                                    cudaMemcpyDeviceToDevice, ctx_.stream));
  auto found = graphs_.find(key);
  if (found == graphs_.end()) {
    // The sequence mostly grows: keep a few graphs, drop the one of the shortest context.
    if (graphs_.size() >= 8) {
      (void)cudaGraphExecDestroy(graphs_.begin()->second);
      graphs_.erase(graphs_.begin());
    }
    ctx_.seq_end = bucket;
    cudaGraphExec_t exec = capture_graph(
        ctx_.stream, [&] { phimoe_forward(ctx_, ids_, decode_pos_, 1, 1, logits_device_); });
    found = graphs_.emplace(key, exec).first;
    ++graphs_captured_;
  }
  PHIMOE_CUDA_CHECK(cudaGraphLaunch(found->second, ctx_.stream));
}

const float *Session::append(const int32_t *ids, int count, std::vector<float> *all_logits) {
  if (count <= 0 || size() + count > capacity_)
    return nullptr;
  const int begin = size();
  tokens_.insert(tokens_.end(), ids, ids + count);
  const int end = size();
  const int original = info_.original_max_position;
  if (original > 0 && end > original && !rope_long_) {
    // Positions before the crossing keep the short set's logits ...
    std::vector<float> before;
    if (all_logits && begin < original) {
      run(begin, original, false, &before);
      all_logits->insert(all_logits->end(), before.begin(), before.end());
    }
    // ... and everything is recomputed with the long set, as the reference does when the
    // sequence first grows past original_max_position.
    rope_long_ = true;
    std::vector<float> recomputed;
    run(0, end, true, all_logits ? &recomputed : nullptr);
    if (all_logits) {
      const size_t from = static_cast<size_t>(std::max(begin, original)) * info_.vocab;
      all_logits->insert(all_logits->end(), recomputed.begin() + from, recomputed.end());
    }
  } else {
    run(begin, end, rope_long_, all_logits);
  }
  return logits_.data();
}

} // namespace phimoe_cuda
