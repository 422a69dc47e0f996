// threadpool_test.cpp - ThreadPool::parallel_for: coverage, chunking, repeated calls, small n.
#include "phimoe_rt/runtime.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace {

using phimoe_rt::ThreadPool;

struct Call {
  int64_t begin, end;
  int thread;
};

// Runs parallel_for(n) and records every call and how often each index was visited.
std::vector<Call> record(ThreadPool &pool, int64_t n, std::vector<int> *visits) {
  std::vector<Call> calls;
  std::mutex m;
  std::unique_ptr<std::atomic<int>[]> counts(new std::atomic<int>[n > 0 ? n : 1]);
  for (int64_t i = 0; i < n; ++i)
    counts[i] = 0;
  pool.parallel_for(n, [&](int64_t b, int64_t e, int t) {
    for (int64_t i = b; i < e; ++i)
      counts[i].fetch_add(1);
    std::lock_guard<std::mutex> lock(m);
    calls.push_back({b, e, t});
  });
  visits->assign(n > 0 ? n : 0, 0);
  for (int64_t i = 0; i < n; ++i)
    (*visits)[i] = counts[i].load();
  return calls;
}

TEST(ThreadPool, SizeCountsTheCaller) {
  EXPECT_EQ(ThreadPool(1).size(), 1);
  EXPECT_EQ(ThreadPool(3).size(), 3);
  EXPECT_EQ(ThreadPool(0).size(), 1); // fewer than one thread means the caller alone
}

// Every index in [0, n) is visited exactly once; ranges are non-empty, disjoint, one per
// thread at most, with thread ids in [0, size) and sizes differing by at most one.
TEST(ThreadPool, EveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 4, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 2, 3, 5, 7, 8, 9, 100, 1000, 12345}) {
      std::vector<int> visits;
      const std::vector<Call> calls = record(pool, n, &visits);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(visits[i], 1) << "index " << i << " of n=" << n << ", threads=" << threads;
      std::vector<int> per_thread(pool.size(), 0);
      int64_t smallest = n, largest = 0;
      for (const Call &c : calls) {
        ASSERT_LT(c.begin, c.end);
        ASSERT_GE(c.thread, 0);
        ASSERT_LT(c.thread, pool.size());
        ++per_thread[c.thread];
        smallest = std::min(smallest, c.end - c.begin);
        largest = std::max(largest, c.end - c.begin);
      }
      for (int count : per_thread)
        EXPECT_LE(count, 1);
      EXPECT_EQ(static_cast<int64_t>(calls.size()), std::min<int64_t>(n, pool.size()));
      EXPECT_LE(largest - smallest, 1) << "n=" << n << ", threads=" << threads;
    }
  }
}

// n smaller than the pool: only n threads are called, each with one index.
TEST(ThreadPool, FewerItemsThanThreads) {
  ThreadPool pool(8);
  for (int64_t n = 1; n < 8; ++n) {
    std::vector<int> visits;
    const std::vector<Call> calls = record(pool, n, &visits);
    EXPECT_EQ(static_cast<int64_t>(calls.size()), n);
    for (const Call &c : calls)
      EXPECT_EQ(c.end - c.begin, 1);
    for (int v : visits)
      EXPECT_EQ(v, 1);
  }
}

TEST(ThreadPool, EmptyRangeCallsNothing) {
  ThreadPool pool(3);
  int calls = 0;
  pool.parallel_for(0, [&](int64_t, int64_t, int) { ++calls; });
  pool.parallel_for(-5, [&](int64_t, int64_t, int) { ++calls; });
  EXPECT_EQ(calls, 0);
}

// The caller runs as thread 0; each worker index is always the same OS thread.
TEST(ThreadPool, CallerIsThreadZeroAndIdsAreStable) {
  ThreadPool pool(4);
  std::vector<std::thread::id> first(4);
  for (int rep = 0; rep < 50; ++rep) {
    std::vector<std::thread::id> ids(4);
    pool.parallel_for(4, [&](int64_t, int64_t, int t) { ids[t] = std::this_thread::get_id(); });
    EXPECT_EQ(ids[0], std::this_thread::get_id());
    if (rep == 0)
      first = ids;
    EXPECT_EQ(ids, first);
  }
  for (int a = 0; a < 4; ++a)
    for (int b = a + 1; b < 4; ++b)
      EXPECT_NE(first[a], first[b]);
}

// Many back-to-back calls (the decode pattern: short parallel regions in a row) neither
// lose a wake-up nor return early: every call finds all its work done when it returns.
TEST(ThreadPool, RepeatedCalls) {
  constexpr int reps = 20000, max_n = 97;
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    std::vector<int64_t> data(max_n, 0);
    std::atomic<int64_t> visited{0};
    int64_t expected = 0;
    for (int rep = 0; rep < reps; ++rep) {
      const int64_t n = 1 + rep % max_n;
      pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i)
          data[i] += 1;
        visited += e - b;
      });
      expected += n;
      ASSERT_EQ(visited.load(), expected) << "rep " << rep;
    }
    for (int64_t i = 0; i < max_n; ++i) {
      int64_t covering = 0; // reps whose n exceeds i
      for (int rep = 0; rep < reps; ++rep)
        covering += (1 + rep % max_n) > i;
      EXPECT_EQ(data[i], covering) << "index " << i;
    }
  }
}

// A functor passed as an lvalue and one passed as an rvalue both work; state is shared.
TEST(ThreadPool, LvalueAndRvalueCallables) {
  ThreadPool pool(3);
  std::atomic<int64_t> sum{0};
  auto add = [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i)
      sum += i;
  };
  pool.parallel_for(100, add);
  pool.parallel_for(100, [&](int64_t b, int64_t e, int t) { add(b, e, t); });
  EXPECT_EQ(sum.load(), 2 * 4950);
}

TEST(ThreadPool, ConstructAndDestroyWithoutWork) {
  for (int rep = 0; rep < 20; ++rep) {
    ThreadPool pool(4);
    (void)pool;
  }
}

} // namespace
