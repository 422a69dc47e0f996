//===- FuseGateUp.cpp - an expert's w1 and w3 with silu·mul into gate_up --===//

#include "passes/Passes.h"
#include "passes/WeightUtils.h"

#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::phimoe {
#define GEN_PASS_DEF_FUSEGATEUPPASS
#include "passes/Passes.h.inc"
} // namespace mlir::phimoe

using namespace mlir;
using namespace mlir::phimoe;

namespace {

/// An unbiased linear over a weight symbol, used only by `user`.
LinearOp soleUnbiasedLinear(Value value, Operation *user) {
  auto linear = value.getDefiningOp<LinearOp>();
  if (!linear || linear.getBias() || !value.hasOneUse() ||
      *value.getUsers().begin() != user || !getWeightDecl(linear.getWeight()))
    return {};
  return linear;
}

struct FuseGateUpPattern : public OpRewritePattern<MulOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(MulOp op,
                                PatternRewriter &rewriter) const override {
    // mul is commutative: the SiLU may be on either side.
    for (auto [siluSide, upSide] :
         {std::pair(op.getLhs(), op.getRhs()), std::pair(op.getRhs(), op.getLhs())}) {
      auto silu = siluSide.getDefiningOp<SiluOp>();
      if (!silu || !siluSide.hasOneUse())
        continue;
      LinearOp gate = soleUnbiasedLinear(silu.getInput(), silu);
      LinearOp up = soleUnbiasedLinear(upSide, op);
      if (!gate || !up || gate.getInput() != up.getInput())
        continue;
      WeightOp w1 = getWeightDecl(gate.getWeight());
      WeightOp w3 = getWeightDecl(up.getWeight());
      // w1 and w3 must share a format to become one weight: a GGUF's may not (Q4_1 and
      // Q5_1, say), and then both take the more precise one.
      if (!canConcat({w1, w3}) && !unifyWeightFormats(rewriter, {w1, w3}))
        continue;
      rewriter.setInsertionPoint(op);
      Location loc = rewriter.getFusedLoc({gate.getLoc(), up.getLoc(), op.getLoc()});
      Value weight = deriveWeight(rewriter, loc, WeightRecipe::Concat, {w1, w3},
                                  "gate_up.weight");
      rewriter.replaceOpWithNewOp<GateUpOp>(op, op.getType(), gate.getInput(),
                                            weight);
      return success();
    }
    return rewriter.notifyMatchFailure(
        op, "not silu(linear(x, w1)) * linear(x, w3) over weight symbols");
  }
};

struct FuseGateUpPass final : public phimoe::impl::FuseGateUpPassBase<FuseGateUpPass> {
  using Base::Base;
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateFuseGateUpPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace

void mlir::phimoe::populateFuseGateUpPatterns(RewritePatternSet &patterns) {
  patterns.add<FuseGateUpPattern>(patterns.getContext());
}
