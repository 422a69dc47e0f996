// RUN: phimoe-opt %s -split-input-file --phimoe-fuse-moe | FileCheck %s

// The router, four experts (gate_up then an unbiased down linear, all reading
// the router's input) and moe_combine become one phimoe.moe over the router
// weight and the derived weights `stack [@gate_up_j]` and `stack [@w2_j]`, in
// expert order; kind, top_k and epsilon are the router's.

phimoe.weight @model.layers.0.block_sparse_moe.experts.0.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<64x128xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.1.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w2.weight : tensor<64x128xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.2.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.2.w2.weight : tensor<64x128xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.3.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.3.w2.weight : tensor<64x128xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.gate.weight : tensor<4x64xbf16>

// CHECK-DAG: phimoe.weight [[GU:@[a-z0-9_.]+]] = stack [@model.layers.0.block_sparse_moe.experts.0.gate_up.weight, @model.layers.0.block_sparse_moe.experts.1.gate_up.weight, @model.layers.0.block_sparse_moe.experts.2.gate_up.weight, @model.layers.0.block_sparse_moe.experts.3.gate_up.weight] : tensor<4x256x64xbf16>
// CHECK-DAG: phimoe.weight [[DN:@[a-z0-9_.]+]] = stack [@model.layers.0.block_sparse_moe.experts.0.w2.weight, @model.layers.0.block_sparse_moe.experts.1.w2.weight, @model.layers.0.block_sparse_moe.experts.2.w2.weight, @model.layers.0.block_sparse_moe.experts.3.w2.weight] : tensor<4x64x128xbf16>
// CHECK-LABEL: func.func @moe
// CHECK-SAME: ([[X:%.+]]: tensor<?x64xf32>)
// CHECK-DAG: [[WG:%.+]] = phimoe.weight_ref @model.layers.0.block_sparse_moe.gate.weight : tensor<4x64xbf16>
// CHECK-DAG: [[GUR:%.+]] = phimoe.weight_ref [[GU]] : tensor<4x256x64xbf16>
// CHECK-DAG: [[DNR:%.+]] = phimoe.weight_ref [[DN]] : tensor<4x64x128xbf16>
// CHECK: [[Y:%.+]] = phimoe.moe sparsemixer [[X]], [[WG]], [[GUR]], [[DNR]] {epsilon = 1.000000e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16>, tensor<4x256x64xbf16>, tensor<4x64x128xbf16>
// CHECK-NEXT: return [[Y]]
// CHECK-NOT: phimoe.router
// CHECK-NOT: phimoe.gate_up
// CHECK-NOT: phimoe.linear
// CHECK-NOT: phimoe.moe_combine
func.func @moe(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wg = phimoe.weight_ref @model.layers.0.block_sparse_moe.gate.weight : tensor<4x64xbf16>
  %ids, %rw = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %gu0 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.gate_up.weight : tensor<256x64xbf16>
  %a0 = phimoe.gate_up %x, %gu0 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d0 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<64x128xbf16>
  %e0 = phimoe.linear %a0, %d0 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu1 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.gate_up.weight : tensor<256x64xbf16>
  %a1 = phimoe.gate_up %x, %gu1 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d1 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.w2.weight : tensor<64x128xbf16>
  %e1 = phimoe.linear %a1, %d1 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu2 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.2.gate_up.weight : tensor<256x64xbf16>
  %a2 = phimoe.gate_up %x, %gu2 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d2 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.2.w2.weight : tensor<64x128xbf16>
  %e2 = phimoe.linear %a2, %d2 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu3 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.3.gate_up.weight : tensor<256x64xbf16>
  %a3 = phimoe.gate_up %x, %gu3 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d3 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.3.w2.weight : tensor<64x128xbf16>
  %e3 = phimoe.linear %a3, %d3 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw, %e0, %e1, %e2, %e3 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// moe_combine lists the experts out of declaration order: expert j of the
// router is moe_combine's j-th output, so the stacks follow that order.

phimoe.weight @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.0.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.1.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.2.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.3.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.gate.weight : tensor<4x64xbf16>

// CHECK-DAG: phimoe.weight [[GU:@[a-z0-9_.]+]] = stack [@l0.experts.2.gate_up.weight, @l0.experts.0.gate_up.weight, @l0.experts.3.gate_up.weight, @l0.experts.1.gate_up.weight] :
// CHECK-DAG: phimoe.weight [[DN:@[a-z0-9_.]+]] = stack [@l0.experts.2.w2.weight, @l0.experts.0.w2.weight, @l0.experts.3.w2.weight, @l0.experts.1.w2.weight] :
// CHECK-LABEL: func.func @moe_permuted
// CHECK-SAME: ([[X:%.+]]: tensor<?x64xf32>)
// CHECK-DAG: [[GUR:%.+]] = phimoe.weight_ref [[GU]]
// CHECK-DAG: [[DNR:%.+]] = phimoe.weight_ref [[DN]]
// CHECK: phimoe.moe sparsemixer [[X]], {{%.+}}, [[GUR]], [[DNR]]
func.func @moe_permuted(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wg = phimoe.weight_ref @l0.gate.weight : tensor<4x64xbf16>
  %ids, %rw = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %gu0 = phimoe.weight_ref @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
  %a0 = phimoe.gate_up %x, %gu0 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d0 = phimoe.weight_ref @l0.experts.0.w2.weight : tensor<64x128xbf16>
  %e0 = phimoe.linear %a0, %d0 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu1 = phimoe.weight_ref @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
  %a1 = phimoe.gate_up %x, %gu1 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d1 = phimoe.weight_ref @l0.experts.1.w2.weight : tensor<64x128xbf16>
  %e1 = phimoe.linear %a1, %d1 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu2 = phimoe.weight_ref @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
  %a2 = phimoe.gate_up %x, %gu2 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d2 = phimoe.weight_ref @l0.experts.2.w2.weight : tensor<64x128xbf16>
  %e2 = phimoe.linear %a2, %d2 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu3 = phimoe.weight_ref @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
  %a3 = phimoe.gate_up %x, %gu3 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d3 = phimoe.weight_ref @l0.experts.3.w2.weight : tensor<64x128xbf16>
  %e3 = phimoe.linear %a3, %d3 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw, %e2, %e0, %e3, %e1 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// Mixtral-style routing (softmax_topk, top_k = 1 here) and quantized experts:
// the kind and attributes carry over, the stacks keep the scheme, and the
// router's ids, which are also returned, still come from the router.

phimoe.weight @l0.experts.0.gate_up.weight : !phimoe.qweight<q8_0, [256, 64]>
phimoe.weight @l0.experts.0.w2.weight : !phimoe.qweight<q8_0, [64, 128]>
phimoe.weight @l0.experts.1.gate_up.weight : !phimoe.qweight<q8_0, [256, 64]>
phimoe.weight @l0.experts.1.w2.weight : !phimoe.qweight<q8_0, [64, 128]>
phimoe.weight @l0.experts.2.gate_up.weight : !phimoe.qweight<q8_0, [256, 64]>
phimoe.weight @l0.experts.2.w2.weight : !phimoe.qweight<q8_0, [64, 128]>
phimoe.weight @l0.experts.3.gate_up.weight : !phimoe.qweight<q8_0, [256, 64]>
phimoe.weight @l0.experts.3.w2.weight : !phimoe.qweight<q8_0, [64, 128]>
phimoe.weight @l0.gate.weight : tensor<4x64xbf16>

// CHECK-DAG: phimoe.weight [[GU:@[a-z0-9_.]+]] = stack [@l0.experts.0.gate_up.weight, @l0.experts.1.gate_up.weight, @l0.experts.2.gate_up.weight, @l0.experts.3.gate_up.weight] : !phimoe.qweight<q8_0, [4, 256, 64]>
// CHECK-DAG: phimoe.weight [[DN:@[a-z0-9_.]+]] = stack [@l0.experts.0.w2.weight, @l0.experts.1.w2.weight, @l0.experts.2.w2.weight, @l0.experts.3.w2.weight] : !phimoe.qweight<q8_0, [4, 64, 128]>
// CHECK-LABEL: func.func @moe_softmax_topk_quantized
// CHECK-SAME: ([[X:%.+]]: tensor<?x64xf32>)
// CHECK: [[WG:%.+]] = phimoe.weight_ref @l0.gate.weight
// CHECK: [[IDS:%.+]], {{%.+}} = phimoe.router softmax_topk [[X]], [[WG]]
// CHECK-DAG: [[GUR:%.+]] = phimoe.weight_ref [[GU]]
// CHECK-DAG: [[DNR:%.+]] = phimoe.weight_ref [[DN]]
// CHECK: [[Y:%.+]] = phimoe.moe softmax_topk [[X]], [[WG]], [[GUR]], [[DNR]] {epsilon = 0.000000e+00 : f64, top_k = 1 : i64} : tensor<?x64xf32>, tensor<4x64xbf16>, !phimoe.qweight<q8_0, [4, 256, 64]>, !phimoe.qweight<q8_0, [4, 64, 128]>
// CHECK-NOT: phimoe.gate_up
// CHECK-NOT: phimoe.moe_combine
// CHECK: return [[Y]], [[IDS]]
func.func @moe_softmax_topk_quantized(%x: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<?x1xi32>) {
  %wg = phimoe.weight_ref @l0.gate.weight : tensor<4x64xbf16>
  %ids, %rw = phimoe.router softmax_topk %x, %wg {epsilon = 0.0 : f64, top_k = 1 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x1xi32>, tensor<?x1xf32>
  %gu0 = phimoe.weight_ref @l0.experts.0.gate_up.weight : !phimoe.qweight<q8_0, [256, 64]>
  %a0 = phimoe.gate_up %x, %gu0 : tensor<?x64xf32>, !phimoe.qweight<q8_0, [256, 64]> -> tensor<?x128xf32>
  %d0 = phimoe.weight_ref @l0.experts.0.w2.weight : !phimoe.qweight<q8_0, [64, 128]>
  %e0 = phimoe.linear %a0, %d0 : tensor<?x128xf32>, !phimoe.qweight<q8_0, [64, 128]> -> tensor<?x64xf32>
  %gu1 = phimoe.weight_ref @l0.experts.1.gate_up.weight : !phimoe.qweight<q8_0, [256, 64]>
  %a1 = phimoe.gate_up %x, %gu1 : tensor<?x64xf32>, !phimoe.qweight<q8_0, [256, 64]> -> tensor<?x128xf32>
  %d1 = phimoe.weight_ref @l0.experts.1.w2.weight : !phimoe.qweight<q8_0, [64, 128]>
  %e1 = phimoe.linear %a1, %d1 : tensor<?x128xf32>, !phimoe.qweight<q8_0, [64, 128]> -> tensor<?x64xf32>
  %gu2 = phimoe.weight_ref @l0.experts.2.gate_up.weight : !phimoe.qweight<q8_0, [256, 64]>
  %a2 = phimoe.gate_up %x, %gu2 : tensor<?x64xf32>, !phimoe.qweight<q8_0, [256, 64]> -> tensor<?x128xf32>
  %d2 = phimoe.weight_ref @l0.experts.2.w2.weight : !phimoe.qweight<q8_0, [64, 128]>
  %e2 = phimoe.linear %a2, %d2 : tensor<?x128xf32>, !phimoe.qweight<q8_0, [64, 128]> -> tensor<?x64xf32>
  %gu3 = phimoe.weight_ref @l0.experts.3.gate_up.weight : !phimoe.qweight<q8_0, [256, 64]>
  %a3 = phimoe.gate_up %x, %gu3 : tensor<?x64xf32>, !phimoe.qweight<q8_0, [256, 64]> -> tensor<?x128xf32>
  %d3 = phimoe.weight_ref @l0.experts.3.w2.weight : !phimoe.qweight<q8_0, [64, 128]>
  %e3 = phimoe.linear %a3, %d3 : tensor<?x128xf32>, !phimoe.qweight<q8_0, [64, 128]> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw, %e0, %e1, %e2, %e3 : tensor<?x1xi32>, tensor<?x1xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y, %ids : tensor<?x64xf32>, tensor<?x1xi32>
}

// -----

// Negative: expert 2's gate_up reads another input than the router.

phimoe.weight @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.0.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.1.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.2.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.3.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.gate.weight : tensor<4x64xbf16>

// CHECK-NOT: stack
// CHECK-LABEL: func.func @moe_expert_other_input
// CHECK-NOT: phimoe.moe {{[a-z]}}
// CHECK: phimoe.router
// CHECK-COUNT-4: phimoe.gate_up
// CHECK: phimoe.moe_combine
// CHECK-NOT: phimoe.moe {{[a-z]}}
func.func @moe_expert_other_input(%x: tensor<?x64xf32>, %z: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wg = phimoe.weight_ref @l0.gate.weight : tensor<4x64xbf16>
  %ids, %rw = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %gu0 = phimoe.weight_ref @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
  %a0 = phimoe.gate_up %x, %gu0 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d0 = phimoe.weight_ref @l0.experts.0.w2.weight : tensor<64x128xbf16>
  %e0 = phimoe.linear %a0, %d0 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu1 = phimoe.weight_ref @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
  %a1 = phimoe.gate_up %x, %gu1 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d1 = phimoe.weight_ref @l0.experts.1.w2.weight : tensor<64x128xbf16>
  %e1 = phimoe.linear %a1, %d1 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu2 = phimoe.weight_ref @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
  %a2 = phimoe.gate_up %z, %gu2 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d2 = phimoe.weight_ref @l0.experts.2.w2.weight : tensor<64x128xbf16>
  %e2 = phimoe.linear %a2, %d2 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu3 = phimoe.weight_ref @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
  %a3 = phimoe.gate_up %x, %gu3 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d3 = phimoe.weight_ref @l0.experts.3.w2.weight : tensor<64x128xbf16>
  %e3 = phimoe.linear %a3, %d3 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw, %e0, %e1, %e2, %e3 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// Negative: the router has four experts but moe_combine reads three outputs
// (the fourth expert, now unused, is erased).

phimoe.weight @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.0.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.1.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.2.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.3.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.gate.weight : tensor<4x64xbf16>

// CHECK-NOT: stack
// CHECK-LABEL: func.func @moe_fewer_outputs_than_experts
// CHECK-NOT: phimoe.moe {{[a-z]}}
// CHECK: phimoe.router
// CHECK-COUNT-3: phimoe.gate_up
// CHECK: phimoe.moe_combine
// CHECK-NOT: phimoe.moe {{[a-z]}}
func.func @moe_fewer_outputs_than_experts(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wg = phimoe.weight_ref @l0.gate.weight : tensor<4x64xbf16>
  %ids, %rw = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %gu0 = phimoe.weight_ref @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
  %a0 = phimoe.gate_up %x, %gu0 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d0 = phimoe.weight_ref @l0.experts.0.w2.weight : tensor<64x128xbf16>
  %e0 = phimoe.linear %a0, %d0 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu1 = phimoe.weight_ref @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
  %a1 = phimoe.gate_up %x, %gu1 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d1 = phimoe.weight_ref @l0.experts.1.w2.weight : tensor<64x128xbf16>
  %e1 = phimoe.linear %a1, %d1 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu2 = phimoe.weight_ref @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
  %a2 = phimoe.gate_up %x, %gu2 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d2 = phimoe.weight_ref @l0.experts.2.w2.weight : tensor<64x128xbf16>
  %e2 = phimoe.linear %a2, %d2 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu3 = phimoe.weight_ref @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
  %a3 = phimoe.gate_up %x, %gu3 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d3 = phimoe.weight_ref @l0.experts.3.w2.weight : tensor<64x128xbf16>
  %e3 = phimoe.linear %a3, %d3 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw, %e0, %e1, %e2 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// Negative: the router has four experts but moe_combine reads five outputs
// (one is never selected).

phimoe.weight @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.0.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.1.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.2.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.3.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.4.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.4.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.gate.weight : tensor<4x64xbf16>

// CHECK-NOT: stack
// CHECK-LABEL: func.func @moe_more_outputs_than_experts
// CHECK-NOT: phimoe.moe {{[a-z]}}
// CHECK: phimoe.router
// CHECK-COUNT-5: phimoe.gate_up
// CHECK: phimoe.moe_combine
// CHECK-NOT: phimoe.moe {{[a-z]}}
func.func @moe_more_outputs_than_experts(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wg = phimoe.weight_ref @l0.gate.weight : tensor<4x64xbf16>
  %ids, %rw = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %gu0 = phimoe.weight_ref @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
  %a0 = phimoe.gate_up %x, %gu0 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d0 = phimoe.weight_ref @l0.experts.0.w2.weight : tensor<64x128xbf16>
  %e0 = phimoe.linear %a0, %d0 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu1 = phimoe.weight_ref @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
  %a1 = phimoe.gate_up %x, %gu1 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d1 = phimoe.weight_ref @l0.experts.1.w2.weight : tensor<64x128xbf16>
  %e1 = phimoe.linear %a1, %d1 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu2 = phimoe.weight_ref @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
  %a2 = phimoe.gate_up %x, %gu2 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d2 = phimoe.weight_ref @l0.experts.2.w2.weight : tensor<64x128xbf16>
  %e2 = phimoe.linear %a2, %d2 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu3 = phimoe.weight_ref @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
  %a3 = phimoe.gate_up %x, %gu3 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d3 = phimoe.weight_ref @l0.experts.3.w2.weight : tensor<64x128xbf16>
  %e3 = phimoe.linear %a3, %d3 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu4 = phimoe.weight_ref @l0.experts.4.gate_up.weight : tensor<256x64xbf16>
  %a4 = phimoe.gate_up %x, %gu4 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d4 = phimoe.weight_ref @l0.experts.4.w2.weight : tensor<64x128xbf16>
  %e4 = phimoe.linear %a4, %d4 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw, %e0, %e1, %e2, %e3, %e4 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// Negative: expert 1's down projection has a bias.

phimoe.weight @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.0.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.1.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.1.w2.bias : tensor<64xbf16>
phimoe.weight @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.2.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.3.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.gate.weight : tensor<4x64xbf16>

// CHECK-NOT: stack
// CHECK-LABEL: func.func @moe_expert_bias
// CHECK-NOT: phimoe.moe {{[a-z]}}
// CHECK: phimoe.router
// CHECK-COUNT-4: phimoe.gate_up
// CHECK: phimoe.moe_combine
// CHECK-NOT: phimoe.moe {{[a-z]}}
func.func @moe_expert_bias(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wg = phimoe.weight_ref @l0.gate.weight : tensor<4x64xbf16>
  %ids, %rw = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %gu0 = phimoe.weight_ref @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
  %a0 = phimoe.gate_up %x, %gu0 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d0 = phimoe.weight_ref @l0.experts.0.w2.weight : tensor<64x128xbf16>
  %e0 = phimoe.linear %a0, %d0 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu1 = phimoe.weight_ref @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
  %a1 = phimoe.gate_up %x, %gu1 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d1 = phimoe.weight_ref @l0.experts.1.w2.weight : tensor<64x128xbf16>
  %b1 = phimoe.weight_ref @l0.experts.1.w2.bias : tensor<64xbf16>
  %e1 = phimoe.linear %a1, %d1, %b1 : tensor<?x128xf32>, tensor<64x128xbf16>, tensor<64xbf16> -> tensor<?x64xf32>
  %gu2 = phimoe.weight_ref @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
  %a2 = phimoe.gate_up %x, %gu2 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d2 = phimoe.weight_ref @l0.experts.2.w2.weight : tensor<64x128xbf16>
  %e2 = phimoe.linear %a2, %d2 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu3 = phimoe.weight_ref @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
  %a3 = phimoe.gate_up %x, %gu3 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d3 = phimoe.weight_ref @l0.experts.3.w2.weight : tensor<64x128xbf16>
  %e3 = phimoe.linear %a3, %d3 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw, %e0, %e1, %e2, %e3 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// Negative: the routing weights come from another router than the ids.

phimoe.weight @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.0.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.1.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.2.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.3.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.gate.weight : tensor<4x64xbf16>

// CHECK-NOT: stack
// CHECK-LABEL: func.func @moe_weights_from_other_router
// CHECK-NOT: phimoe.moe {{[a-z]}}
// CHECK: phimoe.router
// CHECK-COUNT-4: phimoe.gate_up
// CHECK: phimoe.moe_combine
// CHECK-NOT: phimoe.moe {{[a-z]}}
func.func @moe_weights_from_other_router(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wg = phimoe.weight_ref @l0.gate.weight : tensor<4x64xbf16>
  %ids, %rw = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %ids2, %rw2 = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %gu0 = phimoe.weight_ref @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
  %a0 = phimoe.gate_up %x, %gu0 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d0 = phimoe.weight_ref @l0.experts.0.w2.weight : tensor<64x128xbf16>
  %e0 = phimoe.linear %a0, %d0 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu1 = phimoe.weight_ref @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
  %a1 = phimoe.gate_up %x, %gu1 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d1 = phimoe.weight_ref @l0.experts.1.w2.weight : tensor<64x128xbf16>
  %e1 = phimoe.linear %a1, %d1 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu2 = phimoe.weight_ref @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
  %a2 = phimoe.gate_up %x, %gu2 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d2 = phimoe.weight_ref @l0.experts.2.w2.weight : tensor<64x128xbf16>
  %e2 = phimoe.linear %a2, %d2 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu3 = phimoe.weight_ref @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
  %a3 = phimoe.gate_up %x, %gu3 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d3 = phimoe.weight_ref @l0.experts.3.w2.weight : tensor<64x128xbf16>
  %e3 = phimoe.linear %a3, %d3 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw2, %e0, %e1, %e2, %e3 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// Negative: expert 3 is stored in f32, the others in bf16.

phimoe.weight @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.0.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.1.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.2.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.3.gate_up.weight : tensor<256x64xf32>
phimoe.weight @l0.experts.3.w2.weight : tensor<64x128xf32>
phimoe.weight @l0.gate.weight : tensor<4x64xbf16>

// CHECK-NOT: stack
// CHECK-LABEL: func.func @moe_expert_formats_differ
// CHECK-NOT: phimoe.moe {{[a-z]}}
// CHECK: phimoe.router
// CHECK-COUNT-4: phimoe.gate_up
// CHECK: phimoe.moe_combine
// CHECK-NOT: phimoe.moe {{[a-z]}}
func.func @moe_expert_formats_differ(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wg = phimoe.weight_ref @l0.gate.weight : tensor<4x64xbf16>
  %ids, %rw = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %gu0 = phimoe.weight_ref @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
  %a0 = phimoe.gate_up %x, %gu0 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d0 = phimoe.weight_ref @l0.experts.0.w2.weight : tensor<64x128xbf16>
  %e0 = phimoe.linear %a0, %d0 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu1 = phimoe.weight_ref @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
  %a1 = phimoe.gate_up %x, %gu1 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d1 = phimoe.weight_ref @l0.experts.1.w2.weight : tensor<64x128xbf16>
  %e1 = phimoe.linear %a1, %d1 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu2 = phimoe.weight_ref @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
  %a2 = phimoe.gate_up %x, %gu2 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d2 = phimoe.weight_ref @l0.experts.2.w2.weight : tensor<64x128xbf16>
  %e2 = phimoe.linear %a2, %d2 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu3 = phimoe.weight_ref @l0.experts.3.gate_up.weight : tensor<256x64xf32>
  %a3 = phimoe.gate_up %x, %gu3 : tensor<?x64xf32>, tensor<256x64xf32> -> tensor<?x128xf32>
  %d3 = phimoe.weight_ref @l0.experts.3.w2.weight : tensor<64x128xf32>
  %e3 = phimoe.linear %a3, %d3 : tensor<?x128xf32>, tensor<64x128xf32> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw, %e0, %e1, %e2, %e3 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// Negative: expert 0 has another intermediate size (the experts cannot be
// stacked).

phimoe.weight @l0.experts.0.gate_up.weight : tensor<128x64xbf16>
phimoe.weight @l0.experts.0.w2.weight : tensor<64x64xbf16>
phimoe.weight @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.1.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.2.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.3.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.gate.weight : tensor<4x64xbf16>

// CHECK-NOT: stack
// CHECK-LABEL: func.func @moe_expert_shapes_differ
// CHECK-NOT: phimoe.moe {{[a-z]}}
// CHECK: phimoe.router
// CHECK-COUNT-4: phimoe.gate_up
// CHECK: phimoe.moe_combine
// CHECK-NOT: phimoe.moe {{[a-z]}}
func.func @moe_expert_shapes_differ(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wg = phimoe.weight_ref @l0.gate.weight : tensor<4x64xbf16>
  %ids, %rw = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %gu0 = phimoe.weight_ref @l0.experts.0.gate_up.weight : tensor<128x64xbf16>
  %a0 = phimoe.gate_up %x, %gu0 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x64xf32>
  %d0 = phimoe.weight_ref @l0.experts.0.w2.weight : tensor<64x64xbf16>
  %e0 = phimoe.linear %a0, %d0 : tensor<?x64xf32>, tensor<64x64xbf16> -> tensor<?x64xf32>
  %gu1 = phimoe.weight_ref @l0.experts.1.gate_up.weight : tensor<256x64xbf16>
  %a1 = phimoe.gate_up %x, %gu1 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d1 = phimoe.weight_ref @l0.experts.1.w2.weight : tensor<64x128xbf16>
  %e1 = phimoe.linear %a1, %d1 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu2 = phimoe.weight_ref @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
  %a2 = phimoe.gate_up %x, %gu2 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d2 = phimoe.weight_ref @l0.experts.2.w2.weight : tensor<64x128xbf16>
  %e2 = phimoe.linear %a2, %d2 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu3 = phimoe.weight_ref @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
  %a3 = phimoe.gate_up %x, %gu3 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d3 = phimoe.weight_ref @l0.experts.3.w2.weight : tensor<64x128xbf16>
  %e3 = phimoe.linear %a3, %d3 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw, %e0, %e1, %e2, %e3 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// Negative: expert 1's gate_up weight is an argument, not a weight symbol.

phimoe.weight @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.0.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.1.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.2.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @l0.experts.3.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.gate.weight : tensor<4x64xbf16>

// CHECK-NOT: stack
// CHECK-LABEL: func.func @moe_weight_not_symbol
// CHECK-NOT: phimoe.moe {{[a-z]}}
// CHECK: phimoe.router
// CHECK-COUNT-4: phimoe.gate_up
// CHECK: phimoe.moe_combine
// CHECK-NOT: phimoe.moe {{[a-z]}}
func.func @moe_weight_not_symbol(%x: tensor<?x64xf32>, %gu1: tensor<256x64xbf16>) -> tensor<?x64xf32> {
  %wg = phimoe.weight_ref @l0.gate.weight : tensor<4x64xbf16>
  %ids, %rw = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<4x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %gu0 = phimoe.weight_ref @l0.experts.0.gate_up.weight : tensor<256x64xbf16>
  %a0 = phimoe.gate_up %x, %gu0 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d0 = phimoe.weight_ref @l0.experts.0.w2.weight : tensor<64x128xbf16>
  %e0 = phimoe.linear %a0, %d0 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %a1 = phimoe.gate_up %x, %gu1 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d1 = phimoe.weight_ref @l0.experts.1.w2.weight : tensor<64x128xbf16>
  %e1 = phimoe.linear %a1, %d1 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu2 = phimoe.weight_ref @l0.experts.2.gate_up.weight : tensor<256x64xbf16>
  %a2 = phimoe.gate_up %x, %gu2 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d2 = phimoe.weight_ref @l0.experts.2.w2.weight : tensor<64x128xbf16>
  %e2 = phimoe.linear %a2, %d2 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu3 = phimoe.weight_ref @l0.experts.3.gate_up.weight : tensor<256x64xbf16>
  %a3 = phimoe.gate_up %x, %gu3 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d3 = phimoe.weight_ref @l0.experts.3.w2.weight : tensor<64x128xbf16>
  %e3 = phimoe.linear %a3, %d3 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw, %e0, %e1, %e2, %e3 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}


// -----

// Negative: the experts are not gate_up-fused yet (linear, silu, mul, linear):
// phimoe-fuse-moe matches only the gate_up form (phimoe-fuse-gate-up runs
// first in the pipeline).

phimoe.weight @l0.experts.0.w1.weight : tensor<128x64xbf16>
phimoe.weight @l0.experts.0.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.0.w3.weight : tensor<128x64xbf16>
phimoe.weight @l0.experts.1.w1.weight : tensor<128x64xbf16>
phimoe.weight @l0.experts.1.w2.weight : tensor<64x128xbf16>
phimoe.weight @l0.experts.1.w3.weight : tensor<128x64xbf16>
phimoe.weight @l0.gate.weight : tensor<2x64xbf16>

// CHECK-NOT: stack
// CHECK-LABEL: func.func @moe_experts_unfused
// CHECK-NOT: phimoe.moe {{[a-z]}}
// CHECK: phimoe.router
// CHECK-COUNT-6: phimoe.linear
// CHECK: phimoe.moe_combine
// CHECK-NOT: phimoe.moe {{[a-z]}}
func.func @moe_experts_unfused(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wg = phimoe.weight_ref @l0.gate.weight : tensor<2x64xbf16>
  %ids, %rw = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<2x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %w10 = phimoe.weight_ref @l0.experts.0.w1.weight : tensor<128x64xbf16>
  %w30 = phimoe.weight_ref @l0.experts.0.w3.weight : tensor<128x64xbf16>
  %w20 = phimoe.weight_ref @l0.experts.0.w2.weight : tensor<64x128xbf16>
  %g0 = phimoe.linear %x, %w10 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %u0 = phimoe.linear %x, %w30 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %s0 = phimoe.silu %g0 : tensor<?x128xf32>
  %m0 = phimoe.mul %s0, %u0 : tensor<?x128xf32>
  %e0 = phimoe.linear %m0, %w20 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %w11 = phimoe.weight_ref @l0.experts.1.w1.weight : tensor<128x64xbf16>
  %w31 = phimoe.weight_ref @l0.experts.1.w3.weight : tensor<128x64xbf16>
  %w21 = phimoe.weight_ref @l0.experts.1.w2.weight : tensor<64x128xbf16>
  %g1 = phimoe.linear %x, %w11 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %u1 = phimoe.linear %x, %w31 : tensor<?x64xf32>, tensor<128x64xbf16> -> tensor<?x128xf32>
  %s1 = phimoe.silu %g1 : tensor<?x128xf32>
  %m1 = phimoe.mul %s1, %u1 : tensor<?x128xf32>
  %e1 = phimoe.linear %m1, %w21 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw, %e0, %e1 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// phi-2 MLP experts (phixtral): linear(gelu(linear(x, fc1, b1)), fc2, b2) per expert, in any
// order in the combine, fuse into one moe_gelu over the four stacks (in expert order).

phimoe.weight @h.0.moe.gate.weight : tensor<2x64xf32>
phimoe.weight @h.0.moe.mlp.0.fc1.weight : tensor<128x64xf32>
phimoe.weight @h.0.moe.mlp.0.fc1.bias : tensor<128xf32>
phimoe.weight @h.0.moe.mlp.0.fc2.weight : tensor<64x128xf32>
phimoe.weight @h.0.moe.mlp.0.fc2.bias : tensor<64xf32>
phimoe.weight @h.0.moe.mlp.1.fc1.weight : tensor<128x64xf32>
phimoe.weight @h.0.moe.mlp.1.fc1.bias : tensor<128xf32>
phimoe.weight @h.0.moe.mlp.1.fc2.weight : tensor<64x128xf32>
phimoe.weight @h.0.moe.mlp.1.fc2.bias : tensor<64xf32>

// CHECK-DAG: phimoe.weight @h.0.moe.mlp.fc1.weight = stack [@h.0.moe.mlp.0.fc1.weight, @h.0.moe.mlp.1.fc1.weight] : tensor<2x128x64xf32>
// CHECK-DAG: phimoe.weight @h.0.moe.mlp.fc1.bias = stack [@h.0.moe.mlp.0.fc1.bias, @h.0.moe.mlp.1.fc1.bias] : tensor<2x128xf32>
// CHECK-DAG: phimoe.weight @h.0.moe.mlp.fc2.weight = stack [@h.0.moe.mlp.0.fc2.weight, @h.0.moe.mlp.1.fc2.weight] : tensor<2x64x128xf32>
// CHECK-DAG: phimoe.weight @h.0.moe.mlp.fc2.bias = stack [@h.0.moe.mlp.0.fc2.bias, @h.0.moe.mlp.1.fc2.bias] : tensor<2x64xf32>
// CHECK-LABEL: func.func @moe_gelu
// CHECK-SAME: ([[X:%.+]]: tensor<?x64xf32>)
// CHECK: [[Y:%.+]] = phimoe.moe_gelu softmax_topk [[X]], {{.*}} {epsilon = 0.000000e+00 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<2x64xf32>, tensor<2x128x64xf32>, tensor<2x128xf32>, tensor<2x64x128xf32>, tensor<2x64xf32>
// CHECK-NOT: phimoe.gelu
// CHECK-NOT: phimoe.moe_combine
// CHECK: return [[Y]]
func.func @moe_gelu(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %wg = phimoe.weight_ref @h.0.moe.gate.weight : tensor<2x64xf32>
  %ids, %rw = phimoe.router softmax_topk %x, %wg {epsilon = 0.0 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<2x64xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %a0 = phimoe.weight_ref @h.0.moe.mlp.0.fc1.weight : tensor<128x64xf32>
  %b0 = phimoe.weight_ref @h.0.moe.mlp.0.fc1.bias : tensor<128xf32>
  %f0 = phimoe.linear %x, %a0, %b0 : tensor<?x64xf32>, tensor<128x64xf32>, tensor<128xf32> -> tensor<?x128xf32>
  %g0 = phimoe.gelu %f0 : tensor<?x128xf32>
  %c0 = phimoe.weight_ref @h.0.moe.mlp.0.fc2.weight : tensor<64x128xf32>
  %d0 = phimoe.weight_ref @h.0.moe.mlp.0.fc2.bias : tensor<64xf32>
  %e0 = phimoe.linear %g0, %c0, %d0 : tensor<?x128xf32>, tensor<64x128xf32>, tensor<64xf32> -> tensor<?x64xf32>
  %a1 = phimoe.weight_ref @h.0.moe.mlp.1.fc1.weight : tensor<128x64xf32>
  %b1 = phimoe.weight_ref @h.0.moe.mlp.1.fc1.bias : tensor<128xf32>
  %f1 = phimoe.linear %x, %a1, %b1 : tensor<?x64xf32>, tensor<128x64xf32>, tensor<128xf32> -> tensor<?x128xf32>
  %g1 = phimoe.gelu %f1 : tensor<?x128xf32>
  %c1 = phimoe.weight_ref @h.0.moe.mlp.1.fc2.weight : tensor<64x128xf32>
  %d1 = phimoe.weight_ref @h.0.moe.mlp.1.fc2.bias : tensor<64xf32>
  %e1 = phimoe.linear %g1, %c1, %d1 : tensor<?x128xf32>, tensor<64x128xf32>, tensor<64xf32> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %ids, %rw, %e0, %e1 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}
