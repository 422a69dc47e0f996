// paged_attention_test.cpp - rope and attention over several sequences in one call
// (Context::batch, a PagedKVCache with block tables) against the single-sequence kernels
// on a contiguous KVCache: bit for bit, whatever the other rows of the batch are.
#include "test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace {

using namespace phimoe_rt;
using namespace phimoe_rt_test;

const float kNaN = std::numeric_limits<float>::quiet_NaN();

TEST(PagedKVCache, IndexesLayerBlockPositionRow) {
  PagedKVCache cache;
  cache.resize(2, 5, 4, 2, 3);
  EXPECT_EQ(cache.row(), 6u);
  ASSERT_EQ(cache.k.size(), 2u * 5 * 4 * 6);
  EXPECT_EQ(cache.k_at(1, 2, 3) - cache.k.data(), ((1 * 5 + 2) * 4 + 3) * 6);
  EXPECT_EQ(cache.v_at(0, 4, 1) - cache.v.data(), (4 * 4 + 1) * 6);
  std::vector<int32_t> table = {3, 0, -1, 1, 2, 4};
  BatchRows batch;
  batch.cache = &cache;
  batch.block_table = table.data();
  batch.max_blocks = 3;
  EXPECT_EQ(batch.block_of(0, 0), 3);
  EXPECT_EQ(batch.block_of(0, 5), 0);
  EXPECT_EQ(batch.block_of(0, 8), -1); // no block
  EXPECT_EQ(batch.block_of(0, 12), -1); // beyond the table
  EXPECT_EQ(batch.block_of(1, 11), 4);
  EXPECT_EQ(batch.block_of(1, -1), -1);
}

// Sequences of different lengths, each run alone (prefill in chunks, then decode) on a
// contiguous cache, and all together: each step's rows mix every sequence's next chunk, in a
// shuffled row order, with blocks handed out in a shuffled order. Every output row must have
// the same bits as the sequence's own run.
template <int Hq, int Hkv, int D>
void test_batched_equals_single(int threads, int window, int block) {
  constexpr int kv = Hkv * D, capacity = 24;
  const int max_blocks = (capacity + block - 1) / block;
  const int lengths[] = {1, 7, 13, 24};
  constexpr int seqs = 4;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::mt19937 rng(500 + threads + window);
  std::vector<std::vector<float>> q(seqs), k(seqs), v(seqs), expected(seqs);
  // Each sequence alone: chunks of 5 rows.
  for (int s = 0; s < seqs; ++s) {
    const int len = lengths[s];
    q[s] = random_floats(rng, static_cast<size_t>(len) * Hq * D);
    k[s] = random_floats(rng, static_cast<size_t>(len) * kv);
    v[s] = random_floats(rng, static_cast<size_t>(len) * kv);
    expected[s].assign(static_cast<size_t>(len) * Hq * D, kNaN);
    TestContext tc(threads, capacity);
    tc.cache.resize(2, capacity, Hkv, D);
    for (int t0 = 0; t0 < len; t0 += 5) {
      const int n = std::min(5, len - t0);
      std::vector<int32_t> pos(n);
      std::iota(pos.begin(), pos.end(), t0);
      attention<Hq, Hkv, D>(tc.ctx, q[s].data() + t0 * Hq * D, k[s].data() + t0 * kv,
                            v[s].data() + t0 * kv, n, pos.data(), 1, scale, window,
                            expected[s].data() + t0 * Hq * D);
    }
  }
  // All together, with blocks of a shared pool in shuffled order; sequence s in slot s.
  PagedKVCache paged;
  paged.resize(2, seqs * max_blocks + 3, block, Hkv, D);
  std::fill(paged.k.begin(), paged.k.end(), kNaN); // a read of a foreign block shows
  std::fill(paged.v.begin(), paged.v.end(), kNaN);
  std::vector<int32_t> free_blocks(paged.blocks);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng);
  std::vector<int32_t> table(seqs * max_blocks, -1);
  size_t next_free = 0;
  for (int s = 0; s < seqs; ++s)
    for (int b = 0; b < (lengths[s] + block - 1) / block; ++b)
      table[s * max_blocks + b] = free_blocks[next_free++];
  std::vector<std::vector<float>> got(seqs);
  for (int s = 0; s < seqs; ++s)
    got[s].assign(expected[s].size(), kNaN);
  TestContext tc(threads, capacity);
  BatchRows batch;
  batch.cache = &paged;
  batch.block_table = table.data();
  batch.max_blocks = max_blocks;
  tc.ctx.batch = &batch;
  std::vector<int> done(seqs, 0);
  for (int step = 0;; ++step) {
    // Sequence s contributes its next 1..3 rows (varying per step).
    std::vector<std::pair<int, int>> rows; // (sequence, position)
    for (int s = 0; s < seqs; ++s) {
      const int n = std::min(1 + (step + s) % 3, lengths[s] - done[s]);
      for (int i = 0; i < n; ++i)
        rows.push_back({s, done[s] + i});
      done[s] += n;
    }
    if (rows.empty())
      break;
    std::shuffle(rows.begin(), rows.end(), rng);
    const int n = static_cast<int>(rows.size());
    std::vector<float> bq, bk, bv, out(static_cast<size_t>(n) * Hq * D, kNaN);
    std::vector<int32_t> pos, slot;
    std::vector<uint8_t> longs(n, 0);
    for (auto [s, p] : rows) {
      bq.insert(bq.end(), q[s].begin() + p * Hq * D, q[s].begin() + (p + 1) * Hq * D);
      bk.insert(bk.end(), k[s].begin() + p * kv, k[s].begin() + (p + 1) * kv);
      bv.insert(bv.end(), v[s].begin() + p * kv, v[s].begin() + (p + 1) * kv);
      pos.push_back(p);
      slot.push_back(s);
    }
    batch.slot = slot.data();
    batch.rope_long = longs.data();
    attention<Hq, Hkv, D>(tc.ctx, bq.data(), bk.data(), bv.data(), n, pos.data(), 1, scale,
                          window, out.data());
    for (int i = 0; i < n; ++i) {
      auto [s, p] = rows[i];
      std::copy(out.begin() + i * Hq * D, out.begin() + (i + 1) * Hq * D,
                got[s].begin() + p * Hq * D);
    }
  }
  for (int s = 0; s < seqs; ++s)
    EXPECT_TRUE(same_bits(got[s], expected[s])) << "sequence " << s << ", threads " << threads;
}

TEST(PagedAttention, BatchedRowsEqualSingleSequenceBitForBit) {
  for (int threads : {1, 3})
    for (int block : {4, 3}) { // a power of two (shifts) and not (divisions)
      test_batched_equals_single<4, 2, 16>(threads, 0, block);
      test_batched_equals_single<2, 2, 20>(threads, 0, block);
      test_batched_equals_single<4, 1, 8>(threads, 6, block);
    }
}

TEST(PagedAttention, RowsWithoutBlocksAreNanAndWriteNothing) {
  constexpr int Hq = 2, Hkv = 1, D = 8;
  PagedKVCache paged;
  paged.resize(1, 2, 4, Hkv, D);
  std::vector<int32_t> table = {1, -1}; // slot 0: positions 0..3 in block 1, no block after
  BatchRows batch;
  batch.cache = &paged;
  batch.block_table = table.data();
  batch.max_blocks = 2;
  std::vector<int32_t> slot = {0, 0}, pos = {0, 5};
  std::vector<uint8_t> longs = {0, 0};
  batch.slot = slot.data();
  batch.rope_long = longs.data();
  TestContext tc(1, 8);
  tc.ctx.batch = &batch;
  std::mt19937 rng(3);
  std::vector<float> q = random_floats(rng, 2 * Hq * D), k = random_floats(rng, 2 * D),
                     v = random_floats(rng, 2 * D), out(2 * Hq * D, 0.0f);
  attention<Hq, Hkv, D>(tc.ctx, q.data(), k.data(), v.data(), 2, pos.data(), 0, 1.0f, 0,
                        out.data());
  for (int i = 0; i < Hq * D; ++i) {
    EXPECT_TRUE(std::isfinite(out[i]));
    EXPECT_TRUE(std::isnan(out[Hq * D + i]));
  }
  for (size_t i = 0; i < 4 * D; ++i) // block 0 untouched
    EXPECT_EQ(paged.k[i], 0.0f);
}

// rope with per-row sets equals rope with ctx.rope_long on each row alone.
TEST(PagedAttention, RopeTakesEachRowsSet) {
  constexpr int Heads = 3, D = 16, n = 6;
  std::mt19937 rng(11);
  std::vector<float> short_f = random_floats(rng, D / 2, 0.2f, 1.5f),
                     long_f = random_floats(rng, D / 2, 0.5f, 4.0f);
  RopeParams p{10000.0f, 8, 1.1f, 1.3f, short_f.data(), long_f.data()};
  std::vector<float> x = random_floats(rng, n * Heads * D), got(x.size(), kNaN);
  std::vector<int32_t> pos = {0, 9, 3, 40, 7, 8};
  std::vector<uint8_t> longs = {0, 1, 0, 1, 1, 0};
  std::vector<int32_t> slot(n, 0);
  for (int threads : {1, 3}) {
    TestContext tc(threads, 8);
    BatchRows batch;
    batch.slot = slot.data();
    batch.rope_long = longs.data();
    tc.ctx.batch = &batch;
    rope<Heads, D>(tc.ctx, x.data(), n, pos.data(), p, got.data());
    tc.ctx.batch = nullptr;
    for (int t = 0; t < n; ++t) {
      std::vector<float> one(Heads * D, kNaN), row(x.begin() + t * Heads * D,
                                                   x.begin() + (t + 1) * Heads * D);
      tc.ctx.rope_long = longs[t] != 0;
      rope<Heads, D>(tc.ctx, row.data(), 1, &pos[t], p, one.data());
      std::vector<float> mine(got.begin() + t * Heads * D, got.begin() + (t + 1) * Heads * D);
      EXPECT_TRUE(same_bits(mine, one)) << "row " << t;
    }
  }
}

} // namespace
