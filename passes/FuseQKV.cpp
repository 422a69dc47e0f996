//===- FuseQKV.cpp - one projection for an attention's q, k and v ---------===//

#include "passes/Passes.h"
#include "passes/WeightUtils.h"

#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::phimoe {
#define GEN_PASS_DEF_FUSEQKVPASS
#include "passes/Passes.h.inc"
} // namespace mlir::phimoe

using namespace mlir;
using namespace mlir::phimoe;

namespace {

/// The linear that makes an attention operand, looking through a rope.
LinearOp projectionOf(Value value) {
  if (auto rope = value.getDefiningOp<RopeOp>())
    value = rope.getInput();
  return value.getDefiningOp<LinearOp>();
}

struct FuseQKVPattern : public OpRewritePattern<AttentionOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(AttentionOp op,
                                PatternRewriter &rewriter) const override {
    LinearOp projections[3] = {projectionOf(op.getQ()), projectionOf(op.getK()),
                               projectionOf(op.getV())};
    for (LinearOp p : projections)
      if (!p)
        return rewriter.notifyMatchFailure(op, "q, k or v is not a linear");
    auto [q, k, v] = projections;
    if (q == k || k == v || q == v)
      return rewriter.notifyMatchFailure(op, "q, k and v share a linear");
    Value x = q.getInput();
    if (k.getInput() != x || v.getInput() != x)
      return rewriter.notifyMatchFailure(op, "q, k and v read different inputs");
    if (q->getBlock() != k->getBlock() || q->getBlock() != v->getBlock())
      return rewriter.notifyMatchFailure(op, "q, k and v are in different blocks");

    SmallVector<WeightOp, 3> weights, biases;
    for (LinearOp p : projections) {
      weights.push_back(getWeightDecl(p.getWeight()));
      if (p.getBias())
        biases.push_back(getWeightDecl(p.getBias()));
    }
    if (llvm::is_contained(weights, WeightOp()) || llvm::is_contained(biases, WeightOp()))
      return rewriter.notifyMatchFailure(op, "a weight is not a weight symbol");
    if (!biases.empty() && biases.size() != 3)
      return rewriter.notifyMatchFailure(op, "only some projections have a bias");
    if (!canConcat(weights) || (!biases.empty() && !canConcat(biases)))
      return rewriter.notifyMatchFailure(op, "weights of different formats or widths");
    Type element = q.getType().getElementType();
    if (k.getType().getElementType() != element || v.getType().getElementType() != element)
      return rewriter.notifyMatchFailure(op, "q, k and v of different element types");

    // The fused projection goes where the first of the three was.
    Operation *first = q;
    for (LinearOp p : {k, v})
      if (p->isBeforeInBlock(first))
        first = p;
    rewriter.setInsertionPoint(first);
    Location loc = rewriter.getFusedLoc({q.getLoc(), k.getLoc(), v.getLoc()});
    Value weight = deriveWeight(rewriter, loc, WeightRecipe::Concat, weights,
                                "qkv_proj.weight");
    Value bias = biases.empty() ? Value()
                                : deriveWeight(rewriter, loc, WeightRecipe::Concat,
                                               biases, "qkv_proj.bias");
    SmallVector<int64_t> sizes;
    for (LinearOp p : projections)
      sizes.push_back(p.getType().getDimSize(1));
    auto qType = cast<RankedTensorType>(q.getType());
    auto fusedType = RankedTensorType::get(
        {qType.getDimSize(0), sizes[0] + sizes[1] + sizes[2]},
        qType.getElementType());
    Value fused = LinearOp::create(rewriter, loc, fusedType, x, weight, bias);
    auto split = SplitOp::create(
        rewriter, loc, TypeRange{q.getType(), k.getType(), v.getType()}, fused,
        rewriter.getDenseI64ArrayAttr(sizes));
    for (auto [p, result] : llvm::zip(projections, split.getResults()))
      rewriter.replaceOp(p, result);
    return success();
  }
};

struct FuseQKVPass final : public phimoe::impl::FuseQKVPassBase<FuseQKVPass> {
  using Base::Base;
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateFuseQKVPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace

void mlir::phimoe::populateFuseQKVPatterns(RewritePatternSet &patterns) {
  patterns.add<FuseQKVPattern>(patterns.getContext());
}
