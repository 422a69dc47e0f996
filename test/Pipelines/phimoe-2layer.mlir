// A two-layer PhiMoE (hidden 256, 4 heads of 64, 2 kv heads, 4 experts of 256,
// vocab 96) through the whole pipeline with q4k: layer 1's input LayerNorm
// takes layer 0's last residual add, the k-quant body keeps a q6k LM head and
// q8_0 embeddings.
// Regenerate the IR below with:
//   scripts/gen-model-mlir.py --layers 2 --hidden 256 --intermediate 256
//
// RUN: phimoe-opt %s --phimoe-pipeline="quant=q4k" | FileCheck %s
// RUN: phimoe-opt %s --phimoe-pipeline="quant=q4k override=self_attn=q8_0" | FileCheck %s --check-prefix=OVR
// Lowered for the CPU, every q4k (q8_0, q6k) matrix of a linear layer, the LM head or the
// experts is marked for the packer's 16-row interleaved layout and typed block_q4k_x16
// (block_q8_0_x16, block_q6k_x16) in the calls; an embedding table, read by rows, stays plain.
// RUN: phimoe-opt %s --phimoe-pipeline="target=cpu quant=q4k override=embed_tokens=q4k,lm_head=q4k max-tokens=16" | FileCheck %s --check-prefix=CPU
// CPU-DAG: phimoe.weight @model.embed_tokens.weight {phimoe.pack_bytes = {{[0-9]+}} : i64, phimoe.pack_offset = 0 : i64} : !phimoe.qweight<q4k, [96, 256]>
// CPU-DAG: phimoe.weight @model.layers.0.self_attn.qkv_proj.weight = concat {{.*}}, phimoe.rows16} : !phimoe.qweight<q4k, [512, 256]>
// CPU-DAG: phimoe.weight @model.layers.1.self_attn.o_proj.weight {{{.*}}, phimoe.rows16} : !phimoe.qweight<q4k, [256, 256]>
// CPU-DAG: phimoe.weight @model.layers.0.block_sparse_moe.experts.gate_up.weight = stack {{.*}}, phimoe.rows16} : !phimoe.qweight<q4k, [4, 512, 256]>
// CPU-DAG: phimoe.weight @model.layers.1.block_sparse_moe.experts.down.weight = stack {{.*}}, phimoe.rows16} : !phimoe.qweight<q4k, [4, 256, 256]>
// CPU-DAG: phimoe.weight @lm_head.weight {{{.*}}, phimoe.rows16} : !phimoe.qweight<q4k, [96, 256]>
// CPU: call_opaque "phimoe_rt::weight"(%arg0) {args = [0 : index, 0], template_args = [!emitc.opaque<"phimoe_rt::block_q4k">]}
// CPU: call_opaque "phimoe_rt::embed"
// CPU: call_opaque "phimoe_rt::weight"({{.*}} template_args = [!emitc.opaque<"phimoe_rt::block_q4k_x16">]}
// CPU-NEXT: call_opaque "phimoe_rt::weight"({{.*}} template_args = [!emitc.opaque<"float">]}
// CPU-NEXT: call_opaque "phimoe_rt::act"
// CPU-NEXT: call_opaque "phimoe_rt::linear"
// RUN: phimoe-opt %s --phimoe-pipeline="target=cpu quant=q4k override=self_attn=q8_0 max-tokens=16" | FileCheck %s --check-prefix=CPU8
// CPU8-DAG: phimoe.weight @model.embed_tokens.weight {phimoe.pack_bytes = {{[0-9]+}} : i64, phimoe.pack_offset = 0 : i64} : !phimoe.qweight<q8_0, [96, 256]>
// CPU8-DAG: phimoe.weight @model.layers.0.self_attn.qkv_proj.weight = concat {{.*}}, phimoe.rows16} : !phimoe.qweight<q8_0, [512, 256]>
// CPU8-DAG: phimoe.weight @lm_head.weight {{{.*}}, phimoe.rows16} : !phimoe.qweight<q6k, [96, 256]>
// CPU8: call_opaque "phimoe_rt::weight"(%arg0) {args = [0 : index, 0], template_args = [!emitc.opaque<"phimoe_rt::block_q8_0">]}
// CPU8: call_opaque "phimoe_rt::weight"({{.*}} template_args = [!emitc.opaque<"phimoe_rt::block_q8_0_x16">]}
// CPU8: call_opaque "phimoe_rt::weight"({{.*}} template_args = [!emitc.opaque<"phimoe_rt::block_q6k_x16">]}
// CPU8-NEXT: call_opaque "phimoe_rt::weight"
// CPU8: call_opaque "phimoe_rt::linear"({{.*}}, %arg5)
// With rows16-q6k=false (phimoec's choice for AVX2 targets without AVX-512) the q6_K LM head
// stays in rows (block_q6k) and the q8_0 matrices are still interleaved.
// RUN: phimoe-opt %s --phimoe-pipeline="target=cpu quant=q4k override=self_attn=q8_0 max-tokens=16 rows16-q6k=false" | FileCheck %s --check-prefix=CPU6
// CPU6-DAG: phimoe.weight @model.layers.0.self_attn.qkv_proj.weight = concat {{.*}}, phimoe.rows16} : !phimoe.qweight<q8_0, [512, 256]>
// CPU6-DAG: phimoe.weight @lm_head.weight {phimoe.pack_bytes = {{[0-9]+}} : i64, phimoe.pack_offset = {{[0-9]+}} : i64} : !phimoe.qweight<q6k, [96, 256]>
// CPU6: call_opaque "phimoe_rt::weight"({{.*}} template_args = [!emitc.opaque<"phimoe_rt::block_q8_0_x16">]}
// CPU6: call_opaque "phimoe_rt::weight"({{.*}} template_args = [!emitc.opaque<"phimoe_rt::block_q6k">]}
// CPU6-NEXT: call_opaque "phimoe_rt::weight"
// CPU6: call_opaque "phimoe_rt::linear"({{.*}}, %arg5)
// For CUDA, q4_K (q6_K LM head, q8_0 embedding) keeps whole blocks (the packer splits them
// field by field, phimoe_rt/split_layout.h): no rows16, the kernels take the block types.
// RUN: phimoe-opt %s --phimoe-pipeline="target=cuda quant=q4k max-tokens=16" | FileCheck %s --check-prefix=GPU
// GPU: module attributes {{{.*}}phimoe.pack_layout = "cuda"}
// GPU-NOT: phimoe.rows16
// GPU-DAG: phimoe.weight @model.embed_tokens.weight {{{.*}}} : !phimoe.qweight<q8_0, [96, 256]>
// GPU-DAG: phimoe.weight @model.layers.0.block_sparse_moe.experts.gate_up.weight = stack {{.*}} : !phimoe.qweight<q4k, [4, 512, 256]>
// GPU-DAG: phimoe.weight @lm_head.weight {{{.*}}} : !phimoe.qweight<q6k, [96, 256]>
// Every norm or attention whose rows the next launch multiplies with q4_K weights (the q/k/v
// projection, o_proj, the experts) names the storage (Next): its kernel stages them in fixed
// point for the GEMV's dp4a. The last norm, before the q6_K LM head, does not; nor does any
// with stage-q4k-inputs=false (NOSTAGE).
// GPU: call_opaque "phimoe_cuda::weight"(%arg0) {args = [0 : index, 0], template_args = [!emitc.opaque<"phimoe_rt::block_q8_0">]}
// GPU: call_opaque "phimoe_cuda::embed"
// GPU: call_opaque "phimoe_cuda::layer_norm"({{.*}} template_args = [256 : i32, #emitc.opaque<"phimoe_rt::block_q4k">]}
// GPU: call_opaque "phimoe_cuda::weight"({{.*}} template_args = [!emitc.opaque<"phimoe_rt::block_q4k">]}
// GPU: call_opaque "phimoe_cuda::linear_qkv_rope_kv_write"({{.*}} template_args = [512 : i32, 256 : i32, 4 : i32, 2 : i32, 64 : i32]}
// GPU: call_opaque "phimoe_cuda::attention"({{.*}} template_args = [4 : i32, 2 : i32, 64 : i32, #emitc.opaque<"true">, #emitc.opaque<"phimoe_rt::block_q4k">]}
// o_proj's GEMV runs the norm before the MoE and its router in its last blocks.
// GPU-NOT: call_opaque "phimoe_cuda::linear"(
// GPU: call_opaque "phimoe_cuda::weight"({{.*}} template_args = [!emitc.opaque<"phimoe_rt::bf16">]}
// GPU: call_opaque "phimoe_cuda::linear_add_layer_norm_route"({{.*}} template_args = [256 : i32, 256 : i32, 4 : i32, #emitc.opaque<"phimoe_rt::block_q4k">]}
// GPU-NEXT: %[[GU:.+]] = call_opaque "phimoe_cuda::weight"({{.*}} template_args = [!emitc.opaque<"phimoe_rt::block_q4k">]}
// GPU-NEXT: %[[DOWN:.+]] = call_opaque "phimoe_cuda::weight"({{.*}} template_args = [!emitc.opaque<"phimoe_rt::block_q4k">]}
// The norm after each MoE (layer 1's input norm, then the last) runs in the MoE's launch
// (Routed = true, then Next where a q4_K GEMV follows).
// GPU-NOT: call_opaque "phimoe_cuda::moe_sparsemixer"(
// GPU-NOT: call_opaque "phimoe_cuda::add_layer_norm"(
// GPU: call_opaque "phimoe_cuda::moe_sparsemixer_add_layer_norm"({{.*}}, %[[GU]], %[[DOWN]], {{.*}} template_args = [4 : i32, 256 : i32, 256 : i32, #emitc.opaque<"true">, #emitc.opaque<"phimoe_rt::block_q4k">]}
// GPU-NOT: call_opaque "phimoe_cuda::add_layer_norm"(
// GPU: call_opaque "phimoe_cuda::moe_sparsemixer_add_layer_norm"({{.*}} template_args = [4 : i32, 256 : i32, 256 : i32, #emitc.opaque<"true">]}
// GPU-NOT: call_opaque "phimoe_cuda::add_layer_norm"(
// GPU: %[[HEAD:.+]] = call_opaque "phimoe_cuda::weight"({{.*}} template_args = [!emitc.opaque<"phimoe_rt::block_q6k">]}
// GPU: call_opaque "phimoe_cuda::linear"({{.*}}, %[[HEAD]], {{.*}}, %arg5)
// GPU-NOT: _x16
// RUN: phimoe-opt %s --canonicalize --phimoe-fuse-qkv --phimoe-fuse-gate-up --phimoe-fuse-add-norm --phimoe-fuse-moe --canonicalize --phimoe-quantize="scheme=q4k" --phimoe-plan-memory="max-tokens=16" --phimoe-lower-to-emitc="target=cuda stage-q4k-inputs=false" | FileCheck %s --check-prefix=NOSTAGE
// NOSTAGE: call_opaque "phimoe_cuda::layer_norm"({{.*}} template_args = [256 : i32]}
// NOSTAGE-NOT: #emitc.opaque<"phimoe_rt::block_q4k">]}
// NOSTAGE: call_opaque "phimoe_cuda::moe_sparsemixer_add_layer_norm"({{.*}} template_args = [4 : i32, 256 : i32, 256 : i32, #emitc.opaque<"true">]}
// With fuse-moe-norm=false the MoE and the norm after it are launches of their own.
// RUN: phimoe-opt %s --canonicalize --phimoe-fuse-qkv --phimoe-fuse-gate-up --phimoe-fuse-add-norm --phimoe-fuse-moe --canonicalize --phimoe-quantize="scheme=q4k" --phimoe-plan-memory="max-tokens=16" --phimoe-lower-to-emitc="target=cuda fuse-moe-norm=false" | FileCheck %s --check-prefix=NORMAPART
// NORMAPART-NOT: moe_sparsemixer_add_layer_norm
// NORMAPART: call_opaque "phimoe_cuda::moe_sparsemixer"({{.*}} template_args = [4 : i32, 256 : i32, 256 : i32, #emitc.opaque<"true">]}
// NORMAPART-NEXT: call_opaque "phimoe_cuda::weight"
// NORMAPART-NEXT: call_opaque "phimoe_cuda::weight"
// NORMAPART: call_opaque "phimoe_cuda::add_layer_norm"({{.*}} template_args = [256 : i32, #emitc.opaque<"phimoe_rt::block_q4k">]}
// NORMAPART-NOT: moe_sparsemixer_add_layer_norm

// CHECK-DAG: phimoe.weight @model.embed_tokens.weight : !phimoe.qweight<q8_0, [96, 256]>
// CHECK-DAG: phimoe.weight @lm_head.weight : !phimoe.qweight<q6k, [96, 256]>
// CHECK-DAG: phimoe.weight @[[QKV0:model.layers.0.self_attn.qkv_proj.weight]] = concat {{.*}} : !phimoe.qweight<q4k, [512, 256]>
// CHECK-DAG: phimoe.weight @[[QKV1:model.layers.1.self_attn.qkv_proj.weight]] = concat {{.*}} : !phimoe.qweight<q4k, [512, 256]>
// CHECK-DAG: phimoe.weight @[[GU0:model.layers.0.block_sparse_moe.experts.gate_up.weight]] = stack {{.*}} : !phimoe.qweight<q4k, [4, 512, 256]>
// CHECK-DAG: phimoe.weight @[[GU1:model.layers.1.block_sparse_moe.experts.gate_up.weight]] = stack {{.*}} : !phimoe.qweight<q4k, [4, 512, 256]>
// CHECK-DAG: phimoe.weight @[[DOWN1:model.layers.1.block_sparse_moe.experts.down.weight]] = stack {{.*}} : !phimoe.qweight<q4k, [4, 256, 256]>
// CHECK-DAG: phimoe.weight @[[GATE1:model.layers.1.block_sparse_moe.gate.weight]] : tensor<4x256xbf16>

// CHECK-LABEL: func.func @forward
// CHECK-SAME: %[[CACHE:[^:]+]]: !phimoe.kv_cache<layers = 2
// CHECK: %[[H0:.+]] = phimoe.embed
// CHECK: phimoe.weight_ref @[[QKV0]]
// CHECK: phimoe.attention {{.*}}, %[[CACHE]] {head_dim = 64 : i64, layer = 0 : i64
// CHECK: %[[H1:.+]], %[[X1:.+]] = phimoe.add_layer_norm %[[H0]]
// CHECK: phimoe.weight_ref @[[GU0]]
// CHECK: %[[M0:.+]] = phimoe.moe sparsemixer %[[X1]]
// Layer 1's input norm fused with the residual add of layer 0's MoE.
// CHECK: %[[H2:.+]], %[[X2:.+]] = phimoe.add_layer_norm %[[H1]], %[[M0]]
// CHECK: %[[W1:.+]] = phimoe.weight_ref @[[QKV1]]
// CHECK: phimoe.linear %[[X2]], %[[W1]]
// CHECK: phimoe.attention {{.*}}, %[[CACHE]] {head_dim = 64 : i64, layer = 1 : i64
// CHECK: %[[H3:.+]], %[[X3:.+]] = phimoe.add_layer_norm %[[H2]]
// CHECK: %[[G1:.+]] = phimoe.weight_ref @[[GATE1]]
// CHECK: %[[GUV1:.+]] = phimoe.weight_ref @[[GU1]]
// CHECK: %[[DV1:.+]] = phimoe.weight_ref @[[DOWN1]]
// CHECK: %[[M1:.+]] = phimoe.moe sparsemixer %[[X3]], %[[G1]], %[[GUV1]], %[[DV1]]
// CHECK: %{{.+}}, %[[XF:.+]] = phimoe.add_layer_norm %[[H3]], %[[M1]]
// CHECK: phimoe.lm_head %[[XF]]

// An override on the checkpoint name of a fused part applies to the fused weight.
// OVR-DAG: phimoe.weight @model.layers.0.self_attn.qkv_proj.weight = concat {{.*}} : !phimoe.qweight<q8_0, [512, 256]>
// OVR-DAG: phimoe.weight @model.layers.1.self_attn.o_proj.weight : !phimoe.qweight<q8_0, [256, 256]>
// OVR-DAG: phimoe.weight @model.layers.1.block_sparse_moe.experts.down.weight = stack {{.*}} : !phimoe.qweight<q4k, [4, 256, 256]>

#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.1684489, long_mscale = 1.1684489, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.0, 4.25, 4.5, 4.75, 5.0, 5.25, 5.5, 5.75, 6.0, 6.25, 6.5, 6.75, 7.0, 7.25, 7.5, 7.75, 8.0, 8.25, 8.5, 8.75]>
module {
  phimoe.weight @model.embed_tokens.weight : tensor<96x256xbf16>
  phimoe.weight @model.layers.0.input_layernorm.weight : tensor<256xbf16>
  phimoe.weight @model.layers.0.input_layernorm.bias : tensor<256xbf16>
  phimoe.weight @model.layers.0.self_attn.q_proj.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.0.self_attn.q_proj.bias : tensor<256xbf16>
  phimoe.weight @model.layers.0.self_attn.k_proj.weight : tensor<128x256xbf16>
  phimoe.weight @model.layers.0.self_attn.k_proj.bias : tensor<128xbf16>
  phimoe.weight @model.layers.0.self_attn.v_proj.weight : tensor<128x256xbf16>
  phimoe.weight @model.layers.0.self_attn.v_proj.bias : tensor<128xbf16>
  phimoe.weight @model.layers.0.self_attn.o_proj.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.0.self_attn.o_proj.bias : tensor<256xbf16>
  phimoe.weight @model.layers.0.post_attention_layernorm.weight : tensor<256xbf16>
  phimoe.weight @model.layers.0.post_attention_layernorm.bias : tensor<256xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.gate.weight : tensor<4x256xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w1.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w3.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w1.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w3.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w2.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.2.w1.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.2.w3.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.2.w2.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.3.w1.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.3.w3.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.3.w2.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.1.input_layernorm.weight : tensor<256xbf16>
  phimoe.weight @model.layers.1.input_layernorm.bias : tensor<256xbf16>
  phimoe.weight @model.layers.1.self_attn.q_proj.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.1.self_attn.q_proj.bias : tensor<256xbf16>
  phimoe.weight @model.layers.1.self_attn.k_proj.weight : tensor<128x256xbf16>
  phimoe.weight @model.layers.1.self_attn.k_proj.bias : tensor<128xbf16>
  phimoe.weight @model.layers.1.self_attn.v_proj.weight : tensor<128x256xbf16>
  phimoe.weight @model.layers.1.self_attn.v_proj.bias : tensor<128xbf16>
  phimoe.weight @model.layers.1.self_attn.o_proj.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.1.self_attn.o_proj.bias : tensor<256xbf16>
  phimoe.weight @model.layers.1.post_attention_layernorm.weight : tensor<256xbf16>
  phimoe.weight @model.layers.1.post_attention_layernorm.bias : tensor<256xbf16>
  phimoe.weight @model.layers.1.block_sparse_moe.gate.weight : tensor<4x256xbf16>
  phimoe.weight @model.layers.1.block_sparse_moe.experts.0.w1.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.1.block_sparse_moe.experts.0.w3.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.1.block_sparse_moe.experts.0.w2.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.1.block_sparse_moe.experts.1.w1.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.1.block_sparse_moe.experts.1.w3.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.1.block_sparse_moe.experts.1.w2.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.1.block_sparse_moe.experts.2.w1.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.1.block_sparse_moe.experts.2.w3.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.1.block_sparse_moe.experts.2.w2.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.1.block_sparse_moe.experts.3.w1.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.1.block_sparse_moe.experts.3.w3.weight : tensor<256x256xbf16>
  phimoe.weight @model.layers.1.block_sparse_moe.experts.3.w2.weight : tensor<256x256xbf16>
  phimoe.weight @model.norm.weight : tensor<256xbf16>
  phimoe.weight @model.norm.bias : tensor<256xbf16>
  phimoe.weight @lm_head.weight : tensor<96x256xbf16>
  phimoe.weight @lm_head.bias : tensor<96xbf16>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 64, dtype = f32>) -> tensor<?x96xf32> {
    %w1 = phimoe.weight_ref @model.embed_tokens.weight : tensor<96x256xbf16>
    %h2 = phimoe.embed %ids, %w1 : tensor<?xi32>, tensor<96x256xbf16> -> tensor<?x256xf32>
    // layer 0: attention
    %w3 = phimoe.weight_ref @model.layers.0.input_layernorm.weight : tensor<256xbf16>
    %w4 = phimoe.weight_ref @model.layers.0.input_layernorm.bias : tensor<256xbf16>
    %v5 = phimoe.layer_norm %h2, %w3, %w4 {epsilon = 1.0e-05 : f64} : tensor<?x256xf32>, tensor<256xbf16>
    %w6 = phimoe.weight_ref @model.layers.0.self_attn.q_proj.weight : tensor<256x256xbf16>
    %w8 = phimoe.weight_ref @model.layers.0.self_attn.q_proj.bias : tensor<256xbf16>
    %v7 = phimoe.linear %v5, %w6, %w8 : tensor<?x256xf32>, tensor<256x256xbf16>, tensor<256xbf16> -> tensor<?x256xf32>
    %w9 = phimoe.weight_ref @model.layers.0.self_attn.k_proj.weight : tensor<128x256xbf16>
    %w11 = phimoe.weight_ref @model.layers.0.self_attn.k_proj.bias : tensor<128xbf16>
    %v10 = phimoe.linear %v5, %w9, %w11 : tensor<?x256xf32>, tensor<128x256xbf16>, tensor<128xbf16> -> tensor<?x128xf32>
    %w12 = phimoe.weight_ref @model.layers.0.self_attn.v_proj.weight : tensor<128x256xbf16>
    %w14 = phimoe.weight_ref @model.layers.0.self_attn.v_proj.bias : tensor<128xbf16>
    %v13 = phimoe.linear %v5, %w12, %w14 : tensor<?x256xf32>, tensor<128x256xbf16>, tensor<128xbf16> -> tensor<?x128xf32>
    %v15 = phimoe.rope %v7, %pos {head_dim = 64 : i64, scaling = #rope} : tensor<?x256xf32>, tensor<?xi32>
    %v16 = phimoe.rope %v10, %pos {head_dim = 64 : i64, scaling = #rope} : tensor<?x128xf32>, tensor<?xi32>
    %v17 = phimoe.attention %v15, %v16, %v13, %pos, %cache {head_dim = 64 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x256xf32>, tensor<?x128xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 64, dtype = f32>
    %w18 = phimoe.weight_ref @model.layers.0.self_attn.o_proj.weight : tensor<256x256xbf16>
    %w20 = phimoe.weight_ref @model.layers.0.self_attn.o_proj.bias : tensor<256xbf16>
    %v19 = phimoe.linear %v17, %w18, %w20 : tensor<?x256xf32>, tensor<256x256xbf16>, tensor<256xbf16> -> tensor<?x256xf32>
    %h21 = phimoe.add %h2, %v19 : tensor<?x256xf32>
    // layer 0: mixture of experts
    %w22 = phimoe.weight_ref @model.layers.0.post_attention_layernorm.weight : tensor<256xbf16>
    %w23 = phimoe.weight_ref @model.layers.0.post_attention_layernorm.bias : tensor<256xbf16>
    %v24 = phimoe.layer_norm %h21, %w22, %w23 {epsilon = 1.0e-05 : f64} : tensor<?x256xf32>, tensor<256xbf16>
    %w25 = phimoe.weight_ref @model.layers.0.block_sparse_moe.gate.weight : tensor<4x256xbf16>
    %experts26, %routing27 = phimoe.router sparsemixer %v24, %w25 {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x256xf32>, tensor<4x256xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w28 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w1.weight : tensor<256x256xbf16>
    %v29 = phimoe.linear %v24, %w28 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %w30 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w3.weight : tensor<256x256xbf16>
    %v31 = phimoe.linear %v24, %w30 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %v32 = phimoe.silu %v29 : tensor<?x256xf32>
    %v33 = phimoe.mul %v32, %v31 : tensor<?x256xf32>
    %w34 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<256x256xbf16>
    %v35 = phimoe.linear %v33, %w34 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %w36 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.w1.weight : tensor<256x256xbf16>
    %v37 = phimoe.linear %v24, %w36 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %w38 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.w3.weight : tensor<256x256xbf16>
    %v39 = phimoe.linear %v24, %w38 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %v40 = phimoe.silu %v37 : tensor<?x256xf32>
    %v41 = phimoe.mul %v40, %v39 : tensor<?x256xf32>
    %w42 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.w2.weight : tensor<256x256xbf16>
    %v43 = phimoe.linear %v41, %w42 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %w44 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.2.w1.weight : tensor<256x256xbf16>
    %v45 = phimoe.linear %v24, %w44 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %w46 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.2.w3.weight : tensor<256x256xbf16>
    %v47 = phimoe.linear %v24, %w46 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %v48 = phimoe.silu %v45 : tensor<?x256xf32>
    %v49 = phimoe.mul %v48, %v47 : tensor<?x256xf32>
    %w50 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.2.w2.weight : tensor<256x256xbf16>
    %v51 = phimoe.linear %v49, %w50 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %w52 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.3.w1.weight : tensor<256x256xbf16>
    %v53 = phimoe.linear %v24, %w52 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %w54 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.3.w3.weight : tensor<256x256xbf16>
    %v55 = phimoe.linear %v24, %w54 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %v56 = phimoe.silu %v53 : tensor<?x256xf32>
    %v57 = phimoe.mul %v56, %v55 : tensor<?x256xf32>
    %w58 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.3.w2.weight : tensor<256x256xbf16>
    %v59 = phimoe.linear %v57, %w58 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %v60 = phimoe.moe_combine %experts26, %routing27, %v35, %v43, %v51, %v59 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x256xf32>, tensor<?x256xf32>, tensor<?x256xf32>, tensor<?x256xf32> -> tensor<?x256xf32>
    %h61 = phimoe.add %h21, %v60 : tensor<?x256xf32>
    // layer 1: attention
    %w62 = phimoe.weight_ref @model.layers.1.input_layernorm.weight : tensor<256xbf16>
    %w63 = phimoe.weight_ref @model.layers.1.input_layernorm.bias : tensor<256xbf16>
    %v64 = phimoe.layer_norm %h61, %w62, %w63 {epsilon = 1.0e-05 : f64} : tensor<?x256xf32>, tensor<256xbf16>
    %w65 = phimoe.weight_ref @model.layers.1.self_attn.q_proj.weight : tensor<256x256xbf16>
    %w67 = phimoe.weight_ref @model.layers.1.self_attn.q_proj.bias : tensor<256xbf16>
    %v66 = phimoe.linear %v64, %w65, %w67 : tensor<?x256xf32>, tensor<256x256xbf16>, tensor<256xbf16> -> tensor<?x256xf32>
    %w68 = phimoe.weight_ref @model.layers.1.self_attn.k_proj.weight : tensor<128x256xbf16>
    %w70 = phimoe.weight_ref @model.layers.1.self_attn.k_proj.bias : tensor<128xbf16>
    %v69 = phimoe.linear %v64, %w68, %w70 : tensor<?x256xf32>, tensor<128x256xbf16>, tensor<128xbf16> -> tensor<?x128xf32>
    %w71 = phimoe.weight_ref @model.layers.1.self_attn.v_proj.weight : tensor<128x256xbf16>
    %w73 = phimoe.weight_ref @model.layers.1.self_attn.v_proj.bias : tensor<128xbf16>
    %v72 = phimoe.linear %v64, %w71, %w73 : tensor<?x256xf32>, tensor<128x256xbf16>, tensor<128xbf16> -> tensor<?x128xf32>
    %v74 = phimoe.rope %v66, %pos {head_dim = 64 : i64, scaling = #rope} : tensor<?x256xf32>, tensor<?xi32>
    %v75 = phimoe.rope %v69, %pos {head_dim = 64 : i64, scaling = #rope} : tensor<?x128xf32>, tensor<?xi32>
    %v76 = phimoe.attention %v74, %v75, %v72, %pos, %cache {head_dim = 64 : i64, layer = 1 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x256xf32>, tensor<?x128xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 64, dtype = f32>
    %w77 = phimoe.weight_ref @model.layers.1.self_attn.o_proj.weight : tensor<256x256xbf16>
    %w79 = phimoe.weight_ref @model.layers.1.self_attn.o_proj.bias : tensor<256xbf16>
    %v78 = phimoe.linear %v76, %w77, %w79 : tensor<?x256xf32>, tensor<256x256xbf16>, tensor<256xbf16> -> tensor<?x256xf32>
    %h80 = phimoe.add %h61, %v78 : tensor<?x256xf32>
    // layer 1: mixture of experts
    %w81 = phimoe.weight_ref @model.layers.1.post_attention_layernorm.weight : tensor<256xbf16>
    %w82 = phimoe.weight_ref @model.layers.1.post_attention_layernorm.bias : tensor<256xbf16>
    %v83 = phimoe.layer_norm %h80, %w81, %w82 {epsilon = 1.0e-05 : f64} : tensor<?x256xf32>, tensor<256xbf16>
    %w84 = phimoe.weight_ref @model.layers.1.block_sparse_moe.gate.weight : tensor<4x256xbf16>
    %experts85, %routing86 = phimoe.router sparsemixer %v83, %w84 {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x256xf32>, tensor<4x256xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w87 = phimoe.weight_ref @model.layers.1.block_sparse_moe.experts.0.w1.weight : tensor<256x256xbf16>
    %v88 = phimoe.linear %v83, %w87 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %w89 = phimoe.weight_ref @model.layers.1.block_sparse_moe.experts.0.w3.weight : tensor<256x256xbf16>
    %v90 = phimoe.linear %v83, %w89 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %v91 = phimoe.silu %v88 : tensor<?x256xf32>
    %v92 = phimoe.mul %v91, %v90 : tensor<?x256xf32>
    %w93 = phimoe.weight_ref @model.layers.1.block_sparse_moe.experts.0.w2.weight : tensor<256x256xbf16>
    %v94 = phimoe.linear %v92, %w93 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %w95 = phimoe.weight_ref @model.layers.1.block_sparse_moe.experts.1.w1.weight : tensor<256x256xbf16>
    %v96 = phimoe.linear %v83, %w95 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %w97 = phimoe.weight_ref @model.layers.1.block_sparse_moe.experts.1.w3.weight : tensor<256x256xbf16>
    %v98 = phimoe.linear %v83, %w97 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %v99 = phimoe.silu %v96 : tensor<?x256xf32>
    %v100 = phimoe.mul %v99, %v98 : tensor<?x256xf32>
    %w101 = phimoe.weight_ref @model.layers.1.block_sparse_moe.experts.1.w2.weight : tensor<256x256xbf16>
    %v102 = phimoe.linear %v100, %w101 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %w103 = phimoe.weight_ref @model.layers.1.block_sparse_moe.experts.2.w1.weight : tensor<256x256xbf16>
    %v104 = phimoe.linear %v83, %w103 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %w105 = phimoe.weight_ref @model.layers.1.block_sparse_moe.experts.2.w3.weight : tensor<256x256xbf16>
    %v106 = phimoe.linear %v83, %w105 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %v107 = phimoe.silu %v104 : tensor<?x256xf32>
    %v108 = phimoe.mul %v107, %v106 : tensor<?x256xf32>
    %w109 = phimoe.weight_ref @model.layers.1.block_sparse_moe.experts.2.w2.weight : tensor<256x256xbf16>
    %v110 = phimoe.linear %v108, %w109 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %w111 = phimoe.weight_ref @model.layers.1.block_sparse_moe.experts.3.w1.weight : tensor<256x256xbf16>
    %v112 = phimoe.linear %v83, %w111 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %w113 = phimoe.weight_ref @model.layers.1.block_sparse_moe.experts.3.w3.weight : tensor<256x256xbf16>
    %v114 = phimoe.linear %v83, %w113 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %v115 = phimoe.silu %v112 : tensor<?x256xf32>
    %v116 = phimoe.mul %v115, %v114 : tensor<?x256xf32>
    %w117 = phimoe.weight_ref @model.layers.1.block_sparse_moe.experts.3.w2.weight : tensor<256x256xbf16>
    %v118 = phimoe.linear %v116, %w117 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
    %v119 = phimoe.moe_combine %experts85, %routing86, %v94, %v102, %v110, %v118 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x256xf32>, tensor<?x256xf32>, tensor<?x256xf32>, tensor<?x256xf32> -> tensor<?x256xf32>
    %h120 = phimoe.add %h80, %v119 : tensor<?x256xf32>
    %w121 = phimoe.weight_ref @model.norm.weight : tensor<256xbf16>
    %w122 = phimoe.weight_ref @model.norm.bias : tensor<256xbf16>
    %v123 = phimoe.layer_norm %h120, %w121, %w122 {epsilon = 1.0e-05 : f64} : tensor<?x256xf32>, tensor<256xbf16>
    %w124 = phimoe.weight_ref @lm_head.weight : tensor<96x256xbf16>
    %w125 = phimoe.weight_ref @lm_head.bias : tensor<96xbf16>
    %logits126 = phimoe.lm_head %v123, %w124, %w125 : tensor<?x256xf32>, tensor<96x256xbf16>, tensor<96xbf16> -> tensor<?x96xf32>
    return %logits126 : tensor<?x96xf32>
  }
}
