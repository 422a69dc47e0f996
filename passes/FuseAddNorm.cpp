//===- FuseAddNorm.cpp - a residual add into the LayerNorm that reads it --===//

#include "passes/Passes.h"

#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::phimoe {
#define GEN_PASS_DEF_FUSEADDNORMPASS
#include "passes/Passes.h.inc"
} // namespace mlir::phimoe

using namespace mlir;
using namespace mlir::phimoe;

namespace {

/// Whether `value` can be used by an op inserted right before `at`.
bool availableBefore(Value value, Operation *at) {
  if (auto arg = dyn_cast<BlockArgument>(value))
    return arg.getOwner()->findAncestorOpInBlock(*at) != nullptr;
  Operation *def = value.getDefiningOp();
  Operation *ancestor = def->getBlock()->findAncestorOpInBlock(*at);
  return ancestor && def != ancestor && def->isBeforeInBlock(ancestor);
}

struct FuseAddNormPattern : public OpRewritePattern<LayerNormOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(LayerNormOp norm,
                                PatternRewriter &rewriter) const override {
    auto add = norm.getInput().getDefiningOp<AddOp>();
    if (!add)
      return rewriter.notifyMatchFailure(norm, "the input is not an add");
    if (add->getBlock() != norm->getBlock())
      return rewriter.notifyMatchFailure(norm, "add and norm in different blocks");

    // The fused op replaces the add, so it goes where the add is. The norm's
    // weight and bias must be available there: weight refs (which read
    // nothing) are moved up when they are not.
    for (Value operand : {norm.getWeight(), norm.getBias()}) {
      if (!operand || availableBefore(operand, add))
        continue;
      Operation *def = operand.getDefiningOp();
      if (!def || def->getNumOperands() != 0 || !isa<WeightRefOp>(def))
        return rewriter.notifyMatchFailure(norm, "weight or bias not available at the add");
      rewriter.moveOpBefore(def, add);
    }

    rewriter.setInsertionPoint(add);
    auto fused = AddLayerNormOp::create(
        rewriter, rewriter.getFusedLoc({add.getLoc(), norm.getLoc()}),
        add.getType(), norm.getType(), add.getLhs(), add.getRhs(),
        norm.getWeight(), norm.getBias(), norm.getEpsilonAttr(), norm.getRmsAttr());
    rewriter.replaceOp(norm, fused.getResult());
    rewriter.replaceOp(add, fused.getSum());
    return success();
  }
};

struct FuseAddNormPass final : public phimoe::impl::FuseAddNormPassBase<FuseAddNormPass> {
  using Base::Base;
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateFuseAddNormPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace

void mlir::phimoe::populateFuseAddNormPatterns(RewritePatternSet &patterns) {
  patterns.add<FuseAddNormPattern>(patterns.getContext());
}
