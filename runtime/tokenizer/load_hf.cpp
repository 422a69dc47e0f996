// load_hf.cpp - a Hugging Face tokenizer.json (BPE model) and tokenizer_config.json as a spec.
#include "loaders.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace phimoe_rt::tok {

namespace {

using json = nlohmann::json;

// Errors name the file and the JSON path of the field; they are thrown only within this file.
struct load_error {
  std::string what;
};

[[noreturn]] void fail(const std::string &where, const std::string &what) {
  throw load_error{where + ": " + what};
}

json read_json(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw load_error{path + ": cannot open (" + std::strerror(errno) + ")"};
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in && !in.eof())
    throw load_error{path + ": read error"};
  try {
    return json::parse(ss.str());
  } catch (const json::parse_error &e) {
    throw load_error{path + ": malformed JSON: " + e.what()};
  }
}

// Typed access with defaults: a missing or null field gives the default.
struct fields {
  const json &obj;
  std::string where; // "file: a.b"

  const json *get(const char *key) const {
    if (!obj.is_object())
      return nullptr;
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  std::string at(const char *key) const {
    return where + (!where.empty() && where.back() == ':' ? " " : ".") + key;
  }
  bool boolean(const char *key, bool dflt) const {
    const json *v = get(key);
    if (!v)
      return dflt;
    if (!v->is_boolean())
      fail(at(key), "expected true or false, found " + std::string(v->type_name()));
    return v->get<bool>();
  }
  std::string string(const char *key, const std::string &dflt) const {
    const json *v = get(key);
    if (!v)
      return dflt;
    if (!v->is_string())
      fail(at(key), "expected a string, found " + std::string(v->type_name()));
    return v->get<std::string>();
  }
  int64_t integer(const char *key, int64_t dflt) const {
    const json *v = get(key);
    if (!v)
      return dflt;
    if (!v->is_number_integer())
      fail(at(key), "expected an integer, found " + std::string(v->type_name()));
    return v->get<int64_t>();
  }
  const json &object(const char *key) const {
    const json *v = get(key);
    if (!v || !v->is_object())
      fail(at(key), v ? "expected an object" : "missing");
    return *v;
  }
  std::string type() const { return string("type", ""); }
};

// Replace's pattern: {"String": s}; a regex pattern is not supported.
std::string literal_pattern(const fields &f) {
  const json &p = f.object("pattern");
  if (p.contains("String") && p["String"].is_string())
    return p["String"].get<std::string>();
  if (p.contains("Regex"))
    fail(f.at("pattern"), "a Regex pattern is not supported (only {\"String\": ...})");
  fail(f.at("pattern"), "expected {\"String\": ...}");
}

prepend_scheme scheme_of(const fields &f) {
  std::string s = f.string("prepend_scheme", "");
  if (s.empty())
    return f.boolean("add_prefix_space", true) ? prepend_scheme::always : prepend_scheme::never;
  if (s == "always")
    return prepend_scheme::always;
  if (s == "first")
    return prepend_scheme::first;
  if (s == "never")
    return prepend_scheme::never;
  fail(f.at("prepend_scheme"), "unknown value '" + s + "'");
}

void parse_normalizer(const json &j, const std::string &where, std::vector<norm_step> &out) {
  if (j.is_null())
    return;
  fields f{j, where};
  std::string type = f.type();
  if (type == "Sequence") {
    const json *list = f.get("normalizers");
    if (!list || !list->is_array())
      fail(f.at("normalizers"), "expected an array");
    for (size_t i = 0; i < list->size(); ++i)
      parse_normalizer((*list)[i], f.at("normalizers") + "[" + std::to_string(i) + "]", out);
  } else if (type == "Prepend") {
    out.push_back({norm_step::kind::prepend, "", f.string("prepend", "")});
  } else if (type == "Replace") {
    out.push_back({norm_step::kind::replace, literal_pattern(f), f.string("content", "")});
  } else {
    fail(where,
         "normalizer type '" + type + "' is not supported (only Prepend, Replace, Sequence)");
  }
}

void parse_pre_tokenizer(const json &j, const std::string &where, std::vector<pre_step> &out) {
  if (j.is_null())
    return;
  fields f{j, where};
  std::string type = f.type();
  if (type == "Sequence") {
    const json *list = f.get("pretokenizers");
    if (!list || !list->is_array())
      fail(f.at("pretokenizers"), "expected an array");
    for (size_t i = 0; i < list->size(); ++i)
      parse_pre_tokenizer((*list)[i], f.at("pretokenizers") + "[" + std::to_string(i) + "]", out);
  } else if (type == "Metaspace") {
    pre_step p;
    p.k = pre_step::kind::metaspace;
    p.replacement = f.string("replacement", p.replacement);
    p.scheme = scheme_of(f);
    p.split = f.boolean("split", true);
    out.push_back(p);
  } else if (type == "ByteLevel") {
    pre_step p;
    p.k = pre_step::kind::byte_level;
    p.add_prefix_space = f.boolean("add_prefix_space", true);
    p.use_regex = f.boolean("use_regex", true);
    out.push_back(p);
  } else {
    fail(where, "pre_tokenizer type '" + type +
                    "' is not supported (only Metaspace, ByteLevel, Sequence)");
  }
}

void parse_decoder(const json &j, const std::string &where, std::vector<dec_step> &out) {
  fields f{j, where};
  std::string type = f.type();
  dec_step d;
  if (type == "Sequence") {
    const json *list = f.get("decoders");
    if (!list || !list->is_array())
      fail(f.at("decoders"), "expected an array");
    for (size_t i = 0; i < list->size(); ++i)
      parse_decoder((*list)[i], f.at("decoders") + "[" + std::to_string(i) + "]", out);
    return;
  } else if (type == "Replace") {
    d.k = dec_step::kind::replace;
    d.pattern = literal_pattern(f);
    d.content = f.string("content", "");
  } else if (type == "ByteFallback") {
    d.k = dec_step::kind::byte_fallback;
  } else if (type == "Fuse") {
    d.k = dec_step::kind::fuse;
  } else if (type == "Strip") {
    d.k = dec_step::kind::strip;
    d.content = f.string("content", " ");
    int64_t start = f.integer("start", 0), stop = f.integer("stop", 0);
    if (start < 0 || stop < 0)
      fail(where, "Strip start/stop must not be negative");
    d.start = static_cast<size_t>(start);
    d.stop = static_cast<size_t>(stop);
  } else if (type == "Metaspace") {
    d.k = dec_step::kind::metaspace;
    d.replacement = f.string("replacement", "\xE2\x96\x81");
    d.scheme = scheme_of(f);
  } else if (type == "ByteLevel") {
    d.k = dec_step::kind::byte_level;
  } else {
    fail(where, "decoder type '" + type +
                    "' is not supported (only Replace, ByteFallback, Fuse, "
                    "Strip, Metaspace, ByteLevel, Sequence)");
  }
  out.push_back(d);
}

// The special tokens a TemplateProcessing post-processor puts before and after a single
// sequence (the ids it would add with add_special_tokens).
void parse_post_processor(const json &j, const std::string &where, std::optional<int32_t> &bos,
                          std::optional<int32_t> &eos) {
  if (j.is_null() || !j.is_object())
    return;
  fields f{j, where};
  std::string type = f.type();
  if (type == "Sequence") {
    if (const json *list = f.get("processors"); list && list->is_array())
      for (size_t i = 0; i < list->size(); ++i)
        parse_post_processor((*list)[i], f.at("processors") + "[" + std::to_string(i) + "]", bos,
                             eos);
    return;
  }
  if (type != "TemplateProcessing")
    return; // ByteLevel and the others add no tokens to a Llama-style single sequence
  const json *single = f.get("single");
  const json *specials = f.get("special_tokens");
  if (!single || !single->is_array())
    fail(f.at("single"), "expected an array");
  bool seen_sequence = false;
  for (const json &item : *single) {
    if (item.contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    if (!item.contains("SpecialToken"))
      continue;
    std::string name = fields{item["SpecialToken"], where}.string("id", "");
    const json *tok = specials && specials->contains(name) ? &(*specials)[name] : nullptr;
    if (!tok || !(*tok).contains("ids") || !(*tok)["ids"].is_array() || (*tok)["ids"].empty() ||
        !(*tok)["ids"][0].is_number_integer())
      fail(f.at("special_tokens"), "no ids for '" + name + "'");
    auto id = (*tok)["ids"][0].get<int32_t>();
    std::optional<int32_t> &dst = seen_sequence ? eos : bos;
    if (!dst)
      dst = id;
  }
}

// "bos_token": "<s>" or {"content": "<s>", ...}.
std::optional<std::string> token_text(const fields &f, const char *key) {
  const json *v = f.get(key);
  if (!v)
    return std::nullopt;
  if (v->is_string())
    return v->get<std::string>();
  if (v->is_object() && v->contains("content") && (*v)["content"].is_string())
    return (*v)["content"].get<std::string>();
  fail(f.at(key), "expected a string or an object with \"content\"");
}

void load(const std::string &path, const std::string &config_path, spec &s) {
  json j = read_json(path);
  if (!j.is_object())
    fail(path, "expected a JSON object at the top");
  fields top{j, path + ":"};
  const json &model_json = top.object("model");
  fields model{model_json, path + ": model"};
  std::string type = model.type();
  if (!type.empty() && type != "BPE")
    fail(model.at("type"), "'" + type + "' is not supported (only BPE)");
  if (model.get("dropout") && model.get("dropout")->is_number() &&
      model.get("dropout")->get<double>() > 0.0)
    fail(model.at("dropout"), "BPE dropout is not supported");
  for (const char *key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (!model.string(key, "").empty())
      fail(model.at(key), "a non-empty value is not supported");

  s = spec{};
  s.model = model_kind::bpe_ranks;
  const json *vocab = model.get("vocab");
  if (!vocab || !vocab->is_object())
    fail(model.at("vocab"), "expected an object of piece: id");
  int64_t max_id = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > 0x7FFFFFFF)
      fail(model.at("vocab"), "the id of '" + it.key() + "' is not a non-negative integer");
    max_id = std::max(max_id, it->get<int64_t>());
  }
  std::vector<added_token> added;
  if (const json *list = top.get("added_tokens")) {
    if (!list->is_array())
      fail(top.at("added_tokens"), "expected an array");
    for (size_t i = 0; i < list->size(); ++i) {
      fields a{(*list)[i], top.at("added_tokens") + "[" + std::to_string(i) + "]"};
      added_token t;
      int64_t id = a.integer("id", -1);
      if (id < 0 || id > 0x7FFFFFFF)
        fail(a.where, "missing or negative id");
      t.id = static_cast<int32_t>(id);
      t.content = a.string("content", "");
      if (t.content.empty())
        fail(a.at("content"), "missing or empty");
      t.special = a.boolean("special", false);
      t.lstrip = a.boolean("lstrip", false);
      t.rstrip = a.boolean("rstrip", false);
      t.single_word = a.boolean("single_word", false);
      t.normalized = a.boolean("normalized", !t.special);
      max_id = std::max(max_id, id);
      added.push_back(std::move(t));
    }
  }
  const auto n = static_cast<size_t>(max_id + 1);
  s.pieces.assign(n, std::string());
  s.has_piece.assign(n, 0);
  s.vocab.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    auto id = it->get<int32_t>();
    s.pieces[id] = it.key();
    s.has_piece[id] = 1;
    s.vocab.set(it.key(), id);
  }
  s.added = std::move(added);

  if (const json *merges = model.get("merges")) {
    if (!merges->is_array())
      fail(model.at("merges"), "expected an array");
    s.merges.reserve(merges->size());
    for (size_t r = 0; r < merges->size(); ++r) {
      const json &m = (*merges)[r];
      std::string a, b, where = model.at("merges") + "[" + std::to_string(r) + "]";
      if (m.is_string()) {
        const std::string &line = m.get_ref<const std::string &>();
        size_t sp = line.find(' ');
        if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
          fail(where, "'" + line + "' is not two pieces separated by one space");
        a = line.substr(0, sp);
        b = line.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        fail(where, "expected \"a b\" or [\"a\", \"b\"]");
      }
      int32_t ia = s.vocab.find(a), ib = s.vocab.find(b), im = s.vocab.find(a + b);
      if (ia < 0 || ib < 0)
        fail(where, "piece '" + (ia < 0 ? a : b) + "' is not in the vocabulary");
      if (im < 0)
        fail(where, "the merged piece '" + a + b + "' is not in the vocabulary");
      uint64_t key =
          static_cast<uint64_t>(static_cast<uint32_t>(ia)) << 32 | static_cast<uint32_t>(ib);
      s.merges[key] = {static_cast<int32_t>(r), im};
    }
  }
  s.byte_fallback = model.boolean("byte_fallback", false);
  s.fuse_unk = model.boolean("fuse_unk", false);
  s.ignore_merges = model.boolean("ignore_merges", false);
  if (std::string unk = model.string("unk_token", ""); !unk.empty()) {
    int32_t id = s.vocab.find(unk);
    if (id < 0)
      fail(model.at("unk_token"), "'" + unk + "' is not in the vocabulary");
    s.unk = id;
  }

  if (const json *n = top.get("normalizer"))
    parse_normalizer(*n, top.at("normalizer"), s.normalizer);
  if (const json *p = top.get("pre_tokenizer"))
    parse_pre_tokenizer(*p, top.at("pre_tokenizer"), s.pre_tokenizer);
  if (const json *d = top.get("decoder")) {
    s.has_decoder = true;
    parse_decoder(*d, top.at("decoder"), s.decoder);
  }
  std::optional<int32_t> tp_bos, tp_eos;
  if (const json *p = top.get("post_processor"))
    parse_post_processor(*p, top.at("post_processor"), tp_bos, tp_eos);
  s.bos = tp_bos;
  s.eos = tp_eos;
  s.add_bos = tp_bos.has_value();
  s.add_eos = tp_eos.has_value();

  if (config_path.empty())
    return;
  json c = read_json(config_path);
  if (!c.is_object())
    fail(config_path, "expected a JSON object at the top");
  fields cfg{c, config_path + ":"};
  auto id_of = [&](const std::string &text, const char *key) -> int32_t {
    for (const added_token &t : s.added)
      if (t.content == text)
        return t.id;
    int32_t id = s.vocab.find(text);
    if (id < 0)
      fail(cfg.at(key), "'" + text + "' is not a token of " + path);
    return id;
  };
  if (auto t = token_text(cfg, "bos_token"))
    s.bos = id_of(*t, "bos_token");
  if (auto t = token_text(cfg, "eos_token"))
    s.eos = id_of(*t, "eos_token");
  s.add_bos = cfg.boolean("add_bos_token", s.add_bos);
  s.add_eos = cfg.boolean("add_eos_token", s.add_eos);
  if (const json *t = cfg.get("chat_template")) {
    if (t->is_string()) {
      s.chat_template = t->get<std::string>();
    } else if (t->is_array()) {
      // Named templates: [{"name": "default", "template": ...}, ...]; the default, else the first.
      for (const json &e : *t) {
        fields ef{e, cfg.at("chat_template")};
        std::string name = ef.string("name", ""), tmpl = ef.string("template", "");
        if (s.chat_template.empty() || name == "default")
          s.chat_template = tmpl;
        if (name == "default")
          break;
      }
    } else {
      fail(cfg.at("chat_template"), "expected a string or a list of named templates");
    }
  }
}

} // namespace

bool load_hf_spec(const std::string &tokenizer_json, const std::string &tokenizer_config_json,
                  spec &out, std::string &error) {
  try {
    load(tokenizer_json, tokenizer_config_json, out);
    return true;
  } catch (const load_error &e) {
    error = e.what;
  } catch (const json::exception &e) {
    error = tokenizer_json + ": " + e.what();
  }
  return false;
}

} // namespace phimoe_rt::tok
