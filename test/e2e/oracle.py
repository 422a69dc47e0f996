"""The oracle: transformers' PhimoeForCausalLM, small PhiMoE checkpoints made with it (and
Mixtral and phixtral ones), and phimoec/phimoe-bin runners shared by the end-to-end tests."""
import json
import os
import pathlib
import re
import struct
import subprocess

import numpy as np
import torch
from transformers import PhimoeConfig, PhimoeForCausalLM
from transformers.models.phi.modeling_phi import PhiMLP
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
    """Writes a float32 model as a dtype checkpoint (save_pretrained) and returns it in float32
    with its parameters rounded to dtype: the weights the checkpoint holds. Only the parameters:
    model.to(dtype) would round float buffers too (RoPE's inv_freq), which no checkpoint holds."""
    import copy
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
    kwargs = {"max_shard_size": shard} if shard else {}
    copy.deepcopy(model).to(dtype).save_pretrained(path, **kwargs)
    return model


def tiny_phixtral_config(layers=2, hidden=64, heads=4, kv_heads=None, rotary_dim=8, experts=4,
                         inner=None, vocab=96, **extra):
    """A small phixtral config.json as a dict: model_type "phi-msft" with the fields of
    mlabonne/phixtral-4x2_8's (n_head_kv None: n_head; n_inner None: 4 * n_embd; RoPE base
    10000 and biases everywhere are fixed by phi-2's code, not stated)."""
    config = {
        "_name_or_path": "phixtral-tiny", "activation_function": "gelu_new",
        "architectures": ["PhiForCausalLM"], "attn_pdrop": 0.0,
        "auto_map": {"AutoConfig": "configuration_phi.PhiConfig",
                     "AutoModelForCausalLM": "modeling_phi.PhiForCausalLM"},
        "embd_pdrop": 0.0, "flash_attn": False, "flash_rotary": False, "fused_dense": False,
        "img_processor": None, "initializer_range": 0.02, "layer_norm_epsilon": 1e-5,
        "model_type": "phi-msft", "n_embd": hidden, "n_head": heads, "n_head_kv": kv_heads,
        "n_inner": inner, "n_layer": layers, "n_positions": 2048, "num_experts_per_tok": 2,
        "num_local_experts": experts, "resid_pdrop": 0.1, "rotary_dim": rotary_dim,
        "tie_word_embeddings": False, "torch_dtype": "float32",
        "transformers_version": "4.36.2", "vocab_size": vocab}
    config.update(extra)
    return config


class PhixtralMoE(torch.nn.Module):
    """phixtral's MoE block (its modeling_phi.py MoE): scores = gate(x); the top-k scores,
    softmaxed among themselves, weight the outputs of those experts, phi-2 MLPs
    (fc2(gelu_new(fc1(x))), with biases). Named as the checkpoint's moe.gate, moe.mlp.{e}."""

    def __init__(self, config, experts, top_k):
        super().__init__()
        self.top_k = top_k
        self.gate = torch.nn.Linear(config.hidden_size, experts, bias=False)
        self.mlp = torch.nn.ModuleList(PhiMLP(config) for _ in range(experts))

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        weights, chosen = torch.topk(self.gate(flat), self.top_k, dim=-1)
        weights = weights.softmax(dim=-1)
        y = torch.zeros_like(flat)
        for e, expert in enumerate(self.mlp):
            rows, slot = torch.nonzero(chosen == e, as_tuple=True)
            if len(rows):
                y.index_add_(0, rows, weights[rows, slot, None] * expert(flat[rows]))
        return y.reshape(x.shape)


def phi_config(config):
    """transformers' PhiConfig of a phixtral config dict (the dense phi-2 around the MoEs):
    partial rotary as a factor of the head size, RoPE base 10000, no dropout."""
    from transformers import PhiConfig
    hidden, heads = config["n_embd"], config["n_head"]
    head_dim = hidden // heads
    factor = config["rotary_dim"] / head_dim
    assert int(head_dim * factor) == config["rotary_dim"], "rotary_dim as a factor rounds"
    return PhiConfig(
        vocab_size=config["vocab_size"], hidden_size=hidden,
        intermediate_size=config["n_inner"] or 4 * hidden, num_hidden_layers=config["n_layer"],
        num_attention_heads=heads, num_key_value_heads=config["n_head_kv"] or heads,
        hidden_act=config["activation_function"],
        max_position_embeddings=config["n_positions"],
        layer_norm_eps=config["layer_norm_epsilon"], partial_rotary_factor=factor,
        rope_theta=10000.0, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0,
        tie_word_embeddings=False)


def make_phixtral(config, seed=0):
    """A seeded random phixtral: transformers' PhiForCausalLM (phi-2's parallel block, partial
    rotary) with every layer's mlp a PhixtralMoE; config (a tiny_phixtral_config dict) kept
    as model.phixtral_config. Weights N(0, 1/fan_in) (the embedding N(0, 1)), so that the
    activations keep their size through the layers and the attention is not uniform; biases
    N(0, 0.1) and LayerNorm weights 1 + N(0, 0.1), so that every bias matters."""
    from transformers import PhiForCausalLM
    torch.manual_seed(seed)
    model = PhiForCausalLM(phi_config(config)).eval()
    for layer in model.model.layers:
        layer.mlp = PhixtralMoE(model.config, config["num_local_experts"],
                                config["num_experts_per_tok"]).eval()
    model.phixtral_config = dict(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("norm.weight")
                                                     else 0.0))
            elif "embed_tokens" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return model


@torch.no_grad()
def phixtral_route_gap(model, tokens):
    """The smallest margin of a routing decision over every layer and position: the gap
    between the second and third largest router logits (which pair of experts a row takes)."""
    gaps = []

    def hook(moe, inputs, _):
        x = inputs[0].reshape(-1, inputs[0].shape[-1])
        top = torch.topk(moe.gate(x), min(3, moe.gate.out_features), dim=-1).values
        gaps.append(float((top[:, 1] - top[:, -1]).min()) if top.shape[-1] > 2 else np.inf)

    handles = [layer.mlp.register_forward_hook(hook) for layer in model.model.layers]
    try:
        model(torch.tensor([tokens]))
    finally:
        for h in handles:
            h.remove()
    return min(gaps)


def phixtral_names(model):
    """(checkpoint name, [the model's parameters it is made of, rows concatenated]) for every
    tensor of a phixtral checkpoint, in the order phi-msft declares them."""
    names = [("transformer.embd.wte.weight", ["model.embed_tokens.weight"])]
    for layer, block in enumerate(model.model.layers):
        ours, theirs = f"model.layers.{layer}.", f"transformer.h.{layer}."
        for kind in ("weight", "bias"):
            names.append((f"{theirs}ln.{kind}", [f"{ours}input_layernorm.{kind}"]))
        for kind in ("weight", "bias"):
            names.append((f"{theirs}mixer.Wqkv.{kind}",
                          [f"{ours}self_attn.{p}_proj.{kind}" for p in "qkv"]))
        for kind in ("weight", "bias"):
            names.append((f"{theirs}mixer.out_proj.{kind}", [f"{ours}self_attn.dense.{kind}"]))
        names.append((f"{theirs}moe.gate.weight", [f"{ours}mlp.gate.weight"]))
        for e in range(len(block.mlp.mlp)):
            for part in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
                names.append((f"{theirs}moe.mlp.{e}.{part}", [f"{ours}mlp.mlp.{e}.{part}"]))
    for kind in ("weight", "bias"):
        names.append((f"lm_head.ln.{kind}", [f"model.final_layernorm.{kind}"]))
    for kind in ("weight", "bias"):
        names.append((f"lm_head.linear.{kind}", [f"lm_head.{kind}"]))
    return names


def shard_bytes(size):
    """max_shard_size as save_pretrained reads it: an int, or "150KB" (10^3), "1MiB" (2^20)."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"(\d+)\s*([KMG]?)(i?)B", size.strip())
    assert match, f"a shard size like '150KB': {size!r}"
    power = "KMG".index(match.group(2)) + 1 if match.group(2) else 0
    return int(match.group(1)) * (1024 if match.group(3) else 1000) ** power


def save_phixtral(model, path, dtype=torch.float32, shard=None):
    """Writes a make_phixtral model as phixtral ships: config.json (phi-msft, torch_dtype the
    checkpoint's) and safetensors in phi-msft's names, one model.safetensors or, with shard
    (a size, "150KB"), model-0000i-of-0000n.safetensors and model.safetensors.index.json as
    save_pretrained writes them. Returns the model in float32 with its weights rounded to
    dtype: the weights the checkpoint holds, for the float32 oracle. (Only the parameters:
    model.to(dtype).float() would round the RoPE inv_freq buffer too.)"""
    from safetensors.torch import save_file
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = dict(model.phixtral_config, torch_dtype=str(dtype).replace("torch.", ""))
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    params = dict(model.named_parameters())
    tensors = {name: torch.cat([params[p].detach() for p in parts]).to(dtype).contiguous()
               for name, parts in phixtral_names(model)}
    shards = [{}]
    if shard:
        limit, used = shard_bytes(shard), 0
        for name, t in tensors.items():
            size = t.numel() * t.element_size()
            if shards[-1] and used + size > limit:
                shards.append({})
                used = 0
            shards[-1][name] = t
            used += size
    if len(shards) == 1:
        save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, part in enumerate(shards, 1):
            file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(part, path / file, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(part, file))
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return model


def read_checkpoint(path):
    """Every tensor of a checkpoint directory: model.safetensors, or the shards its
    model.safetensors.index.json names (each tensor in the file the index says)."""
    from safetensors.torch import load_file
    path = pathlib.Path(path)
    index = path / "model.safetensors.index.json"
    if not index.exists():
        return load_file(path / "model.safetensors")
    weight_map = json.loads(index.read_text())["weight_map"]
    tensors = {}
    for file in sorted(set(weight_map.values())):
        part = load_file(path / file)
        assert all(weight_map.get(name) == file for name in part), f"{file}: not in the index"
        tensors.update(part)
    assert set(tensors) == set(weight_map), "the index names tensors no shard holds"
    return tensors


def load_phixtral(path):
    """The float32 reference model of a phixtral checkpoint directory (save_phixtral's, or a
    copy such as write_rounded's): make_phixtral's model with the checkpoint's weights. Every
    tensor must be there with its phi-msft shape, and no other."""
    config = json.loads((pathlib.Path(path) / "config.json").read_text())
    model = make_phixtral(config)
    tensors = read_checkpoint(path)
    names = phixtral_names(model)
    assert set(tensors) == {name for name, _ in names}, \
        set(tensors) ^ {name for name, _ in names}
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, parts in names:
            sizes = [params[p].shape[0] for p in parts]
            t = tensors[name].float()
            assert t.shape == (sum(sizes), *params[parts[0]].shape[1:]), (name, t.shape)
            for p, piece in zip(parts, torch.split(t, sizes)):
                params[p].copy_(piece)
    return model


def random_prompt(vocab, length, seed=7):
    """`length` seeded random token ids in [3, vocab) (clear of the usual special ids)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (length,), generator=gen).tolist()


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
    for part in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        if name.endswith("moe.mlp." + part):  # phixtral: moe.mlp.{e}.fc1.weight, stacked
            base = name[: -len(part)]
            return [f"{base}{e}.{part}" for e in range(experts)]
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


def check_quantized_build(model, src, out, quant, experts, load_rounded, prompt, route_gap=None):
    """Compiles checkpoint `src` (of the float32 `model`) with --quant QUANT into `out` and
    compares its logits over prompt + 8 greedy tokens with transformers on the weights the pack
    holds (write_rounded, loaded by load_rounded): what remains is phimoe-bin's quantization of
    the activations (q8_0 rows, q8_K blocks), bounded as test/gpu/gpu_oracle.py bounds the CPU
    build: max|d logit| <= 5% of max|logit|. `experts`: how the packed expert weight's name
    ends, which must be block-quantized. route_gap(model, tokens), if given: the smallest
    routing margin, which must stay clear of that noise (a flipped expert moves a row's logits
    by far more)."""
    out = pathlib.Path(out)
    proc = compile_model(src, out, "--quant", quant)
    assert proc.returncode == 0, proc.stderr
    table, _ = pack_table(out / "weights.phw")
    assert any(e["name"].endswith(experts) and e["type"].startswith("!phimoe.qweight<")
               for e in table), "the experts were not quantized"
    rounded = out.with_name(out.name + "-rounded")
    write_rounded(src, rounded, out)
    reference_model = load_rounded(rounded)
    ours, logits = run_bin(out, prompt, 8, out.with_name(out.name + ".npy"))
    tokens = prompt + ours
    reference = reference_logits(reference_model, tokens, 1 << 30)
    if route_gap is not None:
        gap = route_gap(reference_model, tokens)
        assert gap > 0.03, f"a routing decision is {gap} from a tie: pick another seed"
    scale = np.abs(reference).max()
    err = np.abs(logits - reference).max()
    assert err <= 0.05 * scale, f"max|d| {err} > 5% of max|logit| {scale}"
    # and the quantization is not a no-op: the unrounded model differs more than float rounding
    unrounded = reference_logits(model, tokens, 1 << 30)
    assert np.abs(unrounded - reference).max() > 1e-3


def write_json(path, data):
    pathlib.Path(path).write_text(json.dumps(data))


# --- a phi-2-style tokenizer ------------------------------------------------------------------

PHIXTRAL_CORPUS = """\
The keeper of the old lighthouse climbed the stairs every evening before the sun went down.
He carried a lamp, a small book and a cup of tea, and he counted the steps as he went: there
were one hundred and twelve of them, and he had never once counted a different number. From
the top he could see the whole bay, the fishing boats coming home, the gulls over the water
and the long road that ran along the cliffs to the village. When the wind was strong the
glass shook in its frame and the light seemed to shiver, but it never went out.
In the village people said that he talked to the sea. He did not deny it. He said that the
sea was a good listener and a better teacher, because it answered every question with the
same patience and never told the same story twice. Children came to visit him on Sundays.
He showed them how the great lens turned, how the oil was measured and how the log was kept,
with the time, the weather, the ships that passed and the name of anyone who came to call.
One winter a storm broke the road and nobody could reach the lighthouse for eleven days. The
keeper wrote in his log each night as always. On the twelfth morning a boy arrived with bread,
apples and a letter from his mother, who wanted to know whether the keeper was well. He wrote
back that he was very well, that the light had burned every night, and that the sea had been
loud but kind. Then he asked the boy to stay for tea, and they watched the boats go out again.
Years later the boy became the keeper himself. He kept the same log, climbed the same stairs
and counted the same steps, and when children asked him whether he talked to the sea, he
smiled and said that he mostly listened.
"""

PHIXTRAL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")


def write_phixtral_tokenizer(path, size=320):
    """A GPT-2-style byte-level BPE for a phixtral checkpoint directory, as phi-2's (and
    ChatML fine-tunes' such as dolphin-2_6-phi-2's): the 256 byte pieces and merges trained
    on PHIXTRAL_CORPUS (size - 3 pieces), then the added tokens <|endoftext|>, <|im_start|>
    and <|im_end|> (ids size - 3 .. size - 1); tokenizer_config.json with CodeGenTokenizer,
    no BOS added, <|endoftext|> as bos/unk, <|im_end|> as eos and the ChatML template.
    Returns the number of tokens. (transformers' AutoTokenizer also reads the directory's
    config.json, whose phi-msft auto_map asks for trust_remote_code: load the tokenizer
    before save_phixtral writes one there.)"""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers import trainers
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=size - len(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(PHIXTRAL_CORPUS.splitlines(keepends=True), trainer)
    assert tok.get_vocab_size() == size - len(specials), "the corpus has too few merges"
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.save(str(path / "tokenizer.json"))
    added = {str(tok.token_to_id(s)): {"content": s, "lstrip": False, "normalized": False,
                                       "rstrip": False, "single_word": False, "special": True}
             for s in specials}
    write_json(path / "tokenizer_config.json", {
        "add_prefix_space": False, "added_tokens_decoder": added, "bos_token": "<|endoftext|>",
        "chat_template": PHIXTRAL_CHAT_TEMPLATE, "clean_up_tokenization_spaces": True,
        "eos_token": "<|im_end|>", "model_max_length": 2048,
        "tokenizer_class": "CodeGenTokenizer", "unk_token": "<|endoftext|>"})
    write_json(path / "special_tokens_map.json", {
        "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>"})
    return tok.get_vocab_size()
