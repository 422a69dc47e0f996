// RUN: phimoe-opt %s | phimoe-opt | FileCheck %s
// RUN: phimoe-opt %s -mlir-print-op-generic | phimoe-opt | FileCheck %s

// Round trip of every phimoe op, type and attribute, through the custom and
// the generic form. Shapes are those of a tiny PhiMoE: hidden 64, 4 query
// heads and 2 kv heads of 16, 4 experts of intermediate size 128, vocabulary
// 320. The k-quants need rows that are multiples of 256, hence the `wide`
// weights.

// The LongRoPE attribute is printed once, under the alias `#rope` (and
// `#rope1` for a second, distinct one), whatever it was called in the input.
// The second one checks that the float printer keeps every value (exponents,
// the shortest float32 spelling of factors) through a round trip.
// CHECK: #rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.2431631, long_mscale = 1.2431631, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.5, 2.0, 1.0, 1.0, 1.25, 1.0, 1.0, 3.0]>
// CHECK-NEXT: #rope1 = #phimoe.longrope<theta = 1.0e+06, original_max_position = 4096, short_mscale = 0.1, long_mscale = 1.0e-07, short_factor = [1.0e+20, 3.0e-05], long_factor = [0.33333334, 1.1754944e-38]>
// CHECK-NOT: #phimoe.longrope
// CHECK-LABEL: module
#longrope_params = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.2431631, long_mscale = 1.2431631, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.5, 2.0, 1.0, 1.0, 1.25, 1.0, 1.0, 3.0]>

//===----------------------------------------------------------------------===//
// phimoe.weight: checkpoint tensors, and concat / stack recipes
//===----------------------------------------------------------------------===//

// CHECK-NEXT: phimoe.weight @model.embed_tokens.weight : tensor<320x64xbf16>
// CHECK-NEXT: phimoe.weight @model.norm.weight : tensor<64xbf16>
// CHECK-NEXT: phimoe.weight @model.norm.bias : tensor<64xbf16>
// CHECK-NEXT: phimoe.weight @lm_head.weight : tensor<320x64xbf16>
// CHECK-NEXT: phimoe.weight @lm_head.bias : tensor<320xbf16>
// CHECK-NEXT: phimoe.weight @q_proj.weight : tensor<64x64xbf16>
// CHECK-NEXT: phimoe.weight @k_proj.weight : tensor<32x64xbf16>
// CHECK-NEXT: phimoe.weight @v_proj.weight : tensor<32x64xbf16>
// CHECK-NEXT: phimoe.weight @q_proj.bias : tensor<64xbf16>
// CHECK-NEXT: phimoe.weight @k_proj.bias : tensor<32xbf16>
// CHECK-NEXT: phimoe.weight @v_proj.bias : tensor<32xbf16>
phimoe.weight @model.embed_tokens.weight : tensor<320x64xbf16>
phimoe.weight @model.norm.weight : tensor<64xbf16>
phimoe.weight @model.norm.bias : tensor<64xbf16>
phimoe.weight @lm_head.weight : tensor<320x64xbf16>
phimoe.weight @lm_head.bias : tensor<320xbf16>
phimoe.weight @q_proj.weight : tensor<64x64xbf16>
phimoe.weight @k_proj.weight : tensor<32x64xbf16>
phimoe.weight @v_proj.weight : tensor<32x64xbf16>
phimoe.weight @q_proj.bias : tensor<64xbf16>
phimoe.weight @k_proj.bias : tensor<32xbf16>
phimoe.weight @v_proj.bias : tensor<32xbf16>

// A concat whose result is quantized, and a concat of 1-D biases converted to f32.
// CHECK-NEXT: phimoe.weight @qkv.weight = concat [@q_proj.weight, @k_proj.weight, @v_proj.weight] : !phimoe.qweight<q8_0, [128, 64]>
// CHECK-NEXT: phimoe.weight @qkv.bias = concat [@q_proj.bias, @k_proj.bias, @v_proj.bias] : tensor<128xf32>
phimoe.weight @qkv.weight = concat [@q_proj.weight, @k_proj.weight, @v_proj.weight] : !phimoe.qweight<q8_0, [128, 64]>
phimoe.weight @qkv.bias = concat [@q_proj.bias, @k_proj.bias, @v_proj.bias] : tensor<128xf32>

// CHECK-NEXT: phimoe.weight @router.weight : tensor<4x64xbf16>
phimoe.weight @router.weight : tensor<4x64xbf16>
phimoe.weight @e0.w1 : tensor<128x64xbf16>
phimoe.weight @e0.w3 : tensor<128x64xbf16>
phimoe.weight @e0.w2 : tensor<64x128xbf16>
phimoe.weight @e1.w1 : tensor<128x64xbf16>
phimoe.weight @e1.w3 : tensor<128x64xbf16>
phimoe.weight @e1.w2 : tensor<64x128xbf16>
phimoe.weight @e2.w1 : tensor<128x64xbf16>
phimoe.weight @e2.w3 : tensor<128x64xbf16>
phimoe.weight @e2.w2 : tensor<64x128xbf16>
phimoe.weight @e3.w1 : tensor<128x64xbf16>
phimoe.weight @e3.w3 : tensor<128x64xbf16>
phimoe.weight @e3.w2 : tensor<64x128xbf16>

// Derived from derived weights: per-expert [w1; w3], then all experts stacked.
// CHECK: phimoe.weight @e0.w13 = concat [@e0.w1, @e0.w3] : tensor<256x64xbf16>
// CHECK-NEXT: phimoe.weight @e1.w13 = concat [@e1.w1, @e1.w3] : tensor<256x64xbf16>
// CHECK-NEXT: phimoe.weight @e2.w13 = concat [@e2.w1, @e2.w3] : tensor<256x64xbf16>
// CHECK-NEXT: phimoe.weight @e3.w13 = concat [@e3.w1, @e3.w3] : tensor<256x64xbf16>
// CHECK-NEXT: phimoe.weight @experts.gate_up = stack [@e0.w13, @e1.w13, @e2.w13, @e3.w13] : !phimoe.qweight<q8_0, [4, 256, 64]>
// CHECK-NEXT: phimoe.weight @experts.down = stack [@e0.w2, @e1.w2, @e2.w2, @e3.w2] : !phimoe.qweight<q4_0, [4, 64, 128]>
phimoe.weight @e0.w13 = concat [@e0.w1, @e0.w3] : tensor<256x64xbf16>
phimoe.weight @e1.w13 = concat [@e1.w1, @e1.w3] : tensor<256x64xbf16>
phimoe.weight @e2.w13 = concat [@e2.w1, @e2.w3] : tensor<256x64xbf16>
phimoe.weight @e3.w13 = concat [@e3.w1, @e3.w3] : tensor<256x64xbf16>
phimoe.weight @experts.gate_up = stack [@e0.w13, @e1.w13, @e2.w13, @e3.w13] : !phimoe.qweight<q8_0, [4, 256, 64]>
phimoe.weight @experts.down = stack [@e0.w2, @e1.w2, @e2.w2, @e3.w2] : !phimoe.qweight<q4_0, [4, 64, 128]>

// Every quantization scheme.
// CHECK-NEXT: phimoe.weight @wide.q8_0 : !phimoe.qweight<q8_0, [64, 256]>
// CHECK-NEXT: phimoe.weight @wide.q4_0 : !phimoe.qweight<q4_0, [64, 256]>
// CHECK-NEXT: phimoe.weight @wide.q4k : !phimoe.qweight<q4k, [64, 256]>
// CHECK-NEXT: phimoe.weight @wide.q5k : !phimoe.qweight<q5k, [64, 512]>
// CHECK-NEXT: phimoe.weight @wide.q6k : !phimoe.qweight<q6k, [64, 256]>
phimoe.weight @wide.q8_0 : !phimoe.qweight<q8_0, [64, 256]>
phimoe.weight @wide.q4_0 : !phimoe.qweight<q4_0, [64, 256]>
phimoe.weight @wide.q4k : !phimoe.qweight<q4k, [64, 256]>
phimoe.weight @wide.q5k : !phimoe.qweight<q5k, [64, 512]>
phimoe.weight @wide.q6k : !phimoe.qweight<q6k, [64, 256]>

//===----------------------------------------------------------------------===//
// embed, layer_norm, add_layer_norm
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @embed_norm
// CHECK-SAME: ([[IDS:%[a-z0-9_]+]]: tensor<?xi32>, [[R:%[a-z0-9_]+]]: tensor<?x64xf32>)
// CHECK: [[TABLE:%[a-z0-9_]+]] = phimoe.weight_ref @model.embed_tokens.weight : tensor<320x64xbf16>
// CHECK: [[H:%[a-z0-9_]+]] = phimoe.embed [[IDS]], [[TABLE]] : tensor<?xi32>, tensor<320x64xbf16> -> tensor<?x64xf32>
// CHECK: [[W:%[a-z0-9_]+]] = phimoe.weight_ref @model.norm.weight : tensor<64xbf16>
// CHECK: [[B:%[a-z0-9_]+]] = phimoe.weight_ref @model.norm.bias : tensor<64xbf16>
// CHECK: [[N:%[a-z0-9_]+]] = phimoe.layer_norm [[H]], [[W]], [[B]] {epsilon = 1.000000e-05 : f64} : tensor<?x64xf32>, tensor<64xbf16>
// CHECK: [[SUM:%[a-z0-9_]+]], [[Y:%[a-z0-9_]+]] = phimoe.add_layer_norm [[N]], [[R]], [[W]], [[B]] {epsilon = 1.000000e-05 : f64} : tensor<?x64xf32>, tensor<64xbf16>
// CHECK: return [[SUM]], [[Y]] : tensor<?x64xf32>, tensor<?x64xf32>
func.func @embed_norm(%ids: tensor<?xi32>, %r: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  %table = phimoe.weight_ref @model.embed_tokens.weight : tensor<320x64xbf16>
  %h = phimoe.embed %ids, %table : tensor<?xi32>, tensor<320x64xbf16> -> tensor<?x64xf32>
  %w = phimoe.weight_ref @model.norm.weight : tensor<64xbf16>
  %b = phimoe.weight_ref @model.norm.bias : tensor<64xbf16>
  %n = phimoe.layer_norm %h, %w, %b {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xbf16>
  %s, %y = phimoe.add_layer_norm %n, %r, %w, %b {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xbf16>
  return %s, %y : tensor<?x64xf32>, tensor<?x64xf32>
}

// RMSNorms (Mixtral): the `rms` unit attribute and no bias.
// CHECK-LABEL: func.func @rms_norm
// CHECK-SAME: ([[X:%[a-z0-9_]+]]: tensor<?x64xf32>, [[R:%[a-z0-9_]+]]: tensor<?x64xf32>, [[W:%[a-z0-9_]+]]: tensor<64xf32>)
// CHECK: [[N:%[a-z0-9_]+]] = phimoe.layer_norm [[X]], [[W]] {epsilon = 1.000000e-05 : f64, rms} : tensor<?x64xf32>, tensor<64xf32>
// CHECK: [[SUM:%[a-z0-9_]+]], [[Y:%[a-z0-9_]+]] = phimoe.add_layer_norm [[N]], [[R]], [[W]] {epsilon = 2.000000e-05 : f64, rms} : tensor<?x64xf32>, tensor<64xf32>
func.func @rms_norm(%x: tensor<?x64xf32>, %r: tensor<?x64xf32>, %w: tensor<64xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  %n = phimoe.layer_norm %x, %w {epsilon = 1.0e-05 : f64, rms} : tensor<?x64xf32>, tensor<64xf32>
  %s, %y = phimoe.add_layer_norm %n, %r, %w {epsilon = 2.0e-05 : f64, rms} : tensor<?x64xf32>, tensor<64xf32>
  return %s, %y : tensor<?x64xf32>, tensor<?x64xf32>
}

// An embedding table may be quantized, and the ids may be i64.
// CHECK-LABEL: func.func @embed_quantized
// CHECK-SAME: ([[IDS:%[a-z0-9_]+]]: tensor<?xi64>, [[T:%[a-z0-9_]+]]: !phimoe.qweight<q6k, [320, 256]>)
// CHECK: [[E:%[a-z0-9_]+]] = phimoe.embed [[IDS]], [[T]] : tensor<?xi64>, !phimoe.qweight<q6k, [320, 256]> -> tensor<?x256xf32>
// CHECK: return [[E]]
func.func @embed_quantized(%ids: tensor<?xi64>, %t: !phimoe.qweight<q6k, [320, 256]>) -> tensor<?x256xf32> {
  %e = phimoe.embed %ids, %t : tensor<?xi64>, !phimoe.qweight<q6k, [320, 256]> -> tensor<?x256xf32>
  return %e : tensor<?x256xf32>
}

//===----------------------------------------------------------------------===//
// add, mul, silu
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @elementwise
// CHECK-SAME: ([[X:%[a-z0-9_]+]]: tensor<?x64xf32>, [[Y:%[a-z0-9_]+]]: tensor<?x64xf32>, [[Z:%[a-z0-9_]+]]: tensor<?x128xbf16>)
// CHECK: [[A:%[a-z0-9_]+]] = phimoe.add [[X]], [[Y]] : tensor<?x64xf32>
// CHECK: [[M:%[a-z0-9_]+]] = phimoe.mul [[A]], [[X]] : tensor<?x64xf32>
// CHECK: [[S:%[a-z0-9_]+]] = phimoe.silu [[Z]] : tensor<?x128xbf16>
// CHECK: return [[M]], [[S]] : tensor<?x64xf32>, tensor<?x128xbf16>
func.func @elementwise(%x: tensor<?x64xf32>, %y: tensor<?x64xf32>, %z: tensor<?x128xbf16>) -> (tensor<?x64xf32>, tensor<?x128xbf16>) {
  %a = phimoe.add %x, %y : tensor<?x64xf32>
  %m = phimoe.mul %a, %x : tensor<?x64xf32>
  %s = phimoe.silu %z : tensor<?x128xbf16>
  return %m, %s : tensor<?x64xf32>, tensor<?x128xbf16>
}

//===----------------------------------------------------------------------===//
// linear
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @linear
// CHECK-SAME: ([[X:%[a-z0-9_]+]]: tensor<?x64xf32>, [[W:%[a-z0-9_]+]]: tensor<32x64xf32>, [[B:%[a-z0-9_]+]]: tensor<32xf32>, [[X256:%[a-z0-9_]+]]: tensor<?x256xf32>)
// CHECK: [[L0:%[a-z0-9_]+]] = phimoe.linear [[X]], [[W]] : tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x32xf32>
// CHECK: [[L1:%[a-z0-9_]+]] = phimoe.linear [[X]], [[W]], [[B]] : tensor<?x64xf32>, tensor<32x64xf32>, tensor<32xf32> -> tensor<?x32xf32>
// CHECK: [[QW:%[a-z0-9_]+]] = phimoe.weight_ref @qkv.weight : !phimoe.qweight<q8_0, [128, 64]>
// CHECK: [[QB:%[a-z0-9_]+]] = phimoe.weight_ref @qkv.bias : tensor<128xf32>
// CHECK: [[L2:%[a-z0-9_]+]] = phimoe.linear [[X]], [[QW]], [[QB]] : tensor<?x64xf32>, !phimoe.qweight<q8_0, [128, 64]>, tensor<128xf32> -> tensor<?x128xf32>
// CHECK: [[KW:%[a-z0-9_]+]] = phimoe.weight_ref @wide.q4k : !phimoe.qweight<q4k, [64, 256]>
// CHECK: [[L3:%[a-z0-9_]+]] = phimoe.linear [[X256]], [[KW]] : tensor<?x256xf32>, !phimoe.qweight<q4k, [64, 256]> -> tensor<?x64xf32>
// CHECK: return [[L0]], [[L1]], [[L2]], [[L3]] :
func.func @linear(%x: tensor<?x64xf32>, %w: tensor<32x64xf32>, %b: tensor<32xf32>, %x256: tensor<?x256xf32>) -> (tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x128xf32>, tensor<?x64xf32>) {
  %0 = phimoe.linear %x, %w : tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x32xf32>
  %1 = phimoe.linear %x, %w, %b : tensor<?x64xf32>, tensor<32x64xf32>, tensor<32xf32> -> tensor<?x32xf32>
  %qw = phimoe.weight_ref @qkv.weight : !phimoe.qweight<q8_0, [128, 64]>
  %qb = phimoe.weight_ref @qkv.bias : tensor<128xf32>
  %2 = phimoe.linear %x, %qw, %qb : tensor<?x64xf32>, !phimoe.qweight<q8_0, [128, 64]>, tensor<128xf32> -> tensor<?x128xf32>
  %kw = phimoe.weight_ref @wide.q4k : !phimoe.qweight<q4k, [64, 256]>
  %3 = phimoe.linear %x256, %kw : tensor<?x256xf32>, !phimoe.qweight<q4k, [64, 256]> -> tensor<?x64xf32>
  return %0, %1, %2, %3 : tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x128xf32>, tensor<?x64xf32>
}

// !phimoe.qweight of every scheme, as block arguments and linear weights.
// CHECK-LABEL: func.func @qweight_types
// CHECK-SAME: ([[X256:%[a-z0-9_]+]]: tensor<?x256xf32>, [[X512:%[a-z0-9_]+]]: tensor<?x512xf32>, [[A:%[a-z0-9_]+]]: !phimoe.qweight<q8_0, [64, 256]>, [[B:%[a-z0-9_]+]]: !phimoe.qweight<q4_0, [64, 256]>, [[C:%[a-z0-9_]+]]: !phimoe.qweight<q4k, [64, 256]>, [[D:%[a-z0-9_]+]]: !phimoe.qweight<q5k, [64, 512]>, [[E:%[a-z0-9_]+]]: !phimoe.qweight<q6k, [64, 256]>)
// CHECK: [[R0:%[a-z0-9_]+]] = phimoe.linear [[X256]], [[A]] : tensor<?x256xf32>, !phimoe.qweight<q8_0, [64, 256]> -> tensor<?x64xf32>
// CHECK: [[R1:%[a-z0-9_]+]] = phimoe.linear [[X256]], [[B]] : tensor<?x256xf32>, !phimoe.qweight<q4_0, [64, 256]> -> tensor<?x64xf32>
// CHECK: [[R2:%[a-z0-9_]+]] = phimoe.linear [[X256]], [[C]] : tensor<?x256xf32>, !phimoe.qweight<q4k, [64, 256]> -> tensor<?x64xf32>
// CHECK: [[R3:%[a-z0-9_]+]] = phimoe.linear [[X512]], [[D]] : tensor<?x512xf32>, !phimoe.qweight<q5k, [64, 512]> -> tensor<?x64xf32>
// CHECK: [[R4:%[a-z0-9_]+]] = phimoe.linear [[X256]], [[E]] : tensor<?x256xf32>, !phimoe.qweight<q6k, [64, 256]> -> tensor<?x64xf32>
// CHECK: return [[R0]], [[R1]], [[R2]], [[R3]], [[R4]] :
func.func @qweight_types(%x256: tensor<?x256xf32>, %x512: tensor<?x512xf32>, %a: !phimoe.qweight<q8_0, [64, 256]>, %b: !phimoe.qweight<q4_0, [64, 256]>, %c: !phimoe.qweight<q4k, [64, 256]>, %d: !phimoe.qweight<q5k, [64, 512]>, %e: !phimoe.qweight<q6k, [64, 256]>) -> (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>) {
  %0 = phimoe.linear %x256, %a : tensor<?x256xf32>, !phimoe.qweight<q8_0, [64, 256]> -> tensor<?x64xf32>
  %1 = phimoe.linear %x256, %b : tensor<?x256xf32>, !phimoe.qweight<q4_0, [64, 256]> -> tensor<?x64xf32>
  %2 = phimoe.linear %x256, %c : tensor<?x256xf32>, !phimoe.qweight<q4k, [64, 256]> -> tensor<?x64xf32>
  %3 = phimoe.linear %x512, %d : tensor<?x512xf32>, !phimoe.qweight<q5k, [64, 512]> -> tensor<?x64xf32>
  %4 = phimoe.linear %x256, %e : tensor<?x256xf32>, !phimoe.qweight<q6k, [64, 256]> -> tensor<?x64xf32>
  return %0, %1, %2, %3, %4 : tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>
}

// weight_ref of a quantized weight of every scheme.
// CHECK-LABEL: func.func @weight_refs
// CHECK: [[A:%[a-z0-9_]+]] = phimoe.weight_ref @wide.q8_0 : !phimoe.qweight<q8_0, [64, 256]>
// CHECK: [[B:%[a-z0-9_]+]] = phimoe.weight_ref @wide.q4_0 : !phimoe.qweight<q4_0, [64, 256]>
// CHECK: [[C:%[a-z0-9_]+]] = phimoe.weight_ref @wide.q4k : !phimoe.qweight<q4k, [64, 256]>
// CHECK: [[D:%[a-z0-9_]+]] = phimoe.weight_ref @wide.q5k : !phimoe.qweight<q5k, [64, 512]>
// CHECK: [[E:%[a-z0-9_]+]] = phimoe.weight_ref @wide.q6k : !phimoe.qweight<q6k, [64, 256]>
// CHECK: return [[A]], [[B]], [[C]], [[D]], [[E]] :
func.func @weight_refs() -> (!phimoe.qweight<q8_0, [64, 256]>, !phimoe.qweight<q4_0, [64, 256]>, !phimoe.qweight<q4k, [64, 256]>, !phimoe.qweight<q5k, [64, 512]>, !phimoe.qweight<q6k, [64, 256]>) {
  %a = phimoe.weight_ref @wide.q8_0 : !phimoe.qweight<q8_0, [64, 256]>
  %b = phimoe.weight_ref @wide.q4_0 : !phimoe.qweight<q4_0, [64, 256]>
  %c = phimoe.weight_ref @wide.q4k : !phimoe.qweight<q4k, [64, 256]>
  %d = phimoe.weight_ref @wide.q5k : !phimoe.qweight<q5k, [64, 512]>
  %e = phimoe.weight_ref @wide.q6k : !phimoe.qweight<q6k, [64, 256]>
  return %a, %b, %c, %d, %e : !phimoe.qweight<q8_0, [64, 256]>, !phimoe.qweight<q4_0, [64, 256]>, !phimoe.qweight<q4k, [64, 256]>, !phimoe.qweight<q5k, [64, 512]>, !phimoe.qweight<q6k, [64, 256]>
}

//===----------------------------------------------------------------------===//
// split, rope, attention, !phimoe.kv_cache
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @attention
// CHECK-SAME: ([[X:%[a-z0-9_]+]]: tensor<?x64xf32>, [[POS:%[a-z0-9_]+]]: tensor<?xi32>, [[CACHE:%[a-z0-9_]+]]: !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 16, dtype = f32>)
// CHECK: [[W:%[a-z0-9_]+]] = phimoe.weight_ref @qkv.weight
// CHECK: [[B:%[a-z0-9_]+]] = phimoe.weight_ref @qkv.bias
// CHECK: [[QKV:%[a-z0-9_]+]] = phimoe.linear [[X]], [[W]], [[B]] :
// CHECK: [[S:%[a-z0-9_]+]]:3 = phimoe.split [[QKV]] [64, 32, 32] : tensor<?x128xf32> -> tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>
// CHECK: [[QR:%[a-z0-9_]+]] = phimoe.rope [[S]]#0, [[POS]] {head_dim = 16 : i64, scaling = #rope} : tensor<?x64xf32>, tensor<?xi32>
// CHECK: [[KR:%[a-z0-9_]+]] = phimoe.rope [[S]]#1, [[POS]] {head_dim = 16 : i64, scaling = #rope} : tensor<?x32xf32>, tensor<?xi32>
// CHECK: [[A0:%[a-z0-9_]+]] = phimoe.attention [[QR]], [[KR]], [[S]]#2, [[POS]], [[CACHE]] {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 16, dtype = f32>
// CHECK: [[A1:%[a-z0-9_]+]] = phimoe.attention [[A0]], [[KR]], [[S]]#2, [[POS]], [[CACHE]] {head_dim = 16 : i64, layer = 1 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 1.250000e-01 : f64, sliding_window = 2048 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 16, dtype = f32>
// CHECK: return [[A1]] : tensor<?x64xf32>
func.func @attention(%x: tensor<?x64xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
  %w = phimoe.weight_ref @qkv.weight : !phimoe.qweight<q8_0, [128, 64]>
  %b = phimoe.weight_ref @qkv.bias : tensor<128xf32>
  %qkv = phimoe.linear %x, %w, %b : tensor<?x64xf32>, !phimoe.qweight<q8_0, [128, 64]>, tensor<128xf32> -> tensor<?x128xf32>
  %q, %k, %v = phimoe.split %qkv [64, 32, 32] : tensor<?x128xf32> -> tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>
  %qr = phimoe.rope %q, %pos {head_dim = 16 : i64, scaling = #longrope_params} : tensor<?x64xf32>, tensor<?xi32>
  %kr = phimoe.rope %k, %pos {head_dim = 16 : i64, scaling = #longrope_params} : tensor<?x32xf32>, tensor<?xi32>
  %a0 = phimoe.attention %qr, %kr, %v, %pos, %cache {layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 16, dtype = f32>
  %a1 = phimoe.attention %a0, %kr, %v, %pos, %cache {layer = 1 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 1.250000e-01 : f64, sliding_window = 2048 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a1 : tensor<?x64xf32>
}

// Multi-query (one kv head), bf16 activations and cache, i64 positions; the
// LongRoPE attribute written inline is the same attribute, so it prints as #rope.
// CHECK-LABEL: func.func @attention_mqa_bf16
// CHECK-SAME: ([[Q:%[a-z0-9_]+]]: tensor<?x64xbf16>, [[KV:%[a-z0-9_]+]]: tensor<?x16xbf16>, [[POS:%[a-z0-9_]+]]: tensor<?xi64>, [[CACHE:%[a-z0-9_]+]]: !phimoe.kv_cache<layers = 1, kv_heads = 1, head_dim = 16, dtype = bf16>)
// CHECK: [[QR:%[a-z0-9_]+]] = phimoe.rope [[Q]], [[POS]] {head_dim = 16 : i64, scaling = #rope} : tensor<?x64xbf16>, tensor<?xi64>
// CHECK: [[A:%[a-z0-9_]+]] = phimoe.attention [[QR]], [[KV]], [[KV]], [[POS]], [[CACHE]] {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 1 : i64} : tensor<?x64xbf16>, tensor<?x16xbf16>, tensor<?xi64>, !phimoe.kv_cache<layers = 1, kv_heads = 1, head_dim = 16, dtype = bf16>
// CHECK: return [[A]]
func.func @attention_mqa_bf16(%q: tensor<?x64xbf16>, %kv: tensor<?x16xbf16>, %pos: tensor<?xi64>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 1, head_dim = 16, dtype = bf16>) -> tensor<?x64xbf16> {
  %qr = phimoe.rope %q, %pos {head_dim = 16 : i64, scaling = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.2431631, long_mscale = 1.2431631, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.5, 2.0, 1.0, 1.0, 1.25, 1.0, 1.0, 3.0]>} : tensor<?x64xbf16>, tensor<?xi64>
  %a = phimoe.attention %qr, %kv, %kv, %pos, %cache {layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 1 : i64, head_dim = 16 : i64} : tensor<?x64xbf16>, tensor<?x16xbf16>, tensor<?xi64>, !phimoe.kv_cache<layers = 1, kv_heads = 1, head_dim = 16, dtype = bf16>
  return %a : tensor<?x64xbf16>
}

// A second, distinct LongRoPE attribute (head_dim 4: two factors) gets #rope1.
// CHECK-LABEL: func.func @rope_second_alias
// CHECK-SAME: ([[X:%[a-z0-9_]+]]: tensor<?x8xf32>, [[POS:%[a-z0-9_]+]]: tensor<?xi32>)
// CHECK: [[R:%[a-z0-9_]+]] = phimoe.rope [[X]], [[POS]] {head_dim = 4 : i64, scaling = #rope1} : tensor<?x8xf32>, tensor<?xi32>
// CHECK: return [[R]]
func.func @rope_second_alias(%x: tensor<?x8xf32>, %pos: tensor<?xi32>) -> tensor<?x8xf32> {
  %r = phimoe.rope %x, %pos {head_dim = 4 : i64, scaling = #phimoe.longrope<theta = 1.0e6, original_max_position = 4096, short_mscale = 0.1, long_mscale = 1.0e-7, short_factor = [1.0e20, 3.0e-5], long_factor = [0.333333343, 1.17549435e-38]>} : tensor<?x8xf32>, tensor<?xi32>
  return %r : tensor<?x8xf32>
}

// Partial rotary (phi-2): rotary_dim lanes of each head, rotary_dim / 2 factors (#rope1's 2).
// CHECK-LABEL: func.func @rope_partial
// CHECK: phimoe.rope %{{.+}}, %{{.+}} {head_dim = 16 : i64, rotary_dim = 4 : i64, scaling = #rope1} : tensor<?x32xf32>, tensor<?xi32>
func.func @rope_partial(%x: tensor<?x32xf32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
  %r = phimoe.rope %x, %pos {head_dim = 16 : i64, rotary_dim = 4 : i64, scaling = #phimoe.longrope<theta = 1.0e6, original_max_position = 4096, short_mscale = 0.1, long_mscale = 1.0e-7, short_factor = [1.0e20, 3.0e-5], long_factor = [0.333333343, 1.17549435e-38]>} : tensor<?x32xf32>, tensor<?xi32>
  return %r : tensor<?x32xf32>
}

//===----------------------------------------------------------------------===//
// router, gate_up, moe_combine, moe
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @router
// CHECK-SAME: ([[X:%[a-z0-9_]+]]: tensor<?x64xf32>)
// CHECK: [[W:%[a-z0-9_]+]] = phimoe.weight_ref @router.weight : tensor<4x64xbf16>
// CHECK: [[IDS:%[a-z0-9_]+]], [[RW:%[a-z0-9_]+]] = phimoe.router sparsemixer [[X]], [[W]] {epsilon = 1.000000e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK: [[IDS3:%[a-z0-9_]+]], [[RW3:%[a-z0-9_]+]] = phimoe.router softmax_topk [[X]], [[W]] {epsilon = 0.000000e+00 : f64, top_k = 3 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x3xi32>, tensor<?x3xf32>
// CHECK: return [[IDS]], [[RW]], [[IDS3]], [[RW3]] :
func.func @router(%x: tensor<?x64xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x3xi32>, tensor<?x3xf32>) {
  %w = phimoe.weight_ref @router.weight : tensor<4x64xbf16>
  %ids, %rw = phimoe.router sparsemixer %x, %w {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %ids3, %rw3 = phimoe.router softmax_topk %x, %w {epsilon = 0.0 : f64, top_k = 3 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x3xi32>, tensor<?x3xf32>
  return %ids, %rw, %ids3, %rw3 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x3xi32>, tensor<?x3xf32>
}

// The unfused form of a MoE block: router, every expert densely, moe_combine.
// CHECK-LABEL: func.func @experts_unfused
// CHECK-SAME: ([[X:%[a-z0-9_]+]]: tensor<?x64xf32>)
// CHECK: [[WR:%[a-z0-9_]+]] = phimoe.weight_ref @router.weight
// CHECK: [[IDS:%[a-z0-9_]+]], [[RW:%[a-z0-9_]+]] = phimoe.router sparsemixer [[X]], [[WR]]
// CHECK: [[W13:%[a-z0-9_]+]] = phimoe.weight_ref @e0.w13 : tensor<256x64xbf16>
// CHECK: [[W2:%[a-z0-9_]+]] = phimoe.weight_ref @e0.w2 : tensor<64x128xbf16>
// CHECK: [[G0:%[a-z0-9_]+]] = phimoe.gate_up [[X]], [[W13]] : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
// CHECK: [[E0:%[a-z0-9_]+]] = phimoe.linear [[G0]], [[W2]] : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
// CHECK: [[W13B:%[a-z0-9_]+]] = phimoe.weight_ref @e1.w13 : tensor<256x64xbf16>
// CHECK: [[G1:%[a-z0-9_]+]] = phimoe.gate_up [[X]], [[W13B]] : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
// CHECK: [[E1:%[a-z0-9_]+]] = phimoe.linear [[G1]], [[W2]] :
// CHECK: [[Y:%[a-z0-9_]+]] = phimoe.moe_combine [[IDS]], [[RW]], [[E0]], [[E1]], [[E1]], [[E0]] : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
// CHECK: return [[Y]] : tensor<?x64xf32>
func.func @experts_unfused(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wr = phimoe.weight_ref @router.weight : tensor<4x64xbf16>
  %ids, %rw = phimoe.router sparsemixer %x, %wr {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %w13 = phimoe.weight_ref @e0.w13 : tensor<256x64xbf16>
  %w2 = phimoe.weight_ref @e0.w2 : tensor<64x128xbf16>
  %g0 = phimoe.gate_up %x, %w13 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %e0 = phimoe.linear %g0, %w2 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %w13b = phimoe.weight_ref @e1.w13 : tensor<256x64xbf16>
  %g1 = phimoe.gate_up %x, %w13b : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %e1 = phimoe.linear %g1, %w2 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw, %e0, %e1, %e1, %e0 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// gate_up with a quantized weight.
// CHECK-LABEL: func.func @gate_up_quantized
// CHECK-SAME: ([[X:%[a-z0-9_]+]]: tensor<?x256xf32>, [[W:%[a-z0-9_]+]]: !phimoe.qweight<q5k, [256, 256]>)
// CHECK: [[G:%[a-z0-9_]+]] = phimoe.gate_up [[X]], [[W]] : tensor<?x256xf32>, !phimoe.qweight<q5k, [256, 256]> -> tensor<?x128xf32>
// CHECK: return [[G]]
func.func @gate_up_quantized(%x: tensor<?x256xf32>, %w: !phimoe.qweight<q5k, [256, 256]>) -> tensor<?x128xf32> {
  %g = phimoe.gate_up %x, %w : tensor<?x256xf32>, !phimoe.qweight<q5k, [256, 256]> -> tensor<?x128xf32>
  return %g : tensor<?x128xf32>
}

// The fused MoE block, with stacked quantized expert weights and with float ones.
// CHECK-LABEL: func.func @moe
// CHECK-SAME: ([[X:%[a-z0-9_]+]]: tensor<?x64xf32>, [[GUF:%[a-z0-9_]+]]: tensor<4x256x64xbf16>, [[DF:%[a-z0-9_]+]]: tensor<4x64x128xbf16>)
// CHECK: [[WR:%[a-z0-9_]+]] = phimoe.weight_ref @router.weight : tensor<4x64xbf16>
// CHECK: [[GU:%[a-z0-9_]+]] = phimoe.weight_ref @experts.gate_up : !phimoe.qweight<q8_0, [4, 256, 64]>
// CHECK: [[D:%[a-z0-9_]+]] = phimoe.weight_ref @experts.down : !phimoe.qweight<q4_0, [4, 64, 128]>
// CHECK: [[Y:%[a-z0-9_]+]] = phimoe.moe sparsemixer [[X]], [[WR]], [[GU]], [[D]] {epsilon = 1.000000e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16>, !phimoe.qweight<q8_0, [4, 256, 64]>, !phimoe.qweight<q4_0, [4, 64, 128]>
// CHECK: [[Z:%[a-z0-9_]+]] = phimoe.moe softmax_topk [[Y]], [[WR]], [[GUF]], [[DF]] {epsilon = 0.000000e+00 : f64, top_k = 1 : i64} : tensor<?x64xf32>, tensor<4x64xbf16>, tensor<4x256x64xbf16>, tensor<4x64x128xbf16>
// CHECK: return [[Y]], [[Z]] :
func.func @moe(%x: tensor<?x64xf32>, %gu_f: tensor<4x256x64xbf16>, %down_f: tensor<4x64x128xbf16>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  %wr = phimoe.weight_ref @router.weight : tensor<4x64xbf16>
  %gu = phimoe.weight_ref @experts.gate_up : !phimoe.qweight<q8_0, [4, 256, 64]>
  %down = phimoe.weight_ref @experts.down : !phimoe.qweight<q4_0, [4, 64, 128]>
  %y = phimoe.moe sparsemixer %x, %wr, %gu, %down {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16>, !phimoe.qweight<q8_0, [4, 256, 64]>, !phimoe.qweight<q4_0, [4, 64, 128]>
  %z = phimoe.moe softmax_topk %y, %wr, %gu_f, %down_f {epsilon = 0.0 : f64, top_k = 1 : i64} : tensor<?x64xf32>, tensor<4x64xbf16>, tensor<4x256x64xbf16>, tensor<4x64x128xbf16>
  return %y, %z : tensor<?x64xf32>, tensor<?x64xf32>
}

// phi-2 MLP experts (phixtral): stacked fc1/fc2 and their stacked biases.
// CHECK-LABEL: func.func @moe_gelu
// CHECK: phimoe.moe_gelu softmax_topk %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} {epsilon = 0.000000e+00 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16>, !phimoe.qweight<q8_0, [4, 128, 64]>, tensor<4x128xf32>, tensor<4x64x128xbf16>, tensor<4x64xf16>
// CHECK: phimoe.gelu %{{.+}} : tensor<?x128xf32>
func.func @moe_gelu(%x: tensor<?x64xf32>, %wr: tensor<4x64xbf16>, %fc1: !phimoe.qweight<q8_0, [4, 128, 64]>, %b1: tensor<4x128xf32>, %fc2: tensor<4x64x128xbf16>, %b2: tensor<4x64xf16>, %h: tensor<?x128xf32>) -> (tensor<?x64xf32>, tensor<?x128xf32>) {
  %y = phimoe.moe_gelu softmax_topk %x, %wr, %fc1, %b1, %fc2, %b2 {epsilon = 0.0 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16>, !phimoe.qweight<q8_0, [4, 128, 64]>, tensor<4x128xf32>, tensor<4x64x128xbf16>, tensor<4x64xf16>
  %g = phimoe.gelu %h : tensor<?x128xf32>
  return %y, %g : tensor<?x64xf32>, tensor<?x128xf32>
}

//===----------------------------------------------------------------------===//
// lm_head
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @lm_head
// CHECK-SAME: ([[X:%[a-z0-9_]+]]: tensor<?x64xf32>, [[QW:%[a-z0-9_]+]]: !phimoe.qweight<q8_0, [320, 64]>)
// CHECK: [[W:%[a-z0-9_]+]] = phimoe.weight_ref @lm_head.weight : tensor<320x64xbf16>
// CHECK: [[B:%[a-z0-9_]+]] = phimoe.weight_ref @lm_head.bias : tensor<320xbf16>
// CHECK: [[L0:%[a-z0-9_]+]] = phimoe.lm_head [[X]], [[W]] : tensor<?x64xf32>, tensor<320x64xbf16> -> tensor<?x320xf32>
// CHECK: [[L1:%[a-z0-9_]+]] = phimoe.lm_head [[X]], [[W]], [[B]] : tensor<?x64xf32>, tensor<320x64xbf16>, tensor<320xbf16> -> tensor<?x320xf32>
// CHECK: [[L2:%[a-z0-9_]+]] = phimoe.lm_head [[X]], [[QW]], [[B]] : tensor<?x64xf32>, !phimoe.qweight<q8_0, [320, 64]>, tensor<320xbf16> -> tensor<?x320xf32>
// CHECK: return [[L0]], [[L1]], [[L2]] :
func.func @lm_head(%x: tensor<?x64xf32>, %qw: !phimoe.qweight<q8_0, [320, 64]>) -> (tensor<?x320xf32>, tensor<?x320xf32>, tensor<?x320xf32>) {
  %w = phimoe.weight_ref @lm_head.weight : tensor<320x64xbf16>
  %b = phimoe.weight_ref @lm_head.bias : tensor<320xbf16>
  %0 = phimoe.lm_head %x, %w : tensor<?x64xf32>, tensor<320x64xbf16> -> tensor<?x320xf32>
  %1 = phimoe.lm_head %x, %w, %b : tensor<?x64xf32>, tensor<320x64xbf16>, tensor<320xbf16> -> tensor<?x320xf32>
  %2 = phimoe.lm_head %x, %qw, %b : tensor<?x64xf32>, !phimoe.qweight<q8_0, [320, 64]>, tensor<320xbf16> -> tensor<?x320xf32>
  return %0, %1, %2 : tensor<?x320xf32>, tensor<?x320xf32>, tensor<?x320xf32>
}
