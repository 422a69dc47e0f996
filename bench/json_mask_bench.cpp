// json_mask_bench - what the token mask of a structured reply (runtime/model/json_mode.cpp)
// costs per token: JsonMask::apply, which walks a trie of the vocabulary, against probing every
// token on its own (a copy of the state and its bytes pushed), on the same prefixes, for JSON
// mode and for a JSON schema.
//
//   build/test/runtime/phimoe-json-mask-bench VOCAB [ROUNDS]
//
// VOCAB: a tokenizer.json or a GGUF vocabulary (../shared/testdata/vocab/ggml-vocab-phi-3.gguf:
// Phi-3's 32064 tokens). Prints one line per prefix: tokens allowed, ms per apply, ms per probe
// pass.
#include "phimoe_rt/json_mode.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using namespace phimoe_rt;

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

int probe_all(const JsonMask &mask, const JsonPrefix &prefix, int vocab, float *logits) {
  int allowed = 0;
  for (int32_t id = 0; id < vocab; ++id) {
    JsonPrefix p = prefix;
    if (!mask.bytes(id).empty() && p.push(mask.bytes(id)))
      ++allowed;
    else
      logits[id] = -INFINITY;
  }
  return allowed;
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s VOCAB [ROUNDS]\n", argv[0]);
    return 2;
  }
  const std::string path = argv[1];
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 50;
  std::string error;
  auto tok = path.size() > 5 && path.substr(path.size() - 5) == ".gguf"
                 ? Tokenizer::load_gguf(path, error)
                 : Tokenizer::load_hf(path, "", error);
  if (!tok) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), error.c_str());
    return 1;
  }
  const int vocab = tok->vocab_size();
  const auto t_build = std::chrono::steady_clock::now();
  JsonMask mask(*tok, vocab);
  std::printf("vocabulary %d tokens, mask built in %.1f ms\n", vocab, ms_since(t_build));
  const auto schema = JsonGrammar::from_schema(nlohmann::ordered_json::parse(R"({
    "type": "object", "additionalProperties": false, "required": ["father", "sons"],
    "properties": {
      "father": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]},
      "sons": {"type": "array", "maxItems": 3, "items": {
        "type": "object", "additionalProperties": false,
        "required": ["name", "tribe", "firstborn"],
        "properties": {"name": {"type": "string", "maxLength": 10},
                       "tribe": {"enum": ["Judah", "Levi", "Dan"]},
                       "firstborn": {"type": "boolean"}}}}}})"));
  struct Case {
    const char *what;
    const JsonGrammar *grammar;
    const char *prefix;
  };
  const Case cases[] = {
      {"json_object", JsonGrammar::any_object().get(), ""},
      {"json_object", JsonGrammar::any_object().get(), "{\"a\": [1, {\"b\": \"text "},
      {"json_object", JsonGrammar::any_object().get(), "{\"a\": 12"},
      {"schema", schema.get(), ""},
      {"schema", schema.get(), "{\"father\": \"Isa"},
      {"schema", schema.get(), "{\"father\": null, \"sons\": [{\"name\": \"Reuben\", \"tribe\""},
      {"schema", schema.get(), "{\"father\": null, \"sons\": [{\"name\": \"Reuben\", \"tribe\": "
                               "\"Dan\", \"firstborn\": "},
  };
  std::vector<float> logits(static_cast<size_t>(vocab));
  for (const Case &c : cases) {
    JsonPrefix prefix(*c.grammar);
    if (!prefix.push(std::string(c.prefix))) {
      std::fprintf(stderr, "the prefix %s is refused\n", c.prefix);
      return 1;
    }
    int allowed = 0, probed = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < rounds; ++r)
      allowed = mask.apply(prefix, logits.data());
    const double trie = ms_since(t0) / rounds;
    t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < rounds; ++r)
      probed = probe_all(mask, prefix, vocab, logits.data());
    const double probe = ms_since(t0) / rounds;
    if (allowed != probed) {
      std::fprintf(stderr, "apply and the probes disagree after %s: %d, %d\n", c.prefix,
                   allowed, probed);
      return 1;
    }
    std::printf("%-11s %-70s allowed %6d  apply %.3f ms  probes %.3f ms\n", c.what,
                ("'" + std::string(c.prefix) + "'").c_str(), allowed, trie, probe);
  }
  return 0;
}
