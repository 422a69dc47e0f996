// session.h - one sequence on the GPU: weights uploaded once, device KV cache and arena,
// prefill, decode and the LongRoPE switch (the semantics of phimoe_rt::Session).
#ifndef PHIMOE_CUDA_SESSION_H
#define PHIMOE_CUDA_SESSION_H

#include "phimoe_cuda/runtime.h"
#include "phimoe_rt/model_session.h"

#include <functional>
#include <map>
#include <utility>
#include <vector>

namespace phimoe_cuda {

// A device allocation of `count` T (at least one), recorded in `owned`.
template <class T> T *device_alloc(std::vector<void *> &owned, size_t count) {
  void *p = nullptr;
  PHIMOE_CUDA_CHECK(cudaMalloc(&p, (count > 0 ? count : 1) * sizeof(T)));
  owned.push_back(p);
  return static_cast<T *>(p);
}

// What every forward of up to info.max_tokens rows needs besides its KV cache, its inputs and
// its logits: a stream, the weights (info.pack_bytes of `weights` uploaded), the arena and the
// MoE, attention and tensor-core GEMM workspaces, allocated into ctx (recorded in `owned`).
// Throws on a CUDA error, leaving what it allocated in `owned` for free_forward.
void allocate_forward(const phimoe_rt::ModelInfo &info, const uint8_t *weights, Context &ctx,
                      std::vector<void *> &owned);
// Frees `owned` and ctx's stream.
void free_forward(Context &ctx, std::vector<void *> &owned);
// Captures what `record` queues on `stream` into a graph and instantiates it (a failed capture
// throws and leaves nothing behind).
cudaGraphExec_t capture_graph(cudaStream_t stream, const std::function<void()> &record);
// Whether decode runs through CUDA graphs: PHIMOE_CUDA_GRAPH=0 turns them off, and so does
// PHIMOE_CUDA_PROFILE (profile.h).
bool graphs_enabled();

// The logits of position t are those of a fresh forward over tokens[0..t]: the LongRoPE short
// set while t + 1 <= original_max_position, the long set after; when the sequence first grows
// past that length, every cached position is recomputed with the long set (as the reference
// does). CUDA errors throw std::runtime_error naming the call, file and line.
//
// A decode step (one token) runs as one CUDA graph launch: the forward of one token is
// captured once per (attention split count, LongRoPE set) — the only host-side values of a
// decode forward that change as the sequence grows — with the token id and its position read
// from fixed device buffers. The first decode step of a session runs eagerly (it also sets
// the kernels' one-time attributes, which are not captured). PHIMOE_CUDA_GRAPH=0 turns
// graphs off.
class Session final : public phimoe_rt::ModelSession {
public:
  // Uploads `pack_bytes` bytes of weights (the data section of weights.phw) to the device.
  Session(const phimoe_rt::ModelInfo &info, const uint8_t *weights, int capacity);
  ~Session();
  Session(const Session &) = delete;
  Session &operator=(const Session &) = delete;

  int capacity() const override { return capacity_; }
  int size() const override { return static_cast<int>(tokens_.size()); }
  const std::vector<int32_t> &tokens() const override { return tokens_; }

  // Appends tokens and runs them; returns the logits of the last one ([vocab], host memory).
  // With `all_logits`, the logits of every appended position are added to it. Returns null
  // when the capacity would be exceeded.
  const float *append(const int32_t *ids, int count,
                      std::vector<float> *all_logits = nullptr) override;
  void reset() override;
  // As phimoe_rt::Session::truncate: the device cache of the first n positions stays valid.
  int truncate(int n) override {
    const int keep =
        phimoe_rt::truncated_length(size(), n, rope_long_, info_.original_max_position);
    if (keep < 0) {
      reset();
      return 0;
    }
    tokens_.resize(keep);
    return keep;
  }

  // Decode graphs captured so far (for tests and the benchmark's report).
  int graphs_captured() const { return graphs_captured_; }

private:
  void run(int begin, int end, bool rope_long, std::vector<float> *all_logits);
  // Runs the forward of the one token at `position` (ids_ holds it) through a graph.
  void decode_graph(int position, bool rope_long);

  const phimoe_rt::ModelInfo &info_;
  int capacity_;
  Context ctx_;
  int32_t *ids_ = nullptr, *positions_ = nullptr;
  float *logits_device_ = nullptr;
  std::vector<void *> buffers_; // every device allocation, freed by the destructor
  std::vector<float> logits_;
  std::vector<int32_t> tokens_;
  bool rope_long_ = false;
  // Decode graphs by (positions rounded up to the attention's split size, LongRoPE set).
  bool use_graphs_ = true;
  bool eager_decode_done_ = false;
  int32_t *decode_pos_ = nullptr; // the position of the token a decode graph runs
  std::map<std::pair<int, bool>, cudaGraphExec_t> graphs_;
  int graphs_captured_ = 0;
};

} // namespace phimoe_cuda

#endif // PHIMOE_CUDA_SESSION_H
