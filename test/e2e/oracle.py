"""The oracle: transformers' PhimoeForCausalLM, small PhiMoE checkpoints made with it,
and phimoec/phimoe-bin runners shared by the end-to-end tests."""
import json
import os
import pathlib
import struct
import subprocess

import numpy as np
import torch
from transformers import PhimoeConfig, PhimoeForCausalLM
from transformers.models.phimoe import modeling_phimoe

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("PHIMOE_BUILD_DIR", ROOT / "build"))
if not BUILD.is_absolute():
    BUILD = ROOT / BUILD
PHIMOEC = BUILD / "compiler" / "phimoec"


def longrope_forward(self, x, position_ids):
    """LongRoPE as ../shared/docs/phimoe-reference.md states it (and transformers 4.x
    computed it): the long factors AND the long mscale once max(position)+1 exceeds
    original_max_position_embeddings. transformers 5.x's PhimoeRotaryEmbedding.forward
    recomputes inv_freq without the sequence length, so past the switch it pairs the
    SHORT factors with the long mscale; phimoec follows the reference."""
    rp = self.config.rope_parameters
    seq_len = int(position_ids.max()) + 1
    dim = getattr(self.config, "head_dim", None) or (
        self.config.hidden_size // self.config.num_attention_heads)
    if rp["rope_type"] == "longrope":
        long = seq_len > rp["original_max_position_embeddings"]
        ext = torch.tensor(rp["long_factor" if long else "short_factor"], dtype=torch.float32)
        mscale = rp["long_mscale" if long else "short_mscale"]
    else:
        ext, mscale = torch.ones(dim // 2), 1.0
    inv_freq = 1.0 / (ext * rp["rope_theta"] ** (torch.arange(0, dim, 2).float() / dim))
    freqs = position_ids[..., None].float() * inv_freq.to(x.device)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * mscale).to(x.dtype), (emb.sin() * mscale).to(x.dtype)


def upstream_uses_long_factors():
    """Whether the installed transformers already applies the long factors."""
    cfg = tiny_config(layers=1)
    rotary = modeling_phimoe.PhimoeRotaryEmbedding(cfg)
    pos = torch.arange(cfg.rope_parameters["original_max_position_embeddings"] + 4)[None]
    x = torch.zeros(1, pos.shape[1], cfg.hidden_size)
    cos, _ = rotary(x, pos)
    expected, _ = longrope_forward(rotary, x, pos)
    return torch.allclose(cos, expected)


def use_reference_longrope():
    if not upstream_uses_long_factors():
        modeling_phimoe.PhimoeRotaryEmbedding.forward = longrope_forward


def tiny_config(layers=2, hidden=64, heads=4, kv_heads=2, experts=4, intermediate=128,
                vocab=96, original_max=32, max_position=512, bias=True, **extra):
    head_dim = hidden // heads
    gen = torch.Generator().manual_seed(1234)
    short = (1.0 + torch.rand(head_dim // 2, generator=gen) * 0.5).tolist()
    long = (1.0 + torch.rand(head_dim // 2, generator=gen) * 3.0).tolist()
    return PhimoeConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        num_local_experts=experts, num_experts_per_tok=2, max_position_embeddings=max_position,
        attention_bias=bias, lm_head_bias=bias, router_jitter_noise=0.01,
        rope_parameters=dict(rope_type="longrope", rope_theta=10000.0, short_factor=short,
                             long_factor=long, short_mscale=1.1, long_mscale=1.25,
                             original_max_position_embeddings=original_max),
        **extra)


def make_model(config, seed=0, router_spread=None):
    """A seeded random PhiMoE. With router_spread, every router row is one shared row
    plus router_spread times its own: the logits of a token then lie close together
    relative to their size, so that the sparsemixer threshold (a relative one: 2 *
    router_jitter_noise) keeps several experts for some tokens and one for others."""
    torch.manual_seed(seed)
    model = PhimoeForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            # Default init leaves biases and norms at 0/1: randomize them so that
            # every parameter matters.
            if name.endswith("bias") or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name and
                                                     name.endswith("weight") else 0.0))
            if router_spread is not None and ("router" in name or ".gate." in name):
                p.copy_(p[0:1] + router_spread * p)
    return model


def tiny_mixtral_config(layers=2, hidden=64, heads=4, kv_heads=2, experts=4, intermediate=128,
                        vocab=96, **extra):
    """A small MixtralConfig (RMSNorms, no biases, softmax top-2 routing, plain RoPE)."""
    from transformers import MixtralConfig
    return MixtralConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        num_local_experts=experts, num_experts_per_tok=2, max_position_embeddings=512,
        **extra)


def make_mixtral(config, seed=0):
    """A seeded random MixtralForCausalLM; its RMSNorm weights randomized around 1."""
    from transformers import MixtralForCausalLM
    torch.manual_seed(seed)
    model = MixtralForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + torch.randn_like(p) * 0.1)
    return model


def save(model, path, dtype=torch.float32, shard=None):
    model = model.to(dtype)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(path, **kwargs)
    return model


def compile_model(src, out, *flags):
    cmd = [str(PHIMOEC), "compile", str(src), "-o", str(out), *flags]
    return subprocess.run(cmd, capture_output=True, text=True)


def run_bin(out, tokens, n_predict, dump, *flags):
    cmd = [str(pathlib.Path(out) / "phimoe-bin"), "--tokens", ",".join(map(str, tokens)),
           "--n-predict", str(n_predict), "--dump-logits", str(dump), *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    generated = [int(t) for t in proc.stdout.strip().split(",")] if n_predict else []
    return generated, np.load(dump)


@torch.no_grad()
def reference_logits(model, tokens, original_max):
    """Logits of every position t as a fresh forward over tokens[0..t] computes them:
    one forward over the first original_max tokens (short set), one over all (long)."""
    ids = torch.tensor([tokens])
    if len(tokens) <= original_max:
        return model(ids).logits[0].float().numpy()
    short = model(ids[:, :original_max]).logits[0].float().numpy()
    long = model(ids).logits[0].float().numpy()
    return np.concatenate([short, long[original_max:]])


@torch.no_grad()
def reference_greedy(model, prompt, n):
    """Greedy continuation, each step a fresh forward over the whole sequence."""
    seq = list(prompt)
    for _ in range(n):
        logits = model(torch.tensor([seq])).logits[0, -1]
        seq.append(int(torch.argmax(logits)))
    return seq[len(prompt):]


def pack_table(path):
    """The table of a weights.phw (a JSON list of entries: name, type, offset, ...) and the
    offset of its data."""
    with open(path, "rb") as f:
        head = f.read(64)
        magic, _, _, _, table_bytes, data_offset, _ = struct.unpack_from("<8sIIQQQQ", head)
        assert magic == b"PHIMOEW\0", path
        return json.loads(f.read(table_bytes)), data_offset


def source_names(name, experts):
    """The checkpoint tensors a packed weight is made of (rows concatenated or stacked)."""
    if name.endswith("self_attn.qkv_proj.weight"):
        base = name[: -len("qkv_proj.weight")]
        return [base + p + "_proj.weight" for p in "qkv"]
    if name.endswith("experts.gate_up.weight"):
        base = name[: -len("gate_up.weight")]
        return [f"{base}{e}.w{w}.weight" for e in range(experts) for w in (1, 3)]
    if name.endswith("experts.down.weight"):
        base = name[: -len("down.weight")]
        return [f"{base}{e}.w2.weight" for e in range(experts)]
    return [name]


def write_rounded(src, dest, build):
    """dest: a copy of checkpoint src (one model.safetensors) with every tensor that `build`
    block-quantizes replaced by its quantized values, by phimoe-quant (rows are quantized
    independently, so a tensor's rows give the same blocks alone as inside a fused weight)."""
    import shutil
    from safetensors.torch import load_file, save_file
    tool = BUILD / "test" / "quant" / "phimoe-quant"
    src, dest = pathlib.Path(src), pathlib.Path(dest)
    experts = json.loads((src / "config.json").read_text())["num_local_experts"]
    tensors = load_file(src / "model.safetensors")
    shutil.copytree(src, dest, dirs_exist_ok=True)
    raw, q, back = dest / "round.in", dest / "round.q", dest / "round.out"
    for entry in pack_table(pathlib.Path(build) / "weights.phw")[0]:
        if not entry["type"].startswith("!phimoe.qweight<"):
            continue
        fmt = entry["type"][len("!phimoe.qweight<"):].split(",")[0]
        for name in source_names(entry["name"], experts):
            x = tensors[name].float().numpy()
            n = x.shape[-1]
            np.ascontiguousarray(x.reshape(-1, n)).tofile(raw)
            for args in (["quantize", fmt, n, raw, q], ["dequantize", fmt, n, q, back]):
                proc = subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"phimoe-quant {args[0]} {fmt} failed: {proc.stderr}")
            tensors[name] = torch.from_numpy(np.fromfile(back, dtype=np.float32).reshape(x.shape))
    for f in (raw, q, back):
        f.unlink(missing_ok=True)
    save_file(tensors, dest / "model.safetensors", metadata={"format": "pt"})


def write_json(path, data):
    pathlib.Path(path).write_text(json.dumps(data))
