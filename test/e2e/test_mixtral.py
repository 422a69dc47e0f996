"""phimoec --target cpu on Mixtral checkpoints (model_type "mixtral": RMSNorms, no biases,
softmax top-2 routing renormalised, plain RoPE) against transformers' MixtralForCausalLM.

The same comparison as test_cpu_oracle.py: phimoe-bin --dump-logits against a fresh float32
forward over the tokens before each position, and greedy continuations."""
import json
import subprocess

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
    return oracle.random_prompt(config.vocab_size, length, seed)


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
    """--quant q8_0 / q4k against transformers on the weights the pack holds
    (oracle.check_quantized_build)."""
    config = oracle.tiny_mixtral_config(layers=2, hidden=256, intermediate=256, vocab=128)
    model = oracle.make_mixtral(config, seed=11)
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # logits of a trained model's spread
    src = workdir / f"{quant}-src"
    oracle.save(model, src)
    from transformers import MixtralForCausalLM
    oracle.check_quantized_build(
        model, src, workdir / f"{quant}-out", quant, "experts.gate_up.weight",
        lambda path: MixtralForCausalLM.from_pretrained(path, dtype=torch.float32).eval(),
        prompt_of(config, 24))


def test_cuda_target_emits_the_mixtral_kernels(tmp_path):
    """--target sm_90 --emit=cuda (no nvcc needed): the RMSNorms and the softmax-routed MoE
    (the emulated and GPU builds run in test_cuda_emulated.py / test/gpu/run.sh: gpu_oracle's
    mixtral cases)."""
    config = oracle.tiny_mixtral_config(layers=1)
    src = tmp_path / "src"
    oracle.save(oracle.make_mixtral(config), src)
    proc = subprocess.run([str(oracle.PHIMOEC), "compile", str(src), "--target", "sm_90",
                           "--emit=cuda"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    code = proc.stdout
    assert "phimoe_cuda::rms_norm<64>(" in code and "phimoe_cuda::add_rms_norm<64>(" in code
    assert "phimoe_cuda::moe_softmax_top2<4, 64, 128>(" in code
    assert "layer_norm" not in code and "sparsemixer" not in code


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


MIXTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ "
    "'[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}")


def test_served_chat_is_the_mixtral_template_and_the_models_greedy_reply(tmp_path):
    """A Mixtral-Instruct-style checkpoint (Mixtral-8x7B-Instruct-v0.1's chat_template, <s> and
    </s>, a post-processor that adds <s>) behind `phimoe-bin serve` and the openai client: the
    prompt is the one transformers' apply_chat_template gives (its token count) and the reply
    is the model's greedy continuation of it (transformers' MixtralForCausalLM)."""
    import shutil
    import openai  # noqa: F401  (the client the server tests use)
    from test_server import Server
    from transformers import AutoTokenizer

    example = oracle.ROOT / "examples" / "tiny-phimoe"
    src = tmp_path / "src"
    tok_json = json.loads((example / "tokenizer.json").read_text())
    vocab = 1 + max(max(tok_json["model"]["vocab"].values()),
                    max(a["id"] for a in tok_json["added_tokens"]))
    model = oracle.make_mixtral(oracle.tiny_mixtral_config(vocab=vocab), seed=5)
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    oracle.save(model, src)
    bos = tok_json["model"]["vocab"]["<s>"]
    tok_json["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [bos], "tokens": ["<s>"]}}}
    (src / "tokenizer.json").write_text(json.dumps(tok_json))
    (src / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "chat_template": MIXTRAL_TEMPLATE, "legacy": False,
        "tokenizer_class": "TokenizersBackend", "clean_up_tokenization_spaces": False}))
    with open(src / "config.json") as f:
        config = json.load(f)
    config.update(bos_token_id=bos, eos_token_id=tok_json["model"]["vocab"]["</s>"])
    (src / "config.json").write_text(json.dumps(config))
    shutil.copy(example / "special_tokens_map.json", src / "special_tokens_map.json")
    smap = json.loads((src / "special_tokens_map.json").read_text())
    smap["eos_token"]["content"] = "</s>"
    (src / "special_tokens_map.json").write_text(json.dumps(smap))

    out = tmp_path / "out"
    proc = oracle.compile_model(src, out, "--quant", "f32")
    assert proc.returncode == 0, proc.stderr

    messages = [{"role": "user", "content": "And God said"},
                {"role": "assistant", "content": "Let there be light"},
                {"role": "user", "content": "In the beginning"}]
    tok = AutoTokenizer.from_pretrained(src)
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text.startswith("<s>[INST] And God said [/INST]Let there be light</s>[INST]")
    prompt = tok(text, add_special_tokens=False).input_ids
    n = 12
    reply = oracle.reference_greedy(model, prompt, n)
    eos = config["eos_token_id"]
    if eos in reply:
        reply = reply[:reply.index(eos)]

    server = Server(out, "-c", "128", "--threads", "2", "--alias", "mixtral")
    try:
        r = server.client().chat.completions.create(model="mixtral", messages=messages,
                                                    max_tokens=n, temperature=0)
    finally:
        server.stop()
    assert r.usage.prompt_tokens == len(prompt)
    assert r.usage.completion_tokens == len(reply) + (len(reply) < n)  # + the </s> it stopped at
    assert r.choices[0].message.content == tok.decode(reply, skip_special_tokens=True)

    # phimoe-bin chat: the same prompt for one user message, the same reply.
    first = messages[:1]
    prompt = tok(tok.apply_chat_template(first, tokenize=False), add_special_tokens=False).input_ids
    reply = oracle.reference_greedy(model, prompt, n)
    reply = reply[:reply.index(eos)] if eos in reply else reply
    proc = subprocess.run([str(out / "phimoe-bin"), "chat", "-n", str(n), "--temperature", "0"],
                          input=first[0]["content"] + "\n", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == tok.decode(reply, skip_special_tokens=True) + "\n"
