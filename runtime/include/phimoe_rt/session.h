// session.h - a loaded model with its KV cache: prefill, decode, and the LongRoPE switch.
#ifndef PHIMOE_RT_SESSION_H
#define PHIMOE_RT_SESSION_H

#include "phimoe_rt/model_session.h"
#include "phimoe_rt/runtime.h"

#include <memory>
#include <string>
#include <vector>

namespace phimoe_rt {

// weights.phw, checked against the generated model: mapped from the file (the page cache's
// pages, shared between processes, read in as they are first touched), or read into memory of
// the process's own, which the kernel may back with 2 MiB pages: a CPU decode streams every
// active weight once a token: 1.14-1.25x as fast as on a mapped file's 4 KiB pages
// (docs/BENCHMARKS.md).
class WeightPack {
public:
  // automatic: read when the file fits in the memory the kernel says is available (with 1 GiB
  // to spare), else map (note() says so).
  enum class Load { map, read, automatic };
  // Opens `path` and checks magic, version, hash and size against `info`; on failure returns
  // null and sets `error` to a message naming the file.
  static std::unique_ptr<WeightPack> open(const std::string &path, const ModelInfo &info,
                                          std::string &error, Load load = Load::map);
  ~WeightPack();
  const uint8_t *data() const { return data_; }
  // Whether the weights were read into memory of the process's own (else mapped), and how
  // much of that memory the kernel backs with huge pages now (/proc/self/smaps; 0 where it
  // cannot tell).
  bool read_into_memory() const { return read_; }
  size_t huge_page_bytes() const;
  // Why Load::automatic mapped the file, or "".
  const std::string &note() const { return note_; }

  // What Load::automatic does with a pack of `bytes` bytes when `available` bytes of memory
  // are available (/proc/meminfo's MemAvailable): read (with 1 GiB to spare) or map.
  static Load resolve(Load load, size_t bytes, size_t available);
  // How open() reads: [0, bytes) of the open file `fd` into dst in `slices` slices at once, a
  // thread each (the page faults on fresh memory, most of the time, run in parallel too);
  // "" or what failed, naming `path`.
  static std::string read_in_slices(int fd, const std::string &path, uint8_t *dst,
                                    size_t bytes, size_t slices);

private:
  WeightPack() = default;
  void *map_ = nullptr;
  size_t map_bytes_ = 0;
  bool read_ = false;
  std::string note_;
  const uint8_t *data_ = nullptr;
};

// One sequence on the CPU: its tokens, KV cache and buffers, all allocated up front.
// The logits of position t are those of a fresh forward over tokens[0..t]:
// the LongRoPE short set while t + 1 <= original_max_position, the long set
// after; when a sequence first grows past that length, every cached position
// is recomputed with the long set (as the reference does). See ModelSession.
class Session final : public ModelSession {
public:
  Session(const ModelInfo &info, const uint8_t *weights, int threads, int capacity);

  int capacity() const override { return capacity_; }
  int size() const override { return static_cast<int>(tokens_.size()); }
  const std::vector<int32_t> &tokens() const override { return tokens_; }

  const float *append(const int32_t *ids, int count,
                      std::vector<float> *all_logits = nullptr) override;
  void reset() override;
  int truncate(int n) override;

private:
  void run(int begin, int end, bool rope_long, std::vector<float> *all_logits);

  const ModelInfo &info_;
  int capacity_;
  ThreadPool pool_;
  KVCache cache_;
  std::vector<float> arena_, scratch_, logits_;
  std::vector<int32_t> tokens_, positions_;
  Context ctx_;
  bool rope_long_ = false;
};

// Sizes the buffers the generated forward and its kernels use, for `threads` threads
// (ctx.pool) over contexts of up to `capacity` positions: the activation arena, and in
// `scratch` the per-thread scratch followed by the quantized kernels' qbuf and MoE
// workspace; points ctx.arena, scratch, scratch_stride, qbuf and work into them.
void allocate_kernel_buffers(const ModelInfo &info, int capacity, int threads,
                             std::vector<float> &arena, std::vector<float> &scratch,
                             Context &ctx);

// The directory of the running executable, where phimoec put weights.phw and the tokenizer.
std::string executable_dir();

// Appends the comma-separated token ids of `text` (each in [0, vocab)) to `ids`; on bad
// input returns false with `error` naming `what` (e.g. "--tokens") and the offending item.
bool parse_token_ids(const std::string &text, const char *what, int vocab,
                     std::vector<int32_t> &ids, std::string &error);

// Writes a float32 .npy array of shape [rows, cols].
bool write_npy(const std::string &path, const float *data, int64_t rows, int64_t cols,
               std::string &error);

} // namespace phimoe_rt

#endif // PHIMOE_RT_SESSION_H
