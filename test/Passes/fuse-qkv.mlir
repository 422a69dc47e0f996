// RUN: phimoe-opt %s -split-input-file --phimoe-fuse-qkv | FileCheck %s

// q and k through a rope, v straight into the attention, all three biased and
// in bf16: one linear over `concat [@q, @k, @v]` (in that order) and the
// concatenated bias, reading the same x, then a split whose results replace
// q, k and v.

#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]>
phimoe.weight @model.layers.0.self_attn.q_proj.weight : tensor<64x64xbf16>
phimoe.weight @model.layers.0.self_attn.k_proj.weight : tensor<32x64xbf16>
phimoe.weight @model.layers.0.self_attn.v_proj.weight : tensor<32x64xbf16>
phimoe.weight @model.layers.0.self_attn.q_proj.bias : tensor<64xbf16>
phimoe.weight @model.layers.0.self_attn.k_proj.bias : tensor<32xbf16>
phimoe.weight @model.layers.0.self_attn.v_proj.bias : tensor<32xbf16>

// CHECK: phimoe.weight [[W:@[a-z0-9_.]+]] = concat [@model.layers.0.self_attn.q_proj.weight, @model.layers.0.self_attn.k_proj.weight, @model.layers.0.self_attn.v_proj.weight] : tensor<128x64xbf16>
// CHECK: phimoe.weight [[B:@[a-z0-9_.]+]] = concat [@model.layers.0.self_attn.q_proj.bias, @model.layers.0.self_attn.k_proj.bias, @model.layers.0.self_attn.v_proj.bias] : tensor<128xbf16>
// CHECK-LABEL: func.func @qkv_bias_rope
// CHECK-SAME: ([[X:%.+]]: tensor<?x64xf32>, [[POS:%.+]]: tensor<?xi32>, [[CACHE:%.+]]: !phimoe.kv_cache
// CHECK-DAG: [[WR:%.+]] = phimoe.weight_ref [[W]] : tensor<128x64xbf16>
// CHECK-DAG: [[BR:%.+]] = phimoe.weight_ref [[B]] : tensor<128xbf16>
// CHECK: [[QKV:%.+]] = phimoe.linear [[X]], [[WR]], [[BR]] : tensor<?x64xf32>, tensor<128x64xbf16>, tensor<128xbf16> -> tensor<?x128xf32>
// CHECK-NOT: phimoe.linear
// CHECK: [[S:%.+]]:3 = phimoe.split [[QKV]] [64, 32, 32] : tensor<?x128xf32> -> tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>
// CHECK-NOT: phimoe.linear
// CHECK: [[QR:%.+]] = phimoe.rope [[S]]#0, [[POS]]
// CHECK: [[KR:%.+]] = phimoe.rope [[S]]#1, [[POS]]
// CHECK: [[A:%.+]] = phimoe.attention [[QR]], [[KR]], [[S]]#2, [[POS]], [[CACHE]]
// CHECK-NOT: phimoe.linear
// CHECK: return [[A]]
func.func @qkv_bias_rope(%x: tensor<?x64xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
  %wq = phimoe.weight_ref @model.layers.0.self_attn.q_proj.weight : tensor<64x64xbf16>
  %bq = phimoe.weight_ref @model.layers.0.self_attn.q_proj.bias : tensor<64xbf16>
  %q = phimoe.linear %x, %wq, %bq : tensor<?x64xf32>, tensor<64x64xbf16>, tensor<64xbf16> -> tensor<?x64xf32>
  %wk = phimoe.weight_ref @model.layers.0.self_attn.k_proj.weight : tensor<32x64xbf16>
  %bk = phimoe.weight_ref @model.layers.0.self_attn.k_proj.bias : tensor<32xbf16>
  %k = phimoe.linear %x, %wk, %bk : tensor<?x64xf32>, tensor<32x64xbf16>, tensor<32xbf16> -> tensor<?x32xf32>
  %wv = phimoe.weight_ref @model.layers.0.self_attn.v_proj.weight : tensor<32x64xbf16>
  %bv = phimoe.weight_ref @model.layers.0.self_attn.v_proj.bias : tensor<32xbf16>
  %v = phimoe.linear %x, %wv, %bv : tensor<?x64xf32>, tensor<32x64xbf16>, tensor<32xbf16> -> tensor<?x32xf32>
  %qr = phimoe.rope %q, %pos {head_dim = 16 : i64, scaling = #rope} : tensor<?x64xf32>, tensor<?xi32>
  %kr = phimoe.rope %k, %pos {head_dim = 16 : i64, scaling = #rope} : tensor<?x32xf32>, tensor<?xi32>
  %a = phimoe.attention %qr, %kr, %v, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a : tensor<?x64xf32>
}

// -----

// Unbiased, already quantized (one scheme), no rope, and the linears written
// v, k, q: the parts are still q, k, v in that order, the fused weight keeps
// the scheme, and no bias appears.

phimoe.weight @l0.q.weight : !phimoe.qweight<q8_0, [64, 64]>
phimoe.weight @l0.k.weight : !phimoe.qweight<q8_0, [32, 64]>
phimoe.weight @l0.v.weight : !phimoe.qweight<q8_0, [32, 64]>

// CHECK: phimoe.weight [[W:@[a-z0-9_.]+]] = concat [@l0.q.weight, @l0.k.weight, @l0.v.weight] : !phimoe.qweight<q8_0, [128, 64]>
// CHECK-NOT: phimoe.weight {{.*}} = concat
// CHECK-LABEL: func.func @qkv_quantized_reordered
// CHECK-SAME: ([[X:%.+]]: tensor<?x64xf32>, [[POS:%.+]]: tensor<?xi32>, [[CACHE:%.+]]: !phimoe.kv_cache
// CHECK: [[WR:%.+]] = phimoe.weight_ref [[W]] : !phimoe.qweight<q8_0, [128, 64]>
// CHECK-NEXT: [[QKV:%.+]] = phimoe.linear [[X]], [[WR]] : tensor<?x64xf32>, !phimoe.qweight<q8_0, [128, 64]> -> tensor<?x128xf32>
// CHECK-NEXT: [[S:%.+]]:3 = phimoe.split [[QKV]] [64, 32, 32]
// CHECK-NOT: phimoe.linear
// CHECK: [[A:%.+]] = phimoe.attention [[S]]#0, [[S]]#1, [[S]]#2, [[POS]], [[CACHE]]
// CHECK: return [[A]]
func.func @qkv_quantized_reordered(%x: tensor<?x64xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
  %wv = phimoe.weight_ref @l0.v.weight : !phimoe.qweight<q8_0, [32, 64]>
  %v = phimoe.linear %x, %wv : tensor<?x64xf32>, !phimoe.qweight<q8_0, [32, 64]> -> tensor<?x32xf32>
  %wk = phimoe.weight_ref @l0.k.weight : !phimoe.qweight<q8_0, [32, 64]>
  %k = phimoe.linear %x, %wk : tensor<?x64xf32>, !phimoe.qweight<q8_0, [32, 64]> -> tensor<?x32xf32>
  %wq = phimoe.weight_ref @l0.q.weight : !phimoe.qweight<q8_0, [64, 64]>
  %q = phimoe.linear %x, %wq : tensor<?x64xf32>, !phimoe.qweight<q8_0, [64, 64]> -> tensor<?x64xf32>
  %a = phimoe.attention %q, %k, %v, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a : tensor<?x64xf32>
}

// -----

// Other users of q, k and v read the split's results too.

phimoe.weight @l0.q.weight : tensor<64x64xf32>
phimoe.weight @l0.k.weight : tensor<32x64xf32>
phimoe.weight @l0.v.weight : tensor<32x64xf32>

// CHECK-LABEL: func.func @qkv_other_users
// CHECK-SAME: ([[X:%.+]]: tensor<?x64xf32>
// CHECK: [[QKV:%.+]] = phimoe.linear [[X]], {{%.+}} : tensor<?x64xf32>, tensor<128x64xf32> -> tensor<?x128xf32>
// CHECK: [[S:%.+]]:3 = phimoe.split [[QKV]] [64, 32, 32]
// CHECK: [[A:%.+]] = phimoe.attention [[S]]#0, [[S]]#1, [[S]]#2,
// CHECK: [[KV:%.+]] = phimoe.add [[S]]#1, [[S]]#2 : tensor<?x32xf32>
// CHECK: return [[A]], [[S]]#0, [[KV]]
func.func @qkv_other_users(%x: tensor<?x64xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x32xf32>) {
  %wq = phimoe.weight_ref @l0.q.weight : tensor<64x64xf32>
  %wk = phimoe.weight_ref @l0.k.weight : tensor<32x64xf32>
  %wv = phimoe.weight_ref @l0.v.weight : tensor<32x64xf32>
  %q = phimoe.linear %x, %wq : tensor<?x64xf32>, tensor<64x64xf32> -> tensor<?x64xf32>
  %k = phimoe.linear %x, %wk : tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x32xf32>
  %v = phimoe.linear %x, %wv : tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x32xf32>
  %a = phimoe.attention %q, %k, %v, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  %kv = phimoe.add %k, %v : tensor<?x32xf32>
  return %a, %q, %kv : tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x32xf32>
}

// -----

// Two attentions over the same q, k, v weights (different inputs): both fuse,
// and they share one derived weight.

phimoe.weight @l0.q.weight : tensor<64x64xbf16>
phimoe.weight @l0.k.weight : tensor<32x64xbf16>
phimoe.weight @l0.v.weight : tensor<32x64xbf16>

// CHECK: phimoe.weight [[W:@[a-z0-9_.]+]] = concat [@l0.q.weight, @l0.k.weight, @l0.v.weight] : tensor<128x64xbf16>
// CHECK-NOT: phimoe.weight
// CHECK-LABEL: func.func @qkv_shared_derivation
// CHECK-SAME: ([[X:%.+]]: tensor<?x64xf32>, [[Y:%.+]]: tensor<?x64xf32>
// CHECK-DAG: [[WX:%.+]] = phimoe.weight_ref [[W]] :
// CHECK-DAG: [[LX:%.+]] = phimoe.linear [[X]], [[WX]] :
// CHECK-DAG: [[SX:%.+]]:3 = phimoe.split [[LX]] [64, 32, 32]
// CHECK-DAG: [[WY:%.+]] = phimoe.weight_ref [[W]] :
// CHECK-DAG: [[LY:%.+]] = phimoe.linear [[Y]], [[WY]] :
// CHECK-DAG: [[SY:%.+]]:3 = phimoe.split [[LY]] [64, 32, 32]
// CHECK-DAG: phimoe.attention [[SX]]#0, [[SX]]#1, [[SX]]#2, {{.*}}layer = 0
// CHECK-DAG: phimoe.attention [[SY]]#0, [[SY]]#1, [[SY]]#2, {{.*}}layer = 1
// CHECK-NOT: phimoe.linear
func.func @qkv_shared_derivation(%x: tensor<?x64xf32>, %y: tensor<?x64xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 16, dtype = f32>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  %wq = phimoe.weight_ref @l0.q.weight : tensor<64x64xbf16>
  %wk = phimoe.weight_ref @l0.k.weight : tensor<32x64xbf16>
  %wv = phimoe.weight_ref @l0.v.weight : tensor<32x64xbf16>
  %q = phimoe.linear %x, %wq : tensor<?x64xf32>, tensor<64x64xbf16> -> tensor<?x64xf32>
  %k = phimoe.linear %x, %wk : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
  %v = phimoe.linear %x, %wv : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
  %a = phimoe.attention %q, %k, %v, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 16, dtype = f32>
  %q2 = phimoe.linear %y, %wq : tensor<?x64xf32>, tensor<64x64xbf16> -> tensor<?x64xf32>
  %k2 = phimoe.linear %y, %wk : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
  %v2 = phimoe.linear %y, %wv : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
  %b = phimoe.attention %q2, %k2, %v2, %pos, %cache {head_dim = 16 : i64, layer = 1 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a, %b : tensor<?x64xf32>, tensor<?x64xf32>
}

// -----

// The natural name of the derived weight is taken: the derived one gets a
// suffix and the existing symbol is left alone.

phimoe.weight @l0.q.weight : tensor<64x64xbf16>
phimoe.weight @l0.k.weight : tensor<32x64xbf16>
phimoe.weight @l0.v.weight : tensor<32x64xbf16>
phimoe.weight @l0.qkv_proj.weight : tensor<128x64xbf16>

// CHECK: phimoe.weight @l0.qkv_proj.weight_1 = concat [@l0.q.weight, @l0.k.weight, @l0.v.weight] : tensor<128x64xbf16>
// CHECK: phimoe.weight @l0.qkv_proj.weight : tensor<128x64xbf16>
// CHECK-LABEL: func.func @qkv_name_taken
// CHECK: [[WR:%.+]] = phimoe.weight_ref @l0.qkv_proj.weight_1 :
// CHECK: phimoe.linear %{{.+}}, [[WR]] :
func.func @qkv_name_taken(%x: tensor<?x64xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
  %wq = phimoe.weight_ref @l0.q.weight : tensor<64x64xbf16>
  %wk = phimoe.weight_ref @l0.k.weight : tensor<32x64xbf16>
  %wv = phimoe.weight_ref @l0.v.weight : tensor<32x64xbf16>
  %q = phimoe.linear %x, %wq : tensor<?x64xf32>, tensor<64x64xbf16> -> tensor<?x64xf32>
  %k = phimoe.linear %x, %wk : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
  %v = phimoe.linear %x, %wv : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
  %a = phimoe.attention %q, %k, %v, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a : tensor<?x64xf32>
}

// -----

// Negative: k reads another input than q and v.

phimoe.weight @l0.q.weight : tensor<64x64xbf16>
phimoe.weight @l0.k.weight : tensor<32x64xbf16>
phimoe.weight @l0.v.weight : tensor<32x64xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @qkv_different_inputs
// CHECK-SAME: ([[X:%.+]]: tensor<?x64xf32>, [[Y:%.+]]: tensor<?x64xf32>
// CHECK-NOT: phimoe.split
// CHECK: [[Q:%.+]] = phimoe.linear [[X]], {{%.+}} : tensor<?x64xf32>, tensor<64x64xbf16>
// CHECK: [[K:%.+]] = phimoe.linear [[Y]], {{%.+}} : tensor<?x64xf32>, tensor<32x64xbf16>
// CHECK: [[V:%.+]] = phimoe.linear [[X]], {{%.+}} : tensor<?x64xf32>, tensor<32x64xbf16>
// CHECK-NOT: phimoe.split
// CHECK: phimoe.attention [[Q]], [[K]], [[V]],
func.func @qkv_different_inputs(%x: tensor<?x64xf32>, %y: tensor<?x64xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
  %wq = phimoe.weight_ref @l0.q.weight : tensor<64x64xbf16>
  %wk = phimoe.weight_ref @l0.k.weight : tensor<32x64xbf16>
  %wv = phimoe.weight_ref @l0.v.weight : tensor<32x64xbf16>
  %q = phimoe.linear %x, %wq : tensor<?x64xf32>, tensor<64x64xbf16> -> tensor<?x64xf32>
  %k = phimoe.linear %y, %wk : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
  %v = phimoe.linear %x, %wv : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
  %a = phimoe.attention %q, %k, %v, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a : tensor<?x64xf32>
}

// -----

// Negative: the weights have different formats (v is f32, q and k bf16).

phimoe.weight @l0.q.weight : tensor<64x64xbf16>
phimoe.weight @l0.k.weight : tensor<32x64xbf16>
phimoe.weight @l0.v.weight : tensor<32x64xf32>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @qkv_float_formats_differ
// CHECK-NOT: phimoe.split
// CHECK-COUNT-3: phimoe.linear
// CHECK-NOT: phimoe.split
func.func @qkv_float_formats_differ(%x: tensor<?x64xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
  %wq = phimoe.weight_ref @l0.q.weight : tensor<64x64xbf16>
  %wk = phimoe.weight_ref @l0.k.weight : tensor<32x64xbf16>
  %wv = phimoe.weight_ref @l0.v.weight : tensor<32x64xf32>
  %q = phimoe.linear %x, %wq : tensor<?x64xf32>, tensor<64x64xbf16> -> tensor<?x64xf32>
  %k = phimoe.linear %x, %wk : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
  %v = phimoe.linear %x, %wv : tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x32xf32>
  %a = phimoe.attention %q, %k, %v, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a : tensor<?x64xf32>
}

// -----

// Negative: two quantization schemes (q8_0 and q4_0).

phimoe.weight @l0.q.weight : !phimoe.qweight<q8_0, [64, 64]>
phimoe.weight @l0.k.weight : !phimoe.qweight<q4_0, [32, 64]>
phimoe.weight @l0.v.weight : !phimoe.qweight<q8_0, [32, 64]>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @qkv_schemes_differ
// CHECK-NOT: phimoe.split
// CHECK-COUNT-3: phimoe.linear
// CHECK-NOT: phimoe.split
func.func @qkv_schemes_differ(%x: tensor<?x64xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
  %wq = phimoe.weight_ref @l0.q.weight : !phimoe.qweight<q8_0, [64, 64]>
  %wk = phimoe.weight_ref @l0.k.weight : !phimoe.qweight<q4_0, [32, 64]>
  %wv = phimoe.weight_ref @l0.v.weight : !phimoe.qweight<q8_0, [32, 64]>
  %q = phimoe.linear %x, %wq : tensor<?x64xf32>, !phimoe.qweight<q8_0, [64, 64]> -> tensor<?x64xf32>
  %k = phimoe.linear %x, %wk : tensor<?x64xf32>, !phimoe.qweight<q4_0, [32, 64]> -> tensor<?x32xf32>
  %v = phimoe.linear %x, %wv : tensor<?x64xf32>, !phimoe.qweight<q8_0, [32, 64]> -> tensor<?x32xf32>
  %a = phimoe.attention %q, %k, %v, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a : tensor<?x64xf32>
}

// -----

// Negative: a float weight and a quantized one.

phimoe.weight @l0.q.weight : tensor<64x64xf32>
phimoe.weight @l0.k.weight : !phimoe.qweight<q8_0, [32, 64]>
phimoe.weight @l0.v.weight : tensor<32x64xf32>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @qkv_float_and_quantized
// CHECK-NOT: phimoe.split
// CHECK-COUNT-3: phimoe.linear
// CHECK-NOT: phimoe.split
func.func @qkv_float_and_quantized(%x: tensor<?x64xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
  %wq = phimoe.weight_ref @l0.q.weight : tensor<64x64xf32>
  %wk = phimoe.weight_ref @l0.k.weight : !phimoe.qweight<q8_0, [32, 64]>
  %wv = phimoe.weight_ref @l0.v.weight : tensor<32x64xf32>
  %q = phimoe.linear %x, %wq : tensor<?x64xf32>, tensor<64x64xf32> -> tensor<?x64xf32>
  %k = phimoe.linear %x, %wk : tensor<?x64xf32>, !phimoe.qweight<q8_0, [32, 64]> -> tensor<?x32xf32>
  %v = phimoe.linear %x, %wv : tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x32xf32>
  %a = phimoe.attention %q, %k, %v, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a : tensor<?x64xf32>
}

// -----

// Negative: only q and k have a bias.

phimoe.weight @l0.q.weight : tensor<64x64xbf16>
phimoe.weight @l0.k.weight : tensor<32x64xbf16>
phimoe.weight @l0.v.weight : tensor<32x64xbf16>
phimoe.weight @l0.q.bias : tensor<64xbf16>
phimoe.weight @l0.k.bias : tensor<32xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @qkv_bias_on_some
// CHECK-NOT: phimoe.split
// CHECK-COUNT-3: phimoe.linear
// CHECK-NOT: phimoe.split
func.func @qkv_bias_on_some(%x: tensor<?x64xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
  %wq = phimoe.weight_ref @l0.q.weight : tensor<64x64xbf16>
  %wk = phimoe.weight_ref @l0.k.weight : tensor<32x64xbf16>
  %wv = phimoe.weight_ref @l0.v.weight : tensor<32x64xbf16>
  %bq = phimoe.weight_ref @l0.q.bias : tensor<64xbf16>
  %bk = phimoe.weight_ref @l0.k.bias : tensor<32xbf16>
  %q = phimoe.linear %x, %wq, %bq : tensor<?x64xf32>, tensor<64x64xbf16>, tensor<64xbf16> -> tensor<?x64xf32>
  %k = phimoe.linear %x, %wk, %bk : tensor<?x64xf32>, tensor<32x64xbf16>, tensor<32xbf16> -> tensor<?x32xf32>
  %v = phimoe.linear %x, %wv : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
  %a = phimoe.attention %q, %k, %v, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a : tensor<?x64xf32>
}

// -----

// Negative: all three biased, but the biases differ in format.

phimoe.weight @l0.q.weight : tensor<64x64xbf16>
phimoe.weight @l0.k.weight : tensor<32x64xbf16>
phimoe.weight @l0.v.weight : tensor<32x64xbf16>
phimoe.weight @l0.q.bias : tensor<64xbf16>
phimoe.weight @l0.k.bias : tensor<32xf32>
phimoe.weight @l0.v.bias : tensor<32xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @qkv_bias_formats_differ
// CHECK-NOT: phimoe.split
// CHECK-COUNT-3: phimoe.linear
// CHECK-NOT: phimoe.split
func.func @qkv_bias_formats_differ(%x: tensor<?x64xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
  %wq = phimoe.weight_ref @l0.q.weight : tensor<64x64xbf16>
  %wk = phimoe.weight_ref @l0.k.weight : tensor<32x64xbf16>
  %wv = phimoe.weight_ref @l0.v.weight : tensor<32x64xbf16>
  %bq = phimoe.weight_ref @l0.q.bias : tensor<64xbf16>
  %bk = phimoe.weight_ref @l0.k.bias : tensor<32xf32>
  %bv = phimoe.weight_ref @l0.v.bias : tensor<32xbf16>
  %q = phimoe.linear %x, %wq, %bq : tensor<?x64xf32>, tensor<64x64xbf16>, tensor<64xbf16> -> tensor<?x64xf32>
  %k = phimoe.linear %x, %wk, %bk : tensor<?x64xf32>, tensor<32x64xbf16>, tensor<32xf32> -> tensor<?x32xf32>
  %v = phimoe.linear %x, %wv, %bv : tensor<?x64xf32>, tensor<32x64xbf16>, tensor<32xbf16> -> tensor<?x32xf32>
  %a = phimoe.attention %q, %k, %v, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a : tensor<?x64xf32>
}

// -----

// Negative: v's weight is a function argument, not a weight symbol.

phimoe.weight @l0.q.weight : tensor<64x64xbf16>
phimoe.weight @l0.k.weight : tensor<32x64xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @qkv_weight_not_symbol
// CHECK-NOT: phimoe.split
// CHECK-COUNT-3: phimoe.linear
// CHECK-NOT: phimoe.split
func.func @qkv_weight_not_symbol(%x: tensor<?x64xf32>, %wv: tensor<32x64xbf16>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
  %wq = phimoe.weight_ref @l0.q.weight : tensor<64x64xbf16>
  %wk = phimoe.weight_ref @l0.k.weight : tensor<32x64xbf16>
  %q = phimoe.linear %x, %wq : tensor<?x64xf32>, tensor<64x64xbf16> -> tensor<?x64xf32>
  %k = phimoe.linear %x, %wk : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
  %v = phimoe.linear %x, %wv : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
  %a = phimoe.attention %q, %k, %v, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a : tensor<?x64xf32>
}

// -----

// Negative: k and v are one linear (a single projection read twice), so
// there are not three projections to fuse.

phimoe.weight @l0.q.weight : tensor<64x64xbf16>
phimoe.weight @l0.kv.weight : tensor<32x64xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @qkv_shared_linear
// CHECK-NOT: phimoe.split
// CHECK: phimoe.linear
// CHECK: [[KV:%.+]] = phimoe.linear
// CHECK-NOT: phimoe.split
// CHECK: phimoe.attention {{%.+}}, [[KV]], [[KV]],
func.func @qkv_shared_linear(%x: tensor<?x64xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
  %wq = phimoe.weight_ref @l0.q.weight : tensor<64x64xbf16>
  %wkv = phimoe.weight_ref @l0.kv.weight : tensor<32x64xbf16>
  %q = phimoe.linear %x, %wq : tensor<?x64xf32>, tensor<64x64xbf16> -> tensor<?x64xf32>
  %kv = phimoe.linear %x, %wkv : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
  %a = phimoe.attention %q, %kv, %kv, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a : tensor<?x64xf32>
}

// -----

// Negative: v is not a linear.

phimoe.weight @l0.q.weight : tensor<64x64xbf16>
phimoe.weight @l0.k.weight : tensor<32x64xbf16>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @qkv_v_not_linear
// CHECK-NOT: phimoe.split
// CHECK-COUNT-2: phimoe.linear
// CHECK-NOT: phimoe.split
func.func @qkv_v_not_linear(%x: tensor<?x64xf32>, %v: tensor<?x32xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
  %wq = phimoe.weight_ref @l0.q.weight : tensor<64x64xbf16>
  %wk = phimoe.weight_ref @l0.k.weight : tensor<32x64xbf16>
  %q = phimoe.linear %x, %wq : tensor<?x64xf32>, tensor<64x64xbf16> -> tensor<?x64xf32>
  %k = phimoe.linear %x, %wk : tensor<?x64xf32>, tensor<32x64xbf16> -> tensor<?x32xf32>
  %a = phimoe.attention %q, %k, %v, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a : tensor<?x64xf32>
}
