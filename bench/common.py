"""bench/common.py - what bench_cpu.py and accuracy.py share: paths, the llama.cpp build
(bench/llamacpp.sh), the benchmark PhiMoE (real Phi-3.5-MoE layer shapes, random weights), its GGUF
conversion and llama.cpp quantization matched to phimoec's tensor types, cached phimoec builds, and
readers for both weight files."""
import hashlib
import json
import math
import os
import pathlib
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = pathlib.Path(os.environ.get("PHIMOE_BUILD_DIR", ROOT / "build"))
if not BUILD.is_absolute():
    BUILD = ROOT / BUILD
PHIMOEC = BUILD / "compiler" / "phimoec"
CACHE = pathlib.Path(os.environ.get("PHIMOE_CACHE", pathlib.Path.home() / ".cache" / "phimoec"))
BENCH_CACHE = CACHE / "bench"
EXAMPLE = ROOT / "examples" / "tiny-phimoe"
sys.path.insert(0, str(ROOT / "test" / "e2e"))

# The quant types compared: ours (phimoec --quant) -> llama-quantize's file type for the body.
LLAMA_FTYPE = {"q8_0": "Q8_0", "q4k": "Q4_K_M", "q6k": "Q6_K", "bf16": None}
# llama-quantize's own mixtures (its choice of type per tensor, no --pure): what users download.
# phimoec compiles these GGUFs themselves (--quant keep).
LLAMA_MIXES = ("Q4_K_M", "Q5_K_M", "Q4_K_S", "Q3_K_M")
# phimoec storage -> ggml type name, as llama-quantize spells it.
GGML_TYPE = {"q8_0": "q8_0", "q4k": "q4_K", "q6k": "q6_K", "bf16": "bf16", "f32": "f32",
             "f16": "f16"}


def log(*args):
    print(time.strftime("[%H:%M:%S]"), *args, file=sys.stderr, flush=True)


def run(cmd, check=True, **kwargs):
    cmd = [str(c) for c in cmd]
    log("$", " ".join(cmd))
    kwargs.setdefault("text", True)
    proc = subprocess.run(cmd, **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n"
                           f"{(proc.stderr or '')[-4000:]}")
    return proc


# ------------------------------------------------------------------------------------- llama.cpp

_llamacpp = None


def llamacpp():
    """bench/llamacpp.sh's KEY=VALUE lines (it fetches and builds on the first call only)."""
    global _llamacpp
    if _llamacpp is None:
        out = run(["bash", ROOT / "bench" / "llamacpp.sh"], stdout=subprocess.PIPE).stdout
        _llamacpp = {k: shlex.split(v)[0] if v else "" for k, v in
                     (line.split("=", 1) for line in out.splitlines() if "=" in line)}
    return _llamacpp


def llamacpp_tool(name):
    return pathlib.Path(llamacpp()["LLAMA_CPP_BIN"]) / name


def llamacpp_env():
    env = dict(os.environ)
    lc = llamacpp()
    env["PYTHONPATH"] = lc["LLAMA_CPP_PYTHONPATH"] + (
        ":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["LLAMA_CPP_LIB_PATH"] = lc["LLAMA_CPP_LIB_PATH"]
    env["NO_LOCAL_GGUF"] = "1"  # gguf-py is on PYTHONPATH already
    return env


# ----------------------------------------------------------------------------- benchmark model

def bench_config(layers=2):
    """Phi-3.5-MoE's shapes (hidden 4096, intermediate 6400, 16 experts top-2, 32/8 heads of 128,
    vocab 32064, biases on attention and LM head, LongRoPE with original 4096 / max 131072 and
    Phi-3.5-MoE's mscale 1.243163121016122), with `layers` layers instead of 32."""
    from transformers import PhimoeConfig
    n = 64
    short = [round(1.0 + 0.25 * (i / (n - 1)) ** 2, 4) for i in range(n)]
    long = [round(1.0 + 47.0 * (i / (n - 1)) ** 2, 4) for i in range(n)]
    return PhimoeConfig(
        vocab_size=32064, hidden_size=4096, intermediate_size=6400, num_hidden_layers=layers,
        num_attention_heads=32, num_key_value_heads=8, num_local_experts=16,
        num_experts_per_tok=2, max_position_embeddings=131072, sliding_window=None,
        rms_norm_eps=1e-5, attention_bias=True, lm_head_bias=True, tie_word_embeddings=False,
        router_jitter_noise=0.01, input_jitter_noise=0.0, bos_token_id=1, eos_token_id=32000,
        pad_token_id=None, hidden_act="silu", initializer_range=0.02,
        rope_parameters=dict(rope_type="longrope", rope_theta=10000.0, short_factor=short,
                             long_factor=long, short_mscale=1.243163121016122,
                             long_mscale=1.243163121016122,
                             original_max_position_embeddings=4096))


def mixtral_bench_config(layers=2):
    """Mixtral-8x7B's shapes (hidden 4096, intermediate 14336, 8 experts top-2, 32/8 heads of 128,
    vocab 32000, RMSNorms, no biases, RoPE theta 1e6), with `layers` layers instead of 32."""
    from transformers import MixtralConfig
    return MixtralConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
        num_attention_heads=32, num_key_value_heads=8, num_local_experts=8,
        num_experts_per_tok=2, max_position_embeddings=32768, sliding_window=None,
        rms_norm_eps=1e-5, tie_word_embeddings=False, router_jitter_noise=0.0, bos_token_id=1,
        eos_token_id=2, hidden_act="silu", initializer_range=0.02,
        rope_parameters=dict(rope_type="default", rope_theta=1e6))


def write_synthetic_tokenizer(path, vocab_size):
    """A Llama/Phi-3-style tokenizer.json of exactly vocab_size tokens (<unk> <s> </s>, the 256
    byte-fallback tokens, placeholder pieces, Phi-3.5's added tokens at 32000..): the benchmark
    model is fed token ids, so only the format matters (llama.cpp's converter needs a vocabulary
    with one entry per embedding row)."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    added = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>",
             "<|placeholder3|>", "<|placeholder4|>", "<|system|>", "<|end|>",
             "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]
    base = vocab_size - 64 if vocab_size >= 512 else vocab_size - len(added)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    while len(vocab) < base:
        vocab[f"\u2581p{len(vocab)}"] = len(vocab)
    tok = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True,
                        fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                           normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1")
    tok.add_special_tokens([AddedToken("<unk>", normalized=False, special=True),
                            AddedToken("<s>", normalized=False, special=True),
                            AddedToken("</s>", normalized=False, special=True)])
    extra = added + [f"<|dummy{i}|>" for i in range(vocab_size - base - len(added))]
    for content in extra:
        tok.add_special_tokens([AddedToken(content, normalized=False, special=True)])
    assert tok.get_vocab_size(with_added_tokens=True) == vocab_size
    path = pathlib.Path(path)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": False, "add_eos_token": False, "bos_token": "<s>",
        "eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False, "legacy": False,
        "tokenizer_class": "TokenizersBackend", "model_max_length": 131072}, indent=2) + "\n")


def ensure_bench_model(layers=2, seed=0, arch="phimoe"):
    """The benchmark checkpoint (bf16 safetensors + tokenizer), built once with transformers:
    seeded random weights, initializer_range 0.02, norms and biases randomised as
    test/e2e/oracle.py's make_model does. Weights are created directly in bf16 (peak memory about
    one copy of the model, 2 bytes a parameter). arch "mixtral": mixtral_bench_config's shapes."""
    path = BENCH_CACHE / f"{arch}-bench-{layers}L-seed{seed}"
    stamp = path / ".complete"
    if stamp.is_file():
        return path
    import torch
    from transformers import MixtralForCausalLM, PhimoeForCausalLM
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    log(f"building the benchmark model ({arch}, {layers} layers) in {path}")
    torch.manual_seed(seed)
    torch.set_default_dtype(torch.bfloat16)
    try:
        if arch == "mixtral":
            model = MixtralForCausalLM(mixtral_bench_config(layers)).eval()
        else:
            model = PhimoeForCausalLM(bench_config(layers)).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name and
                                                     name.endswith("weight") else 0.0))
    model.save_pretrained(path, max_shard_size="2GB")
    del model
    write_synthetic_tokenizer(path, 32000 if arch == "mixtral" else 32064)
    stamp.write_text(json.dumps({"layers": layers, "seed": seed, "arch": arch}) + "\n")
    return path


def checkpoint_key(path):
    """Identity of a checkpoint's files (names, sizes, mtimes); of a GGUF file, its own."""
    h = hashlib.sha1()
    path = pathlib.Path(path)
    for f in sorted(path.iterdir()) if path.is_dir() else [path]:
        if f.is_file() and not f.name.startswith("."):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def checkpoint_dtype(ckpt):
    cfg = json.loads((pathlib.Path(ckpt) / "config.json").read_text())
    return cfg.get("dtype") or cfg.get("torch_dtype") or "float32"


def llama_input_dir(ckpt):
    """A view of the checkpoint for llama.cpp's converter: the same files (symlinks)."""
    ckpt = pathlib.Path(ckpt)
    view = BENCH_CACHE / "gguf" / f"{ckpt.name}-{checkpoint_key(ckpt)}" / "hf"
    if not view.is_dir():
        view.mkdir(parents=True)
        for f in ckpt.iterdir():
            if f.is_file() and not f.name.startswith(".") and f.suffix != ".py":
                (view / f.name).symlink_to(f.resolve())
    return view


def ensure_gguf(ckpt, outtype="bf16"):
    """The checkpoint in GGUF, by llama.cpp's convert_hf_to_gguf.py (through gguf_convert.py)."""
    view = llama_input_dir(ckpt)
    out = view.parent / f"model-{outtype}.gguf"
    if out.is_file():
        return out
    tmp = out.with_suffix(".tmp")
    run([sys.executable, ROOT / "bench" / "gguf_convert.py", view, "--outtype", outtype,
         "--outfile", tmp], env=llamacpp_env(), cwd=llamacpp()["LLAMA_CPP_DIR"])
    tmp.rename(out)
    return out


def gguf_tensors(path):
    """[(name, ggml type name, shape (ggml order, fastest first), bytes)] of a GGUF file."""
    code = ("import json, sys\nfrom gguf import GGUFReader\nr = GGUFReader(sys.argv[1])\n"
            "print(json.dumps([(t.name, t.tensor_type.name, [int(x) for x in t.shape], "
            "int(t.n_bytes)) for t in r.tensors]))")
    out = run([sys.executable, "-c", code, path], env=llamacpp_env(),
              stdout=subprocess.PIPE).stdout
    return [tuple(t) for t in json.loads(out)]


# --------------------------------------------------------------------------------- phimoec side

def toolchain_key():
    """What a phimoe-bin depends on besides the checkpoint: phimoec, the runtime libraries it
    links, the runtime headers the generated code includes."""
    h = hashlib.sha1()
    files = [PHIMOEC] + sorted((BUILD / "runtime").rglob("*.a")) + sorted(
        (ROOT / "runtime" / "include").rglob("*.h"))
    for f in files:
        if f.is_file():
            st = f.stat()
            h.update(f"{f}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


UNSUPPORTED = re.compile(r"--quant[ :]+\S*:?.*(not implemented|unsupported|not supported|"
                         r"not in \{)", re.I)


def quant_unsupported(stderr):
    """Whether phimoec refused --quant because it does not implement that type (and nothing
    else went wrong)."""
    return bool(UNSUPPORTED.search(stderr or ""))


def compile_phimoe(ckpt, quant, extra=(), name=None):
    """phimoec compile CKPT --target cpu --quant QUANT into the bench cache; reuses a build made
    by the same phimoec/runtime from the same checkpoint. Returns (out_dir, None) or
    (None, reason) when phimoec reports the type unsupported; raises on any other failure."""
    if not PHIMOEC.is_file():
        raise RuntimeError(f"{PHIMOEC} not found: build phimoec (PHIMOE_BUILD_DIR={BUILD})")
    ckpt = pathlib.Path(ckpt)
    key = f"{toolchain_key()}-{checkpoint_key(ckpt)}-{quant}-{' '.join(extra)}"
    out = BENCH_CACHE / "phimoe" / (name or f"{ckpt.name}-{quant}")
    stamp = out / ".bench-key"
    if stamp.is_file() and stamp.read_text() == key and (out / "phimoe-bin").is_file():
        return out, None
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(c) for c in [PHIMOEC, "compile", ckpt, "--target", "cpu", "--quant", quant,
                            "-o", out, *extra]]
    log("$", " ".join(cmd))
    # Peak resident memory of phimoec itself (its VmHWM, polled; the C++ compiler it runs is a
    # child of its own and not counted) and its wall time. Not wait4's ru_maxrss: Linux carries
    # the forking parent's RSS into a child's across exec, and this process may hold the
    # transformers model it has just built.
    start = time.time()
    with tempfile.TemporaryFile(mode="w+") as err:
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        peak = 0
        while child.poll() is None:
            peak = max(peak, vm_hwm(child.pid))
            time.sleep(0.02)
        err.seek(0)
        stderr = err.read()
    seconds = time.time() - start
    if child.returncode != 0:
        if quant_unsupported(stderr):
            return None, stderr.strip().splitlines()[-1]
        raise RuntimeError(f"phimoec compile --quant {quant} failed:\n{stderr[-4000:]}")
    (out / "compile-stats.json").write_text(json.dumps(
        {"peak_rss_bytes": peak, "seconds": round(seconds, 1),
         "command": " ".join(cmd)}) + "\n")
    stamp.write_text(key)
    return out, None


def vm_hwm(pid):
    """The peak resident set of a running process in bytes (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pack_table(out):
    """weights.phw's tensor table: [{name, type, offset, bytes}]."""
    with open(pathlib.Path(out) / "weights.phw", "rb") as f:
        head = f.read(64)
        magic, _version, _n, _hash, table_bytes = struct.unpack("<8sIIQQ", head[:32])
        if magic != b"PHIMOEW\0":
            raise ValueError(f"{out}/weights.phw: not a weight pack")
        return json.loads(f.read(table_bytes))


def storage_of(type_text):
    """phimoec storage name of a pack table type: "f32", "bf16", "q4k", ..."""
    m = re.search(r"qweight<\s*(\w+)", type_text)
    if m:
        return m.group(1).lower()
    m = re.search(r"x(f32|f16|bf16)>", type_text) or re.search(r"<(f32|f16|bf16)>", type_text)
    if m:
        return m.group(1)
    raise ValueError(f"unknown pack type {type_text!r}")


def shape_of(type_text):
    m = re.search(r"<(?:\s*\w+\s*,\s*)?([0-9x]+)", type_text)
    return [int(d) for d in m.group(1).split("x") if d] if m else []


# ------------------------------------------------------------------------------ weight roles

def role_of(name):
    """The role of a weight by its name, for both phimoec pack names (checkpoint-derived:
    model.layers.N.self_attn..., block_sparse_moe..., lm_head, embed_tokens, fused names) and
    GGUF names (blk.N.attn_q, ffn_gate_inp, ffn_*_exps, output, token_embd)."""
    n = name.lower()
    if "rope_factors" in n:
        return "rope"
    if "embed_tokens" in n or n.startswith("token_embd"):
        return "embedding"
    if n.startswith("lm_head") or n.startswith("output.") or n == "output.weight":
        return "lm_head"
    if "norm" in n:
        return "norm"
    if "gate_inp" in n or re.search(r"block_sparse_moe\.gate\b", n) or "router" in n:
        return "router"
    if "expert" in n or "_exps" in n or "gate_up" in n or re.search(r"\bw[123]\b", n):
        return "experts"
    if "attn" in n or "q_proj" in n or "k_proj" in n or "v_proj" in n or "o_proj" in n \
            or "qkv" in n:
        return "attention"
    return "other"


def decode_bytes(tensors, n_experts, top_k, vocab):
    """Weight bytes one decoded token reads, by role: everything once, except the expert tensors
    (top_k of n_experts: each expert's slice is read only when selected) and the embedding table
    (one row). tensors: [(name, bytes)]. Returns {role: bytes}."""
    by_role = {}
    for name, nbytes in tensors:
        role = role_of(name)
        if role == "experts":
            nbytes = nbytes * top_k / n_experts
        elif role == "embedding":
            nbytes = nbytes / vocab
        by_role[role] = by_role.get(role, 0) + nbytes
    return by_role


def gib(n):
    return n / 2**30


def fmt_bytes(n):
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.3f} GB"


def kl_top1(p_logits, q_logits):
    """Mean KL(P || Q) of the softmax distributions (nats) over positions, and the fraction of
    positions where the argmaxes agree; also the 99th percentile of KL and max KL. P is the
    reference. float64 throughout."""
    import numpy as np
    p = np.asarray(p_logits, dtype=np.float64)
    q = np.asarray(q_logits, dtype=np.float64)
    assert p.shape == q.shape, (p.shape, q.shape)
    lp = p - p.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    lq = q - q.max(-1, keepdims=True)
    lq -= np.log(np.exp(lq).sum(-1, keepdims=True))
    kl = (np.exp(lp) * (lp - lq)).sum(-1)
    top1 = float((p.argmax(-1) == q.argmax(-1)).mean())
    return dict(kl_mean=float(kl.mean()), kl_p99=float(np.percentile(kl, 99)),
                kl_max=float(kl.max()), top1=top1, positions=int(p.shape[0]),
                ref_top_prob=float(np.exp(lp.max(-1)).mean()))


# A device call (the device tool) carries the working tree and the carried paths, 64 MiB in
# all; what prepares a carry keeps 2 MiB of room.
CARRY_LIMIT = 62 << 20


def dir_bytes(path):
    """Bytes of a file, or of the files under a directory (links not followed)."""
    path = pathlib.Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def write_tar_xz(root, out, arcname=".", preset=6):
    """The directory root as the solid archive `out` (tar, xz at `preset`), its entries under
    arcname: what a device call carries instead of a directory whose files repeat each other."""
    import tarfile
    with tarfile.open(out, "w:xz", preset=preset) as tar:
        tar.add(root, arcname=arcname)


def extract_tar_xz(archive, dest):
    """Unpacks write_tar_xz's archive into dest (made if absent), modes kept (executables)."""
    import tarfile
    dest = pathlib.Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:xz") as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.12, and the security releases before
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)


def working_tree_bytes():
    """Bytes of what a device call sends besides the carried paths: tracked files and untracked
    files git does not ignore."""
    try:
        out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    total = 0
    for name in out.decode().split("\0"):
        f = ROOT / name
        if name and f.is_file() and not f.is_symlink():
            total += f.stat().st_size
    return total


def machine():
    cpu = "unknown"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem = int(line.split()[1]) * 1024
    flags = pathlib.Path("/proc/cpuinfo").read_text()
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
           if re.search(rf"\b{f}\b", flags)]
    return dict(cpu=cpu, cores=os.cpu_count(), mem_gib=round(gib(mem), 1), isa=isa)


def math_ok(x):
    return x is not None and not (isinstance(x, float) and math.isnan(x))


# ------------------------------------------------------------ matching llama.cpp's types to ours

BLOCK = {"q8_0": 32, "q4k": 256, "q6k": 256}


def our_policy(quant, role, cols, checkpoint_dtype="bf16"):
    """The storage phimoec's quantize pass gives a weight (passes/Quantize.cpp, defaults): the
    body (attention) and experts at the scheme; under q4k the LM head at q6k; under q4k/q6k the
    embedding at q8_0; the router as the checkpoint has it; vectors f32. A block scheme whose
    block does not divide the row length falls back to q8_0, then f32."""
    if role in ("norm", "rope", "vector"):
        return "f32"
    if role == "router":
        return checkpoint_dtype
    if quant not in BLOCK:
        return quant
    scheme = quant
    if role == "lm_head" and quant == "q4k":
        scheme = "q6k"
    if role == "embedding" and quant in ("q4k", "q6k"):
        scheme = "q8_0"
    for s in (scheme, "q8_0"):
        if cols % BLOCK[s] == 0:
            return s
    return "f32"


def ensure_llama_quant(ckpt, quant):
    """llama.cpp's quantization of the checkpoint at phimoec's tensor types: llama-quantize --pure
    (no k-quant mixture) with every quantizable tensor's type given explicitly (phimoec's policy
    for its role and row length), from the bf16 GGUF. bf16 is the bf16 GGUF itself. Returns
    (path, {tensor: type})."""
    if quant == "bf16":
        src = ensure_gguf(ckpt, "bf16")
        return src, {n: t for n, t, _, _ in gguf_tensors(src)}
    # Quantize from the checkpoint's own precision (phimoec quantizes from it too).
    src = ensure_gguf(ckpt, "f32" if checkpoint_dtype(ckpt) == "float32" else "bf16")
    if quant in LLAMA_MIXES:  # llama-quantize's own choice of types
        out = src.parent / f"model-{quant}.gguf"
        if not out.is_file():
            tmp = out.with_suffix(".tmp")
            run([llamacpp_tool("llama-quantize"), src, tmp, quant, str(os.cpu_count())],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            tmp.rename(out)
        return out, {n: t for n, t, _, _ in gguf_tensors(out)}
    out = src.parent / f"model-{quant}-matched.gguf"
    if not out.is_file():
        args, types = [], {}
        for name, _gtype, shape, _nbytes in gguf_tensors(src):
            role = role_of(name)
            if len(shape) < 2 or role in ("norm", "rope", "router", "other"):
                continue
            types[name] = GGML_TYPE[our_policy(quant, role, shape[0])]
            if role == "embedding":
                args += ["--token-embedding-type", types[name]]
            elif role == "lm_head":
                args += ["--output-tensor-type", types[name]]
            else:
                args += ["--tensor-type", f"^{re.escape(name)}$={types[name]}"]
        tmp = out.with_suffix(".tmp")
        run([llamacpp_tool("llama-quantize"), "--pure", *args, src, tmp, LLAMA_FTYPE[quant],
             str(os.cpu_count())], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        got = {n: t for n, t, _, _ in gguf_tensors(tmp)}
        wrong = {n: (got.get(n), t) for n, t in types.items() if got.get(n, "").lower() != t.lower()}
        if wrong:
            raise RuntimeError(f"llama-quantize did not give the requested types: {wrong}")
        tmp.rename(out)
    return out, {n: t for n, t, _, _ in gguf_tensors(out)}
