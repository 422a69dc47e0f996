#!/usr/bin/env python3
"""bench/bench_cpu.py - phimoec vs llama.cpp on the CPU, on the same weights.

    PHIMOE_BUILD_DIR=/tmp/benchbuild .venv/bin/python bench/bench_cpu.py [--types q4k,q8_0,bf16]
        [--layers 2] [--arch phimoe|mixtral] [-p 512] [-n 128] [-r 5] [--rounds 2] [-t 2]
        [--from-gguf] [--json results.json]

--types takes phimoec's storages (q4k, q8_0, q6k, bf16: llama.cpp quantizes at phimoec's tensor
types) and llama-quantize's own mixtures (Q4_K_M, Q5_K_M, ...: its types, which phimoec compiles
from the GGUF itself).

1. builds (once, cached under ~/.cache/phimoec/bench/) a PhiMoE with Phi-3.5-MoE's layer shapes
   (hidden 4096, intermediate 6400, 16 experts top-2, 32/8 heads of 128, vocab 32064) and
   --layers layers, seeded random weights, saved in bf16 (bench/common.py: ensure_bench_model);
   or, with --arch mixtral, a Mixtral with Mixtral-8x7B's layer shapes (hidden 4096, 8 experts of
   14336, 32/8 heads, vocab 32000);
2. converts it with llama.cpp's convert_hf_to_gguf.py to a bf16 GGUF and quantizes that with
   llama-quantize --pure at the tensor types phimoec gives each tensor (common.ensure_llama_quant);
   compiles the same checkpoint with phimoec --quant for each type (with --from-gguf: compiles
   llama.cpp's quantized GGUF itself, so that both engines run the same blocks);
3. measures the memory bandwidth (bench/membw.c: read and copy, best of 5 over 2 GiB), then runs
   llama-bench and `phimoe-bin bench` alternately, --rounds times, same threads, same prompt and
   generation lengths. llama-bench's tg starts from an empty context, so phimoe-bin's pp and tg are
   measured as llama-bench measures them: `bench -p P -n 0` and `bench -p 0 -n G`.

Prints a markdown table: pp and tg tokens/s of both, ours/llama.cpp, and the decode bandwidth: the
weight bytes a decoded token reads (every weight once, the expert tensors 2/16, one embedding row;
from each engine's own file) times tg tokens/s, against the measured read bandwidth.
"""
import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys

import common
from common import log, run

ROLES = ["attention", "router", "experts", "lm_head", "embedding", "norm", "rope", "other"]


def membw(threads):
    exe = common.BENCH_CACHE / "membw"
    src = common.ROOT / "bench" / "membw.c"
    if not exe.is_file() or exe.stat().st_mtime < src.stat().st_mtime:
        exe.parent.mkdir(parents=True, exist_ok=True)
        run([os.environ.get("CC", "cc"), "-O3", "-march=native", "-fopenmp", "-ffast-math", src,
             "-o", exe])
    res = {}
    for t in sorted({1, threads}):
        env = dict(os.environ, OMP_NUM_THREADS=str(t), OMP_PROC_BIND="spread")
        out = run([exe, "2048", "5"], env=env, stdout=subprocess.PIPE).stdout
        res[t] = json.loads(out)
        log(f"memory bandwidth, {t} thread(s): {res[t]}")
    return res


def llama_bench(gguf, args):
    """llama-bench's pp and tg, each the faster of its two CPU paths: `--repack 1` (its default:
    weights repacked into interleaved blocks for its GEMM kernels) and `--repack 0` (the plain
    blocks, row-at-a-time dot products). On the AMX Xeon of 2026-12-07 repacked q4_K decodes
    faster and prefills at half the speed, so the default alone understates llama.cpp's prefill.
    Each test's mean also keeps both settings' results ("by_repack")."""
    cmd = [common.llamacpp_tool("llama-bench"), "-m", gguf, "-p", str(args.prompt), "-n",
           str(args.gen), "-r", str(args.reps), "-t", str(args.threads), "-o", "json",
           "--repack", args.llama_repack]
    out = run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout
    res = {}
    for r in json.loads(out):
        key = "pp" if r["n_prompt"] > 0 and r["n_gen"] == 0 else "tg"
        repack = int(r.get("repack", r.get("no_repack") is False))
        entry = dict(mean=r["avg_ts"], stddev=r["stddev_ts"], samples=r["samples_ts"],
                     repack=repack)
        best = res.get(key)
        by = dict(best["by_repack"]) if best else {}
        by[repack] = r["avg_ts"]
        if best is None or entry["mean"] > best["mean"]:
            best = entry
        best["by_repack"] = by
        res[key] = best
        res["info"] = {k: r.get(k) for k in ("build_commit", "build_number", "cpu_info",
                                             "model_type", "model_size", "n_batch", "n_ubatch",
                                             "type_k", "type_v", "flash_attn", "use_mmap",
                                             "n_threads")}
    return res


def ours_bench(out, args, extra=()):
    """phimoe-bin bench's pp and tg; `extra`: more flags (--mmap). Each result also says how
    the weights were held (read, and how much on huge pages, or mapped)."""
    res = {}
    for key, p, n in (("pp", args.prompt, 0), ("tg", 0, args.gen)):
        cmd = [out / "phimoe-bin", "bench", "-p", str(p), "-n", str(n), "-r", str(args.reps),
               "-t", str(args.threads), "--json", *extra]
        r = json.loads(run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout)
        res[key] = dict(mean=r[key]["tokens_per_s"], stddev=r[key]["stddev"],
                        weights=r.get("weights", "mapped"),
                        huge_page_bytes=r.get("huge_page_bytes", 0))
    return res


def mean_of(runs, key):
    vals = [r[key]["mean"] for r in runs if r and key in r]
    return statistics.mean(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", default="q4k,q8_0,bf16")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--arch", choices=["phimoe", "mixtral"], default="phimoe",
                    help="mixtral: Mixtral-8x7B's shapes (common.mixtral_bench_config)")
    ap.add_argument("-p", "--prompt", type=int, default=512)
    ap.add_argument("-n", "--gen", type=int, default=128)
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2, help="alternations llama.cpp/ours per type")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--llama-repack", default="0,1",
                    help="llama-bench --repack values; each test takes the fastest (default: "
                         "both of its CPU paths)")
    ap.add_argument("--from-gguf", action="store_true",
                    help="phimoec compiles llama.cpp's quantized GGUF itself (--quant keep: its "
                         "blocks as they are) rather than the checkpoint: both engines run the "
                         "same file's bytes")
    ap.add_argument("--also-mmap", action="store_true",
                    help="each round also runs phimoe-bin with --mmap (weights mapped from the "
                         "file, 4 KiB pages) after its default (read into memory, huge pages)")
    args = ap.parse_args()
    types = args.types.split(",")

    lc = common.llamacpp()
    ckpt = common.ensure_bench_model(args.layers, arch=args.arch)
    cfg = json.loads((ckpt / "config.json").read_text())
    n_exp, top_k, vocab = cfg["num_local_experts"], cfg["num_experts_per_tok"], cfg["vocab_size"]

    engines = {}
    for q in types:
        gguf, gtypes = common.ensure_llama_quant(ckpt, q)
        if args.from_gguf or q in common.LLAMA_MIXES:
            ours, reason = common.compile_phimoe(gguf, "keep", name=f"{ckpt.name}-{q}-gguf")
        else:
            ours, reason = common.compile_phimoe(ckpt, q)
        e = dict(gguf=str(gguf), ours=str(ours) if ours else None, ours_unsupported=reason)
        lt = common.gguf_tensors(gguf)
        e["llama_bytes"] = common.decode_bytes([(n, b) for n, _, _, b in lt], n_exp, top_k, vocab)
        e["llama_file_bytes"] = sum(b for *_, b in lt)
        e["llama_types"] = sorted({f"{common.role_of(n)}:{t}" for n, t, _, _ in lt})
        if ours:
            table = common.pack_table(ours)
            e["ours_bytes"] = common.decode_bytes([(t["name"], t["bytes"]) for t in table],
                                                  n_exp, top_k, vocab)
            e["ours_file_bytes"] = sum(t["bytes"] for t in table)
            e["ours_types"] = sorted({f"{common.role_of(t['name'])}:"
                                      f"{common.storage_of(t['type'])}" for t in table})
        stats = pathlib.Path(ours) / "compile-stats.json" if ours else None
        if stats and stats.is_file():
            e["compile"] = json.loads(stats.read_text())
        engines[q] = e

    bw = membw(args.threads)

    for q in types:
        engines[q]["llama_runs"], engines[q]["ours_runs"] = [], []
        engines[q]["ours_mmap_runs"] = []
    for rnd in range(args.rounds):
        for q in types:
            e = engines[q]
            log(f"round {rnd + 1}/{args.rounds}, {q}: llama.cpp")
            e["llama_runs"].append(llama_bench(e["gguf"], args))
            if e["ours"]:
                log(f"round {rnd + 1}/{args.rounds}, {q}: phimoec")
                e["ours_runs"].append(ours_bench(common.pathlib.Path(e["ours"]), args))
                if args.also_mmap:
                    log(f"round {rnd + 1}/{args.rounds}, {q}: phimoec --mmap")
                    e["ours_mmap_runs"].append(
                        ours_bench(common.pathlib.Path(e["ours"]), args, ["--mmap"]))

    read_bw = bw[args.threads]["read_gbs"] * 1e9
    rows = []
    for q in types:
        e = engines[q]
        lpp, ltg = mean_of(e["llama_runs"], "pp"), mean_of(e["llama_runs"], "tg")
        opp, otg = mean_of(e["ours_runs"], "pp"), mean_of(e["ours_runs"], "tg")
        lbytes = sum(e["llama_bytes"].values())
        obytes = sum(e["ours_bytes"].values()) if "ours_bytes" in e else None
        row = dict(type=q, llama_pp=lpp, llama_tg=ltg, ours_pp=opp, ours_tg=otg,
                   pp_ratio=opp / lpp if opp else None, tg_ratio=otg / ltg if otg else None,
                   llama_decode_bytes=lbytes, ours_decode_bytes=obytes,
                   llama_decode_gbs=lbytes * ltg / 1e9,
                   ours_decode_gbs=obytes * otg / 1e9 if otg else None)
        row["ours_bw_fraction"] = row["ours_decode_gbs"] * 1e9 / read_bw if otg else None
        row["llama_bw_fraction"] = row["llama_decode_gbs"] * 1e9 / read_bw
        rows.append(row)

    def f(x, spec=".2f"):
        return "n/a" if x is None else format(x, spec)

    info = next((r["info"] for e in engines.values() for r in e["llama_runs"]), {})
    print(f"\nmachine: {common.machine()}; llama.cpp {lc['LLAMA_CPP_COMMIT']} "
          f"(llama-cpp-python {lc['LLAMA_CPP_PYTHON_VERSION']}, {lc['LLAMA_CPP_COMPILER']}, "
          f"{lc.get('LLAMA_CPP_BUILD_CONFIG', 'native')}); "
          f"model: {args.layers} layers; threads {args.threads}; pp{args.prompt}, tg{args.gen}, "
          f"{args.reps} reps x {args.rounds} rounds; llama-bench: {info}")
    print(f"memory bandwidth ({args.threads} threads): read {bw[args.threads]['read_gbs']:.1f} "
          f"GB/s, copy {bw[args.threads]['copy_gbs']:.1f} GB/s; 1 thread: read "
          f"{bw[1]['read_gbs']:.1f} GB/s\n")
    print("| type | llama.cpp pp | ours pp | pp ratio | llama.cpp tg | ours tg | tg ratio "
          "| bytes/token (ours / llama.cpp) | decode GB/s ours (% of read bw) "
          "| decode GB/s llama.cpp (%) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        e = engines[r["type"]]
        note = f" ({e['ours_unsupported']})" if e["ours_unsupported"] else ""
        print(f"| {r['type']} | {f(r['llama_pp'])} | {f(r['ours_pp'])}{note} | "
              f"{f(r['pp_ratio'])} | {f(r['llama_tg'])} | {f(r['ours_tg'])} | "
              f"{f(r['tg_ratio'])} | "
              f"{common.fmt_bytes(r['ours_decode_bytes']) if r['ours_decode_bytes'] else 'n/a'}"
              f" / {common.fmt_bytes(r['llama_decode_bytes'])} | {f(r['ours_decode_gbs'], '.1f')}"
              f" ({f(100 * r['ours_bw_fraction'] if r['ours_bw_fraction'] else None, '.0f')}%)"
              f" | {r['llama_decode_gbs']:.1f} ({100 * r['llama_bw_fraction']:.0f}%) |")
    print("\nllama.cpp by --repack (mean t/s over the rounds; the table takes the faster):")
    for q in types:
        runs = engines[q]["llama_runs"]
        parts = []
        for key in ("pp", "tg"):
            settings = sorted({k for r in runs for k in r[key].get("by_repack", {})})
            parts.append(f"{key} " + ", ".join(
                f"repack {k}: {statistics.mean(r[key]['by_repack'][k] for r in runs):.2f}"
                for k in settings))
        print(f"  {q}: " + "; ".join(parts))
    for q in types:
        runs = engines[q]["ours_runs"]
        if runs:
            held = sorted({f"{r['tg']['weights']}, {r['tg']['huge_page_bytes'] / 2**20:.0f} MiB "
                           f"on huge pages" if r["tg"]["weights"] == "read" else
                           r["tg"]["weights"] for r in runs})
            print(f"\nours {q}: weights {'; '.join(held)}")
    if args.also_mmap:
        print("\nphimoe-bin's weights read into memory (default) against mapped (--mmap), "
              "same build, alternating:\n")
        print("| type | pp read | pp --mmap | pp ratio | tg read | tg --mmap | tg ratio |")
        print("|---|---|---|---|---|---|---|")
        for q in types:
            e = engines[q]
            rp, rt = mean_of(e["ours_runs"], "pp"), mean_of(e["ours_runs"], "tg")
            mp, mt = mean_of(e["ours_mmap_runs"], "pp"), mean_of(e["ours_mmap_runs"], "tg")
            print(f"| {q} | {f(rp)} | {f(mp)} | {f(rp / mp if rp and mp else None)} | "
                  f"{f(rt)} | {f(mt)} | {f(rt / mt if rt and mt else None)} |")
    print("\nbytes per decoded token by role (ours / llama.cpp):")
    for q in types:
        e = engines[q]
        parts = []
        for role in ROLES:
            o = e.get("ours_bytes", {}).get(role)
            ll = e["llama_bytes"].get(role)
            if o is None and ll is None:
                continue
            parts.append(f"{role} {common.fmt_bytes(o) if o is not None else '-'} / "
                         f"{common.fmt_bytes(ll) if ll is not None else '-'}")
        print(f"  {q}: " + "; ".join(parts))
        print(f"      types ours: {e.get('ours_types', 'n/a')}")
        print(f"      types llama.cpp: {e['llama_types']}")

    ckpt_bytes = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
    print("\nphimoec compile peak memory and time:")
    for q in types:
        c = engines[q].get("compile")
        if c:
            from_gguf = args.from_gguf or q in common.LLAMA_MIXES
            source = (f"llama.cpp's {q} GGUF, {common.fmt_bytes(engines[q]['llama_file_bytes'])}"
                      if from_gguf else
                      f"the bf16 checkpoint, {common.fmt_bytes(ckpt_bytes)}")
            size = engines[q]["llama_file_bytes"] if from_gguf else ckpt_bytes
            print(f"  {q} from {source}: peak RSS {common.fmt_bytes(c['peak_rss_bytes'])} "
                  f"({100 * c['peak_rss_bytes'] / size:.0f}% of it), {c['seconds']:.0f} s")

    if args.json:
        result = dict(date=datetime.date.today().isoformat(), machine=common.machine(),
                      llamacpp=lc, args=vars(args), membw=bw, engines=engines, rows=rows,
                      checkpoint=str(ckpt))
        common.pathlib.Path(args.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
