// kernels_test.cu - every CUDA kernel of phimoe_cuda/kernels.cuh against a scalar CPU reference
// (double accumulation) on fresh random inputs. On a GPU: test/gpu/run.sh builds and runs it.
// Without one, ctest cuda_kernels_emu_test runs it on the CUDA emulation of test/gpu/emu
// (PHIMOE_CUDA_EMU), without the three grouped-MoE cases at Phi-3.5-MoE's full widths.
#include "phimoe_cuda/kernels.cuh"
#include "phimoe_rt/quant.h"
#include "phimoe_rt/sparsemixer.h"
#include "test_weights.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <initializer_list>
#include <thread>
#include <tuple>
#include <vector>

using namespace phimoe_cuda;
using phimoe_rt::bf16;
using phimoe_rt::block_q4k;
using phimoe_rt::block_q6k;
using phimoe_rt::block_q8_0;
using phimoe_rt::f16;

namespace {

#ifdef PHIMOE_CUDA_EMU
constexpr bool kFullWidthMoe = false; // minutes each on the emulation: GPU only
#else
constexpr bool kFullWidthMoe = true;
#endif

int failures = 0;
std::mt19937 rng(20261204);

std::vector<float> random_floats(size_t n, float scale = 1.0f, float offset = 0.0f) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float &x : v)
    x = d(rng) * scale + offset;
  return v;
}

void check(const char *name, const std::vector<float> &got, const std::vector<double> &want,
           double tol) {
  double err = 0.0, scale = 1e-6;
  size_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i]) && std::isnan(want[i]))
      continue; // nan where nan is expected
    scale = std::max(scale, std::fabs(want[i]));
    const double e = std::fabs(got[i] - want[i]);
    if (!(e <= err) || std::isnan(got[i]) != std::isnan(want[i])) {
      err = std::isnan(e) ? INFINITY : e;
      bad = i;
    }
  }
  const bool ok = err <= tol * scale;
  std::printf("%s %-44s max|d| = %.3g (scale %.3g, at %zu)\n", ok ? "PASS" : "FAIL", name, err,
              scale, bad);
  if (!ok)
    ++failures;
}

template <class T> T *upload(const std::vector<T> &host) {
  T *p = nullptr;
  PHIMOE_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(host.size(), 1) * sizeof(T)));
  PHIMOE_CUDA_CHECK(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}
template <class T> T *device(size_t n) {
  T *p = nullptr;
  PHIMOE_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
  PHIMOE_CUDA_CHECK(cudaMemset(p, 0, std::max<size_t>(n, 1) * sizeof(T)));
  return p;
}
// Room for the tensor-core GEMMs' split input (Context::tc_split): `bytes`, poisoned (0xff:
// nan terms and sums where a GEMM would read what tc_split_rows did not write).
void tc_workspace(Context &ctx, size_t bytes) {
  ctx.tc_split_capacity = bytes;
  ctx.tc_split = device<uint8_t>(bytes);
  PHIMOE_CUDA_CHECK(cudaMemset(ctx.tc_split, 0xff, bytes));
}
std::vector<float> download(const float *p, size_t n) {
  PHIMOE_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> h(n);
  PHIMOE_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

// Fills p with nan (every byte 0xff): what a kernel should write but does not stays nan.
void poison(float *p, size_t count) { PHIMOE_CUDA_CHECK(cudaMemset(p, 0xff, count * 4)); }

// Random inputs of an attention: a KV cache (kc, vc: layers x capacity rows of kv_row floats)
// and n rows of queries (q_row floats), keys and values (kv_row floats).
void random_attention_inputs(int layers, int capacity, int n, int q_row, int kv_row,
                             std::vector<float> &kc, std::vector<float> &vc,
                             std::vector<float> &q, std::vector<float> &k, std::vector<float> &v) {
  kc = random_floats(static_cast<size_t>(layers) * capacity * kv_row);
  vc = random_floats(kc.size());
  q = random_floats(static_cast<size_t>(n) * q_row);
  k = random_floats(static_cast<size_t>(n) * kv_row);
  v = random_floats(static_cast<size_t>(n) * kv_row);
}

// A Context over a KV cache uploaded from kc and vc ([layers][capacity][kv_heads][head_dim]),
// with `partials` floats of attention workspace and a merge counter for each (row, head) they
// hold a split of; free_cache_context frees what it allocated.
Context cache_context(const std::vector<float> &kc, const std::vector<float> &vc, int layers,
                      int capacity, int kv_heads, int head_dim, int seq_end, size_t partials) {
  Context ctx;
  ctx.k_cache = upload(kc);
  ctx.v_cache = upload(vc);
  ctx.layers = layers;
  ctx.capacity = capacity;
  ctx.kv_heads = kv_heads;
  ctx.head_dim = head_dim;
  ctx.seq_end = seq_end;
  ctx.attn_partial_floats = partials;
  ctx.attn_partials = device<float>(partials);
  ctx.counter_ints = partials / (head_dim + 2);
  ctx.counters = device<int>(ctx.counter_ints);
  return ctx;
}
void free_cache_context(Context &ctx) {
  cudaFree(ctx.k_cache), cudaFree(ctx.v_cache), cudaFree(ctx.attn_partials);
  cudaFree(ctx.counters);
}

// Uniform values in (-scale, scale) from a splitmix64 stream: normal_distribution is too slow
// for the 1.3G values of Phi-3.5-MoE's experts.
std::vector<float> fast_random_floats(size_t n, float scale) {
  uint64_t state = rng();
  std::vector<float> v(n);
  for (float &x : v) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    x = (static_cast<float>(z >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * scale;
  }
  return v;
}

// fn(i) for i in [0, n) on all cores: the double-precision references of the larger cases
// (10^9-10^10 multiply-adds) would otherwise dominate the GPU session's time.
template <class Fn> void parallel_for(int n, Fn fn) {
  const int threads =
      std::max(1, std::min<int>(n, static_cast<int>(std::thread::hardware_concurrency())));
  std::vector<std::thread> pool;
  for (int w = 0; w < threads; ++w)
    pool.emplace_back([&, w] {
      for (int i = w; i < n; i += threads)
        fn(i);
    });
  for (std::thread &t : pool)
    t.join();
}

// A [rows, k] weight in storage W as the CUDA pack holds it and the values it stands for.
using phimoe_test::Weight;
template <class W> Weight<W> make_weight(size_t rows, size_t k) {
  const bool big = rows * k > (size_t(1) << 24);
  if constexpr (std::is_same<W, block_q4k>::value || std::is_same<W, block_q6k>::value)
    if (big) // random blocks: the k-quant quantizers are too slow for 10^8-10^9 values
      return phimoe_test::random_blocks<W>(rows, k, rng());
  return phimoe_test::store_weight<W>(
      big ? fast_random_floats(rows * k, 0.35f) : random_floats(rows * k, 0.2f), rows, k);
}

template <int N, int K, class W> void test_linear(const char *name, int n, bool bias) {
  Weight<W> w = make_weight<W>(N, K);
  std::vector<float> x = random_floats(static_cast<size_t>(n) * K), b = random_floats(N, 0.1f);
  std::vector<double> want(static_cast<size_t>(n) * N);
  parallel_for(n, [&](int t) {
    for (int r = 0; r < N; ++r) {
      double s = bias ? b[r] : 0.0;
      for (int k = 0; k < K; ++k)
        s += static_cast<double>(x[t * K + k]) * w.values[static_cast<size_t>(r) * K + k];
      want[static_cast<size_t>(t) * N + r] = s;
    }
  });
  Context ctx;
  tc_workspace(ctx, tc_split_bytes(n, K));
  uint8_t *dw = upload(w.bytes);
  float *dx = upload(x), *db = upload(b), *out = device<float>(want.size());
  linear<N, K>(ctx, dx, n, reinterpret_cast<const W *>(dw), bias ? db : nullptr, out);
  char label[96];
  std::snprintf(label, sizeof label, "linear<%d,%d> %s n=%d%s", N, K, name, n,
                bias ? " +bias" : "");
  check(label, download(out, want.size()), want, 1e-5);
  cudaFree(dw), cudaFree(dx), cudaFree(db), cudaFree(out), cudaFree(ctx.tc_split);
}

template <int In, int W0, int W1, int W2> void test_split_cols(int n) {
  std::vector<float> x = random_floats(static_cast<size_t>(n) * In);
  float *dx = upload(x), *o[3] = {device<float>(static_cast<size_t>(n) * W0),
                                  device<float>(static_cast<size_t>(n) * W1),
                                  device<float>(static_cast<size_t>(n) * W2)};
  Context ctx;
  split_cols<In, W0, W1, W2>(ctx, dx, n, o[0], o[1], o[2]);
  const int widths[3] = {W0, W1, W2};
  int offset = 0;
  for (int part = 0; part < 3; ++part) {
    std::vector<double> want(static_cast<size_t>(n) * widths[part]);
    for (int t = 0; t < n; ++t)
      for (int j = 0; j < widths[part]; ++j)
        want[static_cast<size_t>(t) * widths[part] + j] = x[static_cast<size_t>(t) * In + offset + j];
    char label[96];
    std::snprintf(label, sizeof label, "split_cols<%d,%d,%d,%d> part %d n=%d", In, W0, W1, W2,
                  part, n);
    check(label, download(o[part], want.size()), want, 0.0);
    offset += widths[part];
  }
  cudaFree(dx), cudaFree(o[0]), cudaFree(o[1]), cudaFree(o[2]);
}

// Positions past..past+n-1 and a LongRoPE (short factors 1 + 0.02 i, long 1.5 + 0.25 i, mscales
// 1.1 and 1.25, original_max 64) for the tests of the rope kernels.
struct RopeInputs {
  std::vector<int32_t> pos;
  std::vector<float> sf, lf;
  phimoe_rt::RopeParams p;
  RopeInputs(int past, int n, int half) : pos(n), sf(half), lf(half) {
    for (int i = 0; i < n; ++i)
      pos[i] = past + i;
    for (int i = 0; i < half; ++i)
      sf[i] = 1.0f + 0.02f * i, lf[i] = 1.5f + 0.25f * i;
    p = phimoe_rt::RopeParams{10000.0f, 64, 1.1f, 1.25f, sf.data(), lf.data()};
  }
  RopeInputs(const RopeInputs &) = delete; // p points into sf and lf
};

// qkv_rope_kv_write against the kernels it replaces (split_cols, rope of the queries,
// rope_kv_write of the keys and values) on the same inputs: the rotated queries and both
// caches. Cases: "disjoint" (n rows, Disjoint: the one kernel), "overlap" (one row whose
// q_out overlaps its own q/k/v row, shifted, as the memory plan may place them: the one
// kernel, which must read the row before it writes), "fallback" (n rows, not Disjoint: the
// three kernels). Rows at positions past..past+n-1 with the LongRoPE set `rope_long`.
template <int Hq, int Hkv, int D>
void test_qkv_rope(int past, int n, bool rope_long, const char *mode) {
  constexpr int q_row = Hq * D, kv_row = Hkv * D, In = q_row + 2 * kv_row, half = D / 2;
  const int capacity = past + n + 2, layers = 2, layer = 1;
  const bool overlap = std::strcmp(mode, "overlap") == 0;
  std::vector<float> kc = random_floats(static_cast<size_t>(layers) * capacity * kv_row);
  std::vector<float> vc = random_floats(kc.size());
  std::vector<float> qkv = random_floats(static_cast<size_t>(n) * In);
  const RopeInputs rope_in(past, n, half);
  const phimoe_rt::RopeParams &p = rope_in.p;
  int32_t *dp = upload(rope_in.pos);

  // The reference: the three kernels.
  Context ref = cache_context(kc, vc, layers, capacity, Hkv, D, past + n, 0);
  ref.rope_long = rope_long;
  float *rqkv = upload(qkv), *rq = device<float>(static_cast<size_t>(n) * q_row),
        *rk = device<float>(static_cast<size_t>(n) * kv_row),
        *rv = device<float>(static_cast<size_t>(n) * kv_row),
        *rq_out = device<float>(static_cast<size_t>(n) * q_row);
  split_cols<In, q_row, kv_row, kv_row>(ref, rqkv, n, rq, rk, rv);
  rope<Hq, D>(ref, rq, n, dp, p, rq_out);
  rope_kv_write<Hkv, D>(ref, rk, rv, n, dp, p, layer);
  const std::vector<float> want_q = download(rq_out, static_cast<size_t>(n) * q_row);

  Context ctx = cache_context(kc, vc, layers, capacity, Hkv, D, past + n, 0);
  ctx.rope_long = rope_long;
  // "overlap": one buffer, the q/k/v row 5 floats into it and q_out at its start.
  const size_t shift = overlap ? 5 : 0;
  float *buffer = device<float>(static_cast<size_t>(n) * In + shift);
  PHIMOE_CUDA_CHECK(cudaMemcpy(buffer + shift, qkv.data(), qkv.size() * sizeof(float),
                               cudaMemcpyHostToDevice));
  float *dqkv = buffer + shift, *q_out = overlap ? buffer : device<float>(want_q.size());
  float *qs = device<float>(static_cast<size_t>(n) * q_row),
        *ks = device<float>(static_cast<size_t>(n) * kv_row),
        *vs = device<float>(static_cast<size_t>(n) * kv_row);
  if (std::strcmp(mode, "disjoint") == 0)
    qkv_rope_kv_write<In, Hq, Hkv, D, true>(ctx, dqkv, n, dp, p, layer, qs, ks, vs, q_out);
  else
    qkv_rope_kv_write<In, Hq, Hkv, D, false>(ctx, dqkv, n, dp, p, layer, qs, ks, vs, q_out);
  char label[128];
  std::snprintf(label, sizeof label, "qkv_rope_kv_write<%d,%d,%d,%d> %s n=%d %s: queries", In,
                Hq, Hkv, D, mode, n, rope_long ? "long" : "short");
  check(label, download(q_out, want_q.size()), std::vector<double>(want_q.begin(), want_q.end()),
        1e-6);
  const std::vector<float> kw = download(ref.k_cache, kc.size()),
                           vw = download(ref.v_cache, vc.size());
  std::snprintf(label, sizeof label, "qkv_rope_kv_write<%d,%d,%d,%d> %s: k cache", In, Hq, Hkv,
                D, mode);
  check(label, download(ctx.k_cache, kc.size()), std::vector<double>(kw.begin(), kw.end()),
        1e-6);
  std::snprintf(label, sizeof label, "qkv_rope_kv_write<%d,%d,%d,%d> %s: v cache", In, Hq, Hkv,
                D, mode);
  check(label, download(ctx.v_cache, vc.size()), std::vector<double>(vw.begin(), vw.end()), 0.0);
  free_cache_context(ref);
  free_cache_context(ctx);
  cudaFree(dp), cudaFree(rqkv), cudaFree(rq), cudaFree(rk), cudaFree(rv), cudaFree(rq_out);
  cudaFree(buffer), cudaFree(qs), cudaFree(ks), cudaFree(vs);
  if (!overlap)
    cudaFree(q_out);
}

template <int V, int H, class W> void test_embed(const char *name) {
  Weight<W> w = make_weight<W>(V, H);
  std::vector<int32_t> ids = {3, 0, V - 1, 7, -1, V}; // the last two are invalid: zeros
  std::vector<double> want(ids.size() * H, 0.0);
  for (size_t t = 0; t < ids.size(); ++t)
    if (ids[t] >= 0 && ids[t] < V)
      for (int j = 0; j < H; ++j)
        want[t * H + j] = w.values[static_cast<size_t>(ids[t]) * H + j];
  Context ctx;
  uint8_t *dw = upload(w.bytes);
  int32_t *di = upload(ids);
  float *out = device<float>(want.size());
  embed<V, H>(ctx, di, static_cast<int>(ids.size()), reinterpret_cast<const W *>(dw), out);
  check(name, download(out, want.size()), want, 0.0);
  cudaFree(dw), cudaFree(di), cudaFree(out);
}

template <int H> void test_layer_norm(int n) {
  std::vector<float> a = random_floats(static_cast<size_t>(n) * H, 1.0f, 3.0f);
  std::vector<float> b = random_floats(a.size()), w = random_floats(H, 0.1f, 1.0f),
                     bias = random_floats(H, 0.1f);
  std::vector<double> want(a.size()), want_sum(a.size());
  for (int t = 0; t < n; ++t) {
    double mean = 0, var = 0;
    for (int j = 0; j < H; ++j)
      mean += want_sum[t * H + j] = static_cast<double>(a[t * H + j]) + b[t * H + j];
    mean /= H;
    for (int j = 0; j < H; ++j)
      var += (want_sum[t * H + j] - mean) * (want_sum[t * H + j] - mean);
    const double rstd = 1.0 / std::sqrt(var / H + 1e-5);
    for (int j = 0; j < H; ++j)
      want[t * H + j] = (want_sum[t * H + j] - mean) * rstd * w[j] + bias[j];
  }
  Context ctx;
  float *da = upload(a), *dbb = upload(b), *dw = upload(w), *dbias = upload(bias);
  float *out = device<float>(a.size());
  add_layer_norm<H>(ctx, da, dbb, n, dw, dbias, 1e-5f, da, out); // sum aliases a
  check("add_layer_norm (sum)", download(da, a.size()), want_sum, 1e-6);
  check("add_layer_norm (out)", download(out, a.size()), want, 1e-5);
  layer_norm<H>(ctx, da, n, dw, dbias, 1e-5f, out);
  check("layer_norm", download(out, a.size()), want, 1e-5);
  cudaFree(da), cudaFree(dbb), cudaFree(dw), cudaFree(dbias), cudaFree(out);
}

// Mixtral's RMSNorm (rms_norm, add_rms_norm) against double: x / sqrt(mean(x²) + eps) * w.
template <int H> void test_rms_norm(int n) {
  std::vector<float> a = random_floats(static_cast<size_t>(n) * H, 1.0f, 3.0f);
  std::vector<float> b = random_floats(a.size()), w = random_floats(H, 0.1f, 1.0f);
  std::vector<double> want(a.size()), want_sum(a.size());
  for (int t = 0; t < n; ++t) {
    double sq = 0;
    for (int j = 0; j < H; ++j) {
      want_sum[t * H + j] = static_cast<double>(a[t * H + j]) + b[t * H + j];
      sq += want_sum[t * H + j] * want_sum[t * H + j];
    }
    const double rstd = 1.0 / std::sqrt(sq / H + 1e-5);
    for (int j = 0; j < H; ++j)
      want[t * H + j] = want_sum[t * H + j] * rstd * w[j];
  }
  Context ctx;
  float *da = upload(a), *dbb = upload(b), *dw = upload(w);
  float *out = device<float>(a.size());
  add_rms_norm<H>(ctx, da, dbb, n, dw, 1e-5f, da, out); // sum aliases a
  check("add_rms_norm (sum)", download(da, a.size()), want_sum, 1e-6);
  check("add_rms_norm (out)", download(out, a.size()), want, 1e-5);
  rms_norm<H>(ctx, da, n, dw, 1e-5f, out);
  check("rms_norm", download(out, a.size()), want, 1e-5);
  cudaFree(da), cudaFree(dbb), cudaFree(dw), cudaFree(out);
}

// tc_split_pair (the tensor-core GEMM's split of x into bf16 terms: one cvt.rn.bf16x2.f32 a
// term on the device) of the pairs x[2i], x[2i + 1] into out[Terms i ..].
template <int Terms>
__global__ void split_pair_kernel(const float *x, int pairs, uint32_t *out) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < pairs) {
    uint32_t packed[Terms];
    detail::tc_split_pair<Terms>(x[2 * i], x[2 * i + 1], packed);
    for (int t = 0; t < Terms; ++t)
      out[Terms * i + t] = packed[t];
  }
}

// tc_unit (TcLoad<W>'s fetch, then unpack) of every unit of an [R, K] weight on the device.
template <class W, int R, int K>
__global__ void tc_units_kernel(const W *w, uint4 *out) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  constexpr int V = detail::TcLoad<W>::kUnitValues, units = K / V;
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < R * units)
    detail::tc_unit(w, R, K, i / units, (i % units) * V, out + static_cast<size_t>(i) * (V / 8));
}

// The tensor-core tiles' weight units unpacked on the device (PRMT and fma.rn.bf16x2 for
// q4_K and q6_K) against the host's (float arithmetic) bit for bit, over random bytes: every
// nibble and every high-bit pattern. (The host's are held to the dequantizers in
// tc_host_test.)
template <class W> void test_tc_units(const char *name) {
  constexpr int R = 24, K = 512, V = detail::TcLoad<W>::kUnitValues;
  std::vector<uint8_t> bytes(static_cast<size_t>(R) * K / phimoe_rt::kQK_K * sizeof(W));
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t &b : bytes)
    b = static_cast<uint8_t>(byte(rng));
  const size_t words = static_cast<size_t>(R) * K / 8;
  uint8_t *dw = upload(bytes);
  uint4 *dout = device<uint4>(words);
  PHIMOE_CUDA_LAUNCH(detail::blocks_for(R * (K / V), 128), 128, 0, nullptr,
                     tc_units_kernel<W, R, K>)
  (reinterpret_cast<const W *>(dw), dout);
  PHIMOE_CUDA_CHECK_LAUNCH();
  PHIMOE_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<uint4> got(words), want(words);
  PHIMOE_CUDA_CHECK(cudaMemcpy(got.data(), dout, words * 16, cudaMemcpyDeviceToHost));
  const W *hw = reinterpret_cast<const W *>(bytes.data());
  for (int r = 0; r < R; ++r)
    for (int k0 = 0; k0 < K; k0 += V)
      detail::tc_unit(hw, R, K, r, k0, want.data() + (static_cast<size_t>(r) * K + k0) / 8);
  const int wrong = static_cast<int>(words) - static_cast<int>(std::count_if(
      got.begin(), got.end(), [&](const uint4 &g) {
        const uint4 &h = want[&g - got.data()];
        return g.x == h.x && g.y == h.y && g.z == h.z && g.w == h.w;
      }));
  std::printf("%s tc_unit<%s> on the device == on the host: %zu values, %d groups of 8 differ\n",
              wrong ? "FAIL" : "PASS", name, words * 8, wrong);
  failures += wrong != 0;
  cudaFree(dw), cudaFree(dout);
}

// The device's split against the host's tc_split (bit arithmetic), every term bit for bit
// (a nan's payload aside): floats over 100 binades, subnormals, ±0, ±inf, nan, and values
// that round to inf in bf16 (past its largest finite value) or carry up a binade.
template <int Terms> void test_tc_split_pair() {
  std::vector<float> x;
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  for (int i = 0; i < 20000; ++i)
    x.push_back((i % 2 ? -1.0f : 1.0f) * std::ldexp(mant(rng), i % 100 - 60));
  for (float v : {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-40f, -3e-39f, 1.4e-45f, FLT_MAX,
                  -FLT_MAX, 3.3961e38f, 3.3895e38f, 1.00390625f, 1.0039063f, 255.5f})
    x.push_back(v);
  if (x.size() % 2)
    x.push_back(1.0f);
  const int pairs = static_cast<int>(x.size() / 2);
  float *dx = upload(x);
  uint32_t *dout = device<uint32_t>(static_cast<size_t>(Terms) * pairs);
  PHIMOE_CUDA_LAUNCH(detail::blocks_for(pairs, 128), 128, 0, nullptr, split_pair_kernel<Terms>)
  (dx, pairs, dout);
  PHIMOE_CUDA_CHECK_LAUNCH();
  PHIMOE_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<uint32_t> got(static_cast<size_t>(Terms) * pairs);
  PHIMOE_CUDA_CHECK(cudaMemcpy(got.data(), dout, got.size() * 4, cudaMemcpyDeviceToHost));
  int wrong = 0;
  size_t first = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    uint16_t want[Terms];
    detail::tc_split<Terms>(x[i], want);
    for (int t = 0; t < Terms; ++t) {
      const uint16_t g = static_cast<uint16_t>(got[Terms * (i / 2) + t] >> (16 * (i % 2)));
      const bool same = g == want[t] || (std::isnan(detail::bf16_bits(g)) &&
                                          std::isnan(detail::bf16_bits(want[t])));
      if (!same && wrong++ == 0)
        first = i;
    }
  }
  std::printf("%s tc_split_pair<%d> on the device == tc_split: %zu values, %d terms differ "
              "(first: %zu)\n", wrong ? "FAIL" : "PASS", Terms, x.size(), wrong, first);
  failures += wrong != 0;
  cudaFree(dx), cudaFree(dout);
}

// tc_split_rows (tc_split_kernel) against tc_split_row_serial: every term and tile sum bit for
// bit (a nan may differ in its payload), zeros past K; x at an offset of `offset` floats (1:
// not 16-byte aligned, the scalar loads), with infs, nans and subnormals among the values.
template <int K> void test_tc_split_rows(int n, int offset) {
  constexpr int S = detail::tc_stride<K>(), T = kTcXTerms;
  std::vector<float> x = random_floats(static_cast<size_t>(n) * K + offset, 3.0f);
  for (size_t i = 0; i < x.size(); i += 97)
    x[i] = std::ldexp(x[i], static_cast<int>(i % 250) - 125); // subnormal to huge
  x[offset + K / 3] = INFINITY, x[offset + K + 5] = NAN, x[offset + 2] = -INFINITY;
  std::vector<uint16_t> want_terms(static_cast<size_t>(n) * T * S);
  std::vector<float> want_sums(static_cast<size_t>(n) * (S / 32));
  for (int t = 0; t < n; ++t)
    detail::tc_split_row_serial<K, T>(x.data() + offset, t, want_terms.data(), want_sums.data());
  Context ctx;
  tc_workspace(ctx, tc_split_bytes(n, K));
  PHIMOE_CUDA_CHECK(cudaMemset(ctx.tc_split, 0x7f, ctx.tc_split_capacity)); // poisoned
  float *dx = upload(x);
  const detail::TcX got = detail::tc_split_rows<K>(ctx, dx + offset, n, "test");
  PHIMOE_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<uint16_t> terms(want_terms.size());
  std::vector<float> sums(want_sums.size());
  PHIMOE_CUDA_CHECK(cudaMemcpy(terms.data(), got.terms, terms.size() * 2, cudaMemcpyDeviceToHost));
  PHIMOE_CUDA_CHECK(cudaMemcpy(sums.data(), got.sums, sums.size() * 4, cudaMemcpyDeviceToHost));
  int wrong = 0;
  for (size_t i = 0; i < terms.size(); ++i)
    wrong += terms[i] != want_terms[i] && !(std::isnan(detail::bf16_bits(terms[i])) &&
                                            std::isnan(detail::bf16_bits(want_terms[i])));
  for (size_t i = 0; i < sums.size(); ++i)
    wrong += std::memcmp(&sums[i], &want_sums[i], 4) != 0 &&
             !(std::isnan(sums[i]) && std::isnan(want_sums[i]));
  std::printf("%s tc_split_rows<%d> n=%d x at +%d floats == tc_split_row_serial: %d of %zu "
              "differ\n", wrong ? "FAIL" : "PASS", K, n, offset, wrong,
              terms.size() + sums.size());
  failures += wrong != 0;
  cudaFree(dx), cudaFree(ctx.tc_split);
}

// tc_split_rows without room for the rows (no workspace, or one row too few) refuses with an
// error that names the launcher, before it launches anything.
void test_tc_split_room() {
  constexpr int K = 100, n = 9;
  float *dx = device<float>(static_cast<size_t>(n) * K);
  Context ctx;
  auto refused = [&](const char *what) {
    try {
      detail::tc_split_rows<K>(ctx, dx, n, "linear");
    } catch (const std::runtime_error &e) {
      const bool named = std::strstr(e.what(), "linear: no room to split 9 rows") != nullptr;
      std::printf("%s tc_split_rows %s: \"%s\"\n", named ? "PASS" : "FAIL", what, e.what());
      failures += !named;
      return;
    }
    std::printf("FAIL tc_split_rows %s: no error\n", what);
    ++failures;
  };
  refused("without a workspace");
  tc_workspace(ctx, tc_split_bytes(n - 1, K));
  refused("with room for one row too few");
  cudaFree(dx), cudaFree(ctx.tc_split);
}

// Row blockIdx.x of E logits routed by warp_sparsemixer (one warp), and by
// phimoe_rt::sparsemixer on thread 0 (the sequential device code it replaced).
template <int E>
__global__ void warp_sparsemixer_kernel(const float *logits, float eps, DeviceRoute *out) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  const phimoe_rt::Route r = detail::warp_sparsemixer<E>(logits + blockIdx.x * E, eps);
  if (threadIdx.x == 0)
    out[blockIdx.x] = DeviceRoute{r.i1, r.i2, r.w1, r.w2};
}
template <int E>
__global__ void serial_sparsemixer_kernel(const float *logits, float eps, DeviceRoute *out) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  if (threadIdx.x == 0) {
    const phimoe_rt::Route r = phimoe_rt::sparsemixer<E>(logits + blockIdx.x * E, eps);
    out[blockIdx.x] = DeviceRoute{r.i1, r.i2, r.w1, r.w2};
  }
}

// warp_sparsemixer against the sequential routing on the device, bit for bit (weights too:
// the same device expf), and the experts against the host's: random rows, and rows whose
// logits tie (at the maximum, at the second), lie within the jitter threshold of the
// maximum, are all equal, hold -inf, -0 and +0, or a nan (first, or later).
template <int E> void test_warp_sparsemixer() {
  // (its own generator: the other tests' inputs do not depend on whether this one ran)
  std::mt19937 gen(E);
  auto random_floats = [&gen](size_t n, float scale = 1.0f, float offset = 0.0f) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> v(n);
    for (float &x : v)
      x = d(gen) * scale + offset;
    return v;
  };
  std::vector<std::vector<float>> rows;
  for (int i = 0; i < 40; ++i)
    rows.push_back(random_floats(E, i < 20 ? 1.0f : 0.01f, i % 3 == 0 ? -2.0f : 0.5f));
  std::vector<float> tie = random_floats(E);
  tie[E - 1] = tie[E / 2] = tie[1] = 9.0f; // three at the maximum
  rows.push_back(tie);
  tie[E / 2] = 3.0f, tie[E - 1] = 3.0f; // one maximum, two seconds
  rows.push_back(tie);
  std::vector<float> close = random_floats(E, 0.1f);
  close[0] = 5.0f, close[E - 1] = 5.0f * (1.0f - 0.015f); // within 2 eps of the maximum
  rows.push_back(close);
  rows.push_back(std::vector<float>(E, 1.5f));
  rows.push_back(std::vector<float>(E, -INFINITY));
  std::vector<float> mixed(E, -INFINITY);
  mixed[E - 1] = 0.0f, mixed[1] = -0.0f; // -0 == +0: the first of them
  rows.push_back(mixed);
  std::vector<float> neg = random_floats(E, 1.0f, -30.0f); // negative maxima
  rows.push_back(neg);
  std::vector<float> nan_first = random_floats(E);
  nan_first[0] = NAN;
  rows.push_back(nan_first);
  std::vector<float> nan_later = random_floats(E);
  nan_later[E - 2] = NAN, nan_later[1] = 40.0f;
  rows.push_back(nan_later);
  std::vector<float> nan_second = random_floats(E);
  nan_second[0] = 40.0f, nan_second[1] = NAN; // stage 2 starts at a nan
  rows.push_back(nan_second);
  const int n = static_cast<int>(rows.size());
  std::vector<float> flat;
  for (const std::vector<float> &r : rows)
    flat.insert(flat.end(), r.begin(), r.end());
  float *dl = upload(flat);
  DeviceRoute *warp = device<DeviceRoute>(n), *serial = device<DeviceRoute>(n);
  PHIMOE_CUDA_LAUNCH(n, 32, 0, nullptr, warp_sparsemixer_kernel<E>)(dl, 0.01f, warp);
  PHIMOE_CUDA_CHECK_LAUNCH();
  PHIMOE_CUDA_LAUNCH(n, 32, 0, nullptr, serial_sparsemixer_kernel<E>)(dl, 0.01f, serial);
  PHIMOE_CUDA_CHECK_LAUNCH();
  std::vector<DeviceRoute> got(n), want(n);
  PHIMOE_CUDA_CHECK(cudaMemcpy(got.data(), warp, sizeof(DeviceRoute) * n,
                               cudaMemcpyDeviceToHost));
  PHIMOE_CUDA_CHECK(cudaMemcpy(want.data(), serial, sizeof(DeviceRoute) * n,
                               cudaMemcpyDeviceToHost));
  int wrong = 0, first_wrong = -1;
  for (int t = 0; t < n; ++t) {
    const phimoe_rt::Route host = phimoe_rt::sparsemixer<E>(rows[t].data(), 0.01f);
    const bool same = std::memcmp(&got[t], &want[t], sizeof(DeviceRoute)) == 0 &&
                      got[t].i1 == host.i1 && got[t].i2 == host.i2;
    if (!same && first_wrong < 0)
      first_wrong = t;
    wrong += !same;
  }
  std::printf("%s warp_sparsemixer<%d>: %d rows, %d differ from the sequential routing "
              "(first: row %d)\n", wrong ? "FAIL" : "PASS", E, n, wrong, first_wrong);
  failures += wrong != 0;
  cudaFree(dl), cudaFree(warp), cudaFree(serial);
}

// add_layer_norm_route against add_layer_norm then router_kernel (what moe_sparsemixer
// launches) on the same inputs: the sum, the normed rows and the routes, bit for bit (the same
// device functions).
template <int H, int E, class R> void test_add_norm_route(int n) {
  std::vector<float> a = random_floats(static_cast<size_t>(n) * H, 1.0f, 3.0f);
  std::vector<float> b = random_floats(a.size()), w = random_floats(H, 0.1f, 1.0f),
                     bias = random_floats(H, 0.1f);
  Weight<R> router = make_weight<R>(E, H);
  float *da1 = upload(a), *da2 = upload(a), *dbb = upload(b), *dw = upload(w),
        *dbias = upload(bias), *out1 = device<float>(a.size()), *out2 = device<float>(a.size());
  uint8_t *dr = upload(router.bytes);
  const R *r = reinterpret_cast<const R *>(dr);
  DeviceRoute *routes1 = device<DeviceRoute>(n), *routes2 = device<DeviceRoute>(n);
  Context ctx;
  add_layer_norm<H>(ctx, da1, dbb, n, dw, dbias, 1e-5f, da1, out1);
  PHIMOE_CUDA_LAUNCH(n, detail::kThreads, sizeof(float) * (H + E), ctx.stream,
                     detail::router_kernel<E, H, R>)
  (out1, r, 0.01f, routes1);
  PHIMOE_CUDA_CHECK_LAUNCH();
  ctx.routes = routes2;
  add_layer_norm_route<H, E>(ctx, da2, dbb, n, dw, dbias, 1e-5f, da2, out2, r, 0.01f);
  const std::vector<float> sum1 = download(da1, a.size()), norm1 = download(out1, a.size());
  char label[96];
  std::snprintf(label, sizeof label, "add_layer_norm_route<%d,%d> n=%d (sum)", H, E, n);
  check(label, download(da2, a.size()), std::vector<double>(sum1.begin(), sum1.end()), 0.0);
  std::snprintf(label, sizeof label, "add_layer_norm_route<%d,%d> n=%d (out)", H, E, n);
  check(label, download(out2, a.size()), std::vector<double>(norm1.begin(), norm1.end()), 0.0);
  std::vector<DeviceRoute> want(n), got(n);
  PHIMOE_CUDA_CHECK(cudaMemcpy(want.data(), routes1, sizeof(DeviceRoute) * n,
                               cudaMemcpyDeviceToHost));
  PHIMOE_CUDA_CHECK(cudaMemcpy(got.data(), routes2, sizeof(DeviceRoute) * n,
                               cudaMemcpyDeviceToHost));
  bool same = true;
  for (int t = 0; t < n; ++t)
    same = same && got[t].i1 == want[t].i1 && got[t].i2 == want[t].i2 &&
           got[t].w1 == want[t].w1 && got[t].w2 == want[t].w2 && want[t].i1 != want[t].i2;
  std::printf("%s add_layer_norm_route<%d,%d> n=%d: routes equal router_kernel's\n",
              same ? "PASS" : "FAIL", H, E, n);
  failures += !same;
  cudaFree(da1), cudaFree(da2), cudaFree(dbb), cudaFree(dw), cudaFree(dbias), cudaFree(out1);
  cudaFree(out2), cudaFree(dr), cudaFree(routes1), cudaFree(routes2);
}

// R < D: rope_partial (phi-2's partial rotary), the first R lanes of each head rotate and the
// others pass through; out of place, so that the copy of those lanes is checked too.
template <int Heads, int D, int R = D> void test_rope(bool rope_long) {
  const int n = 5;
  std::vector<int32_t> pos = {0, 1, 17, 300, 4097};
  std::vector<float> x = random_floats(static_cast<size_t>(n) * Heads * D);
  std::vector<float> sf(R / 2), lf(R / 2);
  for (int i = 0; i < R / 2; ++i)
    sf[i] = 1.0f + 0.01f * i, lf[i] = 1.0f + 0.3f * i;
  phimoe_rt::RopeParams p{10000.0f, 4096, 1.1f, 1.25f, sf.data(), lf.data()};
  std::vector<double> want(x.begin(), x.end());
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < R / 2; ++i) {
      const float *f = rope_long ? lf.data() : sf.data();
      const double m = rope_long ? 1.25 : 1.1;
      const float inv = 1.0f / (f[i] * std::pow(10000.0f, static_cast<float>(2 * i) / R));
      const double angle = static_cast<double>(static_cast<float>(pos[t]) * inv);
      const double c = std::cos(angle) * m, s = std::sin(angle) * m;
      for (int h = 0; h < Heads; ++h) {
        const size_t base = (static_cast<size_t>(t) * Heads + h) * D;
        want[base + i] = x[base + i] * c - x[base + i + R / 2] * s;
        want[base + i + R / 2] = x[base + i + R / 2] * c + x[base + i] * s;
      }
    }
  Context ctx;
  ctx.rope_long = rope_long;
  float *dx = upload(x);
  int32_t *dp = upload(pos);
  if constexpr (R < D) {
    float *out = device<float>(x.size());
    rope_partial<Heads, D, R>(ctx, dx, n, dp, p, out);
    check(rope_long ? "rope_partial (long set)" : "rope_partial (short set)",
          download(out, x.size()), want, 2e-5);
    cudaFree(out);
  } else {
    rope<Heads, D>(ctx, dx, n, dp, p, dx); // in place, as the generated code may do
    check(rope_long ? "rope (long set, in place)" : "rope (short set, in place)",
          download(dx, x.size()), want, 2e-5);
  }
  cudaFree(dx), cudaFree(dp);
}

// add: a + b, into a third buffer and in place.
template <int W> void test_add(int n) {
  std::vector<float> a = random_floats(static_cast<size_t>(n) * W);
  std::vector<float> b = random_floats(static_cast<size_t>(n) * W);
  std::vector<double> want(a.size());
  for (size_t i = 0; i < a.size(); ++i)
    want[i] = static_cast<double>(a[i] + b[i]);
  Context ctx;
  float *da = upload(a), *db = upload(b), *out = device<float>(a.size());
  add<W>(ctx, da, db, n, out);
  check("add", download(out, a.size()), want, 0.0);
  add<W>(ctx, da, db, n, da);
  check("add (in place)", download(da, a.size()), want, 0.0);
  cudaFree(da), cudaFree(db), cudaFree(out);
}

// Causal GQA of the n query rows at `pos` against a written cache [layer][position][Hkv][D].
template <int Hq, int Hkv, int D>
std::vector<double> attention_ref(const std::vector<float> &q, const std::vector<float> &kw,
                                  const std::vector<float> &vw, const std::vector<int32_t> &pos,
                                  int layer, int capacity, int window) {
  const int n = static_cast<int>(pos.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<double> want(q.size());
  for (int i = 0; i < n; ++i)
    for (int h = 0; h < Hq; ++h) {
      const int kvh = h / (Hq / Hkv), p = pos[i], lo = window > 0 ? std::max(0, p - window + 1) : 0;
      std::vector<double> s(p - lo + 1);
      double mx = -INFINITY, sum = 0;
      for (int j = lo; j <= p; ++j) {
        double d = 0;
        for (int c = 0; c < D; ++c)
          d += static_cast<double>(q[(i * Hq + h) * D + c]) *
               kw[((static_cast<size_t>(layer) * capacity + j) * Hkv + kvh) * D + c];
        s[j - lo] = d * scale;
        mx = std::max(mx, s[j - lo]);
      }
      for (double &x : s)
        sum += x = std::exp(x - mx);
      for (int c = 0; c < D; ++c) {
        double o = 0;
        for (int j = lo; j <= p; ++j)
          o += s[j - lo] / sum *
               vw[((static_cast<size_t>(layer) * capacity + j) * Hkv + kvh) * D + c];
        want[(static_cast<size_t>(i) * Hq + h) * D + c] = o;
      }
    }
  return want;
}

// RoPE of the keys fused with the cache write (rope_kv_write), then attention<..., true> on
// the cache it wrote: the new rows at positions past..past+n-1, the LongRoPE set `rope_long`.
template <int Hq, int Hkv, int D> void test_rope_kv_write(int past, int n, bool rope_long) {
  const int capacity = past + n + 2, layers = 3, layer = 2;
  constexpr int row = Hkv * D, half = D / 2;
  std::vector<float> kc, vc, q, k, v;
  random_attention_inputs(layers, capacity, n, Hq * D, row, kc, vc, q, k, v);
  const RopeInputs rope_in(past, n, half);
  const std::vector<int32_t> &pos = rope_in.pos;
  const std::vector<float> &sf = rope_in.sf, &lf = rope_in.lf;
  const phimoe_rt::RopeParams &p = rope_in.p;
  std::vector<float> kw = kc, vw = vc;
  for (int i = 0; i < n; ++i) {
    const size_t dst = (static_cast<size_t>(layer) * capacity + pos[i]) * row;
    for (int h = 0; h < Hkv; ++h)
      for (int j = 0; j < half; ++j) {
        const float *f = rope_long ? lf.data() : sf.data();
        const double m = rope_long ? 1.25 : 1.1;
        const float inv = 1.0f / (f[j] * std::pow(10000.0f, static_cast<float>(2 * j) / D));
        const double angle = static_cast<double>(static_cast<float>(pos[i]) * inv);
        const double c = std::cos(angle) * m, s = std::sin(angle) * m;
        const float a = k[i * row + h * D + j], b = k[i * row + h * D + j + half];
        kw[dst + h * D + j] = static_cast<float>(a * c - b * s);
        kw[dst + h * D + j + half] = static_cast<float>(b * c + a * s);
      }
    for (int j = 0; j < row; ++j)
      vw[dst + j] = v[i * row + j];
  }
  Context ctx = cache_context(kc, vc, layers, capacity, Hkv, D, past + n,
                              static_cast<size_t>(n) * Hq * (D + 2) * 64);
  ctx.rope_long = rope_long;
  float *dq = upload(q), *dk = upload(k), *dv = upload(v), *out = device<float>(q.size());
  int32_t *dp = upload(pos);
  rope_kv_write<Hkv, D>(ctx, dk, dv, n, dp, p, layer);
  attention<Hq, Hkv, D, true>(ctx, dq, nullptr, nullptr, n, dp, layer,
                              1.0f / std::sqrt(static_cast<float>(D)), 0, out);
  std::vector<double> kwd(kw.begin(), kw.end()), vwd(vw.begin(), vw.end());
  char label[96];
  std::snprintf(label, sizeof label, "rope_kv_write<%d,%d> %s: k cache", Hkv, D,
                rope_long ? "long" : "short");
  check(label, download(ctx.k_cache, kw.size()), kwd, 2e-6);
  check("rope_kv_write: v cache", download(ctx.v_cache, vw.size()), vwd, 0.0);
  std::snprintf(label, sizeof label, "attention<%d,%d,%d,KvWritten> past=%d n=%d", Hq, Hkv, D,
                past, n);
  check(label, download(out, q.size()),
        attention_ref<Hq, Hkv, D>(q, kw, vw, pos, layer, capacity, 0), 1e-5);
  free_cache_context(ctx);
  cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(out), cudaFree(dp);
}

// Flash-decoding's merge of its splits done the other way: `run` again with the merge as a
// kernel of its own, whose output must equal `fused` (the same run, merged in the first
// half's last blocks) bit for bit; and the first half's counters back at zero, where the next
// launch or a graph's replay starts from.
template <class Run>
void check_combine_kernel(const char *label, const Context &ctx, Run run,
                          const std::vector<float> &fused, float *out) {
  std::vector<int> counters(ctx.counter_ints);
  PHIMOE_CUDA_CHECK(cudaDeviceSynchronize());
  PHIMOE_CUDA_CHECK(cudaMemcpy(counters.data(), ctx.counters, counters.size() * sizeof(int),
                               cudaMemcpyDeviceToHost));
  const size_t nonzero = counters.size() - std::count(counters.begin(), counters.end(), 0);
  char what[160];
  if (nonzero != 0) {
    std::printf("FAIL %s: %zu merge counters not back at zero\n", label, nonzero);
    ++failures;
  }
  detail::attention_combine_mode() = 0;
  poison(out, fused.size());
  run();
  detail::attention_combine_mode() = -1;
  std::snprintf(what, sizeof what, "%s: the merge kernel against the last blocks", label);
  check(what, download(out, fused.size()), std::vector<double>(fused.begin(), fused.end()), 0.0);
}

// serve's batches (Context::pages): rows of several sequences over a paged cache of blocks of
// `bs` positions, each sequence's blocks scattered through the pool by its block table, each
// row with its own LongRoPE set. The queries' rope, the keys' rope fused with the cache write
// and attention (every first half, and the tensor-core kernel asked for: it must not take
// these rows), against per-sequence references. A row whose position has no block, or whose
// window reaches a position without one, gives nan and writes nothing.
template <int Hq, int Hkv, int D> void test_paged(int bs, int window) {
  constexpr int row = Hkv * D, half = D / 2;
  const int layers = 2, layer = 1, slots = 5, max_blocks = (300 + bs - 1) / bs;
  // Per slot: cached positions, then new rows; slot 3 lacks the block of its position 0 (its
  // rows give nan unless a window keeps them off it), slot 4 lacks the block of its new row.
  const int cached[slots] = {37, 0, 130, 2 * bs + 3, 5 * bs};
  const int fresh[slots] = {1, 70, 1, 2, 1};
  int blocks = 0;
  std::vector<int32_t> table(static_cast<size_t>(slots) * max_blocks, -1);
  for (int s = 0; s < slots; ++s)
    blocks += (cached[s] + fresh[s] + bs - 1) / bs;
  std::vector<int32_t> order(blocks);
  for (int b = 0; b < blocks; ++b)
    order[b] = b;
  std::shuffle(order.begin(), order.end(), rng);
  for (int s = 0, next = 0; s < slots; ++s)
    for (int i = 0; i < (cached[s] + fresh[s] + bs - 1) / bs; ++i)
      table[static_cast<size_t>(s) * max_blocks + i] = order[next++];
  table[3 * static_cast<size_t>(max_blocks)] = -1;
  table[4 * static_cast<size_t>(max_blocks) + 5] = -1;
  if (window > 0) // slot 1's 70 rows (a tensor-core run): nan while their window [lo, p]
    table[1 * static_cast<size_t>(max_blocks) + 1] = -1; // reaches block 1 (or spans it)
  std::vector<int32_t> pos, slot;
  std::vector<uint8_t> longs;
  for (int s = 0; s < slots; ++s)
    for (int i = 0; i < fresh[s]; ++i) {
      pos.push_back(cached[s] + i);
      slot.push_back(s);
      longs.push_back(static_cast<uint8_t>((s + i) % 2));
    }
  const int n = static_cast<int>(pos.size());
  const int capacity = blocks * bs;
  std::vector<float> kc, vc, q, k, v;
  random_attention_inputs(layers, capacity, n, Hq * D, row, kc, vc, q, k, v);
  std::vector<float> sf(half), lf(half);
  for (int i = 0; i < half; ++i)
    sf[i] = 1.0f + 0.02f * i, lf[i] = 1.5f + 0.25f * i;
  phimoe_rt::RopeParams p{10000.0f, 64, 1.1f, 1.25f, sf.data(), lf.data()};
  // x rotated as row t's set and position say.
  auto rotate = [&](const float *x, int t, double *out) {
    const float *f = longs[t] ? lf.data() : sf.data();
    const double m = longs[t] ? 1.25 : 1.1;
    for (int j = 0; j < half; ++j) {
      const float inv = 1.0f / (f[j] * std::pow(10000.0f, static_cast<float>(2 * j) / D));
      const double angle = static_cast<double>(static_cast<float>(pos[t]) * inv);
      const double c = std::cos(angle) * m, sn = std::sin(angle) * m;
      out[j] = x[j] * c - x[j + half] * sn;
      out[j + half] = x[j + half] * c + x[j] * sn;
    }
  };
  auto where = [&](int s, int j) -> long long { // the cache row of position j of slot s
    const int b = table[static_cast<size_t>(s) * max_blocks + j / bs];
    return b < 0 ? -1 : static_cast<long long>(layer) * capacity + b * bs + j % bs;
  };
  std::vector<float> kw = kc, vw = vc;
  std::vector<double> qr(q.size());
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < Hq; ++h)
      rotate(&q[(static_cast<size_t>(t) * Hq + h) * D], t,
             &qr[(static_cast<size_t>(t) * Hq + h) * D]);
    const long long at = where(slot[t], pos[t]);
    if (at < 0)
      continue;
    double rk[D];
    for (int h = 0; h < Hkv; ++h) {
      rotate(&k[static_cast<size_t>(t) * row + h * D], t, rk);
      for (int j = 0; j < D; ++j)
        kw[at * row + h * D + j] = static_cast<float>(rk[j]);
    }
    for (int j = 0; j < row; ++j)
      vw[at * row + j] = v[static_cast<size_t>(t) * row + j];
  }
  // Attention of each row over its own sequence, gathered into a contiguous cache.
  std::vector<double> want(q.size());
  for (int t = 0; t < n; ++t) {
    const int lo = window > 0 ? std::max(0, pos[t] - window + 1) : 0;
    bool mapped = true;
    for (int j = lo; j <= pos[t]; ++j)
      mapped = mapped && where(slot[t], j) >= 0;
    double *o = &want[static_cast<size_t>(t) * Hq * D];
    if (!mapped) {
      std::fill(o, o + Hq * D, NAN);
      continue;
    }
    std::vector<float> kt(static_cast<size_t>(pos[t] + 1) * row), vt(kt.size()), qt(Hq * D);
    for (int j = lo; j <= pos[t]; ++j)
      for (int c = 0; c < row; ++c) {
        kt[static_cast<size_t>(j) * row + c] = kw[where(slot[t], j) * row + c];
        vt[static_cast<size_t>(j) * row + c] = vw[where(slot[t], j) * row + c];
      }
    for (int c = 0; c < Hq * D; ++c)
      qt[c] = static_cast<float>(qr[static_cast<size_t>(t) * Hq * D + c]);
    const std::vector<double> r =
        attention_ref<Hq, Hkv, D>(qt, kt, vt, {pos[t]}, 0, pos[t] + 1, window);
    std::copy(r.begin(), r.end(), o);
  }
  Context ctx = cache_context(kc, vc, layers, capacity, Hkv, D,
                              *std::max_element(pos.begin(), pos.end()) + 1,
                              static_cast<size_t>(n) * Hq * (D + 2) * 4);
  ctx.rope_long = true; // must not matter: each row's set counts
  ctx.pages.block_table = upload(table);
  ctx.pages.row_slot = upload(slot);
  ctx.pages.row_long = upload(longs);
  ctx.pages.max_blocks = max_blocks;
  while ((1 << ctx.pages.block_shift) < bs)
    ++ctx.pages.block_shift;
  float *dq = upload(q), *dk = upload(k), *dv = upload(v), *out = device<float>(q.size());
  int32_t *dp = upload(pos);
  char label[128];
  rope<Hq, D>(ctx, dq, n, dp, p, dq);
  std::snprintf(label, sizeof label, "paged rope<%d,%d> (each row's set)", Hq, D);
  check(label, download(dq, q.size()), qr, 2e-5);
  rope_kv_write<Hkv, D>(ctx, dk, dv, n, dp, p, layer);
  std::snprintf(label, sizeof label, "paged rope_kv_write<%d,%d> bs=%d: k cache", Hkv, D, bs);
  check(label, download(ctx.k_cache, kw.size()), std::vector<double>(kw.begin(), kw.end()), 2e-6);
  check("paged rope_kv_write: v cache", download(ctx.v_cache, vw.size()),
        std::vector<double>(vw.begin(), vw.end()), 0.0);
  // The rotated queries as the reference has them (the kernel's rounding aside).
  PHIMOE_CUDA_CHECK(cudaMemcpy(dq, std::vector<float>(qr.begin(), qr.end()).data(),
                               q.size() * sizeof(float), cudaMemcpyHostToDevice));
  // The runs of one sequence's consecutive positions, as BatchBackend finds them: slot 1's 70
  // rows are one, which takes the tensor-core kernel (the rows before and after it, the SIMT
  // kernels); without runs, or for D that the tensor cores do not take, every row is SIMT.
  std::vector<int32_t> runs;
  find_runs(slot.data(), pos.data(), n, runs);
  if (runs.size() != 2 * 5 || runs[2] != 1 || runs[3] != 70) {
    std::printf("FAIL find_runs: %zu runs, the second (%d, %d) (want 5, (1, 70))\n",
                runs.size() / 2, runs[2], runs[3]);
    ++failures;
  }
  const char *how[] = {"", " (grouped heads)", " (runs on tensor cores)", " (tc, no runs)"};
  for (int run = 0; run < 4; ++run) {
    if (run == 1 && Hq / Hkv < 2)
      continue;
    detail::attention_grouping() = run == 1;
    detail::attention_tc_mode() = run >= 2;
    ctx.pages.runs = run == 2 ? runs.data() : nullptr;
    ctx.pages.run_count = run == 2 ? static_cast<int>(runs.size() / 2) : 0;
    auto attend = [&] {
      attention<Hq, Hkv, D, true>(ctx, dq, nullptr, nullptr, n, dp, layer,
                                  1.0f / std::sqrt(static_cast<float>(D)), window, out);
    };
    poison(out, q.size());
    attend();
    std::snprintf(label, sizeof label, "paged attention<%d,%d,%d> bs=%d window=%d%s", Hq, Hkv, D,
                  bs, window, how[run]);
    const std::vector<float> got = download(out, q.size());
    check(label, got, want, 1e-5);
    if (run < 2)
      check_combine_kernel(label, ctx, attend, got, out);
  }
  detail::attention_grouping() = -1;
  detail::attention_tc_mode() = -1;
  free_cache_context(ctx);
  cudaFree(const_cast<int32_t *>(ctx.pages.block_table));
  cudaFree(const_cast<int32_t *>(ctx.pages.row_slot));
  cudaFree(const_cast<uint8_t *>(ctx.pages.row_long));
  cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(out), cudaFree(dp);
}

// A cache of `past` positions, then n new rows at positions past..past+n-1.
template <int Hq, int Hkv, int D> void test_attention(int past, int n, int window) {
  const int capacity = past + n + 3, layers = 2, layer = 1;
  constexpr int row = Hkv * D;
  std::vector<float> kc, vc, q, k, v;
  random_attention_inputs(layers, capacity, n, Hq * D, row, kc, vc, q, k, v);
  std::vector<int32_t> pos(n);
  for (int i = 0; i < n; ++i)
    pos[i] = past + i;
  // The expected cache after the write, then attention over it.
  std::vector<float> kw = kc, vw = vc;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < row; ++j) {
      kw[(static_cast<size_t>(layer) * capacity + pos[i]) * row + j] = k[i * row + j];
      vw[(static_cast<size_t>(layer) * capacity + pos[i]) * row + j] = v[i * row + j];
    }
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const std::vector<double> want =
      attention_ref<Hq, Hkv, D>(q, kw, vw, pos, layer, capacity, window);
  Context ctx = cache_context(kc, vc, layers, capacity, Hkv, D, past + n,
                              static_cast<size_t>(n) * Hq * (D + 2) * 64);
  float *dq = upload(q), *dk = upload(k), *dv = upload(v), *out = device<float>(q.size());
  int32_t *dp = upload(pos);
  // Every kernel that may take these rows: the SIMT first halves, a block per query head and,
  // where heads can be grouped, a block per KV head for its group; for chunks of kFaMinRows
  // rows or more, the tensor-core kernel (attention_tc.cuh). Each against the reference, and
  // against the first.
  const bool groups = Hq / Hkv >= 2;
  const bool tc = detail::fa_supported<D>() && n >= detail::kFaMinRows;
  std::vector<float> first;
  for (int run = 0; run < 3; ++run) {
    if ((run == 1 && !groups) || (run == 2 && !tc))
      continue;
    detail::attention_grouping() = run == 1;
    detail::attention_tc_mode() = run == 2;
    poison(out, q.size());
    attention<Hq, Hkv, D>(ctx, dq, dk, dv, n, dp, layer, scale, window, out);
    const char *how[] = {"", " (grouped heads)", " (tensor cores)"};
    char label[128];
    std::snprintf(label, sizeof label, "attention<%d,%d,%d> past=%d n=%d window=%d%s", Hq, Hkv,
                  D, past, n, window, how[run]);
    std::vector<float> got = download(out, q.size());
    check(label, got, want, 1e-5);
    if (run < 2)
      check_combine_kernel(
          label, ctx,
          [&] { attention<Hq, Hkv, D>(ctx, dq, dk, dv, n, dp, layer, scale, window, out); }, got,
          out);
    if (run == 0) {
      first = got;
    } else {
      std::snprintf(label, sizeof label, "attention:%s against a block per head", how[run]);
      check(label, got, std::vector<double>(first.begin(), first.end()), run == 1 ? 1e-6 : 1e-5);
    }
  }
  detail::attention_grouping() = -1;
  detail::attention_tc_mode() = -1;
  std::vector<double> kwd(kw.begin(), kw.end());
  check("attention: the k cache after the write", download(ctx.k_cache, kw.size()), kwd, 0.0);
  free_cache_context(ctx);
  cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(out), cudaFree(dp);
}

// A random float router of E rows over H, its rows spread (ten times the random weights):
// well-separated logits.
template <int E, int H> Weight<float> spread_router() {
  Weight<float> router = make_weight<float>(E, H);
  for (float &r : router.values)
    r *= 10.0f;
  std::memcpy(router.bytes.data(), router.values.data(), router.bytes.size());
  return router;
}

// The MoE workspace of n rows in ctx (routes, act rows and their staged copies, the grouped
// path's pairs, plan and outputs); free_moe_workspace frees it.
void moe_workspace(Context &ctx, int n, int E, int H, int I) {
  ctx.routes = device<DeviceRoute>(n);
  ctx.moe_act = device<float>(static_cast<size_t>(n) * 2 * I);
  ctx.moe_staged_words = static_cast<size_t>(n) * 2 * detail::StagedQ4k::words(I);
  ctx.moe_staged = device<uint32_t>(ctx.moe_staged_words);
  ctx.moe_pairs = device<int32_t>(2 * n);
  ctx.moe_plan_ints = detail::moe_plan_ints(E);
  ctx.moe_plan = device<int32_t>(ctx.moe_plan_ints);
  ctx.moe_y = device<float>(static_cast<size_t>(n) * 2 * H);
  tc_workspace(ctx, std::max(tc_split_bytes(n, H), tc_split_bytes(2 * n, I)));
}
void free_moe_workspace(Context &ctx) {
  cudaFree(ctx.routes), cudaFree(ctx.moe_act), cudaFree(ctx.moe_staged), cudaFree(ctx.moe_pairs);
  cudaFree(ctx.moe_plan), cudaFree(ctx.moe_y), cudaFree(ctx.tc_split);
}

// With `favour` >= 0, x has a positive mean and router row `favour` is pushed by `push`: every
// row routes to it (push > 0: one expert has all rows in one slot) or none does (push < 0).
// Softmax: Mixtral's routing (moe_softmax_top2) instead of the sparsemixer. Gelu (with
// Softmax): phixtral's phi-2 MLP experts (moe_softmax_top2_gelu), gate_up the fc1 rows [E, I, H]
// with biases b1 [E, I], and fc2 biases b2 [E, H].
template <int E, int H, int I, class W, bool Softmax = false, bool Gelu = false>
void test_moe(const char *name, int n, int favour = -1, float push = 0.0f) {
  static_assert(!Gelu || Softmax, "phixtral's experts come with softmax routing");
  Weight<float> router = spread_router<E, H>();
  if (favour >= 0)
    for (int k = 0; k < H; ++k)
      router.values[static_cast<size_t>(favour) * H + k] += push;
  std::memcpy(router.bytes.data(), router.values.data(), router.bytes.size());
  Weight<W> gate_up = make_weight<W>(static_cast<size_t>(E) * (Gelu ? 1 : 2) * I, H);
  Weight<W> down = make_weight<W>(static_cast<size_t>(E) * H, I);
  const std::vector<float> b1 = Gelu ? random_floats(static_cast<size_t>(E) * I)
                                     : std::vector<float>(1);
  const std::vector<float> b2 = Gelu ? random_floats(static_cast<size_t>(E) * H)
                                     : std::vector<float>(1);
  std::vector<float> x = random_floats(static_cast<size_t>(n) * H, 1.0f, favour >= 0 ? 2.0f : 0.0f);
  std::vector<double> want(static_cast<size_t>(n) * H);
  std::vector<DeviceRoute> routes(n);
  parallel_for(n, [&](int t) {
    float logits[E];
    for (int e = 0; e < E; ++e) {
      double s = 0;
      for (int k = 0; k < H; ++k)
        s += static_cast<double>(x[t * H + k]) * router.values[e * H + k];
      logits[e] = static_cast<float>(s);
    }
    const phimoe_rt::Route r =
        Softmax ? phimoe_rt::softmax_top2<E>(logits) : phimoe_rt::sparsemixer<E>(logits, 0.01f);
    routes[t] = DeviceRoute{r.i1, r.i2, r.w1, r.w2};
    std::vector<double> act(2 * I);
    for (int slot = 0; slot < 2; ++slot) {
      const size_t e = slot ? r.i2 : r.i1;
      for (int i = 0; i < I; ++i) {
        double g = 0, u = 0;
        if constexpr (Gelu) {
          for (int k = 0; k < H; ++k)
            g += static_cast<double>(x[t * H + k]) * gate_up.values[(e * I + i) * H + k];
          const double z = g + b1[e * I + i];
          act[slot * I + i] =
              0.5 * z * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (z + 0.044715 * z * z * z)));
          continue;
        }
        for (int k = 0; k < H; ++k) {
          g += static_cast<double>(x[t * H + k]) * gate_up.values[(e * 2 * I + i) * H + k];
          u += static_cast<double>(x[t * H + k]) * gate_up.values[(e * 2 * I + I + i) * H + k];
        }
        act[slot * I + i] = g / (1.0 + std::exp(-g)) * u;
      }
    }
    for (int h = 0; h < H; ++h) {
      double y1 = 0, y2 = 0;
      for (int i = 0; i < I; ++i) {
        y1 += act[i] * down.values[(static_cast<size_t>(r.i1) * H + h) * I + i];
        y2 += act[I + i] * down.values[(static_cast<size_t>(r.i2) * H + h) * I + i];
      }
      if constexpr (Gelu)
        y1 += b2[static_cast<size_t>(r.i1) * H + h], y2 += b2[static_cast<size_t>(r.i2) * H + h];
      want[static_cast<size_t>(t) * H + h] = r.w1 * y1 + r.w2 * y2;
    }
  });
  // The buckets the grouped path must make (from the reference routes), and what they cover.
  std::vector<int> plan(detail::moe_plan_ints(E)), pairs(2 * n);
  detail::moe_bucket_serial(routes.data(), n, E, detail::kTcBM, plan.data(), pairs.data());
  int empty = 0, most = 0;
  for (int e = 0; e < E; ++e)
    empty += plan[e] == 0, most = std::max(most, plan[e]);
  if (favour >= 0 && plan[favour] != (push > 0 ? n : 0)) {
    std::printf("FAIL %s: the routes do not exercise the case (expert %d has %d pairs)\n", name,
                favour, plan[favour]);
    ++failures;
  }
  Context ctx;
  ctx.routes = device<DeviceRoute>(n);
  ctx.moe_act = device<float>(static_cast<size_t>(n) * 2 * I);
  ctx.moe_pairs = device<int32_t>(2 * n);
  ctx.moe_plan_ints = detail::moe_plan_ints(E);
  ctx.moe_plan = device<int32_t>(ctx.moe_plan_ints);
  ctx.moe_y = device<float>(static_cast<size_t>(n) * 2 * H);
  tc_workspace(ctx, std::max(tc_split_bytes(n, H), tc_split_bytes(2 * n, I)));
  uint8_t *dr = upload(router.bytes), *dgu = upload(gate_up.bytes), *dd = upload(down.bytes);
  float *dx = upload(x), *out = device<float>(want.size());
  float *db1 = upload(b1), *db2 = upload(b2);
  const bool grouped =
      n > detail::kGemvMaxRows && detail::tc_supported<W, H>() && detail::tc_supported<W, I>();
  // q4_K decode: the down projection on act rows that gate_up_kernel staged in fixed point
  // (ctx.moe_staged), then on float act rows (no room).
  const bool staged_act = detail::int_input<W, I>() && !grouped;
  ctx.moe_staged_words = static_cast<size_t>(n) * 2 * detail::StagedQ4k::words(I);
  for (int run = 0; run < (staged_act ? 2 : 1); ++run) {
    ctx.moe_staged = staged_act && run == 0 ? device<uint32_t>(ctx.moe_staged_words) : nullptr;
    if constexpr (Gelu)
      moe_softmax_top2_gelu<E, H, I>(ctx, dx, n, reinterpret_cast<const float *>(dr),
                                     reinterpret_cast<const W *>(dgu), db1,
                                     reinterpret_cast<const W *>(dd), db2, out);
    else if constexpr (Softmax)
      moe_softmax_top2<E, H, I>(ctx, dx, n, reinterpret_cast<const float *>(dr),
                                reinterpret_cast<const W *>(dgu), reinterpret_cast<const W *>(dd),
                                out);
    else
      moe_sparsemixer<E, H, I>(ctx, dx, n, reinterpret_cast<const float *>(dr),
                               reinterpret_cast<const W *>(dgu), reinterpret_cast<const W *>(dd),
                               0.01f, out);
    char label[128];
    std::snprintf(label, sizeof label, "%s<%d,%d,%d> %s n=%d%s%s (%d empty, max %d)",
                  Gelu      ? "moe_softmax_top2_gelu"
                  : Softmax ? "moe_softmax_top2"
                            : "moe_sparsemixer",
                  E, H, I, name, n,
                  grouped ? " grouped" : "",
                  staged_act ? (run == 0 ? " staged act" : " float act") : "", empty, most);
    // Grouped (tensor cores): x and act split in two bf16 (2^-16 each), q8_0/q4_K/q6_K exact.
    check(label, download(out, want.size()), want, grouped ? 2e-5 : 1e-4);
    cudaFree(ctx.moe_staged);
  }
  if (grouped) { // the bucket kernel against moe_bucket_serial on the device's routes
    std::vector<DeviceRoute> got_routes(n);
    PHIMOE_CUDA_CHECK(cudaMemcpy(got_routes.data(), ctx.routes, sizeof(DeviceRoute) * n,
                                 cudaMemcpyDeviceToHost));
    detail::moe_bucket_serial(got_routes.data(), n, E, detail::kTcBM, plan.data(), pairs.data());
    std::vector<int> got_plan(plan.size()), got_pairs(pairs.size());
    PHIMOE_CUDA_CHECK(cudaMemcpy(got_plan.data(), ctx.moe_plan, sizeof(int) * plan.size(),
                                 cudaMemcpyDeviceToHost));
    PHIMOE_CUDA_CHECK(cudaMemcpy(got_pairs.data(), ctx.moe_pairs, sizeof(int) * pairs.size(),
                                 cudaMemcpyDeviceToHost));
    const bool same = got_plan == plan && got_pairs == pairs;
    std::printf("%s %-44s\n", same ? "PASS" : "FAIL", "  moe buckets: the serial plan and pairs");
    failures += !same;
  }
  cudaFree(ctx.routes), cudaFree(ctx.moe_act), cudaFree(ctx.moe_pairs), cudaFree(ctx.moe_plan);
  cudaFree(ctx.moe_y), cudaFree(dr), cudaFree(dgu), cudaFree(dd), cudaFree(dx), cudaFree(out);
  cudaFree(ctx.tc_split), cudaFree(db1), cudaFree(db2);
}


// The hand-over of fixed-point rows to a q4_K GEMV (kernels.cuh, detail::stage_for): a
// producer with Next = block_q4k stages its rows into ctx.staged, and the next GEMV reads
// those instead of the float rows. The float rows are overwritten with nan after the producer
// ran (a cudaMemset, not a launch): the GEMV must then give the products of the rows the
// producer wrote, computed here from a copy, against the float GEMV on that copy. Without a
// Next, nothing is handed over.
struct StagedContext {
  Context ctx;
  explicit StagedContext(size_t words) {
    ctx.staged_words = words;
    ctx.staged = device<uint32_t>(words);
  }
  ~StagedContext() { cudaFree(ctx.staged); }
};
void handed_over(const Context &ctx, const float *of, const char *what) {
  const bool ok = ctx.staged_of == of;
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what);
  failures += !ok;
}

template <int N, int K> void test_staged_linear(int n) {
  using Q = block_q4k;
  std::vector<float> a = random_floats(static_cast<size_t>(n) * K, 1.0f, 0.5f);
  std::vector<float> w = random_floats(K, 0.1f, 1.0f), bias = random_floats(K, 0.1f);
  std::vector<float> b = random_floats(N, 0.1f);
  Weight<Q> weight = make_weight<Q>(N, K);
  StagedContext sc(static_cast<size_t>(n) * detail::StagedQ4k::words(K));
  Context &ctx = sc.ctx;
  float *da = upload(a), *dw = upload(w), *dbias = upload(bias), *db = upload(b);
  float *x = device<float>(a.size()), *x_copy = device<float>(a.size());
  float *want = device<float>(static_cast<size_t>(n) * N),
        *got = device<float>(static_cast<size_t>(n) * N);
  uint8_t *dq = upload(weight.bytes);
  const Q *wq = reinterpret_cast<const Q *>(dq);
  char label[128];
  // Without a Next: no hand-over.
  layer_norm<K>(ctx, da, n, dw, dbias, 1e-5f, x);
  std::snprintf(label, sizeof label, "layer_norm<%d> n=%d without Next hands nothing over", K, n);
  handed_over(ctx, nullptr, label);
  for (int add = 0; add < 2; ++add) {
    if (add)
      add_layer_norm<K, Q>(ctx, da, da, n, dw, dbias, 1e-5f, x_copy, x);
    else
      layer_norm<K, Q>(ctx, da, n, dw, dbias, 1e-5f, x);
    std::snprintf(label, sizeof label, "%slayer_norm<%d, q4k> n=%d hands its rows over",
                  add ? "add_" : "", K, n);
    handed_over(ctx, x, label);
    PHIMOE_CUDA_CHECK(cudaMemcpy(x_copy, x, a.size() * 4, cudaMemcpyDeviceToDevice));
    poison(x, a.size());
    linear<N, K>(ctx, x, n, wq, db, got);
    std::snprintf(label, sizeof label, "linear<%d,%d> q4k n=%d on the staged rows (%s)", N, K,
                  n, add ? "add_layer_norm" : "layer_norm");
    handed_over(ctx, nullptr, "  the GEMV ends the hand-over");
    linear<N, K>(ctx, x_copy, n, wq, db, want); // the float GEMV
    const std::vector<float> ref = download(want, static_cast<size_t>(n) * N);
    check(label, download(got, ref.size()), std::vector<double>(ref.begin(), ref.end()), 1e-5);
  }
  cudaFree(da), cudaFree(dw), cudaFree(dbias), cudaFree(db), cudaFree(x), cudaFree(x_copy);
  cudaFree(want), cudaFree(got), cudaFree(dq);
}

// add_layer_norm_route<H, E, q4_K> then the routed MoE: its gate_up_kernel on the staged
// rows (the float rows overwritten), against the float path on the same rows.
template <int E, int H, int I> void test_staged_moe(int n) {
  using Q = block_q4k;
  std::vector<float> a = random_floats(static_cast<size_t>(n) * H, 1.0f, 0.5f);
  std::vector<float> b = random_floats(a.size()), w = random_floats(H, 0.1f, 1.0f),
                     bias = random_floats(H, 0.1f);
  Weight<float> router = spread_router<E, H>();
  Weight<Q> gate_up = make_weight<Q>(static_cast<size_t>(E) * 2 * I, H);
  Weight<Q> down = make_weight<Q>(static_cast<size_t>(E) * H, I);
  StagedContext sc(static_cast<size_t>(n) * detail::StagedQ4k::words(H));
  Context &ctx = sc.ctx;
  moe_workspace(ctx, n, E, H, I);
  float *da = upload(a), *dbb = upload(b), *dw = upload(w), *dbias = upload(bias);
  float *sum = device<float>(a.size()), *x = device<float>(a.size()),
        *x_copy = device<float>(a.size());
  float *want = device<float>(a.size()), *got = device<float>(a.size());
  uint8_t *dr = upload(router.bytes), *dgu = upload(gate_up.bytes), *dd = upload(down.bytes);
  const float *r = reinterpret_cast<const float *>(dr);
  const Q *gu = reinterpret_cast<const Q *>(dgu), *dn = reinterpret_cast<const Q *>(dd);
  add_layer_norm_route<H, E, Q>(ctx, da, dbb, n, dw, dbias, 1e-5f, sum, x, r, 0.01f);
  char label[128];
  std::snprintf(label, sizeof label, "add_layer_norm_route<%d,%d,q4k> n=%d hands its rows over",
                H, E, n);
  handed_over(ctx, x, label);
  PHIMOE_CUDA_CHECK(cudaMemcpy(x_copy, x, a.size() * 4, cudaMemcpyDeviceToDevice));
  poison(x, a.size());
  moe_sparsemixer<E, H, I, true>(ctx, x, n, r, gu, dn, 0.01f, got);
  moe_sparsemixer<E, H, I, true>(ctx, x_copy, n, r, gu, dn, 0.01f, want); // same routes
  const std::vector<float> ref = download(want, a.size());
  std::snprintf(label, sizeof label, "moe_sparsemixer<%d,%d,%d> q4k n=%d on the staged rows", E,
                H, I, n);
  check(label, download(got, ref.size()), std::vector<double>(ref.begin(), ref.end()), 1e-5);
  free_moe_workspace(ctx);
  cudaFree(da), cudaFree(dbb), cudaFree(dw), cudaFree(dbias), cudaFree(sum), cudaFree(x);
  cudaFree(x_copy), cudaFree(want), cudaFree(got), cudaFree(dr), cudaFree(dgu), cudaFree(dd);
}

// attention<..., q4_K> (flash-decoding: its combine kernel stages) then o_proj's GEMV on the
// staged rows, against the float GEMV.
template <int Hq, int Hkv, int D, int N> void test_staged_attention(int past, int n) {
  using Q = block_q4k;
  constexpr int K = Hq * D;
  const int capacity = past + n + 3, layers = 2, layer = 1;
  std::vector<float> kc, vc, q, k, v;
  random_attention_inputs(layers, capacity, n, K, Hkv * D, kc, vc, q, k, v);
  std::vector<int32_t> pos(n);
  for (int i = 0; i < n; ++i)
    pos[i] = past + i;
  Context ctx = cache_context(kc, vc, layers, capacity, Hkv, D, past + n,
                              static_cast<size_t>(n) * Hq * (D + 2) * 64);
  ctx.staged_words = static_cast<size_t>(n) * detail::StagedQ4k::words(K);
  ctx.staged = device<uint32_t>(ctx.staged_words);
  Weight<Q> weight = make_weight<Q>(N, K);
  uint8_t *dq = upload(weight.bytes);
  const Q *wq = reinterpret_cast<const Q *>(dq);
  float *dqv = upload(q), *dk = upload(k), *dv = upload(v), *att = device<float>(q.size()),
        *att_copy = device<float>(q.size());
  float *want = device<float>(static_cast<size_t>(n) * N),
        *got = device<float>(static_cast<size_t>(n) * N);
  int32_t *dp = upload(pos);
  // The splits merged in the first half's last blocks, then by the merge kernel: both stage.
  for (int fused = 1; fused >= 0; --fused) {
    const char *how = fused ? "" : " (merge kernel)";
    detail::attention_combine_mode() = fused;
    attention<Hq, Hkv, D, false, Q>(ctx, dqv, dk, dv, n, dp, layer, 0.1f, 0, att);
    char label[128];
    std::snprintf(label, sizeof label,
                  "attention<%d,%d,%d,false,q4k> n=%d hands its rows over%s", Hq, Hkv, D, n, how);
    handed_over(ctx, att, label);
    PHIMOE_CUDA_CHECK(cudaMemcpy(att_copy, att, q.size() * 4, cudaMemcpyDeviceToDevice));
    poison(att, q.size());
    linear<N, K>(ctx, att, n, wq, static_cast<const float *>(nullptr), got);
    linear<N, K>(ctx, att_copy, n, wq, static_cast<const float *>(nullptr), want);
    const std::vector<float> ref = download(want, static_cast<size_t>(n) * N);
    std::snprintf(label, sizeof label, "linear<%d,%d> q4k n=%d on attention's staged rows%s", N,
                  K, n, how);
    check(label, download(got, ref.size()), std::vector<double>(ref.begin(), ref.end()), 1e-5);
  }
  detail::attention_combine_mode() = -1;
  free_cache_context(ctx);
  cudaFree(ctx.staged), cudaFree(dq), cudaFree(dqv), cudaFree(dk), cudaFree(dv), cudaFree(att);
  cudaFree(att_copy), cudaFree(want), cudaFree(got), cudaFree(dp);
}

// ctx.staged's words (after the launches so far).
std::vector<uint32_t> staged_words(const Context &ctx) {
  std::vector<uint32_t> h(ctx.staged_words);
  PHIMOE_CUDA_CHECK(cudaDeviceSynchronize());
  PHIMOE_CUDA_CHECK(cudaMemcpy(h.data(), ctx.staged, h.size() * 4, cudaMemcpyDeviceToHost));
  return h;
}

// That the last-block counters of n rows are back at zero after a launch.
void check_counters_zero(const Context &ctx, int n, const char *label) {
  std::vector<int> counters(ctx.counter_ints);
  PHIMOE_CUDA_CHECK(cudaMemcpy(counters.data(), ctx.counters, counters.size() * sizeof(int),
                               cudaMemcpyDeviceToHost));
  if (std::count(counters.begin(), counters.end(), 0) != n) {
    std::printf("FAIL %s: counters not back at zero\n", label);
    ++failures;
  }
}

// Each (part, device rows, wanted rows) bit for bit.
void check_same_rows(const char *label,
                     std::initializer_list<std::tuple<const char *, const float *,
                                                      const std::vector<float> *>> outputs) {
  char what[200];
  for (const auto &[part, got, want] : outputs) {
    std::snprintf(what, sizeof what, "%s: %s", label, part);
    check(what, download(got, want->size()), std::vector<double>(want->begin(), want->end()),
          0.0);
  }
}

// moe_sparsemixer_add_layer_norm (the norm in the down projection's last block of each row,
// where the GEMV kernels run) against moe_sparsemixer then add_layer_norm, launches of their
// own: the MoE's rows, the sums (in place over the residual, as the generated code has them)
// and the normed rows bit for bit, with Next = block_q4k the normed rows' staged copy too, and
// the counters back at zero; then the same launcher with the norm apart (norm_tail_mode 0).
template <int E, int H, int I, class W, class Next> void test_moe_norm(const char *name, int n) {
  Weight<float> router = spread_router<E, H>();
  Weight<W> gate_up = make_weight<W>(static_cast<size_t>(E) * 2 * I, H);
  Weight<W> down = make_weight<W>(static_cast<size_t>(E) * H, I);
  const size_t count = static_cast<size_t>(n) * H;
  const std::vector<float> x = random_floats(count), a = random_floats(count, 1.0f, 0.5f);
  const std::vector<float> w = random_floats(H, 0.1f, 1.0f), bias = random_floats(H, 0.1f);
  StagedContext sc(static_cast<size_t>(n) * detail::StagedQ4k::words(H));
  Context &ctx = sc.ctx;
  moe_workspace(ctx, n, E, H, I);
  ctx.counter_ints = n;
  ctx.counters = device<int>(ctx.counter_ints);
  uint8_t *dr = upload(router.bytes), *dgu = upload(gate_up.bytes), *dd = upload(down.bytes);
  const float *r = reinterpret_cast<const float *>(dr);
  const W *gu = reinterpret_cast<const W *>(dgu), *dn = reinterpret_cast<const W *>(dd);
  float *dx = upload(x), *dw = upload(w), *dbias = upload(bias);
  float *moe = device<float>(count), *sum = device<float>(count), *out = device<float>(count);
  // The launches of their own.
  PHIMOE_CUDA_CHECK(cudaMemcpy(sum, a.data(), count * 4, cudaMemcpyHostToDevice));
  moe_sparsemixer<E, H, I>(ctx, dx, n, r, gu, dn, 0.01f, moe);
  add_layer_norm<H, Next>(ctx, sum, moe, n, dw, dbias, 1e-5f, sum, out);
  const bool staged = ctx.staged_of == out;
  const std::vector<float> want_moe = download(moe, count), want_sum = download(sum, count),
                           want_out = download(out, count);
  const std::vector<uint32_t> want_staged = staged_words(ctx);
  for (int tail = 1; tail >= 0; --tail) {
    char label[160];
    std::snprintf(label, sizeof label, "moe_sparsemixer_add_layer_norm<%d,%d,%d> %s n=%d%s", E,
                  H, I, name, n, tail ? "" : " (norm apart)");
    detail::norm_tail_mode() = tail;
    PHIMOE_CUDA_CHECK(cudaMemcpy(sum, a.data(), count * 4, cudaMemcpyHostToDevice));
    poison(moe, count), poison(out, count);
    PHIMOE_CUDA_CHECK(cudaMemset(ctx.staged, 0xff, ctx.staged_words * 4));
    moe_sparsemixer_add_layer_norm<E, H, I, false, Next>(ctx, dx, n, r, gu, dn, 0.01f, moe, sum,
                                                         dw, dbias, 1e-5f, sum, out);
    const bool same_staged =
        (ctx.staged_of == out) == staged && (!staged || staged_words(ctx) == want_staged);
    std::printf("%s %s: %s\n", same_staged ? "PASS" : "FAIL", label,
                staged ? "the normed rows' staged copy" : "nothing staged");
    failures += !same_staged;
    check_same_rows(label, {{"the MoE's rows", moe, &want_moe},
                            {"the sums", sum, &want_sum},
                            {"the normed rows", out, &want_out}});
    check_counters_zero(ctx, n, label);
  }
  detail::norm_tail_mode() = -1;
  free_moe_workspace(ctx);
  cudaFree(ctx.counters), cudaFree(dr), cudaFree(dgu), cudaFree(dd), cudaFree(dx);
  cudaFree(dw), cudaFree(dbias), cudaFree(moe), cudaFree(sum), cudaFree(out);
}

// linear_add_layer_norm(_route) (the norm, with E > 0 then the MoE's router, in the GEMV's
// last block of each row) against linear then add_layer_norm(_route), launches of their own,
// each after a layer_norm<K, W> that stages x for a q4_K GEMV: the linear rows, the sums (in
// place over the residual), the normed rows and the routes bit for bit; with Next = block_q4k
// the normed rows' staged copy too (the last blocks stage it where the norm's rows are as
// wide as x's, or there is one row: else they would overwrite staged x rows of rows whose
// GEMV blocks have not run), and the counters back at zero; then the launcher with the norm
// apart (norm_tail_mode 0).
template <int N, int K, int E, class W, class Next>
void test_linear_norm(const char *name, int n) {
  Weight<W> weight = make_weight<W>(N, K);
  Weight<float> router = spread_router<E == 0 ? 2 : E, N>();
  const size_t count = static_cast<size_t>(n) * N, in_count = static_cast<size_t>(n) * K;
  const std::vector<float> x0 = random_floats(in_count), a = random_floats(count, 1.0f, 0.5f);
  const std::vector<float> xw = random_floats(K, 0.1f, 1.0f), xb = random_floats(K, 0.1f);
  const std::vector<float> b = random_floats(N, 0.1f);
  const std::vector<float> w = random_floats(N, 0.1f, 1.0f), bias = random_floats(N, 0.1f);
  StagedContext sc(static_cast<size_t>(n) * detail::StagedQ4k::words(N > K ? N : K));
  Context &ctx = sc.ctx;
  tc_workspace(ctx, tc_split_bytes(n, K));
  ctx.routes = device<DeviceRoute>(n);
  ctx.counter_ints = n;
  ctx.counters = device<int>(ctx.counter_ints);
  uint8_t *dq = upload(weight.bytes), *dr = upload(router.bytes);
  const W *wq = reinterpret_cast<const W *>(dq);
  const float *r = reinterpret_cast<const float *>(dr);
  float *dx0 = upload(x0), *dxw = upload(xw), *dxb = upload(xb), *db = upload(b);
  float *dw = upload(w), *dbias = upload(bias), *x = device<float>(in_count);
  float *lin = device<float>(count), *sum = device<float>(count), *out = device<float>(count);
  auto routes = [&] {
    std::vector<DeviceRoute> h(n);
    PHIMOE_CUDA_CHECK(cudaMemcpy(h.data(), ctx.routes, sizeof(DeviceRoute) * n,
                                 cudaMemcpyDeviceToHost));
    return h;
  };
  auto start = [&] { // x (staged for a q4_K GEMV) and the residual; outputs poisoned
    layer_norm<K, W>(ctx, dx0, n, dxw, dxb, 1e-5f, x);
    PHIMOE_CUDA_CHECK(cudaMemcpy(sum, a.data(), count * 4, cudaMemcpyHostToDevice));
    poison(lin, count), poison(out, count);
    PHIMOE_CUDA_CHECK(cudaMemset(ctx.routes, 0xff, sizeof(DeviceRoute) * n));
  };
  // The launches of their own.
  start();
  linear<N, K>(ctx, x, n, wq, db, lin);
  if constexpr (E > 0)
    add_layer_norm_route<N, E, Next>(ctx, sum, lin, n, dw, dbias, 1e-5f, sum, out, r, 0.01f);
  else
    add_layer_norm<N, Next>(ctx, sum, lin, n, dw, dbias, 1e-5f, sum, out);
  const bool staged = ctx.staged_of == out;
  const std::vector<float> want_lin = download(lin, count), want_sum = download(sum, count),
                           want_out = download(out, count);
  const std::vector<uint32_t> want_staged = staged_words(ctx);
  const std::vector<DeviceRoute> want_routes = routes();
  for (int tail = 1; tail >= 0; --tail) {
    char label[160];
    std::snprintf(label, sizeof label, "linear_add_layer_norm%s<%d,%d> %s n=%d%s",
                  E > 0 ? "_route" : "", N, K, name, n, tail ? "" : " (norm apart)");
    detail::norm_tail_mode() = tail;
    PHIMOE_CUDA_CHECK(cudaMemset(ctx.staged, 0xff, ctx.staged_words * 4));
    start();
    if constexpr (E > 0)
      linear_add_layer_norm_route<N, K, E, Next>(ctx, x, n, wq, db, lin, sum, dw, dbias, 1e-5f,
                                                 sum, out, r, 0.01f);
    else
      linear_add_layer_norm<N, K, Next>(ctx, x, n, wq, db, lin, sum, dw, dbias, 1e-5f, sum,
                                        out);
    const bool hands_over =
        staged && (!tail || N == K || n == 1 || n > detail::kGemvMaxRows);
    const bool same_staged = (ctx.staged_of == out) == hands_over &&
                             (!hands_over || staged_words(ctx) == want_staged);
    std::printf("%s %s: %s\n", same_staged ? "PASS" : "FAIL", label,
                hands_over ? "the normed rows' staged copy" : "nothing staged");
    failures += !same_staged;
    check_same_rows(label, {{"the linear rows", lin, &want_lin},
                            {"the sums", sum, &want_sum},
                            {"the normed rows", out, &want_out}});
    if (E > 0) {
      const std::vector<DeviceRoute> got = routes();
      bool same = true;
      for (int t = 0; t < n; ++t)
        same = same && got[t].i1 == want_routes[t].i1 && got[t].i2 == want_routes[t].i2 &&
               got[t].w1 == want_routes[t].w1 && got[t].w2 == want_routes[t].w2 &&
               got[t].i1 != got[t].i2;
      std::printf("%s %s: the routes\n", same ? "PASS" : "FAIL", label);
      failures += !same;
    }
    check_counters_zero(ctx, n, label);
  }
  detail::norm_tail_mode() = -1;
  cudaFree(ctx.routes), cudaFree(ctx.counters), cudaFree(dq), cudaFree(dr), cudaFree(dx0);
  cudaFree(ctx.tc_split);
  cudaFree(dxw), cudaFree(dxb), cudaFree(db), cudaFree(dw), cudaFree(dbias), cudaFree(x);
  cudaFree(lin), cudaFree(sum), cudaFree(out);
}

// linear_qkv_rope_kv_write (the heads' RoPE and KV write in the q/k/v GEMV's last block of
// each head) against the same launcher with them apart (qkv_tail_mode 0: linear, then
// qkv_rope_kv_write's kernel), after a layer_norm<K, W> that stages x for a q4_K GEMV: the
// projection's rows, the rotated queries and both caches bit for bit, and the counters back at
// zero. Rows at positions past..past+n-1 of a cache of `capacity` positions (rows past it:
// no cache write), LongRoPE set `rope_long`.
template <int Hq, int Hkv, int D, int K, class W>
void test_qkv_gemv(const char *name, int past, int n, int capacity, bool rope_long) {
  constexpr int N = (Hq + 2 * Hkv) * D, q_row = Hq * D, kv_row = Hkv * D;
  const int layers = 2, layer = 1;
  Weight<W> weight = make_weight<W>(N, K);
  const std::vector<float> kc = random_floats(static_cast<size_t>(layers) * capacity * kv_row);
  const std::vector<float> vc = random_floats(kc.size());
  const std::vector<float> x0 = random_floats(static_cast<size_t>(n) * K);
  const std::vector<float> xw = random_floats(K, 0.1f, 1.0f), xb = random_floats(K, 0.1f);
  const std::vector<float> b = random_floats(N, 0.1f);
  const RopeInputs rope_in(past, n, D / 2);
  int32_t *dp = upload(rope_in.pos);
  uint8_t *dq = upload(weight.bytes);
  const W *wq = reinterpret_cast<const W *>(dq);
  float *dx0 = upload(x0), *dxw = upload(xw), *dxb = upload(xb), *db = upload(b);
  float *x = device<float>(x0.size()), *qkv = device<float>(static_cast<size_t>(n) * N),
        *q_out = device<float>(static_cast<size_t>(n) * q_row);
  std::vector<float> want[4];
  for (int tail = 0; tail < 2; ++tail) {
    Context ctx = cache_context(kc, vc, layers, capacity, Hkv, D, past + n, 0);
    ctx.rope_long = rope_long;
    cudaFree(ctx.counters);
    ctx.counter_ints = static_cast<size_t>(n) * (Hq + Hkv);
    ctx.counters = device<int>(ctx.counter_ints);
    ctx.staged_words = static_cast<size_t>(n) * detail::StagedQ4k::words(K);
    ctx.staged = device<uint32_t>(ctx.staged_words);
    tc_workspace(ctx, tc_split_bytes(n, K));
    poison(qkv, static_cast<size_t>(n) * N), poison(q_out, static_cast<size_t>(n) * q_row);
    layer_norm<K, W>(ctx, dx0, n, dxw, dxb, 1e-5f, x);
    detail::qkv_tail_mode() = tail;
    linear_qkv_rope_kv_write<N, K, Hq, Hkv, D>(ctx, x, n, wq, db, qkv, dp, rope_in.p, layer,
                                               q_out);
    detail::qkv_tail_mode() = -1;
    const std::vector<float> got[4] = {
        download(qkv, static_cast<size_t>(n) * N), download(q_out, static_cast<size_t>(n) * q_row),
        download(ctx.k_cache, kc.size()), download(ctx.v_cache, vc.size())};
    char label[160];
    std::snprintf(label, sizeof label, "linear_qkv_rope_kv_write<%d,%d,%d,%d,%d> %s n=%d %s%s", N,
                  K, Hq, Hkv, D, name, n, rope_long ? "long" : "short",
                  tail ? "" : " (apart)");
    if (!tail) { // the launches apart: the reference
      for (int i = 0; i < 4; ++i)
        want[i] = got[i];
      const bool cached = got[2] != kc;
      std::printf("%s %s: the keys %s the cache\n", cached == (past < capacity) ? "PASS" : "FAIL",
                  label, cached ? "went into" : "stayed out of");
      failures += cached != (past < capacity);
    } else {
      check_same_rows(label, {{"the q/k/v rows", qkv, &want[0]},
                              {"the rotated queries", q_out, &want[1]},
                              {"the k cache", ctx.k_cache, &want[2]},
                              {"the v cache", ctx.v_cache, &want[3]}});
      check_counters_zero(ctx, n * (Hq + Hkv), label);
    }
    cudaFree(ctx.staged), cudaFree(ctx.tc_split);
    free_cache_context(ctx);
  }
  cudaFree(dp), cudaFree(dq), cudaFree(dx0), cudaFree(dxw), cudaFree(dxb), cudaFree(db);
  cudaFree(x), cudaFree(qkv), cudaFree(q_out);
}

} // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  try {
    test_tc_split_pair<2>();
    test_tc_split_pair<3>();
    for (int n : {1, 3, 8, 9, 40}) {
      test_linear<96, 64, float>("f32", n, true);
      test_linear<96, 64, bf16>("bf16", n, true);
      test_linear<96, 64, f16>("f16", n, false);
      test_linear<96, 64, block_q8_0>("q8_0", n, true);
    }
    test_linear<70, 48, float>("f32 (K not a multiple of 32)", 2, true);
    test_linear<70, 48, bf16>("bf16 (K not a multiple of 32)", 33, true);
    test_linear<200, 4096, bf16>("bf16 (wide)", 1, true);
    test_linear<200, 4096, block_q8_0>("q8_0 (wide)", 1, false);
    test_linear<131, 6400, block_q8_0>("q8_0 (expert width)", 70, false);
    for (int n : {1, 2, 8, 9, 33}) {
      test_linear<40, 256, block_q4k>("q4k", n, true);
      test_linear<40, 256, block_q6k>("q6k", n, true);
    }
    test_linear<200, 4096, block_q4k>("q4k (wide)", 1, false);
    test_linear<96, 6400, block_q4k>("q4k (expert width)", 3, false);
    test_linear<300, 4096, block_q6k>("q6k (LM head width)", 1, false);
    test_linear<64, 6400, block_q6k>("q6k (expert width)", 12, false);
    // Tensor cores (n > 8; bf16 and q8_0 here): N and K multiples of the tiles (64, 32) and not,
    // K not a multiple of the 8-value units (bf16), one or many row tiles.
    test_linear<128, 128, bf16>("bf16 tc (tile multiples)", 64, false);
    test_linear<100, 37, bf16>("bf16 tc (K % 8 != 0)", 9, true);
    test_linear<130, 200, bf16>("bf16 tc", 100, true);
    test_linear<300, 4096, bf16>("bf16 tc (hidden width)", 515, true);
    test_linear<4096, 3072, bf16>("bf16 tc (o_proj-like)", 100, false);
    test_linear<96, 160, block_q8_0>("q8_0 tc", 100, true);
    test_linear<70, 64, block_q8_0>("q8_0 tc", 9, false);
    test_linear<200, 4096, block_q8_0>("q8_0 tc (hidden width)", 515, false);
    test_linear<136, 6400, block_q8_0>("q8_0 tc (expert width)", 77, false);
    // q4_K and q6_K on tensor cores (n > 8): integer quants in the tiles, scales (and q4_K's
    // mins) applied to the fp32 partial sums: as exact as bf16 and q8_0.
    for (int n : {9, 100, 515}) {
      test_linear<70, 256, block_q4k>("q4k tc", n, true);
      test_linear<70, 256, block_q6k>("q6k tc", n, n == 9);
    }
    test_linear<130, 4096, block_q4k>("q4k tc (hidden width)", 515, true);
    test_linear<64, 4096, block_q4k>("q4k tc (hidden width)", 9, false);
    test_linear<96, 6400, block_q4k>("q4k tc (expert width)", 100, false);
    test_linear<300, 4096, block_q6k>("q6k tc (LM head width)", 515, false);
    test_linear<64, 6400, block_q6k>("q6k tc (expert width)", 100, false);
    test_linear<72, 80, f16>("f16 (float GEMM)", 100, true);
    test_embed<50, 64, bf16>("embed bf16");
    test_embed<50, 64, block_q8_0>("embed q8_0");
    test_embed<50, 64, float>("embed f32");
    test_split_cols<128, 64, 32, 32>(3);
    test_split_cols<6144, 4096, 1024, 1024>(1); // Phi-3.5-MoE's q/k/v
    test_split_cols<100, 40, 30, 20>(17);       // ranges short of the row
    test_layer_norm<64>(3);
    test_layer_norm<4096>(2);
    test_rms_norm<64>(3);
    test_rms_norm<4096>(2);
    test_warp_sparsemixer<16>(); // Phi-3.5-MoE
    test_warp_sparsemixer<8>();  // Mixtral
    test_warp_sparsemixer<2>();
    test_warp_sparsemixer<5>();
    test_warp_sparsemixer<32>();
    test_add_norm_route<64, 4, float>(3);
    test_add_norm_route<4096, 16, bf16>(2); // Phi-3.5-MoE's router
    test_rope<4, 16>(false);
    test_rope<32, 128>(true);
    test_rope<4, 20, 8>(false);
    test_rope<32, 80, 32>(true); // phi-2's heads
    test_add<96>(5);
    test_attention<4, 2, 16>(0, 1, 0);
    test_attention<4, 2, 16>(10, 7, 0);
    test_attention<32, 8, 128>(3000, 1, 0);     // decode, split over 47 chunks
    test_attention<32, 8, 128>(200, 33, 0);     // a prefill chunk
    test_attention<4, 1, 64>(500, 2, 100);      // sliding window
    // Prefill chunks of 64 rows or more (the tensor-core kernel too): a first chunk, a chunk
    // after cached positions, rows past a 64-row tile, a sliding window shorter than the
    // chunk, head dimensions of 16 to 128.
    test_attention<32, 8, 128>(0, 64, 0);
    test_attention<32, 8, 128>(100, 130, 0);
    test_attention<4, 2, 16>(7, 100, 0);
    test_attention<4, 1, 64>(300, 70, 40);
    test_attention<6, 3, 96>(33, 65, 0);
    test_attention<2, 2, 80>(0, 200, 0);
    test_rope_kv_write<4, 2, 16>(5, 3, false);
    test_rope_kv_write<32, 8, 128>(100, 1, true);
    test_rope_kv_write<32, 8, 128>(0, 40, false);
    test_qkv_rope<4, 2, 16>(3, 6, false, "disjoint");
    test_qkv_rope<4, 2, 16>(9, 1, true, "overlap");
    test_qkv_rope<4, 2, 16>(0, 7, true, "fallback");
    test_qkv_rope<32, 8, 128>(100, 1, false, "overlap"); // Phi-3.5-MoE's decode
    test_qkv_rope<32, 8, 128>(0, 40, true, "disjoint");
    test_paged<4, 2, 16>(4, 0);
    test_paged<4, 1, 64>(16, 20); // a window that keeps slot 3's rows off its hole
    test_paged<32, 8, 128>(16, 0);
    test_moe<4, 64, 128, float>("f32", 1);
    test_moe<4, 64, 128, bf16>("bf16", 5);
    test_moe<16, 256, 320, block_q8_0>("q8_0", 1);
    test_moe<16, 256, 320, block_q8_0>("q8_0", 20);
    test_moe<8, 128, 6400, bf16>("bf16 (I = 6400: > 48 KiB shared)", 2);
    test_moe<16, 256, 512, block_q4k>("q4k", 1);
    test_moe<16, 256, 512, block_q4k>("q4k", 12);
    test_moe<4, 512, 256, block_q6k>("q6k", 3);
    test_moe<2, 4096, 6400, block_q4k>("q4k (Phi-3.5-MoE widths)", 1);
    test_moe<8, 64, 128, float, true>("f32", 3); // Mixtral's routing
    test_moe<8, 256, 512, block_q4k, true>("q4k", 1);
    test_moe<8, 256, 512, block_q4k, true>("q4k", 12);
    test_moe<4, 64, 128, float, true, true>("f32", 3); // phixtral's experts
    test_moe<4, 256, 512, block_q4k, true, true>("q4k", 1);
    test_moe<4, 256, 512, block_q4k, true, true>("q4k", 6);
    // Grouped experts (n > 8): empty experts, every row on one expert, a row tile boundary
    // (> 64 pairs on one expert), odd widths, Phi-3.5-MoE's widths.
    test_moe<16, 256, 320, bf16>("bf16", 9);
    test_moe<16, 256, 320, block_q8_0>("q8_0", 100);
    test_moe<4, 64, 128, bf16>("bf16 (expert 2 in every row)", 150, 2, 5.0f);
    test_moe<6, 96, 200, bf16>("bf16 (expert 0 in no row)", 40, 0, -5.0f);
    test_moe<16, 256, 320, block_q8_0>("q8_0 (expert 5 in every row)", 515, 5, 5.0f);
    test_moe<4, 64, 128, float>("f32 (no tensor cores)", 20);
    test_moe<6, 96, 200, bf16, true, true>("bf16 (phixtral's experts)", 40);
    test_moe<4, 256, 512, block_q4k, true, true>("q4k (phixtral's experts)", 70);
    if (kFullWidthMoe) {
      test_moe<16, 4096, 6400, bf16>("bf16 (Phi-3.5-MoE widths)", 9);
      test_moe<16, 4096, 6400, block_q8_0>("q8_0 (Phi-3.5-MoE widths)", 12);
    }
    test_moe<16, 256, 512, block_q4k>("q4k", 100);
    test_moe<16, 256, 512, block_q4k>("q4k (expert 3 in every row)", 130, 3, 5.0f);
    test_moe<4, 512, 256, block_q6k>("q6k", 40);
    if (kFullWidthMoe)
      test_moe<16, 4096, 6400, block_q4k>("q4k (Phi-3.5-MoE widths)", 100);
    // Fixed-point rows handed to q4_K GEMVs (last: their random draws leave the others').
    test_staged_linear<40, 256>(1);
    test_staged_linear<200, 4096>(3);
    test_staged_linear<70, 6400>(8);
    test_staged_moe<16, 256, 512>(2);
    test_staged_moe<4, 4096, 6400>(1);
    test_staged_attention<4, 2, 64, 40>(10, 1);
    test_staged_attention<32, 8, 128, 100>(300, 2);
    // The norm after the MoE in its down projection's last blocks: staged for a q4_K GEMV,
    // more rows than decode's GEMVs stage, one block a row, and the grouped prefill (apart).
    test_moe_norm<16, 256, 512, block_q4k, block_q4k>("q4k", 1);
    test_moe_norm<16, 256, 512, block_q4k, block_q4k>("q4k", 8);
    test_moe_norm<4, 64, 128, bf16, void>("bf16", 5);
    test_moe_norm<4, 64, 128, float, block_q4k>("f32 (no tensor cores)", 20);
    test_moe_norm<4, 16, 64, float, void>("f32 (one block a row)", 2);
    test_moe_norm<16, 256, 320, block_q8_0, block_q4k>("q8_0 (grouped experts)", 12);
    // The norm (and the router) after o_proj in its GEMV's last blocks: o_proj's shape, x
    // wider or narrower than the norm's rows (staged x rows the last blocks must leave), no
    // router, more rows than decode's GEMVs (apart), one block a row.
    test_linear_norm<256, 256, 16, block_q4k, block_q4k>("q4k", 1);
    test_linear_norm<256, 256, 16, block_q4k, block_q4k>("q4k", 8);
    test_linear_norm<256, 512, 16, block_q4k, block_q4k>("q4k (K > N)", 3);
    test_linear_norm<512, 256, 16, block_q4k, block_q4k>("q4k (K < N)", 3);
    test_linear_norm<256, 512, 4, block_q4k, block_q4k>("q4k (K > N)", 1);
    test_linear_norm<256, 256, 0, block_q8_0, block_q4k>("q8_0 (no router)", 4);
    test_linear_norm<64, 128, 4, bf16, void>("bf16", 12);
    test_linear_norm<16, 64, 2, float, void>("f32 (one block a row)", 2);
    // The heads' RoPE and KV write in the q/k/v GEMV's last blocks: Phi-3.5-MoE's heads (on
    // a short K), several rows, a row past the cache, more rows than decode's GEMVs (apart),
    // heads narrower than a block's rows (apart).
    test_qkv_gemv<32, 8, 128, 256, block_q4k>("q4k", 100, 1, 128, false);
    test_qkv_gemv<4, 2, 16, 64, float>("f32", 7, 5, 16, true);
    test_qkv_gemv<4, 2, 16, 64, float>("f32 (last row past the cache)", 3, 4, 6, false);
    test_qkv_gemv<4, 2, 32, 256, block_q8_0>("q8_0", 0, 8, 8, true);
    test_qkv_gemv<4, 2, 16, 64, bf16>("bf16", 2, 12, 20, false);
    test_qkv_gemv<4, 2, 8, 64, float>("f32 (8-wide heads)", 1, 3, 8, false);
    // (last: the random inputs of the cases above stay as they were)
    test_tc_split_room();
    test_tc_units<block_q4k>("q4k");
    test_tc_units<block_q6k>("q6k");
    test_tc_split_rows<4096>(9, 0);
    test_tc_split_rows<6400>(3, 1);
    test_tc_split_rows<37>(70, 0); // K % 32 != 0: zeros past K
    test_tc_split_rows<200>(5, 3);
  } catch (const std::exception &e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "OK", failures);
  return failures ? 1 : 0;
}
