//===- Passes.td - every phimoe pass, declared in one place ---*- tablegen -*-===//
//
// The order in which they run lives only in Pipelines.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef PHIMOE_PASSES_TD
#define PHIMOE_PASSES_TD

include "mlir/Pass/PassBase.td"

//===----------------------------------------------------------------------===//
// Fusion
//===----------------------------------------------------------------------===//

def FuseQKVPass : Pass<"phimoe-fuse-qkv", "::mlir::ModuleOp"> {
  let summary = "Fuse the q, k and v projections of an attention into one linear";
  let description = [{
    Anchored on `phimoe.attention`: when its q and k come (through an optional
    `phimoe.rope`) from `phimoe.linear` ops and v from one, all three read the
    same value, their weights are weight symbols of one format and their biases
    are all present or all absent, the three linears become one linear over a
    derived weight `concat [@q, @k, @v]` (and a concatenated bias), followed by
    a `phimoe.split`.

    Before:
    ```mlir
    %q = phimoe.linear %x, %wq, %bq : ...
    %k = phimoe.linear %x, %wk, %bk : ...
    %v = phimoe.linear %x, %wv, %bv : ...
    ```
    After:
    ```mlir
    %qkv = phimoe.linear %x, %wqkv, %bqkv : ...
    %q, %k, %v = phimoe.split %qkv [64, 32, 32] : ...
    ```
    It does not fire when the inputs differ, the weight formats differ, or a
    weight is not a `phimoe.weight` symbol.
  }];
  let dependentDialects = ["::mlir::phimoe::PhiMoEDialect"];
}

def FuseGateUpPass : Pass<"phimoe-fuse-gate-up", "::mlir::ModuleOp"> {
  let summary = "Fuse an expert's gate (w1) and up (w3) projections with silu·mul";
  let description = [{
    `mul(silu(linear(x, w1)), linear(x, w3))`, with both linears unbiased, over
    the same x, with weights of one format, becomes
    `gate_up(x, concat [@w1, @w3])`: one projection whose epilogue applies
    SiLU to the first half and multiplies by the second.

    Before:
    ```mlir
    %g = phimoe.linear %x, %w1 : ...
    %u = phimoe.linear %x, %w3 : ...
    %s = phimoe.silu %g : ...
    %a = phimoe.mul %s, %u : ...
    ```
    After:
    ```mlir
    %a = phimoe.gate_up %x, %w13 : ...
    ```
  }];
  let dependentDialects = ["::mlir::phimoe::PhiMoEDialect"];
}

def FuseAddNormPass : Pass<"phimoe-fuse-add-norm", "::mlir::ModuleOp"> {
  let summary = "Fuse a residual add into the LayerNorm that reads it";
  let description = [{
    `%s = add %a, %b; %n = layer_norm %s, %w, %bias` becomes
    `%s, %n = add_layer_norm %a, %b, %w, %bias`; other users of the sum keep
    reading it from the fused op.
  }];
  let dependentDialects = ["::mlir::phimoe::PhiMoEDialect"];
}

def FuseMoEPass : Pass<"phimoe-fuse-moe", "::mlir::ModuleOp"> {
  let summary = "Fuse router, expert selection, the experts and the weighted sum";
  let description = [{
    Anchored on `phimoe.moe_combine`: when its routing comes from one
    `phimoe.router` over x, and expert output j is
    `linear(gate_up(x, @gu_j), @down_j)` (no bias) for every expert j of the
    router, the block becomes one `phimoe.moe` over derived weights
    `stack [@gu_0, ...]` and `stack [@down_0, ...]`, which computes only the
    selected experts.

    Before:
    ```mlir
    %ids, %w = phimoe.router sparsemixer %x, %wg ...
    %a0 = phimoe.gate_up %x, %gu0 ...   %e0 = phimoe.linear %a0, %d0 ...
    ...
    %y = phimoe.moe_combine %ids, %w, %e0, ... 
    ```
    After:
    ```mlir
    %y = phimoe.moe sparsemixer %x, %wg, %gu, %down ...
    ```

    phi-2 MLP experts (phixtral), where expert output j is
    `linear(gelu(linear(x, @fc1_j, @b1_j)), @fc2_j, @b2_j)`, become one
    `phimoe.moe_gelu` over the four stacked groups (fc1, fc1 bias, fc2, fc2 bias).
  }];
  let dependentDialects = ["::mlir::phimoe::PhiMoEDialect"];
}

//===----------------------------------------------------------------------===//
// Quantization
//===----------------------------------------------------------------------===//

def QuantizePass : Pass<"phimoe-quantize", "::mlir::ModuleOp"> {
  let summary = "Choose the storage type of every weight";
  let description = [{
    Sets the type of each weight that the functions read, by its role:
    - router weights: never quantized (kept as declared);
    - 1-D weights (norms, biases) and the stacked expert biases of
      `phimoe.moe_gelu`: float32;
    - the LM head: `lm-head` (default `auto`: q6k under a 4- or 5-bit body,
      q8_0 under q6k, else the body's scheme);
    - the embedding table: `embedding` (default `auto`: q8_0 under a 4-, 5- or
      6-bit body, else the body's scheme);
    - expert weights (of `phimoe.moe`, `phimoe.moe_gelu`, `phimoe.gate_up` and
      the linears that make an expert): `scheme`;
    - everything else: `scheme` with `scope=all`, kept as declared with
      `scope=experts` (MoQE).
    `override=REGEX=TYPE` sets the type of every weight whose name, or the name
    of one of its parts, matches REGEX; the last matching override wins (the
    router still stays as it is, and 1-D weights take only float types; when
    overrides give a LayerNorm's weight and bias different types, both become
    f32).
    TYPE `keep` keeps the declared type.

    A block-quantized type needs rows that are a whole number of blocks; a row
    that is not falls back to q8_0 (32-wide blocks), else stays float32.

    Before:
    ```mlir
    phimoe.weight @w : tensor<64x64xbf16>
    ```
    After (`scheme=q8_0`):
    ```mlir
    phimoe.weight @w : !phimoe.qweight<q8_0, [64, 64]>
    ```
  }];
  let options = [
    Option<"scheme", "scheme", "std::string", "\"q8_0\"",
           "storage of the body: f32, f16, bf16, q8_0, q4_0, q4k, q5k, q6k or keep">,
    Option<"scope", "scope", "std::string", "\"all\"",
           "which weights take the scheme: all, or experts (MoQE)">,
    Option<"lmHead", "lm-head", "std::string", "\"auto\"",
           "storage of the LM head: auto, keep or a scheme">,
    Option<"embedding", "embedding", "std::string", "\"auto\"",
           "storage of the embedding table: auto, keep or a scheme">,
    ListOption<"overrides", "override", "std::string",
               "REGEX=TYPE: the storage of weights whose name matches REGEX">
  ];
  let dependentDialects = ["::mlir::phimoe::PhiMoEDialect"];
}

//===----------------------------------------------------------------------===//
// Planning and lowering
//===----------------------------------------------------------------------===//

def PlanMemoryPass : Pass<"phimoe-plan-memory", "::mlir::ModuleOp"> {
  let summary = "Place activations in one static arena and weights in the pack";
  let description = [{
    Activations: every tensor an op of `@forward` produces (but the returned
    logits) gets a fixed offset, in floats, in one arena sized for `max-tokens`
    rows: `phimoe.arena = array<i64: ...>` on the op (one offset per result),
    and `phimoe.arena_floats` / `phimoe.max_tokens` on the function. Buffers are
    reused once their value is dead (first fit, in program order); the sum of
    `add_layer_norm` takes the buffer of its `lhs` when that dies there, so the
    residual stream stays in place.

    Weights: each weight the function reads gets `phimoe.pack_offset` and
    `phimoe.pack_bytes` (aligned to `alignment` bytes, in module order); the
    module gets `phimoe.pack_bytes` and `phimoe.model_hash`, a hash of the
    planned IR that phimoe-bin and weights.phw must agree on.
  }];
  let options = [
    Option<"maxTokens", "max-tokens", "int64_t", "256",
           "rows per forward call: the arena holds this many tokens">,
    Option<"alignment", "alignment", "int64_t", "64",
           "byte alignment of each weight in the pack">,
    Option<"keepSplitInput", "keep-split-input", "bool", "false",
           "keep a three-way split's input live through the next two ops when both read "
           "the split's results (target=cuda: qkv_rope_kv_write reads the q/k/v projection "
           "while it writes the queries' RoPE, which must then be placed apart from it)">
  ];
}

def LowerToEmitCPass : Pass<"phimoe-lower-to-emitc", "::mlir::ModuleOp"> {
  let summary = "Lower the planned @forward to EmitC calls of the phimoe_rt kernels";
  let description = [{
    Replaces `func.func @forward` by `emitc.func @phimoe_forward(ctx, ids,
    positions, n, logit_rows, logits)`: a flat list of `emitc.call_opaque`s of
    `phimoe_rt` kernel templates, instantiated with the model's constant shapes,
    on activation pointers at the planned arena offsets and weight pointers at
    the planned pack offsets. The LongRoPE tables and `phimoe_model_info` are
    emitted as constants. Weight declarations stay (the packer reads them).
    Needs `phimoe-plan-memory` first; unfused ops (router, moe_combine, silu...)
    are an error: the fusion passes must have run.

    With `target=cuda` the calls are of the `phimoe_cuda` kernel launchers
    (phimoe_cuda/kernels.cuh, same names and arguments, on device pointers),
    the context is a `phimoe_cuda::Context&`, a q/k/v split followed by the
    RoPE of its queries and of its keys (whose only use is an attention's k)
    is one `qkv_rope_kv_write` launch (`fuse-qkv-rope=false`: split_cols,
    rope, rope_kv_write), an add_layer_norm followed by the sparsemixer MoE of
    its output computes the routes in its launch (`add_layer_norm_route`, then
    `moe_sparsemixer<..., true>`; `fuse-router=false` keeps them apart), a
    sparsemixer MoE followed by the add_layer_norm of its rows runs the norm in
    its down projection's last blocks (`moe_sparsemixer_add_layer_norm`;
    `fuse-moe-norm=false` keeps them apart), a linear layer followed by the
    add_layer_norm of its rows runs the norm (and the router of a sparsemixer MoE
    after it) in its GEMV's last blocks (`linear_add_layer_norm(_route)`;
    `fuse-linear-norm=false` keeps them apart), the q/k/v projection
    followed by its split and both RoPEs does their work in its GEMV's last
    blocks (`linear_qkv_rope_kv_write`; `fuse-qkv-gemv=false` keeps them
    apart), a
    layer_norm, add_layer_norm(_route) or attention whose output the next op
    reads as the input of a q4_K linear layer or MoE names that storage as its
    last template argument (`Next`: its kernel stages the rows in fixed point
    for the GEMV's dp4a; `stage-q4k-inputs=false` leaves it out), the
    module gets
    `phimoe.pack_layout = "cuda"` (the packer writes q8_0 weights as all quants,
    then all scales) and its `phimoe.model_hash` changes accordingly.

    With `target=cpu` a q4_K, q8_0 or q6_K matrix (of a linear layer, the LM
    head or a MoE's experts) with whole groups of 16 rows gets `phimoe.rows16`:
    the packer interleaves it in groups of 16 rows and the calls take the
    `_x16` block types. `rows16-q6k=false` leaves q6_K matrices in rows (and
    changes `phimoe.model_hash`, as the pack's layout differs).
  }];
  let options = [
    Option<"target", "target", "std::string", /*default=*/"\"cpu\"",
           "cpu: phimoe_rt kernels (C++); cuda: phimoe_cuda kernels (CUDA C++)">,
    Option<"fuseQkvRope", "fuse-qkv-rope", "bool", /*default=*/"true",
           "cuda: a q/k/v split followed by the RoPE of its queries and keys becomes one "
           "qkv_rope_kv_write launch">,
    Option<"fuseRouter", "fuse-router", "bool", /*default=*/"true",
           "cuda: an add_layer_norm followed by the sparsemixer MoE of its output computes "
           "the MoE's routes in its launch (add_layer_norm_route)">,
    Option<"fuseMoeNorm", "fuse-moe-norm", "bool", /*default=*/"true",
           "cuda: a sparsemixer MoE followed by the add_layer_norm of its rows runs the "
           "norm in its down projection's launch (moe_sparsemixer_add_layer_norm)">,
    Option<"fuseLinearNorm", "fuse-linear-norm", "bool", /*default=*/"true",
           "cuda: a linear layer followed by the add_layer_norm of its rows runs the norm "
           "(and the routes of the MoE after it) in its GEMV's launch "
           "(linear_add_layer_norm(_route))">,
    Option<"fuseQkvGemv", "fuse-qkv-gemv", "bool", /*default=*/"true",
           "cuda: the q/k/v projection followed by its split and both RoPEs (fuse-qkv-rope) "
           "rotates the heads and writes the KV cache in its GEMV's launch "
           "(linear_qkv_rope_kv_write)">,
    Option<"stageQ4kInputs", "stage-q4k-inputs", "bool", /*default=*/"true",
           "cuda: the norm or attention before a q4_K linear layer or MoE stages its rows "
           "in fixed point for that GEMV (a Next template argument)">,
    Option<"rows16Q6k", "rows16-q6k", "bool", /*default=*/"true",
           "cpu: q6_K matrices interleaved in groups of 16 rows like q4_K and q8_0 ones; "
           "false keeps them in rows (block_q6k), for targets whose kernels decode those "
           "faster (AVX2 without AVX-512)">,
  ];
  let dependentDialects = ["::mlir::emitc::EmitCDialect"];
}

#endif // PHIMOE_PASSES_TD
