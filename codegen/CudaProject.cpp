//===- CudaProject.cpp - a self-contained source tree of a CUDA build -----===//

#include "codegen/CudaProject.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>
#include <iterator>
#include <vector>

using namespace phimoe;

#ifndef PHIMOE_SOURCE_ROOT
#define PHIMOE_SOURCE_ROOT ""
#endif
#ifndef PHIMOE_CLI11_INCLUDE_DIR
#define PHIMOE_CLI11_INCLUDE_DIR ""
#endif
#ifndef PHIMOE_JSON_INCLUDE_DIR
#define PHIMOE_JSON_INCLUDE_DIR ""
#endif
#ifndef PHIMOE_CLI11_LICENSE
#define PHIMOE_CLI11_LICENSE ""
#endif
#ifndef PHIMOE_JSON_LICENSE
#define PHIMOE_JSON_LICENSE ""
#endif

namespace {

/// What a CUDA phimoe-bin, phimoe-pack and the kernel tests are built from: (from, to),
/// relative to the phimoec source tree and to the project.
const std::pair<const char *, const char *> kProjectFiles[] = {
    {"runtime/include/phimoe_rt/runtime.h", "runtime/include/phimoe_rt/runtime.h"},
    {"runtime/include/phimoe_rt/quant.h", "runtime/include/phimoe_rt/quant.h"},
    {"runtime/include/phimoe_rt/split_layout.h", "runtime/include/phimoe_rt/split_layout.h"},
    {"runtime/include/phimoe_rt/pack_format.h", "runtime/include/phimoe_rt/pack_format.h"},
    {"runtime/include/phimoe_rt/session.h", "runtime/include/phimoe_rt/session.h"},
    {"runtime/include/phimoe_rt/sparsemixer.h", "runtime/include/phimoe_rt/sparsemixer.h"},
    {"runtime/include/phimoe_cuda/check.h", "runtime/include/phimoe_cuda/check.h"},
    {"runtime/include/phimoe_cuda/launch.h", "runtime/include/phimoe_cuda/launch.h"},
    {"runtime/include/phimoe_cuda/profile.h", "runtime/include/phimoe_cuda/profile.h"},
    {"runtime/include/phimoe_cuda/runtime.h", "runtime/include/phimoe_cuda/runtime.h"},
    {"runtime/include/phimoe_cuda/model.h", "runtime/include/phimoe_cuda/model.h"},
    {"runtime/include/phimoe_cuda/elements.cuh", "runtime/include/phimoe_cuda/elements.cuh"},
    {"runtime/include/phimoe_cuda/kernels.cuh", "runtime/include/phimoe_cuda/kernels.cuh"},
    {"runtime/include/phimoe_cuda/gemm_tc.cuh", "runtime/include/phimoe_cuda/gemm_tc.cuh"},
    {"runtime/include/phimoe_cuda/attention_tc.cuh",
     "runtime/include/phimoe_cuda/attention_tc.cuh"},
    {"runtime/include/phimoe_cuda/moe_grouped.cuh", "runtime/include/phimoe_cuda/moe_grouped.cuh"},
    {"runtime/include/phimoe_cuda/session.h", "runtime/include/phimoe_cuda/session.h"},
    {"runtime/cuda/session.cpp", "runtime/cuda/session.cpp"},
    {"runtime/cuda/main.cpp", "runtime/cuda/main.cpp"},
    {"runtime/model/args.cpp", "runtime/model/args.cpp"},
    {"runtime/model/pack.cpp", "runtime/model/pack.cpp"},
    {"runtime/model/npy.cpp", "runtime/model/npy.cpp"},
    {"runtime/cpu/convert.cpp", "runtime/cpu/convert.cpp"},
    {"runtime/quant/quant.cpp", "runtime/quant/quant.cpp"},
    {"runtime/quant/q4k.cpp", "runtime/quant/q4k.cpp"},
    {"runtime/quant/q6k.cpp", "runtime/quant/q6k.cpp"},
    {"runtime/quant/quant_util.h", "runtime/quant/quant_util.h"},
    {"runtime/tools/phimoe_pack.cpp", "runtime/tools/phimoe_pack.cpp"},
    {"runtime/tools/mini_json.h", "runtime/tools/mini_json.h"},
    {"test/gpu/kernels_test.cu", "tests/kernels_test.cu"},
    {"test/gpu/test_weights.h", "tests/test_weights.h"},
};

/// phimoe-bin's command line (runtime/cli, phimoe_rt/cli.h) and what it needs: the tokenizer,
/// sampling, chat prompts. Sources (.cpp) listed here are compiled into the project's
/// phimoe-bin.
const char *const kCommandLineFiles[] = {
    "runtime/include/phimoe_rt/cli.h",
    "runtime/include/phimoe_rt/json_mode.h",
    "runtime/include/phimoe_rt/json_pattern.h",
    "runtime/model/json_mode.cpp",
    "runtime/model/json_pattern.cpp",
    "runtime/include/phimoe_rt/model_session.h",
    "runtime/include/phimoe_rt/server.h",
    "runtime/include/phimoe_rt/tokenizer.h",
    "runtime/include/phimoe_rt/chat.h",
    "runtime/include/phimoe_rt/sampler.h",
    "runtime/cli/cli.cpp",
    "runtime/cli/generate.cpp",
    "runtime/cli/generate.h",
    "runtime/model/chat.cpp",
    "runtime/model/sampler.cpp",
    "runtime/tokenizer/added_tokens.cpp",
    "runtime/tokenizer/added_tokens.h",
    "runtime/tokenizer/bpe.h",
    "runtime/tokenizer/bpe_ranks.cpp",
    "runtime/tokenizer/bpe_scores.cpp",
    "runtime/tokenizer/bpe_tokenizer.cpp",
    "runtime/tokenizer/bpe_tokenizer.h",
    "runtime/tokenizer/byte_level.cpp",
    "runtime/tokenizer/byte_level.h",
    "runtime/tokenizer/decoder.cpp",
    "runtime/tokenizer/decoder.h",
    "runtime/tokenizer/gguf_reader.cpp",
    "runtime/tokenizer/gguf_reader.h",
    "runtime/tokenizer/load.cpp",
    "runtime/tokenizer/load_gguf.cpp",
    "runtime/tokenizer/load_hf.cpp",
    "runtime/tokenizer/loaders.h",
    "runtime/tokenizer/piece_map.cpp",
    "runtime/tokenizer/piece_map.h",
    "runtime/tokenizer/spec.h",
    "runtime/tokenizer/stream_decoder.cpp",
    "runtime/tokenizer/text_pipeline.cpp",
    "runtime/tokenizer/text_pipeline.h",
    "runtime/tokenizer/unicode_classes.cpp",
    "runtime/tokenizer/unicode_classes.h",
    "runtime/tokenizer/unicode_classes_table.cpp",
    "runtime/tokenizer/utf8.cpp",
    "runtime/tokenizer/utf8.h",
};

/// `phimoe-bin serve`, batched (BatchEngine over phimoe_cuda::BatchBackend) or one sequence at
/// a time (SessionEngine): built into the project's phimoe-bin with -DPHIMOE_SERVE=ON, which
/// needs cpp-httplib (a shared library, not carried).
const char *const kServerFiles[] = {
    "runtime/include/phimoe_rt/batch.h",
    "runtime/include/phimoe_cuda/batch.h",
    "runtime/cuda/batch.cpp",
    "runtime/server/engine.cpp",
    "runtime/server/http.cpp",
    "runtime/server/session_engine.cpp",
    "runtime/server/stream.cpp",
};

/// The header-only libraries the command line is written with, copied from where phimoec's
/// build found them (Debian's libcli11-dev and nlohmann-json3-dev), so that the project
/// builds where they are not installed: (include dir, subdirectory, license file, its name in
/// the project).
struct ThirdParty {
  const char *includeEnv, *includeDir, *subdir, *license, *licenseName;
};
const ThirdParty kThirdParty[] = {
    {"PHIMOE_CLI11_INCLUDE", PHIMOE_CLI11_INCLUDE_DIR, "CLI", PHIMOE_CLI11_LICENSE,
     "CLI11.copyright"},
    {"PHIMOE_JSON_INCLUDE", PHIMOE_JSON_INCLUDE_DIR, "nlohmann", PHIMOE_JSON_LICENSE,
     "nlohmann_json.copyright"},
};

/// Copies the tree `from` to `to` (regular files only).
llvm::Error copyTree(const std::string &from, const std::string &to) {
  if (auto e = llvm::sys::fs::create_directories(to))
    return llvm::createStringError(e, to + ": " + e.message());
  std::error_code ec;
  for (llvm::sys::fs::recursive_directory_iterator it(from, ec), end; it != end && !ec;
       it.increment(ec)) {
    llvm::SmallString<256> dst(to);
    llvm::sys::path::append(dst, llvm::StringRef(it->path()).drop_front(from.size()));
    if (it->type() == llvm::sys::fs::file_type::directory_file) {
      if (auto e = llvm::sys::fs::create_directories(dst))
        return llvm::createStringError(e, std::string(dst) + ": " + e.message());
    } else if (auto e = llvm::sys::fs::copy_file(it->path(), dst)) {
      return llvm::createStringError(e, "--emit-project: cannot copy " + it->path() + ": " +
                                            e.message());
    }
  }
  if (ec)
    return llvm::createStringError(ec, "--emit-project: cannot read " + from + ": " +
                                           ec.message());
  return llvm::Error::success();
}

llvm::Error writeText(const std::string &path, const std::string &text) {
  std::error_code ec;
  llvm::raw_fd_ostream file(path, ec);
  if (ec)
    return llvm::createStringError(ec, path + ": " + ec.message());
  file << text;
  file.close();
  if (file.has_error())
    return llvm::createStringError(file.error(), path + ": write failed");
  return llvm::Error::success();
}

/// The .cpp files of kCommandLineFiles, one per line of the CMake source list.
template <size_t N> std::string sourcesOf(const char *const (&files)[N]) {
  std::string list;
  for (llvm::StringRef file : files)
    if (file.ends_with(".cpp"))
      list += "  " + file.str() + "\n";
  return list;
}

std::string cmakeLists(const std::string &arch, const std::string &description) {
  std::string number = arch.substr(3); // sm_90 -> 90
  return "# generated by phimoec, do not edit\n"
         "# " + description + "\n"
         "# Builds without phimoec or MLIR (CUDA toolkit, CMake, a C++17 compiler):\n"
         "#   cmake -S . -B build && cmake --build build -j\n"
         "#   build/phimoe-pack pack-plan.json CHECKPOINT_DIR build/weights.phw\n"
         "#   build/phimoe-bin -p \"Once upon a time\" -n 32   # weights.phw next to it\n"
         "#   build/phimoe-bin --help                     # the command line of every phimoe-bin\n"
         "#   build/kernels_test                          # the kernels against CPU references\n"
         "cmake_minimum_required(VERSION 3.20)\n"
         "project(phimoe_model LANGUAGES C CXX CUDA)\n"
         "if(NOT CMAKE_BUILD_TYPE)\n"
         "  set(CMAKE_BUILD_TYPE Release)\n"
         "endif()\n"
         "set(CMAKE_CXX_STANDARD 17)\n"
         "set(CMAKE_CXX_STANDARD_REQUIRED ON)\n"
         "set(CMAKE_CUDA_STANDARD 17)\n"
         "set(CMAKE_CUDA_STANDARD_REQUIRED ON)\n"
         "set(CMAKE_CUDA_ARCHITECTURES " + number + ")\n"
         "set(CMAKE_CUDA_FLAGS_RELEASE \"-O2 -DNDEBUG\")\n"
         "find_package(CUDAToolkit REQUIRED)\n"
         "find_package(Threads REQUIRED)\n"
         "\n"
         "add_executable(phimoe-bin model.cu runtime/cuda/session.cpp runtime/cuda/main.cpp\n"
         "  runtime/model/args.cpp runtime/model/pack.cpp runtime/model/npy.cpp\n" +
         sourcesOf(kCommandLineFiles) +
         ")\n"
         "# CLI11 and nlohmann-json (header-only) travel with the project: third_party/.\n"
         "target_include_directories(phimoe-bin PRIVATE runtime/include third_party/include)\n"
         "target_link_libraries(phimoe-bin PRIVATE CUDA::cudart_static Threads::Threads)\n"
         "\n"
         "add_executable(phimoe-pack runtime/tools/phimoe_pack.cpp runtime/cpu/convert.cpp\n"
         "  runtime/quant/quant.cpp runtime/quant/q4k.cpp runtime/quant/q6k.cpp)\n"
         "target_include_directories(phimoe-pack PRIVATE runtime/include)\n"
         "\n"
         "add_executable(kernels_test tests/kernels_test.cu runtime/cpu/convert.cpp\n"
         "  runtime/quant/quant.cpp runtime/quant/q4k.cpp runtime/quant/q6k.cpp)\n"
         "target_include_directories(kernels_test PRIVATE runtime/include)\n"
         "target_link_libraries(kernels_test PRIVATE Threads::Threads)\n"
         "\n"
         "# serve (-DPHIMOE_SERVE=ON) needs cpp-httplib, a shared library (Debian:\n"
         "# libcpp-httplib-dev) that the project does not carry and that phimoe-bin then needs\n"
         "# where it runs. Without it (the default) phimoe-bin refuses serve and does the rest.\n"
         "option(PHIMOE_SERVE \"build phimoe-bin serve (needs cpp-httplib)\" OFF)\n"
         "if(PHIMOE_SERVE)\n"
         "  find_path(PHIMOE_HTTPLIB_INCLUDE_DIR httplib.h REQUIRED)\n"
         "  find_library(PHIMOE_HTTPLIB_LIBRARY cpp-httplib REQUIRED)\n"
         "  target_sources(phimoe-bin PRIVATE\n" +
         sourcesOf(kServerFiles) +
         "  )\n"
         "  target_include_directories(phimoe-bin SYSTEM PRIVATE ${PHIMOE_HTTPLIB_INCLUDE_DIR})\n"
         "  target_link_libraries(phimoe-bin PRIVATE ${PHIMOE_HTTPLIB_LIBRARY})\n"
         "else()\n"
         "  target_compile_definitions(phimoe-bin PRIVATE PHIMOE_NO_SERVER)\n"
         "endif()\n"
         "\n"
         "# The tokenizer (copied from the checkpoint by phimoec) goes next to phimoe-bin,\n"
         "# where it looks for it (or give --tokenizer DIR).\n"
         "foreach(name tokenizer.json tokenizer_config.json special_tokens_map.json\n"
         "        generation_config.json tokenizer.model)\n"
         "  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${name})\n"
         "    configure_file(${name} ${CMAKE_CURRENT_BINARY_DIR}/${name} COPYONLY)\n"
         "  endif()\n"
         "endforeach()\n";
}

} // namespace

llvm::Error phimoe::writeCudaProject(const std::string &dir, const std::string &source,
                                     const std::string &plan, const std::string &arch,
                                     const std::string &description) {
  const char *env = std::getenv("PHIMOE_SOURCE_ROOT");
  std::string root = env && *env ? env : PHIMOE_SOURCE_ROOT;
  if (root.empty())
    return llvm::createStringError("--emit-project: phimoec does not know its source tree: set "
                                   "PHIMOE_SOURCE_ROOT to the phimoec repository");
  auto join = [](const std::string &a, const std::string &b) {
    llvm::SmallString<256> p(a);
    llvm::sys::path::append(p, b);
    return std::string(p);
  };
  // Copies `from` (in the phimoec tree) to `to` (in the project).
  auto copy = [&](const char *from, const char *to) -> llvm::Error {
    std::string src = join(root, from), dst = join(dir, to);
    if (auto ec = llvm::sys::fs::create_directories(llvm::sys::path::parent_path(dst)))
      return llvm::createStringError(ec, dst + ": " + ec.message());
    if (auto ec = llvm::sys::fs::copy_file(src, dst))
      return llvm::createStringError(ec, "--emit-project: cannot copy " + src + ": " +
                                             ec.message() + " (set PHIMOE_SOURCE_ROOT to the "
                                             "phimoec repository)");
    return llvm::Error::success();
  };
  for (auto [from, to] : kProjectFiles)
    if (auto e = copy(from, to))
      return e;
  std::vector<const char *> files(std::begin(kCommandLineFiles), std::end(kCommandLineFiles));
  files.insert(files.end(), std::begin(kServerFiles), std::end(kServerFiles));
  for (const char *file : files)
    if (auto e = copy(file, file))
      return e;
  for (const ThirdParty &lib : kThirdParty) {
    const char *env = std::getenv(lib.includeEnv);
    std::string include = env && *env ? env : lib.includeDir;
    std::string from = join(include, lib.subdir);
    if (include.empty() || !llvm::sys::fs::is_directory(from))
      return llvm::createStringError("--emit-project: " + std::string(lib.subdir) +
                                     "/ headers not found in '" + include + "' (set " +
                                     lib.includeEnv + " to the directory that holds " +
                                     lib.subdir + "/)");
    if (auto e = copyTree(from, join(join(dir, "third_party/include"), lib.subdir)))
      return e;
    if (*lib.license && llvm::sys::fs::exists(lib.license))
      if (auto ec = llvm::sys::fs::copy_file(lib.license,
                                             join(join(dir, "third_party"), lib.licenseName)))
        return llvm::createStringError(ec, std::string("--emit-project: cannot copy ") +
                                               lib.license + ": " + ec.message());
  }
  if (auto e = writeText(join(dir, "model.cu"), source))
    return e;
  if (auto e = writeText(join(dir, "pack-plan.json"), plan))
    return e;
  return writeText(join(dir, "CMakeLists.txt"), cmakeLists(arch, description));
}
