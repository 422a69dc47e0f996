// quant_test_util.h - helpers of the quantized-kernel tests: random q8_0 / q4_K / q6_K blocks,
// the tests' own decoding of them (from the formats' definitions, independent of the
// runtime's code), the SIMD paths the build has, and a check that the CPU runs them.
#ifndef PHIMOE_RT_QUANT_TEST_UTIL_H
#define PHIMOE_RT_QUANT_TEST_UTIL_H

#include "test_util.h"

#include "phimoe_rt/quant.h"
#include "phimoe_rt/quant_rows16.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace phimoe_rt_test {

using phimoe_rt::block_q4k;
using phimoe_rt::block_q4k_16rows;
using phimoe_rt::block_q4k_x16;
using phimoe_rt::block_q8_0_16rows;
using phimoe_rt::block_q8_0_x16;
using phimoe_rt::block_q6k_16rows;
using phimoe_rt::block_q6k_x16;
using phimoe_rt::block_q6k;
using phimoe_rt::block_q8_0;
using phimoe_rt::block_q8k;

// Whether this CPU has what the build's target macros promise (the variant test binaries
// are built for older targets than -march=native, and skip on CPUs without them).
inline bool cpu_runs_target() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
#if defined(__AVX2__)
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
    return false;
#endif
#if defined(__AVX512BW__)
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw"))
    return false;
#endif
#if defined(__AVX512VNNI__)
  if (!__builtin_cpu_supports("avx512vnni"))
    return false;
#endif
#endif
  return true;
}
// The variant binaries' code may use their target's instructions anywhere, not only in the
// kernels (the compiler vectorizes plain loops too; a test without REQUIRE_TARGET_CPU() died
// of SIGILL in the avx512 binary on an AVX2-only AMD EPYC). So on a CPU without that ISA the
// binary prints gtest's skip marker and exits with kSkipTargetCpu before any test runs, and
// CTest lists its tests as skipped (the marker matches gtest_discover_tests'
// SKIP_REGULAR_EXPRESSION; test/runtime/CMakeLists.txt sets SKIP_RETURN_CODE too).
// GTEST_SKIP() in SetUp would not do: gtest 1.12 then counts every test as passed.
constexpr int kSkipTargetCpu = 77;
class TargetCpuEnvironment : public ::testing::Environment {
public:
  void SetUp() override {
    if (!cpu_runs_target()) {
      std::printf("[  SKIPPED ] this CPU lacks the build's target ISA\n");
      std::fflush(nullptr);
      std::_Exit(kSkipTargetCpu);
    }
  }
};
inline ::testing::Environment *const kTargetCpuEnvironment =
    ::testing::AddGlobalTestEnvironment(new TargetCpuEnvironment);

#define REQUIRE_TARGET_CPU()                                                                   \
  do {                                                                                         \
    if (!cpu_runs_target())                                                                    \
      GTEST_SKIP() << "this CPU lacks the build's target ISA";                                 \
  } while (0)

// ---- f16 values -------------------------------------------------------------------------

inline double half_value(uint16_t h) { return static_cast<double>(phimoe_rt::f16_to_float(h)); }
inline uint16_t half_bits(float x) { return phimoe_rt::float_to_f16(x).bits; }

// A positive f16 scale of about `mean` (within a factor of 2).
inline uint16_t random_scale(std::mt19937 &rng, float mean) {
  std::uniform_real_distribution<float> d(0.5f * mean, 1.5f * mean);
  return half_bits(d(rng));
}

// ---- random blocks (every byte pattern the formats allow) -----------------------------------

// q8_0 weights: any int8 (-128 included), scale about `scale`.
inline std::vector<block_q8_0> random_q8_0(std::mt19937 &rng, size_t blocks, float scale) {
  std::uniform_int_distribution<int> q(-128, 127);
  std::vector<block_q8_0> v(blocks);
  for (auto &b : v) {
    b.d = random_scale(rng, scale);
    for (auto &x : b.qs)
      x = static_cast<int8_t>(q(rng));
  }
  return v;
}

inline std::vector<block_q4k> random_q4k(std::mt19937 &rng, size_t blocks, float scale) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<block_q4k> v(blocks);
  for (auto &b : v) {
    b.d = random_scale(rng, scale / 32); // sub-block scales are 6-bit (0..63)
    b.dmin = random_scale(rng, scale / 8);
    for (auto &x : b.scales)
      x = static_cast<uint8_t>(byte(rng));
    for (auto &x : b.qs)
      x = static_cast<uint8_t>(byte(rng));
  }
  return v;
}

inline std::vector<block_q6k> random_q6k(std::mt19937 &rng, size_t blocks, float scale) {
  std::uniform_int_distribution<int> byte(0, 255), sc(-128, 127);
  std::vector<block_q6k> v(blocks);
  for (auto &b : v) {
    b.d = random_scale(rng, scale / 64 / 32);
    for (auto &x : b.ql)
      x = static_cast<uint8_t>(byte(rng));
    for (auto &x : b.qh)
      x = static_cast<uint8_t>(byte(rng));
    for (auto &x : b.scales)
      x = static_cast<int8_t>(sc(rng));
  }
  return v;
}

template <class W> std::vector<W> random_blocks(std::mt19937 &rng, size_t blocks, float scale);
template <> inline std::vector<block_q8_0> random_blocks(std::mt19937 &rng, size_t b, float s) {
  return random_q8_0(rng, b, s);
}
template <> inline std::vector<block_q4k> random_blocks(std::mt19937 &rng, size_t b, float s) {
  return random_q4k(rng, b, s);
}
template <> inline std::vector<block_q6k> random_blocks(std::mt19937 &rng, size_t b, float s) {
  return random_q6k(rng, b, s);
}

// The interleaved element types (groups of 16 rows): their plain block, their group and the
// runtime's (de)interleaving of nb blocks of 16 rows.
template <class W> struct Interleaved {
  static constexpr bool kIs = false;
};
template <class Block, class Group, void (*In)(const Block *, int64_t, Group *),
          void (*Out)(const Group *, int64_t, Block *)>
struct InterleavedAs {
  static constexpr bool kIs = true;
  using B = Block;
  using G = Group;
  static void in(const B *rows, int64_t nb, G *out) { In(rows, nb, out); }
  static void out(const G *g, int64_t nb, B *rows) { Out(g, nb, rows); }
};
template <>
struct Interleaved<block_q4k_x16>
    : InterleavedAs<block_q4k, block_q4k_16rows, phimoe_rt::interleave_q4k16,
                    phimoe_rt::deinterleave_q4k16> {};
template <>
struct Interleaved<block_q8_0_x16>
    : InterleavedAs<block_q8_0, block_q8_0_16rows, phimoe_rt::interleave_q8_016,
                    phimoe_rt::deinterleave_q8_016> {};
template <>
struct Interleaved<block_q6k_x16>
    : InterleavedAs<block_q6k, block_q6k_16rows, phimoe_rt::interleave_q6k16,
                    phimoe_rt::deinterleave_q6k16> {};

// Random plain blocks as interleaved ones: each 16 blocks make one super-block of a group (any
// 16 blocks are 16 rows of one super-block), so their count must be a multiple of 16.
template <class W> std::vector<W> interleaved(const std::vector<typename Interleaved<W>::B> &plain) {
  std::vector<W> v(plain.size());
  for (size_t i = 0; i < plain.size() / 16; ++i)
    Interleaved<W>::in(plain.data() + 16 * i, 1,
                       reinterpret_cast<typename Interleaved<W>::G *>(v.data()) + i);
  return v;
}
template <> inline std::vector<block_q4k_x16> random_blocks(std::mt19937 &rng, size_t b, float s) {
  return interleaved<block_q4k_x16>(random_q4k(rng, b, s));
}
template <> inline std::vector<block_q8_0_x16> random_blocks(std::mt19937 &rng, size_t b, float s) {
  return interleaved<block_q8_0_x16>(random_q8_0(rng, b, s));
}
template <> inline std::vector<block_q6k_x16> random_blocks(std::mt19937 &rng, size_t b, float s) {
  return interleaved<block_q6k_x16>(random_q6k(rng, b, s));
}

template <class W> constexpr int block_values() {
  return std::is_same<W, block_q8_0>::value || std::is_same<W, block_q8_0_x16>::value ? 32 : 256;
}

// ---- the tests' decoding: integer parts of each value ---------------------------------------

// A weight value as integers: value = d * a * q - dmin * m (q4_K), d * a * q (q8_0: a = 1;
// q6_K: q already minus 32).
struct IntWeight {
  double d, dmin;
  int a, q, m;
  double value() const { return d * a * q - dmin * m; }
  double magnitude() const { return std::fabs(d * a * q) + std::fabs(dmin * m); }
};

inline IntWeight decode(const block_q8_0 &b, int i) {
  return IntWeight{half_value(b.d), 0.0, 1, b.qs[i], 0};
}

// llama.cpp's packing of the 6-bit scales and mins of q4_K sub-block j, as its format
// defines it (first four: low 6 bits of bytes j and j+4; last four: a nibble of byte j+4
// plus the top two bits of bytes j-4 and j).
inline void q4k_scale_min(const uint8_t *s, int j, int *sc, int *m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Value i (0..255): sub-block j = i / 32 holds low nibbles of qs[32 (j/2) ..] for even j and
// high nibbles for odd j.
inline IntWeight decode(const block_q4k &b, int i) {
  const int j = i / 32, l = i % 32;
  int sc, m;
  q4k_scale_min(b.scales, j, &sc, &m);
  const uint8_t byte = b.qs[32 * (j / 2) + l];
  return IntWeight{half_value(b.d), half_value(b.dmin), sc, j % 2 ? byte >> 4 : byte & 15, m};
}

// Value i (0..255): half h = i / 128; within it, quarter k = (i % 128) / 32 and lane l: the
// low 4 bits are nibble (k / 2) of ql[64 h + 32 (k % 2) + l], the top 2 bits are bits 2k, 2k+1
// of qh[32 h + l]; scale scales[i / 16]; q - 32.
inline IntWeight decode(const block_q6k &b, int i) {
  const int h = i / 128, k = (i % 128) / 32, l = i % 32;
  const uint8_t lo = b.ql[64 * h + 32 * (k % 2) + l], hi = b.qh[32 * h + l];
  const int q = ((k / 2 ? lo >> 4 : lo & 15) | (((hi >> (2 * k)) & 3) << 4)) - 32;
  return IntWeight{half_value(b.d), 0.0, b.scales[i / 16], q, 0};
}

// Weight row r of a [rows, k] matrix of blocks, value i (of an interleaved matrix: the row's
// block gathered from its group).
template <class W> IntWeight decode_at(const std::vector<W> &w, int k, int r, int i) {
  const int per = block_values<W>();
  if constexpr (Interleaved<W>::kIs) {
    const auto *g = reinterpret_cast<const typename Interleaved<W>::G *>(w.data()) +
                    static_cast<size_t>(r / 16) * (k / per) + i / per;
    typename Interleaved<W>::B rows[16];
    Interleaved<W>::out(g, 1, rows);
    return decode(rows[r % 16], i % per);
  } else {
    return decode(w[static_cast<size_t>(r) * (k / per) + i / per], i % per);
  }
}

// The dequantized [rows, k] matrix in double.
template <class W> std::vector<double> dequantized(const std::vector<W> &w, int rows, int k) {
  std::vector<double> out(static_cast<size_t>(rows) * k);
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < k; ++i)
      out[static_cast<size_t>(r) * k + i] = decode_at(w, k, r, i).value();
  return out;
}

// |scaled part| + |min part| of each weight (the scale of the rounding error of a kernel that
// computes the two parts separately).
template <class W> std::vector<double> magnitudes(const std::vector<W> &w, int rows, int k) {
  std::vector<double> out(static_cast<size_t>(rows) * k);
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < k; ++i)
      out[static_cast<size_t>(r) * k + i] = decode_at(w, k, r, i).magnitude();
  return out;
}

// ---- activations ----------------------------------------------------------------------------

// A row of k activations quantized by the scalar reference, and its values in double.
template <class W> struct QuantRow {
  std::vector<uint8_t> bytes;
  std::vector<double> value;
  std::vector<double> half_step; // amax / 254 of each value's block: the rounding bound
};

template <class W> QuantRow<W> quantize_row(const float *x, int k) {
  namespace qk = phimoe_rt::qk;
  QuantRow<W> q;
  q.bytes.resize(qk::format<W>::act_bytes(k));
  qk::format<W>::template quantize<qk::Scalar>(x, k, q.bytes.data());
  q.value.resize(k);
  q.half_step.resize(k);
  for (int i = 0; i < k; ++i) {
    double d;
    int v;
    if constexpr (std::is_same<W, block_q8_0>::value || std::is_same<W, block_q8_0_x16>::value) {
      d = reinterpret_cast<const float *>(q.bytes.data() + k)[i / 32];
      v = reinterpret_cast<const int8_t *>(q.bytes.data())[i];
    } else {
      const auto *b = reinterpret_cast<const block_q8k *>(q.bytes.data()) + i / 256;
      d = b->d;
      v = b->qs[i % 256];
    }
    q.value[i] = d * v;
    q.half_step[i] = d / 2 * (1 + 1e-6); // d = amax / 127, rounded
  }
  return q;
}

// A TestContext with Context::qbuf for `rows` rows of at most widest_k values and, for a MoE
// (intermediate > 0), Context::work, sized as the runtime sizes them and filled with garbage
// (a kernel that reads bytes it did not write shows up).
struct QuantContext : TestContext {
  std::vector<uint8_t> qbuf, work;
  QuantContext(int threads, int rows, int widest_k, int hidden = 0, int intermediate = 0,
               int experts = 0)
      : TestContext(threads, 0, hidden, intermediate, experts) {
    qbuf.assign(phimoe_rt::qbuf_bytes_for(rows, widest_k), 0xA5);
    ctx.qbuf = qbuf.data();
    ctx.qbuf_bytes = qbuf.size();
    if (intermediate > 0) {
      work.assign(phimoe_rt::moe_work_bytes(rows, intermediate, experts), 0xA5);
      ctx.work = work.data();
      ctx.work_bytes = work.size();
    }
  }
};

// gtest names of the weight block types and of the SIMD paths.
struct BlockName {
  template <class T> static std::string GetName(int) {
    if (std::is_same<T, block_q8_0>::value)
      return "q8_0";
    if (std::is_same<T, block_q4k>::value)
      return "q4k";
    if (std::is_same<T, block_q4k_x16>::value)
      return "q4k_x16";
    if (std::is_same<T, block_q8_0_x16>::value)
      return "q8_0_x16";
    if (std::is_same<T, block_q6k_x16>::value)
      return "q6k_x16";
    return "q6k";
  }
};
struct PathName {
  template <class P> static std::string GetName(int) { return P::kName; }
};

} // namespace phimoe_rt_test

#endif // PHIMOE_RT_QUANT_TEST_UTIL_H
