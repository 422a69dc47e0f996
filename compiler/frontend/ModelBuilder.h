//===- ModelBuilder.h - state a PhiMoE checkpoint in the phimoe dialect ---===//

#ifndef PHIMOE_COMPILER_FRONTEND_MODELBUILDER_H
#define PHIMOE_COMPILER_FRONTEND_MODELBUILDER_H

#include "compiler/frontend/Config.h"
#include "compiler/frontend/Safetensors.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace phimoe {

/// Builds the unfused model: one `phimoe.weight` per checkpoint tensor (its
/// type from the checkpoint's dtype) and `func.func @forward(ids, positions,
/// cache) -> logits` with the forward pass of the reference. Every tensor the
/// config implies must be in the checkpoint with its shape; errors name the
/// tensor and its file.
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
buildModel(mlir::MLIRContext &ctx, const PhiMoEConfig &config, const Checkpoint &checkpoint);

} // namespace phimoe

#endif // PHIMOE_COMPILER_FRONTEND_MODELBUILDER_H
