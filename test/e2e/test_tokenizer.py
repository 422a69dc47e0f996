"""phimoe-tokenize against the `tokenizers` package, the reference implementation of
tokenizer.json: the same ids from encode and the same text from decode on many strings.

The tokenizers compared:
- the shared GGUF vocabularies (Phi-3, Llama SentencePiece, GPT-2) converted to tokenizer.json by
  transformers' GGUF tokenizer converter, then read by phimoe-tokenize both as that
  tokenizer.json and as the .gguf itself;
- small Llama-style BPE tokenizers with byte fallback trained here with `tokenizers`, in every
  normalizer / pre-tokenizer / decoder form phimoe-tokenize reads (Prepend+Replace normalizer;
  Metaspace with prepend_scheme first/always/never, split or not, and the legacy add_prefix_space
  spelling; merges as "a b" strings and as pairs), with added tokens carrying every flag.

phimoe-tokenize is found at $PHIMOE_BUILD_DIR/runtime/tokenizer/phimoe-tokenize.
"""
import copy
import json
import os
import pathlib
import random
import subprocess

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers.integrations.gguf.gguf_tokenizer_mapping import (convert_gguf_tokenizer,
                                                                    get_gguf_tokenizer)

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("PHIMOE_BUILD_DIR", ROOT / "build"))
if not BUILD.is_absolute():
    BUILD = ROOT / BUILD
TOOL = BUILD / "runtime" / "tokenizer" / "phimoe-tokenize"
VOCAB = ROOT.parent / "shared" / "testdata" / "vocab"
SP = "\u2581"

# Phi-3.5's own tokenizer.json strips the whitespace after these (rstrip); a GGUF does not say
# so, and transformers' converter leaves the flag off. phimoe-tokenize applies it to Phi-3 GGUF
# files as llama.cpp does, so the converted reference gets the flags of the real tokenizer.json.
PHI3_RSTRIP = {"</s>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"} | {
    f"<|placeholder{i}|>" for i in range(1, 7)}

LONG = ("The quick brown fox jumps over the lazy dog. " * 40 + "\n\n" +
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit; 1234 5678.\t" * 30)

STRINGS = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", " \n ", "\r\n", "\t\n", "\n \n",
    "Hello world", " Hello world", "Hello world ", "  leading and trailing  ", "Hello\n",
    "tabs\tand\t\ttabs", "line1\nline2\r\nline3", "multiple   spaces   here", "a \n b",
    # letters with accents, combining marks, scripts far from English
    "naïve café résumé", "e\u0301 combining", "Ångström Führer", "ied 4 ½ months",
    "中文字符测试", "我想在apple工作1314151天～", "日本語のテキスト", "한국어 텍스트", "Ελληνικά",
    "русский текст", "עברית", "العربية", "ไทย", "हिन्दी", "Cửa Việt", "ឆ្នាំ",
    # emoji, including ZWJ sequences, flags, skin tones, variation selectors
    "😀", "👨\u200d👩\u200d👧\u200d👦 family", "🏳️\u200d🌈", "👍🏽", "🦙.cpp", "emoji🚀inside",
    "😶\u200d🌫️ ✅",
    # code
    "def f(x):\n    return x ** 2  # square\n", "int main() { return 0; }",
    "if (a && b || !c) {}", "<html><body>hi</body></html>", "SELECT * FROM t WHERE id = 1;",
    "    indented\n\tmixed", "x=1;y=2", "#include <stdio.h>",
    # numbers and punctuation, contractions
    "1234567890", "3.14159", "1,000,000", "I've been 'told' he's there", "Don't won't can't",
    "WE'VE 'RE 'LL", "''''", "````", "...!!!???", "------=======", "$100 @user #tag",
    # unusual code points: spaces of other kinds, zero width, controls, private use, the last
    "\u2028\u3000\u00a0 unusual spaces", "zero\u200bwidth", "\u0000nul", "\x7f\x01",
    "\U0010FFFF", "\ue000 private use", "\ufeffbom",
    # special tokens inside text, and what only looks like them
    "<s>", "</s>", "<unk>", "<s>Hello", "Hello</s>", " <s> spaced </s> ",
    "<|user|>\nHello<|end|>\n<|assistant|>",
    "<|system|>\nYou are helpful.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n",
    "<|user|>   spaces after<|end|>   \n", "text <|end|> text", "<|endoftext|>\nnext",
    "<|user|><|end|>", "<|user|", "|user|>", "<|endoftext|>", "a<|endoftext|>b",
    "<mask> a <mask>b", "x [word] y[word] [word]", "normtok here normtok",
    # long
    "a" * 300, "ab " * 100, LONG,
]


def fuzz_strings(seed, count=300):
    """Random strings over pieces that stress the pipeline: runs of spaces of several kinds,
    newlines, letters with and without marks, CJK, emoji and ZWJ, digits, punctuation,
    apostrophes, and fragments and whole copies of special tokens."""
    pool = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "a", "Hello", "the", "x", "é",
            "e\u0301", "ß", "中", "文", "の", "한", "ж", "ة", "😀", "🦙", "👍🏽", "\u200d", "\ufe0f",
            "0", "42", "3.5", "!", "?", "'s", "'re", "'", "\"", "(", "{", "#", "_", "-", "<", ">",
            "|", "<|", "|>", "<s>", "</s>", "<unk>", "<|user|>", "<|end|>", "<|assistant|>",
            "<|endoftext|>", "<mask>", "[word]", "normtok", "\u2581", "\x00", "\U0001F3F3"]
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 12))) for _ in range(count)]


STRINGS += fuzz_strings(2024)


def tool(path, *args, stdin=None):
    assert TOOL.exists(), f"{TOOL} is not built (set PHIMOE_BUILD_DIR)"
    return subprocess.run([str(TOOL), "--tokenizer", str(path), *args], input=stdin,
                          capture_output=True, text=True)


def batch(path, **request):
    proc = tool(path, "batch", stdin=json.dumps(request))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def shared_strings(name):
    """The .inp strings (the copies have CRLF line ends; llama.cpp's format is LF)."""
    text = (VOCAB / f"ggml-vocab-{name}.gguf.inp").read_bytes().decode().replace("\r\n", "\n")
    return text.split("\n__ggml_vocab_test__\n")[:-1]


def shared_ids(name):
    text = (VOCAB / f"ggml-vocab-{name}.gguf.out").read_text().replace("\r\n", "\n")
    return [[int(x) for x in line.split()] for line in text.split("\n")[:-1]]


def random_id_lists(vocab_size, seed, count=60):
    rng = random.Random(seed)
    return [[rng.randrange(vocab_size) for _ in range(rng.randint(1, 24))] for _ in range(count)]


def reference_decode(reference, ids, skip, panics):
    """reference.decode, or None where tokenizers panics and `panics` allows it (see
    VARIANTS["strip-both-ends"])."""
    try:
        return reference.decode(ids, skip_special_tokens=skip)
    except BaseException as e:  # pyo3's PanicException is not an Exception
        if not panics or type(e).__name__ != "PanicException":
            raise
        return None


def compare(path, reference, strings, add_special=(False,), panics=False, stream=True):
    """phimoe-tokenize on `path` against the tokenizers.Tokenizer `reference`."""
    for special in add_special:
        got = batch(path, encode=strings, add_special=special)["encode"]
        want = [reference.encode(s, add_special_tokens=special).ids for s in strings]
        bad = [(s, g, w) for s, g, w in zip(strings, got, want) if g != w]
        assert not bad, f"{len(bad)} of {len(strings)} differ, first: {bad[:3]}"
    encoded = [reference.encode(s, add_special_tokens=False).ids for s in strings]
    id_lists = encoded + random_id_lists(reference.get_vocab_size(), seed=len(strings))
    for skip in (False, True):
        got = batch(path, decode=id_lists, skip_special=skip)["decode"]
        want = [reference_decode(reference, ids, skip, panics) for ids in id_lists]
        bad = [(ids, g, w) for ids, g, w in zip(id_lists, got, want) if w is not None and g != w]
        assert not bad, f"decode skip_special={skip}: {len(bad)} differ, first: {bad[:3]}"
    # Streaming adds up to decode(skip_special=True) (these ids decode to well-formed text).
    if not stream:
        return
    got = batch(path, stream=encoded)["stream"]
    want = [reference_decode(reference, ids, True, panics) for ids in encoded]
    bad = [(ids, g, w) for ids, g, w in zip(encoded, got, want) if w is not None and g != w]
    assert not bad, f"stream: {len(bad)} differ, first: {bad[:3]}"


# --- the shared GGUF vocabularies, through transformers' converter ---------------------------

def converted(name):
    arch, tokenizer_dict, config = get_gguf_tokenizer(str(VOCAB / f"ggml-vocab-{name}.gguf"))
    backend, _ = convert_gguf_tokenizer(arch, tokenizer_dict)
    return json.loads(backend.to_str()), config


def save(directory, tokenizer_json, config=None):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False))
    if config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory / "tokenizer.json"


@pytest.fixture(scope="module")
def gguf_refs(tmp_path_factory):
    """name -> (tokenizer.json path, tokenizers.Tokenizer): the reference for each GGUF."""
    base = tmp_path_factory.mktemp("gguf")
    refs = {}
    phi3, phi3_config = converted("phi-3")
    for token in phi3["added_tokens"]:
        token["rstrip"] = token["content"] in PHI3_RSTRIP
    refs["phi-3"] = save(base / "phi-3", phi3, {
        k: phi3_config[k] for k in ("add_bos_token", "add_eos_token", "bos_token", "eos_token")})
    spm, spm_config = converted("llama-spm")
    refs["llama-spm-first"] = save(base / "llama-spm-first", spm)
    # The original Llama tokenizer.json (the one llama.cpp's reference ids come from) has the
    # Prepend+Replace normalizer, not Metaspace "first": a leading space gets its own "▁".
    legacy = copy.deepcopy(spm)
    legacy["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": SP},
        {"type": "Replace", "pattern": {"String": " "}, "content": SP}]}
    legacy["pre_tokenizer"] = None
    legacy["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m
                                 for m in legacy["model"]["merges"]]
    refs["llama-spm"] = save(base / "llama-spm", legacy)
    gpt2, _ = converted("gpt-2")
    refs["gpt-2"] = save(base / "gpt-2", gpt2)
    # ByteLevel's other settings: a space put in front of each text piece; no regex split.
    prefix = copy.deepcopy(gpt2)
    prefix["pre_tokenizer"]["add_prefix_space"] = True
    refs["gpt-2-prefix"] = save(base / "gpt-2-prefix", prefix)
    whole = copy.deepcopy(gpt2)
    whole["pre_tokenizer"]["use_regex"] = False
    refs["gpt-2-noregex"] = save(base / "gpt-2-noregex", whole)
    # phi-2's (CodeGen's) tokenizer, phixtral's: GPT-2's plus added, non-special tokens for
    # runs of 31 down to 2 spaces and 9 down to 2 tabs, matched before the BPE.
    codegen = copy.deepcopy(gpt2)
    next_id = max(codegen["model"]["vocab"].values()) + 1
    for run in [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]:
        codegen["added_tokens"].append({"id": next_id, "content": run, "single_word": False,
                                        "lstrip": False, "rstrip": False, "normalized": True,
                                        "special": False})
        next_id += 1
    refs["gpt-2-codegen"] = save(base / "gpt-2-codegen", codegen)
    return {k: (p, Tokenizer.from_file(str(p))) for k, p in refs.items()}


@pytest.mark.parametrize("name", ["phi-3", "llama-spm", "gpt-2"])
def test_reference_reproduces_shared_ids(gguf_refs, name):
    """The references are right: they give the shared .out ids (so comparing with them is
    comparing with llama.cpp's ground truth, and more)."""
    _, reference = gguf_refs[name]
    strings = shared_strings(name)
    assert [reference.encode(s, add_special_tokens=False).ids for s in strings] == \
        shared_ids(name)


CODE = ['\n    def print_prime(n):\n        """\n        Print all primes between 1 and n\n'
        '        """\n', "x" + " " * 40 + "y", "\t\t\tif x:\n\t\t\t\treturn", "a  b   c\t\td",
        "  \t  \t\t   mixed", "end" + " " * 33]


@pytest.mark.parametrize("name", ["phi-3", "llama-spm", "llama-spm-first", "gpt-2",
                                  "gpt-2-prefix", "gpt-2-noregex", "gpt-2-codegen"])
def test_tokenizer_json_matches_tokenizers(gguf_refs, name):
    path, reference = gguf_refs[name]
    base = {"llama-spm-first": "llama-spm"}.get(name, name[:5] if name.startswith("gpt") else name)
    compare(path, reference, STRINGS + CODE + shared_strings(base), add_special=(False, True))


def test_codegen_whitespace_runs_are_single_tokens(gguf_refs):
    """The comparison above can fail on phi-2's added whitespace tokens: the reference does
    use them for indented code."""
    _, reference = gguf_refs["gpt-2-codegen"]
    ids = reference.encode(CODE[0], add_special_tokens=False).ids
    assert any(i >= 50257 for i in ids), ids


def test_metaspace_first_conversion_differs_from_the_reference(gguf_refs):
    """transformers' converter gives the llama-spm GGUF a Metaspace(prepend_scheme="first")
    pre-tokenizer: a text that starts with a space gets no "▁" of its own, unlike the Llama
    tokenizer the shared reference ids come from (29871 = "▁" first). That is why the llama-spm
    reference above uses the Prepend normalizer; phimoe-tokenize follows either tokenizer.json
    as written (test_tokenizer_json_matches_tokenizers[llama-spm-first])."""
    _, first = gguf_refs["llama-spm-first"]
    strings, ids = shared_strings("llama-spm"), shared_ids("llama-spm")
    differ = [s for s, want in zip(strings, ids)
              if first.encode(s, add_special_tokens=False).ids != want]
    assert differ and all(s.startswith(" ") for s in differ), differ


@pytest.mark.parametrize("name", ["phi-3", "llama-spm", "gpt-2"])
def test_gguf_matches_tokenizers(gguf_refs, name):
    _, reference = gguf_refs[name]
    compare(VOCAB / f"ggml-vocab-{name}.gguf", reference, STRINGS + shared_strings(name))


def test_directory_with_config(gguf_refs):
    """A directory: tokenizer.json with tokenizer_config.json (BOS added as the config says)."""
    path, reference = gguf_refs["phi-3"]
    proc = tool(path.parent, "info")
    assert proc.returncode == 0, proc.stderr
    assert "bos 1\neos 32000\nadd_bos true" in proc.stdout
    got = batch(path.parent, encode=["Hello", ""], add_special=True)["encode"]
    assert got == [[1] + reference.encode("Hello", add_special_tokens=False).ids, [1]]
    config = json.loads((path.parent / "tokenizer_config.json").read_text())
    config["add_bos_token"] = False
    config["add_eos_token"] = True
    (path.parent / "tokenizer_config.json").write_text(json.dumps(config))
    got = batch(path.parent, encode=["Hello"], add_special=True)["encode"]
    assert got == [reference.encode("Hello", add_special_tokens=False).ids + [32000]]


# --- small tokenizers trained here ---------------------------------------------------------

CORPUS = [
    "Hello world, this is a small corpus for a small tokenizer.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps.",
    "def tokenize(text):\n    return [ord(c) for c in text]\n",
    "Numbers like 12, 345 and 6789 appear; so do symbols: {}[]()<>!?.,;:'\"",
    "  Indented lines\n\tand tabs\n\nand blank lines.",
    "naïve café, résumé, Ångström.",
] * 20

ADDED = [
    # content, special, lstrip, rstrip, single_word, normalized
    ("<|user|>", True, False, True, False, False),
    ("<|end|>", True, False, True, False, False),
    ("<|assistant|>", True, False, True, False, False),
    ("<|endoftext|>", True, False, False, False, False),
    ("<mask>", True, True, True, False, False),
    ("[word]", False, False, False, True, False),
    ("normtok", False, False, False, False, True),
]

LLAMA_DECODER = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": SP}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
PREPEND_NORMALIZER = {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": SP},
    {"type": "Replace", "pattern": {"String": " "}, "content": SP}]}


def model_update(**changes):
    return {"model": changes}


def metaspace(scheme=None, split=True, legacy_add_prefix_space=None):
    if legacy_add_prefix_space is not None:  # the spelling of tokenizers < 0.19
        return {"type": "Metaspace", "replacement": SP,
                "add_prefix_space": legacy_add_prefix_space}
    return {"type": "Metaspace", "replacement": SP, "prepend_scheme": scheme, "split": split}


VARIANTS = {
    # Phi-3 / Llama-2 style
    "prepend-normalizer": dict(normalizer=PREPEND_NORMALIZER, pre_tokenizer=None,
                               decoder=LLAMA_DECODER),
    # transformers' Llama conversion (legacy=False)
    "metaspace-first": dict(normalizer=None, pre_tokenizer=metaspace("first", False),
                            decoder=LLAMA_DECODER),
    "metaspace-first-split": dict(normalizer=None, pre_tokenizer=metaspace("first", True),
                                  decoder=LLAMA_DECODER),
    "metaspace-always-split": dict(normalizer=None, pre_tokenizer=metaspace("always", True),
                                   decoder={"type": "Metaspace", "replacement": SP,
                                            "prepend_scheme": "always", "split": True}),
    "metaspace-never": dict(normalizer=None, pre_tokenizer=metaspace("never", True),
                            decoder={"type": "Sequence",
                                     "decoders": LLAMA_DECODER["decoders"][:3]}),
    "metaspace-legacy": dict(normalizer=None,
                             pre_tokenizer=metaspace(legacy_add_prefix_space=True),
                             decoder={"type": "Sequence", "decoders": [
                                 {"type": "ByteFallback"},
                                 {"type": "Metaspace", "replacement": SP,
                                  "add_prefix_space": True}]}),
    "no-decoder": dict(normalizer=PREPEND_NORMALIZER, pre_tokenizer=None, decoder=None),
    # tokenizers' Strip decoder panics where stripping from the end meets an empty text or
    # the stripped start (an index underflow: "the len is 0 but the index is 2**64-1");
    # phimoe-tokenize gives "" there. Those cases are left out of the comparison. Streaming
    # does not strip the end (it cannot take back what it showed): not compared either.
    "strip-both-ends": dict(normalizer=PREPEND_NORMALIZER, pre_tokenizer=None,
                            decoder={"type": "Sequence", "decoders": [
                                *LLAMA_DECODER["decoders"][:3],
                                {"type": "Strip", "content": " ", "start": 2, "stop": 1}]}),
    # the model's own options
    "ignore-merges": dict(normalizer=None, pre_tokenizer=metaspace("first", True),
                          decoder=LLAMA_DECODER, **model_update(ignore_merges=True)),
    "unk-fused": dict(normalizer=PREPEND_NORMALIZER, pre_tokenizer=None, decoder=LLAMA_DECODER,
                      **model_update(byte_fallback=False, fuse_unk=True)),
    "unk-unfused": dict(normalizer=PREPEND_NORMALIZER, pre_tokenizer=None, decoder=LLAMA_DECODER,
                        **model_update(byte_fallback=False, fuse_unk=False)),
}


@pytest.fixture(scope="module")
def trained():
    """A trained Llama-style BPE as a tokenizer.json dict: byte pieces <0x00>..<0xFF> in the
    model's vocabulary (as Llama's), chat and other added tokens after them."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=True)
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    n = len(vocab)
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = n + b
    for k, (content, special, lstrip, rstrip, single_word, normalized) in enumerate(ADDED):
        j["added_tokens"].append({"id": n + 256 + k, "content": content,
                                  "single_word": single_word, "lstrip": lstrip,
                                  "rstrip": rstrip, "normalized": normalized,
                                  "special": special})
    j["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    return j


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("merges", ["pairs", "strings"])
def test_trained_tokenizer_matches_tokenizers(trained, tmp_path, variant, merges):
    j = copy.deepcopy(trained)
    variant_json = copy.deepcopy(VARIANTS[variant])
    j["model"].update(variant_json.pop("model", {}))
    j.update(variant_json)
    if merges == "strings":
        j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m
                                for m in j["model"]["merges"]]
    else:
        j["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m
                                for m in j["model"]["merges"]]
    path = save(tmp_path / variant, j)
    reference = Tokenizer.from_file(str(path))
    compare(path, reference, STRINGS, add_special=(False, True),
            panics=variant == "strip-both-ends", stream=variant != "strip-both-ends")


def test_trained_tokenizer_uses_byte_fallback_and_added_tokens(trained, tmp_path):
    """The trained vocabulary really exercises what the comparisons are meant to cover."""
    j = copy.deepcopy(trained)
    j.update(VARIANTS["prepend-normalizer"])
    reference = Tokenizer.from_file(str(save(tmp_path, j)))
    encoding = reference.encode("中 <|user|>\nHi<mask> x", add_special_tokens=False)
    for piece in ["<0xE4>", "<|user|>", "<mask>"]:
        assert reference.token_to_id(piece) in encoding.ids, piece
    # rstrip took the newline after <|user|> (the token's span shows it, its id does not).
    assert encoding.ids == reference.encode("中 <|user|>Hi<mask> x", add_special_tokens=False).ids


# --- the command line ----------------------------------------------------------------------

def test_cli_encode_decode(gguf_refs):
    path, reference = gguf_refs["phi-3"]
    gguf = VOCAB / "ggml-vocab-phi-3.gguf"
    for text in [" Hello world", "<|user|>\nHi<|end|>\n<|assistant|>", "中文\n"]:
        ids = reference.encode(text, add_special_tokens=False).ids
        # With special tokens: the tokenizer.json alone adds what its post-processor says
        # (nothing, as converted), the GGUF what add_bos_token says (BOS).
        with_special = {path: reference.encode(text, add_special_tokens=True).ids,
                        gguf: [1] + ids}
        for source in (path, gguf):
            proc = tool(source, "encode", "--no-special", text)
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout == ",".join(map(str, ids)) + "\n"
            proc = tool(source, "encode", text)
            assert proc.stdout == ",".join(map(str, with_special[source])) + "\n"
            proc = tool(source, "decode", ",".join(map(str, ids)))
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout == reference.decode(ids, skip_special_tokens=False) + "\n"
    proc = tool(gguf, "encode", "--no-special", "")
    assert (proc.returncode, proc.stdout) == (0, "\n")


def test_cli_errors(tmp_path):
    bad_json = tmp_path / "tokenizer.json"
    bad_json.write_text('{"model": {"type": "BPE", "vocab": {}')
    proc = tool(bad_json, "encode", "x")
    assert proc.returncode != 0
    assert str(bad_json) in proc.stderr and "malformed JSON" in proc.stderr

    unigram = tmp_path / "unigram.json"
    unigram.write_text(json.dumps({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}))
    proc = tool(unigram, "encode", "x")
    assert proc.returncode != 0 and "Unigram" in proc.stderr

    data = (VOCAB / "ggml-vocab-phi-3.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    proc = tool(cut, "encode", "x")
    assert proc.returncode != 0
    assert str(cut) in proc.stderr and "tokenizer.ggml.tokens" in proc.stderr

    proc = tool(tmp_path / "absent", "encode", "x")
    assert proc.returncode != 0 and "absent" in proc.stderr

    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    proc = tool(empty_dir, "encode", "x")
    assert proc.returncode != 0 and "no tokenizer.json" in proc.stderr

    proc = tool(VOCAB / "ggml-vocab-phi-3.gguf", "decode", "1,x")
    assert proc.returncode != 0 and "'x'" in proc.stderr
    proc = tool(VOCAB / "ggml-vocab-phi-3.gguf", "decode", "99999")
    assert proc.returncode != 0 and "99999" in proc.stderr
