//===- Quantize.cpp - choose each weight's storage type by its role -------===//

#include "passes/Passes.h"

#include "llvm/ADT/MapVector.h"
#include "llvm/Support/Regex.h"

namespace mlir::phimoe {
#define GEN_PASS_DEF_QUANTIZEPASS
#include "passes/Passes.h.inc"
} // namespace mlir::phimoe

using namespace mlir;
using namespace mlir::phimoe;

namespace {

/// What a weight is for, in increasing order of precedence when a weight
/// plays several roles.
enum class Role { Vector, Body, Expert, Embedding, LMHead, Router };

/// A storage choice: keep the declared type, a float element type, or a
/// block-quantization scheme.
struct Storage {
  enum Kind { Keep, Float, Block } kind = Keep;
  Type element;
  QuantScheme scheme = QuantScheme::Q8_0;
};

std::optional<Storage> parseStorage(MLIRContext *ctx, StringRef name) {
  Storage s;
  if (name == "keep")
    return s;
  if (name == "f32" || name == "f16" || name == "bf16") {
    s.kind = Storage::Float;
    Builder b(ctx);
    s.element = name == "f32" ? Type(b.getF32Type())
                : name == "f16" ? Type(b.getF16Type()) : Type(b.getBF16Type());
    return s;
  }
  if (auto scheme = parseQuantScheme(name)) {
    s.kind = Storage::Block;
    s.scheme = *scheme;
    return s;
  }
  return std::nullopt;
}

/// Whether the result of `linear` is part of an expert: it feeds a
/// `moe_combine`, or reaches, through silu and mul, a linear that does.
bool isExpertLinear(LinearOp linear, int depth = 0) {
  if (depth > 4)
    return false;
  for (Operation *user : linear->getUsers()) {
    if (isa<MoECombineOp>(user))
      return true;
    SmallVector<Operation *> work{user};
    while (!work.empty()) {
      Operation *op = work.pop_back_val();
      if (auto next = dyn_cast<LinearOp>(op)) {
        if (next != linear && isExpertLinear(next, depth + 1))
          return true;
      } else if (isa<SiluOp, MulOp, GeluOp>(op)) {
        for (Operation *u : op->getUsers())
          work.push_back(u);
      }
    }
  }
  return false;
}

/// Whether a use reads a weight as vectors (a bias, or the stacked biases of experts).
bool readsVectors(OpOperand &use) {
  if (getLogicalShape(use.get().getType()).size() == 1)
    return true;
  auto moe = dyn_cast<MoEGeluOp>(use.getOwner());
  return moe && (use.get() == moe.getFc1Bias() || use.get() == moe.getFc2Bias());
}

/// The role a use of a weight gives it.
Role roleOfUse(OpOperand &use) {
  Operation *user = use.getOwner();
  Value value = use.get();
  if (readsVectors(use))
    return Role::Vector;
  if (auto moe = dyn_cast<MoEGeluOp>(user))
    return value == moe.getRouterWeight() ? Role::Router : Role::Expert;
  if (isa<RouterOp>(user))
    return Role::Router;
  if (auto moe = dyn_cast<MoEOp>(user))
    return value == moe.getRouterWeight() ? Role::Router : Role::Expert;
  if (isa<LMHeadOp>(user))
    return Role::LMHead;
  if (isa<EmbedOp>(user))
    return Role::Embedding;
  if (isa<GateUpOp>(user))
    return Role::Expert;
  if (auto linear = dyn_cast<LinearOp>(user))
    if (isExpertLinear(linear))
      return Role::Expert;
  return Role::Body;
}

/// The names of a weight and of every weight it is derived from.
void collectNames(WeightOp weight, SymbolTable &symbols,
                  SmallVectorImpl<StringRef> &names) {
  names.push_back(weight.getSymName());
  if (!weight.getPartsAttr())
    return;
  for (auto ref : weight.getPartsAttr().getAsRange<FlatSymbolRefAttr>())
    if (auto part = symbols.lookup<WeightOp>(ref.getValue()))
      collectNames(part, symbols, names);
}

struct QuantizePass final : public phimoe::impl::QuantizePassBase<QuantizePass> {
  using Base::Base;
  void runOnOperation() override;

private:
  /// The storage `name` asks for, or an error naming the option.
  std::optional<Storage> option(StringRef optionName, StringRef name) {
    auto storage = parseStorage(&getContext(), name);
    if (!storage)
      getOperation().emitError()
          << "phimoe-quantize: unknown " << optionName << " '" << name
          << "' (expected keep, f32, f16, bf16, q8_0, q4_0, q4k, q5k or q6k)";
    return storage;
  }
};

/// Gives `weight` and every reference to it the type `type`.
void setType(WeightOp weight, Type type,
             llvm::DenseMap<WeightOp, SmallVector<WeightRefOp>> &refs) {
  if (type == weight.getType())
    return;
  weight.setType(type);
  for (WeightRefOp ref : refs[weight])
    ref.getResult().setType(type);
}

/// The type `storage` gives a weight declared as `declared`.
Type storedType(const Storage &storage, Type declared) {
  ArrayRef<int64_t> shape = getLogicalShape(declared);
  MLIRContext *ctx = declared.getContext();
  switch (storage.kind) {
  case Storage::Keep:
    return declared;
  case Storage::Float:
    return RankedTensorType::get(shape, storage.element);
  case Storage::Block:
    for (QuantScheme scheme : {storage.scheme, QuantScheme::Q8_0})
      if (!shape.empty() && shape.back() % getBlockSize(scheme) == 0)
        return QWeightType::get(ctx, scheme, shape);
    return RankedTensorType::get(shape, Float32Type::get(ctx));
  }
  llvm_unreachable("unknown storage kind");
}

void QuantizePass::runOnOperation() {
  ModuleOp module = getOperation();
  MLIRContext *ctx = &getContext();

  std::optional<Storage> body = option("scheme", scheme);
  if (!body)
    return signalPassFailure();
  if (scope != "all" && scope != "experts") {
    module.emitError() << "phimoe-quantize: unknown scope '" << scope
                       << "' (expected all or experts)";
    return signalPassFailure();
  }
  bool moqe = scope == "experts";

  // The LM head and the embedding default to more precision than a low-bit
  // body (measured: bench/lm_head_choice.py, docs/BENCHMARKS.md): LM head q6k
  // under q4/q5 bodies and q8_0 under q6k; embedding q8_0 under 4- to 6-bit
  // bodies (one row a token: no decode cost). Under MoQE they stay as declared.
  auto autoFor = [&](Role role) -> Storage {
    if (moqe || body->kind != Storage::Block)
      return moqe ? Storage() : *body;
    QuantScheme s = body->scheme;
    bool lowBit = s == QuantScheme::Q4_0 || s == QuantScheme::Q4K || s == QuantScheme::Q5K;
    Storage out = *body;
    if (role == Role::LMHead && lowBit)
      out.scheme = QuantScheme::Q6K;
    if (role == Role::LMHead && s == QuantScheme::Q6K)
      out.scheme = QuantScheme::Q8_0;
    if (role == Role::Embedding && (lowBit || s == QuantScheme::Q6K))
      out.scheme = QuantScheme::Q8_0;
    return out;
  };
  std::optional<Storage> lmHeadStorage =
      lmHead == "auto" ? autoFor(Role::LMHead) : option("lm-head", lmHead);
  std::optional<Storage> embeddingStorage =
      embedding == "auto" ? autoFor(Role::Embedding) : option("embedding", embedding);
  if (!lmHeadStorage || !embeddingStorage)
    return signalPassFailure();

  struct Override {
    std::string pattern;
    std::unique_ptr<llvm::Regex> regex;
    Storage storage;
  };
  SmallVector<Override> parsedOverrides;
  for (const std::string &text : overrides) {
    size_t eq = text.rfind('=');
    if (eq == std::string::npos || eq == 0) {
      module.emitError() << "phimoe-quantize: override '" << text
                         << "' is not REGEX=TYPE";
      return signalPassFailure();
    }
    Override o{text.substr(0, eq), nullptr, {}};
    o.regex = std::make_unique<llvm::Regex>(o.pattern);
    std::string regexError;
    if (!o.regex->isValid(regexError)) {
      module.emitError() << "phimoe-quantize: override '" << text
                         << "' has an invalid regex: " << regexError;
      return signalPassFailure();
    }
    auto storage = option("override type", StringRef(text).substr(eq + 1));
    if (!storage)
      return signalPassFailure();
    o.storage = *storage;
    parsedOverrides.push_back(std::move(o));
  }

  // The role of each weight the functions read.
  SymbolTable symbols(module);
  llvm::MapVector<WeightOp, Role> roles;
  llvm::DenseMap<WeightOp, SmallVector<WeightRefOp>> refs;
  module.walk([&](WeightRefOp ref) {
    auto weight = symbols.lookup<WeightOp>(ref.getName());
    if (!weight)
      return;
    refs[weight].push_back(ref);
    auto [it, inserted] = roles.insert({weight, Role::Vector});
    Role role = it->second;
    bool vectors = getLogicalShape(weight.getType()).size() == 1 ||
                   (!ref->use_empty() && llvm::all_of(ref->getUses(), readsVectors));
    if (!vectors) {
      role = inserted ? Role::Body : role;
      for (OpOperand &use : ref->getUses())
        role = std::max(role, roleOfUse(use));
    }
    it->second = role;
  });

  for (auto [weight, role] : roles) {
    Storage storage;
    switch (role) {
    case Role::Router: // kept as declared, but a block-quantized one (a GGUF's) becomes f32
    case Role::Vector: // as the router, or f32 under any other --quant
      storage = (role == Role::Router || body->kind == Storage::Keep) &&
                        !isa<QWeightType>(weight.getType())
                    ? Storage()
                    : *parseStorage(ctx, "f32");
      break;
    case Role::LMHead:
      storage = *lmHeadStorage;
      break;
    case Role::Embedding:
      storage = *embeddingStorage;
      break;
    case Role::Expert:
      storage = *body;
      break;
    case Role::Body:
      storage = moqe ? Storage() : *body;
      break;
    }
    SmallVector<StringRef> names;
    collectNames(weight, symbols, names);
    for (const Override &o : parsedOverrides) {
      if (!llvm::any_of(names, [&](StringRef n) { return o.regex->match(n); }))
        continue;
      if (role == Role::Router) {
        weight.emitWarning() << "override '" << o.pattern
                             << "' ignored: the router is never quantized";
        continue;
      }
      // Biases and norms are read as floats: a block scheme does not apply.
      if (role == Role::Vector && o.storage.kind == Storage::Block)
        continue;
      storage = o.storage;
    }
    setType(weight, storedType(storage, weight.getType()), refs);
  }

  // A LayerNorm reads its weight and bias as one type: when overrides gave
  // them different ones, both are stored as f32, which loses nothing.
  module.walk([&](Operation *op) {
    if (!isa<LayerNormOp, AddLayerNormOp>(op))
      return;
    unsigned w = isa<LayerNormOp>(op) ? 1 : 2;
    if (op->getNumOperands() <= w + 1) // an RMSNorm: no bias
      return;
    Value weight = op->getOperand(w), bias = op->getOperand(w + 1);
    if (weight.getType() == bias.getType())
      return;
    for (Value v : {weight, bias})
      if (auto ref = v.getDefiningOp<WeightRefOp>())
        if (auto decl = symbols.lookup<WeightOp>(ref.getName()))
          setType(decl, RankedTensorType::get(getLogicalShape(decl.getType()),
                                              Float32Type::get(ctx)),
                  refs);
  });
}

} // namespace
