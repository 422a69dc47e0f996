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
    assert "| ours/q4k | tg128 |" in bench_gpu.render_markdown(result)


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
        plan = json.loads((tmp_path / "bundle" / "projects" / f"q8_0-L{n}" /
                           "pack-plan.json").read_text())
        parts = {p for w in plan["weights"] for p in w["parts"]}
        assert parts <= set(shapes), sorted(parts - set(shapes))[:5]
        assert not any(f"layers.{n}." in p for p in parts)
