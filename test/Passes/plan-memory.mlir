// RUN: phimoe-opt %s -split-input-file --phimoe-plan-memory="max-tokens=8 alignment=64" | FileCheck %s

// A chain of linears: each result gets 8 rows of its width; a buffer is reused
// once its value is dead, never while an op still reads it. The residual sum
// of add_layer_norm stays in its lhs's buffer. The returned value has none.

phimoe.weight @a : tensor<16x16xf32>
phimoe.weight @b : tensor<32x16xbf16>
phimoe.weight @unused : tensor<4x4xf32>
phimoe.weight @n : tensor<16xf32>
phimoe.weight @nb : tensor<16xf32>

// CHECK-LABEL: module attributes {phimoe.model_hash = {{-?[0-9]+}} : i64, phimoe.pack_bytes = 2176 : i64}
// CHECK: phimoe.weight @a {phimoe.pack_bytes = 1024 : i64, phimoe.pack_offset = 0 : i64}
// CHECK: phimoe.weight @b {phimoe.pack_bytes = 1024 : i64, phimoe.pack_offset = 1024 : i64}
// CHECK: phimoe.weight @unused : tensor<4x4xf32>
// CHECK: phimoe.weight @n {phimoe.pack_bytes = 64 : i64, phimoe.pack_offset = 2048 : i64}
// CHECK: phimoe.weight @nb {phimoe.pack_bytes = 64 : i64, phimoe.pack_offset = 2112 : i64}
// CHECK-LABEL: func.func @forward
// CHECK-SAME: phimoe.arena_floats = 640 : i64, phimoe.max_tokens = 8 : i64
func.func @forward(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %a = phimoe.weight_ref @a : tensor<16x16xf32>
  %b = phimoe.weight_ref @b : tensor<32x16xbf16>
  %n = phimoe.weight_ref @n : tensor<16xf32>
  %nb = phimoe.weight_ref @nb : tensor<16xf32>
  // CHECK: phimoe.layer_norm {{.*}} {epsilon = {{.*}}, phimoe.arena = array<i64: 0>}
  %h = phimoe.layer_norm %x, %n, %nb {epsilon = 1.0e-05 : f64} : tensor<?x16xf32>, tensor<16xf32>
  // CHECK: phimoe.linear {{.*}} {phimoe.arena = array<i64: 128>}
  %y = phimoe.linear %h, %a : tensor<?x16xf32>, tensor<16x16xf32> -> tensor<?x16xf32>
  // %h is still read below: the 32-wide result cannot take its buffer.
  // CHECK: phimoe.linear {{.*}} {phimoe.arena = array<i64: 256>}
  %z = phimoe.linear %y, %b : tensor<?x16xf32>, tensor<32x16xbf16> -> tensor<?x32xf32>
  // CHECK: phimoe.split {{.*}} {phimoe.arena = array<i64: 128, 512>}
  %s:2 = phimoe.split %z [16, 16] : tensor<?x32xf32> -> tensor<?x16xf32>, tensor<?x16xf32>
  // CHECK: phimoe.add_layer_norm {{.*}} {epsilon = {{.*}}, phimoe.arena = array<i64: 0, 256>}
  %sum, %norm = phimoe.add_layer_norm %h, %s#0, %n, %nb {epsilon = 1.0e-05 : f64} : tensor<?x16xf32>, tensor<16xf32>
  %w = phimoe.linear %norm, %a : tensor<?x16xf32>, tensor<16x16xf32> -> tensor<?x16xf32>
  %r = phimoe.add %w, %sum : tensor<?x16xf32>
  %u = phimoe.add %r, %s#1 : tensor<?x16xf32>
  // CHECK: phimoe.add {{.*}} {phimoe.arena = array<i64: -1>}
  // CHECK-NEXT: return
  return %u : tensor<?x16xf32>
}

// -----

// A q4k row of 256 is one 144-byte block.
// CHECK-LABEL: module
// CHECK: phimoe.weight @q {phimoe.pack_bytes = 1152 : i64, phimoe.pack_offset = 0 : i64} : !phimoe.qweight<q4k, [8, 256]>
phimoe.weight @q : !phimoe.qweight<q4k, [8, 256]>
func.func @forward(%x: tensor<?x256xf32>) -> tensor<?x8xf32> {
  %q = phimoe.weight_ref @q : !phimoe.qweight<q4k, [8, 256]>
  %y = phimoe.linear %x, %q : tensor<?x256xf32>, !phimoe.qweight<q4k, [8, 256]> -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}
