// gemv_micro.cpp - decode GEMV of quantized weights, ours against llama.cpp's, on the same bytes.
//
// One activation row times a weight matrix of K = 4096 columns, as decode does, for q8_0,
// q4_K and q6_K: our tiles (phimoe_rt/quant_kernels.h, the target's best path) with 1, 2
// and 4 rows per tile, and ggml's ggml_vec_dot_*_q8_* (libggml-cpu of bench/llamacpp.sh's
// build, the row-at-a-time kernel its non-repacked CPU path uses) on identical weight blocks
// and activations. Threads split the rows into contiguous halves, as phimoe-bin's pool does.
// Prints the weight bytes read per second (GB/s) for each, best of REPS, and the largest
// difference between our results and ggml's relative to their RMS (the same sums in another
// order; ggml's q8_0 activation scales are f16, ours float).
//
//   bench/gemv_micro.sh [--threads T] [--mib M] [--reps R] [--iters I]
//
// --mib sets the weight bytes per type (default 1024: far larger than the caches, so decode's
// case: every byte from memory); a small --mib with --iters > 1 measures the kernels on
// cached weights instead.
#include "phimoe_rt/quant_kernels.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

using namespace phimoe_rt;

extern "C" {
void ggml_cpu_init(void);
void ggml_vec_dot_q8_0_q8_0(int n, float *s, size_t bs, const void *vx, size_t bx, const void *vy,
                            size_t by, int nrc);
void ggml_vec_dot_q4_K_q8_K(int n, float *s, size_t bs, const void *vx, size_t bx, const void *vy,
                            size_t by, int nrc);
void ggml_vec_dot_q6_K_q8_K(int n, float *s, size_t bs, const void *vx, size_t bx, const void *vy,
                            size_t by, int nrc);
}

namespace {

constexpr int K = 4096;

struct Options {
  int threads = 2, reps = 5, iters = 1;
  size_t mib = 1024;
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// fn(r0, r1) on `threads` threads over contiguous row ranges (multiples of 16); seconds.
template <class F> double parallel(int threads, int rows, F fn) {
  const double t0 = now();
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i)
    pool.emplace_back([&, i] {
      const int r0 = static_cast<int>(int64_t{rows} * i / threads / 16 * 16);
      const int r1 = i == threads - 1 ? rows : static_cast<int>(int64_t{rows} * (i + 1) / threads / 16 * 16);
      fn(r0, r1);
    });
  for (auto &t : pool)
    t.join();
  return now() - t0;
}

uint16_t f16_bits(float v) {
  const _Float16 h = static_cast<_Float16>(v);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

// Random but well-formed blocks: f16 scales in a normal range, quants over their full range.
void fill(std::mt19937 &rng, block_q8_0 &b) {
  b.d = f16_bits(std::ldexp(1.0f + static_cast<float>(rng() % 1000) / 1000.0f, -8));
  for (auto &q : b.qs)
    q = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
}
void fill(std::mt19937 &rng, block_q4k &b) {
  b.d = f16_bits(std::ldexp(1.0f + static_cast<float>(rng() % 1000) / 1000.0f, -10));
  b.dmin = f16_bits(std::ldexp(1.0f + static_cast<float>(rng() % 1000) / 1000.0f, -11));
  for (auto &s : b.scales)
    s = static_cast<uint8_t>(rng());
  for (auto &q : b.qs)
    q = static_cast<uint8_t>(rng());
}
void fill(std::mt19937 &rng, block_q6k &b) {
  b.d = f16_bits(std::ldexp(1.0f + static_cast<float>(rng() % 1000) / 1000.0f, -10));
  for (auto &q : b.ql)
    q = static_cast<uint8_t>(rng());
  for (auto &q : b.qh)
    q = static_cast<uint8_t>(rng());
  for (auto &s : b.scales)
    s = static_cast<int8_t>(static_cast<int>(rng() % 128) - 64);
}

template <class W> struct peer;
template <> struct peer<block_q8_0> {
  static constexpr const char *kName = "q8_0";
  static void dot(const void *w, const void *a, float *out) {
    ggml_vec_dot_q8_0_q8_0(K, out, 0, w, 0, a, 0, 1);
  }
  // ggml's activation row: blocks of f16 d and 32 int8, from ours (int8 then float scales).
  static std::vector<uint8_t> activation(const std::vector<uint8_t> &ours) {
    std::vector<block_q8_0> blocks(K / kQK8_0);
    const float *d = reinterpret_cast<const float *>(ours.data() + K);
    for (int b = 0; b < K / kQK8_0; ++b) {
      blocks[b].d = f16_bits(d[b]);
      std::memcpy(blocks[b].qs, ours.data() + kQK8_0 * b, kQK8_0);
    }
    std::vector<uint8_t> bytes(sizeof(block_q8_0) * blocks.size());
    std::memcpy(bytes.data(), blocks.data(), bytes.size());
    return bytes;
  }
};
template <> struct peer<block_q4k> {
  static constexpr const char *kName = "q4_K";
  static void dot(const void *w, const void *a, float *out) {
    ggml_vec_dot_q4_K_q8_K(K, out, 0, w, 0, a, 0, 1);
  }
  // block_q8k is ggml's block_q8_K byte for byte (float d, 256 int8, 16 int16 sums).
  static std::vector<uint8_t> activation(const std::vector<uint8_t> &ours) { return ours; }
};
template <> struct peer<block_q6k> {
  static constexpr const char *kName = "q6_K";
  static void dot(const void *w, const void *a, float *out) {
    ggml_vec_dot_q6_K_q8_K(K, out, 0, w, 0, a, 0, 1);
  }
  static std::vector<uint8_t> activation(const std::vector<uint8_t> &ours) { return ours; }
};

template <class W> void run(const Options &opt, std::mt19937 &rng) {
  using F = qk::format<W>;
  constexpr int nb = K / F::kBlock;
  const size_t row_bytes = sizeof(W) * nb;
  const int rows = static_cast<int>(opt.mib * 1024 * 1024 / row_bytes / 16 * 16);
  std::vector<W> w(static_cast<size_t>(rows) * nb);
  for (auto &b : w)
    fill(rng, b);
  std::vector<float> x(K);
  std::normal_distribution<float> normal;
  for (auto &v : x)
    v = normal(rng);
  std::vector<uint8_t> act(F::act_bytes(K));
  F::template quantize<qk::Best>(x.data(), K, act.data());
  const std::vector<uint8_t> act_peer = peer<W>::activation(act);

  std::vector<float> ours(rows), theirs(rows);
  auto tiles = [&](auto rr) {
    constexpr int RR = decltype(rr)::value;
    return parallel(opt.threads, rows, [&](int r0, int r1) {
      for (int it = 0; it < opt.iters; ++it)
        for (int r = r0; r < r1; r += RR) {
          const W *wp[RR];
          for (int j = 0; j < RR; ++j)
            wp[j] = &w[static_cast<size_t>(r + j) * nb];
          const uint8_t *ap[1] = {act.data()};
          float res[1][RR];
          F::template tile<qk::Best, 1, RR>(wp, ap, K, res);
          for (int j = 0; j < RR; ++j)
            ours[r + j] = res[0][j];
        }
    });
  };
  auto ggml = [&] {
    return parallel(opt.threads, rows, [&](int r0, int r1) {
      for (int it = 0; it < opt.iters; ++it)
        for (int r = r0; r < r1; ++r)
          peer<W>::dot(&w[static_cast<size_t>(r) * nb], act_peer.data(), &theirs[r]);
    });
  };
  double best[4] = {1e30, 1e30, 1e30, 1e30};
  for (int rep = 0; rep < opt.reps; ++rep) { // interleaved, so drift hits all alike
    best[0] = std::min(best[0], tiles(std::integral_constant<int, 1>()));
    best[1] = std::min(best[1], tiles(std::integral_constant<int, 2>()));
    best[2] = std::min(best[2], tiles(std::integral_constant<int, 4>()));
    best[3] = std::min(best[3], ggml());
  }
  double diff = 0.0, sq = 0.0;
  for (int r = 0; r < rows; ++r) {
    diff = std::max(diff, std::fabs(static_cast<double>(ours[r]) - theirs[r]));
    sq += static_cast<double>(theirs[r]) * theirs[r];
  }
  diff /= std::sqrt(sq / rows);
  const double gb = static_cast<double>(w.size()) * sizeof(W) * opt.iters / 1e9;
  std::printf("| %s | %.0f MB | %.1f | %.1f | %.1f | %.1f | %.1e |\n", peer<W>::kName,
              static_cast<double>(w.size()) * sizeof(W) / 1e6, gb / best[0], gb / best[1],
              gb / best[2], gb / best[3], diff);
}

} // namespace

int main(int argc, char **argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> long {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "gemv_micro: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      char *end = nullptr;
      const long v = std::strtol(argv[++i], &end, 10);
      if (*end || v <= 0) {
        std::fprintf(stderr, "gemv_micro: %s: not a positive integer: %s\n", a.c_str(), argv[i]);
        std::exit(2);
      }
      return v;
    };
    if (a == "--threads") opt.threads = static_cast<int>(value());
    else if (a == "--mib") opt.mib = static_cast<size_t>(value());
    else if (a == "--reps") opt.reps = static_cast<int>(value());
    else if (a == "--iters") opt.iters = static_cast<int>(value());
    else {
      std::fprintf(stderr, "usage: gemv_micro [--threads T] [--mib M] [--reps R] [--iters I]\n");
      return 2;
    }
  }
  ggml_cpu_init();
  std::mt19937 rng(20261204);
  std::printf("path %s, %d threads, K = %d, best of %d, %d pass(es) over the weights\n\n",
              qk::Best::kName, opt.threads, K, opt.reps, opt.iters);
  std::printf("| type | weights | ours 1 row/tile GB/s | ours 2 rows | ours 4 rows | ggml vec_dot | max diff / rms |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  run<block_q8_0>(opt, rng);
  run<block_q4k>(opt, rng);
  run<block_q6k>(opt, rng);
  return 0;
}
