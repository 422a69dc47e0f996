// Cases where fuse-qkv must not produce IR that fails to verify (found by
// writing fuse-qkv.mlir).
// RUN: phimoe-opt %s -split-input-file --phimoe-fuse-qkv | FileCheck %s

// Regression (FuseQKV.cpp, FuseQKVPattern::matchAndRewrite; WeightUtils.cpp,
// deriveWeight/derivedType): the pattern checks only that q, k and v read the
// same value and that the weights share a format, never that their column
// counts agree. With an input of dynamic width the three linears verify with
// weights of different widths ([64, 64], [32, 128], [32, 64]); the pass then
// declares `concat [@q, @k, @v] : tensor<128x64xf32>`, which fails the
// phimoe.weight verifier ("part @l0.k.weight has shape [32, 128], which cannot
// be concated with [64, 64]"), so phimoe-opt exits with an error. Expected:
// no fusion (the same holds for phimoe-fuse-gate-up, which shares
// deriveWeight).

phimoe.weight @l0.q.weight : tensor<64x64xf32>
phimoe.weight @l0.k.weight : tensor<32x128xf32>
phimoe.weight @l0.v.weight : tensor<32x64xf32>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @qkv_dynamic_width_columns_differ
// CHECK-NOT: phimoe.split
// CHECK-COUNT-3: phimoe.linear
// CHECK-NOT: phimoe.split
func.func @qkv_dynamic_width_columns_differ(%x: tensor<?x?xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
  %wq = phimoe.weight_ref @l0.q.weight : tensor<64x64xf32>
  %wk = phimoe.weight_ref @l0.k.weight : tensor<32x128xf32>
  %wv = phimoe.weight_ref @l0.v.weight : tensor<32x64xf32>
  %q = phimoe.linear %x, %wq : tensor<?x?xf32>, tensor<64x64xf32> -> tensor<?x64xf32>
  %k = phimoe.linear %x, %wk : tensor<?x?xf32>, tensor<32x128xf32> -> tensor<?x32xf32>
  %v = phimoe.linear %x, %wv : tensor<?x?xf32>, tensor<32x64xf32> -> tensor<?x32xf32>
  %a = phimoe.attention %q, %k, %v, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a : tensor<?x64xf32>
}

// -----

// Regression (FuseQKV.cpp, FuseQKVPattern::matchAndRewrite): the fused linear takes
// q's element type for all three projections. Here k and v are computed as
// f16 and q as f32; after the pass one f32 linear feeds a phimoe.split whose
// k and v results claim f16 (`phimoe.split %1 [64, 32, 32] : tensor<?x128xf32>
// -> tensor<?x64xf32>, tensor<?x32xf16>, tensor<?x32xf16>`): the split would
// have to convert, which it does not do (and its verifier does not catch).
// Expected: no fusion when the three results' element types differ (and
// arguably phimoe.split's verifier should require the input's element type).

phimoe.weight @l0.q.weight : tensor<64x64xf32>
phimoe.weight @l0.k.weight : tensor<32x64xf32>
phimoe.weight @l0.v.weight : tensor<32x64xf32>

// CHECK-NOT: concat
// CHECK-LABEL: func.func @qkv_result_element_types_differ
// CHECK-NOT: phimoe.split
// CHECK-COUNT-3: phimoe.linear
// CHECK-NOT: phimoe.split
func.func @qkv_result_element_types_differ(%x: tensor<?x64xf32>, %pos: tensor<?xi32>, %cache: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
  %wq = phimoe.weight_ref @l0.q.weight : tensor<64x64xf32>
  %wk = phimoe.weight_ref @l0.k.weight : tensor<32x64xf32>
  %wv = phimoe.weight_ref @l0.v.weight : tensor<32x64xf32>
  %q = phimoe.linear %x, %wq : tensor<?x64xf32>, tensor<64x64xf32> -> tensor<?x64xf32>
  %k = phimoe.linear %x, %wk : tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x32xf16>
  %v = phimoe.linear %x, %wv : tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x32xf16>
  %a = phimoe.attention %q, %k, %v, %pos, %cache {head_dim = 16 : i64, layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : tensor<?x64xf32>, tensor<?x32xf16>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return %a : tensor<?x64xf32>
}
