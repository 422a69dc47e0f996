//===- WeightPacker.h - weights.phw from a checkpoint -----------*- C++ -*-===//

#ifndef PHIMOE_CODEGEN_WEIGHTPACKER_H
#define PHIMOE_CODEGEN_WEIGHTPACKER_H

#include "compiler/frontend/Safetensors.h"

#include "mlir/IR/BuiltinOps.h"

namespace phimoe {

/// Writes the weight pack of a module planned by phimoe-plan-memory to `path`:
/// every weight with a pack offset, made by its recipe (concatenated, stacked,
/// converted) while streaming the checkpoint one tensor at a time.
llvm::Error packWeights(mlir::ModuleOp planned, const Checkpoint &checkpoint,
                        const std::string &path, bool progress);

} // namespace phimoe

#endif // PHIMOE_CODEGEN_WEIGHTPACKER_H
