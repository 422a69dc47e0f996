#!/usr/bin/env bash
# bench/llamacpp_cuda.sh - llama.cpp's CUDA build for bench/bench_gpu.py: the same source as
# bench/llamacpp.sh (the llama.cpp vendored in llama-cpp-python's PyPI sdist), built with
# GGML_CUDA for one architecture, and packed small enough to travel to a GPU machine.
#
#   bench/llamacpp_cuda.sh build SRC BUILD   configure + build llama-bench and llama-quantize
#                                            (prints the seconds it took)
#   bench/llamacpp_cuda.sh pack DEST         (where bench/llamacpp.sh has fetched the source)
#       DEST/llama-src.tar.xz: the source without its docs, models, tests and examples, plus the
#           commit it is (llama.cpp-commit): the build-there fallback, and gguf-py +
#           convert_hf_to_gguf.py for the GGUF conversion;
#       DEST/llama-cuda.tar.xz: bin/ of the build made here by `build` (the two tools and the
#           shared libraries they load, stripped), when that build exists.
#   bench/llamacpp_cuda.sh pack-convert DEST
#       DEST/llama-src.tar.xz with only what the GGUF conversion reads (gguf-py,
#       convert_hf_to_gguf.py, conversion/): for when the whole source does not fit the carry.
#
# The build: CMake Release, shared libraries, GGML_CUDA=ON for CMAKE_CUDA_ARCHITECTURES
# (default 90-real: sm_90 machine code only), GGML_NATIVE=OFF (the CPU of the build machine is
# not the GPU machine's), NCCL off (one GPU), no server/curl/openssl/tests/examples; flash
# attention kernels and CUDA graphs as llama.cpp's defaults have them. cuBLAS and the CUDA
# runtime are linked dynamically (libcublas.so.13, libcudart.so.13): bench_gpu.py finds them on
# the GPU machine (CUDA toolkit or the nvidia-* Python wheels).
#
# Environment: LLAMA_CPP_PYTHON_VERSION (default 0.3.36), PHIMOE_CACHE (~/.cache/phimoec),
# CUDA_HOME (/usr/local/cuda), LLAMA_CUDA_ARCH (90-real), LLAMA_CPP_JOBS (nproc),
# LLAMA_CUDA_BUILD (the build `pack` takes bin/ from; default $CACHE/cuda-sm90/build).
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${PHIMOE_CACHE:-$HOME/.cache/phimoec}/llama.cpp-$VERSION"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
if [[ ! -x "$CUDA_HOME/bin/nvcc" ]] && command -v nvcc > /dev/null; then
  CUDA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
fi
ARCH="${LLAMA_CUDA_ARCH:-90-real}"
TOOLS=(llama-bench llama-quantize)

build() {
  local src=$1 build=$2 start commit gen=()
  start=$(date +%s)
  commit=$(cat "$src/llama.cpp-commit" 2>/dev/null || cat "$CACHE/llama.cpp-commit" 2>/dev/null ||
           echo unknown)
  command -v ninja > /dev/null && gen=(-G Ninja)
  PATH="$CUDA_HOME/bin:$PATH" cmake "${gen[@]}" -S "$src" -B "$build" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_NATIVE=OFF -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
    -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc" -DGGML_CUDA_NCCL=OFF \
    -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_HIP=OFF -DGGML_SYCL=OFF -DGGML_OPENCL=OFF \
    -DGGML_RPC=OFF -DGGML_BACKEND_DL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_COMMIT="$commit" \
    -DCMAKE_EXE_LINKER_FLAGS="-Wl,--allow-shlib-undefined" >&2
  # (--allow-shlib-undefined: libggml-cuda.so calls the driver API, libcuda.so.1, which only a
  # machine with an NVIDIA driver has; the tools resolve it where they run.)
  cmake --build "$build" -j "${LLAMA_CPP_JOBS:-$(nproc)}" --target "${TOOLS[@]}" >&2
  echo "llama.cpp CUDA build: $(( $(date +%s) - start )) s" >&2
}

pack() {
  local dest=$1 src="$CACHE/src" build="${LLAMA_CUDA_BUILD:-$CACHE/cuda-sm90/build}" tmp
  [[ -f "$src/CMakeLists.txt" ]] || { echo "no llama.cpp source in $src: run bench/llamacpp.sh" >&2; exit 1; }
  mkdir -p "$dest"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  # The source minus what a build of the two tools and the conversion never read.
  mkdir -p "$tmp/llama-src"
  tar -C "$src" --exclude=./docs --exclude=./models --exclude=./media --exclude=./tests \
      --exclude=./benches --exclude=./examples --exclude=./pocs --exclude=./.github \
      --exclude=./skills --exclude='*/__pycache__' -cf - . | tar -C "$tmp/llama-src" -xf -
  # CMake adds examples/ and tests/ only when asked; pocs/ comes with examples.
  cp "$CACHE/llama.cpp-commit" "$tmp/llama-src/llama.cpp-commit"
  tar -C "$tmp" -cJf "$dest/llama-src.tar.xz" llama-src
  if [[ -x "$build/bin/llama-bench" ]]; then
    mkdir -p "$tmp/llama-cuda/bin"
    cp -L "$build/bin/llama-bench" "$build/bin/llama-quantize" "$tmp/llama-cuda/bin/"
    # The shared libraries the tools need, by their sonames (what the loader asks for).
    local lib
    for lib in $(LD_LIBRARY_PATH="$build/bin" ldd "$build/bin/llama-bench" "$build/bin/llama-quantize" |
                 awk -v b="$build/bin/" 'index($3, b) == 1 {print $3}' | sort -u); do
      cp -L "$lib" "$tmp/llama-cuda/bin/"
    done
    strip --strip-unneeded "$tmp/llama-cuda/bin/"*
    # The CUDA runtime they were linked with (small, redistributable); cuBLAS is too large to
    # carry and is found there.
    cp -L "$CUDA_HOME"/lib64/libcudart.so.[0-9]* "$tmp/llama-cuda/bin/" 2>/dev/null || true
    cp "$CACHE/llama.cpp-commit" "$tmp/llama-cuda/llama.cpp-commit"
    grep -E '^(CMAKE_CUDA_ARCHITECTURES|CMAKE_CXX_COMPILER|CMAKE_CUDA_COMPILER):' "$build/CMakeCache.txt" \
      > "$tmp/llama-cuda/build-info.txt" || true
    "$CUDA_HOME/bin/nvcc" --version | tail -1 >> "$tmp/llama-cuda/build-info.txt"
    tar -C "$tmp" -cJf "$dest/llama-cuda.tar.xz" llama-cuda
  else
    echo "no CUDA build in $build: only the source is packed (bench_gpu.py builds it there)" >&2
    rm -f "$dest/llama-cuda.tar.xz"
  fi
  ls -l "$dest"/llama-*.tar.xz >&2
}

pack_convert() {
  local dest=$1 src="$CACHE/src" tmp
  mkdir -p "$dest"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  mkdir -p "$tmp/llama-src"
  tar -C "$src" --exclude='*/__pycache__' -cf - gguf-py convert_hf_to_gguf.py conversion |
    tar -C "$tmp/llama-src" -xf -
  cp "$CACHE/llama.cpp-commit" "$tmp/llama-src/llama.cpp-commit"
  tar -C "$tmp" -cJf "$dest/llama-src.tar.xz" llama-src
  ls -l "$dest/llama-src.tar.xz" >&2
}

case "${1:-}" in
  build) [[ $# == 3 ]] || { echo "usage: $0 build SRC BUILD" >&2; exit 2; }; build "$2" "$3" ;;
  pack) [[ $# == 2 ]] || { echo "usage: $0 pack DEST" >&2; exit 2; }; pack "$2" ;;
  pack-convert) [[ $# == 2 ]] || { echo "usage: $0 pack-convert DEST" >&2; exit 2; }
    pack_convert "$2" ;;
  *) sed -n '2,27p' "$0" >&2; exit 2 ;;
esac
