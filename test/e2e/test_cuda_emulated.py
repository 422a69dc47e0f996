"""CUDA phimoe-bin builds (phimoec --target sm_90) run on the CPU by the CUDA emulation of
test/gpu/emu: phimoec builds them with nvcc-emu instead of nvcc, so they are the generated CUDA
C++, the kernels of phimoe_cuda, the CUDA session (device buffers, decode graphs, the LongRoPE
switch) and the command line, run thread by thread on the CPU. test/gpu/gpu_oracle.py's cases
(`emulate`) compare them with transformers and with the CPU phimoe-bin, as on a GPU.

What this cannot tell (docs/cuda.md, "The CUDA emulation"): speed, and whatever the hardware
does that the emulation only models (mma.sync, shuffles, the device's math functions):
test/gpu/run.sh on a GPU."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

import oracle

GPU_DIR = pathlib.Path(__file__).resolve().parents[1] / "gpu"
sys.path.insert(0, str(GPU_DIR))
import gpu_oracle  # noqa: E402

NVCC_EMU = oracle.BUILD / "test" / "gpu" / "emu" / "nvcc-emu"
pytestmark = pytest.mark.skipif(not NVCC_EMU.exists(),
                                reason=f"{NVCC_EMU} is absent: no CUDA backend in this build")

CASES = list(gpu_oracle.CASES) + [f"text-{q}" for q in gpu_oracle.TEXT_QUANTS]


ASAN_LIBRARY = oracle.BUILD / "test" / "gpu" / "emu" / "libphimoe_cuda_emu_asan.a"


def emulate(case, tmp_path, **env):
    proc = subprocess.run([sys.executable, str(GPU_DIR / "gpu_oracle.py"), "emulate",
                           str(tmp_path)], env=dict(os.environ, PHIMOE_ORACLE_CASES=case, **env),
                          capture_output=True, text=True, timeout=1800)
    out = proc.stdout
    assert proc.returncode == 0, out[-5000:] + proc.stderr[-3000:]
    assert f"PASS {case} (phimoec, emulated)" in out, out[-5000:]


@pytest.mark.parametrize("case", CASES)
def test_emulated_cuda_build_matches_the_oracle(case, tmp_path):
    emulate(case, tmp_path)


@pytest.mark.parametrize("case", ["f32-crossing", "f32-long-prompt", "q4k"])
def test_emulated_cuda_build_in_random_thread_and_block_order(case, tmp_path):
    """The same with the threads of each block and the blocks of each grid run in random orders
    (a new one at each barrier and launch): the logits do not depend on the order, the decode
    graphs' bits included (no float atomics, every value written once)."""
    emulate(case, tmp_path, PHIMOE_EMU_SCHEDULE="random:7")


@pytest.mark.skipif(not ASAN_LIBRARY.exists(), reason="no AddressSanitizer runtime in this build")
@pytest.mark.parametrize("case", list(gpu_oracle.CASES) + ["text-f32"])
def test_emulated_cuda_build_under_address_sanitizer(case, tmp_path):
    """The same builds with the kernels under AddressSanitizer: a kernel that reads or writes
    past a device buffer (weights, arena, KV cache, workspaces) stops with a report. text-f32
    includes serve's batches (block tables into the paged KV cache)."""
    emulate(case, tmp_path, PHIMOE_EMU_SANITIZE="address")


def test_decode_steps_run_as_graphs(tmp_path):
    """The decode steps of an emulated build are captured and replayed as CUDA graphs (the
    oracle's graph-against-eager comparison would pass vacuously if they were not): one
    capture per 64 positions and LongRoPE set, a replay per decode step after the first
    (eager) but for the one that switches the set."""
    src = tmp_path / "src"
    oracle.save(oracle.make_model(oracle.tiny_config(layers=1), seed=3, router_spread=0.05),
                src)
    out = tmp_path / "cuda"
    proc = subprocess.run([str(oracle.PHIMOEC), "compile", str(src), "-o", str(out), "--target",
                           "sm_90", "--quant", "f32"], capture_output=True, text=True,
                          env=dict(os.environ, PHIMOE_NVCC=str(NVCC_EMU)))
    assert proc.returncode == 0, proc.stderr

    def stats(env):
        run = subprocess.run([str(out / "phimoe-bin"), "--tokens", "5,6,7,8", "-n", "70"],
                             capture_output=True, text=True,
                             env=dict(os.environ, PHIMOE_EMU_STATS="1", **env))
        assert run.returncode == 0, run.stderr
        found = re.search(r"(\d+) kernel launches, (\d+) graphs captured, (\d+) graph launches",
                          run.stderr)
        assert found, run.stderr
        return run.stdout, [int(g) for g in found.groups()]

    tokens, (launches, captured, replays) = stats({})
    # 70 tokens after a 4-token prompt: 69 decode forwards at positions 4..72. Position 4 runs
    # eagerly; 5..31 replay the graph of (positions < 64, short LongRoPE set); at 32 the
    # sequence passes original_max (32) and is recomputed with the long set (a prefill);
    # 33..63 and 64..72 replay the graphs of (< 64, long) and (< 128, long).
    assert (captured, replays) == (3, 27 + 31 + 9)
    eager_tokens, (eager_launches, eager_captured, eager_replays) = stats(
        {"PHIMOE_CUDA_GRAPH": "0"})
    assert (eager_captured, eager_replays) == (0, 0)
    assert eager_tokens == tokens
    assert launches > eager_launches // 2  # the replays' kernels ran


def test_batched_serve_decode_runs_as_graphs(tmp_path):
    """serve --parallel N of an emulated build (BatchEngine over phimoe_cuda::BatchBackend): its
    decode steps replay CUDA graphs (captured per row count and split count), and the replies
    are those of the same server without graphs. (The oracle's text cases check the replies
    against the CPU build's.)"""
    out = tmp_path / "cuda"
    proc = subprocess.run([str(oracle.PHIMOEC), "compile", str(gpu_oracle.EXAMPLE), "-o",
                           str(out), "--target", "sm_90", "--quant", "f32", "--serve"],
                          capture_output=True, text=True,
                          env=dict(os.environ, PHIMOE_NVCC=str(NVCC_EMU)))
    assert proc.returncode == 0, proc.stderr

    def serve(**env):
        said = []
        texts = gpu_oracle.serve_completions(
            out / "phimoe-bin", out / "weights.phw", gpu_oracle.SERVE_PROMPTS, 3,
            env=dict(os.environ, PHIMOE_EMU_STATS="1", **env), stderr_out=said)
        found = re.search(r"(\d+) kernel launches, (\d+) graphs captured, (\d+) graph launches",
                          said[0])
        assert found, said[0]
        return texts, [int(g) for g in found.groups()]

    texts, (launches, captured, replays) = serve()
    eager_texts, (_, eager_captured, eager_replays) = serve(PHIMOE_CUDA_GRAPH="0")
    assert (eager_captured, eager_replays) == (0, 0)
    assert texts == eager_texts
    # The three replies have 40 + 12 + up to 48 tokens; every decode step but the first of each
    # (rows, 64 positions) and the one that captures runs as a replay.
    assert captured >= 2 and replays >= 30, (captured, replays)
    assert all(texts), texts
