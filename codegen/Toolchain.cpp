//===- Toolchain.cpp - build phimoe-bin with the host C++ compiler --------===//

#include "codegen/Toolchain.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
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

namespace {
// Runs args[0] with args, its output and errors into `log`; its exit status (-1 with
// `message` set when it could not run).
int run(const std::vector<std::string> &args, llvm::StringRef log, std::string &message) {
  std::vector<llvm::StringRef> argv(args.begin(), args.end());
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, log, log};
  return llvm::sys::ExecuteAndWait(args[0], argv, std::nullopt, redirects, 0, 0, &message);
}
} // namespace

llvm::Error phimoe::buildExecutable(const ToolchainOptions &options,
                                    const std::string &source, const std::string &output,
                                    const std::string &log) {
  std::vector<std::string> args = {options.compiler, "-std=c++17", "-O3", "-DNDEBUG",
                                   "-march=" + options.march, "-I" + options.includeDir,
                                   source};
  args.insert(args.end(), options.libraries.begin(), options.libraries.end());
  args.insert(args.end(), {"-pthread", "-o", output});
  std::string message;
  int rc = run(args, log, message);
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

llvm::Expected<std::set<std::string>> phimoe::targetMacros(const ToolchainOptions &options) {
  llvm::SmallString<128> out, err;
  if (std::error_code ec = llvm::sys::fs::createTemporaryFile("phimoec-macros", "h", out))
    return llvm::createStringError(ec, "a temporary file for the compiler's macros: " +
                                           ec.message());
  if (std::error_code ec = llvm::sys::fs::createTemporaryFile("phimoec-macros", "log", err)) {
    llvm::sys::fs::remove(out);
    return llvm::createStringError(ec, "a temporary file for the compiler's messages: " +
                                           ec.message());
  }
  llvm::scope_exit cleanup([&] {
    llvm::sys::fs::remove(out);
    llvm::sys::fs::remove(err);
  });
  std::vector<std::string> args = {options.compiler, "-march=" + options.march, "-x", "c++",
                                   "-dM", "-E", "/dev/null", "-o", std::string(out)};
  std::string message;
  int rc = run(args, err, message);
  if (rc != 0) {
    std::string said;
    if (auto buffer = llvm::MemoryBuffer::getFile(err))
      said = (*buffer)->getBuffer().take_front(1000).rtrim().str();
    return llvm::createStringError(
        "--march " + options.march + ": " + options.compiler + " rejects -march=" +
        options.march + " (exit " + std::to_string(rc) + (message.empty() ? "" : ", " + message) +
        ")" + (said.empty() ? "" : ":\n" + said));
  }
  auto buffer = llvm::MemoryBuffer::getFile(out);
  if (!buffer)
    return llvm::createStringError(buffer.getError(),
                                   "reading the compiler's macros: " +
                                       buffer.getError().message());
  std::set<std::string> macros;
  llvm::SmallVector<llvm::StringRef> lines;
  (*buffer)->getBuffer().split(lines, '\n', -1, false);
  for (llvm::StringRef line : lines)
    if (line.consume_front("#define "))
      macros.insert(line.take_until([](char c) { return c == ' ' || c == '('; }).str());
  return macros;
}
