//===- PhiMoEOps.h - phimoe operations --------------------------*- C++ -*-===//

#ifndef PHIMOE_OPS_H
#define PHIMOE_OPS_H

#include "dialects/PhiMoE/PhiMoEDialect.h"
#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "dialects/PhiMoE/PhiMoEOps.h.inc"

#endif // PHIMOE_OPS_H
