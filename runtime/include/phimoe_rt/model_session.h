// model_session.h - one sequence of a model with its KV cache, as phimoe-bin's command line
// and text generation use it: the CPU's phimoe_rt::Session and the GPU's phimoe_cuda::Session.
#ifndef PHIMOE_RT_MODEL_SESSION_H
#define PHIMOE_RT_MODEL_SESSION_H

#include <cstdint>
#include <vector>

namespace phimoe_rt {

// The logits of position t are those of a fresh forward over tokens[0..t] (the LongRoPE
// semantics of docs/compiling.md). Implementations report failures of their device by
// throwing std::exception (e.g. a CUDA error); running out of capacity is not one.
class ModelSession {
public:
  virtual ~ModelSession() = default;

  virtual int capacity() const = 0;
  virtual int size() const = 0;
  virtual const std::vector<int32_t> &tokens() const = 0;

  // Appends tokens and runs them; returns the logits of the last one ([vocab], host memory,
  // valid until the next call). With `all_logits`, the logits of every appended position are
  // added to it (row-major [count, vocab]). Returns null when capacity would be exceeded.
  virtual const float *append(const int32_t *ids, int count,
                              std::vector<float> *all_logits = nullptr) = 0;
  virtual void reset() = 0;
  // Keeps the first n tokens, whose cache stays valid; returns how many were kept (0 when the
  // cache was computed with the long LongRoPE set and n is back within
  // original_max_position, where a fresh forward uses the short set).
  virtual int truncate(int n) = 0;
};

// What truncate(n) keeps of a session of `size` tokens whose cache holds the long LongRoPE set
// or not: `size` when n >= size, -1 when the cache must go (long set, n back within
// original_max_position: reset), else n.
inline int truncated_length(int size, int n, bool rope_long, int original_max_position) {
  if (n >= size)
    return size;
  return rope_long && n <= original_max_position ? -1 : n;
}

} // namespace phimoe_rt

#endif // PHIMOE_RT_MODEL_SESSION_H
