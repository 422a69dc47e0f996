// RUN: phimoe-opt %s -split-input-file --phimoe-fuse-add-norm | FileCheck %s

// The residual add and the LayerNorm that reads it become one add_layer_norm
// over the add's operands (in order) and the norm's weight, bias and epsilon;
// the norm's users read its result, and the other users of the sum (the next
// residual add) read its sum.

phimoe.weight @model.layers.0.post_attention_layernorm.weight : tensor<64xbf16>
phimoe.weight @model.layers.0.post_attention_layernorm.bias : tensor<64xbf16>

// CHECK-LABEL: func.func @add_norm
// CHECK-SAME: ([[H:%.+]]: tensor<?x64xf32>, [[O:%.+]]: tensor<?x64xf32>, [[M:%.+]]: tensor<?x64xf32>)
// CHECK-DAG: [[W:%.+]] = phimoe.weight_ref @model.layers.0.post_attention_layernorm.weight
// CHECK-DAG: [[B:%.+]] = phimoe.weight_ref @model.layers.0.post_attention_layernorm.bias
// CHECK-NOT: phimoe.add
// CHECK: [[SUM:%.+]], [[N:%.+]] = phimoe.add_layer_norm [[H]], [[O]], [[W]], [[B]] {epsilon = 1.000000e-05 : f64} : tensor<?x64xf32>, tensor<64xbf16>
// CHECK-NOT: phimoe.layer_norm
// CHECK: [[Y:%.+]] = phimoe.mul [[N]], [[M]]
// CHECK: [[H2:%.+]] = phimoe.add [[SUM]], [[Y]]
// CHECK-NOT: phimoe.layer_norm
// CHECK: return [[H2]]
func.func @add_norm(%h: tensor<?x64xf32>, %o: tensor<?x64xf32>, %m: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %w = phimoe.weight_ref @model.layers.0.post_attention_layernorm.weight : tensor<64xbf16>
  %b = phimoe.weight_ref @model.layers.0.post_attention_layernorm.bias : tensor<64xbf16>
  %h1 = phimoe.add %h, %o : tensor<?x64xf32>
  %x = phimoe.layer_norm %h1, %w, %b {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xbf16>
  %y = phimoe.mul %x, %m : tensor<?x64xf32>
  %h2 = phimoe.add %h1, %y : tensor<?x64xf32>
  return %h2 : tensor<?x64xf32>
}

// -----

// The norm's weight refs are written after the add: they move up before the
// fused op, which takes the add's place. The epsilon is the norm's own.

phimoe.weight @l0.ln.weight : tensor<64xf32>
phimoe.weight @l0.ln.bias : tensor<64xf32>

// CHECK-LABEL: func.func @add_norm_refs_after_add
// CHECK-SAME: ([[A:%.+]]: tensor<?x64xf32>, [[B:%.+]]: tensor<?x64xf32>)
// CHECK-DAG: [[W:%.+]] = phimoe.weight_ref @l0.ln.weight
// CHECK-DAG: [[BI:%.+]] = phimoe.weight_ref @l0.ln.bias
// CHECK: [[SUM:%.+]], [[N:%.+]] = phimoe.add_layer_norm [[A]], [[B]], [[W]], [[BI]] {epsilon = 3.125000e-02 : f64}
// CHECK-NEXT: return [[N]], [[SUM]]
func.func @add_norm_refs_after_add(%a: tensor<?x64xf32>, %b: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  %s = phimoe.add %a, %b : tensor<?x64xf32>
  %w = phimoe.weight_ref @l0.ln.weight : tensor<64xf32>
  %bi = phimoe.weight_ref @l0.ln.bias : tensor<64xf32>
  %n = phimoe.layer_norm %s, %w, %bi {epsilon = 3.125e-02 : f64} : tensor<?x64xf32>, tensor<64xf32>
  return %n, %s : tensor<?x64xf32>, tensor<?x64xf32>
}

// -----

// A weight and bias given as arguments are available at the add.

// CHECK-LABEL: func.func @add_norm_arg_weights
// CHECK-SAME: ([[A:%.+]]: tensor<?x64xf32>, [[B:%.+]]: tensor<?x64xf32>, [[W:%.+]]: tensor<64xf32>, [[BI:%.+]]: tensor<64xf32>)
// CHECK-NEXT: [[SUM:%.+]], [[N:%.+]] = phimoe.add_layer_norm [[A]], [[B]], [[W]], [[BI]]
// CHECK-NEXT: return [[N]]
func.func @add_norm_arg_weights(%a: tensor<?x64xf32>, %b: tensor<?x64xf32>, %w: tensor<64xf32>, %bi: tensor<64xf32>) -> tensor<?x64xf32> {
  %s = phimoe.add %a, %b : tensor<?x64xf32>
  %n = phimoe.layer_norm %s, %w, %bi {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xf32>
  return %n : tensor<?x64xf32>
}

// -----

// Two layers: each residual add fuses with the norm after it, and the second
// fused op reads the first one's sum.

phimoe.weight @l0.ln.weight : tensor<64xf32>
phimoe.weight @l0.ln.bias : tensor<64xf32>
phimoe.weight @l1.ln.weight : tensor<64xf32>
phimoe.weight @l1.ln.bias : tensor<64xf32>

// CHECK-LABEL: func.func @add_norm_chain
// CHECK-SAME: ([[H:%.+]]: tensor<?x64xf32>, [[A:%.+]]: tensor<?x64xf32>, [[B:%.+]]: tensor<?x64xf32>)
// CHECK-DAG: [[W0:%.+]] = phimoe.weight_ref @l0.ln.weight
// CHECK-DAG: [[B0:%.+]] = phimoe.weight_ref @l0.ln.bias
// CHECK-DAG: [[W1:%.+]] = phimoe.weight_ref @l1.ln.weight
// CHECK-DAG: [[B1:%.+]] = phimoe.weight_ref @l1.ln.bias
// CHECK: [[S0:%.+]], [[N0:%.+]] = phimoe.add_layer_norm [[H]], [[A]], [[W0]], [[B0]]
// CHECK: [[S1:%.+]], [[N1:%.+]] = phimoe.add_layer_norm [[S0]], [[B]], [[W1]], [[B1]]
// CHECK-NOT: phimoe.layer_norm
// CHECK: return [[N0]], [[N1]], [[S1]]
func.func @add_norm_chain(%h: tensor<?x64xf32>, %a: tensor<?x64xf32>, %b: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>) {
  %w0 = phimoe.weight_ref @l0.ln.weight : tensor<64xf32>
  %b0 = phimoe.weight_ref @l0.ln.bias : tensor<64xf32>
  %w1 = phimoe.weight_ref @l1.ln.weight : tensor<64xf32>
  %b1 = phimoe.weight_ref @l1.ln.bias : tensor<64xf32>
  %h1 = phimoe.add %h, %a : tensor<?x64xf32>
  %n0 = phimoe.layer_norm %h1, %w0, %b0 {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xf32>
  %h2 = phimoe.add %h1, %b : tensor<?x64xf32>
  %n1 = phimoe.layer_norm %h2, %w1, %b1 {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xf32>
  return %n0, %n1, %h2 : tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>
}

// -----

// Two norms read one add: one of them fuses (the later one, as the rewrite
// driver visits them; either would be right), the other reads the fused op's
// sum (the add is computed once). Each norm keeps its own weight and bias.

phimoe.weight @l0.ln_a.weight : tensor<64xf32>
phimoe.weight @l0.ln_a.bias : tensor<64xf32>
phimoe.weight @l0.ln_b.weight : tensor<64xf32>
phimoe.weight @l0.ln_b.bias : tensor<64xf32>

// CHECK-LABEL: func.func @add_two_norms
// CHECK-SAME: ([[A:%.+]]: tensor<?x64xf32>, [[B:%.+]]: tensor<?x64xf32>)
// CHECK-DAG: [[WA:%.+]] = phimoe.weight_ref @l0.ln_a.weight
// CHECK-DAG: [[BA:%.+]] = phimoe.weight_ref @l0.ln_a.bias
// CHECK-DAG: [[WB:%.+]] = phimoe.weight_ref @l0.ln_b.weight
// CHECK-DAG: [[BB:%.+]] = phimoe.weight_ref @l0.ln_b.bias
// CHECK-NOT: phimoe.add %
// CHECK: [[SUM:%.+]], [[N:%.+]] = phimoe.add_layer_norm [[A]], [[B]], [[WB]], [[BB]]
// CHECK-NOT: phimoe.add_layer_norm
// CHECK: [[M:%.+]] = phimoe.layer_norm [[SUM]], [[WA]], [[BA]]
// CHECK-NOT: phimoe.add_layer_norm
// CHECK: return [[M]], [[N]]
func.func @add_two_norms(%a: tensor<?x64xf32>, %b: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  %wa = phimoe.weight_ref @l0.ln_a.weight : tensor<64xf32>
  %ba = phimoe.weight_ref @l0.ln_a.bias : tensor<64xf32>
  %wb = phimoe.weight_ref @l0.ln_b.weight : tensor<64xf32>
  %bb = phimoe.weight_ref @l0.ln_b.bias : tensor<64xf32>
  %s = phimoe.add %a, %b : tensor<?x64xf32>
  %n = phimoe.layer_norm %s, %wa, %ba {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xf32>
  %m = phimoe.layer_norm %s, %wb, %bb {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xf32>
  return %n, %m : tensor<?x64xf32>, tensor<?x64xf32>
}

// -----

// Negative: the norm's input is not an add (a mul, and an argument).

phimoe.weight @l0.ln.weight : tensor<64xf32>
phimoe.weight @l0.ln.bias : tensor<64xf32>

// CHECK-LABEL: func.func @norm_of_mul
// CHECK-SAME: ([[A:%.+]]: tensor<?x64xf32>, [[B:%.+]]: tensor<?x64xf32>)
// CHECK-NOT: phimoe.add_layer_norm
// CHECK: [[P:%.+]] = phimoe.mul [[A]], [[B]]
// CHECK: phimoe.layer_norm [[P]],
// CHECK: phimoe.layer_norm [[A]],
// CHECK-NOT: phimoe.add_layer_norm
func.func @norm_of_mul(%a: tensor<?x64xf32>, %b: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  %w = phimoe.weight_ref @l0.ln.weight : tensor<64xf32>
  %bi = phimoe.weight_ref @l0.ln.bias : tensor<64xf32>
  %p = phimoe.mul %a, %b : tensor<?x64xf32>
  %n = phimoe.layer_norm %p, %w, %bi {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xf32>
  %m = phimoe.layer_norm %a, %w, %bi {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xf32>
  return %n, %m : tensor<?x64xf32>, tensor<?x64xf32>
}

// -----

// Negative: an add that feeds no norm stays an add.

// CHECK-LABEL: func.func @add_without_norm
// CHECK-NOT: phimoe.add_layer_norm
// CHECK: phimoe.add
// CHECK-NOT: phimoe.add_layer_norm
func.func @add_without_norm(%a: tensor<?x64xf32>, %b: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %s = phimoe.add %a, %b : tensor<?x64xf32>
  return %s : tensor<?x64xf32>
}

// -----

// Negative: the norm's weight is computed after the add (not a weight ref
// that could move up), so the fused op could not read it at the add.

phimoe.weight @l0.ln.weight : tensor<64xf32>
phimoe.weight @l0.ln.bias : tensor<64xf32>

// CHECK-LABEL: func.func @norm_weight_computed_after_add
// CHECK-NOT: phimoe.add_layer_norm
// CHECK: [[S:%.+]] = phimoe.add
// CHECK: [[W2:%.+]] = phimoe.mul
// CHECK: phimoe.layer_norm [[S]], [[W2]],
// CHECK-NOT: phimoe.add_layer_norm
func.func @norm_weight_computed_after_add(%a: tensor<?x64xf32>, %b: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %w = phimoe.weight_ref @l0.ln.weight : tensor<64xf32>
  %bi = phimoe.weight_ref @l0.ln.bias : tensor<64xf32>
  %s = phimoe.add %a, %b : tensor<?x64xf32>
  %w2 = phimoe.mul %w, %w : tensor<64xf32>
  %n = phimoe.layer_norm %s, %w2, %bi {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xf32>
  return %n : tensor<?x64xf32>
}

// -----

// An RMSNorm (Mixtral) fuses the same way: no bias, `rms` carried over.
// CHECK-LABEL: func.func @add_rms_norm
// CHECK-SAME: ([[A:%.+]]: tensor<?x64xf32>, [[B:%.+]]: tensor<?x64xf32>, [[W:%.+]]: tensor<64xf32>)
// CHECK: [[SUM:%.+]], [[N:%.+]] = phimoe.add_layer_norm [[A]], [[B]], [[W]] {epsilon = 2.000000e-05 : f64, rms} : tensor<?x64xf32>, tensor<64xf32>
// CHECK-NOT: phimoe.layer_norm
// CHECK: return [[SUM]], [[N]]
func.func @add_rms_norm(%a: tensor<?x64xf32>, %b: tensor<?x64xf32>, %w: tensor<64xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  %s = phimoe.add %a, %b : tensor<?x64xf32>
  %n = phimoe.layer_norm %s, %w {epsilon = 2.0e-05 : f64, rms} : tensor<?x64xf32>, tensor<64xf32>
  return %s, %n : tensor<?x64xf32>, tensor<?x64xf32>
}
