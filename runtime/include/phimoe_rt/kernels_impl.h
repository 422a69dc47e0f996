// kernels_impl.h - definitions of the CPU kernel templates declared in kernels.h.
//
// Threading: every kernel splits independent work (output rows, tokens, heads) over
// ctx.pool in contiguous chunks; outputs do not depend on the number of threads (each
// output is computed by the same operations whichever thread computes it). Nothing is
// allocated: per-thread scratch comes from ctx.scratch_of(thread), whose size
// scratch_floats() gives (attention: capacity; moe: 2*I + E). Block-quantized weights
// (block_q8_0, block_q4k, block_q6k) go to kernels_quant.h, which also uses ctx.qbuf and
// ctx.work.
#ifndef PHIMOE_RT_KERNELS_IMPL_H
#define PHIMOE_RT_KERNELS_IMPL_H

#include "phimoe_rt/kernels.h"
#include "phimoe_rt/kernels_quant.h"
#include "phimoe_rt/simd.h"
#include "phimoe_rt/sparsemixer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace phimoe_rt {
namespace detail {

// ctx.pool->parallel_for, or the calling thread alone when the context has no pool.
template <class F> inline void parallel(Context &ctx, int64_t n, F &&fn) {
  if (ctx.pool)
    ctx.pool->parallel_for(n, fn);
  else if (n > 0)
    fn(int64_t{0}, n, 0);
}

// out[0, W) = float(src[0, W))
template <int W, class T> PHIMOE_RT_INLINE void convert_row(const T *src, float *out) {
  constexpr int W8 = W / 8 * 8;
  for (int j = 0; j < W8; j += 8)
    simd::store8(out + j, simd::load8(src + j));
  for (int j = W8; j < W; ++j)
    out[j] = simd::load1(src + j);
}

// LayerNorm of one row: mean, biased variance and z = (x - mean) * rstd in double (so that
// rows with a mean far from 0 or a tiny variance lose nothing to cancellation), then
// z * w + b in float.
template <int H, class W>
inline void layer_norm_row(const float *x, const W *w, const W *b, float eps, float *out) {
  constexpr int H8 = H / 8 * 8;
  simd::vd4 s0{}, s1{};
  for (int j = 0; j < H8; j += 8) {
    s0 += simd::load4d(x + j);
    s1 += simd::load4d(x + j + 4);
  }
  double sum = simd::hsum(s0 + s1);
  for (int j = H8; j < H; ++j)
    sum += x[j];
  const double mean = sum / H;
  simd::vd4 q0{}, q1{};
  for (int j = 0; j < H8; j += 8) {
    const simd::vd4 d0 = simd::load4d(x + j) - mean, d1 = simd::load4d(x + j + 4) - mean;
    q0 += d0 * d0;
    q1 += d1 * d1;
  }
  double sq = simd::hsum(q0 + q1);
  for (int j = H8; j < H; ++j)
    sq += (x[j] - mean) * (x[j] - mean);
  const double rstd = 1.0 / std::sqrt(sq / H + static_cast<double>(eps));
  for (int j = 0; j < H8; j += 8) {
    const simd::vf4 z0 = __builtin_convertvector((simd::load4d(x + j) - mean) * rstd, simd::vf4);
    const simd::vf4 z1 =
        __builtin_convertvector((simd::load4d(x + j + 4) - mean) * rstd, simd::vf4);
    const simd::vf8 z = __builtin_shufflevector(z0, z1, 0, 1, 2, 3, 4, 5, 6, 7);
    simd::store8(out + j, z * simd::load8(w + j) + simd::load8(b + j));
  }
  for (int j = H8; j < H; ++j) {
    const float z = static_cast<float>((x[j] - mean) * rstd);
    out[j] = z * simd::load1(w + j) + simd::load1(b + j);
  }
}

// RMSNorm of one row (transformers' MixtralRMSNorm in float32): the mean square in double,
// z = x * rstd rounded to float, then z * w.
template <int H, class W>
inline void rms_norm_row(const float *x, const W *w, float eps, float *out) {
  constexpr int H8 = H / 8 * 8;
  simd::vd4 q0{}, q1{};
  for (int j = 0; j < H8; j += 8) {
    const simd::vd4 d0 = simd::load4d(x + j), d1 = simd::load4d(x + j + 4);
    q0 += d0 * d0;
    q1 += d1 * d1;
  }
  double sq = simd::hsum(q0 + q1);
  for (int j = H8; j < H; ++j)
    sq += static_cast<double>(x[j]) * x[j];
  const double rstd = 1.0 / std::sqrt(sq / H + static_cast<double>(eps));
  for (int j = 0; j < H8; j += 8) {
    const simd::vf4 z0 = __builtin_convertvector(simd::load4d(x + j) * rstd, simd::vf4);
    const simd::vf4 z1 = __builtin_convertvector(simd::load4d(x + j + 4) * rstd, simd::vf4);
    const simd::vf8 z = __builtin_shufflevector(z0, z1, 0, 1, 2, 3, 4, 5, 6, 7);
    simd::store8(out + j, z * simd::load8(w + j));
  }
  for (int j = H8; j < H; ++j)
    out[j] = static_cast<float>(x[j] * rstd) * simd::load1(w + j);
}

// out[t .. t+TT, r0 .. r0+RR) of a linear layer.
template <int N, int K, int TT, int RR, class W, class B>
PHIMOE_RT_INLINE void linear_tile(const float *x, int t, const W *w, const B *bias, int r0,
                                  float *out) {
  float res[TT][RR];
  simd::dot_tile<K, TT, RR>(x + static_cast<size_t>(t) * K, K, w + static_cast<size_t>(r0) * K,
                            res);
  for (int i = 0; i < TT; ++i)
    for (int r = 0; r < RR; ++r)
      out[static_cast<size_t>(t + i) * N + r0 + r] =
          bias ? res[i][r] + simd::load1(bias + r0 + r) : res[i][r];
}

// out[t0 .. t1, r0 .. r0+RR) for RR <= 8 rows: a single token with all RR rows at once
// (8 accumulators), token pairs with rows in tiles of at most 4 (again 8 accumulators).
template <int N, int K, int RR, class W, class B>
inline void linear_rows(const float *x, int t0, int t1, const W *w, const B *bias, int r0,
                        float *out) {
  constexpr int first = RR < 4 ? RR : 4;
  int t = t0;
  for (; t + 2 <= t1; t += 2) {
    linear_tile<N, K, 2, first>(x, t, w, bias, r0, out);
    if constexpr (RR > 4)
      linear_tile<N, K, 2, RR - 4>(x, t, w, bias, r0 + 4, out);
  }
  if (t < t1)
    linear_tile<N, K, 1, RR>(x, t, w, bias, r0, out);
}


template <int V, int H, class W>
void embed_float(Context &ctx, const int32_t *ids, int n, const W *table, float *out) {
  detail::parallel(ctx, n, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) {
      float *o = out + t * H;
      const int32_t id = ids[t];
      if (id < 0 || id >= V) { // never read out of bounds: an invalid id embeds as zeros
        std::fill(o, o + H, 0.0f);
        continue;
      }
      detail::convert_row<H>(table + static_cast<size_t>(id) * H, o);
    }
  });
}
} // namespace detail

template <int V, int H, class W>
void embed(Context &ctx, const int32_t *ids, int n, const W *table, float *out) {
  if constexpr (detail::is_qblock<W>::value)
    detail::embed_quant<V, H>(ctx, ids, n, table, out);
  else
    detail::embed_float<V, H>(ctx, ids, n, table, out);
}

template <int H, class W>
void layer_norm(Context &ctx, const float *x, int n, const W *w, const W *b, float eps,
                float *out) {
  detail::parallel(ctx, n, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t)
      detail::layer_norm_row<H>(x + t * H, w, b, eps, out + t * H);
  });
}

namespace detail {
// Row by row: sum = a + b (sum may alias a: each element is read before it is written), then
// norm_row(sum row, out row).
template <int H, class NormRow>
void add_then_norm(Context &ctx, const float *a, const float *b, int n, float *sum, float *out,
                   NormRow norm_row) {
  parallel(ctx, n, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) {
      const float *at = a + t * H, *bt = b + t * H;
      float *st = sum + t * H;
      for (int j = 0; j < H; ++j)
        st[j] = at[j] + bt[j];
      norm_row(st, out + t * H);
    }
  });
}
} // namespace detail

template <int H, class W>
void add_layer_norm(Context &ctx, const float *a, const float *b, int n, const W *w,
                    const W *bias, float eps, float *sum, float *out) {
  detail::add_then_norm<H>(ctx, a, b, n, sum, out, [&](const float *st, float *o) {
    detail::layer_norm_row<H>(st, w, bias, eps, o);
  });
}

template <int H, class W>
void rms_norm(Context &ctx, const float *x, int n, const W *w, float eps, float *out) {
  detail::parallel(ctx, n, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t)
      detail::rms_norm_row<H>(x + t * H, w, eps, out + t * H);
  });
}

template <int H, class W>
void add_rms_norm(Context &ctx, const float *a, const float *b, int n, const W *w, float eps,
                  float *sum, float *out) {
  detail::add_then_norm<H>(ctx, a, b, n, sum, out, [&](const float *st, float *o) {
    detail::rms_norm_row<H>(st, w, eps, o);
  });
}

namespace detail {

// Float, bf16 and f16 weights. Work items are (token block of 32, group of 8 output rows),
// row groups varying fastest: for decode (n = 1) the threads split the rows; for a prompt
// each item reuses its 8 weight rows (in cache) across the block's tokens.
template <int N, int K, class W, class B>
void linear_float(Context &ctx, const float *x, int n, const W *w, const B *bias, float *out) {
  static_assert(N > 0 && K > 0, "linear: empty shape");
  constexpr int row_group = simd::kMaxRows, token_block = 32;
  constexpr int64_t groups = (N + row_group - 1) / row_group;
  const int64_t blocks = (n + token_block - 1) / token_block;
  detail::parallel(ctx, groups * blocks, [&](int64_t begin, int64_t end, int) {
    for (int64_t item = begin; item < end; ++item) {
      const int r0 = static_cast<int>(item % groups) * row_group;
      const int t0 = static_cast<int>(item / groups) * token_block;
      const int t1 = std::min(n, t0 + token_block);
      switch (std::min(row_group, N - r0)) {
      case 1: detail::linear_rows<N, K, 1>(x, t0, t1, w, bias, r0, out); break;
      case 2: detail::linear_rows<N, K, 2>(x, t0, t1, w, bias, r0, out); break;
      case 3: detail::linear_rows<N, K, 3>(x, t0, t1, w, bias, r0, out); break;
      case 4: detail::linear_rows<N, K, 4>(x, t0, t1, w, bias, r0, out); break;
      case 5: detail::linear_rows<N, K, 5>(x, t0, t1, w, bias, r0, out); break;
      case 6: detail::linear_rows<N, K, 6>(x, t0, t1, w, bias, r0, out); break;
      case 7: detail::linear_rows<N, K, 7>(x, t0, t1, w, bias, r0, out); break;
      default: detail::linear_rows<N, K, 8>(x, t0, t1, w, bias, r0, out); break;
      }
    }
  });
}
} // namespace detail

template <int N, int K, class W, class B>
void linear(Context &ctx, const float *x, int n, const W *w, const B *bias, float *out) {
  if constexpr (detail::is_qblock<W>::value)
    detail::linear_quant<N, K>(ctx, x, n, w, bias, out);
  else
    detail::linear_float<N, K>(ctx, x, n, w, bias, out);
}

template <int In, int Offset, int Width>
void copy_cols(Context &, const float *x, int n, float *out) {
  static_assert(Offset >= 0 && Width > 0 && Offset + Width <= In, "copy_cols: out of range");
  for (int t = 0; t < n; ++t)
    std::memcpy(out + static_cast<size_t>(t) * Width, x + static_cast<size_t>(t) * In + Offset,
                sizeof(float) * Width);
}

namespace detail {
// inv_freq, angles and cos/sin in float32 as transformers computes them; out may alias x.
// With ctx.batch, each row takes its own LongRoPE set (rope_long[t]). The first R lanes of
// each head of D rotate; the others are copied.
template <int Heads, int D, int R>
void rope_lanes(Context &ctx, const float *x, int n, const int32_t *pos, const RopeParams &p,
                float *out) {
  static_assert(R % 2 == 0 && R > 0 && R <= D, "rope: odd or oversized rotary width");
  constexpr int half = R / 2;
  // [0]: the short set, [1]: the long set.
  const float *factors[2] = {p.short_factor, p.long_factor};
  const float mscales[2] = {p.short_mscale, p.long_mscale};
  float inv_freq[2][half];
  for (int set = 0; set < 2; ++set)
    for (int i = 0; i < half; ++i)
      inv_freq[set][i] =
          1.0f / (factors[set][i] * std::pow(p.theta, static_cast<float>(2 * i) / R));
  const BatchRows *batch = ctx.batch;
  const int fixed = ctx.rope_long ? 1 : 0;
  detail::parallel(ctx, n, [&](int64_t begin, int64_t end, int) {
    float c[half], s[half];
    for (int64_t t = begin; t < end; ++t) {
      const int set = batch ? (batch->rope_long[t] ? 1 : 0) : fixed;
      const float mscale = mscales[set];
      const float position = static_cast<float>(pos[t]);
      for (int i = 0; i < half; ++i) {
        const float angle = position * inv_freq[set][i];
        c[i] = std::cos(angle) * mscale;
        s[i] = std::sin(angle) * mscale;
      }
      for (int h = 0; h < Heads; ++h) {
        const float *xh = x + (t * Heads + h) * D;
        float *oh = out + (t * Heads + h) * D;
        for (int i = 0; i < half; ++i) {
          const float a = xh[i], b = xh[i + half];
          oh[i] = a * c[i] - b * s[i];
          oh[i + half] = b * c[i] + a * s[i];
        }
        if constexpr (R < D)
          if (oh != xh)
            std::memcpy(oh + R, xh + R, sizeof(float) * (D - R));
      }
    }
  });
}
} // namespace detail

template <int Heads, int D>
void rope(Context &ctx, const float *x, int n, const int32_t *pos, const RopeParams &p,
          float *out) {
  static_assert(D % 2 == 0, "rope: odd head dimension");
  detail::rope_lanes<Heads, D, D>(ctx, x, n, pos, p, out);
}

template <int Heads, int D, int R>
void rope_partial(Context &ctx, const float *x, int n, const int32_t *pos, const RopeParams &p,
                  float *out) {
  detail::rope_lanes<Heads, D, R>(ctx, x, n, pos, p, out);
}

template <int W>
void add(Context &ctx, const float *a, const float *b, int n, float *out) {
  detail::parallel(ctx, n, [&](int64_t begin, int64_t end, int) {
    for (size_t i = static_cast<size_t>(begin) * W; i < static_cast<size_t>(end) * W; ++i)
      out[i] = a[i] + b[i];
  });
}

namespace detail {

// One query head against positions [lo, p] of one sequence, whose key and value rows
// (all kv heads) k_of(j) and v_of(j) give: scores in `scores`, the result in `o`.
template <int D, class KOf, class VOf>
PHIMOE_RT_INLINE void attend(const float *qh, int kvh, int lo, int p, float scale, KOf k_of,
                             VOf v_of, float *scores, float *o) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int j = lo; j <= p; ++j) {
    float d[1][1];
    simd::dot_tile<D, 1, 1>(qh, 0, k_of(j) + kvh * D, d);
    scores[j - lo] = d[0][0] * scale;
    mx = std::max(mx, scores[j - lo]);
  }
  float lanes[8] = {};
  for (int j = 0; j <= p - lo; ++j) {
    scores[j] = std::exp(scores[j] - mx);
    lanes[j & 7] += scores[j];
  }
  const float inv = 1.0f / (((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) +
                            ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7])));
  // Weighted sum of v in blocks of 32 positions (bounds the float rounding error).
  float acc[D] = {}, part[D];
  for (int j0 = lo; j0 <= p; j0 += 32) {
    std::fill(part, part + D, 0.0f);
    for (int j = j0; j <= std::min(p, j0 + 31); ++j) {
      const float pj = scores[j - lo] * inv;
      const float *vj = v_of(j) + kvh * D;
      for (int d = 0; d < D; ++d)
        part[d] += pj * vj[d];
    }
    for (int d = 0; d < D; ++d)
      acc[d] += part[d];
  }
  std::memcpy(o, acc, sizeof acc);
}

// attention over a PagedKVCache (ctx.batch): row i attends to positions [lo, pos[i]] of
// its own sequence. A row whose position has no block, or whose earlier positions lack
// one, gives nan (as a position outside a contiguous cache does).
template <int Hq, int Hkv, int D>
void attention_paged(Context &ctx, const float *q, const float *k, const float *v, int n,
                     const int32_t *pos, int layer, float scale, int window, float *out) {
  constexpr int group = Hq / Hkv;
  constexpr size_t kv_row = static_cast<size_t>(Hkv) * D;
  const BatchRows &batch = *ctx.batch;
  PagedKVCache &cache = *batch.cache;
  if (cache.kv_heads != Hkv || cache.head_dim != D || layer < 0 || layer >= cache.layers) {
    std::fill(out, out + static_cast<size_t>(n) * Hq * D,
              std::numeric_limits<float>::quiet_NaN());
    return;
  }
  const int bs = cache.block_size, mask = bs - 1;
  const int shift = (bs & mask) == 0 ? __builtin_ctz(static_cast<unsigned>(bs)) : -1;
  for (int i = 0; i < n; ++i) {
    const int b = batch.block_of(batch.slot[i], pos[i]);
    if (b < 0)
      continue;
    std::memcpy(cache.k_at(layer, b, pos[i] % bs), k + i * kv_row, sizeof(float) * kv_row);
    std::memcpy(cache.v_at(layer, b, pos[i] % bs), v + i * kv_row, sizeof(float) * kv_row);
  }
  detail::parallel(ctx, static_cast<int64_t>(n) * Hq, [&](int64_t begin, int64_t end,
                                                          int thread) {
    float *scores = ctx.scratch_of(thread);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item / Hq;
      const int h = static_cast<int>(item % Hq), kvh = h / group;
      float *o = out + (i * Hq + h) * D;
      const int p = pos[i], s = batch.slot[i];
      const int lo = window > 0 ? std::max(0, p - window + 1) : 0;
      bool mapped = p >= 0 && batch.block_of(s, p) >= 0;
      for (int j = lo; mapped && j <= p; j += bs)
        mapped = batch.block_of(s, j) >= 0;
      if (!mapped) {
        std::fill(o, o + D, std::numeric_limits<float>::quiet_NaN());
        continue;
      }
      const int32_t *table = batch.block_table + static_cast<size_t>(s) * batch.max_blocks;
      const float *qh = q + (i * Hq + h) * D;
      if (shift >= 0) { // a power-of-two block size: no division per position
        auto k_of = [&](int j) { return cache.k_at(layer, table[j >> shift], j & mask); };
        auto v_of = [&](int j) { return cache.v_at(layer, table[j >> shift], j & mask); };
        attend<D>(qh, kvh, lo, p, scale, k_of, v_of, scores, o);
      } else {
        auto k_of = [&](int j) { return cache.k_at(layer, table[j / bs], j % bs); };
        auto v_of = [&](int j) { return cache.v_at(layer, table[j / bs], j % bs); };
        attend<D>(qh, kvh, lo, p, scale, k_of, v_of, scores, o);
      }
    }
  });
}

} // namespace detail

// Rows whose position lies outside the cache are neither written nor attended, and a
// cache of another shape (or a layer it lacks) is not touched at all: those outputs are nan
// (a runtime bug made visible rather than memory corrupted). With ctx.batch, the rows
// belong to several sequences in a PagedKVCache (attention_paged).
template <int Hq, int Hkv, int D>
void attention(Context &ctx, const float *q, const float *k, const float *v, int n,
               const int32_t *pos, int layer, float scale, int window, float *out) {
  static_assert(Hkv > 0 && Hq % Hkv == 0, "attention: Hq must be a multiple of Hkv");
  constexpr int group = Hq / Hkv;
  constexpr size_t kv_row = static_cast<size_t>(Hkv) * D;
  if (ctx.batch) {
    detail::attention_paged<Hq, Hkv, D>(ctx, q, k, v, n, pos, layer, scale, window, out);
    return;
  }
  KVCache &cache = *ctx.cache;
  if (cache.kv_heads != Hkv || cache.head_dim != D || layer < 0 || layer >= cache.layers) {
    std::fill(out, out + static_cast<size_t>(n) * Hq * D,
              std::numeric_limits<float>::quiet_NaN());
    return;
  }
  for (int i = 0; i < n; ++i) {
    if (pos[i] < 0 || pos[i] >= cache.capacity)
      continue;
    std::memcpy(cache.k_at(layer, pos[i]), k + i * kv_row, sizeof(float) * kv_row);
    std::memcpy(cache.v_at(layer, pos[i]), v + i * kv_row, sizeof(float) * kv_row);
  }
  detail::parallel(ctx, static_cast<int64_t>(n) * Hq, [&](int64_t begin, int64_t end,
                                                          int thread) {
    float *scores = ctx.scratch_of(thread);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item / Hq;
      const int h = static_cast<int>(item % Hq), kvh = h / group;
      float *o = out + (i * Hq + h) * D;
      const int p = pos[i];
      if (p < 0 || p >= cache.capacity) {
        std::fill(o, o + D, std::numeric_limits<float>::quiet_NaN());
        continue;
      }
      const int lo = window > 0 ? std::max(0, p - window + 1) : 0;
      auto k_of = [&](int j) { return cache.k_at(layer, j); };
      auto v_of = [&](int j) { return cache.v_at(layer, j); };
      detail::attend<D>(q + (i * Hq + h) * D, kvh, lo, p, scale, k_of, v_of, scores, o);
    }
  });
}

namespace detail {

// Float, bf16 and f16 experts. Per row: router logits (float), sparsemixer routing, then
// both experts. Rows are done one after another with the threads splitting each expert's
// rows, so decode reads the two selected experts once, split across threads, and nothing
// else. Until row t is computed, out[t][0..3] holds its route (i1, i2, w1, w2); out must
// not alias x. The expert activations of the current row live in thread 0's scratch
// [0, 2I), shared by all threads; each thread's router logits in its own [2I, 2I + E).
//
// With Gelu, the experts are phi-2 MLPs: gate_up holds fc1 ([E, I, H], bias b1 [E, I]),
// act = gelu_tanh(fc1·x + b1), and each expert's output adds its fc2 bias b2 [E, H].
template <int E, int H, int I, RouteKind K, bool Gelu = false, class R, class GU, class DW,
          class B1 = float, class B2 = float>
void moe_float(Context &ctx, const float *x, int n, const R *router, const GU *gate_up,
               const DW *down, float eps, float *out, const B1 *b1 = nullptr,
               const B2 *b2 = nullptr) {
  static_assert(E >= 2 && H >= 4 && I >= 1, "moe_sparsemixer: bad shape");
  constexpr size_t expert_rows = Gelu ? I : 2 * static_cast<size_t>(I);
  constexpr int row_group = simd::kMaxRows;
  constexpr int groups_i = (I + row_group - 1) / row_group;
  constexpr int groups_h = (H + row_group - 1) / row_group;

  detail::parallel(ctx, n, [&](int64_t begin, int64_t end, int thread) {
    float *logits = ctx.scratch_of(thread) + 2 * static_cast<size_t>(I);
    for (int64_t t = begin; t < end; ++t) {
      const float *xt = x + t * H;
      for (int e = 0; e < E; e += row_group)
        simd::dot_rows<H>(xt, router + static_cast<size_t>(e) * H, std::min(row_group, E - e),
                          logits + e);
      const Route r = route<K, E>(logits, eps);
      float *ot = out + t * H;
      ot[0] = static_cast<float>(r.i1);
      ot[1] = static_cast<float>(r.i2);
      ot[2] = r.w1;
      ot[3] = r.w2;
    }
  });

  float *act = ctx.scratch_of(0);
  for (int t = 0; t < n; ++t) {
    const float *xt = x + static_cast<size_t>(t) * H;
    float *ot = out + static_cast<size_t>(t) * H;
    const int experts[2] = {static_cast<int>(ot[0]), static_cast<int>(ot[1])};
    const float w1 = ot[2], w2 = ot[3];

    // act[s*I + r] = silu(gate_r . x) * (up_r . x) for expert slot s.
    detail::parallel(ctx, 2 * groups_i, [&](int64_t begin, int64_t end, int) {
      for (int64_t item = begin; item < end; ++item) {
        const int slot = static_cast<int>(item / groups_i);
        const int r0 = static_cast<int>(item % groups_i) * row_group;
        const int rows = std::min(row_group, I - r0);
        const GU *gu = gate_up + static_cast<size_t>(experts[slot]) * expert_rows * H;
        float g[row_group], u[row_group];
        simd::dot_rows<H>(xt, gu + static_cast<size_t>(r0) * H, rows, g);
        if constexpr (Gelu) {
          const B1 *bias = b1 + static_cast<size_t>(experts[slot]) * I + r0;
          for (int r = 0; r < rows; ++r)
            act[slot * I + r0 + r] = gelu_tanh(g[r] + simd::load1(bias + r));
          continue;
        }
        simd::dot_rows<H>(xt, gu + static_cast<size_t>(I + r0) * H, rows, u);
        for (int r = 0; r < rows; ++r)
          act[slot * I + r0 + r] = g[r] / (1.0f + std::exp(-g[r])) * u[r];
      }
    });

    // out[t][r] = w1 * (down_i1[r] . act_1) + w2 * (down_i2[r] . act_2)
    const DW *d1 = down + static_cast<size_t>(experts[0]) * H * I;
    const DW *d2 = down + static_cast<size_t>(experts[1]) * H * I;
    detail::parallel(ctx, groups_h, [&](int64_t begin, int64_t end, int) {
      for (int64_t item = begin; item < end; ++item) {
        const int r0 = static_cast<int>(item) * row_group;
        const int rows = std::min(row_group, H - r0);
        float y1[row_group], y2[row_group];
        simd::dot_rows<I>(act, d1 + static_cast<size_t>(r0) * I, rows, y1);
        simd::dot_rows<I>(act + I, d2 + static_cast<size_t>(r0) * I, rows, y2);
        if constexpr (Gelu) {
          const B2 *c1 = b2 + static_cast<size_t>(experts[0]) * H + r0;
          const B2 *c2 = b2 + static_cast<size_t>(experts[1]) * H + r0;
          for (int r = 0; r < rows; ++r)
            ot[r0 + r] = w1 * (y1[r] + simd::load1(c1 + r)) + w2 * (y2[r] + simd::load1(c2 + r));
          continue;
        }
        for (int r = 0; r < rows; ++r)
          ot[r0 + r] = w1 * y1[r] + w2 * y2[r];
      }
    });
  }
}
} // namespace detail

template <int E, int H, int I, class R, class GU, class DW>
void moe_sparsemixer(Context &ctx, const float *x, int n, const R *router, const GU *gate_up,
                     const DW *down, float eps, float *out) {
  if constexpr (detail::is_qblock<GU>::value || detail::is_qblock<DW>::value)
    detail::moe_quant<E, H, I, RouteKind::Sparsemixer>(ctx, x, n, router, gate_up, down, eps,
                                                        out);
  else
    detail::moe_float<E, H, I, RouteKind::Sparsemixer>(ctx, x, n, router, gate_up, down, eps,
                                                        out);
}

template <int E, int H, int I, class R, class GU, class DW>
void moe_softmax_top2(Context &ctx, const float *x, int n, const R *router, const GU *gate_up,
                      const DW *down, float *out) {
  if constexpr (detail::is_qblock<GU>::value || detail::is_qblock<DW>::value)
    detail::moe_quant<E, H, I, RouteKind::SoftmaxTop2>(ctx, x, n, router, gate_up, down, 0.0f,
                                                        out);
  else
    detail::moe_float<E, H, I, RouteKind::SoftmaxTop2>(ctx, x, n, router, gate_up, down, 0.0f,
                                                        out);
}

template <int E, int H, int I, class R, class W1, class B1, class W2, class B2>
void moe_softmax_top2_gelu(Context &ctx, const float *x, int n, const R *router, const W1 *fc1,
                           const B1 *fc1_bias, const W2 *fc2, const B2 *fc2_bias, float *out) {
  if constexpr (detail::is_qblock<W1>::value || detail::is_qblock<W2>::value)
    detail::moe_quant<E, H, I, RouteKind::SoftmaxTop2, true>(ctx, x, n, router, fc1, fc2, 0.0f,
                                                             out, fc1_bias, fc2_bias);
  else
    detail::moe_float<E, H, I, RouteKind::SoftmaxTop2, true>(ctx, x, n, router, fc1, fc2, 0.0f,
                                                             out, fc1_bias, fc2_bias);
}

} // namespace phimoe_rt

#endif // PHIMOE_RT_KERNELS_IMPL_H
