//===- phimoec.cpp - the compiler driver: checkpoint to phimoe-bin --------===//

#include "codegen/CudaProject.h"
#include "codegen/CudaToolchain.h"
#include "codegen/EmitCpp.h"
#include "codegen/Toolchain.h"
#include "codegen/WeightPacker.h"
#include "compiler/frontend/Config.h"
#include "compiler/frontend/Gguf.h"
#include "compiler/frontend/ModelBuilder.h"
#include "compiler/frontend/Safetensors.h"
#include "dialects/PhiMoE/PhiMoEOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/EmitC/IR/EmitC.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <optional>
#include <unistd.h>

using namespace mlir;

namespace {

struct CompileOptions {
  std::string model, out, target = "cpu", quant = "keep", scope = "all", emit;
  std::string march = "native", lmHead = "auto", embedding = "auto", project;
  std::vector<std::string> overrides;
  bool moqe = false, printIRAfterAll = false, serve = false;
  int64_t maxTokens = 0; // 0: kDefaultMaxTokens of the target
  std::optional<double> ropeMscale; // GGUF input only (compiler/frontend/Gguf.h)
};

// Tokens per forward call when --max-tokens is not given. A GPU's prefill runs every expert's
// weights once per chunk on tensor-core tiles of 64 gathered rows (moe_grouped.cuh): chunks of
// 256 give an expert 32 rows on average (half of each tile idle), chunks of 512 give 64, as
// llama.cpp's default batch (its ubatch) does. The CPU's GEMMs have no such tiles; 256 keeps
// its activation arena in cache.
constexpr int64_t kDefaultMaxTokensCpu = 256, kDefaultMaxTokensCuda = 512;

int fail(const llvm::Twine &message) {
  llvm::errs() << "phimoec: error: " << message << "\n";
  return 1;
}

int fail(llvm::Error error) {
  std::string message = llvm::toString(std::move(error));
  return fail(message);
}

/// Checks a storage name given to --quant, --lm-head, --embedding or
/// --quant-override: the float types, keep, and the block schemes that phimoec
/// can pack and phimoe-bin can run. q4_0 and q5k are dialect schemes without
/// kernels. Anything else is left to the quantize pass, which names the valid
/// values.
std::optional<std::string> checkStorage(const std::string &given, const std::string &name) {
  if (name == "q4_0" || name == "q5k")
    return given + ": phimoe-bin has no kernels for " + name +
           " yet; use q4k, q6k or q8_0 (or f32, bf16, f16, keep)";
  return std::nullopt;
}

/// Moves the finished `tmp` into place as `out`. A previous phimoec output
/// there (it has phimoec.json) is replaced; anything else is left alone.
llvm::Error commitOutput(const std::string &tmp, const std::string &out) {
  if (llvm::sys::fs::exists(out)) {
    llvm::SmallString<256> marker(out);
    llvm::sys::path::append(marker, "phimoec.json");
    if (!llvm::sys::fs::exists(marker))
      return llvm::createStringError(out + " exists and is not a phimoec output directory (no phimoec.json): "
                "remove it or choose another -o");
    std::string old = out + ".phimoec-old-" + std::to_string(getpid());
    if (auto ec = llvm::sys::fs::rename(out, old))
      return llvm::createStringError(ec, "cannot replace " + out + ": " + ec.message());
    if (auto ec = llvm::sys::fs::rename(tmp, out)) {
      (void)llvm::sys::fs::rename(old, out);
      return llvm::createStringError(ec, "cannot write " + out + ": " + ec.message());
    }
    (void)llvm::sys::fs::remove_directories(old);
    return llvm::Error::success();
  }
  if (auto ec = llvm::sys::fs::rename(tmp, out))
    return llvm::createStringError(ec, "cannot write " + out + ": " + ec.message());
  return llvm::Error::success();
}

int compile(CompileOptions o) {
  // --target cpu, or a CUDA architecture (docs/cuda.md).
  std::optional<std::string> cudaArch = ::phimoe::cudaArchForTarget(o.target);
  if (o.maxTokens == 0)
    o.maxTokens = cudaArch ? kDefaultMaxTokensCuda : kDefaultMaxTokensCpu;
  if (o.target != "cpu" && !cudaArch)
    return fail("--target " + o.target + ": expected cpu, sm_80, sm_86, sm_89 or sm_90");
  if (cudaArch && !o.emit.empty() && o.emit == "cpp")
    return fail("--emit=cpp: --target " + o.target + " emits CUDA C++ (--emit=cuda)");
  if (!cudaArch && o.emit == "cuda")
    return fail("--emit=cuda needs a CUDA --target (sm_80, sm_86, sm_89, sm_90)");
  if (!o.project.empty() && (!cudaArch || !o.emit.empty() || !o.out.empty()))
    return fail("--emit-project DIR: needs a CUDA --target, and neither -o nor --emit");
  {
    std::vector<std::pair<std::string, std::string>> storages = {
        {"--quant " + o.quant, o.quant},
        {"--lm-head " + o.lmHead, o.lmHead},
        {"--embedding " + o.embedding, o.embedding}};
    for (const std::string &text : o.overrides)
      storages.push_back({"--quant-override " + text, text.substr(text.rfind('=') + 1)});
    for (auto &[given, name] : storages)
      if (auto error = checkStorage(given, name))
        return fail(*error);
  }
  if (o.emit.empty() && o.out.empty() && o.project.empty())
    return fail("-o OUT is required (or --emit=mlir|mlir-opt|cpp|cuda to print a stage)");
  const bool gguf = ::phimoe::isGgufFile(o.model);
  if (!gguf && !llvm::sys::fs::is_directory(o.model))
    return fail(o.model + ": not a directory or a GGUF file (give a Hugging Face checkpoint "
                          "directory, or a .gguf model file)");
  if (!gguf && o.ropeMscale)
    return fail("--rope-mscale is for GGUF input: " + o.model +
                "/config.json gives LongRoPE's short_mscale and long_mscale");
  if (o.ropeMscale && !(*o.ropeMscale > 0 && *o.ropeMscale < 100))
    return fail("--rope-mscale " + std::to_string(*o.ropeMscale) + ": expected a positive scale");
  if (gguf && !o.project.empty())
    return fail("--emit-project: phimoe-pack reads safetensors checkpoints; give the Hugging "
                "Face checkpoint directory rather than " + o.model);

  // A checkpoint directory, or a GGUF file read as one (its vocabulary kept apart).
  std::optional<::phimoe::PhiMoEConfig> config;
  std::unique_ptr<::phimoe::Checkpoint> checkpoint;
  std::string ggufVocabulary;
  if (gguf) {
    auto model = ::phimoe::readGguf(o.model, {o.ropeMscale});
    if (!model)
      return fail(model.takeError());
    for (const std::string &warning : model->warnings)
      llvm::errs() << "phimoec: warning: " << warning << "\n";
    config = std::move(model->config);
    checkpoint = std::move(model->checkpoint);
    ggufVocabulary = std::move(model->vocabulary);
  } else {
    llvm::SmallString<256> configPath(o.model);
    llvm::sys::path::append(configPath, "config.json");
    auto read = ::phimoe::readConfig(std::string(configPath));
    if (!read)
      return fail(read.takeError());
    config = std::move(*read);
  }
  std::optional<::phimoe::CudaToolchainOptions> cudaToolchain;
  if (cudaArch && o.emit.empty() && o.project.empty()) {
    auto toolchain = ::phimoe::defaultCudaToolchain();
    if (!toolchain)
      return fail(toolchain.takeError());
    cudaToolchain = std::move(*toolchain);
    cudaToolchain->arch = *cudaArch;
    cudaToolchain->serve = o.serve;
    if (o.serve && cudaToolchain->serveLibraries.empty())
      return fail("--serve: this phimoec was built without the libraries of a CUDA serve "
                  "(set PHIMOE_CUDA_SERVE_LIBS)");
  }
  // The CPU kernels' SIMD path under --march, from the compiler that builds phimoe-bin (the
  // kernels choose it by the same macros). With AVX2 and no AVX-512 the q6_K kernels decode
  // plain rows faster than 16-row groups and prefill both as fast (docs/BENCHMARKS.md), so
  // q6_K matrices stay in rows there. This also refuses a --march the compiler rejects
  // before anything is written.
  bool rows16Q6k = true;
  if (!cudaArch && o.emit != "mlir" && o.emit != "mlir-opt") {
    ::phimoe::ToolchainOptions toolchain = ::phimoe::defaultToolchain();
    toolchain.march = o.march;
    auto macros = ::phimoe::targetMacros(toolchain);
    if (!macros)
      return fail(macros.takeError());
    rows16Q6k = !(macros->count("__AVX2__") && !macros->count("__AVX512BW__"));
  }
  if (!checkpoint) {
    auto opened = ::phimoe::Checkpoint::open(o.model);
    if (!opened)
      return fail(opened.takeError());
    checkpoint = std::move(*opened);
  }

  DialectRegistry registry;
  registry.insert<mlir::phimoe::PhiMoEDialect, func::FuncDialect, emitc::EmitCDialect>();
  MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();
  auto module = ::phimoe::buildModel(ctx, *config, *checkpoint);
  if (!module)
    return fail(module.takeError());
  (**module)->setAttr("phimoe.max_position",
                      Builder(&ctx).getI64IntegerAttr(config->maxPosition));
  if (failed(verify(**module)))
    return fail("the model IR does not verify (a phimoec bug)");
  if (o.emit == "mlir") {
    (**module)->print(llvm::outs());
    return 0;
  }

  mlir::phimoe::PipelineOptions pipeline;
  pipeline.quant = o.quant;
  pipeline.scope = o.moqe ? "experts" : o.scope;
  pipeline.lmHead = o.lmHead;
  pipeline.embedding = o.embedding;
  pipeline.overrides = o.overrides;
  pipeline.target = o.emit == "mlir-opt" ? "none" : (cudaArch ? "cuda" : "cpu");
  pipeline.maxTokens = o.maxTokens;
  pipeline.rows16Q6k = rows16Q6k;
  PassManager pm(&ctx);
  mlir::phimoe::buildPhiMoEPipeline(pm, pipeline);
  if (o.printIRAfterAll) {
    ctx.disableMultithreading();
    pm.enableIRPrinting([](Pass *, Operation *) { return false; },
                        [](Pass *, Operation *) { return true; },
                        /*printModuleScope=*/true, /*printAfterOnlyOnChange=*/false);
  }
  if (failed(pm.run(**module)))
    return fail("the phimoe pipeline failed");
  if (o.emit == "mlir-opt") {
    (**module)->print(llvm::outs());
    return 0;
  }
  if (cudaArch)
    for (auto weight : (**module).getOps<mlir::phimoe::WeightOp>()) {
      auto q = dyn_cast<mlir::phimoe::QWeightType>(weight.getType());
      if (q && weight->hasAttr("phimoe.pack_offset") &&
          q.getScheme() != mlir::phimoe::QuantScheme::Q8_0 &&
          q.getScheme() != mlir::phimoe::QuantScheme::Q4K &&
          q.getScheme() != mlir::phimoe::QuantScheme::Q6K)
        return fail("weight '" + weight.getSymName() + "' is stored as " +
                    mlir::phimoe::stringifyQuantScheme(q.getScheme()) + ": --target " +
                    o.target + " has kernels for q4k, q6k, q8_0 and float weights only");
    }
  std::string cpp;
  llvm::raw_string_ostream cppStream(cpp);
  if (failed(::phimoe::emitCpp(**module, cppStream)))
    return fail("C++ emission failed");
  if (o.emit == "cpp" || o.emit == "cuda") {
    llvm::outs() << cpp;
    return 0;
  }
  if (!o.emit.empty())
    return fail("--emit=" + o.emit + ": expected mlir, mlir-opt, cpp or cuda");

  // Everything goes to a temporary sibling of OUT, moved into place at the end:
  // a failed compile leaves OUT as it was.
  std::string out = o.project.empty() ? o.out : o.project;
  while (out.size() > 1 && out.back() == '/')
    out.pop_back();
  std::string tmp = out + ".phimoec-tmp-" + std::to_string(getpid());
  if (auto ec = llvm::sys::fs::create_directories(tmp))
    return fail("cannot create " + tmp + ": " + ec.message());
  llvm::scope_exit cleanup([&] { (void)llvm::sys::fs::remove_directories(tmp); });
  auto path = [&](const char *name) {
    llvm::SmallString<256> p(tmp);
    llvm::sys::path::append(p, name);
    return std::string(p);
  };
  // The tokenizer and generation settings travel with the binary (and with a project).
  std::vector<std::string> copied;
  auto copyTokenizer = [&]() -> llvm::Error {
    if (gguf) { // phimoe-bin reads a GGUF vocabulary from OUT as from a checkpoint directory
      std::error_code ec;
      llvm::raw_fd_ostream file(path("tokenizer.gguf"), ec);
      if (ec)
        return llvm::createStringError(ec, path("tokenizer.gguf") + ": " + ec.message());
      file << ggufVocabulary;
      copied.push_back("tokenizer.gguf");
      return llvm::Error::success();
    }
    for (const char *name : {"tokenizer.json", "tokenizer_config.json",
                             "special_tokens_map.json", "generation_config.json",
                             "tokenizer.model"}) {
      llvm::SmallString<256> from(o.model);
      llvm::sys::path::append(from, name);
      if (!llvm::sys::fs::exists(from))
        continue;
      if (auto ec = llvm::sys::fs::copy_file(from, path(name)))
        return llvm::createStringError(ec, "cannot copy " + std::string(from) + ": " +
                                               ec.message());
      copied.push_back(name);
    }
    return llvm::Error::success();
  };
  if (!o.project.empty()) {
    // A source tree that builds phimoe-bin and phimoe-pack without phimoec (docs/cuda.md).
    auto plan = ::phimoe::packPlan(**module);
    if (!plan)
      return fail(plan.takeError());
    std::string description = "phimoe-bin of " + o.model + " for --target " + o.target +
                              " --quant " + o.quant;
    if (auto e = ::phimoe::writeCudaProject(tmp, cpp, *plan, *cudaArch, description))
      return fail(std::move(e));
    if (auto e = copyTokenizer())
      return fail(std::move(e));
    nlohmann::json info = {
        {"model", o.model}, {"target", o.target}, {"quant", o.quant},
        {"scope", pipeline.scope.getValue()}, {"max_tokens", o.maxTokens}, {"project", true},
        {"copied", copied},
        {"model_hash", (**module)->getAttrOfType<IntegerAttr>("phimoe.model_hash")
                           .getValue().getZExtValue()}};
    std::error_code ec;
    {
      llvm::raw_fd_ostream file(path("phimoec.json"), ec);
      if (ec)
        return fail(path("phimoec.json") + ": " + ec.message());
      file << info.dump(2) << "\n";
    }
    if (auto e = commitOutput(tmp, out))
      return fail(std::move(e));
    cleanup.release();
    llvm::errs() << "phimoec: wrote the project " << out
                 << " (cmake -S " << out << " -B " << out << "/build; docs/cuda.md)\n";
    return 0;
  }
  const char *sourceName = cudaArch ? "model.cu" : "model.cpp";
  {
    std::error_code ec;
    llvm::raw_fd_ostream file(path(sourceName), ec);
    if (ec)
      return fail(path(sourceName) + ": " + ec.message());
    file << cpp;
  }
  bool progress = llvm::sys::Process::StandardErrIsDisplayed();
  if (auto e = ::phimoe::packWeights(**module, *checkpoint, path("weights.phw"), progress))
    return fail(std::move(e));
  if (cudaToolchain) {
    if (auto e = ::phimoe::buildCudaExecutable(*cudaToolchain, path(sourceName),
                                               path("phimoe-bin"), path("build.log")))
      return fail(std::move(e));
  } else {
    ::phimoe::ToolchainOptions toolchain = ::phimoe::defaultToolchain();
    toolchain.march = o.march;
    if (auto e = ::phimoe::buildExecutable(toolchain, path("model.cpp"), path("phimoe-bin"),
                                         path("build.log")))
      return fail(std::move(e));
  }
  if (auto e = copyTokenizer())
    return fail(std::move(e));
  {
    nlohmann::json info = {
        {"model", o.model}, {"target", o.target},
        {"march", cudaArch ? std::string() : o.march}, {"quant", o.quant},
        {"scope", pipeline.scope.getValue()}, {"max_tokens", o.maxTokens},
        {"copied", copied},
        {"model_hash", (**module)->getAttrOfType<IntegerAttr>("phimoe.model_hash")
                           .getValue().getZExtValue()}};
    std::error_code ec;
    llvm::raw_fd_ostream file(path("phimoec.json"), ec);
    if (ec)
      return fail(path("phimoec.json") + ": " + ec.message());
    file << info.dump(2) << "\n";
  }
  if (auto e = commitOutput(tmp, out))
    return fail(std::move(e));
  cleanup.release();
  llvm::errs() << "phimoec: wrote " << out << "/phimoe-bin and " << out << "/weights.phw\n";
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"phimoec: compiles a PhiMoE checkpoint into phimoe-bin, an executable "
               "specialized for the model and the target"};
  app.require_subcommand(1);
  CompileOptions o;
  CLI::App *cmd = app.add_subcommand("compile", "compile a Hugging Face checkpoint directory "
                                                 "or a GGUF file");
  cmd->add_option("model", o.model, "checkpoint directory (config.json, *.safetensors), or a "
                                    "GGUF model file (llama.cpp's format; docs/compiling.md)")
      ->required();
  cmd->add_option("--rope-mscale", o.ropeMscale,
                  "GGUF input: LongRoPE's attention scale (transformers' short_mscale and "
                  "long_mscale: 1.243163121016122 for Phi-3.5-MoE), which GGUF files lack");
  cmd->add_option("-o,--output", o.out, "output directory (phimoe-bin, weights.phw)");
  cmd->add_option("--target", o.target, "cpu (x86-64), or an NVIDIA GPU architecture: sm_80, "
                                        "sm_86, sm_89, sm_90 (docs/cuda.md)")
      ->capture_default_str();
  cmd->add_option("--march", o.march, "-march of the generated code: native, x86-64-v2, "
                                      "x86-64-v3, x86-64-v4, ...")
      ->capture_default_str();
  cmd->add_option("--quant", o.quant, "weight storage: q4k, q6k, q8_0 (llama.cpp's block "
                                      "formats), f32, bf16, f16, or keep (as the checkpoint "
                                      "has them)")
      ->capture_default_str();
  cmd->add_flag("--moqe", o.moqe, "quantize only the expert weights (MoQE)");
  cmd->add_option("--quant-override", o.overrides,
                  "REGEX=TYPE: storage of the weights whose name matches REGEX");
  cmd->add_option("--lm-head", o.lmHead, "storage of the LM head (auto, keep, a scheme)")
      ->capture_default_str();
  cmd->add_option("--embedding", o.embedding, "storage of the embedding table")
      ->capture_default_str();
  cmd->add_option("--max-tokens", o.maxTokens,
                  "tokens per forward call (prompt chunk); default 256 for cpu, 512 for a GPU")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--emit", o.emit,
                  "print a stage instead of building: mlir, mlir-opt, cpp (cpu), cuda (sm_XX)")
      ->check(CLI::IsMember({"mlir", "mlir-opt", "cpp", "cuda"}));
  cmd->add_option("--emit-project", o.project,
                  "with a CUDA --target: write DIR, a source tree that builds phimoe-bin and "
                  "phimoe-pack (from a pack plan) without phimoec or MLIR");
  cmd->add_flag("--serve", o.serve,
                "with a CUDA --target: give phimoe-bin `serve` (continuous batching), which "
                "makes it need libcpp-httplib (and OpenSSL, zlib, brotli) where it runs; without "
                "it a CUDA phimoe-bin needs only libc and libstdc++ (a CPU build always serves)");
  cmd->add_flag("--print-ir-after-all", o.printIRAfterAll, "print the IR after every pass");
  CLI11_PARSE(app, argc, argv);
  return compile(o);
}
