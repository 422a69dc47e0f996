// A one-layer phixtral (hidden 64, 4 heads of 16 with rotary_dim 8, 2 kv heads, 4 experts of
// 128, vocab 96: phi-2 blocks, attention and MoE in parallel from one LayerNorm, biased gelu
// experts, softmax top-2 routing) as the frontend states a model_type "phi-msft" checkpoint,
// through the whole pipeline. Regenerate the IR below with:
//   scripts/gen-model-mlir.py --arch phixtral
//
// RUN: phimoe-opt %s --phimoe-pipeline="quant=q8_0" | FileCheck %s
// RUN: phimoe-opt %s --phimoe-pipeline="target=cpu max-tokens=16" | phimoe-translate --phimoe-to-cpp | FileCheck %s --check-prefix=CPP
// RUN: phimoe-opt %s --phimoe-pipeline="target=cuda max-tokens=16" | phimoe-translate --phimoe-to-cpp | FileCheck %s --check-prefix=CUDA

// The experts fuse into one moe_gelu over stacked fc1/fc2 weights and their stacked biases;
// the weights take the scheme, the biases stay float. The parallel residual: attention plus
// MoE first, then the sum plus the residual stream, fused into the next LayerNorm.
// CHECK-DAG: phimoe.weight @transformer.h.0.moe.mlp.fc1.weight = stack [@transformer.h.0.moe.mlp.0.fc1.weight, @transformer.h.0.moe.mlp.1.fc1.weight, @transformer.h.0.moe.mlp.2.fc1.weight, @transformer.h.0.moe.mlp.3.fc1.weight] : !phimoe.qweight<q8_0, [4, 128, 64]>
// CHECK-DAG: phimoe.weight @transformer.h.0.moe.mlp.fc1.bias = stack [{{.*}}] : tensor<4x128xf32>
// CHECK-DAG: phimoe.weight @transformer.h.0.moe.mlp.fc2.bias = stack [{{.*}}] : tensor<4x64xf32>
// CHECK-LABEL: func.func @forward
// CHECK: %[[H0:.+]] = phimoe.embed
// CHECK: %[[X:.+]] = phimoe.layer_norm %[[H0]]
// CHECK: %[[QKV:.+]] = phimoe.linear %[[X]], {{.*}} -> tensor<?x128xf32>
// CHECK: %[[S:.+]]:3 = phimoe.split %[[QKV]] [64, 32, 32]
// CHECK: phimoe.rope %[[S]]#0, %{{.+}} {head_dim = 16 : i64, rotary_dim = 8 : i64, scaling = #rope} : tensor<?x64xf32>
// CHECK: phimoe.rope %[[S]]#1, %{{.+}} {head_dim = 16 : i64, rotary_dim = 8 : i64, scaling = #rope} : tensor<?x32xf32>
// CHECK: %[[O:.+]] = phimoe.linear
// CHECK: %[[M:.+]] = phimoe.moe_gelu softmax_topk %[[X]], {{.*}} {epsilon = 0.000000e+00 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16>, !phimoe.qweight<q8_0, [4, 128, 64]>, tensor<4x128xf32>, !phimoe.qweight<q8_0, [4, 64, 128]>, tensor<4x64xf32>
// CHECK: %[[B:.+]] = phimoe.add %[[O]], %[[M]]
// CHECK: %{{.+}}, %[[XF:.+]] = phimoe.add_layer_norm %[[B]], %[[H0]]
// CHECK: phimoe.lm_head %[[XF]]
// CHECK-NOT: phimoe.gelu
// CHECK-NOT: phimoe.moe_combine

// CPP: static const phimoe_rt::RopeParams kRope0 = {10000.0f, 2048, 1.0f, 1.0f, kRope0Short, kRope0Long};
// CPP: phimoe_rt::layer_norm<64>(
// CPP: phimoe_rt::linear<128, 64>(
// CPP: phimoe_rt::rope_partial<4, 16, 8>(
// CPP: phimoe_rt::rope_partial<2, 16, 8>(
// CPP: phimoe_rt::attention<4, 2, 16>(
// CPP: phimoe_rt::moe_softmax_top2_gelu<4, 64, 128>(
// CPP: phimoe_rt::add<64>(
// CPP: phimoe_rt::add_layer_norm<64>(
// CPP: phimoe_rt::linear<96, 64>(

// CUDA has the same launchers (the partial RoPE is not fused with the q/k/v split or the
// KV-cache write: the attention writes the cache).
// CUDA: phimoe_cuda::split_cols<128, 64, 32, 32>(
// CUDA: phimoe_cuda::rope_partial<4, 16, 8>(
// CUDA: phimoe_cuda::rope_partial<2, 16, 8>(
// CUDA: phimoe_cuda::attention<4, 2, 16>(
// CUDA: phimoe_cuda::moe_softmax_top2_gelu<4, 64, 128>(
// CUDA: phimoe_cuda::add<64>(
// CUDA: phimoe_cuda::add_layer_norm<64>(

#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 2048, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.0, 1.0, 1.0]>
module {
  phimoe.weight @transformer.embd.wte.weight : tensor<96x64xbf16>
  phimoe.weight @transformer.h.0.ln.weight : tensor<64xbf16>
  phimoe.weight @transformer.h.0.ln.bias : tensor<64xbf16>
  phimoe.weight @transformer.h.0.mixer.Wqkv.weight : tensor<128x64xbf16>
  phimoe.weight @transformer.h.0.mixer.Wqkv.bias : tensor<128xbf16>
  phimoe.weight @transformer.h.0.mixer.out_proj.weight : tensor<64x64xbf16>
  phimoe.weight @transformer.h.0.mixer.out_proj.bias : tensor<64xbf16>
  phimoe.weight @transformer.h.0.moe.gate.weight : tensor<4x64xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.0.fc1.weight : tensor<128x64xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.0.fc1.bias : tensor<128xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.0.fc2.weight : tensor<64x128xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.0.fc2.bias : tensor<64xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.1.fc1.weight : tensor<128x64xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.1.fc1.bias : tensor<128xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.1.fc2.weight : tensor<64x128xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.1.fc2.bias : tensor<64xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.2.fc1.weight : tensor<128x64xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.2.fc1.bias : tensor<128xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.2.fc2.weight : tensor<64x128xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.2.fc2.bias : tensor<64xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.3.fc1.weight : tensor<128x64xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.3.fc1.bias : tensor<128xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.3.fc2.weight : tensor<64x128xbf16>
  phimoe.weight @transformer.h.0.moe.mlp.3.fc2.bias : tensor<64xbf16>
  phimoe.weight @lm_head.ln.weight : tensor<64xbf16>
  phimoe.weight @lm_head.ln.bias : tensor<64xbf16>
  phimoe.weight @lm_head.linear.weight : tensor<96x64xbf16>
  phimoe.weight @lm_head.linear.bias : tensor<96xbf16>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x96xf32> {
    %w1 = phimoe.weight_ref @transformer.embd.wte.weight : tensor<96x64xbf16>
    %h2 = phimoe.embed %ids, %w1 : tensor<?xi32>, tensor<96x64xbf16> -> tensor<?x64xf32>
    // layer 0: attention and mixture of experts in parallel from one LayerNorm
    %w3 = phimoe.weight_ref @transformer.h.0.ln.weight : tensor<64xbf16>
    %w4 = phimoe.weight_ref @transformer.h.0.ln.bias : tensor<64xbf16>
    %v5 = phimoe.layer_norm %h2, %w3, %w4 {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xbf16>
    %w6 = phimoe.weight_ref @transformer.h.0.mixer.Wqkv.weight : tensor<128x64xbf16>
    %w8 = phimoe.weight_ref @transformer.h.0.mixer.Wqkv.bias : tensor<128xbf16>
    %v7 = phimoe.linear %v5, %w6, %w8 : tensor<?x64xf32>, tensor<128x64xbf16>, tensor<128xbf16> -> tensor<?x128xf32>
    %v9, %v10, %v11 = phimoe.split %v7 [64, 32, 32] : tensor<?x128xf32> -> tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>
    %v12 = phimoe.rope %v9, %pos {head_dim = 16 : i64, rotary_dim = 8 : i64, scaling = #rope} : tensor<?x64xf32>, tensor<?xi32>
    %v13 = phimoe.rope %v10, %pos {head_dim = 16 : i64, rotary_dim = 8 : i64, scaling = #rope} : tensor<?x32xf32>, tensor<?xi32>
    %v14 = phimoe.attention %v12, %v13, %v11, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
    %w15 = phimoe.weight_ref @transformer.h.0.mixer.out_proj.weight : tensor<64x64xbf16>
    %w17 = phimoe.weight_ref @transformer.h.0.mixer.out_proj.bias : tensor<64xbf16>
    %v16 = phimoe.linear %v14, %w15, %w17 : tensor<?x64xf32>, tensor<64x64xbf16>, tensor<64xbf16> -> tensor<?x64xf32>
    %w18 = phimoe.weight_ref @transformer.h.0.moe.gate.weight : tensor<4x64xbf16>
    %experts19, %routing20 = phimoe.router softmax_topk %v5, %w18 {epsilon = 0.0 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w21 = phimoe.weight_ref @transformer.h.0.moe.mlp.0.fc1.weight : tensor<128x64xbf16>
    %w23 = phimoe.weight_ref @transformer.h.0.moe.mlp.0.fc1.bias : tensor<128xbf16>
    %v22 = phimoe.linear %v5, %w21, %w23 : tensor<?x64xf32>, tensor<128x64xbf16>, tensor<128xbf16> -> tensor<?x128xf32>
    %v24 = phimoe.gelu %v22 : tensor<?x128xf32>
    %w25 = phimoe.weight_ref @transformer.h.0.moe.mlp.0.fc2.weight : tensor<64x128xbf16>
    %w27 = phimoe.weight_ref @transformer.h.0.moe.mlp.0.fc2.bias : tensor<64xbf16>
    %v26 = phimoe.linear %v24, %w25, %w27 : tensor<?x128xf32>, tensor<64x128xbf16>, tensor<64xbf16> -> tensor<?x64xf32>
    %w28 = phimoe.weight_ref @transformer.h.0.moe.mlp.1.fc1.weight : tensor<128x64xbf16>
    %w30 = phimoe.weight_ref @transformer.h.0.moe.mlp.1.fc1.bias : tensor<128xbf16>
    %v29 = phimoe.linear %v5, %w28, %w30 : tensor<?x64xf32>, tensor<128x64xbf16>, tensor<128xbf16> -> tensor<?x128xf32>
    %v31 = phimoe.gelu %v29 : tensor<?x128xf32>
    %w32 = phimoe.weight_ref @transformer.h.0.moe.mlp.1.fc2.weight : tensor<64x128xbf16>
    %w34 = phimoe.weight_ref @transformer.h.0.moe.mlp.1.fc2.bias : tensor<64xbf16>
    %v33 = phimoe.linear %v31, %w32, %w34 : tensor<?x128xf32>, tensor<64x128xbf16>, tensor<64xbf16> -> tensor<?x64xf32>
    %w35 = phimoe.weight_ref @transformer.h.0.moe.mlp.2.fc1.weight : tensor<128x64xbf16>
    %w37 = phimoe.weight_ref @transformer.h.0.moe.mlp.2.fc1.bias : tensor<128xbf16>
    %v36 = phimoe.linear %v5, %w35, %w37 : tensor<?x64xf32>, tensor<128x64xbf16>, tensor<128xbf16> -> tensor<?x128xf32>
    %v38 = phimoe.gelu %v36 : tensor<?x128xf32>
    %w39 = phimoe.weight_ref @transformer.h.0.moe.mlp.2.fc2.weight : tensor<64x128xbf16>
    %w41 = phimoe.weight_ref @transformer.h.0.moe.mlp.2.fc2.bias : tensor<64xbf16>
    %v40 = phimoe.linear %v38, %w39, %w41 : tensor<?x128xf32>, tensor<64x128xbf16>, tensor<64xbf16> -> tensor<?x64xf32>
    %w42 = phimoe.weight_ref @transformer.h.0.moe.mlp.3.fc1.weight : tensor<128x64xbf16>
    %w44 = phimoe.weight_ref @transformer.h.0.moe.mlp.3.fc1.bias : tensor<128xbf16>
    %v43 = phimoe.linear %v5, %w42, %w44 : tensor<?x64xf32>, tensor<128x64xbf16>, tensor<128xbf16> -> tensor<?x128xf32>
    %v45 = phimoe.gelu %v43 : tensor<?x128xf32>
    %w46 = phimoe.weight_ref @transformer.h.0.moe.mlp.3.fc2.weight : tensor<64x128xbf16>
    %w48 = phimoe.weight_ref @transformer.h.0.moe.mlp.3.fc2.bias : tensor<64xbf16>
    %v47 = phimoe.linear %v45, %w46, %w48 : tensor<?x128xf32>, tensor<64x128xbf16>, tensor<64xbf16> -> tensor<?x64xf32>
    %v49 = phimoe.moe_combine %experts19, %routing20, %v26, %v33, %v40, %v47 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
    %v50 = phimoe.add %v16, %v49 : tensor<?x64xf32>
    %h51 = phimoe.add %v50, %h2 : tensor<?x64xf32>
    %w52 = phimoe.weight_ref @lm_head.ln.weight : tensor<64xbf16>
    %w53 = phimoe.weight_ref @lm_head.ln.bias : tensor<64xbf16>
    %v54 = phimoe.layer_norm %h51, %w52, %w53 {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xbf16>
    %w55 = phimoe.weight_ref @lm_head.linear.weight : tensor<96x64xbf16>
    %w56 = phimoe.weight_ref @lm_head.linear.bias : tensor<96xbf16>
    %logits57 = phimoe.lm_head %v54, %w55, %w56 : tensor<?x64xf32>, tensor<96x64xbf16>, tensor<96xbf16> -> tensor<?x96xf32>
    return %logits57 : tensor<?x96xf32>
  }
}
