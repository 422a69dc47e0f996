// json_mode_test.cpp - structured replies' automaton (JsonPrefix). JSON mode against
// nlohmann::json's parser: random JSON objects are accepted byte by byte and complete exactly
// at their last byte, and for their one-byte mutations JsonPrefix takes the whole string as a
// complete object exactly when nlohmann::json accepts it as one. JSON schemas the same way
// against a validator written here (random values of a schema and their mutations), plus the
// order, required properties and bounds one by one, and the schemas refused with where they
// fail. JsonMask keeps exactly the tokens whose bytes continue the prefix, and no special token.
#include "phimoe_rt/json_mode.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>
#include <random>
#include <regex>

namespace {

using phimoe_rt::JsonPrefix;

class Gen {
public:
  explicit Gen(unsigned seed) : rng_(seed) {}
  int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

  void space(std::string &out) {
    static const char *spaces[] = {"", "", "", " ", "\n", "\t", "\r\n", "  "};
    out += spaces[pick(8)];
  }
  void string(std::string &out) {
    out += '"';
    for (int i = 0, n = pick(6); i < n; ++i) {
      switch (pick(6)) {
      case 0: out += "\\\""; break;
      case 1: out += "\\u00e9"; break;
      case 2: out += "\\n"; break;
      case 3: out += "\xc3\xa9"; break; // UTF-8 as it is
      default: out += static_cast<char>('a' + pick(26));
      }
    }
    out += '"';
  }
  void number(std::string &out) {
    static const char *numbers[] = {"0", "-0", "7", "-12", "3.25", "0.5e10", "1E-3", "-4e+2",
                                    "100", "6.02e23"};
    out += numbers[pick(10)];
  }
  void value(std::string &out, int depth) {
    const int kind = depth > 3 ? 3 + pick(4) : pick(7);
    switch (kind) {
    case 0: case 1: object(out, depth + 1); break;
    case 2: array(out, depth + 1); break;
    case 3: string(out); break;
    case 4: number(out); break;
    case 5: out += pick(2) ? "true" : "false"; break;
    default: out += "null";
    }
  }
  void object(std::string &out, int depth) {
    out += '{';
    space(out);
    for (int i = 0, n = pick(4); i < n; ++i) {
      if (i) {
        out += ',';
        space(out);
      }
      string(out);
      space(out);
      out += ':';
      space(out);
      value(out, depth);
      space(out);
    }
    out += '}';
  }
  void array(std::string &out, int depth) {
    out += '[';
    space(out);
    for (int i = 0, n = pick(4); i < n; ++i) {
      if (i) {
        out += ',';
        space(out);
      }
      value(out, depth);
      space(out);
    }
    out += ']';
  }

private:
  std::mt19937 rng_;
};

// `s` with its control and non-ASCII bytes as \xNN, for messages.
std::string shown(const std::string &s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

// Whether JsonPrefix takes all of `s` and ends complete.
bool complete_object(const std::string &s) {
  JsonPrefix p;
  return p.push(s) && p.complete();
}

// What nlohmann::json says of `s` as a reply of JSON mode: one object, from the first byte to
// the last.
bool is_object(const std::string &s) {
  return nlohmann::json::accept(s) && s.front() == '{' && s.back() == '}';
}

} // namespace

TEST(JsonPrefix, RandomObjectsCompleteAtTheirLastByte) {
  Gen gen(1);
  for (int i = 0; i < 2000; ++i) {
    std::string doc;
    gen.object(doc, 0);
    ASSERT_TRUE(nlohmann::json::accept(doc)) << doc;
    JsonPrefix p;
    for (size_t k = 0; k < doc.size(); ++k) {
      ASSERT_FALSE(p.complete()) << doc << " at " << k;
      ASSERT_TRUE(p.push(static_cast<unsigned char>(doc[k]))) << doc << " at " << k;
    }
    EXPECT_TRUE(p.complete()) << doc;
    EXPECT_FALSE(p.push('}'));
  }
}

TEST(JsonPrefix, MutationsAgreeWithAParser) {
  Gen gen(2);
  static const char alphabet[] = "{}[]\":,.-+eE0123456789tfnrulsa\\ \n\x01\xc3";
  const std::regex huge_exponent("[eE][+-]?[0-9]{3}");
  int accepted = 0, refused = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string doc;
    gen.object(doc, 0);
    const size_t at = static_cast<size_t>(gen.pick(static_cast<int>(doc.size())));
    const char c = alphabet[gen.pick(static_cast<int>(sizeof alphabet) - 1)];
    switch (gen.pick(3)) {
    case 0: doc.erase(at, 1); break;
    case 1: doc.insert(doc.begin() + static_cast<long>(at), c); break;
    default: doc[at] = c;
    }
    if (std::regex_search(doc, huge_exponent))
      continue; // JSON's grammar allows 1e999; nlohmann::json refuses it as out of range
    const bool expected = is_object(doc);
    EXPECT_EQ(complete_object(doc), expected) << shown(doc);
    (expected ? accepted : refused)++;
  }
  EXPECT_GT(accepted, 1000);
  EXPECT_GT(refused, 1000);
}

TEST(JsonPrefix, RefusesWhatNoObjectBeginsWith) {
  for (const char *bad : {"[1]", "\"a\"", "1", "{'a': 1}", "{a:1}", "{\"a\" 1}", "{\"a\":01}",
                          "{\"a\":1,}", "{\"a\":tru }", "{\"a\":-}", "{\"a\":1.}", "{\"a\":1e}",
                          "{\"a\":\"\\q\"}", "{\"a\":\"\\u12G4\"}", "{\"a\":\"\x01\"}", "{}}",
                          "{\"a\":[1}", "{\"a\":{]}"}) {
    JsonPrefix p;
    EXPECT_FALSE(p.push(std::string(bad)) && p.complete()) << bad;
  }
  // The object comes first; whitespace runs and nesting are bounded.
  EXPECT_FALSE(JsonPrefix().push(' '));
  JsonPrefix p;
  EXPECT_TRUE(p.push("{" + std::string(JsonPrefix::kMaxWhitespace, ' ')));
  EXPECT_FALSE(p.push(' '));
  JsonPrefix deep;
  EXPECT_TRUE(deep.push("{\"a\":" + std::string(JsonPrefix::kMaxDepth - 1, '[')));
  EXPECT_FALSE(deep.push('['));
  // Numbers have at most 20 integer digits, 16 fraction digits and 3 exponent digits.
  for (const auto &[head, digits] : std::vector<std::pair<std::string, int>>{
           {"{\"a\":-", 20}, {"{\"a\":1.", 16}, {"{\"a\":1e+", 3}}) {
    JsonPrefix n;
    EXPECT_TRUE(n.push(head + std::string(static_cast<size_t>(digits), '9'))) << head;
    EXPECT_FALSE(n.push('9')) << head;
  }
}

namespace {

// JsonMask after each of `prefixes` of `grammar`'s values, over the example's vocabulary: it
// keeps exactly the tokens that a probe of their bytes on a copy of the state accepts (never a
// special token), and says how many.
void expect_mask_keeps_what_continues(const phimoe_rt::JsonGrammar &grammar,
                                      std::initializer_list<const char *> prefixes) {
  std::string error;
  auto tok = phimoe_rt::Tokenizer::load_hf(PHIMOE_EXAMPLE_DIR "/tokenizer.json", "", error);
  ASSERT_TRUE(tok) << error;
  const int vocab = tok->vocab_size();
  phimoe_rt::JsonMask mask(*tok, vocab);
  for (const char *prefix : prefixes) {
    JsonPrefix p(grammar);
    ASSERT_TRUE(p.push(std::string(prefix))) << prefix;
    std::vector<float> logits(static_cast<size_t>(vocab), 0.5f);
    const int allowed = mask.apply(p, logits.data());
    int kept = 0;
    for (int32_t id = 0; id < vocab; ++id) {
      JsonPrefix probe = p;
      const std::string bytes = tok->token_bytes(id);
      const bool ok = !tok->is_special(id) && !bytes.empty() && probe.push(bytes);
      EXPECT_EQ(std::isinf(logits[static_cast<size_t>(id)]), !ok) << prefix << " " << id;
      kept += ok;
    }
    EXPECT_EQ(allowed, kept) << prefix;
    EXPECT_GT(kept, 0) << prefix;
  }
}

} // namespace

TEST(JsonMask, KeepsTheTokensThatContinueThePrefix) {
  expect_mask_keeps_what_continues(*phimoe_rt::JsonGrammar::any_object(),
                                   {"", "{", "{\"ab", "{\"a\": [1, 2.5", "{\"a\": tr", "{\"\xc3"});
}

// ---- JSON schemas -------------------------------------------------------------------------

namespace {

using phimoe_rt::JsonGrammar;
using phimoe_rt::JsonSchemaError;
using ordered_json = nlohmann::ordered_json;

// What pydantic and openai's strict conversion write for nested models, optional fields, enums
// and lists (plus a free object, a type list, bounds, and a recursive $ref).
const char *kSchema = R"({
  "$defs": {
    "Color": {"enum": ["red", "green", "blue"], "title": "Color", "type": "string"},
    "Pet": {"type": "object", "title": "Pet",
            "properties": {"name": {"type": "string", "maxLength": 6},
                           "legs": {"type": "integer"},
                           "friend": {"anyOf": [{"$ref": "#/$defs/Pet"}, {"type": "null"}]}},
            "required": ["name", "legs"], "additionalProperties": false}
  },
  "type": "object",
  "properties": {
    "title": {"type": "string", "minLength": 1, "maxLength": 8},
    "score": {"type": "number"},
    "ok": {"type": "boolean"},
    "color": {"$ref": "#/$defs/Color"},
    "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}, {"type": "string"}]},
    "pets": {"type": "array", "items": {"$ref": "#/$defs/Pet"}, "maxItems": 3},
    "pair": {"type": "array", "items": {"type": ["integer", "boolean"]}, "minItems": 2,
             "maxItems": 2},
    "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
    "anything": {},
    "kind": {"const": "fixed"}
  },
  "required": ["title", "score", "ok", "color", "pets", "kind"],
  "additionalProperties": false
})";

// The schema `s`'s $ref ("#/$defs/Name") leads to.
const ordered_json &ref(const ordered_json &doc, const ordered_json &s) {
  return doc["$defs"][s["$ref"].get<std::string>().substr(8)];
}

// Random values of a schema of the subset above (and their JSON text, spaced at random).
class SchemaGen {
public:
  SchemaGen(const ordered_json &doc, unsigned seed) : doc_(doc), gen_(seed) {}

  ordered_json value(const ordered_json &s, int depth) {
    if (s.contains("$ref"))
      return value(ref(doc_, s), depth);
    if (s.contains("anyOf")) {
      const auto &options = s["anyOf"];
      return value(options[static_cast<size_t>(gen_.pick(static_cast<int>(options.size())))],
                   depth + 1);
    }
    if (s.contains("enum"))
      return s["enum"][static_cast<size_t>(gen_.pick(static_cast<int>(s["enum"].size())))];
    if (s.contains("const"))
      return s["const"];
    std::string type = "any";
    if (s.contains("type") && s["type"].is_array())
      type = s["type"][static_cast<size_t>(gen_.pick(static_cast<int>(s["type"].size())))];
    else if (s.contains("type"))
      type = s["type"];
    if (type == "any") {
      static const char *kinds[] = {"string", "integer", "boolean", "null", "number"};
      type = kinds[gen_.pick(5)];
    }
    if (type == "object") {
      ordered_json o = ordered_json::object();
      std::set<std::string> required;
      for (const auto &r : s.value("required", ordered_json::array()))
        required.insert(r.get<std::string>());
      if (s.contains("properties")) {
        for (const auto &[name, sub] : s["properties"].items())
          if ((required.count(name) || gen_.pick(2)) && depth < 6)
            o[name] = value(sub, depth + 1);
          else if (required.count(name))
            o[name] = value(sub, depth + 1);
      } else {
        const ordered_json values = s.value("additionalProperties", ordered_json::object());
        for (int i = 0, n = gen_.pick(3); i < n; ++i)
          o["k" + std::to_string(i)] = value(values, depth + 1);
      }
      return o;
    }
    if (type == "array") {
      ordered_json a = ordered_json::array();
      const int lo = s.value("minItems", 0), hi = std::min(s.value("maxItems", 3), 3);
      for (int i = 0, n = lo + gen_.pick(hi - lo + 1); i < n; ++i)
        a.push_back(value(s.value("items", ordered_json::object()), depth + 1));
      return a;
    }
    if (type == "string") {
      const int lo = s.value("minLength", 0), hi = std::min(s.value("maxLength", 6), 6);
      std::string out;
      static const char *chars[] = {"a", "b", "\xc3\xa9", "\"", "\n", "z"};
      for (int i = 0, n = lo + gen_.pick(hi - lo + 1); i < n; ++i)
        out += chars[gen_.pick(6)];
      return out;
    }
    if (type == "integer")
      return gen_.pick(2) ? gen_.pick(1000) : -gen_.pick(50);
    if (type == "number")
      return gen_.pick(2) ? ordered_json(gen_.pick(100) / 8.0) : ordered_json(-gen_.pick(9));
    if (type == "boolean")
      return gen_.pick(2) == 1;
    return nullptr;
  }

  std::string text(const ordered_json &v) {
    const int indent = gen_.pick(3) - 1; // -1: compact
    return v.dump(indent);
  }
  int pick(int n) { return gen_.pick(n); }

private:
  const ordered_json &doc_;
  Gen gen_;
};

// The reference: whether `v` is a value of schema `s` as a structured reply writes it
// (properties in the schema's order, none other where `properties` is given).
bool valid(const ordered_json &doc, const ordered_json &v, const ordered_json &s) {
  if (s.contains("$ref"))
    return valid(doc, v, ref(doc, s));
  if (s.contains("anyOf"))
    return std::any_of(s["anyOf"].begin(), s["anyOf"].end(),
                       [&](const ordered_json &o) { return valid(doc, v, o); });
  if (s.contains("enum"))
    return std::find(s["enum"].begin(), s["enum"].end(), v) != s["enum"].end();
  if (s.contains("const"))
    return v == s["const"];
  if (!s.contains("type"))
    return true;
  if (s["type"].is_array()) {
    for (const auto &t : s["type"]) {
      ordered_json one = s;
      one["type"] = t;
      if (valid(doc, v, one))
        return true;
    }
    return false;
  }
  const std::string type = s["type"];
  if (type == "object") {
    if (!v.is_object())
      return false;
    if (!s.contains("properties")) {
      for (const auto &[k, x] : v.items())
        if (!valid(doc, x, s.value("additionalProperties", ordered_json::object())))
          return false;
      return true;
    }
    const auto &props = s["properties"];
    auto p = props.begin();
    for (const auto &[k, x] : v.items()) {
      while (p != props.end() && p.key() != k)
        ++p;
      if (p == props.end() || !valid(doc, x, p.value()))
        return false;
    }
    for (const auto &r : s.value("required", ordered_json::array()))
      if (!v.contains(r.get<std::string>()))
        return false;
    return true;
  }
  if (type == "array") {
    if (!v.is_array() || v.size() < s.value("minItems", 0u) ||
        v.size() > s.value("maxItems", 1000000u))
      return false;
    return std::all_of(v.begin(), v.end(), [&](const ordered_json &x) {
      return valid(doc, x, s.value("items", ordered_json::object()));
    });
  }
  if (type == "string") {
    if (!v.is_string())
      return false;
    size_t chars = 0;
    for (unsigned char c : v.get<std::string>())
      chars += (c & 0xC0) != 0x80;
    return chars >= s.value("minLength", 0u) && chars <= s.value("maxLength", 1000000u);
  }
  if (type == "integer")
    return v.is_number_integer();
  if (type == "number")
    return v.is_number();
  if (type == "boolean")
    return v.is_boolean();
  return v.is_null();
}

// Whether the whitespace of `text` outside strings is as a schema's replies write it: runs of
// one space, or of a newline and at most 20 spaces or tabs.
bool compact_spaces(const std::string &text) {
  bool in_string = false, escape = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      in_string = escape || c != '"';
      escape = !escape && c == '\\';
      continue;
    }
    if (c == '"') {
      in_string = true;
      continue;
    }
    if (c != ' ' && c != '\n' && c != '\t' && c != '\r')
      continue;
    size_t end = i + 1;
    while (end < text.size() && std::strchr(" \n\t\r", text[end]))
      ++end;
    const std::string run = text.substr(i, end - i);
    if (run != " " && !(run[0] == '\n' && run.size() <= 21 &&
                        run.find_first_not_of(" \t", 1) == std::string::npos))
      return false;
    i = end - 1;
  }
  return true;
}

bool complete_value(const JsonGrammar &g, const std::string &s) {
  JsonPrefix p(g);
  return p.push(s) && p.complete();
}

} // namespace

TEST(JsonSchema, ValuesOfTheSchemaCompleteAtTheirLastByte) {
  const ordered_json doc = ordered_json::parse(kSchema);
  const auto grammar = JsonGrammar::from_schema(doc);
  SchemaGen gen(doc, 3);
  for (int i = 0; i < 2000; ++i) {
    const ordered_json v = gen.value(doc, 0);
    ASSERT_TRUE(valid(doc, v, doc)) << v.dump();
    const std::string text = gen.text(v);
    JsonPrefix p(*grammar);
    for (size_t k = 0; k < text.size(); ++k) {
      ASSERT_FALSE(p.complete()) << text << " at " << k;
      ASSERT_TRUE(p.push(static_cast<unsigned char>(text[k]))) << shown(text) << " at " << k;
    }
    EXPECT_TRUE(p.complete()) << text;
  }
}

TEST(JsonSchema, MutationsAgreeWithAValidator) {
  const ordered_json doc = ordered_json::parse(kSchema);
  const auto grammar = JsonGrammar::from_schema(doc);
  SchemaGen gen(doc, 4);
  static const char alphabet[] = "{}[]\":,.-e0123456789tfnul\\ \"abdgrx";
  static const char *words[] = {"\"friend\":null,", "\"maybe\":7,", "\"ok\":true,",
                                "\"red\"", "null", "\"x\"", "[1,true]", "3.5", "\"legs\":2,"};
  int accepted = 0, refused = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string text = gen.text(gen.value(doc, 0));
    const size_t at = static_cast<size_t>(gen.pick(static_cast<int>(text.size())));
    switch (gen.pick(4)) {
    case 0: text.erase(at, 1); break;
    case 1: text.insert(at, 1, alphabet[gen.pick(static_cast<int>(sizeof alphabet) - 1)]); break;
    case 2: text.insert(at, words[gen.pick(9)]); break;
    default: text[at] = alphabet[gen.pick(static_cast<int>(sizeof alphabet) - 1)];
    }
    bool expected = !text.empty() && text.front() == '{' && text.back() == '}' &&
                    ordered_json::accept(text);
    if (expected) {
      const ordered_json v = ordered_json::parse(text);
      // Keys twice: the parser keeps one; a reply never writes one twice.
      size_t keys = 0;
      ordered_json::parser_callback_t count = [&](int, ordered_json::parse_event_t e,
                                                  ordered_json &) {
        keys += e == ordered_json::parse_event_t::key;
        return true;
      };
      const ordered_json counted = ordered_json::parse(text, count);
      EXPECT_EQ(counted, v);
      size_t parsed_keys = 0;
      std::function<void(const ordered_json &)> walk = [&](const ordered_json &x) {
        if (x.is_object())
          parsed_keys += x.size();
        if (x.is_structured())
          for (const auto &y : x)
            walk(y);
      };
      walk(v);
      expected = keys == parsed_keys && valid(doc, v, doc) && compact_spaces(text);
    }
    EXPECT_EQ(complete_value(*grammar, text), expected) << shown(text);
    (expected ? accepted : refused)++;
  }
  EXPECT_GT(accepted, 1000);
  EXPECT_GT(refused, 1000);
}

TEST(JsonSchema, HoldsOrderRequiredAndBounds) {
  const auto g = JsonGrammar::from_schema(ordered_json::parse(kSchema));
  const std::string head = R"({"title":"t","score":1,"ok":true,"color":"red",)";
  const auto refused = [&](const std::string &text) { return !JsonPrefix(*g).push(text); };
  EXPECT_TRUE(complete_value(*g, head + R"("pets":[],"kind":"fixed"})"));
  // Out of order, a required property left out, one more, past maxLength, too few or too many
  // items.
  EXPECT_TRUE(refused(R"({"score":1,"title":"t",)"));
  EXPECT_FALSE(refused(R"({"title":"t",)"));
  EXPECT_TRUE(refused(head + R"("kind":)"));
  EXPECT_TRUE(refused(head + R"("pets":[],"kind":"fixed","x")"));
  EXPECT_TRUE(refused(head + R"("pets":[],"kind":"fixed",)"));
  EXPECT_TRUE(refused(R"({"title":"123456789")"));
  EXPECT_TRUE(refused(R"({"title":"")"));
  EXPECT_TRUE(refused(head + R"("pets":[],"pair":[1])"));
  EXPECT_TRUE(refused(head + R"("pets":[],"pair":[1,2,)"));
  EXPECT_TRUE(refused(head + R"("pets":[{},{},{},{})"));
  EXPECT_TRUE(complete_value(*g, head + R"("pets":[],"pair":[1,false],"kind":"fixed"})"));
  // Whitespace: one space, or a newline and at most 20 spaces or tabs.
  EXPECT_FALSE(refused("{ \"title\" : \"t\",\n\t\t\"score\":"));
  EXPECT_FALSE(refused("{\n" + std::string(20, ' ') + "\"title\""));
  EXPECT_TRUE(refused("{\n" + std::string(21, ' ')));
  EXPECT_TRUE(refused("{  "));
  EXPECT_TRUE(refused("{\t"));
  EXPECT_TRUE(refused("{ \n"));
  // integer is no number; an enum value is written as JSON writes it.
  EXPECT_TRUE(refused(R"({"title":"t","score":1,"ok":true,"color":"red","maybe":1.)"));
  EXPECT_TRUE(refused(R"({"title":"t","score":1,"ok":true,"color":"Red")"));
  // A recursive $ref nests; the free object's values are integers.
  EXPECT_TRUE(complete_value(
      *g, head + R"("pets":[{"name":"a","legs":4,"friend":{"name":"b","legs":2,)"
                 R"("friend":null}}],"extra":{"n":1,"m":-2},"kind":"fixed"})"));
  EXPECT_TRUE(refused(head + R"("pets":[],"extra":{"n":")"));
  // A top-level enum of strings ends with its value.
  const auto e = JsonGrammar::from_schema(ordered_json::parse(R"({"enum": ["yes", "no"]})"));
  JsonPrefix p(*e);
  EXPECT_TRUE(p.push("\"no\""));
  EXPECT_TRUE(p.complete());
}

TEST(JsonSchema, KeywordsWithoutATypeImplyIt) {
  // Inside an object (a top-level number has no end): each property's keywords name its type,
  // and the bounds hold.
  const auto g = JsonGrammar::from_schema(ordered_json::parse(R"({"type": "object",
    "properties": {"n": {"minimum": 2, "maximum": 5}, "s": {"maxLength": 2},
                   "a": {"maxItems": 1}, "o": {"properties": {"x": {"type": "null"}}}},
    "required": ["n", "s", "a", "o"]})"));
  const auto refused = [&](const std::string &text) { return !JsonPrefix(*g).push(text); };
  EXPECT_TRUE(complete_value(*g, R"({"n":3,"s":"ab","a":[1],"o":{"x":null}})"));
  EXPECT_TRUE(complete_value(*g, R"({"n":5.0,"s":"","a":[],"o":{}})"));
  for (const char *bad : {R"({"n":6)", R"({"n":1,)", R"({"n":")", R"({"n":true)",
                          R"({"n":3,"s":1)", R"({"n":3,"s":"abc)", R"({"n":3,"s":"","a":{)",
                          R"({"n":3,"s":"","a":[1,)", R"({"n":3,"s":"","a":[],"o":[)"})
    EXPECT_TRUE(refused(bad)) << bad;
}

TEST(JsonSchema, RefusesWhatItCannotHoldAReplyTo) {
  const std::vector<std::pair<const char *, const char *>> cases = {
      {R"x({"type": "string", "pattern": "(?=a)"})x", "/pattern"},
      {R"({"type": "string", "format": "hostname"})", "/format"},
      {R"({"type": "string", "minimum": 1})", "/minimum"},
      {R"({"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 2}}})",
       "/properties/a"},
      {R"({"type": "integer", "minimum": 1.5, "exclusiveMaximum": 2})", ""},
      {R"({"type": "object", "properties": {"a": {"type": "strin"}}})", "/properties/a/type"},
      {R"({"type": "object", "properties": {"a": {"$ref": "#/$defs/B"}}})",
       "/properties/a/$ref"},
      {R"({"type": "object", "properties": {"a": {"anyOf": [{"type": "object"},
          {"type": "object", "properties": {"b": true}}]}}})", "/properties/a/anyOf"},
      {R"({"type": "object", "properties": {"a": {}}, "required": ["b"]})", "/required"},
      {R"({"type": "integer"})", ""},
      {R"({"type": "object", "properties": {"a": {"$ref": "#", "type": "object"}}})",
       "/properties/a"},
      {R"({"type": "object", "properties": {"a": {"enum": [1, 2], "maximum": 1}}})",
       "/properties/a/maximum"},
      {R"({"anyOf": [{"type": "string"}, {"type": "number"}]})", ""},
      {R"({"enum": [1, 10]})", ""},
      {R"({"type": "array", "minItems": 3, "maxItems": 2})", "/minItems"},
      {R"({"type": "string", "maxItems": 2})", "/maxItems"},
      {R"({"$defs": {"A": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"})", ""},
      {R"(false)", ""},
      {R"([1])", ""},
      {R"({"type": "object", "properties": {"a": {"enum": [1], "const": 1}}})",
       "/properties/a"},
      {R"({"type": "object", "properties": {"a": {"enum": []}}})", "/properties/a/enum"},
      {R"({"type": "object", "properties": {"a": {"type": "string", "enum": [1]}}})",
       "/properties/a/enum"},
      {R"({"type": "array", "uniqueItems": true})", "/uniqueItems"},
      {R"({"allOf": [{"type": "object"}, {"type": "object"}]})", "/allOf"},
      {R"({"allOf": [{"type": "object"}], "type": "object"})", "/allOf"},
      {R"({"anyOf": []})", "/anyOf"},
      {R"({"anyOf": [{"type": "object"}], "type": "object"})", "/anyOf"},
      {R"({"type": 3})", "/type"},
      {R"({"type": ["object", 3]})", "/type/1"},
      {R"({"type": "object", "required": "a"})", "/required"},
      {R"({"type": "object", "properties": []})", "/properties"},
      {R"({"type": "array", "maxItems": -1})", "/maxItems"},
      {R"({"type": "string", "minLength": 3, "maxLength": 2})", "/minLength"},
      {R"({"type": "string", "pattern": "a", "format": "date"})", "/format"},
      {R"({"type": "string", "pattern": 1})", "/pattern"},
      {R"({"type": "array", "items": {"type": "number", "minimum": "1"}})", "/items/minimum"},
      {R"({"$ref": "other.json#/a"})", "/$ref"},
      {R"({"enum": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o",
                    "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z", "A", "B", "C", "D",
                    "E", "F", "G", "H", "I", "J", "K", "L", "M", "N", "O", "P", "Q", "R", "S",
                    "T", "U", "V", "W", "X", "Y", "Z", "0", "1", "2", "3", "4", "5", "6", "7",
                    "8", "9", "_", "-", "+"]})", "/enum"},
  };
  for (const auto &[schema, where] : cases) {
    try {
      JsonGrammar::from_schema(ordered_json::parse(schema));
      ADD_FAILURE() << "accepted " << schema;
    } catch (const JsonSchemaError &e) {
      EXPECT_EQ(e.where(), where) << schema << ": " << e.what();
      EXPECT_GT(std::string(e.what()).size(), 10u);
    }
  }
}

TEST(JsonMask, KeepsTheTokensThatContinueASchemaPrefix) {
  const auto g = JsonGrammar::from_schema(ordered_json::parse(kSchema));
  expect_mask_keeps_what_continues(
      *g, {"", "{", "{\"ti", "{\"title\":\"ab", "{\"title\":\"a\",\"score\":1",
           "{\"title\":\"a\",\"score\":1,\"ok\":",
           "{\"title\":\"a\",\"score\":1,\"ok\":false,\"color\":\"r"});
}

// Bounded numbers: for every string of up to 5 characters of a number's alphabet, as the value of
// a property, JsonPrefix takes it as a complete object exactly when it is a JSON number without
// exponent (an integer for integer) within the bounds; and every prefix it takes can still be
// completed within a few characters (in-reach is exact enough never to strand a reply).
TEST(JsonSchema, BoundedNumbersAgreeWithTheirBounds) {
  struct Case {
    const char *schema;
    bool integer;
    double lo, hi;
    bool lo_open, hi_open;
  };
  const Case cases[] = {
      {R"({"type": "integer", "minimum": 1, "maximum": 5})", true, 1, 5, false, false},
      {R"({"type": "integer", "minimum": -20, "maximum": -10})", true, -20, -10, false, false},
      {R"({"type": "integer", "exclusiveMinimum": 9, "maximum": 120})", true, 9, 120, true, false},
      {R"({"type": "number", "exclusiveMinimum": 0, "maximum": 1})", false, 0, 1, true, false},
      {R"({"type": "number", "minimum": -1.5, "exclusiveMaximum": 2.25})", false, -1.5, 2.25,
       false, true},
      {R"({"type": "number", "minimum": 30})", false, 30, HUGE_VAL, false, false},
  };
  static const char alphabet[] = "-0123456789.";
  for (const Case &c : cases) {
    SCOPED_TRACE(c.schema);
    const auto g = JsonGrammar::from_schema(ordered_json::parse(
        std::string(R"({"type": "object", "required": ["x"], "properties": {"x": )") +
        c.schema + "}}"));
    const std::regex number(c.integer ? "-?(0|[1-9][0-9]*)" : "-?(0|[1-9][0-9]*)(\\.[0-9]+)?");
    auto expected = [&](const std::string &s) {
      if (!std::regex_match(s, number))
        return false;
      const double v = std::stod(s);
      return (c.lo_open ? v > c.lo : v >= c.lo) && (c.hi_open ? v < c.hi : v <= c.hi);
    };
    // Whether `p` can be completed with at most `left` more characters and the closing brace.
    std::function<bool(const JsonPrefix &, int)> completable = [&](const JsonPrefix &p,
                                                                   int left) {
      JsonPrefix end = p;
      if (end.push('}') && end.complete())
        return true;
      for (int i = 0; left > 0 && alphabet[i]; ++i) {
        JsonPrefix q = p;
        if (q.push(static_cast<unsigned char>(alphabet[i])) && completable(q, left - 1))
          return true;
      }
      return false;
    };
    int accepted = 0;
    std::vector<std::string> strings = {""};
    for (size_t k = 0; k < strings.size(); ++k) {
      const std::string s = strings[k]; // a copy: strings grows below
      if (s.size() < 5)
        for (int i = 0; alphabet[i]; ++i)
          strings.push_back(s + alphabet[i]);
      JsonPrefix p(*g);
      const bool taken = p.push("{\"x\":" + s);
      if (taken && !s.empty()) {
        EXPECT_TRUE(completable(p, 4)) << s;
      }
      JsonPrefix whole(*g);
      const bool complete = whole.push("{\"x\":" + s + "}") && whole.complete();
      EXPECT_EQ(complete, !s.empty() && expected(s)) << s;
      accepted += complete;
    }
    EXPECT_GT(accepted, 3);
  }
  // With bounds the exponent goes.
  const auto g = JsonGrammar::from_schema(ordered_json::parse(
      R"({"type": "object", "properties": {"x": {"type": "number", "maximum": 1e9}}})"));
  EXPECT_FALSE(JsonPrefix(*g).push("{\"x\":1e"));
}
