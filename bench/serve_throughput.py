#!/usr/bin/env python3
"""Throughput of `phimoe-bin serve` at 1, 4 and 16 concurrent streams.

Starts OUT/phimoe-bin serve on a free loopback port, then for each concurrency C runs C
client threads, each streaming R completions of N tokens (/v1/completions, server-sent events;
greedy, through EOS with "ignore_eos", so that every reply has N tokens; the tokens counted are
the ones the server reports in usage). Prints a Markdown table: aggregate generated tokens/s,
per-stream tokens/s, mean time to first token, the server's batched forward steps per generated
token (1.0: no sharing; 1/C: every step served all C streams) and the share of the wall time
its engine thread spent in steps.

  bench/serve_throughput.py OUT [--concurrency 1,4,16] [--requests 4] [--max-tokens 64]
                            [--parallel 16] [--ctx-size 512] [--threads N] [--json]
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
import urllib.request


PROMPTS = ["And God said", "In the beginning", "And it came to pass", "The LORD is my",
           "Blessed are the", "Let there be", "Now the serpent", "He that hath ears"]


def start(out, args):
    cmd = [str(pathlib.Path(out) / "phimoe-bin"), "serve", "--port", "0", "--parallel",
           str(args.parallel), "-c", str(args.ctx_size), "--queue-size", "256"]
    if args.threads:
        cmd += ["-t", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    port, log = None, []
    for line in proc.stderr:
        log.append(line)
        m = re.search(r"listening on http://[\d.]+:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        sys.exit("phimoe-bin serve did not start:\n" + "".join(log))
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.05)
    sys.exit("phimoe-bin serve did not become healthy")


def metrics(url):
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(phimoe_\w+) (\S+)$", text, re.M)}


def one_stream(url, requests, max_tokens, offset):
    """R streamed completions one after another on one keep-alive connection. The events are
    read with http.client (the openai package parses every chunk into objects, which on a
    small machine costs more CPU than the server's decode step of a tiny model)."""
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=3600)
    tokens, ttft = 0, []
    for i in range(requests):
        body = json.dumps({"model": "phimoe", "prompt": PROMPTS[(offset + i) % len(PROMPTS)],
                           "max_tokens": max_tokens, "temperature": 0, "stream": True,
                           "stream_options": {"include_usage": True}, "ignore_eos": True})
        t0 = time.perf_counter()
        first = None
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            sys.exit(f"HTTP {resp.status}: {resp.read().decode()}")
        for line in resp:
            if not line.startswith(b"data: "):
                continue
            if first is None:
                first = time.perf_counter() - t0
            if line.startswith(b"data: [DONE]"):
                break
            if b'"usage"' in line:
                tokens += json.loads(line[6:])["usage"]["completion_tokens"]
        resp.read()
        ttft.append(first if first is not None else time.perf_counter() - t0)
    conn.close()
    return tokens, ttft


def run(url, concurrency, args):
    before = metrics(url)
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda i: one_stream(url, args.requests, args.max_tokens, i),
                                range(concurrency)))
    seconds = time.perf_counter() - t0
    after = metrics(url)
    tokens = sum(r[0] for r in results)
    ttft = [t for r in results for t in r[1]]
    steps = after["phimoe_batch_steps_total"] - before["phimoe_batch_steps_total"]
    return {"concurrency": concurrency, "requests": concurrency * args.requests,
            "generated_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "per_stream_tokens_per_s": tokens / seconds / concurrency,
            "mean_ttft_ms": 1000 * sum(ttft) / len(ttft),
            "steps_per_token": steps / max(1, tokens),
            "engine_busy": (after["phimoe_busy_seconds_total"] -
                            before["phimoe_busy_seconds_total"]) / seconds}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="phimoec's output directory (phimoe-bin, weights.phw, tokenizer)")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests", type=int, default=4, help="requests per stream")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=16, help="the server's --parallel")
    ap.add_argument("--ctx-size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0, help="the server's -t (default: all)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    proc, url = start(args.out, args)
    try:
        one_stream(url, 1, 8, 0)  # warm-up: page in the weights
        rows = [run(url, int(c), args) for c in args.concurrency.split(",")]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"| streams | requests | generated tokens | tokens/s | tokens/s per stream | "
          f"mean TTFT (ms) | steps per token | engine busy |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['requests']} | {r['generated_tokens']} | "
              f"{r['tokens_per_s']:.1f} | {r['per_stream_tokens_per_s']:.1f} | "
              f"{r['mean_ttft_ms']:.1f} | {r['steps_per_token']:.2f} | {100 * r['engine_busy']:.0f}% |")
    print(f"server: --parallel {args.parallel} -c {args.ctx_size}"
          f"{' -t ' + str(args.threads) if args.threads else ''}; max_tokens {args.max_tokens}, "
          f"{args.requests} requests per stream; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
