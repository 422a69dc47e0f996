// threadpool.cpp - the persistent worker pool behind ThreadPool::parallel_for.
//
// One parallel_for at a time: it publishes (n, fn) under the mutex with a new generation
// number and wakes the workers; each worker runs its chunk once per generation, and the
// last one to finish wakes the caller, which ran chunk 0 meanwhile. A pool is driven by
// one thread, and fn must not call parallel_for on the same pool (it would deadlock).
#include "phimoe_rt/runtime.h"

namespace phimoe_rt {
namespace {

// Thread t of `threads` gets [n*t/threads, n*(t+1)/threads): sizes differ by at most one,
// and threads past n get an empty range when n < threads.
void chunk(int64_t n, int threads, int t, int64_t *begin, int64_t *end) {
  *begin = n * t / threads;
  *end = n * (t + 1) / threads;
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
    pending_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  wake_.notify_all();

  int64_t begin, end;
  chunk(n, size(), 0, &begin, &end);
  if (begin < end)
    call(fn, begin, end, 0);

  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [this] { return pending_ == 0; });
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    int64_t n;
    Trampoline call;
    void *fn;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_)
        return;
      seen = generation_;
      n = n_;
      call = call_;
      fn = fn_;
    }
    int64_t begin, end;
    chunk(n, size(), index, &begin, &end);
    if (begin < end)
      call(fn, begin, end, index);
    bool last;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      last = --pending_ == 0;
    }
    if (last)
      done_.notify_one();
  }
}

} // namespace phimoe_rt
