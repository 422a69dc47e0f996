// kernels_quant.h - linear, embed and moe_sparsemixer for block-quantized weights (q8_0, q4_K,
// q6_K), on activations quantized once per row per op (quant_kernels.h).
//
// Included by kernels_impl.h, whose kernels forward here when a weight is a block type.
// Memory: the quantized input rows of an op live in ctx.qbuf, the MoE's routes, token
// lists and intermediate rows in ctx.work (runtime.h says how the runtime sizes both);
// nothing is allocated. A kernel whose buffers are too small for n rows writes nan (a
// runtime bug made visible, not memory corrupted).
//
// Weights: CPU builds store q8_0, q4_K and q6_K matrices whose row count is a multiple of 16 in
// groups of 16 interleaved rows (block_*_x16 here, tiles in quant_rows16.h: TT tokens x a
// group, decode too); other block-quantized weights (embeddings, odd row counts) stay row by
// row (the tiles of quant_kernels.h).
// GEMM: work items are panels of weight rows (kPanelRows, which stay in L2); each item runs
// over all the tokens in micro-tiles of tt tokens x rr rows (each weight block is loaded once
// per micro-tile and used for its tt tokens). So a panel's weights are read from memory once
// per forward whatever the number of tokens. Decode (n = 1) of row-by-row weights uses
// rr_decode rows at a time (shapes: qk::TileShape). Every output is computed by the same operations whatever
// the tile or thread that computes it (quant_kernels.h), so outputs do not depend on the
// number of threads, and a prompt's rows equal the rows decode computes one at a time.
#ifndef PHIMOE_RT_KERNELS_QUANT_H
#define PHIMOE_RT_KERNELS_QUANT_H

#include "phimoe_rt/quant_kernels.h"
#include "phimoe_rt/quant_rows16.h"
#include "phimoe_rt/runtime.h"
#include "phimoe_rt/simd.h"
#include "phimoe_rt/sparsemixer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

namespace phimoe_rt {
namespace detail {

template <class W> struct is_qblock : std::false_type {};
template <> struct is_qblock<block_q8_0> : std::true_type {};
template <> struct is_qblock<block_q4k> : std::true_type {};
template <> struct is_qblock<block_q6k> : std::true_type {};
template <> struct is_qblock<block_q4k_x16> : std::true_type {};
template <> struct is_qblock<block_q8_0_x16> : std::true_type {};
template <> struct is_qblock<block_q6k_x16> : std::true_type {};

// ctx.pool->parallel_for, or the calling thread alone when the context has no pool.
template <class F> inline void run_parallel(Context &ctx, int64_t n, F &&fn) {
  if (ctx.pool)
    ctx.pool->parallel_for(n, fn);
  else if (n > 0)
    fn(int64_t{0}, n, 0);
}

constexpr int kPanelRows = 128; // weight rows per GEMM work item (prompt)
constexpr int kDecodeRows = 16; // weight rows per GEMV work item (n = 1)
static_assert(kPanelRows % 16 == 0 && kDecodeRows % 16 == 0, "items of whole q4_K groups");

inline size_t align64(size_t bytes) { return (bytes + 63) / 64 * 64; }

// How a weight type multiplies activations: block types through quant_kernels.h on the
// target's best path; float, bf16 and f16 (in a MoE whose other weight is quantized) on float
// activations with simd::dot_tile.
template <class W, int K, bool Block = is_qblock<W>::value> struct matmul;

template <class W, int K> struct matmul<W, K, true> {
  using P = qk::Best;
  using F = qk::format<W>;
  static_assert(K % F::kBlock == 0, "a quantized weight's rows must be whole blocks");
  static constexpr bool kQuantized = true;
  static constexpr int kTT = P::kShape[F::kIndex].tt, kRR = P::kShape[F::kIndex].rr,
                       kRRDecode = P::kShape[F::kIndex].rr_decode;
  static constexpr size_t kActBytes = F::act_bytes(K);
  static constexpr size_t kRowStride = K / F::kBlock; // blocks per weight row
  static void quantize(const float *x, uint8_t *out) { F::template quantize<P>(x, K, out); }
  template <int TT, int RR>
  static PHIMOE_RT_INLINE void tile(const W *const *w, const uint8_t *const *a,
                                    float (&res)[TT][RR]) {
    F::template tile<P, TT, RR>(w, a, K, res);
  }
};

template <class W, int K> struct matmul<W, K, false> {
  static constexpr bool kQuantized = false;
  static constexpr int kTT = 1, kRR = 1, kRRDecode = 1;
  static constexpr size_t kActBytes = sizeof(float) * K;
  static constexpr size_t kRowStride = K;
  template <int TT, int RR>
  static PHIMOE_RT_INLINE void tile(const W *const *w, const uint8_t *const *a,
                                    float (&res)[TT][RR]) {
    for (int t = 0; t < TT; ++t)
      for (int r = 0; r < RR; ++r) {
        float d[1][1];
        simd::dot_tile<K, 1, 1>(reinterpret_cast<const float *>(a[t]), 0, w[r], d);
        res[t][r] = d[0][0];
      }
  }
};

// Interleaved q4_K, q8_0 and q6_K (block_q4k_x16, block_q8_0_x16, block_q6k_x16: groups of 16 rows,
// quant_rows16.h): tiles of TT tokens times a group's 16 rows, decode included (one token
// times 16 rows).
template <class W, int K> struct matmul_rows16 {
  using P = qk::Best;
  using F = qk::format<W>;
  static_assert(K % F::kBlock == 0, "a quantized weight's rows must be whole blocks");
  static constexpr bool kQuantized = true;
  static constexpr int kTT = qk::rows16_tokens<P>(), kRR = 16, kRRDecode = 16;
  static constexpr size_t kActBytes = F::act_bytes(K);
  static constexpr size_t kRowStride = K / F::kBlock;
  static void quantize(const float *x, uint8_t *out) { F::template quantize<P>(x, K, out); }
};
template <int K> struct matmul<block_q4k_x16, K, true> : matmul_rows16<block_q4k_x16, K> {};
template <int K> struct matmul<block_q8_0_x16, K, true> : matmul_rows16<block_q8_0_x16, K> {};
template <int K> struct matmul<block_q6k_x16, K, true> : matmul_rows16<block_q6k_x16, K> {};

// A tile in a function of its own: its code does not depend on the caller's (measured: the
// tile inlined into the GEMM loops ran at half the speed).
template <class M, int TT, int RR, class W>
__attribute__((noinline)) void tile_of(const W *const *w, const uint8_t *const *a,
                                       float (&res)[TT][RR]) {
  M::template tile<TT, RR>(w, a, res);
}

// One micro-tile at rows r.., tokens t..: sink(t, r, value) for each output.
template <class M, int TT, int RR, class W, class RowFn, class ActFn, class Sink>
PHIMOE_RT_INLINE void micro(int t, int r, RowFn &row, ActFn &act, Sink &sink) {
  const W *w[RR];
  const uint8_t *a[TT];
  for (int i = 0; i < RR; ++i)
    w[i] = row(r + i);
  for (int i = 0; i < TT; ++i)
    a[i] = act(t + i);
  float res[TT][RR];
  tile_of<M, TT, RR, W>(w, a, res);
  for (int i = 0; i < TT; ++i)
    for (int j = 0; j < RR; ++j)
      sink(t + i, r + j, res[i][j]);
}

// micro<M, tt, rr> for run-time tt <= TT, rr <= RR.
template <class M, int TT, int RR, class W, class RowFn, class ActFn, class Sink>
inline void micro_any(int tt, int rr, int t, int r, RowFn &row, ActFn &act, Sink &sink) {
  if constexpr (TT > 1)
    if (tt < TT)
      return micro_any<M, TT - 1, RR, W>(tt, rr, t, r, row, act, sink);
  if constexpr (RR > 1)
    if (rr < RR)
      return micro_any<M, TT, RR - 1, W>(tt, rr, t, r, row, act, sink);
  micro<M, TT, RR, W>(t, r, row, act, sink);
}

template <class W, int K, int TT>
__attribute__((noinline)) void group_tile(const typename qk::rows16<W>::G *g,
                                          const uint8_t *const *a, float (&res)[TT][16]) {
  qk::tile_group<qk::Best, TT>(g, a, K / qk::rows16<W>::kValues, res);
}

// group_tile for run-time tt <= TT tokens from t, the group whose first row is r.
template <class W, int K, int TT, class RowFn, class ActFn, class Sink>
inline void group_any(int tt, int t, int r, RowFn &row, ActFn &act, Sink &sink) {
  if constexpr (TT > 1)
    if (tt < TT)
      return group_any<W, K, TT - 1>(tt, t, r, row, act, sink);
  const uint8_t *a[TT];
  for (int i = 0; i < TT; ++i)
    a[i] = act(t + i);
  float res[TT][16];
  group_tile<W, K, TT>(reinterpret_cast<const typename qk::rows16<W>::G *>(row(r)), a, res);
  for (int i = 0; i < TT; ++i)
    for (int j = 0; j < 16; ++j)
      sink(t + i, r + j, res[i][j]);
}

// gemm_rows for row-by-row weights.
template <class M, class W, class RowFn, class ActFn, class Sink>
void gemm_rows_of_blocks(int r0, int r1, int n, RowFn &row, ActFn &act, Sink &sink) {
  if (n == 1) {
    constexpr int RR = M::kRRDecode;
    for (int r = r0; r < r1; r += RR)
      micro_any<M, 1, RR, W>(1, std::min(RR, r1 - r), 0, r, row, act, sink);
    return;
  }
  constexpr int TT = M::kTT, RR = M::kRR;
  for (int t = 0; t < n; t += TT) {
    const int tt = std::min(TT, n - t);
    for (int r = r0; r < r1; r += RR)
      micro_any<M, TT, RR, W>(tt, std::min(RR, r1 - r), t, r, row, act, sink);
  }
}

// Outputs (t, r) for rows [r0, r1) and tokens [0, n): row(r) is weight row r, act(t) the
// activation row of token t; sink(t, r, value) receives each result once. Interleaved
// q4_K, q8_0 and q6_K rows go by groups: r0 and r1 must be multiples of 16 (panels are, and such
// a weight's row counts are).
template <class M, class W, class RowFn, class ActFn, class Sink>
inline void gemm_rows(int r0, int r1, int n, RowFn &row, ActFn &act, Sink &sink) {
  if constexpr (qk::rows16<W>::kAny) {
    constexpr int K = static_cast<int>(M::kRowStride) * qk::rows16<W>::kValues;
    for (int t = 0; t < n; t += M::kTT) {
      const int tt = std::min(M::kTT, n - t);
      for (int r = r0; r < r1; r += 16)
        group_any<W, K, M::kTT>(tt, t, r, row, act, sink);
    }
  } else {
    gemm_rows_of_blocks<M, W>(r0, r1, n, row, act, sink);
  }
}

// Items of rows [0, rows): panels of kPanelRows (kDecodeRows for a single token).
inline int panel_rows(int n) { return n == 1 ? kDecodeRows : kPanelRows; }
inline int64_t panels(int rows, int n) { return (rows + panel_rows(n) - 1) / panel_rows(n); }

inline void fill_nan(float *out, size_t count) {
  std::fill(out, out + count, std::numeric_limits<float>::quiet_NaN());
}

template <int N, int K, class W, class B>
void linear_quant(Context &ctx, const float *x, int n, const W *w, const B *bias, float *out) {
  using M = matmul<W, K>;
  if (n <= 0)
    return;
  if (!ctx.qbuf || ctx.qbuf_bytes < M::kActBytes * static_cast<size_t>(n)) {
    fill_nan(out, static_cast<size_t>(n) * N);
    return;
  }
  uint8_t *q = ctx.qbuf;
  run_parallel(ctx, n, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t)
      M::quantize(x + t * K, q + t * M::kActBytes);
  });
  auto row = [&](int r) { return w + static_cast<size_t>(r) * M::kRowStride; };
  auto act = [&](int t) { return q + static_cast<size_t>(t) * M::kActBytes; };
  auto sink = [&](int t, int r, float v) {
    out[static_cast<size_t>(t) * N + r] = bias ? v + simd::load1(bias + r) : v;
  };
  const int pr = panel_rows(n);
  run_parallel(ctx, panels(N, n), [&](int64_t begin, int64_t end, int) {
    for (int64_t p = begin; p < end; ++p) {
      const int r0 = static_cast<int>(p) * pr;
      gemm_rows<M, W>(r0, std::min(N, r0 + pr), n, row, act, sink);
    }
  });
}

template <int V, int H, class W>
void embed_quant(Context &ctx, const int32_t *ids, int n, const W *table, float *out) {
  static_assert(H % qk::format<W>::kBlock == 0, "a quantized table's rows must be whole blocks");
  constexpr size_t stride = H / qk::format<W>::kBlock;
  run_parallel(ctx, n, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) {
      float *o = out + t * H;
      const int32_t id = ids[t];
      if (id < 0 || id >= V) { // an invalid id embeds as zeros, as for float tables
        std::fill(o, o + H, 0.0f);
        continue;
      }
      qk::dequantize(table + static_cast<size_t>(id) * stride, o, H);
    }
  });
}

// ---- MoE --------------------------------------------------------------------------------

// A token's place in an expert's list: its row, its routing weight, and whether this expert
// is the first of its two in expert order (which writes the output row; the second adds).
struct ExpertEntry {
  int32_t token;
  float weight;
  int32_t first;
};
// moe_work_bytes (runtime.h) counts 16 bytes a route and 12 an entry.
static_assert(sizeof(Route) == 16 && sizeof(ExpertEntry) == 12, "update moe_work_bytes");

// The layout of ctx.work for the MoE, from a 64-byte aligned base: moe_work_bytes in
// runtime.h is this size for the largest quantized row (a test checks it).
struct MoeWork {
  Route *routes;        // [rows]
  int32_t *offsets;     // [experts + 1]
  ExpertEntry *entries; // [2 rows], grouped by expert, in token order within an expert
  float *h;             // [max(rows, 2), I]: silu(gate) * up of the current expert's tokens
  uint8_t *hq;          // [max(rows, 2)] quantized rows of h
  size_t bytes;         // total

  MoeWork(uint8_t *base, int rows, int intermediate, int experts, size_t hq_row) {
    const size_t hrows = static_cast<size_t>(std::max(rows, 2));
    size_t at = 0;
    auto take = [&](size_t bytes) {
      uint8_t *p = base ? base + at : nullptr;
      at += align64(bytes);
      return p;
    };
    routes = reinterpret_cast<Route *>(take(sizeof(Route) * static_cast<size_t>(rows)));
    offsets = reinterpret_cast<int32_t *>(take(sizeof(int32_t) * (experts + 1)));
    entries = reinterpret_cast<ExpertEntry *>(
        take(sizeof(ExpertEntry) * 2 * static_cast<size_t>(rows)));
    h = reinterpret_cast<float *>(take(sizeof(float) * hrows * intermediate));
    hq = take(hq_row * hrows);
    bytes = at + 64; // room to align the base
  }
};

PHIMOE_RT_INLINE float silu_mul(float g, float u) { return g / (1.0f + std::exp(-g)) * u; }

// transformers' gelu_new (NewGELUActivation): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
PHIMOE_RT_INLINE float gelu_tanh(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * (x * x * x))));
}

// With Gelu, phi-2 MLP experts (as moe_float says): gate_up holds fc1 [E, I] rows with
// bias b1, h = gelu_tanh(fc1·x + b1), and each expert's output adds its fc2 bias b2.
template <int E, int H, int I, RouteKind K, bool Gelu = false, class R, class GU, class DW,
          class B1 = float, class B2 = float>
void moe_quant(Context &ctx, const float *x, int n, const R *router, const GU *gate_up,
               const DW *down, float eps, float *out, const B1 *b1 = nullptr,
               const B2 *b2 = nullptr) {
  static_assert(E >= 2 && H >= 1 && I >= 1, "moe_sparsemixer: bad shape");
  constexpr size_t expert_rows = Gelu ? I : 2 * static_cast<size_t>(I);
  // Expert e's down projection value v at output row `row`: plus its fc2 bias with Gelu
  // (SwiGLU experts have none: v as it is).
  auto with_bias = [&](float v, int e, int row) -> float {
    if constexpr (Gelu)
      return v + simd::load1(b2 + static_cast<size_t>(e) * H + row);
    else
      return v;
  };
  using MG = matmul<GU, H>;
  using MD = matmul<DW, I>;
  if (n <= 0)
    return;
  const size_t x_bytes = MG::kQuantized ? MG::kActBytes * static_cast<size_t>(n) : 0;
  const size_t hq_row = MD::kQuantized ? MD::kActBytes : 0;
  uint8_t *base = ctx.work ? reinterpret_cast<uint8_t *>(
                                 (reinterpret_cast<uintptr_t>(ctx.work) + 63) / 64 * 64)
                           : nullptr;
  MoeWork wk(base, n, I, E, hq_row);
  if ((x_bytes && (!ctx.qbuf || ctx.qbuf_bytes < x_bytes)) || !ctx.work ||
      ctx.work_bytes < wk.bytes || !ctx.scratch || ctx.scratch_stride < static_cast<size_t>(E)) {
    fill_nan(out, static_cast<size_t>(n) * H);
    return;
  }

  // Routes (router logits in float, in each thread's scratch [0, E)) and the quantized
  // input rows.
  uint8_t *xq = ctx.qbuf;
  run_parallel(ctx, n, [&](int64_t begin, int64_t end, int thread) {
    float *logits = ctx.scratch_of(thread);
    for (int64_t t = begin; t < end; ++t) {
      const float *xt = x + t * H;
      for (int e = 0; e < E; e += simd::kMaxRows)
        simd::dot_rows<H>(xt, router + static_cast<size_t>(e) * H,
                          std::min(simd::kMaxRows, E - e), logits + e);
      wk.routes[t] = route<K, E>(logits, eps);
      if constexpr (MG::kQuantized)
        MG::quantize(xt, xq + t * MG::kActBytes);
    }
  });
  auto x_act = [&](int t) -> const uint8_t * {
    if constexpr (MG::kQuantized)
      return xq + static_cast<size_t>(t) * MG::kActBytes;
    else
      return reinterpret_cast<const uint8_t *>(x + static_cast<size_t>(t) * H);
  };
  auto h_act = [&](int i) -> const uint8_t * {
    if constexpr (MD::kQuantized)
      return wk.hq + static_cast<size_t>(i) * MD::kActBytes;
    else
      return reinterpret_cast<const uint8_t *>(wk.h + static_cast<size_t>(i) * I);
  };
  auto quantize_h = [&](int64_t begin, int64_t end) {
    if constexpr (MD::kQuantized)
      for (int64_t i = begin; i < end; ++i)
        MD::quantize(wk.h + i * I, wk.hq + i * MD::kActBytes);
  };
  const int gp = panel_rows(n); // rows of gate (and as many of up) per item

  if (n == 1) {
    // Decode: both experts' gate/up rows in one parallel pass, then both down projections.
    const Route r = wk.routes[0];
    const int experts[2] = {r.i1, r.i2};
    const int64_t items_i = (I + gp - 1) / gp;
    run_parallel(ctx, 2 * items_i, [&](int64_t begin, int64_t end, int) {
      for (int64_t item = begin; item < end; ++item) {
        const int slot = static_cast<int>(item / items_i);
        const int r0 = static_cast<int>(item % items_i) * gp, r1 = std::min(I, r0 + gp);
        const GU *gu =
            gate_up + static_cast<size_t>(experts[slot]) * expert_rows * MG::kRowStride;
        float *h = wk.h + static_cast<size_t>(slot) * I;
        auto gate_row = [&](int row) { return gu + static_cast<size_t>(row) * MG::kRowStride; };
        if constexpr (Gelu) {
          const B1 *bias = b1 + static_cast<size_t>(experts[slot]) * I;
          auto gelu_h = [&](int, int row, float v) {
            h[row] = gelu_tanh(v + simd::load1(bias + row));
          };
          gemm_rows<MG, GU>(r0, r1, 1, gate_row, x_act, gelu_h);
          continue;
        }
        auto up_row = [&](int row) {
          return gu + static_cast<size_t>(I + row) * MG::kRowStride;
        };
        auto to_h = [&](int, int row, float v) { h[row] = v; };
        auto mul_h = [&](int, int row, float v) { h[row] = silu_mul(h[row], v); };
        gemm_rows<MG, GU>(r0, r1, 1, gate_row, x_act, to_h);
        gemm_rows<MG, GU>(r0, r1, 1, up_row, x_act, mul_h);
      }
    });
    quantize_h(0, 2);
    const DW *d1 = down + static_cast<size_t>(r.i1) * H * MD::kRowStride;
    const DW *d2 = down + static_cast<size_t>(r.i2) * H * MD::kRowStride;
    const float w1 = r.w1, w2 = r.w2;
    run_parallel(ctx, panels(H, 1), [&](int64_t begin, int64_t end, int) {
      for (int64_t p = begin; p < end; ++p) {
        const int r0 = static_cast<int>(p) * gp, r1 = std::min(H, r0 + gp);
        auto row1 = [&](int row) { return d1 + static_cast<size_t>(row) * MD::kRowStride; };
        auto row2 = [&](int row) { return d2 + static_cast<size_t>(row) * MD::kRowStride; };
        auto act1 = [&](int) { return h_act(0); };
        auto act2 = [&](int) { return h_act(1); };
        auto first = [&](int, int row, float v) { out[row] = w1 * with_bias(v, r.i1, row); };
        auto second = [&](int, int row, float v) {
          const float p2 = w2 * with_bias(v, r.i2, row);
          out[row] = out[row] + p2;
        };
        gemm_rows<MD, DW>(r0, r1, 1, row1, act1, first);
        gemm_rows<MD, DW>(r0, r1, 1, row2, act2, second);
      }
    });
    return;
  }

  // Prompt: tokens grouped by expert (stable), then expert by expert: gate/up over its
  // tokens, their intermediate rows quantized, and the down projection added to the output.
  int32_t *off = wk.offsets;
  std::fill(off, off + E + 1, 0);
  for (int t = 0; t < n; ++t) {
    ++off[wk.routes[t].i1 + 1];
    ++off[wk.routes[t].i2 + 1];
  }
  for (int e = 0; e < E; ++e)
    off[e + 1] += off[e];
  {
    int32_t fill[E];
    std::copy(off, off + E, fill);
    for (int t = 0; t < n; ++t) {
      const Route &r = wk.routes[t];
      const int lo = std::min(r.i1, r.i2);
      wk.entries[fill[r.i1]++] = ExpertEntry{t, r.w1, r.i1 == lo};
      wk.entries[fill[r.i2]++] = ExpertEntry{t, r.w2, r.i2 == lo};
    }
  }
  for (int e = 0; e < E; ++e) {
    const int count = off[e + 1] - off[e];
    if (count == 0)
      continue; // an expert no token chose is not read
    const ExpertEntry *ents = wk.entries + off[e];
    const GU *gu = gate_up + static_cast<size_t>(e) * expert_rows * MG::kRowStride;
    auto gate_row = [&](int row) { return gu + static_cast<size_t>(row) * MG::kRowStride; };
    auto up_row = [&](int row) { return gu + static_cast<size_t>(I + row) * MG::kRowStride; };
    auto tok_act = [&](int i) { return x_act(ents[i].token); };
    auto to_h = [&](int i, int row, float v) { wk.h[static_cast<size_t>(i) * I + row] = v; };
    auto mul_h = [&](int i, int row, float v) {
      float &h = wk.h[static_cast<size_t>(i) * I + row];
      h = silu_mul(h, v);
    };
    const int pr = panel_rows(count);
    run_parallel(ctx, panels(I, count), [&](int64_t begin, int64_t end, int) {
      for (int64_t p = begin; p < end; ++p) {
        const int r0 = static_cast<int>(p) * pr, r1 = std::min(I, r0 + pr);
        if constexpr (Gelu) {
          const B1 *bias = b1 + static_cast<size_t>(e) * I;
          auto gelu_h = [&](int i, int row, float v) {
            wk.h[static_cast<size_t>(i) * I + row] = gelu_tanh(v + simd::load1(bias + row));
          };
          gemm_rows<MG, GU>(r0, r1, count, gate_row, tok_act, gelu_h);
          continue;
        }
        gemm_rows<MG, GU>(r0, r1, count, gate_row, tok_act, to_h);
        gemm_rows<MG, GU>(r0, r1, count, up_row, tok_act, mul_h);
      }
    });
    if constexpr (MD::kQuantized)
      run_parallel(ctx, count, [&](int64_t begin, int64_t end, int) { quantize_h(begin, end); });
    const DW *dw = down + static_cast<size_t>(e) * H * MD::kRowStride;
    auto down_row = [&](int row) { return dw + static_cast<size_t>(row) * MD::kRowStride; };
    auto add_out = [&](int i, int row, float v) {
      const ExpertEntry &en = ents[i];
      float &o = out[static_cast<size_t>(en.token) * H + row];
      const float p = en.weight * with_bias(v, e, row);
      if (en.first)
        o = p;
      else
        o = o + p;
    };
    run_parallel(ctx, panels(H, count), [&](int64_t begin, int64_t end, int) {
      for (int64_t p = begin; p < end; ++p) {
        const int r0 = static_cast<int>(p) * pr;
        gemm_rows<MD, DW>(r0, std::min(H, r0 + pr), count, down_row, h_act, add_out);
      }
    });
  }
}

} // namespace detail
} // namespace phimoe_rt

#endif // PHIMOE_RT_KERNELS_QUANT_H
