//===- LowerToEmitC.cpp - @forward as EmitC calls of phimoe_rt kernels ----===//

#include "passes/Passes.h"

#include "mlir/Dialect/EmitC/IR/EmitC.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/Support/Format.h"

namespace mlir::phimoe {
#define GEN_PASS_DEF_LOWERTOEMITCPASS
#include "passes/Passes.h.inc"
} // namespace mlir::phimoe

using namespace mlir;
using namespace mlir::phimoe;

namespace {

/// A float as a C++ float literal that reads back to the same float.
std::string floatLiteral(double value) {
  std::string s;
  llvm::raw_string_ostream(s) << llvm::format("%.9g", static_cast<float>(value));
  if (s.find_first_of(".en") == std::string::npos)
    s += ".0";
  return s + "f";
}

/// The C++ storage element of a weight type, e.g. "phimoe_rt::bf16".
std::string storageName(Type type) {
  if (auto q = dyn_cast<QWeightType>(type))
    return ("phimoe_rt::block_" + stringifyQuantScheme(q.getScheme())).str();
  Type element = cast<RankedTensorType>(type).getElementType();
  if (element.isF32())
    return "float";
  if (element.isBF16())
    return "phimoe_rt::bf16";
  if (element.isF16())
    return "phimoe_rt::f16";
  return "";
}

/// A q4_K, q8_0 or q6_K weight whose rows the CPU kernels read interleaved in groups of 16
/// (phimoe_rt::block_q4k_16rows, block_q8_0_16rows, block_q6k_16rows): the packer writes it
/// so when this unit attribute is on its declaration.
constexpr llvm::StringLiteral kRows16Attr = "phimoe.rows16";

/// Whether `weight` can be interleaved for the CPU: q4_K, q8_0 or (with `q6k`) q6_K, a row
/// count (the second-to-last dimension) of whole groups of 16, and read only as the matrix of
/// a linear layer, the LM head or a MoE's experts (not as an embedding table, which is read
/// by rows).
bool interleavable(WeightOp weight, ModuleOp module, bool q6k) {
  auto q = dyn_cast<QWeightType>(weight.getType());
  if (!q ||
      (q.getScheme() != QuantScheme::Q4K && q.getScheme() != QuantScheme::Q8_0 &&
       (q.getScheme() != QuantScheme::Q6K || !q6k)) ||
      !weight->hasAttr("phimoe.pack_offset"))
    return false;
  ArrayRef<int64_t> shape = q.getShape();
  if (shape.size() < 2 || shape[shape.size() - 2] % 16 != 0)
    return false;
  auto uses = SymbolTable::getSymbolUses(weight, &module.getBodyRegion());
  if (!uses)
    return false;
  bool any = false;
  for (const SymbolTable::SymbolUse &use : *uses) {
    auto ref = dyn_cast<WeightRefOp>(use.getUser());
    if (!ref)
      return false;
    for (OpOperand &operand : ref->getUses()) {
      Operation *user = operand.getOwner();
      bool matrix = false;
      if (isa<LinearOp, LMHeadOp>(user))
        matrix = operand.getOperandNumber() == 1;
      else if (auto moe = dyn_cast<MoEOp>(user))
        matrix = operand.get() == moe.getGateUp() || operand.get() == moe.getDown();
      else if (auto moe = dyn_cast<MoEGeluOp>(user))
        matrix = operand.get() == moe.getFc1() || operand.get() == moe.getFc2();
      if (!matrix)
        return false;
      any = true;
    }
  }
  return any;
}

/// XORed into the model hash of a CUDA build (its weight pack differs in layout).
constexpr uint64_t kCudaHashSalt = 0x43554441u; // "CUDA"
/// XORed into the model hash of a CPU build that keeps q6_K matrices in rows.
constexpr uint64_t kQ6kRowsHashSalt = 0x51364b52u; // "Q6KR"

/// XORs `salt` into the module's phimoe.model_hash (set by phimoe-plan-memory), so that
/// phimoe-bin refuses a weight pack written in another layout.
void saltModelHash(ModuleOp module, uint64_t salt) {
  if (auto hash = module->getAttrOfType<IntegerAttr>("phimoe.model_hash"))
    module->setAttr("phimoe.model_hash",
                    IntegerAttr::get(hash.getType(),
                                     hash.getValue() ^
                                         llvm::APInt(hash.getValue().getBitWidth(), salt)));
}

int64_t dim(Value value, int64_t i) { return getLogicalShape(value.getType())[i]; }

class Lowering {
public:
  Lowering(ModuleOp module, func::FuncOp forward, bool cuda, bool fuseQkvRope, bool fuseRouter,
           bool fuseMoeNorm, bool fuseLinearNorm, bool fuseQkvGemv, bool stageQ4kInputs,
           bool rows16Q6k)
      : module(module), forward(forward), ctx(module.getContext()), b(ctx), cuda(cuda),
        fuseQkvRope(fuseQkvRope), fuseRouter(fuseRouter), fuseMoeNorm(fuseMoeNorm),
        fuseLinearNorm(fuseLinearNorm), fuseQkvGemv(fuseQkvGemv), stageQ4kInputs(stageQ4kInputs),
        rows16Q6k(rows16Q6k) {}

  LogicalResult run();

private:
  Value act(Operation *op, unsigned result);
  Value weightPtr(WeightRefOp ref);
  /// The pointer of a weight that a fused launch reads before its reference op is lowered
  /// (lowered here, once); null where it has none.
  Value weightAhead(Value weight) {
    if (!values.lookup(weight))
      if (auto ref = weight.getDefiningOp<WeightRefOp>())
        values[weight] = weightPtr(ref);
    return values.lookup(weight);
  }
  /// Places op's results at their planned arena offsets, unless a fusion placed them already.
  void placeResults(Operation *op) {
    for (OpResult result : op->getResults())
      if (!values.lookup(result))
        if (Value ptr = act(op, result.getResultNumber()))
          values[result] = ptr;
  }
  LogicalResult lower(Operation *op);
  void call(StringRef callee, ArrayRef<Attribute> templateArgs, ArrayRef<Attribute> args,
            ValueRange operands);
  /// An operand placeholder for `call`: the i-th of its operands.
  Attribute operand(unsigned i) { return b.getIndexAttr(i); }
  Attribute i32(int64_t v) { return b.getI32IntegerAttr(v); }
  Attribute f32(double v) { return b.getF32FloatAttr(v); }
  Attribute opaque(StringRef text) { return emitc::OpaqueAttr::get(ctx, text); }
  std::string ropeTable(LongRopeAttr rope);
  /// Whether `rope` rotates the keys of one attention only, whose values are lowered
  /// already: then CUDA fuses it with the KV-cache write.
  bool fusesWithCacheWrite(RopeOp rope) {
    if (!rope->hasOneUse() || rope.getRotaryDim())
      return false;
    auto att = dyn_cast<AttentionOp>(*rope->getUsers().begin());
    return att && att.getK() == rope.getResult() && att.getQ() != rope.getResult() &&
           att.getV() != rope.getResult() && values.lookup(att.getV()) &&
           rope.getHeadDim() == att.getHeadDim();
  }
  /// A three-way split of a fused q/k/v projection whose next two ops are the RoPE of its
  /// queries (used only as an attention's q) and of its keys (fusesWithCacheWrite, the same
  /// attention, whose v is the third range and only its): what qkv_rope_kv_write does at once.
  /// (Nothing may run between them: the queries' buffer is planned at the rope op, and could
  /// be what an op in between used.)
  struct QkvRope {
    RopeOp q, k;
    AttentionOp att;
  };
  std::optional<QkvRope> qkvRope(SplitOp split) {
    if (!fuseQkvRope || split.getNumResults() != 3)
      return std::nullopt;
    Operation *first = split->getNextNode();
    Operation *second = first ? first->getNextNode() : nullptr;
    auto a = dyn_cast_or_null<RopeOp>(first), c = dyn_cast_or_null<RopeOp>(second);
    if (!a || !c)
      return std::nullopt;
    RopeOp q = a.getInput() == split.getResult(0) ? a : c, k = q == a ? c : a;
    if (q.getInput() != split.getResult(0) || k.getInput() != split.getResult(1) ||
        !split.getResult(0).hasOneUse() || !split.getResult(1).hasOneUse() ||
        !fusesWithCacheWrite(k) || !q->hasOneUse() || q.getScaling() != k.getScaling() ||
        q.getRotaryDim())
      return std::nullopt;
    auto att = cast<AttentionOp>(*k->getUsers().begin());
    if (*q->getUsers().begin() != att.getOperation() || att.getQ() != q.getResult() ||
        att.getV() != split.getResult(2) || !split.getResult(2).hasOneUse() ||
        q.getHeadDim() != att.getHeadDim())
      return std::nullopt;
    const int64_t d = static_cast<int64_t>(att.getHeadDim());
    const int64_t hq = static_cast<int64_t>(att.getNumHeads()) * d;
    const int64_t hkv = static_cast<int64_t>(att.getNumKvHeads()) * d;
    if (dim(split.getResult(0), 1) != hq || dim(split.getResult(1), 1) != hkv ||
        dim(split.getResult(2), 1) != hkv)
      return std::nullopt;
    return QkvRope{q, k, att};
  }
  /// Whether the memory plan keeps op's result `index` apart from `input` (each a buffer of
  /// max_tokens rows from its arena offset); false where it cannot tell.
  bool disjoint(Value input, Operation *op, unsigned index = 0) {
    auto maxTokens = forward->getAttrOfType<IntegerAttr>("phimoe.max_tokens");
    auto in = input.getDefiningOp() ? input.getDefiningOp()->getAttrOfType<DenseI64ArrayAttr>(
                                          "phimoe.arena")
                                    : nullptr;
    auto out = op->getAttrOfType<DenseI64ArrayAttr>("phimoe.arena");
    unsigned inIndex = cast<OpResult>(input).getResultNumber();
    if (!maxTokens || !in || !out || in.size() <= inIndex || out.size() <= index ||
        in[inIndex] < 0 || out[index] < 0)
      return false;
    const int64_t rows = maxTokens.getInt();
    const int64_t inBegin = in[inIndex], inEnd = inBegin + rows * dim(input, 1);
    const int64_t outBegin = out[index], outEnd = outBegin + rows * dim(op->getResult(index), 1);
    return inEnd <= outBegin || outEnd <= inBegin;
  }
  /// The sparsemixer MoE that reads aln's output and is the next op but for weight
  /// references (whose pointers are plain arithmetic): add_layer_norm_route computes its
  /// routes in the norm's launch. Null where there is none, or fuse-router is off.
  MoEOp routedMoE(AddLayerNormOp aln) {
    if (!fuseRouter)
      return MoEOp();
    auto moe = dyn_cast_or_null<MoEOp>(nextKernelOp(aln));
    if (!moe || aln.getRms() || moe.getKind() != RouterKind::Sparsemixer ||
        moe.getInput() != aln.getResult() ||
        !moe.getRouterWeight().getDefiningOp<WeightRefOp>())
      return MoEOp();
    return moe;
  }
  /// The add_layer_norm that adds producer's rows (its result 0, their only use) to the
  /// residual and is producer's next op but for weight references: CUDA runs it in the last
  /// block of each row of producer's kernel. Null where there is none, or where the plan does
  /// not keep the norm's outputs apart from producer's rows and from `input` where given (the
  /// norm of one row runs while other rows' blocks still read their input and write theirs).
  AddLayerNormOp normAfter(Operation *producer, Value input) {
    Value rows = producer->getResult(0);
    auto aln = dyn_cast_or_null<AddLayerNormOp>(nextKernelOp(producer));
    if (!aln || aln.getRms() || aln.getRhs() != rows || !rows.hasOneUse() ||
        !aln.getWeight().getDefiningOp<WeightRefOp>() ||
        !aln.getBias().getDefiningOp<WeightRefOp>())
      return AddLayerNormOp();
    for (unsigned i : {0u, 1u})
      if (!disjoint(rows, aln, i) || (input && !disjoint(input, aln, i)))
        return AddLayerNormOp();
    return aln;
  }
  /// normAfter for a sparsemixer MoE (moe_sparsemixer_add_layer_norm; its down projection
  /// reads the act rows, not the MoE's input): null where the norm feeds a MoE of its own
  /// (add_layer_norm_route takes it), or fuse-moe-norm is off.
  AddLayerNormOp normAfter(MoEOp moe) {
    if (!cuda || !fuseMoeNorm || moe.getKind() != RouterKind::Sparsemixer)
      return AddLayerNormOp();
    AddLayerNormOp aln = normAfter(moe, Value());
    return aln && !routedMoE(aln) ? aln : AddLayerNormOp();
  }
  /// normAfter for a linear layer (linear_add_layer_norm, or with the routes of the MoE after
  /// the norm linear_add_layer_norm_route): null where fuse-linear-norm is off.
  AddLayerNormOp normAfter(LinearOp linear) {
    if (!cuda || !fuseLinearNorm)
      return AddLayerNormOp();
    return normAfter(linear, linear->getOperand(0));
  }
  /// The q/k/v split (qkvRope) that is the next op after the linear layer of its input (the
  /// layer's only use), where the plan keeps the queries' buffer apart from the projection
  /// and from the layer's input (the last block of a head writes its queries while other
  /// heads' blocks still read the input): CUDA rotates the heads and writes the KV cache in
  /// the GEMV's last blocks (linear_qkv_rope_kv_write). None where fuse-qkv-gemv is off.
  /// (Places the split's results, which qkvRope needs, once the plan allows the launch.)
  std::optional<QkvRope> qkvAfter(LinearOp linear) {
    if (!cuda || !fuseQkvGemv)
      return std::nullopt;
    auto split = dyn_cast_or_null<SplitOp>(nextKernelOp(linear));
    if (!split || split.getInput() != linear->getResult(0) || !linear->getResult(0).hasOneUse())
      return std::nullopt;
    // (The plan first: the split's results are placed only for a launch that takes them.)
    Value queries = split.getResult(0);
    auto q = queries.hasOneUse() ? dyn_cast<RopeOp>(*queries.getUsers().begin()) : RopeOp();
    if (!q || !disjoint(split.getInput(), q) || !disjoint(linear->getOperand(0), q))
      return std::nullopt;
    placeResults(split);
    std::optional<QkvRope> f = qkvRope(split);
    if (!f)
      return std::nullopt;
    const int64_t heads = static_cast<int64_t>(f->att.getNumHeads() + 2 * f->att.getNumKvHeads());
    if (dim(split.getInput(), 1) != heads * static_cast<int64_t>(f->att.getHeadDim()))
      return std::nullopt;
    return f;
  }
  /// The op after `op` but for weight references (plain pointer arithmetic, no launch).
  static Operation *nextKernelOp(Operation *op) {
    Operation *next = op->getNextNode();
    while (next && isa<WeightRefOp>(next))
      next = next->getNextNode();
    return next;
  }
  /// CUDA: the template argument `Next` of the launch of `producer`, whose rows `result` the
  /// next launch reads as the input of a q4_K GEMV (a linear layer, or a MoE's
  /// experts): the storage, so that the producer's kernel stages the rows in fixed point for
  /// that GEMV's dp4a (phimoe_cuda::detail::stage_for). Null otherwise.
  Attribute stagedFor(Operation *producer, Value result) {
    if (!cuda || !stageQ4kInputs)
      return {};
    Operation *next = nextKernelOp(producer);
    Type weight;
    if (auto linear = dyn_cast_or_null<LinearOp>(next);
        linear && linear->getOperand(0) == result)
      weight = linear->getOperand(1).getType();
    else if (auto moe = dyn_cast_or_null<MoEOp>(next);
             moe && moe.getInput() == result)
      weight = moe.getGateUp().getType();
    auto q = dyn_cast_or_null<QWeightType>(weight);
    if (!q || q.getScheme() != QuantScheme::Q4K)
      return {};
    return opaque(storageName(q));
  }
  /// shape, then `next` where there is one.
  static SmallVector<Attribute> withNext(SmallVector<Attribute> shape, Attribute next) {
    if (next)
      shape.push_back(next);
    return shape;
  }
  /// A runtime entry point: phimoe_rt::NAME for the CPU, phimoe_cuda::NAME for CUDA.
  std::string rt(StringRef name) const {
    return ((cuda ? "phimoe_cuda::" : "phimoe_rt::") + name).str();
  }

  ModuleOp module;
  func::FuncOp forward;
  MLIRContext *ctx;
  OpBuilder b;
  bool cuda, fuseQkvRope, fuseRouter, fuseMoeNorm, fuseLinearNorm, fuseQkvGemv, stageQ4kInputs,
      rows16Q6k;
  Location loc = UnknownLoc::get(ctx);
  emitc::OpaqueType ctxType = emitc::OpaqueType::get(ctx, rt("Context&"));
  emitc::PointerType floatPtr = emitc::PointerType::get(Float32Type::get(ctx));
  Value ctxArg, idsArg, posArg, nArg, rowsArg, logitsArg;
  llvm::DenseMap<Value, Value> values; // phimoe value -> emitc pointer
  llvm::MapVector<Attribute, std::string> ropes;
  llvm::DenseSet<Operation *> kvWritten; // attentions whose k and v rope_kv_write wrote
  llvm::DenseSet<Operation *> fusedAway; // ops an earlier op's kernel did (qkv_rope_kv_write)
  llvm::DenseSet<Operation *> routed;    // MoEs whose routes add_layer_norm_route computes
  std::string globals;
  int64_t hidden = 0, intermediate = 0, experts = 0;
};

void Lowering::call(StringRef callee, ArrayRef<Attribute> templateArgs,
                    ArrayRef<Attribute> args, ValueRange operands) {
  emitc::CallOpaqueOp::create(b, loc, TypeRange{}, callee, operands, b.getArrayAttr(args),
                              templateArgs.empty() ? ArrayAttr()
                                                   : b.getArrayAttr(templateArgs));
}

Value Lowering::act(Operation *op, unsigned result) {
  auto offsets = op->getAttrOfType<DenseI64ArrayAttr>("phimoe.arena");
  if (!offsets || offsets.size() <= result || offsets[result] < 0)
    return {};
  return emitc::CallOpaqueOp::create(
             b, loc, TypeRange{floatPtr}, rt("act"), ValueRange{ctxArg},
             b.getArrayAttr({operand(0), b.getI64IntegerAttr(offsets[result])}), ArrayAttr())
      .getResult(0);
}

Value Lowering::weightPtr(WeightRefOp ref) {
  auto decl = module.lookupSymbol<WeightOp>(ref.getNameAttr());
  auto offset = decl ? decl->getAttrOfType<IntegerAttr>("phimoe.pack_offset") : nullptr;
  if (!offset) {
    ref.emitOpError("has no pack offset: run phimoe-plan-memory first");
    return {};
  }
  std::string element = storageName(ref.getType());
  if (decl->hasAttr(kRows16Attr))
    element += "_x16"; // phimoe_rt::block_q4k_x16, block_q8_0_x16, block_q6k_x16
  auto type = emitc::PointerType::get(emitc::OpaqueType::get(ctx, "const " + element));
  return emitc::CallOpaqueOp::create(
             b, loc, TypeRange{type}, rt("weight"), ValueRange{ctxArg},
             b.getArrayAttr({operand(0), b.getI64IntegerAttr(offset.getInt())}),
             b.getArrayAttr({TypeAttr::get(emitc::OpaqueType::get(ctx, element))}))
      .getResult(0);
}

std::string Lowering::ropeTable(LongRopeAttr rope) {
  auto it = ropes.find(rope);
  if (it != ropes.end())
    return it->second;
  std::string name = "kRope" + std::to_string(ropes.size());
  llvm::raw_string_ostream os(globals);
  for (auto [suffix, factors] :
       {std::pair<const char *, DenseF32ArrayAttr>{"Short", rope.getShortFactor()},
        {"Long", rope.getLongFactor()}}) {
    os << "static const float " << name << suffix << "[" << factors.size() << "] = {";
    llvm::interleaveComma(factors.asArrayRef(), os,
                          [&](float f) { os << floatLiteral(f); });
    os << "};\n";
  }
  os << "static const phimoe_rt::RopeParams " << name << " = {"
     << floatLiteral(rope.getTheta().convertToDouble()) << ", "
     << rope.getOriginalMaxPosition() << ", "
     << floatLiteral(rope.getShortMscale().convertToDouble()) << ", "
     << floatLiteral(rope.getLongMscale().convertToDouble()) << ", " << name << "Short, "
     << name << "Long};\n";
  ropes[rope] = name;
  return name;
}

LogicalResult Lowering::lower(Operation *op) {
  // Operands as emitc values, in order, with `n` wherever a kernel wants it.
  auto v = [&](Value value) { return values.lookup(value); };
  Value n = nArg;
  if (auto ref = dyn_cast<WeightRefOp>(op)) // (a fused launch may have lowered it already)
    return success(static_cast<bool>(weightAhead(ref)));
  if (auto ret = dyn_cast<func::ReturnOp>(op)) {
    emitc::ReturnOp::create(b, loc, Value());
    return success();
  }
  for (Value operand : op->getOperands())
    if (!values.lookup(operand) && operand != forward.getArgument(2))
      return op->emitOpError("phimoe-lower-to-emitc: an operand has no lowered value");
  placeResults(op);
  if (fusedAway.contains(op)) // its kernel ran in an earlier op's launch
    return success();
  // The CUDA fusions that start at this op (qkvRope, routedMoE), if any.
  std::optional<QkvRope> qkv;
  MoEOp routedMoe;
  if (auto split = dyn_cast<SplitOp>(op); split && cuda)
    qkv = qkvRope(split);
  if (auto aln = dyn_cast<AddLayerNormOp>(op); aln && cuda)
    routedMoe = routedMoE(aln);

  if (auto e = dyn_cast<EmbedOp>(op)) {
    hidden = dim(e.getTable(), 1);
    call(rt("embed"), {i32(dim(e.getTable(), 0)), i32(dim(e.getTable(), 1))},
         {operand(0), operand(1), operand(2), operand(3), operand(4)},
         {ctxArg, idsArg, n, v(e.getTable()), v(e)});
  } else if (auto ln = dyn_cast<LayerNormOp>(op); ln && ln.getRms()) {
    call(rt("rms_norm"), withNext({i32(dim(ln.getInput(), 1))}, stagedFor(ln, ln)),
         {operand(0), operand(1), operand(2), operand(3),
          f32(ln.getEpsilon().convertToDouble()), operand(4)},
         {ctxArg, v(ln.getInput()), n, v(ln.getWeight()), v(ln)});
  } else if (auto aln = dyn_cast<AddLayerNormOp>(op); aln && aln.getRms()) {
    call(rt("add_rms_norm"),
         withNext({i32(dim(aln.getLhs(), 1))}, stagedFor(aln, aln.getResult())),
         {operand(0), operand(1), operand(2), operand(3), operand(4),
          f32(aln.getEpsilon().convertToDouble()), operand(5), operand(6)},
         {ctxArg, v(aln.getLhs()), v(aln.getRhs()), n, v(aln.getWeight()), v(aln.getSum()),
          v(aln.getResult())});
  } else if (auto ln = dyn_cast<LayerNormOp>(op)) {
    call(rt("layer_norm"), withNext({i32(dim(ln.getInput(), 1))}, stagedFor(ln, ln)),
         {operand(0), operand(1), operand(2), operand(3), operand(4),
          f32(ln.getEpsilon().convertToDouble()), operand(5)},
         {ctxArg, v(ln.getInput()), n, v(ln.getWeight()), v(ln.getBias()), v(ln)});
  } else if (auto aln = dyn_cast<AddLayerNormOp>(op); aln && routedMoe) {
    // CUDA: the MoE's router in the same launch, on the row the norm wrote.
    MoEOp moe = routedMoe;
    Value router = moe.getRouterWeight();
    if (!weightAhead(router))
      return failure();
    call(rt("add_layer_norm_route"),
         withNext({i32(dim(aln.getLhs(), 1)), i32(dim(moe.getDown(), 0))},
                  stagedFor(aln, aln.getResult())),
         {operand(0), operand(1), operand(2), operand(3), operand(4), operand(5),
          f32(aln.getEpsilon().convertToDouble()), operand(6), operand(7), operand(8),
          f32(moe.getEpsilon().convertToDouble())},
         {ctxArg, v(aln.getLhs()), v(aln.getRhs()), n, v(aln.getWeight()), v(aln.getBias()),
          v(aln.getSum()), v(aln.getResult()), v(router)});
    routed.insert(moe);
  } else if (auto aln = dyn_cast<AddLayerNormOp>(op)) {
    call(rt("add_layer_norm"),
         withNext({i32(dim(aln.getLhs(), 1))}, stagedFor(aln, aln.getResult())),
         {operand(0), operand(1), operand(2), operand(3), operand(4), operand(5),
          f32(aln.getEpsilon().convertToDouble()), operand(6), operand(7)},
         {ctxArg, v(aln.getLhs()), v(aln.getRhs()), n, v(aln.getWeight()), v(aln.getBias()),
          v(aln.getSum()), v(aln.getResult())});
  } else if (isa<LinearOp, LMHeadOp>(op)) {
    Value input = op->getOperand(0), weight = op->getOperand(1);
    Value bias = op->getNumOperands() > 2 ? op->getOperand(2) : Value();
    Value x = v(input), out = v(op->getResult(0)), rows = n;
    if (!out) { // the returned logits: only the last logit_rows rows
      auto last = emitc::CallOpaqueOp::create(
          b, loc, TypeRange{floatPtr}, rt("last_rows"), ValueRange{x, n, rowsArg},
          ArrayAttr(), b.getArrayAttr({i32(dim(input, 1))}));
      x = last.getResult(0);
      out = logitsArg;
      rows = rowsArg;
    }
    SmallVector<Value> operands{ctxArg, x, rows, v(weight)};
    SmallVector<Attribute> args{operand(0), operand(1), operand(2), operand(3)};
    if (bias) {
      operands.push_back(v(bias));
      args.push_back(operand(4));
    } else {
      args.push_back(opaque("static_cast<const float*>(nullptr)"));
    }
    args.push_back(operand(operands.size()));
    operands.push_back(out);
    SmallVector<Attribute> shape{i32(dim(weight, 0)), i32(dim(weight, 1))};
    auto linear = dyn_cast<LinearOp>(op);
    if (std::optional<QkvRope> f = linear ? qkvAfter(linear) : std::nullopt) {
      // CUDA: the q/k/v projection, its split, the queries' RoPE and the keys' RoPE with the
      // KV-cache write in one launch; the split and the ropes emit nothing.
      auto split = cast<SplitOp>(nextKernelOp(linear));
      placeResults(f->q);
      shape.append({i32(f->att.getNumHeads()), i32(f->att.getNumKvHeads()),
                    i32(f->att.getHeadDim())});
      args.append({operand(operands.size()), opaque(ropeTable(f->q.getScaling())),
                   i32(f->att.getLayer()), operand(operands.size() + 1)});
      operands.append({posArg, v(f->q.getResult())});
      call(rt("linear_qkv_rope_kv_write"), shape, args, operands);
      fusedAway.insert(split);
      fusedAway.insert(f->q);
      fusedAway.insert(f->k);
      kvWritten.insert(f->att);
      return success();
    }
    if (AddLayerNormOp aln = linear ? normAfter(linear) : AddLayerNormOp()) {
      // CUDA: the norm after the linear layer (and the router of the MoE after the norm) in
      // the GEMV's launch; the norm emits nothing.
      MoEOp moe = routedMoE(aln);
      if (!weightAhead(aln.getWeight()) || !weightAhead(aln.getBias()) ||
          (moe && !weightAhead(moe.getRouterWeight())))
        return failure();
      placeResults(aln);
      if (!values.lookup(aln.getSum()) || !values.lookup(aln.getResult()))
        return aln.emitOpError("phimoe-lower-to-emitc: no planned buffer for the norm");
      if (moe)
        shape.push_back(i32(dim(moe.getDown(), 0))); // E
      if (Attribute next = stagedFor(aln, aln.getResult()))
        shape.push_back(next);
      for (Value value : {aln.getLhs(), aln.getWeight(), aln.getBias()}) {
        args.push_back(operand(operands.size()));
        operands.push_back(v(value));
      }
      args.push_back(f32(aln.getEpsilon().convertToDouble()));
      for (Value value : {aln.getSum(), aln.getResult()}) {
        args.push_back(operand(operands.size()));
        operands.push_back(v(value));
      }
      if (moe) {
        args.push_back(operand(operands.size()));
        operands.push_back(v(moe.getRouterWeight()));
        args.push_back(f32(moe.getEpsilon().convertToDouble()));
        routed.insert(moe);
      }
      call(rt(moe ? "linear_add_layer_norm_route" : "linear_add_layer_norm"), shape, args,
           operands);
      fusedAway.insert(aln);
      return success();
    }
    call(rt("linear"), shape, args, operands);
  } else if (auto split = dyn_cast<SplitOp>(op); split && qkv) {
    // CUDA: the q/k/v split, the queries' RoPE and the keys' RoPE with the KV-cache write in
    // one launch (the attention then only reads); the two rope ops emit nothing.
    QkvRope f = *qkv;
    Value qOut = act(f.q, 0);
    values[f.q.getResult()] = qOut;
    call(rt("qkv_rope_kv_write"),
         {i32(dim(split.getInput(), 1)), i32(f.att.getNumHeads()), i32(f.att.getNumKvHeads()),
          i32(f.att.getHeadDim()), opaque(disjoint(split.getInput(), f.q) ? "true" : "false")},
         {operand(0), operand(1), operand(2), operand(3), opaque(ropeTable(f.q.getScaling())),
          i32(f.att.getLayer()), operand(4), operand(5), operand(6), operand(7)},
         {ctxArg, v(split.getInput()), n, posArg, v(split.getResult(0)), v(split.getResult(1)),
          v(split.getResult(2)), qOut});
    fusedAway.insert(f.q);
    fusedAway.insert(f.k);
    kvWritten.insert(f.att);
  } else if (auto split = dyn_cast<SplitOp>(op); split && cuda && split.getNumResults() == 3) {
    // CUDA: the three ranges (q, k, v of a fused projection) in one launch.
    SmallVector<Attribute> shape{i32(dim(split.getInput(), 1))};
    for (int64_t size : split.getSizes())
      shape.push_back(i32(size));
    call(rt("split_cols"), shape,
         {operand(0), operand(1), operand(2), operand(3), operand(4), operand(5)},
         {ctxArg, v(split.getInput()), n, v(split.getResult(0)), v(split.getResult(1)),
          v(split.getResult(2))});
  } else if (auto split = dyn_cast<SplitOp>(op)) {
    int64_t offset = 0;
    for (auto [size, result] : llvm::zip(split.getSizes(), split.getResults())) {
      call(rt("copy_cols"), {i32(dim(split.getInput(), 1)), i32(offset), i32(size)},
           {operand(0), operand(1), operand(2), operand(3)},
           {ctxArg, v(split.getInput()), n, v(result)});
      offset += size;
    }
  } else if (auto rope = dyn_cast<RopeOp>(op); rope && cuda && fusesWithCacheWrite(rope)) {
    // CUDA: the keys' RoPE and the KV-cache write in one kernel; the attention then only reads.
    auto att = cast<AttentionOp>(*rope->getUsers().begin());
    call(rt("rope_kv_write"), {i32(att.getNumKvHeads()), i32(att.getHeadDim())},
         {operand(0), operand(1), operand(2), operand(3), operand(4),
          opaque(ropeTable(rope.getScaling())), i32(att.getLayer())},
         {ctxArg, v(rope.getInput()), v(att.getV()), n, posArg});
    kvWritten.insert(att);
  } else if (auto rope = dyn_cast<RopeOp>(op)) {
    // A partial rotary (phi-2) rotates the first rotary_dim lanes of each head: rope_partial,
    // never fused with the KV-cache write on CUDA (fusesWithCacheWrite).
    int64_t headDim = rope.getHeadDim();
    SmallVector<Attribute> shape{i32(dim(rope.getInput(), 1) / headDim), i32(headDim)};
    if (rope.getRotaryDim())
      shape.push_back(i32(rope.getRotaryLanes()));
    call(rt(rope.getRotaryDim() ? "rope_partial" : "rope"), shape,
         {operand(0), operand(1), operand(2), operand(3), opaque(ropeTable(rope.getScaling())),
          operand(4)},
         {ctxArg, v(rope.getInput()), n, posArg, v(rope)});
  } else if (auto att = dyn_cast<AttentionOp>(op)) {
    double scale = att.getScale() ? att.getScale()->convertToDouble()
                                  : 1.0 / std::sqrt(static_cast<double>(att.getHeadDim()));
    int64_t window = att.getSlidingWindow() ? *att.getSlidingWindow() : 0;
    SmallVector<Attribute> shape{i32(att.getNumHeads()), i32(att.getNumKvHeads()),
                                 i32(att.getHeadDim())};
    Attribute next = stagedFor(att, att);
    if (kvWritten.contains(att) || next) // KvWritten: rope_kv_write wrote this layer's k and v
      shape.push_back(opaque(kvWritten.contains(att) ? "true" : "false"));
    if (next)
      shape.push_back(next);
    call(rt("attention"), shape,
         {operand(0), operand(1), operand(2), operand(3), operand(4), operand(5),
          i32(att.getLayer()), f32(scale), i32(window), operand(6)},
         {ctxArg, v(att.getQ()), v(att.getK()), v(att.getV()), n, posArg, v(att)});
  } else if (auto add = dyn_cast<AddOp>(op)) {
    // A residual add no norm follows (phi-2's parallel block adds attention and MoE first).
    call(rt("add"), {i32(dim(add.getLhs(), 1))}, {operand(0), operand(1), operand(2),
                                                  operand(3), operand(4)},
         {ctxArg, v(add.getLhs()), v(add.getRhs()), n, v(add)});
  } else if (auto moe = dyn_cast<MoEGeluOp>(op)) {
    // phixtral: phi-2 MLP experts behind softmax top-2 routing (nothing fused into it).
    if (moe.getKind() != RouterKind::SoftmaxTopK || moe.getTopK() != 2)
      return moe.emitOpError("phimoe-lower-to-emitc: moe_gelu has a kernel for softmax_topk "
                             "routing with top_k = 2 only");
    experts = dim(moe.getFc2(), 0);
    intermediate = dim(moe.getFc2(), 2);
    call(rt("moe_softmax_top2_gelu"),
         {i32(experts), i32(dim(moe.getFc2(), 1)), i32(intermediate)},
         {operand(0), operand(1), operand(2), operand(3), operand(4), operand(5), operand(6),
          operand(7), operand(8)},
         {ctxArg, v(moe.getInput()), n, v(moe.getRouterWeight()), v(moe.getFc1()),
          v(moe.getFc1Bias()), v(moe.getFc2()), v(moe.getFc2Bias()), v(moe)});
  } else if (auto moe = dyn_cast<MoEOp>(op); moe && moe.getKind() == RouterKind::SoftmaxTopK) {
    // Mixtral: softmax over the experts, the top two, renormalised; the kernels are
    // moe_sparsemixer's with that routing (nothing fused into it on CUDA).
    if (moe.getTopK() != 2)
      return moe.emitOpError("phimoe-lower-to-emitc: softmax_topk has a kernel for top_k = 2 "
                             "only, got ")
             << moe.getTopK();
    experts = dim(moe.getDown(), 0);
    intermediate = dim(moe.getDown(), 2);
    call(rt("moe_softmax_top2"),
         {i32(experts), i32(dim(moe.getDown(), 1)), i32(intermediate)},
         {operand(0), operand(1), operand(2), operand(3), operand(4), operand(5), operand(6)},
         {ctxArg, v(moe.getInput()), n, v(moe.getRouterWeight()), v(moe.getGateUp()),
          v(moe.getDown()), v(moe)});
  } else if (auto moe = dyn_cast<MoEOp>(op)) {
    if (moe.getKind() != RouterKind::Sparsemixer)
      return moe.emitOpError("phimoe-lower-to-emitc: only sparsemixer routing has a kernel");
    experts = dim(moe.getDown(), 0);
    intermediate = dim(moe.getDown(), 2);
    SmallVector<Attribute> shape{i32(experts), i32(dim(moe.getDown(), 1)), i32(intermediate)};
    if (AddLayerNormOp aln = normAfter(moe)) {
      // CUDA: the norm after the MoE in its down projection's launch; the norm emits nothing.
      if (!weightAhead(aln.getWeight()) || !weightAhead(aln.getBias()))
        return failure();
      placeResults(aln);
      if (!values.lookup(aln.getSum()) || !values.lookup(aln.getResult()))
        return aln.emitOpError("phimoe-lower-to-emitc: no planned buffer for the norm");
      shape.push_back(opaque(routed.contains(moe) ? "true" : "false")); // Routed
      if (Attribute next = stagedFor(aln, aln.getResult()))
        shape.push_back(next);
      call(rt("moe_sparsemixer_add_layer_norm"), shape,
           {operand(0), operand(1), operand(2), operand(3), operand(4), operand(5),
            f32(moe.getEpsilon().convertToDouble()), operand(6), operand(7), operand(8),
            operand(9), f32(aln.getEpsilon().convertToDouble()), operand(10), operand(11)},
           {ctxArg, v(moe.getInput()), n, v(moe.getRouterWeight()), v(moe.getGateUp()),
            v(moe.getDown()), v(moe), v(aln.getLhs()), v(aln.getWeight()), v(aln.getBias()),
            v(aln.getSum()), v(aln.getResult())});
      fusedAway.insert(aln);
      return success();
    }
    if (routed.contains(moe))
      shape.push_back(opaque("true")); // Routed: add_layer_norm_route wrote the routes
    call(rt("moe_sparsemixer"), shape,
         {operand(0), operand(1), operand(2), operand(3), operand(4), operand(5),
          f32(moe.getEpsilon().convertToDouble()), operand(6)},
         {ctxArg, v(moe.getInput()), n, v(moe.getRouterWeight()), v(moe.getGateUp()),
          v(moe.getDown()), v(moe)});
  } else {
    return op->emitOpError("phimoe-lower-to-emitc: no kernel for this op; the fusion "
                           "passes must run first");
  }
  return success();
}

LogicalResult Lowering::run() {
  auto i32Type = b.getI32Type();
  auto idsType = emitc::PointerType::get(emitc::OpaqueType::get(ctx, "const int32_t"));
  b.setInsertionPoint(forward);
  emitc::IncludeOp::create(b, loc, cuda ? "phimoe_cuda/kernels.cuh" : "phimoe_rt/kernels.h",
                           /*is_standard_include=*/false);
  emitc::IncludeOp::create(b, loc, cuda ? "phimoe_cuda/model.h" : "phimoe_rt/model.h",
                           /*is_standard_include=*/false);
  if (cuda) {
    // CUDA kernels read q8_0 weights in another layout (quants, then scales: see
    // phimoe_cuda/kernels.cuh), which the packer writes when the module says so; the hash
    // changes with it, so that phimoe-bin refuses a pack of the other layout.
    module->setAttr("phimoe.pack_layout", b.getStringAttr("cuda"));
    saltModelHash(module, kCudaHashSalt);
  } else {
    for (WeightOp weight : module.getOps<WeightOp>())
      if (interleavable(weight, module, rows16Q6k))
        weight->setAttr(kRows16Attr, b.getUnitAttr());
    if (!rows16Q6k)
      saltModelHash(module, kQ6kRowsHashSalt);
  }
  auto globalsOp = emitc::VerbatimOp::create(b, loc, b.getStringAttr(""));
  auto fnType =
      b.getFunctionType({ctxType, idsType, idsType, i32Type, i32Type, floatPtr}, {});
  auto fn = emitc::FuncOp::create(b, loc, "phimoe_forward", fnType);
  Block *entry = fn.addEntryBlock();
  ctxArg = entry->getArgument(0);
  idsArg = entry->getArgument(1);
  posArg = entry->getArgument(2);
  nArg = entry->getArgument(3);
  rowsArg = entry->getArgument(4);
  logitsArg = entry->getArgument(5);
  values[forward.getArgument(0)] = idsArg;
  values[forward.getArgument(1)] = posArg;

  b.setInsertionPointToStart(entry);
  for (Operation &op : forward.getBody().front())
    if (failed(lower(&op)))
      return failure();

  // The model's description, read by the runtime at start.
  auto cache = cast<KVCacheType>(forward.getArgument(2).getType());
  auto planned = [&](Operation *op, StringRef name) {
    auto attr = op->getAttrOfType<IntegerAttr>(name);
    return attr ? attr.getValue().getZExtValue() : 0;
  };
  auto logits = cast<RankedTensorType>(forward.getResultTypes()[0]);
  int64_t originalMax = ropes.empty()
                            ? 0
                            : cast<LongRopeAttr>(ropes.front().first).getOriginalMaxPosition();
  auto maxPosition = module->getAttrOfType<IntegerAttr>("phimoe.max_position");
  llvm::raw_string_ostream os(globals);
  os << "const phimoe_rt::ModelInfo phimoe_model_info = {" << planned(module, "phimoe.model_hash")
     << "ull, " << planned(module, "phimoe.pack_bytes") << "ull, "
     << planned(forward, "phimoe.arena_floats") << "ull, "
     << planned(forward, "phimoe.max_tokens") << ", " << logits.getShape().back() << ", "
     << hidden << ", "
     << intermediate << ", " << experts << ", " << cache.getLayers() << ", "
     << cache.getKvHeads() << ", " << cache.getHeadDim() << ", " << originalMax << ", "
     << (maxPosition ? maxPosition.getInt() : 0) << "};";
  globalsOp.setValueAttr(b.getStringAttr(globals));
  forward.erase();
  return success();
}

struct LowerToEmitCPass final
    : public phimoe::impl::LowerToEmitCPassBase<LowerToEmitCPass> {
  using Base::Base;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward || !forward->hasAttr("phimoe.arena_floats")) {
      module.emitError("phimoe-lower-to-emitc: needs a func.func @forward planned by "
                       "phimoe-plan-memory");
      return signalPassFailure();
    }
    if (target != "cpu" && target != "cuda") {
      module.emitError("phimoe-lower-to-emitc: target must be cpu or cuda, not '")
          << target << "'";
      return signalPassFailure();
    }
    if (failed(Lowering(module, forward, target == "cuda", fuseQkvRope, fuseRouter, fuseMoeNorm,
                        fuseLinearNorm, fuseQkvGemv, stageQ4kInputs, rows16Q6k)
                   .run()))
      signalPassFailure();
  }
};

} // namespace
