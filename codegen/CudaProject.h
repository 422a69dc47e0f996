//===- CudaProject.h - a self-contained source tree of a CUDA build --*- C++ -*-===//

#ifndef PHIMOE_CODEGEN_CUDAPROJECT_H
#define PHIMOE_CODEGEN_CUDAPROJECT_H

#include "llvm/Support/Error.h"

#include <string>

namespace phimoe {

/// Writes into the directory `dir` (which must exist) what builds a CUDA phimoe-bin without
/// phimoec or MLIR: the generated `model.cu`, the runtime sources it needs (copied from the
/// phimoec source tree: $PHIMOE_SOURCE_ROOT, else the one phimoec was configured from), the
/// pack plan `pack-plan.json`, phimoe-pack's sources, the kernel unit tests, and a
/// CMakeLists.txt for `arch` (e.g. sm_90). docs/cuda.md says how to use it.
llvm::Error writeCudaProject(const std::string &dir, const std::string &source,
                             const std::string &plan, const std::string &arch,
                             const std::string &description);

} // namespace phimoe

#endif // PHIMOE_CODEGEN_CUDAPROJECT_H
