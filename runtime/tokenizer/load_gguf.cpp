// load_gguf.cpp - the tokenizer.ggml.* keys of a GGUF file as a spec: "llama" (SentencePiece
// BPE by scores, byte fallback, "▁" prefix) or "gpt2" (byte-level BPE by merges).
#include "gguf_reader.h"
#include "loaders.h"

#include <algorithm>
#include <cctype>

namespace phimoe_rt::tok {

namespace {

// llama.cpp's token types.
enum token_type : int64_t {
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6,
};

const char *const space_marker = "\xE2\x96\x81"; // U+2581

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

struct key_reader {
  const gguf_metadata &m;
  const std::string &path;
  std::string &error;

  const gguf_value *get(const std::string &key, gguf_type type, bool required) {
    const gguf_value *v = m.find(key);
    if (!v) {
      if (required)
        error = path + ": no '" + key + "' in the GGUF metadata";
      return nullptr;
    }
    bool ok = type == gguf_type::u32 ? v->is_integer() : v->type == type;
    if (!ok) {
      error = path + ": '" + key + "' is a " + gguf_type_name(v->type) + ", expected a " +
              (type == gguf_type::u32 ? "integer" : gguf_type_name(type));
      return nullptr;
    }
    return v;
  }
  // An array of `elem` elements (integers or floats where those are asked for) of length n.
  const gguf_value *array(const std::string &key, bool floats, size_t n, bool required) {
    const gguf_value *v = get(key, gguf_type::array, required);
    if (!v)
      return nullptr;
    bool ok = floats ? (v->elem == gguf_type::f32 || v->elem == gguf_type::f64)
                     : (v->elem != gguf_type::string && v->elem != gguf_type::array &&
                        v->elem != gguf_type::f32 && v->elem != gguf_type::f64);
    if (!ok) {
      error = path + ": '" + key + "' is an array of " + gguf_type_name(v->elem) + ", expected " +
              (floats ? "floats" : "integers");
      return nullptr;
    }
    if (v->count != n) {
      error = path + ": '" + key + "' has " + std::to_string(v->count) + " entries for " +
              std::to_string(n) + " tokens";
      return nullptr;
    }
    return v;
  }
};

} // namespace

bool load_gguf_spec(const std::string &path, spec &s, std::string &error) {
  std::optional<gguf_metadata> m = read_gguf_metadata(path, error);
  if (!m)
    return false;
  error.clear();
  key_reader k{*m, path, error};
  const gguf_value *model = k.get("tokenizer.ggml.model", gguf_type::string, true);
  if (!model)
    return false;
  const gguf_value *tokens = k.get("tokenizer.ggml.tokens", gguf_type::array, true);
  if (!tokens)
    return false;
  if (tokens->elem != gguf_type::string) {
    error = path + ": 'tokenizer.ggml.tokens' is not an array of strings";
    return false;
  }
  const size_t n = tokens->strings.size();
  if (n == 0 || n > 0x7FFFFFFF) {
    error = path + ": 'tokenizer.ggml.tokens' has " + std::to_string(n) + " entries";
    return false;
  }
  const bool llama = model->str == "llama";
  const bool gpt2 = model->str == "gpt2";
  if (!llama && !gpt2) {
    error = path + ": tokenizer.ggml.model '" + model->str +
            "' is not supported (only \"llama\" and \"gpt2\")";
    return false;
  }
  const gguf_value *types = k.array("tokenizer.ggml.token_type", false, n, false);
  if (!types && !error.empty())
    return false;

  s = spec{};
  s.pieces = tokens->strings;
  s.has_piece.assign(n, 1);
  s.vocab.reserve(n);
  for (size_t id = 0; id < n; ++id)
    s.vocab.set(s.pieces[id], static_cast<int32_t>(id));
  auto type_of = [&](size_t id) { return types ? types->ints[id] : int64_t{normal}; };

  // Optional ids and flags.
  auto opt_id = [&](const char *key, std::optional<int32_t> &dst) {
    const gguf_value *v = k.get(key, gguf_type::u32, false);
    if (!v)
      return error.empty();
    if (v->i < 0 || static_cast<uint64_t>(v->i) >= n) {
      error = path + ": '" + key + "' is " + std::to_string(v->i) + ", outside the " +
              std::to_string(n) + " tokens";
      return false;
    }
    dst = static_cast<int32_t>(v->i);
    return true;
  };
  auto opt_bool = [&](const char *key, bool &dst) {
    const gguf_value *v = k.get(key, gguf_type::boolean, false);
    if (v)
      dst = v->i != 0;
    return error.empty();
  };
  std::optional<int32_t> unk;
  if (!opt_id("tokenizer.ggml.bos_token_id", s.bos) ||
      !opt_id("tokenizer.ggml.eos_token_id", s.eos) ||
      !opt_id("tokenizer.ggml.unknown_token_id", unk))
    return false;
  // llama.cpp (and transformers) add BOS to a SentencePiece vocabulary unless told otherwise.
  s.add_bos = llama;
  bool add_space_prefix = true;
  if (!opt_bool("tokenizer.ggml.add_bos_token", s.add_bos) ||
      !opt_bool("tokenizer.ggml.add_eos_token", s.add_eos) ||
      !opt_bool("tokenizer.ggml.add_space_prefix", add_space_prefix))
    return false;
  if (const gguf_value *t = k.get("tokenizer.chat_template", gguf_type::string, false))
    s.chat_template = t->str;
  else if (!error.empty())
    return false;

  // Tokens matched in the text before the model: control and user-defined ones, and the unk
  // token (what transformers' GGUF converter adds as added tokens; llama.cpp also matches the
  // other unknown-typed tokens, such as Phi-3's [PAD32011]..., which no tokenizer.json has).
  // Special (skipped by decode(ids, true)): control tokens and unk. Phi-3 vocabularies strip the
  // whitespace after them, as the tokenizer.json of those models does and llama.cpp does by
  // the model's name; we also key it on the architecture (phi3, phimoe).
  std::string name, arch;
  if (const gguf_value *v = m->find("general.name"); v && v->type == gguf_type::string)
    name = lower(v->str);
  if (const gguf_value *v = m->find("general.architecture"); v && v->type == gguf_type::string)
    arch = lower(v->str);
  bool phi3 = name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos ||
              arch == "phi3" || arch == "phimoe";
  for (size_t id = 0; id < n; ++id) {
    int64_t t = type_of(id);
    bool is_unk = unk && *unk == static_cast<int32_t>(id);
    if (t != control && t != user_defined && !is_unk)
      continue;
    if (s.pieces[id].empty())
      continue;
    added_token a;
    a.content = s.pieces[id];
    a.id = static_cast<int32_t>(id);
    a.special = t == control || is_unk;
    const std::string &c = a.content;
    a.rstrip = phi3 && c != "<unk>" && c != "<s>" && c != "<|endoftext|>";
    s.added.push_back(std::move(a));
  }

  if (llama) {
    const gguf_value *scores = k.array("tokenizer.ggml.scores", true, n, true);
    if (!scores)
      return false;
    s.model = model_kind::bpe_scores;
    s.scores.resize(n);
    s.mergeable.resize(n);
    s.unused.resize(n);
    for (size_t id = 0; id < n; ++id) {
      int64_t t = type_of(id);
      s.scores[id] = static_cast<float>(scores->floats[id]);
      s.mergeable[id] = t == normal || t == user_defined || t == unused;
      s.unused[id] = t == unused;
    }
    s.byte_fallback = true;
    s.unk = unk;
    if (add_space_prefix)
      s.normalizer.push_back({norm_step::kind::prepend, "", space_marker});
    s.normalizer.push_back({norm_step::kind::replace, " ", space_marker});
    s.has_decoder = true;
    dec_step d;
    d.k = dec_step::kind::replace;
    d.pattern = space_marker;
    d.content = " ";
    s.decoder.push_back(d);
    d = dec_step{};
    d.k = dec_step::kind::byte_fallback;
    s.decoder.push_back(d);
    d.k = dec_step::kind::fuse;
    s.decoder.push_back(d);
    if (add_space_prefix) {
      dec_step strip;
      strip.k = dec_step::kind::strip;
      strip.content = " ";
      strip.start = 1;
      s.decoder.push_back(strip);
    }
    return true;
  }

  // gpt2: byte-level BPE with the merges in rank order.
  const gguf_value *pre = k.get("tokenizer.ggml.pre", gguf_type::string, false);
  if (!pre && !error.empty())
    return false;
  if (pre && pre->str != "gpt-2" && pre->str != "phi-2" && pre->str != "default") {
    error = path + ": tokenizer.ggml.pre '" + pre->str +
            "' is not supported (only the GPT-2 pre-tokenizer: \"gpt-2\", \"phi-2\")";
    return false;
  }
  const gguf_value *merges = k.get("tokenizer.ggml.merges", gguf_type::array, true);
  if (!merges)
    return false;
  if (merges->elem != gguf_type::string) {
    error = path + ": 'tokenizer.ggml.merges' is not an array of strings";
    return false;
  }
  s.model = model_kind::bpe_ranks;
  s.merges.reserve(merges->strings.size());
  for (size_t r = 0; r < merges->strings.size(); ++r) {
    const std::string &line = merges->strings[r];
    size_t sp = line.find(' ', 1);
    if (sp == std::string::npos) {
      error = path + ": tokenizer.ggml.merges[" + std::to_string(r) + "] '" + line +
              "' is not two pieces separated by a space";
      return false;
    }
    std::string a = line.substr(0, sp), b = line.substr(sp + 1);
    int32_t ia = s.vocab.find(a), ib = s.vocab.find(b), im = s.vocab.find(a + b);
    if (ia < 0 || ib < 0 || im < 0) {
      error = path + ": tokenizer.ggml.merges[" + std::to_string(r) + "] '" + line +
              "' names a piece that is not in the vocabulary";
      return false;
    }
    uint64_t key =
        static_cast<uint64_t>(static_cast<uint32_t>(ia)) << 32 | static_cast<uint32_t>(ib);
    s.merges[key] = {static_cast<int32_t>(r), im};
  }
  pre_step p;
  p.k = pre_step::kind::byte_level;
  p.add_prefix_space = false;
  p.use_regex = true;
  s.pre_tokenizer.push_back(p);
  s.has_decoder = true;
  dec_step d;
  d.k = dec_step::kind::byte_level;
  s.decoder.push_back(d);
  return true;
}

} // namespace phimoe_rt::tok
