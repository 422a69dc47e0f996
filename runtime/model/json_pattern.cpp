// json_pattern.cpp - JSON Schema patterns as byte automata (see json_pattern.h): a parser to a
// syntax tree, Thompson's construction of an NFA over bytes, the subset construction, and the
// states that can still reach a match, with the fewest characters they need.
#include "phimoe_rt/json_pattern.h"

#include <algorithm>
#include <bitset>
#include <deque>
#include <limits>
#include <map>

namespace phimoe_rt {

namespace {

constexpr size_t kMaxNfaStates = 50000;

// The bytes a reply writes inside a string without an escape.
bool writable(unsigned char c) { return c >= 0x20 && c != '"' && c != '\\'; }

struct Ast {
  enum Kind { Bytes, Char, Concat, Alt, Repeat } kind = Concat;
  std::string bytes;          // Bytes: one non-ASCII character's UTF-8
  std::bitset<128> ascii;     // Char: the ASCII characters it matches
  bool multibyte = false;     // Char: and every non-ASCII character
  std::vector<Ast> kids;      // Concat, Alt; Repeat: one
  int min = 0, max = -1;      // Repeat (-1: no bound)
};

Ast char_of(const std::bitset<128> &ascii, bool multibyte) {
  Ast a;
  a.kind = Ast::Char;
  a.ascii = ascii;
  a.multibyte = multibyte;
  return a;
}

std::bitset<128> printable() { // the ASCII characters a value may hold
  std::bitset<128> s;
  for (int c = 0; c < 128; ++c)
    s[static_cast<size_t>(c)] = writable(static_cast<unsigned char>(c));
  return s;
}

std::bitset<128> range(char lo, char hi) {
  std::bitset<128> s;
  for (int c = lo; c <= hi; ++c)
    s[static_cast<size_t>(c)] = true;
  return s;
}

class Parser {
public:
  explicit Parser(const std::string &p) : p_(p) {}

  Ast parse() {
    bool start = false, end = false;
    size_t from = 0, to = p_.size();
    if (to > 0 && p_[0] == '^') {
      start = true;
      from = 1;
    }
    if (to > from && p_[to - 1] == '$' && !escaped(to - 1)) {
      end = true;
      --to;
    }
    p_ = p_.substr(from, to - from);
    Ast body = alt();
    if (pos_ != p_.size())
      fail("unbalanced ')'");
    if ((start || end) && body.kind == Ast::Alt && body.kids.size() > 1)
      fail("'^' or '$' with a '|' outside groups: write ^(a|b)$");
    Ast whole;
    whole.kind = Ast::Concat;
    Ast any = char_of(printable(), true);
    Ast any_run;
    any_run.kind = Ast::Repeat;
    any_run.kids.push_back(any);
    if (!start)
      whole.kids.push_back(any_run);
    whole.kids.push_back(std::move(body));
    if (!end)
      whole.kids.push_back(any_run);
    return whole;
  }

private:
  [[noreturn]] void fail(const std::string &why) const {
    throw PatternError("the pattern '" + original_ + "': " + why);
  }

  bool escaped(size_t at) const { // whether p_[at] follows an odd run of backslashes
    size_t n = 0;
    while (at > n && p_[at - n - 1] == '\\')
      ++n;
    return n % 2 == 1;
  }

  bool more() const { return pos_ < p_.size(); }
  char peek() const { return p_[pos_]; }

  Ast alt() {
    Ast a;
    a.kind = Ast::Alt;
    a.kids.push_back(concat());
    while (more() && peek() == '|') {
      ++pos_;
      a.kids.push_back(concat());
    }
    return a.kids.size() == 1 ? std::move(a.kids[0]) : a;
  }

  Ast concat() {
    Ast a;
    a.kind = Ast::Concat;
    while (more() && peek() != '|' && peek() != ')')
      a.kids.push_back(repeat());
    return a;
  }

  // A quantifier at pos_, if one is there: {n}, {n,}, {n,m}.
  bool counted(int &min, int &max) {
    size_t at = pos_ + 1;
    auto number = [&](int &out) {
      size_t begin = at;
      long v = 0;
      while (at < p_.size() && p_[at] >= '0' && p_[at] <= '9' && at - begin < 6)
        v = v * 10 + (p_[at++] - '0');
      out = static_cast<int>(v);
      return at > begin;
    };
    if (!number(min))
      return false;
    max = min;
    if (at < p_.size() && p_[at] == ',') {
      ++at;
      if (!number(max))
        max = -1;
    }
    if (at >= p_.size() || p_[at] != '}')
      return false;
    pos_ = at + 1;
    return true;
  }

  Ast repeat() {
    Ast atom_ = atom();
    while (more()) {
      int min = 0, max = -1;
      const char c = peek();
      if (c == '*') {
        ++pos_;
      } else if (c == '+') {
        min = 1;
        ++pos_;
      } else if (c == '?') {
        max = 1;
        ++pos_;
      } else if (c == '{' && counted(min, max)) {
        if (max >= 0 && max < min)
          fail("{" + std::to_string(min) + "," + std::to_string(max) + "}: max below min");
        if (min > 1000 || max > 1000)
          fail("a count above 1000");
      } else {
        break;
      }
      if (more() && peek() == '?')
        ++pos_; // lazy: the same strings
      if (more() && (peek() == '*' || peek() == '+' || peek() == '?'))
        fail("a quantifier after a quantifier");
      Ast r;
      r.kind = Ast::Repeat;
      r.min = min;
      r.max = max;
      r.kids.push_back(std::move(atom_));
      atom_ = std::move(r);
    }
    return atom_;
  }

  // One character of the pattern as written (its UTF-8 bytes when not ASCII).
  Ast literal_at() {
    const auto c = static_cast<unsigned char>(p_[pos_]);
    if (c < 0x80) {
      ++pos_;
      return single(c);
    }
    const size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    if (pos_ + n > p_.size())
      fail("ill-formed UTF-8");
    Ast a;
    a.kind = Ast::Bytes;
    a.bytes = p_.substr(pos_, n);
    pos_ += n;
    return a;
  }

  Ast single(unsigned char c) {
    if (!writable(c))
      fail("it needs a character that a reply writes only escaped ('\"', '\\\\' or a control "
           "character)");
    std::bitset<128> s;
    s[c] = true;
    return char_of(s, false);
  }

  Ast utf8_of(uint32_t cp) {
    if (cp < 0x80)
      return single(static_cast<unsigned char>(cp));
    if (cp >= 0xD800 && cp <= 0xDFFF)
      fail("a surrogate escape");
    Ast a;
    a.kind = Ast::Bytes;
    if (cp < 0x800) {
      a.bytes += static_cast<char>(0xC0 | (cp >> 6));
    } else {
      a.bytes += static_cast<char>(0xE0 | (cp >> 12));
      a.bytes += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    }
    a.bytes += static_cast<char>(0x80 | (cp & 0x3F));
    return a;
  }

  // \d \w \s and their complements as a class; false for other escapes.
  bool class_escape(char c, std::bitset<128> &set, bool &multibyte) {
    std::bitset<128> s;
    switch (c) {
    case 'd': case 'D': s = range('0', '9'); break;
    case 'w': case 'W': s = range('a', 'z') | range('A', 'Z') | range('0', '9'); s['_'] = true;
      break;
    case 's': case 'S': s[' '] = true; break; // \t \n \r \f \v are never written raw
    default: return false;
    }
    const bool negated = c == 'D' || c == 'W' || c == 'S';
    set = negated ? printable() & ~s : s;
    multibyte = negated;
    return true;
  }

  uint32_t hex(size_t digits) {
    if (pos_ + digits > p_.size())
      fail("a short hex escape");
    uint32_t v = 0;
    for (size_t i = 0; i < digits; ++i) {
      const char h = p_[pos_++];
      const int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                    : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
      if (d < 0)
        fail("a bad hex escape");
      v = v * 16 + static_cast<uint32_t>(d);
    }
    return v;
  }

  // The escape after a backslash (pos_ at the character after it) as a code point; the
  // classes \d and the like are handled by the callers.
  uint32_t escape_code() {
    if (!more())
      fail("a '\\' at the end");
    const char c = p_[pos_++];
    switch (c) {
    case 'n': return '\n';
    case 't': return '\t';
    case 'r': return '\r';
    case 'f': return '\f';
    case 'v': return '\v';
    case '0': return 0;
    case 'x': return hex(2);
    case 'u': return hex(4);
    case 'b': case 'B':
      fail("word boundaries (\\b, \\B) are not supported");
    case 'p': case 'P':
      fail("Unicode property classes (\\p) are not supported");
    default:
      if (c >= '1' && c <= '9')
        fail("backreferences are not supported");
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        fail(std::string("the escape \\") + c + " is not supported");
      return static_cast<unsigned char>(c); // escaped punctuation
    }
  }

  Ast klass() {
    ++pos_; // '['
    bool negated = false;
    if (more() && peek() == '^') {
      negated = true;
      ++pos_;
    }
    std::bitset<128> set;
    bool multibyte = false;
    bool first = true;
    while (true) {
      if (!more())
        fail("an unclosed '['");
      if (peek() == ']' && !first)
        break;
      first = false;
      int lo;
      if (peek() == '\\') {
        ++pos_;
        std::bitset<128> s;
        bool mb = false;
        if (more() && class_escape(peek(), s, mb)) {
          ++pos_;
          set |= s;
          multibyte |= mb;
          continue;
        }
        const uint32_t cp = escape_code();
        if (cp >= 0x80)
          fail("non-ASCII characters in a class are not supported");
        lo = static_cast<int>(cp);
      } else {
        lo = static_cast<unsigned char>(p_[pos_++]);
        if (lo >= 0x80)
          fail("non-ASCII characters in a class are not supported");
      }
      int hi = lo;
      if (pos_ + 1 < p_.size() && peek() == '-' && p_[pos_ + 1] != ']') {
        ++pos_;
        if (peek() == '\\') {
          ++pos_;
          const uint32_t cp = escape_code();
          hi = static_cast<int>(cp);
        } else {
          hi = static_cast<unsigned char>(p_[pos_++]);
        }
        if (hi >= 0x80)
          fail("non-ASCII characters in a class are not supported");
        if (hi < lo)
          fail("a range out of order in a class");
      }
      for (int c = lo; c <= hi; ++c)
        set[static_cast<size_t>(c)] = true;
    }
    ++pos_; // ']'
    if (negated) {
      set = printable() & ~set;
      multibyte = !multibyte;
    }
    return char_of(set & printable(), multibyte);
  }

  Ast atom() {
    const char c = peek();
    switch (c) {
    case '(': {
      ++pos_;
      if (more() && peek() == '?') {
        if (pos_ + 1 < p_.size() && p_[pos_ + 1] == ':')
          pos_ += 2;
        else
          fail("lookaround and named groups are not supported");
      }
      Ast inner = alt();
      if (!more() || peek() != ')')
        fail("an unclosed '('");
      ++pos_;
      return inner;
    }
    case '[':
      return klass();
    case '.':
      ++pos_;
      return char_of(printable(), true);
    case '\\': {
      ++pos_;
      std::bitset<128> s;
      bool mb = false;
      if (more() && class_escape(peek(), s, mb)) {
        ++pos_;
        return char_of(s, mb);
      }
      return utf8_of(escape_code());
    }
    case '^':
    case '$':
      fail("'^' and '$' are supported only at the ends of the pattern");
    case '*':
    case '+':
    case '?':
      fail(std::string("nothing to repeat before '") + c + "'");
    default:
      return literal_at();
    }
  }

  std::string p_;
  const std::string original_ = p_;
  size_t pos_ = 0;
};

// Thompson's NFA over bytes: each state has epsilon moves and at most one byte-set move.
class Nfa {
public:
  struct State {
    std::vector<int> eps;
    std::bitset<256> on;
    int to = -1;
  };
  std::vector<State> states;

  int add() {
    if (states.size() >= kMaxNfaStates)
      throw PatternError("the pattern is too large (its automaton passes " +
                         std::to_string(kMaxNfaStates) + " states)");
    states.emplace_back();
    return static_cast<int>(states.size() - 1);
  }
  // A move on `set` from a new state to a new state; returns (from, to).
  std::pair<int, int> edge(const std::bitset<256> &set) {
    const int a = add(), b = add();
    states[static_cast<size_t>(a)].on = set;
    states[static_cast<size_t>(a)].to = b;
    return {a, b};
  }
  void eps(int from, int to) { states[static_cast<size_t>(from)].eps.push_back(to); }

  std::pair<int, int> build(const Ast &a) {
    switch (a.kind) {
    case Ast::Bytes: {
      const int start = add();
      int at = start;
      for (char ch : a.bytes) {
        std::bitset<256> s;
        s[static_cast<unsigned char>(ch)] = true;
        auto [f, t] = edge(s);
        eps(at, f);
        at = t;
      }
      return {start, at};
    }
    case Ast::Char: {
      const int start = add(), end = add();
      std::bitset<256> ascii;
      for (size_t c = 0; c < 128; ++c)
        ascii[c] = a.ascii[c];
      if (ascii.any()) {
        auto [f, t] = edge(ascii);
        eps(start, f);
        eps(t, end);
      }
      if (a.multibyte) { // a lead byte, then its continuation bytes (UTF-8 checks the rest)
        std::bitset<256> cont;
        for (size_t c = 0x80; c <= 0xBF; ++c)
          cont[c] = true;
        const std::pair<int, int> leads[] = {{0xC2, 0xDF}, {0xE0, 0xEF}, {0xF0, 0xF4}};
        for (int n = 1; n <= 3; ++n) {
          std::bitset<256> lead;
          for (int c = leads[n - 1].first; c <= leads[n - 1].second; ++c)
            lead[static_cast<size_t>(c)] = true;
          auto [f, t] = edge(lead);
          eps(start, f);
          for (int k = 0; k < n; ++k) {
            auto [cf, ct] = edge(cont);
            eps(t, cf);
            t = ct;
          }
          eps(t, end);
        }
      }
      return {start, end};
    }
    case Ast::Concat: {
      const int start = add();
      int at = start;
      for (const Ast &k : a.kids) {
        auto [f, t] = build(k);
        eps(at, f);
        at = t;
      }
      return {start, at};
    }
    case Ast::Alt: {
      const int start = add(), end = add();
      for (const Ast &k : a.kids) {
        auto [f, t] = build(k);
        eps(start, f);
        eps(t, end);
      }
      return {start, end};
    }
    case Ast::Repeat: {
      const int start = add();
      int at = start;
      for (int i = 0; i < a.min; ++i) {
        auto [f, t] = build(a.kids[0]);
        eps(at, f);
        at = t;
      }
      const int end = add();
      if (a.max < 0) { // a loop
        auto [f, t] = build(a.kids[0]);
        eps(at, f);
        eps(at, end);
        eps(t, f);
        eps(t, end);
        return {start, end};
      }
      for (int i = a.min; i < a.max; ++i) { // optional copies
        auto [f, t] = build(a.kids[0]);
        eps(at, f);
        eps(at, end);
        at = t;
      }
      eps(at, end);
      return {start, end};
    }
    }
    return {add(), add()};
  }

  void closure(std::vector<int> &set) const {
    std::vector<char> seen(states.size(), 0);
    std::vector<int> stack = set;
    for (int s : set)
      seen[static_cast<size_t>(s)] = 1;
    while (!stack.empty()) {
      const int s = stack.back();
      stack.pop_back();
      for (int t : states[static_cast<size_t>(s)].eps)
        if (!seen[static_cast<size_t>(t)]) {
          seen[static_cast<size_t>(t)] = 1;
          set.push_back(t);
          stack.push_back(t);
        }
    }
    std::sort(set.begin(), set.end());
  }
};

} // namespace

ByteDfa ByteDfa::compile(const std::string &pattern) {
  Parser parser(pattern);
  const Ast ast = parser.parse();
  Nfa nfa;
  const auto [start, accept] = nfa.build(ast);

  // Subset construction.
  std::map<std::vector<int>, int32_t> ids;
  std::vector<std::vector<int>> sets;
  std::vector<int> first = {start};
  nfa.closure(first);
  ids.emplace(first, 0);
  sets.push_back(first);
  ByteDfa dfa;
  for (size_t d = 0; d < sets.size(); ++d) {
    dfa.table_.resize((d + 1) * 256, -1);
    for (int c = 0; c < 256; ++c) {
      std::vector<int> moved;
      for (int s : sets[d]) {
        const Nfa::State &st = nfa.states[static_cast<size_t>(s)];
        if (st.to >= 0 && st.on[static_cast<size_t>(c)])
          moved.push_back(st.to);
      }
      if (moved.empty())
        continue;
      nfa.closure(moved);
      auto it = ids.find(moved);
      if (it == ids.end()) {
        if (sets.size() >= kMaxStates)
          throw PatternError("the pattern '" + pattern + "' is too complex (its automaton "
                             "passes " + std::to_string(kMaxStates) + " states)");
        it = ids.emplace(moved, static_cast<int32_t>(sets.size())).first;
        sets.push_back(moved);
      }
      dfa.table_[d * 256 + static_cast<size_t>(c)] = it->second;
    }
  }
  const size_t n = sets.size();
  dfa.accept_.assign(n, 0);
  for (size_t d = 0; d < n; ++d)
    dfa.accept_[d] = std::binary_search(sets[d].begin(), sets[d].end(), accept);

  // The fewest characters from each state to a match (a continuation byte adds none), by a
  // 0-1 breadth-first search backwards from the accepting states; the states that cannot
  // match any more are cut off.
  constexpr uint32_t kNever = std::numeric_limits<uint32_t>::max();
  std::vector<std::vector<std::pair<int32_t, uint32_t>>> into(n);
  for (size_t d = 0; d < n; ++d)
    for (int c = 0; c < 256; ++c)
      if (const int32_t t = dfa.table_[d * 256 + static_cast<size_t>(c)]; t >= 0)
        into[static_cast<size_t>(t)].emplace_back(static_cast<int32_t>(d),
                                                  (c & 0xC0) == 0x80 ? 0u : 1u);
  dfa.left_.assign(n, kNever);
  std::deque<int32_t> queue;
  for (size_t d = 0; d < n; ++d)
    if (dfa.accept_[d]) {
      dfa.left_[d] = 0;
      queue.push_back(static_cast<int32_t>(d));
    }
  while (!queue.empty()) {
    const int32_t t = queue.front();
    queue.pop_front();
    for (auto [s, cost] : into[static_cast<size_t>(t)]) {
      const uint32_t via = dfa.left_[static_cast<size_t>(t)] + cost;
      if (via < dfa.left_[static_cast<size_t>(s)]) {
        dfa.left_[static_cast<size_t>(s)] = via;
        if (cost == 0)
          queue.push_front(s);
        else
          queue.push_back(s);
      }
    }
  }
  if (dfa.left_[kStart] == kNever)
    throw PatternError("the pattern '" + pattern + "' matches no value a reply can write");
  for (int32_t &t : dfa.table_)
    if (t >= 0 && dfa.left_[static_cast<size_t>(t)] == kNever)
      t = -1;
  return dfa;
}

ByteDfa ByteDfa::format(const std::string &name) {
  static const std::string date = "\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])";
  static const std::string time =
      "([01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(\\.\\d{1,9})?(Z|[+-]([01]\\d|2[0-3]):[0-5]\\d)";
  static const std::string octet = "(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
  static const std::map<std::string, std::string> formats = {
      {"date", "^" + date + "$"},
      {"time", "^" + time + "$"},
      {"date-time", "^" + date + "T" + time + "$"},
      {"uuid", "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"},
      {"email", "^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\.[A-Za-z]{2,}$"},
      {"ipv4", "^(" + octet + "\\.){3}" + octet + "$"},
  };
  const auto it = formats.find(name);
  if (it == formats.end())
    throw PatternError("the format '" + name + "' is not supported (phimoec holds replies to "
                       "date-time, date, time, uuid, email and ipv4)");
  return compile(it->second);
}

} // namespace phimoe_rt
