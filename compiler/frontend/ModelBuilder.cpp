//===- ModelBuilder.cpp - state a PhiMoE checkpoint in the phimoe dialect -===//

#include "compiler/frontend/ModelBuilder.h"

#include "dialects/PhiMoE/PhiMoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

using namespace mlir;
using namespace mlir::phimoe;
using ::phimoe::Checkpoint;
using ::phimoe::PhiMoEConfig;
using ::phimoe::TensorInfo;

namespace {

class ModelBuilder {
public:
  ModelBuilder(MLIRContext &ctx, const PhiMoEConfig &c, const Checkpoint &ckpt)
      : ctx(ctx), c(c), ckpt(ckpt), b(&ctx) {}

  llvm::Expected<OwningOpRef<ModuleOp>> build();

private:
  /// The layers of a phixtral (phi-msft) checkpoint, from the embedding to the logits.
  bool phixtralBody(Value tokens, Value positions, Value cache, LongRopeAttr rope,
                    Value &logits);
  Value weight(const std::string &name, ArrayRef<int64_t> shape);
  RankedTensorType act(int64_t width) {
    return RankedTensorType::get({ShapedType::kDynamic, width}, b.getF32Type());
  }
  Value linear(Value x, const std::string &prefix, int64_t rows, int64_t cols, bool bias);
  Value norm(Value x, const std::string &prefix);
  Location loc(const std::string &name) { return NameLoc::get(b.getStringAttr(name)); }

  MLIRContext &ctx;
  const PhiMoEConfig &c;
  const Checkpoint &ckpt;
  OpBuilder b;
  OpBuilder moduleBuilder{&ctx};
  llvm::StringMap<Type> declared;
  std::string error;
};

Value ModelBuilder::weight(const std::string &name, ArrayRef<int64_t> shape) {
  auto it = declared.find(name);
  Type type;
  if (it != declared.end()) {
    type = it->second;
  } else {
    const TensorInfo *info = ckpt.find(name);
    std::string where = ckpt.dir() + ": tensor " + ckpt.describe(name);
    if (!info) {
      if (error.empty())
        error = where + " is missing from the checkpoint";
      return {};
    }
    if (ArrayRef<int64_t>(info->shape) != shape) {
      if (error.empty()) {
        auto str = [](ArrayRef<int64_t> s) {
          std::string out = "[";
          for (size_t i = 0; i < s.size(); ++i)
            out += (i ? ", " : "") + std::to_string(s[i]);
          return out + "]";
        };
        error = ckpt.files()[info->file]->path() + ": tensor " + ckpt.describe(name) +
                " has shape " + str(info->shape) + " but " + ckpt.configName() + " implies " +
                str(shape);
      }
      return {};
    }
    switch (info->dtype) {
    case ::phimoe::DType::F32:
      type = RankedTensorType::get(shape, b.getF32Type());
      break;
    case ::phimoe::DType::F16:
      type = RankedTensorType::get(shape, b.getF16Type());
      break;
    case ::phimoe::DType::BF16:
      type = RankedTensorType::get(shape, b.getBF16Type());
      break;
    case ::phimoe::DType::Q8_0: // a GGUF's blocks, kept as they are unless --quant says
      type = QWeightType::get(&ctx, QuantScheme::Q8_0, shape);
      break;
    case ::phimoe::DType::Q4_K:
      type = QWeightType::get(&ctx, QuantScheme::Q4K, shape);
      break;
    case ::phimoe::DType::Q6_K:
      type = QWeightType::get(&ctx, QuantScheme::Q6K, shape);
      break;
    // Formats without kernels: the nearest that has them, from the values (the packer
    // dequantizes and quantizes again); q8_0 where rows are not whole k-quant blocks.
    case ::phimoe::DType::Q4_0:
    case ::phimoe::DType::Q4_1:
    case ::phimoe::DType::Q2_K:
    case ::phimoe::DType::Q3_K:
    case ::phimoe::DType::Q5_0:
    case ::phimoe::DType::Q5_1:
    case ::phimoe::DType::Q5_K: {
      bool fiveBit = info->dtype == ::phimoe::DType::Q5_0 ||
                     info->dtype == ::phimoe::DType::Q5_1 || info->dtype == ::phimoe::DType::Q5_K;
      QuantScheme scheme = shape.back() % 256 != 0 ? QuantScheme::Q8_0
                           : fiveBit               ? QuantScheme::Q6K
                                                   : QuantScheme::Q4K;
      type = QWeightType::get(&ctx, scheme, shape);
      break;
    }
    }
    WeightOp::create(moduleBuilder, loc(name), name, type, nullptr, nullptr);
    declared[name] = type;
  }
  return WeightRefOp::create(b, loc(name), type, FlatSymbolRefAttr::get(&ctx, name));
}

Value ModelBuilder::linear(Value x, const std::string &prefix, int64_t rows, int64_t cols,
                      bool bias) {
  Value w = weight(prefix + ".weight", {rows, cols});
  Value bv = bias ? weight(prefix + ".bias", {rows}) : Value();
  if (!w || (bias && !bv))
    return {};
  return LinearOp::create(b, loc(prefix), act(rows), x, w, bv);
}

Value ModelBuilder::norm(Value x, const std::string &prefix) {
  Value w = weight(prefix + ".weight", {c.hidden});
  if (c.arch == ::phimoe::Arch::Phixtral) { // LayerNorm with bias, phi-2's names
    Value bias = weight(prefix + ".bias", {c.hidden});
    return w && bias ? LayerNormOp::create(b, loc(prefix), act(c.hidden), x, w, bias,
                                           b.getF64FloatAttr(c.eps))
                     : Value();
  }
  if (c.arch == ::phimoe::Arch::Mixtral) // RMSNorm: weight only
    return w ? LayerNormOp::create(b, loc(prefix), act(c.hidden), x, w, Value(),
                                   b.getF64FloatAttr(c.eps), b.getUnitAttr())
             : Value();
  Value bias = weight(prefix + ".bias", {c.hidden});
  if (!w || !bias)
    return {};
  return LayerNormOp::create(b, loc(prefix), act(c.hidden), x, w, bias,
                             b.getF64FloatAttr(c.eps));
}

llvm::Expected<OwningOpRef<ModuleOp>> ModelBuilder::build() {
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc(ckpt.dir()));
  moduleBuilder.setInsertionPointToEnd(module->getBody());

  auto cacheType = KVCacheType::get(&ctx, c.layers, c.kvHeads, c.headDim, b.getF32Type());
  auto ids = RankedTensorType::get({ShapedType::kDynamic}, b.getI32Type());
  auto fnType = FunctionType::get(&ctx, {ids, ids, cacheType}, {act(c.vocab)});
  auto fn = func::FuncOp::create(moduleBuilder, loc("forward"), "forward", fnType);
  b.setInsertionPointToStart(fn.addEntryBlock());
  Value tokens = fn.getArgument(0), positions = fn.getArgument(1), cache = fn.getArgument(2);

  auto rope = LongRopeAttr::get(&ctx, APFloat(c.ropeTheta), c.originalMaxPosition,
                                APFloat(c.shortMscale), APFloat(c.longMscale),
                                DenseF32ArrayAttr::get(&ctx, c.shortFactor),
                                DenseF32ArrayAttr::get(&ctx, c.longFactor));
  int64_t qWidth = c.heads * c.headDim, kvWidth = c.kvHeads * c.headDim;
  auto fail = [&]() -> llvm::Expected<OwningOpRef<ModuleOp>> {
    return llvm::createStringError(error);
  };

  if (c.arch == ::phimoe::Arch::Phixtral) {
    Value logits;
    if (!phixtralBody(tokens, positions, cache, rope, logits))
      return fail();
    func::ReturnOp::create(b, loc("forward"), logits);
    return std::move(module);
  }

  Value embedTable = weight("model.embed_tokens.weight", {c.vocab, c.hidden});
  if (!embedTable)
    return fail();
  Value h = EmbedOp::create(b, loc("model.embed_tokens"), act(c.hidden), tokens, embedTable);
  for (int64_t l = 0; l < c.layers; ++l) {
    std::string p = "model.layers." + std::to_string(l);
    Value x = norm(h, p + ".input_layernorm");
    if (!x)
      return fail();
    Value q = linear(x, p + ".self_attn.q_proj", qWidth, c.hidden, c.attentionBias);
    Value k = linear(x, p + ".self_attn.k_proj", kvWidth, c.hidden, c.attentionBias);
    Value v = linear(x, p + ".self_attn.v_proj", kvWidth, c.hidden, c.attentionBias);
    if (!q || !k || !v)
      return fail();
    auto headDim = b.getI64IntegerAttr(c.headDim);
    q = RopeOp::create(b, loc(p + ".rope.q"), q.getType(), q, positions, headDim, rope,
                       IntegerAttr());
    k = RopeOp::create(b, loc(p + ".rope.k"), k.getType(), k, positions, headDim, rope,
                       IntegerAttr());
    Value a = AttentionOp::create(
        b, loc(p + ".self_attn"), act(qWidth), q, k, v, positions, cache,
        b.getI64IntegerAttr(l), b.getI64IntegerAttr(c.heads), b.getI64IntegerAttr(c.kvHeads),
        headDim, FloatAttr(),
        c.slidingWindow ? b.getI64IntegerAttr(*c.slidingWindow) : IntegerAttr());
    Value o = linear(a, p + ".self_attn.o_proj", c.hidden, qWidth, c.attentionBias);
    if (!o)
      return fail();
    h = AddOp::create(b, loc(p + ".residual.attn"), h, o);

    std::string m = p + ".block_sparse_moe";
    x = norm(h, p + ".post_attention_layernorm");
    Value gate = weight(m + ".gate.weight", {c.experts, c.hidden});
    if (!x || !gate)
      return fail();
    auto pair = RankedTensorType::get({ShapedType::kDynamic, c.topK}, b.getI32Type());
    auto pairF = RankedTensorType::get({ShapedType::kDynamic, c.topK}, b.getF32Type());
    bool mixtral = c.arch == ::phimoe::Arch::Mixtral;
    auto router = RouterOp::create(
        b, loc(m + ".gate"), pair, pairF,
        RouterKindAttr::get(&ctx, mixtral ? RouterKind::SoftmaxTopK : RouterKind::Sparsemixer),
        x, gate, b.getI64IntegerAttr(c.topK), b.getF64FloatAttr(mixtral ? 0.0 : c.routerJitter));
    SmallVector<Value> outputs;
    for (int64_t e = 0; e < c.experts; ++e) {
      std::string ep = m + ".experts." + std::to_string(e);
      Value g = linear(x, ep + ".w1", c.intermediate, c.hidden, false);
      Value u = linear(x, ep + ".w3", c.intermediate, c.hidden, false);
      if (!g || !u)
        return fail();
      Value s = SiluOp::create(b, loc(ep + ".act"), g);
      Value prod = MulOp::create(b, loc(ep + ".act"), s, u);
      Value d = linear(prod, ep + ".w2", c.hidden, c.intermediate, false);
      if (!d)
        return fail();
      outputs.push_back(d);
    }
    Value moe = MoECombineOp::create(b, loc(m), act(c.hidden), router.getExperts(),
                                     router.getWeights(), outputs);
    h = AddOp::create(b, loc(p + ".residual.moe"), h, moe);
  }
  Value x = norm(h, "model.norm");
  std::string head = c.tieEmbeddings ? "model.embed_tokens" : "lm_head";
  Value lmWeight = weight(head + ".weight", {c.vocab, c.hidden});
  Value lmBias = c.lmHeadBias ? weight("lm_head.bias", {c.vocab}) : Value();
  if (!x || !lmWeight || (c.lmHeadBias && !lmBias))
    return fail();
  Value logits = LMHeadOp::create(b, loc("lm_head"), act(c.vocab), x, lmWeight, lmBias);
  func::ReturnOp::create(b, loc("forward"), logits);
  if (!error.empty())
    return fail();
  return std::move(module);
}

bool ModelBuilder::phixtralBody(Value tokens, Value positions, Value cache, LongRopeAttr rope,
                                Value &logits) {
  // phi-2's block: x = LN(h); h = (attn(x) + moe(x)) + h, in the reference's order.
  int64_t qWidth = c.heads * c.headDim, kvWidth = c.kvHeads * c.headDim;
  Value embedTable = weight("transformer.embd.wte.weight", {c.vocab, c.hidden});
  if (!embedTable)
    return false;
  Value h = EmbedOp::create(b, loc("transformer.embd.wte"), act(c.hidden), tokens, embedTable);
  auto headDim = b.getI64IntegerAttr(c.headDim);
  IntegerAttr rotary =
      c.rotaryDim == c.headDim ? IntegerAttr() : b.getI64IntegerAttr(c.rotaryDim);
  for (int64_t l = 0; l < c.layers; ++l) {
    std::string p = "transformer.h." + std::to_string(l);
    Value x = norm(h, p + ".ln");
    Value qkv = x ? linear(x, p + ".mixer.Wqkv", qWidth + 2 * kvWidth, c.hidden, true) : Value();
    if (!qkv)
      return false;
    auto split = SplitOp::create(b, loc(p + ".mixer.Wqkv"),
                                 TypeRange{act(qWidth), act(kvWidth), act(kvWidth)}, qkv,
                                 b.getDenseI64ArrayAttr({qWidth, kvWidth, kvWidth}));
    Value q = split.getResult(0), k = split.getResult(1), v = split.getResult(2);
    q = RopeOp::create(b, loc(p + ".mixer.rotary_emb.q"), q.getType(), q, positions, headDim,
                       rope, rotary);
    k = RopeOp::create(b, loc(p + ".mixer.rotary_emb.k"), k.getType(), k, positions, headDim,
                       rope, rotary);
    Value a = AttentionOp::create(b, loc(p + ".mixer"), act(qWidth), q, k, v, positions, cache,
                                  b.getI64IntegerAttr(l), b.getI64IntegerAttr(c.heads),
                                  b.getI64IntegerAttr(c.kvHeads), headDim, FloatAttr(),
                                  IntegerAttr());
    Value o = linear(a, p + ".mixer.out_proj", c.hidden, qWidth, true);
    std::string m = p + ".moe";
    Value gate = weight(m + ".gate.weight", {c.experts, c.hidden});
    if (!o || !gate)
      return false;
    auto pair = RankedTensorType::get({ShapedType::kDynamic, c.topK}, b.getI32Type());
    auto pairF = RankedTensorType::get({ShapedType::kDynamic, c.topK}, b.getF32Type());
    auto router = RouterOp::create(b, loc(m + ".gate"), pair, pairF,
                                   RouterKindAttr::get(&ctx, RouterKind::SoftmaxTopK), x, gate,
                                   b.getI64IntegerAttr(c.topK), b.getF64FloatAttr(0.0));
    SmallVector<Value> outputs;
    for (int64_t e = 0; e < c.experts; ++e) {
      std::string ep = m + ".mlp." + std::to_string(e);
      Value up = linear(x, ep + ".fc1", c.intermediate, c.hidden, true);
      if (!up)
        return false;
      Value g = GeluOp::create(b, loc(ep + ".act"), up);
      Value d = linear(g, ep + ".fc2", c.hidden, c.intermediate, true);
      if (!d)
        return false;
      outputs.push_back(d);
    }
    Value moe = MoECombineOp::create(b, loc(m), act(c.hidden), router.getExperts(),
                                     router.getWeights(), outputs);
    Value both = AddOp::create(b, loc(p + ".attn_plus_moe"), o, moe);
    h = AddOp::create(b, loc(p + ".residual"), both, h);
  }
  Value x = norm(h, "lm_head.ln");
  Value lmWeight = weight(c.tieEmbeddings ? "transformer.embd.wte.weight"
                                          : "lm_head.linear.weight",
                         {c.vocab, c.hidden});
  Value lmBias = weight("lm_head.linear.bias", {c.vocab});
  if (!x || !lmWeight || !lmBias || !error.empty())
    return false;
  logits = LMHeadOp::create(b, loc("lm_head"), act(c.vocab), x, lmWeight, lmBias);
  return true;
}

} // namespace

namespace phimoe {
llvm::Expected<OwningOpRef<ModuleOp>> buildModel(MLIRContext &ctx, const PhiMoEConfig &config,
                                                 const Checkpoint &checkpoint) {
  ctx.loadDialect<mlir::phimoe::PhiMoEDialect, func::FuncDialect>();
  return ModelBuilder(ctx, config, checkpoint).build();
}
} // namespace phimoe
