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

/// The pack plan of a planned module (JSON): the header fields of weights.phw, its tensor
/// table, and for every weight its offset, bytes, storage (f32, bf16, f16, q8_0), row length
/// and the checkpoint tensors it is made of, in order. runtime/tools/phimoe_pack.cpp executes
/// it against a checkpoint without MLIR and writes the same weights.phw as packWeights.
llvm::Expected<std::string> packPlan(mlir::ModuleOp planned);

} // namespace phimoe

#endif // PHIMOE_CODEGEN_WEIGHTPACKER_H
