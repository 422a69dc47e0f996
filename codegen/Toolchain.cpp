//===- Toolchain.cpp - build phimoe-bin with the host C++ compiler --------===//

#include "codegen/Toolchain.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"

#include <cstdlib>

using namespace phimoe;

ToolchainOptions phimoe::defaultToolchain() {
  ToolchainOptions options;
  auto env = [](const char *name, const char *fallback) {
    const char *value = std::getenv(name);
    return std::string(value && *value ? value : fallback);
  };
  options.compiler = env("PHIMOE_CXX", PHIMOE_CXX_COMPILER);
  options.includeDir = env("PHIMOE_RUNTIME_INCLUDE", PHIMOE_RUNTIME_INCLUDE_DIR);
  llvm::SmallVector<llvm::StringRef> libs;
  std::string libText = env("PHIMOE_RUNTIME_LIBS", PHIMOE_RUNTIME_LIBRARIES);
  llvm::StringRef(libText).split(libs, ':', -1, false);
  for (llvm::StringRef lib : libs)
    options.libraries.push_back(lib.str());
  return options;
}

llvm::Error phimoe::buildExecutable(const ToolchainOptions &options,
                                    const std::string &source, const std::string &output,
                                    const std::string &log) {
  std::vector<std::string> args = {options.compiler, "-std=c++17", "-O3", "-DNDEBUG",
                                   "-march=" + options.march, "-I" + options.includeDir,
                                   source};
  args.insert(args.end(), options.libraries.begin(), options.libraries.end());
  args.insert(args.end(), {"-pthread", "-o", output});
  std::vector<llvm::StringRef> argv(args.begin(), args.end());
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, llvm::StringRef(log),
                                                llvm::StringRef(log)};
  std::string message;
  int rc = llvm::sys::ExecuteAndWait(options.compiler, argv, std::nullopt, redirects, 0, 0,
                                     &message);
  if (rc == 0)
    return llvm::Error::success();
  std::string tail;
  if (auto buffer = llvm::MemoryBuffer::getFile(log)) {
    llvm::StringRef text = (*buffer)->getBuffer();
    tail = text.substr(text.size() > 2000 ? text.size() - 2000 : 0).str();
  }
  return llvm::createStringError("building phimoe-bin failed (" + options.compiler + ", exit " + std::to_string(rc) +
          (message.empty() ? "" : ": " + message) + "):\n" + llvm::join(args, " ") + "\n" +
          tail);
}
