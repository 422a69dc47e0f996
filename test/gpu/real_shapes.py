#!/usr/bin/env python3
"""Phi-3.5-MoE's shapes on the GPU (hidden 4096, 32/8 heads of 128, 16 experts of 6400, vocab
32064) in a 2-layer random model: correctness against transformers and rough timings, through
the MLIR-free route (phimoec --emit-project, phimoe-pack).

  real_shapes.py plan DIR   (where phimoec is; no GPU, no weights: the checkpoint it reads is
                             a sparse file with the real header)
      writes DIR/config.json, DIR/project-bf16, DIR/project-q8_0 and DIR/project-q4k
      (--target sm_90).
  real_shapes.py run DIR    (the GPU machine: torch, transformers, cmake, nvcc)
      makes the random checkpoint with transformers (seeded), builds and packs both projects,
      times a 128-token prompt and 64 greedy tokens, and compares the prompt logits with
      transformers in float32 on the GPU (bound: 1e-3 * max|logit|): the bf16 build with the
      model as stored, the q8_0 build with the model whose quantized weights are replaced by
      their q8_0 values (same rounding as phimoe_rt::quantize_row_q8_0). Against the unquantized
      model the q8_0 build's error is printed, not bounded: in a random model with Phi-3.5-MoE's
      widths, small errors flip sparsemixer routes and greedy top-1s.
      The q4k build (q6_K LM head, q8_0 embedding) is timed and its error printed.
      $REAL_QUANTS (default "bf16 q8_0 q4k") picks the builds.
"""
import json
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))
sys.path.insert(0, str(HERE.parent.parent / "bench"))

LAYERS, HIDDEN, HEADS, KV, EXPERTS, INTER, VOCAB = 2, 4096, 32, 8, 16, 6400, 32064
PROMPT, GENERATED = 128, 64


def config():
    import oracle
    return oracle.tiny_config(layers=LAYERS, hidden=HIDDEN, heads=HEADS, kv_heads=KV,
                              experts=EXPERTS, intermediate=INTER, vocab=VOCAB,
                              original_max=4096, max_position=131072)


def plan(root):
    """A checkpoint with the real header and no data (a sparse file): enough for phimoec to
    emit the projects, which never read the weights."""
    import bench_gpu  # the benchmark's header-only checkpoint of a config
    import oracle
    src = root / "header-only"
    bench_gpu.write_header_only(src, json.loads(config().to_json_string(use_diff=False)))
    for quant in ("bf16", "q8_0", "q4k"):
        proc = subprocess.run([str(oracle.PHIMOEC), "compile", str(src), "--target", "sm_90",
                               "--quant", quant, "--emit-project", str(root / f"project-{quant}")],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"phimoec failed for {quant}:\n{proc.stderr}")
    (src / "model.safetensors").unlink()
    (root / "config.json").write_text((src / "config.json").read_text())
    print(f"planned {root}")


def sh(cmd):
    t = time.time()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-3000:]}")
    return proc, time.time() - t


def fake_q8_0(model):
    """The model with every weight that --quant q8_0 quantizes (all but the router, norms and
    biases) replaced by its q8_0 values: blocks of 32 along rows, d = amax / 127 stored as
    f16, quants round(x / d) with ties away from zero (runtime/quant/quant.cpp)."""
    import torch
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() < 2 or "router" in name or ".gate." in name:
                continue
            x = p.float().reshape(-1, 32)
            d = x.abs().amax(1, keepdim=True) / 127.0
            inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
            v = x * inv
            q = (torch.sign(v) * torch.floor(v.abs() + 0.5)).clamp(-127, 127)
            p.copy_((q * d.half().float()).reshape(p.shape))
    return model


def run(root):
    import numpy as np
    import torch
    import oracle
    oracle.use_reference_longrope()
    t = time.time()
    torch.manual_seed(0)
    model = oracle.PhimoeForCausalLM(config()).eval()
    ckpt = root / "checkpoint"
    model.to(torch.bfloat16).save_pretrained(ckpt)
    print(f"random checkpoint: {time.time() - t:.0f} s")
    prompt = torch.randint(3, VOCAB, (PROMPT,), generator=torch.Generator().manual_seed(7)).tolist()
    ids = ",".join(map(str, prompt))
    results = {}
    quants = os.environ.get("REAL_QUANTS", "bf16 q8_0 q4k").split()
    for quant in quants:
        project = root / f"project-{quant}"
        build = project / "build"
        sh(["cmake", "-S", project, "-B", build, "-DCMAKE_BUILD_TYPE=Release"])
        _, secs = sh(["cmake", "--build", build, "-j", os.cpu_count() or 2,
                      "--target", "phimoe-bin", "phimoe-pack"])
        print(f"{quant}: built in {secs:.0f} s")
        _, secs = sh([build / "phimoe-pack", project / "pack-plan.json", ckpt,
                      build / "weights.phw"])
        print(f"{quant}: packed in {secs:.0f} s")
        bin_ = build / "phimoe-bin"
        sh([bin_, "--tokens", ids, "-n", 0])  # warm-up (page cache, driver)
        _, t0 = sh([bin_, "--tokens", ids, "-n", 0])
        _, t1 = sh([bin_, "--tokens", ids, "-n", GENERATED])
        print(f"{quant}: process with a {PROMPT}-token prompt {t0:.2f} s; + {GENERATED} greedy "
              f"tokens {t1:.2f} s: about {(t1 - t0) / GENERATED * 1e3:.1f} ms per decode step "
              f"({LAYERS} layers)")
        dump = root / f"{quant}.npy"
        sh([bin_, "--tokens", ids, "-n", 0, "--dump-logits", dump])
        results[quant] = np.load(dump)
    def logits(m):
        with torch.no_grad():
            out = m.cuda()(torch.tensor([prompt]).cuda()).logits[0].float().cpu().numpy()
        m.cpu()
        return out

    def compare(what, ours, ref, bounded):
        err, scale = float(np.abs(ours - ref).max()), float(np.abs(ref).max())
        ok = err <= 1e-3 * scale and not np.isnan(ours).any()
        top1 = float((ours.argmax(-1) == ref.argmax(-1)).mean())
        print(f"{('PASS' if ok else 'FAIL') if bounded else 'INFO'} {what}: max|d| = {err:.3g}, "
              f"max|logit| = {scale:.3g}, top-1 agreement {top1:.3f}")
        return 0 if ok or not bounded else 1

    model = model.float()
    ref = logits(model)
    status = 0
    if "bf16" in results:
        status |= compare("bf16 vs transformers", results["bf16"], ref, True)
    if "q8_0" in results:
        status |= compare("q8_0 vs transformers on the q8_0 weights", results["q8_0"],
                          logits(fake_q8_0(model)), True)
        compare("q8_0 vs transformers on the unquantized weights", results["q8_0"], ref, False)
    if "q4k" in results:  # bounded at these widths by test/gpu/kernels_test.cu (q4k MoE)
        compare("q4k vs transformers on the unquantized weights", results["q4k"], ref, False)
    return status


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("plan", "run"):
        sys.exit(__doc__)
    root = pathlib.Path(sys.argv[2]).resolve()
    root.mkdir(parents=True, exist_ok=True)
    sys.exit(plan(root) if sys.argv[1] == "plan" else run(root))
