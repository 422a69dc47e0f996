// test_util.h - helpers shared by the runtime unit tests: random data, weight storage, contexts.
#ifndef PHIMOE_RT_TEST_UTIL_H
#define PHIMOE_RT_TEST_UTIL_H

#include "phimoe_rt/kernels.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace phimoe_rt_test {

using phimoe_rt::bf16;
using phimoe_rt::f16;

// Unit roundoff of float: 2^-24.
constexpr double kFloatU = 1.0 / (1 << 24);

// n samples of N(mean, sd); an exact zero (which never comes in practice) is redrawn, so
// tests never run on zeros by accident.
inline std::vector<float> random_floats(std::mt19937 &rng, size_t n, float sd = 1.0f,
                                        float mean = 0.0f) {
  std::normal_distribution<float> dist(mean, sd);
  std::vector<float> v(n);
  for (float &x : v) {
    do
      x = dist(rng);
    while (x == 0.0f);
  }
  return v;
}

// Storage of a float as weight type W (round to nearest even), and a stored weight's exact value.
template <class W> W store(float x);
template <> inline float store<float>(float x) { return x; }
template <> inline bf16 store<bf16>(float x) { return phimoe_rt::float_to_bf16(x); }
template <> inline f16 store<f16>(float x) { return phimoe_rt::float_to_f16(x); }

template <class W> std::vector<W> to_weights(const std::vector<float> &v) {
  std::vector<W> w(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    w[i] = store<W>(v[i]);
  return w;
}

template <class W> double value(const W &w) { return static_cast<double>(phimoe_rt::to_float(w)); }

// Random weights of type W and their exact stored values as double.
template <class W> struct Weights {
  std::vector<W> stored;
  std::vector<double> exact;
  Weights() = default;
  explicit Weights(const std::vector<float> &v) : stored(to_weights<W>(v)), exact(v.size()) {
    for (size_t i = 0; i < v.size(); ++i)
      exact[i] = value(stored[i]);
  }
  const W *data() const { return stored.data(); }
};

// A pool, scratch sized as scratch_floats() says (filled with nan, so that a kernel reading
// scratch it did not write shows up), a KV cache and the Context over them.
struct TestContext {
  phimoe_rt::ThreadPool pool;
  std::vector<float> scratch;
  phimoe_rt::KVCache cache;
  phimoe_rt::Context ctx;

  TestContext(int threads, int capacity = 0, int hidden = 0, int intermediate = 0,
              int experts = 0)
      : pool(threads) {
    const size_t stride = phimoe_rt::scratch_floats(capacity, hidden, intermediate, experts);
    scratch.assign(stride * static_cast<size_t>(pool.size()),
                   std::numeric_limits<float>::quiet_NaN());
    ctx.pool = &pool;
    ctx.cache = &cache;
    ctx.scratch = scratch.data();
    ctx.scratch_stride = stride;
  }
};

// Bitwise equality of two float vectors (nan-safe, -0 distinct from +0).
inline bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0)
      return false;
  return true;
}

// gtest type names for typed tests over the weight types.
struct WeightTypeName {
  template <class T> static std::string GetName(int) {
    if (std::is_same<T, float>::value)
      return "f32";
    if (std::is_same<T, bf16>::value)
      return "bf16";
    return "f16";
  }
};

} // namespace phimoe_rt_test

#endif // PHIMOE_RT_TEST_UTIL_H
