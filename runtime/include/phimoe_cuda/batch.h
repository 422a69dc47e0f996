// batch.h - serve's continuous batching on the GPU: the forward that phimoe_rt::BatchEngine
// runs each step, over the rows of several sequences and a paged KV cache in device memory.
#ifndef PHIMOE_CUDA_BATCH_H
#define PHIMOE_CUDA_BATCH_H

#include "phimoe_cuda/runtime.h"
#include "phimoe_rt/batch.h"

#include <vector>

namespace phimoe_cuda {

// The weights uploaded once (as Session), a KV cache of layout.blocks blocks of
// layout.block_size positions (a power of two) per layer, and the forward's buffers. A
// forward copies the step's rows and the block table to the device, runs the generated
// phimoe_forward with Context::pages set (the attention reads each row's own sequence
// through its block table; rope takes each row's LongRoPE set), and copies the logits back.
// Decode steps run eagerly (no CUDA graph: the rows of a step change from step to step).
// CUDA errors throw std::runtime_error naming the call, file and line.
class BatchBackend final : public phimoe_rt::BatchBackend {
public:
  BatchBackend(const phimoe_rt::ModelInfo &info, const uint8_t *weights);
  ~BatchBackend() override;
  BatchBackend(const BatchBackend &) = delete;
  BatchBackend &operator=(const BatchBackend &) = delete;

  // Throws std::invalid_argument when the block size is not a power of two (block_shift).
  void allocate(const phimoe_rt::BatchLayout &layout) override;
  // log2 of a KV block size; std::invalid_argument naming serve's --block-size when it is not
  // a power of two.
  static int block_shift(int block_size);
  void forward(const int32_t *ids, const int32_t *positions, const int32_t *row_slot,
               const uint8_t *row_long, int n, int logit_rows, const int32_t *block_table,
               float *logits) override;

private:
  const phimoe_rt::ModelInfo &info_;
  const uint8_t *host_weights_;
  phimoe_rt::BatchLayout layout_;
  Context ctx_;
  std::vector<void *> buffers_; // every device allocation, freed by the destructor
  int32_t *ids_ = nullptr, *positions_ = nullptr, *row_slot_ = nullptr, *table_ = nullptr;
  uint8_t *row_long_ = nullptr;
  float *logits_ = nullptr;
};

} // namespace phimoe_cuda

#endif // PHIMOE_CUDA_BATCH_H
