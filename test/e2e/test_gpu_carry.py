"""What carries test/gpu/gpu_oracle.py's artifacts to the GPU machine: DIR.tar.xz (`archive`),
refused over the device call's carry limit, and unpacked there (`unpack`, run.sh, `check`)."""
import os
import pathlib
import stat
import subprocess
import sys

import pytest

import oracle

sys.path.insert(0, str(oracle.ROOT / "test" / "gpu"))
sys.path.insert(0, str(oracle.ROOT / "bench"))
import common  # noqa: E402
import gpu_oracle  # noqa: E402

SCRIPT = oracle.ROOT / "test" / "gpu" / "gpu_oracle.py"


def make_artifacts(root):
    """A small tree like prepare's: an executable, a nested case, an empty file."""
    (root / "q4k" / "cuda").mkdir(parents=True)
    binary = root / "q4k" / "cuda" / "phimoe-bin"
    binary.write_bytes(os.urandom(3000) + b"\0" * 5000)
    binary.chmod(0o755)
    (root / "q4k" / "case.json").write_text('{"prompt": [1, 2, 3]}')
    (root / "q4k" / "cuda" / "build.log").write_text("")
    (root / "kernels_test.arch").write_text("sm_90\n")
    return tree_of(root)


def tree_of(root):
    """Relative path: (bytes, permission bits) of every file under root."""
    return {str(f.relative_to(root)): (f.read_bytes(), f.stat().st_mode & 0o777)
            for f in root.rglob("*") if f.is_file()}


def test_archive_unpacks_to_the_same_tree(tmp_path, capsys):
    root = tmp_path / "gpu-artifacts"
    files = make_artifacts(root)
    assert gpu_oracle.archive(root) == 0
    packed = tmp_path / "gpu-artifacts.tar.xz"
    assert packed.is_file() and not (tmp_path / "gpu-artifacts.tar.xz.part").exists()
    assert "to carry" in capsys.readouterr().out
    # the command run.sh runs, which prints where the tree is
    dest = tmp_path / "there"
    proc = subprocess.run([sys.executable, str(SCRIPT), "unpack", str(packed), str(dest)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(dest)
    assert tree_of(dest) == files
    assert tree_of(dest)["q4k/cuda/phimoe-bin"][1] & stat.S_IXUSR
    # a directory is its own tree
    assert gpu_oracle.unpack(root, tmp_path / "unused") == root


def test_archive_over_the_carry_limit_is_refused(tmp_path, monkeypatch, capsys):
    root = tmp_path / "gpu-artifacts"
    make_artifacts(root)
    monkeypatch.setattr(common, "CARRY_LIMIT", common.working_tree_bytes() + 100)
    assert gpu_oracle.archive(root) == 1
    err = capsys.readouterr().err
    assert "gpu-artifacts.tar.xz" in err and "PHIMOE_ORACLE_CASES" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-artifacts"]


def test_unpack_names_what_is_not_artifacts(tmp_path):
    bad = tmp_path / "gpu-artifacts.zip"
    bad.write_bytes(b"PK")
    proc = subprocess.run([sys.executable, str(SCRIPT), "unpack", str(bad), str(tmp_path / "d")],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert str(bad) in proc.stderr and "tar.xz" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_check_takes_the_archive(tmp_path, monkeypatch, capsys):
    """check DIR.tar.xz unpacks it next to itself, replacing what an earlier archive left there,
    and checks what it holds (here: a case that was not prepared, which it skips)."""
    root = tmp_path / "gpu-artifacts"
    make_artifacts(root)
    assert gpu_oracle.archive(root) == 0
    stale = tmp_path / "gpu-artifacts.unpacked" / "q8_0" / "case.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    monkeypatch.setenv("PHIMOE_ORACLE_CASES", "bf16")
    assert gpu_oracle.check(tmp_path / "gpu-artifacts.tar.xz") == 0
    assert "SKIP bf16: not prepared" in capsys.readouterr().out
    assert not stale.exists()
    assert tree_of(tmp_path / "gpu-artifacts.unpacked") == tree_of(root)
