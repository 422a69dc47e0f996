// Fused ops whose attributes have no kernel are refused by the lowering with the reason.
// RUN: not phimoe-opt %s -split-input-file --phimoe-plan-memory="max-tokens=4" --phimoe-lower-to-emitc 2>&1 | FileCheck %s

// CHECK: error: 'phimoe.moe' op phimoe-lower-to-emitc: softmax_topk has a kernel for top_k = 2 only, got 1
module {
  phimoe.weight @embed : tensor<8x64xf32>
  phimoe.weight @gate : tensor<4x64xf32>
  phimoe.weight @gate_up : tensor<4x256x64xf32>
  phimoe.weight @down : tensor<4x64x128xf32>
  phimoe.weight @head : tensor<8x64xf32>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 1, head_dim = 16, dtype = f32>) -> tensor<?x8xf32> {
    %e = phimoe.weight_ref @embed : tensor<8x64xf32>
    %x = phimoe.embed %ids, %e : tensor<?xi32>, tensor<8x64xf32> -> tensor<?x64xf32>
    %wg = phimoe.weight_ref @gate : tensor<4x64xf32>
    %gu = phimoe.weight_ref @gate_up : tensor<4x256x64xf32>
    %dn = phimoe.weight_ref @down : tensor<4x64x128xf32>
    %y = phimoe.moe softmax_topk %x, %wg, %gu, %dn {epsilon = 0.0 : f64, top_k = 1 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x256x64xf32>, tensor<4x64x128xf32>
    %h = phimoe.weight_ref @head : tensor<8x64xf32>
    %l = phimoe.lm_head %y, %h : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
    return %l : tensor<?x8xf32>
  }
}

// -----

// CHECK: error: 'phimoe.moe_gelu' op phimoe-lower-to-emitc: moe_gelu has a kernel for softmax_topk routing with top_k = 2 only
module {
  phimoe.weight @embed : tensor<8x64xf32>
  phimoe.weight @gate : tensor<4x64xf32>
  phimoe.weight @fc1 : tensor<4x128x64xf32>
  phimoe.weight @b1 : tensor<4x128xf32>
  phimoe.weight @fc2 : tensor<4x64x128xf32>
  phimoe.weight @b2 : tensor<4x64xf32>
  phimoe.weight @head : tensor<8x64xf32>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 1, head_dim = 16, dtype = f32>) -> tensor<?x8xf32> {
    %e = phimoe.weight_ref @embed : tensor<8x64xf32>
    %x = phimoe.embed %ids, %e : tensor<?xi32>, tensor<8x64xf32> -> tensor<?x64xf32>
    %wg = phimoe.weight_ref @gate : tensor<4x64xf32>
    %w1 = phimoe.weight_ref @fc1 : tensor<4x128x64xf32>
    %b1 = phimoe.weight_ref @b1 : tensor<4x128xf32>
    %w2 = phimoe.weight_ref @fc2 : tensor<4x64x128xf32>
    %b2 = phimoe.weight_ref @b2 : tensor<4x64xf32>
    %y = phimoe.moe_gelu sparsemixer %x, %wg, %w1, %b1, %w2, %b2 {epsilon = 0.01 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x128x64xf32>, tensor<4x128xf32>, tensor<4x64x128xf32>, tensor<4x64xf32>
    %h = phimoe.weight_ref @head : tensor<8x64xf32>
    %l = phimoe.lm_head %y, %h : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
    return %l : tensor<?x8xf32>
  }
}
