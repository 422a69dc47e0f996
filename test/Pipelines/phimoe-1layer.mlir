// A one-layer PhiMoE (hidden 64, 4 heads of 16, 2 kv heads, 4 experts of 128,
// vocab 96) as the frontend states it, through the whole pipeline.
// Regenerate the IR below with: scripts/gen-model-mlir.py --layers 1
//
// RUN: phimoe-opt %s --phimoe-pipeline="quant=q8_0" | FileCheck %s
// RUN: phimoe-opt %s --phimoe-pipeline="quant=q8_0" | phimoe-opt | FileCheck %s
// RUN: phimoe-opt %s --phimoe-pipeline="quant=q8_0 scope=experts" | FileCheck %s --check-prefix=MOQE
// RUN: phimoe-opt %s --phimoe-pipeline | FileCheck %s --check-prefix=KEEP

// Fused weights are declared from the checkpoint's tensors, and quantized.
// CHECK-DAG: phimoe.weight @model.embed_tokens.weight : !phimoe.qweight<q8_0, [96, 64]>
// CHECK-DAG: phimoe.weight @[[QKV:model.layers.0.self_attn.qkv_proj.weight]] = concat [@model.layers.0.self_attn.q_proj.weight, @model.layers.0.self_attn.k_proj.weight, @model.layers.0.self_attn.v_proj.weight] : !phimoe.qweight<q8_0, [128, 64]>
// CHECK-DAG: phimoe.weight @[[QKVB:model.layers.0.self_attn.qkv_proj.bias]] = concat [@model.layers.0.self_attn.q_proj.bias, @model.layers.0.self_attn.k_proj.bias, @model.layers.0.self_attn.v_proj.bias] : tensor<128xf32>
// CHECK-DAG: phimoe.weight @model.layers.0.block_sparse_moe.experts.2.gate_up.weight = concat [@model.layers.0.block_sparse_moe.experts.2.w1.weight, @model.layers.0.block_sparse_moe.experts.2.w3.weight] : tensor<256x64xbf16>
// CHECK-DAG: phimoe.weight @[[GU:model.layers.0.block_sparse_moe.experts.gate_up.weight]] = stack [@model.layers.0.block_sparse_moe.experts.0.gate_up.weight, @model.layers.0.block_sparse_moe.experts.1.gate_up.weight, @model.layers.0.block_sparse_moe.experts.2.gate_up.weight, @model.layers.0.block_sparse_moe.experts.3.gate_up.weight] : !phimoe.qweight<q8_0, [4, 256, 64]>
// CHECK-DAG: phimoe.weight @[[DOWN:model.layers.0.block_sparse_moe.experts.down.weight]] = stack [@model.layers.0.block_sparse_moe.experts.0.w2.weight, @model.layers.0.block_sparse_moe.experts.1.w2.weight, @model.layers.0.block_sparse_moe.experts.2.w2.weight, @model.layers.0.block_sparse_moe.experts.3.w2.weight] : !phimoe.qweight<q8_0, [4, 64, 128]>
// The router stays as the checkpoint has it.
// CHECK-DAG: phimoe.weight @[[GATE:model.layers.0.block_sparse_moe.gate.weight]] : tensor<4x64xbf16>
// CHECK-DAG: phimoe.weight @lm_head.weight : !phimoe.qweight<q8_0, [96, 64]>

// CHECK-LABEL: func.func @forward
// CHECK-SAME: (%[[IDS:.+]]: tensor<?xi32>, %[[POS:.+]]: tensor<?xi32>, %[[CACHE:.+]]: !phimoe.kv_cache
// CHECK: %[[H0:.+]] = phimoe.embed %[[IDS]]
// CHECK: %[[X:.+]] = phimoe.layer_norm %[[H0]]
// CHECK: %[[W:.+]] = phimoe.weight_ref @[[QKV]]
// CHECK: %[[B:.+]] = phimoe.weight_ref @[[QKVB]]
// CHECK: %[[Y:.+]] = phimoe.linear %[[X]], %[[W]], %[[B]] : {{.*}} -> tensor<?x128xf32>
// CHECK: %[[S:.+]]:3 = phimoe.split %[[Y]] [64, 32, 32]
// CHECK: %[[QR:.+]] = phimoe.rope %[[S]]#0, %[[POS]]
// CHECK: %[[KR:.+]] = phimoe.rope %[[S]]#1, %[[POS]]
// CHECK: %[[A:.+]] = phimoe.attention %[[QR]], %[[KR]], %[[S]]#2, %[[POS]], %[[CACHE]]
// CHECK: %[[O:.+]] = phimoe.linear %[[A]]
// CHECK: %[[H1:.+]], %[[X2:.+]] = phimoe.add_layer_norm %[[H0]], %[[O]]
// CHECK: %[[G:.+]] = phimoe.weight_ref @[[GATE]]
// CHECK: %[[GUV:.+]] = phimoe.weight_ref @[[GU]]
// CHECK: %[[DV:.+]] = phimoe.weight_ref @[[DOWN]]
// CHECK: %[[M:.+]] = phimoe.moe sparsemixer %[[X2]], %[[G]], %[[GUV]], %[[DV]] {epsilon = 1.000000e-02 : f64, top_k = 2 : i64}
// CHECK: %[[H2:.+]], %[[XF:.+]] = phimoe.add_layer_norm %[[H1]], %[[M]]
// CHECK: %[[L:.+]] = phimoe.lm_head %[[XF]]
// CHECK: return %[[L]]
// Nothing unfused is left.
// CHECK-NOT: phimoe.router
// CHECK-NOT: phimoe.moe_combine
// CHECK-NOT: phimoe.silu

// MoQE: only the experts are quantized; attention, embedding and LM head keep bf16.
// MOQE-DAG: phimoe.weight @model.embed_tokens.weight : tensor<96x64xbf16>
// MOQE-DAG: phimoe.weight @model.layers.0.self_attn.qkv_proj.weight = concat {{.*}} : tensor<128x64xbf16>
// MOQE-DAG: phimoe.weight @model.layers.0.block_sparse_moe.experts.gate_up.weight = stack {{.*}} : !phimoe.qweight<q8_0, [4, 256, 64]>
// MOQE-DAG: phimoe.weight @model.layers.0.block_sparse_moe.experts.down.weight = stack {{.*}} : !phimoe.qweight<q8_0, [4, 64, 128]>
// MOQE-DAG: phimoe.weight @lm_head.weight : tensor<96x64xbf16>
// MOQE-LABEL: func.func @forward

// Without a quant option nothing changes type, but everything is fused.
// KEEP-NOT: qweight
// KEEP: phimoe.moe sparsemixer
// KEEP-NOT: qweight

#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.1684489, long_mscale = 1.1684489, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75]>
module {
  phimoe.weight @model.embed_tokens.weight : tensor<96x64xbf16>
  phimoe.weight @model.layers.0.input_layernorm.weight : tensor<64xbf16>
  phimoe.weight @model.layers.0.input_layernorm.bias : tensor<64xbf16>
  phimoe.weight @model.layers.0.self_attn.q_proj.weight : tensor<64x64xbf16>
  phimoe.weight @model.layers.0.self_attn.q_proj.bias : tensor<64xbf16>
  phimoe.weight @model.layers.0.self_attn.k_proj.weight : tensor<32x64xbf16>
  phimoe.weight @model.layers.0.self_attn.k_proj.bias : tensor<32xbf16>
  phimoe.weight @model.layers.0.self_attn.v_proj.weight : tensor<32x64xbf16>
  phimoe.weight @model.layers.0.self_attn.v_proj.bias : tensor<32xbf16>
  phimoe.weight @model.layers.0.self_attn.o_proj.weight : tensor<64x64xbf16>
  phimoe.weight @model.layers.0.self_attn.o_proj.bias : tensor<64xbf16>
  phimoe.weight @model.layers.0.post_attention_layernorm.weight : tensor<64xbf16>
  phimoe.weight @model.layers.0.post_attention_layernorm.bias : tensor<64xbf16>
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
  phimoe.weight @model.norm.bias : tensor<64xbf16>
  phimoe.weight @lm_head.weight : tensor<96x64xbf16>
  phimoe.weight @lm_head.bias : tensor<96xbf16>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x96xf32> {
    %w1 = phimoe.weight_ref @model.embed_tokens.weight : tensor<96x64xbf16>
    %h2 = phimoe.embed %ids, %w1 : tensor<?xi32>, tensor<96x64xbf16> -> tensor<?x64xf32>
    // layer 0: attention
    %w3 = phimoe.weight_ref @model.layers.0.input_layernorm.weight : tensor<64xbf16>
    %w4 = phimoe.weight_ref @model.layers.0.input_layernorm.bias : tensor<64xbf16>
    %v5 = phimoe.layer_norm %h2, %w3, %w4 {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xbf16>
    %w6 = phimoe.weight_ref @model.layers.0.self_attn.q_proj.weight : tensor<64x64xbf16>
    %w8 = phimoe.weight_ref @model.layers.0.self_attn.q_proj.bias : tensor<64xbf16>
    %v7 = phimoe.linear %v5, %w6, %w8 : tensor<?x64xf32>, tensor<64x64xbf16>, tensor<64xbf16> -> tensor<?x64xf32>
    %w9 = phimoe.weight_ref @model.layers.0.self_attn.k_proj.weight : tensor<32x64xbf16>
    %w11 = phimoe.weight_ref @model.layers.0.self_attn.k_proj.bias : tensor<32xbf16>
    %v10 = phimoe.linear %v5, %w9, %w11 : tensor<?x64xf32>, tensor<32x64xbf16>, tensor<32xbf16> -> tensor<?x32xf32>
    %w12 = phimoe.weight_ref @model.layers.0.self_attn.v_proj.weight : tensor<32x64xbf16>
    %w14 = phimoe.weight_ref @model.layers.0.self_attn.v_proj.bias : tensor<32xbf16>
    %v13 = phimoe.linear %v5, %w12, %w14 : tensor<?x64xf32>, tensor<32x64xbf16>, tensor<32xbf16> -> tensor<?x32xf32>
    %v15 = phimoe.rope %v7, %pos {head_dim = 16 : i64, scaling = #rope} : tensor<?x64xf32>, tensor<?xi32>
    %v16 = phimoe.rope %v10, %pos {head_dim = 16 : i64, scaling = #rope} : tensor<?x32xf32>, tensor<?xi32>
    %v17 = phimoe.attention %v15, %v16, %v13, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
    %w18 = phimoe.weight_ref @model.layers.0.self_attn.o_proj.weight : tensor<64x64xbf16>
    %w20 = phimoe.weight_ref @model.layers.0.self_attn.o_proj.bias : tensor<64xbf16>
    %v19 = phimoe.linear %v17, %w18, %w20 : tensor<?x64xf32>, tensor<64x64xbf16>, tensor<64xbf16> -> tensor<?x64xf32>
    %h21 = phimoe.add %h2, %v19 : tensor<?x64xf32>
    // layer 0: mixture of experts
    %w22 = phimoe.weight_ref @model.layers.0.post_attention_layernorm.weight : tensor<64xbf16>
    %w23 = phimoe.weight_ref @model.layers.0.post_attention_layernorm.bias : tensor<64xbf16>
    %v24 = phimoe.layer_norm %h21, %w22, %w23 {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xbf16>
    %w25 = phimoe.weight_ref @model.layers.0.block_sparse_moe.gate.weight : tensor<4x64xbf16>
    %experts26, %routing27 = phimoe.router sparsemixer %v24, %w25 {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w28 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w1.weight : tensor<128x64xbf16>
    %v29 = phimoe.linear %v24, %w28 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %w30 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w3.weight : tensor<128x64xbf16>
    %v31 = phimoe.linear %v24, %w30 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %v32 = phimoe.silu %v29 : tensor<?x128xf32>
    %v33 = phimoe.mul %v32, %v31 : tensor<?x128xf32>
    %w34 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<64x128xbf16>
    %v35 = phimoe.linear %v33, %w34 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
    %w36 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.w1.weight : tensor<128x64xbf16>
    %v37 = phimoe.linear %v24, %w36 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %w38 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.w3.weight : tensor<128x64xbf16>
    %v39 = phimoe.linear %v24, %w38 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %v40 = phimoe.silu %v37 : tensor<?x128xf32>
    %v41 = phimoe.mul %v40, %v39 : tensor<?x128xf32>
    %w42 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.w2.weight : tensor<64x128xbf16>
    %v43 = phimoe.linear %v41, %w42 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
    %w44 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.2.w1.weight : tensor<128x64xbf16>
    %v45 = phimoe.linear %v24, %w44 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %w46 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.2.w3.weight : tensor<128x64xbf16>
    %v47 = phimoe.linear %v24, %w46 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %v48 = phimoe.silu %v45 : tensor<?x128xf32>
    %v49 = phimoe.mul %v48, %v47 : tensor<?x128xf32>
    %w50 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.2.w2.weight : tensor<64x128xbf16>
    %v51 = phimoe.linear %v49, %w50 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
    %w52 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.3.w1.weight : tensor<128x64xbf16>
    %v53 = phimoe.linear %v24, %w52 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %w54 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.3.w3.weight : tensor<128x64xbf16>
    %v55 = phimoe.linear %v24, %w54 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
    %v56 = phimoe.silu %v53 : tensor<?x128xf32>
    %v57 = phimoe.mul %v56, %v55 : tensor<?x128xf32>
    %w58 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.3.w2.weight : tensor<64x128xbf16>
    %v59 = phimoe.linear %v57, %w58 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
    %v60 = phimoe.moe_combine %experts26, %routing27, %v35, %v43, %v51, %v59 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
    %h61 = phimoe.add %h21, %v60 : tensor<?x64xf32>
    %w62 = phimoe.weight_ref @model.norm.weight : tensor<64xbf16>
    %w63 = phimoe.weight_ref @model.norm.bias : tensor<64xbf16>
    %v64 = phimoe.layer_norm %h61, %w62, %w63 {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xbf16>
    %w65 = phimoe.weight_ref @lm_head.weight : tensor<96x64xbf16>
    %w66 = phimoe.weight_ref @lm_head.bias : tensor<96xbf16>
    %logits67 = phimoe.lm_head %v64, %w65, %w66 : tensor<?x64xf32>, tensor<96x64xbf16>, tensor<96xbf16> -> tensor<?x96xf32>
    return %logits67 : tensor<?x96xf32>
  }
}
