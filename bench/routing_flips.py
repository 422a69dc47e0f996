#!/usr/bin/env python3
"""bench/routing_flips.py - how much of a quantized model's KL comes from changed expert choices.

    ~/.cache/phimoec/venv-*/bin/python bench/routing_flips.py [--model examples/tiny-phimoe]
        [--type q8_0] [--tokens 256]

Runs transformers' PhimoeForCausalLM in float32 twice on the same tokens: with the checkpoint's
weights and with every linear weight (attention, experts, LM head; not the router) rounded through
the quantization type and back (gguf's numpy quantizer, which matches llama.cpp's reference for
Q8_0; our blocks equal it bit for bit, test/e2e/test_quant_formats.py). So there is no activation
quantization and no kernel of ours in the comparison: only weight rounding. For every position it
records whether any layer chose a different pair of experts, and splits the mean KL divergence
KL(P_f32 || P_rounded) between positions with and without such a flip.
"""
import argparse
import pathlib
import sys

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test" / "e2e"))

import oracle  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import quants  # noqa: E402
from transformers import AutoTokenizer, PhimoeForCausalLM  # noqa: E402

TYPES = {"q8_0": QT.Q8_0}


def rounded(weight, qtype):
    """weight (float32 [.., K]) through qtype and back, rows of whole blocks only."""
    w = weight.detach().float().numpy()
    block = quants.GGML_QUANT_SIZES[qtype][0]
    if w.shape[-1] % block:
        return weight
    return torch.from_numpy(quants.dequantize(quants.quantize(w, qtype), qtype).reshape(w.shape))


def run(model, ids):
    choices = []
    hooks = [layer.mlp.router.register_forward_hook(
        lambda mod, inp, out: choices.append(torch.sort(out[2], dim=-1).values.reshape(-1, out[2].shape[-1])))
        for layer in model.model.layers]
    with torch.no_grad():
        logits = model(ids).logits[0].double()
    for h in hooks:
        h.remove()
    return torch.log_softmax(logits, -1), torch.stack(choices)  # [L, positions, k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "examples" / "tiny-phimoe"))
    ap.add_argument("--type", default="q8_0", choices=sorted(TYPES))
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--text", default="And the LORD appeared unto him in the plains of Mamre: and he "
                    "sat in the tent door in the heat of the day; And he lift up his eyes and looked, "
                    "and, lo, three men stood by him: and when he saw them, he ran to meet them from the "
                    "tent door, and bowed himself toward the ground, And said, My LORD, if now I have "
                    "found favour in thy sight, pass not away, I pray thee, from thy servant: Let a "
                    "little water, I pray you, be fetched, and wash your feet, and rest yourselves under "
                    "the tree: And I will fetch a morsel of bread, and comfort ye your hearts; after "
                    "that ye shall pass on: for therefore are ye come to your servant. And they said, So "
                    "do, as thou hast said. And Abraham hastened into the tent unto Sarah, and said, "
                    "Make ready quickly three measures of fine meal, knead it, and make cakes upon the "
                    "hearth.")
    args = ap.parse_args()
    oracle.use_reference_longrope()
    tok = AutoTokenizer.from_pretrained(args.model)
    ids = tok(args.text, return_tensors="pt").input_ids[:, :args.tokens]
    model = PhimoeForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    model.config._experts_implementation = "eager"
    ref, ref_choice = run(model, ids)
    qtype = TYPES[args.type]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "router" not in name and "gate.weight" not in name and "embed" not in name:
                p.copy_(rounded(p, qtype))
    got, got_choice = run(model, ids)
    kl = (ref.exp() * (ref - got)).sum(-1).numpy()
    flip = (ref_choice != got_choice).any(-1).any(0).numpy()
    n = len(kl)
    print(f"{args.model}, {args.type} weight rounding only, {n} positions: mean KL {kl.mean():.3e}")
    print(f"  positions where some layer chose other experts: {flip.sum()} ({flip.mean():.1%}), "
          f"their share of the total KL: {kl[flip].sum() / kl.sum():.1%}, "
          f"mean KL there {kl[flip].mean() if flip.any() else 0:.3e}")
    print(f"  positions with the same experts everywhere: {(~flip).sum()}, mean KL there "
          f"{kl[~flip].mean():.3e}")


if __name__ == "__main__":
    main()
