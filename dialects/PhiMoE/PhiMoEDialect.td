//===- PhiMoEDialect.td - the phimoe dialect definition -------*- tablegen -*-===//

#ifndef PHIMOE_DIALECT_TD
#define PHIMOE_DIALECT_TD

include "mlir/IR/OpBase.td"

def PhiMoE_Dialect : Dialect {
  let name = "phimoe";
  let cppNamespace = "::mlir::phimoe";
  let summary = "The Phi-3.5-MoE forward pass as ops on ranked tensors.";
  let description = [{
    The `phimoe` dialect expresses a PhiMoE decoder (embedding, LayerNorm with bias,
    biased linears, LongRoPE, grouped-query attention against a KV cache, the
    sparsemixer router, the experts and the LM head) as ops on ranked tensors.
    The token dimension is the only dynamic dimension; everything else is a
    compile-time constant.

    Weights never appear as data. A module-level `phimoe.weight` symbol names a
    checkpoint tensor, or a tensor derived from other weight symbols
    (concatenated, stacked); its type says how it is stored (a float tensor, or
    a `!phimoe.qweight` block-quantized tensor). Functions read weights through
    `phimoe.weight_ref`.
  }];
  let useDefaultAttributePrinterParser = 1;
  let useDefaultTypePrinterParser = 1;
  let extraClassDeclaration = [{
    void registerAttributes();
    void registerTypes();
  }];
}

class PhiMoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<PhiMoE_Dialect, mnemonic, traits>;

#endif // PHIMOE_DIALECT_TD
