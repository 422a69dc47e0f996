"""q8_0, q4_K and q6_K: our blocks against gguf's (llama.cpp's layouts, read by gguf's numpy
code) and against llama.cpp's own library where it is built, and phimoec's weight pack against
our quantizer applied to the checkpoint's rows.

gguf (PyPI) quantizes Q8_0 exactly as llama.cpp's reference does, and dequantizes all three
types; it has no K-quant quantizer, so for q4_K and q6_K the layout is proven by dequantization
(gguf reads our blocks as we do, and we read random blocks as gguf does). Where bench/llamacpp.sh
has built llama.cpp (libggml-base.so, found through LLAMA_CPP_LIB_PATH or the bench cache), its
reference quantizers quantize the same rows: our error must not be larger. phimoe-quant (built
from test/quant) is our quantize_row / dequantize_row on raw files."""
import ctypes
import glob
import json
import os
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import oracle

gguf_quants = pytest.importorskip("gguf.quants")
from gguf import GGMLQuantizationType as QT  # noqa: E402

PHIMOE_QUANT = oracle.BUILD / "test" / "quant" / "phimoe-quant"
# name: (gguf type, values per block, bytes per block, offset of the f16 fields in a block)
FORMATS = {
    "q8_0": (QT.Q8_0, 32, 34, [0]),
    "q4k": (QT.Q4_K, 256, 144, [0, 2]),
    "q6k": (QT.Q6_K, 256, 210, [208]),
}


@pytest.fixture(scope="module", autouse=True)
def tool():
    assert PHIMOE_QUANT.exists(), (
        f"{PHIMOE_QUANT} is missing: build the phimoe-quant target (test/quant)")


def ours(mode, fmt, rows, tmp_path):
    """Our quantize_row (float32 rows -> uint8 blocks) or dequantize_row (the reverse)."""
    src, dst = tmp_path / f"{mode}.in", tmp_path / f"{mode}.out"
    np.ascontiguousarray(rows).tofile(src)
    n = rows.shape[1] if mode == "quantize" else rows.shape[1] // FORMATS[fmt][2] * FORMATS[fmt][1]
    subprocess.run([str(PHIMOE_QUANT), mode, fmt, str(n), str(src), str(dst)], check=True)
    if mode == "quantize":
        return np.fromfile(dst, dtype=np.uint8).reshape(rows.shape[0], -1)
    return np.fromfile(dst, dtype=np.float32).reshape(rows.shape[0], n)


def sample_rows(seed, n_rows=64, n=4096):
    """Gaussian rows, one with a huge outlier, a negative-only one, a tiny one, a constant one."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_rows, n)).astype(np.float32)
    x[1, rng.integers(n)] = 300.0
    x[2] = -np.abs(x[2]) - 0.5
    x[3] *= 1e-3
    x[4] = np.float32(rng.standard_normal())
    return x


def rel_rmse(x, y):
    x = x.astype(np.float64)
    return float(np.sqrt(np.mean((x - y) ** 2) / np.mean(x ** 2)))


@pytest.fixture
def seed():
    s = int.from_bytes(os.urandom(4), "little")
    print(f"seed {s}")
    return s


def test_q8_0_blocks_equal_llama_cpp(seed, tmp_path):
    """Our q8_0 bytes are llama.cpp's reference bytes (gguf's bit-exact port)."""
    x = sample_rows(seed)
    mine = ours("quantize", "q8_0", x, tmp_path)
    theirs = gguf_quants.quantize(x, QT.Q8_0)
    assert theirs.shape == mine.shape
    assert np.array_equal(mine, theirs)


@pytest.mark.parametrize("fmt", FORMATS)
def test_we_read_blocks_as_gguf_does(fmt, seed, tmp_path):
    """Random blocks (every byte random, the f16 scales finite): our dequantization equals
    gguf's value for value, so we read llama.cpp's layout (nibble order, 6-bit scale packing,
    ql/qh split, signed scales)."""
    qtype, values, size, halves = FORMATS[fmt]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(16, 4096 // values * size), dtype=np.uint8)
    view = blocks.reshape(16, -1, size)
    for at in halves:
        scale = (rng.standard_normal(view.shape[:2]) * 0.01).astype(np.float16)
        view[:, :, at:at + 2] = scale.view(np.uint8).reshape(*view.shape[:2], 2)
    expected = gguf_quants.dequantize(blocks, qtype)
    got = ours("dequantize", fmt, blocks, tmp_path)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)


# Relative RMSE on these rows (mostly N(0, 1)): ours must stay below these; llama.cpp's
# reference quantizers measure q8_0 0.0054, q4_K 0.0714, q6_K 0.0177 on N(0, 1) rows.
LEVELS = {"q8_0": 0.0060, "q4k": 0.0705, "q6k": 0.0175}


@pytest.mark.parametrize("fmt", FORMATS)
def test_gguf_reads_our_blocks(fmt, seed, tmp_path):
    """gguf dequantizes our blocks to exactly what we do, at the expected error level, and
    (where gguf can quantize the type) with an error no larger than llama.cpp's."""
    qtype = FORMATS[fmt][0]
    x = sample_rows(seed)
    blocks = ours("quantize", fmt, x, tmp_path)
    theirs = gguf_quants.dequantize(blocks, qtype)
    assert np.array_equal(theirs, ours("dequantize", fmt, blocks, tmp_path))
    gaussian = slice(5, None)
    error = rel_rmse(x[gaussian], theirs[gaussian])
    print(f"{fmt}: relative RMSE {error:.5f}")
    assert error < LEVELS[fmt]
    for row in range(1, 5):  # outlier, negative, tiny, constant rows: no blow-up
        assert np.all(np.isfinite(theirs[row]))
        assert rel_rmse(x[row:row + 1], theirs[row:row + 1]) < 3 * LEVELS[fmt]
    try:
        reference = gguf_quants.dequantize(gguf_quants.quantize(x, qtype), qtype)
    except NotImplementedError:
        return  # gguf has no quantizer for this type
    assert rel_rmse(x, theirs) <= rel_rmse(x, reference) * (1 + 1e-6)


# ---- llama.cpp itself (optional: bench/llamacpp.sh builds it) ----------------------------

GGML_NAMES = {"q8_0": "q8_0", "q4k": "q4_K", "q6k": "q6_K"}


@pytest.fixture(scope="module")
def ggml():
    """libggml-base.so of bench/llamacpp.sh's build (ggml-quants.c's reference quantizers)."""
    dirs = [os.environ.get("LLAMA_CPP_LIB_PATH", "")]
    cache = os.environ.get("PHIMOE_CACHE", os.path.expanduser("~/.cache/phimoec"))
    dirs += sorted(glob.glob(os.path.join(cache, "llama.cpp-*", "build", "bin")))
    for d in dirs:
        path = os.path.join(d, "libggml-base.so")
        if d and os.path.exists(path):
            lib = ctypes.CDLL(path)
            for name in GGML_NAMES.values():
                for fn in (f"quantize_row_{name}_ref", f"dequantize_row_{name}"):
                    getattr(lib, fn).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
                    getattr(lib, fn).restype = None
            return lib
    pytest.skip("llama.cpp is not built here (bench/llamacpp.sh builds it)")


def ggml_rows(lib, fn, rows, out_dtype, out_width):
    out = np.zeros((rows.shape[0], out_width), dtype=out_dtype)
    for r in range(rows.shape[0]):
        src = np.ascontiguousarray(rows[r])
        n = out_width if out_dtype == np.float32 else src.size
        getattr(lib, fn)(src.ctypes.data, out[r].ctypes.data, n)
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_error_not_above_llama_cpp(ggml, fmt, seed, tmp_path):
    """llama.cpp's reference quantizer (what llama-quantize runs without an importance matrix)
    on the same rows: our RMSE is no larger, and llama.cpp reads our blocks as we do."""
    _, values, size, _ = FORMATS[fmt]
    name = GGML_NAMES[fmt]
    x = sample_rows(seed)
    n = x.shape[1]
    theirs = ggml_rows(ggml, f"quantize_row_{name}_ref", x, np.uint8, n // values * size)
    theirs_y = ggml_rows(ggml, f"dequantize_row_{name}", theirs, np.float32, n)
    mine = ours("quantize", fmt, x, tmp_path)
    mine_y = ours("dequantize", fmt, mine, tmp_path)
    # llama.cpp may be built with FMA contraction: equal up to float rounding.
    ggml_mine_y = ggml_rows(ggml, f"dequantize_row_{name}", mine, np.float32, n)
    np.testing.assert_allclose(ggml_mine_y, mine_y, rtol=1e-6, atol=1e-6 * np.abs(x).max())
    e_mine, e_theirs = rel_rmse(x, mine_y), rel_rmse(x, theirs_y)
    print(f"{fmt}: relative RMSE ours {e_mine:.6f}, llama.cpp {e_theirs:.6f}")
    if fmt == "q8_0":
        assert np.array_equal(mine, theirs)
    else:
        assert e_mine < e_theirs
    for row in range(x.shape[0]):  # and no row worse, the special ones included
        assert rel_rmse(x[row], mine_y[row]) <= rel_rmse(x[row], theirs_y[row]) * (1 + 1e-6), row


# ---- the weight pack ---------------------------------------------------------------------


def source_rows(tensors, name, experts):
    """The float32 matrix (rows along the last dimension) of a packed weight, assembled from
    the checkpoint's tensors as phimoec's recipes do."""
    t = lambda n: tensors[n].float().numpy()  # noqa: E731 (bf16 -> f32 is exact)
    if name.endswith("self_attn.qkv_proj.weight"):
        base = name[: -len("qkv_proj.weight")]
        return np.concatenate([t(base + p + "_proj.weight") for p in "qkv"])
    if name.endswith("experts.gate_up.weight"):
        base = name[: -len("gate_up.weight")]
        return np.stack([np.concatenate([t(f"{base}{e}.w1.weight"), t(f"{base}{e}.w3.weight")])
                         for e in range(experts)])
    if name.endswith("experts.down.weight"):
        base = name[: -len("down.weight")]
        return np.stack([t(f"{base}{e}.w2.weight") for e in range(experts)])
    return t(name)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """hidden 256 so that k-quant rows (256 values) fit; bfloat16 as real checkpoints are."""
    src = tmp_path_factory.mktemp("qckpt") / "model"
    config = oracle.tiny_config(layers=2, hidden=256, heads=4, kv_heads=2, experts=4,
                                intermediate=512, vocab=96)
    oracle.save(oracle.make_model(config), src, dtype=torch.bfloat16)
    return src


def compile_pack(src, out, *flags, prefix=()):
    """phimoec compile, with a stand-in for the C++ compiler and nvcc: these tests are about
    the pack."""
    env = dict(os.environ, PHIMOE_CXX=shutil.which("true"), PHIMOE_NVCC=shutil.which("true"))
    cmd = [*prefix, str(oracle.PHIMOEC), "compile", str(src), "-o", str(out), *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return pathlib.Path(out) / "weights.phw"


@pytest.mark.parametrize("target", ["cpu", "sm_90"])
@pytest.mark.parametrize("quant", ["q8_0", "q4k", "q6k"])
def test_pack_holds_our_quantized_rows(checkpoint, quant, target, tmp_path):
    """Every block-quantized weight in weights.phw (leaves, q/k/v concatenations, stacked
    experts) is byte for byte our quantize_row applied to the checkpoint's rows, in the
    layout of the target: groups of 16 rows for the CPU, field by field for a GPU."""
    pack = compile_pack(checkpoint, tmp_path / "out", "--quant", quant, "--target", target)
    table, data_offset = oracle.pack_table(pack)
    tensors = load_file(checkpoint / "model.safetensors")
    config = json.loads((checkpoint / "config.json").read_text())
    data = np.fromfile(pack, dtype=np.uint8)
    seen = set()
    for entry in table:
        if not entry["type"].startswith("!phimoe.qweight<"):
            continue
        fmt = entry["type"][len("!phimoe.qweight<"):].split(",")[0]
        seen.add(fmt)
        rows = source_rows(tensors, entry["name"], config["num_local_experts"])
        rows = rows.reshape(-1, rows.shape[-1])
        expected = ours("quantize", fmt, rows, tmp_path)
        if entry.get("layout") == "rows16":
            expected = interleave_rows16(expected, fmt)
        if target != "cpu":
            expected = split_fields(expected, fmt)
        expected = expected.reshape(-1)
        begin = data_offset + entry["offset"]
        assert entry["bytes"] == expected.size, entry
        got = data[begin:begin + entry["bytes"]]
        assert np.array_equal(got, expected), entry["name"]
    # The body's scheme, and the policies' q6_K LM head and q8_0 embedding under q4k; every
    # block-quantized matrix of a CPU build in groups of 16 rows, the embedding table by rows.
    assert quant in seen
    if quant == "q4k":
        assert seen == {"q4k", "q6k", "q8_0"}
    for e in table:
        matrix = e["type"].startswith("!phimoe.qweight<")
        embedding = e["name"].endswith("embed_tokens.weight")
        assert (e.get("layout") == "rows16") == (matrix and not embedding and target == "cpu"), e


@pytest.mark.parametrize("march,q6k_type", [("x86-64-v3", "block_q6k"),
                                             ("x86-64-v4", "block_q6k_x16")])
def test_q6k_layout_follows_march(checkpoint, march, q6k_type):
    """The CPU kernels decode q6_K rows faster than 16-row groups with AVX2 and no AVX-512
    (docs/BENCHMARKS.md): phimoec asks the C++ compiler what --march gives and keeps q6_K
    matrices (here the q4k policy's LM head) in rows there; q4_K and q8_0 stay interleaved."""
    proc = subprocess.run([str(oracle.PHIMOEC), "compile", str(checkpoint), "--quant", "q4k",
                           "--march", march, "--emit=cpp"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    types = set(re.findall(r"phimoe_rt::weight<phimoe_rt::(block_\w+)>", proc.stdout))
    assert q6k_type in types, types
    assert "block_q4k_x16" in types and "block_q4k" not in types, types
    assert ({"block_q6k", "block_q6k_x16"} - {q6k_type}).isdisjoint(types), types


def test_q6k_layout_changes_the_model_hash(checkpoint):
    """A phimoe-bin with q6_K in rows must refuse a pack with q6_K in groups and the other way
    round: the two builds differ in their model hash, though --march is not hashed."""
    hashes = set()
    for march in ("x86-64-v3", "x86-64-v4"):
        proc = subprocess.run([str(oracle.PHIMOEC), "compile", str(checkpoint), "--quant", "q4k",
                               "--march", march, "--emit=cpp"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        found = re.search(r"ModelInfo phimoe_model_info = \{(\d+)ull,", proc.stdout)
        assert found, proc.stdout[-2000:]
        hashes.add(found.group(1))
    assert len(hashes) == 2


def split_fields(blocks, fmt):
    """A weight's blocks as a GPU build stores them (phimoe_rt/split_layout.h): each field of
    the block over all blocks, field after field. q8_0: quants, then d. q4_K: quants, then
    d, dmin, scales (16 bytes). q6_K: ql, qh, scales, d."""
    size, fields = {"q8_0": (34, [(2, 32), (0, 2)]),
                    "q4k": (144, [(16, 128), (0, 16)]),
                    "q6k": (210, [(0, 128), (128, 64), (192, 16), (208, 2)])}[fmt]
    b = blocks.reshape(-1, size)
    return np.concatenate([b[:, at:at + n].reshape(-1) for at, n in fields])


def interleave_rows16(blocks, fmt):
    """Quantized rows [R, nb * block bytes] as the CPU kernels read them, per group of 16 rows
    and block (phimoe_rt::block_q4k_16rows, block_q8_0_16rows in quant.h).
    q4_K: the 16 d, the 16 dmin, the scale bytes 4p..4p+3 of each row for p = 0..2, then for
    each 4 quant bytes of a row (32 of them) those 4 bytes of all 16 rows.
    q8_0: the 16 d, then for each 4 quants of a row (8 of them) those of all 16 rows, plus
    128 (as unsigned bytes).
    q6_K: for h = 0, 1 and k = 0..7: 4 bytes of each row from ql[64h + 4k], then from
    ql[64h + 32 + 4k], then from qh[32h + 4k]; then the 16 rows' scales of sub-block 0, ...,
    of sub-block 15; then the 16 d."""
    size = {"q4k": 144, "q8_0": 34, "q6k": 210}[fmt]
    r, width = blocks.shape
    nb = width // size
    g = blocks.reshape(r // 16, 16, nb, size).transpose(0, 2, 1, 3)  # [group, block, row, byte]
    side = lambda q: q.reshape(r // 16, nb, 16, -1, 4).transpose(0, 1, 3, 2, 4)  # noqa: E731
    if fmt == "q4k":
        parts = [g[..., 0:2], g[..., 2:4]]
        parts += [g[..., 4 + 4 * p:8 + 4 * p] for p in range(3)]
        parts.append(side(g[..., 16:]))
    elif fmt == "q8_0":
        parts = [g[..., 0:2], side(g[..., 2:] + np.uint8(128))]  # q + 128, wrapping as bytes do
    else:  # q6_K block: ql[128], qh[64], scales[16], d
        ql = g[..., 0:128].reshape(r // 16, nb, 16, 2, 2, 8, 4)  # [.., row, h, half of 64, k, i]
        qh = g[..., 128:192].reshape(r // 16, nb, 16, 2, 1, 8, 4)  # [.., row, h, -, k, i]
        q = np.concatenate([ql, qh], axis=4)  # [.., row, h, e, k, i]
        q = q.transpose(0, 1, 3, 5, 4, 2, 6)  # [.., h, k, e, row, i]
        parts = [q, g[..., 192:208].transpose(0, 1, 3, 2), g[..., 208:210]]
    flat = [p.reshape(r // 16, nb, -1) for p in parts]
    return np.concatenate(flat, axis=2).reshape(r, width)


def test_pack_is_the_same_on_one_thread(checkpoint, tmp_path):
    """The quantized pack does not depend on the number of packing threads."""
    if shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs taskset and two CPUs")
    many = compile_pack(checkpoint, tmp_path / "many", "--quant", "q4k")
    one = compile_pack(checkpoint, tmp_path / "one", "--quant", "q4k",
                       prefix=("taskset", "-c", "0"))
    assert many.read_bytes() == one.read_bytes()


@pytest.mark.parametrize("flags", [("--quant", "q5k"), ("--quant", "q4_0"),
                                   ("--quant", "q4k", "--lm-head", "q5k"),
                                   ("--quant", "q8_0", "--embedding", "q4_0"),
                                   ("--quant", "q4k", "--quant-override", "experts=q5k")])
def test_schemes_without_kernels_are_refused(checkpoint, tmp_path, flags):
    proc = oracle.compile_model(checkpoint, tmp_path / "out", *flags)
    assert proc.returncode != 0
    assert "no kernels for" in proc.stderr and flags[-1].split("=")[-1] in proc.stderr
    assert not (tmp_path / "out").exists()
