// main.cpp - phimoe-bin of a CPU build: the command line of every build (phimoe_rt/cli.h) over
// phimoe_rt::Session, served by the continuous-batching engine.
#include "phimoe_rt/batch.h"
#include "phimoe_rt/cli.h"
#include "phimoe_rt/model.h"
#include "phimoe_rt/server.h"
#include "phimoe_rt/session.h"

int main(int argc, char **argv) {
  using namespace phimoe_rt;
  Backend backend;
  backend.name = "CPU";
  backend.threaded = true;
  backend.make_session = [](const ModelInfo &info, const uint8_t *weights, int threads,
                            int capacity) -> std::unique_ptr<ModelSession> {
    return std::make_unique<Session>(info, weights, threads, capacity);
  };
  backend.serve = [](const ModelInfo &info, const uint8_t *weights, const Tokenizer &tokenizer,
                     const ServerOptions &options) {
    return run_server(info, tokenizer, options, [&](const BatchOptions &batch) {
      return std::unique_ptr<Engine>(new BatchEngine(info, weights, tokenizer, batch));
    });
  };
  return run_cli(argc, argv, phimoe_model_info, backend);
}
