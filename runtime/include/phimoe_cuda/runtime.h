// runtime.h - what generated CUDA phimoe-bin code calls: the device context, weights, arena.
//
// Host C++: included by the generated .cu (nvcc) and by the CUDA session (the host compiler).
// Everything a kernel touches is device memory: the weights (uploaded once), the activation
// arena (planned at compile time, in floats, as on the CPU), the KV cache
// ([layer][position][kv_head][head_dim], floats; paged for serve's batches, see KvPages) and
// the kernels' workspaces.
#ifndef PHIMOE_CUDA_RUNTIME_H
#define PHIMOE_CUDA_RUNTIME_H

#include "phimoe_cuda/check.h"
#include "phimoe_rt/runtime.h" // RopeParams, ModelInfo, bf16, f16

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace phimoe_cuda {

// The route of one row of a sparsemixer MoE, as the router kernel leaves it on the device.
struct DeviceRoute {
  int32_t i1, i2;
  float w1, w2;
};

// Several sequences in one forward (serve's continuous batching, phimoe_cuda::BatchBackend):
// row t belongs to the sequence in slot row_slot[t] and uses the long LongRoPE set where
// row_long[t] != 0; that sequence keeps position p in block
// block_table[slot * max_blocks + (p >> block_shift)] (-1: none) of the KV cache, whose layers
// then hold Context::capacity = blocks << block_shift positions as
// [block][position in block][kv_head][head_dim] (the layout of phimoe_rt::PagedKVCache).
// Device arrays. A null block_table: one sequence, position p at row p of each layer, with
// Context::rope_long for every row.
// `runs` (host memory, run_count pairs (first row, rows)) may name runs of rows that are
// consecutive positions of one sequence (a prompt chunk): attention takes the tensor-core
// kernel for runs of kFaMinRows rows or more, the SIMT kernels for every other row. A forward
// captured in a graph has none (they are host data).
struct KvPages {
  const int32_t *block_table = nullptr;
  const int32_t *row_slot = nullptr;
  const uint8_t *row_long = nullptr;
  int max_blocks = 0, block_shift = 0;
  const int32_t *runs = nullptr;
  int run_count = 0;
};

// KvPages::runs of rows [0, n) (host arrays: each row's slot and position): the maximal runs
// of rows that are consecutive positions of one slot, as (first row, rows) pairs.
inline void find_runs(const int32_t *slot, const int32_t *pos, int n, std::vector<int32_t> &runs) {
  runs.clear();
  for (int t = 0; t < n;) {
    int end = t + 1;
    while (end < n && slot[end] == slot[t] && pos[end] == pos[end - 1] + 1)
      ++end;
    runs.push_back(t);
    runs.push_back(end - t);
    t = end;
  }
}

struct Context {
  cudaStream_t stream = nullptr;
  const uint8_t *weights = nullptr; // device copy of the data section of weights.phw
  float *arena = nullptr;           // device activations, planned at compile time
  // The KV cache of one sequence: [layer][position][kv_head][head_dim] floats.
  float *k_cache = nullptr, *v_cache = nullptr;
  int layers = 0, capacity = 0, kv_heads = 0, head_dim = 0;
  // One past the largest position of this forward (the host knows it without reading the
  // device's position array): attention sizes its split over the context with it.
  int seq_end = 0;
  // Which LongRoPE set this forward uses (the session sets it from the sequence length).
  bool rope_long = false;
  // Rows of several sequences over a paged cache (serve's batches); by default one sequence.
  KvPages pages;
  // MoE workspace: a route per row, and 2 * intermediate floats per row.
  DeviceRoute *routes = nullptr;
  float *moe_act = nullptr;
  // Grouped-expert MoE of prefill (moe_grouped.cuh): 2 pair ids per row, the bucket plan
  // (3 * experts + 1 ints) and 2 * hidden floats per row.
  int32_t *moe_pairs = nullptr;
  int32_t *moe_plan = nullptr;
  int moe_plan_ints = 0;
  float *moe_y = nullptr;
  // Flash-decoding partials: (head_dim + 2) floats per (row, head, split).
  float *attn_partials = nullptr;
  size_t attn_partial_floats = 0;
  // Counts of finished blocks (kernels.cuh, last_block_of), zero between launches: per (row,
  // head) flash-decoding's splits (the last merges them), per row the MoE's down projection
  // and o_proj's GEMV (the last runs the norm after it), per (row, query or KV head) the q/k/v
  // projection's GEMV (the last rotates the head). None: those run as launches of their own.
  int *counters = nullptr;
  size_t counter_ints = 0;
  // Decode rows for q4_K GEMVs in fixed point (kernels.cuh, detail::stage_for): room for
  // staged_words words, and which rows they hold, for the next launch only: staged_n rows of
  // staged_k values of the float buffer staged_of (null: none). moe_staged: the MoE's act
  // rows (two a token) for its down projection.
  uint32_t *staged = nullptr;
  size_t staged_words = 0;
  const float *staged_of = nullptr;
  int staged_n = 0, staged_k = 0;
  uint32_t *moe_staged = nullptr;
  size_t moe_staged_words = 0;
  // The input rows of a tensor-core GEMM of prefill, split into bf16 terms by the launch
  // before it (gemm_tc.cuh, tc_split_rows): room for tc_split_capacity bytes.
  uint8_t *tc_split = nullptr;
  size_t tc_split_capacity = 0;
};

// Words of ctx.staged and ctx.moe_staged: 8 decode rows (kGemvMaxRows) of the widest input
// of a GEMV (hidden, or the attention's heads * head_dim, which phimoe-bin takes as hidden
// here; a wider one is not handed over), 28 words per 32 values; two act rows a token.
inline size_t staged_words(const phimoe_rt::ModelInfo &info) {
  return 8 * 28 * (static_cast<size_t>(info.hidden) / 32);
}
inline size_t moe_staged_words(const phimoe_rt::ModelInfo &info) {
  return 8 * 2 * 28 * (static_cast<size_t>(info.intermediate) / 32);
}

// Floats of Context::attn_partials that the session allocates: 16 splits of every row of a
// full chunk, and at least 1024 splits of one decode row.
inline size_t attention_partial_floats(const phimoe_rt::ModelInfo &info) {
  const size_t heads = info.head_dim > 0 ? static_cast<size_t>(info.hidden / info.head_dim) : 1;
  const size_t per_split = heads * (static_cast<size_t>(info.head_dim) + 2);
  const size_t rows = static_cast<size_t>(info.max_tokens) * 16;
  return per_split * (rows > 1024 ? rows : 1024);
}

// The tensor-core GEMMs of prefill read x as kTcXTerms bf16 terms a value (gemm_tc.cuh):
// rows of tc_split_stride(k) values (k rounded up to whole K tiles of 32), then a float sum
// per row and K tile. tc_split_bytes: the bytes of `rows` such rows, and the most a forward
// of the model splits at once (the MoE's down projection reads two act rows a token).
constexpr int kTcXTerms = 2;
// (Also gemm_tc.cuh's row stride on the device: cuda_runtime.h defines __host__ __device__ as
// nothing for the host compiler.)
__host__ __device__ constexpr size_t tc_split_stride(long long k) {
  return static_cast<size_t>((k + 31) / 32 * 32);
}
inline size_t tc_split_bytes(size_t rows, long long k) {
  const size_t stride = tc_split_stride(k);
  return rows * stride * 2 * kTcXTerms + rows * (stride / 32) * sizeof(float);
}
inline size_t tc_split_bytes(const phimoe_rt::ModelInfo &info) {
  const size_t rows = static_cast<size_t>(info.max_tokens);
  const size_t a = tc_split_bytes(rows, info.hidden);
  const size_t b = tc_split_bytes(2 * rows, info.intermediate);
  return a > b ? a : b;
}

// Ints of Context::counters: one per query head and KV head of every row of a chunk.
inline size_t counter_ints(const phimoe_rt::ModelInfo &info) {
  const size_t heads = info.head_dim > 0 ? static_cast<size_t>(info.hidden / info.head_dim) : 1;
  return (heads + static_cast<size_t>(info.kv_heads)) * static_cast<size_t>(info.max_tokens);
}

template <class T> inline const T *weight(const Context &ctx, uint64_t offset) {
  return reinterpret_cast<const T *>(ctx.weights + offset);
}
inline float *act(const Context &ctx, uint64_t offset) { return ctx.arena + offset; }

} // namespace phimoe_cuda

#endif // PHIMOE_CUDA_RUNTIME_H
