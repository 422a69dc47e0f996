// cpu_batch.cpp - the CPU's BatchBackend: the generated phimoe_forward over a PagedKVCache in
// host memory (Context::batch), and the BatchEngine of a CPU build's serve.
#include "phimoe_rt/batch.h"

#include "phimoe_rt/model.h"
#include "phimoe_rt/session.h"

namespace phimoe_rt {

namespace {

// phimoe_forward over a PagedKVCache in host memory (Context::batch).
class CpuBatchBackend final : public BatchBackend {
public:
  CpuBatchBackend(const ModelInfo &info, const uint8_t *weights) : info_(info), weights_(weights) {}

  void allocate(const BatchLayout &layout) override {
    pool_ = std::make_unique<ThreadPool>(layout.threads);
    cache_.resize(info_.layers, layout.blocks, layout.block_size, info_.kv_heads,
                  info_.head_dim);
    // As Session: per-thread scratch (attention over ctx_size positions), then the
    // quantized kernels' qbuf and MoE workspace.
    allocate_kernel_buffers(info_, layout.ctx_size, pool_->size(), arena_, scratch_, ctx_);
    rows_.cache = &cache_;
    rows_.max_blocks = layout.max_blocks;
    ctx_.pool = pool_.get();
    ctx_.weights = weights_;
    ctx_.batch = &rows_;
  }

  void forward(const int32_t *ids, const int32_t *positions, const int32_t *row_slot,
               const uint8_t *row_long, int n, int logit_rows, const int32_t *block_table,
               float *logits) override {
    rows_.slot = row_slot;
    rows_.rope_long = row_long;
    rows_.block_table = block_table;
    phimoe_forward(ctx_, ids, positions, n, logit_rows, logits);
  }

private:
  const ModelInfo &info_;
  const uint8_t *weights_;
  std::unique_ptr<ThreadPool> pool_;
  PagedKVCache cache_;
  std::vector<float> arena_, scratch_;
  BatchRows rows_;
  Context ctx_;
};

} // namespace

std::unique_ptr<BatchBackend> cpu_batch_backend(const ModelInfo &info, const uint8_t *weights) {
  return std::make_unique<CpuBatchBackend>(info, weights);
}

BatchEngine::BatchEngine(const ModelInfo &info, const uint8_t *weights,
                         const Tokenizer &tokenizer, const BatchOptions &options)
    : BatchEngine(info, cpu_batch_backend(info, weights), tokenizer, options) {}

} // namespace phimoe_rt
