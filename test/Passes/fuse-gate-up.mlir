// RUN: phimoe-opt %s -split-input-file --phimoe-fuse-gate-up | FileCheck %s

// silu(linear(x, w1)) * linear(x, w3) becomes gate_up(x, concat [@w1, @w3]);
// the expert's down projection reads the gate_up result.

phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w1.weight : tensor<128x64xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<64x128xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w3.weight : tensor<128x64xbf16>

// CHECK: phimoe.weight [[W:@[a-z0-9_.]+]] = concat [@model.layers.0.block_sparse_moe.experts.0.w1.weight, @model.layers.0.block_sparse_moe.experts.0.w3.weight] : tensor<256x64xbf16>
// CHECK-LABEL: func.func @gate_up
// CHECK-SAME: ([[X:%.+]]: tensor<?x64xf32>)
// CHECK-DAG: [[W2:%.+]] = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w2.weight
// CHECK-DAG: [[WR:%.+]] = phimoe.weight_ref [[W]] : tensor<256x64xbf16>
// CHECK: [[A:%.+]] = phimoe.gate_up [[X]], [[WR]] : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
// CHECK-NEXT: [[D:%.+]] = phimoe.linear [[A]], [[W2]] :
// CHECK-NEXT: return [[D]]
// CHECK-NOT: phimoe.silu
// CHECK-NOT: phimoe.mul
func.func @gate_up(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %w1 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w1.weight : tensor<128x64xbf16>
  %w3 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w3.weight : tensor<128x64xbf16>
  %w2 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<64x128xbf16>
  %g = phimoe.linear %x, %w1 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %s = phimoe.silu %g : tensor<?x128xf32>
  %a = phimoe.mul %s, %u : tensor<?x128xf32>
  %d = phimoe.linear %a, %w2 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  return %d : tensor<?x64xf32>
}

// -----

// mul is commutative: the SiLU on the right-hand side fuses the same way,
// gate (w1) rows first.

phimoe.weight @l0.e0.w1.weight : tensor<128x64xf32>
phimoe.weight @l0.e0.w3.weight : tensor<128x64xf32>

// CHECK: phimoe.weight [[W:@[a-z0-9_.]+]] = concat [@l0.e0.w1.weight, @l0.e0.w3.weight] : tensor<256x64xf32>
// CHECK-LABEL: func.func @gate_up_silu_rhs
// CHECK-SAME: ([[X:%.+]]: tensor<?x64xf32>)
// CHECK: [[WR:%.+]] = phimoe.weight_ref [[W]]
// CHECK-NEXT: [[A:%.+]] = phimoe.gate_up [[X]], [[WR]] : tensor<?x64xf32>, tensor<256x64xf32> -> tensor<?x128xf32>
// CHECK-NEXT: return [[A]]
func.func @gate_up_silu_rhs(%x: tensor<?x64xf32>) -> tensor<?x128xf32> {
  %w1 = phimoe.weight_ref @l0.e0.w1.weight : tensor<128x64xf32>
  %w3 = phimoe.weight_ref @l0.e0.w3.weight : tensor<128x64xf32>
  %g = phimoe.linear %x, %w1 : tensor<?x64xf32>, tensor<128x64xf32> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3 : tensor<?x64xf32>, tensor<128x64xf32> -> tensor<?x128xf32>
  %s = phimoe.silu %g : tensor<?x128xf32>
  %a = phimoe.mul %u, %s : tensor<?x128xf32>
  return %a : tensor<?x128xf32>
}

// -----

// The SiLU decides which projection is the gate, not the symbol names:
// silu(x·w3ᵀ) * (x·w1ᵀ) is gate_up over concat [@w3, @w1] (the SiLU'd rows
// first), which computes the same thing.

phimoe.weight @l0.e0.w1.weight : tensor<128x64xbf16>
phimoe.weight @l0.e0.w3.weight : tensor<128x64xbf16>

// CHECK: phimoe.weight [[W:@[a-z0-9_.]+]] = concat [@l0.e0.w3.weight, @l0.e0.w1.weight] : tensor<256x64xbf16>
// CHECK-LABEL: func.func @gate_up_silu_on_w3
// CHECK-SAME: ([[X:%.+]]: tensor<?x64xf32>)
// CHECK: [[WR:%.+]] = phimoe.weight_ref [[W]]
// CHECK-NEXT: [[A:%.+]] = phimoe.gate_up [[X]], [[WR]]
// CHECK-NEXT: return [[A]]
func.func @gate_up_silu_on_w3(%x: tensor<?x64xf32>) -> tensor<?x128xf32> {
  %w1 = phimoe.weight_ref @l0.e0.w1.weight : tensor<128x64xbf16>
  %w3 = phimoe.weight_ref @l0.e0.w3.weight : tensor<128x64xbf16>
  %g = phimoe.linear %x, %w1 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %s = phimoe.silu %u : tensor<?x128xf32>
  %a = phimoe.mul %g, %s : tensor<?x128xf32>
  return %a : tensor<?x128xf32>
}

// -----

// Quantized experts of one scheme: the derived weight keeps it. Two experts
// get one derived weight each, named after their own prefix.

phimoe.weight @l0.experts.0.w1.weight : !phimoe.qweight<q8_0, [128, 64]>
phimoe.weight @l0.experts.0.w3.weight : !phimoe.qweight<q8_0, [128, 64]>
phimoe.weight @l0.experts.1.w1.weight : !phimoe.qweight<q8_0, [128, 64]>
phimoe.weight @l0.experts.1.w3.weight : !phimoe.qweight<q8_0, [128, 64]>

// CHECK: phimoe.weight @l0.experts.0.gate_up.weight = concat [@l0.experts.0.w1.weight, @l0.experts.0.w3.weight] : !phimoe.qweight<q8_0, [256, 64]>
// CHECK: phimoe.weight @l0.experts.1.gate_up.weight = concat [@l0.experts.1.w1.weight, @l0.experts.1.w3.weight] : !phimoe.qweight<q8_0, [256, 64]>
// CHECK-LABEL: func.func @gate_up_two_experts_quantized
// CHECK-SAME: ([[X:%.+]]: tensor<?x64xf32>)
// CHECK-DAG: [[W0:%.+]] = phimoe.weight_ref @l0.experts.0.gate_up.weight : !phimoe.qweight<q8_0, [256, 64]>
// CHECK-DAG: [[W1:%.+]] = phimoe.weight_ref @l0.experts.1.gate_up.weight : !phimoe.qweight<q8_0, [256, 64]>
// CHECK-DAG: [[A0:%.+]] = phimoe.gate_up [[X]], [[W0]] :
// CHECK-DAG: [[A1:%.+]] = phimoe.gate_up [[X]], [[W1]] :
// CHECK: return [[A0]], [[A1]]
func.func @gate_up_two_experts_quantized(%x: tensor<?x64xf32>) -> (tensor<?x128xf32>, tensor<?x128xf32>) {
  %w1a = phimoe.weight_ref @l0.experts.0.w1.weight : !phimoe.qweight<q8_0, [128, 64]>
  %w3a = phimoe.weight_ref @l0.experts.0.w3.weight : !phimoe.qweight<q8_0, [128, 64]>
  %ga = phimoe.linear %x, %w1a : tensor<?x64xf32>, !phimoe.qweight<q8_0, [128, 64]> -> tensor<?x128xf32>
  %ua = phimoe.linear %x, %w3a : tensor<?x64xf32>, !phimoe.qweight<q8_0, [128, 64]> -> tensor<?x128xf32>
  %sa = phimoe.silu %ga : tensor<?x128xf32>
  %aa = phimoe.mul %sa, %ua : tensor<?x128xf32>
  %w1b = phimoe.weight_ref @l0.experts.1.w1.weight : !phimoe.qweight<q8_0, [128, 64]>
  %w3b = phimoe.weight_ref @l0.experts.1.w3.weight : !phimoe.qweight<q8_0, [128, 64]>
  %gb = phimoe.linear %x, %w1b : tensor<?x64xf32>, !phimoe.qweight<q8_0, [128, 64]> -> tensor<?x128xf32>
  %ub = phimoe.linear %x, %w3b : tensor<?x64xf32>, !phimoe.qweight<q8_0, [128, 64]> -> tensor<?x128xf32>
  %sb = phimoe.silu %gb : tensor<?x128xf32>
  %ab = phimoe.mul %ub, %sb : tensor<?x128xf32>
  return %aa, %ab : tensor<?x128xf32>, tensor<?x128xf32>
}

// -----

// Negative: gate and up read different inputs.

phimoe.weight @l0.e0.w1.weight : tensor<128x64xbf16>
phimoe.weight @l0.e0.w3.weight : tensor<128x64xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @gate_up_different_inputs
// CHECK-SAME: ([[X:%.+]]: tensor<?x64xf32>, [[Y:%.+]]: tensor<?x64xf32>)
// CHECK-NOT: phimoe.gate_up
// CHECK: [[G:%.+]] = phimoe.linear [[X]],
// CHECK: [[U:%.+]] = phimoe.linear [[Y]],
// CHECK: [[S:%.+]] = phimoe.silu [[G]]
// CHECK: phimoe.mul [[S]], [[U]]
// CHECK-NOT: phimoe.gate_up
func.func @gate_up_different_inputs(%x: tensor<?x64xf32>, %y: tensor<?x64xf32>) -> tensor<?x128xf32> {
  %w1 = phimoe.weight_ref @l0.e0.w1.weight : tensor<128x64xbf16>
  %w3 = phimoe.weight_ref @l0.e0.w3.weight : tensor<128x64xbf16>
  %g = phimoe.linear %x, %w1 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %u = phimoe.linear %y, %w3 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %s = phimoe.silu %g : tensor<?x128xf32>
  %a = phimoe.mul %s, %u : tensor<?x128xf32>
  return %a : tensor<?x128xf32>
}

// -----

// Negative: the up projection has a bias (gate_up has none).

phimoe.weight @l0.e0.w1.weight : tensor<128x64xbf16>
phimoe.weight @l0.e0.w3.weight : tensor<128x64xbf16>
phimoe.weight @l0.e0.w3.bias : tensor<128xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @gate_up_up_bias
// CHECK-NOT: phimoe.gate_up
// CHECK: phimoe.linear
// CHECK: phimoe.linear {{%.+}}, {{%.+}}, {{%.+}} :
// CHECK: phimoe.silu
// CHECK: phimoe.mul
// CHECK-NOT: phimoe.gate_up
func.func @gate_up_up_bias(%x: tensor<?x64xf32>) -> tensor<?x128xf32> {
  %w1 = phimoe.weight_ref @l0.e0.w1.weight : tensor<128x64xbf16>
  %w3 = phimoe.weight_ref @l0.e0.w3.weight : tensor<128x64xbf16>
  %b3 = phimoe.weight_ref @l0.e0.w3.bias : tensor<128xbf16>
  %g = phimoe.linear %x, %w1 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3, %b3 : tensor<?x64xf32>, tensor<128x64xbf16>, tensor<128xbf16> -> tensor<?x128xf32>
  %s = phimoe.silu %g : tensor<?x128xf32>
  %a = phimoe.mul %s, %u : tensor<?x128xf32>
  return %a : tensor<?x128xf32>
}

// -----

// Negative: the gate projection has a bias.

phimoe.weight @l0.e0.w1.weight : tensor<128x64xbf16>
phimoe.weight @l0.e0.w1.bias : tensor<128xbf16>
phimoe.weight @l0.e0.w3.weight : tensor<128x64xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @gate_up_gate_bias
// CHECK-NOT: phimoe.gate_up
// CHECK: phimoe.linear {{%.+}}, {{%.+}}, {{%.+}} :
// CHECK: phimoe.silu
// CHECK: phimoe.mul
// CHECK-NOT: phimoe.gate_up
func.func @gate_up_gate_bias(%x: tensor<?x64xf32>) -> tensor<?x128xf32> {
  %w1 = phimoe.weight_ref @l0.e0.w1.weight : tensor<128x64xbf16>
  %b1 = phimoe.weight_ref @l0.e0.w1.bias : tensor<128xbf16>
  %w3 = phimoe.weight_ref @l0.e0.w3.weight : tensor<128x64xbf16>
  %g = phimoe.linear %x, %w1, %b1 : tensor<?x64xf32>, tensor<128x64xbf16>, tensor<128xbf16> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %s = phimoe.silu %g : tensor<?x128xf32>
  %a = phimoe.mul %s, %u : tensor<?x128xf32>
  return %a : tensor<?x128xf32>
}

// -----

// Negative: no SiLU on either side.

phimoe.weight @l0.e0.w1.weight : tensor<128x64xbf16>
phimoe.weight @l0.e0.w3.weight : tensor<128x64xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @gate_up_no_silu
// CHECK-NOT: phimoe.gate_up
// CHECK: [[G:%.+]] = phimoe.linear
// CHECK: [[U:%.+]] = phimoe.linear
// CHECK: phimoe.mul [[G]], [[U]]
// CHECK-NOT: phimoe.gate_up
func.func @gate_up_no_silu(%x: tensor<?x64xf32>) -> tensor<?x128xf32> {
  %w1 = phimoe.weight_ref @l0.e0.w1.weight : tensor<128x64xbf16>
  %w3 = phimoe.weight_ref @l0.e0.w3.weight : tensor<128x64xbf16>
  %g = phimoe.linear %x, %w1 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %a = phimoe.mul %g, %u : tensor<?x128xf32>
  return %a : tensor<?x128xf32>
}

// -----

// Negative: a SiLU on both sides is not gate·up.

phimoe.weight @l0.e0.w1.weight : tensor<128x64xbf16>
phimoe.weight @l0.e0.w3.weight : tensor<128x64xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @gate_up_silu_both
// CHECK-NOT: phimoe.gate_up
// CHECK-COUNT-2: phimoe.silu
// CHECK: phimoe.mul
// CHECK-NOT: phimoe.gate_up
func.func @gate_up_silu_both(%x: tensor<?x64xf32>) -> tensor<?x128xf32> {
  %w1 = phimoe.weight_ref @l0.e0.w1.weight : tensor<128x64xbf16>
  %w3 = phimoe.weight_ref @l0.e0.w3.weight : tensor<128x64xbf16>
  %g = phimoe.linear %x, %w1 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %sg = phimoe.silu %g : tensor<?x128xf32>
  %su = phimoe.silu %u : tensor<?x128xf32>
  %a = phimoe.mul %sg, %su : tensor<?x128xf32>
  return %a : tensor<?x128xf32>
}

// -----

// Negative: the SiLU is applied after the product.

phimoe.weight @l0.e0.w1.weight : tensor<128x64xbf16>
phimoe.weight @l0.e0.w3.weight : tensor<128x64xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @gate_up_silu_after_mul
// CHECK-NOT: phimoe.gate_up
// CHECK: phimoe.mul
// CHECK: phimoe.silu
// CHECK-NOT: phimoe.gate_up
func.func @gate_up_silu_after_mul(%x: tensor<?x64xf32>) -> tensor<?x128xf32> {
  %w1 = phimoe.weight_ref @l0.e0.w1.weight : tensor<128x64xbf16>
  %w3 = phimoe.weight_ref @l0.e0.w3.weight : tensor<128x64xbf16>
  %g = phimoe.linear %x, %w1 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %a = phimoe.mul %g, %u : tensor<?x128xf32>
  %s = phimoe.silu %a : tensor<?x128xf32>
  return %s : tensor<?x128xf32>
}

// -----

// Formats that differ: w1 in bf16, w3 in f32. Both take the more precise f32 (the packer
// converts), and fuse.

phimoe.weight @l0.e0.w1.weight : tensor<128x64xbf16>
phimoe.weight @l0.e0.w3.weight : tensor<128x64xf32>

// CHECK: phimoe.weight @l0.e0.w1.weight : tensor<128x64xf32>
// CHECK: phimoe.weight @l0.e0.w3.weight : tensor<128x64xf32>
// CHECK: concat [@l0.e0.w1.weight, @l0.e0.w3.weight] : tensor<256x64xf32>
// CHECK-LABEL: func.func @gate_up_formats_differ
// CHECK: phimoe.gate_up
// CHECK-NOT: phimoe.silu
func.func @gate_up_formats_differ(%x: tensor<?x64xf32>) -> tensor<?x128xf32> {
  %w1 = phimoe.weight_ref @l0.e0.w1.weight : tensor<128x64xbf16>
  %w3 = phimoe.weight_ref @l0.e0.w3.weight : tensor<128x64xf32>
  %g = phimoe.linear %x, %w1 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3 : tensor<?x64xf32>, tensor<128x64xf32> -> tensor<?x128xf32>
  %s = phimoe.silu %g : tensor<?x128xf32>
  %a = phimoe.mul %s, %u : tensor<?x128xf32>
  return %a : tensor<?x128xf32>
}

// -----

// Two quantization schemes: both take the more precise q8_0. f16 and bf16 (neither holds
// the other) both become f32.

phimoe.weight @l0.e0.w1.weight : !phimoe.qweight<q8_0, [128, 64]>
phimoe.weight @l0.e0.w3.weight : !phimoe.qweight<q4_0, [128, 64]>
phimoe.weight @l0.e1.w1.weight : tensor<128x64xf16>
phimoe.weight @l0.e1.w3.weight : tensor<128x64xbf16>

// CHECK: phimoe.weight @l0.e0.w3.weight : !phimoe.qweight<q8_0, [128, 64]>
// CHECK: concat [@l0.e0.w1.weight, @l0.e0.w3.weight] : !phimoe.qweight<q8_0, [256, 64]>
// CHECK: phimoe.weight @l0.e1.w1.weight : tensor<128x64xf32>
// CHECK: phimoe.weight @l0.e1.w3.weight : tensor<128x64xf32>
// CHECK: concat [@l0.e1.w1.weight, @l0.e1.w3.weight] : tensor<256x64xf32>
// CHECK-LABEL: func.func @gate_up_schemes_differ
// CHECK-COUNT-2: phimoe.gate_up
// CHECK-NOT: phimoe.mul
func.func @gate_up_schemes_differ(%x: tensor<?x64xf32>) -> (tensor<?x128xf32>, tensor<?x128xf32>) {
  %w1 = phimoe.weight_ref @l0.e0.w1.weight : !phimoe.qweight<q8_0, [128, 64]>
  %w3 = phimoe.weight_ref @l0.e0.w3.weight : !phimoe.qweight<q4_0, [128, 64]>
  %g = phimoe.linear %x, %w1 : tensor<?x64xf32>, !phimoe.qweight<q8_0, [128, 64]> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3 : tensor<?x64xf32>, !phimoe.qweight<q4_0, [128, 64]> -> tensor<?x128xf32>
  %s = phimoe.silu %g : tensor<?x128xf32>
  %a = phimoe.mul %s, %u : tensor<?x128xf32>
  %v1 = phimoe.weight_ref @l0.e1.w1.weight : tensor<128x64xf16>
  %v3 = phimoe.weight_ref @l0.e1.w3.weight : tensor<128x64xbf16>
  %g1 = phimoe.linear %x, %v1 : tensor<?x64xf32>, tensor<128x64xf16> -> tensor<?x128xf32>
  %u1 = phimoe.linear %x, %v3 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %s1 = phimoe.silu %g1 : tensor<?x128xf32>
  %a1 = phimoe.mul %s1, %u1 : tensor<?x128xf32>
  return %a, %a1 : tensor<?x128xf32>, tensor<?x128xf32>
}

// -----

// Negative: the gate projection (before the SiLU) has another user, so it
// cannot disappear into gate_up.

phimoe.weight @l0.e0.w1.weight : tensor<128x64xbf16>
phimoe.weight @l0.e0.w3.weight : tensor<128x64xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @gate_up_gate_reused
// CHECK-NOT: phimoe.gate_up
// CHECK: [[G:%.+]] = phimoe.linear
// CHECK: phimoe.mul
// CHECK: return {{%.+}}, [[G]]
func.func @gate_up_gate_reused(%x: tensor<?x64xf32>) -> (tensor<?x128xf32>, tensor<?x128xf32>) {
  %w1 = phimoe.weight_ref @l0.e0.w1.weight : tensor<128x64xbf16>
  %w3 = phimoe.weight_ref @l0.e0.w3.weight : tensor<128x64xbf16>
  %g = phimoe.linear %x, %w1 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %s = phimoe.silu %g : tensor<?x128xf32>
  %a = phimoe.mul %s, %u : tensor<?x128xf32>
  return %a, %g : tensor<?x128xf32>, tensor<?x128xf32>
}

// -----

// Negative: the SiLU has another user.

phimoe.weight @l0.e0.w1.weight : tensor<128x64xbf16>
phimoe.weight @l0.e0.w3.weight : tensor<128x64xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @gate_up_silu_reused
// CHECK-NOT: phimoe.gate_up
// CHECK: [[S:%.+]] = phimoe.silu
// CHECK: phimoe.mul
// CHECK: return {{%.+}}, [[S]]
func.func @gate_up_silu_reused(%x: tensor<?x64xf32>) -> (tensor<?x128xf32>, tensor<?x128xf32>) {
  %w1 = phimoe.weight_ref @l0.e0.w1.weight : tensor<128x64xbf16>
  %w3 = phimoe.weight_ref @l0.e0.w3.weight : tensor<128x64xbf16>
  %g = phimoe.linear %x, %w1 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %s = phimoe.silu %g : tensor<?x128xf32>
  %a = phimoe.mul %s, %u : tensor<?x128xf32>
  return %a, %s : tensor<?x128xf32>, tensor<?x128xf32>
}

// -----

// Negative: the up projection has another user.

phimoe.weight @l0.e0.w1.weight : tensor<128x64xbf16>
phimoe.weight @l0.e0.w3.weight : tensor<128x64xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @gate_up_up_reused
// CHECK-NOT: phimoe.gate_up
// CHECK: phimoe.linear
// CHECK: [[U:%.+]] = phimoe.linear
// CHECK: phimoe.mul
// CHECK: return {{%.+}}, [[U]]
func.func @gate_up_up_reused(%x: tensor<?x64xf32>) -> (tensor<?x128xf32>, tensor<?x128xf32>) {
  %w1 = phimoe.weight_ref @l0.e0.w1.weight : tensor<128x64xbf16>
  %w3 = phimoe.weight_ref @l0.e0.w3.weight : tensor<128x64xbf16>
  %g = phimoe.linear %x, %w1 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %s = phimoe.silu %g : tensor<?x128xf32>
  %a = phimoe.mul %s, %u : tensor<?x128xf32>
  return %a, %u : tensor<?x128xf32>, tensor<?x128xf32>
}

// -----

// Negative: w3 is a function argument, not a weight symbol.

phimoe.weight @l0.e0.w1.weight : tensor<128x64xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @gate_up_weight_not_symbol
// CHECK-NOT: phimoe.gate_up
// CHECK: phimoe.mul
// CHECK-NOT: phimoe.gate_up
func.func @gate_up_weight_not_symbol(%x: tensor<?x64xf32>, %w3: tensor<128x64xbf16>) -> tensor<?x128xf32> {
  %w1 = phimoe.weight_ref @l0.e0.w1.weight : tensor<128x64xbf16>
  %g = phimoe.linear %x, %w1 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %u = phimoe.linear %x, %w3 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %s = phimoe.silu %g : tensor<?x128xf32>
  %a = phimoe.mul %s, %u : tensor<?x128xf32>
  return %a : tensor<?x128xf32>
}
