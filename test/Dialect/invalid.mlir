// RUN: phimoe-opt %s -split-input-file -verify-diagnostics

// One case per diagnostic of the phimoe dialect: the attribute and type
// verifiers (PhiMoEDialect.cpp), the op verifiers and symbol checks
// (PhiMoEOps.cpp), and a few constraints that ODS generates.

//===----------------------------------------------------------------------===//
// #phimoe.longrope
//===----------------------------------------------------------------------===//

// expected-error @+1 {{longrope theta must be positive}}
#r = #phimoe.longrope<theta = 0.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0], long_factor = [1.0]>
func.func private @f() attributes {r = #r}

// -----

// expected-error @+1 {{longrope theta must be positive}}
#r = #phimoe.longrope<theta = -10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0], long_factor = [1.0]>
func.func private @f() attributes {r = #r}

// -----

// expected-error @+1 {{longrope original_max_position must be positive, got 0}}
#r = #phimoe.longrope<theta = 10000.0, original_max_position = 0, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0], long_factor = [1.0]>
func.func private @f() attributes {r = #r}

// -----

// expected-error @+1 {{longrope original_max_position must be positive, got -4096}}
#r = #phimoe.longrope<theta = 10000.0, original_max_position = -4096, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0], long_factor = [1.0]>
func.func private @f() attributes {r = #r}

// -----

// expected-error @+1 {{longrope mscales must be positive}}
#r = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 0.0, long_mscale = 1.0, short_factor = [1.0], long_factor = [1.0]>
func.func private @f() attributes {r = #r}

// -----

// expected-error @+1 {{longrope mscales must be positive}}
#r = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = -1.2431631, short_factor = [1.0], long_factor = [1.0]>
func.func private @f() attributes {r = #r}

// -----

// expected-error @+1 {{longrope factor arrays must not be empty}}
#r = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [], long_factor = []>
func.func private @f() attributes {r = #r}

// -----

// expected-error @+1 {{longrope short_factor has 2 values but long_factor has 3}}
#r = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 1.0], long_factor = [1.0, 1.0, 1.0]>
func.func private @f() attributes {r = #r}

// -----

// A non-empty short_factor with an empty long_factor is a length mismatch.
// expected-error @+1 {{longrope short_factor has 1 values but long_factor has 0}}
#r = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0], long_factor = []>
func.func private @f() attributes {r = #r}

// -----

// expected-error @+1 {{longrope factors must be positive and finite floats, got 0.000000e+00}}
#r = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 0.0], long_factor = [1.0, 1.0]>
func.func private @f() attributes {r = #r}

// -----

// expected-error @+1 {{longrope factors must be positive and finite floats, got -2.500000e+00}}
#r = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 1.0], long_factor = [1.0, -2.5]>
func.func private @f() attributes {r = #r}

// -----

//===----------------------------------------------------------------------===//
// !phimoe.qweight
//===----------------------------------------------------------------------===//

// expected-error @+1 {{qweight dimensions must be static and positive}}
func.func private @f(!phimoe.qweight<q8_0, [0, 32]>)

// -----

// expected-error @+1 {{qweight dimensions must be static and positive}}
func.func private @f(!phimoe.qweight<q4_0, [-1, 32]>)

// -----

// expected-error @+1 {{q8_0 needs the innermost dimension (48) to be a multiple of 32}}
func.func private @f(!phimoe.qweight<q8_0, [64, 48]>)

// -----

// expected-error @+1 {{q4_0 needs the innermost dimension (16) to be a multiple of 32}}
func.func private @f(!phimoe.qweight<q4_0, [64, 16]>)

// -----

// The k-quants use 256-wide super-blocks: a hidden size of 64 is too narrow.
// expected-error @+1 {{q4k needs the innermost dimension (64) to be a multiple of 256}}
func.func private @f(!phimoe.qweight<q4k, [128, 64]>)

// -----

// expected-error @+1 {{q5k needs the innermost dimension (384) to be a multiple of 256}}
func.func private @f(!phimoe.qweight<q5k, [4, 64, 384]>)

// -----

// expected-error @+1 {{q6k needs the innermost dimension (128) to be a multiple of 256}}
func.func private @f(!phimoe.qweight<q6k, [64, 128]>)

// -----

// The leading dimensions need not be multiples of anything, the innermost does.
// expected-error @+1 {{q6k needs the innermost dimension (250) to be a multiple of 256}}
func.func private @f(!phimoe.qweight<q6k, [256, 250]>)

// -----

//===----------------------------------------------------------------------===//
// !phimoe.kv_cache
//===----------------------------------------------------------------------===//

// expected-error @+1 {{kv_cache layers, kv_heads and head_dim must be positive}}
func.func private @f(!phimoe.kv_cache<layers = 0, kv_heads = 2, head_dim = 16, dtype = f32>)

// -----

// expected-error @+1 {{kv_cache layers, kv_heads and head_dim must be positive}}
func.func private @f(!phimoe.kv_cache<layers = 1, kv_heads = -2, head_dim = 16, dtype = f32>)

// -----

// expected-error @+1 {{kv_cache layers, kv_heads and head_dim must be positive}}
func.func private @f(!phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 0, dtype = f32>)

// -----

// expected-error @+1 {{kv_cache dtype must be a float type, got 'i8'}}
func.func private @f(!phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = i8>)

// -----

//===----------------------------------------------------------------------===//
// phimoe.weight
//===----------------------------------------------------------------------===//

phimoe.weight @a : tensor<4x64xf32>
// expected-error @+1 {{'phimoe.weight' op a recipe needs parts and parts need a recipe}}
phimoe.weight @w {parts = [@a]} : tensor<4x64xf32>

// -----

// expected-error @+1 {{'phimoe.weight' op a recipe needs parts and parts need a recipe}}
"phimoe.weight"() <{sym_name = "w", type = tensor<4x64xf32>, recipe = 1 : i32}> : () -> ()

// -----

// expected-error @+1 {{'phimoe.weight' op a derived weight needs at least one part}}
phimoe.weight @w = concat [] : tensor<4x64xf32>

// -----

// expected-error @+1 {{'phimoe.weight' op weight shapes must be static, got 'tensor<?x64xf32>'}}
phimoe.weight @w : tensor<?x64xf32>

// -----

// expected-error @+1 {{'phimoe.weight' op attribute 'type' failed to satisfy constraint: type attribute of a float tensor or a quantized weight}}
phimoe.weight @w : tensor<4x64xi8>

// -----

func.func @f() {
  // expected-error @+1 {{'phimoe.weight' op expects parent op 'builtin.module'}}
  phimoe.weight @w : tensor<4x64xf32>
  return
}

// -----

phimoe.weight @a : tensor<4x64xf32>
// expected-error @+1 {{'phimoe.weight' op weight @w cannot be derived from itself}}
phimoe.weight @w = concat [@a, @w] : tensor<8x64xf32>

// -----

phimoe.weight @a : tensor<4x64xf32>
// expected-error @+1 {{'phimoe.weight' op part @missing does not name a phimoe.weight}}
phimoe.weight @w = concat [@a, @missing] : tensor<8x64xf32>

// -----

func.func private @a()
// expected-error @+1 {{'phimoe.weight' op part @a does not name a phimoe.weight}}
phimoe.weight @w = stack [@a] : tensor<1x4x64xf32>

// -----

// Concat needs every dimension but the first to agree.
phimoe.weight @a : tensor<4x64xf32>
phimoe.weight @b : tensor<4x32xf32>
// expected-error @+1 {{'phimoe.weight' op part @b has shape [4, 32], which cannot be concatenated with [4, 64]}}
phimoe.weight @w = concat [@a, @b] : tensor<8x64xf32>

// -----

phimoe.weight @a : tensor<4x64xf32>
phimoe.weight @b : tensor<64xf32>
// expected-error @+1 {{'phimoe.weight' op part @b has shape [64], which cannot be concatenated with [4, 64]}}
phimoe.weight @w = concat [@a, @b] : tensor<68x64xf32>

// -----

// Stack needs the parts to have one shape.
phimoe.weight @a : tensor<128x64xf32>
phimoe.weight @b : tensor<256x64xf32>
// expected-error @+1 {{'phimoe.weight' op part @b has shape [256, 64], which cannot be stacked with [128, 64]}}
phimoe.weight @w = stack [@a, @b] : tensor<2x128x64xf32>

// -----

phimoe.weight @q : tensor<64x64xbf16>
phimoe.weight @k : tensor<32x64xbf16>
phimoe.weight @v : tensor<32x64xbf16>
// expected-error @+1 {{'phimoe.weight' op its parts make a [128, 64] tensor but its type 'tensor<96x64xbf16>' has shape [96, 64]}}
phimoe.weight @qkv = concat [@q, @k, @v] : tensor<96x64xbf16>

// -----

// The logical shape of a quantized derived weight is checked the same way.
phimoe.weight @q : tensor<64x64xbf16>
phimoe.weight @k : tensor<32x64xbf16>
// expected-error @+1 {{'phimoe.weight' op its parts make a [96, 64] tensor but its type '!phimoe.qweight<q8_0, [96, 32]>' has shape [96, 32]}}
phimoe.weight @qk = concat [@q, @k] : !phimoe.qweight<q8_0, [96, 32]>

// -----

phimoe.weight @e0 : tensor<256x64xbf16>
phimoe.weight @e1 : tensor<256x64xbf16>
// expected-error @+1 {{'phimoe.weight' op its parts make a [2, 256, 64] tensor but its type 'tensor<512x64xbf16>' has shape [512, 64]}}
phimoe.weight @experts = stack [@e0, @e1] : tensor<512x64xbf16>

// -----

//===----------------------------------------------------------------------===//
// phimoe.weight_ref
//===----------------------------------------------------------------------===//

func.func @f() -> tensor<64xf32> {
  // expected-error @+1 {{'phimoe.weight_ref' op @missing does not name a phimoe.weight}}
  %0 = phimoe.weight_ref @missing : tensor<64xf32>
  return %0 : tensor<64xf32>
}

// -----

func.func private @g()
func.func @f() -> tensor<64xf32> {
  // expected-error @+1 {{'phimoe.weight_ref' op @g does not name a phimoe.weight}}
  %0 = phimoe.weight_ref @g : tensor<64xf32>
  return %0 : tensor<64xf32>
}

// -----

phimoe.weight @w : tensor<64x64xbf16>
func.func @f() -> tensor<64x64xf32> {
  // expected-error @+1 {{'phimoe.weight_ref' op result type 'tensor<64x64xf32>' differs from the declared type 'tensor<64x64xbf16>' of @w}}
  %0 = phimoe.weight_ref @w : tensor<64x64xf32>
  return %0 : tensor<64x64xf32>
}

// -----

phimoe.weight @w : !phimoe.qweight<q8_0, [64, 64]>
func.func @f() -> !phimoe.qweight<q4_0, [64, 64]> {
  // expected-error @+1 {{'phimoe.weight_ref' op result type '!phimoe.qweight<q4_0, [64, 64]>' differs from the declared type '!phimoe.qweight<q8_0, [64, 64]>' of @w}}
  %0 = phimoe.weight_ref @w : !phimoe.qweight<q4_0, [64, 64]>
  return %0 : !phimoe.qweight<q4_0, [64, 64]>
}

// -----

//===----------------------------------------------------------------------===//
// phimoe.embed
//===----------------------------------------------------------------------===//

func.func @f(%ids: tensor<?xi32>, %t: tensor<320xf32>) {
  // expected-error @+1 {{'phimoe.embed' op table must have rank 2, got 'tensor<320xf32>'}}
  %0 = phimoe.embed %ids, %t : tensor<?xi32>, tensor<320xf32> -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%ids: tensor<?xi32>, %t: tensor<320x64xf32>) {
  // expected-error @+1 {{'phimoe.embed' op result must have rank 2, got 'tensor<?x1x64xf32>'}}
  %0 = phimoe.embed %ids, %t : tensor<?xi32>, tensor<320x64xf32> -> tensor<?x1x64xf32>
  return
}

// -----

func.func @f(%ids: tensor<5xi32>, %t: tensor<320x64xf32>) {
  // expected-error @+1 {{'phimoe.embed' op result dimension 0 is 4 but the number of ids is 5}}
  %0 = phimoe.embed %ids, %t : tensor<5xi32>, tensor<320x64xf32> -> tensor<4x64xf32>
  return
}

// -----

func.func @f(%ids: tensor<?xi32>, %t: !phimoe.qweight<q8_0, [320, 64]>) {
  // expected-error @+1 {{'phimoe.embed' op result dimension 1 is 32 but the table width is 64}}
  %0 = phimoe.embed %ids, %t : tensor<?xi32>, !phimoe.qweight<q8_0, [320, 64]> -> tensor<?x32xf32>
  return
}

// -----

func.func @f(%ids: tensor<?x1xi32>, %t: tensor<320x64xf32>) {
  // expected-error @+1 {{'phimoe.embed' op operand #0 must be 1D tensor of 32-bit signless integer or 64-bit signless integer values, but got 'tensor<?x1xi32>'}}
  %0 = phimoe.embed %ids, %t : tensor<?x1xi32>, tensor<320x64xf32> -> tensor<?x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// phimoe.layer_norm, phimoe.add_layer_norm
//===----------------------------------------------------------------------===//

func.func @f(%x: tensor<f32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{'phimoe.layer_norm' op input must have rank at least 1}}
  %0 = phimoe.layer_norm %x, %w, %w {epsilon = 1.0e-05 : f64} : tensor<f32>, tensor<64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<1x64xf32>) {
  // expected-error @+1 {{'phimoe.layer_norm' op weight must have rank 1, got 'tensor<1x64xf32>'}}
  %0 = phimoe.layer_norm %x, %w, %w {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<1x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<32xf32>) {
  // expected-error @+1 {{'phimoe.layer_norm' op weight dimension 0 is 32 but the normalized width is 64}}
  %0 = phimoe.layer_norm %x, %w, %w {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<32xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{'phimoe.layer_norm' op epsilon must be positive, got 0.000000e+00}}
  %0 = phimoe.layer_norm %x, %w, %w {epsilon = 0.0 : f64} : tensor<?x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<64xf32>, %b: tensor<64xbf16>) {
  // expected-error @+1 {{'phimoe.layer_norm' op failed to verify that bias has the weight's type}}
  %0 = "phimoe.layer_norm"(%x, %w, %b) {epsilon = 1.0e-05 : f64} : (tensor<?x64xf32>, tensor<64xf32>, tensor<64xbf16>) -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{'phimoe.layer_norm' op an RMSNorm (rms) has no bias}}
  %0 = phimoe.layer_norm %x, %w, %w {epsilon = 1.0e-05 : f64, rms} : tensor<?x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{'phimoe.add_layer_norm' op a LayerNorm needs a bias (or `rms` for an RMSNorm)}}
  %0, %1 = phimoe.add_layer_norm %x, %x, %w {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @f(%x: tensor<f32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{'phimoe.add_layer_norm' op input must have rank at least 1}}
  %0, %1 = phimoe.add_layer_norm %x, %x, %w, %w {epsilon = 1.0e-05 : f64} : tensor<f32>, tensor<64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<64x1xf32>) {
  // expected-error @+1 {{'phimoe.add_layer_norm' op weight must have rank 1, got 'tensor<64x1xf32>'}}
  %0, %1 = phimoe.add_layer_norm %x, %x, %w, %w {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64x1xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<128xf32>) {
  // expected-error @+1 {{'phimoe.add_layer_norm' op weight dimension 0 is 128 but the normalized width is 64}}
  %0, %1 = phimoe.add_layer_norm %x, %x, %w, %w {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<128xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{'phimoe.add_layer_norm' op epsilon must be positive, got -1.000000e-05}}
  %0, %1 = phimoe.add_layer_norm %x, %x, %w, %w {epsilon = -1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// phimoe.add, phimoe.mul, phimoe.silu (ODS constraints only)
//===----------------------------------------------------------------------===//

func.func @f(%x: tensor<?x64xf32>, %y: tensor<?x64xbf16>) {
  // expected-error @+1 {{'phimoe.add' op requires the same type for all operands and results}}
  %0 = "phimoe.add"(%x, %y) : (tensor<?x64xf32>, tensor<?x64xbf16>) -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %y: tensor<?x32xf32>) {
  // expected-error @+1 {{'phimoe.mul' op requires the same type for all operands and results}}
  %0 = "phimoe.mul"(%x, %y) : (tensor<?x64xf32>, tensor<?x32xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xi32>) {
  // expected-error @+1 {{'phimoe.silu' op operand #0 must be ranked tensor of floating-point values, but got 'tensor<?x64xi32>'}}
  %0 = phimoe.silu %x : tensor<?x64xi32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// phimoe.linear, phimoe.lm_head
//===----------------------------------------------------------------------===//

func.func @f(%x: tensor<64xf32>, %w: tensor<32x64xf32>) {
  // expected-error @+1 {{'phimoe.linear' op input must have rank 2, got 'tensor<64xf32>'}}
  %0 = phimoe.linear %x, %w : tensor<64xf32>, tensor<32x64xf32> -> tensor<?x32xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: !phimoe.qweight<q8_0, [2, 32, 64]>) {
  // expected-error @+1 {{'phimoe.linear' op weight must have rank 2, got '!phimoe.qweight<q8_0, [2, 32, 64]>'}}
  %0 = phimoe.linear %x, %w : tensor<?x64xf32>, !phimoe.qweight<q8_0, [2, 32, 64]> -> tensor<?x32xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<32x64xf32>) {
  // expected-error @+1 {{'phimoe.linear' op result must have rank 2, got 'tensor<?x1x32xf32>'}}
  %0 = phimoe.linear %x, %w : tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x1x32xf32>
  return
}

// -----

// The weight is [N, K] as nn.Linear stores it, not [K, N].
func.func @f(%x: tensor<?x64xf32>, %w: tensor<64x32xf32>) {
  // expected-error @+1 {{'phimoe.linear' op weight dimension 1 is 32 but the input width is 64}}
  %0 = phimoe.linear %x, %w : tensor<?x64xf32>, tensor<64x32xf32> -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%x: tensor<8x64xf32>, %w: tensor<32x64xf32>) {
  // expected-error @+1 {{'phimoe.linear' op result dimension 0 is 4 but the input's row count is 8}}
  %0 = phimoe.linear %x, %w : tensor<8x64xf32>, tensor<32x64xf32> -> tensor<4x32xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: !phimoe.qweight<q4_0, [128, 64]>) {
  // expected-error @+1 {{'phimoe.linear' op result dimension 1 is 96 but the weight's row count is 128}}
  %0 = phimoe.linear %x, %w : tensor<?x64xf32>, !phimoe.qweight<q4_0, [128, 64]> -> tensor<?x96xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<32x64xf32>, %b: tensor<1x32xf32>) {
  // expected-error @+1 {{'phimoe.linear' op bias must have rank 1, got 'tensor<1x32xf32>'}}
  %0 = phimoe.linear %x, %w, %b : tensor<?x64xf32>, tensor<32x64xf32>, tensor<1x32xf32> -> tensor<?x32xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<32x64xf32>, %b: tensor<64xf32>) {
  // expected-error @+1 {{'phimoe.linear' op bias dimension 0 is 64 but the weight's row count is 32}}
  %0 = phimoe.linear %x, %w, %b : tensor<?x64xf32>, tensor<32x64xf32>, tensor<64xf32> -> tensor<?x32xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<320x64xf32>, %b: !phimoe.qweight<q8_0, [320]>) {
  // expected-error @+1 {{'phimoe.linear' op operand #2 must be ranked tensor of floating-point values, but got '!phimoe.qweight<q8_0, [320]>'}}
  %0 = "phimoe.linear"(%x, %w, %b) : (tensor<?x64xf32>, tensor<320x64xf32>, !phimoe.qweight<q8_0, [320]>) -> tensor<?x320xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<320xf32>) {
  // expected-error @+1 {{'phimoe.lm_head' op weight must have rank 2, got 'tensor<320xf32>'}}
  %0 = phimoe.lm_head %x, %w : tensor<?x64xf32>, tensor<320xf32> -> tensor<?x320xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: !phimoe.qweight<q8_0, [320, 32]>) {
  // expected-error @+1 {{'phimoe.lm_head' op weight dimension 1 is 32 but the input width is 64}}
  %0 = phimoe.lm_head %x, %w : tensor<?x64xf32>, !phimoe.qweight<q8_0, [320, 32]> -> tensor<?x320xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<320x64xf32>) {
  // expected-error @+1 {{'phimoe.lm_head' op result dimension 1 is 32064 but the weight's row count is 320}}
  %0 = phimoe.lm_head %x, %w : tensor<?x64xf32>, tensor<320x64xf32> -> tensor<?x32064xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<320x64xf32>, %b: tensor<64xf32>) {
  // expected-error @+1 {{'phimoe.lm_head' op bias dimension 0 is 64 but the weight's row count is 320}}
  %0 = phimoe.lm_head %x, %w, %b : tensor<?x64xf32>, tensor<320x64xf32>, tensor<64xf32> -> tensor<?x320xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// phimoe.split
//===----------------------------------------------------------------------===//

func.func @f(%x: tensor<?x128xf32>) {
  // expected-error @+1 {{'phimoe.split' op has 3 sizes but 2 results}}
  %0:2 = phimoe.split %x [64, 32, 32] : tensor<?x128xf32> -> tensor<?x64xf32>, tensor<?x32xf32>
  return
}

// -----

func.func @f(%x: tensor<f32>) {
  // expected-error @+1 {{'phimoe.split' op input must have rank at least 1}}
  %0 = phimoe.split %x [1] : tensor<f32> -> tensor<1xf32>
  return
}

// -----

func.func @f(%x: tensor<?x128xf32>) {
  // expected-error @+1 {{'phimoe.split' op sizes must be positive, got 0}}
  %0:3 = phimoe.split %x [128, 0, 0] : tensor<?x128xf32> -> tensor<?x128xf32>, tensor<?x0xf32>, tensor<?x0xf32>
  return
}

// -----

func.func @f(%x: tensor<?x128xf32>) {
  // expected-error @+1 {{'phimoe.split' op result of size 32 must have shape [?, 32], got 'tensor<?x16xf32>'}}
  %0:3 = phimoe.split %x [64, 32, 32] : tensor<?x128xf32> -> tensor<?x64xf32>, tensor<?x16xf32>, tensor<?x32xf32>
  return
}

// -----

func.func @f(%x: tensor<4x128xf32>) {
  // expected-error @+1 {{'phimoe.split' op result of size 64 must have shape [4, 64], got 'tensor<8x64xf32>'}}
  %0:2 = phimoe.split %x [64, 64] : tensor<4x128xf32> -> tensor<8x64xf32>, tensor<4x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x128xf32>) {
  // expected-error @+1 {{'phimoe.split' op result of size 64 must have shape [?, 64], got 'tensor<64xf32>'}}
  %0:2 = phimoe.split %x [64, 64] : tensor<?x128xf32> -> tensor<64xf32>, tensor<?x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x128xf32>) {
  // expected-error @+1 {{'phimoe.split' op sizes add up to 96 but the input's last dimension is 128}}
  %0:3 = phimoe.split %x [64, 16, 16] : tensor<?x128xf32> -> tensor<?x64xf32>, tensor<?x16xf32>, tensor<?x16xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// phimoe.rope
//===----------------------------------------------------------------------===//

#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]>
func.func @f(%q: tensor<?x64xf32>, %pos: tensor<?xi32>) {
  // expected-error @+1 {{'phimoe.rope' op head_dim must be positive and even, got 15}}
  %0 = phimoe.rope %q, %pos {head_dim = 15 : i64, scaling = #rope} : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]>
func.func @f(%q: tensor<?x64xf32>, %pos: tensor<?xi32>) {
  // expected-error @+1 {{'phimoe.rope' op head_dim must be positive and even, got 0}}
  %0 = phimoe.rope %q, %pos {head_dim = 0 : i64, scaling = #rope} : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]>
func.func @f(%q: tensor<?x64xf32>, %pos: tensor<?xi32>) {
  // expected-error @+1 {{'phimoe.rope' op head_dim must be positive and even, got -16}}
  %0 = phimoe.rope %q, %pos {head_dim = -16 : i64, scaling = #rope} : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]>
func.func @f(%q: tensor<?x4x16xf32>, %pos: tensor<?xi32>) {
  // expected-error @+1 {{'phimoe.rope' op input must have rank 2, got 'tensor<?x4x16xf32>'}}
  %0 = phimoe.rope %q, %pos {head_dim = 16 : i64, scaling = #rope} : tensor<?x4x16xf32>, tensor<?xi32>
  return
}

// -----

#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]>
func.func @f(%q: tensor<4x64xf32>, %pos: tensor<3xi32>) {
  // expected-error @+1 {{'phimoe.rope' op positions dimension 0 is 3 but the input's row count is 4}}
  %0 = phimoe.rope %q, %pos {head_dim = 16 : i64, scaling = #rope} : tensor<4x64xf32>, tensor<3xi32>
  return
}

// -----

#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]>
func.func @f(%q: tensor<?x40xf32>, %pos: tensor<?xi32>) {
  // expected-error @+1 {{'phimoe.rope' op input width 40 is not a whole number of heads of 16}}
  %0 = phimoe.rope %q, %pos {head_dim = 16 : i64, scaling = #rope} : tensor<?x40xf32>, tensor<?xi32>
  return
}

// -----

// Partial rotary: rotary_dim must be even and at most head_dim, and the factor arrays then
// hold rotary_dim / 2 values.
#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.0, 1.0, 1.0]>
func.func @f(%q: tensor<?x64xf32>, %pos: tensor<?xi32>) {
  // expected-error @+1 {{'phimoe.rope' op rotary_dim must be positive, even and at most head_dim (16), got 7}}
  %0 = phimoe.rope %q, %pos {head_dim = 16 : i64, rotary_dim = 7 : i64, scaling = #rope} : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.0, 1.0, 1.0]>
func.func @f(%q: tensor<?x64xf32>, %pos: tensor<?xi32>) {
  // expected-error @+1 {{'phimoe.rope' op rotary_dim must be positive, even and at most head_dim (16), got 32}}
  %0 = phimoe.rope %q, %pos {head_dim = 16 : i64, rotary_dim = 32 : i64, scaling = #rope} : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]>
func.func @f(%q: tensor<?x64xf32>, %pos: tensor<?xi32>) {
  // expected-error @+1 {{'phimoe.rope' op LongRoPE factor arrays hold 8 values but rotary_dim 8 needs 4}}
  %0 = phimoe.rope %q, %pos {head_dim = 16 : i64, rotary_dim = 8 : i64, scaling = #rope} : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

// A factor array holds one value per rotated pair: head_dim / 2 = 8 here.
#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], long_factor = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]>
func.func @f(%q: tensor<?x64xf32>, %pos: tensor<?xi32>) {
  // expected-error @+1 {{'phimoe.rope' op LongRoPE factor arrays hold 16 values but head_dim 16 needs 8}}
  %0 = phimoe.rope %q, %pos {head_dim = 16 : i64, scaling = #rope} : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

func.func @f(%q: tensor<?x64xf32>, %pos: tensor<?xi32>) {
  // expected-error @+1 {{'phimoe.rope' op attribute 'scaling' failed to satisfy constraint}}
  %0 = phimoe.rope %q, %pos {head_dim = 16 : i64, scaling = 1.0 : f32} : tensor<?x64xf32>, tensor<?xi32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// phimoe.attention
//===----------------------------------------------------------------------===//

func.func @f(%q: tensor<?x64xf32>, %k: tensor<?x32xf32>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op num_heads, num_kv_heads and head_dim must be positive}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 0 : i64, head_dim = 16 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return
}

// -----

func.func @f(%q: tensor<?x64xf32>, %k: tensor<?x32xf32>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op num_heads, num_kv_heads and head_dim must be positive}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = 0 : i64, num_heads = -4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return
}

// -----

func.func @f(%q: tensor<?x64xf32>, %k: tensor<?x48xf32>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 3, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op num_kv_heads (3) must divide num_heads (4)}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 3 : i64, head_dim = 16 : i64} : tensor<?x64xf32>, tensor<?x48xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 3, head_dim = 16, dtype = f32>
  return
}

// -----

// More kv heads than query heads is not grouped-query attention either.
func.func @f(%q: tensor<?x32xf32>, %k: tensor<?x64xf32>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 4, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op num_kv_heads (4) must divide num_heads (2)}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 4 : i64, head_dim = 16 : i64} : tensor<?x32xf32>, tensor<?x64xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 4, head_dim = 16, dtype = f32>
  return
}

// -----

func.func @f(%q: tensor<?x4x16xf32>, %k: tensor<?x32xf32>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op q must have rank 2, got 'tensor<?x4x16xf32>'}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<?x4x16xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return
}

// -----

func.func @f(%q: tensor<?x64xf32>, %k: tensor<?x2x16xf32>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op k must have rank 2, got 'tensor<?x2x16xf32>'}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<?x64xf32>, tensor<?x2x16xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return
}

// -----

func.func @f(%q: tensor<?x32xf32>, %k: tensor<?x32xf32>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op q dimension 1 is 32 but num_heads * head_dim is 64}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<?x32xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return
}

// -----

func.func @f(%q: tensor<?x64xf32>, %k: tensor<?x64xf32>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op k dimension 1 is 64 but num_kv_heads * head_dim is 32}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<?x64xf32>, tensor<?x64xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return
}

// -----

func.func @f(%q: tensor<4x64xf32>, %k: tensor<3x32xf32>, %pos: tensor<4xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op k dimension 0 is 3 but q's row count is 4}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<4x64xf32>, tensor<3x32xf32>, tensor<4xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return
}

// -----

func.func @f(%q: tensor<4x64xf32>, %k: tensor<?x32xf32>, %pos: tensor<1xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op positions dimension 0 is 1 but q's row count is 4}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<4x64xf32>, tensor<?x32xf32>, tensor<1xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return
}

// -----

func.func @f(%q: tensor<?x64xf32>, %k: tensor<?x32xf32>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 4, head_dim = 8, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op the cache holds 4 kv heads of 8 but the op has 2 of 16}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 4, head_dim = 8, dtype = f32>
  return
}

// -----

func.func @f(%q: tensor<?x64xf32>, %k: tensor<?x32xf32>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op layer 2 is outside the cache's 2 layers}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = 2 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 16, dtype = f32>
  return
}

// -----

func.func @f(%q: tensor<?x64xf32>, %k: tensor<?x32xf32>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op layer -1 is outside the cache's 2 layers}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = -1 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 2, kv_heads = 2, head_dim = 16, dtype = f32>
  return
}

// -----

func.func @f(%q: tensor<?x64xf32>, %k: tensor<?x32xf32>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op scale must be positive}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.0 : f64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return
}

// -----

func.func @f(%q: tensor<?x64xf32>, %k: tensor<?x32xf32>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op sliding_window must be positive}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, sliding_window = 0 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return
}

// -----

func.func @f(%q: tensor<?x64xf32>, %k: tensor<?x32xf32>, %v: tensor<?x32xbf16>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op failed to verify that all of {k, v} have same type}}
  %0 = "phimoe.attention"(%q, %k, %v, %pos, %c) {layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xbf16>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) -> tensor<?x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// phimoe.router
//===----------------------------------------------------------------------===//

func.func @f(%x: tensor<64xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.router' op input must have rank 2, got 'tensor<64xf32>'}}
  %0:2 = phimoe.router sparsemixer %x, %w {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<64xf32>, tensor<4x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{'phimoe.router' op weight must have rank 2, got 'tensor<64xf32>'}}
  %0:2 = phimoe.router sparsemixer %x, %w {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

// The router weight is [E, H].
func.func @f(%x: tensor<?x64xf32>, %w: tensor<64x4xf32>) {
  // expected-error @+1 {{'phimoe.router' op weight dimension 1 is 4 but the input width is 64}}
  %0:2 = phimoe.router sparsemixer %x, %w {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<64x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.router' op top_k must be in [1, 4], got 0}}
  %0:2 = phimoe.router softmax_topk %x, %w {epsilon = 0.0 : f64, top_k = 0 : i64} : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x0xi32>, tensor<?x0xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.router' op top_k must be in [1, 4], got 5}}
  %0:2 = phimoe.router softmax_topk %x, %w {epsilon = 0.0 : f64, top_k = 5 : i64} : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x5xi32>, tensor<?x5xf32>
  return
}

// -----

// Top-2 sparsemixer needs at least two experts.
func.func @f(%x: tensor<?x64xf32>, %w: tensor<1x64xf32>) {
  // expected-error @+1 {{'phimoe.router' op top_k must be in [1, 1], got 2}}
  %0:2 = phimoe.router sparsemixer %x, %w {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<1x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.router' op sparsemixer routing is defined for top_k = 2 only, got 3}}
  %0:2 = phimoe.router sparsemixer %x, %w {epsilon = 1.0e-02 : f64, top_k = 3 : i64} : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.router' op sparsemixer routing is defined for top_k = 2 only, got 1}}
  %0:2 = phimoe.router sparsemixer %x, %w {epsilon = 1.0e-02 : f64, top_k = 1 : i64} : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.router' op epsilon must not be negative, got -1.000000e-02}}
  %0:2 = phimoe.router sparsemixer %x, %w {epsilon = -1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.router' op weights must have rank 2, got 'tensor<?xf32>'}}
  %0:2 = phimoe.router sparsemixer %x, %w {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x2xi32>, tensor<?xf32>
  return
}

// -----

func.func @f(%x: tensor<8x64xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.router' op experts dimension 0 is 4 but the input's row count is 8}}
  %0:2 = phimoe.router sparsemixer %x, %w {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<8x64xf32>, tensor<4x64xf32> -> tensor<4x2xi32>, tensor<8x2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.router' op experts dimension 1 is 4 but top_k is 2}}
  %0:2 = phimoe.router sparsemixer %x, %w {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x4xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @f(%x: tensor<8x64xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.router' op weights dimension 0 is 1 but the input's row count is 8}}
  %0:2 = phimoe.router sparsemixer %x, %w {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<8x64xf32>, tensor<4x64xf32> -> tensor<8x2xi32>, tensor<1x2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.router' op weights dimension 1 is 3 but top_k is 2}}
  %0:2 = phimoe.router sparsemixer %x, %w {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x2xi32>, tensor<?x3xf32>
  return
}

// -----

// The router weight is never quantized: ODS rejects a !phimoe.qweight.
func.func @f(%x: tensor<?x256xf32>, %w: !phimoe.qweight<q8_0, [4, 256]>) {
  // expected-error @+1 {{'phimoe.router' op operand #1 must be ranked tensor of floating-point values, but got '!phimoe.qweight<q8_0, [4, 256]>'}}
  %0:2 = "phimoe.router"(%x, %w) {kind = 0 : i32, epsilon = 1.0e-02 : f64, top_k = 2 : i64} : (tensor<?x256xf32>, !phimoe.qweight<q8_0, [4, 256]>) -> (tensor<?x2xi32>, tensor<?x2xf32>)
  return
}

// -----

// ... and in the custom form the weight type does not even parse.
func.func @f(%x: tensor<?x256xf32>, %w: !phimoe.qweight<q8_0, [4, 256]>) {
  // expected-error @+1 {{invalid kind of type specified: expected builtin.tensor, but found '!phimoe.qweight<q8_0, [4, 256]>'}}
  %0:2 = phimoe.router sparsemixer %x, %w {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x256xf32>, !phimoe.qweight<q8_0, [4, 256]> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.router' op result #0 must be 2D tensor of 32-bit signless integer values, but got 'tensor<?x2xi64>'}}
  %0:2 = "phimoe.router"(%x, %w) {kind = 0 : i32, epsilon = 1.0e-02 : f64, top_k = 2 : i64} : (tensor<?x64xf32>, tensor<4x64xf32>) -> (tensor<?x2xi64>, tensor<?x2xf32>)
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{expected string or keyword containing one of the following enum values for attribute 'kind' [sparsemixer, softmax_topk]}}
  %0:2 = phimoe.router topk %x, %w {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// phimoe.gate_up
//===----------------------------------------------------------------------===//

func.func @f(%x: tensor<64xf32>, %w: tensor<256x64xf32>) {
  // expected-error @+1 {{'phimoe.gate_up' op input must have rank 2, got 'tensor<64xf32>'}}
  %0 = phimoe.gate_up %x, %w : tensor<64xf32>, tensor<256x64xf32> -> tensor<?x128xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<2x128x64xf32>) {
  // expected-error @+1 {{'phimoe.gate_up' op weight must have rank 2, got 'tensor<2x128x64xf32>'}}
  %0 = phimoe.gate_up %x, %w : tensor<?x64xf32>, tensor<2x128x64xf32> -> tensor<?x128xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<256x64xf32>) {
  // expected-error @+1 {{'phimoe.gate_up' op result must have rank 2, got 'tensor<?x2x64xf32>'}}
  %0 = phimoe.gate_up %x, %w : tensor<?x64xf32>, tensor<256x64xf32> -> tensor<?x2x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: tensor<64x256xf32>) {
  // expected-error @+1 {{'phimoe.gate_up' op weight dimension 1 is 256 but the input width is 64}}
  %0 = phimoe.gate_up %x, %w : tensor<?x64xf32>, tensor<64x256xf32> -> tensor<?x32xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %w: !phimoe.qweight<q8_0, [255, 64]>) {
  // expected-error @+1 {{'phimoe.gate_up' op weight must hold gate and up rows in equal numbers, got 255 rows}}
  %0 = phimoe.gate_up %x, %w : tensor<?x64xf32>, !phimoe.qweight<q8_0, [255, 64]> -> tensor<?x127xf32>
  return
}

// -----

func.func @f(%x: tensor<8x64xf32>, %w: tensor<256x64xf32>) {
  // expected-error @+1 {{'phimoe.gate_up' op result dimension 0 is 4 but the input's row count is 8}}
  %0 = phimoe.gate_up %x, %w : tensor<8x64xf32>, tensor<256x64xf32> -> tensor<4x128xf32>
  return
}

// -----

// The result is [T, I] with I half the weight's rows, not [T, 2I].
func.func @f(%x: tensor<?x64xf32>, %w: tensor<256x64xf32>) {
  // expected-error @+1 {{'phimoe.gate_up' op result dimension 1 is 256 but half the weight's row count is 128}}
  %0 = phimoe.gate_up %x, %w : tensor<?x64xf32>, tensor<256x64xf32> -> tensor<?x256xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// phimoe.moe_combine
//===----------------------------------------------------------------------===//

func.func @f(%ids: tensor<?x2xi32>, %w: tensor<?xf32>, %e: tensor<?x64xf32>) {
  // expected-error @+1 {{'phimoe.moe_combine' op weights must have rank 2, got 'tensor<?xf32>'}}
  %0 = phimoe.moe_combine %ids, %w, %e, %e : tensor<?x2xi32>, tensor<?xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>, %e: tensor<?x1x64xf32>) {
  // expected-error @+1 {{'phimoe.moe_combine' op result must have rank 2, got 'tensor<?x1x64xf32>'}}
  %0 = phimoe.moe_combine %ids, %w, %e, %e : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x1x64xf32>, tensor<?x1x64xf32> -> tensor<?x1x64xf32>
  return
}

// -----

func.func @f(%ids: tensor<8x2xi32>, %w: tensor<4x2xf32>, %e: tensor<8x64xf32>) {
  // expected-error @+1 {{'phimoe.moe_combine' op weights dimension 0 is 4 but the routing's row count is 8}}
  %0 = phimoe.moe_combine %ids, %w, %e, %e : tensor<8x2xi32>, tensor<4x2xf32>, tensor<8x64xf32>, tensor<8x64xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @f(%ids: tensor<?x2xi32>, %w: tensor<?x1xf32>, %e: tensor<?x64xf32>) {
  // expected-error @+1 {{'phimoe.moe_combine' op weights dimension 1 is 1 but the routing's top_k is 2}}
  %0 = phimoe.moe_combine %ids, %w, %e, %e : tensor<?x2xi32>, tensor<?x1xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%ids: tensor<8x2xi32>, %w: tensor<8x2xf32>, %e: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.moe_combine' op result dimension 0 is 4 but the routing's row count is 8}}
  %0 = phimoe.moe_combine %ids, %w, %e, %e : tensor<8x2xi32>, tensor<8x2xf32>, tensor<4x64xf32>, tensor<4x64xf32> -> tensor<4x64xf32>
  return
}

// -----

func.func @f(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>, %e: tensor<?x64xf32>) {
  // expected-error @+1 {{'phimoe.moe_combine' op has 1 expert outputs but top_k is 2}}
  %0 = phimoe.moe_combine %ids, %w, %e : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%ids: tensor<?x2xi32>, %w: tensor<?x2xf32>, %e: tensor<?x64xf32>, %e2: tensor<?x64xbf16>) {
  // expected-error @+1 {{'phimoe.moe_combine' op expert outputs must have the result type 'tensor<?x64xf32>', got 'tensor<?x64xbf16>'}}
  %0 = phimoe.moe_combine %ids, %w, %e, %e2 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xbf16> -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%ids: tensor<?x2xi64>, %w: tensor<?x2xf32>, %e: tensor<?x64xf32>) {
  // expected-error @+1 {{'phimoe.moe_combine' op operand #0 must be 2D tensor of 32-bit signless integer values, but got 'tensor<?x2xi64>'}}
  %0 = phimoe.moe_combine %ids, %w, %e, %e : tensor<?x2xi64>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// phimoe.moe
//===----------------------------------------------------------------------===//

func.func @f(%x: tensor<64xf32>, %r: tensor<4x64xf32>, %gu: tensor<4x256x64xf32>, %d: tensor<4x64x128xf32>) {
  // expected-error @+1 {{'phimoe.moe' op input must have rank 2, got 'tensor<64xf32>'}}
  %0 = phimoe.moe sparsemixer %x, %r, %gu, %d {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<64xf32>, tensor<4x64xf32>, tensor<4x256x64xf32>, tensor<4x64x128xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %r: tensor<4x1x64xf32>, %gu: tensor<4x256x64xf32>, %d: tensor<4x64x128xf32>) {
  // expected-error @+1 {{'phimoe.moe' op router weight must have rank 2, got 'tensor<4x1x64xf32>'}}
  %0 = phimoe.moe sparsemixer %x, %r, %gu, %d {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x1x64xf32>, tensor<4x256x64xf32>, tensor<4x64x128xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %r: tensor<4x64xf32>, %gu: tensor<256x64xf32>, %d: tensor<4x64x128xf32>) {
  // expected-error @+1 {{'phimoe.moe' op gate_up weight must have rank 3, got 'tensor<256x64xf32>'}}
  %0 = phimoe.moe sparsemixer %x, %r, %gu, %d {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<256x64xf32>, tensor<4x64x128xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %r: tensor<4x64xf32>, %gu: tensor<4x256x64xf32>, %d: !phimoe.qweight<q4_0, [256, 128]>) {
  // expected-error @+1 {{'phimoe.moe' op down weight must have rank 3, got '!phimoe.qweight<q4_0, [256, 128]>'}}
  %0 = phimoe.moe sparsemixer %x, %r, %gu, %d {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x256x64xf32>, !phimoe.qweight<q4_0, [256, 128]>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %r: tensor<4x32xf32>, %gu: tensor<4x256x64xf32>, %d: tensor<4x64x128xf32>) {
  // expected-error @+1 {{'phimoe.moe' op router weight dimension 1 is 32 but the input width is 64}}
  %0 = phimoe.moe sparsemixer %x, %r, %gu, %d {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x32xf32>, tensor<4x256x64xf32>, tensor<4x64x128xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %r: tensor<4x64xf32>, %gu: tensor<8x256x64xf32>, %d: tensor<4x64x128xf32>) {
  // expected-error @+1 {{'phimoe.moe' op gate_up weight dimension 0 is 8 but the router's expert count is 4}}
  %0 = phimoe.moe sparsemixer %x, %r, %gu, %d {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<8x256x64xf32>, tensor<4x64x128xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %r: tensor<4x64xf32>, %gu: !phimoe.qweight<q8_0, [4, 256, 64]>, %d: !phimoe.qweight<q8_0, [3, 64, 128]>) {
  // expected-error @+1 {{'phimoe.moe' op down weight dimension 0 is 3 but the router's expert count is 4}}
  %0 = phimoe.moe sparsemixer %x, %r, %gu, %d {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, !phimoe.qweight<q8_0, [4, 256, 64]>, !phimoe.qweight<q8_0, [3, 64, 128]>
  return
}

// -----

// gate_up is [E, 2I, H], not [E, H, 2I].
func.func @f(%x: tensor<?x64xf32>, %r: tensor<4x64xf32>, %gu: tensor<4x64x256xf32>, %d: tensor<4x64x128xf32>) {
  // expected-error @+1 {{'phimoe.moe' op gate_up weight dimension 2 is 256 but the input width is 64}}
  %0 = phimoe.moe sparsemixer %x, %r, %gu, %d {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x64x256xf32>, tensor<4x64x128xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %r: tensor<4x64xf32>, %gu: tensor<4x255x64xf32>, %d: tensor<4x64x128xf32>) {
  // expected-error @+1 {{'phimoe.moe' op gate_up weight must hold gate and up rows in equal numbers, got 255 rows}}
  %0 = phimoe.moe sparsemixer %x, %r, %gu, %d {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x255x64xf32>, tensor<4x64x128xf32>
  return
}

// -----

// down is [E, H, I], not [E, I, H].
func.func @f(%x: tensor<?x64xf32>, %r: tensor<4x64xf32>, %gu: tensor<4x256x64xf32>, %d: tensor<4x128x64xf32>) {
  // expected-error @+1 {{'phimoe.moe' op down weight dimension 1 is 128 but the input width is 64}}
  %0 = phimoe.moe sparsemixer %x, %r, %gu, %d {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x256x64xf32>, tensor<4x128x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %r: tensor<4x64xf32>, %gu: tensor<4x256x64xf32>, %d: tensor<4x64x256xf32>) {
  // expected-error @+1 {{'phimoe.moe' op down weight dimension 2 is 256 but the expert's intermediate size is 128}}
  %0 = phimoe.moe sparsemixer %x, %r, %gu, %d {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x256x64xf32>, tensor<4x64x256xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %r: tensor<4x64xf32>, %gu: tensor<4x256x64xf32>, %d: tensor<4x64x128xf32>) {
  // expected-error @+1 {{'phimoe.moe' op top_k must be in [1, 4], got 8}}
  %0 = phimoe.moe softmax_topk %x, %r, %gu, %d {epsilon = 0.0 : f64, top_k = 8 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x256x64xf32>, tensor<4x64x128xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %r: tensor<4x64xf32>, %gu: tensor<4x256x64xf32>, %d: tensor<4x64x128xf32>) {
  // expected-error @+1 {{'phimoe.moe' op sparsemixer routing is defined for top_k = 2 only, got 4}}
  %0 = phimoe.moe sparsemixer %x, %r, %gu, %d {epsilon = 1.0e-02 : f64, top_k = 4 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x256x64xf32>, tensor<4x64x128xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %r: tensor<4x64xf32>, %gu: tensor<4x256x64xf32>, %d: tensor<4x64x128xf32>) {
  // expected-error @+1 {{'phimoe.moe' op epsilon must not be negative, got -5.000000e-01}}
  %0 = phimoe.moe softmax_topk %x, %r, %gu, %d {epsilon = -5.0e-01 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x256x64xf32>, tensor<4x64x128xf32>
  return
}

// -----

// The router weight of a fused MoE block is never quantized either.
func.func @f(%x: tensor<?x256xf32>, %r: !phimoe.qweight<q8_0, [4, 256]>, %gu: tensor<4x256x256xf32>, %d: tensor<4x256x128xf32>) {
  // expected-error @+1 {{'phimoe.moe' op operand #1 must be ranked tensor of floating-point values, but got '!phimoe.qweight<q8_0, [4, 256]>'}}
  %0 = "phimoe.moe"(%x, %r, %gu, %d) {kind = 0 : i32, epsilon = 1.0e-02 : f64, top_k = 2 : i64} : (tensor<?x256xf32>, !phimoe.qweight<q8_0, [4, 256]>, tensor<4x256x256xf32>, tensor<4x256x128xf32>) -> tensor<?x256xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %r: tensor<4x64xf32>, %gu: tensor<4x256x64xi8>, %d: tensor<4x64x128xf32>) {
  // expected-error @+1 {{'phimoe.moe' op operand #2 must be a float tensor or a quantized weight, but got 'tensor<4x256x64xi8>'}}
  %0 = phimoe.moe sparsemixer %x, %r, %gu, %d {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x256x64xi8>, tensor<4x64x128xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// Found while writing the cases above: cycles, rank 0, negative windows,
// infinities, dynamic row counts.
//===----------------------------------------------------------------------===//

// expected-error @+1 {{'phimoe.weight' op weight @a cannot be derived from itself (through @b)}}
phimoe.weight @a = concat [@b] : tensor<4x64xf32>
phimoe.weight @b = concat [@a] : tensor<4x64xf32>

// -----

phimoe.weight @s : tensor<f32>
// expected-error @+1 {{'phimoe.weight' op part @s has rank 0 and cannot be stacked}}
phimoe.weight @d = stack [@s, @s] : tensor<2xf32>

// -----

func.func @f(%q: tensor<?x64xf32>, %k: tensor<?x32xf32>, %pos: tensor<?xi32>, %c: !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>) {
  // expected-error @+1 {{'phimoe.attention' op sliding_window must be positive}}
  %0 = phimoe.attention %q, %k, %k, %pos, %c {layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, sliding_window = -5 : i64} : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>, !phimoe.kv_cache<layers = 1, kv_heads = 2, head_dim = 16, dtype = f32>
  return
}

// -----

// expected-error @+1 {{longrope factors must be positive and finite floats, got INF}}
#r = #phimoe.longrope<theta = 10000.0, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0e39], long_factor = [1.0]>
func.func private @f() attributes {r = #r}

// -----

// expected-error @+1 {{longrope theta must be positive and finite}}
#r = #phimoe.longrope<theta = 0x7FF0000000000000, original_max_position = 32, short_mscale = 1.0, long_mscale = 1.0, short_factor = [1.0], long_factor = [1.0]>
func.func private @f() attributes {r = #r}

// -----

// A dynamic weight row count stays dynamic when halved: no error here, and
// the next op still sees its width rule.
func.func @f(%x: tensor<?x64xf32>, %w: tensor<?x64xf32>) -> tensor<?x128xf32> {
  %0 = phimoe.gate_up %x, %w : tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x128xf32>
  // expected-error @+1 {{'phimoe.gate_up' op weight dimension 1 is 64 but the input width is 128}}
  %1 = phimoe.gate_up %0, %w : tensor<?x128xf32>, tensor<?x64xf32> -> tensor<?x128xf32>
  return %0 : tensor<?x128xf32>
}

// -----

func.func @f(%x: tensor<?x96xf32>) {
  // expected-error @+1 {{'phimoe.split' op results must have the input's element type 'f32', got 'tensor<?x32xf16>'}}
  %0:2 = phimoe.split %x [64, 32] : tensor<?x96xf32> -> tensor<?x64xf32>, tensor<?x32xf16>
  return
}

// -----

//===----------------------------------------------------------------------===//
// phimoe.moe_gelu
//===----------------------------------------------------------------------===//

func.func @f(%x: tensor<?x64xf32>, %wr: tensor<4x64xf32>, %fc1: tensor<4x128x64xf32>, %b1: tensor<4x64xf32>, %fc2: tensor<4x64x128xf32>, %b2: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.moe_gelu' op fc1 bias dimension 1 is 64 but fc1's row count is 128}}
  %0 = phimoe.moe_gelu softmax_topk %x, %wr, %fc1, %b1, %fc2, %b2 {epsilon = 0.0 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x128x64xf32>, tensor<4x64xf32>, tensor<4x64x128xf32>, tensor<4x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %wr: tensor<4x64xf32>, %fc1: tensor<4x128x64xf32>, %b1: tensor<4x128xf32>, %fc2: tensor<3x64x128xf32>, %b2: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.moe_gelu' op fc2 weight dimension 0 is 3 but the router's expert count is 4}}
  %0 = phimoe.moe_gelu softmax_topk %x, %wr, %fc1, %b1, %fc2, %b2 {epsilon = 0.0 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x128x64xf32>, tensor<4x128xf32>, tensor<3x64x128xf32>, tensor<4x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %wr: tensor<4x64xf32>, %fc1: tensor<4x128x64xf32>, %b1: tensor<4x128xf32>, %fc2: tensor<4x64x128xf32>, %b2: tensor<4x32xf32>) {
  // expected-error @+1 {{'phimoe.moe_gelu' op fc2 bias dimension 1 is 32 but the input width is 64}}
  %0 = phimoe.moe_gelu softmax_topk %x, %wr, %fc1, %b1, %fc2, %b2 {epsilon = 0.0 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x128x64xf32>, tensor<4x128xf32>, tensor<4x64x128xf32>, tensor<4x32xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %wr: tensor<4x64xf32>, %fc1: tensor<4x128x64xf32>, %b1: tensor<4x128xf32>, %fc2: tensor<4x64x128xf32>, %b2: tensor<4x64xf32>) {
  // expected-error @+1 {{'phimoe.moe_gelu' op top_k must be in [1, 4], got 5}}
  %0 = phimoe.moe_gelu softmax_topk %x, %wr, %fc1, %b1, %fc2, %b2 {epsilon = 0.0 : f64, top_k = 5 : i64} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<4x128x64xf32>, tensor<4x128xf32>, tensor<4x64x128xf32>, tensor<4x64xf32>
  return
}
