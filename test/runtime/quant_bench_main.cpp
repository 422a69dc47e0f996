// quant_bench_main.cpp - rough timings of the quantized kernels (not a test):
// phimoe-rt-quant-bench [threads] [prompt tokens] [decode|prefill|moe].
// The weights lie on 2 MiB pages where the kernel grants them (madvise), as phimoe-bin reads
// its weights: on 4 KiB pages the hardware prefetchers stop at every page boundary, and the
// decode timings of a kernel come out slower and differently ranked.
#include "phimoe_rt/kernels.h"
#include "phimoe_rt/quant.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <vector>

#include <sys/mman.h>

namespace {

using namespace phimoe_rt;
using clock_type = std::chrono::steady_clock;

// Memory on 2 MiB boundaries, with the hint to back it with huge pages.
template <class T> struct HugeAlloc {
  using value_type = T;
  static constexpr size_t kPage = size_t{2} << 20;
  HugeAlloc() = default;
  template <class U> HugeAlloc(const HugeAlloc<U> &) {}
  T *allocate(size_t n) {
    const size_t bytes = (n * sizeof(T) + kPage - 1) / kPage * kPage;
    void *p = std::aligned_alloc(kPage, bytes);
    if (!p)
      throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return static_cast<T *>(p);
  }
  void deallocate(T *p, size_t) { std::free(p); }
  template <class U> bool operator==(const HugeAlloc<U> &) const { return true; }
  template <class U> bool operator!=(const HugeAlloc<U> &) const { return false; }
};
template <class W> using Blocks = std::vector<W, HugeAlloc<W>>;

// Blocks of random bytes with sane f16 scales (the values do not matter for timing).
template <class W> Blocks<W> random_blocks(size_t n, std::mt19937_64 &rng) {
  Blocks<W> v(n);
  uint64_t *p = reinterpret_cast<uint64_t *>(v.data());
  for (size_t i = 0; i < n * sizeof(W) / 8; ++i)
    p[i] = rng();
  const uint16_t scale = float_to_f16(0.001f).bits;
  if constexpr (std::is_same<W, block_q4k_x16>::value) { // n is a multiple of 16
    auto *g = reinterpret_cast<block_q4k_16rows *>(v.data());
    for (size_t i = 0; i < n / 16; ++i)
      for (int r = 0; r < 16; ++r)
        g[i].d[r] = g[i].dmin[r] = scale;
  } else if constexpr (std::is_same<W, block_q6k_x16>::value) {
    auto *g = reinterpret_cast<block_q6k_16rows *>(v.data());
    for (size_t i = 0; i < n / 16; ++i)
      for (int r = 0; r < 16; ++r)
        g[i].d[r] = scale;
  } else if constexpr (std::is_same<W, block_q8_0_x16>::value) {
    auto *g = reinterpret_cast<block_q8_0_16rows *>(v.data());
    for (size_t i = 0; i < n / 16; ++i)
      for (int r = 0; r < 16; ++r)
        g[i].d[r] = scale;
  } else {
    for (W &b : v) {
      if constexpr (std::is_same<W, block_q4k>::value) {
        b.d = scale;
        b.dmin = scale;
      } else {
        b.d = scale;
      }
    }
  }
  return v;
}

std::vector<float> random_floats(size_t n, std::mt19937_64 &rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float &x : v)
    x = d(rng);
  return v;
}

template <class F> double best_ms(int reps, F &&f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = clock_type::now();
    f();
    const double ms = std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
    best = best < ms ? best : ms;
  }
  return best;
}

template <class W> constexpr int values_per_block() {
  return std::is_same<W, block_q8_0>::value || std::is_same<W, block_q8_0_x16>::value ? 32 : 256;
}

// Cycles through copies of the matrix (~64 MB or more in all) so that decode reads weights
// from memory, not from the 32 MB last-level cache.
template <class W> void bench_linear(Context &ctx, const char *name, int n, std::mt19937_64 &rng) {
  constexpr int N = 4096, K = 4096;
  const size_t blocks = static_cast<size_t>(N) * K / values_per_block<W>();
  const double bytes = static_cast<double>(blocks) * sizeof(W);
  const int copies = n == 1 ? static_cast<int>(64e6 / bytes) + 2 : 1;
  std::vector<Blocks<W>> w;
  for (int c = 0; c < copies; ++c)
    w.push_back(random_blocks<W>(blocks, rng));
  const std::vector<float> x = random_floats(static_cast<size_t>(n) * K, rng);
  std::vector<float> out(static_cast<size_t>(n) * N);
  int next = 0;
  const double ms = best_ms(n == 1 ? 60 : 5, [&] {
    linear<N, K>(ctx, x.data(), n, w[next].data(), static_cast<const float *>(nullptr),
                 out.data());
    next = (next + 1) % copies;
  });
  std::printf("linear 4096x4096 %-5s n=%-4d %9.3f ms  %6.1f GB/s weights  %7.1f GFLOP/s\n", name,
              n, ms, bytes / (ms * 1e6), 2.0 * N * K * n / (ms * 1e6));
}

// Phi-3.5-MoE's expert shapes; decode with E = 2 (both read), a prompt with E = 4.
template <class W> void bench_moe(Context &ctx, const char *name, int n, std::mt19937_64 &rng) {
  constexpr int H = 4096, I = 6400;
  const int E = n == 1 ? 2 : 4;
  const std::vector<float> router = random_floats(static_cast<size_t>(E) * H, rng);
  const size_t expert_blocks = static_cast<size_t>(H) * I / values_per_block<W>();
  const Blocks<W> gu = random_blocks<W>(static_cast<size_t>(E) * 2 * expert_blocks, rng);
  const Blocks<W> dw = random_blocks<W>(static_cast<size_t>(E) * expert_blocks, rng);
  const std::vector<float> x = random_floats(static_cast<size_t>(n) * H, rng);
  std::vector<float> out(static_cast<size_t>(n) * H);
  const double ms = best_ms(n == 1 ? 10 : 2, [&] {
    if (E == 2)
      moe_sparsemixer<2, H, I>(ctx, x.data(), n, router.data(), gu.data(), dw.data(), 0.01f,
                               out.data());
    else
      moe_sparsemixer<4, H, I>(ctx, x.data(), n, router.data(), gu.data(), dw.data(), 0.01f,
                               out.data());
  });
  const double expert_bytes = 3.0 * H * I / values_per_block<W>() * sizeof(W);
  std::printf("moe %d experts of 4096x6400 %-5s n=%-4d %9.3f ms  %6.1f GB/s (2 experts)  "
              "%7.1f GFLOP/s\n",
              E, name, n, ms, 2 * expert_bytes / (ms * 1e6), 2.0 * 2 * 3 * H * I * n / (ms * 1e6));
}

} // namespace

int main(int argc, char **argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int prompt = argc > 2 ? std::atoi(argv[2]) : 512;
  const char *only = argc > 3 ? argv[3] : "";
  constexpr int H = 4096, I = 6400, E = 4;
  ThreadPool pool(threads);
  const size_t stride = scratch_floats(0, H, I, E);
  std::vector<float> scratch(stride * pool.size());
  std::vector<uint8_t> qbuf(qbuf_bytes_for(prompt, I)), work(moe_work_bytes(prompt, I, E));
  Context ctx;
  ctx.pool = &pool;
  ctx.scratch = scratch.data();
  ctx.scratch_stride = stride;
  ctx.qbuf = qbuf.data();
  ctx.qbuf_bytes = qbuf.size();
  ctx.work = work.data();
  ctx.work_bytes = work.size();
  std::mt19937_64 rng(1);
  // The kernels' path is chosen when this file is compiled (its -march), not at run time.
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  const char *path = "avx512 vnni";
#elif defined(__AVX512F__) && defined(__AVX512BW__)
  const char *path = "avx512";
#elif defined(__AVX2__)
  const char *path = "avx2";
#else
  const char *path = "scalar (configure with -DPHIMOE_RT_MARCH=native for this CPU's)";
#endif
  std::printf("threads: %d, prompt: %d tokens, kernels: %s\n", pool.size(), prompt, path);
  const bool all = !*only;
  if (all || !std::strcmp(only, "decode")) {
    bench_linear<block_q4k>(ctx, "q4k", 1, rng);
    bench_linear<block_q4k_x16>(ctx, "q4k16", 1, rng);
    bench_linear<block_q8_0>(ctx, "q8_0", 1, rng);
    bench_linear<block_q8_0_x16>(ctx, "q8_016", 1, rng);
    bench_linear<block_q6k>(ctx, "q6k", 1, rng);
    bench_linear<block_q6k_x16>(ctx, "q6k16", 1, rng);
  }
  if (all || !std::strcmp(only, "prefill")) {
    bench_linear<block_q4k>(ctx, "q4k", prompt, rng);
    bench_linear<block_q4k_x16>(ctx, "q4k16", prompt, rng);
    bench_linear<block_q8_0>(ctx, "q8_0", prompt, rng);
    bench_linear<block_q8_0_x16>(ctx, "q8_016", prompt, rng);
    bench_linear<block_q6k>(ctx, "q6k", prompt, rng);
    bench_linear<block_q6k_x16>(ctx, "q6k16", prompt, rng);
  }
  if (all || !std::strcmp(only, "moe")) {
    bench_moe<block_q4k>(ctx, "q4k", 1, rng);
    bench_moe<block_q4k_x16>(ctx, "q4k16", 1, rng);
    bench_moe<block_q4k>(ctx, "q4k", prompt, rng);
    bench_moe<block_q4k_x16>(ctx, "q4k16", prompt, rng);
  }
  return 0;
}
