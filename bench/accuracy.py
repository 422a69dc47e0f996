#!/usr/bin/env python3
"""bench/accuracy.py - quantization error of phimoec and of llama.cpp, on the same weights and the
same token sequence.

    PHIMOE_BUILD_DIR=/tmp/benchbuild .venv/bin/python bench/accuracy.py
        [--models bench,example,ci] [--types q8_0,q4k,q6k,bf16] [--tokens 256] [--json out.json]

For each model and type, the mean KL divergence KL(P_ref || P_quant) of the next-token
distributions (nats, averaged over every position of the sequence) and the top-1 agreement
(fraction of positions whose argmax equals the reference's):

- ours: phimoe-bin --quant TYPE against our own f32 build, and against transformers f32 (with
  test/e2e/oracle.py's reference LongRoPE);
- llama.cpp: its quantization of the same weights at the same tensor types
  (common.ensure_llama_quant) against its own f32 GGUF run, and against transformers f32. Logits
  come from libllama through llama-cpp-python's bindings (bench/llamacpp_logits.py), fed the same
  token ids.

Models: bench (Phi-3.5-MoE shapes, --layers layers, random weights; random token ids, seeded),
example (examples/tiny-phimoe; the first --tokens tokens of the chapters train.py held out, KJV),
ci (test/e2e/test_quant_accuracy.py's model and tokens: the llama.cpp numbers its bounds come from).

The f32 builds and f32 GGUFs are only references: their logits are cached (under
~/.cache/phimoec/bench/logits) and, with --drop-f32, the big files removed after use.
"""
import argparse
import datetime
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np

import common
from common import log, run


# ------------------------------------------------------------------------------------- logits

def cache_path(*parts):
    key = hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:20]
    d = common.BENCH_CACHE / "logits"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{key}.npy"


def tokens_key(tokens):
    return hashlib.sha1(np.asarray(tokens, dtype=np.int64).tobytes()).hexdigest()[:16]


def file_key(path):
    st = pathlib.Path(path).stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def ours_logits(out, tokens, threads):
    cached = cache_path("ours", out, (out / ".bench-key").read_text(), tokens_key(tokens))
    if not cached.is_file():
        tmp = cached.with_suffix(".tmp.npy")
        run([out / "phimoe-bin", "--tokens", ",".join(map(str, tokens)), "-n", "0",
             "--dump-logits", tmp, "-t", str(threads)], stdout=subprocess.PIPE)
        tmp.rename(cached)
    return np.load(cached)


def hf_logits(ckpt, tokens, threads):
    cached = cache_path("hf", ckpt, common.checkpoint_key(ckpt), tokens_key(tokens))
    if not cached.is_file():
        tok = cached.with_suffix(".tokens.npy")
        np.save(tok, np.asarray(tokens, dtype=np.int64))
        tmp = cached.with_suffix(".tmp.npy")
        run([sys.executable, __file__, "--hf-logits", ckpt, tok, tmp, "--threads", str(threads)])
        tmp.rename(cached)
        tok.unlink()
    return np.load(cached)


def llama_logits(gguf, tokens, threads):
    cached = cache_path("llama", file_key(gguf), tokens_key(tokens))
    if not cached.is_file():
        tok = cached.with_suffix(".tokens.npy")
        np.save(tok, np.asarray(tokens, dtype=np.int64))
        tmp = cached.with_suffix(".tmp.npy")
        run([sys.executable, common.ROOT / "bench" / "llamacpp_logits.py", gguf, tok, tmp,
             "--threads", str(threads)], env=common.llamacpp_env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        tmp.rename(cached)
        tok.unlink()
    return np.load(cached)


def hf_logits_main(ckpt, tokens_file, out, threads):
    """Subprocess body: transformers f32 logits of every position (the model is loaded here so that
    its memory is returned when it ends)."""
    import torch
    import oracle
    from transformers import PhimoeForCausalLM
    torch.set_num_threads(threads)
    oracle.use_reference_longrope()
    model = PhimoeForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    tokens = [int(t) for t in np.load(tokens_file)]
    original = model.config.rope_parameters["original_max_position_embeddings"]
    logits = oracle.reference_logits(model, tokens, original)
    np.save(out, logits.astype(np.float32))


# ------------------------------------------------------------------------------------- models

def example_tokens(n):
    """The first n tokens of the chapters examples/tiny-phimoe/train.py held out (its default seed
    and held-out fraction), tokenized with the model's tokenizer as train.py does: chapters
    joined by <|endoftext|>."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("tiny_train", common.EXAMPLE / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    from tokenizers import Tokenizer
    chapters = train.chapters_of(train.read_kjv(train.DEFAULT_DATA))
    order = np.random.default_rng(1611).permutation(len(chapters))
    n_held = max(1, int(len(chapters) * 0.02))
    held = [chapters[i] for i in sorted(order[:n_held].tolist())]
    tok = Tokenizer.from_file(str(common.EXAMPLE / "tokenizer.json"))
    eot = tok.token_to_id("<|endoftext|>")
    ids = []
    for text in held:
        ids += tok.encode(text, add_special_tokens=False).ids + [eot]
        if len(ids) >= n:
            break
    return ids[:n], f"held-out KJV chapters (first: {held[0][:60]!r}...)"


def model_setup(name, args):
    """(checkpoint dir, tokens, description)."""
    if name == "bench":
        ckpt = common.ensure_bench_model(args.layers)
        rng = np.random.default_rng(1234)
        tokens = rng.integers(3, 32000, size=args.tokens).tolist()
        return ckpt, tokens, f"{args.tokens} random ids in [3, 32000), seed 1234"
    if name == "example":
        if not (common.EXAMPLE / "model.safetensors").is_file():
            raise FileNotFoundError(f"{common.EXAMPLE}/model.safetensors: the example model is "
                                    "not there (examples/tiny-phimoe/train.py makes it)")
        tokens, what = example_tokens(args.tokens)
        return common.EXAMPLE, tokens, what
    if name == "ci":
        import test_quant_accuracy as t
        ckpt = common.BENCH_CACHE / "ci-model"
        if not (ckpt / ".complete").is_file():
            t.save_ci_model(ckpt)
            common.write_synthetic_tokenizer(ckpt, t.ci_config().vocab_size)
            (ckpt / ".complete").write_text("ok\n")
        return ckpt, t.TOKENS, f"test_quant_accuracy.TOKENS ({len(t.TOKENS)} ids)"
    raise ValueError(name)


# --------------------------------------------------------------------------------------- main

def evaluate(name, args):
    ckpt, tokens, what = model_setup(name, args)
    log(f"model {name}: {ckpt}; tokens: {what}")
    res = dict(model=name, checkpoint=str(ckpt), tokens=what, n_tokens=len(tokens), rows={})
    hf = hf_logits(ckpt, tokens, args.threads)

    f32_out, reason = common.compile_phimoe(ckpt, "f32")
    if reason:
        raise RuntimeError(f"phimoec cannot build f32: {reason}")
    ours_ref = ours_logits(f32_out, tokens, args.threads)
    res["ours_f32_vs_hf"] = common.kl_top1(hf, ours_ref)

    llama_ref = None
    if not args.no_llamacpp:
        f32_gguf = common.ensure_gguf(ckpt, "f32")
        llama_ref = llama_logits(f32_gguf, tokens, args.threads)
        res["llama_f32_vs_hf"] = common.kl_top1(hf, llama_ref)
    if args.drop_f32 and name == "bench":
        shutil.rmtree(f32_out, ignore_errors=True)
        if not args.no_llamacpp:
            f32_gguf.unlink()

    for q in args.types.split(","):
        row = {}
        out, reason = common.compile_phimoe(ckpt, q)
        if reason:
            row["ours_unsupported"] = reason
        else:
            lg = ours_logits(out, tokens, args.threads)
            row["ours_vs_own_f32"] = common.kl_top1(ours_ref, lg)
            row["ours_vs_hf"] = common.kl_top1(hf, lg)
            row["ours_types"] = sorted({f"{common.role_of(t['name'])}:"
                                        f"{common.storage_of(t['type'])}"
                                        for t in common.pack_table(out)})
        if llama_ref is not None:
            gguf, gtypes = common.ensure_llama_quant(ckpt, q)
            lg = llama_logits(gguf, tokens, args.threads)
            row["llama_vs_own_f32"] = common.kl_top1(llama_ref, lg)
            row["llama_vs_hf"] = common.kl_top1(hf, lg)
            row["llama_types"] = sorted({f"{common.role_of(n)}:{t}" for n, t in gtypes.items()})
        if "ours_vs_own_f32" in row and "llama_vs_own_f32" in row:
            o, ll = row["ours_vs_own_f32"], row["llama_vs_own_f32"]
            row["ours_worse"] = o["kl_mean"] > ll["kl_mean"] or o["top1"] < ll["top1"]
        res["rows"][q] = row
        log(f"{name} {q}: {json.dumps({k: v for k, v in row.items() if 'types' not in k})}")
    return res


def print_tables(results):
    def kl(d):
        return f"{d['kl_mean']:.2e}" if d else "n/a"

    def t1(d):
        return f"{100 * d['top1']:.1f}%" if d else "n/a"

    for r in results:
        print(f"\n### {r['model']}: {r['checkpoint']}\ntokens: {r['tokens']} "
              f"({r['n_tokens']} positions)\n")
        print(f"references: ours f32 vs transformers f32: KL {kl(r['ours_f32_vs_hf'])}, top-1 "
              f"{t1(r['ours_f32_vs_hf'])}; llama.cpp f32 vs transformers f32: KL "
              f"{kl(r.get('llama_f32_vs_hf'))}, top-1 {t1(r.get('llama_f32_vs_hf'))}\n")
        print("| type | ours KL vs our f32 | ours top-1 | llama.cpp KL vs its f32 | llama.cpp "
              "top-1 | ours KL vs transformers f32 | top-1 | llama.cpp KL vs transformers f32 "
              "| top-1 | ours worse? |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for q, row in r["rows"].items():
            ours = row.get("ours_vs_own_f32")
            flag = {True: "**yes**", False: "no"}.get(row.get("ours_worse"), "n/a")
            note = " (not built: phimoec reports the type unsupported)" \
                if "ours_unsupported" in row else ""
            print(f"| {q} | {kl(ours)}{note} | {t1(ours)} | {kl(row.get('llama_vs_own_f32'))} | "
                  f"{t1(row.get('llama_vs_own_f32'))} | {kl(row.get('ours_vs_hf'))} | "
                  f"{t1(row.get('ours_vs_hf'))} | {kl(row.get('llama_vs_hf'))} | "
                  f"{t1(row.get('llama_vs_hf'))} | {flag} |")
        for q, row in r["rows"].items():
            print(f"  {q} types: ours {row.get('ours_types', 'n/a')}; "
                  f"llama.cpp {row.get('llama_types', 'n/a')}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--hf-logits":
        ap = argparse.ArgumentParser()
        ap.add_argument("--hf-logits", nargs=3)
        ap.add_argument("--threads", type=int, default=2)
        a = ap.parse_args()
        return hf_logits_main(*a.hf_logits, a.threads)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="bench,example")
    ap.add_argument("--types", default="q8_0,q4k,q6k,bf16")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--no-llamacpp", action="store_true", help="only our side")
    ap.add_argument("--drop-f32", action="store_true",
                    help="remove the bench model's f32 build and f32 GGUF once their logits "
                         "are cached (11.5 GB each at 2 layers)")
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args()
    results = []
    for name in args.models.split(","):
        try:
            results.append(evaluate(name, args))
        except FileNotFoundError as e:
            log(f"skipping model {name}: {e}")
    print_tables(results)
    if args.json:
        lc = common.llamacpp() if not args.no_llamacpp else {}
        pathlib.Path(args.json).write_text(json.dumps(
            dict(date=datetime.date.today().isoformat(), machine=common.machine(), llamacpp=lc,
                 args=vars(args), results=results), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
