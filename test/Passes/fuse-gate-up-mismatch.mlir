// Cases where fuse-gate-up must not produce IR that fails to verify (found by
// writing fuse-gate-up.mlir).
// fixed.
// RUN: phimoe-opt %s -split-input-file --phimoe-fuse-gate-up | FileCheck %s

// Regression (FuseGateUp.cpp, FuseGateUpPattern::matchAndRewrite; WeightUtils.cpp,
// deriveWeight): as in phimoe-fuse-qkv, nothing checks that w1 and w3 have
// the same number of columns. With an input of dynamic width, w1 [128, 64]
// and w3 [128, 32] both verify; the pass declares
// `@e0.gate_up.weight = concat [@e0.w1.weight, @e0.w3.weight] :
// tensor<256x64xbf16>`, which fails the phimoe.weight verifier ("part
// @e0.w3.weight has shape [128, 32], which cannot be concated with [128, 64]")
// and phimoe-opt exits with an error. Expected: no fusion.

phimoe.weight @e0.w1.weight : tensor<128x64xbf16>
phimoe.weight @e0.w3.weight : tensor<128x32xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @gate_up_dynamic_width_columns_differ
// CHECK-NOT: phimoe.gate_up
// CHECK: phimoe.silu
// CHECK: phimoe.mul
// CHECK-NOT: phimoe.gate_up
func.func @gate_up_dynamic_width_columns_differ(%x: tensor<?x?xf32>) -> tensor<?x128xf32> {
  %w1 = phimoe.weight_ref @e0.w1.weight : tensor<128x64xbf16>
  %w3 = phimoe.weight_ref @e0.w3.weight : tensor<128x32xbf16>
  %g = phimoe.linear %x, %w1 : tensor<?x?xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3 : tensor<?x?xf32>, tensor<128x32xbf16> -> tensor<?x128xf32>
  %s = phimoe.silu %g : tensor<?x128xf32>
  %a = phimoe.mul %s, %u : tensor<?x128xf32>
  return %a : tensor<?x128xf32>
}

// -----

// w1 and w3 in different formats (a GGUF's Q4_1 and Q5_1 experts, declared as q4k and q6k)
// become one weight in the more precise format: both parts take it, and so does every
// reference to them.

phimoe.weight @e1.w1.weight : !phimoe.qweight<q4k, [128, 256]>
phimoe.weight @e1.w3.weight : !phimoe.qweight<q6k, [128, 256]>

// CHECK: phimoe.weight @e1.w1.weight : !phimoe.qweight<q6k, [128, 256]>
// CHECK: phimoe.weight @e1.w3.weight : !phimoe.qweight<q6k, [128, 256]>
// CHECK: phimoe.weight [[W:@[a-z0-9_.]+]] = concat [@e1.w1.weight, @e1.w3.weight] : !phimoe.qweight<q6k, [256, 256]>
// CHECK-LABEL: func.func @gate_up_formats_differ
// CHECK: phimoe.gate_up %{{.*}}, %{{.*}} : tensor<?x256xf32>, !phimoe.qweight<q6k, [256, 256]>
// CHECK: phimoe.weight_ref @e1.w1.weight : !phimoe.qweight<q6k, [128, 256]>
func.func @gate_up_formats_differ(%x: tensor<?x256xf32>) -> (tensor<?x128xf32>, tensor<?x128xf32>) {
  %w1 = phimoe.weight_ref @e1.w1.weight : !phimoe.qweight<q4k, [128, 256]>
  %w3 = phimoe.weight_ref @e1.w3.weight : !phimoe.qweight<q6k, [128, 256]>
  %g = phimoe.linear %x, %w1 : tensor<?x256xf32>, !phimoe.qweight<q4k, [128, 256]> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3 : tensor<?x256xf32>, !phimoe.qweight<q6k, [128, 256]> -> tensor<?x128xf32>
  %s = phimoe.silu %g : tensor<?x128xf32>
  %a = phimoe.mul %s, %u : tensor<?x128xf32>
  // Another reference to w1 takes its new type too.
  %w1b = phimoe.weight_ref @e1.w1.weight : !phimoe.qweight<q4k, [128, 256]>
  %o = phimoe.linear %x, %w1b : tensor<?x256xf32>, !phimoe.qweight<q4k, [128, 256]> -> tensor<?x128xf32>
  return %a, %o : tensor<?x128xf32>, tensor<?x128xf32>
}
