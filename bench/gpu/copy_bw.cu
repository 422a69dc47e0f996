// copy_bw.cu - the GPU's memory bandwidth, the denominator of bench/bench_gpu.py's roofline.
//
//   copy_bw [MIB] [REPS]      (default 2048 MiB, 10 repetitions; prints one JSON line)
//
// Three measurements over a buffer of MIB MiB, each the best of REPS after a warm-up, timed with
// CUDA events: cudaMemcpy device to device and a copy kernel with 16-byte loads and stores (both
// counted as bytes read + bytes written, as STREAM counts a copy), and a read-only kernel (an XOR
// of every 16-byte word, so that no load can be dropped).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#define CHECK(call)                                                                        \
  do {                                                                                     \
    cudaError_t err_ = (call);                                                             \
    if (err_ != cudaSuccess) {                                                             \
      std::fprintf(stderr, "copy_bw: %s failed: %s\n", #call, cudaGetErrorString(err_)); \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)

__global__ void copy_kernel(const uint4 *__restrict__ in, uint4 *__restrict__ out, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    out[i] = in[i];
}

__global__ void read_kernel(const uint4 *__restrict__ in, size_t n, unsigned *sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    uint4 v = in[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) // practically never: keeps the loads without a store per thread
    atomicAdd(sink, 1u);
}

template <typename F> float best_ms(int reps, F &&launch) {
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  launch(); // warm-up
  CHECK(cudaDeviceSynchronize());
  float best = 1e30f;
  for (int r = 0; r < reps; ++r) {
    CHECK(cudaEventRecord(start));
    launch();
    CHECK(cudaEventRecord(stop));
    CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (ms < best)
      best = ms;
  }
  CHECK(cudaGetLastError());
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  return best;
}

int main(int argc, char **argv) {
  const size_t mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 2048;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 10;
  const size_t bytes = mib << 20, n = bytes / sizeof(uint4);
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  uint4 *a = nullptr, *b = nullptr;
  unsigned *sink = nullptr;
  CHECK(cudaMalloc(&a, bytes));
  CHECK(cudaMalloc(&b, bytes));
  CHECK(cudaMalloc(&sink, sizeof(unsigned)));
  CHECK(cudaMemset(a, 0x5a, bytes));
  CHECK(cudaMemset(b, 0, bytes));
  const int threads = 256, blocks = prop.multiProcessorCount * 8;
  const float memcpy_ms = best_ms(reps, [&] {
    CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
  });
  const float copy_ms = best_ms(reps, [&] { copy_kernel<<<blocks, threads>>>(a, b, n); });
  const float read_ms = best_ms(reps, [&] { read_kernel<<<blocks, threads>>>(a, n, sink); });
  std::printf("{\"device\": \"%s\", \"sm_count\": %d, \"global_mem_bytes\": %zu, "
              "\"buffer_bytes\": %zu, \"reps\": %d, \"memcpy_gbs\": %.1f, "
              "\"copy_kernel_gbs\": %.1f, \"read_kernel_gbs\": %.1f}\n",
              prop.name, prop.multiProcessorCount, prop.totalGlobalMem, bytes, reps,
              2.0 * bytes / (memcpy_ms * 1e6), 2.0 * bytes / (copy_ms * 1e6),
              1.0 * bytes / (read_ms * 1e6));
  CHECK(cudaFree(a));
  CHECK(cudaFree(b));
  CHECK(cudaFree(sink));
  return 0;
}
