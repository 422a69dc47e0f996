//===- PhiMoEOps.td - phimoe operations ------------------------*- tablegen -*-===//

#ifndef PHIMOE_OPS_TD
#define PHIMOE_OPS_TD

include "dialects/PhiMoE/PhiMoETypes.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/IR/BuiltinAttributes.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//

def PhiMoE_Activation : RankedTensorOf<[AnyFloat]>;
def PhiMoE_FloatWeight : RankedTensorOf<[AnyFloat]>;
def PhiMoE_Weight : AnyTypeOf<[RankedTensorOf<[AnyFloat]>, PhiMoE_QWeightType],
                              "a float tensor or a quantized weight">;
def PhiMoE_Ids : 1DTensorOf<[I32, I64]>;


//===----------------------------------------------------------------------===//
// Weights
//===----------------------------------------------------------------------===//

def PhiMoE_WeightOp : PhiMoE_Op<"weight", [
    Symbol, HasParent<"::mlir::ModuleOp">,
    DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "a named weight: a checkpoint tensor or a tensor derived from others";
  let description = [{
    Declares a weight at module level. Without a recipe, the symbol name is the
    name of a checkpoint tensor. With a recipe, the weight is derived from other
    weight symbols: `concat` puts their rows one after another, `stack` puts
    them along a new leading dimension. The type says how the weight is stored:
    a float tensor (converted from the checkpoint's dtype when they differ) or a
    `!phimoe.qweight` (block-quantized; rows are quantized independently, so a
    derived weight may be quantized after it is assembled).

    No tensor data is ever held in the IR: the weight packer executes the
    recipes, streaming from the checkpoint.

    Example:
    ```mlir
    phimoe.weight @model.layers.0.self_attn.q_proj.weight : tensor<64x64xbf16>
    phimoe.weight @l0.qkv = concat [@model.layers.0.self_attn.q_proj.weight,
        @model.layers.0.self_attn.k_proj.weight,
        @model.layers.0.self_attn.v_proj.weight] : !phimoe.qweight<q8_0, [96, 64]>
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name,
                       TypeAttrOf<PhiMoE_Weight>:$type,
                       OptionalAttr<PhiMoE_WeightRecipeAttr>:$recipe,
                       OptionalAttr<FlatSymbolRefArrayAttr>:$parts);
  let assemblyFormat = [{
    $sym_name (`=` $recipe^ $parts)? attr-dict `:` $type
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    bool isDerived() { return getRecipe().has_value(); }
  }];
}

def PhiMoE_WeightRefOp : PhiMoE_Op<"weight_ref", [
    Pure, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "reads a weight symbol";
  let description = [{
    Makes the weight named by a `phimoe.weight` symbol available as a value.
    The result type equals the declared type of the weight.

    Example:
    ```mlir
    %w = phimoe.weight_ref @model.layers.0.self_attn.o_proj.weight : tensor<64x64xbf16>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$name);
  let results = (outs PhiMoE_Weight:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
}

//===----------------------------------------------------------------------===//
// Elementwise and normalization
//===----------------------------------------------------------------------===//

def PhiMoE_EmbedOp : PhiMoE_Op<"embed", [Pure]> {
  let summary = "token embedding lookup";
  let description = [{
    `result[t, :] = table[ids[t], :]`, without scaling. The table is [V, H]
    (float or quantized); ids outside [0, V) are an error at run time.

    Example:
    ```mlir
    %h = phimoe.embed %ids, %table : tensor<?xi32>, tensor<32064x4096xbf16> -> tensor<?x4096xf32>
    ```
  }];
  let arguments = (ins PhiMoE_Ids:$ids, PhiMoE_Weight:$table);
  let results = (outs PhiMoE_Activation:$result);
  let assemblyFormat = [{
    $ids `,` $table attr-dict `:` type($ids) `,` type($table) `->` type($result)
  }];
  let hasVerifier = 1;
}

def PhiMoE_LayerNormOp : PhiMoE_Op<"layer_norm", [Pure,
    AllTypesMatch<["input", "result"]>,
    OptionalTypesMatchWith<"bias has the weight's type", "weight", "bias", "$_self">]> {
  let summary = "LayerNorm (with weight and bias) or RMSNorm (weight only) over the last dimension";
  let description = [{
    `y = (x - mean(x)) / sqrt(var(x) + epsilon) * weight + bias`, with the biased
    variance, over the last dimension (a full LayerNorm: Phi-3.5-MoE).

    With `rms` (Mixtral): `y = x / sqrt(mean(x²) + epsilon) * weight`, and no
    bias. The bias is required without `rms` and refused with it.

    Example:
    ```mlir
    %y = phimoe.layer_norm %x, %w, %b {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xf32>
    %r = phimoe.layer_norm %x, %w {epsilon = 1.0e-05 : f64, rms} : tensor<?x64xf32>, tensor<64xf32>
    ```
  }];
  let arguments = (ins PhiMoE_Activation:$input, PhiMoE_FloatWeight:$weight,
                       Optional<PhiMoE_FloatWeight>:$bias, F64Attr:$epsilon,
                       UnitAttr:$rms);
  let results = (outs PhiMoE_Activation:$result);
  let assemblyFormat = [{
    $input `,` $weight (`,` $bias^)? attr-dict `:` type($input) `,` type($weight)
  }];
  let hasVerifier = 1;
}

def PhiMoE_AddLayerNormOp : PhiMoE_Op<"add_layer_norm", [Pure,
    AllTypesMatch<["lhs", "rhs", "sum", "result"]>,
    OptionalTypesMatchWith<"bias has the weight's type", "weight", "bias", "$_self">]> {
  let summary = "residual add fused with the LayerNorm (or RMSNorm) that follows it";
  let description = [{
    `sum = lhs + rhs; result = layer_norm(sum, weight, bias, epsilon)` (an RMSNorm
    of the sum, without bias, with `rms`). Both are results: the sum is the
    residual stream the next block adds to.

    Example:
    ```mlir
    %h1, %x = phimoe.add_layer_norm %h, %a, %w, %b {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xf32>
    ```
  }];
  let arguments = (ins PhiMoE_Activation:$lhs, PhiMoE_Activation:$rhs,
                       PhiMoE_FloatWeight:$weight, Optional<PhiMoE_FloatWeight>:$bias,
                       F64Attr:$epsilon, UnitAttr:$rms);
  let results = (outs PhiMoE_Activation:$sum, PhiMoE_Activation:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs `,` $weight (`,` $bias^)? attr-dict `:` type($lhs) `,` type($weight)
  }];
  let hasVerifier = 1;
}

class PhiMoE_BinaryOp<string mnemonic, string op, list<Trait> traits = []>
    : PhiMoE_Op<mnemonic, !listconcat(traits, [Pure, SameOperandsAndResultType])> {
  let summary = "elementwise " # op;
  let description = "Elementwise `lhs " # op # " rhs` of two tensors of one type.\n\n"
      "Example:\n```mlir\n%z = phimoe." # mnemonic # " %x, %y : tensor<?x64xf32>\n```";
  let arguments = (ins PhiMoE_Activation:$lhs, PhiMoE_Activation:$rhs);
  let results = (outs PhiMoE_Activation:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($result)";
}

def PhiMoE_AddOp : PhiMoE_BinaryOp<"add", "+", [Commutative]>;
def PhiMoE_MulOp : PhiMoE_BinaryOp<"mul", "*", [Commutative]>;

def PhiMoE_SiluOp : PhiMoE_Op<"silu", [Pure, SameOperandsAndResultType]> {
  let summary = "elementwise SiLU";
  let description = [{
    `y = x * sigmoid(x)`.

    Example:
    ```mlir
    %y = phimoe.silu %x : tensor<?x128xf32>
    ```
  }];
  let arguments = (ins PhiMoE_Activation:$input);
  let results = (outs PhiMoE_Activation:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
}

def PhiMoE_GeluOp : PhiMoE_Op<"gelu", [Pure, SameOperandsAndResultType]> {
  let summary = "elementwise GELU, tanh approximation";
  let description = [{
    `y = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`, transformers'
    `gelu_new` (phi-2's MLP, the experts of phixtral).

    Example:
    ```mlir
    %y = phimoe.gelu %x : tensor<?x128xf32>
    ```
  }];
  let arguments = (ins PhiMoE_Activation:$input);
  let results = (outs PhiMoE_Activation:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
}

//===----------------------------------------------------------------------===//
// Projections
//===----------------------------------------------------------------------===//

def PhiMoE_LinearOp : PhiMoE_Op<"linear", [Pure]> {
  let summary = "x·Wᵀ + b";
  let description = [{
    `result = input · weightᵀ (+ bias)` with input [T, K], weight [N, K] (float or
    quantized, as nn.Linear stores it) and bias [N].

    Example:
    ```mlir
    %q = phimoe.linear %x, %w, %b : tensor<?x64xf32>, tensor<64x64xbf16>, tensor<64xbf16> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins PhiMoE_Activation:$input, PhiMoE_Weight:$weight,
                       Optional<PhiMoE_FloatWeight>:$bias);
  let results = (outs PhiMoE_Activation:$result);
  let assemblyFormat = [{
    $input `,` $weight (`,` $bias^)? attr-dict `:` type($input) `,` type($weight)
    (`,` type($bias)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def PhiMoE_SplitOp : PhiMoE_Op<"split", [Pure]> {
  let summary = "splits the last dimension into consecutive pieces";
  let description = [{
    Result i holds columns [Σ_{j<i} sizes[j], Σ_{j≤i} sizes[j]) of the input's
    last dimension, whose size is Σ sizes.

    Example:
    ```mlir
    %q, %k, %v = phimoe.split %qkv [64, 16, 16] : tensor<?x96xf32> -> tensor<?x64xf32>, tensor<?x16xf32>, tensor<?x16xf32>
    ```
  }];
  let arguments = (ins PhiMoE_Activation:$input, DenseI64ArrayAttr:$sizes);
  let results = (outs Variadic<PhiMoE_Activation>:$results);
  let assemblyFormat = [{
    $input $sizes attr-dict `:` type($input) `->` type($results)
  }];
  let hasVerifier = 1;
}

def PhiMoE_LMHeadOp : PhiMoE_Op<"lm_head", [Pure]> {
  let summary = "the output projection to vocabulary logits";
  let description = [{
    `logits = input · weightᵀ (+ bias)` with weight [V, H]. A linear of its own
    so that quantization policies and codegen can treat it apart.

    Example:
    ```mlir
    %l = phimoe.lm_head %x, %w, %b : tensor<?x64xf32>, tensor<320x64xbf16>, tensor<320xbf16> -> tensor<?x320xf32>
    ```
  }];
  let arguments = (ins PhiMoE_Activation:$input, PhiMoE_Weight:$weight,
                       Optional<PhiMoE_FloatWeight>:$bias);
  let results = (outs PhiMoE_Activation:$result);
  let assemblyFormat = [{
    $input `,` $weight (`,` $bias^)? attr-dict `:` type($input) `,` type($weight)
    (`,` type($bias)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

def PhiMoE_RopeOp : PhiMoE_Op<"rope", [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "LongRoPE rotation of query or key heads";
  let description = [{
    Rotates every head (of `head_dim` lanes) of each row by its position, in the
    non-interleaved convention: lane i pairs with lane i + head_dim/2. With
    `rotary_dim` (partial rotary, phi-2), only the first rotary_dim lanes of each
    head rotate, lane i with lane i + rotary_dim/2 and frequencies over rotary_dim;
    the other lanes pass through. The
    factor set is chosen once per forward pass from the sequence length
    L = max(positions) + 1: short while L <= original_max_position, long after.
    cos and sin are multiplied by the set's mscale, so q and k are both scaled.

    Example:
    ```mlir
    %qr = phimoe.rope %q, %pos {head_dim = 16 : i64, scaling = #rope} : tensor<?x64xf32>, tensor<?xi32>
    ```
  }];
  let arguments = (ins PhiMoE_Activation:$input, PhiMoE_Ids:$positions,
                       I64Attr:$head_dim, PhiMoE_LongRopeAttr:$scaling,
                       OptionalAttr<I64Attr>:$rotary_dim);
  let extraClassDeclaration = [{
    /// The lanes of each head that rotate: rotary_dim, or all of head_dim.
    int64_t getRotaryLanes() {
      return getRotaryDim() ? static_cast<int64_t>(*getRotaryDim()) : getHeadDim();
    }
  }];
  let results = (outs PhiMoE_Activation:$result);
  let assemblyFormat = [{
    $input `,` $positions attr-dict `:` type($input) `,` type($positions)
  }];
  let hasVerifier = 1;
}

def PhiMoE_AttentionOp : PhiMoE_Op<"attention", [
    AllTypesMatch<["q", "result"]>, AllTypesMatch<["k", "v"]>]> {
  let summary = "causal grouped-query attention against a KV cache";
  let description = [{
    Writes the rows of `k` and `v` (already rotated) into layer `layer` of the
    cache at `positions`, then for every query row attends over the cache
    positions up to its own: `softmax(q·kᵀ · scale) · v` in float32, with query
    head h reading kv head h / (num_heads / num_kv_heads). `scale` defaults to
    1/sqrt(head_dim). With `sliding_window`, a query at position p sees keys
    at positions > p - sliding_window only.

    Example:
    ```mlir
    %a = phimoe.attention %q, %k, %v, %pos, %cache {layer = 0 : i64, num_heads = 4 : i64,
           num_kv_heads = 2 : i64, head_dim = 16 : i64}
           : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>,
             !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
    ```
  }];
  let arguments = (ins PhiMoE_Activation:$q, PhiMoE_Activation:$k,
                       PhiMoE_Activation:$v, PhiMoE_Ids:$positions,
                       Arg<PhiMoE_KVCacheType, "the cache", [MemRead, MemWrite]>:$cache,
                       I64Attr:$layer, I64Attr:$num_heads, I64Attr:$num_kv_heads,
                       I64Attr:$head_dim, OptionalAttr<F64Attr>:$scale,
                       OptionalAttr<I64Attr>:$sliding_window);
  let results = (outs PhiMoE_Activation:$result);
  let assemblyFormat = [{
    $q `,` $k `,` $v `,` $positions `,` $cache attr-dict `:` type($q) `,` type($k)
    `,` type($positions) `,` qualified(type($cache))
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

def PhiMoE_RouterOp : PhiMoE_Op<"router", [Pure]> {
  let summary = "router logits and expert selection";
  let description = [{
    Computes the router logits `s = input · weightᵀ` (weight [E, H], never
    quantized, no bias) and picks `top_k` experts per row.

    `sparsemixer` (Phi-3.5-MoE, top_k = 2): i1 = argmax s (first on ties);
    expert j is masked when (s[i1] - s[j]) / max(|s[j]|, s[i1]) > 2·epsilon, and
    w1 is the softmax of the unmasked logits at i1. Then i2 = argmax of s with
    i1 removed, the same mask is taken around s[i2] on the original logits (i1
    masked too), and w2 is that softmax at i2. The weights are not
    renormalised.

    `softmax_topk` (Mixtral): softmax over all E, the top_k largest,
    renormalised to sum to one; epsilon is unused.

    Results: the chosen expert ids [T, top_k] and their weights [T, top_k].

    Example:
    ```mlir
    %ids, %w = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64}
               : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    ```
  }];
  let arguments = (ins PhiMoE_RouterKindAttr:$kind, PhiMoE_Activation:$input,
                       PhiMoE_FloatWeight:$weight, I64Attr:$top_k, F64Attr:$epsilon);
  let results = (outs 2DTensorOf<[I32]>:$experts, PhiMoE_Activation:$weights);
  let assemblyFormat = [{
    $kind $input `,` $weight attr-dict `:` type($input) `,` type($weight) `->`
    type($experts) `,` type($weights)
  }];
  let hasVerifier = 1;
}

def PhiMoE_GateUpOp : PhiMoE_Op<"gate_up", [Pure]> {
  let summary = "fused gate and up projections with the SiLU·mul epilogue";
  let description = [{
    With weight [2I, H] holding the gate rows (w1) then the up rows (w3):
    `result = silu(input · weight[:I]ᵀ) * (input · weight[I:]ᵀ)`, [T, I].

    Example:
    ```mlir
    %a = phimoe.gate_up %x, %w13 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
    ```
  }];
  let arguments = (ins PhiMoE_Activation:$input, PhiMoE_Weight:$weight);
  let results = (outs PhiMoE_Activation:$result);
  let assemblyFormat = [{
    $input `,` $weight attr-dict `:` type($input) `,` type($weight) `->` type($result)
  }];
  let hasVerifier = 1;
}

def PhiMoE_MoECombineOp : PhiMoE_Op<"moe_combine", [Pure]> {
  let summary = "weighted sum of the selected experts' outputs";
  let description = [{
    `result[t] = Σ_k weights[t, k] · expert_outputs[experts[t, k]][t]`. The
    unfused form of a MoE block: every expert output is given for every row
    (dense), and the routing decides which are summed. `phimoe-fuse-moe`
    replaces it by `phimoe.moe`, which runs only the selected experts.

    Example:
    ```mlir
    %y = phimoe.moe_combine %ids, %w, %e0, %e1, %e2, %e3 : tensor<?x2xi32>, tensor<?x2xf32>,
           tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins 2DTensorOf<[I32]>:$experts, PhiMoE_Activation:$weights,
                       Variadic<PhiMoE_Activation>:$expert_outputs);
  let results = (outs PhiMoE_Activation:$result);
  let assemblyFormat = [{
    $experts `,` $weights `,` $expert_outputs attr-dict `:` type($experts) `,`
    type($weights) `,` type($expert_outputs) `->` type($result)
  }];
  let hasVerifier = 1;
}

def PhiMoE_MoEOp : PhiMoE_Op<"moe", [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "a whole MoE block: routing, the selected experts, weighted sum";
  let description = [{
    Routes each row as `phimoe.router` does (same kind, top_k and epsilon),
    runs only the selected experts, `E(x) = down · (silu(x·W1ᵀ) * (x·W3ᵀ))`,
    and returns the weighted sum. gate_up is [E, 2I, H] (per expert, w1 rows
    then w3 rows) and down is [E, H, I].

    Example:
    ```mlir
    %y = phimoe.moe sparsemixer %x, %wg, %gu, %down {epsilon = 1.0e-02 : f64, top_k = 2 : i64}
           : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x256x64xbf16>, tensor<4x64x128xbf16>
    ```
  }];
  let arguments = (ins PhiMoE_RouterKindAttr:$kind, PhiMoE_Activation:$input,
                       PhiMoE_FloatWeight:$router_weight, PhiMoE_Weight:$gate_up,
                       PhiMoE_Weight:$down, I64Attr:$top_k, F64Attr:$epsilon);
  let results = (outs PhiMoE_Activation:$result);
  let assemblyFormat = [{
    $kind $input `,` $router_weight `,` $gate_up `,` $down attr-dict `:`
    type($input) `,` type($router_weight) `,` type($gate_up) `,` type($down)
  }];
  let hasVerifier = 1;
}

def PhiMoE_MoEGeluOp : PhiMoE_Op<"moe_gelu", [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "a MoE block of phi-2 MLP experts: routing, the selected experts, weighted sum";
  let description = [{
    Routes each row as `phimoe.router` does (same kind, top_k and epsilon), runs
    only the selected experts, `E(x) = fc2 · gelu_tanh(x·fc1ᵀ + fc1_bias) + fc2_bias`,
    and returns `Σ_k w_k · E_k(x)`. fc1 is [E, I, H], fc1_bias [E, I], fc2
    [E, H, I], fc2_bias [E, H] (phixtral: phi-2 MLPs merged as experts).

    Example:
    ```mlir
    %y = phimoe.moe_gelu softmax_topk %x, %wg, %fc1, %b1, %fc2, %b2
           {epsilon = 0.0 : f64, top_k = 2 : i64}
           : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x256x64xf32>, tensor<4x256xf32>,
             tensor<4x64x256xf32>, tensor<4x64xf32>
    ```
  }];
  let arguments = (ins PhiMoE_RouterKindAttr:$kind, PhiMoE_Activation:$input,
                       PhiMoE_FloatWeight:$router_weight, PhiMoE_Weight:$fc1,
                       PhiMoE_FloatWeight:$fc1_bias, PhiMoE_Weight:$fc2,
                       PhiMoE_FloatWeight:$fc2_bias, I64Attr:$top_k, F64Attr:$epsilon);
  let results = (outs PhiMoE_Activation:$result);
  let assemblyFormat = [{
    $kind $input `,` $router_weight `,` $fc1 `,` $fc1_bias `,` $fc2 `,` $fc2_bias attr-dict
    `:` type($input) `,` type($router_weight) `,` type($fc1) `,` type($fc1_bias) `,`
    type($fc2) `,` type($fc2_bias)
  }];
  let hasVerifier = 1;
}

#endif // PHIMOE_OPS_TD
