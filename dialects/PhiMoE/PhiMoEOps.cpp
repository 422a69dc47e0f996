//===- PhiMoEOps.cpp - phimoe op verifiers and symbol checks --------------===//

#include "dialects/PhiMoE/PhiMoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace mlir::phimoe;

#define GET_OP_CLASSES
#include "dialects/PhiMoE/PhiMoEOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Shape helpers
//===----------------------------------------------------------------------===//

/// Two dimensions agree when they are equal or either is dynamic.
static bool dimsAgree(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

static std::string dimStr(int64_t d) {
  return ShapedType::isDynamic(d) ? "?" : std::to_string(d);
}

static std::string shapeStr(ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (auto [i, d] : llvm::enumerate(shape))
    s += (i ? ", " : "") + dimStr(d);
  return s + "]";
}

/// Checks that `type` has rank `rank`; names the value as `what`.
static LogicalResult checkRank(Operation *op, StringRef what, Type type,
                               int64_t rank) {
  ArrayRef<int64_t> shape = getLogicalShape(type);
  if (static_cast<int64_t>(shape.size()) != rank)
    return op->emitOpError() << what << " must have rank " << rank << ", got "
                             << type;
  return success();
}

/// Checks that dimension `dim` of `what` is `expected` (dynamic agrees).
static LogicalResult checkDim(Operation *op, StringRef what, Type type,
                              int64_t dim, int64_t expected, StringRef because) {
  int64_t actual = getLogicalShape(type)[dim];
  if (!dimsAgree(actual, expected))
    return op->emitOpError() << what << " dimension " << dim << " is "
                             << dimStr(actual) << " but " << because << " is "
                             << dimStr(expected);
  return success();
}

static int64_t dimOf(Type type, int64_t dim) { return getLogicalShape(type)[dim]; }

/// Half a dimension; a dynamic one stays dynamic.
static int64_t half(int64_t d) { return ShapedType::isDynamic(d) ? d : d / 2; }

/// Shared rule of `linear` and `lm_head`: input [T, K], weight [N, K],
/// bias [N], result [T, N].
static LogicalResult verifyProjection(Operation *op, Value input, Value weight,
                                      Value bias, Value result) {
  Type in = input.getType(), w = weight.getType(), out = result.getType();
  if (failed(checkRank(op, "input", in, 2)) ||
      failed(checkRank(op, "weight", w, 2)) ||
      failed(checkRank(op, "result", out, 2)) ||
      failed(checkDim(op, "weight", w, 1, dimOf(in, 1), "the input width")) ||
      failed(checkDim(op, "result", out, 0, dimOf(in, 0), "the input's row count")) ||
      failed(checkDim(op, "result", out, 1, dimOf(w, 0), "the weight's row count")))
    return failure();
  if (bias && (failed(checkRank(op, "bias", bias.getType(), 1)) ||
               failed(checkDim(op, "bias", bias.getType(), 0, dimOf(w, 0),
                               "the weight's row count"))))
    return failure();
  return success();
}

static LogicalResult verifyNorm(Operation *op, Type input, Type weight, Value bias,
                                bool rms, double epsilon) {
  if (getLogicalShape(input).empty())
    return op->emitOpError() << "input must have rank at least 1";
  if (failed(checkRank(op, "weight", weight, 1)) ||
      failed(checkDim(op, "weight", weight, 0, getLogicalShape(input).back(),
                      "the normalized width")))
    return failure();
  if (!(epsilon > 0.0))
    return op->emitOpError() << "epsilon must be positive, got " << epsilon;
  if (rms && bias)
    return op->emitOpError() << "an RMSNorm (rms) has no bias";
  if (!rms && !bias)
    return op->emitOpError() << "a LayerNorm needs a bias (or `rms` for an RMSNorm)";
  return success();
}

/// Shared rule of `router` and `moe`: sparsemixer is defined for top-2 only.
static LogicalResult verifyRouting(Operation *op, RouterKind kind, int64_t topK,
                                   int64_t numExperts, double epsilon) {
  if (topK < 1 || (!ShapedType::isDynamic(numExperts) && topK > numExperts))
    return op->emitOpError() << "top_k must be in [1, " << dimStr(numExperts)
                             << "], got " << topK;
  if (kind == RouterKind::Sparsemixer && topK != 2)
    return op->emitOpError() << "sparsemixer routing is defined for top_k = 2 only, got "
                             << topK;
  if (epsilon < 0.0)
    return op->emitOpError() << "epsilon must not be negative, got " << epsilon;
  return success();
}

//===----------------------------------------------------------------------===//
// Weights
//===----------------------------------------------------------------------===//

LogicalResult WeightOp::verify() {
  if (getRecipe().has_value() != static_cast<bool>(getParts()))
    return emitOpError() << "a recipe needs parts and parts need a recipe";
  if (getParts() && getPartsAttr().empty())
    return emitOpError() << "a derived weight needs at least one part";
  if (auto tensor = dyn_cast<RankedTensorType>(getType()))
    if (!tensor.hasStaticShape())
      return emitOpError() << "weight shapes must be static, got " << tensor;
  return success();
}

/// Whether `target` is among the parts of `weight`, at any depth.
static bool derivesFrom(WeightOp weight, StringAttr target,
                        SymbolTableCollection &symbolTable,
                        llvm::SmallPtrSetImpl<Operation *> &visited) {
  if (!weight.isDerived() || !visited.insert(weight).second)
    return false;
  for (auto ref : weight.getPartsAttr().getAsRange<FlatSymbolRefAttr>()) {
    if (ref.getAttr() == target)
      return true;
    auto part = symbolTable.lookupNearestSymbolFrom<WeightOp>(weight, ref);
    if (part && derivesFrom(part, target, symbolTable, visited))
      return true;
  }
  return false;
}

LogicalResult WeightOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  if (!isDerived())
    return success();
  bool concat = *getRecipe() == WeightRecipe::Concat;
  StringRef verb = concat ? "concatenated" : "stacked";
  SmallVector<int64_t> first;
  int64_t rows = 0;
  for (Attribute attr : getPartsAttr()) {
    auto ref = cast<FlatSymbolRefAttr>(attr);
    if (ref.getValue() == getSymName())
      return emitOpError() << "weight @" << getSymName()
                           << " cannot be derived from itself";
    auto part = symbolTable.lookupNearestSymbolFrom<WeightOp>(*this, ref);
    if (!part)
      return emitOpError() << "part " << ref << " does not name a phimoe.weight";
    llvm::SmallPtrSet<Operation *, 8> visited;
    if (derivesFrom(part, getSymNameAttr(), symbolTable, visited))
      return emitOpError() << "weight @" << getSymName()
                           << " cannot be derived from itself (through " << ref << ")";
    ArrayRef<int64_t> shape = getLogicalShape(part.getType());
    if (shape.empty())
      return emitOpError() << "part " << ref << " has rank 0 and cannot be " << verb;
    if (first.empty()) {
      first.assign(shape.begin(), shape.end());
    } else {
      bool same = shape.size() == first.size();
      for (size_t i = concat ? 1 : 0; same && i < shape.size(); ++i)
        same = shape[i] == first[i];
      if (!same)
        return emitOpError() << "part " << ref << " has shape " << shapeStr(shape)
                             << ", which cannot be " << verb << " with "
                             << shapeStr(first);
    }
    rows += shape.front();
  }
  SmallVector<int64_t> expected;
  if (concat) {
    expected = first;
    expected.front() = rows;
  } else {
    expected.push_back(getPartsAttr().size());
    expected.append(first.begin(), first.end());
  }
  if (ArrayRef<int64_t>(expected) != getLogicalShape(getType()))
    return emitOpError() << "its parts make a " << shapeStr(expected)
                         << " tensor but its type " << getType()
                         << " has shape " << shapeStr(getLogicalShape(getType()));
  return success();
}

LogicalResult
WeightRefOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  auto weight = symbolTable.lookupNearestSymbolFrom<WeightOp>(*this, getNameAttr());
  if (!weight)
    return emitOpError() << getNameAttr() << " does not name a phimoe.weight";
  if (weight.getType() != getType())
    return emitOpError() << "result type " << getType()
                         << " differs from the declared type " << weight.getType()
                         << " of " << getNameAttr();
  return success();
}

//===----------------------------------------------------------------------===//
// Elementwise and normalization
//===----------------------------------------------------------------------===//

LogicalResult EmbedOp::verify() {
  Type table = getTable().getType(), out = getType();
  if (failed(checkRank(*this, "table", table, 2)) ||
      failed(checkRank(*this, "result", out, 2)) ||
      failed(checkDim(*this, "result", out, 0, dimOf(getIds().getType(), 0),
                      "the number of ids")) ||
      failed(checkDim(*this, "result", out, 1, dimOf(table, 1),
                      "the table width")))
    return failure();
  return success();
}

LogicalResult LayerNormOp::verify() {
  return verifyNorm(*this, getInput().getType(), getWeight().getType(), getBias(), getRms(),
                    getEpsilon().convertToDouble());
}

LogicalResult AddLayerNormOp::verify() {
  return verifyNorm(*this, getLhs().getType(), getWeight().getType(), getBias(), getRms(),
                    getEpsilon().convertToDouble());
}

//===----------------------------------------------------------------------===//
// Projections
//===----------------------------------------------------------------------===//

LogicalResult LinearOp::verify() {
  return verifyProjection(*this, getInput(), getWeight(), getBias(), getResult());
}

LogicalResult LMHeadOp::verify() {
  return verifyProjection(*this, getInput(), getWeight(), getBias(), getResult());
}

LogicalResult SplitOp::verify() {
  ArrayRef<int64_t> sizes = getSizes();
  if (sizes.size() != getNumResults())
    return emitOpError() << "has " << sizes.size() << " sizes but "
                         << getNumResults() << " results";
  Type in = getInput().getType();
  ArrayRef<int64_t> inShape = getLogicalShape(in);
  if (inShape.empty())
    return emitOpError() << "input must have rank at least 1";
  int64_t total = 0;
  Type element = cast<RankedTensorType>(in).getElementType();
  for (auto [size, result] : llvm::zip(sizes, getResults())) {
    if (size <= 0)
      return emitOpError() << "sizes must be positive, got " << size;
    if (cast<RankedTensorType>(result.getType()).getElementType() != element)
      return emitOpError() << "results must have the input's element type " << element
                           << ", got " << result.getType();
    total += size;
    SmallVector<int64_t> expected(inShape);
    expected.back() = size;
    ArrayRef<int64_t> got = getLogicalShape(result.getType());
    bool ok = got.size() == expected.size();
    for (size_t i = 0; ok && i < got.size(); ++i)
      ok = dimsAgree(got[i], expected[i]);
    if (!ok)
      return emitOpError() << "result of size " << size << " must have shape "
                           << shapeStr(expected) << ", got " << result.getType();
  }
  if (!dimsAgree(inShape.back(), total))
    return emitOpError() << "sizes add up to " << total
                         << " but the input's last dimension is "
                         << dimStr(inShape.back());
  return success();
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

LogicalResult RopeOp::verify() {
  int64_t headDim = getHeadDim();
  if (headDim <= 0 || headDim % 2 != 0)
    return emitOpError() << "head_dim must be positive and even, got " << headDim;
  Type in = getInput().getType();
  if (failed(checkRank(*this, "input", in, 2)) ||
      failed(checkDim(*this, "positions", getPositions().getType(), 0,
                      dimOf(in, 0), "the input's row count")))
    return failure();
  int64_t width = dimOf(in, 1);
  if (!ShapedType::isDynamic(width) && width % headDim != 0)
    return emitOpError() << "input width " << width
                         << " is not a whole number of heads of " << headDim;
  int64_t lanes = getRotaryLanes();
  if (lanes <= 0 || lanes % 2 != 0 || lanes > headDim)
    return emitOpError() << "rotary_dim must be positive, even and at most head_dim ("
                         << headDim << "), got " << lanes;
  LongRopeAttr scaling = getScaling();
  if (scaling.getNumFrequencies() != lanes / 2)
    return emitOpError() << "LongRoPE factor arrays hold "
                         << scaling.getNumFrequencies() << " values but "
                         << (getRotaryDim() ? "rotary_dim " : "head_dim ") << lanes
                         << " needs " << lanes / 2;
  return success();
}

LogicalResult AttentionOp::verify() {
  int64_t heads = getNumHeads(), kvHeads = getNumKvHeads(), headDim = getHeadDim();
  if (heads <= 0 || kvHeads <= 0 || headDim <= 0)
    return emitOpError() << "num_heads, num_kv_heads and head_dim must be positive";
  if (heads % kvHeads != 0)
    return emitOpError() << "num_kv_heads (" << kvHeads
                         << ") must divide num_heads (" << heads << ")";
  Type q = getQ().getType(), k = getK().getType();
  if (failed(checkRank(*this, "q", q, 2)) || failed(checkRank(*this, "k", k, 2)) ||
      failed(checkDim(*this, "q", q, 1, heads * headDim, "num_heads * head_dim")) ||
      failed(checkDim(*this, "k", k, 1, kvHeads * headDim,
                      "num_kv_heads * head_dim")) ||
      failed(checkDim(*this, "k", k, 0, dimOf(q, 0), "q's row count")) ||
      failed(checkDim(*this, "positions", getPositions().getType(), 0,
                      dimOf(q, 0), "q's row count")))
    return failure();
  KVCacheType cache = getCache().getType();
  if (cache.getKvHeads() != kvHeads || cache.getHeadDim() != headDim)
    return emitOpError() << "the cache holds " << cache.getKvHeads()
                         << " kv heads of " << cache.getHeadDim()
                         << " but the op has " << kvHeads << " of " << headDim;
  int64_t layer = static_cast<int64_t>(getLayer());
  if (layer < 0 || layer >= cache.getLayers())
    return emitOpError() << "layer " << layer << " is outside the cache's "
                         << cache.getLayers() << " layers";
  if (getScale() && !(getScale()->convertToDouble() > 0.0))
    return emitOpError() << "scale must be positive";
  if (getSlidingWindow() && static_cast<int64_t>(*getSlidingWindow()) <= 0)
    return emitOpError() << "sliding_window must be positive";
  return success();
}

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

LogicalResult RouterOp::verify() {
  Type in = getInput().getType(), w = getWeight().getType();
  if (failed(checkRank(*this, "input", in, 2)) ||
      failed(checkRank(*this, "weight", w, 2)) ||
      failed(checkDim(*this, "weight", w, 1, dimOf(in, 1), "the input width")) ||
      failed(verifyRouting(*this, getKind(), getTopK(), dimOf(w, 0),
                           getEpsilon().convertToDouble())))
    return failure();
  for (auto [name, type] : {std::pair<StringRef, Type>{"experts", getExperts().getType()},
                            {"weights", getWeights().getType()}}) {
    if (failed(checkRank(*this, name, type, 2)) ||
        failed(checkDim(*this, name, type, 0, dimOf(in, 0), "the input's row count")) ||
        failed(checkDim(*this, name, type, 1, getTopK(), "top_k")))
      return failure();
  }
  return success();
}

LogicalResult GateUpOp::verify() {
  Type in = getInput().getType(), w = getWeight().getType(), out = getType();
  if (failed(checkRank(*this, "input", in, 2)) ||
      failed(checkRank(*this, "weight", w, 2)) ||
      failed(checkRank(*this, "result", out, 2)) ||
      failed(checkDim(*this, "weight", w, 1, dimOf(in, 1), "the input width")))
    return failure();
  int64_t rows = dimOf(w, 0);
  if (!ShapedType::isDynamic(rows) && rows % 2 != 0)
    return emitOpError() << "weight must hold gate and up rows in equal numbers, got "
                         << rows << " rows";
  if (failed(checkDim(*this, "result", out, 0, dimOf(in, 0), "the input's row count")) ||
      failed(checkDim(*this, "result", out, 1, half(rows), "half the weight's row count")))
    return failure();
  return success();
}

LogicalResult MoECombineOp::verify() {
  Type ids = getExperts().getType(), weights = getWeights().getType();
  Type out = getType();
  if (failed(checkRank(*this, "weights", weights, 2)) ||
      failed(checkRank(*this, "result", out, 2)) ||
      failed(checkDim(*this, "weights", weights, 0, dimOf(ids, 0),
                      "the routing's row count")) ||
      failed(checkDim(*this, "weights", weights, 1, dimOf(ids, 1),
                      "the routing's top_k")) ||
      failed(checkDim(*this, "result", out, 0, dimOf(ids, 0),
                      "the routing's row count")))
    return failure();
  int64_t topK = dimOf(ids, 1);
  int64_t numExperts = getExpertOutputs().size();
  if (!ShapedType::isDynamic(topK) && numExperts < topK)
    return emitOpError() << "has " << numExperts << " expert outputs but top_k is "
                         << topK;
  for (Value e : getExpertOutputs())
    if (e.getType() != out)
      return emitOpError() << "expert outputs must have the result type " << out
                           << ", got " << e.getType();
  return success();
}

LogicalResult MoEOp::verify() {
  Type in = getInput().getType(), router = getRouterWeight().getType();
  Type gateUp = getGateUp().getType(), down = getDown().getType();
  if (failed(checkRank(*this, "input", in, 2)) ||
      failed(checkRank(*this, "router weight", router, 2)) ||
      failed(checkRank(*this, "gate_up weight", gateUp, 3)) ||
      failed(checkRank(*this, "down weight", down, 3)) ||
      failed(checkDim(*this, "router weight", router, 1, dimOf(in, 1),
                      "the input width")))
    return failure();
  int64_t experts = dimOf(router, 0);
  if (failed(checkDim(*this, "gate_up weight", gateUp, 0, experts,
                      "the router's expert count")) ||
      failed(checkDim(*this, "down weight", down, 0, experts,
                      "the router's expert count")) ||
      failed(checkDim(*this, "gate_up weight", gateUp, 2, dimOf(in, 1),
                      "the input width")))
    return failure();
  int64_t gateUpRows = dimOf(gateUp, 1);
  if (!ShapedType::isDynamic(gateUpRows) && gateUpRows % 2 != 0)
    return emitOpError() << "gate_up weight must hold gate and up rows in equal "
                            "numbers, got "
                         << gateUpRows << " rows";
  if (failed(checkDim(*this, "down weight", down, 1, dimOf(in, 1),
                      "the input width")) ||
      failed(checkDim(*this, "down weight", down, 2, half(gateUpRows),
                      "the expert's intermediate size")))
    return failure();
  return verifyRouting(*this, getKind(), getTopK(), experts,
                       getEpsilon().convertToDouble());
}

LogicalResult MoEGeluOp::verify() {
  Type in = getInput().getType(), router = getRouterWeight().getType();
  Type fc1 = getFc1().getType(), fc2 = getFc2().getType();
  Type b1 = getFc1Bias().getType(), b2 = getFc2Bias().getType();
  if (failed(checkRank(*this, "input", in, 2)) ||
      failed(checkRank(*this, "router weight", router, 2)) ||
      failed(checkRank(*this, "fc1 weight", fc1, 3)) ||
      failed(checkRank(*this, "fc2 weight", fc2, 3)) ||
      failed(checkRank(*this, "fc1 bias", b1, 2)) ||
      failed(checkRank(*this, "fc2 bias", b2, 2)) ||
      failed(checkDim(*this, "router weight", router, 1, dimOf(in, 1), "the input width")))
    return failure();
  int64_t experts = dimOf(router, 0), width = dimOf(in, 1), inner = dimOf(fc1, 1);
  for (auto [name, type] : {std::pair<StringRef, Type>{"fc1 weight", fc1},
                            {"fc1 bias", b1}, {"fc2 weight", fc2}, {"fc2 bias", b2}})
    if (failed(checkDim(*this, name, type, 0, experts, "the router's expert count")))
      return failure();
  if (failed(checkDim(*this, "fc1 weight", fc1, 2, width, "the input width")) ||
      failed(checkDim(*this, "fc1 bias", b1, 1, inner, "fc1's row count")) ||
      failed(checkDim(*this, "fc2 weight", fc2, 1, width, "the input width")) ||
      failed(checkDim(*this, "fc2 weight", fc2, 2, inner, "fc1's row count")) ||
      failed(checkDim(*this, "fc2 bias", b2, 1, width, "the input width")))
    return failure();
  return verifyRouting(*this, getKind(), getTopK(), experts,
                       getEpsilon().convertToDouble());
}
