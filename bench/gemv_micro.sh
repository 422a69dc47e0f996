#!/usr/bin/env bash
# Build and run bench/gemv_micro.cpp: our decode GEMV tiles against llama.cpp's vec_dot on the
# same weight bytes (llama.cpp's libggml-cpu from bench/llamacpp.sh, built there if missing).
#   bench/gemv_micro.sh [--threads T] [--mib M] [--reps R] [--iters I]
# Environment: CXX (default clang++-22), MARCH (default native), PHIMOE_CACHE.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
eval "$("$ROOT/bench/llamacpp.sh" --env)"
if [[ ! -f "$LLAMA_CPP_BIN/libggml-cpu.so" ]]; then
  "$ROOT/bench/llamacpp.sh" >&2
fi
OUT="${PHIMOE_CACHE:-$HOME/.cache/phimoec}/bench/gemv_micro"
"${CXX:-clang++-22}" -std=c++20 -O3 -DNDEBUG -march="${MARCH:-native}" -I"$ROOT/runtime/include" \
  "$ROOT/bench/gemv_micro.cpp" -o "$OUT" -L"$LLAMA_CPP_BIN" -lggml-cpu -lggml-base \
  -Wl,-rpath,"$LLAMA_CPP_BIN" -pthread
exec "$OUT" "$@"
