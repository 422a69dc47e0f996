#!/usr/bin/env bash
# bench/llamacpp.sh - fetch llama.cpp (as vendored in llama-cpp-python's PyPI sdist) and build its CPU
# tools, cached under ~/.cache/phimoec/llama.cpp-<version>/; a second run downloads and builds nothing.
#
#   bench/llamacpp.sh            fetch + build if needed, then print KEY=VALUE lines (paths, version)
#   bench/llamacpp.sh --env      only print the KEY=VALUE lines (fails if not built)
#   bench/llamacpp.sh --fetch    only fetch the source (what bench/llamacpp_cuda.sh builds), print
#                                its directory
#
# What it builds (CMake Release, GGML_NATIVE=ON, CPU only, shared libraries, no curl/openssl, no
# tests/examples): llama-bench, llama-quantize, llama-perplexity, llama-tokenize, llama-server
# (bench/serve_throughput.py; without its web UI, which llama.cpp would download) and libllama.so.
# The cache also keeps llama.cpp's convert_hf_to_gguf.py + gguf-py (conversion) and the sdist's
# llama_cpp Python package (ctypes bindings of that exact llama.cpp, used to read its logits).
# Nothing of llama.cpp goes into this repository.
#
# Environment: LLAMA_CPP_PYTHON_VERSION (default below, pinned), PHIMOE_CACHE (default
# ~/.cache/phimoec), PHIMOE_VENV (python used for `pip download`; default .venv, else python3),
# CC/CXX (default: CMake's choice, i.e. the system cc/c++), LLAMA_CPP_JOBS (default: nproc).
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${PHIMOE_CACHE:-$HOME/.cache/phimoec}/llama.cpp-$VERSION"
SRC="$CACHE/src"            # vendor/llama.cpp of the sdist
PYPKG="$CACHE/python"       # the sdist's llama_cpp package (ctypes bindings)
BUILD="$CACHE/build"
BIN="$BUILD/bin"
TOOLS=(llama-bench llama-quantize llama-perplexity llama-tokenize llama-server)

pick_python() {
  if [[ -n "${PHIMOE_VENV:-}" && -x "$PHIMOE_VENV/bin/python" ]]; then echo "$PHIMOE_VENV/bin/python"
  elif [[ -x "$ROOT/.venv/bin/python" ]]; then echo "$ROOT/.venv/bin/python"
  else command -v python3; fi
}

print_env() {
  # Values are shell-quoted (printf %q): `eval "$(bench/llamacpp.sh --env)"` works.
  local commit
  commit="$(cat "$CACHE/llama.cpp-commit" 2>/dev/null || echo unknown)"
  printf 'LLAMA_CPP_PYTHON_VERSION=%q\n' "$VERSION"
  printf 'LLAMA_CPP_COMMIT=%q\n' "$commit"
  printf 'LLAMA_CPP_DIR=%q\n' "$SRC"
  printf 'LLAMA_CPP_BIN=%q\n' "$BIN"
  printf 'LLAMA_CPP_LIB_PATH=%q\n' "$BIN"
  printf 'LLAMA_CPP_PYTHONPATH=%q\n' "$PYPKG:$SRC/gguf-py:$SRC"
  printf 'LLAMA_CPP_COMPILER=%q\n' "$(cat "$CACHE/compiler" 2>/dev/null || echo unknown)"
  printf 'LLAMA_CPP_BUILD_CONFIG=%q\n' "$(cat "$CACHE/.built" 2>/dev/null || echo unknown)"
}

tools_present() {
  local t
  for t in "${TOOLS[@]}"; do [[ -x "$BIN/$t" ]] || return 1; done
  [[ -f "$BIN/libllama.so" ]]
}

# On a CPU with AMX, GGML_NATIVE builds ggml's AMX backend, whose q4_K matrix multiply crashed
# (SIGSEGV in ggml_backend_amx_mul_mat, the first forward of llama-bench on the benchmark's q4k
# GGUF, Intel Xeon with amx_int8, 2026-12-06; the same crash as llama.cpp issue 20824, closed
# without a fix). The build then leaves AMX out (-mno-amx-*, which win over -march=native), so
# that llama.cpp runs with its AVX-512 kernels (repacked q4_K by default, plain with llama-bench
# --repack 0, which prefills faster on that machine: bench_cpu.py runs both);
# LLAMA_CPP_AMX=1 keeps AMX in.
CONFIG="native"
if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null && [[ "${LLAMA_CPP_AMX:-0}" != 1 ]]; then
  CONFIG="native, no AMX"
fi
NO_AMX_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"

built() { tools_present && [[ -f "$CACHE/.built" && "$(cat "$CACHE/.built")" == "$CONFIG" ]]; }

if [[ "${1:-}" == "--env" ]]; then
  built || { echo "llama.cpp $VERSION is not built: run bench/llamacpp.sh" >&2; exit 1; }
  print_env
  exit 0
fi

mkdir -p "$CACHE"

# 1. The source: `pip download` of the pinned sdist (PyPI), unpacked once.
if [[ ! -f "$CACHE/.fetched" ]]; then
  PY="$(pick_python)"
  tmp="$(mktemp -d "$CACHE/fetch.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  echo "llamacpp.sh: downloading llama-cpp-python==$VERSION (sdist) from PyPI" >&2
  # (pip prepares the sdist's metadata with its build backend, in an isolated environment.)
  "$PY" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$tmp" >&2
  tar -xzf "$tmp"/llama_cpp_python-"$VERSION".tar.gz -C "$tmp"
  top="$tmp/llama_cpp_python-$VERSION"
  [[ -f "$top/vendor/llama.cpp/CMakeLists.txt" ]] || { echo "no vendor/llama.cpp in the sdist" >&2; exit 1; }
  rm -rf "$SRC" "$PYPKG"
  mv "$top/vendor/llama.cpp" "$SRC"
  mkdir -p "$PYPKG" && mv "$top/llama_cpp" "$PYPKG/llama_cpp"
  # The llama.cpp commit this release vendors, from the sdist's changelog ("update llama.cpp to
  # ggml-org/llama.cpp@<hash>", the first such line under this version's heading).
  awk -v v="## [$VERSION]" '$0==v{f=1;next} f&&/^## \[/{exit} f&&match($0,/llama\.cpp@[0-9a-f]+/){print substr($0,RSTART+10,RLENGTH-10); exit}' \
      "$top/CHANGELOG.md" > "$CACHE/llama.cpp-commit" || true
  [[ -s "$CACHE/llama.cpp-commit" ]] || echo unknown > "$CACHE/llama.cpp-commit"
  cp "$tmp"/llama_cpp_python-"$VERSION".tar.gz "$CACHE/"
  rm -rf "$tmp"
  trap - EXIT
  touch "$CACHE/.fetched"
fi

if [[ "${1:-}" == "--fetch" ]]; then
  echo "$SRC"
  exit 0
fi

# 2. The build: llama.cpp's own CMake, only when a tool is missing.
if ! built; then
  commit="$(cat "$CACHE/llama.cpp-commit")"
  gen=()
  command -v ninja > /dev/null && gen=(-G Ninja)
  extra=""
  [[ "$CONFIG" == "native, no AMX" ]] && extra="$NO_AMX_FLAGS"
  flags=(-DCMAKE_C_FLAGS="$extra" -DCMAKE_CXX_FLAGS="$extra") # (also clears a cached choice)
  echo "llamacpp.sh: building llama.cpp @$commit in $BUILD ($CONFIG)" >&2
  cmake "${gen[@]}" -S "$SRC" -B "$BUILD" "${flags[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON \
    -DBUILD_SHARED_LIBS=ON \
    -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_HIP=OFF -DGGML_SYCL=OFF \
    -DGGML_OPENCL=OFF -DGGML_RPC=OFF -DGGML_BACKEND_DL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_COMMIT="$commit" >&2
  cmake --build "$BUILD" -j "${LLAMA_CPP_JOBS:-$(nproc)}" --target "${TOOLS[@]}" llama >&2
  sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$BUILD/CMakeCache.txt" | head -1 |
    xargs -I{} sh -c '{} --version | head -1' > "$CACHE/compiler" 2>/dev/null || true
  tools_present || { echo "llamacpp.sh: build finished but tools are missing in $BIN" >&2; exit 1; }
  echo "$CONFIG" > "$CACHE/.built"
fi

# 3. What the sdist's llama_cpp package imports beyond numpy (bench/llamacpp_logits.py reads
# llama.cpp's logits through it): installed into the benchmark's Python when missing.
PY="$(pick_python)"
if ! "$PY" -c "import diskcache, jinja2, typing_extensions" 2>/dev/null; then
  echo "llamacpp.sh: installing diskcache, jinja2, typing-extensions into $PY's environment" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check diskcache jinja2 typing-extensions >&2
fi

print_env
