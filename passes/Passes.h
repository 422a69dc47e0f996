//===- Passes.h - phimoe passes and the named pipeline ----------*- C++ -*-===//

#ifndef PHIMOE_PASSES_H
#define PHIMOE_PASSES_H

#include "dialects/PhiMoE/PhiMoEOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassOptions.h"

namespace mlir::phimoe {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

/// Options of the `phimoe-pipeline` pipeline; `phimoec compile` fills the
/// same struct from its command line.
struct PipelineOptions : public PassPipelineOptions<PipelineOptions> {
  Option<std::string> quant{*this, "quant",
                            llvm::cl::desc("weight storage of the body (see "
                                           "phimoe-quantize), or keep"),
                            llvm::cl::init("keep")};
  Option<std::string> scope{*this, "scope",
                            llvm::cl::desc("all, or experts (MoQE)"),
                            llvm::cl::init("all")};
  Option<std::string> lmHead{*this, "lm-head",
                             llvm::cl::desc("storage of the LM head"),
                             llvm::cl::init("auto")};
  Option<std::string> embedding{*this, "embedding",
                                llvm::cl::desc("storage of the embedding table"),
                                llvm::cl::init("auto")};
  ListOption<std::string> overrides{*this, "override",
                                    llvm::cl::desc("REGEX=TYPE overrides")};
  Option<bool> fuse{*this, "fuse", llvm::cl::desc("run the fusion passes"),
                    llvm::cl::init(true)};
  Option<std::string> target{*this, "target",
                             llvm::cl::desc("none: stop after quantization; cpu: plan "
                                            "memory and lower to EmitC calls of phimoe_rt "
                                            "kernels; cuda: the same with phimoe_cuda's"),
                             llvm::cl::init("none")};
  Option<int64_t> maxTokens{*this, "max-tokens",
                            llvm::cl::desc("rows per forward call (see phimoe-plan-memory)"),
                            llvm::cl::init(256)};
  Option<bool> rows16Q6k{*this, "rows16-q6k",
                         llvm::cl::desc("cpu: interleave q6_K matrices in groups of 16 "
                                        "rows (see phimoe-lower-to-emitc)"),
                         llvm::cl::init(true)};
};

/// The rewrite patterns behind each fusion pass.
void populateFuseQKVPatterns(RewritePatternSet &patterns);
void populateFuseGateUpPatterns(RewritePatternSet &patterns);
void populateFuseAddNormPatterns(RewritePatternSet &patterns);
void populateFuseMoEPatterns(RewritePatternSet &patterns);

/// A hash of the module's printed form (without debug locations), which
/// phimoe-bin and its weights.phw must agree on.
uint64_t hashModule(ModuleOp module);

/// Adds the whole phimoe pipeline to `pm`, in the one order it runs in.
void buildPhiMoEPipeline(OpPassManager &pm, const PipelineOptions &options);

/// Registers the passes and the `phimoe-pipeline` pipeline.
void registerPhiMoEPassesAndPipelines();

} // namespace mlir::phimoe

#endif // PHIMOE_PASSES_H
