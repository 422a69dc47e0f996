//===- phimoe-opt.cpp - mlir-opt for the phimoe dialect and passes --------===//

#include "dialects/PhiMoE/PhiMoEOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/EmitC/IR/EmitC.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  registry.insert<mlir::phimoe::PhiMoEDialect, mlir::func::FuncDialect,
                  mlir::emitc::EmitCDialect>();

  mlir::phimoe::registerPhiMoEPassesAndPipelines();
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  mlir::registerSymbolDCEPass();

  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv, "phimoe-opt: runs phimoe passes and pipelines on .mlir files\n",
      registry));
}
