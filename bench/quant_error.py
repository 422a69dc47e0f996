#!/usr/bin/env python3
"""bench/quant_error.py - our quantizer against llama.cpp's, in one graph: transformers' own.

    PHIMOE_BUILD_DIR=build ~/.cache/phimoec/venv-*/bin/python bench/quant_error.py
        [--models ci,example] [--types q8_0,q4k,q6k] [--tokens 256] [--json out.json]

bench/accuracy.py compares each program's quantized run with its own f32 run, so each number also
carries that program's graph: ours routes with sparsemixer as transformers does, llama.cpp with
softmax top-2, and quantized activations differ too. This script takes the graph out of the
comparison. It runs transformers' PhimoeForCausalLM in float32 with its linear weights (attention,
experts, LM head, embedding) replaced by the dequantized blocks of

  - ours: the weights.phw that `phimoec compile --quant TYPE` wrote (bench/common.py builds it);
  - llama.cpp: the GGUF that llama-quantize made of the same checkpoint at the same tensor types
    (common.ensure_llama_quant; dequantized with gguf-py, llama.cpp's own reader),

and reports the mean KL(P_f32 || P_quant) and top-1 agreement against the unquantized model, over
the same tokens as bench/accuracy.py, twice: with free routing, and with every layer's router
output (experts and weights) held to the f32 run's. The second isolates the rounding of the
weights from the sparsemixer's sensitivity to it (bench/routing_flips.py). Before any of that, the
f32 pack and the f32 GGUF are loaded the same way and must reproduce the checkpoint's weights
exactly: that checks the name and layout mapping both readers rely on.
"""
import argparse
import datetime
import json
import pathlib
import re
import sys

import numpy as np

import common
from common import log

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test" / "e2e"))

GGML_TYPE = {"q8_0": "Q8_0", "q4k": "Q4_K", "q6k": "Q6_K"}


# --------------------------------------------------------------------------- weight readers

def pack_weights(out):
    """{pack name: float32 array} of a phimoec CPU pack's matrices (weights.phw)."""
    from gguf import GGMLQuantizationType as QT
    from gguf import quants
    import struct
    path = pathlib.Path(out) / "weights.phw"
    with open(path, "rb") as f:
        head = f.read(64)
        data_offset = struct.unpack("<Q", head[32:40])[0]
    table = common.pack_table(out)
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    weights = {}
    for t in table:
        dims = re.search(r"qweight<\s*\w+\s*,\s*\[([0-9, ]+)\]", t["type"])
        shape = [int(d) for d in dims.group(1).split(",")] if dims else common.shape_of(t["type"])
        if len(shape) < 2:
            continue
        storage = common.storage_of(t["type"])
        b = raw[data_offset + t["offset"]:data_offset + t["offset"] + t["bytes"]]
        if storage in GGML_TYPE:
            qt = QT[GGML_TYPE[storage]]
            rows = int(np.prod(shape[:-1]))
            v = quants.dequantize(np.asarray(b).reshape(rows, -1), qt)
        elif storage == "f32":
            v = np.frombuffer(b, dtype=np.float32)
        elif storage == "bf16":
            v = (np.frombuffer(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif storage == "f16":
            v = np.frombuffer(b, dtype=np.float16).astype(np.float32)
        else:
            raise ValueError(f"{path}: {t['name']}: unknown storage {storage}")
        weights[t["name"]] = np.asarray(v, dtype=np.float32).reshape(shape)
    return weights


def gguf_weights(path):
    """{gguf name: float32 array in HF orientation} of a GGUF's matrices."""
    from gguf import GGUFReader
    from gguf import quants
    r = GGUFReader(str(path))
    weights = {}
    for t in r.tensors:
        shape = [int(x) for x in reversed(list(t.shape))]
        if len(shape) < 2:
            continue
        v = quants.dequantize(np.asarray(t.data), t.tensor_type)
        weights[t.name] = np.asarray(v, dtype=np.float32).reshape(shape)
    return weights


def hf_from_pack(w, n_layers):
    """HF parameter name -> array, from pack names (qkv fused as q;k;v rows; experts gate;up)."""
    out = {"model.embed_tokens.weight": w["model.embed_tokens.weight"]}
    if "lm_head.weight" in w:
        out["lm_head.weight"] = w["lm_head.weight"]
    return out | {k: v for i in range(n_layers) for k, v in _pack_layer(w, i).items()}


def _pack_layer(w, i):
    p = f"model.layers.{i}."
    return {p + "self_attn.qkv_proj.weight": w[p + "self_attn.qkv_proj.weight"],
            p + "self_attn.o_proj.weight": w[p + "self_attn.o_proj.weight"],
            p + "mlp.experts.gate_up_proj": w[p + "block_sparse_moe.experts.gate_up.weight"],
            p + "mlp.experts.down_proj": w[p + "block_sparse_moe.experts.down.weight"]}


def hf_from_gguf(w, n_layers):
    out = {"model.embed_tokens.weight": w["token_embd.weight"]}
    if "output.weight" in w:
        out["lm_head.weight"] = w["output.weight"]
    for i in range(n_layers):
        b, p = f"blk.{i}.", f"model.layers.{i}."
        out[p + "self_attn.qkv_proj.weight"] = np.concatenate(
            [w[b + "attn_q.weight"], w[b + "attn_k.weight"], w[b + "attn_v.weight"]])
        out[p + "self_attn.o_proj.weight"] = w[b + "attn_output.weight"]
        out[p + "mlp.experts.gate_up_proj"] = np.concatenate(
            [w[b + "ffn_gate_exps.weight"], w[b + "ffn_up_exps.weight"]], axis=1)
        out[p + "mlp.experts.down_proj"] = w[b + "ffn_down_exps.weight"]
    return out


# ------------------------------------------------------------------------------- the model

class Model:
    """transformers' PhimoeForCausalLM in float32 with swappable linear weights."""

    def __init__(self, ckpt):
        import oracle
        import torch
        from transformers import PhimoeForCausalLM
        oracle.use_reference_longrope()
        self.torch = torch
        self.model = PhimoeForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
        self.model.config._experts_implementation = "eager"
        self.layers = self.model.model.layers
        self.original = {k: v.detach().clone() for k, v in self.params().items()}

    def params(self):
        """The weights the quantizers touch, by the names hf_from_* use (qkv as one matrix)."""
        ps = {"model.embed_tokens.weight": self.model.model.embed_tokens.weight}
        if not self.model.config.tie_word_embeddings:
            ps["lm_head.weight"] = self.model.lm_head.weight
        for i, layer in enumerate(self.layers):
            p = f"model.layers.{i}."
            ps[p + "self_attn.q_proj.weight"] = layer.self_attn.q_proj.weight
            ps[p + "self_attn.k_proj.weight"] = layer.self_attn.k_proj.weight
            ps[p + "self_attn.v_proj.weight"] = layer.self_attn.v_proj.weight
            ps[p + "self_attn.o_proj.weight"] = layer.self_attn.o_proj.weight
            ps[p + "mlp.experts.gate_up_proj"] = layer.mlp.experts.gate_up_proj
            ps[p + "mlp.experts.down_proj"] = layer.mlp.experts.down_proj
        return ps

    def load(self, weights, what):
        """Set the weights (hf_from_* names); None restores the checkpoint's."""
        torch = self.torch
        ps = self.params()
        with torch.no_grad():
            if weights is None:
                for k, v in self.original.items():
                    ps[k].copy_(v)
                return
            for k, p in ps.items():
                if ".q_proj." in k or ".k_proj." in k or ".v_proj." in k:
                    continue
                if k not in weights:
                    raise KeyError(f"{what}: no weight for {k}")
                p.copy_(torch.from_numpy(np.array(weights[k])).reshape(p.shape))
            for i, layer in enumerate(self.layers):
                qkv = torch.from_numpy(np.array(weights[f"model.layers.{i}.self_attn.qkv_proj.weight"]))
                a = layer.self_attn
                nq, nk = a.q_proj.weight.shape[0], a.k_proj.weight.shape[0]
                a.q_proj.weight.copy_(qkv[:nq])
                a.k_proj.weight.copy_(qkv[nq:nq + nk])
                a.v_proj.weight.copy_(qkv[nq + nk:])

    def max_diff(self):
        """Largest |current - checkpoint| over the swappable weights."""
        ps = self.params()
        return max(float((ps[k].detach() - v).abs().max()) for k, v in self.original.items())

    def run(self, ids, routes=None):
        """(logits float64 [n, vocab], router outputs per layer); routes forces them."""
        torch = self.torch
        seen, hooks = [], []
        for i, layer in enumerate(self.layers):
            def hook(mod, inp, out, i=i):
                seen.append(tuple(x.detach().clone() for x in out))
                return routes[i] if routes is not None else None
            hooks.append(layer.mlp.router.register_forward_hook(hook))
        try:
            with torch.no_grad():
                logits = self.model(torch.tensor([ids])).logits[0].double().numpy()
        finally:
            for h in hooks:
                h.remove()
        return logits, seen


# ------------------------------------------------------------------------------------ main

def evaluate(name, args):
    import accuracy
    ckpt, tokens, what = accuracy.model_setup(name, args)
    log(f"model {name}: {ckpt}; tokens: {what}")
    m = Model(ckpt)
    n_layers = len(m.layers)
    ref, routes = m.run(tokens)
    res = dict(model=name, tokens=what, n_tokens=len(tokens), rows={})

    # The readers, checked on unquantized weights: both must give the checkpoint back exactly.
    f32_out, reason = common.compile_phimoe(ckpt, "f32")
    if reason:
        raise RuntimeError(f"phimoec cannot build f32: {reason}")
    m.load(hf_from_pack(pack_weights(f32_out), n_layers), "f32 pack")
    res["pack_f32_max_diff"] = m.max_diff()
    f32_gguf = common.ensure_gguf(ckpt, "f32")
    m.load(hf_from_gguf(gguf_weights(f32_gguf), n_layers), "f32 gguf")
    res["gguf_f32_max_diff"] = m.max_diff()
    if res["pack_f32_max_diff"] or res["gguf_f32_max_diff"]:
        raise RuntimeError(f"{name}: the f32 readers do not reproduce the checkpoint: "
                           f"pack {res['pack_f32_max_diff']}, gguf {res['gguf_f32_max_diff']}")

    for q in args.types.split(","):
        row = {}
        out, reason = common.compile_phimoe(ckpt, q)
        if reason:
            row["ours_unsupported"] = reason
        else:
            m.load(hf_from_pack(pack_weights(out), n_layers), f"{q} pack")
            row["ours"] = common.kl_top1(ref, m.run(tokens)[0])
            row["ours_fixed_routing"] = common.kl_top1(ref, m.run(tokens, routes)[0])
        gguf, _ = common.ensure_llama_quant(ckpt, q)
        m.load(hf_from_gguf(gguf_weights(gguf), n_layers), f"{q} gguf")
        row["llama"] = common.kl_top1(ref, m.run(tokens)[0])
        row["llama_fixed_routing"] = common.kl_top1(ref, m.run(tokens, routes)[0])
        m.load(None, "checkpoint")
        res["rows"][q] = row
        log(f"{name} {q}: {json.dumps(row)}")
    return res


def print_table(results):
    print("| model | type | ours KL | llama.cpp KL | ours KL, routing fixed | llama.cpp KL, routing "
          "fixed | ours top-1 | llama.cpp top-1 | ours top-1, fixed | llama.cpp top-1, fixed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for q, row in r["rows"].items():
            if "ours" not in row:
                print(f"| {r['model']} | {q} | unsupported | | | | | | | |")
                continue
            o, ll, of, lf = row["ours"], row["llama"], row["ours_fixed_routing"], row["llama_fixed_routing"]
            print(f"| {r['model']} | {q} | {o['kl_mean']:.3e} | {ll['kl_mean']:.3e} | "
                  f"{of['kl_mean']:.3e} | {lf['kl_mean']:.3e} | {o['top1']:.3f} | {ll['top1']:.3f} | "
                  f"{of['top1']:.3f} | {lf['top1']:.3f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="ci,example")
    ap.add_argument("--types", default="q8_0,q4k,q6k")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2, help="layers of the bench model")
    ap.add_argument("--json")
    args = ap.parse_args()
    results = [evaluate(name, args) for name in args.models.split(",")]
    print(f"\n{datetime.date.today()}, tokens: " + "; ".join(f"{r['model']}: {r['tokens']}" for r in results))
    print_table(results)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
