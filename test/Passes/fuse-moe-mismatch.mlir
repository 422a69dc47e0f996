// Cases where fuse-moe must not produce IR that fails to verify (found by
// writing fuse-moe.mlir).
// RUN: phimoe-opt %s -split-input-file --phimoe-fuse-moe | FileCheck %s

// Regression (FuseMoE.cpp, FuseMoEPattern::matchAndRewrite): phimoe.moe requires its
// result type to equal its input type (AllTypesMatch<["input", "result"]>,
// and down [E, H, I] with H the input width), but the pattern never checks
// that moe_combine's result type equals the router input's type. Here the
// experts project the 64-wide x to 32 wide (w2 is [32, 128]); the pass
// creates `phimoe.moe ... (tensor<?x64xf32>, ...) -> tensor<?x32xf32>`, which
// fails verification ("'phimoe.moe' op failed to verify that all of {input,
// result} have same type") and phimoe-opt exits with an error. The same
// happens when only the element type differs (an f16 x with f32 expert
// outputs; second case). Expected: no fusion.

phimoe.weight @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.0.w2.weight : tensor<32x128xbf16>
phimoe.weight @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.1.w2.weight : tensor<32x128xbf16>
phimoe.weight @l0.gate.weight : tensor<2x64xbf16>

// CHECK-NOT: stack
// CHECK-LABEL: func.func @moe_output_width_differs
// CHECK-NOT: phimoe.moe {{[a-z]}}
// CHECK: phimoe.moe_combine
// CHECK-NOT: phimoe.moe {{[a-z]}}
func.func @moe_output_width_differs(%x: tensor<?x64xf32>) -> tensor<?x32xf32> {
  %wg = phimoe.weight_ref @l0.gate.weight : tensor<2x64xbf16>
  %ids, %rw = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<2x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %gu0 = phimoe.weight_ref @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
  %a0 = phimoe.gate_up %x, %gu0 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d0 = phimoe.weight_ref @l0.experts.0.w2.weight : tensor<32x128xbf16>
  %e0 = phimoe.linear %a0, %d0 : tensor<?x128xf32>, tensor<32x128xbf16> -> tensor<?x32xf32>
  %gu1 = phimoe.weight_ref @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
  %a1 = phimoe.gate_up %x, %gu1 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d1 = phimoe.weight_ref @l0.experts.1.w2.weight : tensor<32x128xbf16>
  %e1 = phimoe.linear %a1, %d1 : tensor<?x128xf32>, tensor<32x128xbf16> -> tensor<?x32xf32>
  %y = phimoe.moe_combine %ids, %rw, %e0, %e1 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x32xf32>, tensor<?x32xf32> -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

phimoe.weight @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.0.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.1.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.gate.weight : tensor<2x64xbf16>

// CHECK-NOT: stack
// CHECK-LABEL: func.func @moe_output_element_type_differs
// CHECK-NOT: phimoe.moe {{[a-z]}}
// CHECK: phimoe.moe_combine
// CHECK-NOT: phimoe.moe {{[a-z]}}
func.func @moe_output_element_type_differs(%x: tensor<?x64xf16>) -> tensor<?x64xf32> {
  %wg = phimoe.weight_ref @l0.gate.weight : tensor<2x64xbf16>
  %ids, %rw = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf16>, tensor<2x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %gu0 = phimoe.weight_ref @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
  %a0 = phimoe.gate_up %x, %gu0 : tensor<?x64xf16>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d0 = phimoe.weight_ref @l0.experts.0.w2.weight : tensor<64x128xbf16>
  %e0 = phimoe.linear %a0, %d0 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu1 = phimoe.weight_ref @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
  %a1 = phimoe.gate_up %x, %gu1 : tensor<?x64xf16>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d1 = phimoe.weight_ref @l0.experts.1.w2.weight : tensor<64x128xbf16>
  %e1 = phimoe.linear %a1, %d1 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw, %e0, %e1 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// gelu experts must all carry both biases (moe_gelu has no bias-free form): expert 1's fc2
// has none, so nothing fuses.

phimoe.weight @g.gate : tensor<2x64xf32>
phimoe.weight @g.0.fc1.weight : tensor<128x64xf32>
phimoe.weight @g.0.fc1.bias : tensor<128xf32>
phimoe.weight @g.0.fc2.weight : tensor<64x128xf32>
phimoe.weight @g.0.fc2.bias : tensor<64xf32>
phimoe.weight @g.1.fc1.weight : tensor<128x64xf32>
phimoe.weight @g.1.fc1.bias : tensor<128xf32>
phimoe.weight @g.1.fc2.weight : tensor<64x128xf32>

// CHECK-LABEL: func.func @gelu_expert_without_bias
// CHECK-NOT: phimoe.moe_gelu
// CHECK: phimoe.moe_combine
func.func @gelu_expert_without_bias(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wg = phimoe.weight_ref @g.gate : tensor<2x64xf32>
  %ids, %rw = phimoe.router softmax_topk %x, %wg {epsilon = 0.0 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<2x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %a0 = phimoe.weight_ref @g.0.fc1.weight : tensor<128x64xf32>
  %b0 = phimoe.weight_ref @g.0.fc1.bias : tensor<128xf32>
  %f0 = phimoe.linear %x, %a0, %b0 : tensor<?x64xf32>, tensor<128x64xf32>, tensor<128xf32> -> tensor<?x128xf32>
  %g0 = phimoe.gelu %f0 : tensor<?x128xf32>
  %c0 = phimoe.weight_ref @g.0.fc2.weight : tensor<64x128xf32>
  %d0 = phimoe.weight_ref @g.0.fc2.bias : tensor<64xf32>
  %e0 = phimoe.linear %g0, %c0, %d0 : tensor<?x128xf32>, tensor<64x128xf32>, tensor<64xf32> -> tensor<?x64xf32>
  %a1 = phimoe.weight_ref @g.1.fc1.weight : tensor<128x64xf32>
  %b1 = phimoe.weight_ref @g.1.fc1.bias : tensor<128xf32>
  %f1 = phimoe.linear %x, %a1, %b1 : tensor<?x64xf32>, tensor<128x64xf32>, tensor<128xf32> -> tensor<?x128xf32>
  %g1 = phimoe.gelu %f1 : tensor<?x128xf32>
  %c1 = phimoe.weight_ref @g.1.fc2.weight : tensor<64x128xf32>
  %e1 = phimoe.linear %g1, %c1 : tensor<?x128xf32>, tensor<64x128xf32> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw, %e0, %e1 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}
