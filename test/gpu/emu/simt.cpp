// simt.cpp - the scheduler of simt.h (CUDA threads as fibers, barriers, warp collectives,
// mma.sync) and the CUDA runtime calls of the project over host memory.
#include "phimoe_emu/simt.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

// ---- fibers ------------------------------------------------------------------------------
// phimoe_emu_switch(save, load): saves the callee-saved registers, MXCSR and the x87 control
// word on the current stack, stores the stack pointer in *save, and resumes the stack `load`
// (System V x86-64).
#if !defined(__x86_64__)
#error "the CUDA emulation of test/gpu/emu switches fibers with x86-64 code"
#endif
extern "C" void phimoe_emu_switch(void **save, void *load);
asm(R"(
  .text
  .globl phimoe_emu_switch
  .type phimoe_emu_switch, @function
phimoe_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size phimoe_emu_switch, .-phimoe_emu_switch
)");

// Under AddressSanitizer (the ASan builds of test/gpu/emu/CMakeLists.txt), every switch between
// stacks is announced to it, so that it checks the fibers' stacks as stacks.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PHIMOE_EMU_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define PHIMOE_EMU_ASAN 1
#endif
#ifdef PHIMOE_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#ifdef PHIMOE_EMU_ASAN
// Fake stacks for use-after-return (clang's default) cost a mapping per fiber switch here:
// the system time grew 10x. Out-of-bounds accesses to device memory are what this is for.
extern "C" const char *__asan_default_options() { return "detect_stack_use_after_return=0"; }
#endif

namespace phimoe_emu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;

// Switches from the current stack to `load` (a stack of `size` bytes from `bottom`), saving
// the current one in *save; `fake` keeps ASan's fake stack of the stack left (nullptr: it is
// left for good).
inline void switch_stack(void **save, void *load, const void *bottom, size_t size, void **fake,
                         bool leaving_for_good = false) {
#ifdef PHIMOE_EMU_ASAN
  __sanitizer_start_switch_fiber(leaving_for_good ? nullptr : fake, bottom, size);
  phimoe_emu_switch(save, load);
  __sanitizer_finish_switch_fiber(*fake, nullptr, nullptr);
#else
  (void)bottom, (void)size, (void)fake, (void)leaving_for_good;
  phimoe_emu_switch(save, load);
#endif
}

// A fiber stack with a guard page below it.
struct Stack {
  unsigned char *base = nullptr; // mapping, guard page first
  size_t bytes = 0;
  Stack() {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    bytes = kStackBytes + page;
    void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      throw std::runtime_error("CUDA emulation: cannot map a fiber stack");
    base = static_cast<unsigned char *>(p);
    mprotect(base, page, PROT_NONE);
  }
  ~Stack() { munmap(base, bytes); }
  Stack(const Stack &) = delete;
  Stack &operator=(const Stack &) = delete;
  unsigned char *top() const { return base + bytes; }
  unsigned char *bottom() const { return top() - kStackBytes; }
};

enum class State { kReady, kBlockBarrier, kWarpBarrier, kDone };

struct Lane {
  void *sp = nullptr;
  void *fake_stack = nullptr; // ASan's, while the lane waits
  State state = State::kReady;
  unsigned mask = 0;     // of the collective it waits in
  unsigned ops = 0;      // warp collectives entered
  bool synced = false;   // has waited at a barrier or in a collective
  bool prologue = false; // has run PHIMOE_CUDA_KERNEL_PROLOGUE
  ThreadState ts;
};

// PHIMOE_CUDA_PDL=1, as the runtime reads it (launch.h): kernels are launched so that they
// may start before the one before them has finished, and each thread must run the kernel's
// prologue (its wait) before anything else.
bool pdl_launches() {
  static const bool on = [] {
    const char *v = std::getenv("PHIMOE_CUDA_PDL");
    return v && std::strcmp(v, "1") == 0;
  }();
  return on;
}

struct Warp {
  unsigned char slots[2][32][kSlotBytes];
};

struct Block {
  std::vector<Lane> lanes;
  std::vector<Warp> warps;
  std::vector<std::unique_ptr<Stack>> stacks; // reused by the next blocks
  int current = -1;
  void *scheduler_sp = nullptr;
  void *scheduler_fake_stack = nullptr;
  const void *scheduler_bottom = nullptr; // the scheduler's stack (ASan)
  size_t scheduler_size = 0;
  const std::function<void()> *fn = nullptr;
  std::string error;
  std::unique_ptr<unsigned char[]> shared; // exactly the launch's bytes (ASan sees overruns)
};

thread_local Block *tl_block = nullptr;

struct Schedule {
  enum Kind { kForward, kReverse, kRandom } kind = kForward;
  std::mt19937 rng{1};
  // false for a mode that is none of forward, reverse, random[:SEED].
  bool set(const std::string &mode) {
    if (mode.empty() || mode == "forward") {
      kind = kForward;
    } else if (mode == "reverse") {
      kind = kReverse;
    } else if (mode == "random" || mode.rfind("random:", 0) == 0) {
      kind = kRandom;
      const std::string seed = mode.size() > 7 ? mode.substr(7) : "1";
      if (seed.empty() || seed.find_first_not_of("0123456789") != std::string::npos)
        return false;
      rng.seed(static_cast<unsigned>(std::stoul(seed)));
    } else {
      return false;
    }
    return true;
  }
  Schedule() {
    const char *v = std::getenv("PHIMOE_EMU_SCHEDULE");
    if (!set(v ? v : "")) {
      std::fprintf(stderr, "PHIMOE_EMU_SCHEDULE=%s: expected forward, reverse or random[:SEED]\n",
                   v);
      std::exit(2);
    }
  }
};
Schedule &schedule() {
  static Schedule s;
  return s;
}

Lane &current_lane() {
  Block *b = tl_block;
  if (!b || b->current < 0)
    throw std::logic_error("CUDA emulation: a device builtin called outside a kernel");
  return b->lanes[b->current];
}

void yield(Lane &lane) {
  Block *b = tl_block;
  switch_stack(&lane.sp, b->scheduler_sp, b->scheduler_bottom, b->scheduler_size,
               &lane.fake_stack);
}

[[noreturn]] void fiber_entry() {
  Block *b = tl_block;
  Lane &lane = b->lanes[b->current];
#ifdef PHIMOE_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &b->scheduler_bottom, &b->scheduler_size);
#endif
  try {
    (*b->fn)();
  } catch (const std::exception &e) {
    if (b->error.empty())
      b->error = e.what();
  } catch (...) {
    if (b->error.empty())
      b->error = "an exception";
  }
  lane.state = State::kDone;
  switch_stack(&lane.sp, b->scheduler_sp, b->scheduler_bottom, b->scheduler_size,
               &lane.fake_stack, true);
  std::abort(); // a finished fiber is never resumed
}

// The initial stack of a fiber: what phimoe_emu_switch pops (MXCSR and x87 control word,
// r15 .. rbp), then fiber_entry as the return address, entered with rsp = 8 mod 16.
void *fresh_stack(Stack &stack) {
#ifdef PHIMOE_EMU_ASAN
  // A fiber abandoned by a failed kernel leaves its frames' poison behind.
  __asan_unpoison_memory_region(stack.bottom(), kStackBytes);
#endif
  uintptr_t top = reinterpret_cast<uintptr_t>(stack.top()) & ~uintptr_t(15);
  uint64_t *p = reinterpret_cast<uint64_t *>(top);
  *--p = 0;                                             // fiber_entry's return address: none
  *--p = reinterpret_cast<uint64_t>(&fiber_entry);      // ret of phimoe_emu_switch
  for (int i = 0; i < 6; ++i)
    *--p = 0;                                           // rbp, rbx, r12 .. r15
  *--p = 0x1F80ull | (0x037Full << 32);                 // MXCSR, x87 control word
  return p;
}

// "emulated kernel NAME (block ... of ...; ... threads)" for errors.
std::string describe(const char *name, const ThreadState &ts) {
  char where[160];
  std::snprintf(where, sizeof where, " (block %u,%u,%u of %u,%u,%u; %u,%u,%u threads)",
                ts.block_idx.x, ts.block_idx.y, ts.block_idx.z, ts.grid_dim.x, ts.grid_dim.y,
                ts.grid_dim.z, ts.block_dim.x, ts.block_dim.y, ts.block_dim.z);
  return std::string("emulated kernel ") + name + where;
}

// Runs one block to the end; throws with what went wrong.
void run_block(Block &b, const char *name, dim3 grid, dim3 block, uint3 block_idx,
               size_t shared_bytes) {
  const int threads = static_cast<int>(block.x * block.y * block.z);
  const int nwarps = (threads + 31) / 32;
  b.lanes.assign(threads, Lane());
  b.warps.resize(nwarps);
  while (static_cast<int>(b.stacks.size()) < threads)
    b.stacks.push_back(std::make_unique<Stack>());
  b.shared.reset(shared_bytes ? new unsigned char[shared_bytes] : nullptr);
  if (shared_bytes) // never zero on a GPU: reads of unwritten words are nan
    std::memset(b.shared.get(), 0xff, shared_bytes);
  b.error.clear();
  for (int i = 0; i < threads; ++i) {
    Lane &l = b.lanes[i];
    l.ts.thread_idx = uint3{static_cast<unsigned>(i) % block.x,
                            static_cast<unsigned>(i) / block.x % block.y,
                            static_cast<unsigned>(i) / (block.x * block.y)};
    l.ts.block_idx = block_idx;
    l.ts.block_dim = block;
    l.ts.grid_dim = grid;
    l.ts.lane = i % 32;
    l.ts.warp = i / 32;
    l.sp = fresh_stack(*b.stacks[i]);
  }
  Block *outer = tl_block;
  tl_block = &b;
  auto fail = [&](const std::string &why) {
    tl_block = outer;
    b.current = -1;
    throw std::runtime_error(describe(name, b.lanes[0].ts) + ": " + why);
  };
  std::vector<int> order(threads);
  for (int i = 0; i < threads; ++i)
    order[i] = i;
  for (;;) {
    // The order in which the threads run up to their next barrier: a kernel whose result
    // depends on it reads shared memory another thread writes without a barrier between.
    if (schedule().kind == Schedule::kReverse)
      std::reverse(order.begin(), order.end());
    else if (schedule().kind == Schedule::kRandom)
      std::shuffle(order.begin(), order.end(), schedule().rng);
    for (int i : order)
      if (b.lanes[i].state == State::kReady) {
        b.current = i;
        switch_stack(&b.scheduler_sp, b.lanes[i].sp, b.stacks[i]->bottom(), kStackBytes,
                     &b.scheduler_fake_stack);
        if (!b.error.empty())
          fail("thread " + std::to_string(i) + ": " + b.error);
      }
    b.current = -1;
    // Every thread now waits at a barrier or has exited. Collectives first: a warp's lanes
    // are released when every lane of the mask waits in the same collective.
    bool released = false;
    int done = 0, at_block = 0;
    for (int w = 0; w < nwarps; ++w) {
      for (int l = 0; l < 32; ++l) {
        const int i = w * 32 + l;
        if (i >= threads || b.lanes[i].state != State::kWarpBarrier)
          continue;
        const Lane &first = b.lanes[i];
        bool all_there = true;
        for (int m = 0; m < 32; ++m) {
          if (!(first.mask >> m & 1u))
            continue;
          const int j = w * 32 + m;
          if (j >= threads)
            fail("thread " + std::to_string(i) + ": a warp collective's mask names lane " +
                 std::to_string(m) + ", which the block does not have");
          const Lane &other = b.lanes[j];
          if (other.state == State::kDone)
            fail("thread " + std::to_string(i) + ": a warp collective's mask names lane " +
                 std::to_string(m) + ", which has exited");
          if (other.state == State::kWarpBarrier &&
              (other.mask != first.mask || other.ops != first.ops))
            fail("threads " + std::to_string(i) + " and " + std::to_string(j) +
                 " of one warp wait in different warp collectives (masks " +
                 std::to_string(first.mask) + ", " + std::to_string(other.mask) + ")");
          if (other.state != State::kWarpBarrier)
            all_there = false;
        }
        if (all_there) {
          for (int m = 0; m < 32; ++m)
            if (first.mask >> m & 1u)
              b.lanes[w * 32 + m].state = State::kReady;
          released = true;
        }
        break; // one collective per warp at a time
      }
    }
    if (released)
      continue;
    for (const Lane &l : b.lanes) {
      done += l.state == State::kDone;
      at_block += l.state == State::kBlockBarrier;
    }
    if (done == threads) {
      if (pdl_launches())
        for (int i = 0; i < threads; ++i)
          if (!b.lanes[i].prologue)
            fail("thread " + std::to_string(i) + " ended without PHIMOE_CUDA_KERNEL_PROLOGUE, "
                 "which a kernel launched with PHIMOE_CUDA_PDL=1 needs before it reads what "
                 "the kernel before it wrote");
      break;
    }
    if (done + at_block == threads) {
      for (Lane &l : b.lanes)
        if (l.state == State::kBlockBarrier)
          l.state = State::kReady;
      continue;
    }
    std::string who;
    for (int i = 0; i < threads && who.size() < 200; ++i)
      if (b.lanes[i].state == State::kWarpBarrier)
        who += " " + std::to_string(i);
    fail("deadlock: some threads wait at __syncthreads while others wait in a warp "
         "collective (threads" + who + ")");
  }
  tl_block = outer;
}

// ---- runtime state ---------------------------------------------------------------------
struct Runtime {
  std::map<uintptr_t, size_t> allocations; // device memory: start -> bytes
  std::map<const void *, int> max_dynamic_shared; // cudaFuncSetAttribute
  cudaError_t last_error = cudaSuccess;
  // What ran, printed at exit to stderr when PHIMOE_EMU_STATS is set (tests check that decode
  // steps really ran as graphs).
  long long launches = 0, graphs_captured = 0, graph_launches = 0;
  ~Runtime() {
    const char *stats = std::getenv("PHIMOE_EMU_STATS");
    if (stats && *stats && std::strcmp(stats, "0") != 0)
      std::fprintf(stderr,
                   "phimoe-emu: %lld kernel launches, %lld graphs captured, %lld graph "
                   "launches\n",
                   launches, graphs_captured, graph_launches);
  }
};
Runtime &rt() {
  static Runtime r;
  return r;
}
thread_local Block tl_block_storage;

// Whether [p, p + bytes) lies in one device allocation.
bool is_device(const void *p, size_t bytes = 1) {
  const auto &a = rt().allocations;
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  auto it = a.upper_bound(u);
  if (it == a.begin())
    return false;
  --it;
  return u + bytes <= it->first + it->second;
}

cudaError_t fail_with(cudaError_t e) {
  rt().last_error = e;
  return e;
}

} // namespace

const ThreadState &self() { return current_lane().ts; }

void set_schedule(const std::string &mode) {
  if (!schedule().set(mode))
    throw std::invalid_argument("CUDA emulation: unknown schedule " + mode);
}

void grid_dependency_wait() {
  Lane &l = current_lane();
  if (l.synced)
    trap("PHIMOE_CUDA_KERNEL_PROLOGUE after a barrier or a warp collective: it must come "
         "first");
  l.prologue = true;
}

void sync_block() {
  Lane &l = current_lane();
  l.synced = true;
  l.state = State::kBlockBarrier;
  yield(l);
}

const unsigned char *warp_exchange(unsigned mask, const void *data, size_t bytes) {
  Lane &l = current_lane();
  if (!(mask >> l.ts.lane & 1u))
    trap("a warp collective whose mask leaves out the calling lane");
  Block &b = *tl_block;
  Warp &w = b.warps[l.ts.warp];
  l.synced = true;
  const int phase = l.ops & 1u;
  if (bytes)
    std::memcpy(w.slots[phase][l.ts.lane], data, bytes);
  ++l.ops;
  l.mask = mask;
  l.state = State::kWarpBarrier;
  yield(l);
  // A lane resumes only when every lane of the mask has written this phase's slot, and no
  // lane can write it again before every lane has passed the next collective.
  return &w.slots[phase][0][0];
}

void sync_warp(unsigned mask) { (void)warp_exchange(mask, nullptr, 0); }

void *dynamic_shared() {
  current_lane();
  return tl_block->shared.get();
}

void trap(const char *why) { throw std::runtime_error(why); }

void expect_device(const void *p, size_t bytes, const char *what) {
  if (!is_device(p, bytes)) {
    char why[128];
    std::snprintf(why, sizeof why, "%s on %zu bytes at %p outside device memory", what, bytes,
                  p);
    trap(why);
  }
}

void prefetch_l2(const void *p, size_t bytes) {
  if (bytes != 0)
    expect_device(p, bytes, "a prefetch");
}

void ldmatrix_x4(const void *row, uint32_t (&d)[4]) {
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0)
    trap("ldmatrix: a row address that is not 16-byte aligned");
  const unsigned char *slots = warp_exchange(0xffffffffu, &row, sizeof row);
  const int lane = self().lane;
  for (int i = 0; i < 4; ++i) {
    const auto *src = lane_value<const unsigned char *>(slots, 8 * i + lane / 4);
    std::memcpy(&d[i], src + 4 * (lane % 4), 4);
  }
}

uint32_t cvt_rn_bf16x2_f32(float hi, float lo) {
  auto round = [](float f) -> uint32_t {
    if (std::isnan(f))
      return 0x7fffu;
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint32_t keep = u >> 16, rest = u & 0xffffu;
    // above the half-way point, or at it with an odd result: up (into the exponent, to inf)
    return keep + (rest > 0x8000u || (rest == 0x8000u && (keep & 1u)) ? 1u : 0u);
  };
  return round(lo) | round(hi) << 16;
}

void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  struct Fragments {
    uint32_t a[4], b[2];
    float c[4];
  } mine;
  static_assert(sizeof(Fragments) <= kSlotBytes, "mma fragments");
  std::memcpy(mine.a, a, sizeof mine.a);
  std::memcpy(mine.b, b, sizeof mine.b);
  std::memcpy(mine.c, d, sizeof mine.c);
  const unsigned char *slots = warp_exchange(0xffffffffu, &mine, sizeof mine);
  auto frag = [&](int lane) { return lane_value<Fragments>(slots, lane); };
  auto bf16 = [](uint32_t reg, int half) {
    return __uint_as_float(((reg >> (16 * half)) & 0xffffu) << 16);
  };
  // The PTX ISA's layout: A[row][k] is half k % 2 of register (row >= 8) + 2 (k >= 8) of lane
  // (row % 8) * 4 + (k % 8) / 2; B[k][col] half k % 2 of register (k >= 8) of lane
  // col * 4 + (k % 8) / 2; C/D element c of a lane at row lane / 4 + 8 (c / 2), column
  // 2 (lane % 4) + c % 2.
  const int lane = self().lane;
  for (int c = 0; c < 4; ++c) {
    const int row = lane / 4 + 8 * (c / 2), col = 2 * (lane % 4) + c % 2;
    double sum = 0.0;
    for (int k = 0; k < 16; ++k) {
      const Fragments fa = frag((row % 8) * 4 + (k % 8) / 2);
      const Fragments fb = frag(col * 4 + (k % 8) / 2);
      const float x = bf16(fa.a[(row >= 8) + 2 * (k >= 8)], k % 2);
      const float y = bf16(fb.b[k >= 8], k % 2);
      sum += static_cast<double>(x) * y;
    }
    d[c] = static_cast<float>(static_cast<double>(mine.c[c]) + sum);
  }
}

namespace {

void run_grid(dim3 grid, dim3 block, size_t shared_bytes, const char *name,
              const std::function<void()> &fn) {
  ++rt().launches;
  Block &b = tl_block_storage;
  const std::function<void()> *outer = b.fn;
  b.fn = &fn;
  try {
    // Blocks in index order, or (reverse and random schedules) in the schedule's order: a
    // kernel whose blocks depend on each other's writes fails in some order.
    const size_t blocks = static_cast<size_t>(grid.x) * grid.y * grid.z;
    std::vector<size_t> order(blocks);
    for (size_t i = 0; i < blocks; ++i)
      order[i] = i;
    if (schedule().kind == Schedule::kReverse)
      std::reverse(order.begin(), order.end());
    else if (schedule().kind == Schedule::kRandom)
      std::shuffle(order.begin(), order.end(), schedule().rng);
    for (size_t i : order) {
      const unsigned x = static_cast<unsigned>(i % grid.x),
                     y = static_cast<unsigned>(i / grid.x % grid.y),
                     z = static_cast<unsigned>(i / (static_cast<size_t>(grid.x) * grid.y));
      run_block(b, name, grid, block, uint3{x, y, z}, shared_bytes);
    }
  } catch (...) {
    b.fn = outer;
    throw;
  }
  b.fn = outer;
}

} // namespace

} // namespace phimoe_emu

// ---- streams, events, graphs --------------------------------------------------------------
using Node = std::function<void()>;
struct CUstream_st {
  bool capturing = false, invalidated = false;
  std::vector<Node> nodes;
};
struct CUgraph_st {
  std::vector<Node> nodes;
};
struct CUgraphExec_st {
  std::vector<Node> nodes;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point at;
};

namespace phimoe_emu {
namespace {

std::vector<CUstream_st *> &capturing_streams() {
  static thread_local std::vector<CUstream_st *> streams;
  return streams;
}
// For synchronous work: whether a stream of this thread captures, in which case the real
// runtime refuses the work and invalidates the capture (cudaStreamCaptureModeThreadLocal /
// Global), as this does.
bool refused_during_capture() {
  auto &streams = capturing_streams();
  if (streams.empty())
    return false;
  for (CUstream_st *s : streams)
    s->invalidated = true;
  return true;
}

} // namespace

void submit(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream, const char *name,
            const void *kernel, std::function<void()> fn) {
  const unsigned long long threads =
      static_cast<unsigned long long>(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > 1024 ||
      block.z > 64 || grid.y > 65535 || grid.z > 65535) {
    fail_with(cudaErrorInvalidConfiguration);
    return;
  }
  auto opt_in = rt().max_dynamic_shared.find(kernel);
  const size_t allowed =
      opt_in == rt().max_dynamic_shared.end() ? 48 * 1024 : static_cast<size_t>(opt_in->second);
  if (shared_bytes > allowed || shared_bytes > 227 * 1024) {
    fail_with(cudaErrorInvalidValue);
    return;
  }
  if (stream && stream->capturing) {
    std::string label = name;
    stream->nodes.push_back([grid, block, shared_bytes, label, fn]() {
      run_grid(grid, block, shared_bytes, label.c_str(), fn);
    });
    return;
  }
  if (!stream && refused_during_capture()) { // the legacy stream syncs with the capturing one
    fail_with(cudaErrorStreamCaptureImplicit);
    return;
  }
  run_grid(grid, block, shared_bytes, name, fn);
}

} // namespace phimoe_emu

using phimoe_emu::refused_during_capture;
using phimoe_emu::fail_with;
using phimoe_emu::is_device;
using phimoe_emu::rt;

extern "C" {

cudaError_t cudaGetDeviceCount(int *count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : fail_with(cudaErrorInvalidDevice);
}
cudaError_t cudaGetDevice(int *device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
  if (device != 0)
    return fail_with(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof *prop);
  std::snprintf(prop->name, sizeof prop->name, "phimoe CUDA emulation on the CPU");
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 1;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->sharedMemPerBlock = 48 * 1024;
  prop->sharedMemPerBlockOptin = 227 * 1024;
  prop->totalGlobalMem = size_t(1) << 34;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int *v) {
  *v = 13000;
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = rt().last_error;
  rt().last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return rt().last_error; }

const char *cudaGetErrorName(cudaError_t e) {
  switch (e) {
  case cudaSuccess: return "cudaSuccess";
  case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
  case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
  case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
  case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
  case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
  case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
  case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
  case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
  case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
  case cudaErrorIllegalState: return "cudaErrorIllegalState";
  default: return "cudaError (emulation)";
  }
}
const char *cudaGetErrorString(cudaError_t e) {
  switch (e) {
  case cudaSuccess: return "no error";
  case cudaErrorInvalidValue: return "invalid argument";
  case cudaErrorMemoryAllocation: return "out of memory";
  case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  case cudaErrorInvalidDevice: return "invalid device ordinal";
  case cudaErrorInvalidDevicePointer: return "invalid device pointer";
  case cudaErrorInvalidResourceHandle: return "invalid resource handle";
  case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
  case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
  case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
  case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
  default: return "an error of the CUDA emulation";
  }
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
  if (refused_during_capture())
    return fail_with(cudaErrorStreamCaptureUnsupported);
  // Exactly `bytes` (ASan builds see reads past the end), aligned as cudaMalloc's.
  const size_t size = std::max<size_t>(bytes, 1);
  void *q = nullptr;
  if (posix_memalign(&q, 256, size) != 0)
    return fail_with(cudaErrorMemoryAllocation);
  std::memset(q, 0xff, size); // cudaMalloc does not clear: unwritten floats read as nan
  rt().allocations[reinterpret_cast<uintptr_t>(q)] = size;
  *p = q;
  return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
  if (!p)
    return cudaSuccess;
  auto it = rt().allocations.find(reinterpret_cast<uintptr_t>(p));
  if (it == rt().allocations.end())
    return fail_with(cudaErrorInvalidDevicePointer);
  rt().allocations.erase(it);
  std::free(p);
  return cudaSuccess;
}

} // extern "C"

namespace {

// Streams, events and graphs are host objects.
template <class T> cudaError_t make(T **handle) {
  *handle = new T();
  return cudaSuccess;
}
template <class T> cudaError_t destroy(T *handle) {
  delete handle;
  return cudaSuccess;
}

// The direction's pointers are where they should be (device memory from cudaMalloc, host
// memory not).
bool direction_ok(void *dst, const void *src, cudaMemcpyKind kind) {
  switch (kind) {
  case cudaMemcpyHostToDevice: return is_device(dst) && !is_device(src);
  case cudaMemcpyDeviceToHost: return !is_device(dst) && is_device(src);
  case cudaMemcpyDeviceToDevice: return is_device(dst) && is_device(src);
  case cudaMemcpyHostToHost: return !is_device(dst) && !is_device(src);
  default: return true;
  }
}

} // namespace

extern "C" {

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
  if (refused_during_capture())
    return fail_with(cudaErrorStreamCaptureUnsupported);
  if (!direction_ok(dst, src, kind))
    return fail_with(cudaErrorInvalidValue);
  if (bytes)
    std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (!direction_ok(dst, src, kind))
    return fail_with(cudaErrorInvalidValue);
  if (stream && stream->capturing) {
    // Graph memcpy nodes copy between device buffers only (pageable host memory: no).
    if (kind != cudaMemcpyDeviceToDevice) {
      stream->invalidated = true;
      return fail_with(cudaErrorStreamCaptureUnsupported);
    }
    stream->nodes.push_back([dst, src, bytes]() { std::memcpy(dst, src, bytes); });
    return cudaSuccess;
  }
  if (!stream && refused_during_capture())
    return fail_with(cudaErrorStreamCaptureImplicit);
  if (bytes)
    std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int value, size_t bytes) {
  if (refused_during_capture())
    return fail_with(cudaErrorStreamCaptureUnsupported);
  if (!is_device(p))
    return fail_with(cudaErrorInvalidValue);
  std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t stream) {
  if (!is_device(p))
    return fail_with(cudaErrorInvalidValue);
  if (stream && stream->capturing) {
    stream->nodes.push_back([p, value, bytes]() { std::memset(p, value, bytes); });
    return cudaSuccess;
  }
  std::memset(p, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  if (refused_during_capture())
    return fail_with(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *stream) { return make(stream); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int) { return make(stream); }
cudaError_t cudaStreamDestroy(cudaStream_t stream) { return destroy(stream); }
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if ((stream && stream->capturing) || (!stream && refused_during_capture())) {
    if (stream)
      stream->invalidated = true;
    return fail_with(cudaErrorStreamCaptureUnsupported);
  }
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus *status) {
  *status = stream && stream->capturing
                ? (stream->invalidated ? cudaStreamCaptureStatusInvalidated
                                       : cudaStreamCaptureStatusActive)
                : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  if (!stream) // the legacy stream cannot be captured
    return fail_with(cudaErrorStreamCaptureUnsupported);
  if (stream->capturing)
    return fail_with(cudaErrorIllegalState);
  stream->capturing = true;
  stream->invalidated = false;
  stream->nodes.clear();
  phimoe_emu::capturing_streams().push_back(stream);
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
  *graph = nullptr;
  if (!stream || !stream->capturing)
    return fail_with(cudaErrorIllegalState);
  auto &streams = phimoe_emu::capturing_streams();
  for (size_t i = 0; i < streams.size(); ++i)
    if (streams[i] == stream)
      streams.erase(streams.begin() + static_cast<long>(i));
  stream->capturing = false;
  if (stream->invalidated) {
    stream->nodes.clear();
    return fail_with(cudaErrorStreamCaptureInvalidated);
  }
  *graph = new CUgraph_st{std::move(stream->nodes)};
  stream->nodes.clear();
  ++rt().graphs_captured;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long) {
  if (!graph)
    return fail_with(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->nodes};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!exec)
    return fail_with(cudaErrorInvalidValue);
  if (stream && stream->capturing) {
    for (const Node &n : exec->nodes)
      stream->nodes.push_back(n);
    return cudaSuccess;
  }
  ++rt().graph_launches;
  for (const Node &n : exec->nodes)
    n();
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) { return destroy(graph); }
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) { return destroy(exec); }

cudaError_t cudaEventCreate(cudaEvent_t *event) { return make(event); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int) { return make(event); }
cudaError_t cudaEventDestroy(cudaEvent_t event) { return destroy(event); }
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
  event->at = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) {
  if (refused_during_capture())
    return fail_with(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void *func, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > 227 * 1024)
      return fail_with(cudaErrorInvalidValue);
    rt().max_dynamic_shared[func] = value;
  }
  return cudaSuccess;
}

} // extern "C"
