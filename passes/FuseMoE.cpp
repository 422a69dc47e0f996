//===- FuseMoE.cpp - router, experts and weighted sum into one moe op -----===//

#include "passes/Passes.h"
#include "passes/WeightUtils.h"

#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::phimoe {
#define GEN_PASS_DEF_FUSEMOEPASS
#include "passes/Passes.h.inc"
} // namespace mlir::phimoe

using namespace mlir;
using namespace mlir::phimoe;

namespace {

struct FuseMoEPattern : public OpRewritePattern<MoECombineOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(MoECombineOp op,
                                PatternRewriter &rewriter) const override {
    auto router = op.getExperts().getDefiningOp<RouterOp>();
    if (!router || op.getWeights() != router.getWeights())
      return rewriter.notifyMatchFailure(op, "routing does not come from one router");
    Value x = router.getInput();
    if (op.getType() != x.getType())
      return rewriter.notifyMatchFailure(op, "the result type differs from the input's");
    int64_t numExperts = router.getWeight().getType().getDimSize(0);
    if (static_cast<int64_t>(op.getExpertOutputs().size()) != numExperts)
      return rewriter.notifyMatchFailure(op, "not one output per router expert");

    // Expert j must be linear(gate_up(x, @gu_j), @down_j), unbiased.
    SmallVector<WeightOp> gateUps, downs;
    for (Value output : op.getExpertOutputs()) {
      auto down = output.getDefiningOp<LinearOp>();
      if (!down || down.getBias())
        return rewriter.notifyMatchFailure(op, "an expert output is not an unbiased linear");
      auto gateUp = down.getInput().getDefiningOp<GateUpOp>();
      if (!gateUp || gateUp.getInput() != x)
        return rewriter.notifyMatchFailure(op, "an expert does not apply gate_up to the router's input");
      gateUps.push_back(getWeightDecl(gateUp.getWeight()));
      downs.push_back(getWeightDecl(down.getWeight()));
      if (!gateUps.back() || !downs.back())
        return rewriter.notifyMatchFailure(op, "an expert weight is not a weight symbol");
    }
    for (auto group : {ArrayRef<WeightOp>(gateUps), ArrayRef<WeightOp>(downs)})
      for (WeightOp w : group)
        if (Type first = WeightOp(group.front()).getType();
            !sameWeightFormat(w.getType(), first) ||
            getLogicalShape(w.getType()) != getLogicalShape(first))
          return rewriter.notifyMatchFailure(op, "experts of different formats or shapes");

    rewriter.setInsertionPoint(op);
    Location loc = op.getLoc();
    Value gateUp = deriveWeight(rewriter, loc, WeightRecipe::Stack, gateUps,
                                "gate_up.weight");
    Value down = deriveWeight(rewriter, loc, WeightRecipe::Stack, downs,
                              "down.weight");
    rewriter.replaceOpWithNewOp<MoEOp>(
        op, op.getType(), router.getKindAttr(), x, router.getWeight(), gateUp,
        down, router.getTopKAttr(), router.getEpsilonAttr());
    return success();
  }
};

struct FuseMoEPass final : public phimoe::impl::FuseMoEPassBase<FuseMoEPass> {
  using Base::Base;
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateFuseMoEPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace

void mlir::phimoe::populateFuseMoEPatterns(RewritePatternSet &patterns) {
  patterns.add<FuseMoEPattern>(patterns.getContext());
}
