// profile.h - PHIMOE_CUDA_PROFILE: where a CUDA phimoe-bin's device time goes, kernel by kernel.
//
// With PHIMOE_CUDA_PROFILE set (and not "0"), every PHIMOE_CUDA_LAUNCH records a CUDA event on
// its stream before the kernel and PHIMOE_CUDA_CHECK_LAUNCH one after it, and the decode step
// runs eagerly (graphs_enabled() is false: a graph's replay has no per-kernel events). At exit
// the spans are summed by kernel and by the launcher that launched it, with the launcher's
// template arguments (the shapes and storage types), and printed to stderr; a value other than
// "1" is also a file that gets them as JSON:
//
//   {"launches": N, "kernel_ms": T, "kernels": [{"kernel": "gemv_kernel",
//     "launcher": "linear [N = 4096, K = 4096, W = block_q4k, B = float]",
//     "launches": n, "ms": t, "mean_us": u}, ...]}            (largest ms first)
//
// A span is the device time from the event before a kernel to the event after it: the
// kernel's run, plus any time the device waited for the host to submit it (eager launches of
// small kernels). bench/bench_gpu.py runs `phimoe-bin bench` with it; the emulation
// (test/gpu/emu) records wall time in its events, so there it times the emulated kernels.
#ifndef PHIMOE_CUDA_PROFILE_H
#define PHIMOE_CUDA_PROFILE_H

#include "phimoe_cuda/check.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace phimoe_cuda::profile {

// The setting, read once: "" when off.
inline const std::string &setting() {
  static const std::string value = [] {
    const char *v = std::getenv("PHIMOE_CUDA_PROFILE");
    return std::string(v && std::strcmp(v, "0") != 0 ? v : "");
  }();
  return value;
}
inline bool enabled() { return !setting().empty(); }

struct Span {
  const char *kernel, *launcher;
  cudaEvent_t begin, end;
};
struct Totals {
  long long launches = 0;
  double ms = 0;
};
struct State {
  std::vector<Span> pending;     // recorded, not yet summed
  std::vector<cudaEvent_t> idle; // events to reuse
  bool open = false;             // pending.back() waits for its end event, on open_stream
  cudaStream_t open_stream = nullptr;
  std::map<std::pair<const char *, const char *>, Totals> totals;
  bool reported = false;
};
inline State &state() {
  static State s;
  return s;
}

inline cudaEvent_t event() {
  State &s = state();
  if (!s.idle.empty()) {
    cudaEvent_t e = s.idle.back();
    s.idle.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  PHIMOE_CUDA_CHECK(cudaEventCreate(&e));
  return e;
}

// Records the end event of the span that waits for it, if one does.
inline void close_open_span() {
  State &s = state();
  if (!s.open)
    return;
  s.open = false;
  PHIMOE_CUDA_CHECK(cudaEventRecord(s.pending.back().end, s.open_stream));
}

// Sums the pending spans (waiting for the last of them to finish).
inline void flush() {
  State &s = state();
  close_open_span(); // (a launch with no PHIMOE_CUDA_CHECK_LAUNCH after it ends here)
  if (s.pending.empty())
    return;
  PHIMOE_CUDA_CHECK(cudaEventSynchronize(s.pending.back().end));
  for (const Span &span : s.pending) {
    float ms = 0;
    PHIMOE_CUDA_CHECK(cudaEventElapsedTime(&ms, span.begin, span.end));
    Totals &t = s.totals[{span.kernel, span.launcher}];
    ++t.launches;
    t.ms += ms;
    s.idle.push_back(span.begin);
    s.idle.push_back(span.end);
  }
  s.pending.clear();
}

// "detail::gemv_kernel<N, K, W, B>" -> "gemv_kernel".
inline std::string kernel_name(const char *text) {
  std::string k(text);
  k = k.substr(0, k.find('<'));
  const size_t colon = k.rfind("::");
  return colon == std::string::npos ? k : k.substr(colon + 2);
}

// A __PRETTY_FUNCTION__ -> "linear [N = 4096, K = 4096, W = block_q4k, B = float]": the
// function's unqualified name and its template arguments (gcc and nvcc write them
// "[with int N = 4096; ...]", clang "[N = 4096, ...]"), without namespaces and types.
inline std::string launcher_name(const char *text) {
  std::string f(text);
  const size_t paren = f.find('(');
  std::string name = f.substr(0, paren);
  const size_t space = name.rfind(' ');
  if (space != std::string::npos)
    name = name.substr(space + 1);
  name = name.substr(0, name.find('<'));
  const size_t colon = name.rfind("::");
  if (colon != std::string::npos)
    name = name.substr(colon + 2);
  const size_t open = f.rfind(") [");
  if (open != std::string::npos && f.back() == ']') {
    std::string args = f.substr(open + 3, f.size() - open - 4);
    if (args.rfind("with ", 0) == 0)
      args = args.substr(5);
    for (size_t at; (at = args.find("; ")) != std::string::npos;)
      args.replace(at, 2, ", ");
    // Each "TYPE NAME = VALUE" (or "NAME = VALUE") as "NAME = VALUE", the value without
    // namespaces.
    std::string out;
    for (size_t start = 0; start < args.size();) {
      size_t end = args.find(", ", start);
      if (end == std::string::npos)
        end = args.size();
      std::string piece = args.substr(start, end - start);
      const size_t eq = piece.find(" = ");
      if (eq != std::string::npos) {
        std::string left = piece.substr(0, eq), value = piece.substr(eq + 3);
        left = left.substr(left.rfind(' ') == std::string::npos ? 0 : left.rfind(' ') + 1);
        for (const char *drop : {"phimoe_cuda::", "phimoe_rt::", "detail::"})
          for (size_t at; (at = value.find(drop)) != std::string::npos;)
            value.erase(at, std::strlen(drop));
        piece = left + " = " + value;
      }
      out += (out.empty() ? "" : ", ") + piece;
      start = end + 2;
    }
    name += " [" + out + "]";
  }
  return name;
}

inline std::string json_string(const std::string &v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\')
      out += '\\';
    out += c;
  }
  return out + "\"";
}

// Prints the totals (stderr) and writes them to the setting's file (unless it is "1").
inline void report() {
  State &s = state();
  if (s.reported)
    return;
  s.reported = true;
  try {
    flush();
  } catch (const std::exception &e) {
    std::fprintf(stderr, "%s\n", e.what());
    return;
  }
  struct Row {
    std::string kernel, launcher;
    Totals t;
  };
  std::vector<Row> rows;
  Totals all;
  for (const auto &[key, t] : s.totals) {
    rows.push_back({kernel_name(key.first), launcher_name(key.second), t});
    all.launches += t.launches;
    all.ms += t.ms;
  }
  std::sort(rows.begin(), rows.end(), [](const Row &a, const Row &b) { return a.t.ms > b.t.ms; });
  std::fprintf(stderr, "PHIMOE_CUDA_PROFILE: %lld launches, %.3f ms of kernel spans\n",
               all.launches, all.ms);
  std::fprintf(stderr, "%10s %6s %9s %10s  %s\n", "ms", "share", "launches", "mean us",
               "kernel <- launcher");
  for (const Row &r : rows)
    std::fprintf(stderr, "%10.3f %5.1f%% %9lld %10.2f  %s <- %s\n", r.t.ms,
                 all.ms > 0 ? 100 * r.t.ms / all.ms : 0.0, r.t.launches,
                 1000 * r.t.ms / static_cast<double>(r.t.launches), r.kernel.c_str(),
                 r.launcher.c_str());
  if (setting() == "1")
    return;
  std::FILE *f = std::fopen(setting().c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "PHIMOE_CUDA_PROFILE: cannot write %s\n", setting().c_str());
    return;
  }
  std::fprintf(f, "{\"launches\": %lld, \"kernel_ms\": %.6f, \"kernels\": [", all.launches,
               all.ms);
  for (size_t i = 0; i < rows.size(); ++i)
    std::fprintf(f, "%s\n {\"kernel\": %s, \"launcher\": %s, \"launches\": %lld, \"ms\": %.6f, "
                    "\"mean_us\": %.3f}",
                 i ? "," : "", json_string(rows[i].kernel).c_str(),
                 json_string(rows[i].launcher).c_str(), rows[i].t.launches, rows[i].t.ms,
                 1000 * rows[i].t.ms / static_cast<double>(rows[i].t.launches));
  std::fprintf(f, "]}\n");
  std::fclose(f);
}

// In PHIMOE_CUDA_LAUNCH's launch configuration, before the kernel: returns `stream`.
inline cudaStream_t begin(cudaStream_t stream, const char *kernel, const char *launcher) {
  if (!enabled())
    return stream;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  PHIMOE_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone)
    return stream; // a graph being captured: no spans (graphs are off while profiling)
  State &s = state();
  static const bool registered = (std::atexit([] { report(); }), true);
  (void)registered;
  close_open_span(); // (the previous launch had no PHIMOE_CUDA_CHECK_LAUNCH)
  if (s.pending.size() >= 4096)
    flush();
  Span span{kernel, launcher, event(), event()};
  PHIMOE_CUDA_CHECK(cudaEventRecord(span.begin, stream));
  s.pending.push_back(span);
  s.open = true;
  s.open_stream = stream;
  return stream;
}

// In PHIMOE_CUDA_CHECK_LAUNCH, after the kernel.
inline void end() {
  if (enabled())
    close_open_span();
}

} // namespace phimoe_cuda::profile

#endif // PHIMOE_CUDA_PROFILE_H
