// main.cpp - phimoe-bin of a CUDA build (--target sm_XX): the command line of every build
// (phimoe_rt/cli.h) over phimoe_cuda::Session. serve batches --parallel sequences over a paged
// KV cache (BatchEngine over phimoe_cuda::BatchBackend), or with --parallel 1 runs one at a time
// on a Session (SessionEngine: decode through CUDA graphs, the cache of a chat's common prefix
// kept). Nothing calls CUDA before a command needs the model: --help, tokenize and detokenize
// work where no GPU is.
#include "phimoe_cuda/model.h"
#include "phimoe_cuda/session.h"
#include "phimoe_rt/cli.h"
#ifndef PHIMOE_NO_SERVER
#include "phimoe_cuda/batch.h"
#include "phimoe_rt/batch.h"
#endif

#include <cuda_runtime_api.h>

#include <memory>
#include <stdexcept>
#include <string>

namespace {

// Throws when there is no CUDA device to run on.
void require_device() {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("no CUDA device: cudaGetDeviceCount: ") +
                             cudaGetErrorString(status));
  if (devices == 0)
    throw std::runtime_error("no CUDA device: cudaGetDeviceCount found none");
}

std::unique_ptr<phimoe_rt::ModelSession> make_session(const phimoe_rt::ModelInfo &info,
                                                      const uint8_t *weights, int /*threads*/,
                                                      int capacity) {
  require_device();
  return std::make_unique<phimoe_cuda::Session>(info, weights, capacity);
}

} // namespace

int main(int argc, char **argv) {
  using namespace phimoe_rt;
  Backend backend;
  backend.name = "CUDA";
  backend.threaded = false;
  backend.read_weights = false; // uploaded to the device once: mapping reads them as well
  backend.make_session = make_session;
#ifdef PHIMOE_NO_SERVER
  // Without serve the binary needs no shared library beyond libc and libstdc++.
  backend.no_serve = "this CUDA phimoe-bin was built without serve, which would make it need "
                     "libcpp-httplib where it runs: compile it with `phimoec compile ... "
                     "--serve`, or configure its --emit-project project with -DPHIMOE_SERVE=ON";
#else
  backend.serve = [](const ModelInfo &info, const uint8_t *weights, const Tokenizer &tokenizer,
                     const ServerOptions &options) {
    // The device is first used by the engine factory, inside run_server: after the server
    // has blocked SIGINT/SIGTERM, so that no thread the CUDA runtime starts takes them.
    return run_server(info, tokenizer, options, [&](const BatchOptions &batch) {
      if (batch.parallel == 1)
        return std::unique_ptr<Engine>(new SessionEngine(
            make_session(info, weights, 1, options.ctx_size), info.vocab, tokenizer, batch));
      phimoe_cuda::BatchBackend::block_shift(batch.block_size); // before the device
      require_device();
      return std::unique_ptr<Engine>(new BatchEngine(
          info, std::make_unique<phimoe_cuda::BatchBackend>(info, weights), tokenizer, batch));
    });
  };
#endif
  return run_cli(argc, argv, phimoe_model_info, backend);
}
