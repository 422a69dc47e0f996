// check.h - PHIMOE_CUDA_CHECK: every CUDA runtime call and kernel launch is checked.
#ifndef PHIMOE_CUDA_CHECK_H
#define PHIMOE_CUDA_CHECK_H

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace phimoe_cuda {

// Thrown for any failed CUDA call: "file:line: call: error string".
[[noreturn]] inline void cuda_failed(cudaError_t error, const char *call, const char *file,
                                     int line) {
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call +
                           ": " + cudaGetErrorName(error) + ": " + cudaGetErrorString(error));
}

} // namespace phimoe_cuda

// Evaluates a cudaError_t expression and throws (cuda_failed) when it is not cudaSuccess.
#define PHIMOE_CUDA_CHECK(call)                                                               \
  do {                                                                                        \
    cudaError_t phimoe_cuda_error_ = (call);                                                  \
    if (phimoe_cuda_error_ != cudaSuccess)                                                    \
      ::phimoe_cuda::cuda_failed(phimoe_cuda_error_, #call, __FILE__, __LINE__);              \
  } while (0)

// After a <<<...>>> launch: the launch's own error (bad configuration, no kernel image for
// this device). Errors of the running kernel surface at the next synchronising call. (With
// PHIMOE_CUDA_PROFILE, it also records the event that ends the kernel's span: profile.h.)
#define PHIMOE_CUDA_CHECK_LAUNCH()                                                            \
  do {                                                                                        \
    ::phimoe_cuda::profile::end();                                                            \
    PHIMOE_CUDA_CHECK(cudaGetLastError());                                                    \
  } while (0)

#include "phimoe_cuda/profile.h"

#endif // PHIMOE_CUDA_CHECK_H
