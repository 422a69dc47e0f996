// threadpool.cpp - the persistent worker pool behind ThreadPool::parallel_for.
//
// One parallel_for at a time: it publishes (n, fn) under the mutex with a new generation
// number and wakes the workers; each worker runs its chunk once per generation, and the
// last one to finish wakes the caller, which ran chunk 0 meanwhile. Workers and caller
// spin for up to kSpinMicros on the generation / pending count before they block on the
// condition variables, so back-to-back calls (a forward's ops) do not pay a futex wake-up. A pool is driven by
// one thread, and fn must not call parallel_for on the same pool (it would deadlock).
#include "phimoe_rt/runtime.h"

#include <chrono>

namespace phimoe_rt {
namespace {

// Thread t of `threads` gets [n*t/threads, n*(t+1)/threads): sizes differ by at most one,
// and threads past n get an empty range when n < threads.
void chunk(int64_t n, int threads, int t, int64_t *begin, int64_t *end) {
  *begin = n * t / threads;
  *end = n * (t + 1) / threads;
}

// Spin (with pause) until ready() or about kSpinMicros have passed; whether ready() held.
constexpr int64_t kSpinMicros = 200;

template <class Ready> bool spin_until(Ready ready) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    for (int i = 0; i < 256; ++i) {
      if (ready())
        return true;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    if (std::chrono::steady_clock::now() - start > std::chrono::microseconds(kSpinMicros))
      return ready();
  }
}

} // namespace

ThreadPool::ThreadPool(int threads) {
  const int workers = threads > 1 ? threads - 1 : 0;
  workers_.reserve(static_cast<size_t>(workers));
  for (int i = 1; i <= workers; ++i)
    workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread &t : workers_)
    t.join();
}

void ThreadPool::run(int64_t n, Trampoline call, void *fn) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    n_ = n;
    call_ = call;
    fn_ = fn;
    pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();

  int64_t begin, end;
  chunk(n, size(), 0, &begin, &end);
  if (begin < end)
    call(fn, begin, end, 0);

  if (spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; }))
    return;
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    // A new generation publishes n_, call_ and fn_ before its release increment.
    if (!spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; })) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] {
        return stop_ || generation_.load(std::memory_order_acquire) != seen;
      });
      if (stop_)
        return;
    }
    seen = generation_.load(std::memory_order_acquire);
    const int64_t n = n_;
    const Trampoline call = call_;
    void *const fn = fn_;
    int64_t begin, end;
    chunk(n, size(), index, &begin, &end);
    if (begin < end)
      call(fn, begin, end, index);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // The caller may be about to sleep: notify under the mutex it checks pending_ under.
      std::lock_guard<std::mutex> lock(mutex_);
      done_.notify_one();
    }
  }
}

} // namespace phimoe_rt
