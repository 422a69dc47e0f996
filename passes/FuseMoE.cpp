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

/// The router of a moe_combine that a fused MoE op can replace: one router gives its ids and
/// weights, the result has the router input's type, and there is one output per expert.
FailureOr<RouterOp> fusableRouter(MoECombineOp op, PatternRewriter &rewriter) {
  auto router = op.getExperts().getDefiningOp<RouterOp>();
  if (!router || op.getWeights() != router.getWeights())
    return rewriter.notifyMatchFailure(op, "routing does not come from one router");
  if (op.getType() != router.getInput().getType())
    return rewriter.notifyMatchFailure(op, "the result type differs from the input's");
  int64_t numExperts = router.getWeight().getType().getDimSize(0);
  if (static_cast<int64_t>(op.getExpertOutputs().size()) != numExperts)
    return rewriter.notifyMatchFailure(op, "not one output per router expert");
  return router;
}

/// Weights of one role (a group) must agree in format and shape to be stacked.
bool stackable(ArrayRef<WeightOp> group) {
  Type first = WeightOp(group.front()).getType();
  return llvm::all_of(group, [&](WeightOp w) {
    return sameWeightFormat(w.getType(), first) &&
           getLogicalShape(w.getType()) == getLogicalShape(first);
  });
}

struct FuseMoEPattern : public OpRewritePattern<MoECombineOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(MoECombineOp op,
                                PatternRewriter &rewriter) const override {
    FailureOr<RouterOp> found = fusableRouter(op, rewriter);
    if (failed(found))
      return failure();
    RouterOp router = *found;
    Value x = router.getInput();

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
    if (!stackable(gateUps) || !stackable(downs))
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

/// phi-2 MLP experts (phixtral): expert j is linear(gelu(linear(x, @fc1_j, @b1_j)),
/// @fc2_j, @b2_j); the four groups are stacked into moe_gelu's operands.
struct FuseMoEGeluPattern : public OpRewritePattern<MoECombineOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(MoECombineOp op,
                                PatternRewriter &rewriter) const override {
    FailureOr<RouterOp> found = fusableRouter(op, rewriter);
    if (failed(found))
      return failure();
    RouterOp router = *found;
    Value x = router.getInput();

    SmallVector<WeightOp> fc1s, b1s, fc2s, b2s;
    for (Value output : op.getExpertOutputs()) {
      auto fc2 = output.getDefiningOp<LinearOp>();
      auto gelu = fc2 ? fc2.getInput().getDefiningOp<GeluOp>() : GeluOp();
      auto fc1 = gelu ? gelu.getInput().getDefiningOp<LinearOp>() : LinearOp();
      if (!fc1 || fc1.getInput() != x || !fc1.getBias() || !fc2.getBias())
        return rewriter.notifyMatchFailure(
            op, "an expert is not linear(gelu(linear(x, w, b)), w, b) on the router's input");
      fc1s.push_back(getWeightDecl(fc1.getWeight()));
      b1s.push_back(getWeightDecl(fc1.getBias()));
      fc2s.push_back(getWeightDecl(fc2.getWeight()));
      b2s.push_back(getWeightDecl(fc2.getBias()));
      if (!fc1s.back() || !b1s.back() || !fc2s.back() || !b2s.back())
        return rewriter.notifyMatchFailure(op, "an expert weight is not a weight symbol");
    }
    for (ArrayRef<WeightOp> group : {ArrayRef<WeightOp>(fc1s), ArrayRef<WeightOp>(b1s),
                                     ArrayRef<WeightOp>(fc2s), ArrayRef<WeightOp>(b2s)})
      if (!stackable(group))
        return rewriter.notifyMatchFailure(op, "experts of different formats or shapes");

    rewriter.setInsertionPoint(op);
    Location loc = op.getLoc();
    auto stack = [&](ArrayRef<WeightOp> group, StringRef tag) {
      return deriveWeight(rewriter, loc, WeightRecipe::Stack, group, tag);
    };
    Value fc1 = stack(fc1s, "fc1.weight"), b1 = stack(b1s, "fc1.bias");
    Value fc2 = stack(fc2s, "fc2.weight"), b2 = stack(b2s, "fc2.bias");
    rewriter.replaceOpWithNewOp<MoEGeluOp>(op, op.getType(), router.getKindAttr(), x,
                                           router.getWeight(), fc1, b1, fc2, b2,
                                           router.getTopKAttr(), router.getEpsilonAttr());
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
  patterns.add<FuseMoEPattern, FuseMoEGeluPattern>(patterns.getContext());
}
