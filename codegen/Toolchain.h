//===- Toolchain.h - build phimoe-bin with the host C++ compiler -*- C++ -*-===//

#ifndef PHIMOE_CODEGEN_TOOLCHAIN_H
#define PHIMOE_CODEGEN_TOOLCHAIN_H

#include "llvm/Support/Error.h"

#include <set>
#include <string>
#include <vector>

namespace phimoe {

struct ToolchainOptions {
  std::string compiler;               // found at configure time, or $PHIMOE_CXX
  std::string march = "native";       // -march= for the generated code
  std::string includeDir;             // runtime/include
  std::vector<std::string> libraries; // phimoe_rt_cli ... phimoe_rt, then libcpp-httplib
};

/// The toolchain phimoec was configured with (overridable through the
/// environment: PHIMOE_CXX, PHIMOE_RUNTIME_INCLUDE, and PHIMOE_RUNTIME_LIBS as a
/// ':'-separated list).
ToolchainOptions defaultToolchain();

/// Compiles `source` into the executable `output`; the compiler's output goes
/// to `log`, and its last lines into the error on failure.
llvm::Error buildExecutable(const ToolchainOptions &options, const std::string &source,
                            const std::string &output, const std::string &log);

/// The names of the macros the compiler predefines for `-march=options.march` (its `-dM -E`
/// of an empty file): which SIMD paths the runtime's kernels take in phimoe-bin (__AVX2__,
/// __AVX512BW__, ...). An error names the -march when the compiler rejects it.
llvm::Expected<std::set<std::string>> targetMacros(const ToolchainOptions &options);

} // namespace phimoe

#endif // PHIMOE_CODEGEN_TOOLCHAIN_H
