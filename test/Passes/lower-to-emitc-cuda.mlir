// The one-layer PhiMoE of lower-to-emitc.mlir lowered for CUDA (target=cuda): the same flat
// list of kernel calls, of the phimoe_cuda launchers, on a phimoe_cuda::Context, except that
// the q/k/v projection, its split, the queries' RoPE and the keys' RoPE with the KV-cache
// write are one launch (linear_qkv_rope_kv_write, then attention<..., true>; with
// fuse-qkv-gemv=false the projection and qkv_rope_kv_write); with fuse-qkv-rope=false they are
// the q/k/v split in one kernel (split_cols), the queries' RoPE, and the keys' RoPE fused with
// the KV-cache write (rope_kv_write); the norm before the MoE computes its routes
// and runs in the last blocks of o_proj's GEMV (linear_add_layer_norm_route;
// fuse-linear-norm=false: linear, then add_layer_norm_route; with fuse-router=false too:
// add_layer_norm, and the MoE's own router); the norm after the MoE runs in the MoE's launch
// (moe_sparsemixer_add_layer_norm; fuse-moe-norm=false: moe_sparsemixer, then add_layer_norm);
// with q8_0 weights the module says that its pack has the CUDA layout.
// RUN: phimoe-opt %s --phimoe-pipeline="target=cuda quant=q8_0 max-tokens=16" | FileCheck %s
// RUN: phimoe-opt %s --phimoe-pipeline="target=cuda quant=q8_0 max-tokens=16" | phimoe-translate --phimoe-to-cpp | FileCheck %s --check-prefix=CUDA
// RUN: phimoe-opt %s --canonicalize --phimoe-fuse-qkv --phimoe-fuse-gate-up --phimoe-fuse-add-norm --phimoe-fuse-moe --canonicalize --phimoe-quantize="scheme=q8_0" --phimoe-plan-memory="max-tokens=16" --phimoe-lower-to-emitc="target=cuda fuse-qkv-rope=false fuse-router=false fuse-moe-norm=false fuse-linear-norm=false" | FileCheck %s --check-prefix=UNFUSED
// RUN: phimoe-opt %s --canonicalize --phimoe-fuse-qkv --phimoe-fuse-gate-up --phimoe-fuse-add-norm --phimoe-fuse-moe --canonicalize --phimoe-quantize="scheme=q8_0" --phimoe-plan-memory="max-tokens=16" --phimoe-lower-to-emitc="target=cuda fuse-linear-norm=false" | FileCheck %s --check-prefix=LINAPART
// With fuse-qkv-gemv=false the q/k/v GEMV and qkv_rope_kv_write are launches of their own.
// RUN: phimoe-opt %s --canonicalize --phimoe-fuse-qkv --phimoe-fuse-gate-up --phimoe-fuse-add-norm --phimoe-fuse-moe --canonicalize --phimoe-quantize="scheme=q8_0" --phimoe-plan-memory="max-tokens=16 keep-split-input=true" --phimoe-lower-to-emitc="target=cuda fuse-qkv-gemv=false" | FileCheck %s --check-prefix=QKVAPART
// The CUDA pipeline plans memory with keep-split-input, so that the queries' buffer is apart
// from the projection's, and the launch says so (the q/k/v GEMV's launch, which needs it, or
// Disjoint: one kernel for any number of rows); without it the plan reuses the projection's
// buffer, and the GEMV and qkv_rope_kv_write are launches of their own, the second saying
// that the buffers may overlap.
// RUN: phimoe-opt %s --phimoe-pipeline="target=cuda quant=q8_0 max-tokens=16" | FileCheck %s --check-prefix=APART
// RUN: phimoe-opt %s --canonicalize --phimoe-fuse-qkv --phimoe-fuse-gate-up --phimoe-fuse-add-norm --phimoe-fuse-moe --canonicalize --phimoe-quantize="scheme=q8_0" --phimoe-plan-memory="max-tokens=16" --phimoe-lower-to-emitc="target=cuda" | FileCheck %s --check-prefix=OVERLAP
// The CPU lowering of the same module has neither the layout nor phimoe_cuda calls.
// RUN: phimoe-opt %s --phimoe-pipeline="target=cpu quant=q8_0 max-tokens=16" | FileCheck %s --check-prefix=CPU
// A target the lowering does not know is refused.
// RUN: not phimoe-opt %s --phimoe-plan-memory --phimoe-fuse-qkv --phimoe-lower-to-emitc="target=rocm" 2>&1 | FileCheck %s --check-prefix=BADTARGET

// CHECK: module attributes {phimoe.model_hash = {{[0-9-]+}} : i64, phimoe.pack_bytes = {{[0-9]+}} : i64, phimoe.pack_layout = "cuda"}
// CHECK-NOT: phimoe_rt/kernels.h
// CHECK: emitc.include "phimoe_cuda/kernels.cuh"
// CHECK: emitc.include "phimoe_cuda/model.h"
// CHECK: emitc.func @phimoe_forward(%[[CTX:.+]]: !emitc.opaque<"phimoe_cuda::Context&">, %[[IDS:[^:]+]]: !emitc.ptr<!emitc.opaque<"const int32_t">>, %[[POS:[^:]+]]: !emitc.ptr<!emitc.opaque<"const int32_t">>, %[[N:[^:]+]]: i32, %[[ROWS:[^:]+]]: i32, %[[LOGITS:[^:]+]]: !emitc.ptr<f32>)
// CHECK: %[[TABLE:.+]] = call_opaque "phimoe_cuda::weight"(%[[CTX]]) {args = [0 : index, 0], template_args = [!emitc.opaque<"phimoe_rt::block_q8_0">]}
// CHECK: %[[H:.+]] = call_opaque "phimoe_cuda::act"(%[[CTX]]) {args = [0 : index, 0]}
// CHECK: call_opaque "phimoe_cuda::embed"(%[[CTX]], %[[IDS]], %[[N]], %[[TABLE]], %[[H]]) {{.*}} template_args = [96 : i32, 64 : i32]
// CHECK: call_opaque "phimoe_cuda::layer_norm"
// The q/k/v projection, its split and both RoPEs: one launch, no copy per range, no separate
// rope (the GEMV's last block of each head rotates it and writes the KV cache); the attention
// reads the queries it wrote.
// CHECK-NOT: phimoe_cuda::copy_cols
// CHECK-NOT: phimoe_cuda::split_cols
// CHECK: %[[QKV:.+]] = call_opaque "phimoe_cuda::act"
// CHECK-NEXT: call_opaque "phimoe_cuda::act"
// CHECK-NEXT: call_opaque "phimoe_cuda::act"
// CHECK-NEXT: %[[VS:.+]] = call_opaque "phimoe_cuda::act"
// CHECK-NEXT: %[[Q:.+]] = call_opaque "phimoe_cuda::act"
// CHECK-NEXT: call_opaque "phimoe_cuda::linear_qkv_rope_kv_write"(%[[CTX]], %{{[^,]+}}, %[[N]], %{{[^,]+}}, %{{[^,]+}}, %[[QKV]], %[[POS]], %[[Q]]) {args = [0 : index, 1 : index, 2 : index, 3 : index, 4 : index, 5 : index, 6 : index, #emitc.opaque<"kRope0">, 0 : i32, 7 : index], template_args = [128 : i32, 64 : i32, 4 : i32, 2 : i32, 16 : i32]}
// CHECK-NOT: phimoe_cuda::split_cols
// CHECK-NOT: call_opaque "phimoe_cuda::rope
// CHECK-NOT: qkv_rope_kv_write"(
// CHECK: call_opaque "phimoe_cuda::attention"(%[[CTX]], %[[Q]], {{[^,]+}}, %[[VS]], %[[N]], %[[POS]], %[[ATT:[^)]+]]) {args = [{{.*}}, 0 : i32, 2.500000e-01 : f32, 0 : i32, 6 : index], template_args = [4 : i32, 2 : i32, 16 : i32, #emitc.opaque<"true">]
// CHECK-NOT: call_opaque "phimoe_cuda::rope
// o_proj, then the norm before the MoE on its rows and the residual (the embedding's rows),
// which computes the MoE's routes (with the router's weight and the MoE's epsilon), in one
// launch (linear_add_layer_norm_route: the GEMV's last block of each row runs the norm and the
// router); the MoE then skips its router (Routed = true). The experts are q8_0.
// CHECK-NOT: call_opaque "phimoe_cuda::linear"(
// CHECK: call_opaque "phimoe_cuda::linear_add_layer_norm_route"(%[[CTX]], %[[ATT]], %[[N]], %{{[^,]+}}, %{{[^,]+}}, %{{[^,]+}}, %[[H]], %{{[^,]+}}, %{{[^,]+}}, %[[RESID:[^,]+]], %[[NORMED:[^,]+]], %[[ROUTER:[^)]+]]) {args = [0 : index, 1 : index, 2 : index, 3 : index, 4 : index, 5 : index, 6 : index, 7 : index, 8 : index, 9.99999974E-6 : f32, 9 : index, 10 : index, 11 : index, 0.00999999977 : f32], template_args = [64 : i32, 64 : i32, 4 : i32]}
// CHECK-NOT: call_opaque "phimoe_cuda::add_layer_norm
// CHECK-NOT: "phimoe_cuda::weight"(%[[CTX]]) {{.*}} template_args = [!emitc.opaque<"float">]}
// CHECK: %[[GU:.+]] = call_opaque "phimoe_cuda::weight"(%[[CTX]]) {{.*}} template_args = [!emitc.opaque<"phimoe_rt::block_q8_0">]}
// CHECK: %[[DOWN:.+]] = call_opaque "phimoe_cuda::weight"(%[[CTX]]) {{.*}} template_args = [!emitc.opaque<"phimoe_rt::block_q8_0">]}
// The last norm (after the MoE, on its rows and the residual of add_layer_norm_route) runs
// in the MoE's launch: its weights' pointers come first, it emits nothing of its own.
// CHECK-NOT: call_opaque "phimoe_cuda::moe_sparsemixer"(
// CHECK: call_opaque "phimoe_cuda::moe_sparsemixer_add_layer_norm"(%[[CTX]], %[[NORMED]], %[[N]], %[[ROUTER]], %[[GU]], %[[DOWN]], %{{[^,]+}}, %[[RESID]], %{{[^,]+}}, %{{[^,]+}}, %[[SUM:[^,]+]], %[[XF:[^)]+]]) {args = [0 : index, 1 : index, 2 : index, 3 : index, 4 : index, 5 : index, 0.00999999977 : f32, 6 : index, 7 : index, 8 : index, 9 : index, 9.99999974E-6 : f32, 10 : index, 11 : index], template_args = [4 : i32, 64 : i32, 128 : i32, #emitc.opaque<"true">]
// CHECK-NOT: call_opaque "phimoe_cuda::add_layer_norm"(
// CHECK: %[[LAST:.+]] = call_opaque "phimoe_cuda::last_rows"(%[[XF]], %[[N]], %[[ROWS]]) {template_args = [64 : i32]}
// CHECK: call_opaque "phimoe_cuda::linear"(%[[CTX]], %[[LAST]], %[[ROWS]], {{.*}}, %[[LOGITS]]) {{.*}} template_args = [96 : i32, 64 : i32]
// CHECK-NEXT: return

// CUDA: // generated by phimoec, do not edit
// CUDA: #include "phimoe_cuda/kernels.cuh"
// CUDA: #include "phimoe_cuda/model.h"
// CUDA: static const phimoe_rt::RopeParams kRope0 = {10000.0f, 32, 1.16844893f, 1.16844893f, kRope0Short, kRope0Long};
// CUDA: const phimoe_rt::ModelInfo phimoe_model_info = {{[{][0-9]+}}ull, {{[0-9]+}}ull, {{[0-9]+}}ull, 16, 96, 64, 128, 4, 1, 2, 16, 32, 0};
// CUDA: void phimoe_forward(phimoe_cuda::Context& [[CTX:v[0-9]+]], const int32_t* [[IDS:v[0-9]+]], const int32_t* [[POS:v[0-9]+]], int32_t [[N:v[0-9]+]], int32_t [[ROWS:v[0-9]+]], float* [[LOGITS:v[0-9]+]]) {
// CUDA: const phimoe_rt::block_q8_0* [[TABLE:v[0-9]+]] = phimoe_cuda::weight<phimoe_rt::block_q8_0>([[CTX]], 0);
// CUDA: phimoe_cuda::embed<96, 64>([[CTX]], [[IDS]], [[N]], [[TABLE]],
// CUDA: phimoe_cuda::linear_qkv_rope_kv_write<128, 64, 4, 2, 16>([[CTX]], {{v[0-9]+}}, [[N]], {{v[0-9]+}}, {{v[0-9]+}}, {{v[0-9]+}}, [[POS]], kRope0, 0, [[Q:v[0-9]+]]);
// CUDA-NEXT: float* {{v[0-9]+}} = phimoe_cuda::act([[CTX]], {{[0-9]+}});
// CUDA-NEXT: float* {{v[0-9]+}} = phimoe_cuda::act([[CTX]], {{[0-9]+}});
// CUDA-NEXT: phimoe_cuda::attention<4, 2, 16, true>([[CTX]], [[Q]], {{v[0-9]+}}, {{v[0-9]+}}, [[N]], [[POS]], 0, 2.500000000e-01f, 0, {{v[0-9]+}});
// CUDA: phimoe_cuda::linear_add_layer_norm_route<64, 64, 4>([[CTX]],
// CUDA: phimoe_cuda::moe_sparsemixer_add_layer_norm<4, 64, 128, true>([[CTX]],
// CUDA: phimoe_cuda::linear<96, 64>([[CTX]], {{v[0-9]+}}, [[ROWS]], {{v[0-9]+}}, {{v[0-9]+}}, [[LOGITS]]);
// CUDA-NEXT: return;

// UNFUSED-NOT: qkv_rope_kv_write
// UNFUSED-NOT: phimoe_cuda::copy_cols
// UNFUSED: call_opaque "phimoe_cuda::split_cols"(%{{.+}}, %{{.+}}, %[[N:[^,]+]], %{{.+}}, %{{.+}}, %{{.+}}) {args = [0 : index, 1 : index, 2 : index, 3 : index, 4 : index, 5 : index], template_args = [128 : i32, 64 : i32, 32 : i32, 32 : i32]}
// UNFUSED-NOT: phimoe_cuda::copy_cols
// UNFUSED: call_opaque "phimoe_cuda::rope"({{.*}}#emitc.opaque<"kRope0">{{.*}} template_args = [4 : i32, 16 : i32]
// UNFUSED-NOT: call_opaque "phimoe_cuda::rope"(
// UNFUSED: call_opaque "phimoe_cuda::rope_kv_write"(%{{.+}}, %[[K:[^,]+]], %[[V:[^,]+]], %[[N]], %{{.+}}) {args = [0 : index, 1 : index, 2 : index, 3 : index, 4 : index, #emitc.opaque<"kRope0">, 0 : i32], template_args = [2 : i32, 16 : i32]}
// UNFUSED: call_opaque "phimoe_cuda::attention"({{[^,]+}}, {{[^,]+}}, {{[^,]+}}, %[[V]], %[[N]], {{[^)]+}}) {args = [{{.*}}, 0 : i32, 2.500000e-01 : f32, 0 : i32, 6 : index], template_args = [4 : i32, 2 : i32, 16 : i32, #emitc.opaque<"true">]

// APART: call_opaque "phimoe_cuda::layer_norm"
// APART: %[[QKV:.+]] = call_opaque "phimoe_cuda::act"(%{{.+}}) {args = [0 : index, [[QKVAT:[0-9]+]]]}
// APART-NOT: {args = [0 : index, [[QKVAT]]]}
// APART: phimoe_cuda::linear_qkv_rope_kv_write"
// UNFUSED-NOT: add_layer_norm_route
// UNFUSED: call_opaque "phimoe_cuda::add_layer_norm"(
// UNFUSED: call_opaque "phimoe_cuda::moe_sparsemixer"({{.*}} template_args = [4 : i32, 64 : i32, 128 : i32]}
// UNFUSED: call_opaque "phimoe_cuda::add_layer_norm"(
// UNFUSED-NOT: moe_sparsemixer_add_layer_norm
// UNFUSED-NOT: add_layer_norm_route

// LINAPART-NOT: linear_add_layer_norm
// LINAPART: call_opaque "phimoe_cuda::attention"({{.*}}, %[[ATT:[^)]+]]) {args
// LINAPART-NEXT: call_opaque "phimoe_cuda::weight"
// LINAPART-NEXT: call_opaque "phimoe_cuda::weight"
// LINAPART-NEXT: %[[O:.+]] = call_opaque "phimoe_cuda::act"
// LINAPART-NEXT: call_opaque "phimoe_cuda::linear"(%{{[^,]+}}, %[[ATT]], %{{[^,]+}}, %{{[^,]+}}, %{{[^,]+}}, %[[O]]) {{.*}} template_args = [64 : i32, 64 : i32]}
// LINAPART: call_opaque "phimoe_cuda::add_layer_norm_route"(%{{[^,]+}}, %{{[^,]+}}, %[[O]], {{.*}} template_args = [64 : i32, 4 : i32]}
// LINAPART: call_opaque "phimoe_cuda::moe_sparsemixer_add_layer_norm"(
// LINAPART-NOT: linear_add_layer_norm

// QKVAPART: call_opaque "phimoe_cuda::layer_norm"
// QKVAPART: %[[QKV:.+]] = call_opaque "phimoe_cuda::act"
// QKVAPART-NEXT: call_opaque "phimoe_cuda::linear"({{.*}}%[[QKV]]) {{.*}} template_args = [128 : i32, 64 : i32]
// QKVAPART: %[[QS:.+]] = call_opaque "phimoe_cuda::act"
// QKVAPART: %[[KS:.+]] = call_opaque "phimoe_cuda::act"
// QKVAPART: %[[VS:.+]] = call_opaque "phimoe_cuda::act"
// QKVAPART: %[[Q:.+]] = call_opaque "phimoe_cuda::act"
// QKVAPART-NEXT: call_opaque "phimoe_cuda::qkv_rope_kv_write"(%{{[^,]+}}, %[[QKV]], %{{[^,]+}}, %{{[^,]+}}, %[[QS]], %[[KS]], %[[VS]], %[[Q]]) {args = [0 : index, 1 : index, 2 : index, 3 : index, #emitc.opaque<"kRope0">, 0 : i32, 4 : index, 5 : index, 6 : index, 7 : index], template_args = [128 : i32, 4 : i32, 2 : i32, 16 : i32, #emitc.opaque<"true">]}
// QKVAPART-NOT: call_opaque "phimoe_cuda::rope
// QKVAPART: call_opaque "phimoe_cuda::attention"({{[^,]+}}, %[[Q]], {{[^,]+}}, %[[VS]],

// OVERLAP: call_opaque "phimoe_cuda::layer_norm"
// OVERLAP: %[[QKV:.+]] = call_opaque "phimoe_cuda::act"(%{{.+}}) {args = [0 : index, [[QKVAT:[0-9]+]]]}
// OVERLAP-NEXT: call_opaque "phimoe_cuda::linear"
// OVERLAP: call_opaque "phimoe_cuda::act"(%{{.+}}) {args = [0 : index, [[QKVAT]]]}
// OVERLAP-NEXT: phimoe_cuda::qkv_rope_kv_write"({{.*}}template_args = [128 : i32, 4 : i32, 2 : i32, 16 : i32, #emitc.opaque<"false">]

// CPU-NOT: phimoe.pack_layout
// CPU-NOT: phimoe_cuda
// CPU: emitc.include "phimoe_rt/kernels.h"
// CPU-NOT: phimoe_cuda
// CPU-NOT: rope_kv_write

// BADTARGET: error: phimoe-lower-to-emitc: target must be cpu or cuda, not 'rocm'

#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.1684489, long_mscale = 1.1684489, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75]>
module {
  phimoe.weight @model.embed_tokens.weight : tensor<96x64xf32>
  phimoe.weight @model.layers.0.input_layernorm.weight : tensor<64xf32>
  phimoe.weight @model.layers.0.input_layernorm.bias : tensor<64xf32>
  phimoe.weight @model.layers.0.self_attn.q_proj.weight : tensor<64x64xf32>
  phimoe.weight @model.layers.0.self_attn.q_proj.bias : tensor<64xf32>
  phimoe.weight @model.layers.0.self_attn.k_proj.weight : tensor<32x64xf32>
  phimoe.weight @model.layers.0.self_attn.k_proj.bias : tensor<32xf32>
  phimoe.weight @model.layers.0.self_attn.v_proj.weight : tensor<32x64xf32>
  phimoe.weight @model.layers.0.self_attn.v_proj.bias : tensor<32xf32>
  phimoe.weight @model.layers.0.self_attn.o_proj.weight : tensor<64x64xf32>
  phimoe.weight @model.layers.0.self_attn.o_proj.bias : tensor<64xf32>
  phimoe.weight @model.layers.0.post_attention_layernorm.weight : tensor<64xf32>
  phimoe.weight @model.layers.0.post_attention_layernorm.bias : tensor<64xf32>
  phimoe.weight @model.layers.0.block_sparse_moe.gate.weight : tensor<4x64xf32>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w1.weight : tensor<128x64xf32>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w3.weight : tensor<128x64xf32>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<64x128xf32>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w1.weight : tensor<128x64xf32>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w3.weight : tensor<128x64xf32>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w2.weight : tensor<64x128xf32>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.2.w1.weight : tensor<128x64xf32>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.2.w3.weight : tensor<128x64xf32>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.2.w2.weight : tensor<64x128xf32>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.3.w1.weight : tensor<128x64xf32>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.3.w3.weight : tensor<128x64xf32>
  phimoe.weight @model.layers.0.block_sparse_moe.experts.3.w2.weight : tensor<64x128xf32>
  phimoe.weight @model.norm.weight : tensor<64xf32>
  phimoe.weight @model.norm.bias : tensor<64xf32>
  phimoe.weight @lm_head.weight : tensor<96x64xf32>
  phimoe.weight @lm_head.bias : tensor<96xf32>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x96xf32> {
    %w1 = phimoe.weight_ref @model.embed_tokens.weight : tensor<96x64xf32>
    %h2 = phimoe.embed %ids, %w1 : tensor<?xi32>, tensor<96x64xf32> -> tensor<?x64xf32>
    // layer 0: attention
    %w3 = phimoe.weight_ref @model.layers.0.input_layernorm.weight : tensor<64xf32>
    %w4 = phimoe.weight_ref @model.layers.0.input_layernorm.bias : tensor<64xf32>
    %v5 = phimoe.layer_norm %h2, %w3, %w4 {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xf32>
    %w6 = phimoe.weight_ref @model.layers.0.self_attn.q_proj.weight : tensor<64x64xf32>
    %w8 = phimoe.weight_ref @model.layers.0.self_attn.q_proj.bias : tensor<64xf32>
    %v7 = phimoe.linear %v5, %w6, %w8 : tensor<?x64xf32>, tensor<64x64xf32>, tensor<64xf32> -> tensor<?x64xf32>
    %w9 = phimoe.weight_ref @model.layers.0.self_attn.k_proj.weight : tensor<32x64xf32>
    %w11 = phimoe.weight_ref @model.layers.0.self_attn.k_proj.bias : tensor<32xf32>
    %v10 = phimoe.linear %v5, %w9, %w11 : tensor<?x64xf32>, tensor<32x64xf32>, tensor<32xf32> -> tensor<?x32xf32>
    %w12 = phimoe.weight_ref @model.layers.0.self_attn.v_proj.weight : tensor<32x64xf32>
    %w14 = phimoe.weight_ref @model.layers.0.self_attn.v_proj.bias : tensor<32xf32>
    %v13 = phimoe.linear %v5, %w12, %w14 : tensor<?x64xf32>, tensor<32x64xf32>, tensor<32xf32> -> tensor<?x32xf32>
    %v15 = phimoe.rope %v7, %pos {head_dim = 16 : i64, scaling = #rope} : tensor<?x64xf32>, tensor<?xi32>
    %v16 = phimoe.rope %v10, %pos {head_dim = 16 : i64, scaling = #rope} : tensor<?x32xf32>, tensor<?xi32>
    %v17 = phimoe.attention %v15, %v16, %v13, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
    %w18 = phimoe.weight_ref @model.layers.0.self_attn.o_proj.weight : tensor<64x64xf32>
    %w20 = phimoe.weight_ref @model.layers.0.self_attn.o_proj.bias : tensor<64xf32>
    %v19 = phimoe.linear %v17, %w18, %w20 : tensor<?x64xf32>, tensor<64x64xf32>, tensor<64xf32> -> tensor<?x64xf32>
    %h21 = phimoe.add %h2, %v19 : tensor<?x64xf32>
    // layer 0: mixture of experts
    %w22 = phimoe.weight_ref @model.layers.0.post_attention_layernorm.weight : tensor<64xf32>
    %w23 = phimoe.weight_ref @model.layers.0.post_attention_layernorm.bias : tensor<64xf32>
    %v24 = phimoe.layer_norm %h21, %w22, %w23 {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xf32>
    %w25 = phimoe.weight_ref @model.layers.0.block_sparse_moe.gate.weight : tensor<4x64xf32>
    %experts26, %routing27 = phimoe.router sparsemixer %v24, %w25 {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w28 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w1.weight : tensor<128x64xf32>
    %v29 = phimoe.linear %v24, %w28 : tensor<?x64xf32>, tensor<128x64xf32> -> tensor<?x128xf32>
    %w30 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w3.weight : tensor<128x64xf32>
    %v31 = phimoe.linear %v24, %w30 : tensor<?x64xf32>, tensor<128x64xf32> -> tensor<?x128xf32>
    %v32 = phimoe.silu %v29 : tensor<?x128xf32>
    %v33 = phimoe.mul %v32, %v31 : tensor<?x128xf32>
    %w34 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<64x128xf32>
    %v35 = phimoe.linear %v33, %w34 : tensor<?x128xf32>, tensor<64x128xf32> -> tensor<?x64xf32>
    %w36 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.w1.weight : tensor<128x64xf32>
    %v37 = phimoe.linear %v24, %w36 : tensor<?x64xf32>, tensor<128x64xf32> -> tensor<?x128xf32>
    %w38 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.w3.weight : tensor<128x64xf32>
    %v39 = phimoe.linear %v24, %w38 : tensor<?x64xf32>, tensor<128x64xf32> -> tensor<?x128xf32>
    %v40 = phimoe.silu %v37 : tensor<?x128xf32>
    %v41 = phimoe.mul %v40, %v39 : tensor<?x128xf32>
    %w42 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.w2.weight : tensor<64x128xf32>
    %v43 = phimoe.linear %v41, %w42 : tensor<?x128xf32>, tensor<64x128xf32> -> tensor<?x64xf32>
    %w44 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.2.w1.weight : tensor<128x64xf32>
    %v45 = phimoe.linear %v24, %w44 : tensor<?x64xf32>, tensor<128x64xf32> -> tensor<?x128xf32>
    %w46 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.2.w3.weight : tensor<128x64xf32>
    %v47 = phimoe.linear %v24, %w46 : tensor<?x64xf32>, tensor<128x64xf32> -> tensor<?x128xf32>
    %v48 = phimoe.silu %v45 : tensor<?x128xf32>
    %v49 = phimoe.mul %v48, %v47 : tensor<?x128xf32>
    %w50 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.2.w2.weight : tensor<64x128xf32>
    %v51 = phimoe.linear %v49, %w50 : tensor<?x128xf32>, tensor<64x128xf32> -> tensor<?x64xf32>
    %w52 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.3.w1.weight : tensor<128x64xf32>
    %v53 = phimoe.linear %v24, %w52 : tensor<?x64xf32>, tensor<128x64xf32> -> tensor<?x128xf32>
    %w54 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.3.w3.weight : tensor<128x64xf32>
    %v55 = phimoe.linear %v24, %w54 : tensor<?x64xf32>, tensor<128x64xf32> -> tensor<?x128xf32>
    %v56 = phimoe.silu %v53 : tensor<?x128xf32>
    %v57 = phimoe.mul %v56, %v55 : tensor<?x128xf32>
    %w58 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.3.w2.weight : tensor<64x128xf32>
    %v59 = phimoe.linear %v57, %w58 : tensor<?x128xf32>, tensor<64x128xf32> -> tensor<?x64xf32>
    %v60 = phimoe.moe_combine %experts26, %routing27, %v35, %v43, %v51, %v59 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
    %h61 = phimoe.add %h21, %v60 : tensor<?x64xf32>
    %w62 = phimoe.weight_ref @model.norm.weight : tensor<64xf32>
    %w63 = phimoe.weight_ref @model.norm.bias : tensor<64xf32>
    %v64 = phimoe.layer_norm %h61, %w62, %w63 {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xf32>
    %w65 = phimoe.weight_ref @lm_head.weight : tensor<96x64xf32>
    %w66 = phimoe.weight_ref @lm_head.bias : tensor<96xf32>
    %logits67 = phimoe.lm_head %v64, %w65, %w66 : tensor<?x64xf32>, tensor<96x64xf32>, tensor<96xf32> -> tensor<?x96xf32>
    return %logits67 : tensor<?x96xf32>
  }
}
