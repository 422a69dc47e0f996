// attention_tc.cuh - causal GQA attention of a prefill chunk on tensor cores (flash attention:
// one pass over the cached keys and values with an online softmax, nothing of size P x P in
// memory). Included by kernels.cuh after gemm_tc.cuh; attention() takes it for chunks of at
// least kFaMinRows rows when the head dimension is a multiple of 16 up to 128 (in serve's
// batches, for runs of that many rows of one sequence: KvPages::runs), and the SIMT
// flash-decoding kernels otherwise (decode, short chunks).
//
// Block: 64 query rows of one query head, 4 warps of 16 rows. For each tile of 32 cached
// positions, the keys and values are staged in shared memory as bf16 terms (x split in three,
// tc_split of gemm_tc.cuh: x = x0 + x1 + x2 to 2^-27 relative); each warp computes its scores
// S = q . k^T with mma.sync m16n8k16 (the products of terms i . j with i + j < 3), scales and
// masks them (positions outside [max(0, p - window + 1), p] of each row), updates the running
// max and sum of every row and rescales its output, then adds P . V with P (in [0, 1]) split
// the same way. The accumulator fragments of S are, pair by pair, the A fragments of P (the
// PTX layouts of m16n8 accumulators and m16k16 A operands line up), so P never leaves the
// registers.
// Precision: float32 accumulation of products to about 2^-24 relative, as the SIMT kernels
// (kernels_test.cu: within 1e-5 of a double reference, typically 1e-7). Two terms, as the
// GEMMs take x, left the products at 2^-17: a score's error then moves its weight by as much,
// and outputs (a numpy model of that arithmetic, and kernels_test on other inputs) reached 2e-5
// of the output's scale. The cost: twice the MMAs here, where a Phi-3.5-MoE prefill does about
// 1% of its multiply-adds at 512 tokens and 4% at 2048 (the GEMMs' x in two terms), so about
// 1.5% and 6% more tensor-core work in all.
#ifndef PHIMOE_CUDA_ATTENTION_TC_CUH
#define PHIMOE_CUDA_ATTENTION_TC_CUH

namespace phimoe_cuda {
namespace detail {

constexpr int kFaRows = 64;    // query rows of a block
constexpr int kFaKv = 32;      // cached positions per step
constexpr int kFaThreads = 128;
constexpr int kFaMinRows = 64; // shorter chunks: the split SIMT kernels (more blocks)
constexpr int kFaBatch = 4;    // quads of keys and of values a thread has in flight
constexpr int kFaTerms = 3;    // bf16 terms of every operand

template <int D> __host__ __device__ constexpr bool fa_supported() {
  return D % 16 == 0 && D >= 16 && D <= 128;
}

// Keys as rows of D (B operand of S: pairs along d), values transposed (B operand of P . V:
// pairs along positions), a plane per term; 8 bf16 of padding a row against bank conflicts of
// the pair loads. (Dynamic shared memory: 57 KiB for D = 128.)
template <int D> struct FaShared {
  uint16_t k[kFaTerms][kFaKv][D + 8];
  uint16_t vt[kFaTerms][D][kFaKv + 8];
  int lo[kFaRows], hi[kFaRows]; // positions [lo, hi] of each row (hi < lo: none)
  int range[2];                 // the block's positions: [range[0], range[1])
  int slot[kFaKv];              // paged: the cache rows of the step's positions (-1: none)
};

__device__ __forceinline__ uint32_t fa_pair(uint16_t a, uint16_t b) {
  return a | static_cast<uint32_t>(b) << 16;
}
__device__ __forceinline__ uint32_t fa_load_pair(const uint16_t *p) {
  return fa_pair(p[0], p[1]);
}
// acc += A . B with both in kFaTerms terms: the products of A's term i and B's term j for
// i + j < kFaTerms, smallest first (the others lie below 2^-24 of the product). A's fragments
// a[i]; B's term j has its pairs along the shared row `row` of plane b[j] (registers at col
// and col + 8).
template <class Plane>
__device__ __forceinline__ void fa_mma(float (&acc)[4], const uint32_t (&a)[kFaTerms][4],
                                       const Plane (&b)[kFaTerms], int row, int col) {
  uint32_t bf[kFaTerms][2];
#pragma unroll
  for (int j = 0; j < kFaTerms; ++j) {
    bf[j][0] = fa_load_pair(b[j][row] + col);
    bf[j][1] = fa_load_pair(b[j][row] + col + 8);
  }
#pragma unroll
  for (int sum = kFaTerms - 1; sum >= 0; --sum)
#pragma unroll
    for (int i = 0; i <= sum; ++i)
      tc_mma(acc, a[i], bf[sum - i]);
}

// out[t][h] for rows t0 .. t0 + 63 of the chunk and query head blockIdx.y. Over a paged cache
// (pages.block_table), every row of the launch belongs to row 0's sequence, and a row whose
// window [lo, p] has a position without a block gives nan.
template <int Hq, int Hkv, int D>
__global__ void __launch_bounds__(kFaThreads)
    attention_tc_kernel(const float *q, int n, const int32_t *pos, int layer, int capacity,
                        KvPages pages, const float *k_cache, const float *v_cache, float scale,
                        int window, float *out) {
  PHIMOE_CUDA_DYNAMIC_SHARED(float, fa_shared); // sizeof(FaShared<D>)
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  static_assert(fa_supported<D>(), "attention_tc: head dimension");
  constexpr int KS = D / 16, ND = D / 8;
  FaShared<D> &s = *reinterpret_cast<FaShared<D> *>(fa_shared);
  const int t0 = blockIdx.x * kFaRows, h = blockIdx.y, kvh = h / (Hq / Hkv);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, qd = lane & 3;

  // Each row's positions, and the block's.
  if (threadIdx.x < kFaRows) {
    const int t = t0 + threadIdx.x;
    const int p = t < n ? pos[t] : -1;
    const int lo = window > 0 ? max(0, p - window + 1) : 0;
    const bool valid = kv_slot(pages, capacity, 0, p) >= 0 &&
                       (!pages.block_table || window_mapped(pages, capacity, 0, lo, p, 0, 1));
    s.lo[threadIdx.x] = valid ? lo : 1;
    s.hi[threadIdx.x] = valid ? p : 0;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int lo = capacity, hi = 0;
    for (int r = 0; r < kFaRows; ++r)
      if (s.hi[r] >= s.lo[r]) {
        lo = min(lo, s.lo[r]);
        hi = max(hi, s.hi[r] + 1);
      }
    s.range[0] = lo;
    s.range[1] = hi;
  }

  // The warp's 16 query rows as A fragments, a set per term: row g + 8 (j & 1), d = ks * 16 +
  // 2 qd + 8 (j >> 1) and the next.
  uint32_t qa[KS][kFaTerms][4];
#pragma unroll
  for (int ks = 0; ks < KS; ++ks)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int t = t0 + warp * 16 + g + 8 * (j & 1), d = ks * 16 + 2 * qd + 8 * (j >> 1);
      uint16_t a[kFaTerms] = {}, b[kFaTerms] = {};
      if (t < n) {
        const float *src = q + (static_cast<size_t>(t) * Hq + h) * D + d;
        tc_split<kFaTerms>(src[0], a);
        tc_split<kFaTerms>(src[1], b);
      }
#pragma unroll
      for (int i = 0; i < kFaTerms; ++i)
        qa[ks][i][j] = fa_pair(a[i], b[i]);
    }
  // Two rows a lane (r = 0: g, r = 1: g + 8): running max, this lane's share of the sum, and
  // the output accumulators (tile nd, element c: row g + 8 (c >> 1), d = nd * 8 + 2 qd + c % 2).
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  float o[ND][4];
#pragma unroll
  for (int nd = 0; nd < ND; ++nd)
#pragma unroll
    for (int c = 0; c < 4; ++c)
      o[nd][c] = 0.0f;
  __syncthreads();
  const int begin = s.range[0], end = s.range[1];
  const size_t layer_base = static_cast<size_t>(layer) * capacity;
  // A thread's 16-byte quads of keys (and of values) per step of kFaKv positions.
  constexpr int kQuads = kFaKv * D / 4 / kFaThreads;
  static_assert(kFaKv * D / 4 % kFaThreads == 0, "attention_tc: whole quads a thread");

  for (int j0 = begin; j0 < end; j0 += kFaKv) {
    __syncthreads(); // the previous step's tiles are read
    if (pages.block_table) { // (uniform) where the step's positions lie, once a position
      const int j = j0 + static_cast<int>(threadIdx.x);
      if (threadIdx.x < kFaKv)
        s.slot[threadIdx.x] = j < end ? kv_slot(pages, capacity, 0, j) : -1;
      __syncthreads();
    }
    // The step's keys and values, 4 consecutive d a 16-byte load, in batches of kFaBatch
    // quads of each whose loads are all issued before their splits and stores (a value at a
    // time, a thread's D / 4 loads of a step waited one after another).
#pragma unroll
    for (int c0 = 0; c0 < kQuads; c0 += kFaBatch) {
      Words kq[kFaBatch], vq[kFaBatch];
#pragma unroll
      for (int c = 0; c < kFaBatch; ++c) {
        if (c0 + c >= kQuads)
          break;
        const int i = static_cast<int>(threadIdx.x) + (c0 + c) * kFaThreads;
        const int pp = i / (D / 4), d = 4 * (i % (D / 4)), j = j0 + pp;
        const int slot = pages.block_table ? s.slot[pp] : (j < end ? j : -1);
        kq[c] = vq[c] = Words{{0u, 0u, 0u, 0u}};
        if (slot >= 0) {
          const size_t at = ((layer_base + slot) * Hkv + kvh) * D + d;
          kq[c] = load16(k_cache + at);
          vq[c] = load16(v_cache + at);
        }
      }
#pragma unroll
      for (int c = 0; c < kFaBatch; ++c) {
        if (c0 + c >= kQuads)
          break;
        const int i = static_cast<int>(threadIdx.x) + (c0 + c) * kFaThreads;
        const int pp = i / (D / 4), d = 4 * (i % (D / 4));
        // Pairs of values split at once (tc_split_pair); a key's 4 values of a term are 8
        // bytes of one row, a value's go to 4 rows of the transposed plane.
        uint32_t klo[kFaTerms], khi[kFaTerms], vlo[kFaTerms], vhi[kFaTerms];
        tc_split_pair<kFaTerms>(bits_as_float(kq[c].w[0]), bits_as_float(kq[c].w[1]), klo);
        tc_split_pair<kFaTerms>(bits_as_float(kq[c].w[2]), bits_as_float(kq[c].w[3]), khi);
        tc_split_pair<kFaTerms>(bits_as_float(vq[c].w[0]), bits_as_float(vq[c].w[1]), vlo);
        tc_split_pair<kFaTerms>(bits_as_float(vq[c].w[2]), bits_as_float(vq[c].w[3]), vhi);
#pragma unroll
        for (int i = 0; i < kFaTerms; ++i) {
          store_uint2(&s.k[i][pp][d], make_uint2(klo[i], khi[i])); // 8-byte aligned: d % 4 == 0
          s.vt[i][d][pp] = static_cast<uint16_t>(vlo[i]);
          s.vt[i][d + 1][pp] = static_cast<uint16_t>(vlo[i] >> 16);
          s.vt[i][d + 2][pp] = static_cast<uint16_t>(vhi[i]);
          s.vt[i][d + 3][pp] = static_cast<uint16_t>(vhi[i] >> 16);
        }
      }
    }
    __syncthreads();

    // S = q . k^T: 4 tiles of 8 positions.
    float sc[kFaKv / 8][4];
#pragma unroll
    for (int ni = 0; ni < kFaKv / 8; ++ni) {
#pragma unroll
      for (int c = 0; c < 4; ++c)
        sc[ni][c] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks)
        fa_mma(sc[ni], qa[ks], s.k, ni * 8 + g, ks * 16 + 2 * qd);
    }
    // Scale, mask, and the online softmax of the lane's two rows.
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int ni = 0; ni < kFaKv / 8; ++ni)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int r = warp * 16 + g + 8 * (c >> 1), j = j0 + ni * 8 + 2 * qd + (c & 1);
        const bool in = j >= s.lo[r] && j <= s.hi[r];
        sc[ni][c] = in ? sc[ni][c] * scale : -INFINITY;
        tile_max[c >> 1] = fmaxf(tile_max[c >> 1], sc[ni][c]);
      }
    float correction[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      const float m_new = fmaxf(m[r], tile_max[r]);
      // Nothing seen yet (m_new = -inf): nothing to rescale, and every weight is 0.
      correction[r] = m_new == -INFINITY ? 1.0f : expf(m[r] - m_new);
      m[r] = m_new;
      l[r] *= correction[r];
    }
#pragma unroll
    for (int nd = 0; nd < ND; ++nd)
#pragma unroll
      for (int c = 0; c < 4; ++c)
        o[nd][c] *= correction[c >> 1];
#pragma unroll
    for (int ni = 0; ni < kFaKv / 8; ++ni)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const float mr = m[c >> 1];
        sc[ni][c] = mr == -INFINITY ? 0.0f : expf(sc[ni][c] - mr);
        l[c >> 1] += sc[ni][c];
      }
    // O += P . V: P's A fragments (k16 step kk = S tiles 2 kk and 2 kk + 1), a set per term.
#pragma unroll
    for (int kk = 0; kk < kFaKv / 16; ++kk) {
      uint32_t pa[kFaTerms][4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        uint32_t packed[kFaTerms];
        tc_split_pair<kFaTerms>(sc[2 * kk + (j >> 1)][2 * (j & 1)],
                                sc[2 * kk + (j >> 1)][2 * (j & 1) + 1], packed);
#pragma unroll
        for (int i = 0; i < kFaTerms; ++i)
          pa[i][j] = packed[i];
      }
#pragma unroll
      for (int nd = 0; nd < ND; ++nd)
        fa_mma(o[nd], pa, s.vt, nd * 8 + g, kk * 16 + 2 * qd);
    }
  }

  // The rows' sums over the 4 lanes that share them, then out = o / l (rows outside the
  // cache: nan, as the SIMT kernels and the CPU give).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = warp * 16 + g + 8 * r, t = t0 + row;
    if (t >= n)
      continue;
    const bool valid = s.hi[row] >= s.lo[row];
    float *dst = out + (static_cast<size_t>(t) * Hq + h) * D;
#pragma unroll
    for (int nd = 0; nd < ND; ++nd)
#pragma unroll
      for (int c = 2 * r; c < 2 * r + 2; ++c)
        dst[nd * 8 + 2 * qd + (c & 1)] = valid ? o[nd][c] / l[r] : NAN;
  }
}

// Whether attention() takes attention_tc_kernel for prefill chunks: -1 from the environment
// (PHIMOE_CUDA_PREFILL_ATTENTION=simt keeps the SIMT kernels, a fallback), 0 no, 1 yes
// (kernels_test sets it to run both).
inline int &attention_tc_mode() {
  static int mode = -1;
  return mode;
}
inline bool attention_tc_enabled() {
  return env_switch(attention_tc_mode(), "PHIMOE_CUDA_PREFILL_ATTENTION", "simt");
}

template <int Hq, int Hkv, int D>
void attention_tc(cudaStream_t stream, const float *q, int n, const int32_t *pos, int layer,
                  int capacity, const KvPages &pages, const float *k_cache,
                  const float *v_cache, float scale, int window, float *out) {
  const dim3 grid(blocks_for(n, kFaRows), Hq);
  constexpr size_t bytes = sizeof(FaShared<D>);
  static const bool configured = (allow_shared(attention_tc_kernel<Hq, Hkv, D>, bytes), true);
  (void)configured;
  PHIMOE_CUDA_LAUNCH(grid, kFaThreads, bytes, stream, attention_tc_kernel<Hq, Hkv, D>)
  (q, n, pos, layer, capacity, pages, k_cache, v_cache, scale, window, out);
}

} // namespace detail
} // namespace phimoe_cuda

#endif // PHIMOE_CUDA_ATTENTION_TC_CUH
