// A one-layer Mixtral (hidden 64, 4 heads of 16, 2 kv heads, 4 experts of 128, vocab 96: RMSNorms,
// no biases, softmax top-2 routing) as the frontend states a model_type "mixtral" checkpoint,
// through the whole pipeline. Regenerate the IR below with:
//   scripts/gen-model-mlir.py --arch mixtral
//
// RUN: phimoe-opt %s --phimoe-pipeline="quant=q8_0" | FileCheck %s
// RUN: phimoe-opt %s --phimoe-pipeline="target=cpu max-tokens=16" | phimoe-translate --phimoe-to-cpp | FileCheck %s --check-prefix=CPP
// RUN: phimoe-opt %s --phimoe-pipeline="target=cuda max-tokens=16" | phimoe-translate --phimoe-to-cpp | FileCheck %s --check-prefix=CUDA

// The norms keep no bias and fuse with the residual adds as the LayerNorms do; the router and
// the experts fuse into one moe op with the routing kind carried over.
// CHECK-NOT: layernorm.bias
// CHECK-LABEL: func.func @forward
// CHECK: %[[H0:.+]] = phimoe.embed
// CHECK: %[[WN:.+]] = phimoe.weight_ref @model.layers.0.input_layernorm.weight
// CHECK: %[[X:.+]] = phimoe.layer_norm %[[H0]], %[[WN]] {epsilon = 1.000000e-05 : f64, rms} : tensor<?x64xf32>, tensor<64xf32>
// CHECK: %[[Y:.+]] = phimoe.linear %[[X]], %{{[^,]+}} : {{.*}} -> tensor<?x128xf32>
// CHECK: %[[O:.+]] = phimoe.linear
// CHECK: %[[H1:.+]], %[[X2:.+]] = phimoe.add_layer_norm %[[H0]], %[[O]], %{{[^ ]+}} {epsilon = 1.000000e-05 : f64, rms} : tensor<?x64xf32>, tensor<64xf32>
// CHECK: phimoe.moe softmax_topk %[[X2]], {{.*}} {epsilon = 0.000000e+00 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16>, !phimoe.qweight<q8_0, [4, 256, 64]>, !phimoe.qweight<q8_0, [4, 64, 128]>
// CHECK: phimoe.add_layer_norm {{.*}} {epsilon = 1.000000e-05 : f64, rms}
// CHECK: phimoe.lm_head %{{[^,]+}}, %{{[^ ]+}} : tensor<?x64xf32>, !phimoe.qweight<q8_0, [96, 64]> -> tensor<?x96xf32>
// CHECK-NOT: phimoe.router
// CHECK-NOT: phimoe.moe_combine

// Plain RoPE (theta 1e6): factors and mscales 1.
// CPP: kRope0Short[8] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
// CPP: kRope0Long[8] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
// CPP: kRope0 = {1000000.0f, 32768, 1.0f, 1.0f, kRope0Short, kRope0Long};
// CPP: phimoe_rt::rms_norm<64>(
// CPP-SAME: 9.999999740e-06f
// CPP: phimoe_rt::linear<128, 64>(
// CPP: phimoe_rt::add_rms_norm<64>(
// CPP: phimoe_rt::moe_softmax_top2<4, 64, 128>(
// CPP: phimoe_rt::add_rms_norm<64>(
// CPP-NOT: layer_norm
// CPP-NOT: sparsemixer

// For CUDA, the same calls of phimoe_cuda's launchers (q/k/v with its RoPE and KV write in
// one launch), and none of the LayerNorm fusions (the norm after o_proj, or after the MoE, in
// the last blocks of their GEMVs; the router in the norm's launch): those kernels are
// LayerNorms and sparsemixers.
// CUDA: phimoe_cuda::rms_norm<64>(
// CUDA: phimoe_cuda::linear_qkv_rope_kv_write<128, 64, 4, 2, 16>(
// CUDA: phimoe_cuda::linear<64, 64>(
// CUDA: phimoe_cuda::add_rms_norm<64>(
// CUDA: phimoe_cuda::moe_softmax_top2<4, 64, 128>(
// CUDA: phimoe_cuda::add_rms_norm<64>(
// CUDA-NOT: layer_norm
// CUDA-NOT: sparsemixer

#rope = #phimoe.longrope<theta = 1000000.0, original_max_position = 32768, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]>
module {
  phimoe.weight @model.embed_tokens.weight : tensor<96x64xbf16>
  phimoe.weight @model.layers.0.input_layernorm.weight : tensor<64xbf16>
  phimoe.weight @model.layers.0.self_attn.q_proj.weight : tensor<64x64xbf16>
  phimoe.weight @model.layers.0.self_attn.k_proj.weight : tensor<32x64xbf16>
  phimoe.weight @model.layers.0.self_attn.v_proj.weight : tensor<32x64xbf16>
  phimoe.weight @model.layers.0.self_attn.o_proj.weight : tensor<64x64xbf16>
  phimoe.weight @model.layers.0.post_attention_layernorm.weight : tensor<64xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.gate.weight : tensor<4x64xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w1.weight : tensor<128x64xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w3.weight : tensor<128x64xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<64x128xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w1.weight : tensor<128x64xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w3.weight : tensor<128x64xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w2.weight : tensor<64x128xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.2.w1.weight : tensor<128x64xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.2.w3.weight : tensor<128x64xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.2.w2.weight : tensor<64x128xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.3.w1.weight : tensor<128x64xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.3.w3.weight : tensor<128x64xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.3.w2.weight : tensor<64x128xbf16>
  phimoe.weight @model.norm.weight : tensor<64xbf16>
  phimoe.weight @lm_head.weight : tensor<96x64xbf16>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x96xf32> {
    %w1 = phimoe.weight_ref @model.embed_tokens.weight : tensor<96x64xbf16>
    %h2 = phimoe.embed %ids, %w1 : tensor<?xi32>, tensor<96x64xbf16> -> tensor<?x64xf32>
    // layer 0: attention
    %w3 = phimoe.weight_ref @model.layers.0.input_layernorm.weight : tensor<64xbf16>
    %v4 = phimoe.layer_norm %h2, %w3 {epsilon = 1.0e-05 : f64, rms} : tensor<?x64xf32>, tensor<64xbf16>
    %w5 = phimoe.weight_ref @model.layers.0.self_attn.q_proj.weight : tensor<64x64xbf16>
    %v6 = phimoe.linear %v4, %w5 : tensor<?x64xf32>, tensor<64x64xbf16> -> tensor<?x64xf32>
    %w7 = phimoe.weight_ref @model.layers.0.self_attn.k_proj.weight : tensor<32x64xbf16>
    %v8 = phimoe.linear %v4, %w7 : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
    %w9 = phimoe.weight_ref @model.layers.0.self_attn.v_proj.weight : tensor<32x64xbf16>
    %v10 = phimoe.linear %v4, %w9 : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
    %v11 = phimoe.rope %v6, %pos {head_dim = 16 : i64, scaling = #rope} : tensor<?x64xf32>, tensor<?xi32>
    %v12 = phimoe.rope %v8, %pos {head_dim = 16 : i64, scaling = #rope} : tensor<?x32xf32>, tensor<?xi32>
    %v13 = phimoe.attention %v11, %v12, %v10, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
    %w14 = phimoe.weight_ref @model.layers.0.self_attn.o_proj.weight : tensor<64x64xbf16>
    %v15 = phimoe.linear %v13, %w14 : tensor<?x64xf32>, tensor<64x64xbf16> -> tensor<?x64xf32>
    %h16 = phimoe.add %h2, %v15 : tensor<?x64xf32>
    // layer 0: mixture of experts
    %w17 = phimoe.weight_ref @model.layers.0.post_attention_layernorm.weight : tensor<64xbf16>
    %v18 = phimoe.layer_norm %h16, %w17 {epsilon = 1.0e-05 : f64, rms} : tensor<?x64xf32>, tensor<64xbf16>
    %w19 = phimoe.weight_ref @model.layers.0.block_sparse_moe.gate.weight : tensor<4x64xbf16>
    %experts20, %routing21 = phimoe.router softmax_topk %v18, %w19 {epsilon = 0.0 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w22 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w1.weight : tensor<128x64xbf16>
    %v23 = phimoe.linear %v18, %w22 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %w24 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w3.weight : tensor<128x64xbf16>
    %v25 = phimoe.linear %v18, %w24 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %v26 = phimoe.silu %v23 : tensor<?x128xf32>
    %v27 = phimoe.mul %v26, %v25 : tensor<?x128xf32>
    %w28 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<64x128xbf16>
    %v29 = phimoe.linear %v27, %w28 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
    %w30 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.w1.weight : tensor<128x64xbf16>
    %v31 = phimoe.linear %v18, %w30 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %w32 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.w3.weight : tensor<128x64xbf16>
    %v33 = phimoe.linear %v18, %w32 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %v34 = phimoe.silu %v31 : tensor<?x128xf32>
    %v35 = phimoe.mul %v34, %v33 : tensor<?x128xf32>
    %w36 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.w2.weight : tensor<64x128xbf16>
    %v37 = phimoe.linear %v35, %w36 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
    %w38 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.2.w1.weight : tensor<128x64xbf16>
    %v39 = phimoe.linear %v18, %w38 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %w40 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.2.w3.weight : tensor<128x64xbf16>
    %v41 = phimoe.linear %v18, %w40 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %v42 = phimoe.silu %v39 : tensor<?x128xf32>
    %v43 = phimoe.mul %v42, %v41 : tensor<?x128xf32>
    %w44 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.2.w2.weight : tensor<64x128xbf16>
    %v45 = phimoe.linear %v43, %w44 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
    %w46 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.3.w1.weight : tensor<128x64xbf16>
    %v47 = phimoe.linear %v18, %w46 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %w48 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.3.w3.weight : tensor<128x64xbf16>
    %v49 = phimoe.linear %v18, %w48 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %v50 = phimoe.silu %v47 : tensor<?x128xf32>
    %v51 = phimoe.mul %v50, %v49 : tensor<?x128xf32>
    %w52 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.3.w2.weight : tensor<64x128xbf16>
    %v53 = phimoe.linear %v51, %w52 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
    %v54 = phimoe.moe_combine %experts20, %routing21, %v29, %v37, %v45, %v53 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
    %h55 = phimoe.add %h16, %v54 : tensor<?x64xf32>
    %w56 = phimoe.weight_ref @model.norm.weight : tensor<64xbf16>
    %v57 = phimoe.layer_norm %h55, %w56 {epsilon = 1.0e-05 : f64, rms} : tensor<?x64xf32>, tensor<64xbf16>
    %w58 = phimoe.weight_ref @lm_head.weight : tensor<96x64xbf16>
    %logits59 = phimoe.lm_head %v57, %w58 : tensor<?x64xf32>, tensor<96x64xbf16> -> tensor<?x96xf32>
    return %logits59 : tensor<?x96xf32>
  }
}
