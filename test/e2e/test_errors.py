"""Bad input to phimoec and phimoe-bin: a clear message naming the file and the
tensor or field, a non-zero exit, and the output directory left as it was."""
import json
import pathlib
import shutil
import struct
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file

import oracle


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    src = tmp_path_factory.mktemp("ckpt") / "model"
    oracle.save(oracle.make_model(oracle.tiny_config(layers=1)), src)
    return src


def broken_copy(checkpoint, tmp_path):
    dst = tmp_path / "broken"
    shutil.copytree(checkpoint, dst)
    return dst


def expect_failure(src, out, *needles):
    proc = oracle.compile_model(src, out, "--quant", "f32")
    assert proc.returncode != 0, proc.stdout
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    return proc


def test_unknown_model_type(checkpoint, tmp_path):
    src = broken_copy(checkpoint, tmp_path)
    config = json.loads((src / "config.json").read_text())
    config["model_type"] = "llama"
    (src / "config.json").write_text(json.dumps(config))
    expect_failure(src, tmp_path / "out", "config.json", "model_type", "llama")
    assert not (tmp_path / "out").exists()


def test_malformed_config_json(checkpoint, tmp_path):
    src = broken_copy(checkpoint, tmp_path)
    (src / "config.json").write_text('{"model_type": "phimoe", "hidden_size": 64,')
    expect_failure(src, tmp_path / "out", "config.json", "malformed JSON")


@pytest.mark.parametrize("field,value", [("num_key_value_heads", 3),
                                         ("num_experts_per_tok", 3),
                                         ("hidden_size", "wide")])
def test_bad_config_field(checkpoint, tmp_path, field, value):
    src = broken_copy(checkpoint, tmp_path)
    config = json.loads((src / "config.json").read_text())
    config[field] = value
    (src / "config.json").write_text(json.dumps(config))
    expect_failure(src, tmp_path / "out", "config.json", field)


def test_missing_tensor(checkpoint, tmp_path):
    src = broken_copy(checkpoint, tmp_path)
    tensors = load_file(src / "model.safetensors")
    del tensors["model.layers.0.self_attn.k_proj.weight"]
    save_file(tensors, src / "model.safetensors")
    expect_failure(src, tmp_path / "out", "model.layers.0.self_attn.k_proj.weight", "missing")


def test_misshapen_tensor(checkpoint, tmp_path):
    src = broken_copy(checkpoint, tmp_path)
    tensors = load_file(src / "model.safetensors")
    tensors["model.layers.0.block_sparse_moe.experts.1.w2.weight"] = torch.zeros(64, 100)
    save_file(tensors, src / "model.safetensors")
    expect_failure(src, tmp_path / "out", "model.safetensors",
                   "model.layers.0.block_sparse_moe.experts.1.w2.weight", "[64, 100]")


def test_truncated_safetensors(checkpoint, tmp_path):
    src = broken_copy(checkpoint, tmp_path)
    path = src / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-1000])
    expect_failure(src, tmp_path / "out", "model.safetensors", "truncated")


def test_garbage_header(checkpoint, tmp_path):
    src = broken_copy(checkpoint, tmp_path)
    path = src / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 12) + b"{not json!!}" + b"\0" * 64)
    expect_failure(src, tmp_path / "out", "model.safetensors", "malformed JSON header")


def test_unknown_march(checkpoint, tmp_path):
    """phimoec asks the C++ compiler about --march before it writes anything."""
    proc = oracle.compile_model(checkpoint, tmp_path / "out", "--quant", "f32", "--march",
                                "pentium-9000")
    assert proc.returncode != 0
    assert "--march pentium-9000" in proc.stderr and "rejects" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_failed_compile_leaves_existing_output_alone(checkpoint, tmp_path):
    src = broken_copy(checkpoint, tmp_path)
    (src / "config.json").write_text("[]")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    expect_failure(src, out, "config.json")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert not list(tmp_path.glob("out.phimoec-*"))


def test_refuses_to_replace_a_directory_it_did_not_write(checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    expect_failure(checkpoint, out, "not a phimoec output directory")
    assert (out / "notes.txt").read_text() == "mine"


def test_replaces_its_own_output_and_checks_the_pack(checkpoint, tmp_path):
    out = tmp_path / "out"
    for _ in range(2):  # the second compile replaces the first
        proc = oracle.compile_model(checkpoint, out, "--quant", "f32")
        assert proc.returncode == 0, proc.stderr
    ok = subprocess.run([str(out / "phimoe-bin"), "--tokens", "1,2,3", "-n", "2"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr

    # A truncated pack is refused with a message naming it.
    pack = out / "weights.phw"
    data = pack.read_bytes()
    pack.write_bytes(data[:-4096])
    bad = subprocess.run([str(out / "phimoe-bin"), "--tokens", "1,2,3"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "weights.phw" in bad.stderr and "truncated" in bad.stderr

    # A pack of another build (bf16 instead of f32) is refused by its hash.
    other = tmp_path / "other"
    assert oracle.compile_model(checkpoint, other, "--quant", "bf16").returncode == 0
    shutil.copy(other / "weights.phw", pack)
    bad = subprocess.run([str(out / "phimoe-bin"), "--tokens", "1,2,3"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "another model or build" in bad.stderr


def test_weights_read_or_mapped(checkpoint, tmp_path):
    """A CPU phimoe-bin reads its weights into memory by default (huge pages: faster decode),
    --mmap maps the file: the same logits either way, and bench says which it was."""
    import numpy as np
    out = tmp_path / "out"
    assert oracle.compile_model(checkpoint, out, "--quant", "f32").returncode == 0
    exe = str(out / "phimoe-bin")
    logits = {}
    for mode in ([], ["--mmap"], ["--no-mmap"]):
        path = tmp_path / f"logits{'-'.join(mode)}.npy"
        proc = subprocess.run([exe, "--tokens", "1,2,3", "-n", "3", "--dump-logits", str(path),
                               *mode], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        logits[tuple(mode)] = np.load(path)
    assert np.array_equal(logits[()], logits[("--mmap",)])
    assert np.array_equal(logits[()], logits[("--no-mmap",)])
    for mode, held in (([], "read"), (["--mmap"], "mapped"), (["--no-mmap"], "read")):
        proc = subprocess.run([exe, "bench", "-p", "4", "-n", "2", "-r", "1", "--json", *mode],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["weights"] == held, (mode, report)
        assert 0 <= report["huge_page_bytes"] <= (out / "weights.phw").stat().st_size + 2**21
    both = subprocess.run([exe, "--tokens", "1", "--mmap", "--no-mmap"], capture_output=True,
                          text=True)
    assert both.returncode != 0 and "--mmap" in both.stderr and "--no-mmap" in both.stderr
    # A truncated pack is refused before it is read, as it is before it is mapped.
    pack = out / "weights.phw"
    pack.write_bytes(pack.read_bytes()[:-4096])
    for mode in ([], ["--mmap"], ["--no-mmap"]):
        bad = subprocess.run([exe, "--tokens", "1,2,3", *mode], capture_output=True, text=True)
        assert bad.returncode != 0 and "weights.phw" in bad.stderr and \
            "truncated" in bad.stderr, (mode, bad.stderr)


def test_phimoe_bin_bad_arguments(checkpoint, tmp_path):
    out = tmp_path / "out"
    assert oracle.compile_model(checkpoint, out, "--quant", "f32").returncode == 0
    for args, needle in ([["--tokens", "1,x"], "not a token id"],
                         [["--tokens", "1,96"], "outside the vocabulary"],
                         [["--tokens", "1", "-n", "10", "-c", "4"], "--ctx-size"],
                         [["--tokens", "1", "--bogus"], "bogus"]):
        proc = subprocess.run([str(out / "phimoe-bin"), *args], capture_output=True, text=True)
        assert proc.returncode != 0 and needle in proc.stderr, (args, proc.stderr)


def test_emitted_cpp_is_deterministic(checkpoint):
    runs = [subprocess.run([str(oracle.PHIMOEC), "compile", str(checkpoint), "--quant", "f32",
                            "--emit=cpp"], capture_output=True, text=True) for _ in range(2)]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout
    assert runs[0].stdout.startswith("// generated by phimoec, do not edit")
