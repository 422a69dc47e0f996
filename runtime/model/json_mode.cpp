// json_mode.cpp - structured replies of phimoe-bin and its server (see json_mode.h): JSON
// schemas compiled to grammar nodes, a pushdown automaton for the prefixes of a grammar's
// values, and the token mask it gives a sequence.
#include "phimoe_rt/json_mode.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

namespace phimoe_rt {

using Node = JsonGrammar::Node;
using Kind = JsonGrammar::Node::Kind;
using ordered_json = nlohmann::ordered_json;

namespace {

bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_hex(unsigned char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// What an open value is reading (JsonPrefix::Frame::state).
enum : uint8_t {
  kValue,      // its first byte
  kObjOpen,    // after '{': a key or '}'
  kObjKey,     // after ',' in an object: a key
  kObjKeyText, // a key of an object with properties (bits: the properties it may still be)
  kObjColon,   // after a key
  kObjAfter,   // after a value in an object: ',' or '}'
  kArrOpen,    // after '[': a value or ']'
  kArrValue,   // after ',' in an array: a value
  kArrAfter,   // after a value in an array: ',' or ']'
  kStr,        // in a string (aux: UTF-8 continuation bytes still due, the next in [lo, hi])
  kStrEscape,  // after a backslash
  kStrHex,     // in \uXXXX (aux: hex digits left)
  kNum,        // in a number (aux: its part, below)
  kLit,        // in a literal (bits: the literals it may still be, count: bytes read)
};

// Number parts (Frame::aux in kNum).
enum : uint8_t {
  kMinus,     // after '-': a digit
  kZero,      // after a leading 0: '.', 'e', or the end
  kInt,       // integer digits
  kDot,       // after '.': a digit
  kFrac,      // fraction digits
  kExp,       // after 'e': a sign or a digit
  kExpSign,   // after the exponent's sign: a digit
  kExpDigits, // exponent digits
};

uint64_t bit(int i) { return uint64_t{1} << i; }

// The most digits of a number's integer part, fraction and exponent: enough for any double, and
// a bound on replies that would run on in digits.
constexpr int kMaxIntDigits = 20, kMaxFracDigits = 16, kMaxExpDigits = 3;

} // namespace

// ---- grammar ------------------------------------------------------------------------------

JsonGrammar::JsonGrammar() {
  nodes_.resize(6);
  nodes_[kAny].kind = Kind::any;
  Node &object = nodes_[kAnyObject];
  object.kind = Kind::object;
  object.free = true;
  object.extra = kAny;
  nodes_[kAnyArray].kind = Kind::array;
  nodes_[kAnyArray].items = kAny;
  nodes_[kAnyString].kind = Kind::string;
  nodes_[kAnyNumber].kind = Kind::number;
  nodes_[kAnyLiteral].kind = Kind::literals;
  nodes_[kAnyLiteral].literals = {"true", "false", "null"};
}

std::shared_ptr<const JsonGrammar> JsonGrammar::any_object() {
  static const std::shared_ptr<const JsonGrammar> grammar(new JsonGrammar());
  return grammar;
}

bool JsonGrammar::may_begin(int32_t id, unsigned char c) const {
  const Node &n = node(id);
  switch (n.kind) {
  case Kind::any:
    return c == '{' || c == '[' || c == '"' || c == '-' || is_digit(c) || c == 't' ||
           c == 'f' || c == 'n';
  case Kind::object:
    return c == '{';
  case Kind::array:
    return c == '[';
  case Kind::string:
    return c == '"';
  case Kind::number:
  case Kind::integer:
    return c == '-' || is_digit(c);
  case Kind::literals:
    for (const std::string &l : n.literals)
      if (static_cast<unsigned char>(l[0]) == c)
        return true;
    return false;
  case Kind::choice:
    for (int32_t o : n.options)
      if (may_begin(o, c))
        return true;
    return false;
  }
  return false;
}

// The keywords that say nothing of the value (skipped), and those of each type.
const std::set<std::string> kAnnotations = {
    "title", "description", "default", "examples", "$schema", "$id",
    "$comment", "deprecated", "readOnly", "writeOnly", "$defs", "definitions"};
const std::map<std::string, std::set<std::string>> kTypeKeywords = {
    {"object", {"properties", "required", "additionalProperties"}},
    {"array", {"items", "minItems", "maxItems"}},
    {"string", {"minLength", "maxLength", "pattern", "format"}},
    {"number", {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}},
    {"integer", {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}},
    {"boolean", {}},
    {"null", {}}};

// JSON schema -> nodes. The keywords it knows are those of docs/serving.md; annotations are
// skipped; anything else is refused where it is.
class SchemaCompiler {
public:
  SchemaCompiler(const ordered_json &document, JsonGrammar &g) : document_(document), g_(g) {}

  int32_t compile(const ordered_json &s, const std::string &where) {
    if (s.is_boolean()) {
      if (!s.get<bool>())
        throw JsonSchemaError(where, "the schema false accepts nothing");
      return JsonGrammar::kAny;
    }
    if (!s.is_object())
      throw JsonSchemaError(where, "a schema must be an object or a boolean");
    static const std::set<std::string> known = [] {
      std::set<std::string> k = kAnnotations;
      k.insert({"type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "uniqueItems"});
      for (const auto &[type, keys] : kTypeKeywords)
        k.insert(keys.begin(), keys.end());
      return k;
    }();
    for (const auto &[key, value] : s.items()) {
      if (!known.count(key))
        throw JsonSchemaError(where, "'" + key + "' is not supported (phimoec holds replies to "
                                     "type, properties, required, additionalProperties, "
                                     "items, minItems, maxItems, minLength, maxLength, "
                                     "pattern, format, minimum, maximum and their exclusive "
                                     "forms, enum, const, anyOf, oneOf, a one-schema allOf "
                                     "and $ref)");
      if (key == "uniqueItems" && value != false)
        throw JsonSchemaError(where + "/uniqueItems", "uniqueItems true is not supported");
    }
    if (const auto ref = s.find("$ref"); ref != s.end()) {
      if (s.size() != 1 + annotations(s))
        throw JsonSchemaError(where, "keywords beside $ref (other than annotations) are not "
                                     "supported: put them in the schema it refers to");
      return reference(*ref, where + "/$ref");
    }
    if (const auto all = s.find("allOf"); all != s.end()) {
      if (!all->is_array() || all->size() != 1)
        throw JsonSchemaError(where + "/allOf", "allOf is supported with one schema only");
      if (s.size() != 1 + annotations(s))
        throw JsonSchemaError(where + "/allOf", "allOf is supported only alone in its schema");
      return compile((*all)[0], where + "/allOf/0");
    }
    for (const char *key : {"anyOf", "oneOf"})
      if (const auto any = s.find(key); any != s.end()) {
        if (!any->is_array() || any->empty())
          throw JsonSchemaError(where + "/" + key, std::string(key) +
                                                       " must be a non-empty array of schemas");
        if (s.size() != 1 + annotations(s))
          throw JsonSchemaError(where + "/" + key,
                                std::string(key) + " is supported only alone in its schema");
        std::vector<int32_t> options;
        for (size_t i = 0; i < any->size(); ++i)
          options.push_back(compile((*any)[i], where + "/" + key + "/" + std::to_string(i)));
        return choice(options, where + "/" + key);
      }
    if (s.contains("enum") || s.contains("const"))
      return literals(s, where);
    const auto type = s.find("type");
    if (type == s.end()) { // the type its keywords say
      for (const char *implied : {"object", "array", "string", "number"})
        for (const std::string &key : kTypeKeywords.at(implied))
          if (s.contains(key))
            return typed(s, implied, where);
      return JsonGrammar::kAny;
    }
    if (type->is_string())
      return typed(s, type->get<std::string>(), where);
    if (!type->is_array() || type->empty())
      throw JsonSchemaError(where + "/type", "type must be a string or a non-empty array");
    std::vector<int32_t> options;
    for (size_t i = 0; i < type->size(); ++i) {
      if (!(*type)[i].is_string())
        throw JsonSchemaError(where + "/type/" + std::to_string(i), "a type must be a string");
      options.push_back(typed(s, (*type)[i].get<std::string>(), where));
    }
    return choice(options, where + "/type");
  }

private:
  static size_t annotations(const ordered_json &s) {
    size_t n = 0;
    for (const std::string &key : kAnnotations)
      n += s.contains(key);
    return n;
  }

  int32_t add(Node node) {
    if (g_.nodes_.size() >= JsonGrammar::kMaxNodes)
      throw JsonSchemaError("", "the schema is too large (more than " +
                                    std::to_string(JsonGrammar::kMaxNodes) + " nodes)");
    g_.nodes_.push_back(std::move(node));
    return static_cast<int32_t>(g_.nodes_.size() - 1);
  }

  // A $ref within the document ("#", "#/$defs/Name", any JSON pointer after '#'). A schema that
  // refers to itself gets the node being built (recursive schemas).
  int32_t reference(const ordered_json &ref, const std::string &where) {
    if (!ref.is_string() || ref.get<std::string>().rfind('#', 0) != 0)
      throw JsonSchemaError(where, "only references within the schema (\"#...\") are supported");
    const std::string pointer = ref.get<std::string>().substr(1);
    if (auto done = refs_.find(pointer); done != refs_.end())
      return done->second;
    const ordered_json *target = resolve(pointer);
    if (!target)
      throw JsonSchemaError(where, "the reference '" + ref.get<std::string>() +
                                       "' leads nowhere in the schema");
    // A placeholder the target's node replaces (by a choice of one option: itself).
    Node placeholder;
    placeholder.kind = Kind::choice;
    const int32_t id = add(placeholder);
    refs_[pointer] = id;
    const int32_t body = compile(*target, "#" + pointer);
    g_.nodes_[static_cast<size_t>(id)] = g_.nodes_[static_cast<size_t>(body)];
    return id;
  }

  int32_t literals(const ordered_json &s, const std::string &where) {
    Node n;
    n.kind = Kind::literals;
    if (s.contains("enum") && s.contains("const"))
      throw JsonSchemaError(where, "enum and const together are not supported");
    const bool is_enum = s.contains("enum");
    const ordered_json &values = is_enum ? s["enum"] : s["const"];
    const std::string at = where + (is_enum ? "/enum" : "/const");
    if (is_enum && (!values.is_array() || values.empty()))
      throw JsonSchemaError(at, "enum must be a non-empty array");
    std::vector<const ordered_json *> all;
    if (is_enum)
      for (const ordered_json &v : values)
        all.push_back(&v);
    else
      all.push_back(&values);
    for (const ordered_json *v : all) {
      if (const auto type = s.find("type"); type != s.end() && !matches(*v, *type))
        throw JsonSchemaError(at, "the value " + v->dump() + " is not of the schema's type");
      std::string text = v->dump(-1, ' ', false, ordered_json::error_handler_t::strict);
      if (std::find(n.literals.begin(), n.literals.end(), text) == n.literals.end())
        n.literals.push_back(std::move(text));
    }
    if (n.literals.size() > JsonGrammar::kMaxMembers)
      throw JsonSchemaError(at, "more than " + std::to_string(JsonGrammar::kMaxMembers) +
                                    " values are not supported");
    for (const auto &[type, keys] : kTypeKeywords)
      for (const std::string &key : keys)
        if (s.contains(key))
          throw JsonSchemaError(where + "/" + key,
                                "'" + key + "' beside enum or const is not supported");
    return add(std::move(n));
  }

  static bool matches(const ordered_json &v, const ordered_json &type) {
    if (type.is_array())
      return std::any_of(type.begin(), type.end(),
                         [&](const ordered_json &t) { return matches(v, t); });
    if (!type.is_string())
      return false;
    const std::string t = type.get<std::string>();
    return (t == "object" && v.is_object()) || (t == "array" && v.is_array()) ||
           (t == "string" && v.is_string()) || (t == "boolean" && v.is_boolean()) ||
           (t == "null" && v.is_null()) || (t == "number" && v.is_number()) ||
           (t == "integer" && (v.is_number_integer() ||
                               (v.is_number_float() &&
                                std::floor(v.get<double>()) == v.get<double>())));
  }

  static uint32_t bound(const ordered_json &s, const char *key, uint32_t fallback,
                        const std::string &where) {
    const auto v = s.find(key);
    if (v == s.end())
      return fallback;
    if (!v->is_number_unsigned() || v->get<uint64_t>() > UINT32_MAX - 1)
      throw JsonSchemaError(where + "/" + key, std::string(key) +
                                                   " must be a non-negative integer");
    return static_cast<uint32_t>(v->get<uint64_t>());
  }

  // Refuses the keywords of `s` that no type it names (`type`, or each of a type list) takes.
  static void only(const ordered_json &s, const std::string &type, const std::string &where) {
    std::set<std::string> allowed = kAnnotations;
    allowed.insert({"type", "uniqueItems"});
    std::vector<std::string> types = {type};
    if (const auto t = s.find("type"); t != s.end() && t->is_array())
      for (const ordered_json &one : *t)
        if (one.is_string())
          types.push_back(one.get<std::string>());
    for (const std::string &one : types)
      if (auto k = kTypeKeywords.find(one); k != kTypeKeywords.end())
        allowed.insert(k->second.begin(), k->second.end());
    for (const auto &[key, value] : s.items())
      if (!allowed.count(key))
        throw JsonSchemaError(where + "/" + key,
                              "'" + key + "' does not apply to type " + type);
  }

  // The automaton of a string schema's pattern or format (null: none).
  static std::shared_ptr<const ByteDfa> pattern(const ordered_json &s, const std::string &where) {
    const auto p = s.find("pattern"), f = s.find("format");
    if (p != s.end() && f != s.end())
      throw JsonSchemaError(where + "/format", "pattern and format together are not supported");
    if (p == s.end() && f == s.end())
      return nullptr;
    const bool is_pattern = p != s.end();
    const ordered_json &v = is_pattern ? *p : *f;
    const std::string at = where + (is_pattern ? "/pattern" : "/format");
    if (!v.is_string())
      throw JsonSchemaError(at, std::string(is_pattern ? "pattern" : "format") +
                                    " must be a string");
    try {
      return std::make_shared<const ByteDfa>(is_pattern ? ByteDfa::compile(v.get<std::string>())
                                                        : ByteDfa::format(v.get<std::string>()));
    } catch (const PatternError &e) {
      throw JsonSchemaError(at, e.what());
    }
  }

  // minimum, maximum, exclusiveMinimum, exclusiveMaximum (numbers, as draft 6 on has them).
  static void bounds(const ordered_json &s, Node &n, const std::string &where) {
    for (const char *key : {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}) {
      const auto v = s.find(key);
      if (v == s.end())
        continue;
      if (!v->is_number() || !std::isfinite(v->get<double>()))
        throw JsonSchemaError(where + "/" + key, std::string(key) + " must be a number");
      const double x = v->get<double>();
      const bool open = key[0] == 'e';
      n.bounded = true;
      if (std::strstr(key, "inimum")) {
        if (x > n.lo || (x == n.lo && open)) {
          n.lo = x;
          n.lo_open = open;
        }
      } else if (x < n.hi || (x == n.hi && open)) {
        n.hi = x;
        n.hi_open = open;
      }
    }
    if (n.bounded && !n.meets(-HUGE_VAL, false, HUGE_VAL, false))
      throw JsonSchemaError(where, std::string("no ") +
                                       (n.kind == Kind::integer ? "integer" : "number") +
                                       " lies within its minimum and maximum");
  }

  int32_t typed(const ordered_json &s, const std::string &type, const std::string &where) {
    Node n;
    if (type == "object") {
      only(s, type, where);
      n.kind = Kind::object;
      const auto props = s.find("properties");
      std::vector<std::string> names;
      if (props != s.end()) {
        if (!props->is_object())
          throw JsonSchemaError(where + "/properties", "properties must be an object");
        if (props->size() > JsonGrammar::kMaxMembers)
          throw JsonSchemaError(where + "/properties",
                                "more than " + std::to_string(JsonGrammar::kMaxMembers) +
                                    " properties are not supported");
        for (const auto &[name, sub] : props->items()) {
          names.push_back(name);
          const std::string text = ordered_json(name).dump(-1, ' ', false,
                                                           ordered_json::error_handler_t::strict);
          n.keys.push_back(text.substr(1, text.size() - 2));
          n.values.push_back(compile(sub, where + "/properties/" + escape(name)));
        }
      }
      if (const auto req = s.find("required"); req != s.end()) {
        if (!req->is_array())
          throw JsonSchemaError(where + "/required", "required must be an array of names");
        for (const ordered_json &name : *req) {
          const auto at = name.is_string()
                              ? std::find(names.begin(), names.end(), name.get<std::string>())
                              : names.end();
          if (at == names.end())
            throw JsonSchemaError(where + "/required", "the required property " + name.dump() +
                                                           " is not among the properties");
          n.required |= bit(static_cast<int>(at - names.begin()));
        }
      }
      if (props == s.end() || props->empty()) {
        const auto extra = s.find("additionalProperties");
        const bool closed = extra != s.end() && *extra == false;
        n.free = !closed;
        n.extra = closed ? -1
                         : extra == s.end() ? JsonGrammar::kAny
                                            : compile(*extra, where + "/additionalProperties");
      }
    } else if (type == "array") {
      only(s, type, where);
      n.kind = Kind::array;
      const auto items = s.find("items");
      n.items = items == s.end() ? JsonGrammar::kAny : compile(*items, where + "/items");
      n.min_items = bound(s, "minItems", 0, where);
      n.max_items = bound(s, "maxItems", UINT32_MAX, where);
      if (n.min_items > n.max_items)
        throw JsonSchemaError(where + "/minItems", "minItems is more than maxItems");
    } else if (type == "string") {
      only(s, type, where);
      n.kind = Kind::string;
      n.min_length = bound(s, "minLength", 0, where);
      n.max_length = bound(s, "maxLength", UINT32_MAX, where);
      if (n.min_length > n.max_length)
        throw JsonSchemaError(where + "/minLength", "minLength is more than maxLength");
      n.pattern = pattern(s, where);
    } else if (type == "number" || type == "integer") {
      only(s, type, where);
      n.kind = type == "number" ? Kind::number : Kind::integer;
      bounds(s, n, where);
    } else if (type == "boolean" || type == "null") {
      only(s, type, where);
      n.kind = Kind::literals;
      n.literals = type == "null" ? std::vector<std::string>{"null"}
                                  : std::vector<std::string>{"true", "false"};
    } else {
      throw JsonSchemaError(where + "/type", "unknown type '" + type + "'");
    }
    return add(std::move(n));
  }

  // One of `options`: nested choices are flattened, literal sets merged, integer joins number;
  // the options left must begin with different bytes, so that the first byte picks one.
  int32_t choice(const std::vector<int32_t> &given, const std::string &where) {
    std::vector<int32_t> flat;
    for (int32_t o : given) {
      const Node &n = g_.node(o);
      if (n.kind == Kind::choice && !n.options.empty())
        flat.insert(flat.end(), n.options.begin(), n.options.end());
      else
        flat.push_back(o);
    }
    Node merged;
    merged.kind = Kind::literals;
    std::vector<int32_t> options;
    bool number = false;
    for (int32_t o : flat) {
      const Node &n = g_.node(o);
      if (n.kind == Kind::literals) {
        for (const std::string &l : n.literals)
          if (std::find(merged.literals.begin(), merged.literals.end(), l) ==
              merged.literals.end())
            merged.literals.push_back(l);
      } else if (n.kind == Kind::number) {
        number = true;
      } else {
        options.push_back(o);
      }
    }
    if (number)
      for (int32_t &o : options)
        if (g_.node(o).kind == Kind::integer)
          o = JsonGrammar::kAnyNumber;
    if (number && std::none_of(options.begin(), options.end(), [](int32_t o) {
          return o == JsonGrammar::kAnyNumber;
        }))
      options.push_back(JsonGrammar::kAnyNumber);
    if (merged.literals.size() > JsonGrammar::kMaxMembers)
      throw JsonSchemaError(where, "more than " + std::to_string(JsonGrammar::kMaxMembers) +
                                       " values are not supported");
    if (!merged.literals.empty())
      options.push_back(add(std::move(merged)));
    std::sort(options.begin(), options.end());
    options.erase(std::unique(options.begin(), options.end()), options.end());
    if (options.size() == 1)
      return options[0];
    Node n;
    n.kind = Kind::choice;
    n.options = std::move(options);
    const int32_t id = add(std::move(n));
    choices_.emplace_back(id, where);
    return id;
  }

public:
  // Once every reference is resolved: each choice's options begin with different bytes, so
  // that the first byte picks one.
  void check_choices() const {
    for (const Node &n : g_.nodes_)
      if (n.kind == Kind::choice && n.options.empty())
        throw JsonSchemaError("", "the references loop without reaching a value");
    for (const auto &[id, where] : choices_)
      for (int c = 0; c < 256; ++c) {
        int begin = 0;
        for (int32_t o : g_.node(id).options)
          begin += may_begin(o, static_cast<unsigned char>(c), where, 0);
        if (begin > 1)
          throw JsonSchemaError(
              where, std::string("two options begin with '") + static_cast<char>(c) +
                         "': phimoec holds a reply to anyOf (or a type list) only when its "
                         "options begin differently (one object, one array, one string, "
                         "numbers, and literals)");
      }
  }

private:
  // JsonGrammar::may_begin, refusing a loop of references that reaches no value.
  bool may_begin(int32_t id, unsigned char c, const std::string &where, int depth) const {
    const Node &n = g_.node(id);
    if (n.kind != Kind::choice)
      return g_.may_begin(id, c);
    if (depth > 64)
      throw JsonSchemaError(where, "the references loop without reaching a value");
    return std::any_of(n.options.begin(), n.options.end(),
                       [&](int32_t o) { return may_begin(o, c, where, depth + 1); });
  }

  // The value JSON pointer `pointer` (RFC 6901) names in the document; null when none.
  const ordered_json *resolve(const std::string &pointer) const {
    const ordered_json *at = &document_;
    size_t pos = 0;
    while (pos < pointer.size()) {
      if (pointer[pos] != '/')
        return nullptr;
      const size_t end = std::min(pointer.find('/', pos + 1), pointer.size());
      std::string token;
      for (size_t i = pos + 1; i < end; ++i) {
        if (pointer[i] == '~' && i + 1 < end && (pointer[i + 1] == '0' || pointer[i + 1] == '1'))
          token += pointer[++i] == '0' ? '~' : '/';
        else
          token += pointer[i];
      }
      pos = end;
      if (at->is_object()) {
        const auto it = at->find(token);
        if (it == at->end())
          return nullptr;
        at = &*it;
      } else if (at->is_array() && !token.empty() &&
                 token.find_first_not_of("0123456789") == std::string::npos &&
                 token.size() < 10 && std::stoul(token) < at->size()) {
        at = &(*at)[std::stoul(token)];
      } else {
        return nullptr;
      }
    }
    return at;
  }

  static std::string escape(const std::string &name) { // a JSON pointer's reference token
    std::string out;
    for (char c : name)
      out += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
    return out;
  }

  const ordered_json &document_;
  JsonGrammar &g_;
  std::map<std::string, int32_t> refs_;
  std::vector<std::pair<int32_t, std::string>> choices_;
};

std::shared_ptr<const JsonGrammar> JsonGrammar::from_schema(const ordered_json &schema) {
  std::shared_ptr<JsonGrammar> g(new JsonGrammar());
  SchemaCompiler compiler(schema, *g);
  g->compact_ = true;
  g->root_ = compiler.compile(schema, "");
  compiler.check_choices();
  // A reply ends where its value does: a top-level number could always go on.
  const int32_t root = g->root_;
  if (g->may_begin(root, '0') || g->may_begin(root, '-'))
    throw JsonSchemaError("", "a reply that may be a bare number has no end: make the schema "
                              "an object (or an array, a string, literals)");
  for (const std::string &a : g->node(root).literals)
    for (const std::string &b : g->node(root).literals)
      if (a != b && b.rfind(a, 0) == 0)
        throw JsonSchemaError("", "the values " + a + " and " + b +
                                      " begin alike: a reply of one could go on as the other");
  return g;
}

// ---- prefixes -----------------------------------------------------------------------------

JsonPrefix::JsonPrefix() : JsonPrefix(*JsonGrammar::any_object()) {}

JsonPrefix::JsonPrefix(const JsonGrammar &grammar) : grammar_(&grammar) {
  enter(grammar.root());
}

void JsonPrefix::assign(const JsonPrefix &other) {
  grammar_ = other.grammar_;
  depth_ = other.depth_;
  whitespace_ = other.whitespace_;
  done_ = other.done_;
  std::copy(other.stack_, other.stack_ + depth_, stack_);
}

// A whitespace byte between tokens (whitespace_: the run's bytes so far; kIndentless: a lone
// space, after which no more).
bool JsonPrefix::space(unsigned char c) {
  if (!is_space(c))
    return false;
  if (!grammar_->compact())
    return ++whitespace_ <= kMaxWhitespace;
  constexpr int kIndentless = 1 << 20;
  if (whitespace_ == 0) {
    whitespace_ = c == ' ' ? kIndentless : 1;
    return c == ' ' || c == '\n';
  }
  return whitespace_ != kIndentless && (c == ' ' || c == '\t') && whitespace_++ <= kMaxIndent;
}

// The properties of `n` a key after property `last` may name: the next ones up to and including
// the first required one.
uint64_t JsonPrefix::next_keys(const Node &n, int32_t last) const {
  uint64_t keys = 0;
  for (int i = last + 1; i < static_cast<int>(n.keys.size()); ++i) {
    keys |= bit(i);
    if (n.required & bit(i))
      break;
  }
  return keys;
}

// The value of the top frame ended.
bool JsonPrefix::pop() {
  if (--depth_ == 0)
    done_ = true;
  return true;
}

// A new value of `node` above the top frame, before its first byte; false when nesting is as
// deep as it may be.
bool JsonPrefix::enter(int32_t node) {
  if (depth_ == kMaxDepth)
    return false;
  stack_[depth_++] = Frame{node, kValue, 0, 0x80, 0xBF, 0, -1, 0};
  return true;
}

// A new value of `node` that begins with `c`, above the top frame.
bool JsonPrefix::open(int32_t node, unsigned char c) {
  return enter(node) && begin(stack_[depth_ - 1], c);
}

// The first byte `c` of frame `f`'s value (the top frame).
bool JsonPrefix::begin(Frame &f, unsigned char c) {
  const Node *n = &grammar_->node(f.node);
  while (n->kind == Kind::choice || n->kind == Kind::any) {
    int32_t next = -1;
    if (n->kind == Kind::any) {
      next = c == '{'   ? JsonGrammar::kAnyObject
             : c == '[' ? JsonGrammar::kAnyArray
             : c == '"' ? JsonGrammar::kAnyString
             : (c == '-' || is_digit(c)) ? JsonGrammar::kAnyNumber
                                         : JsonGrammar::kAnyLiteral;
    } else {
      for (int32_t o : n->options)
        if (grammar_->may_begin(o, c)) {
          next = o;
          break;
        }
      if (next < 0)
        return false;
    }
    f.node = next;
    n = &grammar_->node(next);
  }
  switch (n->kind) {
  case Kind::object:
    if (c != '{')
      return false;
    f.state = kObjOpen;
    f.last = -1;
    return true;
  case Kind::array:
    if (c != '[')
      return false;
    f.state = kArrOpen;
    f.count = 0;
    return true;
  case Kind::string:
    if (c != '"')
      return false;
    f.state = kStr;
    f.aux = 0;
    f.count = 0;
    f.last = ByteDfa::kStart;
    return true;
  case Kind::number:
  case Kind::integer:
    if (c != '-' && !is_digit(c))
      return false;
    f.state = kNum;
    f.aux = c == '-' ? kMinus : c == '0' ? kZero : kInt;
    f.last = c == '-' ? 1 : 0;
    f.count = 0;
    f.lo = c == '-' ? 0 : 1; // integer digits
    f.hi = 0;                // exponent digits
    set_magnitude(f, c == '-' ? 0.0 : c - '0');
    return !n->bounded || in_reach(*n, f);
  case Kind::literals: {
    uint64_t bits = 0;
    bool longer = false;
    for (size_t i = 0; i < n->literals.size(); ++i)
      if (static_cast<unsigned char>(n->literals[i][0]) == c) {
        bits |= bit(static_cast<int>(i));
        longer |= n->literals[i].size() > 1;
      }
    if (!bits)
      return false;
    f.state = kLit;
    f.bits = bits;
    f.count = 1;
    return longer ? true : pop(); // a one-byte literal that nothing extends is complete
  }
  default:
    return false;
  }
}

bool JsonPrefix::push(unsigned char c) {
  if (done_ || depth_ == 0)
    return false;
  Frame &f = stack_[depth_ - 1];
  if (!is_space(c) || f.state == kStr || f.state == kStrEscape || f.state == kStrHex ||
      f.state == kObjKeyText)
    whitespace_ = 0;
  const Node &n = grammar_->node(f.node);
  switch (f.state) {
  case kValue:
    if (is_space(c))
      return depth_ > 1 && space(c); // the reply opens with its value
    return begin(f, c);
  case kObjOpen:
    if (c == '}') {
      if (!n.free && next_keys(n, -1) & n.required)
        return false;
      return pop();
    }
    [[fallthrough]];
  case kObjKey:
    if (c != '"')
      return space(c);
    if (n.free) {
      f.state = kObjColon;
      return open(JsonGrammar::kAnyString, c);
    }
    f.bits = next_keys(n, f.last);
    if (!f.bits)
      return false;
    f.state = kObjKeyText;
    f.count = 0;
    return true;
  case kObjKeyText: {
    if (c == '"') {
      for (int i = 0; i < static_cast<int>(n.keys.size()); ++i)
        if ((f.bits & bit(i)) && n.keys[static_cast<size_t>(i)].size() == f.count) {
          f.last = i;
          f.state = kObjColon;
          return true;
        }
      return false;
    }
    uint64_t bits = 0;
    for (int i = 0; i < static_cast<int>(n.keys.size()); ++i) {
      const std::string &key = n.keys[static_cast<size_t>(i)];
      if ((f.bits & bit(i)) && key.size() > f.count &&
          static_cast<unsigned char>(key[f.count]) == c)
        bits |= bit(i);
    }
    if (!bits)
      return false;
    f.bits = bits;
    ++f.count;
    return true;
  }
  case kObjColon:
    if (c != ':')
      return space(c);
    f.state = kObjAfter;
    return enter(n.free ? n.extra : n.values[static_cast<size_t>(f.last)]);
  case kObjAfter:
    if (c == ',') {
      if (!n.free && !next_keys(n, f.last))
        return false;
      f.state = kObjKey;
      return true;
    }
    if (c == '}') {
      if (!n.free && next_keys(n, f.last) & n.required)
        return false;
      return pop();
    }
    return space(c);
  case kArrOpen:
    if (c == ']')
      return f.count >= n.min_items && pop();
    [[fallthrough]];
  case kArrValue:
    if (is_space(c))
      return space(c);
    if (f.count >= n.max_items)
      return false;
    ++f.count;
    f.state = kArrAfter;
    return open(n.items, c);
  case kArrAfter:
    if (c == ',') {
      if (f.count >= n.max_items)
        return false;
      f.state = kArrValue;
      return true;
    }
    if (c == ']')
      return f.count >= n.min_items && pop();
    return space(c);
  case kStr:
    if (n.pattern && (c == '\\' || (c != '"' && !follow(*n.pattern, f, c))))
      return false; // a pattern's value is written without escapes
    if (f.aux > 0) { // inside a UTF-8 sequence
      if (c < f.lo || c > f.hi)
        return false;
      --f.aux;
      f.lo = 0x80;
      f.hi = 0xBF;
      return true;
    }
    if (c == '"')
      return f.count >= n.min_length && (!n.pattern || n.pattern->accepting(f.last)) && pop();
    if (f.count >= n.max_length || c < 0x20) // control characters must be escaped
      return false;
    ++f.count;
    if (c == '\\') {
      f.state = kStrEscape;
      return true;
    }
    if (c < 0x80)
      return true;
    // The first byte of a multi-byte UTF-8 character (RFC 3629: no overlong forms, no
    // surrogates, nothing past U+10FFFF): how many bytes follow, and the range of the next.
    if (c >= 0xC2 && c <= 0xDF) {
      f.aux = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      f.aux = 2;
      if (c == 0xE0)
        f.lo = 0xA0;
      if (c == 0xED)
        f.hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      f.aux = 3;
      if (c == 0xF0)
        f.lo = 0x90;
      if (c == 0xF4)
        f.hi = 0x8F;
    } else {
      return false;
    }
    return true;
  case kStrEscape:
    if (c == 'u') {
      f.state = kStrHex;
      f.aux = 4;
      return true;
    }
    if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
        c == 't') {
      f.state = kStr;
      f.aux = 0;
      return true;
    }
    return false;
  case kStrHex:
    if (!is_hex(c))
      return false;
    if (--f.aux == 0)
      f.state = kStr; // aux 0: no UTF-8 sequence open
    return true;
  case kNum: {
    bool ended = false;
    if (!number_byte(f, n, c, ended))
      return false;
    if (!ended)
      return !n.bounded || in_reach(n, f);
    // The number ended: `c` follows it as it follows any value (a top-level number is refused
    // when the schema is compiled).
    if (n.bounded) {
      const double v = magnitude(f) * ((f.last & 1) ? -1 : 1);
      if (!n.meets(v, false, v, false))
        return false;
    }
    pop();
    return !done_ && push(c);
  }
  case kLit: {
    uint64_t bits = 0;
    bool complete = false, longer = false;
    for (int i = 0; i < static_cast<int>(n.literals.size()); ++i) {
      if (!(f.bits & bit(i)))
        continue;
      const std::string &l = n.literals[static_cast<size_t>(i)];
      if (l.size() == f.count)
        complete = true;
      else if (static_cast<unsigned char>(l[f.count]) == c) {
        bits |= bit(i);
        longer |= l.size() > f.count + 1;
      }
    }
    if (bits) {
      f.bits = bits;
      ++f.count;
      return longer ? true : pop(); // complete, and nothing extends it
    }
    if (!complete) // a literal that another extends (1 of 1 and 10) ends at the next byte
      return false;
    pop();
    return !done_ && push(c);
  }
  }
  return false;
}

bool JsonPrefix::takes_plain(uint32_t n) const {
  if (done_ || depth_ == 0)
    return false;
  const Frame &f = stack_[depth_ - 1];
  const Node &node = grammar_->node(f.node);
  return f.state == kStr && f.aux == 0 && !node.pattern &&
         f.count + uint64_t{n} <= node.max_length;
}

// Moves frame `f`'s pattern state on by byte `c` of its string (not the closing quote): false
// when no value of the pattern goes that way, or none within maxLength.
bool JsonPrefix::follow(const ByteDfa &dfa, Frame &f, unsigned char c) const {
  const int32_t next = dfa.next(f.last, c);
  if (next < 0)
    return false;
  const uint64_t chars = f.count + ((c & 0xC0) == 0x80 ? 0 : 1); // with this one's
  if (chars + dfa.chars_left(next) > grammar_->node(f.node).max_length)
    return false;
  f.last = next;
  return true;
}

void JsonPrefix::push_plain(uint32_t n) {
  stack_[depth_ - 1].count += n;
  whitespace_ = 0;
}

// A number frame's magnitude so far, kept in Frame::bits.
double JsonPrefix::magnitude(const Frame &f) {
  double d;
  std::memcpy(&d, &f.bits, sizeof d);
  return d;
}
void JsonPrefix::set_magnitude(Frame &f, double d) { std::memcpy(&f.bits, &d, sizeof d); }

bool Node::meets(double x, bool x_open, double y, bool y_open) const {
  if (kind == Kind::integer) { // the integers of both ranges
    const double a = std::max(x_open ? std::floor(x) + 1 : std::ceil(x),
                              lo_open ? std::floor(lo) + 1 : std::ceil(lo));
    const double b = std::min(y_open ? std::ceil(y) - 1 : std::floor(y),
                              hi_open ? std::ceil(hi) - 1 : std::floor(hi));
    return a <= b;
  }
  const bool a_open = x > lo ? x_open : x < lo ? lo_open : (x_open || lo_open);
  const bool b_open = y < hi ? y_open : y > hi ? hi_open : (y_open || hi_open);
  const double a = std::max(x, lo), b = std::min(y, hi);
  return a < b || (a == b && !a_open && !b_open);
}

// Byte `c` of a number (its syntax, and its magnitude when bounded): false when it cannot
// continue the number; `ended` when the number ended before `c`.
bool JsonPrefix::number_byte(Frame &f, const Node &n, unsigned char c, bool &ended) const {
  const bool integer = n.kind == Kind::integer, exponent = !integer && !n.bounded;
  const bool digit = is_digit(c);
  switch (f.aux) {
  case kMinus:
    if (!digit)
      return false;
    f.aux = c == '0' ? kZero : kInt;
    f.lo = 1;
    set_magnitude(f, c - '0');
    return true;
  case kInt:
    if (digit) {
      if (++f.lo > kMaxIntDigits)
        return false;
      set_magnitude(f, magnitude(f) * 10 + (c - '0'));
      return true;
    }
    [[fallthrough]];
  case kZero:
    if (c == '.' && !integer) {
      f.aux = kDot;
      f.last |= 2;
      return true;
    }
    if ((c == 'e' || c == 'E') && exponent) {
      f.aux = kExp;
      return true;
    }
    ended = true;
    return true;
  case kDot:
  case kFrac:
    if (digit) {
      f.aux = kFrac;
      if (++f.count > kMaxFracDigits)
        return false;
      set_magnitude(f, magnitude(f) + (c - '0') * std::pow(10.0, -static_cast<double>(f.count)));
      return true;
    }
    if (f.aux == kDot)
      return false;
    if ((c == 'e' || c == 'E') && exponent) {
      f.aux = kExp;
      return true;
    }
    ended = true;
    return true;
  case kExp:
    if (c == '+' || c == '-') {
      f.aux = kExpSign;
      return true;
    }
    [[fallthrough]];
  case kExpSign:
    if (!digit)
      return false;
    f.aux = kExpDigits;
    f.hi = 1;
    return true;
  case kExpDigits:
    if (!digit)
      ended = true;
    return !digit || ++f.hi <= kMaxExpDigits;
  }
  return false;
}

// Whether the bounded number that frame `f` has begun can still end within its bounds: the
// magnitudes its prefix can reach are itself, [m, m + 1) through a fraction, and
// [m * 10^k, (m + 1) * 10^k) through more integer digits; in a fraction of s digits,
// [m, m + 10^-s).
bool JsonPrefix::in_reach(const Node &n, const Frame &f) const {
  const bool negative = f.last & 1;
  const double m = magnitude(f);
  auto meets = [&](double x, double y, bool y_open) { // magnitudes [x, y], signed
    return negative ? n.meets(-y, y_open, -x, false) : n.meets(x, false, y, y_open);
  };
  if (f.aux == kMinus)
    return meets(0, HUGE_VAL, false);
  if (f.last & 2)
    return meets(m, m + std::pow(10.0, -static_cast<double>(f.count)), true);
  if (meets(m, m, false) || (n.kind == Kind::number && meets(m, m + 1, true)))
    return true;
  if (f.aux == kZero)
    return false; // 0 and -0 take no more integer digits
  const double reach = negative ? -n.lo : n.hi; // the largest magnitude in bounds
  for (double scale = 10; m * scale <= reach && scale < 1e308; scale *= 10)
    if (meets(m * scale, (m + 1) * scale, true))
      return true;
  return false;
}

bool JsonPrefix::push(const std::string &bytes) {
  for (char c : bytes)
    if (!push(static_cast<unsigned char>(c)))
      return false;
  return true;
}

// ---- mask ---------------------------------------------------------------------------------

JsonMask::JsonMask(const Tokenizer &tokenizer, int vocab) : bytes_(static_cast<size_t>(vocab)) {
  // The trie as it is built: children by byte, and the tokens ending at each node.
  struct Building {
    std::map<unsigned char, uint32_t> children;
    std::vector<int32_t> tokens;
  };
  std::vector<Building> built(1);
  for (int32_t id = 0; id < vocab; ++id) {
    if (tokenizer.is_special(id))
      continue;
    std::string &b = bytes_[static_cast<size_t>(id)];
    b = tokenizer.token_bytes(id);
    if (b.empty())
      continue;
    longest_ = std::max(longest_, b.size());
    uint32_t at = 0;
    for (char ch : b) {
      const auto c = static_cast<unsigned char>(ch);
      const auto it = built[at].children.find(c);
      if (it != built[at].children.end()) {
        at = it->second;
      } else {
        const auto next = static_cast<uint32_t>(built.size());
        built[at].children.emplace(c, next);
        built.emplace_back();
        at = next;
      }
    }
    built[at].tokens.push_back(id);
  }
  // Depth first, each node's children numbered before their subtrees.
  trie_.resize(built.size());
  std::vector<uint32_t> order(built.size());
  std::vector<uint32_t> stack = {0};
  uint32_t numbered = 1;
  order[0] = 0;
  while (!stack.empty()) {
    const uint32_t old_id = stack.back();
    stack.pop_back();
    TrieNode &n = trie_[order[old_id]];
    const Building &b = built[old_id];
    n.tokens = static_cast<uint32_t>(tokens_.size());
    tokens_.insert(tokens_.end(), b.tokens.begin(), b.tokens.end());
    n.token_end = static_cast<uint32_t>(tokens_.size());
    n.edges = static_cast<uint32_t>(edge_byte_.size());
    for (const auto &[c, child] : b.children) {
      order[child] = numbered++;
      edge_byte_.push_back(c);
      edge_node_.push_back(order[child]);
    }
    n.edge_end = static_cast<uint32_t>(edge_byte_.size());
    for (auto it = b.children.rbegin(); it != b.children.rend(); ++it)
      stack.push_back(it->second);
  }
}

int JsonMask::apply(const JsonPrefix &prefix, float *logits) const {
  std::vector<char> allowed(bytes_.size(), 0);
  // Depth-first over the trie. A level is a trie node, the next child to visit, and the state
  // after the bytes on the path to it: states[base] and then `plain` plain string characters
  // (most of a string's tokens), which need no copy of the state.
  struct Level {
    uint32_t node;
    uint32_t next; // an edge
    size_t base;
    uint32_t plain;
  };
  std::vector<JsonPrefix> states(longest_ + 1, prefix);
  std::vector<Level> path;
  path.reserve(longest_ + 1);
  path.push_back({0, trie_[0].edges, 0, 0});
  int kept = 0;
  while (!path.empty()) {
    Level &at = path.back();
    const TrieNode &t = trie_[at.node];
    if (at.next == t.edge_end) {
      path.pop_back();
      continue;
    }
    const unsigned char c = edge_byte_[at.next];
    const uint32_t child = edge_node_[at.next++];
    const size_t d = path.size() - 1;
    const Level from = at; // `at` dangles once path grows
    const bool plain = c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
    size_t base = d + 1;
    uint32_t run = 0;
    if (plain && states[from.base].takes_plain(from.plain + 1)) {
      base = from.base;
      run = from.plain + 1;
    } else {
      JsonPrefix &s = states[d + 1];
      s.assign(states[from.base]);
      if (from.plain)
        s.push_plain(from.plain);
      if (!s.push(c))
        continue;
    }
    const TrieNode &n = trie_[child];
    for (uint32_t k = n.tokens; k < n.token_end; ++k)
      allowed[static_cast<size_t>(tokens_[k])] = 1;
    kept += static_cast<int>(n.token_end - n.tokens);
    path.push_back({child, n.edges, base, run});
  }
  for (size_t id = 0; id < bytes_.size(); ++id)
    if (!allowed[id])
      logits[id] = -INFINITY;
  return kept;
}

} // namespace phimoe_rt
