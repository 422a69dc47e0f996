// main.cpp - phimoe-bin's command line: greedy generation from token ids, logits dump.
#include "phimoe_rt/model.h"
#include "phimoe_rt/session.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace {

int fail(const std::string &message) {
  std::fprintf(stderr, "phimoe-bin: error: %s\n", message.c_str());
  return 1;
}

// The directory of this executable, where phimoec put weights.phw.
std::string executable_dir() {
  char buf[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (len <= 0)
    return ".";
  std::string path(buf, static_cast<size_t>(len));
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

bool parse_ids(const std::string &text, int vocab, std::vector<int32_t> &ids,
               std::string &error) {
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    char *end = nullptr;
    long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0') {
      error = "--tokens: '" + item + "' is not a token id";
      return false;
    }
    if (v < 0 || v >= vocab) {
      error = "--tokens: id " + item + " is outside the vocabulary [0, " +
              std::to_string(vocab) + ")";
      return false;
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) {
    error = "--tokens: no token ids given";
    return false;
  }
  return true;
}

int argmax(const float *logits, int vocab) {
  return static_cast<int>(std::max_element(logits, logits + vocab) - logits);
}

} // namespace

int main(int argc, char **argv) {
  const phimoe_rt::ModelInfo &info = phimoe_model_info;
  CLI::App app{"phimoe-bin: a PhiMoE model compiled by phimoec.\n\n"
               "  phimoe-bin --tokens 1,450,4996 --n-predict 16\n"
               "  phimoe-bin --tokens 1,450 --n-predict 8 --dump-logits logits.npy\n"};
  app.set_version_flag("--version", "phimoe-bin (phimoec) model hash " +
                                        std::to_string(info.hash));
  std::string tokens_text, dump_path, weights_path = executable_dir() + "/weights.phw";
  int n_predict = 16;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int ctx_size = 0;
  app.add_option("--tokens", tokens_text, "prompt as comma-separated token ids")->required();
  app.add_option("-n,--n-predict", n_predict, "tokens to generate (greedy)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--dump-logits", dump_path,
                 "write the logits of every prompt and generated position as a float32 "
                 ".npy array of shape [prompt + n-predict, vocab]; row t holds the "
                 "logits after token t");
  app.add_option("-t,--threads", threads, "worker threads")->check(CLI::PositiveNumber);
  app.add_option("-c,--ctx-size", ctx_size,
                 "KV cache capacity in tokens (default: prompt + n-predict)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--weights", weights_path, "the weight pack (default: next to phimoe-bin)");
  CLI11_PARSE(app, argc, argv);

  std::vector<int32_t> prompt;
  std::string error;
  if (!parse_ids(tokens_text, info.vocab, prompt, error))
    return fail(error);
  int needed = static_cast<int>(prompt.size()) + n_predict;
  if (ctx_size == 0)
    ctx_size = needed;
  if (needed > ctx_size)
    return fail("the prompt (" + std::to_string(prompt.size()) + " tokens) and " +
                std::to_string(n_predict) + " generated tokens need a context of " +
                std::to_string(needed) + ", more than --ctx-size " + std::to_string(ctx_size));
  if (info.max_position > 0 && ctx_size > info.max_position)
    return fail("--ctx-size " + std::to_string(ctx_size) +
                " exceeds the model's max_position_embeddings " +
                std::to_string(info.max_position));

  auto pack = phimoe_rt::WeightPack::open(weights_path, info, error);
  if (!pack)
    return fail(error);
  phimoe_rt::Session session(info, pack->data(), threads, ctx_size);

  bool dump = !dump_path.empty();
  std::vector<float> all_logits;
  std::vector<float> *sink = dump ? &all_logits : nullptr;
  const float *logits = session.append(prompt.data(), static_cast<int>(prompt.size()), sink);
  std::vector<int32_t> generated;
  for (int i = 0; i < n_predict; ++i) {
    int32_t next = argmax(logits, info.vocab);
    generated.push_back(next);
    std::printf(i ? ",%d" : "%d", next);
    std::fflush(stdout);
    // The last token's logits are needed only for the dump.
    if (i + 1 < n_predict || dump)
      logits = session.append(&next, 1, sink);
  }
  std::printf("\n");
  if (dump && !phimoe_rt::write_npy(dump_path, all_logits.data(),
                                    static_cast<int64_t>(all_logits.size() / info.vocab),
                                    info.vocab, error))
    return fail(error);
  return 0;
}
