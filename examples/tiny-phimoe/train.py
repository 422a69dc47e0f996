#!/usr/bin/env python3
"""Train examples/tiny-phimoe: a ~5M-parameter PhiMoE (Phi-3.5-MoE's architecture, scaled down)
on the King James Bible, with a Llama/Phi-3-style BPE tokenizer trained here.

    apt-get install -y bible-kjv-text bible-kjv        # the data, and the `bible` reader for it
    .venv/bin/python examples/tiny-phimoe/train.py     # ~15-20 min on 2 CPU threads

Writes, into --out (default: this script's folder): tokenizer.json, tokenizer_config.json,
special_tokens_map.json, config.json, generation_config.json, model.safetensors. See README.md.

CPU only, deterministic given --seed and --threads. Training applies LongRoPE as
../../shared/docs/phimoe-reference.md states it (long factors once the sequence is longer than
original_max_position_embeddings), by patching transformers' PhimoeRotaryEmbedding.forward with
test/e2e/oracle.py's longrope_forward; transformers 5.x alone pairs the short factors with the
long mscale past the switch.
"""
import argparse
import json
import math
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "test" / "e2e"))

import oracle  # noqa: E402  (test/e2e/oracle.py: the reference LongRoPE)
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors  # noqa: E402
from tokenizers.models import BPE  # noqa: E402
from tokenizers.trainers import BpeTrainer  # noqa: E402
from transformers import PhimoeConfig, PhimoeForCausalLM  # noqa: E402

DEFAULT_DATA = "/usr/lib/bible.data"
INSTALL_HINT = (
    "The King James Bible is not installed. As root:\n"
    "    apt-get install -y bible-kjv-text bible-kjv\n"
    "(bible-kjv-text holds /usr/lib/bible.data, bible-kjv the `bible` program that decompresses it).\n"
    "Or pass --data FILE: a plain-text dump, one verse per line, e.g. the output of\n"
    "    bible -f Gen1:1-Rev22:21 > kjv.txt")

# Phi-3.5-MoE-instruct's added tokens, in its order (there ids 32000..32010; here BASE_VOCAB..+10).
# rstrip as in Phi-3.5's tokenizer: the role/placeholder/<|end|> tokens swallow the whitespace
# that follows them when encoding; <|endoftext|> does not.
PHI_ADDED = [("<|endoftext|>", False), ("<|assistant|>", True), ("<|placeholder1|>", True),
             ("<|placeholder2|>", True), ("<|placeholder3|>", True), ("<|placeholder4|>", True),
             ("<|system|>", True), ("<|end|>", True), ("<|placeholder5|>", True),
             ("<|placeholder6|>", True), ("<|user|>", True)]

# Phi-3.5's chat format, written for this model:
#   <|system|>\n{content}<|end|>\n<|user|>\n{content}<|end|>\n<|assistant|>\n
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and message['content'] %}"
    "{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")

PROMPTS = ["And God said", "In the beginning", "And it came to pass"]


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------------------- data

VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+)\s+(.*)$")


def read_kjv(path):
    """Verses as 'Ge1:1 In the beginning ...' lines: from the package's compressed bible.data
    (through the `bible` program) or from a plain-text dump of the same form."""
    path = pathlib.Path(path)
    if not path.is_file():
        sys.exit(f"error: {path} not found.\n{INSTALL_HINT}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"EC02":  # the Bible Retrieval System's compressed format
        exe = shutil.which("bible")
        if exe is None:
            sys.exit(f"error: {path} needs the `bible` program to decompress it.\n{INSTALL_HINT}")
        proc = subprocess.run([exe, "-f", "-p", str(path.parent), "-d", path.name,
                               "Gen1:1-Rev22:21"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            sys.exit(f"error: `bible` could not read {path}: {proc.stderr.strip()}\n{INSTALL_HINT}")
        return proc.stdout.splitlines()
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def chapters_of(lines):
    """Clean prose, one string per chapter: verse references dropped, verses joined by a space,
    runs of whitespace collapsed. Lines without a reference are taken as prose, one per document."""
    chapters, key, verses = [], None, []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        m = VERSE.match(line)
        k, text = ((m.group(1), m.group(2)), m.group(4)) if m else (("", len(chapters)), line)
        if k != key and verses:
            chapters.append(" ".join(verses))
            verses = []
        key = k
        verses.append(re.sub(r"\s+", " ", text).strip())
    if verses:
        chapters.append(" ".join(verses))
    return chapters


# ------------------------------------------------------------------------------------ tokenizer

def train_tokenizer(texts, base_vocab):
    """Llama/Phi-3-style BPE: <unk>=0 <s>=1 </s>=2, <0x00>..<0xFF> = 3..258 (byte fallback), then
    the learned pieces ('▁' marks a space), then Phi-3.5's added tokens from id base_vocab."""
    norm = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Learning: words are split before each '▁' so that no merge crosses a word boundary (what
    # SentencePiece does); the saved tokenizer has no pre-tokenizer, as Llama's tokenizer.json.
    learner = Tokenizer(BPE(unk_token="<unk>"))
    learner.normalizer = norm
    learner.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    specials = ["<unk>", "<s>", "</s>"]
    trainer = BpeTrainer(vocab_size=base_vocab - 256, special_tokens=specials, min_frequency=2,
                         show_progress=False)
    learner.train_from_iterator(texts, trainer=trainer)
    learned = json.loads(learner.to_str())["model"]
    pieces = sorted(learned["vocab"].items(), key=lambda kv: kv[1])
    vocab = {t: i for i, t in enumerate(specials)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in pieces:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    assert len(vocab) == base_vocab, (len(vocab), base_vocab)

    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                        fuse_unk=True))
    tok.normalizer = norm
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    # add_bos_token is false (as Phi-3.5-MoE-instruct): no <s> is added.
    tok.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1")
    # <unk>/<s>/</s> flagged as Phi-3.5 flags them (</s>: rstrip, not special).
    tok.add_special_tokens([AddedToken("<unk>", normalized=False, special=True),
                            AddedToken("<s>", normalized=False, special=True)])
    tok.add_tokens([AddedToken("</s>", rstrip=True, normalized=False, special=False)])
    for content, rstrip in PHI_ADDED:
        tok.add_special_tokens([AddedToken(content, rstrip=rstrip, normalized=False, special=True)])
    for i, (content, _) in enumerate(PHI_ADDED):
        assert tok.token_to_id(content) == base_vocab + i, content
    return tok


def save_tokenizer(tok, out, max_len):
    tok.save(str(out / "tokenizer.json"))
    decoder = {}
    for tid, at in sorted(tok.get_added_tokens_decoder().items()):
        decoder[str(tid)] = dict(content=at.content, lstrip=at.lstrip, normalized=at.normalized,
                                 rstrip=at.rstrip, single_word=at.single_word, special=at.special)
    config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": decoder,
        "bos_token": "<s>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "legacy": False,
        "model_max_length": max_len,
        "pad_token": "<|endoftext|>",
        "padding_side": "left",
        # Use tokenizer.json as written (normalizer Prepend+Replace, no pre-tokenizer). Phi-3.5
        # says "LlamaTokenizer", which in transformers 5 rebuilds the pipeline with a Metaspace
        # pre-tokenizer instead (same ids for plain text; differs after added tokens).
        "tokenizer_class": "TokenizersBackend",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    smap = {"bos_token": "<s>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
            "unk_token": "<unk>"}
    smap = {k: dict(content=v, lstrip=False, normalized=False, rstrip=False, single_word=False)
            for k, v in smap.items()}
    (out / "special_tokens_map.json").write_text(json.dumps(smap, indent=2) + "\n")


# ---------------------------------------------------------------------------------------- model

def longrope_parameters(head_dim, original_max, max_pos, theta):
    """Short factors all 1.0; long factors rising from 1.0 (fast dimensions) to 1.5 x the
    context ratio (slow ones), the shape of Phi-3.5's; mscale as Phi-3 computes it, the same
    for both sets: sqrt(1 + ln(max/orig) / ln(orig))."""
    n = head_dim // 2
    ratio = max_pos / original_max
    long = [round(1.0 + (1.5 * ratio - 1.0) * (i / (n - 1)) ** 2, 4) for i in range(n)]
    mscale = math.sqrt(1.0 + math.log(ratio) / math.log(original_max))
    return dict(rope_type="longrope", rope_theta=theta, short_factor=[1.0] * n, long_factor=long,
                short_mscale=mscale, long_mscale=mscale,
                original_max_position_embeddings=original_max)


def make_config(args, vocab, bos, eos):
    head_dim = args.hidden // args.heads
    return PhimoeConfig(
        vocab_size=vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, num_local_experts=args.experts, num_experts_per_tok=2,
        max_position_embeddings=args.max_pos, sliding_window=args.max_pos,
        rms_norm_eps=1e-5, attention_bias=True, lm_head_bias=True, tie_word_embeddings=False,
        router_jitter_noise=0.01, input_jitter_noise=0.01, router_aux_loss_coef=args.aux_coef,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=None, hidden_act="silu",
        initializer_range=0.02, attention_dropout=0.0,
        rope_parameters=longrope_parameters(head_dim, args.original_max, args.max_pos, 10000.0))


def batches(stream, rng, batch, length):
    """batch random windows of length+1 tokens (inputs and shifted targets)."""
    starts = rng.integers(0, len(stream) - length - 1, size=batch)
    x = np.stack([stream[s:s + length + 1] for s in starts])
    return torch.from_numpy(x).long()


def lm_loss(model, x, first, aux_coef=0.0):
    """Cross-entropy of the predictions at positions >= first. One forward over the window: its
    length picks the LongRoPE set, so a window of original_max tokens trains the short set at
    positions 0..original_max-1 and a longer one the long set at positions >= original_max,
    which is exactly how the reference computes each position (a fresh forward over tokens[0..t],
    long when t+1 > original_max)."""
    out = model(input_ids=x[:, :-1], output_router_logits=aux_coef > 0)
    logits = out.logits[:, first:]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                             x[:, 1 + first:].reshape(-1))
    aux = out.aux_loss if aux_coef > 0 and out.aux_loss is not None else None
    return loss, (loss + aux_coef * aux if aux is not None else loss)


@torch.no_grad()
def evaluate(model, stream, args, n_batches, seed):
    """Mean held-out/train loss over fixed windows, short regime and long regime."""
    model.eval()
    rng = np.random.default_rng(seed)
    short = [lm_loss(model, batches(stream, rng, 32, args.original_max), 0)[0].item()
             for _ in range(n_batches)]
    long = [lm_loss(model, batches(stream, rng, 16, args.long_len), args.original_max)[0].item()
            for _ in range(n_batches)]
    model.train()
    s, l = float(np.mean(short)), float(np.mean(long))
    return (s + l) / 2, s, l


@torch.no_grad()
def show_samples(out, new_tokens=80):
    """Greedy continuations of PROMPTS from the saved files, through transformers' generate()
    (with the reference LongRoPE, as in training: the prompts are short, so generation crosses
    the switch at original_max_position_embeddings, where generate() recomputes the cache)."""
    from transformers import AutoTokenizer
    oracle.use_reference_longrope()
    tok = AutoTokenizer.from_pretrained(out)
    model = PhimoeForCausalLM.from_pretrained(out).eval()
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt").input_ids
        gen = model.generate(ids, max_new_tokens=new_tokens, do_sample=False)
        log(f"sample ({model.dtype}, greedy, {new_tokens} new tokens): {tok.decode(gen[0])!r}")


# ----------------------------------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA,
                   help=f"KJV: the package's bible.data or a plain-text dump (default {DEFAULT_DATA})")
    p.add_argument("--out", default=str(HERE), help="output folder (default: this script's)")
    p.add_argument("--seed", type=int, default=1611)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--base-vocab", type=int, default=4000,
                   help="BPE vocabulary before the 11 added tokens (Phi-3.5: 32000)")
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--intermediate", type=int, default=320)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--original-max", type=int, default=64)
    p.add_argument("--max-pos", type=int, default=512)
    p.add_argument("--long-len", type=int, default=128, help="window of the long-regime batches")
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps (each: one short "
                   "batch of 32x64 tokens and one long batch of 16x128)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--aux-coef", type=float, default=0.01, help="load-balancing loss weight")
    p.add_argument("--heldout", type=float, default=0.02, help="fraction of chapters held out")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--samples-only", action="store_true",
                   help="skip training: print greedy samples from the files in --out")
    args = p.parse_args()
    if args.samples_only:
        torch.set_num_threads(args.threads)
        show_samples(args.out)
        return

    t0 = time.time()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    chapters = chapters_of(read_kjv(args.data))
    order = np.random.default_rng(args.seed).permutation(len(chapters))
    n_held = max(1, int(len(chapters) * args.heldout))
    held = sorted(order[:n_held].tolist())
    train_ch = [chapters[i] for i in sorted(order[n_held:].tolist())]
    held_ch = [chapters[i] for i in held]
    log(f"data: {len(chapters)} chapters, {sum(map(len, chapters))} characters; "
        f"{n_held} chapters held out")
    log("sample:", chapters[0][:160])

    tok = train_tokenizer(train_ch, args.base_vocab)
    n_tok = tok.get_vocab_size(with_added_tokens=True)
    vocab = (n_tok + 63) // 64 * 64
    save_tokenizer(tok, out, args.max_pos)
    eot = tok.token_to_id("<|endoftext|>")
    log(f"tokenizer: {n_tok} tokens (model vocab {vocab}); "
        f"{tok.encode('In the beginning God created the heaven and the earth.').tokens}")

    def stream_of(texts):  # chapters, each followed by <|endoftext|> (Phi's document separator)
        ids = []
        for enc in tok.encode_batch(texts, add_special_tokens=False):
            ids.extend(enc.ids)
            ids.append(eot)
        return np.array(ids, dtype=np.int32)

    train_stream, held_stream = stream_of(train_ch), stream_of(held_ch)
    log(f"tokens: train {len(train_stream)}, held-out {len(held_stream)} "
        f"({sum(map(len, train_ch)) / len(train_stream):.2f} chars/token)")

    oracle.use_reference_longrope()  # LongRoPE as the reference doc states it (see the docstring)
    config = make_config(args, vocab, bos=tok.token_to_id("<s>"), eos=eot)
    model = PhimoeForCausalLM(config)
    model.config._experts_implementation = "grouped_mm"  # same maths as eager, ~10x faster on CPU
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M parameters")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    def lr_at(step):  # linear warm-up, cosine decay to 10%
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    rng = np.random.default_rng(args.seed + 1)
    t_train, ema = time.time(), None
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        xs = batches(train_stream, rng, 32, args.original_max)
        xl = batches(train_stream, rng, 16, args.long_len)
        ls, total_s = lm_loss(model, xs, 0, args.aux_coef)
        ll, total_l = lm_loss(model, xl, args.original_max, args.aux_coef)
        opt.zero_grad(set_to_none=True)
        ((total_s + total_l) / 2).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        cur = (ls.item() + ll.item()) / 2
        ema = cur if ema is None else 0.95 * ema + 0.05 * cur
        if step % 50 == 0 or step == args.steps - 1:
            el = time.time() - t_train
            log(f"step {step:5d}  loss {cur:.3f} (short {ls.item():.3f} long {ll.item():.3f}) "
                f"ema {ema:.3f}  lr {lr_at(step):.2e}  {el:6.0f}s  "
                f"eta {el / (step + 1) * (args.steps - step - 1):5.0f}s")
        if step % 500 == 499:
            v = evaluate(model, held_stream, args, 4, args.seed + 2)
            log(f"  held-out loss {v[0]:.3f} (short {v[1]:.3f} long {v[2]:.3f})")
    train_s = time.time() - t_train

    model.eval()
    model.config._experts_implementation = "eager"
    tr = evaluate(model, train_stream, args, 16, args.seed + 3)
    he = evaluate(model, held_stream, args, 16, args.seed + 2)
    log(f"final train loss {tr[0]:.3f} (short {tr[1]:.3f}, long {tr[2]:.3f}); "
        f"held-out loss {he[0]:.3f} (short {he[1]:.3f}, long {he[2]:.3f})  [eval mode, fp32]")

    # Expert use on held-out text (eval routing): every expert should be chosen.
    counts = torch.zeros(args.layers, args.experts)
    hooks = []
    for li, layer in enumerate(model.model.layers):
        def hook(mod, inp, outp, li=li):
            counts[li] += torch.bincount(outp[2].reshape(-1), minlength=args.experts).float()
        hooks.append(layer.mlp.router.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.from_numpy(held_stream[:4096].astype(np.int64))[None])
    for h in hooks:
        h.remove()
    log("expert choices per layer (held-out, 4096 tokens x 2):",
        (counts / counts.sum(1, keepdim=True)).numpy().round(2).tolist())

    model.generation_config.bos_token_id = tok.token_to_id("<s>")
    model.generation_config.eos_token_id = [eot, tok.token_to_id("<|assistant|>"),
                                            tok.token_to_id("<|end|>")]
    model.generation_config.pad_token_id = eot
    model.generation_config.do_sample = False
    model.to(getattr(torch, args.dtype)).save_pretrained(out)
    os.chmod(out / "model.safetensors", 0o644)  # written through a 0600 temporary file
    log(f"saved to {out} ({args.dtype}); training {train_s:.0f}s, total {time.time() - t0:.0f}s "
        f"on {args.threads} threads ({os.uname().machine}, {os.cpu_count()} cpus)")
    show_samples(out)


if __name__ == "__main__":
    main()
