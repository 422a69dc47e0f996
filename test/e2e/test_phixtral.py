"""phimoec --target cpu on phixtral checkpoints (model_type "phi-msft", as
mlabonne/phixtral-4x2_8 ships them: phi-2 blocks, attention and MoE in parallel from one
LayerNorm, partial rotary, biased gelu_new experts, softmax over the top-2 router logits)
against transformers' PhiForCausalLM with oracle.PhixtralMoE in every layer.

The same comparison as test_mixtral.py: phimoe-bin --dump-logits against a fresh float32
forward over the tokens before each position, and greedy continuations."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import oracle

CASES = {
    # name: (config kwargs, prompt length, generated, checkpoint dtype, --quant, shard)
    "f32": (dict(layers=2), 20, 40, torch.float32, "f32", None),
    # phi-2's head geometry scaled down: rotary_dim / head_dim = 0.4 (32 / 80 there)
    "gqa-rotary16-6experts": (dict(layers=2, hidden=160, heads=4, kv_heads=2, rotary_dim=16,
                                   experts=6, inner=192, vocab=112), 12, 40, torch.float32,
                              "f32", None),
    "f16-sharded": (dict(layers=3, hidden=128, heads=8, rotary_dim=8, experts=4, vocab=160),
                    16, 24, torch.float16, "f16", "200KB"),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("phixtral")


def prompt_of(config, length, seed=7):
    return oracle.random_prompt(config["vocab_size"], length, seed)


def experts_used(model, tokens):
    """For each layer, the set of experts that some token of a forward over tokens routes to."""
    used = []
    hooks = [layer.mlp.gate.register_forward_hook(
        lambda mod, inp, out, k=layer.mlp.top_k: used.append(
            set(torch.topk(out, k, dim=-1).indices.flatten().tolist())))
        for layer in model.model.layers]
    with torch.no_grad():
        model(torch.tensor([tokens]))
    for h in hooks:
        h.remove()
    return used


@pytest.mark.parametrize("name", list(CASES))
def test_logits_and_greedy_match_transformers(name, workdir):
    kwargs, prompt_len, n_predict, dtype, quant, shard = CASES[name]
    config = oracle.tiny_phixtral_config(**kwargs)
    src = workdir / f"{name}-src"
    model = oracle.save_phixtral(oracle.make_phixtral(config, seed=len(name)), src,
                                 dtype=dtype, shard=shard)
    written = json.loads((src / "config.json").read_text())
    assert written["model_type"] == "phi-msft"
    assert written["torch_dtype"] == str(dtype).replace("torch.", "")
    if shard:
        assert (src / "model.safetensors.index.json").exists()

    out = workdir / f"{name}-out"
    proc = oracle.compile_model(src, out, "--quant", quant)
    assert proc.returncode == 0, proc.stderr

    prompt = prompt_of(config, prompt_len)
    assert prompt_len + n_predict > 32
    ours, logits = oracle.run_bin(out, prompt, n_predict, workdir / f"{name}.npy")
    assert ours == oracle.reference_greedy(model, prompt, n_predict)
    reference = oracle.reference_logits(model, prompt + ours, 1 << 30)
    assert logits.shape == reference.shape == (prompt_len + n_predict, config["vocab_size"])
    err = np.abs(logits - reference).max()
    assert err <= 1e-3, f"max |dlogit| = {err}"
    experts = set(range(config["num_local_experts"]))
    assert all(u == experts for u in experts_used(model, prompt + ours)), \
        "some expert is never routed to: the case does not test it"


@pytest.fixture(scope="module")
def base(workdir):
    """A small phixtral (head_dim 16, rotary_dim 8), its checkpoint and its f32 build."""
    config = oracle.tiny_phixtral_config(layers=2)
    src = workdir / "base-src"
    model = oracle.save_phixtral(oracle.make_phixtral(config, seed=21), src)
    out = workdir / "base-out"
    proc = oracle.compile_model(src, out, "--quant", "f32")
    assert proc.returncode == 0, proc.stderr
    return config, model, src, out


def full_rotary(config, tensors):
    config["rotary_dim"] = config["n_embd"] // config["n_head"]


def no_expert_fc2_biases(config, tensors):
    for name in tensors:
        if name.endswith(".fc2.bias"):
            tensors[name] = torch.zeros_like(tensors[name])


@pytest.mark.parametrize("variant", [full_rotary, no_expert_fc2_biases],
                         ids=["full-rotary", "no-expert-fc2-biases"])
def test_build_follows_the_rotary_dim_and_the_expert_biases(variant, base, workdir):
    """The same weights with rotary_dim = head_dim (RoPE over every lane of a head), or with
    the experts' fc2 biases zero: the build of that checkpoint matches its reference and
    differs from the base build, so the base build's agreement with transformers depends
    on the partial rotary and on the expert biases being applied."""
    config, _, src, base_out = base
    name = variant.__name__
    changed = workdir / name
    changed.mkdir()
    tensors = load_file(src / "model.safetensors")
    data = dict(config)
    variant(data, tensors)
    save_file(tensors, changed / "model.safetensors", metadata={"format": "pt"})
    (changed / "config.json").write_text(json.dumps(data))
    out = workdir / f"{name}-out"
    proc = oracle.compile_model(changed, out, "--quant", "f32")
    assert proc.returncode == 0, proc.stderr

    prompt = prompt_of(config, 40)
    _, theirs = oracle.run_bin(out, prompt, 0, workdir / f"{name}.npy")
    reference = oracle.reference_logits(oracle.load_phixtral(changed), prompt, 1 << 30)
    assert np.abs(theirs - reference).max() <= 1e-3
    _, ours = oracle.run_bin(base_out, prompt, 0, workdir / f"{name}-base.npy")
    assert np.abs(theirs - ours).max() > 1e-2


@pytest.mark.parametrize("quant", ["q8_0", "q4k"])
def test_quantized_build_matches_transformers_on_the_quantized_weights(quant, workdir):
    """--quant q8_0 / q4k against transformers on the weights the pack holds
    (oracle.check_quantized_build). A routing decision within the activations' quantization
    noise of a tie could flip: the seed is one whose smallest routing margin is well clear of
    it, and the test says so if that changes."""
    config = oracle.tiny_phixtral_config(layers=2, hidden=256, heads=4, rotary_dim=16,
                                         inner=512, vocab=128)
    model = oracle.make_phixtral(config, seed=14)
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # logits of a trained model's spread
    src = workdir / f"{quant}-src"
    oracle.save_phixtral(model, src)
    oracle.check_quantized_build(model, src, workdir / f"{quant}-out", quant, "moe.mlp.fc1.weight",
                                 oracle.load_phixtral, prompt_of(config, 24),
                                 route_gap=oracle.phixtral_route_gap)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    src = tmp_path_factory.mktemp("phixtral-small") / "src"
    oracle.save_phixtral(oracle.make_phixtral(oracle.tiny_phixtral_config(layers=1)), src)
    return src


MISSING = object()


@pytest.mark.parametrize("field,value", [("num_experts_per_tok", 3),
                                         ("activation_function", "relu"),
                                         ("num_local_experts", MISSING),  # a dense phi-2
                                         ("rotary_dim", 7), ("rotary_dim", 32),
                                         ("n_head", 5), ("n_head_kv", 3)])
def test_unsupported_config_is_refused(field, value, small_checkpoint, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(small_checkpoint, src)
    data = json.loads((src / "config.json").read_text())
    if value is MISSING:
        del data[field]
    else:
        data[field] = value
    (src / "config.json").write_text(json.dumps(data))
    proc = oracle.compile_model(src, tmp_path / "out")
    assert proc.returncode != 0
    assert "config.json" in proc.stderr and field in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_cuda_target_emits_the_phixtral_kernels(small_checkpoint):
    """--target sm_90 --emit=cuda (no nvcc needed): the partial RoPE, the parallel block's add
    and the gelu experts have CUDA launchers (the emulated build runs in
    test_cuda_emulated.py: gpu_oracle's phixtral case)."""
    proc = subprocess.run([str(oracle.PHIMOEC), "compile", str(small_checkpoint), "--target",
                           "sm_90", "--emit=cuda"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    code = proc.stdout
    assert "phimoe_cuda::rope_partial<4, 16, 8>(" in code
    assert "phimoe_cuda::moe_softmax_top2_gelu<4, 64, 256>(" in code
    assert "phimoe_cuda::add<64>(" in code
    assert "sparsemixer" not in code and "rms_norm" not in code


def test_served_chat_is_chatml_and_the_models_greedy_reply(tmp_path):
    """A dolphin-2_6-phi-2-style checkpoint (a GPT-2 byte-level BPE, the ChatML template,
    <|im_end|> as eos) behind `phimoe-bin serve` and the openai client: the prompt is the one
    transformers' apply_chat_template gives (its token count) and the reply is the model's
    greedy continuation of it, decoded as the tokenizer decodes it.

    The vocabulary is padded past the tokenizer (as phi-2's 51200 rows hold 50295 tokens).
    The padded rows, <|im_start|> and the byte pieces of anything but printable ASCII and
    newlines get an LM-head bias of -1e4, so that the reply is text whose decoding is
    unambiguous (no UTF-8 sequence cut in the middle) and the test decisive."""
    import openai  # noqa: F401  (the client the server tests use)
    from test_server import Server
    from transformers import AutoTokenizer

    src = tmp_path / "src"
    size = oracle.write_phixtral_tokenizer(src)
    # (loaded before config.json is there: its auto_map would ask for trust_remote_code)
    tok = AutoTokenizer.from_pretrained(src)
    assert len(tok) == size
    stops = [tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    config = oracle.tiny_phixtral_config(vocab=size + 16)
    model = oracle.make_phixtral(config, seed=27)
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
        for i in range(config["vocab_size"]):
            text = tok.decode([i]) if i < size else ""
            printable = text.isascii() and (text.isprintable() or text == "\n")
            if i not in stops and (i >= size or i == tok.convert_tokens_to_ids("<|im_start|>")
                                   or not printable):
                model.lm_head.bias[i] = -1e4
    oracle.save_phixtral(model, src)

    out = tmp_path / "out"
    proc = oracle.compile_model(src, out, "--quant", "f32")
    assert proc.returncode == 0, proc.stderr

    messages = [{"role": "system", "content": "You keep the lighthouse."},
                {"role": "user", "content": "Is the light on?"},
                {"role": "assistant", "content": "It burned every night."},
                {"role": "user", "content": "Who came to call?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou keep the lighthouse.<|im_end|>\n")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True,
                                     return_dict=True)["input_ids"]
    assert prompt == tok(text, add_special_tokens=False).input_ids

    def greedy_reply(prompt, n):
        reply = oracle.reference_greedy(model, prompt, n)
        cut = min([reply.index(s) for s in stops if s in reply], default=n)
        return reply[:cut]

    n = 20
    reply = greedy_reply(prompt, n)
    assert 0 < len(reply) < n, "the seed's reply should stop at <|im_end|>, after some text"
    server = Server(out, "-c", "256", "--threads", "2", "--alias", "phixtral")
    try:
        r = server.client().chat.completions.create(model="phixtral", messages=messages,
                                                    max_tokens=n, temperature=0)
    finally:
        server.stop()
    assert r.usage.prompt_tokens == len(prompt)
    assert r.usage.completion_tokens == len(reply) + (len(reply) < n)  # + the stop token
    assert r.choices[0].message.content == tok.decode(reply, skip_special_tokens=True,
                                                      clean_up_tokenization_spaces=False)

    # phimoe-bin chat: the same prompt for one user message, the same reply.
    first = messages[1:2]
    prompt = tok(tok.apply_chat_template(first, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False).input_ids
    reply = greedy_reply(prompt, n)
    proc = subprocess.run([str(out / "phimoe-bin"), "chat", "-n", str(n), "--temperature", "0"],
                          input=first[0]["content"] + "\n", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == tok.decode(reply, skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False) + "\n"
