//===- CudaToolchain.cpp - build a CUDA phimoe-bin with nvcc --------------===//

#include "codegen/CudaToolchain.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"

#include <cstdlib>

using namespace phimoe;

#ifndef PHIMOE_NVCC
#define PHIMOE_NVCC ""
#endif
#ifndef PHIMOE_CUDA_RUNTIME_LIBRARIES
#define PHIMOE_CUDA_RUNTIME_LIBRARIES ""
#endif
#ifndef PHIMOE_CUDA_SERVE_LIBRARIES
#define PHIMOE_CUDA_SERVE_LIBRARIES ""
#endif

std::optional<std::string> phimoe::cudaArchForTarget(const std::string &target) {
  // No kernel uses sm_90a's features (wgmma, TMA) yet: plain sm_90 code.
  for (const char *arch : {"sm_80", "sm_86", "sm_89", "sm_90"})
    if (target == arch)
      return std::string(arch);
  return std::nullopt;
}

llvm::Expected<CudaToolchainOptions> phimoe::defaultCudaToolchain() {
  auto env = [](const char *name, const char *fallback) {
    const char *value = std::getenv(name);
    return std::string(value && *value ? value : fallback);
  };
  CudaToolchainOptions options;
  options.nvcc = env("PHIMOE_NVCC", PHIMOE_NVCC);
  options.includeDir = env("PHIMOE_RUNTIME_INCLUDE", PHIMOE_RUNTIME_INCLUDE_DIR);
  std::string libText = env("PHIMOE_CUDA_RUNTIME_LIBS", PHIMOE_CUDA_RUNTIME_LIBRARIES);
  if (options.nvcc.empty() || libText.empty())
    return llvm::createStringError(
        "this phimoec was built without the CUDA backend (no nvcc at configure time: "
        "configure with -DPHIMOE_CUDA=ON, or set PHIMOE_NVCC and PHIMOE_CUDA_RUNTIME_LIBS)");
  if (!llvm::sys::fs::can_execute(options.nvcc))
    return llvm::createStringError(options.nvcc + ": nvcc not found or not executable (set "
                                   "PHIMOE_NVCC to the CUDA compiler)");
  llvm::SmallVector<llvm::StringRef> libs;
  llvm::StringRef(libText).split(libs, ':', -1, false);
  for (llvm::StringRef lib : libs)
    options.libraries.push_back(lib.str());
  std::string serveText = env("PHIMOE_CUDA_SERVE_LIBS", PHIMOE_CUDA_SERVE_LIBRARIES);
  libs.clear();
  llvm::StringRef(serveText).split(libs, ':', -1, false);
  for (llvm::StringRef lib : libs)
    options.serveLibraries.push_back(lib.str());
  return options;
}

std::vector<std::string> phimoe::cudaBuildCommand(const CudaToolchainOptions &options,
                                                  const std::string &source,
                                                  const std::string &output) {
  std::vector<std::string> args = {options.nvcc, "-std=c++17", "-O2", "-DNDEBUG",
                                   "-arch=" + options.arch, "-I" + options.includeDir,
                                   source};
  const std::vector<std::string> &libraries =
      options.serve ? options.serveLibraries : options.libraries;
  args.insert(args.end(), libraries.begin(), libraries.end());
  args.insert(args.end(), {"-cudart", "static", "-Xcompiler", "-pthread", "-lpthread", "-ldl",
                           "-lrt", "-o", output});
  return args;
}

llvm::Error phimoe::buildCudaExecutable(const CudaToolchainOptions &options,
                                        const std::string &source, const std::string &output,
                                        const std::string &log) {
  std::vector<std::string> args = cudaBuildCommand(options, source, output);
  std::vector<llvm::StringRef> argv(args.begin(), args.end());
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, llvm::StringRef(log),
                                                llvm::StringRef(log)};
  std::string message;
  int rc = llvm::sys::ExecuteAndWait(options.nvcc, argv, std::nullopt, redirects, 0, 0, &message);
  if (rc == 0)
    return llvm::Error::success();
  std::string tail;
  if (auto buffer = llvm::MemoryBuffer::getFile(log)) {
    llvm::StringRef text = (*buffer)->getBuffer();
    tail = text.substr(text.size() > 2000 ? text.size() - 2000 : 0).str();
  }
  return llvm::createStringError("building the CUDA phimoe-bin failed (" + options.nvcc +
                                 ", exit " + std::to_string(rc) +
                                 (message.empty() ? "" : ": " + message) + "):\n" +
                                 llvm::join(args, " ") + "\n" + tail);
}
