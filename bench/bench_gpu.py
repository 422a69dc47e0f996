#!/usr/bin/env python3
"""bench/bench_gpu.py - phimoec's CUDA builds against llama.cpp's CUDA build and transformers (bf16)
on one GPU, on Phi-3.5-MoE's full-width shapes with random weights.

  bench_gpu.py prepare [--bundle build/gpu-bench]    here: phimoec, nvcc, llama.cpp's source
  bench_gpu.py run [--bundle B] --out DIR            the GPU machine: nvcc, torch, transformers
  bench_gpu.py report DIR/bench-gpu.json             here: the docs/BENCHMARKS.md section
  bench_gpu.py selftest                              here, no GPU: every step but the timings

The model: hidden 4096, 16 experts of 6400 (top 2), 32/8 heads of 128, vocabulary 32064 (the CPU
benchmark's config, bench/common.py: bench_config), with --layers L1,L2 layers (default 1,2): the
time per layer is the difference, and every figure "at 32 layers" is extrapolated from the two
builds (time per token at L1 + (32 - L1) x time per layer), as are the bytes a decoded token reads.

prepare (where phimoec is) writes the bundle that travels to the GPU machine:
  model/        the config of each layer count, the synthetic tokenizer (bench/common.py)
  projects.tar.xz  projects/: `phimoec compile --target sm_90 --quant Q --emit-project` for
                each quant and layer count (a quant that phimoec refuses, or whose project does
                not build, is skipped, with the reason), each with phimoe-bin built here by the
                project's own CMakeLists (nvcc, static CUDA runtime); one solid archive, which
                the run unpacks into its work directory
  tools/        phimoe-pack (built from the same project) and copy_bw (bench/gpu/copy_bw.cu)
  llama/        bench/llamacpp_cuda.sh pack: llama.cpp's source (the llama-cpp-python sdist of
                bench/llamacpp.sh, without docs/models/tests) and, when built here, its CUDA build
                of llama-bench + llama-quantize (sm_90, shared libraries, stripped)
  manifest.json what was prepared, from which commit, and what was skipped

Before prepare, where the llama.cpp source is (bench/llamacpp.sh), build llama.cpp's CUDA tools
once (long on 2 cores; incremental): `bench/llamacpp_cuda.sh build
~/.cache/phimoec/llama.cpp-0.3.36/src ~/.cache/phimoec/llama.cpp-0.3.36/cuda-sm90/build`.
Without it the run builds them there.

run (on the GPU machine) then, writing DIR/bench-gpu.json and DIR/bench-gpu.md after every step:
  1. checks the prebuilt binaries (phimoe-bin, phimoe-pack, copy_bw, llama-bench) and builds there
     whatever does not run (the projects with CMake; llama.cpp from its source in the background);
  2. measures the copy bandwidth (copy_bw: cudaMemcpy device to device over 2 GiB, bytes read +
     written; torch's copy if copy_bw cannot run);
  3. makes the random checkpoint (bf16 safetensors, one shard per layer, torch on the GPU, seeded)
     and a view of it per layer count (config + index over the shards it needs);
  4. for each quant (q4k, q8_0, bf16): packs both layer counts (bench/gpu/parallel_pack.py: one
     phimoe-pack process per core on shares of the plan, the smaller pack copied out of the
     larger; byte-identical to phimoe-pack); times `phimoe-bin bench` (pp512, pp2048, tg128, each
     from an empty context as llama-bench measures them; process-level timing if the binary has
     no bench subcommand, said in the notes); llama.cpp: bf16 GGUFs of both views once
     (bench/gguf_convert.py), llama-quantize --pure at phimoec's tensor types (bench_cpu.py's
     matching), `llama-bench -ngl 99` with the same tests; deletes the packs and GGUFs;
     for the quants of --pdl (default q4k), decode again with PHIMOE_CUDA_PDL=1 (engine
     ours/Q+pdl: programmatic dependent launch), for those of --float-gemv (default q4k) with
     PHIMOE_CUDA_DP4A=0 (engine ours/Q+float: q4_K GEMVs on float inputs, not the staged
     fixed point of kernels.cuh's stage_for), for those of --apart (default q4k) with
     PHIMOE_CUDA_COMBINE=kernel, PHIMOE_CUDA_NORM=apart and PHIMOE_CUDA_QKV_ROPE=apart
     (engine ours/Q+apart: the launches that last blocks save, apart: flash-decoding's merge,
     the norms after o_proj and after the MoE, the heads' RoPE and KV write after the q/k/v
     GEMV);
     for those of --profile (default q4k), the
     larger build's bench once more under PHIMOE_CUDA_PROFILE (profile_phimoe: where the
     device time goes, kernel by kernel; the report sets the kernel spans of a forward
     against the timed forward with graphs: the rest is time between kernels);
  5. transformers in bf16 on the GPU: the same prompts and decode.
The roofline of decode: the weight bytes a decoded token reads at 32 layers (attention, router,
norms, 2 of the 16 experts, LM head, one embedding row; each in the storage of the engine's own
file: pack-plan.json for ours, the GGUF for llama.cpp) over the copy bandwidth.

The GPU session's command (device `run`, carry ["build/gpu-bench"], timeout_s 540; then give_back):

  set -o pipefail; export PYTHONUNBUFFERED=1; python3 bench/bench_gpu.py run --bundle build/gpu-bench --out $OUT --deadline-s 420 2>&1 | tee $OUT/bench-gpu.log

Then here: python bench/bench_gpu.py report <files_at>/bench-gpu.json (the docs/BENCHMARKS.md
section). docs/cuda.md ("GPU benchmark") has the time each step should take.
"""
import argparse
import concurrent.futures
import datetime
import json
import lzma
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402  (stdlib only at import; torch/transformers are imported where used)
sys.path.insert(0, str(HERE / "gpu"))
import parallel_pack  # noqa: E402

PROJECTS_ARCHIVE = "projects.tar.xz"  # prepare's projects/, as they travel

DEFAULT_BUNDLE = ROOT / "build" / "gpu-bench"
QUANTS = ("q4k", "q8_0", "bf16")
LLAMA_FTYPE = {"q4k": "Q4_K_M", "q8_0": "Q8_0", "bf16": None}
FULL_LAYERS = 32
SEED = 0

# The shapes: Phi-3.5-MoE's, and a tiny one for the selftest (every width a multiple of 256, as
# q4_K needs; head_dim 128 as bench_config's rope factors are).
SHAPES = {
    "full": dict(vocab_size=32064, hidden_size=4096, intermediate_size=6400,
                 num_attention_heads=32, num_key_value_heads=8, num_local_experts=16),
    "tiny": dict(vocab_size=512, hidden_size=256, intermediate_size=512,
                 num_attention_heads=2, num_key_value_heads=1, num_local_experts=4),
}

_T0 = time.time()


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')} +{time.time() - _T0:5.0f}s]", *args, file=sys.stderr,
          flush=True)


def sh(cmd, timeout=None, env=None, cwd=None, check=True):
    """Runs cmd; returns (CompletedProcess, seconds). Raises with the tail of stderr on failure."""
    cmd = [str(c) for c in cmd]
    log("$", " ".join(cmd) if len(" ".join(cmd)) < 400 else " ".join(cmd)[:400] + " ...")
    t = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=cwd)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{cmd[0]}: timed out after {timeout} s") from e
    secs = time.time() - t
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)[:300]} failed ({proc.returncode}):\n"
                           f"{(proc.stderr or '')[-3000:]}{(proc.stdout or '')[-1000:]}")
    return proc, secs


# ----------------------------------------------------------------------------- the model

def model_config(shape, layers):
    """config.json (a dict) of the benchmark model with `layers` layers: bench_config's
    Phi-3.5-MoE settings at the given shape. Needs transformers (prepare side only)."""
    cfg = common.bench_config(layers).to_dict()
    cfg.update(SHAPES[shape])
    cfg["num_hidden_layers"] = layers
    cfg["dtype"] = "bfloat16"
    cfg["architectures"] = ["PhimoeForCausalLM"]
    if shape != "full":
        cfg["bos_token_id"], cfg["eos_token_id"] = 1, 2
    return cfg


def tensor_shapes(cfg, layers=None):
    """{name: shape} of every checkpoint tensor, in transformers' names, for `layers` layers
    (default: the config's)."""
    layers = cfg["num_hidden_layers"] if layers is None else layers
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    shapes = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h],
              "model.norm.bias": [h], "lm_head.weight": [v, h], "lm_head.bias": [v]}
    for layer in range(layers):
        shapes.update(layer_tensor_shapes(cfg, layer))
    assert cfg.get("attention_bias", True) and cfg.get("lm_head_bias", True)
    return shapes


def layer_tensor_shapes(cfg, layer):
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    heads, kv, experts = (cfg["num_attention_heads"], cfg["num_key_value_heads"],
                          cfg["num_local_experts"])
    d = h // heads
    p = f"model.layers.{layer}."
    shapes = {}
    for norm in ("input_layernorm", "post_attention_layernorm"):
        shapes[p + norm + ".weight"] = shapes[p + norm + ".bias"] = [h]
    for proj, rows in (("q", heads * d), ("k", kv * d), ("v", kv * d)):
        shapes[p + f"self_attn.{proj}_proj.weight"] = [rows, h]
        shapes[p + f"self_attn.{proj}_proj.bias"] = [rows]
    shapes[p + "self_attn.o_proj.weight"] = [h, heads * d]
    shapes[p + "self_attn.o_proj.bias"] = [h]
    shapes[p + "block_sparse_moe.gate.weight"] = [experts, h]
    for e in range(experts):
        q = p + f"block_sparse_moe.experts.{e}."
        shapes[q + "w1.weight"] = shapes[q + "w3.weight"] = [inter, h]
        shapes[q + "w2.weight"] = [h, inter]
    return shapes


def write_header_only(path, cfg):
    """A checkpoint with the real safetensors header and no data (a sparse file): enough for
    phimoec --emit-project, which reads only headers."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    header, offset = {}, 0
    for name, shape in sorted(tensor_shapes(cfg).items()):
        size = 2
        for n in shape:
            size *= n
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path / "model.safetensors", "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        f.truncate(8 + len(text) + offset)


# ----------------------------------------------------------------------------------- prepare

def prepare(args):
    bundle = pathlib.Path(args.bundle).resolve()
    layers = [int(x) for x in args.layers.split(",")]
    quants = args.quants.split(",")
    if len(layers) != 2 or not 0 < layers[0] < layers[1]:
        sys.exit("--layers: two layer counts L1 < L2")
    if not common.PHIMOEC.is_file():
        sys.exit(f"{common.PHIMOEC} not found (PHIMOE_BUILD_DIR)")
    if bundle.exists():
        shutil.rmtree(bundle)
    (bundle / "model").mkdir(parents=True)
    (bundle / "projects").mkdir()
    (bundle / "tools").mkdir()
    now = datetime.datetime.now(datetime.timezone.utc)
    manifest = dict(created=now.isoformat(timespec="seconds"),
                    shape=args.shape, layers=layers, quants=[], skipped={},
                    commit=git_commit(), phimoec=str(common.PHIMOEC), projects={})
    common.write_synthetic_tokenizer(bundle / "model", SHAPES[args.shape]["vocab_size"])
    with tempfile.TemporaryDirectory(dir=bundle.parent) as tmp:
        for n in layers:
            cfg = model_config(args.shape, n)
            (bundle / "model" / f"config-L{n}.json").write_text(json.dumps(cfg, indent=2) + "\n")
            src = pathlib.Path(tmp) / f"L{n}"
            write_header_only(src, cfg)
            for q in quants:
                if q in manifest["skipped"]:
                    continue
                out = bundle / "projects" / f"{q}-L{n}"
                proc, _ = sh([common.PHIMOEC, "compile", src, "--target", args.arch, "--quant", q,
                              "--emit-project", out], check=False)
                if proc.returncode != 0:
                    reason = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
                    if not common.quant_unsupported(proc.stderr) and "cuda" not in reason.lower():
                        raise RuntimeError(f"phimoec --quant {q} failed:\n{proc.stderr[-3000:]}")
                    log(f"skipping {q}: {reason}")
                    manifest["skipped"][q] = reason
                    shutil.rmtree(out, ignore_errors=True)
                    continue
                # (max_tokens: the prompt chunk, which the report puts beside llama.cpp's)
                manifest["projects"][f"{q}-L{n}"] = dict(quant=q, layers=n, max_tokens=json.loads(
                    (out / "phimoec.json").read_text())["max_tokens"])
            (src / "model.safetensors").unlink()
    manifest["quants"] = [q for q in quants if q not in manifest["skipped"]]
    if not manifest["projects"]:
        sys.exit("no project could be emitted")

    # Binaries, built here (static CUDA runtime; the GPU machine's newer glibc runs them). A
    # quant whose project does not build is skipped (it would not build there either).
    if args.build:
        jobs = os.cpu_count() or 2
        for name in list(manifest["projects"]):
            quant = manifest["projects"][name]["quant"]
            if quant in manifest["skipped"]:
                continue
            project = bundle / "projects" / name
            build = pathlib.Path(tmp_build_dir(bundle, name))
            # (the selftest's tiny shape: the first layer count's phimoe-bin of each quant,
            # to see that each builds)
            first = manifest["projects"][name]["layers"] == layers[0]
            targets = ["phimoe-bin"] if args.shape == "full" or first else []
            if not (bundle / "tools" / "phimoe-pack").exists():
                targets.append("phimoe-pack")
            if not targets:
                continue
            t = time.time()
            try:
                sh(["cmake", "-S", project, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
                    f"-DCMAKE_CUDA_COMPILER={args.cuda_home}/bin/nvcc"])
                sh(["nice", "-n", "15", "cmake", "--build", build, "-j", jobs, "--target",
                    *targets])
            except RuntimeError as e:
                err = [ln for ln in str(e).splitlines() if "error" in ln.lower()] or [str(e)]
                reason = f"its project does not build: {err[0][:300]}"
                log(f"skipping {quant}: {reason}")
                manifest["skipped"][quant] = reason
                for n in layers:
                    manifest["projects"].pop(f"{quant}-L{n}", None)
                    shutil.rmtree(bundle / "projects" / f"{quant}-L{n}", ignore_errors=True)
                shutil.rmtree(build, ignore_errors=True)
                continue
            manifest["projects"][name]["build_seconds_here"] = round(time.time() - t, 1)
            if "phimoe-bin" in targets:
                (project / "prebuilt").mkdir()
                shutil.copy2(build / "phimoe-bin", project / "prebuilt" / "phimoe-bin")
                sh(["strip", project / "prebuilt" / "phimoe-bin"])
            if "phimoe-pack" in targets:
                shutil.copy2(build / "phimoe-pack", bundle / "tools" / "phimoe-pack")
            shutil.rmtree(build)
        manifest["quants"] = [q for q in quants if q not in manifest["skipped"]]
        sh([f"{args.cuda_home}/bin/nvcc", "-O3", f"-arch={args.arch}", "-cudart", "static",
            HERE / "gpu" / "copy_bw.cu", "-o", bundle / "tools" / "copy_bw"])
    # The projects travel as one solid archive: they repeat their sources and third-party
    # headers, and their binaries share most of their bytes (31 MB of files were 2.7 MB so on
    # 2026-12-06), which leaves the carry room for llama.cpp's prebuilt tools and whole source.
    common.write_tar_xz(bundle / "projects", bundle / PROJECTS_ARCHIVE, arcname="projects",
                        preset=9 | lzma.PRESET_EXTREME)
    shutil.rmtree(bundle / "projects")
    if args.llama:
        sh(["bash", HERE / "llamacpp_cuda.sh", "pack", bundle / "llama"], timeout=900)
    tree = common.working_tree_bytes()
    if args.llama and tree + common.dir_bytes(bundle) > common.CARRY_LIMIT and \
            (bundle / "llama" / "llama-cuda.tar.xz").is_file():
        # The prebuilt tools stay; of the source, only what the GGUF conversion reads.
        log("over the carry limit: llama.cpp's source packed for the conversion only")
        sh(["bash", HERE / "llamacpp_cuda.sh", "pack-convert", bundle / "llama"])
        manifest["llama_source"] = "conversion only (no build there)"
    sizes = {str(p.relative_to(bundle)): p.stat().st_size for p in sorted(bundle.rglob("*"))
             if p.is_file()}
    manifest["working_tree_bytes"] = tree
    if tree + sum(sizes.values()) > common.CARRY_LIMIT:
        log(f"WARNING: working tree {tree / 2**20:.1f} MiB + bundle "
            f"{sum(sizes.values()) / 2**20:.1f} MiB is over the 64 MiB a device call carries")
    manifest["bytes"] = sum(sizes.values())
    manifest["largest"] = dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:8])
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    log(f"bundle {bundle}: {manifest['bytes'] / 2**20:.1f} MiB, working tree "
        f"{tree / 2**20:.1f} MiB (together under 64 MiB for the device call); quants "
        f"{manifest['quants']}, skipped {list(manifest['skipped'])}")
    for k, v in manifest["largest"].items():
        log(f"  {v / 2**20:8.2f} MiB  {k}")
    return manifest


def projects_dir(bundle, work):
    """The bundle's projects (prepare): its PROJECTS_ARCHIVE unpacked into work once (or a
    projects/ directory in the bundle, as older bundles had it)."""
    if (bundle / "projects").is_dir():
        return bundle / "projects"
    dest = work / "projects"
    if not dest.is_dir():
        archive = bundle / PROJECTS_ARCHIVE
        if not archive.is_file():
            sys.exit(f"{bundle}: neither projects/ nor {PROJECTS_ARCHIVE} (bench_gpu.py prepare)")
        part = work / "projects.part"
        shutil.rmtree(part, ignore_errors=True)
        common.extract_tar_xz(archive, part)
        (part / "projects").rename(dest)
        shutil.rmtree(part)
    return dest


def tmp_build_dir(bundle, name):
    return bundle.parent / f".gpu-bench-build-{name}"


def git_commit():
    try:
        return subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


# ------------------------------------------------------------------------ arithmetic (pure)

def split_bytes(tensors, n_experts, top_k, vocab):
    """{"layer": bytes per layer, "fixed": bytes outside the layers} that one decoded token reads,
    from [(name, bytes)] in either engine's names (layer tensors: model.layers.N. / blk.N.).
    Experts count top_k/n_experts, the embedding one row (common.decode_bytes)."""
    per_layer, fixed, layers = 0.0, 0.0, set()
    for name, nbytes in tensors:
        b = sum(common.decode_bytes([(name, nbytes)], n_experts, top_k, vocab).values())
        m = re.match(r"(?:model\.layers\.|blk\.)(\d+)\.", name)
        if m:
            layers.add(int(m.group(1)))
            per_layer += b
        else:
            fixed += b
    n = max(len(layers), 1)
    return dict(layer=per_layer / n, fixed=fixed, layers=len(layers))


def bytes_at(split, layers):
    return split["fixed"] + layers * split["layer"]


def extrapolate(tps1, tps2, l1, l2, target=FULL_LAYERS):
    """Tokens/s at `target` layers from tokens/s at l1 and l2 layers: the time per token is
    linear in the layer count (fixed part + layers x per-layer part)."""
    if not tps1 or not tps2:
        return None
    s1, s2 = 1.0 / tps1, 1.0 / tps2
    per_layer = (s2 - s1) / (l2 - l1)
    s = s1 + (target - l1) * per_layer
    return dict(tokens_per_s=1.0 / s if s > 0 else None, s_per_layer=per_layer,
                s_fixed=s1 - l1 * per_layer)


# --------------------------------------------------------------------------------------- run

class Runner:
    """The GPU machine's side. Every step records into self.result and rewrites the outputs."""

    def __init__(self, args):
        self.args = args
        self.bundle = pathlib.Path(args.bundle).resolve()
        self.out = pathlib.Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.manifest = json.loads((self.bundle / "manifest.json").read_text())
        self.layers = self.manifest["layers"]
        self.deadline = _T0 + args.deadline_s
        self.work = pathlib.Path(args.work) if args.work else pick_work_dir()
        self.work.mkdir(parents=True, exist_ok=True)
        self.projects = projects_dir(self.bundle, self.work)
        self.dry = args.dry
        self.jobs = os.cpu_count() or 2
        self.prompts = [int(p) for p in args.prompts.split(",")]
        self.result = dict(
            kind="selftest (no GPU: timings are placeholders, not measurements)" if self.dry
            else "measured",
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            command=" ".join(sys.argv), bundle=self.manifest, work=str(self.work),
            layers=self.layers, target_layers=FULL_LAYERS, prompts=self.prompts, gen=args.gen,
            reps=args.reps, stages={}, notes=[], errors=[], engines={}, bandwidth=None,
            host=host_info())
        self.write()

    # -- bookkeeping
    def left(self):
        return self.deadline - time.time()

    def tmo(self, cap):
        """A step's timeout: at most cap, and not much past the deadline."""
        return max(30, min(cap, self.left() + 60))

    def stage(self, name, t0):
        self.result["stages"][name] = round(time.time() - t0, 1)
        self.write()

    def note(self, text):
        log("NOTE:", text)
        self.result["notes"].append(text)
        self.write()

    def error(self, where, e):
        text = f"{where}: {e}"
        log("ERROR:", text[-2000:])
        self.result["errors"].append(text[-4000:])
        self.write()

    def write(self):
        tmp = self.out / "bench-gpu.json.tmp"
        tmp.write_text(json.dumps(self.result, indent=1, default=str) + "\n")
        tmp.rename(self.out / "bench-gpu.json")
        (self.out / "bench-gpu.md").write_text(render_markdown(self.result))

    def engine(self, key):
        return self.result["engines"].setdefault(key, {})

    # -- 1. tools
    def tools(self):
        t0 = time.time()
        self.pack_tool = self.bundle / "tools" / "phimoe-pack"
        self.bins = {}
        fallback = []
        for name in self.manifest["projects"]:
            exe = self.projects / name / "prebuilt" / "phimoe-bin"
            ok = exe.is_file() and self.runs([exe, "--help"])
            self.bins[name] = exe if ok else None
            if not ok:
                fallback.append(name)
        if not (self.pack_tool.is_file() and self.runs([self.pack_tool], ok_codes=(1, 2))):
            self.pack_tool = None
            fallback = sorted(set(fallback) | {next(iter(self.manifest["projects"]))})
        # llama.cpp: the prebuilt tools, else a build from the carried source (in the background).
        self.llama_build = None
        self.llama_env = dict(os.environ)
        self.llama_bin = self.unpack_llama()
        self.gguf_py = self.unpack_llama_src()
        if self.args.llama_bin:
            self.llama_bin = pathlib.Path(self.args.llama_bin)
        elif not self.llama_ok() and not self.dry:
            self.llama_bin = None
            if self.gguf_py and (self.gguf_py / "CMakeLists.txt").is_file():
                self.note("prebuilt llama.cpp tools do not run here: building them from the "
                          f"carried source with {self.jobs} jobs (in the background)")
                build = self.work / "llama-build"
                self.llama_build = subprocess.Popen(
                    ["bash", HERE / "llamacpp_cuda.sh", "build", self.gguf_py, build],
                    stdout=open(self.work / "llama-build.log", "w"), stderr=subprocess.STDOUT,
                    env=dict(os.environ, LLAMA_CPP_JOBS=str(max(2, self.jobs - 4))))
                self.llama_build_dir = build
                self.llama_build_t0 = time.time()
            else:
                self.note("no llama.cpp tools that run and no source to build them: "
                          "no llama.cpp rows")
        # Our projects: built here when the prebuilt binaries do not run (in parallel).
        if fallback and not self.dry:
            self.note(f"building phimoe-bin here for {fallback} (prebuilt missing or not running)")
            with concurrent.futures.ThreadPoolExecutor(len(fallback)) as ex:
                for name, exe in zip(fallback, ex.map(self.build_project, fallback)):
                    self.bins[name] = exe
        self.result["tools"] = dict(
            phimoe_bin={k: str(v) if v else None for k, v in self.bins.items()},
            phimoe_pack=str(self.pack_tool), llama_bin=str(self.llama_bin),
            llama_building=bool(self.llama_build))
        self.stage("tools", t0)

    def runs(self, cmd, ok_codes=(0,)):
        try:
            proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                                  timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            log(f"{cmd[0]}: {e}")
            return False
        if proc.returncode not in ok_codes:
            log(f"{cmd[0]}: exit {proc.returncode}: {proc.stderr[-500:]}")
            return False
        return True

    def build_project(self, name):
        project = self.projects / name
        build = self.work / f"build-{name}"
        try:
            sh(["cmake", "-S", project, "-B", build, "-DCMAKE_BUILD_TYPE=Release"])
            _, secs = sh(["cmake", "--build", build, "-j", self.jobs, "--target", "phimoe-bin",
                          "phimoe-pack"])
            self.result.setdefault("built_here", {})[name] = round(secs, 1)
            if self.pack_tool is None:
                self.pack_tool = build / "phimoe-pack"
            return build / "phimoe-bin"
        except RuntimeError as e:
            self.error(f"building {name}", e)
            return None

    def unpack_llama(self):
        tar = self.bundle / "llama" / "llama-cuda.tar.xz"
        if not tar.is_file():
            return None
        sh(["tar", "-C", self.work, "-xJf", tar])
        d = self.work / "llama-cuda"
        info = d / "build-info.txt"
        if info.is_file():
            self.result["llama_build_info"] = info.read_text()
        return d / "bin"

    def unpack_llama_src(self):
        tar = self.bundle / "llama" / "llama-src.tar.xz"
        if not tar.is_file():
            self.note("no llama.cpp source in the bundle: no GGUF conversion, no llama.cpp rows")
            return None
        sh(["tar", "-C", self.work, "-xJf", tar])
        src = self.work / "llama-src"
        self.result["llama_commit"] = (src / "llama.cpp-commit").read_text().strip()
        return src

    def llama_lib_path(self, bin_dir):
        """LD_LIBRARY_PATH for llama.cpp's CUDA build: its own libraries, then cuBLAS and the CUDA
        runtime from the toolkit or from the nvidia-* wheels next to torch."""
        dirs = [str(bin_dir)]
        for pattern in ("libcublas.so.*", "libcudart.so.*"):
            for d in cuda_lib_dirs():
                if list(pathlib.Path(d).glob(pattern)):
                    dirs.append(d)
                    break
        old = os.environ.get("LD_LIBRARY_PATH")
        return ":".join(dict.fromkeys(dirs + ([old] if old else [])))

    def llama_ok(self):
        if not self.llama_bin:
            return False
        self.llama_env["LD_LIBRARY_PATH"] = self.llama_lib_path(self.llama_bin)
        try:
            proc = subprocess.run([str(self.llama_bin / "llama-bench"), "--list-devices"],
                                  capture_output=True, text=True, timeout=60, env=self.llama_env)
        except (OSError, subprocess.TimeoutExpired) as e:
            log(f"llama-bench: {e}")
            return False
        log(f"llama-bench --list-devices: exit {proc.returncode}\n{proc.stdout[-800:]}"
            f"{proc.stderr[-800:]}")
        return proc.returncode == 0 and "CUDA" in proc.stdout + proc.stderr

    def wait_llama_build(self):
        if not self.llama_build:
            return self.llama_bin is not None
        left = max(self.left() - 60, 1)
        try:
            rc = self.llama_build.wait(timeout=left)
        except subprocess.TimeoutExpired:
            self.llama_build.kill()
            self.note("the llama.cpp build did not finish in time: no llama.cpp rows")
            self.llama_build = None
            return False
        self.result["stages"]["llama_build_there"] = round(time.time() - self.llama_build_t0, 1)
        self.llama_build = None
        if rc != 0:
            self.error("llama.cpp build", (self.work / "llama-build.log").read_text()[-3000:])
            return False
        self.llama_bin = self.llama_build_dir / "bin"
        self.result["tools"]["llama_bin"] = str(self.llama_bin)
        return self.llama_ok()

    # -- 2. bandwidth
    def bandwidth(self):
        t0 = time.time()
        bw = None
        if self.dry:
            bw = dict(source="selftest placeholder", memcpy_gbs=1000.0)
        else:
            for exe in (self.bundle / "tools" / "copy_bw", self.work / "copy_bw"):
                if not exe.is_file() and exe.parent == self.work:
                    try:
                        sh(["nvcc", "-O3", "-arch=sm_90", "-cudart", "static",
                            HERE / "gpu" / "copy_bw.cu", "-o", exe])
                    except (RuntimeError, OSError) as e:
                        self.error("nvcc copy_bw.cu", e)
                        continue
                try:
                    proc, _ = sh([exe, "2048", "10"], timeout=120)
                    bw = dict(json.loads(proc.stdout), source=str(exe.name))
                    break
                except (RuntimeError, OSError, ValueError) as e:
                    self.error("copy_bw", e)
            if bw is None:
                bw = torch_copy_bw()
        bw["roofline_gbs"] = bw["memcpy_gbs"]
        self.result["bandwidth"] = bw
        log(f"bandwidth: {bw}")
        self.stage("bandwidth", t0)

    # -- 3. checkpoint
    def checkpoint(self):
        t0 = time.time()
        l2 = self.layers[-1]
        cfg = json.loads((self.bundle / "model" / f"config-L{l2}.json").read_text())
        self.cfg = cfg
        shards = self.work / "shards"
        if shards.exists():
            shutil.rmtree(shards)
        shards.mkdir()
        import torch
        device = "cuda" if torch.cuda.is_available() and not self.dry else "cpu"
        gen = torch.Generator(device=device).manual_seed(SEED)
        groups = {"model-base.safetensors": {k: v for k, v in tensor_shapes(cfg, 0).items()}}
        for layer in range(l2):
            groups[f"model-layer-{layer:03d}.safetensors"] = layer_tensor_shapes(cfg, layer)
        weight_map = {}
        for fname, shapes in groups.items():
            write_random_safetensors(shards / fname, shapes, gen, device)
            weight_map.update({n: fname for n in shapes})
        self.views = {}
        for n in self.layers:
            view = self.work / f"view-L{n}"
            if view.exists():
                shutil.rmtree(view)
            view.mkdir()
            names = tensor_shapes(json.loads(
                (self.bundle / "model" / f"config-L{n}.json").read_text()))
            wm = {k: weight_map[k] for k in sorted(names)}
            for fname in sorted(set(wm.values())):
                (view / fname).symlink_to(shards / fname)
            total = sum(common.dir_bytes(shards / f) for f in set(wm.values()))
            (view / "model.safetensors.index.json").write_text(json.dumps(
                {"metadata": {"total_size": total}, "weight_map": wm}, indent=1))
            shutil.copy2(self.bundle / "model" / f"config-L{n}.json", view / "config.json")
            for f in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copy2(self.bundle / "model" / f, view / f)
            self.views[n] = view
        size = common.dir_bytes(shards)
        self.result["checkpoint"] = dict(bytes=size, device=device, seed=SEED)
        log(f"checkpoint: {size / 1e9:.2f} GB in {time.time() - t0:.0f} s")
        self.stage("checkpoint", t0)

    # -- 4. per quant
    def pack(self, quant):
        """Both layer counts' builds ready to time: {L: directory with phimoe-bin and its
        weights.phw}, which the binary finds next to itself. A quantized plan is packed by
        parallel_pack (phimoe-pack on every core; the smaller model's pack copied out of the
        larger's), anything else, or when that fails, by one phimoe-pack per layer count."""
        t0 = time.time()
        dirs, plans = {}, {}
        for n in self.layers:
            name = f"{quant}-L{n}"
            dirs[n] = self.work / f"run-{name}"
            dirs[n].mkdir(exist_ok=True)
            plans[n] = self.projects / name / "pack-plan.json"
            if self.bins.get(name):
                shutil.copy2(self.bins[name], dirs[n] / "phimoe-bin")
        storages = {w["storage"] for w in json.loads(plans[self.layers[-1]].read_text())
                    ["weights"]}
        method = "phimoe-pack"
        if storages & {"q8_0", "q4k", "q6k"} and not self.args.serial_pack:
            try:
                big, small = self.layers[-1], self.layers[0]
                parallel_pack.parallel_pack(
                    self.pack_tool, plans[big], self.views[big], dirs[big] / "weights.phw",
                    parallel_pack.checkpoint_values(self.views[big]), self.jobs,
                    unit_values=self.args.unit_values, log=log)
                if not parallel_pack.derive_pack(plans[big], dirs[big] / "weights.phw",
                                                 plans[small], dirs[small] / "weights.phw"):
                    parallel_pack.parallel_pack(
                        self.pack_tool, plans[small], self.views[small],
                        dirs[small] / "weights.phw",
                        parallel_pack.checkpoint_values(self.views[small]), self.jobs,
                        unit_values=self.args.unit_values, log=log)
                method = "parallel_pack"
            except Exception as e:  # noqa: BLE001 - the plain way below
                self.error(f"parallel_pack {quant} (packing with phimoe-pack instead)", e)
        if method == "phimoe-pack":
            def one(n):
                sh([self.pack_tool, plans[n], self.views[n], dirs[n] / "weights.phw"])
            with concurrent.futures.ThreadPoolExecutor(len(self.layers)) as ex:
                list(ex.map(one, self.layers))
        self.engine(f"ours/{quant}").update(pack_method=method, pack_bytes={
            n: (d / "weights.phw").stat().st_size for n, d in dirs.items()})
        self.stage(f"pack_{quant}", t0)
        return dirs

    def plan_split(self, quant, n):
        plan = json.loads((self.projects / f"{quant}-L{n}" / "pack-plan.json")
                          .read_text())
        return split_bytes([(w["name"], w["bytes"]) for w in plan["weights"]],
                           self.cfg["num_local_experts"], self.cfg["num_experts_per_tok"],
                           self.cfg["vocab_size"]), sorted({w["storage"] for w in plan["weights"]})

    def bench_ours(self, quant, dirs):
        t0 = time.time()
        e = self.engine(f"ours/{quant}")
        split, storages = self.plan_split(quant, self.layers[-1])
        e.update(engine="phimoec", quant=quant, storages=storages, bytes_split=split, runs={})
        for n in self.layers:
            exe = dirs[n] / "phimoe-bin"
            if not exe.is_file() and not self.dry:
                e["runs"][n] = dict(error="no phimoe-bin")
                continue
            e["runs"][n] = self.time_phimoe(exe)
            self.write()
        # Decode again in variants that the environment selects: programmatic dependent launch
        # (launch.h: off by default until measured; the next kernel's launch overlaps the end
        # of the one before), and q4_K GEMVs on float inputs instead of staged fixed point
        # (kernels.cuh, stage_for: on by default, measured here against its alternative), and
        # the launches that last blocks save as launches of their own (flash-decoding's merge,
        # the norms after o_proj and after the MoE, the RoPE and KV write after the q/k/v GEMV).
        variants = [("pdl", {"PHIMOE_CUDA_PDL": "1"}, self.args.pdl),
                    ("float", {"PHIMOE_CUDA_DP4A": "0"}, self.args.float_gemv),
                    ("apart", {"PHIMOE_CUDA_COMBINE": "kernel", "PHIMOE_CUDA_NORM": "apart",
                               "PHIMOE_CUDA_QKV_ROPE": "apart"},
                     self.args.apart)]
        for suffix, variables, quants in variants:
            if quant not in quants.split(",") or self.dry:
                continue
            v = self.engine(f"ours/{quant}+{suffix}")
            v.update(engine="phimoec", quant=quant, storages=storages, bytes_split=split,
                     runs={}, env=" ".join(f"{k}={x}" for k, x in variables.items()))
            for n in self.layers:
                exe = dirs[n] / "phimoe-bin"
                if not exe.is_file() or self.left() < 45:
                    break
                try:
                    v["runs"][n] = self.time_phimoe(exe, env=dict(os.environ, **variables),
                                                    only={f"tg{self.args.gen}"})
                except Exception as ex:  # noqa: BLE001 - the default launches' rows stand
                    self.error(f"ours/{quant}+{suffix}", ex)
                    break
                self.write()
        exe = dirs.get(self.layers[-1], pathlib.Path("-")) / "phimoe-bin"
        if quant in self.args.profile.split(",") and exe.is_file() and not self.dry:
            if self.left() < 60:
                self.note(f"out of time before the profile of ours/{quant}")
            else:
                try:
                    e["profile"] = self.profile_phimoe(exe)
                except Exception as ex:  # noqa: BLE001 - the timings above stand
                    self.error(f"profile ours/{quant}", ex)
                self.write()
        self.stage(f"bench_ours_{quant}", t0)

    def profile_phimoe(self, exe):
        """PHIMOE_CUDA_PROFILE (runtime/include/phimoe_cuda/profile.h) of one build: a decode
        run (-p 0 -n G, G <= 64) and a prefill run (-p P, the first prompt length), one
        repetition each (and bench's warm-up), eager (profiling turns the decode graphs off).
        Per phase: every kernel's summed spans by launcher (with its shapes), the forwards (the
        embedding's launches: one per forward), and that run's tokens/s."""
        res = {}
        for phase, p, n in (("decode", 0, min(self.args.gen, 64)),
                            ("prefill", self.prompts[0], 0)):
            path = self.work / f"profile-{exe.parent.name}-{phase}.json"
            path.unlink(missing_ok=True)
            proc, _ = sh([exe, "bench", "-p", p, "-n", n, "-r", 1, "--json"],
                         env=dict(os.environ, PHIMOE_CUDA_PROFILE=str(path)),
                         timeout=self.tmo(120))
            j = json.loads(proc.stdout.strip().splitlines()[-1])
            prof = json.loads(path.read_text())
            prof["tokens_per_s"] = (j["tg"] if n else j["pp"])["tokens_per_s"]
            prof["forwards"] = sum(k["launches"] for k in prof["kernels"]
                                   if k["kernel"] == "embed_kernel")
            res[phase] = prof
        return res

    def time_phimoe(self, exe, env=None, only=None):
        """{pp512: {tokens_per_s, stddev}, ..., tg128: ..., method} of one build: its `bench`
        subcommand (the CPU build's JSON line; pp and tg from an empty context, as llama-bench
        measures them), else process-level timing. `only`: the tests to run (default all)."""
        if self.dry:
            return dict(placeholder_tokens_per_s(self.prompts, self.args.gen), method="dry")
        res = {}
        runs = [(f"pp{p}", p, 0) for p in self.prompts] + [
            (f"tg{self.args.gen}", 0, self.args.gen)]
        for key, p, n in [r for r in runs if only is None or r[0] in only]:
            proc, _ = sh([exe, "bench", "-p", p, "-n", n, "-r", self.args.reps, "--json"],
                         check=False, timeout=self.tmo(300), env=env)
            if proc.returncode != 0:
                if re.search(r"unknown option|usage", proc.stderr, re.I) and not res:
                    self.note(f"{exe.parent.name}: phimoe-bin has no `bench` subcommand "
                              f"({proc.stderr.strip().splitlines()[0][:200]}): process-level "
                              "timing instead (differences of --tokens runs' wall times)")
                    return self.time_process(exe)
                raise RuntimeError(f"phimoe-bin bench failed: {proc.stderr[-2000:]}")
            j = json.loads(proc.stdout.strip().splitlines()[-1])
            part = j["pp"] if p else j["tg"]
            res[key] = dict(tokens_per_s=part["tokens_per_s"], stddev=part["stddev"])
        res["method"] = "phimoe-bin bench"
        return res

    def time_process(self, exe):
        """Fallback timing from process wall times (each run uploads the weights again, which
        the differences cancel): decode = ((-n G+1) - (-n 1)) / G from a 1-token prompt; prefill
        of P = (P tokens - 1 token, both -n 0) / (P - 1). The 1-token runs are the best of 2."""
        import random
        rnd = random.Random(1)
        vocab = self.cfg["vocab_size"]

        def wall(tokens, n, reps=1):
            ids = ",".join(str(rnd.randrange(3, vocab)) for _ in range(tokens))
            return min(sh([exe, "--tokens", ids, "-n", n], timeout=self.tmo(300))[1]
                       for _ in range(reps))
        wall(1, 0)  # warm-up: page cache, driver
        res, base = {}, wall(1, 0, 2)
        for p in self.prompts:
            dt = wall(p, 0) - base
            res[f"pp{p}"] = dict(tokens_per_s=(p - 1) / dt if dt > 0 else None, stddev=None)
        g = self.args.gen
        dt = wall(1, g + 1) - wall(1, 1, 2)
        res[f"tg{g}"] = dict(tokens_per_s=g / dt if dt > 0 else None, stddev=None)
        res["method"] = "process wall time (no bench subcommand)"
        return res

    def gguf_bf16(self):
        """bf16 GGUFs of both views (llama.cpp's converter), in parallel. {L: path}."""
        t0 = time.time()
        env = dict(os.environ, PYTHONPATH=f"{self.gguf_py}:{self.gguf_py}/gguf-py",
                   NO_LOCAL_GGUF="1")

        def one(n):
            out = self.work / f"L{n}-bf16.gguf"
            sh([sys.executable, HERE / "gguf_convert.py", self.views[n], "--outtype", "bf16",
                "--outfile", out], env=env, cwd=self.gguf_py)
            return n, out
        with concurrent.futures.ThreadPoolExecutor(len(self.layers)) as ex:
            self.gguf = dict(ex.map(one, self.layers))
        self.stage("gguf_bf16", t0)
        return self.gguf

    def gguf_tensors(self, path):
        code = ("import json, sys\nfrom gguf import GGUFReader\nr = GGUFReader(sys.argv[1])\n"
                "print(json.dumps([(t.name, t.tensor_type.name, [int(x) for x in t.shape], "
                "int(t.n_bytes)) for t in r.tensors]))")
        env = dict(os.environ, PYTHONPATH=f"{self.gguf_py}/gguf-py", NO_LOCAL_GGUF="1")
        proc, _ = sh([sys.executable, "-c", code, path], env=env)
        return [tuple(t) for t in json.loads(proc.stdout)]

    def llama_quant(self, quant):
        """llama-quantize --pure at phimoec's types (bench_cpu.py's matching). {L: path}."""
        if quant == "bf16":
            return dict(self.gguf)
        t0 = time.time()

        def one(n):
            src = self.gguf[n]
            args = llama_type_args(self.gguf_tensors(src), quant)
            dst = self.work / f"L{n}-{quant}.gguf"
            sh([self.llama_bin / "llama-quantize", "--pure", *args, src, dst, LLAMA_FTYPE[quant],
                max(1, self.jobs // len(self.layers))], env=self.llama_env)
            return n, dst
        with concurrent.futures.ThreadPoolExecutor(len(self.layers)) as ex:
            out = dict(ex.map(one, self.layers))
        self.stage(f"llama_quantize_{quant}", t0)
        return out

    def bench_llama(self, quant, ggufs):
        t0 = time.time()
        e = self.engine(f"llama.cpp/{quant}")
        lt = self.gguf_tensors(ggufs[self.layers[-1]])
        split = split_bytes([(n, b) for n, _, _, b in lt], self.cfg["num_local_experts"],
                            self.cfg["num_experts_per_tok"], self.cfg["vocab_size"])
        e.update(engine="llama.cpp", quant=quant, bytes_split=split, runs={},
                 storages=sorted({f"{common.role_of(n)}:{t}" for n, t, _, _ in lt}))
        for n in self.layers:
            if self.dry:
                e["runs"][n] = dict(placeholder_tokens_per_s(self.prompts, self.args.gen),
                                    method="dry")
                continue
            cmd = [self.llama_bin / "llama-bench", "-m", ggufs[n], "-ngl", "99", "-p",
                   ",".join(map(str, self.prompts)), "-n", self.args.gen, "-r", self.args.reps,
                   "-o", "json"]
            proc, _ = sh(cmd, env=self.llama_env, timeout=self.tmo(400))
            runs = {}
            for r in json.loads(proc.stdout):
                key = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
                runs[key] = dict(tokens_per_s=r["avg_ts"], stddev=r["stddev_ts"])
                e["info"] = {k: r.get(k) for k in (
                    "build_commit", "gpu_info", "backends", "model_type", "model_size",
                    "n_batch", "n_ubatch", "flash_attn", "type_k", "type_v", "n_gpu_layers",
                    "use_mmap", "n_threads")}
            runs["method"] = "llama-bench"
            e["runs"][n] = runs
            self.write()
        self.stage(f"bench_llama_{quant}", t0)

    # -- 5. transformers
    def bench_transformers(self):
        t0 = time.time()
        import torch
        import transformers
        e = self.engine("transformers/bf16")
        split, storages = self.plan_split("bf16", self.layers[-1]) if \
            f"bf16-L{self.layers[-1]}" in self.manifest["projects"] else (None, None)
        e.update(engine="transformers", quant="bf16", version=transformers.__version__,
                 torch=torch.__version__, bytes_split=split, runs={})
        device = "cuda" if torch.cuda.is_available() and not self.dry else "cpu"
        for n in self.layers:
            try:
                import accelerate  # noqa: F401  (from_pretrained's device_map needs it)
                place = dict(device_map=device)
            except ImportError:
                place = {}
            model = transformers.AutoModelForCausalLM.from_pretrained(
                self.views[n], dtype=torch.bfloat16, **place).to(device).eval()
            e["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
            runs = time_transformers(model, self.prompts, self.args.gen,
                                     min(self.args.reps, 2), device, self.cfg["vocab_size"])
            runs["method"] = "torch.cuda.synchronize + wall clock" if device == "cuda" else \
                "dry (CPU)"
            e["runs"][n] = runs
            del model
            if device == "cuda":
                torch.cuda.empty_cache()
            self.write()
        self.stage("bench_transformers", t0)

    # -- the whole run
    def llama_ready(self, wait):
        """Whether llama.cpp's tools can be used now; with wait, waits for a build there."""
        if self.llama_build and (wait or self.llama_build.poll() is not None):
            return self.wait_llama_build()
        return self.llama_build is None and self.llama_bin is not None

    def run_llama(self, quant):
        ggufs = {}
        try:
            ggufs = self.llama_quant(quant)
            self.bench_llama(quant, ggufs)
        except Exception as e:  # noqa: BLE001 - recorded; the next step runs
            self.error(f"llama.cpp {quant}", e)
        finally:
            if quant != "bf16":
                for p in ggufs.values():
                    p.unlink(missing_ok=True)

    def go(self):
        steps_total = time.time()
        try:
            self.tools()
            self.bandwidth()
            self.checkpoint()
        except Exception as e:  # noqa: BLE001 - recorded, nothing more can run
            self.error("set-up", repr(e))
            raise
        # llama.cpp's bf16 GGUFs are converted while the first quant is packed; nothing else
        # runs while anything is timed (except a llama.cpp build there, noted if so).
        conversion = None
        if self.gguf_py is not None:
            conversion = concurrent.futures.ThreadPoolExecutor(1).submit(self.gguf_bf16)
        deferred = []
        for quant in self.manifest["quants"]:
            if self.left() < 30:
                self.note(f"out of time before {quant}")
                break
            dirs = {}
            try:
                dirs = self.pack(quant)
                if conversion is not None:
                    conversion.exception()  # waits; its error is recorded below
                if self.llama_build:
                    self.note(f"ours/{quant} timed while llama.cpp was being built here")
                self.bench_ours(quant, dirs)
            except Exception as e:  # noqa: BLE001
                self.error(f"ours {quant}", e)
            finally:
                for d in dirs.values():
                    shutil.rmtree(d, ignore_errors=True)
            if conversion is None or self.left() < 30:
                continue
            if conversion.exception() is not None:
                self.error("GGUF conversion", conversion.exception())
                conversion = None
                continue
            if self.dry or self.llama_ready(wait=False):
                self.run_llama(quant)
            elif self.llama_build:
                deferred.append(quant)
        if deferred and self.llama_ready(wait=True):
            for quant in deferred:
                if self.left() < 30:
                    self.note(f"out of time before llama.cpp {quant}")
                    break
                self.run_llama(quant)
        if self.left() > 45 and not self.args.no_transformers:
            try:
                self.bench_transformers()
            except Exception as e:  # noqa: BLE001
                self.error("transformers", e)
        elif not self.args.no_transformers:
            self.note("out of time before transformers")
        self.result["stages"]["total"] = round(time.time() - steps_total, 1)
        self.result["finished"] = True
        self.write()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        log(f"done in {time.time() - _T0:.0f} s; {self.out}/bench-gpu.json")
        print(render_markdown(self.result))


def pick_work_dir():
    """The writable place with the most free space (the checkpoint, packs and GGUFs take about
    25 GB at the default 1 and 2 layers)."""
    best, free = None, -1
    for d in (os.environ.get("BENCH_GPU_WORK"), "/tmp", str(ROOT / "build"), "/root", "/var/tmp"):
        if not d:
            continue
        try:
            pathlib.Path(d).mkdir(parents=True, exist_ok=True)
            f = shutil.disk_usage(d).free
        except OSError:
            continue
        if f > free and os.access(d, os.W_OK):
            best, free = d, f
    log(f"work dir {best}: {free / 1e9:.1f} GB free")
    return pathlib.Path(best) / "phimoe-gpu-bench"


def cuda_lib_dirs():
    dirs = []
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    dirs += [f"{home}/lib64", f"{home}/lib", "/usr/local/cuda/lib64",
             "/usr/lib/x86_64-linux-gnu"]
    try:
        import site
        for sp in site.getsitepackages():
            dirs += sorted(str(p) for p in pathlib.Path(sp).glob("nvidia/*/lib"))
            dirs += sorted(str(p) for p in pathlib.Path(sp).glob("nvidia/cu*/lib"))
    except (ImportError, AttributeError):
        pass
    return [d for d in dict.fromkeys(dirs) if pathlib.Path(d).is_dir()]


def host_info():
    info = dict(machine=common.machine(), python=sys.version.split()[0])
    for cmd, key in ((["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
                       "clocks.max.mem", "--format=csv,noheader"], "gpu"),
                     (["nvcc", "--version"], "nvcc")):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
            info[key] = out.strip().splitlines()[-1] if out.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            info[key] = None
    try:
        import torch
        import transformers
        info["torch"], info["transformers"] = torch.__version__, transformers.__version__
    except ImportError:
        pass
    return info


def write_random_safetensors(path, shapes, gen, device):
    """bf16 tensors, seeded: matrices N(0, 0.02^2), norm weights 1 + N(0, 0.1^2), biases
    N(0, 0.1^2) (the CPU benchmark model's recipe, bench/common.py: ensure_bench_model)."""
    import torch
    header, offset = {}, 0
    names = sorted(shapes)
    for name in names:
        size = 2
        for d in shapes[name]:
            size *= d
        header[name] = {"dtype": "BF16", "shape": shapes[name],
                        "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for name in names:
            shape = shapes[name]
            t = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
            if len(shape) >= 2:
                t = t * 0.02
            else:
                t = t * 0.1 + (1.0 if "norm" in name and name.endswith("weight") else 0.0)
            f.write(t.to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes())


def llama_type_args(tensors, quant):
    """llama-quantize arguments giving every quantizable tensor phimoec's type for its role and
    row length (bench/common.py: ensure_llama_quant's matching)."""
    args = []
    for name, _gtype, shape, _nbytes in tensors:
        role = common.role_of(name)
        if len(shape) < 2 or role in ("norm", "rope", "router", "other"):
            continue
        t = common.GGML_TYPE[common.our_policy(quant, role, shape[0])]
        if role == "embedding":
            args += ["--token-embedding-type", t]
        elif role == "lm_head":
            args += ["--output-tensor-type", t]
        else:
            args += ["--tensor-type", f"^{re.escape(name)}$={t}"]
    return args


def time_transformers(model, prompts, gen, reps, device, vocab):
    """{ppP: {tokens_per_s, stddev}, tgG: ...} of a transformers model: prefill of P random
    tokens from an empty cache (mean of reps after a warm-up), and G greedy decode steps from a
    1-token prompt."""
    import statistics
    import torch
    gen_ = torch.Generator().manual_seed(1)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()
    res = {}
    with torch.inference_mode():
        for p in prompts:
            ids = torch.randint(3, vocab, (1, p), generator=gen_).to(device)
            rates = []
            for rep in range(reps + 1):
                sync()
                t = time.time()
                model(ids, use_cache=True, logits_to_keep=1)
                sync()
                if rep:
                    rates.append(p / (time.time() - t))
            res[f"pp{p}"] = dict(tokens_per_s=statistics.mean(rates),
                                 stddev=statistics.stdev(rates) if len(rates) > 1 else 0.0)
        rates = []
        for rep in range(reps + 1):
            ids = torch.randint(3, vocab, (1, 1), generator=gen_).to(device)
            out = model(ids, use_cache=True)
            cache = out.past_key_values
            nxt = out.logits[:, -1:].argmax(-1)
            sync()
            t = time.time()
            for _ in range(gen):
                out = model(nxt, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                nxt = out.logits[:, -1:].argmax(-1)
            sync()
            if rep:
                rates.append(gen / (time.time() - t))
        res[f"tg{gen}"] = dict(tokens_per_s=statistics.mean(rates),
                               stddev=statistics.stdev(rates) if len(rates) > 1 else 0.0)
    return res


def torch_copy_bw():
    import torch
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda").fill_(1)
    b = torch.empty_like(a)
    best = 1e9
    for _ in range(11):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        best = min(best, s.elapsed_time(e) / 1e3)
    return dict(source="torch copy_ (copy_bw could not run)", buffer_bytes=n,
                memcpy_gbs=2 * n / best / 1e9)


def placeholder_tokens_per_s(prompts, gen):
    """The selftest's stand-in for a measurement (it has no GPU): fixed, obviously round
    numbers, so that the report's arithmetic runs."""
    res = {f"pp{p}": dict(tokens_per_s=1000.0, stddev=0.0) for p in prompts}
    res[f"tg{gen}"] = dict(tokens_per_s=100.0, stddev=0.0)
    return res


# ------------------------------------------------------------------------------------ report

def summarize(result):
    """Rows for the tables: per engine, per test: tokens/s at L1, L2 and extrapolated to 32
    layers; for decode the bytes per token at 32 layers and the fraction of the roofline."""
    l1, l2 = result["layers"]
    bw = (result.get("bandwidth") or {}).get("roofline_gbs")
    rows = []
    tests = [f"pp{p}" for p in result["prompts"]] + [f"tg{result['gen']}"]
    for key, e in result["engines"].items():
        runs = e.get("runs", {})
        r1, r2 = runs.get(str(l1), runs.get(l1)), runs.get(str(l2), runs.get(l2))
        split = e.get("bytes_split")
        for test in tests:
            a = (r1 or {}).get(test, {}).get("tokens_per_s")
            b = (r2 or {}).get(test, {}).get("tokens_per_s")
            x = extrapolate(a, b, l1, l2, result["target_layers"])
            row = dict(engine=key, test=test, tps_l1=a, tps_l2=b,
                       tps_32=x["tokens_per_s"] if x else None,
                       ms_per_layer=x["s_per_layer"] * 1e3 if x else None)
            if test.startswith("tg") and split and bw:
                nbytes = bytes_at(split, result["target_layers"])
                row["bytes_32"] = nbytes
                row["roofline_tps"] = bw * 1e9 / nbytes
                if row["tps_32"]:
                    row["roofline_fraction"] = row["tps_32"] / row["roofline_tps"]
                if b:
                    row["roofline_fraction_l2"] = b * bytes_at(split, l2) / (bw * 1e9)
            rows.append(row)
    # ours / llama.cpp, per quant and test
    by = {(r["engine"], r["test"]): r for r in rows}
    for r in rows:
        engine, quant = r["engine"].split("/")
        if engine == "ours":  # (ours/q4k+pdl, +float, +apart against llama.cpp/q4k too)
            peer = by.get((f"llama.cpp/{quant.split('+')[0]}", r["test"]))
            if peer and peer["tps_32"] and r["tps_32"]:
                r["vs_llama"] = r["tps_32"] / peer["tps_32"]
    return rows


# Bytes per value of the storages a CUDA launcher names as its template arguments.
STORAGE_BYTES = {"float": 4.0, "bf16": 2.0, "f16": 2.0, "block_q8_0": 34 / 32,
                 "block_q4k": 144 / 256, "block_q6k": 210 / 256}


def launcher_args(launcher):
    """"linear [N = 4096, K = 6400, W = block_q4k, B = float]" -> {"N": "4096", ...}."""
    m = re.search(r"\[(.*)\]$", launcher)
    out = {}
    for part in re.split(r"[,;]\s*", m.group(1)) if m else []:
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.split()[-1]] = v.strip()
    return out


def decode_weight_bytes(kernel, launcher, top_k):
    """The weight bytes one launch of a decode kernel reads for one row (None for kernels that
    read no weights, or shapes it does not know)."""
    a = launcher_args(launcher)
    try:
        parts = {  # (values, storage) of each weight the kernel reads
            "gemv_kernel": lambda: [(int(a["N"]) * int(a["K"]), a["W"])],
            # the q/k/v projection's GEMV, then each head's RoPE and KV write in its last blocks
            "gemv_qkv_rope_kernel": lambda: [(int(a["N"]) * int(a["K"]), a["W"])],
            # o_proj's GEMV, then the norm and (E > 0) the router in its last blocks
            "gemv_norm_kernel": lambda: [(int(a["N"]) * int(a["K"]), a["W"])] + (
                [(int(a["E"]) * int(a["N"]), a["R"])] if int(a["E"]) else []),
            # (phixtral's phi-2 MLP experts, Gelu: one fc1 row per intermediate value)
            "gate_up_kernel": lambda: [((1 if a.get("Gelu") == "true" else 2) * top_k *
                                        int(a["I"]) * int(a["H"]), a["GU"])],
            "down_kernel": lambda: [(top_k * int(a["H"]) * int(a["I"]), a["DW"])],
            "router_kernel": lambda: [(int(a["E"]) * int(a["H"]), a["R"])],
            "add_layer_norm_route_kernel": lambda: [(int(a["E"]) * int(a["H"]), a["R"])],
        }[kernel]()
    except (KeyError, ValueError):
        return None
    per = [STORAGE_BYTES.get(storage) for _, storage in parts]
    return sum(v * b for (v, _), b in zip(parts, per)) if all(per) else None


def render_profile(result, top=12):
    """Where the device time of ours goes, per profiled build and phase (profile_phimoe)."""
    top_k = 2
    lines = []
    for key, e in result["engines"].items():
        for phase, prof in (e.get("profile") or {}).items():
            forwards = prof.get("forwards") or 0
            if not forwards or not prof.get("kernels"):
                continue
            per_fwd_ms = prof["kernel_ms"] / forwards
            lines.append(f"**{key}, {phase}** ({result['layers'][-1]} layers, eager: "
                         f"{prof['tokens_per_s']:.1f} tokens/s; {forwards} forwards; per forward "
                         f"{prof['launches'] / forwards:.1f} launches and {per_fwd_ms:.3f} ms "
                         f"of kernel spans):")
            lines.append("")
            lines.append("| kernel <- launcher | launches/forward | mean us | share | "
                         "weight GB/s |")
            lines.append("|---|---|---|---|---|")
            for k in prof["kernels"][:top]:
                gbs = ""
                nbytes = decode_weight_bytes(k["kernel"], k["launcher"], top_k)
                if phase == "decode" and nbytes and k["mean_us"] > 0:
                    gbs = f"{nbytes / (k['mean_us'] * 1e-6) / 1e9:.0f}"
                share = 100 * k["ms"] / prof["kernel_ms"] if prof["kernel_ms"] else 0
                lines.append(f"| {k['kernel']} <- {k['launcher']} | "
                             f"{k['launches'] / forwards:.2f} | {k['mean_us']:.1f} | "
                             f"{share:.1f}% | {gbs} |")
            if len(prof["kernels"]) > top:
                rest = prof["kernels"][top:]
                lines.append(f"| ({len(rest)} more) | | | "
                             f"{100 * sum(k['ms'] for k in rest) / prof['kernel_ms']:.1f}% | |")
            lines.append("")
            if phase == "decode":
                lines += render_gaps(result, key, per_fwd_ms)
    return lines


def render_gaps(result, key, spans_ms):
    """The decode forward as timed (graphs, tg of the profiled build's layer count) against the
    kernel spans of its eager profile: what is left is time between kernels (the end of one,
    the start of the next), which fusing launches or PDL would recover. Also for the same
    build under PDL (+pdl: the same kernels; not +float, whose GEMVs are other kernels)."""
    layers = result["layers"][-1]
    lines = []
    for name, e in result["engines"].items():
        if name not in (key, key + "+pdl"):
            continue
        runs = e.get("runs") or {}
        run = runs.get(str(layers), runs.get(layers)) or {}
        tps = (run.get(f"tg{result.get('gen', 128)}") or {}).get("tokens_per_s")
        if not tps:
            continue
        step_ms = 1e3 / tps
        gap = step_ms - spans_ms
        lines.append(f"- {name}, decode with graphs: {step_ms:.3f} ms a forward; the eager "
                     f"profile's kernel spans {spans_ms:.3f} ms; between kernels {gap:.3f} ms "
                     f"({100 * gap / step_ms:.0f}% of the forward)")
    if lines:
        lines.append("")
    return lines


def prompt_chunks(result):
    """How many prompt tokens one forward takes: phimoec's --max-tokens (the projects') and
    llama-bench's n_ubatch, as a phrase; "" when the result has neither."""
    ours = sorted({p["max_tokens"] for p in result["bundle"].get("projects", {}).values()
                   if p.get("max_tokens")})
    llama = sorted({e["info"]["n_ubatch"] for k, e in result["engines"].items()
                    if k.startswith("llama.cpp") and (e.get("info") or {}).get("n_ubatch")})
    parts = ([f"phimoec {', '.join(map(str, ours))}"] if ours else []) + \
        ([f"llama.cpp (n_ubatch) {', '.join(map(str, llama))}"] if llama else [])
    return "; ".join(parts)


def render_markdown(result):
    def f(x, spec=".1f"):
        return "n/a" if x is None else format(x, spec)
    lines = []
    host = result.get("host", {})
    bw = result.get("bandwidth") or {}
    lines.append(f"GPU benchmark ({result['kind']}), {result['date']}: {host.get('gpu')}; "
                 f"{host.get('nvcc')}; torch {host.get('torch')}, transformers "
                 f"{host.get('transformers')}; llama.cpp {result.get('llama_commit', 'n/a')}; "
                 f"phimoec {result['bundle'].get('commit')}")
    lines.append("")
    lines.append(f"Model: Phi-3.5-MoE shapes ({result['bundle'].get('shape')}), random bf16 "
                 f"weights, built with {result['layers'][0]} and {result['layers'][1]} layers; "
                 f"'32 L' is extrapolated (time per token linear in the layers). Copy bandwidth "
                 f"(roofline): {f(bw.get('roofline_gbs'))} GB/s ({bw.get('source')}; copy "
                 f"kernel {f(bw.get('copy_kernel_gbs'))}, read {f(bw.get('read_kernel_gbs'))}).")
    chunks = prompt_chunks(result)
    if chunks:
        lines.append("")
        lines.append(f"Prompt chunks (tokens a forward): {chunks}.")
    lines.append("")
    lines.append("| engine | test | L1 t/s | L2 t/s | 32 L t/s (extrap.) | ms/layer | bytes/token "
                 "(32 L) | roofline t/s | of roofline | ours/llama.cpp |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in summarize(result):
        lines.append(
            f"| {r['engine']} | {r['test']} | {f(r['tps_l1'])} | {f(r['tps_l2'])} | "
            f"{f(r['tps_32'])} | {f(r['ms_per_layer'], '.3f')} | "
            f"{common.fmt_bytes(r['bytes_32']) if r.get('bytes_32') else ''} | "
            f"{f(r.get('roofline_tps'))} | "
            f"{f(100 * r['roofline_fraction'], '.0f') + '%' if r.get('roofline_fraction') else ''}"
            f" | {f(r.get('vs_llama'), '.2f') if r.get('vs_llama') else ''} |")
    lines.append("")
    by = {(r["engine"], r["test"]): r for r in summarize(result)}
    tg = by.get(("ours/q4k", f"tg{result['gen']}"))
    if tg and tg.get("roofline_fraction"):
        vs = f"{tg['vs_llama']:.2f}x" if tg.get("vs_llama") else "n/a"
        lines.append(f"Targets: q4k decode at 32 layers {100 * tg['roofline_fraction']:.0f}% of "
                     f"the roofline (target >= 60%), {vs} llama.cpp (target >= 3x).")
        lines.append("")
    lines += render_profile(result)
    if result["bundle"].get("skipped"):
        for q, why in result["bundle"].get("skipped", {}).items():
            lines.append(f"- {q} skipped: {why}")
    for n in result.get("notes", []):
        lines.append(f"- note: {n}")
    for e in result.get("errors", []):
        lines.append(f"- error: {e.splitlines()[0][:300] if e else e}")
    st = result.get("stages", {})
    if st:
        lines.append("- stage seconds: " + ", ".join(f"{k} {v}" for k, v in st.items()))
    return "\n".join(lines) + "\n"


def report(args):
    result = json.loads(pathlib.Path(args.json).read_text())
    if result["kind"] != "measured" and not args.allow_dry:
        sys.exit(f"{args.json} is a {result['kind']}: not a benchmark result")
    host = result.get("host", {})
    print(f"## GPU: phimoec against llama.cpp (CUDA) and transformers, {result['date'][:10]}\n")
    print("```")
    print("python bench/bench_gpu.py prepare         # here: projects, binaries, llama.cpp")
    cmd = re.sub(r"--out \S+", "--out $OUT", " ".join(result["command"].split()[1:]))
    print(f"python3 bench/bench_gpu.py {cmd}".replace(str(ROOT) + "/", ""))
    print("```\n")
    print(f"Device: {host.get('gpu')} ({host.get('machine', {}).get('cores')} CPU cores); "
          f"nvcc {host.get('nvcc')}.\n")
    print(render_markdown(result))


# ---------------------------------------------------------------------------------- selftest

def selftest(args):
    """Every step but the GPU's: a tiny model through prepare (projects, phimoe-pack, the
    llama.cpp source pack), run --dry (checkpoint on the CPU, packs, GGUF conversion and
    llama.cpp's quantization with bench/llamacpp.sh's CPU build, transformers on the CPU,
    placeholder timings), and the report's arithmetic."""
    # The arithmetic, by hand.
    x = extrapolate(100.0, 50.0, 1, 2, 32)  # 10 ms + 10 ms/layer
    assert abs(x["s_per_layer"] - 0.01) < 1e-12 and abs(x["s_fixed"]) < 1e-12
    assert abs(x["tokens_per_s"] - 1 / 0.32) < 1e-9
    s = split_bytes([("model.layers.0.experts.w", 1600), ("model.layers.1.experts.w", 1600),
                     ("model.layers.0.self_attn.qkv_proj.weight", 10),
                     ("model.layers.1.self_attn.qkv_proj.weight", 10),
                     ("lm_head.weight", 500), ("model.embed_tokens.weight", 640)], 16, 2, 64)
    assert s == dict(layer=210.0, fixed=510.0, layers=2), s
    assert bytes_at(s, 32) == 510 + 32 * 210
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="bench-gpu-selftest-"))
    bundle = work / "bundle"
    lc = common.llamacpp()  # the CPU build's llama-quantize (CUDA's cannot load here)
    pargs = argparse.Namespace(bundle=str(bundle), layers="1,2", quants=args.quants,
                               shape="tiny", arch="sm_90", build=True, llama=True,
                               cuda_home=args.cuda_home)
    if args.reuse and (bundle / "manifest.json").is_file():
        manifest = json.loads((bundle / "manifest.json").read_text())
    else:
        manifest = prepare(pargs)
    assert (bundle / "tools" / "phimoe-pack").is_file(), "phimoe-pack was not built"
    rargs = argparse.Namespace(bundle=str(bundle), out=str(work / "out"), work=str(work / "run"),
                               deadline_s=3600, dry=True, prompts="16,32", gen=4, reps=1,
                               keep=True, no_transformers=False, llama_bin=lc["LLAMA_CPP_BIN"],
                               serial_pack=False, unit_values=1 << 24, profile="q4k",
                               pdl="q4k", float_gemv="q4k", apart="q4k")
    runner = Runner(rargs)
    runner.go()
    # parallel_pack and derive_pack write phimoe-pack's bytes: every share one part (the
    # stacked experts cut at every tensor), 3 processes.
    for q in manifest["quants"]:
        plans = {n: runner.projects / f"{q}-L{n}" / "pack-plan.json" for n in (1, 2)}
        scratch = work / "pack-check"
        scratch.mkdir(exist_ok=True)
        for n in (1, 2):
            sh([runner.pack_tool, plans[n], runner.views[n], scratch / f"ref-{n}.phw"])
        parallel_pack.parallel_pack(runner.pack_tool, plans[2], runner.views[2],
                                    scratch / "par-2.phw",
                                    parallel_pack.checkpoint_values(runner.views[2]), 3,
                                    unit_values=1, log=log)
        assert parallel_pack.derive_pack(plans[2], scratch / "par-2.phw", plans[1],
                                         scratch / "der-1.phw")
        parallel_pack.parallel_pack(runner.pack_tool, plans[1], runner.views[1],
                                    scratch / "par-1.phw",
                                    parallel_pack.checkpoint_values(runner.views[1]), 2,
                                    log=log)
        for ours, ref in (("par-2", "ref-2"), ("der-1", "ref-1"), ("par-1", "ref-1")):
            a, b = (scratch / f"{ours}.phw").read_bytes(), (scratch / f"{ref}.phw").read_bytes()
            assert a == b, f"{q}: {ours} differs from phimoe-pack's {ref}"
        log(f"selftest {q}: parallel_pack and derive_pack give phimoe-pack's bytes")
        shutil.rmtree(scratch)
    result = json.loads((work / "out" / "bench-gpu.json").read_text())
    assert not result["errors"], result["errors"]
    for q in manifest["quants"]:
        for eng in ("ours", "llama.cpp"):
            e = result["engines"][f"{eng}/{q}"]
            assert set(map(str, e["runs"])) == {"1", "2"}, (eng, q, e["runs"].keys())
            assert e["bytes_split"]["layers"] == 2
    assert result["engines"]["transformers/bf16"]["runs"]
    rows = summarize(result)
    tg = [r for r in rows if r["test"] == "tg4" and r.get("roofline_fraction") is not None]
    assert tg, rows
    for q in manifest["quants"]:
        # Same tensor types on both sides: the same bytes per token, up to llama.cpp's f32 norms
        # and router (ours keep the router in bf16 as the checkpoint has it).
        ours = result["engines"][f"ours/{q}"]["bytes_split"]
        peer = result["engines"][f"llama.cpp/{q}"]["bytes_split"]
        ratio = bytes_at(ours, 32) / bytes_at(peer, 32)
        log(f"selftest {q}: bytes/token at 32 layers ours {bytes_at(ours, 32):.0f}, llama.cpp "
            f"{bytes_at(peer, 32):.0f} (ratio {ratio:.3f})")
        assert 0.8 < ratio < 1.2, ratio
    md = render_markdown(result)
    assert "| ours/q8_0 | tg4 |" in md, md
    log(f"selftest passed ({time.time() - _T0:.0f} s); outputs in {work}")


# -------------------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="emit and build the projects, pack llama.cpp (here)")
    p.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    p.add_argument("--layers", default="1,2", help="the two layer counts L1,L2")
    p.add_argument("--quants", default=",".join(QUANTS))
    p.add_argument("--shape", default="full", choices=sorted(SHAPES))
    p.add_argument("--arch", default="sm_90")
    p.add_argument("--cuda-home", default=os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    p.add_argument("--no-build", dest="build", action="store_false",
                   help="carry sources only (the GPU machine builds everything)")
    p.add_argument("--no-llama", dest="llama", action="store_false")
    r = sub.add_parser("run", help="the benchmark (the GPU machine)")
    r.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    r.add_argument("--out", required=True)
    r.add_argument("--work", help="scratch directory (default: the roomiest of /tmp, build/, ~)")
    r.add_argument("--deadline-s", type=float, default=420,
                   help="stop starting new steps when this much time has passed")
    r.add_argument("--prompts", default="512,2048")
    r.add_argument("--gen", type=int, default=128)
    r.add_argument("-r", "--reps", type=int, default=3)
    r.add_argument("--keep", action="store_true", help="keep the scratch directory")
    r.add_argument("--no-transformers", action="store_true")
    r.add_argument("--pdl", default="q4k",
                   help="quants whose builds also time decode with PHIMOE_CUDA_PDL=1 "
                        "(engine ours/Q+pdl; comma-separated, '' for none)")
    r.add_argument("--float-gemv", default="q4k",
                   help="quants whose builds also time decode with PHIMOE_CUDA_DP4A=0 (engine "
                        "ours/Q+float: q4_K GEMVs on float inputs; comma-separated, '' for none)")
    r.add_argument("--apart", default="q4k",
                   help="quants whose builds also time decode with PHIMOE_CUDA_COMBINE=kernel, "
                        "PHIMOE_CUDA_NORM=apart and PHIMOE_CUDA_QKV_ROPE=apart (engine "
                        "ours/Q+apart; comma-separated, '' for none)")
    r.add_argument("--profile", default="q4k",
                   help="quants whose largest build also runs under PHIMOE_CUDA_PROFILE "
                        "(comma-separated; '' for none)")
    r.add_argument("--llama-bin", help="llama.cpp tools to use instead of the bundle's")
    r.add_argument("--serial-pack", action="store_true",
                   help="one phimoe-pack per layer count (no parallel_pack)")
    r.add_argument("--unit-values", type=int, default=1 << 24, help=argparse.SUPPRESS)
    r.add_argument("--dry", action="store_true", help=argparse.SUPPRESS)
    rep = sub.add_parser("report", help="the docs/BENCHMARKS.md section of a run's JSON")
    rep.add_argument("json")
    rep.add_argument("--allow-dry", action="store_true")
    st = sub.add_parser("selftest", help="every non-GPU step on a tiny model")
    st.add_argument("--work")
    st.add_argument("--quants", default=",".join(QUANTS))
    st.add_argument("--reuse", action="store_true", help="reuse --work's bundle if prepared")
    st.add_argument("--cuda-home", default=os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    if args.cmd == "prepare":
        prepare(args)
    elif args.cmd == "run":
        Runner(args).go()
    elif args.cmd == "report":
        report(args)
    else:
        selftest(args)


if __name__ == "__main__":
    main()
