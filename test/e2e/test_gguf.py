"""phimoec compile FILE.gguf: GGUF model files (llama.cpp's format) as input.

The GGUF files are written here with gguf-py (llama.cpp's own GGUF library, from PyPI), with
its tensor names and metadata keys, as llama.cpp's converter writes them; one test runs that
converter itself (convert_hf_to_gguf.py from the llama-cpp-python sdist, bench/llamacpp.sh
--fetch). Block-quantized tensors are random blocks, and the reference weights are their
values as gguf-py dequantizes them: the oracle is transformers on those values."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

import oracle

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType
VOCAB = oracle.ROOT.parent / "shared" / "testdata" / "vocab"
PHI3_VOCAB = VOCAB / "ggml-vocab-phi-3.gguf"
oracle.use_reference_longrope()


def name_of(tensor, bid=None, suffix="weight"):
    return gguf.TENSOR_NAMES[tensor].format(bid=bid) + "." + suffix


def tiny_config(mscale, **kwargs):
    """oracle.tiny_config with one LongRoPE scale for both sets (a GGUF holds one)."""
    config = oracle.tiny_config(**kwargs)
    config.rope_parameters.update(short_mscale=mscale, long_mscale=mscale)
    return config


def copy_vocabulary(writer, path=PHI3_VOCAB):
    """The tokenizer.* entries of a vocabulary-only GGUF, as a converter would write them."""
    reader = gguf.GGUFReader(str(path))
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), vtype, sub_type=sub)


def write_gguf(path, config, tensors, arch="phimoe", attn_factor=None, skip_keys=(),
               vocabulary=True):
    """A GGUF of a PhiMoE: the metadata of llama.cpp's PhiMoeModel converter (the same
    GGUFWriter calls), and `tensors`: {gguf name: (array, raw ggml type or None)} (raw:
    uint8 rows of blocks)."""
    writer = gguf.GGUFWriter(str(path), arch)
    rope = config.rope_parameters
    head_dim = config.hidden_size // config.num_attention_heads
    calls = {
        "name": lambda: writer.add_name("tiny phimoe"),
        "context_length": lambda: writer.add_context_length(config.max_position_embeddings),
        "original_context_length": lambda: writer.add_rope_scaling_orig_ctx_len(
            rope["original_max_position_embeddings"]),
        "embedding_length": lambda: writer.add_embedding_length(config.hidden_size),
        "feed_forward_length": lambda: writer.add_feed_forward_length(config.intermediate_size),
        "block_count": lambda: writer.add_block_count(config.num_hidden_layers),
        "head_count": lambda: writer.add_head_count(config.num_attention_heads),
        "head_count_kv": lambda: writer.add_head_count_kv(config.num_key_value_heads),
        "eps": lambda: writer.add_layer_norm_rms_eps(config.rms_norm_eps),
        "rope_dimension_count": lambda: writer.add_rope_dimension_count(head_dim),
        "freq_base": lambda: writer.add_rope_freq_base(rope["rope_theta"]),
        "sliding_window": lambda: writer.add_sliding_window(config.sliding_window or 0),
        "expert_used_count": lambda: writer.add_expert_used_count(config.num_experts_per_tok),
        "expert_count": lambda: writer.add_expert_count(config.num_local_experts),
        "attn_factor": lambda: writer.add_rope_scaling_attn_factors(
            attn_factor if attn_factor is not None else rope["short_mscale"]),
    }
    for key, call in calls.items():
        if key not in skip_keys:
            call()
    if vocabulary:
        copy_vocabulary(writer)
    for name, (array, raw) in tensors.items():
        if raw is None:
            writer.add_tensor(name, np.ascontiguousarray(array))
        else:
            writer.add_tensor(name, np.ascontiguousarray(array), raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


T = gguf.MODEL_TENSOR
# The stacked experts: GGUF tensor, and the checkpoint matrix each expert's slice is.
EXPERT_STACKS = ((T.FFN_GATE_EXP, "w1"), (T.FFN_UP_EXP, "w3"), (T.FFN_DOWN_EXP, "w2"))


def hf_names(config):
    """{GGUF name: Hugging Face name} of a PhiMoE's tensors as llama.cpp's converter names them,
    biases included whether the model has them or not; the stacked experts apart
    (EXPERT_STACKS)."""
    names = {name_of(T.TOKEN_EMBD): "model.embed_tokens.weight",
             name_of(T.OUTPUT): "lm_head.weight", name_of(T.OUTPUT, suffix="bias"): "lm_head.bias",
             name_of(T.OUTPUT_NORM): "model.norm.weight",
             name_of(T.OUTPUT_NORM, suffix="bias"): "model.norm.bias"}
    for i in range(config.num_hidden_layers):
        for tensor, hf in [(T.ATTN_NORM, "input_layernorm"),
                           (T.FFN_NORM, "post_attention_layernorm"),
                           (T.ATTN_Q, "self_attn.q_proj"), (T.ATTN_K, "self_attn.k_proj"),
                           (T.ATTN_V, "self_attn.v_proj"), (T.ATTN_OUT, "self_attn.o_proj"),
                           (T.FFN_GATE_INP, "block_sparse_moe.gate")]:
            for suffix in ("weight", "bias"):
                names[name_of(tensor, i, suffix)] = f"model.layers.{i}.{hf}.{suffix}"
    return names


def float_tensors(checkpoint, config):
    """{gguf name: (float32 array, None)} of a PhiMoE checkpoint's tensors ({name: tensor}, as
    oracle.read_checkpoint gives them), the experts stacked, as llama.cpp's converter names
    them."""
    sd = {k: v.float().numpy() for k, v in checkpoint.items()}
    rope = config.rope_parameters
    out = {name_of(T.ROPE_FACTORS_LONG): np.array(rope["long_factor"], np.float32),
           name_of(T.ROPE_FACTORS_SHORT): np.array(rope["short_factor"], np.float32)}
    for name, hf in hf_names(config).items():
        if hf in sd:
            out[name] = sd.pop(hf)
    for i in range(config.num_hidden_layers):
        for tensor, w in EXPERT_STACKS:
            out[name_of(tensor, i)] = np.stack(
                [sd.pop(f"model.layers.{i}.block_sparse_moe.experts.{e}.{w}.weight")
                 for e in range(config.num_local_experts)])
    assert not sd, f"tensors left out: {sorted(sd)}"
    return {k: (v, None) for k, v in out.items()}


def checkpoint_of(tensors, config):
    """The inverse of float_tensors: {Hugging Face name: torch tensor} of float arrays."""
    back = {hf: torch.from_numpy(np.ascontiguousarray(tensors[name]))
            for name, hf in hf_names(config).items() if name in tensors}
    for i in range(config.num_hidden_layers):
        for tensor, w in EXPERT_STACKS:
            for e, matrix in enumerate(tensors[name_of(tensor, i)]):
                back[f"model.layers.{i}.block_sparse_moe.experts.{e}.{w}.weight"] = \
                    torch.from_numpy(np.ascontiguousarray(matrix))
    return back


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="module")
def f32_case(workdir):
    """A float32 PhiMoE as a checkpoint directory and as an F32 GGUF of the same weights."""
    config = tiny_config(1.2, layers=2, bias=True)
    model = oracle.make_model(config, seed=3)
    src = workdir / "f32-src"
    model = oracle.save(model, src, dtype=torch.float32)
    path = workdir / "f32.gguf"
    write_gguf(path, config, float_tensors(oracle.read_checkpoint(src), config))
    return config, model, src, path


def test_f32_gguf_packs_as_its_checkpoint_and_matches_transformers(f32_case, workdir):
    config, model, src, path = f32_case
    from_dir, from_gguf = workdir / "f32-dir-out", workdir / "f32-gguf-out"
    for source, out in ((src, from_dir), (path, from_gguf)):
        proc = oracle.compile_model(source, out, "--quant", "f32")
        assert proc.returncode == 0, proc.stderr
    # The same weights under the same names, in the same layout.
    table_dir, data_dir = oracle.pack_table(from_dir / "weights.phw")
    table_gguf, data_gguf = oracle.pack_table(from_gguf / "weights.phw")
    assert table_gguf == table_dir
    assert (from_gguf / "weights.phw").read_bytes()[data_gguf:] == \
        (from_dir / "weights.phw").read_bytes()[data_dir:]
    assert json.loads((from_gguf / "phimoec.json").read_text())["copied"] == ["tokenizer.gguf"]
    # LongRoPE crossing (original 32) during decode.
    prompt = oracle.random_prompt(config.vocab_size, 20)
    ours, logits = oracle.run_bin(from_gguf, prompt, 24, workdir / "f32.npy")
    assert ours == oracle.reference_greedy(model, prompt, 24)
    reference = oracle.reference_logits(model, prompt + ours, 32)
    err = np.abs(logits - reference).max()
    assert err <= 1e-3, f"max |dlogit| = {err}"


def test_the_vocabulary_travels_with_the_binary(f32_case, workdir):
    out = workdir / "f32-gguf-out"
    vocabulary = gguf.GGUFReader(str(out / "tokenizer.gguf"))
    assert len(vocabulary.tensors) == 0
    source = gguf.GGUFReader(str(PHI3_VOCAB))
    for key, field in source.fields.items():
        if key.startswith("tokenizer."):
            assert vocabulary.fields[key].contents() == field.contents(), key
    raw = (VOCAB / "ggml-vocab-phi-3.gguf.inp").read_bytes().decode().replace("\r\n", "\n")
    inputs = raw.split("\n__ggml_vocab_test__\n")[:-1]
    expected = (VOCAB / "ggml-vocab-phi-3.gguf.out").read_text().replace("\r\n", "\n")
    checked = 0
    for text, ids in zip(inputs, expected.split("\n")[:-1]):
        if not text.strip() or text.startswith("-") or "\n" in text:
            continue
        proc = subprocess.run([str(out / "phimoe-bin"), "tokenize", text], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr
        # phimoe-bin tokenize adds the BOS that the vocabulary's add_bos_token asks for.
        assert proc.stdout.strip() == ",".join(["1"] + ids.split()), text
        checked += 1
    assert checked >= 5
    proc = subprocess.run([str(out / "phimoe-bin"), "-p", "Hello", "-n", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("Hello"), proc.stderr


def random_blocks(kind, rows, columns, gen):
    """`rows` rows of random llama.cpp blocks of `kind` holding weights of a few hundredths,
    as uint8 [rows, bytes]."""
    block_values, block_bytes = gguf.GGML_QUANT_SIZES[kind]
    n = rows * columns // block_values
    blocks = gen.integers(0, 256, size=(n, block_bytes), dtype=np.uint8)

    def put_f16(at, values):
        blocks[:, at:at + 2] = values.astype(np.float16).view(np.uint8).reshape(n, 2)

    if kind == Q.Q8_0:  # d, 32 int8
        put_f16(0, gen.uniform(1e-4, 2e-4, n))
    elif kind == Q.Q4_K:  # d, dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles
        d = gen.uniform(1e-4, 2e-4, n)
        put_f16(0, d)
        put_f16(2, d * gen.uniform(6.0, 9.0, n))
    elif kind == Q.Q6_K:  # 128 ql, 64 qh, 16 int8 scales, d
        put_f16(208, gen.uniform(2.5e-5, 4.5e-5, n))
    elif kind == Q.Q4_0:  # d, 16 bytes of nibbles: (q - 8) d
        put_f16(0, gen.uniform(4e-3, 8e-3, n))
    elif kind == Q.Q4_1:  # d, m, nibbles: q d + m
        d = gen.uniform(4e-3, 8e-3, n)
        put_f16(0, d)
        put_f16(2, -7.5 * d * gen.uniform(0.8, 1.2, n))
    elif kind == Q.Q5_0:  # d, 4 bytes of fifth bits, nibbles: (q - 16) d
        put_f16(0, gen.uniform(2e-3, 4e-3, n))
    elif kind == Q.Q5_1:  # d, m, fifth bits, nibbles: q d + m
        d = gen.uniform(2e-3, 4e-3, n)
        put_f16(0, d)
        put_f16(2, -15.5 * d * gen.uniform(0.8, 1.2, n))
    elif kind == Q.Q2_K:  # 16 scale bytes, 64 bytes of quants, d, dmin
        d = gen.uniform(1e-3, 2e-3, n)
        put_f16(80, d)
        put_f16(82, d * gen.uniform(1.2, 1.8, n))
    elif kind == Q.Q3_K:  # 32 bytes of high bits, 64 of quants, 12 of scales, d
        put_f16(108, gen.uniform(2e-4, 4e-4, n))
    elif kind == Q.Q5_K:  # d, dmin, 12 bytes of scales and mins, 32 of fifth bits, nibbles
        d = gen.uniform(5e-5, 1e-4, n)
        put_f16(0, d)
        put_f16(2, d * gen.uniform(12.0, 18.0, n))
    else:
        raise ValueError(kind)
    return blocks.reshape(rows, columns // block_values * block_bytes)


# What a GGUF's tensors are stored as: Q4_K_M's choice for Phi-3.5-MoE (Q4_K, Q6_K for v,
# the down experts and the LM head; Q8_0 for the embedding here), and the formats phimoec reads
# without kernels for them, stored as q4k or q6k under --quant keep.
PLANS = {
    "q4_k_m": dict(embd=Q.Q8_0, output=Q.Q6_K, q=Q.Q4_K, k=Q.Q4_K, v=Q.Q6_K, o=Q.Q4_K,
                   gate=Q.Q4_K, up=Q.Q4_K, down=Q.Q6_K, router=Q.F16),
    "others": dict(embd=Q.Q4_0, output=Q.Q5_K, q=Q.Q5_K, k=Q.Q3_K, v=Q.Q2_K, o=Q.Q5_0,
                   gate=Q.Q4_1, up=Q.Q5_1, down=Q.Q4_0, router=Q.F32),
}
# The storage --quant keep gives each format.
KEPT = {Q.Q8_0: "q8_0", Q.Q4_K: "q4k", Q.Q6_K: "q6k", Q.Q4_0: "q4k", Q.Q4_1: "q4k",
        Q.Q2_K: "q4k", Q.Q3_K: "q4k", Q.Q5_0: "q6k", Q.Q5_1: "q6k", Q.Q5_K: "q6k"}


@pytest.fixture(scope="module", params=list(PLANS))
def quantized_case(workdir, request):
    """A PhiMoE of 256-wide rows as a GGUF of random blocks in the formats of a plan (PLANS),
    and transformers' model of the values gguf-py reads from them."""
    plan = PLANS[request.param]
    config = tiny_config(1.2, layers=2, hidden=256, heads=4, kv_heads=2, experts=4,
                         intermediate=256, vocab=96)
    model = oracle.make_model(config, seed=5)
    src = workdir / f"{request.param}-src"
    oracle.save(model, src, dtype=torch.float32)
    tensors = float_tensors(oracle.read_checkpoint(src), config)
    gen = np.random.default_rng(11)
    kinds = {name_of(T.TOKEN_EMBD): plan["embd"], name_of(T.OUTPUT): plan["output"]}
    for i in range(config.num_hidden_layers):
        kinds.update({name_of(T.ATTN_Q, i): plan["q"], name_of(T.ATTN_K, i): plan["k"],
                      name_of(T.ATTN_V, i): plan["v"], name_of(T.ATTN_OUT, i): plan["o"],
                      name_of(T.FFN_GATE_EXP, i): plan["gate"],
                      name_of(T.FFN_UP_EXP, i): plan["up"],
                      name_of(T.FFN_DOWN_EXP, i): plan["down"],
                      name_of(T.FFN_GATE_INP, i): plan["router"]})
    values = {name: array for name, (array, _) in tensors.items()}
    for name, kind in kinds.items():
        array = values[name]
        if kind in (Q.F16, Q.F32):
            tensors[name] = (array.astype(np.float16 if kind == Q.F16 else np.float32), None)
            values[name] = tensors[name][0].astype(np.float32)
            continue
        columns = array.shape[-1]
        blocks = random_blocks(kind, array.size // columns, columns, gen)
        blocks = blocks.reshape(array.shape[:-1] + (blocks.shape[-1],))
        tensors[name] = (blocks, kind)
        values[name] = gguf.quants.dequantize(blocks, kind).reshape(array.shape)
    # transformers' model of the values gguf-py reads from the blocks.
    from safetensors.torch import save_file
    from transformers import PhimoeForCausalLM
    rounded = workdir / f"{request.param}-rounded"
    rounded.mkdir()
    (rounded / "config.json").write_text((src / "config.json").read_text())
    save_file(checkpoint_of(values, config), rounded / "model.safetensors",
              metadata={"format": "pt"})
    model = PhimoeForCausalLM.from_pretrained(rounded, dtype=torch.float32).eval()
    path = workdir / f"{request.param}.gguf"
    write_gguf(path, config, tensors)
    return request.param, config, model, path, kinds


@torch.no_grad()
def sparsemixer_gaps(model, tokens, jitter=0.01):
    """For each position, how close a routing decision of the sparsemixer comes to flipping
    in any layer, in both stages: the smallest change of a score that moves (max - s) across
    2 * jitter * max(|s|, max) (whether s joins the softmax: the expert's weight jumps) or the
    second score past the first (which expert is chosen), over the mean |score| of the layer.
    A row's decisions are its own: a flip moves its logits by far more than the block
    kernels' quantized activations do, and the rows after it hardly."""
    gaps = torch.full((len(tokens),), np.inf, dtype=torch.float64)

    def margins(scores):
        m = scores.max(dim=-1, keepdim=True).values
        live = torch.isfinite(scores) & (scores < m)
        near = ((m - scores) - 2 * jitter * torch.maximum(scores.abs(), m)).abs()
        near = torch.where(live, near, torch.inf).min(dim=-1).values
        top2 = torch.topk(scores, 2, dim=-1).values
        return torch.minimum(near, top2[:, 0] - top2[:, 1])

    def hook(router, _, output):
        s = output[0].reshape(-1, output[0].shape[-1]).double()
        top = s.argmax(dim=-1, keepdim=True)
        both = torch.minimum(margins(s), margins(s.scatter(-1, top, -torch.inf)))
        gaps[:] = torch.minimum(gaps, both / s.abs().mean())

    handles = [layer.mlp.router.register_forward_hook(hook) for layer in model.model.layers]
    try:
        model(torch.tensor([tokens]))
    finally:
        for h in handles:
            h.remove()
    return gaps.numpy()


def check_close(logits, model, tokens, bound=0.05, clear=0.05):
    """The logits of a build with block kernels against transformers: within `bound` of the
    largest logit on every row whose routing is `clear` of flipping (sparsemixer_gaps), and
    most rows are."""
    reference = oracle.reference_logits(model, tokens, 32)
    scale = np.abs(reference).max()
    err = np.abs(logits - reference).max(axis=1)
    rows = sparsemixer_gaps(model, tokens) > clear
    assert rows.sum() >= len(tokens) // 2, "routing near a flip on most rows: pick other seeds"
    assert err[rows].max() <= bound * scale, f"max|d| {err[rows].max()} (max|logit| {scale})"
    assert err.max() > 1e-4 * scale  # and the activations were quantized


def meets_transformers(out, model, config, n, dump):
    """OUT/phimoe-bin's logits over a 24-token prompt and n greedy tokens (past LongRoPE's
    switch at 32) against transformers', to 1e-4 of the largest."""
    prompt = oracle.random_prompt(config.vocab_size, 24)
    ours, logits = oracle.run_bin(out, prompt, n, dump)
    reference = oracle.reference_logits(model, prompt + ours, 32)
    scale = np.abs(reference).max()
    err = np.abs(logits - reference).max()
    assert err <= 1e-4 * max(1.0, scale), f"max |dlogit| = {err} (max |logit| {scale})"


def test_quantized_gguf_values_are_gguf_pys(quantized_case, workdir):
    """--quant f32: every block dequantized as gguf-py does, then float kernels: transformers
    on those values, to float rounding."""
    plan, config, model, path, _ = quantized_case
    out = workdir / f"{plan}-f32-out"
    proc = oracle.compile_model(path, out, "--quant", "f32")
    assert proc.returncode == 0, proc.stderr
    meets_transformers(out, model, config, 16, workdir / f"{plan}-f32.npy")


def check_blocks_copied(pack, path, config, target):
    """Every block-quantized weight of `pack` holds the blocks of the GGUF tensors it is made
    of, byte for byte, in the target's layout (test_quant_formats: groups of 16 rows for the
    CPU, field by field for a GPU)."""
    from test_quant_formats import interleave_rows16, split_fields
    table, data_offset = oracle.pack_table(pack)
    blocks = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(path)).tensors}
    sources = {"model.embed_tokens.weight": blocks[name_of(T.TOKEN_EMBD)],
               "lm_head.weight": blocks[name_of(T.OUTPUT)]}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        for tensor, x in ((T.ATTN_Q, "q"), (T.ATTN_K, "k"), (T.ATTN_V, "v"), (T.ATTN_OUT, "o")):
            sources[p + f"self_attn.{x}_proj.weight"] = blocks[name_of(tensor, i)]
        gate, up = blocks[name_of(T.FFN_GATE_EXP, i)], blocks[name_of(T.FFN_UP_EXP, i)]
        sources[p + "block_sparse_moe.experts.gate_up.weight"] = np.concatenate([gate, up], 1)
        sources[p + "block_sparse_moe.experts.down.weight"] = blocks[name_of(T.FFN_DOWN_EXP, i)]
    data = np.fromfile(pack, dtype=np.uint8)
    quantized = [e for e in table if "qweight" in e["type"]]
    assert sorted(e["name"] for e in quantized) == sorted(sources)
    for entry in quantized:
        fmt = entry["type"].split("<")[1].split(",")[0]
        expected = sources[entry["name"]]
        expected = expected.reshape(-1, expected.shape[-1])
        if entry.get("layout") == "rows16":
            expected = interleave_rows16(expected, fmt)
        if target != "cpu":
            expected = split_fields(expected, fmt)
        got = data[data_offset + entry["offset"]:][:entry["bytes"]]
        assert np.array_equal(got, expected.reshape(-1)), entry["name"]


def test_quantized_gguf_keeps_its_blocks(quantized_case, workdir):
    """--quant keep (the default): each weight in the GGUF's own format, its blocks copied
    (formats without kernels: q4k or q6k from their values); the logits are transformers' on
    the GGUF's values but for the quantized activations of the block kernels (and the
    requantized weights)."""
    plan, config, model, path, kinds = quantized_case
    out = workdir / f"{plan}-keep-out"
    proc = oracle.compile_model(path, out)
    assert proc.returncode == 0, proc.stderr
    table, _ = oracle.pack_table(out / "weights.phw")
    types = {e["name"]: e["type"] for e in table}

    def stored(name):
        return types[name].split("<")[1].split(",")[0] if "qweight" in types[name] else "float"
    assert stored("model.embed_tokens.weight") == KEPT[kinds[name_of(T.TOKEN_EMBD)]]
    assert stored("lm_head.weight") == KEPT[kinds[name_of(T.OUTPUT)]]
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        # q, k and v of different storage do not make one q/k/v weight: each keeps its own.
        attention = [KEPT[kinds[name_of(t, i)]] for t in (T.ATTN_Q, T.ATTN_K, T.ATTN_V)]
        assert len(set(attention)) > 1
        assert [stored(p + f"self_attn.{x}_proj.weight") for x in "qkv"] == attention
        assert stored(p + "self_attn.o_proj.weight") == KEPT[kinds[name_of(T.ATTN_OUT, i)]]
        gate_up = {KEPT[kinds[name_of(t, i)]] for t in (T.FFN_GATE_EXP, T.FFN_UP_EXP)}
        assert stored(p + "block_sparse_moe.experts.gate_up.weight") in gate_up
        assert stored(p + "block_sparse_moe.experts.down.weight") == \
            KEPT[kinds[name_of(T.FFN_DOWN_EXP, i)]]
        assert "qweight" not in types[p + "block_sparse_moe.gate.weight"]

    if plan == "q4_k_m":
        # Every block is the GGUF's, copied (quantizing its values again would not give its
        # bytes back), in the layout of the CPU kernels.
        check_blocks_copied(out / "weights.phw", path, config, "cpu")

    prompt = oracle.random_prompt(config.vocab_size, 24)
    ours, logits = oracle.run_bin(out, prompt, 8, workdir / f"{plan}-keep.npy")
    check_close(logits, model, prompt + ours)


def test_quantized_gguf_gpu_pack_keeps_its_blocks(quantized_case, workdir):
    """--target sm_90: the same blocks, field by field (nvcc stood in for: this is the pack)."""
    from test_quant_formats import compile_pack
    plan, config, _, path, _ = quantized_case
    if plan != "q4_k_m":
        pytest.skip("blocks of formats with kernels only")
    pack = compile_pack(path, workdir / f"{plan}-sm90-out", "--target", "sm_90")
    check_blocks_copied(pack, path, config, "sm_90")


def test_quantized_gguf_emulated_cuda_build(quantized_case, workdir):
    """A CUDA build of the GGUF (--target sm_90, its blocks as they are) on the CUDA emulation
    (test/gpu/emu, as test_cuda_emulated.py): its kernels keep activations in floats or
    22-bit fixed point, so it meets transformers on the GGUF's values to float rounding."""
    nvcc_emu = oracle.BUILD / "test" / "gpu" / "emu" / "nvcc-emu"
    if not nvcc_emu.exists():
        pytest.skip(f"{nvcc_emu} is absent: no CUDA backend in this build")
    plan, config, model, path, _ = quantized_case
    if plan != "q4_k_m":
        pytest.skip("the formats with kernels: the emulation is slow")
    out = workdir / f"{plan}-emu-out"
    proc = subprocess.run([str(oracle.PHIMOEC), "compile", str(path), "--target", "sm_90",
                           "-o", str(out)], capture_output=True, text=True,
                          env=dict(os.environ, PHIMOE_NVCC=str(nvcc_emu)))
    assert proc.returncode == 0, proc.stderr
    meets_transformers(out, model, config, 8, workdir / f"{plan}-emu.npy")


def test_quantized_gguf_requantized(quantized_case, workdir):
    """--quant q8_0 from Q4_K/Q6_K blocks: dequantized, then quantized again."""
    plan, config, model, path, _ = quantized_case
    out = workdir / f"{plan}-q8-out"
    proc = oracle.compile_model(path, out, "--quant", "q8_0")
    assert proc.returncode == 0, proc.stderr
    table, _ = oracle.pack_table(out / "weights.phw")
    blocks = {e["type"].split("<")[1].split(",")[0] for e in table if "qweight" in e["type"]}
    assert blocks == {"q8_0"}
    prompt = oracle.random_prompt(config.vocab_size, 24)
    ours, logits = oracle.run_bin(out, prompt, 8, workdir / f"{plan}-q8.npy")
    check_close(logits, model, prompt + ours)


def test_rope_mscale(workdir):
    """A GGUF's attention factor is used, with a warning; --rope-mscale replaces it. (Queries
    and keys 6 times the usual size: attention that is not near uniform, where the scale of
    its logits shows.)"""
    config = tiny_config(1.2, layers=2, bias=True)
    model = oracle.make_model(config, seed=4)
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.weight.mul_(6)
    src = workdir / "mscale-src"
    model = oracle.save(model, src, dtype=torch.float32)
    path = workdir / "generic-factor.gguf"
    write_gguf(path, config, float_tensors(oracle.read_checkpoint(src), config),
               attn_factor=1.19)
    prompt = oracle.random_prompt(config.vocab_size, 40)  # past the original 32
    reference = oracle.reference_logits(model, prompt, 32)
    errors = {}
    for flags in ((), ("--rope-mscale", "1.2")):
        out = workdir / ("mscale-out" + "".join(flags))
        proc = oracle.compile_model(path, out, "--quant", "f32", *flags)
        assert proc.returncode == 0, proc.stderr
        warned = "rope.scaling.attn_factor, 1.19" in proc.stderr
        assert warned == (not flags), proc.stderr
        _, logits = oracle.run_bin(out, prompt, 0, workdir / "mscale.npy")
        errors[flags] = np.abs(logits - reference).max()
    # The checkpoint's 1.2 to float rounding; the file's 1.19 three orders of magnitude off.
    assert errors[("--rope-mscale", "1.2")] <= 1e-5, errors
    assert errors[()] > 100 * errors[("--rope-mscale", "1.2")] and errors[()] > 1e-4, errors


def compile_fails(source, out, *flags):
    proc = oracle.compile_model(source, out, *flags)
    assert proc.returncode != 0
    assert not pathlib.Path(out).exists(), "a failed compile left output behind"
    assert proc.stdout == ""
    return proc.stderr


def test_bad_gguf_files_are_refused_by_name(f32_case, workdir):
    config, model, src, path = f32_case
    tensors = float_tensors(oracle.read_checkpoint(src), config)
    out = workdir / "bad-out"

    def refused(name, tensors, **kwargs):
        """compile_fails on a GGUF of these tensors written to workdir/name."""
        write_gguf(workdir / name, config, tensors, **kwargs)
        return compile_fails(workdir / name, out)

    err = refused("qwen2moe.gguf", tensors, arch="qwen2moe")
    assert str(workdir / "qwen2moe.gguf") in err and '"qwen2moe"' in err

    err = refused("dense-llama.gguf", tensors, arch="llama", skip_keys=("expert_count",))
    assert "dense Llama" in err

    # a PhiMoE's tensors (biases) in a llama
    err = refused("biased-llama.gguf", tensors, arch="llama")
    assert "a Mixtral has no attention or LM head biases" in err

    missing = dict(tensors)
    del missing[name_of(T.ATTN_K, 1)]
    err = refused("missing.gguf", missing)
    assert "'blk.1.attn_k.weight' (model.layers.1.self_attn.k_proj.weight) is missing" in err

    iq = dict(tensors)
    w = tensors[name_of(T.ATTN_OUT, 0)][0]
    iq[name_of(T.ATTN_OUT, 0)] = (np.zeros((w.shape[0], w.shape[1] // 32 * 18), np.uint8),
                                  Q.IQ4_NL)
    err = refused("iq4_nl.gguf", iq)
    assert "tensor 'blk.0.attn_output.weight' is IQ4_NL" in err

    err = refused("no-heads.gguf", tensors, skip_keys=("head_count",))
    assert "metadata 'phimoe.attention.head_count' is missing" in err

    wrong = dict(tensors)
    wrong[name_of(T.FFN_NORM, 0)] = (np.ones(config.hidden_size + 1, np.float32), None)
    err = refused("shape.gguf", wrong)
    assert "'blk.0.ffn_norm.weight' (model.layers.0.post_attention_layernorm.weight) has " \
           f"shape [{config.hidden_size + 1}]" in err and "metadata implies" in err

    err = refused("no-vocab.gguf", tensors, vocabulary=False)
    assert "tokenizer.ggml.model" in err

    extra = dict(tensors)
    extra["blk.0.attn_sinks.weight"] = (np.ones(4, np.float32), None)
    err = refused("extra.gguf", extra)
    assert "tensor 'blk.0.attn_sinks.weight' is not a tensor of a phimoe model" in err

    one_set = dict(tensors)
    del one_set[name_of(T.ROPE_FACTORS_LONG)]
    err = refused("one-factor-set.gguf", one_set)
    assert "tensor 'rope_factors_long.weight' is missing" in err

    stack = dict(tensors)
    w = tensors[name_of(T.FFN_UP_EXP, 1)][0]
    stack[name_of(T.FFN_UP_EXP, 1)] = (w[:-1], None)
    err = refused("experts.gguf", stack)
    assert f"tensor 'blk.1.ffn_up_exps.weight' has 3 dimensions, not [{w.shape[0]} experts" in err

    err = compile_fails(path, out, "--rope-mscale", "-1")
    assert "--rope-mscale -1" in err and "expected a positive scale" in err
    plain = workdir / "not-a-model.txt"
    plain.write_text("hello")
    err = compile_fails(plain, out)
    assert "not a directory or a GGUF file" in err

    cut = workdir / "cut.gguf"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) - 1000])
    err = compile_fails(cut, out)
    assert str(cut) in err and "truncated" in err

    err = compile_fails(src, out, "--rope-mscale", "1.2")
    assert "--rope-mscale is for GGUF input" in err
    proc = subprocess.run([str(oracle.PHIMOEC), "compile", str(path), "--target", "sm_90",
                           "--emit-project", str(out)], capture_output=True, text=True)
    assert proc.returncode != 0 and not out.exists()
    assert "--emit-project" in proc.stderr and "safetensors" in proc.stderr


def converter_source():
    """llama.cpp's source (its convert_hf_to_gguf.py), fetched as bench/llamacpp.sh does."""
    proc = subprocess.run([str(oracle.ROOT / "bench" / "llamacpp.sh"), "--fetch"],
                          capture_output=True, text=True,
                          env=dict(os.environ, PHIMOE_VENV=sys.prefix))  # its pip downloads
    if proc.returncode != 0:
        pytest.skip("cannot fetch llama.cpp's source: " + proc.stderr.strip()[-300:])
    return pathlib.Path(proc.stdout.strip().splitlines()[-1])


CONVERT = """
import importlib, runpy, sys
src, vocab, module, cls = sys.argv[1:5]
sys.path[:0] = [src + "/gguf-py", src]
import gguf

# The converters of Phi-3 and Llama read a SentencePiece tokenizer.model, which the tiny models
# have not: their vocabulary comes from a vocabulary GGUF instead; all else is the converter's.
def set_vocab(self):
    for key, field in gguf.GGUFReader(vocab).fields.items():
        if key.startswith("tokenizer."):
            t = field.types
            self.gguf_writer.add_key_value(key, field.contents(), t[0],
                                           sub_type=t[-1] if len(t) > 1 else None)
setattr(getattr(importlib.import_module(module), cls), "set_vocab", set_vocab)
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[5:]
runpy.run_path(src + "/convert_hf_to_gguf.py", run_name="__main__")
"""


def convert(checkpoint, path, outtype, vocab, model_class, workdir, *flags):
    """llama.cpp's convert_hf_to_gguf.py on `checkpoint`, its vocabulary from `vocab`."""
    src = converter_source()
    script = workdir / "convert.py"
    script.write_text(CONVERT)
    module, cls = model_class.rsplit(".", 1)
    proc = subprocess.run([sys.executable, str(script), str(src), str(vocab), module, cls,
                           str(checkpoint), "--outfile", str(path), "--outtype", outtype,
                           *flags],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_llamacpp_converter_output(outtype, workdir):
    """examples/tiny-phimoe through llama.cpp's own converter: the GGUF build gives the
    checkpoint directory's logits (its mscale is the converter's generic factor, so no
    --rope-mscale is needed), and q8_0 keeps the converter's blocks."""
    tiny = workdir / "tiny-hf"
    if not tiny.exists():
        import shutil
        shutil.copytree(oracle.ROOT / "examples" / "tiny-phimoe", tiny)
        config = json.loads((tiny / "config.json").read_text())
        config["architectures"] = ["PhiMoEForCausalLM"]  # Phi-3.5-MoE's own config says so
        (tiny / "config.json").write_text(json.dumps(config))
    path = workdir / f"tiny-{outtype}.gguf"
    convert(tiny, path, outtype, PHI3_VOCAB, "conversion.phi.PhiMoeModel", workdir)
    out, ref_out = workdir / f"tiny-{outtype}-out", workdir / f"tiny-dir-{outtype}-out"
    proc = oracle.compile_model(path, out)
    assert proc.returncode == 0, proc.stderr
    assert "attn_factor, 1.22474" in proc.stderr  # sqrt(1 + ln(512/64)/ln(64))
    # The directory compiled to the same storage: f32, or q8_0 blocks (llama.cpp's converter
    # and phimoec quantize a row to q8_0 alike).
    proc = oracle.compile_model(oracle.ROOT / "examples" / "tiny-phimoe", ref_out,
                                "--quant", outtype)
    assert proc.returncode == 0, proc.stderr
    prompt = oracle.random_prompt(4032, 70)  # past the original context of 64
    _, ours = oracle.run_bin(out, prompt, 0, workdir / "tiny-gguf.npy")
    _, ref = oracle.run_bin(ref_out, prompt, 0, workdir / "tiny-dir.npy")
    scale = np.abs(ref).max()
    err = np.abs(ours - ref).max()
    assert err <= 1e-5 * scale, f"max|d| {err} (max|logit| {scale})"
    table, _ = oracle.pack_table(out / "weights.phw")
    experts = next(e for e in table if e["name"].endswith("experts.gate_up.weight"))
    assert ("q8_0" in experts["type"]) == (outtype == "q8_0")


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_llamacpp_converter_mixtral(outtype, workdir):
    """A Mixtral through llama.cpp's converter: a "llama" with experts whose q and k rows the
    converter reorders for its interleaved RoPE. The GGUF build gives the checkpoint
    directory's logits (and transformers' for f32); llama.cpp's q8_0 blocks are phimoec's."""
    config = oracle.tiny_mixtral_config(layers=2, hidden=64, heads=4, kv_heads=2, experts=4,
                                        intermediate=128, vocab=96)
    src = workdir / "mixtral-src"
    if not src.exists():
        model = oracle.save(oracle.make_mixtral(config, seed=2), src, dtype=torch.float32)
        torch.save(model, workdir / "mixtral.pt")
    model = torch.load(workdir / "mixtral.pt", weights_only=False)
    path = workdir / f"mixtral-{outtype}.gguf"
    convert(src, path, outtype, VOCAB / "ggml-vocab-llama-spm.gguf",
            "conversion.llama.LlamaModel", workdir)
    assert gguf.GGUFReader(str(path)).fields["general.architecture"].contents() == "llama"
    out, ref_out = workdir / f"mixtral-{outtype}-out", workdir / f"mixtral-dir-{outtype}-out"
    for source, target in ((path, out), (src, ref_out)):
        proc = oracle.compile_model(source, target, "--quant", outtype)
        assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    prompt = oracle.random_prompt(config.vocab_size, 30)
    _, ours = oracle.run_bin(out, prompt, 0, workdir / "mixtral-gguf.npy")
    _, ref = oracle.run_bin(ref_out, prompt, 0, workdir / "mixtral-dir.npy")
    scale = np.abs(ref).max()
    assert np.abs(ours - ref).max() <= 1e-5 * scale
    if outtype == "f32":
        reference = oracle.reference_logits(model, prompt, 1 << 30)
        assert np.abs(ours - reference).max() <= 1e-3
    # Not the identity: the rows of q and k are reordered in the file.
    reader = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(path)).tensors}
    if outtype == "f32":
        q = model.model.layers[0].self_attn.q_proj.weight.detach().numpy()
        assert not np.array_equal(reader["blk.0.attn_q.weight"], q)
        assert np.array_equal(np.sort(reader["blk.0.attn_q.weight"], 0), np.sort(q, 0))


def test_old_per_expert_mixtral_gguf(workdir):
    """Older Mixtral GGUFs hold one tensor per expert (blk.N.ffn_gate.E.weight): read as the
    stacked ones, with q and k reordered as llama.cpp's converter reorders them."""
    config = oracle.tiny_mixtral_config(layers=2, hidden=64, heads=4, kv_heads=2, experts=4,
                                        intermediate=128, vocab=96)
    src = workdir / "mixtral-old-src"
    model = oracle.save(oracle.make_mixtral(config, seed=6), src, dtype=torch.float32)
    sd = {k: v.float().numpy() for k, v in oracle.read_checkpoint(src).items()}
    head = config.hidden_size // config.num_attention_heads

    def permute(w):  # llama.cpp's LlamaModel.permute, for rows of heads of `head`
        heads = w.shape[0] // head
        return w.reshape(heads, 2, head // 2, -1).swapaxes(1, 2).reshape(w.shape)

    tensors = {name_of(T.TOKEN_EMBD): sd["model.embed_tokens.weight"],
               name_of(T.OUTPUT_NORM): sd["model.norm.weight"],
               name_of(T.OUTPUT): sd["lm_head.weight"]}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        tensors.update({
            name_of(T.ATTN_NORM, i): sd[p + "input_layernorm.weight"],
            name_of(T.FFN_NORM, i): sd[p + "post_attention_layernorm.weight"],
            name_of(T.ATTN_Q, i): permute(sd[p + "self_attn.q_proj.weight"]),
            name_of(T.ATTN_K, i): permute(sd[p + "self_attn.k_proj.weight"]),
            name_of(T.ATTN_V, i): sd[p + "self_attn.v_proj.weight"],
            name_of(T.ATTN_OUT, i): sd[p + "self_attn.o_proj.weight"],
            name_of(T.FFN_GATE_INP, i): sd[p + "block_sparse_moe.gate.weight"]})
        for e in range(config.num_local_experts):
            for part, w in (("ffn_gate", "w1"), ("ffn_down", "w2"), ("ffn_up", "w3")):
                tensors[f"blk.{i}.{part}.{e}.weight"] = \
                    sd[f"{p}block_sparse_moe.experts.{e}.{w}.weight"]
    writer = gguf.GGUFWriter(str(workdir / "mixtral-old.gguf"), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_expert_count(config.num_local_experts)
    writer.add_expert_used_count(config.num_experts_per_tok)
    copy_vocabulary(writer, VOCAB / "ggml-vocab-llama-spm.gguf")
    for name, array in tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    out = workdir / "mixtral-old-out"
    proc = oracle.compile_model(workdir / "mixtral-old.gguf", out, "--quant", "f32",
                                "--rope-mscale", "1.2")
    assert proc.returncode == 0, proc.stderr
    assert "--rope-mscale ignored" in proc.stderr  # a Mixtral has no LongRoPE
    prompt = oracle.random_prompt(config.vocab_size, 30)
    ours, logits = oracle.run_bin(out, prompt, 10, workdir / "mixtral-old.npy")
    assert ours == oracle.reference_greedy(model, prompt, 10)
    reference = oracle.reference_logits(model, prompt + ours, 1 << 30)
    assert np.abs(logits - reference).max() <= 1e-3


def test_split_gguf(workdir):
    """A GGUF split in several files (convert_hf_to_gguf.py --split-max-tensors, as large
    models are published): compiled from its first file, the same model as unsplit."""
    tiny = workdir / "tiny-split-hf"
    import shutil
    shutil.copytree(oracle.ROOT / "examples" / "tiny-phimoe", tiny)
    config = json.loads((tiny / "config.json").read_text())
    config["architectures"] = ["PhiMoEForCausalLM"]
    (tiny / "config.json").write_text(json.dumps(config))
    convert(tiny, workdir / "split.gguf", "f32", PHI3_VOCAB, "conversion.phi.PhiMoeModel",
            workdir, "--split-max-tensors", "30")
    shards = sorted(workdir.glob("split-*-of-*.gguf"))
    assert len(shards) >= 3, shards
    out, ref_out = workdir / "split-out", workdir / "split-dir-out"
    proc = oracle.compile_model(shards[0], out)
    assert proc.returncode == 0, proc.stderr
    proc = oracle.compile_model(oracle.ROOT / "examples" / "tiny-phimoe", ref_out, "--quant",
                                "f32")
    assert proc.returncode == 0, proc.stderr
    prompt = oracle.random_prompt(4032, 20)
    _, ours = oracle.run_bin(out, prompt, 0, workdir / "split.npy")
    _, ref = oracle.run_bin(ref_out, prompt, 0, workdir / "split-dir.npy")
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()
    # Not the first file; a file missing.
    err = compile_fails(shards[1], workdir / "split-bad-out")
    assert f"file 2 of {len(shards)} split files: the first of them" in err
    shards[-1].rename(workdir / "aside.gguf")
    err = compile_fails(shards[0], workdir / "split-bad-out")
    assert str(shards[-1]) in err and "cannot open" in err
