#!/usr/bin/env python3
"""The machine code of the CUDA kernels at Phi-3.5-MoE's widths, without a GPU: for every
kernel, its registers, shared memory and spills (ptxas -v) and the instructions of its main
loop (the longest backward branch of its sm_XX SASS) by opcode, with the tensor-core MMAs,
global and shared loads and stores, and barriers counted apart.

    PHIMOE_BUILD_DIR=build python bench/sass_stats.py --quant q4k --filter tc_kernel
    python bench/sass_stats.py model.cu --arch sm_80        # any generated or hand-written .cu
    python bench/sass_stats.py --include /tmp/old/runtime/include   # another commit's kernels

Without a .cu it writes a header-only checkpoint of the real widths (one layer) and prints it
with `phimoec compile --emit=cuda`. Counts are static: a loop's cold paths (a scalar fallback
taken only for misaligned rows, say) count as if they ran. cuobjdump comes from $CUOBJDUMP,
the CUDA toolkit, or the triton wheel that torch installs (Debian's CUDA lacks it).
"""
import argparse
import collections
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

NVCC = os.environ.get("PHIMOE_NVCC", "/usr/local/cuda/bin/nvcc")


def find_cuobjdump():
    candidates = [os.environ.get("CUOBJDUMP"), shutil.which("cuobjdump"),
                  str(pathlib.Path(NVCC).parent / "cuobjdump")]
    try:
        import triton  # noqa: F401 (torch's dependency ships the CUDA binary tools)
        candidates.append(str(pathlib.Path(triton.__file__).parent / "backends" / "nvidia" /
                              "bin" / "cuobjdump"))
    except ImportError:
        pass
    for c in candidates:
        if c and pathlib.Path(c).is_file():
            return c
    sys.exit("sass_stats: no cuobjdump (set CUOBJDUMP, or install triton: pip install triton)")


def generated_source(quant, arch, tmp):
    import bench_gpu
    if not common.PHIMOEC.is_file():
        sys.exit(f"sass_stats: {common.PHIMOEC} not found (PHIMOE_BUILD_DIR)")
    ckpt = tmp / "model"
    bench_gpu.write_header_only(ckpt, bench_gpu.model_config("full", 1))
    proc = subprocess.run([str(common.PHIMOEC), "compile", str(ckpt), "--target", arch,
                           "--quant", quant, "--emit=cuda"], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sass_stats: phimoec failed:\n{proc.stderr}")
    src = tmp / f"model-{quant}.cu"
    src.write_text(proc.stdout)
    return src


def short_name(mangled):
    """The kernel's name and template arguments, shortened from the mangled symbol."""
    m = re.search(r"detail(\d+)(\w+?)I", mangled)
    return m.group(2) if m else mangled


def ptxas_info(stderr):
    """Mangled name -> (registers, shared bytes, spill bytes) from ptxas -v."""
    info, name = {}, None
    for line in stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            info.setdefault(name, {})["spill"] = int(m.group(1)) + int(m.group(2))
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            smem = re.search(r"(\d+) bytes smem", line)
            info.setdefault(name, {}).update(regs=int(m.group(1)),
                                             smem=int(smem.group(1)) if smem else 0)
    return info


def main_loop(body):
    """Opcodes of the instructions between the longest backward branch and its target."""
    ins = [(int(a, 16), t.strip()) for a, t in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", body)]
    best = None
    for addr, text in ins:
        m = re.search(r"BRA\s+(?:`\()?.*?0x([0-9a-f]+)", text)
        if m:
            target = int(m.group(1), 16)
            if target < addr and (best is None or addr - target > best[1] - best[0]):
                best = (target, addr)
    if best is None:
        return []
    return [re.sub(r"^@!?U?P\w+\s+", "", t).split()[0] for a, t in ins if best[0] <= a <= best[1]]


GROUPS = [("mma", r"^HMMA|^IMMA|^HGMMA"), ("ldg", r"^LDG"), ("lds", r"^LDS|^LDSM"),
          ("sts", r"^STS"), ("bar", r"^BAR")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", help="a .cu file (default: the real widths' model)")
    ap.add_argument("--quant", default="q4k", help="for the generated model (default q4k)")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--filter", default="", help="only kernels whose name matches this regex")
    ap.add_argument("--ops", type=int, default=8, help="most frequent opcodes to list")
    ap.add_argument("--include", default=str(common.ROOT / "runtime" / "include"),
                    help="the runtime headers to build against (say, another commit's, from "
                         "git archive COMMIT runtime/include | tar -x -C DIR)")
    args = ap.parse_args()
    cuobjdump = find_cuobjdump()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        src = pathlib.Path(args.source) if args.source else generated_source(args.quant,
                                                                             args.arch, tmp)
        cubin = tmp / "k.cubin"
        proc = subprocess.run([NVCC, "-std=c++17", "-O2", f"-arch={args.arch}", "-cubin",
                               "-Xptxas", "-v", "-I", args.include,
                               str(src), "-o", str(cubin)], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"sass_stats: nvcc failed:\n{proc.stderr[-4000:]}")
        info = ptxas_info(proc.stderr)
        sass = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True,
                              check=True).stdout
    print(f"# {src.name}, {args.arch}: the main loop of each kernel (static instruction counts)")
    print("| kernel | registers | smem B | spill B | loop instrs | "
          + " | ".join(g for g, _ in GROUPS) + " | most frequent |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(GROUPS) + "---|")
    for part in re.split(r"\n\s*Function : ", sass)[1:]:
        mangled = part.split("\n", 1)[0].strip()
        name = short_name(mangled)
        if args.filter and not re.search(args.filter, mangled):
            continue
        ops = main_loop(part)
        counts = collections.Counter(ops)
        groups = [sum(n for op, n in counts.items() if re.search(pat, op)) for _, pat in GROUPS]
        top = ", ".join(f"{op} {n}" for op, n in counts.most_common(args.ops))
        k = info.get(mangled, {})
        print(f"| {name} `{mangled[-40:]}` | {k.get('regs', '?')} | {k.get('smem', '?')} | "
              f"{k.get('spill', '?')} | {len(ops)} | " + " | ".join(map(str, groups))
              + f" | {top} |")


if __name__ == "__main__":
    main()
