// main.cpp - phimoe-bin of a CUDA build (--target sm_XX): the command line of every build
// (phimoe_rt/cli.h) over phimoe_cuda::Session. Nothing calls CUDA before a command needs the
// model: --help, tokenize and detokenize work where no GPU is.
#include "phimoe_cuda/model.h"
#include "phimoe_cuda/session.h"
#include "phimoe_rt/cli.h"

#include <cuda_runtime_api.h>

#include <memory>
#include <stdexcept>
#include <string>

namespace {

std::unique_ptr<phimoe_rt::ModelSession> make_session(const phimoe_rt::ModelInfo &info,
                                                      const uint8_t *weights, int /*threads*/,
                                                      int capacity) {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("no CUDA device: cudaGetDeviceCount: ") +
                             cudaGetErrorString(status));
  if (devices == 0)
    throw std::runtime_error("no CUDA device: cudaGetDeviceCount found none");
  return std::make_unique<phimoe_cuda::Session>(info, weights, capacity);
}

} // namespace

int main(int argc, char **argv) {
  phimoe_rt::Backend backend;
  backend.name = "CUDA";
  backend.threaded = false;
  backend.make_session = make_session;
  backend.no_serve = "this CUDA build has no server yet (serve needs the CPU's batched "
                     "forward over a paged KV cache); compile for --target cpu to serve";
  return phimoe_rt::run_cli(argc, argv, phimoe_model_info, backend);
}
