// RUN: phimoe-opt %s | FileCheck %s
// CHECK: phimoe.split
#r = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.2431631, long_mscale = 1.2431631, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.5, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]>
module {
  phimoe.weight @a : tensor<64x64xf32>
  phimoe.weight @b : tensor<32x64xf32>
  phimoe.weight @ab = concat [@a, @b] : !phimoe.qweight<q8_0, [96, 64]>
  func.func @f(%x: tensor<?x64xf32>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32> {
    %w = phimoe.weight_ref @ab : !phimoe.qweight<q8_0, [96, 64]>
    %y = phimoe.linear %x, %w : tensor<?x64xf32>, !phimoe.qweight<q8_0, [96, 64]> -> tensor<?x96xf32>
    %q, %k, %v = phimoe.split %y [64, 16, 16] : tensor<?x96xf32> -> tensor<?x64xf32>, tensor<?x16xf32>, tensor<?x16xf32>
    %qr = phimoe.rope %q, %pos {head_dim = 16 : i64, scaling = #r} : tensor<?x64xf32>, tensor<?xi32>
    %kk = phimoe.linear %x, %w : tensor<?x64xf32>, !phimoe.qweight<q8_0, [96, 64]> -> tensor<?x96xf32>
    %x2w = phimoe.weight_ref @a : tensor<64x64xf32>
    %ids, %rw = phimoe.router sparsemixer %x, %x2w {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<64x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    return %qr : tensor<?x64xf32>
  }
}
