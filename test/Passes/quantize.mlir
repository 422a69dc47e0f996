// Each scheme on a small model (hidden 256, so that k-quant blocks fit): the
// expected storage of each role comes in as FileCheck variables: EMB (the
// embedding table, [96, 256]), BODY (attention projections, [256, 256]), EXP
// (expert linears, [256, 256]), GU (an expert's gate_up, [512, 256]), LMH (the
// LM head, [96, 256]) and VEC (element type of norms and biases).
//
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize \
// RUN: | FileCheck %s --check-prefixes=CHECK,MODEL,Q8 -DVEC=f32 \
// RUN:   -DEMB='!phimoe.qweight<q8_0, [96, 256]>' -DBODY='!phimoe.qweight<q8_0, [256, 256]>' \
// RUN:   -DEXP='!phimoe.qweight<q8_0, [256, 256]>' -DGU='!phimoe.qweight<q8_0, [512, 256]>' \
// RUN:   -DLMH='!phimoe.qweight<q8_0, [96, 256]>'
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize=scheme=q8_0 \
// RUN: | FileCheck %s --check-prefixes=CHECK,MODEL,Q8 -DVEC=f32 \
// RUN:   -DEMB='!phimoe.qweight<q8_0, [96, 256]>' -DBODY='!phimoe.qweight<q8_0, [256, 256]>' \
// RUN:   -DEXP='!phimoe.qweight<q8_0, [256, 256]>' -DGU='!phimoe.qweight<q8_0, [512, 256]>' \
// RUN:   -DLMH='!phimoe.qweight<q8_0, [96, 256]>'
//
// Under a 4- or 5-bit body the LM head defaults to q6k, under a 6-bit body to
// q8_0; under a 4-, 5- or 6-bit body the embedding defaults to q8_0
// (bench/lm_head_choice.py measured these).
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize=scheme=q4k \
// RUN: | FileCheck %s --check-prefixes=CHECK,MODEL,Q4K -DVEC=f32 \
// RUN:   -DEMB='!phimoe.qweight<q8_0, [96, 256]>' -DBODY='!phimoe.qweight<q4k, [256, 256]>' \
// RUN:   -DEXP='!phimoe.qweight<q4k, [256, 256]>' -DGU='!phimoe.qweight<q4k, [512, 256]>' \
// RUN:   -DLMH='!phimoe.qweight<q6k, [96, 256]>'
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize=scheme=q5k \
// RUN: | FileCheck %s --check-prefixes=CHECK,MODEL -DVEC=f32 \
// RUN:   -DEMB='!phimoe.qweight<q8_0, [96, 256]>' -DBODY='!phimoe.qweight<q5k, [256, 256]>' \
// RUN:   -DEXP='!phimoe.qweight<q5k, [256, 256]>' -DGU='!phimoe.qweight<q5k, [512, 256]>' \
// RUN:   -DLMH='!phimoe.qweight<q6k, [96, 256]>'
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize=scheme=q4_0 \
// RUN: | FileCheck %s --check-prefixes=CHECK,MODEL,Q40 -DVEC=f32 \
// RUN:   -DEMB='!phimoe.qweight<q8_0, [96, 256]>' -DBODY='!phimoe.qweight<q4_0, [256, 256]>' \
// RUN:   -DEXP='!phimoe.qweight<q4_0, [256, 256]>' -DGU='!phimoe.qweight<q4_0, [512, 256]>' \
// RUN:   -DLMH='!phimoe.qweight<q6k, [96, 256]>'
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize=scheme=q6k \
// RUN: | FileCheck %s --check-prefixes=CHECK,MODEL -DVEC=f32 \
// RUN:   -DEMB='!phimoe.qweight<q8_0, [96, 256]>' -DBODY='!phimoe.qweight<q6k, [256, 256]>' \
// RUN:   -DEXP='!phimoe.qweight<q6k, [256, 256]>' -DGU='!phimoe.qweight<q6k, [512, 256]>' \
// RUN:   -DLMH='!phimoe.qweight<q8_0, [96, 256]>'
//
// Float schemes: every 2-D weight but the router takes the element type (the
// LM head and embedding too); norms and biases are f32.
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize=scheme=bf16 \
// RUN: | FileCheck %s --check-prefixes=CHECK,MODEL,BF16 -DVEC=f32 \
// RUN:   -DEMB='tensor<96x256xbf16>' -DBODY='tensor<256x256xbf16>' -DEXP='tensor<256x256xbf16>' \
// RUN:   -DGU='tensor<512x256xbf16>' -DLMH='tensor<96x256xbf16>'
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize=scheme=f16 \
// RUN: | FileCheck %s --check-prefixes=CHECK,MODEL -DVEC=f32 \
// RUN:   -DEMB='tensor<96x256xf16>' -DBODY='tensor<256x256xf16>' -DEXP='tensor<256x256xf16>' \
// RUN:   -DGU='tensor<512x256xf16>' -DLMH='tensor<96x256xf16>'
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize=scheme=f32 \
// RUN: | FileCheck %s --check-prefixes=CHECK,MODEL -DVEC=f32 \
// RUN:   -DEMB='tensor<96x256xf32>' -DBODY='tensor<256x256xf32>' -DEXP='tensor<256x256xf32>' \
// RUN:   -DGU='tensor<512x256xf32>' -DLMH='tensor<96x256xf32>'
//
// keep: nothing changes, norms and biases included.
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize=scheme=keep \
// RUN: | FileCheck %s --check-prefixes=CHECK,MODEL -DVEC=bf16 \
// RUN:   -DEMB='tensor<96x256xbf16>' -DBODY='tensor<256x256xbf16>' -DEXP='tensor<256x256xbf16>' \
// RUN:   -DGU='tensor<512x256xbf16>' -DLMH='tensor<96x256xbf16>'
//
// scope=experts (MoQE): only the experts take the scheme; the attention, the
// embedding and the LM head (auto) stay as declared; norms and biases are
// f32 as under every scheme but keep.
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize='scheme=q4k scope=experts' \
// RUN: | FileCheck %s --check-prefixes=CHECK,MODEL,MOQE -DVEC=f32 \
// RUN:   -DEMB='tensor<96x256xbf16>' -DBODY='tensor<256x256xbf16>' \
// RUN:   -DEXP='!phimoe.qweight<q4k, [256, 256]>' -DGU='!phimoe.qweight<q4k, [512, 256]>' \
// RUN:   -DLMH='tensor<96x256xbf16>'
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize='scheme=q4k scope=all' \
// RUN: | FileCheck %s --check-prefixes=CHECK,MODEL,Q4K -DVEC=f32 \
// RUN:   -DEMB='!phimoe.qweight<q8_0, [96, 256]>' -DBODY='!phimoe.qweight<q4k, [256, 256]>' \
// RUN:   -DEXP='!phimoe.qweight<q4k, [256, 256]>' -DGU='!phimoe.qweight<q4k, [512, 256]>' \
// RUN:   -DLMH='!phimoe.qweight<q6k, [96, 256]>'
//
// Explicit lm-head and embedding values, with scope=all and with MoQE, and
// keep for both.
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize='scheme=q4k lm-head=q8_0 embedding=f16' \
// RUN: | FileCheck %s --check-prefixes=CHECK,MODEL -DVEC=f32 \
// RUN:   -DEMB='tensor<96x256xf16>' -DBODY='!phimoe.qweight<q4k, [256, 256]>' \
// RUN:   -DEXP='!phimoe.qweight<q4k, [256, 256]>' -DGU='!phimoe.qweight<q4k, [512, 256]>' \
// RUN:   -DLMH='!phimoe.qweight<q8_0, [96, 256]>'
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize='scheme=q4k scope=experts lm-head=q6k embedding=q8_0' \
// RUN: | FileCheck %s --check-prefixes=CHECK,MODEL -DVEC=f32 \
// RUN:   -DEMB='!phimoe.qweight<q8_0, [96, 256]>' -DBODY='tensor<256x256xbf16>' \
// RUN:   -DEXP='!phimoe.qweight<q4k, [256, 256]>' -DGU='!phimoe.qweight<q4k, [512, 256]>' \
// RUN:   -DLMH='!phimoe.qweight<q6k, [96, 256]>'
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize='scheme=q8_0 lm-head=keep embedding=keep' \
// RUN: | FileCheck %s --check-prefixes=CHECK,MODEL -DVEC=f32 \
// RUN:   -DEMB='tensor<96x256xbf16>' -DBODY='!phimoe.qweight<q8_0, [256, 256]>' \
// RUN:   -DEXP='!phimoe.qweight<q8_0, [256, 256]>' -DGU='!phimoe.qweight<q8_0, [512, 256]>' \
// RUN:   -DLMH='tensor<96x256xbf16>'
//
// Overrides: embed_tokens=q4k beats the embedding's auto q8_0; o_proj=q6k
// comes after self_attn=f16 and wins; the block types of _proj\.bias and
// input_layernorm do not apply to 1-D weights (q_proj.bias keeps the f16 of
// self_attn, the norm stays f32); experts\.0\.=keep keeps expert 0 as
// declared; experts\.1\.w3 matches only a part of expert 1's derived
// gate_up; lm_head=keep keeps the LM head and its bias.
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize='scheme=q4k override=embed_tokens=q4k,self_attn=f16,o_proj=q6k,_proj\.bias=q8_0,input_layernorm=q8_0,experts\.0\.=keep,experts\.1\.w3=q8_0,lm_head=keep' \
// RUN: | FileCheck %s --check-prefixes=CHECK,OVR
//
// An override that matches the router warns (once, at the router weight) and
// leaves it as declared; the experts and norms it matches take it.
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize='override=layers\.7\.=f16' \
// RUN: | FileCheck %s --check-prefixes=CHECK,ROUTER
// RUN: phimoe-opt %s -split-input-file --phimoe-quantize='override=layers\.7\.=f16' 2>&1 >/dev/null \
// RUN: | FileCheck %s --check-prefix=WARN
//
// Bad option values.
// RUN: not phimoe-opt %s -split-input-file --phimoe-quantize=scheme=q3 2>&1 \
// RUN: | FileCheck %s --check-prefix=ERR-SCHEME
// RUN: not phimoe-opt %s -split-input-file --phimoe-quantize=scheme=auto 2>&1 \
// RUN: | FileCheck %s --check-prefix=ERR-SCHEME-AUTO
// RUN: not phimoe-opt %s -split-input-file --phimoe-quantize=scope=attention 2>&1 \
// RUN: | FileCheck %s --check-prefix=ERR-SCOPE
// RUN: not phimoe-opt %s -split-input-file --phimoe-quantize=lm-head=q2 2>&1 \
// RUN: | FileCheck %s --check-prefix=ERR-LMHEAD
// RUN: not phimoe-opt %s -split-input-file --phimoe-quantize=embedding=int8 2>&1 \
// RUN: | FileCheck %s --check-prefix=ERR-EMBEDDING
// RUN: not phimoe-opt %s -split-input-file --phimoe-quantize=override=lm_head 2>&1 \
// RUN: | FileCheck %s --check-prefix=ERR-NOTYPE
// RUN: not phimoe-opt %s -split-input-file --phimoe-quantize='override==q8_0' 2>&1 \
// RUN: | FileCheck %s --check-prefix=ERR-NOREGEX
// RUN: not phimoe-opt %s -split-input-file --phimoe-quantize='override=lm_head=q3_k' 2>&1 \
// RUN: | FileCheck %s --check-prefix=ERR-TYPE
// RUN: not phimoe-opt %s -split-input-file --phimoe-quantize='override=experts\.(0=q8_0' 2>&1 \
// RUN: | FileCheck %s --check-prefix=ERR-REGEX
// RUN: not phimoe-opt %s -split-input-file --phimoe-quantize='override=lm_head=q8_0,w2=f8' 2>&1 \
// RUN: | FileCheck %s --check-prefix=ERR-SECOND

// ERR-SCHEME: error: phimoe-quantize: unknown scheme 'q3' (expected keep, f32, f16, bf16, q8_0, q4_0, q4k, q5k or q6k)
// ERR-SCHEME-AUTO: error: phimoe-quantize: unknown scheme 'auto'
// ERR-SCOPE: error: phimoe-quantize: unknown scope 'attention' (expected all or experts)
// ERR-LMHEAD: error: phimoe-quantize: unknown lm-head 'q2'
// ERR-EMBEDDING: error: phimoe-quantize: unknown embedding 'int8'
// ERR-NOTYPE: error: phimoe-quantize: override 'lm_head' is not REGEX=TYPE
// ERR-NOREGEX: error: phimoe-quantize: override '=q8_0' is not REGEX=TYPE
// ERR-TYPE: error: phimoe-quantize: unknown override type 'q3_k'
// ERR-REGEX: error: phimoe-quantize: override 'experts\.(0=q8_0' has an invalid regex: parentheses not balanced
// ERR-SECOND: error: phimoe-quantize: unknown override type 'f8'

// A one-layer model, unfused: embedding, a norm, two attention projections
// (one biased), the router, expert 0 as linears (w1, w3, silu·mul, w2) and
// expert 1 as gate_up over a derived weight, the LM head with a bias, and a
// weight that nothing reads (it keeps its type).

phimoe.weight @model.embed_tokens.weight : tensor<96x256xbf16>
phimoe.weight @model.layers.0.input_layernorm.weight : tensor<256xbf16>
phimoe.weight @model.layers.0.input_layernorm.bias : tensor<256xbf16>
phimoe.weight @model.layers.0.self_attn.q_proj.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.self_attn.q_proj.bias : tensor<256xbf16>
phimoe.weight @model.layers.0.self_attn.o_proj.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.gate.weight : tensor<2x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w1.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w3.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w1.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w2.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w3.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.1.gate_up.weight = concat [@model.layers.0.block_sparse_moe.experts.1.w1.weight, @model.layers.0.block_sparse_moe.experts.1.w3.weight] : tensor<512x256xbf16>
phimoe.weight @lm_head.weight : tensor<96x256xbf16>
phimoe.weight @lm_head.bias : tensor<96xbf16>
phimoe.weight @model.unused.weight : tensor<256x256xbf16>

// MODEL:      phimoe.weight @model.embed_tokens.weight : [[EMB]]
// MODEL-NEXT: phimoe.weight @model.layers.0.input_layernorm.weight : tensor<256x[[VEC]]>
// MODEL-NEXT: phimoe.weight @model.layers.0.input_layernorm.bias : tensor<256x[[VEC]]>
// MODEL-NEXT: phimoe.weight @model.layers.0.self_attn.q_proj.weight : [[BODY]]
// MODEL-NEXT: phimoe.weight @model.layers.0.self_attn.q_proj.bias : tensor<256x[[VEC]]>
// MODEL-NEXT: phimoe.weight @model.layers.0.self_attn.o_proj.weight : [[BODY]]
// MODEL-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.gate.weight : tensor<2x256xbf16>
// MODEL-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w1.weight : [[EXP]]
// MODEL-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w2.weight : [[EXP]]
// MODEL-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w3.weight : [[EXP]]
// MODEL-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w1.weight : tensor<256x256xbf16>
// MODEL-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w2.weight : [[EXP]]
// MODEL-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w3.weight : tensor<256x256xbf16>
// MODEL-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.1.gate_up.weight = concat [@model.layers.0.block_sparse_moe.experts.1.w1.weight, @model.layers.0.block_sparse_moe.experts.1.w3.weight] : [[GU]]
// MODEL-NEXT: phimoe.weight @lm_head.weight : [[LMH]]
// MODEL-NEXT: phimoe.weight @lm_head.bias : tensor<96x[[VEC]]>
// MODEL-NEXT: phimoe.weight @model.unused.weight : tensor<256x256xbf16>

// OVR:      phimoe.weight @model.embed_tokens.weight : !phimoe.qweight<q4k, [96, 256]>
// OVR-NEXT: phimoe.weight @model.layers.0.input_layernorm.weight : tensor<256xf32>
// OVR-NEXT: phimoe.weight @model.layers.0.input_layernorm.bias : tensor<256xf32>
// OVR-NEXT: phimoe.weight @model.layers.0.self_attn.q_proj.weight : tensor<256x256xf16>
// OVR-NEXT: phimoe.weight @model.layers.0.self_attn.q_proj.bias : tensor<256xf16>
// OVR-NEXT: phimoe.weight @model.layers.0.self_attn.o_proj.weight : !phimoe.qweight<q6k, [256, 256]>
// OVR-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.gate.weight : tensor<2x256xbf16>
// OVR-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w1.weight : tensor<256x256xbf16>
// OVR-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<256x256xbf16>
// OVR-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w3.weight : tensor<256x256xbf16>
// OVR-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w1.weight : tensor<256x256xbf16>
// OVR-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w2.weight : !phimoe.qweight<q4k, [256, 256]>
// OVR-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w3.weight : tensor<256x256xbf16>
// OVR-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.1.gate_up.weight = concat [@model.layers.0.block_sparse_moe.experts.1.w1.weight, @model.layers.0.block_sparse_moe.experts.1.w3.weight] : !phimoe.qweight<q8_0, [512, 256]>
// OVR-NEXT: phimoe.weight @lm_head.weight : tensor<96x256xbf16>
// OVR-NEXT: phimoe.weight @lm_head.bias : tensor<96xbf16>
// OVR-NEXT: phimoe.weight @model.unused.weight : tensor<256x256xbf16>

// The refs take the new types, and so do the ops' operand types.
// CHECK-LABEL: func.func @model
// MODEL: [[E:%.+]] = phimoe.weight_ref @model.embed_tokens.weight : [[EMB]]
// MODEL: phimoe.embed {{%.+}}, [[E]] : tensor<?xi32>, [[EMB]] -> tensor<?x256xf32>
// MODEL: phimoe.layer_norm {{%.+}}, {{%.+}}, {{%.+}} {epsilon = 1.000000e-05 : f64} : tensor<?x256xf32>, tensor<256x[[VEC]]>
// MODEL: [[WQ:%.+]] = phimoe.weight_ref @model.layers.0.self_attn.q_proj.weight : [[BODY]]
// MODEL: [[BQ:%.+]] = phimoe.weight_ref @model.layers.0.self_attn.q_proj.bias : tensor<256x[[VEC]]>
// MODEL: phimoe.linear {{%.+}}, [[WQ]], [[BQ]] : tensor<?x256xf32>, [[BODY]], tensor<256x[[VEC]]> -> tensor<?x256xf32>
// MODEL: phimoe.router sparsemixer {{%.+}}, {{%.+}} {{.*}}: tensor<?x256xf32>, tensor<2x256xbf16>
// MODEL: phimoe.linear {{%.+}}, {{%.+}} : tensor<?x256xf32>, [[EXP]] -> tensor<?x256xf32>
// MODEL: phimoe.gate_up {{%.+}}, {{%.+}} : tensor<?x256xf32>, [[GU]] -> tensor<?x256xf32>
// MODEL: phimoe.lm_head {{%.+}}, {{%.+}}, {{%.+}} : tensor<?x256xf32>, [[LMH]], tensor<96x[[VEC]]> -> tensor<?x96xf32>
func.func @model(%ids: tensor<?xi32>) -> tensor<?x96xf32> {
  %emb = phimoe.weight_ref @model.embed_tokens.weight : tensor<96x256xbf16>
  %h = phimoe.embed %ids, %emb : tensor<?xi32>, tensor<96x256xbf16> -> tensor<?x256xf32>
  %lnw = phimoe.weight_ref @model.layers.0.input_layernorm.weight : tensor<256xbf16>
  %lnb = phimoe.weight_ref @model.layers.0.input_layernorm.bias : tensor<256xbf16>
  %x = phimoe.layer_norm %h, %lnw, %lnb {epsilon = 1.0e-05 : f64} : tensor<?x256xf32>, tensor<256xbf16>
  %wq = phimoe.weight_ref @model.layers.0.self_attn.q_proj.weight : tensor<256x256xbf16>
  %bq = phimoe.weight_ref @model.layers.0.self_attn.q_proj.bias : tensor<256xbf16>
  %q = phimoe.linear %x, %wq, %bq : tensor<?x256xf32>, tensor<256x256xbf16>, tensor<256xbf16> -> tensor<?x256xf32>
  %wo = phimoe.weight_ref @model.layers.0.self_attn.o_proj.weight : tensor<256x256xbf16>
  %o = phimoe.linear %q, %wo : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
  %h1 = phimoe.add %h, %o : tensor<?x256xf32>
  %wg = phimoe.weight_ref @model.layers.0.block_sparse_moe.gate.weight : tensor<2x256xbf16>
  %sel, %rw = phimoe.router sparsemixer %h1, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x256xf32>, tensor<2x256xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %w1 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w1.weight : tensor<256x256xbf16>
  %w3 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w3.weight : tensor<256x256xbf16>
  %w2 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<256x256xbf16>
  %g = phimoe.linear %h1, %w1 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
  %u = phimoe.linear %h1, %w3 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
  %s = phimoe.silu %g : tensor<?x256xf32>
  %m = phimoe.mul %s, %u : tensor<?x256xf32>
  %e0 = phimoe.linear %m, %w2 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
  %gu1 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.gate_up.weight : tensor<512x256xbf16>
  %a1 = phimoe.gate_up %h1, %gu1 : tensor<?x256xf32>, tensor<512x256xbf16> -> tensor<?x256xf32>
  %w21 = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.1.w2.weight : tensor<256x256xbf16>
  %e1 = phimoe.linear %a1, %w21 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
  %y = phimoe.moe_combine %sel, %rw, %e0, %e1 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x256xf32>, tensor<?x256xf32> -> tensor<?x256xf32>
  %h2 = phimoe.add %h1, %y : tensor<?x256xf32>
  %lw = phimoe.weight_ref @lm_head.weight : tensor<96x256xbf16>
  %lb = phimoe.weight_ref @lm_head.bias : tensor<96xbf16>
  %logits = phimoe.lm_head %h2, %lw, %lb : tensor<?x256xf32>, tensor<96x256xbf16>, tensor<96xbf16> -> tensor<?x96xf32>
  return %logits : tensor<?x96xf32>
}

// -----

// The fused form: a concatenated qkv weight and bias, and phimoe.moe over
// stacked expert weights (stacks of concatenated w1/w3, and of w2). The
// derived weights take the type of their role; their parts, which no function
// reads, keep theirs; the router weight of phimoe.moe is never quantized.

phimoe.weight @model.layers.0.self_attn.q_proj.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.self_attn.k_proj.weight : tensor<128x256xbf16>
phimoe.weight @model.layers.0.self_attn.v_proj.weight : tensor<128x256xbf16>
phimoe.weight @model.layers.0.self_attn.qkv_proj.weight = concat [@model.layers.0.self_attn.q_proj.weight, @model.layers.0.self_attn.k_proj.weight, @model.layers.0.self_attn.v_proj.weight] : tensor<512x256xbf16>
phimoe.weight @model.layers.0.self_attn.q_proj.bias : tensor<256xbf16>
phimoe.weight @model.layers.0.self_attn.k_proj.bias : tensor<128xbf16>
phimoe.weight @model.layers.0.self_attn.v_proj.bias : tensor<128xbf16>
phimoe.weight @model.layers.0.self_attn.qkv_proj.bias = concat [@model.layers.0.self_attn.q_proj.bias, @model.layers.0.self_attn.k_proj.bias, @model.layers.0.self_attn.v_proj.bias] : tensor<512xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.gate.weight : tensor<2x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w1.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w3.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.0.gate_up.weight = concat [@model.layers.0.block_sparse_moe.experts.0.w1.weight, @model.layers.0.block_sparse_moe.experts.0.w3.weight] : tensor<512x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w1.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w2.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w3.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.1.gate_up.weight = concat [@model.layers.0.block_sparse_moe.experts.1.w1.weight, @model.layers.0.block_sparse_moe.experts.1.w3.weight] : tensor<512x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.gate_up.weight = stack [@model.layers.0.block_sparse_moe.experts.0.gate_up.weight, @model.layers.0.block_sparse_moe.experts.1.gate_up.weight] : tensor<2x512x256xbf16>
phimoe.weight @model.layers.0.block_sparse_moe.experts.down.weight = stack [@model.layers.0.block_sparse_moe.experts.0.w2.weight, @model.layers.0.block_sparse_moe.experts.1.w2.weight] : tensor<2x256x256xbf16>

// CHECK:      phimoe.weight @model.layers.0.self_attn.q_proj.weight : tensor<256x256xbf16>
// CHECK-NEXT: phimoe.weight @model.layers.0.self_attn.k_proj.weight : tensor<128x256xbf16>
// CHECK-NEXT: phimoe.weight @model.layers.0.self_attn.v_proj.weight : tensor<128x256xbf16>
// Q8-NEXT:    phimoe.weight @model.layers.0.self_attn.qkv_proj.weight = concat {{.*}} : !phimoe.qweight<q8_0, [512, 256]>
// Q4K-NEXT:   phimoe.weight @model.layers.0.self_attn.qkv_proj.weight = concat {{.*}} : !phimoe.qweight<q4k, [512, 256]>
// MOQE-NEXT:  phimoe.weight @model.layers.0.self_attn.qkv_proj.weight = concat {{.*}} : tensor<512x256xbf16>
// OVR-NEXT:   phimoe.weight @model.layers.0.self_attn.qkv_proj.weight = concat {{.*}} : tensor<512x256xf16>
// CHECK:      phimoe.weight @model.layers.0.self_attn.q_proj.bias : tensor<256xbf16>
// CHECK-NEXT: phimoe.weight @model.layers.0.self_attn.k_proj.bias : tensor<128xbf16>
// CHECK-NEXT: phimoe.weight @model.layers.0.self_attn.v_proj.bias : tensor<128xbf16>
// Q8-NEXT:    phimoe.weight @model.layers.0.self_attn.qkv_proj.bias = concat {{.*}} : tensor<512xf32>
// Q4K-NEXT:   phimoe.weight @model.layers.0.self_attn.qkv_proj.bias = concat {{.*}} : tensor<512xf32>
// MOQE-NEXT:  phimoe.weight @model.layers.0.self_attn.qkv_proj.bias = concat {{.*}} : tensor<512xf32>
// OVR-NEXT:   phimoe.weight @model.layers.0.self_attn.qkv_proj.bias = concat {{.*}} : tensor<512xf16>
// CHECK:      phimoe.weight @model.layers.0.block_sparse_moe.gate.weight : tensor<2x256xbf16>
// CHECK-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w1.weight : tensor<256x256xbf16>
// CHECK-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w2.weight : tensor<256x256xbf16>
// CHECK-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.0.w3.weight : tensor<256x256xbf16>
// CHECK-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.0.gate_up.weight = concat {{.*}} : tensor<512x256xbf16>
// CHECK-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w1.weight : tensor<256x256xbf16>
// CHECK-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w2.weight : tensor<256x256xbf16>
// CHECK-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.1.w3.weight : tensor<256x256xbf16>
// CHECK-NEXT: phimoe.weight @model.layers.0.block_sparse_moe.experts.1.gate_up.weight = concat {{.*}} : tensor<512x256xbf16>
// Q8-NEXT:    phimoe.weight @model.layers.0.block_sparse_moe.experts.gate_up.weight = stack {{.*}} : !phimoe.qweight<q8_0, [2, 512, 256]>
// Q8-NEXT:    phimoe.weight @model.layers.0.block_sparse_moe.experts.down.weight = stack {{.*}} : !phimoe.qweight<q8_0, [2, 256, 256]>
// Q4K-NEXT:   phimoe.weight @model.layers.0.block_sparse_moe.experts.gate_up.weight = stack {{.*}} : !phimoe.qweight<q4k, [2, 512, 256]>
// Q4K-NEXT:   phimoe.weight @model.layers.0.block_sparse_moe.experts.down.weight = stack {{.*}} : !phimoe.qweight<q4k, [2, 256, 256]>
// MOQE-NEXT:  phimoe.weight @model.layers.0.block_sparse_moe.experts.gate_up.weight = stack {{.*}} : !phimoe.qweight<q4k, [2, 512, 256]>
// MOQE-NEXT:  phimoe.weight @model.layers.0.block_sparse_moe.experts.down.weight = stack {{.*}} : !phimoe.qweight<q4k, [2, 256, 256]>
// The stacked gate_up matches both `experts\.0\.=keep` and, later,
// `experts\.1\.w3=q8_0` through its parts' parts: the last one wins. The
// stacked down matches `experts\.0\.=keep` through its part experts.0.w2.
// OVR-NEXT:   phimoe.weight @model.layers.0.block_sparse_moe.experts.gate_up.weight = stack {{.*}} : !phimoe.qweight<q8_0, [2, 512, 256]>
// OVR-NEXT:   phimoe.weight @model.layers.0.block_sparse_moe.experts.down.weight = stack {{.*}} : tensor<2x256x256xbf16>
// CHECK-LABEL: func.func @fused
// Q4K: [[W:%.+]] = phimoe.weight_ref @model.layers.0.self_attn.qkv_proj.weight : !phimoe.qweight<q4k, [512, 256]>
// Q4K: [[B:%.+]] = phimoe.weight_ref @model.layers.0.self_attn.qkv_proj.bias : tensor<512xf32>
// Q4K: phimoe.linear {{%.+}}, [[W]], [[B]] : tensor<?x256xf32>, !phimoe.qweight<q4k, [512, 256]>, tensor<512xf32> -> tensor<?x512xf32>
// Q4K: phimoe.moe sparsemixer {{%.+}}, {{%.+}}, {{%.+}}, {{%.+}} {{.*}} : tensor<?x256xf32>, tensor<2x256xbf16>, !phimoe.qweight<q4k, [2, 512, 256]>, !phimoe.qweight<q4k, [2, 256, 256]>
func.func @fused(%x: tensor<?x256xf32>) -> (tensor<?x256xf32>, tensor<?x128xf32>, tensor<?x128xf32>, tensor<?x256xf32>) {
  %w = phimoe.weight_ref @model.layers.0.self_attn.qkv_proj.weight : tensor<512x256xbf16>
  %b = phimoe.weight_ref @model.layers.0.self_attn.qkv_proj.bias : tensor<512xbf16>
  %qkv = phimoe.linear %x, %w, %b : tensor<?x256xf32>, tensor<512x256xbf16>, tensor<512xbf16> -> tensor<?x512xf32>
  %q, %k, %v = phimoe.split %qkv [256, 128, 128] : tensor<?x512xf32> -> tensor<?x256xf32>, tensor<?x128xf32>, tensor<?x128xf32>
  %wg = phimoe.weight_ref @model.layers.0.block_sparse_moe.gate.weight : tensor<2x256xbf16>
  %gu = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.gate_up.weight : tensor<2x512x256xbf16>
  %dn = phimoe.weight_ref @model.layers.0.block_sparse_moe.experts.down.weight : tensor<2x256x256xbf16>
  %y = phimoe.moe sparsemixer %x, %wg, %gu, %dn {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x256xf32>, tensor<2x256xbf16>, tensor<2x512x256xbf16>, tensor<2x256x256xbf16>
  return %q, %k, %v, %y : tensor<?x256xf32>, tensor<?x128xf32>, tensor<?x128xf32>, tensor<?x256xf32>
}

// -----

// Rows that are not whole blocks (hidden 64): a k-quant falls back to q8_0
// when the innermost dimension is a multiple of 32 (the LM head's auto q6k
// included), and anything falls back to f32 when it is not even that (48).

phimoe.weight @fb.embed.weight : tensor<96x48xbf16>
phimoe.weight @fb.in.weight : tensor<64x48xbf16>
phimoe.weight @fb.mid.weight : tensor<256x64xbf16>
phimoe.weight @fb.out.weight : tensor<64x256xbf16>
phimoe.weight @fb.head.weight : tensor<96x64xbf16>

// Q8:       phimoe.weight @fb.embed.weight : tensor<96x48xf32>
// Q8-NEXT:  phimoe.weight @fb.in.weight : tensor<64x48xf32>
// Q8-NEXT:  phimoe.weight @fb.mid.weight : !phimoe.qweight<q8_0, [256, 64]>
// Q8-NEXT:  phimoe.weight @fb.out.weight : !phimoe.qweight<q8_0, [64, 256]>
// Q8-NEXT:  phimoe.weight @fb.head.weight : !phimoe.qweight<q8_0, [96, 64]>
// Q4K:      phimoe.weight @fb.embed.weight : tensor<96x48xf32>
// Q4K-NEXT: phimoe.weight @fb.in.weight : tensor<64x48xf32>
// Q4K-NEXT: phimoe.weight @fb.mid.weight : !phimoe.qweight<q8_0, [256, 64]>
// Q4K-NEXT: phimoe.weight @fb.out.weight : !phimoe.qweight<q4k, [64, 256]>
// Q4K-NEXT: phimoe.weight @fb.head.weight : !phimoe.qweight<q8_0, [96, 64]>
// Q40:      phimoe.weight @fb.embed.weight : tensor<96x48xf32>
// Q40-NEXT: phimoe.weight @fb.in.weight : tensor<64x48xf32>
// Q40-NEXT: phimoe.weight @fb.mid.weight : !phimoe.qweight<q4_0, [256, 64]>
// Q40-NEXT: phimoe.weight @fb.out.weight : !phimoe.qweight<q4_0, [64, 256]>
// Q40-NEXT: phimoe.weight @fb.head.weight : !phimoe.qweight<q8_0, [96, 64]>
// A float scheme has no block constraint.
// BF16:      phimoe.weight @fb.embed.weight : tensor<96x48xbf16>
// BF16-NEXT: phimoe.weight @fb.in.weight : tensor<64x48xbf16>
// BF16-NEXT: phimoe.weight @fb.mid.weight : tensor<256x64xbf16>
// BF16-NEXT: phimoe.weight @fb.out.weight : tensor<64x256xbf16>
// BF16-NEXT: phimoe.weight @fb.head.weight : tensor<96x64xbf16>
// CHECK-LABEL: func.func @fallback
// Q4K: phimoe.linear {{%.+}}, {{%.+}} : tensor<?x48xf32>, tensor<64x48xf32> -> tensor<?x64xf32>
// Q4K: phimoe.linear {{%.+}}, {{%.+}} : tensor<?x64xf32>, !phimoe.qweight<q8_0, [256, 64]> -> tensor<?x256xf32>
// Q4K: phimoe.linear {{%.+}}, {{%.+}} : tensor<?x256xf32>, !phimoe.qweight<q4k, [64, 256]> -> tensor<?x64xf32>
func.func @fallback(%ids: tensor<?xi32>) -> tensor<?x96xf32> {
  %e = phimoe.weight_ref @fb.embed.weight : tensor<96x48xbf16>
  %h = phimoe.embed %ids, %e : tensor<?xi32>, tensor<96x48xbf16> -> tensor<?x48xf32>
  %wi = phimoe.weight_ref @fb.in.weight : tensor<64x48xbf16>
  %a = phimoe.linear %h, %wi : tensor<?x48xf32>, tensor<64x48xbf16> -> tensor<?x64xf32>
  %wm = phimoe.weight_ref @fb.mid.weight : tensor<256x64xbf16>
  %b = phimoe.linear %a, %wm : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x256xf32>
  %wo = phimoe.weight_ref @fb.out.weight : tensor<64x256xbf16>
  %c = phimoe.linear %b, %wo : tensor<?x256xf32>, tensor<64x256xbf16> -> tensor<?x64xf32>
  %wh = phimoe.weight_ref @fb.head.weight : tensor<96x64xbf16>
  %l = phimoe.lm_head %c, %wh : tensor<?x64xf32>, tensor<96x64xbf16> -> tensor<?x96xf32>
  return %l : tensor<?x96xf32>
}

// -----

// The router of layer 7 matches `layers\.7\.`: the ROUTER run warns there
// (WARN checks stderr) and keeps it; the experts and the norm of layer 7 take
// f16.

// WARN-NOT: warning
// WARN: quantize.mlir:[[@LINE+2]]:1: warning: override 'layers\.7\.' ignored: the router is never quantized
// WARN-NOT: warning
phimoe.weight @model.layers.7.block_sparse_moe.gate.weight : tensor<2x64xbf16>
phimoe.weight @model.layers.7.block_sparse_moe.experts.0.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @model.layers.7.block_sparse_moe.experts.0.w2.weight : tensor<64x128xbf16>
phimoe.weight @model.layers.7.block_sparse_moe.experts.1.gate_up.weight : tensor<256x64xbf16>
phimoe.weight @model.layers.7.block_sparse_moe.experts.1.w2.weight : tensor<64x128xbf16>
phimoe.weight @model.layers.7.post_attention_layernorm.weight : tensor<64xbf16>
phimoe.weight @model.layers.7.post_attention_layernorm.bias : tensor<64xbf16>

// CHECK:      phimoe.weight @model.layers.7.block_sparse_moe.gate.weight : tensor<2x64xbf16>
// ROUTER-NEXT: phimoe.weight @model.layers.7.block_sparse_moe.experts.0.gate_up.weight : tensor<256x64xf16>
// ROUTER-NEXT: phimoe.weight @model.layers.7.block_sparse_moe.experts.0.w2.weight : tensor<64x128xf16>
// ROUTER-NEXT: phimoe.weight @model.layers.7.block_sparse_moe.experts.1.gate_up.weight : tensor<256x64xf16>
// ROUTER-NEXT: phimoe.weight @model.layers.7.block_sparse_moe.experts.1.w2.weight : tensor<64x128xf16>
// ROUTER-NEXT: phimoe.weight @model.layers.7.post_attention_layernorm.weight : tensor<64xf16>
// ROUTER-NEXT: phimoe.weight @model.layers.7.post_attention_layernorm.bias : tensor<64xf16>
// Without overrides, a k-quant does not fit these rows of 64: q8_0.
// Q4K-NEXT:    phimoe.weight @model.layers.7.block_sparse_moe.experts.0.gate_up.weight : !phimoe.qweight<q8_0, [256, 64]>
// CHECK-LABEL: func.func @router_override
// CHECK: phimoe.router sparsemixer {{.*}} : tensor<?x64xf32>, tensor<2x64xbf16>
func.func @router_override(%h: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %lnw = phimoe.weight_ref @model.layers.7.post_attention_layernorm.weight : tensor<64xbf16>
  %lnb = phimoe.weight_ref @model.layers.7.post_attention_layernorm.bias : tensor<64xbf16>
  %x = phimoe.layer_norm %h, %lnw, %lnb {epsilon = 1.0e-05 : f64} : tensor<?x64xf32>, tensor<64xbf16>
  %wg = phimoe.weight_ref @model.layers.7.block_sparse_moe.gate.weight : tensor<2x64xbf16>
  %sel, %rw = phimoe.router sparsemixer %x, %wg {epsilon = 1.0e-02 : f64, top_k = 2 : i64} : tensor<?x64xf32>, tensor<2x64xbf16> -> tensor<?x2xi32>, tensor<?x2xf32>
  %gu0 = phimoe.weight_ref @model.layers.7.block_sparse_moe.experts.0.gate_up.weight : tensor<256x64xbf16>
  %a0 = phimoe.gate_up %x, %gu0 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d0 = phimoe.weight_ref @model.layers.7.block_sparse_moe.experts.0.w2.weight : tensor<64x128xbf16>
  %e0 = phimoe.linear %a0, %d0 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %gu1 = phimoe.weight_ref @model.layers.7.block_sparse_moe.experts.1.gate_up.weight : tensor<256x64xbf16>
  %a1 = phimoe.gate_up %x, %gu1 : tensor<?x64xf32>, tensor<256x64xbf16> -> tensor<?x128xf32>
  %d1 = phimoe.weight_ref @model.layers.7.block_sparse_moe.experts.1.w2.weight : tensor<64x128xbf16>
  %e1 = phimoe.linear %a1, %d1 : tensor<?x128xf32>, tensor<64x128xbf16> -> tensor<?x64xf32>
  %y = phimoe.moe_combine %sel, %rw, %e0, %e1 : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// A dense MLP (silu·mul like an expert's, but not feeding a moe_combine) is
// not an expert: MoQE keeps it as declared. A table used both as the
// embedding and as the LM head (tied) is stored as the LM head.

phimoe.weight @model.embed_tokens.weight : tensor<96x256xbf16>
phimoe.weight @model.layers.0.mlp.gate_proj.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.mlp.up_proj.weight : tensor<256x256xbf16>
phimoe.weight @model.layers.0.mlp.down_proj.weight : tensor<256x256xbf16>

// Q4K:       phimoe.weight @model.embed_tokens.weight : !phimoe.qweight<q6k, [96, 256]>
// Q4K-NEXT:  phimoe.weight @model.layers.0.mlp.gate_proj.weight : !phimoe.qweight<q4k, [256, 256]>
// Q4K-NEXT:  phimoe.weight @model.layers.0.mlp.up_proj.weight : !phimoe.qweight<q4k, [256, 256]>
// Q4K-NEXT:  phimoe.weight @model.layers.0.mlp.down_proj.weight : !phimoe.qweight<q4k, [256, 256]>
// MOQE:      phimoe.weight @model.embed_tokens.weight : tensor<96x256xbf16>
// MOQE-NEXT: phimoe.weight @model.layers.0.mlp.gate_proj.weight : tensor<256x256xbf16>
// MOQE-NEXT: phimoe.weight @model.layers.0.mlp.up_proj.weight : tensor<256x256xbf16>
// MOQE-NEXT: phimoe.weight @model.layers.0.mlp.down_proj.weight : tensor<256x256xbf16>
// CHECK-LABEL: func.func @dense_mlp_tied
// Q4K: phimoe.embed {{%.+}}, {{%.+}} : tensor<?xi32>, !phimoe.qweight<q6k, [96, 256]>
// Q4K: phimoe.lm_head {{%.+}}, {{%.+}} : tensor<?x256xf32>, !phimoe.qweight<q6k, [96, 256]>
func.func @dense_mlp_tied(%ids: tensor<?xi32>) -> tensor<?x96xf32> {
  %emb = phimoe.weight_ref @model.embed_tokens.weight : tensor<96x256xbf16>
  %h = phimoe.embed %ids, %emb : tensor<?xi32>, tensor<96x256xbf16> -> tensor<?x256xf32>
  %w1 = phimoe.weight_ref @model.layers.0.mlp.gate_proj.weight : tensor<256x256xbf16>
  %w3 = phimoe.weight_ref @model.layers.0.mlp.up_proj.weight : tensor<256x256xbf16>
  %w2 = phimoe.weight_ref @model.layers.0.mlp.down_proj.weight : tensor<256x256xbf16>
  %g = phimoe.linear %h, %w1 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
  %u = phimoe.linear %h, %w3 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
  %s = phimoe.silu %g : tensor<?x256xf32>
  %m = phimoe.mul %s, %u : tensor<?x256xf32>
  %d = phimoe.linear %m, %w2 : tensor<?x256xf32>, tensor<256x256xbf16> -> tensor<?x256xf32>
  %h1 = phimoe.add %h, %d : tensor<?x256xf32>
  %l = phimoe.lm_head %h1, %emb : tensor<?x256xf32>, tensor<96x256xbf16> -> tensor<?x96xf32>
  return %l : tensor<?x96xf32>
}
