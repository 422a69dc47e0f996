#!/usr/bin/env python3
"""bench/llamacpp_logits.py GGUF TOKENS.npy OUT.npy [--threads 2] - llama.cpp's logits of every
position of a token sequence, through the ctypes bindings of llama-cpp-python (the same release
whose vendored llama.cpp bench/llamacpp.sh builds; its libllama.so is loaded from
LLAMA_CPP_LIB_PATH). Writes float32 [len(tokens), n_vocab]: row t holds the logits after token t,
as phimoe-bin --dump-logits does. The tokens are fed as ids (no BOS is added), in one sequence,
with a context of exactly len(tokens). Run with PYTHONPATH=$LLAMA_CPP_PYTHONPATH."""
import argparse

import numpy as np
from llama_cpp import Llama


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("tokens")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    tokens = [int(t) for t in np.load(args.tokens)]
    llm = Llama(model_path=args.gguf, n_ctx=len(tokens), n_batch=len(tokens),
                n_ubatch=len(tokens), n_threads=args.threads, n_threads_batch=args.threads,
                logits_all=True, verbose=False)
    llm.eval(tokens)
    scores = np.array(llm.scores[:len(tokens)], dtype=np.float32)
    assert scores.shape == (len(tokens), llm.n_vocab()), scores.shape
    np.save(args.out, scores)


if __name__ == "__main__":
    main()
