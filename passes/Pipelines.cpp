//===- Pipelines.cpp - the one place that orders the phimoe passes --------===//

#include "passes/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;
using namespace mlir::phimoe;

void mlir::phimoe::buildPhiMoEPipeline(OpPassManager &pm,
                                       const PipelineOptions &options) {
  pm.addPass(createCanonicalizerPass());
  if (options.fuse) {
    pm.addPass(createFuseQKVPass());
    pm.addPass(createFuseGateUpPass());
    pm.addPass(createFuseAddNormPass());
    pm.addPass(createFuseMoEPass());
    pm.addPass(createCanonicalizerPass());
  }
  QuantizePassOptions quantize;
  quantize.scheme = options.quant;
  quantize.scope = options.scope;
  quantize.lmHead = options.lmHead;
  quantize.embedding = options.embedding;
  quantize.overrides.assign(options.overrides.begin(), options.overrides.end());
  pm.addPass(createQuantizePass(quantize));
  if (options.target == "cpu" || options.target == "cuda") {
    PlanMemoryPassOptions plan;
    plan.maxTokens = options.maxTokens;
    plan.keepSplitInput = options.target == "cuda"; // qkv_rope_kv_write on any rows
    pm.addPass(createPlanMemoryPass(plan));
    LowerToEmitCPassOptions lower;
    lower.target = options.target;
    lower.rows16Q6k = options.rows16Q6k;
    pm.addPass(createLowerToEmitCPass(lower));
  }
}

void mlir::phimoe::registerPhiMoEPassesAndPipelines() {
  registerPhiMoEPasses();
  PassPipelineRegistration<PipelineOptions>(
      "phimoe-pipeline",
      "Canonicalize, fuse (qkv, gate-up, add-norm, moe), quantize; with "
      "target=cpu (or cuda), plan memory and lower to EmitC",
      buildPhiMoEPipeline);
}
