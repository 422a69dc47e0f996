// membw.c - this machine's memory bandwidth: read (sum of a large array) and copy (memcpy), each
// the best of N passes over SIZE bytes, with T OpenMP threads, every thread on its own slice.
//
//   cc -O3 -march=native -fopenmp -ffast-math bench/membw.c -o membw
//   ./membw [SIZE_MIB=2048] [PASSES=5]       (threads: OMP_NUM_THREADS)
//
// Prints one JSON object: read_gbs, copy_gbs (copy counts bytes read + bytes written), in GB/s
// (1e9 bytes per second). Pages are touched before timing.
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 2048;
  int passes = argc > 2 ? atoi(argv[2]) : 5;
  size_t bytes = mib << 20, n = bytes / sizeof(float);
  float *a = aligned_alloc(4096, bytes), *b = aligned_alloc(4096, bytes);
  if (!a || !b) {
    fprintf(stderr, "membw: cannot allocate 2 x %zu MiB\n", mib);
    return 1;
  }
  int threads = omp_get_max_threads();
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    a[i] = (float)(i & 1023) * 0.5f;
    b[i] = 0.0f;
  }
  double best_read = 0, best_copy = 0, sink = 0;
  for (int p = 0; p < passes; ++p) {
    double t0 = now(), total = 0;
#pragma omp parallel reduction(+ : total)
    {
      int t = omp_get_thread_num(), nt = omp_get_num_threads();
      size_t lo = n / nt * t, hi = t == nt - 1 ? n : n / nt * (t + 1);
      float acc[16] = {0};
      for (size_t i = lo; i + 16 <= hi; i += 16)
        for (int k = 0; k < 16; ++k)
          acc[k] += a[i + k];
      for (int k = 0; k < 16; ++k)
        total += acc[k];
    }
    double t1 = now();
    sink += total;
    double gbs = bytes / (t1 - t0) / 1e9;
    if (gbs > best_read)
      best_read = gbs;

    t0 = now();
#pragma omp parallel
    {
      int t = omp_get_thread_num(), nt = omp_get_num_threads();
      size_t lo = n / nt * t, hi = t == nt - 1 ? n : n / nt * (t + 1);
      memcpy(b + lo, a + lo, (hi - lo) * sizeof(float));
    }
    t1 = now();
    sink += b[n / 3];
    gbs = 2.0 * bytes / (t1 - t0) / 1e9;
    if (gbs > best_copy)
      best_copy = gbs;
  }
  printf("{\"threads\": %d, \"size_mib\": %zu, \"passes\": %d, \"read_gbs\": %.3f, "
         "\"copy_gbs\": %.3f, \"checksum\": %.1f}\n",
         threads, mib, passes, best_read, best_copy, sink);
  free(a);
  free(b);
  return 0;
}
