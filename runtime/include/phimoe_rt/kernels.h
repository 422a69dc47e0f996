// kernels.h - CPU kernels of the PhiMoE forward pass, templates over the model's constant shapes.
//
// Activations are float, row-major [n, width]; weights are row-major as nn.Linear stores
// them ([out, in]) in float, bf16 or f16. Every kernel matches transformers'
// PhimoeForCausalLM (float32) to float rounding; threads come from ctx.pool.
//
// embed, linear (and so the LM head) and moe_sparsemixer's gate_up and down also take
// block-quantized weights (block_q8_0, block_q4k, block_q6k: rows of whole blocks,
// quant.h); gate_up and down may differ in type, the router stays float/bf16/f16. Their
// activations are quantized once per row per op into ctx.qbuf (q8_0 rows for q8_0 weights,
// q8_K blocks for k-quants) and multiplied with integer dot products (quant_kernels.h,
// kernels_quant.h); the MoE also uses ctx.work. Results then match the dequantized weights
// times the quantized activations to float rounding.
#ifndef PHIMOE_RT_KERNELS_H
#define PHIMOE_RT_KERNELS_H

#include "phimoe_rt/runtime.h"

namespace phimoe_rt {

// out[t, :] = table[ids[t], :]
template <int V, int H, class W>
void embed(Context &ctx, const int32_t *ids, int n, const W *table, float *out);

// LayerNorm over H with weight and bias (biased variance, eps inside the sqrt).
template <int H, class W>
void layer_norm(Context &ctx, const float *x, int n, const W *w, const W *b, float eps,
                float *out);

// sum = a + b; out = layer_norm(sum). sum may alias a.
template <int H, class W>
void add_layer_norm(Context &ctx, const float *a, const float *b, int n, const W *w,
                    const W *bias, float eps, float *sum, float *out);

// RMSNorm over H with weight only (Mixtral): x / sqrt(mean(x²) + eps) * w.
template <int H, class W>
void rms_norm(Context &ctx, const float *x, int n, const W *w, float eps, float *out);

// sum = a + b; out = rms_norm(sum). sum may alias a.
template <int H, class W>
void add_rms_norm(Context &ctx, const float *a, const float *b, int n, const W *w, float eps,
                  float *sum, float *out);

// out[n, N] = x[n, K] · w[N, K]ᵀ (+ bias[N]); bias may be null.
template <int N, int K, class W, class B>
void linear(Context &ctx, const float *x, int n, const W *w, const B *bias, float *out);

// out[n, Width] = columns [Offset, Offset + Width) of x[n, In].
template <int In, int Offset, int Width>
void copy_cols(Context &ctx, const float *x, int n, float *out);

// LongRoPE rotation of Heads heads of D lanes (non-interleaved halves), with the
// factor set ctx.rope_long selects; cos and sin are scaled by that set's mscale.
template <int Heads, int D>
void rope(Context &ctx, const float *x, int n, const int32_t *pos, const RopeParams &p,
          float *out);

// Partial rotary (phi-2): the first R lanes of each head rotate as rope does a head of R
// lanes (lane i with lane i + R/2, frequencies over R); lanes [R, D) pass through.
template <int Heads, int D, int R>
void rope_partial(Context &ctx, const float *x, int n, const int32_t *pos, const RopeParams &p,
                  float *out);

// out = a + b over n rows of W; out may alias a or b.
template <int W>
void add(Context &ctx, const float *a, const float *b, int n, float *out);

// Writes k, v rows at pos[i] into layer `layer` of ctx.cache, then causal GQA:
// query row i (position pos[i]) attends cache positions [max(0, pos[i]-window+1), pos[i]]
// (window <= 0: no window); query head h reads kv head h / (Hq / Hkv); softmax in float.
template <int Hq, int Hkv, int D>
void attention(Context &ctx, const float *q, const float *k, const float *v, int n,
               const int32_t *pos, int layer, float scale, int window, float *out);

// A whole sparsemixer MoE block: router logits x·routerᵀ, the two experts chosen per
// row as ../shared/docs/phimoe-reference.md says, and out = w1·E_i1(x) + w2·E_i2(x)
// with E(x) = down·(silu(x·gate_upᵀ[:I]) * (x·gate_upᵀ[I:])). gate_up is [E, 2I, H],
// down [E, H, I]. Only the selected experts' weights are read.
template <int E, int H, int I, class R, class GU, class DW>
void moe_sparsemixer(Context &ctx, const float *x, int n, const R *router, const GU *gate_up,
                     const DW *down, float eps, float *out);

// The same MoE block with Mixtral's routing: softmax over the E router logits, the two
// largest, renormalised to sum to one (sparsemixer.h, softmax_top2).
template <int E, int H, int I, class R, class GU, class DW>
void moe_softmax_top2(Context &ctx, const float *x, int n, const R *router, const GU *gate_up,
                      const DW *down, float *out);

// A MoE block of phi-2 MLP experts (phixtral) with softmax top-2 routing:
// E(x) = fc2·gelu_tanh(x·fc1ᵀ + fc1_bias) + fc2_bias, out = w1·E_i1(x) + w2·E_i2(x).
// fc1 is [E, I, H], fc1_bias [E, I], fc2 [E, H, I], fc2_bias [E, H]; fc1 and fc2 may be
// block-quantized, the biases are float, bf16 or f16.
template <int E, int H, int I, class R, class W1, class B1, class W2, class B2>
void moe_softmax_top2_gelu(Context &ctx, const float *x, int n, const R *router, const W1 *fc1,
                           const B1 *fc1_bias, const W2 *fc2, const B2 *fc2_bias, float *out);

} // namespace phimoe_rt

#include "phimoe_rt/kernels_impl.h"

#endif // PHIMOE_RT_KERNELS_H
