// json_mode.h - structured replies: serve's `response_format` {"type": "json_object"} (the reply
// is one JSON object, RFC 8259) and {"type": "json_schema"} (the reply is one JSON value that a
// JSON schema accepts), and phimoe-bin's --json and --json-schema, held token by token.
//
// JsonGrammar is what a reply must be: any JSON object, or a JSON schema compiled to a graph of
// nodes (docs/serving.md, "Structured replies", lists the keywords it holds replies to and
// refuses the rest, naming where they are in the schema). JsonPrefix reads the reply's bytes
// and says whether they still begin a value of the grammar, and when the value is complete; a
// string's bytes must be well-formed UTF-8 (a character may come over several tokens, as
// byte-fallback tokens spell it). JsonMask turns that into the tokens a sequence may take next:
// a token is allowed when all of its bytes continue the prefix (special tokens never are), and
// once the value is complete the reply ends. The masked logits are -infinity, so every sampler
// setting works on what is left.
//
// What a schema's reply looks like: an object's properties come in the schema's order, each
// once, the optional ones possibly left out, no others (an object with `properties` is closed
// whatever additionalProperties says; one without is free: any keys, values of
// additionalProperties' schema); enum and const values are written as JSON writes them without
// spaces; whitespace outside strings is one space, or a newline and at most 20 spaces or tabs
// (as llama.cpp's grammars from JSON schemas have it: a model that knows no better spends few
// tokens on it). JSON mode allows any whitespace, in runs of at most kMaxWhitespace bytes.
// A string with a pattern or format is written without escapes and ends only where the pattern
// can (json_pattern.h); a bounded number is written without exponent, each digit allowed only
// while the number can still end within its bounds; every number has at most 20 integer, 16
// fraction and 3 exponent digits.
#ifndef PHIMOE_RT_JSON_MODE_H
#define PHIMOE_RT_JSON_MODE_H

#include "phimoe_rt/json_pattern.h"
#include "phimoe_rt/tokenizer.h"

#include <nlohmann/json_fwd.hpp>

#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace phimoe_rt {

// A schema phimoec cannot hold a reply to: `where` is the JSON pointer of the place in the
// schema ("" for its root), what() says what is wrong there.
class JsonSchemaError : public std::runtime_error {
public:
  JsonSchemaError(std::string where, const std::string &what)
      : std::runtime_error(what), where_(std::move(where)) {}
  const std::string &where() const { return where_; }

private:
  std::string where_;
};

class JsonGrammar {
public:
  static constexpr int kMaxMembers = 64;   // properties of one object, values of one enum
  static constexpr int kMaxNodes = 4096;   // nodes of one compiled schema

  struct Node {
    enum class Kind : uint8_t {
      any,      // any JSON value
      object,   // keys/values: its properties in order; free: any keys, values of `extra`
      array,    // values of `items`, between min_items and max_items of them
      string,   // between min_length and max_length characters (code points)
      number,   // any JSON number
      integer,  // a JSON number without fraction or exponent
      literals, // one of `literals` (true, false, null, enum and const values) as written there
      choice,   // one of `options`, told apart by their first byte
    };
    Kind kind = Kind::any;
    std::vector<std::string> keys; // object: each property's name as a JSON string's body
    std::vector<int32_t> values;   // object: each property's node
    uint64_t required = 0;         // object: bit i when property i is required
    bool free = false;             // object: no `properties`; any keys
    int32_t extra = -1;            // free object: its values' node
    int32_t items = -1;            // array
    uint32_t min_items = 0, max_items = UINT32_MAX;
    uint32_t min_length = 0, max_length = UINT32_MAX;
    std::shared_ptr<const ByteDfa> pattern; // string: its pattern or format, when it has one
    // number, integer: minimum/maximum and their exclusive forms (bounded: any of them given;
    // the reply then writes no exponent).
    bool bounded = false;
    double lo = -HUGE_VAL, hi = HUGE_VAL;
    bool lo_open = false, hi_open = false;
    // Whether a value of this bounded number or integer lies in [x, y] (an end open when
    // said).
    bool meets(double x, bool x_open, double y, bool y_open) const;
    std::vector<std::string> literals;
    std::vector<int32_t> options;
  };

  // Any JSON object (json_object mode); one shared instance.
  static std::shared_ptr<const JsonGrammar> any_object();
  // `schema` compiled; throws JsonSchemaError for what a reply could not be held to (an unknown
  // or unsupported keyword, a $ref that leads nowhere, anyOf options that begin alike, a
  // top-level number, which has no end).
  static std::shared_ptr<const JsonGrammar> from_schema(const nlohmann::ordered_json &schema);

  const Node &node(int32_t id) const { return nodes_[static_cast<size_t>(id)]; }
  int32_t root() const { return root_; }
  // Whitespace as a schema's replies have it (a space, or a newline and an indent) rather
  // than JSON mode's.
  bool compact() const { return compact_; }
  // Which first bytes a value of `id` may begin with (whitespace aside).
  bool may_begin(int32_t id, unsigned char c) const;

  // Built-in nodes every grammar has.
  static constexpr int32_t kAny = 0, kAnyObject = 1, kAnyArray = 2, kAnyString = 3,
                           kAnyNumber = 4, kAnyLiteral = 5;

private:
  friend class SchemaCompiler;
  JsonGrammar();
  std::vector<Node> nodes_;
  int32_t root_ = kAnyObject;
  bool compact_ = false;
};

class JsonPrefix {
public:
  static constexpr int kMaxDepth = 32;      // open values: nested objects and arrays, strings,
                                            // numbers and literals being written
  static constexpr int kMaxWhitespace = 24; // JSON mode: consecutive whitespace bytes outside
                                            // strings
  static constexpr int kMaxIndent = 20;     // schemas: spaces or tabs after a newline

  // Prefixes of any JSON object (json_object mode).
  JsonPrefix();
  // Prefixes of a value of `grammar`, which must outlive this.
  explicit JsonPrefix(const JsonGrammar &grammar);

  // Reads one byte; false when it cannot continue a value of the grammar here (the state is then
  // unspecified: callers that probe work on a copy).
  bool push(unsigned char c);
  bool push(const std::string &bytes);
  // The value has closed (nothing may follow).
  bool complete() const { return done_; }
  // This state made equal to `other` (copying only the open values).
  void assign(const JsonPrefix &other);

private:
  friend class JsonMask;
  // Whether `n` more plain characters (printable ASCII but '"' and '\\') may continue the string
  // being written, and the state after them: what JsonMask reads without copying the state.
  bool takes_plain(uint32_t n) const;
  void push_plain(uint32_t n);

  struct Frame {
    int32_t node;
    uint8_t state;
    uint8_t aux;    // number: its part; string: UTF-8 bytes or hex digits still due
    uint8_t lo, hi; // string: the range of the next UTF-8 continuation byte; number: the
                    // digits of its integer part and of its exponent
    uint32_t count; // array: values; string: characters; literal, key: bytes matched;
                    // number: fraction digits
    int32_t last;   // object: the last property written (-1: none); string: its pattern's
                    // state; number: 1 negative, 2 in the fraction
    uint64_t bits;  // literal: the values still possible; key: the properties still possible;
                    // number: its magnitude so far (a double's bits)
  };
  bool begin(Frame &f, unsigned char c);
  bool follow(const ByteDfa &dfa, Frame &f, unsigned char c) const;
  bool number_byte(Frame &f, const JsonGrammar::Node &n, unsigned char c, bool &ended) const;
  bool in_reach(const JsonGrammar::Node &n, const Frame &f) const;
  static double magnitude(const Frame &f);
  static void set_magnitude(Frame &f, double d);
  bool enter(int32_t node);
  bool open(int32_t node, unsigned char c);
  bool pop();
  bool space(unsigned char c);
  uint64_t next_keys(const JsonGrammar::Node &n, int32_t last) const;

  const JsonGrammar *grammar_;
  Frame stack_[kMaxDepth];
  int depth_ = 0;
  int whitespace_ = 0;
  bool done_ = false;
};

// The tokens a structured reply may take, over one tokenizer's vocabulary.
class JsonMask {
public:
  JsonMask(const Tokenizer &tokenizer, int vocab);
  // Sets the logits of the tokens that cannot continue `prefix` to -infinity; returns how
  // many tokens remain.
  int apply(const JsonPrefix &prefix, float *logits) const;
  // The bytes token `id` adds to the reply (empty for special tokens and unknown ids).
  const std::string &bytes(int32_t id) const { return bytes_[static_cast<size_t>(id)]; }

private:
  // The tokens' bytes as a trie, so that a prefix shared by many tokens is read once; its
  // nodes in depth-first order in flat arrays, so that the walk reads memory in order.
  struct TrieNode {
    uint32_t edges, edge_end;   // its children: edge_byte_/edge_node_[edges, edge_end)
    uint32_t tokens, token_end; // the tokens whose bytes end here: tokens_[tokens, token_end)
  };
  std::vector<std::string> bytes_;
  std::vector<TrieNode> trie_;
  std::vector<unsigned char> edge_byte_;
  std::vector<uint32_t> edge_node_;
  std::vector<int32_t> tokens_;
  size_t longest_ = 0;
};

} // namespace phimoe_rt

#endif // PHIMOE_RT_JSON_MODE_H
