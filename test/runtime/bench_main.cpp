// bench_main.cpp - rough kernel timings (not a test): phimoe-rt-bench [threads].
#include "phimoe_rt/kernels.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace {

using namespace phimoe_rt;
using clock_type = std::chrono::steady_clock;

template <class W> std::vector<W> random_weights(size_t n, std::mt19937 &rng);
template <> std::vector<bf16> random_weights<bf16>(size_t n, std::mt19937 &rng) {
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<bf16> w(n);
  for (bf16 &x : w)
    x = float_to_bf16(d(rng));
  return w;
}
template <> std::vector<f16> random_weights<f16>(size_t n, std::mt19937 &rng) {
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<f16> w(n);
  for (f16 &x : w)
    x = float_to_f16(d(rng));
  return w;
}
template <> std::vector<float> random_weights<float>(size_t n, std::mt19937 &rng) {
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<float> w(n);
  for (float &x : w)
    x = d(rng);
  return w;
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

// Cycles through 4 weight matrices (128-256 MB) so that they come from memory, as a
// model's weights do, not from a 32 MB last-level cache.
template <class W> void bench_linear(Context &ctx, const char *name, int n, std::mt19937 &rng) {
  constexpr int N = 4096, K = 4096, copies = 4;
  std::vector<std::vector<W>> w;
  for (int c = 0; c < copies; ++c)
    w.push_back(random_weights<W>(static_cast<size_t>(N) * K, rng));
  const std::vector<float> x = random_weights<float>(static_cast<size_t>(n) * K, rng);
  std::vector<float> out(static_cast<size_t>(n) * N);
  int next = 0;
  const double ms = best_ms(n == 1 ? 40 : 4, [&] {
    linear<N, K, W, float>(ctx, x.data(), n, w[next].data(), nullptr, out.data());
    next = (next + 1) % copies;
  });
  const double gbs = static_cast<double>(N) * K * sizeof(W) / (ms * 1e6);
  const double gflops = 2.0 * N * K * n / (ms * 1e6);
  std::printf("linear 4096x4096 %-5s n=%-3d %8.3f ms  %6.1f GB/s weights  %6.1f GFLOP/s\n", name,
              n, ms, gbs, gflops);
}

void bench_moe(Context &ctx, std::mt19937 &rng) {
  // Phi-3.5-MoE's expert shapes with E = 2 (both experts are selected: decode reads them all).
  constexpr int E = 2, H = 4096, I = 6400;
  const std::vector<float> router = random_weights<float>(static_cast<size_t>(E) * H, rng);
  const std::vector<bf16> gu = random_weights<bf16>(static_cast<size_t>(E) * 2 * I * H, rng);
  const std::vector<bf16> dw = random_weights<bf16>(static_cast<size_t>(E) * H * I, rng);
  const std::vector<float> x = random_weights<float>(H, rng);
  std::vector<float> out(H);
  const double ms = best_ms(10, [&] {
    moe_sparsemixer<E, H, I>(ctx, x.data(), 1, router.data(), gu.data(), dw.data(), 0.01f,
                             out.data());
  });
  std::printf("moe decode (2 experts of 4096x6400, bf16) %8.3f ms  %6.1f GB/s\n", ms,
              2.0 * 3 * H * I * 2 / (ms * 1e6));
}

} // namespace

int main(int argc, char **argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  ThreadPool pool(threads);
  std::vector<float> scratch(scratch_floats(4096, 4096, 6400, 16) * pool.size());
  Context ctx;
  ctx.pool = &pool;
  ctx.scratch = scratch.data();
  ctx.scratch_stride = scratch_floats(4096, 4096, 6400, 16);
  std::mt19937 rng(1);
  std::printf("threads: %d\n", pool.size());
  bench_linear<bf16>(ctx, "bf16", 1, rng);
  bench_linear<f16>(ctx, "f16", 1, rng);
  bench_linear<float>(ctx, "f32", 1, rng);
  bench_linear<bf16>(ctx, "bf16", 64, rng);
  bench_moe(ctx, rng);
  return 0;
}
