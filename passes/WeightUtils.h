//===- WeightUtils.h - finding and deriving weight symbols ------*- C++ -*-===//

#ifndef PHIMOE_PASSES_WEIGHTUTILS_H
#define PHIMOE_PASSES_WEIGHTUTILS_H

#include "dialects/PhiMoE/PhiMoEOps.h"
#include "mlir/IR/PatternMatch.h"

namespace mlir::phimoe {

/// The `phimoe.weight` that `value` reads through a `phimoe.weight_ref`, or
/// null when the value is anything else.
WeightOp getWeightDecl(Value value);

/// Whether two weight types are stored alike: the same float element type,
/// or the same quantization scheme.
bool sameWeightFormat(Type a, Type b);

/// Whether `parts` can be concatenated along rows into one weight: one
/// format and the same trailing dimensions.
bool canConcat(ArrayRef<WeightOp> parts);

/// Gives `parts` (underived weights whose shapes can be concatenated but whose
/// formats differ) the most precise of their formats, and every reference to them
/// its new type, so that canConcat holds; false, changing nothing, when that is
/// not possible. The packer makes any format from any other, so this only costs
/// the less precise parts their compactness (a GGUF whose w1 is Q4_1 and w3 Q5_1).
bool unifyWeightFormats(RewriterBase &rewriter, ArrayRef<WeightOp> parts);

/// Declares (or finds, when an identical one exists) the weight derived from
/// `parts` by `recipe`, named after the parts' common prefix and `tag`, and
/// returns a `phimoe.weight_ref` to it created at the rewriter's insertion
/// point. The parts must share one format; the result has it too.
Value deriveWeight(RewriterBase &rewriter, Location loc, WeightRecipe recipe,
                   ArrayRef<WeightOp> parts, StringRef tag);

} // namespace mlir::phimoe

#endif // PHIMOE_PASSES_WEIGHTUTILS_H
