"""CUDA phimoe-bin builds (phimoec --target sm_90) run on the CPU by the CUDA emulation of
test/gpu/emu: phimoec builds them with nvcc-emu instead of nvcc, so they are the generated CUDA
C++, the kernels of phimoe_cuda, the CUDA session (device buffers, decode graphs, the LongRoPE
switch) and the command line, run thread by thread on the CPU. test/gpu/gpu_oracle.py's cases
(`emulate`) compare them with transformers and with the CPU phimoe-bin, as on a GPU.

What this cannot tell (docs/cuda.md, "The CUDA emulation"): speed, and whatever the hardware
does that the emulation only models (mma.sync, shuffles, the device's math functions):
test/gpu/run.sh on a GPU."""
import concurrent.futures
import json
import os
import pathlib
import re
import subprocess
import sys
import types

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
RACE_LIBRARY = oracle.BUILD / "test" / "gpu" / "emu" / "libphimoe_cuda_emu_race.a"


EMU_STATS = re.compile(r"(\d+) kernel launches, (\d+) graphs captured, (\d+) graph launches")


def emu_stats(stderr):
    """[kernel launches, graphs captured, graph launches] of PHIMOE_EMU_STATS's line."""
    found = EMU_STATS.search(stderr)
    assert found, stderr
    return [int(g) for g in found.groups()]


def run_with_stats(cmd, **env):
    """An emulated build's command with PHIMOE_EMU_STATS: (its result, emu_stats)."""
    r = subprocess.run(cmd, capture_output=True, text=True,
                       env=dict(os.environ, PHIMOE_EMU_STATS="1", **env))
    assert r.returncode == 0, r.stderr
    return r, emu_stats(r.stderr)


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


@pytest.mark.parametrize("case", ["f32-long-prompt", "q4k"])
def test_emulated_cuda_build_with_programmatic_dependent_launch(case, tmp_path):
    """The same as launched with PHIMOE_CUDA_PDL=1 (launch.h): the emulation then fails a
    kernel any of whose threads does not run PHIMOE_CUDA_KERNEL_PROLOGUE before anything else
    (on a GPU it would read what the kernel before it has not finished writing); these cases
    reach the tensor-core prefill, the grouped MoE and the decode graphs."""
    emulate(case, tmp_path, PHIMOE_CUDA_PDL="1")


@pytest.mark.skipif(not ASAN_LIBRARY.exists(), reason="no AddressSanitizer runtime in this build")
@pytest.mark.parametrize("case", list(gpu_oracle.CASES) + ["text-f32"])
def test_emulated_cuda_build_under_address_sanitizer(case, tmp_path):
    """The same builds with the kernels under AddressSanitizer: a kernel that reads or writes
    past a device buffer (weights, arena, KV cache, workspaces) stops with a report. text-f32
    includes serve's batches (block tables into the paged KV cache)."""
    emulate(case, tmp_path, PHIMOE_EMU_SANITIZE="address")


@pytest.mark.skipif(not RACE_LIBRARY.exists(), reason="no race check in this build (clang only)")
@pytest.mark.parametrize("case", list(gpu_oracle.CASES) + ["text-f32"])
def test_emulated_cuda_build_under_race_check(case, tmp_path):
    """The same builds with every shared- and device-memory access of the kernels checked
    against the barriers, warp collectives, fences and atomics between threads and blocks (the
    emulation's race check, simt.cpp): a read of what another thread wrote, or a write over
    what another thread read, with nothing ordering the two stops the kernel with a report,
    whatever order the threads ran in. The kernels of the generated model as launched (decode
    graphs, fused launches with their last blocks, serve's batches in text-f32)."""
    emulate(case, tmp_path, PHIMOE_EMU_SANITIZE="race")


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
        run, counts = run_with_stats([str(out / "phimoe-bin"), "--tokens", "5,6,7,8", "-n", "70"],
                                     **env)
        return run.stdout, counts

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


def test_profile_has_a_span_for_every_launch(tmp_path):
    """PHIMOE_CUDA_PROFILE (profile.h; bench/bench_gpu.py's kernel table): every kernel launch
    of a run has its span, summed by kernel and launcher with the launcher's shapes; graphs
    are off while profiling, and the tokens are those of a run without it."""
    src = tmp_path / "src"
    oracle.save(oracle.make_model(oracle.tiny_config(layers=2), seed=3), src)
    out = tmp_path / "cuda"
    proc = subprocess.run([str(oracle.PHIMOEC), "compile", str(src), "-o", str(out), "--target",
                           "sm_90", "--quant", "f32"], capture_output=True, text=True,
                          env=dict(os.environ, PHIMOE_NVCC=str(NVCC_EMU)))
    assert proc.returncode == 0, proc.stderr
    cfg = oracle.tiny_config(layers=2)
    profile = tmp_path / "profile.json"

    def run(**env):
        return run_with_stats([str(out / "phimoe-bin"), "--tokens", "5,6,7,8", "-n", "6"], **env)

    plain, _ = run()
    profiled, (launches, captured, replays) = run(PHIMOE_CUDA_PROFILE=str(profile))
    assert profiled.stdout == plain.stdout
    assert (captured, replays) == (0, 0)
    got = json.loads(profile.read_text())
    assert got["launches"] == launches == sum(k["launches"] for k in got["kernels"])
    assert f"PHIMOE_CUDA_PROFILE: {launches} launches" in profiled.stderr
    assert got["kernel_ms"] == pytest.approx(sum(k["ms"] for k in got["kernels"]), rel=1e-4)
    by_name = {(k["kernel"], k["launcher"]): k for k in got["kernels"]}
    assert all(k["ms"] > 0 for k in got["kernels"]), got
    h, i, e = cfg.hidden_size, cfg.intermediate_size, cfg.num_local_experts
    # 6 forwards (the prompt, then 5 decode steps) of 2 layers: per layer one each of these.
    # (o_proj's GEMV runs the norm before the MoE and the MoE's router in its last blocks:
    # linear_add_layer_norm_route, whose launches detail::linear_then_norm makes; the norm
    # after the MoE runs in its down projection's: moe_sparsemixer_add_layer_norm, whose
    # launches detail::moe_then_norm makes, NW the norm's weight)
    moe = (f"moe_then_norm [E = {e}, H = {h}, I = {i}, Routed = true, Next = void, "
           f"Routing = RouteKind::Sparsemixer, Gelu = false, R = float, GU = float, DW = float, "
           f"NW = float, B1 = float, B2 = float]")
    o_norm = (f"linear_then_norm [N = {h}, K = {h}, E = {e}, Next = void, W = float, "
              f"B = float, NW = float, R = float]")
    heads, kv, d = (cfg.num_attention_heads, cfg.num_key_value_heads,
                    h // cfg.num_attention_heads)
    # (the q/k/v projection's GEMV rotates the heads and writes the KV cache in its last
    # blocks: linear_qkv_rope_kv_write)
    qkv = (f"linear_qkv_rope_kv_write [N = {(heads + 2 * kv) * d}, K = {h}, Hq = {heads}, "
           f"Hkv = {kv}, D = {d}, W = float, B = float]")
    for kernel, launcher in [("gemv_qkv_rope_kernel", qkv), ("gemv_norm_kernel", o_norm),
                             ("gate_up_kernel", moe), ("down_kernel", moe)]:
        assert by_name[(kernel, launcher)]["launches"] == 6 * 2, (kernel, sorted(by_name))
    assert not any(k in ("router_kernel", "attention_combine_kernel", "add_layer_norm_route_kernel",
                         "qkv_rope_heads_kernel", "qkv_rope_kernel") for k, _ in by_name), \
        sorted(by_name)
    # Norm launches: only the first layer's input norm (on the embedding), once a forward.
    assert sum(k["launches"] for (name, _), k in by_name.items()
               if name == "layer_norm_kernel") == 6, sorted(by_name)
    attn = by_name[("attention_partial", f"attention_simt [Hq = {heads}, Hkv = {kv}, D = {d}]")]
    assert attn["launches"] == 6 * 2
    lm_head = by_name[("gemv_kernel", f"linear [N = {cfg.vocab_size}, K = {h}, W = float, "
                                      f"B = float]")]
    assert lm_head["launches"] == 6
    # bench_gpu.py reads the weight bytes of a decode launch from these launcher names.
    sys.path.insert(0, str(oracle.ROOT / "bench"))
    import bench_gpu
    assert bench_gpu.decode_weight_bytes("gemv_kernel", lm_head["launcher"], 2) == \
        cfg.vocab_size * h * 4
    assert bench_gpu.decode_weight_bytes("gate_up_kernel", moe, 2) == 2 * 2 * i * h * 4
    assert bench_gpu.decode_weight_bytes("gemv_norm_kernel", o_norm, 2) == (h * h + e * h) * 4
    assert bench_gpu.decode_weight_bytes("gemv_qkv_rope_kernel", qkv, 2) == \
        (heads + 2 * kv) * d * h * 4
    # ... and runs the build's bench under the profile: 4 decode steps, a 12-token prompt.
    runner = types.SimpleNamespace(work=tmp_path, prompts=[12], args=types.SimpleNamespace(gen=4),
                                   tmo=lambda cap: cap)
    phases = bench_gpu.Runner.profile_phimoe(runner, out / "phimoe-bin")
    assert sorted(phases) == ["decode", "prefill"]
    for phase in phases.values():
        assert phase["tokens_per_s"] > 0 and phase["forwards"] >= 2
        assert phase["launches"] == sum(k["launches"] for k in phase["kernels"])
    assert "| gemv_kernel <- linear" in "\n".join(bench_gpu.render_profile(
        dict(layers=[2], engines={"ours/f32": {"profile": phases}})))


def compile_serving_example(out):
    """An emulated sm_90 build of examples/tiny-phimoe at f32 with serve, into `out`."""
    proc = subprocess.run([str(oracle.PHIMOEC), "compile", str(gpu_oracle.EXAMPLE), "-o",
                           str(out), "--target", "sm_90", "--quant", "f32", "--serve"],
                          capture_output=True, text=True,
                          env=dict(os.environ, PHIMOE_NVCC=str(NVCC_EMU)))
    assert proc.returncode == 0, proc.stderr


def test_batched_serve_decode_runs_as_graphs(tmp_path):
    """serve --parallel N of an emulated build (BatchEngine over phimoe_cuda::BatchBackend): its
    decode steps replay CUDA graphs (captured per row count and split count), and the replies
    are those of the same server without graphs. (The oracle's text cases check the replies
    against the CPU build's.)"""
    out = tmp_path / "cuda"
    compile_serving_example(out)

    def serve(**env):
        said = []
        texts = gpu_oracle.serve_completions(
            out / "phimoe-bin", out / "weights.phw", gpu_oracle.SERVE_PROMPTS, 3,
            env=dict(os.environ, PHIMOE_EMU_STATS="1", **env), stderr_out=said)
        return texts, emu_stats(said[0])

    texts, (launches, captured, replays) = serve()
    eager_texts, (_, eager_captured, eager_replays) = serve(PHIMOE_CUDA_GRAPH="0")
    assert (eager_captured, eager_replays) == (0, 0)
    assert texts == eager_texts
    # The three replies have 40 + 12 + up to 48 tokens; every decode step but the first of each
    # (rows, 64 positions) and the one that captures runs as a replay.
    assert captured >= 2 and replays >= 30, (captured, replays)
    assert all(texts), texts


def test_batched_serve_scores_an_echoed_prompt_as_the_model_does(tmp_path):
    """serve of an emulated CUDA build, lm-evaluation-harness's log-likelihood request (token
    ids, echo, logprobs=1, max_tokens=1) beside a plain one: the device forward gives logits
    for every row of the echoed prompt's chunks (short LongRoPE rows, then all again with the
    long set), and each prompt token's log-probability is transformers' at that position."""
    import torch
    import test_server
    from transformers import PhimoeForCausalLM
    out = tmp_path / "cuda"
    compile_serving_example(out)
    config = json.loads((gpu_oracle.EXAMPLE / "config.json").read_text())
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    original = rope.get("original_max_position_embeddings",
                        config.get("original_max_position_embeddings"))
    words = " ".join(test_server.PROMPTS)
    ids = test_server.token_ids(out, words * 3)[:original + 6]
    assert len(ids) == original + 6
    server = test_server.Server(out, "--parallel", "2", "-c", "128")
    try:
        client = server.client()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            plain = pool.submit(client.completions.create, model="phimoe",
                                prompt=test_server.PROMPTS[0], max_tokens=8, temperature=0)
            scored = client.completions.create(model="phimoe", prompt=[ids], max_tokens=1,
                                               temperature=0, logprobs=1, echo=True)
            assert plain.result().choices[0].text
    finally:
        server.stop()
    lp = scored.choices[0].logprobs
    assert len(lp.token_logprobs) == len(ids) + 1 and lp.token_logprobs[0] is None
    oracle.use_reference_longrope()
    model = PhimoeForCausalLM.from_pretrained(gpu_oracle.EXAMPLE, dtype=torch.float32).eval()
    expected = torch.log_softmax(torch.from_numpy(
        oracle.reference_logits(model, ids, original)).double(), dim=-1)
    for t in range(1, len(ids)):
        assert abs(lp.token_logprobs[t] - expected[t - 1, ids[t]].item()) <= 2e-3, t
