//===- PlanMemory.cpp - static arena offsets and the weight pack layout ---===//

#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseSet.h"

#include <map>

namespace mlir::phimoe {
#define GEN_PASS_DEF_PLANMEMORYPASS
#include "passes/Passes.h.inc"
} // namespace mlir::phimoe

using namespace mlir;
using namespace mlir::phimoe;

namespace {

/// First-fit allocation of [offset, offset + size) ranges, in floats.
class Arena {
public:
  int64_t allocate(int64_t size) {
    int64_t offset = 0;
    for (auto [begin, length] : used_) {
      if (begin - offset >= size)
        break;
      offset = std::max(offset, begin + length);
    }
    used_[offset] = size;
    peak_ = std::max(peak_, offset + size);
    return offset;
  }
  void release(int64_t offset) { used_.erase(offset); }
  int64_t peak() const { return peak_; }

private:
  std::map<int64_t, int64_t> used_; // offset -> size, ordered
  int64_t peak_ = 0;
};

bool isActivation(Value value) {
  auto type = dyn_cast<RankedTensorType>(value.getType());
  return type && type.getRank() >= 1 && isa<FloatType>(type.getElementType()) &&
         !value.getDefiningOp<WeightRefOp>();
}

struct PlanMemoryPass final : public phimoe::impl::PlanMemoryPassBase<PlanMemoryPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward || forward.getBody().getBlocks().size() != 1) {
      module.emitError("phimoe-plan-memory: needs a single-block func.func @forward");
      return signalPassFailure();
    }
    if (maxTokens <= 0 || alignment <= 0 || (alignment & (alignment - 1))) {
      module.emitError("phimoe-plan-memory: max-tokens must be positive and alignment "
                       "a power of two");
      return signalPassFailure();
    }
    Block &body = forward.getBody().front();
    Builder b(&getContext());

    // Last use of every value, in program order.
    llvm::DenseMap<Operation *, unsigned> index;
    for (Operation &op : body)
      index[&op] = index.size();
    llvm::DenseSet<Value> returned(body.getTerminator()->operand_begin(),
                                   body.getTerminator()->operand_end());
    llvm::DenseMap<Value, unsigned> lastUse;
    for (Operation &op : body)
      for (Value operand : op.getOperands())
        lastUse[operand] = index[&op];
    if (keepSplitInput)
      for (Operation &op : body) {
        auto split = dyn_cast<SplitOp>(op);
        Operation *first = split ? op.getNextNode() : nullptr;
        Operation *second = first ? first->getNextNode() : nullptr;
        auto readsSplit = [&](Operation *user) {
          return llvm::any_of(user->getOperands(), [&](Value v) {
            return v.getDefiningOp() == split.getOperation();
          });
        };
        if (split && split.getNumResults() == 3 && second && readsSplit(first) &&
            readsSplit(second))
          lastUse[split.getInput()] = std::max(lastUse[split.getInput()], index[second]);
      }

    Arena arena;
    llvm::DenseMap<Value, int64_t> offsetOf;
    for (Operation &op : body) {
      if (op.getNumResults() == 0 || isa<WeightRefOp>(op))
        continue;
      SmallVector<int64_t> offsets;
      for (OpResult result : op.getResults()) {
        if (!isActivation(result) || returned.contains(result)) {
          offsets.push_back(-1);
          continue;
        }
        auto type = cast<RankedTensorType>(result.getType());
        int64_t width = type.getShape().back();
        if (ShapedType::isDynamic(width)) {
          op.emitOpError("phimoe-plan-memory: the row width must be static");
          return signalPassFailure();
        }
        // The residual sum of add_layer_norm stays in its lhs's buffer when
        // that dies here.
        auto fused = dyn_cast<AddLayerNormOp>(op);
        if (fused && result == fused.getSum() && offsetOf.count(fused.getLhs()) &&
            lastUse[fused.getLhs()] == index[&op]) {
          offsets.push_back(offsetOf[fused.getLhs()]);
          offsetOf[result] = offsets.back();
          offsetOf.erase(fused.getLhs());
          continue;
        }
        offsets.push_back(arena.allocate(maxTokens * width));
        offsetOf[result] = offsets.back();
      }
      op.setAttr("phimoe.arena", b.getDenseI64ArrayAttr(offsets));
      // Free what dies here, after the results are placed: no kernel writes
      // over its own inputs.
      for (Value operand : op.getOperands())
        if (offsetOf.count(operand) && lastUse[operand] == index[&op]) {
          arena.release(offsetOf[operand]);
          offsetOf.erase(operand);
        }
      for (OpResult result : op.getResults())
        if (offsetOf.count(result) && result.use_empty()) {
          arena.release(offsetOf[result]);
          offsetOf.erase(result);
        }
    }
    forward->setAttr("phimoe.arena_floats", b.getI64IntegerAttr(arena.peak()));
    forward->setAttr("phimoe.max_tokens", b.getI64IntegerAttr(maxTokens));

    // The weight pack: every weight the function reads, in module order.
    llvm::DenseSet<StringAttr> read;
    forward.walk([&](WeightRefOp ref) { read.insert(ref.getNameAttr().getAttr()); });
    int64_t offset = 0;
    for (WeightOp weight : module.getOps<WeightOp>()) {
      weight->removeAttr("phimoe.pack_offset");
      weight->removeAttr("phimoe.pack_bytes");
      if (!read.contains(weight.getSymNameAttr()))
        continue;
      int64_t bytes = getStorageBytes(weight.getType());
      offset = (offset + alignment - 1) / alignment * alignment;
      weight->setAttr("phimoe.pack_offset", b.getI64IntegerAttr(offset));
      weight->setAttr("phimoe.pack_bytes", b.getI64IntegerAttr(bytes));
      offset += bytes;
    }
    module->setAttr("phimoe.pack_bytes", b.getI64IntegerAttr(offset));
    module->removeAttr("phimoe.model_hash");
    module->setAttr("phimoe.model_hash",
                    b.getI64IntegerAttr(static_cast<int64_t>(hashModule(module))));
  }
};

} // namespace

uint64_t mlir::phimoe::hashModule(ModuleOp module) {
  std::string text;
  llvm::raw_string_ostream os(text);
  OpPrintingFlags flags;
  module->print(os, flags);
  uint64_t hash = 0xcbf29ce484222325ull; // FNV-1a
  for (unsigned char ch : text) {
    hash ^= ch;
    hash *= 0x100000001b3ull;
  }
  return hash;
}
