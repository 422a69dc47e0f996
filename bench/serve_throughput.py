#!/usr/bin/env python3
"""Throughput of `phimoe-bin serve` at 1, 4 and 16 concurrent streams, alone or side by side
with llama.cpp's llama-server on the same weights.

Starts OUT/phimoe-bin serve on a free loopback port, then for each concurrency C runs C
client threads, each streaming R completions of N tokens (/v1/completions, server-sent events;
greedy, through EOS with "ignore_eos", so that every reply has N tokens; the tokens counted are
the ones the server reports in usage). Prints a Markdown table: aggregate generated tokens/s,
per-stream tokens/s, mean time to first token, the server's batched forward steps per generated
token (1.0: no sharing; 1/C: every step served all C streams) and the share of the wall time
its engine thread spent in steps.

  bench/serve_throughput.py OUT [--concurrency 1,4,16] [--requests 4] [--max-tokens 64]
                            [--parallel 16] [--ctx-size 512] [--threads N] [--json FILE]
                            [--prompt-tokens P] [--llama-gguf GGUF [--rounds 2]]
  bench/serve_throughput.py --quant q4k [--layers 2] ...

With --llama-gguf (or --quant, which takes bench_cpu.py's model: Phi-3.5-MoE's layer shapes with
random weights, compiled by phimoec and quantized by llama.cpp at the same tensor types, both
cached), llama.cpp's llama-server (bench/llamacpp.sh builds it) serves the GGUF with the same
slots (-np = --parallel), the same context per slot (-c = parallel x ctx-size, one KV cache per
slot), the same threads, and answers the same requests from the same client; the two servers
run one after the other, --rounds times, and the table gives both and ours / llama.cpp. Its
"steps per token" are llama_decode calls (llama-server's --metrics) per generated token.
--prompt-tokens P sends prompts of P seeded random token ids (the same to both servers; the
default sends short English prompts, which the two tokenizers may split differently).
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import pathlib
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request


PROMPTS = ["And God said", "In the beginning", "And it came to pass", "The LORD is my",
           "Blessed are the", "Let there be", "Now the serpent", "He that hath ears"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drain(stream, log):
    """Keeps reading a server's stderr (a full pipe would block it), the last lines kept."""
    def loop():
        for line in stream:
            log.append(line)
            del log[:-200]
    threading.Thread(target=loop, daemon=True).start()


def wait_healthy(proc, url, log, name, seconds=600):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{name} exited ({proc.returncode}) before it was ready:\n" + "".join(log))
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit(f"{name} was not healthy after {seconds} s:\n" + "".join(log))


def metrics_text(url):
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        return r.read().decode()


class Phimoe:
    """phimoe-bin serve: --parallel sequences of ctx-size positions each."""
    name = "phimoec"

    def __init__(self, out, args):
        self.out, self.args = pathlib.Path(out), args

    def start(self):
        a = self.args
        cmd = [str(self.out / "phimoe-bin"), "serve", "--port", "0", "--parallel",
               str(a.parallel), "-c", str(a.ctx_size), "--queue-size", "256"]
        if a.threads:
            cmd += ["-t", str(a.threads)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        port, self.log = None, []
        for line in self.proc.stderr:
            self.log.append(line)
            m = re.search(r"listening on http://[\d.]+:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            sys.exit("phimoe-bin serve did not start:\n" + "".join(self.log))
        drain(self.proc.stderr, self.log)
        self.url = f"http://127.0.0.1:{port}"
        wait_healthy(self.proc, self.url, self.log, "phimoe-bin serve")

    def counters(self):
        got = {m.group(1): float(m.group(2)) for m in
               re.finditer(r"^(phimoe_\w+) (\S+)$", metrics_text(self.url), re.M)}
        return {"steps": got["phimoe_batch_steps_total"],
                "busy": got["phimoe_busy_seconds_total"]}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


class LlamaServer:
    """llama.cpp's llama-server on a GGUF: -np slots, each with its own ctx-size positions."""
    name = "llama.cpp"

    def __init__(self, binary, gguf, args):
        self.binary, self.gguf, self.args = binary, gguf, args

    def start(self):
        a = self.args
        port = free_port()
        cmd = [str(self.binary), "-m", str(self.gguf), "--host", "127.0.0.1", "--port", str(port),
               "-np", str(a.parallel), "-c", str(a.parallel * a.ctx_size), "--no-kv-unified",
               "--metrics", "--no-webui", *a.llama_args.split()]
        if a.threads:
            cmd += ["-t", str(a.threads), "-tb", str(a.threads)]
        print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.log = []
        drain(self.proc.stderr, self.log)
        self.url = f"http://127.0.0.1:{port}"
        wait_healthy(self.proc, self.url, self.log, "llama-server")

    def counters(self):
        m = re.search(r"^llamacpp:n_decode_total (\S+)$", metrics_text(self.url), re.M)
        if not m:
            sys.exit("llama-server's /metrics has no llamacpp:n_decode_total")
        return {"steps": float(m.group(1)), "busy": None}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


_prompt_lock = threading.Lock()
_prompts_sent = 0


def prompt_for(args, stream, i):
    """An English prompt, or P token ids no request has sent before: the n-th request of a
    server's run gets the n-th seed whichever server it is, and neither can answer from a prompt
    cache (llama-server keeps each slot's last prompt, phimoe-bin --parallel 1 its last one)."""
    global _prompts_sent
    if not args.prompt_tokens:
        return PROMPTS[(stream + i) % len(PROMPTS)]
    with _prompt_lock:
        seed, _prompts_sent = _prompts_sent, _prompts_sent + 1
    rng = random.Random(seed)
    return [rng.randrange(100, args.prompt_vocab) for _ in range(args.prompt_tokens)]


def one_stream(url, args, requests, max_tokens, stream):
    """R streamed completions one after another, each on a connection of its own (llama-server
    closes a streamed reply's connection although it offers keep-alive). The events are read
    with http.client (the openai package parses every chunk into objects, which on a small
    machine costs more CPU than the server's decode step of a tiny model)."""
    host, port = url.split("//")[1].split(":")
    tokens, ttft = 0, []
    for i in range(requests):
        conn = http.client.HTTPConnection(host, int(port), timeout=3600)
        body = json.dumps({"model": "phimoe", "prompt": prompt_for(args, stream, i),
                           "max_tokens": max_tokens, "temperature": 0, "stream": True,
                           "stream_options": {"include_usage": True}, "ignore_eos": True})
        t0 = time.perf_counter()
        first = None
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            sys.exit(f"HTTP {resp.status}: {resp.read().decode()}")
        got = None
        for line in resp:
            if not line.startswith(b"data: "):
                continue
            if first is None:
                first = time.perf_counter() - t0
            if line.startswith(b"data: [DONE]"):
                break
            if b'"usage"' in line:
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    got = usage["completion_tokens"]
        resp.read()
        if got != max_tokens:
            sys.exit(f"a reply reported {got} completion tokens, not the {max_tokens} asked for "
                     f"(ignore_eos)")
        tokens += got
        ttft.append(first if first is not None else time.perf_counter() - t0)
        conn.close()
    return tokens, ttft


def run(server, concurrency, args):
    before = server.counters()
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(
            lambda i: one_stream(server.url, args, args.requests, args.max_tokens, i),
            range(concurrency)))
    seconds = time.perf_counter() - t0
    after = server.counters()
    tokens = sum(r[0] for r in results)
    ttft = [t for r in results for t in r[1]]
    return {"concurrency": concurrency, "requests": concurrency * args.requests,
            "generated_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "per_stream_tokens_per_s": tokens / seconds / concurrency,
            "mean_ttft_ms": 1000 * sum(ttft) / len(ttft),
            "steps_per_token": (after["steps"] - before["steps"]) / max(1, tokens),
            "engine_busy": None if after["busy"] is None else
                           (after["busy"] - before["busy"]) / seconds}


def measure(server, args):
    global _prompts_sent
    _prompts_sent = 0
    server.start()
    try:
        one_stream(server.url, args, 1, 8, 0)  # warm-up: page in the weights
        return [run(server, int(c), args) for c in args.concurrency.split(",")]
    finally:
        server.stop()


def mean(rows, key):
    vals = [r[key] for r in rows if r[key] is not None]
    return statistics.mean(vals) if vals else None


def combine(runs):
    """The rounds of one server: per concurrency, the mean of every number."""
    out = []
    for i, first in enumerate(runs[0]):
        rows = [r[i] for r in runs]
        row = {k: mean(rows, k) for k in first if k not in ("concurrency", "requests",
                                                             "generated_tokens")}
        row.update(concurrency=first["concurrency"], requests=first["requests"],
                   generated_tokens=first["generated_tokens"],
                   tokens_per_s_each_round=[r["tokens_per_s"] for r in rows])
        out.append(row)
    return out


def fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def print_alone(rows):
    print("| streams | requests | generated tokens | tokens/s | tokens/s per stream | "
          "mean TTFT (ms) | steps per token | engine busy |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        busy = fmt(None if r["engine_busy"] is None else 100 * r["engine_busy"], ".0f")
        print(f"| {r['concurrency']} | {r['requests']} | {r['generated_tokens']} | "
              f"{r['tokens_per_s']:.1f} | {r['per_stream_tokens_per_s']:.1f} | "
              f"{r['mean_ttft_ms']:.1f} | {r['steps_per_token']:.2f} | {busy}% |")


def print_side_by_side(ours, theirs):
    print("| streams | generated tokens | llama.cpp tokens/s | ours tokens/s | ratio | "
          "llama.cpp mean TTFT (ms) | ours mean TTFT (ms) | llama.cpp steps per token | "
          "ours steps per token |")
    print("|---|---|---|---|---|---|---|---|---|")
    for o, t in zip(ours, theirs):
        print(f"| {o['concurrency']} | {o['generated_tokens']} | {t['tokens_per_s']:.1f} | "
              f"{o['tokens_per_s']:.1f} | {o['tokens_per_s'] / t['tokens_per_s']:.2f} | "
              f"{t['mean_ttft_ms']:.1f} | {o['mean_ttft_ms']:.1f} | "
              f"{t['steps_per_token']:.2f} | {o['steps_per_token']:.2f} |")


def vocab_of(out):
    """The vocabulary of the model phimoec compiled into OUT (its config.json, which
    phimoec.json names), else of OUT's tokenizer.json."""
    try:
        model = pathlib.Path(json.loads((out / "phimoec.json").read_text())["model"])
        return json.loads((model / "config.json").read_text())["vocab_size"]
    except (OSError, KeyError, ValueError):
        return len(json.loads((out / "tokenizer.json").read_text())["model"]["vocab"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?",
                    help="phimoec's output directory (phimoe-bin, weights.phw, tokenizer)")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests", type=int, default=4, help="requests per stream")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=16, help="the server's --parallel")
    ap.add_argument("--ctx-size", type=int, default=512, help="positions per sequence")
    ap.add_argument("--threads", type=int, default=0, help="the server's -t (default: all)")
    ap.add_argument("--prompt-tokens", type=int, default=0,
                    help="prompts of this many random token ids (default: English prompts)")
    ap.add_argument("--prompt-vocab", type=int, default=0,
                    help="token ids below this (default: the model's vocab_size)")
    ap.add_argument("--llama-gguf", help="also run llama.cpp's llama-server on this GGUF")
    ap.add_argument("--llama-server", help="the llama-server binary (default: bench/llamacpp.sh's)")
    ap.add_argument("--llama-args", default="", help="more llama-server arguments (e.g. -ngl 99)")
    ap.add_argument("--quant", help="bench_cpu.py's model at this type (both engines)")
    ap.add_argument("--layers", type=int, default=2, help="layers of --quant's model")
    ap.add_argument("--rounds", type=int, default=2, help="alternations llama.cpp/ours")
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args()

    if args.quant:
        import common
        ckpt = common.ensure_bench_model(args.layers)
        out, reason = common.compile_phimoe(ckpt, args.quant)  # (a CPU build always serves)
        if out is None:
            sys.exit(f"phimoec cannot build --quant {args.quant}: {reason}")
        args.out = str(out)
        args.llama_gguf = args.llama_gguf or str(common.ensure_llama_quant(ckpt, args.quant)[0])
    if not args.out:
        ap.error("give OUT (a phimoec output directory) or --quant")
    if args.prompt_tokens and not args.prompt_vocab:
        args.prompt_vocab = vocab_of(pathlib.Path(args.out))
    ours = Phimoe(args.out, args)
    peer = None
    if args.llama_gguf:
        binary = args.llama_server
        if not binary:
            import common
            binary = common.llamacpp_tool("llama-server")
        peer = LlamaServer(binary, args.llama_gguf, args)

    runs = {"ours": [], "llama.cpp": []}
    for rnd in range(args.rounds if peer else 1):
        if peer:
            print(f"round {rnd + 1}: llama-server", file=sys.stderr, flush=True)
            runs["llama.cpp"].append(measure(peer, args))
            print(f"round {rnd + 1}: phimoe-bin serve", file=sys.stderr, flush=True)
        runs["ours"].append(measure(ours, args))
    result = {"ours": combine(runs["ours"])}
    if peer:
        result["llama.cpp"] = combine(runs["llama.cpp"])

    prompts = (f"{args.prompt_tokens} random token ids" if args.prompt_tokens
               else "3 to 5 tokens of English")
    if peer:
        print_side_by_side(result["ours"], result["llama.cpp"])
        print(f"\nours: {args.out}; llama.cpp: {args.llama_gguf}; {args.rounds} rounds, "
              f"alternating")
    else:
        print_alone(result["ours"])
    print(f"server: --parallel {args.parallel} -c {args.ctx_size}"
          f"{' -t ' + str(args.threads) if args.threads else ''}; prompts {prompts}; "
          f"max_tokens {args.max_tokens}, {args.requests} requests per stream; "
          f"{os.cpu_count()} CPUs")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"args": vars(args), "runs": runs, **result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
