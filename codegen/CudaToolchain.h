//===- CudaToolchain.h - build a CUDA phimoe-bin with nvcc ------*- C++ -*-===//

#ifndef PHIMOE_CODEGEN_CUDATOOLCHAIN_H
#define PHIMOE_CODEGEN_CUDATOOLCHAIN_H

#include "llvm/Support/Error.h"

#include <optional>
#include <string>
#include <vector>

namespace phimoe {

struct CudaToolchainOptions {
  std::string nvcc;                   // found at configure time, or $PHIMOE_NVCC
  std::string arch = "sm_90";         // nvcc -arch= (sm_90a only where its features are used)
  std::string includeDir;             // runtime/include
  std::vector<std::string> libraries; // phimoe_cuda_main, phimoe_cuda_rt, ..., phimoe_rt
  // With serve (phimoec --serve): main() with serve, the server, libcpp-httplib.
  std::vector<std::string> serveLibraries;
  bool serve = false; // link serveLibraries instead of libraries
};

/// The nvcc -arch of a phimoec --target (sm_80, sm_86, sm_89, sm_90), or nothing when the
/// target is not a CUDA one.
std::optional<std::string> cudaArchForTarget(const std::string &target);

/// The CUDA toolchain phimoec was configured with (PHIMOE_NVCC, PHIMOE_RUNTIME_INCLUDE,
/// PHIMOE_CUDA_RUNTIME_LIBS and PHIMOE_CUDA_SERVE_LIBS, ':'-separated, override it); an error
/// when phimoec was built without the CUDA backend.
llvm::Expected<CudaToolchainOptions> defaultCudaToolchain();

/// The nvcc command line that builds `source` into `output`.
std::vector<std::string> cudaBuildCommand(const CudaToolchainOptions &options,
                                          const std::string &source, const std::string &output);

/// Compiles the generated CUDA C++ `source` into the executable `output`; nvcc's output goes
/// to `log`, and its last lines into the error on failure.
llvm::Error buildCudaExecutable(const CudaToolchainOptions &options, const std::string &source,
                                const std::string &output, const std::string &log);

} // namespace phimoe

#endif // PHIMOE_CODEGEN_CUDATOOLCHAIN_H
