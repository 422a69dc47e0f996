// server.h - phimoe-bin serve: an OpenAI-compatible HTTP server over an Engine (batch.h).
#ifndef PHIMOE_RT_SERVER_H
#define PHIMOE_RT_SERVER_H

#include "phimoe_rt/runtime.h"
#include "phimoe_rt/tokenizer.h"

#include <functional>
#include <memory>
#include <string>

namespace phimoe_rt {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;     // 0: any free port (printed when listening)
  std::string api_key; // empty: no authentication
  std::string model = "phimoe"; // the id /v1/models lists and requests name
  int parallel = 4;    // sequences that decode together
  int ctx_size = 4096; // positions per sequence
  int queue_size = 64; // waiting requests beyond which requests get 503
  int threads = 1;     // compute threads
  int block_size = 16; // KV positions per block
  int kv_blocks = 0;   // KV blocks in all (0: parallel * ctx_size / block_size)
  int step_delay_ms = 0; // pause after each batched step (emulates a slower model: tests)
};

class Engine;
struct BatchOptions;
// Makes the engine requests go to (a BatchEngine, a SessionEngine), from the server's options.
using EngineFactory = std::function<std::unique_ptr<Engine>(const BatchOptions &)>;

// Serves until SIGINT or SIGTERM; returns the process exit code. Prints
// "phimoe-bin: listening on http://HOST:PORT" to stderr once it accepts connections.
int run_server(const ModelInfo &info, const Tokenizer &tokenizer, const ServerOptions &options,
               const EngineFactory &make_engine);

} // namespace phimoe_rt

#endif // PHIMOE_RT_SERVER_H
