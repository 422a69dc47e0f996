"""phimoe-bin serve with the official openai client: chat and completions, streamed and
not, equal to phimoe-bin's own greedy output; the OpenAI error shapes and statuses; a client
that disconnects frees its sequence; a bounded load test (every request answered, greedy
outputs equal to single-request ones, decode steps shared); SIGINT/SIGTERM stop cleanly.

The model is examples/tiny-phimoe when its weights are there, else a small random PhiMoE
with the example's tokenizer (made as oracle.py makes them)."""
import concurrent.futures
import enum
import json
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Optional

import openai
import pydantic
import pytest

import oracle

EXAMPLE = oracle.ROOT / "examples" / "tiny-phimoe"
CTX = 256
PROMPTS = ["And God said", "In the beginning", "And it came to pass", "The LORD is my",
           "Blessed are the", "Let there be", "Now the serpent", "He that hath ears"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    src = EXAMPLE
    if not ((EXAMPLE / "config.json").exists() and (EXAMPLE / "model.safetensors").exists()):
        src = root / "random"
        vocab = len(json.loads((EXAMPLE / "tokenizer.json").read_text())["model"]["vocab"]) + 14
        model = oracle.make_model(oracle.tiny_config(vocab=vocab, original_max=32,
                                                     max_position=512), seed=0)
        oracle.save(model, src)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (EXAMPLE / name).exists():
                shutil.copy(EXAMPLE / name, src / name)
    out = root / "out"
    proc = oracle.compile_model(src, out, "--quant", "f32")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def long_reply(compiled):
    """A reply length that takes a short prompt past original_max_position_embeddings, so
    that the LongRoPE recompute happens inside the batch engine too."""
    config = json.loads((pathlib.Path(compiled) / "phimoec.json").read_text())
    config = json.loads((pathlib.Path(config["model"]) / "config.json").read_text())
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    original = rope.get("original_max_position_embeddings",
                        config.get("original_max_position_embeddings", 32))
    assert original + 24 < CTX
    return original + 16


class Server:
    """phimoe-bin serve on a free port (--port 0: the server prints the one it got)."""

    def __init__(self, out, *args):
        self.proc = subprocess.Popen([str(out / "phimoe-bin"), "serve", "--port", "0", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines = []
        found = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.lines.append(line)
                if "listening on" in line:
                    found.set()
            found.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        assert found.wait(60), "the server did not start"
        match = re.search(r"listening on http://[\d.]+:(\d+)", "".join(self.lines))
        assert match, "".join(self.lines)
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 30
        while True:  # readiness: /health answers
            try:
                if self.get("/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline and self.proc.poll() is None, "".join(self.lines)
            time.sleep(0.05)

    def client(self, key="none"):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0,
                             timeout=120)

    def request(self, method, path, body=None, headers=None):
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def get(self, path):
        return self.request("GET", path)

    def metrics(self):
        status, text = self.get("/metrics")
        assert status == 200
        return {m.group(1): float(m.group(2))
                for m in re.finditer(r"^(phimoe_\w+) (\S+)$", text, re.M)}

    def wait_metric(self, name, predicate, timeout=20):
        deadline = time.time() + timeout
        while True:
            value = self.metrics()[name]
            if predicate(value):
                return value
            assert time.time() < deadline, f"{name} stayed {value}"
            time.sleep(0.02)

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=30)
        self.reader.join(timeout=5)
        return rc, "".join(self.lines)


@pytest.fixture(scope="module")
def server(compiled):
    s = Server(compiled, "--parallel", "4", "-c", str(CTX), "--threads", "2")
    yield s
    if s.proc.poll() is None:
        s.stop()


def cli_completion(out, prompt, n):
    proc = subprocess.run([str(out / "phimoe-bin"), "-p", prompt, "-n", str(n), "--temperature",
                           "0", "--no-display-prompt", "-c", str(CTX)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout[:-1]  # the trailing newline


def cli_chat(out, message, n):
    proc = subprocess.run([str(out / "phimoe-bin"), "chat", "-n", str(n), "--temperature", "0",
                           "-c", str(CTX)], input=message + "\n", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout[:-1]


def complete(client, prompt, n, **kw):
    return client.completions.create(model="phimoe", prompt=prompt, max_tokens=n, temperature=0,
                                     **kw)


def error_of(status_body):
    status, body = status_body
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["message"]
    return status, error


# ---- endpoints -----------------------------------------------------------------------------

def test_health_and_models(server):
    assert json.loads(server.get("/health")[1]) == {"status": "ok"}
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["phimoe"]
    assert server.client().models.retrieve("phimoe").id == "phimoe"


@pytest.mark.parametrize("prompt", PROMPTS[:3])
def test_completion_equals_cli_greedy(server, compiled, long_reply, prompt):
    n = long_reply
    expected = cli_completion(compiled, prompt, n)
    got = complete(server.client(), prompt, n)
    assert got.choices[0].text == expected
    assert got.object == "text_completion"
    ids = subprocess.run([str(compiled / "phimoe-bin"), "tokenize", prompt], capture_output=True,
                         text=True, check=True).stdout.strip().split(",")
    assert got.usage.prompt_tokens == len(ids)
    assert got.usage.completion_tokens <= n
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens
    assert got.choices[0].finish_reason in ("stop", "length")
    if got.choices[0].finish_reason == "length":
        assert got.usage.completion_tokens == n


def test_sampled_completion_equals_cli_with_the_same_seed(server, compiled, long_reply):
    # Sampling at temperature 1 reads the whole distribution, so this also catches logit
    # differences too small to change a greedy choice (e.g. a wrong LongRoPE set).
    n = long_reply
    proc = subprocess.run([str(compiled / "phimoe-bin"), "-p", PROMPTS[4], "-n", str(n),
                           "--temperature", "1", "--top-k", "0", "--top-p", "1", "--min-p", "0",
                           "--seed", "1234", "--no-display-prompt", "-c", str(CTX)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = server.client().completions.create(model="phimoe", prompt=PROMPTS[4], max_tokens=n,
                                             temperature=1, top_p=1, seed=1234)
    assert got.choices[0].text == proc.stdout[:-1]


def test_completion_stream_equals_non_stream(server):
    client = server.client()
    whole = complete(client, PROMPTS[3], 40)
    chunks = list(complete(client, PROMPTS[3], 40, stream=True,
                           stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    finals = [c.choices[0].finish_reason for c in chunks
              if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_chat_equals_cli_chat_streamed_and_not(server, compiled):
    expected = cli_chat(compiled, "Who made the light?", 40)
    client = server.client()
    messages = [{"role": "user", "content": "Who made the light?"}]
    got = client.chat.completions.create(model="phimoe", messages=messages, max_tokens=40,
                                         temperature=0)
    assert got.object == "chat.completion"
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == expected
    assert got.usage.prompt_tokens > 5
    stream = client.chat.completions.create(model="phimoe", messages=messages, max_tokens=40,
                                            temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == got.choices[0].finish_reason


def test_stop_strings_cut_the_reply(server):
    client = server.client()
    full = complete(client, PROMPTS[0], 30).choices[0].text
    assert len(full) > 8
    stop = full[5:8]
    cut = full[:full.index(stop)]
    never = [f"\u00a7never{i}\u00a7" for i in range(15)]  # 16 stop strings in all
    got = complete(client, PROMPTS[0], 30, stop=[stop] + never)
    assert got.choices[0].text == cut
    assert got.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in complete(client, PROMPTS[0], 30, stop=stop,
                                                           stream=True))
    assert streamed == cut


@pytest.fixture(scope="module")
def reference(compiled):
    """transformers' model of the served weights (f32), and its original_max_position; its
    LongRoPE as the reference states it (oracle.use_reference_longrope)."""
    from transformers import PhimoeForCausalLM
    torch = pytest.importorskip("torch")
    oracle.use_reference_longrope()
    src = json.loads((compiled / "phimoec.json").read_text())["model"]
    model = PhimoeForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    config = json.loads((pathlib.Path(src) / "config.json").read_text())
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    original = rope.get("original_max_position_embeddings",
                        config.get("original_max_position_embeddings", 4096))
    return model, original


def reference_logprobs(reference, tokens):
    """log-softmax of transformers' logits at every position of `tokens` (each position as a
    fresh forward over the tokens up to it: oracle.reference_logits)."""
    import torch
    model, original = reference
    logits = torch.from_numpy(oracle.reference_logits(model, tokens, original))
    return torch.log_softmax(logits.double(), dim=-1)


def token_ids(compiled, text):
    return [int(t) for t in subprocess.run(
        [str(compiled / "phimoe-bin"), "tokenize", text], capture_output=True, text=True,
        check=True).stdout.strip().split(",")]


def test_completion_logprobs_are_the_models(server, compiled, reference, tmp_path):
    """logprobs=3 on /v1/completions: each reply token's log-probability and its 3 most likely
    alternatives are transformers' log-softmax at that position (same weights, f32), the
    tokens and their text offsets spell the reply, and a stream carries the same values."""
    import torch
    n = 12
    got = complete(server.client(), PROMPTS[1], n, logprobs=3)
    choice = got.choices[0]
    lp = choice.logprobs
    assert got.usage.completion_tokens == len(lp.tokens) == len(lp.token_logprobs) == n
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(n)]
    # The ids: the prompt's, then what phimoe-bin generates greedily (the same reply).
    prompt = token_ids(compiled, PROMPTS[1])
    reply, _ = oracle.run_bin(compiled, prompt, n, tmp_path / "logits.npy", "-c", str(CTX))
    expected = reference_logprobs(reference, prompt + reply)[len(prompt) - 1:-1]
    for i, token in enumerate(reply):
        assert abs(lp.token_logprobs[i] - expected[i, token].item()) <= 2e-3, i
        best = torch.topk(expected[i], 3).values.tolist()
        assert len(lp.top_logprobs[i]) == 3
        assert sorted(lp.top_logprobs[i].values(), reverse=True) == pytest.approx(best, abs=2e-3)
        assert max(lp.top_logprobs[i].values()) == pytest.approx(lp.token_logprobs[i], abs=1e-6)
    chunks = list(complete(server.client(), PROMPTS[1], n, logprobs=3, stream=True))
    streamed = [v for c in chunks if c.choices and c.choices[0].logprobs
                for v in c.choices[0].logprobs.token_logprobs]
    assert streamed == lp.token_logprobs
    assert complete(server.client(), PROMPTS[1], 3).choices[0].logprobs is None


def test_echo_scores_the_prompt_as_lm_eval_asks(server, compiled, reference, tmp_path):
    """The request of lm-evaluation-harness's local-completions model for a log-likelihood:
    the prompt as token ids, echo, logprobs=1, max_tokens=1. An entry per prompt token (the
    first without a value) and one for the generated token, each transformers' log-softmax
    at that position, with a prompt longer than original_max_position_embeddings (positions
    up to it scored with the short LongRoPE set, as a fresh forward over them is)."""
    model, original = reference
    words = " ".join(PROMPTS)
    ids = token_ids(compiled, words)
    while len(ids) < original + 8:
        words += " " + " ".join(PROMPTS)
        ids = token_ids(compiled, words)
    ids = ids[:original + 8]
    got = server.client().completions.create(model="phimoe", prompt=[ids], max_tokens=1,
                                             temperature=0, logprobs=1, echo=True)
    lp = got.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(ids) + 1
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    generated, _ = oracle.run_bin(compiled, ids, 1, tmp_path / "logits.npy", "-c", str(CTX))
    expected = reference_logprobs(reference, ids + generated)
    for t, token in enumerate(ids[1:] + generated, start=1):
        assert abs(lp.token_logprobs[t] - expected[t - 1, token].item()) <= 2e-3, t
        assert max(lp.top_logprobs[t].values()) == pytest.approx(
            expected[t - 1].max().item(), abs=2e-3)
    assert lp.token_logprobs[-1] == max(lp.top_logprobs[-1].values())  # greedy
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    # The text: the prompt's, then the reply's; without logprobs the same text.
    plain = server.client().completions.create(model="phimoe", prompt=[ids], max_tokens=1,
                                               temperature=0)
    assert got.choices[0].text.endswith(plain.choices[0].text)
    assert got.choices[0].text.startswith(words[:20])
    echoed = server.client().completions.create(model="phimoe", prompt=[ids], max_tokens=1,
                                                temperature=0, echo=True)
    assert echoed.choices[0].text == got.choices[0].text
    assert echoed.choices[0].logprobs is None


def test_chat_logprobs_spell_the_reply(server):
    """Chat's logprobs: true with top_logprobs: each entry's bytes add up to the reply, its
    alternatives come most likely first (the greedy choice first), and streamed equals not."""
    client = server.client()
    messages = [{"role": "user", "content": "Who made the light?"}]
    kw = dict(model="phimoe", messages=messages, max_tokens=20, temperature=0, logprobs=True,
              top_logprobs=2)
    got = client.chat.completions.create(**kw)
    content = got.choices[0].logprobs.content
    assert len(content) == got.usage.completion_tokens
    assert b"".join(bytes(e.bytes) for e in content) == got.choices[0].message.content.encode()
    for e in content:
        assert len(e.top_logprobs) == 2
        assert e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob
        assert (e.top_logprobs[0].token, e.top_logprobs[0].logprob) == (e.token, e.logprob)
        assert e.logprob <= 0
    chunks = list(client.chat.completions.create(**kw, stream=True))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs
                for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]
    plain = client.chat.completions.create(model="phimoe", messages=messages, max_tokens=3)
    assert plain.choices[0].logprobs is None


def test_several_prompts_and_n_choices(server, compiled):
    """An array of prompts (strings or token ids) gives a choice each, in order, each what the
    prompt alone gives; n gives n choices a prompt, choice j sampled with seed + j (so with a
    seed, each equals a single request with that seed); usage adds them up, each prompt's
    tokens once. Streamed, the chunks of the choices interleave by index and add up to the
    same texts."""
    client = server.client()
    ids = token_ids(compiled, PROMPTS[2])
    prompts = [PROMPTS[0], PROMPTS[1], ids]
    got = client.completions.create(model="phimoe", prompt=prompts, max_tokens=10,
                                    temperature=0)
    assert [c.index for c in got.choices] == [0, 1, 2]
    alone = [complete(client, p if isinstance(p, str) else [p], 10) for p in prompts]
    assert [c.text for c in got.choices] == [a.choices[0].text for a in alone]
    assert got.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
    assert got.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone)

    sampled = dict(model="phimoe", prompt=PROMPTS[5], max_tokens=12, temperature=1, seed=7)
    got = client.completions.create(**sampled, n=3)
    assert [c.index for c in got.choices] == [0, 1, 2]
    texts = [c.text for c in got.choices]
    for j in range(3):
        single = client.completions.create(**{**sampled, "seed": 7 + j})
        assert texts[j] == single.choices[0].text, j
    assert len(set(texts)) > 1
    assert got.usage.prompt_tokens == len(token_ids(compiled, PROMPTS[5]))

    chunks = list(client.completions.create(model="phimoe", prompt=prompts[:2], n=2,
                                            max_tokens=10, temperature=1, seed=3, stream=True,
                                            stream_options={"include_usage": True}))
    whole = client.completions.create(model="phimoe", prompt=prompts[:2], n=2, max_tokens=10,
                                      temperature=1, seed=3)
    streamed = {}
    finished = []
    for c in chunks:
        for choice in c.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finished.append(choice.index)
    assert streamed == {c.index: c.text for c in whole.choices}
    assert sorted(finished) == [0, 1, 2, 3]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    messages = [{"role": "user", "content": "Who made the light?"}]
    chat = client.chat.completions.create(model="phimoe", messages=messages, max_tokens=12,
                                          temperature=1, seed=11, n=2)
    assert [c.index for c in chat.choices] == [0, 1]
    single = client.chat.completions.create(model="phimoe", messages=messages, max_tokens=12,
                                            temperature=1, seed=12)
    assert chat.choices[1].message.content == single.choices[0].message.content


def test_logit_bias(server, compiled):
    """logit_bias: -100 on the greedy reply's first token makes the reply begin otherwise;
    +100 on a token makes the reply that token again and again; bad maps are 400."""
    client = server.client()
    first = complete(client, PROMPTS[6], 1, logprobs=0).choices[0].logprobs.tokens[0]
    first_id = token_ids(compiled, "x" + first)[-1]  # "x" keeps a leading space a word's
    got = complete(client, PROMPTS[6], 4, logprobs=0, logit_bias={str(first_id): -100})
    assert got.choices[0].logprobs.tokens[0] != first
    word = token_ids(compiled, "x light")[-1]
    got = complete(client, PROMPTS[6], 4, logprobs=0, logit_bias={str(word): 100})
    assert len(set(got.choices[0].logprobs.tokens)) == 1, got.choices[0].logprobs.tokens
    for bias in ({"x": 1}, {"-1": 1}, {str(10 ** 6): 1}, {"5": 101}, {"5": "up"}, [5]):
        status, error = error_of(server.request(
            "POST", "/v1/completions", {"model": "phimoe", "prompt": "x", "logit_bias": bias}))
        assert (status, error["param"]) == (400, "logit_bias"), bias


def test_json_mode_replies_with_an_object(server):
    """response_format json_object: every reply opens with '{'; those that end by themselves
    (finish_reason stop, which JSON mode gives when the object closes) are one JSON object,
    whatever the sampling; a stream equals the answer; a JSON schema is refused. (The example
    model knows no JSON: only the mask makes its replies objects.)"""
    client = server.client()
    messages = [{"role": "user", "content": "Give the names of the sons of Noah as JSON"}]
    closed = 0
    for temperature, seed in [(0, 0), (1, 1), (1, 2), (0.7, 3), (1, 4), (1, 5)]:
        got = client.chat.completions.create(model="phimoe", messages=messages, max_tokens=60,
                                             temperature=temperature, seed=seed,
                                             response_format={"type": "json_object"})
        text = got.choices[0].message.content
        assert text.startswith("{"), text
        if got.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(text), dict), text
            closed += 1
        else:
            assert got.usage.completion_tokens == 60
        assert "<|" not in text
    assert closed >= 2
    kw = dict(model="phimoe", prompt=PROMPTS[0], max_tokens=40, temperature=0,
              extra_body={"response_format": {"type": "json_object"}})
    whole = client.completions.create(**kw).choices[0].text
    assert whole.startswith("{")
    assert "".join(c.choices[0].text for c in client.completions.create(**kw, stream=True)) \
        == whole
    status, error = error_of(server.request(
        "POST", "/v1/chat/completions",
        {"model": "phimoe", "messages": messages,
         "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}))
    assert (status, error["param"]) == (400, "response_format")


class Tribe(str, enum.Enum):
    JUDAH = "Judah"
    LEVI = "Levi"
    DAN = "Dan"


class Son(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=10)
    tribe: Tribe
    firstborn: bool


class Family(pydantic.BaseModel):
    father: Optional[str] = pydantic.Field(max_length=8)
    sons: list[Son] = pydantic.Field(max_length=3)


def test_json_schema_replies_are_values_of_the_schema(server):
    """response_format json_schema through openai's parse() with a pydantic model (nested
    models, an enum, Optional, bounded strings and lists, as openai's strict conversion writes
    them): every reply that ends by itself is a Family, its fields in the schema's order; one cut
    at max_tokens is refused by the client as such. A stream equals the answer; /v1/completions
    takes the same response_format. (The example model knows no JSON: only the schema's mask
    makes its replies Families.)"""
    client = server.client()
    messages = [{"role": "user", "content": "Name the sons of Jacob as JSON"}]
    closed = 0
    for temperature, seed in [(0, 0), (1, 1), (1, 2), (0.7, 3), (1, 4), (1, 5)]:
        try:
            got = client.chat.completions.parse(model="phimoe", messages=messages,
                                                max_tokens=150, temperature=temperature,
                                                seed=seed, response_format=Family)
        except openai.LengthFinishReasonError as e:
            assert e.completion.usage.completion_tokens == 150
            continue
        choice = got.choices[0]
        assert choice.finish_reason == "stop"
        assert isinstance(choice.message.parsed, Family), choice.message.content
        assert list(json.loads(choice.message.content)) == ["father", "sons"]
        for son in json.loads(choice.message.content)["sons"]:
            assert list(son) == ["name", "tribe", "firstborn"]
        closed += 1
    assert closed >= 3
    schema = {"type": "object", "properties": {"tribe": {"enum": ["Judah", "Levi"]},
                                               "count": {"type": "integer"}},
              "required": ["tribe"], "additionalProperties": False}
    format = {"type": "json_schema", "json_schema": {"name": "tribe", "schema": schema}}
    kw = dict(model="phimoe", messages=messages, max_tokens=40, temperature=0,
              response_format=format)
    whole = client.chat.completions.create(**kw).choices[0].message.content
    # The required first property comes first (the greedy reply may spend its tokens on
    # whitespace, which the schema allows between tokens).
    rest = whole[1:].lstrip()
    assert whole[0] == "{" and (rest.startswith('"tribe"') or '"tribe"'.startswith(rest)), whole
    assert "".join(c.choices[0].delta.content or ""
                   for c in client.chat.completions.create(**kw, stream=True)) == whole
    closed = 0
    for seed in range(6):
        chat = client.chat.completions.create(**{**kw, "temperature": 1, "max_tokens": 120},
                                              seed=seed).choices[0]
        text = client.completions.create(model="phimoe", prompt=PROMPTS[seed], max_tokens=120,
                                         temperature=1, seed=seed,
                                         extra_body={"response_format": format}).choices[0]
        for reply, finish in ((chat.message.content, chat.finish_reason),
                              (text.text, text.finish_reason)):
            if finish == "stop":
                value = json.loads(reply)
                assert list(value) in (["tribe"], ["tribe", "count"]), reply
                assert value["tribe"] in ("Judah", "Levi") and \
                    isinstance(value.get("count", 0), int), reply
                closed += 1
    assert closed >= 6


class Record(pydantic.BaseModel):
    code: str = pydantic.Field(pattern=r"^[A-Z]{2}-\d{3}$")
    id: uuid.UUID
    rating: int = pydantic.Field(ge=1, le=5)
    confidence: float = pydantic.Field(gt=0, le=1)


def test_json_schema_patterns_formats_and_bounds(server):
    """A pattern, a format (uuid) and bounded numbers in a pydantic model: the replies that end
    are Records, which pydantic checks against all of them."""
    client = server.client()
    messages = [{"role": "user", "content": "A record, please"}]
    closed = 0
    for seed in range(6):
        try:
            got = client.chat.completions.parse(model="phimoe", messages=messages,
                                                max_tokens=120, temperature=1, seed=seed,
                                                response_format=Record)
        except openai.LengthFinishReasonError:
            continue
        record = got.choices[0].message.parsed
        assert isinstance(record, Record), got.choices[0].message.content
        assert re.fullmatch(r"[A-Z]{2}-\d{3}", record.code)
        assert 1 <= record.rating <= 5 and 0 < record.confidence <= 1
        closed += 1
    assert closed >= 3


def test_json_schemas_it_cannot_hold_are_400(server):
    """A schema keyword phimoec does not hold replies to is refused, naming where it is; so is
    a response_format without a name or a schema."""
    def refusal(json_schema):
        return error_of(server.request(
            "POST", "/v1/chat/completions",
            {"model": "phimoe", "messages": [{"role": "user", "content": "Hi"}],
             "response_format": {"type": "json_schema", "json_schema": json_schema}}))

    status, error = refusal({"name": "x", "schema": {
        "type": "object", "properties": {"when": {"type": "string", "format": "hostname"}}}})
    assert (status, error["param"]) == (400, "response_format")
    assert "#/properties/when" in error["message"] and "format" in error["message"]
    for json_schema in ({"schema": {"type": "object"}}, {"name": "x"},
                        {"name": "x", "schema": {"type": "number"}},
                        {"name": "x", "schema": {"$ref": "#/$defs/Missing"}}):
        status, error = refusal(json_schema)
        assert (status, error["param"]) == (400, "response_format"), json_schema
    for format in ({"type": "xml"}, {"type": "json_schema", "json_schema": "x"}, "json"):
        status, error = error_of(server.request(
            "POST", "/v1/chat/completions",
            {"model": "phimoe", "messages": [{"role": "user", "content": "Hi"}],
             "response_format": format}))
        assert (status, error["param"]) == (400, "response_format"), format


def test_sampling_is_reproducible_with_a_seed(server):
    client = server.client()

    def run(seed):
        return client.completions.create(model="phimoe", prompt=PROMPTS[1], max_tokens=24,
                                          temperature=1.0, top_p=0.9, seed=seed,
                                          presence_penalty=0.5,
                                          frequency_penalty=0.5).choices[0].text

    assert run(7) == run(7)
    assert len({run(s) for s in range(5)}) > 1


def test_top_k_min_p_and_repetition_penalty(server):
    """The sampling extensions of vLLM and llama-server: top_k 1 and min_p 1 leave only the
    likeliest token, so any temperature and seed give the greedy reply; a repetition penalty
    changes a greedy reply that repeats itself, the same under either name; bad values are
    400 naming the field."""
    client = server.client()
    greedy = complete(client, PROMPTS[2], 24).choices[0].text
    for seed in range(3):
        for extra in ({"top_k": 1}, {"min_p": 1.0}):
            got = client.completions.create(model="phimoe", prompt=PROMPTS[2], max_tokens=24,
                                            temperature=1.5, seed=seed, extra_body=extra)
            assert got.choices[0].text == greedy, extra
    sampled = {client.completions.create(model="phimoe", prompt=PROMPTS[2], max_tokens=24,
                                         temperature=1.5, seed=seed,
                                         extra_body={"top_k": 40}).choices[0].text
               for seed in range(3)}
    assert len(sampled) > 1
    ids = client.completions.create(model="phimoe", prompt=PROMPTS[2], max_tokens=24,
                                    temperature=0, logprobs=0).choices[0].logprobs.tokens
    assert len(set(ids)) < len(ids)  # the greedy reply repeats a token
    penalized = complete(client, PROMPTS[2], 24, extra_body={"repetition_penalty": 3.0})
    assert penalized.choices[0].text != greedy
    assert complete(client, PROMPTS[2], 24, extra_body={"repeat_penalty": 3.0}) \
        .choices[0].text == penalized.choices[0].text
    for body, param in (({"top_k": -2}, "top_k"), ({"min_p": 1.5}, "min_p"),
                        ({"repetition_penalty": 0}, "repetition_penalty"),
                        ({"repeat_penalty": 1.1, "repetition_penalty": 1.1}, "repeat_penalty")):
        status, error = error_of(server.request(
            "POST", "/v1/completions", {"model": "phimoe", "prompt": "x", **body}))
        assert (status, error["param"]) == (400, param), body


# ---- errors --------------------------------------------------------------------------------

def test_malformed_json_and_bad_fields_are_400(server):
    status, error = error_of(server.request("POST", "/v1/completions", b"{not json"))
    assert status == 400 and error["type"] == "invalid_request_error"
    status, error = error_of(server.request("POST", "/v1/chat/completions", [1, 2]))
    assert status == 400
    bad_fields = [({"prompt": "x", "temperature": 5}, "temperature"),
                  ({"prompt": "x", "max_tokens": "ten"}, "max_tokens"),
                  ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
                  ({"prompt": "x", "top_p": -1}, "top_p"),
                  ({"prompt": "x", "stop": [1]}, "stop"),
                  ({"prompt": "x", "stop": ["a"] * 17}, "stop"),
                  ({"prompt": "x", "n": 65}, "n"),
                  ({"prompt": ["x"] * 33, "n": 2}, "prompt"),
                  ({"prompt": ["x", 5]}, "prompt"),
                  ({"prompt": [[1, 2], []]}, "prompt"),
                  ({"prompt": 5}, "prompt"),
                  ({"prompt": [10 ** 9]}, "prompt"),
                  ({"prompt": "x", "logprobs": 6}, "logprobs"),
                  ({"prompt": "x", "logprobs": True}, "logprobs"),
                  ({"prompt": "x", "top_logprobs": 2}, "top_logprobs"),
                  ({"prompt": "x", "echo": "yes"}, "echo"),
                  ({"prompt": "x", "suffix": "after"}, "suffix"),
                  ({"prompt": "x", "best_of": 3}, "best_of"),
                  ({"prompt": "x", "seed": 1.5}, "seed"),
                  ({"prompt": "x", "stream": "yes"}, "stream"),
                  ({"prompt": "x", "presence_penalty": 3}, "presence_penalty"),
                  ({}, "prompt")]
    for body, param in bad_fields:
        status, error = error_of(server.request("POST", "/v1/completions",
                                                {"model": "phimoe", **body}))
        assert (status, error["param"]) == (400, param), body
    status, error = error_of(server.request("POST", "/v1/completions", {"prompt": "x"}))
    assert (status, error["param"]) == (400, "model")
    status, error = error_of(server.request("POST", "/v1/chat/completions",
                                            {"model": "phimoe", "messages": [{"role": "robot",
                                                                              "content": "x"}]}))
    assert (status, error["param"]) == (400, "messages[0].role")
    status, error = error_of(server.request("POST", "/v1/chat/completions",
                                            {"model": "phimoe", "tools": [],
                                             "messages": [{"role": "user", "content": "x"}]}))
    assert (status, error["param"]) == (400, "tools")
    with pytest.raises(openai.BadRequestError) as e:
        server.client().chat.completions.create(model="phimoe", messages=[], max_tokens=3)
    assert e.value.status_code == 400
    for extra, param in [({"top_logprobs": 2}, "top_logprobs"), ({"echo": True}, "echo"),
                         ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
                         ({"logprobs": 1}, "logprobs")]:
        status, error = error_of(server.request(
            "POST", "/v1/chat/completions",
            {"model": "phimoe", "messages": [{"role": "user", "content": "x"}], **extra}))
        assert (status, error["param"]) == (400, param), extra


def test_unknown_routes_and_models_are_404(server):
    status, error = error_of(server.get("/v1/nothing"))
    assert status == 404
    status, error = error_of(server.request("POST", "/v2/completions", {}))
    assert status == 404
    with pytest.raises(openai.NotFoundError) as e:
        server.client().completions.create(model="gpt-5", prompt="x", max_tokens=2)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        server.client().models.retrieve("gpt-5")


def test_over_long_input_is_413(server):
    status, error = error_of(server.request("POST", "/v1/completions",
                                            {"model": "phimoe", "prompt": [5] * (CTX + 10)}))
    assert (status, error["code"]) == (413, "context_length_exceeded")
    with pytest.raises(openai.APIStatusError) as e:
        server.client().chat.completions.create(
            model="phimoe", messages=[{"role": "user", "content": "And God said " * CTX}],
            max_tokens=2)
    assert e.value.status_code == 413


def test_wrong_api_key_is_401(compiled):
    s = Server(compiled, "--api-key", "sesame", "-c", "128", "--parallel", "1")
    try:
        with pytest.raises(openai.AuthenticationError) as e:
            s.client("wrong").models.list()
        assert e.value.status_code == 401
        status, error = error_of(s.request("POST", "/v1/completions", {"model": "phimoe"}))
        assert status == 401 and error["code"] == "invalid_api_key"
        assert s.client("sesame").models.list().data[0].id == "phimoe"
        assert complete(s.client("sesame"), "And", 3).usage.completion_tokens >= 1
        assert s.get("/health")[0] == 200  # no key needed
    finally:
        assert s.stop()[0] == 0


# ---- a slow model: queue, disconnect, shutdown ------------------------------------------------

@pytest.fixture()
def slow(compiled):
    s = Server(compiled, "--parallel", "1", "--queue-size", "1", "-c", str(CTX),
               "--step-delay-ms", "20")
    yield s
    if s.proc.poll() is None:
        s.stop()


def test_full_queue_is_503_and_disconnect_frees_the_sequence(slow):
    client = slow.client()
    total_blocks = slow.metrics()["phimoe_kv_blocks_total"]
    # A: a long stream that holds the only slot (about 4 s at 20 ms a step).
    a = client.completions.create(model="phimoe", prompt=PROMPTS[0], max_tokens=200,
                                  temperature=0, stream=True, extra_body={"ignore_eos": True})
    first = next(iter(a))
    assert first.choices[0].text is not None
    slow.wait_metric("phimoe_active_sequences", lambda v: v == 1)
    # B waits in the queue (which holds one)...
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        b = pool.submit(complete, client, PROMPTS[1], 4)
        slow.wait_metric("phimoe_queue_depth", lambda v: v == 1)
        # ... so C is refused.
        with pytest.raises(openai.APIStatusError) as e:
            complete(client, PROMPTS[2], 4)
        assert e.value.status_code == 503
        assert e.value.body["code"] == "queue_full"
        assert slow.metrics()["phimoe_requests_rejected_total"] == 1
        # A's client goes away: its slot and blocks are freed at once, B runs.
        generated_before = slow.metrics()["phimoe_generated_tokens_total"]
        a.close()
        assert b.result(timeout=30).usage.completion_tokens >= 1
    slow.wait_metric("phimoe_active_sequences", lambda v: v == 0)
    m = slow.metrics()
    assert m["phimoe_kv_blocks_free"] == total_blocks
    # A made far fewer than its 200 tokens: it stopped when the client left.
    assert m["phimoe_generated_tokens_total"] - generated_before < 100
    assert slow.get("/health")[0] == 200


def test_sigint_during_a_stream_stops_cleanly(slow):
    stream = slow.client().completions.create(model="phimoe", prompt=PROMPTS[0], max_tokens=200,
                                              temperature=0, stream=True,
                                              extra_body={"ignore_eos": True})
    next(iter(stream))
    rc, log = slow.stop(signal.SIGINT)
    assert rc == 0, log
    assert "SIGINT: stopping" in log and "stopped" in log


# ---- load ----------------------------------------------------------------------------------

def test_concurrent_load_matches_single_requests(server, long_reply):
    # 16 clients x 8 requests on 4 sequence slots: greedy and seeded sampled requests,
    # streamed and not; each answer must equal the same request's answer alone.
    n = long_reply

    def ask(c, prompt, sampled, stream):
        kw = {"temperature": 1.0, "top_p": 1.0, "seed": 99} if sampled else {"temperature": 0}
        r = c.completions.create(model="phimoe", prompt=prompt, max_tokens=n, stream=stream, **kw)
        return "".join(ch.choices[0].text for ch in r) if stream else r.choices[0].text

    client = server.client()
    expected = {(p, sampled): ask(client, p, sampled, False)
                for p in PROMPTS for sampled in (False, True)}
    before = server.metrics()
    clients, per_client = 16, 8

    def worker(i):
        c = server.client()
        got = []
        for j in range(per_client):
            key = (PROMPTS[(i + j) % len(PROMPTS)], (i + j) % 3 == 0)
            got.append((key, ask(c, *key, stream=j % 2 == 1)))
        return got

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = [r for f in [pool.submit(worker, i) for i in range(clients)]
                   for r in f.result(timeout=600)]
    assert len(results) == clients * per_client
    for key, text in results:
        assert text == expected[key], key
    after = server.metrics()
    assert after["phimoe_requests_total"] - before["phimoe_requests_total"] == clients * per_client
    steps = after["phimoe_batch_steps_total"] - before["phimoe_batch_steps_total"]
    tokens = after["phimoe_generated_tokens_total"] - before["phimoe_generated_tokens_total"]
    assert steps < tokens / 2, (steps, tokens)  # decode steps were shared
    assert after["phimoe_active_sequences"] == 0 and after["phimoe_queue_depth"] == 0
    assert server.get("/health")[0] == 200


def test_throughput_benchmark_counts_what_the_server_did(compiled, tmp_path):
    # bench/serve_throughput.py (docs/BENCHMARKS.md's server table) on its own server: every
    # reply has the tokens asked for, one stream takes a step per token (the prompt's step
    # gives the first), three share their steps.
    result = tmp_path / "throughput.json"
    proc = subprocess.run(
        [sys.executable, str(oracle.ROOT / "bench" / "serve_throughput.py"), str(compiled),
         "--concurrency", "1,3", "--requests", "2", "--max-tokens", "8", "--prompt-tokens", "5",
         "--parallel", "4", "--ctx-size", "64", "--threads", "1", "--json", str(result)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = {r["concurrency"]: r for r in json.loads(result.read_text())["ours"]}
    assert sorted(rows) == [1, 3]
    for c, r in rows.items():
        assert r["requests"] == 2 * c and r["generated_tokens"] == 2 * c * 8
        assert 0 < r["engine_busy"] <= 1.05 and r["tokens_per_s"] > 0
    assert rows[1]["steps_per_token"] == pytest.approx(1.0)
    assert 1 / 3 <= rows[3]["steps_per_token"] < 1.0
    assert "| 3 | 6 | 48 |" in proc.stdout  # the Markdown row: streams, requests, tokens


def test_sigterm_stops_cleanly(compiled):
    s = Server(compiled, "-c", "64", "--parallel", "2")
    assert complete(s.client(), "And", 2).choices
    rc, log = s.stop(signal.SIGTERM)
    assert rc == 0, log
    assert "SIGTERM: stopping" in log


def test_preemption_for_kv_blocks_keeps_outputs(compiled):
    # 8 blocks of 16 positions make one context of 128; 10 in all: four sequences that
    # grow to ~100 positions cannot all keep theirs, so some go back to the queue and are
    # recomputed later, without changing their greedy output. (The step delay makes the
    # four requests overlap even on a model this small.)
    s = Server(compiled, "--parallel", "4", "-c", "128", "--kv-blocks", "10",
               "--step-delay-ms", "5")
    try:
        client = s.client()
        def run(c, p):
            return complete(c, p, 96, extra_body={"ignore_eos": True}).choices[0].text

        expected = {p: run(client, p) for p in PROMPTS[:4]}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda p: run(s.client(), p), PROMPTS[:4]))
        assert got == [expected[p] for p in PROMPTS[:4]]
        m = s.metrics()
        assert m["phimoe_preemptions_total"] > 0
        assert m["phimoe_kv_blocks_free"] == 10
    finally:
        assert s.stop()[0] == 0
