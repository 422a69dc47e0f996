//===- PhiMoEAttrs.td - phimoe enums and attributes -----------*- tablegen -*-===//

#ifndef PHIMOE_ATTRS_TD
#define PHIMOE_ATTRS_TD

include "dialects/PhiMoE/PhiMoEDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

//===----------------------------------------------------------------------===//
// Enums
//===----------------------------------------------------------------------===//

def PhiMoE_QuantScheme : I32Enum<"QuantScheme",
    "a block quantization scheme (llama.cpp block layouts)", [
      I32EnumCase<"Q8_0", 0, "q8_0">,
      I32EnumCase<"Q4_0", 1, "q4_0">,
      I32EnumCase<"Q4K", 2, "q4k">,
      I32EnumCase<"Q5K", 3, "q5k">,
      I32EnumCase<"Q6K", 4, "q6k">
    ]> {
  let cppNamespace = "::mlir::phimoe";
}

def PhiMoE_RouterKindAttr : I32EnumAttr<"RouterKind", "how a router picks experts", [
      // Phi-3.5-MoE: two masked softmaxes, weights not renormalised.
      I32EnumAttrCase<"Sparsemixer", 0, "sparsemixer">,
      // Mixtral: softmax over all experts, top-k, renormalised.
      I32EnumAttrCase<"SoftmaxTopK", 1, "softmax_topk">
    ]> {
  let cppNamespace = "::mlir::phimoe";
}

def PhiMoE_WeightRecipeAttr : I32EnumAttr<"WeightRecipe",
    "how a derived weight is made from its parts", [
      // Rows of the parts one after another (dimension 0 grows).
      I32EnumAttrCase<"Concat", 0, "concat">,
      // The parts, all of one shape, along a new leading dimension.
      I32EnumAttrCase<"Stack", 1, "stack">
    ]> {
  let cppNamespace = "::mlir::phimoe";
}

//===----------------------------------------------------------------------===//
// LongRoPE
//===----------------------------------------------------------------------===//

def PhiMoE_LongRopeAttr : AttrDef<PhiMoE_Dialect, "LongRope"> {
  let mnemonic = "longrope";
  let summary = "LongRoPE rotary embedding parameters (Phi-3 family)";
  let description = [{
    The rotary frequencies are `inv_freq[i] = 1 / (ext[i] * theta^(2i/d))` for
    `i < d/2` (d = head_dim), computed in float32; cos and sin are scaled by the
    mscale of the chosen set, so the rotation scales both q and k. The set
    (`short_factor`, `short_mscale`) applies while the sequence length is at
    most `original_max_position`; past it the long set applies to every
    position. A factor array holds head_dim/2 values (checked by `phimoe.rope`).

    Example:
    ```mlir
    #phimoe.longrope<theta = 10000.0, original_max_position = 4096,
                     short_mscale = 1.2431631, long_mscale = 1.2431631,
                     short_factor = [1.0, 1.0], long_factor = [1.5, 2.0]>
    ```
  }];
  let parameters = (ins
    APFloatParameter<"rotary base">:$theta,
    "int64_t":$originalMaxPosition,
    APFloatParameter<"scale of cos/sin with the short factors">:$shortMscale,
    APFloatParameter<"scale of cos/sin with the long factors">:$longMscale,
    "::mlir::DenseF32ArrayAttr":$shortFactor,
    "::mlir::DenseF32ArrayAttr":$longFactor
  );
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// The number of rotated frequency pairs (head_dim / 2).
    int64_t getNumFrequencies() const { return getShortFactor().size(); }
  }];
}

#endif // PHIMOE_ATTRS_TD
