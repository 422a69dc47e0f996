#!/usr/bin/env python3
"""bench/gguf_convert.py - llama.cpp's own convert_hf_to_gguf.py, run on a PhiMoE (or Mixtral)
checkpoint that transformers 5 wrote. Same arguments as convert_hf_to_gguf.py; run with
PYTHONPATH=$LLAMA_CPP_DIR:$LLAMA_CPP_DIR/gguf-py (bench/llamacpp.sh prints LLAMA_CPP_PYTHONPATH).

Two adaptations, neither of which touches a weight:

- the architecture name: transformers 5 writes "PhimoeForCausalLM" into config.json, llama.cpp
  registers its PhiMoE converter under "PhiMoEForCausalLM" (Phi-3.5-MoE-instruct's spelling); the
  first is registered as an alias of the second.
- the vocabulary: llama.cpp's Phi-3 family (and its Llama family, which converts Mixtral) reads a
  SentencePiece tokenizer.model (the Llama family needs the sentencepiece package even to find
  that there is none). Our checkpoints
  carry a Llama-style tokenizer.json (byte-fallback BPE, examples/tiny-phimoe's format), which
  llama.cpp reads with its own LlamaHfVocab (_set_vocab_llama_hf). The token list is then padded
  to config.vocab_size with "[PAD{i}]" unused tokens, exactly as llama.cpp's Phi-3 path pads
  Phi-3.5's 32011 tokens to its 32064-row embedding. A checkpoint with a tokenizer.model takes
  llama.cpp's unchanged path.
"""
import sys

import convert_hf_to_gguf  # noqa: F401  (llama.cpp's; sets up gguf and the conversion package)
import gguf
from conversion import TEXT_MODEL_MAP, ModelBase, ModelType, SentencePieceTokenTypes, get_model_class

phimoe = get_model_class("PhiMoEForCausalLM")
TEXT_MODEL_MAP.setdefault("PhimoeForCausalLM", TEXT_MODEL_MAP["PhiMoEForCausalLM"])
ModelBase._model_classes[ModelType.TEXT].setdefault("PhimoeForCausalLM", phimoe)

def set_vocab(self):
    if (self.dir_model / "tokenizer.model").is_file():
        return type(self)._llama_cpp_set_vocab(self)
    vocab = gguf.LlamaHfVocab(self.dir_model)
    tokens, scores, toktypes = [], [], []
    for text, score, toktype in vocab.all_tokens():
        tokens.append(text)
        scores.append(score)
        toktypes.append(toktype)
    n_vocab = self.hparams.get("vocab_size", len(tokens))
    if len(tokens) > n_vocab:
        raise ValueError(f"tokenizer has {len(tokens)} tokens, more than vocab_size {n_vocab}")
    for i in range(len(tokens), n_vocab):
        tokens.append(f"[PAD{i}]".encode("utf-8"))
        scores.append(-10000.0)
        toktypes.append(SentencePieceTokenTypes.UNUSED)
    self.gguf_writer.add_tokenizer_model("llama")
    self.gguf_writer.add_tokenizer_pre("default")
    self.gguf_writer.add_token_list(tokens)
    self.gguf_writer.add_token_scores(scores)
    self.gguf_writer.add_token_types(toktypes)
    gguf.SpecialVocab(self.dir_model, n_vocab=len(tokens)).add_to_gguf(self.gguf_writer)


for cls in (phimoe, get_model_class("MixtralForCausalLM")):
    cls._llama_cpp_set_vocab = cls.set_vocab
    cls.set_vocab = set_vocab

if __name__ == "__main__":
    sys.argv[0] = "convert_hf_to_gguf.py"
    convert_hf_to_gguf.main()
