"""bench/bench_gpu.py (the GPU benchmark, run elsewhere): its arithmetic (extrapolation to 32
layers, bytes per decoded token, the roofline) and that the random checkpoint it writes on the GPU machine
holds every tensor phimoec's pack plan asks for. Fast: no packing, no GPU, no llama.cpp."""
import argparse
import json
import pathlib
import sys

import pytest

import oracle

sys.path.insert(0, str(oracle.ROOT / "bench"))
import bench_gpu  # noqa: E402


def test_extrapolation():
    # 10 ms fixed + 10 ms per layer: 100 t/s at 1 layer, 50 at 2, 1/0.33 s at 32.
    x = bench_gpu.extrapolate(100.0, 50.0, 1, 2, 32)
    assert x["s_per_layer"] == pytest.approx(0.01)
    assert x["s_fixed"] == pytest.approx(0.0, abs=1e-12)
    assert x["tokens_per_s"] == pytest.approx(1 / 0.32)
    assert bench_gpu.extrapolate(None, 50.0, 1, 2) is None


def test_bytes_per_token():
    # Experts 2 of 16, the embedding one row of 64, the rest whole; GGUF names as well.
    for layer in ("model.layers.{}.block_sparse_moe.experts.w", "blk.{}.ffn_up_exps.weight"):
        tensors = [(layer.format(i), 1600) for i in range(2)] + [
            ("model.layers.0.self_attn.qkv_proj.weight", 10),
            ("model.layers.1.self_attn.qkv_proj.weight", 10),
            ("lm_head.weight", 500), ("model.embed_tokens.weight", 640)]
        s = bench_gpu.split_bytes(tensors, 16, 2, 64)
        assert s == dict(layer=210.0, fixed=510.0, layers=2)
        assert bench_gpu.bytes_at(s, 32) == 510 + 32 * 210


def test_summary_and_report():
    result = dict(kind="measured", date="2026-12-05T00:00:00+00:00", layers=[1, 2],
                  target_layers=32, prompts=[512], gen=128, host={}, notes=[], errors=[],
                  stages={}, bundle={"commit": "x", "shape": "full"},
                  bandwidth=dict(roofline_gbs=1000.0, source="test"),
                  engines={
                      "ours/q4k": dict(bytes_split=dict(layer=1e8, fixed=1e8, layers=2),
                                       runs={"1": {"pp512": {"tokens_per_s": 1000.0},
                                                   "tg128": {"tokens_per_s": 100.0}},
                                             "2": {"pp512": {"tokens_per_s": 500.0},
                                                   "tg128": {"tokens_per_s": 50.0}}}),
                      "ours/q4k+pdl": dict(bytes_split=dict(layer=1e8, fixed=1e8, layers=2),
                                           runs={"1": {"tg128": {"tokens_per_s": 125.0}},
                                                 "2": {"tg128": {"tokens_per_s": 62.5}}}),
                      "llama.cpp/q4k": dict(bytes_split=dict(layer=1e8, fixed=1e8, layers=2),
                                            runs={"1": {"tg128": {"tokens_per_s": 50.0}},
                                                  "2": {"tg128": {"tokens_per_s": 25.0}}})})
    rows = {(r["engine"], r["test"]): r for r in bench_gpu.summarize(result)}
    tg = rows[("ours/q4k", "tg128")]
    assert tg["tps_32"] == pytest.approx(1 / 0.32)
    assert tg["bytes_32"] == pytest.approx(33e8)
    # roofline: 1000 GB/s over 3.3 GB a token
    assert tg["roofline_tps"] == pytest.approx(1000e9 / 33e8)
    assert tg["roofline_fraction"] == pytest.approx((1 / 0.32) / (1000e9 / 33e8))
    assert tg["vs_llama"] == pytest.approx(2.0)
    # decode timed again with PHIMOE_CUDA_PDL=1: against the same llama.cpp/q4k; no prefill
    pdl = rows[("ours/q4k+pdl", "tg128")]
    assert pdl["vs_llama"] == pytest.approx(2.5)
    assert rows[("ours/q4k+pdl", "pp512")]["tps_32"] is None
    assert "| ours/q4k | tg128 |" in bench_gpu.render_markdown(result)
    assert "Prompt chunks" not in bench_gpu.render_markdown(result)
    # the chunks: phimoec's projects' --max-tokens beside llama-bench's n_ubatch
    result["bundle"]["projects"] = {"q4k-L1": dict(quant="q4k", layers=1, max_tokens=512),
                                    "q4k-L2": dict(quant="q4k", layers=2, max_tokens=512)}
    result["engines"]["llama.cpp/q4k"]["info"] = dict(n_batch=2048, n_ubatch=512)
    assert "Prompt chunks (tokens a forward): phimoec 512; llama.cpp (n_ubatch) 512." in \
        bench_gpu.render_markdown(result)


def test_kernel_profile_table():
    # A decode profile as profile.h writes it: the q4_K expert kernels of Phi-3.5-MoE's
    # shapes; 2 forwards (embed launches). gate_up reads 2 experts x 2 x 6400 x 4096 q4_K
    # values (144 bytes per 256) in 50 us: 1.1796e8 bytes -> 2359 GB/s.
    moe = "moe_sparsemixer [E = 16, H = 4096, I = 6400, R = bf16, GU = block_q4k, DW = block_q4k]"
    gate_up = 2 * 2 * 6400 * 4096 * 144 / 256
    assert bench_gpu.decode_weight_bytes("gate_up_kernel", moe, 2) == gate_up
    assert bench_gpu.decode_weight_bytes("down_kernel", moe, 2) == gate_up / 2
    assert bench_gpu.decode_weight_bytes("router_kernel", moe, 2) == 16 * 4096 * 2
    # phixtral's experts (Gelu): one fc1 row per intermediate value, not a gate and an up row
    gelu = ("moe_then_norm [E = 4, H = 2560, I = 10240, Routed = false, Next = void, "
            "Routing = RouteKind::SoftmaxTop2, Gelu = true, R = bf16, GU = block_q4k, "
            "DW = block_q4k, NW = void, B1 = float, B2 = float]")
    assert bench_gpu.decode_weight_bytes("gate_up_kernel", gelu, 2) == 2 * 10240 * 2560 * 144 / 256
    assert bench_gpu.decode_weight_bytes("down_kernel", gelu, 2) == 2 * 2560 * 10240 * 144 / 256
    assert bench_gpu.decode_weight_bytes(
        "add_layer_norm_route_kernel",
        "add_layer_norm_route [H = 4096, E = 16, W = float, R = bf16]", 2) == 16 * 4096 * 2
    # o_proj's GEMV with the norm and the router in its last blocks: both weights
    o_norm = ("linear_then_norm [N = 4096, K = 4096, E = 16, Next = block_q4k, W = block_q4k, "
              "B = float, NW = float, R = bf16]")
    assert bench_gpu.decode_weight_bytes("gemv_norm_kernel", o_norm, 2) == \
        4096 * 4096 * 144 / 256 + 16 * 4096 * 2
    assert bench_gpu.decode_weight_bytes("gemv_norm_kernel", o_norm.replace("E = 16", "E = 0"),
                                         2) == 4096 * 4096 * 144 / 256
    lm = "linear [N = 32064, K = 4096, W = block_q6k, B = float]"
    assert bench_gpu.decode_weight_bytes("gemv_kernel", lm, 2) == 32064 * 4096 * 210 / 256
    # gcc's spelling too, and kernels that read no weights
    assert bench_gpu.decode_weight_bytes(
        "gemv_kernel", "linear [with int N = 8; int K = 256; W = block_q8_0; B = float]",
        2) == 8 * 256 * 34 / 32
    assert bench_gpu.decode_weight_bytes("layer_norm_kernel", "layer_norm [H = 4096, W = float]",
                                         2) is None
    assert bench_gpu.decode_weight_bytes("gemv_kernel", "linear [N = 8, K = 8, W = int8_t]",
                                         2) is None
    prof = {"launches": 6, "kernel_ms": 0.2, "tokens_per_s": 400.0, "forwards": 2, "kernels": [
        {"kernel": "gate_up_kernel", "launcher": moe, "launches": 2, "ms": 0.1, "mean_us": 50.0},
        {"kernel": "down_kernel", "launcher": moe, "launches": 2, "ms": 0.08, "mean_us": 40.0},
        {"kernel": "embed_kernel", "launcher": "embed [V = 32064, H = 4096, W = block_q8_0]",
         "launches": 2, "ms": 0.02, "mean_us": 10.0}]}
    result = dict(layers=[1, 2], engines={"ours/q4k": {"profile": {"decode": prof}}})
    text = "\n".join(bench_gpu.render_profile(result))
    assert "3.0 launches and 0.100 ms of kernel spans" in text
    assert f"| gate_up_kernel <- {moe} | 1.00 | 50.0 | 50.0% | {gate_up / 50e-6 / 1e9:.0f} |" in text
    assert "| embed_kernel <- embed [V = 32064, H = 4096, W = block_q8_0] | 1.00 | 10.0 | 10.0% |  |" in text
    assert "| (1 more) | | | 10.0% | |" in "\n".join(bench_gpu.render_profile(result, top=2))
    # Against the timed decode of the same build (graphs): 0.125 ms a forward at 8000 tokens/s
    # (2 layers), 0.100 ms of it in kernel spans; the +pdl variant at 9000 tokens/s.
    result.update(gen=128)
    result["engines"]["ours/q4k"]["runs"] = {"1": {}, "2": {"tg128": {"tokens_per_s": 8000.0}}}
    result["engines"]["ours/q4k+pdl"] = {"runs": {"2": {"tg128": {"tokens_per_s": 9000.0}}}}
    result["engines"]["ours/q8_0"] = {"runs": {"2": {"tg128": {"tokens_per_s": 1.0}}}}
    text = "\n".join(bench_gpu.render_profile(result))
    assert ("- ours/q4k, decode with graphs: 0.125 ms a forward; the eager profile's kernel "
            "spans 0.100 ms; between kernels 0.025 ms (20% of the forward)") in text
    assert "- ours/q4k+pdl, decode with graphs: 0.111 ms a forward" in text
    assert "ours/q8_0, decode" not in text


@pytest.mark.skipif(not oracle.PHIMOEC.exists(), reason="phimoec is not built")
def test_checkpoint_covers_the_pack_plan(tmp_path):
    """Every checkpoint tensor a pack plan names is one bench_gpu writes (same names, shapes),
    for the tiny shape at 1 and 2 layers; the projects come from bench_gpu.py prepare."""
    args = argparse.Namespace(bundle=str(tmp_path / "bundle"), layers="1,2", quants="q8_0",
                              shape="tiny", arch="sm_90", build=False, llama=False,
                              cuda_home="/usr/local/cuda")
    manifest = bench_gpu.prepare(args)
    assert manifest["quants"] == ["q8_0"]
    for n in (1, 2):
        cfg = json.loads((tmp_path / "bundle" / "model" / f"config-L{n}.json").read_text())
        shapes = bench_gpu.tensor_shapes(cfg)
        projects = bench_gpu.projects_dir(tmp_path / "bundle", tmp_path)
        plan = json.loads((projects / f"q8_0-L{n}" / "pack-plan.json").read_text())
        parts = {p for w in plan["weights"] for p in w["parts"]}
        assert parts <= set(shapes), sorted(parts - set(shapes))[:5]
        assert not any(f"layers.{n}." in p for p in parts)


def test_projects_dir_of_a_bundle_without_projects(tmp_path):
    """A bundle with neither projects/ nor prepare's archive of it: an error that names both."""
    with pytest.raises(SystemExit) as e:
        bench_gpu.projects_dir(tmp_path, tmp_path / "work")
    assert str(tmp_path) in str(e.value) and bench_gpu.PROJECTS_ARCHIVE in str(e.value)
