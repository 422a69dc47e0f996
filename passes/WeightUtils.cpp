//===- WeightUtils.cpp - finding and deriving weight symbols --------------===//

#include "passes/WeightUtils.h"

#include "mlir/IR/SymbolTable.h"

using namespace mlir;
using namespace mlir::phimoe;

WeightOp mlir::phimoe::getWeightDecl(Value value) {
  auto ref = value.getDefiningOp<WeightRefOp>();
  if (!ref)
    return {};
  return SymbolTable::lookupNearestSymbolFrom<WeightOp>(ref, ref.getNameAttr());
}

bool mlir::phimoe::sameWeightFormat(Type a, Type b) {
  auto ta = dyn_cast<RankedTensorType>(a), tb = dyn_cast<RankedTensorType>(b);
  if (ta && tb)
    return ta.getElementType() == tb.getElementType();
  auto qa = dyn_cast<QWeightType>(a), qb = dyn_cast<QWeightType>(b);
  return qa && qb && qa.getScheme() == qb.getScheme();
}

bool mlir::phimoe::canConcat(ArrayRef<WeightOp> parts) {
  if (parts.empty())
    return false;
  Type first = WeightOp(parts.front()).getType();
  ArrayRef<int64_t> firstShape = getLogicalShape(first);
  for (WeightOp part : parts) {
    ArrayRef<int64_t> shape = getLogicalShape(part.getType());
    if (!sameWeightFormat(part.getType(), first) || shape.size() != firstShape.size() ||
        shape.empty() || shape.drop_front() != firstShape.drop_front())
      return false;
  }
  return true;
}

/// How precisely a weight format keeps values: block schemes by bits per value, then the
/// 16-bit floats, then f32.
static int precision(Type type) {
  if (auto q = dyn_cast<QWeightType>(type)) {
    switch (q.getScheme()) {
    case QuantScheme::Q4_0:
      return 1;
    case QuantScheme::Q4K:
      return 2;
    case QuantScheme::Q5K:
      return 3;
    case QuantScheme::Q6K:
      return 4;
    case QuantScheme::Q8_0:
      return 5;
    }
    return 0;
  }
  return cast<RankedTensorType>(type).getElementType().isF32() ? 7 : 6;
}

bool mlir::phimoe::unifyWeightFormats(RewriterBase &rewriter, ArrayRef<WeightOp> parts) {
  if (parts.empty())
    return false;
  ArrayRef<int64_t> firstShape = getLogicalShape(WeightOp(parts.front()).getType());
  Type best = WeightOp(parts.front()).getType();
  bool mixedHalves = false;
  for (WeightOp part : parts) {
    ArrayRef<int64_t> shape = getLogicalShape(part.getType());
    if (part.isDerived() || shape.size() != firstShape.size() || shape.empty() ||
        shape.drop_front() != firstShape.drop_front())
      return false;
    int p = precision(part.getType()), b = precision(best);
    if (p == 6 && b == 6 && !sameWeightFormat(part.getType(), best))
      mixedHalves = true; // f16 and bf16: neither holds the other
    if (p > b)
      best = part.getType();
  }
  auto module = WeightOp(parts.front())->getParentOfType<ModuleOp>();
  for (WeightOp part : parts) {
    Type type = part.getType();
    ArrayRef<int64_t> shape = getLogicalShape(type);
    Type target;
    if (mixedHalves && precision(best) == 6)
      target = RankedTensorType::get(shape, Float32Type::get(type.getContext()));
    else if (auto q = dyn_cast<QWeightType>(best))
      target = QWeightType::get(type.getContext(), q.getScheme(), shape);
    else
      target = RankedTensorType::get(shape, cast<RankedTensorType>(best).getElementType());
    if (target == type)
      continue;
    rewriter.modifyOpInPlace(part, [&] { part.setType(target); });
    if (auto uses = SymbolTable::getSymbolUses(part, module))
      for (const SymbolTable::SymbolUse &use : *uses)
        if (auto ref = dyn_cast<WeightRefOp>(use.getUser()))
          rewriter.modifyOpInPlace(ref, [&] { ref.getResult().setType(target); });
  }
  return canConcat(parts);
}

/// The type of the weight that `recipe` makes of `parts`, in their format.
static Type derivedType(WeightRecipe recipe, ArrayRef<WeightOp> parts) {
  ArrayRef<int64_t> first = getLogicalShape(WeightOp(parts.front()).getType());
  SmallVector<int64_t> shape;
  if (recipe == WeightRecipe::Concat) {
    shape.assign(first.begin(), first.end());
    shape.front() = 0;
    for (WeightOp part : parts)
      shape.front() += getLogicalShape(part.getType()).front();
  } else {
    shape.push_back(parts.size());
    shape.append(first.begin(), first.end());
  }
  Type partType = WeightOp(parts.front()).getType();
  if (auto q = dyn_cast<QWeightType>(partType))
    return QWeightType::get(partType.getContext(), q.getScheme(), shape);
  return RankedTensorType::get(shape,
                               cast<RankedTensorType>(partType).getElementType());
}

/// `<common dotted prefix of the parts' names><tag>`.
static std::string derivedName(ArrayRef<WeightOp> parts, StringRef tag) {
  StringRef prefix = WeightOp(parts.front()).getSymName();
  for (WeightOp part : parts.drop_front()) {
    StringRef name = part.getSymName();
    size_t n = 0;
    while (n < prefix.size() && n < name.size() && prefix[n] == name[n])
      ++n;
    prefix = prefix.take_front(n);
  }
  size_t dot = prefix.rfind('.');
  prefix = dot == StringRef::npos ? StringRef() : prefix.take_front(dot + 1);
  return (prefix + tag).str();
}

Value mlir::phimoe::deriveWeight(RewriterBase &rewriter, Location loc,
                                 WeightRecipe recipe, ArrayRef<WeightOp> parts,
                                 StringRef tag) {
  auto module = WeightOp(parts.front())->getParentOfType<ModuleOp>();
  MLIRContext *ctx = rewriter.getContext();
  Type type = derivedType(recipe, parts);
  SmallVector<Attribute> refs;
  for (WeightOp part : parts)
    refs.push_back(FlatSymbolRefAttr::get(part.getSymNameAttr()));
  ArrayAttr partsAttr = ArrayAttr::get(ctx, refs);

  // Reuse an identical derivation, so that a pattern applied twice declares
  // one weight.
  WeightOp decl;
  for (auto existing : module.getOps<WeightOp>())
    if (existing.getRecipe() == recipe && existing.getPartsAttr() == partsAttr &&
        existing.getType() == type) {
      decl = existing;
      break;
    }

  if (!decl) {
    std::string base = derivedName(parts, tag), name = base;
    for (int i = 1; SymbolTable::lookupSymbolIn(module, name); ++i)
      name = base + "_" + std::to_string(i);
    // Declare it right after the last of its parts.
    Operation *after = WeightOp(parts.front());
    for (WeightOp part : parts)
      if (after->isBeforeInBlock(part))
        after = part;
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPointAfter(after);
    decl = WeightOp::create(rewriter, after->getLoc(), name, type,
                            WeightRecipeAttr::get(ctx, recipe), partsAttr);
  }
  return WeightRefOp::create(rewriter, loc, type,
                             FlatSymbolRefAttr::get(decl.getSymNameAttr()));
}
