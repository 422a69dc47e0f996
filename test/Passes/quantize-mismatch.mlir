// Cases where quantize must not produce IR that fails to verify (found by
// writing quantize.mlir).
// RUN: phimoe-opt %s -split-input-file '--phimoe-quantize=override=input_layernorm\.weight=f16' \
// RUN: | FileCheck %s
// RUN: phimoe-opt %s -split-input-file '--phimoe-quantize=override=layernorm\.bias=keep' \
// RUN: | FileCheck %s

// Regression (Quantize.cpp, QuantizePass::runOnOperation): overrides are applied
// weight by weight, but phimoe.layer_norm and phimoe.add_layer_norm require
// their weight and bias to have one type (AllTypesMatch<["weight", "bias"]>).
// An override that matches only one of the two (a float type, or `keep`,
// which leaves the bias in bf16 while the default turns the norm weight into
// f32) gives them different types: the module fails verification after the
// pass ("'phimoe.layer_norm' op failed to verify that all of {weight, bias}
// have same type") and phimoe-opt exits with an error. Expected: the module
// still verifies, i.e. the weight and bias of one norm end up with one type
// (the pass could give both operands of a norm the storage chosen for either,
// or reject such an override with a clear error; in the latter case turn this
// into a `not ... | FileCheck --check-prefix=ERR` test).

phimoe.weight @model.layers.0.input_layernorm.weight : tensor<256xbf16>
phimoe.weight @model.layers.0.input_layernorm.bias : tensor<256xbf16>
phimoe.weight @model.layers.0.post_attention_layernorm.weight : tensor<256xbf16>
phimoe.weight @model.layers.0.post_attention_layernorm.bias : tensor<256xbf16>

// CHECK:      phimoe.weight @model.layers.0.input_layernorm.weight : [[T0:.+]]
// CHECK-NEXT: phimoe.weight @model.layers.0.input_layernorm.bias : [[T0]]
// CHECK-NEXT: phimoe.weight @model.layers.0.post_attention_layernorm.weight : [[T1:.+]]
// CHECK-NEXT: phimoe.weight @model.layers.0.post_attention_layernorm.bias : [[T1]]
// CHECK-LABEL: func.func @norm_weight_and_bias_override
func.func @norm_weight_and_bias_override(%h: tensor<?x256xf32>, %o: tensor<?x256xf32>) -> (tensor<?x256xf32>, tensor<?x256xf32>) {
  %w0 = phimoe.weight_ref @model.layers.0.input_layernorm.weight : tensor<256xbf16>
  %b0 = phimoe.weight_ref @model.layers.0.input_layernorm.bias : tensor<256xbf16>
  %x = phimoe.layer_norm %h, %w0, %b0 {epsilon = 1.0e-05 : f64} : tensor<?x256xf32>, tensor<256xbf16>
  %w1 = phimoe.weight_ref @model.layers.0.post_attention_layernorm.weight : tensor<256xbf16>
  %b1 = phimoe.weight_ref @model.layers.0.post_attention_layernorm.bias : tensor<256xbf16>
  %s, %n = phimoe.add_layer_norm %x, %o, %w1, %b1 {epsilon = 1.0e-05 : f64} : tensor<?x256xf32>, tensor<256xbf16>
  return %s, %n : tensor<?x256xf32>, tensor<?x256xf32>
}
