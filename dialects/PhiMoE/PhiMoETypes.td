//===- PhiMoETypes.td - phimoe types ---------------------------*- tablegen -*-===//

#ifndef PHIMOE_TYPES_TD
#define PHIMOE_TYPES_TD

include "dialects/PhiMoE/PhiMoEAttrs.td"

def PhiMoE_QWeightType : TypeDef<PhiMoE_Dialect, "QWeight"> {
  let mnemonic = "qweight";
  let summary = "a block-quantized weight with its logical shape";
  let description = [{
    A weight stored in one of llama.cpp's block formats. The shape is the
    logical (dequantized) shape; blocks run along the innermost dimension, so
    its size must be a multiple of the scheme's block size (32 for q8_0 and
    q4_0, 256 for the k-quants).

    MLIR's `quant` dialect describes per-tensor, per-axis and sub-channel affine
    quantization; the k-quants store 6-bit sub-block scales inside 256-wide
    super-blocks, which it cannot express, hence this type.

    Example: `!phimoe.qweight<q4k, [6400, 4096]>`
  }];
  let parameters = (ins EnumParameter<PhiMoE_QuantScheme>:$scheme,
                        ArrayRefParameter<"int64_t", "logical shape">:$shape);
  let assemblyFormat = "`<` $scheme `,` `[` $shape `]` `>`";
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    int64_t getRank() const { return getShape().size(); }
    /// Elements per block along the innermost dimension.
    int64_t getBlockSize() const;
    /// Bytes per block in the packed layout.
    int64_t getBlockBytes() const;
  }];
}

def PhiMoE_KVCacheType : TypeDef<PhiMoE_Dialect, "KVCache"> {
  let mnemonic = "kv_cache";
  let summary = "the key/value cache of every layer of a model";
  let description = [{
    A stateful cache, passed to the model function by the runtime, that holds
    the rotated keys and the values of every past position of every layer.
    Its capacity (the context size) is a run-time choice.

    Example: `!phimoe.kv_cache<layers = 32, kv_heads = 8, head_dim = 128, dtype = bf16>`
  }];
  let parameters = (ins "int64_t":$layers, "int64_t":$kv_heads,
                        "int64_t":$head_dim, "::mlir::Type":$dtype);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

#endif // PHIMOE_TYPES_TD
