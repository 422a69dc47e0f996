// cli.h - phimoe-bin's command line, one for every build: a build's main() says how its
// sessions are made and how it serves (CPU: runtime/cli/main.cpp; CUDA: runtime/cuda/main.cpp),
// run_cli does the rest (runtime/cli/cli.cpp).
#ifndef PHIMOE_RT_CLI_H
#define PHIMOE_RT_CLI_H

#include "phimoe_rt/model_session.h"
#include "phimoe_rt/runtime.h"
#include "phimoe_rt/server.h"
#include "phimoe_rt/tokenizer.h"

#include <functional>
#include <memory>
#include <string>

namespace phimoe_rt {

struct Backend {
  // Named in --help and in errors ("CPU", "CUDA").
  std::string name;
  // Whether -t/--threads sizes the compute (a CUDA build accepts it and ignores it).
  bool threaded = true;
  // Whether the weights are read into memory of the process's own by default (a CPU build:
  // on 2 MiB pages its decode is faster), else mapped from the file (a CUDA build, which
  // uploads them to the device once). --mmap and --no-mmap override it.
  bool read_weights = true;
  // A session of `capacity` positions over the weight pack's data (host memory).
  // Throws std::exception when the device cannot be used (e.g. no CUDA device).
  std::function<std::unique_ptr<ModelSession>(const ModelInfo &info, const uint8_t *weights,
                                              int threads, int capacity)>
      make_session;
  // `phimoe-bin serve`; returns the exit code. Empty: serve is refused with `no_serve`.
  std::function<int(const ModelInfo &info, const uint8_t *weights, const Tokenizer &tokenizer,
                    const ServerOptions &options)>
      serve;
  std::string no_serve;
};

// Parses the command line and runs it; returns the process exit code. Nothing touches the
// backend's device before it is needed: --help, tokenize and detokenize never do.
int run_cli(int argc, char **argv, const ModelInfo &info, const Backend &backend);

} // namespace phimoe_rt

#endif // PHIMOE_RT_CLI_H
