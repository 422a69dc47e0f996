// main.cpp - phimoe-bin's command line for a CUDA build (--target sm_XX): token ids in, greedy
// ids and logits out. Text prompts, chat, sampling and serve are the CPU binary's for now.
#include "phimoe_cuda/model.h"
#include "phimoe_cuda/session.h"
#include "phimoe_rt/session.h" // WeightPack, write_npy

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace {

int fail(const std::string &message) {
  std::fprintf(stderr, "phimoe-bin: error: %s\n", message.c_str());
  return 1;
}

constexpr const char *kUsage =
    "phimoe-bin (CUDA): a PhiMoE model compiled by phimoec for one GPU architecture\n"
    "usage: phimoe-bin --tokens 1,2,3 [-n N] [--dump-logits FILE.npy] [--weights FILE]\n"
    "                  [-c CTX]\n"
    "  --tokens IDS          the prompt as comma-separated token ids (required)\n"
    "  -n, --n-predict N     tokens to generate greedily (default 16)\n"
    "  --dump-logits FILE    the logits of every position, float32 .npy [prompt + N, vocab]\n"
    "  --weights FILE        weights.phw (default: next to this executable)\n"
    "  -c, --ctx-size CTX    KV cache capacity (default: prompt + N)\n";

// A non-negative int option value, or -1.
int parse_count(const std::string &text) {
  char *end = nullptr;
  long v = std::strtol(text.c_str(), &end, 10);
  return text.empty() || *end != '\0' || v < 0 || v > INT_MAX ? -1 : static_cast<int>(v);
}

} // namespace

int main(int argc, char **argv) {
  const phimoe_rt::ModelInfo &info = phimoe_model_info;
  // No argument-parsing library: a CUDA build's project (phimoec --emit-project) builds where
  // only the CUDA toolkit and a C++ compiler are.
  std::string tokens, dump_path, weights;
  int n_predict = 16, ctx_size = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    const bool takes_value = arg == "--tokens" || arg == "-n" || arg == "--n-predict" ||
                             arg == "--dump-logits" || arg == "--weights" || arg == "-c" ||
                             arg == "--ctx-size";
    if (!takes_value)
      return fail("unknown option '" + arg + "'\n" + kUsage);
    if (i + 1 >= argc)
      return fail(arg + " needs a value");
    const std::string value = argv[++i];
    if (arg == "--tokens") {
      tokens = value;
    } else if (arg == "--dump-logits") {
      dump_path = value;
    } else if (arg == "--weights") {
      weights = value;
    } else {
      const int v = parse_count(value);
      if (v < 0 || ((arg == "-c" || arg == "--ctx-size") && v == 0))
        return fail(arg + ": '" + value + "' is not a valid count");
      (arg == "-n" || arg == "--n-predict" ? n_predict : ctx_size) = v;
    }
  }
  if (tokens.empty())
    return fail("--tokens is required\n" + std::string(kUsage));

  std::vector<int32_t> prompt;
  std::string error;
  if (!phimoe_rt::parse_token_ids(tokens, "--tokens", info.vocab, prompt, error))
    return fail(error);
  const int needed = static_cast<int>(prompt.size()) + n_predict;
  if (ctx_size == 0)
    ctx_size = needed;
  if (needed > ctx_size)
    return fail("the prompt (" + std::to_string(prompt.size()) + " tokens) and " +
                std::to_string(n_predict) + " generated tokens need a context of " +
                std::to_string(needed) + ", more than --ctx-size " + std::to_string(ctx_size));
  if (weights.empty())
    weights = phimoe_rt::executable_dir() + "/weights.phw";
  auto pack = phimoe_rt::WeightPack::open(weights, info, error);
  if (!pack)
    return fail(error);
  try {
    phimoe_cuda::Session session(info, pack->data(), ctx_size);
    const bool dump = !dump_path.empty();
    std::vector<float> all_logits;
    std::vector<float> *sink = dump ? &all_logits : nullptr;
    const float *logits = session.append(prompt.data(), static_cast<int>(prompt.size()), sink);
    for (int i = 0; i < n_predict; ++i) {
      int32_t next = static_cast<int32_t>(std::max_element(logits, logits + info.vocab) - logits);
      std::printf(i ? ",%d" : "%d", next);
      std::fflush(stdout);
      if (i + 1 < n_predict || dump)
        logits = session.append(&next, 1, sink);
    }
    std::printf("\n");
    if (dump && !phimoe_rt::write_npy(dump_path, all_logits.data(),
                                      static_cast<int64_t>(all_logits.size() / info.vocab),
                                      info.vocab, error))
      return fail(error);
  } catch (const std::exception &e) {
    return fail(std::string("CUDA: ") + e.what());
  }
  return 0;
}
