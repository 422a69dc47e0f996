#!/usr/bin/env python3
"""bench/lm_head_choice.py - the measurement behind phimoec's `--lm-head auto` and `--embedding auto`.

    PHIMOE_BUILD_DIR=build ~/.cache/phimoec/venv-*/bin/python bench/lm_head_choice.py [--json F]

On test/e2e/test_quant_accuracy.py's model (2 layers, hidden 256, vocab 512, its seeded weights
and token sequence), for each body type (q4k, q6k, q8_0) compiles phimoec with every LM-head and
embedding storage in {body type, q6k, q8_0} and prints the mean KL divergence against phimoec's
f32 build, the top-1 agreement, and what the choice costs in bytes. The auto rule keeps a storage
finer than the body's where it lowers the KL clearly for a small share of the model's bytes.
"""
import argparse
import json
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test" / "e2e"))

import oracle  # noqa: E402
import test_quant_accuracy as qa  # noqa: E402

BYTES_PER_VALUE = {"q4k": 144 / 256, "q6k": 210 / 256, "q8_0": 34 / 32}


def run(ckpt, tmp, body, lm_head, embedding):
    out = tmp / f"{body}-{lm_head}-{embedding}"
    proc = oracle.compile_model(ckpt, out, "--quant", body, "--lm-head", lm_head,
                                "--embedding", embedding)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    _, logits = oracle.run_bin(out, qa.TOKENS, 0, out / "logits.npy")
    return logits


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        ckpt = tmp / "model"
        qa.save_ci_model(ckpt)
        ref = run_f32(ckpt, tmp)
        for body in ["q4k", "q6k", "q8_0"]:
            for part in ["lm-head", "embedding"]:
                for storage in dict.fromkeys([body, "q6k", "q8_0"]):
                    lm = storage if part == "lm-head" else body
                    emb = storage if part == "embedding" else body
                    kl, top1 = qa.kl_top1(ref, run(ckpt, tmp, body, lm, emb))
                    rows.append(dict(body=body, part=part, storage=storage, kl=kl, top1=top1))
                    print(f"| {body} | {part} {storage} | {kl:.3e} | {top1:.3f} | "
                          f"{BYTES_PER_VALUE[storage] / BYTES_PER_VALUE[body]:.2f}x |", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


def run_f32(ckpt, tmp):
    out = tmp / "f32"
    proc = oracle.compile_model(ckpt, out, "--quant", "f32")
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return oracle.run_bin(out, qa.TOKENS, 0, out / "logits.npy")[1]


if __name__ == "__main__":
    print("| body | storage of | mean KL vs f32 | top-1 | bytes of that tensor vs body |")
    print("|---|---|---|---|---|")
    main()
