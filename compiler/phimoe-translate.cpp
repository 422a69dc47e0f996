//===- phimoe-translate.cpp - mlir-translate with the phimoe C++ emitter --===//

#include "codegen/EmitCpp.h"
#include "dialects/PhiMoE/PhiMoEOps.h"

#include "mlir/Dialect/EmitC/IR/EmitC.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Tools/mlir-translate/MlirTranslateMain.h"
#include "mlir/Tools/mlir-translate/Translation.h"

int main(int argc, char **argv) {
  mlir::TranslateFromMLIRRegistration toCpp(
      "phimoe-to-cpp", "C++ of a module lowered by phimoe-lower-to-emitc",
      [](mlir::Operation *op, llvm::raw_ostream &os) {
        auto module = llvm::dyn_cast<mlir::ModuleOp>(op);
        if (!module)
          return op->emitError("expected a module"), mlir::failure();
        return phimoe::emitCpp(module, os);
      },
      [](mlir::DialectRegistry &registry) {
        registry.insert<mlir::phimoe::PhiMoEDialect, mlir::func::FuncDialect,
                        mlir::emitc::EmitCDialect>();
      });
  return mlir::failed(mlir::mlirTranslateMain(argc, argv, "phimoe-translate"));
}
