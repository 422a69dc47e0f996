//===- PhiMoEDialect.cpp - phimoe dialect, attributes and types -----------===//

#include "dialects/PhiMoE/PhiMoEDialect.h"
#include "dialects/PhiMoE/PhiMoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>

using namespace mlir;
using namespace mlir::phimoe;

#include "dialects/PhiMoE/PhiMoEDialect.cpp.inc"
#include "dialects/PhiMoE/PhiMoEEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/PhiMoE/PhiMoEAttrs.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/PhiMoE/PhiMoETypes.cpp.inc"

namespace {
/// Gives LongRoPE attributes the alias `#rope`, so a model's IR states the
/// factor arrays once instead of on every rope op.
struct PhiMoEOpAsmInterface : public OpAsmDialectInterface {
  using OpAsmDialectInterface::OpAsmDialectInterface;
  AliasResult getAlias(Attribute attr, raw_ostream &os) const override {
    if (isa<LongRopeAttr>(attr)) {
      os << "rope";
      return AliasResult::FinalAlias;
    }
    return AliasResult::NoAlias;
  }
};
} // namespace

void PhiMoEDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/PhiMoE/PhiMoEOps.cpp.inc"
      >();
  registerAttributes();
  registerTypes();
  addInterfaces<PhiMoEOpAsmInterface>();
}

void PhiMoEDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/PhiMoE/PhiMoEAttrs.cpp.inc"
      >();
}

void PhiMoEDialect::registerTypes() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "dialects/PhiMoE/PhiMoETypes.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

ArrayRef<int64_t> mlir::phimoe::getLogicalShape(Type type) {
  if (auto tensor = dyn_cast<RankedTensorType>(type))
    return tensor.getShape();
  if (auto qweight = dyn_cast<QWeightType>(type))
    return qweight.getShape();
  return {};
}

int64_t mlir::phimoe::getStorageBytes(Type type) {
  if (auto q = dyn_cast<QWeightType>(type)) {
    int64_t blocks = 1;
    for (int64_t d : q.getShape())
      blocks *= d;
    return blocks / q.getBlockSize() * q.getBlockBytes();
  }
  auto tensor = dyn_cast<RankedTensorType>(type);
  if (!tensor || !tensor.hasStaticShape() || !tensor.getElementType().isIntOrFloat())
    return -1;
  return tensor.getNumElements() *
         ((tensor.getElementType().getIntOrFloatBitWidth() + 7) / 8);
}

std::optional<QuantScheme> mlir::phimoe::parseQuantScheme(StringRef name) {
  return symbolizeQuantScheme(name);
}

//===----------------------------------------------------------------------===//
// LongRopeAttr
//===----------------------------------------------------------------------===//

static ParseResult parseFloatList(AsmParser &parser,
                                  SmallVectorImpl<float> &values) {
  return parser.parseCommaSeparatedList(AsmParser::Delimiter::Square, [&] {
    double v;
    if (parser.parseFloat(v))
      return failure();
    values.push_back(static_cast<float>(v));
    return success();
  });
}

Attribute LongRopeAttr::parse(AsmParser &parser, Type) {
  double theta, shortMscale, longMscale;
  int64_t originalMax;
  SmallVector<float> shortFactor, longFactor;
  auto keyword = [&](StringRef name) -> ParseResult {
    return failure(parser.parseKeyword(name) || parser.parseEqual());
  };
  if (parser.parseLess() || keyword("theta") || parser.parseFloat(theta) ||
      parser.parseComma() || keyword("original_max_position") ||
      parser.parseInteger(originalMax) || parser.parseComma() ||
      keyword("short_mscale") || parser.parseFloat(shortMscale) ||
      parser.parseComma() || keyword("long_mscale") ||
      parser.parseFloat(longMscale) || parser.parseComma() ||
      keyword("short_factor") || parseFloatList(parser, shortFactor) ||
      parser.parseComma() || keyword("long_factor") ||
      parseFloatList(parser, longFactor) || parser.parseGreater())
    return {};
  MLIRContext *ctx = parser.getContext();
  return LongRopeAttr::getChecked(
      [&] { return parser.emitError(parser.getNameLoc()); }, ctx,
      APFloat(theta), originalMax, APFloat(shortMscale), APFloat(longMscale),
      DenseF32ArrayAttr::get(ctx, shortFactor),
      DenseF32ArrayAttr::get(ctx, longFactor));
}

/// Prints `value` with the fewest digits that read back to the same float
/// (or double), always with a '.' so that it lexes as a float.
static void printShortFloat(AsmPrinter &printer, double value, bool single) {
  char text[64];
  for (int precision = 6; precision <= 17; ++precision) {
    snprintf(text, sizeof text, "%.*g", precision, value);
    double back = strtod(text, nullptr);
    if (single ? static_cast<float>(back) == static_cast<float>(value)
               : back == value)
      break;
  }
  std::string s(text);
  if (s.find_first_of(".ein") == std::string::npos)
    s += ".0";
  else if (s.find('.') == std::string::npos && s.find('e') != std::string::npos)
    s.insert(s.find('e'), ".0");
  printer << s;
}

static void printFloatList(AsmPrinter &printer, ArrayRef<float> values) {
  printer << '[';
  llvm::interleaveComma(values, printer.getStream(),
                        [&](float v) { printShortFloat(printer, v, true); });
  printer << ']';
}

void LongRopeAttr::print(AsmPrinter &printer) const {
  printer << "<theta = ";
  printShortFloat(printer, getTheta().convertToDouble(), false);
  printer << ", original_max_position = " << getOriginalMaxPosition()
          << ", short_mscale = ";
  printShortFloat(printer, getShortMscale().convertToDouble(), false);
  printer << ", long_mscale = ";
  printShortFloat(printer, getLongMscale().convertToDouble(), false);
  printer << ", short_factor = ";
  printFloatList(printer, getShortFactor().asArrayRef());
  printer << ", long_factor = ";
  printFloatList(printer, getLongFactor().asArrayRef());
  printer << '>';
}

LogicalResult
LongRopeAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                     APFloat theta, int64_t originalMaxPosition,
                     APFloat shortMscale, APFloat longMscale,
                     DenseF32ArrayAttr shortFactor,
                     DenseF32ArrayAttr longFactor) {
  if (!(theta.convertToDouble() > 0.0) || !std::isfinite(theta.convertToDouble()))
    return emitError() << "longrope theta must be positive and finite";
  if (originalMaxPosition <= 0)
    return emitError() << "longrope original_max_position must be positive, got "
                       << originalMaxPosition;
  for (const APFloat &mscale : {shortMscale, longMscale})
    if (!(mscale.convertToDouble() > 0.0) || !std::isfinite(mscale.convertToDouble()))
      return emitError() << "longrope mscales must be positive and finite";
  if (shortFactor.empty())
    return emitError() << "longrope factor arrays must not be empty";
  if (shortFactor.size() != longFactor.size())
    return emitError() << "longrope short_factor has " << shortFactor.size()
                       << " values but long_factor has " << longFactor.size();
  for (float f : llvm::concat<const float>(shortFactor.asArrayRef(),
                                           longFactor.asArrayRef()))
    if (!(f > 0.0f) || !std::isfinite(f))
      return emitError() << "longrope factors must be positive and finite floats, got " << f;
  return success();
}

//===----------------------------------------------------------------------===//
// QWeightType
//===----------------------------------------------------------------------===//

int64_t mlir::phimoe::getBlockSize(QuantScheme scheme) {
  switch (scheme) {
  case QuantScheme::Q8_0:
  case QuantScheme::Q4_0:
    return 32;
  case QuantScheme::Q4K:
  case QuantScheme::Q5K:
  case QuantScheme::Q6K:
    return 256;
  }
  llvm_unreachable("unknown quant scheme");
}

int64_t QWeightType::getBlockSize() const { return mlir::phimoe::getBlockSize(getScheme()); }

int64_t QWeightType::getBlockBytes() const {
  switch (getScheme()) {
  case QuantScheme::Q8_0:
    return 34; // f16 scale + 32 x int8
  case QuantScheme::Q4_0:
    return 18; // f16 scale + 32 x 4 bits
  case QuantScheme::Q4K:
    return 144; // f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes
  case QuantScheme::Q5K:
    return 176; // as q4k + 32 bytes of high bits
  case QuantScheme::Q6K:
    return 210; // 128 low + 64 high bytes, 16 int8 scales, f16 d
  }
  llvm_unreachable("unknown quant scheme");
}

LogicalResult QWeightType::verify(function_ref<InFlightDiagnostic()> emitError,
                                  QuantScheme scheme, ArrayRef<int64_t> shape) {
  if (shape.empty())
    return emitError() << "qweight must have rank at least 1";
  for (int64_t d : shape)
    if (d <= 0)
      return emitError() << "qweight dimensions must be static and positive";
  int64_t block = mlir::phimoe::getBlockSize(scheme);
  if (shape.back() % block != 0)
    return emitError() << stringifyQuantScheme(scheme)
                       << " needs the innermost dimension (" << shape.back()
                       << ") to be a multiple of " << block;
  return success();
}

//===----------------------------------------------------------------------===//
// KVCacheType
//===----------------------------------------------------------------------===//

LogicalResult KVCacheType::verify(function_ref<InFlightDiagnostic()> emitError,
                                  int64_t layers, int64_t kvHeads,
                                  int64_t headDim, Type dtype) {
  if (layers <= 0 || kvHeads <= 0 || headDim <= 0)
    return emitError() << "kv_cache layers, kv_heads and head_dim must be positive";
  if (!isa<FloatType>(dtype))
    return emitError() << "kv_cache dtype must be a float type, got " << dtype;
  return success();
}
