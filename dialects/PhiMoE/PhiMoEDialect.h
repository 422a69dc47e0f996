//===- PhiMoEDialect.h - the phimoe dialect, its attributes and types -----===//

#ifndef PHIMOE_DIALECT_H
#define PHIMOE_DIALECT_H

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/DialectImplementation.h"

#include "dialects/PhiMoE/PhiMoEDialect.h.inc"
#include "dialects/PhiMoE/PhiMoEEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/PhiMoE/PhiMoEAttrs.h.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/PhiMoE/PhiMoETypes.h.inc"

namespace mlir::phimoe {

/// The logical shape of a weight or activation type: a ranked tensor's shape
/// or a quantized weight's shape. Empty for anything else.
ArrayRef<int64_t> getLogicalShape(Type type);

/// Bytes a weight of this type takes in the weight pack (row-major, blocks of
/// a quantized row one after another), or -1 for a type that is not a weight.
int64_t getStorageBytes(Type type);

/// Elements per block of `scheme` along a row.
int64_t getBlockSize(QuantScheme scheme);

/// Parses a quantization scheme name as --quant spells it ("q4k", "q8_0"...).
std::optional<QuantScheme> parseQuantScheme(StringRef name);

} // namespace mlir::phimoe

#endif // PHIMOE_DIALECT_H
