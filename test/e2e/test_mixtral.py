"""phimoec --target cpu on Mixtral checkpoints (model_type "mixtral": RMSNorms, no biases,
softmax top-2 routing renormalised, plain RoPE) against transformers' MixtralForCausalLM.

The same comparison as test_cpu_oracle.py: phimoe-bin --dump-logits against a fresh float32
forward over the tokens before each position, and greedy continuations."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import oracle

CASES = {
    # name: (config kwargs, prompt length, generated, checkpoint dtype, --quant, shard)
    "f32": (dict(layers=2), 20, 40, torch.float32, "f32", None),
    "kv1-8experts-window": (dict(layers=2, hidden=48, heads=3, kv_heads=1, experts=8,
                                 intermediate=64, sliding_window=16), 12, 40, torch.float32,
                            "f32", None),
    "bf16-sharded": (dict(layers=3, hidden=128, heads=8, kv_heads=4, experts=6, intermediate=96,
                          vocab=160, rope_parameters=dict(rope_type="default",
                                                          rope_theta=10000.0)),
                     16, 24, torch.bfloat16, "bf16", "150KB"),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("mixtral")


def prompt_of(config, length, seed=7):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, config.vocab_size, (length,), generator=gen).tolist()


@pytest.mark.parametrize("name", list(CASES))
def test_logits_and_greedy_match_transformers(name, workdir):
    kwargs, prompt_len, n_predict, dtype, quant, shard = CASES[name]
    config = oracle.tiny_mixtral_config(**kwargs)
    model = oracle.make_mixtral(config, seed=len(name))
    src = workdir / f"{name}-src"
    model = oracle.save(model, src, dtype=dtype, shard=shard).float()
    assert json.loads((src / "config.json").read_text())["model_type"] == "mixtral"

    out = workdir / f"{name}-out"
    proc = oracle.compile_model(src, out, "--quant", quant)
    assert proc.returncode == 0, proc.stderr

    prompt = prompt_of(config, prompt_len)
    ours, logits = oracle.run_bin(out, prompt, n_predict, workdir / f"{name}.npy")
    assert ours == oracle.reference_greedy(model, prompt, n_predict)
    reference = oracle.reference_logits(model, prompt + ours, 1 << 30)
    assert logits.shape == reference.shape == (prompt_len + n_predict, config.vocab_size)
    err = np.abs(logits - reference).max()
    assert err <= 1e-3, f"max |dlogit| = {err}"
    if kwargs.get("sliding_window"):
        assert prompt_len + n_predict > 2 * kwargs["sliding_window"]


def test_routing_is_mixtral_not_sparsemixer(workdir):
    """The same weights read as a PhiMoE (LayerNorm biases of zero, sparsemixer routing) give
    other logits: the f32 case's agreement above depends on the routing and norms being
    Mixtral's."""
    src = workdir / "f32-src"
    if not src.exists():
        pytest.skip("runs after the f32 case")
    tensors = load_file(src / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    as_phimoe = workdir / "as-phimoe"
    as_phimoe.mkdir()
    for name in list(tensors):
        if name.endswith("norm.weight"):
            tensors[name[:-len("weight")] + "bias"] = torch.zeros_like(tensors[name])
    save_file(tensors, as_phimoe / "model.safetensors", metadata={"format": "pt"})
    config.update(model_type="phimoe", architectures=["PhimoeForCausalLM"],
                  router_jitter_noise=0.01)
    (as_phimoe / "config.json").write_text(json.dumps(config))
    out = workdir / "as-phimoe-out"
    proc = oracle.compile_model(as_phimoe, out, "--quant", "f32")
    assert proc.returncode == 0, proc.stderr
    prompt = prompt_of(oracle.tiny_mixtral_config(), 20)
    _, theirs = oracle.run_bin(out, prompt, 0, workdir / "as-phimoe.npy")
    _, ours = oracle.run_bin(workdir / "f32-out", prompt, 0, workdir / "f32-again.npy")
    assert np.abs(theirs - ours).max() > 1e-2


@pytest.mark.parametrize("quant", ["q8_0", "q4k"])
def test_quantized_build_matches_transformers_on_the_quantized_weights(quant, workdir):
    """--quant q8_0 / q4k against transformers on the weights the pack holds (dequantized):
    what remains is phimoe-bin's quantization of the activations (q8_0 rows, q8_K blocks),
    bounded as test/gpu/gpu_oracle.py bounds the CPU build: max|d logit| <= 5% of max|logit|."""
    config = oracle.tiny_mixtral_config(layers=2, hidden=256, intermediate=256, vocab=128)
    model = oracle.make_mixtral(config, seed=11)
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # logits of a trained model's spread
    src = workdir / f"{quant}-src"
    oracle.save(model, src)
    out = workdir / f"{quant}-out"
    proc = oracle.compile_model(src, out, "--quant", quant)
    assert proc.returncode == 0, proc.stderr
    table, _ = oracle.pack_table(out / "weights.phw")
    assert any(e["name"].endswith("experts.gate_up.weight") and e["type"].startswith(
        "!phimoe.qweight<") for e in table), "the experts were not quantized"

    rounded = workdir / f"{quant}-rounded"
    oracle.write_rounded(src, rounded, out)
    from transformers import MixtralForCausalLM
    reference_model = MixtralForCausalLM.from_pretrained(rounded, dtype=torch.float32).eval()
    prompt = prompt_of(config, 24)
    ours, logits = oracle.run_bin(out, prompt, 8, workdir / f"{quant}.npy")
    reference = oracle.reference_logits(reference_model, prompt + ours, 1 << 30)
    scale = np.abs(reference).max()
    err = np.abs(logits - reference).max()
    assert err <= 0.05 * scale, f"max|d| {err} > 5% of max|logit| {scale}"
    # and the quantization is not a no-op: the unrounded model differs more than float rounding
    unrounded = oracle.reference_logits(model, prompt + ours, 1 << 30)
    assert np.abs(unrounded - reference).max() > 1e-3


def test_cuda_target_is_refused_with_the_reason(workdir, tmp_path):
    config = oracle.tiny_mixtral_config(layers=1)
    src = tmp_path / "src"
    oracle.save(oracle.make_mixtral(config), src)
    out = tmp_path / "out"
    proc = oracle.compile_model(src, out, "--target", "sm_90")
    assert proc.returncode != 0
    assert "config.json" in proc.stderr and "mixtral" in proc.stderr
    assert "--target cpu" in proc.stderr
    assert not out.exists(), "no partial output"


def test_top_k_other_than_two_is_refused(tmp_path):
    config = oracle.tiny_mixtral_config(layers=1)
    src = tmp_path / "src"
    oracle.save(oracle.make_mixtral(config), src)
    data = json.loads((src / "config.json").read_text())
    data["num_experts_per_tok"] = 3
    (src / "config.json").write_text(json.dumps(data))
    proc = oracle.compile_model(src, tmp_path / "out")
    assert proc.returncode != 0
    assert "num_experts_per_tok" in proc.stderr and "2 experts" in proc.stderr
    assert not (tmp_path / "out").exists()
