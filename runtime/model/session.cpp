// session.cpp - one sequence over a generated model: chunked prefill, decode, LongRoPE switch.
#include "phimoe_rt/session.h"

#include "phimoe_rt/model.h"

#include <algorithm>
#include <cstring>

namespace phimoe_rt {

Session::Session(const ModelInfo &info, const uint8_t *weights, int threads, int capacity)
    : info_(info), capacity_(capacity), pool_(threads) {
  cache_.resize(info.layers, capacity, info.kv_heads, info.head_dim);
  allocate_kernel_buffers(info, capacity, pool_.size(), arena_, scratch_, ctx_);
  logits_.assign(static_cast<size_t>(info.max_tokens) * info.vocab, 0.0f);
  tokens_.reserve(capacity);
  positions_.resize(capacity);
  for (int i = 0; i < capacity; ++i)
    positions_[i] = i;
  ctx_.pool = &pool_;
  ctx_.weights = weights;
  ctx_.cache = &cache_;
}

void allocate_kernel_buffers(const ModelInfo &info, int capacity, int threads,
                             std::vector<float> &arena, std::vector<float> &scratch,
                             Context &ctx) {
  arena.assign(info.arena_floats, 0.0f);
  size_t stride = scratch_floats(capacity, info.hidden, info.intermediate, info.experts);
  // After the per-thread scratch: Context::qbuf and Context::work of the kernels with
  // quantized weights. The widest input of a linear is hidden, intermediate or the attention
  // output (heads * head_dim, which ModelInfo lacks: hidden in every supported model).
  int widest = std::max({info.hidden, info.intermediate, info.kv_heads * info.head_dim});
  size_t qbuf_bytes = qbuf_bytes_for(info.max_tokens, widest);
  size_t work_bytes = moe_work_bytes(info.max_tokens, info.intermediate, info.experts);
  size_t qbuf_floats = (qbuf_bytes + sizeof(float) - 1) / sizeof(float);
  size_t work_floats = (work_bytes + sizeof(float) - 1) / sizeof(float);
  size_t per_thread = stride * static_cast<size_t>(threads);
  scratch.assign(per_thread + qbuf_floats + work_floats, 0.0f);
  ctx.arena = arena.data();
  ctx.scratch = scratch.data();
  ctx.scratch_stride = stride;
  ctx.qbuf = reinterpret_cast<uint8_t *>(scratch.data() + per_thread);
  ctx.qbuf_bytes = qbuf_bytes;
  ctx.work = reinterpret_cast<uint8_t *>(scratch.data() + per_thread + qbuf_floats);
  ctx.work_bytes = work_bytes;
}

void Session::reset() {
  tokens_.clear();
  rope_long_ = false;
}

int Session::truncate(int n) {
  const int keep = truncated_length(size(), n, rope_long_, info_.original_max_position);
  if (keep < 0) {
    reset();
    return 0;
  }
  tokens_.resize(keep);
  return keep;
}

void Session::run(int begin, int end, bool rope_long, std::vector<float> *all_logits) {
  ctx_.rope_long = rope_long;
  for (int chunk = begin; chunk < end; chunk += info_.max_tokens) {
    int n = std::min(info_.max_tokens, end - chunk);
    bool last = chunk + n == end;
    int rows = all_logits ? n : (last ? 1 : 0);
    phimoe_forward(ctx_, tokens_.data() + chunk, positions_.data() + chunk, n, rows,
                   logits_.data());
    if (all_logits)
      all_logits->insert(all_logits->end(), logits_.begin(),
                         logits_.begin() + static_cast<size_t>(rows) * info_.vocab);
    if (last && rows > 1)
      std::memmove(logits_.data(), logits_.data() + static_cast<size_t>(rows - 1) * info_.vocab,
                   sizeof(float) * info_.vocab);
  }
}

const float *Session::append(const int32_t *ids, int count, std::vector<float> *all_logits) {
  if (count <= 0 || size() + count > capacity_)
    return nullptr;
  int begin = size();
  tokens_.insert(tokens_.end(), ids, ids + count);
  int end = size();
  int original = info_.original_max_position;
  bool long_now = original > 0 && end > original;
  if (long_now && !rope_long_) {
    // Positions before the crossing keep the logits of the short set (a fresh
    // forward over tokens[0..t] with t + 1 <= original uses it) ...
    std::vector<float> before;
    if (all_logits && begin < original) {
      run(begin, original, false, &before);
      all_logits->insert(all_logits->end(), before.begin(), before.end());
    }
    // ... and everything is recomputed with the long set, as the reference
    // does when the sequence first grows past original_max_position.
    rope_long_ = true;
    std::vector<float> recomputed;
    run(0, end, true, all_logits ? &recomputed : nullptr);
    if (all_logits) {
      size_t from = static_cast<size_t>(std::max(begin, original)) * info_.vocab;
      all_logits->insert(all_logits->end(), recomputed.begin() + from, recomputed.end());
    }
  } else {
    run(begin, end, rope_long_, all_logits);
  }
  return logits_.data();
}

} // namespace phimoe_rt
