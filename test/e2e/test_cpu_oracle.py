"""phimoec --target cpu against transformers' PhimoeForCausalLM: logits of every
position and greedy continuations, across the LongRoPE short->long switch.

How the logits are compared: phimoe-bin --dump-logits writes the float32 logits of
every prompt and generated position ([P + N, vocab]); the oracle computes, for every
position t, the logits of a fresh float32 forward over tokens[0..t] (the reference
semantics, see oracle.reference_logits) on the same token sequence. The bound is on
max over all positions and vocabulary entries of |ours - reference|.
"""
import numpy as np
import pytest
import torch

import oracle

oracle.use_reference_longrope()

CASES = {
    # name: (config kwargs, router spread, prompt length, checkpoint dtype, shard size)
    "base-crossing": (dict(layers=2), 0.05, 20, torch.float32, None),
    "kv1-6experts": (dict(layers=2, hidden=48, heads=3, kv_heads=1, experts=6,
                          intermediate=64, original_max=40), 0.05, 12, torch.float32, None),
    "wide-nobias-sharded": (dict(layers=3, hidden=128, heads=8, kv_heads=4, experts=8,
                                 intermediate=96, vocab=160, bias=False, original_max=256),
                            None, 30, torch.float32, "150KB"),
    "prompt-past-switch": (dict(layers=1, original_max=16), 0.05, 24, torch.float32, None),
    "f16-checkpoint": (dict(layers=2), 0.05, 10, torch.float16, None),
}
N_PREDICT = 64


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


def routing_stats(model, tokens):
    """How many (token, layer) routings kept more than one expert under the
    sparsemixer threshold (the first expert's weight is then below 1)."""
    weights = []
    hooks = [layer.mlp.router.register_forward_hook(
        lambda mod, inp, outp: weights.append(outp[1])) for layer in model.model.layers]
    with torch.no_grad():
        model(torch.tensor([tokens]))
    for h in hooks:
        h.remove()
    return sum(int((w[:, 0] < 0.999).sum()) for w in weights)


@pytest.mark.parametrize("name", list(CASES))
def test_logits_and_greedy_match_transformers(name, workdir):
    kwargs, router_spread, prompt_len, dtype, shard = CASES[name]
    config = oracle.tiny_config(**kwargs)
    model = oracle.make_model(config, seed=len(name), router_spread=router_spread)
    src = workdir / f"{name}-src"
    model = oracle.save(model, src, dtype=dtype, shard=shard)
    if shard:
        assert (src / "model.safetensors.index.json").exists()
    model = model.float()  # the oracle runs in float32 on the stored weights

    out = workdir / f"{name}-out"
    proc = oracle.compile_model(src, out, "--quant", "f32")
    assert proc.returncode == 0, proc.stderr

    gen = torch.Generator().manual_seed(7)
    prompt = torch.randint(3, config.vocab_size, (prompt_len,), generator=gen).tolist()
    ours, logits = oracle.run_bin(out, prompt, N_PREDICT, workdir / f"{name}.npy")

    original = config.rope_parameters["original_max_position_embeddings"]
    expected_greedy = oracle.reference_greedy(model, prompt, N_PREDICT)
    assert ours == expected_greedy

    reference = oracle.reference_logits(model, prompt + ours, original)
    assert logits.shape == reference.shape == (prompt_len + N_PREDICT, config.vocab_size)
    err = np.abs(logits - reference).max()
    assert err <= 1e-3, f"max |dlogit| = {err}"

    if router_spread is not None:
        assert routing_stats(model, prompt + ours) > 0, \
            "no token kept more than one expert: the case tests nothing"


def test_crossing_is_exercised():
    """The crossing cases really generate past original_max_position_embeddings."""
    for name, (kwargs, _, prompt_len, _, _) in CASES.items():
        original = kwargs.get("original_max", 32)
        if name in ("base-crossing", "kv1-6experts"):
            assert prompt_len <= original < prompt_len + N_PREDICT


def test_bf16_build_matches_transformers_bf16(workdir):
    """A bf16 checkpoint compiled with --quant bf16.

    Against transformers float32 on the same (bf16) weights the bound is the float32
    one: phimoe-bin computes in float32 with bf16 weights, exactly that model.

    Against transformers run in bfloat16, whose activations are rounded to bf16
    (8 significant bits, relative step 2^-8) after every op, the logits differ by
    that rounding accumulated over the layers: we bound the error relative to the
    logits' scale, max|d| <= 0.05 * max|logit|, about 13 bf16 steps, and require the
    greedy first token to agree. Measured on this case (2026-11-22): max|d| = 0.0071 with
    max|logit| = 0.50, i.e. 1.4% of the scale."""
    config = oracle.tiny_config(layers=2)
    model = oracle.make_model(config, seed=3, router_spread=0.05)
    src = workdir / "bf16-src"
    model = oracle.save(model, src, dtype=torch.bfloat16)
    out = workdir / "bf16-out"
    proc = oracle.compile_model(src, out, "--quant", "bf16")
    assert proc.returncode == 0, proc.stderr

    prompt = torch.randint(3, config.vocab_size, (16,),
                           generator=torch.Generator().manual_seed(5)).tolist()
    ours, logits = oracle.run_bin(out, prompt, 24, workdir / "bf16.npy")

    as_f32 = oracle.reference_logits(model.float(), prompt + ours, 32)
    assert np.abs(logits - as_f32).max() <= 1e-3
    assert ours == oracle.reference_greedy(model.float(), prompt, 24)

    in_bf16 = oracle.reference_logits(model.to(torch.bfloat16), prompt + ours, 32)
    err = np.abs(logits - in_bf16).max()
    scale = np.abs(in_bf16).max()
    print(f"bf16: max |d| = {err:.4f}, max |logit| = {scale:.3f}")
    assert err <= 0.05 * scale, f"max |d| = {err}, max |logit| = {scale}"
    assert np.argmax(logits[len(prompt) - 1]) == np.argmax(in_bf16[len(prompt) - 1])
