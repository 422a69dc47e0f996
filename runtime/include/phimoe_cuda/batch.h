// batch.h - serve's continuous batching on the GPU: the forward that phimoe_rt::BatchEngine
// runs each step, over the rows of several sequences and a paged KV cache in device memory.
#ifndef PHIMOE_CUDA_BATCH_H
#define PHIMOE_CUDA_BATCH_H

#include "phimoe_cuda/runtime.h"
#include "phimoe_rt/batch.h"

#include <map>
#include <set>
#include <utility>
#include <vector>

namespace phimoe_cuda {

// The weights uploaded once (as Session), a KV cache of layout.blocks blocks of
// layout.block_size positions (a power of two) per layer, and the forward's buffers. A
// forward copies the step's rows and the block table to the device, runs the generated
// phimoe_forward with Context::pages set (the attention reads each row's own sequence
// through its block table; rope takes each row's LongRoPE set), and copies the logits back.
// Attention takes tensor cores for the runs of 64 rows or more of one sequence's consecutive
// positions (prompt chunks), the SIMT kernels for the other rows (KvPages::runs).
// Steps whose every row wants logits (decode steps) run as CUDA graphs: the rows are device
// data, so a forward's launches depend only on its row count and the attention's split count
// (the longest row's context, by 64 positions); the first step of each (rows, splits) runs
// eagerly, the next one captures a graph, later ones replay it. PHIMOE_CUDA_GRAPH=0 turns
// graphs off. CUDA errors throw std::runtime_error naming the call, file and line.
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

  // Graphs captured so far, and steps that replayed one (tests).
  int graphs_captured() const { return graphs_captured_; }
  long long graph_steps() const { return graph_steps_; }
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
  std::vector<int32_t> runs_; // KvPages::runs of the step
  // Decode graphs by (rows, positions rounded up to the attention's split size), and the keys
  // that ran once eagerly.
  bool use_graphs_ = true;
  std::map<std::pair<int, int>, cudaGraphExec_t> graphs_;
  std::set<std::pair<int, int>> eager_;
  int graphs_captured_ = 0;
  long long graph_steps_ = 0;
};

} // namespace phimoe_cuda

#endif // PHIMOE_CUDA_BATCH_H
