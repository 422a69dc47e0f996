"""Text in, text out on the example model (examples/tiny-phimoe): phimoe-bin's greedy
text equals transformers' generate, chat follows the Phi-3.5 format, sampling is
reproducible, and bad input is refused."""
import json
import pathlib
import subprocess

import pytest
import torch
from transformers import AutoTokenizer, PhimoeForCausalLM

import oracle

oracle.use_reference_longrope()
EXAMPLE = oracle.ROOT / "examples" / "tiny-phimoe"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "out"
    proc = oracle.compile_model(EXAMPLE, out, "--quant", "f32")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def reference():
    model = PhimoeForCausalLM.from_pretrained(EXAMPLE, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(EXAMPLE)


def phimoe_bin(out, *args, stdin=None):
    return subprocess.run([str(out / "phimoe-bin"), *args], input=stdin, capture_output=True,
                          text=True)


@pytest.mark.parametrize("prompt", ["And God said", "In the beginning", "And it came to pass"])
def test_greedy_text_equals_transformers_generate(compiled, reference, prompt):
    model, tokenizer = reference
    n = 80  # long enough to cross original_max_position_embeddings
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None,
                             pad_token_id=tokenizer.eos_token_id)
    # The continuation as text: what it adds to the prompt's text (decoding the new ids alone
    # would drop the space that opens them).
    shown = tokenizer.decode(ids[0], skip_special_tokens=True)
    whole = tokenizer.decode(out[0], skip_special_tokens=True)
    assert whole.startswith(shown)
    expected = whole[len(shown):]
    proc = phimoe_bin(compiled, "-p", prompt, "-n", str(n), "--temperature", "0",
                      "--no-display-prompt")
    assert proc.returncode == 0, proc.stderr
    ours = proc.stdout[:-1]  # phimoe-bin ends with a newline
    # generate stopped only at max_new_tokens (no eos given); phimoe-bin stops at
    # eos too, so compare up to what both produced.
    assert ours == expected[: len(ours)] and len(ours) > 0
    if tokenizer.eos_token_id not in out[0, ids.shape[1]:].tolist():
        assert ours == expected
    assert "tokens/s" in proc.stderr


def test_tokenize_and_detokenize_match_the_hf_tokenizer(compiled, reference):
    _, tokenizer = reference
    for text in ["And God said, Let there be light: and there was light.",
                 "  two  spaces\tand a tab\nnewline", "Ünïcödé ✓ 🙂", "<|user|>\nHi<|end|>\n"]:
        proc = phimoe_bin(compiled, "tokenize", text)
        assert proc.returncode == 0, proc.stderr
        ids = [int(x) for x in proc.stdout.strip().split(",")]
        assert ids == tokenizer(text).input_ids, text
        proc = phimoe_bin(compiled, "detokenize", ",".join(map(str, ids)))
        assert proc.stdout[:-1] == tokenizer.decode(ids), text


def test_chat_turns_follow_the_template(compiled, reference):
    model, tokenizer = reference
    messages = [{"role": "system", "content": "Speak as the scripture does."},
                {"role": "user", "content": "Who made the heaven and the earth?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=[end],
                             pad_token_id=end)
    reply = out[0, ids.shape[1]:].tolist()
    if reply and reply[-1] == end:
        reply = reply[:-1]
    expected = tokenizer.decode(reply)
    proc = phimoe_bin(compiled, "chat", "--system", messages[0]["content"], "--temperature",
                      "0", "-n", "40", stdin=messages[1]["content"] + "\nAnd then?\n")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert lines[0] == expected
    assert len(lines) >= 3  # a second reply (maybe empty) for the second message


def test_same_seed_same_output(compiled):
    def run(seed):
        proc = phimoe_bin(compiled, "-p", "And", "-n", "30", "--temperature", "1.0",
                          "--seed", str(seed), "--no-display-prompt")
        assert proc.returncode == 0, proc.stderr
        return proc.stdout
    assert run(11) == run(11)
    assert len({run(11), run(12), run(13)}) > 1


@pytest.mark.parametrize("args,needle", [
    (["-p", "x", "--bogus"], "bogus"),
    (["-p", "x", "--temperature", "-1"], "temperature"),
    (["-p", "x", "--top-p", "abc"], "top-p"),
    (["-p", "And God said " * 40, "-c", "16"], "context"),
    ([], "nothing to do"),
    (["-p", "x", "--json-schema", '{"type": "string", "format": "hostname"}'],
     "--json-schema: the JSON schema at '#/format': the format 'hostname' is not supported"),
    (["-p", "x", "--json-schema", '{"type": "object", "properties": {"n": {"multipleOf": 2}}}'],
     "at '#/properties/n'"),
    (["-p", "x", "--json-schema", "{not json"], "--json-schema: the JSON schema is not JSON"),
    (["-p", "x", "--json-schema-file", "/nonexistent/schema.json"],
     "/nonexistent/schema.json: cannot read"),
    (["-p", "x", "--json", "--json-schema", "{}"], "excludes"),
    (["tokenize", "x", "--json"], "apply to -p and chat"),
])
def test_bad_arguments(compiled, args, needle):
    proc = phimoe_bin(compiled, *args)
    assert proc.returncode != 0
    assert needle in proc.stderr, proc.stderr
    assert proc.stdout == ""


FAMILY = {"type": "object", "additionalProperties": False, "required": ["father", "sons"],
          "properties": {
              "father": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]},
              "sons": {"type": "array", "maxItems": 3, "items": {
                  "type": "object", "additionalProperties": False,
                  "required": ["name", "firstborn"],
                  "properties": {"name": {"type": "string", "maxLength": 10},
                                 "tribe": {"enum": ["Judah", "Levi", "Dan"]},
                                 "firstborn": {"type": "boolean"}}}}}}


def is_family(value):
    """Whether `value` is one of FAMILY, its properties in the schema's order."""
    if list(value) != ["father", "sons"] or not (value["father"] is None or (
            isinstance(value["father"], str) and len(value["father"]) <= 8)):
        return False
    return len(value["sons"]) <= 3 and all(
        list(son) in (["name", "firstborn"], ["name", "tribe", "firstborn"])
        and len(son["name"]) <= 10 and son.get("tribe", "Dan") in ("Judah", "Levi", "Dan")
        and isinstance(son["firstborn"], bool) for son in value["sons"])


def test_json_schema_holds_the_reply(compiled, tmp_path):
    """-p and chat with --json-schema-file, -j and --json: each reply is a prefix of a value of
    the schema (of an object), and the replies that end before -n are one, whatever the seed.
    (The example model knows no JSON: only the mask makes its replies such values.)"""
    schema = tmp_path / "family.json"
    schema.write_text(json.dumps(FAMILY))
    whole = 0
    for seed in range(6):
        proc = phimoe_bin(compiled, "-p", "And Jacob begat", "-n", "150", "--temperature", "1",
                          "--seed", str(seed), "--no-display-prompt",
                          "--json-schema-file", str(schema))
        assert proc.returncode == 0, proc.stderr
        reply = proc.stdout[:-1]
        assert reply.startswith('{'), reply
        try:
            value = json.loads(reply)
        except json.JSONDecodeError:
            continue  # cut by -n
        assert is_family(value), reply
        whole += 1
    assert whole >= 3
    # chat: every reply, one per line.
    proc = phimoe_bin(compiled, "chat", "-n", "150", "--temperature", "1", "--seed", "3",
                      "-j", json.dumps(FAMILY), stdin="Name the sons\nAnd their tribes\n")
    assert proc.returncode == 0, proc.stderr
    # Replies may hold newlines (whitespace between tokens): the first is read as JSON up to
    # its end, where the second begins on the next line.
    first, end = json.JSONDecoder().raw_decode(proc.stdout)
    assert is_family(first), proc.stdout
    assert proc.stdout[end:end + 2] == "\n{", proc.stdout
    proc = phimoe_bin(compiled, "-p", "And", "-n", "40", "--temperature", "0", "--json",
                      "--no-display-prompt")
    assert proc.returncode == 0 and proc.stdout.startswith("{"), proc.stdout
