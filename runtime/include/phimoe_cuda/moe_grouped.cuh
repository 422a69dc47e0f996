// moe_grouped.cuh - the MoE of prefill as grouped-expert GEMMs: after the router kernel, the
// (row, slot) pairs are bucketed by expert on the device, each expert's gate-up projection runs
// as a tensor-core GEMM over its gathered rows with silu(g) * u in the epilogue, then its down
// projection, and a last kernel combines out[t] = w1 * y[t, slot 0] + w2 * y[t, slot 1].
// phixtral's phi-2 MLP experts: the fc1 GEMM with gelu_tanh(. + bias) in its epilogue, the
// fc2 biases added in the combine.
// Nothing waits for the host: the grids are sized for the worst case and idle tiles exit.
// Every value is written once by one thread (no float atomics): results do not depend on
// scheduling. Included by kernels.cuh after gemm_tc.cuh; moe_sparsemixer() picks it for more
// than kGemvMaxRows rows when both expert weights take the tensor-core path (tc_supported).
//
// Workspace (Context): routes [n] (the router's), moe_pairs [2n] (pair ids p = 2t + slot,
// grouped by expert, in increasing p within an expert), moe_plan [3E + 1] (counts[E],
// offsets[E], tile_start[E + 1]: expert e's row tiles are tile_start[e] .. tile_start[e+1]-1 of
// the grid's y index), moe_act [2n, I] (silu(g) * u of bucket position i, the same floats as the
// decode path's [n][2][I]), moe_y [2n, H] (the down projection of pair p) and tc_split (the
// x rows split for the gate-up GEMM, then the act rows for the down GEMM: tc_split_rows).
#ifndef PHIMOE_CUDA_MOE_GROUPED_CUH
#define PHIMOE_CUDA_MOE_GROUPED_CUH

namespace phimoe_cuda {
namespace detail {

// ---- the index arithmetic (host and device: test/gpu/tc_host_test.cu checks it) ----------
__host__ __device__ inline int moe_plan_ints(int E) { return 3 * E + 1; }

__host__ __device__ inline int moe_pair_expert(const DeviceRoute &r, int slot) {
  return slot ? r.i2 : r.i1;
}

// At most this many row tiles of bm rows hold the 2n pairs over E experts: the sum over the
// experts with pairs of ceil(count / bm) <= (2n + used * (bm - 1)) / bm, used <= min(E, 2n).
__host__ __device__ inline int moe_max_tiles(int n, int E, int bm) {
  const int pairs = 2 * n, used = E < pairs ? E : pairs;
  return (pairs + used * (bm - 1)) / bm;
}

// From the counts: offsets (exclusive prefix sum) and tile_start (prefix sum of the tiles).
__host__ __device__ inline void moe_plan(const int *counts, int E, int bm, int *offsets,
                                         int *tile_start) {
  int offset = 0, tiles = 0;
  for (int e = 0; e < E; ++e) {
    offsets[e] = offset;
    tile_start[e] = tiles;
    offset += counts[e];
    tiles += (counts[e] + bm - 1) / bm;
  }
  tile_start[E] = tiles;
}

// The expert and its row tile of grid tile b; false when b is past the last tile.
__host__ __device__ inline bool moe_find_tile(const int *tile_start, int E, int b, int *e,
                                              int *row_tile) {
  if (b < 0 || b >= tile_start[E])
    return false;
  int i = 0;
  while (tile_start[i + 1] <= b) // experts without pairs have no tiles: skipped
    ++i;
  *e = i;
  *row_tile = b - tile_start[i];
  return true;
}

// What the bucket kernel computes, serially: plan and pairs of n routes. Pairs whose expert is
// outside [0, E) are dropped (their y rows are then not written).
__host__ __device__ inline void moe_bucket_serial(const DeviceRoute *routes, int n, int E, int bm,
                                                  int *plan, int *pairs) {
  int *counts = plan, *offsets = plan + E, *tile_start = plan + 2 * E;
  for (int e = 0; e < E; ++e)
    counts[e] = 0;
  for (int p = 0; p < 2 * n; ++p) {
    const int e = moe_pair_expert(routes[p >> 1], p & 1);
    if (e >= 0 && e < E)
      ++counts[e];
  }
  moe_plan(counts, E, bm, offsets, tile_start);
  for (int e = 0; e < E; ++e) {
    int next = offsets[e];
    for (int p = 0; p < 2 * n; ++p)
      if (moe_pair_expert(routes[p >> 1], p & 1) == e)
        pairs[next++] = p;
  }
}

// The gate-up block tile: its 64 weight rows are 32 gate rows and the 32 up rows of the same
// 32 output columns, arranged so that every thread holds g and u of the same (row, column):
// tile column s (warp column s / 32, MMA tile (s % 32) / 8) is a gate row for MMA tiles 0, 1
// and an up row for 2, 3, and column s + 16 is the up row of gate column s.
constexpr int kGateUpCols = kTcBN / 2;
__host__ __device__ inline bool moe_gate_up_is_up(int s) { return (s % 32) >= 16; }
__host__ __device__ inline int moe_gate_up_col(int s) {
  return (s / 32) * 16 + ((s % 32) / 8 % 2) * 8 + s % 8;
}

// ---- kernels -------------------------------------------------------------------------------
// One block: a warp per expert counts its pairs (ballots over 32 pairs at a time), thread 0
// plans, then the warps write their pairs in increasing p (ballot rank): moe_bucket_serial.
template <int E>
__global__ void moe_bucket_kernel(const DeviceRoute *routes, int n, int *plan, int *pairs) {
  __shared__ int counts[E], offsets[E], tile_start[E + 1];
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int total = 2 * n;
  for (int e = warp; e < E; e += warps) {
    int c = 0;
    for (int base = 0; base < total; base += 32) {
      const int p = base + lane;
      const bool mine = p < total && moe_pair_expert(routes[p >> 1], p & 1) == e;
      c += __popc(__ballot_sync(0xffffffffu, mine));
    }
    if (lane == 0)
      counts[e] = c;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    moe_plan(counts, E, kTcBM, offsets, tile_start);
    for (int e = 0; e < E; ++e) {
      plan[e] = counts[e];
      plan[E + e] = offsets[e];
      plan[2 * E + e] = tile_start[e];
    }
    plan[3 * E] = tile_start[E];
  }
  __syncthreads();
  for (int e = warp; e < E; e += warps) {
    int next = offsets[e];
    for (int base = 0; base < total; base += 32) {
      const int p = base + lane;
      const bool mine = p < total && moe_pair_expert(routes[p >> 1], p & 1) == e;
      const unsigned mask = __ballot_sync(0xffffffffu, mine);
      if (mine)
        pairs[next + __popc(mask & ((1u << lane) - 1u))] = p;
      next += __popc(mask);
    }
  }
}

// The tile of grid row tile b: expert, first bucket position and rows (false: past the plan).
__host__ __device__ inline bool moe_tile(const int *plan, int E, int b, int *e, int *first,
                                         int *rows) {
  int row_tile;
  if (!moe_find_tile(plan + 2 * E, E, b, e, &row_tile))
    return false;
  *first = plan[E + *e] + row_tile * kTcBM;
  const int left = plan[*e] - row_tile * kTcBM;
  *rows = left < kTcBM ? left : kTcBM;
  return true;
}

// Gate-up tile (expert e, bucket positions first .. first+rows-1, output columns c0 ..
// c0+31): the rows it reads (x rows: the pairs' tokens; gate_up rows), thread tid's share.
__host__ __device__ inline void moe_gate_up_rows(int *a_rows, int *b_rows, const int *pairs, int e,
                                                 int first, int rows, int c0, int I, int tid) {
  for (int i = tid; i < kTcBM; i += kTcThreads) // (past the end: the tile's first, TcShared)
    a_rows[i] = pairs[first + (i < rows ? i : 0)] >> 1;
  for (int i = tid; i < kTcBN; i += kTcThreads) {
    const int c = c0 + moe_gate_up_col(i);
    b_rows[i] = e * 2 * I + (moe_gate_up_is_up(i) ? I : 0) + (c < I ? c : c0);
  }
}

// act[first + m][c] = silu(g) * u for the accumulators of (warp, lane).
__host__ __device__ inline void moe_gate_up_store(const float (&acc)[2][4][4], int warp, int lane,
                                                  int first, int rows, int c0, int I, float *act) {
  for (int mi = 0; mi < 2; ++mi)
    for (int ni = 0; ni < 2; ++ni) // gate tiles; ni + 2 holds the up rows of the same columns
      for (int c = 0; c < 4; ++c) {
        const int m = tc_tile_row(warp, lane, mi, c);
        const int col = c0 + moe_gate_up_col(tc_tile_col(warp, lane, ni, c));
        if (m < rows && col < I) {
          const float g = acc[mi][ni][c], u = acc[mi][ni + 2][c];
          act[static_cast<size_t>(first + m) * I + col] = g / (1.0f + expf(-g)) * u;
        }
      }
}

// Down tile (expert e, bucket positions first .., H columns r0 .. r0+63): act rows, down rows
// and the pair of every tile row, thread tid's share.
__host__ __device__ inline void moe_down_rows(int *a_rows, int *b_rows, int *pair_of,
                                              const int *pairs, int e, int first, int rows, int r0,
                                              int H, int tid) {
  for (int i = tid; i < kTcBM; i += kTcThreads) {
    a_rows[i] = first + (i < rows ? i : 0); // (past the end: the tile's first, TcShared)
    pair_of[i] = i < rows ? pairs[first + i] : -1;
  }
  for (int i = tid; i < kTcBN; i += kTcThreads)
    b_rows[i] = e * H + (r0 + i < H ? r0 + i : r0);
}

// y[pair][h] for the accumulators of (warp, lane).
__host__ __device__ inline void moe_down_store(const float (&acc)[2][4][4], int warp, int lane,
                                               const int *pair_of, int rows, int r0, int H,
                                               float *y) {
  for (int mi = 0; mi < 2; ++mi)
    for (int ni = 0; ni < 4; ++ni)
      for (int c = 0; c < 4; ++c) {
        const int m = tc_tile_row(warp, lane, mi, c), h = r0 + tc_tile_col(warp, lane, ni, c);
        if (m < rows && h < H)
          y[static_cast<size_t>(pair_of[m]) * H + h] = acc[mi][ni][c];
      }
}

// fc1 tile of phi-2 MLP experts (expert e, bucket positions first .., I columns c0 .. c0+63):
// the x row of each tile row and the fc1 row ([E, I, H]) of each tile column.
__host__ __device__ inline void moe_fc1_rows(int *a_rows, int *b_rows, const int *pairs, int e,
                                             int first, int rows, int c0, int I, int tid) {
  for (int i = tid; i < kTcBM; i += kTcThreads) // (past the end: the tile's first, TcShared)
    a_rows[i] = pairs[first + (i < rows ? i : 0)] >> 1;
  for (int i = tid; i < kTcBN; i += kTcThreads)
    b_rows[i] = e * I + (c0 + i < I ? c0 + i : c0);
}

// act[first + m][c] = gelu_tanh(fc1_c . x + bias[c]) for the accumulators of (warp, lane);
// bias: the tile's expert's fc1 biases [I].
template <class B>
__device__ inline void moe_fc1_store(const float (&acc)[2][4][4], int warp, int lane, int first,
                                     int rows, int c0, int I, const B *bias, float *act) {
  for (int mi = 0; mi < 2; ++mi)
    for (int ni = 0; ni < 4; ++ni)
      for (int c = 0; c < 4; ++c) {
        const int m = tc_tile_row(warp, lane, mi, c), col = c0 + tc_tile_col(warp, lane, ni, c);
        if (m < rows && col < I)
          act[static_cast<size_t>(first + m) * I + col] =
              gelu_tanh(acc[mi][ni][c] + bias_at(bias, col));
      }
}

// Blocks of the grouped GEMMs an SM is to hold: ptxas then budgets 168 registers a thread.
// With __launch_bounds__(kTcThreads) alone it aimed at 5 blocks (96 registers) and spilled
// (the sm_80 bf16 gate-up kernel, after the x tile's loads were batched; ptxas -v, checked by
// test_cuda_build.py's test_real_shape_kernels_do_not_spill); at 4 (128 registers) the gate-up
// kernels spilled once tc_mainloop held the next K tile's loads in registers (about 128
// registers, as gemm_tc_kernel; 3 blocks of 33 KB shared memory).
constexpr int kMoeTcBlocksPerSm = 3;

// Block (32 output columns, grid row tile): act[i][c] = silu(g) * u for the bucket positions i
// of the tile's expert, g and u the gate and up rows of gate_up [E, 2I, H] times x[pair / 2].
template <int E, int H, int I, class GU, int Terms>
__global__ void __launch_bounds__(kTcThreads, kMoeTcBlocksPerSm)
    moe_gate_up_tc_kernel(TcX x, const GU *gate_up, const int *plan, const int *pairs,
                          float *act) {
  __shared__ TcShared<Terms> s;
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  int e, first, rows;
  if (!moe_tile(plan, E, blockIdx.y, &e, &first, &rows))
    return; // the whole block: past the last tile
  const int c0 = blockIdx.x * kGateUpCols;
  moe_gate_up_rows(s.a_rows, s.b_rows, pairs, e, first, rows, c0, I, threadIdx.x);
  __syncthreads();
  float acc[2][4][4];
  tc_mainloop<GU, static_cast<long long>(E) * 2 * I, H, Terms>(s, x, gate_up, acc);
  moe_gate_up_store(acc, threadIdx.x >> 5, threadIdx.x & 31, first, rows, c0, I, act);
}

// Block (64 columns of I, grid row tile), phi-2 MLP experts: act[i][c] =
// gelu_tanh(fc1_e[c] . x[pair / 2] + fc1_bias_e[c]) for the tile's bucket positions i.
template <int E, int H, int I, class W1, class B1, int Terms>
__global__ void __launch_bounds__(kTcThreads, kMoeTcBlocksPerSm)
    moe_fc1_tc_kernel(TcX x, const W1 *fc1, const B1 *fc1_bias, const int *plan,
                      const int *pairs, float *act) {
  __shared__ TcShared<Terms> s;
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  int e, first, rows;
  if (!moe_tile(plan, E, blockIdx.y, &e, &first, &rows))
    return;
  const int c0 = blockIdx.x * kTcBN;
  moe_fc1_rows(s.a_rows, s.b_rows, pairs, e, first, rows, c0, I, threadIdx.x);
  __syncthreads();
  float acc[2][4][4];
  tc_mainloop<W1, static_cast<long long>(E) * I, H, Terms>(s, x, fc1, acc);
  moe_fc1_store(acc, threadIdx.x >> 5, threadIdx.x & 31, first, rows, c0, I,
                fc1_bias + static_cast<size_t>(e) * I, act);
}

// Block (64 columns of H, grid row tile): y[pair][h] = down_e[h] . act[i] for the tile's
// bucket positions i (down [E, H, I]).
template <int E, int H, int I, class DW, int Terms>
__global__ void __launch_bounds__(kTcThreads, kMoeTcBlocksPerSm)
    moe_down_tc_kernel(TcX act, const DW *down, const int *plan, const int *pairs,
                       float *y) {
  __shared__ TcShared<Terms> s;
  __shared__ int pair_of[kTcBM];
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  int e, first, rows;
  if (!moe_tile(plan, E, blockIdx.y, &e, &first, &rows))
    return;
  const int r0 = blockIdx.x * kTcBN;
  moe_down_rows(s.a_rows, s.b_rows, pair_of, pairs, e, first, rows, r0, H, threadIdx.x);
  __syncthreads();
  float acc[2][4][4];
  tc_mainloop<DW, static_cast<long long>(E) * H, I, Terms>(s, act, down, acc);
  moe_down_store(acc, threadIdx.x >> 5, threadIdx.x & 31, pair_of, rows, r0, H, y);
}

// out[t][h] = w1 * y[2t][h] + w2 * y[2t + 1][h], as the decode path's down kernel sums (a row
// with an expert id outside [0, E), whose pairs were not bucketed: nan, not stale values).
// With down_bias ([E, H], phixtral's fc2 biases): w1 * (y1 + bias_i1) + w2 * (y2 + bias_i2).
template <int E, int H, class B2 = float>
__global__ void moe_combine_kernel(const float *y, const DeviceRoute *routes, float *out,
                                   const B2 *down_bias) {
  PHIMOE_CUDA_KERNEL_PROLOGUE();
  const int t = blockIdx.x;
  const DeviceRoute r = routes[t];
  const bool valid = r.i1 >= 0 && r.i1 < E && r.i2 >= 0 && r.i2 < E;
  const float *y1 = y + static_cast<size_t>(2 * t) * H, *y2 = y1 + H;
  float *o = out + static_cast<size_t>(t) * H;
  load_then_store<H, kThreads, float>(
      [&](int h) {
        if (!valid)
          return NAN;
        if (!down_bias)
          return r.w1 * y1[h] + r.w2 * y2[h];
        return r.w1 * (y1[h] + bias_at(down_bias, r.i1 * H + h)) +
               r.w2 * (y2[h] + bias_at(down_bias, r.i2 * H + h));
      },
      [&](int h, float v) { o[h] = v; });
}

// The experts of n rows whose routes the router kernel left in ctx.routes. Gelu: phi-2 MLP
// experts (gate_up is fc1 [E, I, H] with biases b1 [E, I]; b2 [E, H] the fc2 biases).
template <int E, int H, int I, bool Gelu = false, class GU, class DW, class B1 = float,
          class B2 = float>
void moe_grouped(Context &ctx, const float *x, int n, const GU *gate_up, const DW *down,
                 float *out, const B1 *b1 = nullptr, const B2 *b2 = nullptr) {
  if (!ctx.moe_pairs || !ctx.moe_plan || !ctx.moe_y || ctx.moe_plan_ints < moe_plan_ints(E))
    throw std::runtime_error("moe_sparsemixer: no grouped-expert workspace (a phimoe-bin bug)");
  PHIMOE_CUDA_LAUNCH(1, kThreads, 0, ctx.stream, moe_bucket_kernel<E>)
  (ctx.routes, n, ctx.moe_plan, ctx.moe_pairs);
  PHIMOE_CUDA_CHECK_LAUNCH();
  const int tiles = moe_max_tiles(n, E, kTcBM);
  const TcX xs = tc_split_rows<H>(ctx, x, n, "moe_sparsemixer");
  if constexpr (Gelu) {
    dim3 fc1_grid(blocks_for(I, kTcBN), tiles);
    PHIMOE_CUDA_LAUNCH(fc1_grid, kTcThreads, 0, ctx.stream,
                       moe_fc1_tc_kernel<E, H, I, GU, B1, kTcXTerms>)
    (xs, gate_up, b1, ctx.moe_plan, ctx.moe_pairs, ctx.moe_act);
  } else {
    dim3 gu_grid(blocks_for(I, kGateUpCols), tiles);
    PHIMOE_CUDA_LAUNCH(gu_grid, kTcThreads, 0, ctx.stream,
                       moe_gate_up_tc_kernel<E, H, I, GU, kTcXTerms>)
    (xs, gate_up, ctx.moe_plan, ctx.moe_pairs, ctx.moe_act);
  }
  PHIMOE_CUDA_CHECK_LAUNCH();
  // (after the gate-up GEMM in stream order: the act rows' split takes the x rows' place)
  const TcX acts = tc_split_rows<I>(ctx, ctx.moe_act, 2 * n, "moe_sparsemixer");
  dim3 down_grid(blocks_for(H, kTcBN), tiles);
  PHIMOE_CUDA_LAUNCH(down_grid, kTcThreads, 0, ctx.stream,
                     moe_down_tc_kernel<E, H, I, DW, kTcXTerms>)
  (acts, down, ctx.moe_plan, ctx.moe_pairs, ctx.moe_y);
  PHIMOE_CUDA_CHECK_LAUNCH();
  PHIMOE_CUDA_LAUNCH(n, kThreads, 0, ctx.stream, moe_combine_kernel<E, H, B2>)
  (ctx.moe_y, ctx.routes, out, b2);
}

} // namespace detail
} // namespace phimoe_cuda

#endif // PHIMOE_CUDA_MOE_GROUPED_CUH
