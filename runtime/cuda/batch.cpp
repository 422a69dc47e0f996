// batch.cpp - serve's batched forward on the GPU (see phimoe_cuda/batch.h).
#include "phimoe_cuda/batch.h"

#include "phimoe_cuda/model.h"
#include "phimoe_cuda/session.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace phimoe_cuda {

BatchBackend::BatchBackend(const phimoe_rt::ModelInfo &info, const uint8_t *weights)
    : info_(info), host_weights_(weights), use_graphs_(graphs_enabled()) {}

BatchBackend::~BatchBackend() {
  for (auto &entry : graphs_)
    (void)cudaGraphExecDestroy(entry.second);
  free_forward(ctx_, buffers_);
}

int BatchBackend::block_shift(int block_size) {
  if (block_size <= 0 || (block_size & (block_size - 1)) != 0)
    throw std::invalid_argument("serve --block-size " + std::to_string(block_size) +
                                ": a CUDA build needs a power of two (e.g. 16)");
  int shift = 0;
  while ((1 << shift) < block_size)
    ++shift;
  return shift;
}

void BatchBackend::allocate(const phimoe_rt::BatchLayout &layout) {
  const int shift = block_shift(layout.block_size);
  const long long positions = static_cast<long long>(layout.blocks) * layout.block_size;
  if (positions > (1LL << 30))
    throw std::invalid_argument("serve: a KV cache of " + std::to_string(positions) +
                                " positions per layer is more than a CUDA build addresses");
  layout_ = layout;
  allocate_forward(info_, host_weights_, ctx_, buffers_);
  const size_t kv = static_cast<size_t>(info_.layers) * positions * info_.kv_heads * info_.head_dim;
  ctx_.k_cache = device_alloc<float>(buffers_, kv);
  ctx_.v_cache = device_alloc<float>(buffers_, kv);
  ctx_.capacity = static_cast<int>(positions);
  ids_ = device_alloc<int32_t>(buffers_, info_.max_tokens);
  positions_ = device_alloc<int32_t>(buffers_, info_.max_tokens);
  row_slot_ = device_alloc<int32_t>(buffers_, info_.max_tokens);
  row_long_ = device_alloc<uint8_t>(buffers_, info_.max_tokens);
  table_ = device_alloc<int32_t>(buffers_, static_cast<size_t>(layout.slots) * layout.max_blocks);
  logits_ = device_alloc<float>(buffers_, static_cast<size_t>(info_.max_tokens) * info_.vocab);
  ctx_.pages.block_table = table_;
  ctx_.pages.row_slot = row_slot_;
  ctx_.pages.row_long = row_long_;
  ctx_.pages.max_blocks = layout.max_blocks;
  ctx_.pages.block_shift = shift;
}

void BatchBackend::forward(const int32_t *ids, const int32_t *positions, const int32_t *row_slot,
                           const uint8_t *row_long, int n, int logit_rows,
                           const int32_t *block_table, float *logits) {
  if (n <= 0)
    return;
  if (n > info_.max_tokens || logit_rows < 0 || logit_rows > n)
    throw std::invalid_argument("BatchBackend::forward: " + std::to_string(n) + " rows, " +
                                std::to_string(logit_rows) + " with logits (a phimoe-bin bug)");
  const cudaStream_t stream = ctx_.stream;
  PHIMOE_CUDA_CHECK(
      cudaMemcpyAsync(ids_, ids, sizeof(int32_t) * n, cudaMemcpyHostToDevice, stream));
  PHIMOE_CUDA_CHECK(cudaMemcpyAsync(positions_, positions, sizeof(int32_t) * n,
                                    cudaMemcpyHostToDevice, stream));
  PHIMOE_CUDA_CHECK(cudaMemcpyAsync(row_slot_, row_slot, sizeof(int32_t) * n,
                                    cudaMemcpyHostToDevice, stream));
  PHIMOE_CUDA_CHECK(
      cudaMemcpyAsync(row_long_, row_long, n, cudaMemcpyHostToDevice, stream));
  PHIMOE_CUDA_CHECK(cudaMemcpyAsync(
      table_, block_table, sizeof(int32_t) * layout_.slots * layout_.max_blocks,
      cudaMemcpyHostToDevice, stream));
  // Attention splits each row's context by the longest of the step.
  ctx_.seq_end = *std::max_element(positions, positions + n) + 1;
  if (use_graphs_ && logit_rows == n) {
    ctx_.pages.run_count = 0; // host data: a graph would keep them
    // Every seq_end up to the next multiple of 64 gives the same launches (see Session).
    const std::pair<int, int> key(n, (ctx_.seq_end + 63) / 64 * 64);
    auto found = graphs_.find(key);
    if (found == graphs_.end() && eager_.count(key)) {
      if (graphs_.size() >= 32) { // drop the graph of the fewest rows and shortest context
        (void)cudaGraphExecDestroy(graphs_.begin()->second);
        graphs_.erase(graphs_.begin());
      }
      ctx_.seq_end = key.second;
      const cudaGraphExec_t exec = capture_graph(
          stream, [&] { phimoe_forward(ctx_, ids_, positions_, n, n, logits_); });
      found = graphs_.emplace(key, exec).first;
      ++graphs_captured_;
    }
    if (found != graphs_.end()) {
      PHIMOE_CUDA_CHECK(cudaGraphLaunch(found->second, stream));
      ++graph_steps_;
    } else {
      // The first step of its kind runs eagerly (kernels' one-time attributes are set then).
      phimoe_forward(ctx_, ids_, positions_, n, logit_rows, logits_);
      eager_.insert(key);
    }
  } else {
    // Runs of rows that are consecutive positions of one sequence (prompt chunks): attention
    // takes tensor cores for the long ones.
    find_runs(row_slot, positions, n, runs_);
    ctx_.pages.runs = runs_.data();
    ctx_.pages.run_count = static_cast<int>(runs_.size() / 2);
    phimoe_forward(ctx_, ids_, positions_, n, logit_rows, logits_);
  }
  if (logit_rows > 0)
    PHIMOE_CUDA_CHECK(cudaMemcpyAsync(logits, logits_,
                                      sizeof(float) * logit_rows * info_.vocab,
                                      cudaMemcpyDeviceToHost, stream));
  // The host arrays are the engine's, reused next step; the logits are read now.
  PHIMOE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

} // namespace phimoe_cuda
