#!/usr/bin/env bash
# test/gpu/run.sh - the GPU tests of the CUDA backend, for a machine with an NVIDIA GPU.
#
#   test/gpu/run.sh [ARTIFACTS]
#
# (a) builds test/gpu/kernels_test.cu with nvcc for this GPU's architecture and runs it: every
#     kernel of runtime/include/phimoe_cuda/kernels.cuh against a CPU reference on fresh
#     random inputs;
# (b) runs the CUDA phimoe-bin builds of small random PhiMoE models and compares their logits
#     and greedy ids with transformers and with the CPU phimoe-bin, then the command line of
#     CUDA builds of examples/tiny-phimoe: -p greedy text, bench --json and serve against the
#     CPU build (test/gpu/gpu_oracle.py);
# (c) on sm_90 and later, two of (b)'s numeric cases again with PHIMOE_CUDA_PDL=1
#     (programmatic dependent launch; PHIMOE_PDL_CASES names others).
#     The builds come from ARTIFACTS (made elsewhere by `gpu_oracle.py prepare`, which needs
#     phimoec and so MLIR: the directory, or its .tar.xz, unpacked here first), or are made
#     here first when $PHIMOE_BUILD_DIR/compiler/phimoec exists.
#
# Environment: CUDA_HOME (default /usr/local/cuda), PHIMOE_CUDA_ARCH (default: the GPU's, from
# nvidia-smi, else sm_90), PYTHON (default python3), PHIMOE_BUILD_DIR.
# Exit status: 0 when everything ran and passed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cuda=${CUDA_HOME:-/usr/local/cuda}
python=${PYTHON:-python3}
artifacts=${1:-}
work=$(mktemp -d /tmp/phimoe-gpu.XXXXXX)
trap 'rm -rf "$work"' EXIT
status=0

if [ -n "$artifacts" ] && [ ! -d "$artifacts" ]; then
  artifacts=$("$python" "$root/test/gpu/gpu_oracle.py" unpack "$artifacts" "$work/artifacts")
fi

arch=${PHIMOE_CUDA_ARCH:-}
if [ -z "$arch" ] && command -v nvidia-smi >/dev/null; then
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')
  [ -n "$cap" ] && arch=sm_$cap
fi
arch=${arch:-sm_90}
echo "== GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo unknown), arch $arch"

echo "== (a) kernel unit tests"
test_bin=$work/kernels_test
if [ -n "$artifacts" ] && [ -x "$artifacts/kernels_test" ] &&
   [ "$(cat "$artifacts/kernels_test.arch" 2>/dev/null)" = "$arch" ]; then
  echo "(kernels_test prebuilt for $arch by gpu_oracle.py prepare)"
  test_bin=$artifacts/kernels_test
elif [ -x "$cuda/bin/nvcc" ]; then
  "$cuda/bin/nvcc" -std=c++17 -O2 -arch="$arch" -Xcompiler -pthread -I"$root/runtime/include" \
    "$root/test/gpu/kernels_test.cu" "$root/runtime/cpu/convert.cpp" "$root/runtime/quant/quant.cpp" \
    "$root/runtime/quant/q4k.cpp" "$root/runtime/quant/q6k.cpp" \
    -o "$test_bin"
elif [ -n "$artifacts" ] && [ -x "$artifacts/kernels_test" ]; then
  echo "(no nvcc: the prebuilt $artifacts/kernels_test)"
  test_bin=$artifacts/kernels_test
else
  echo "no nvcc at $cuda/bin/nvcc and no prebuilt kernels_test" >&2
  exit 1
fi
"$test_bin" || status=1

echo "== (b) CUDA phimoe-bin against transformers and the CPU phimoe-bin"
if [ -z "$artifacts" ]; then
  phimoec=${PHIMOE_BUILD_DIR:-$root/build}/compiler/phimoec
  if [ ! -x "$phimoec" ]; then
    echo "no ARTIFACTS given and no phimoec at $phimoec: nothing to run for (b)" >&2
    exit 1
  fi
  artifacts=$work/artifacts
  PHIMOE_CUDA_TARGET=$arch "$python" "$root/test/gpu/gpu_oracle.py" prepare "$artifacts"
fi
"$python" "$root/test/gpu/gpu_oracle.py" check "$artifacts" || status=1

# (c) Two of the numeric cases again with programmatic dependent launch (launch.h; sm_90 and
# later): the decode graphs' programmatic edges and the prologues' waits on the hardware.
if [ "${arch#sm_}" -ge 90 ] 2>/dev/null; then
  echo "== (c) the same with PHIMOE_CUDA_PDL=1"
  PHIMOE_CUDA_PDL=1 PHIMOE_ORACLE_CASES="${PHIMOE_PDL_CASES:-q4k f32-long-prompt}" \
    "$python" "$root/test/gpu/gpu_oracle.py" check "$artifacts" || status=1
fi

echo "== $( [ $status = 0 ] && echo PASSED || echo FAILED )"
exit $status
