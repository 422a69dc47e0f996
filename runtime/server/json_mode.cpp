// json_mode.cpp - JSON mode of phimoe-bin serve (see json_mode.h): a byte automaton for the
// prefixes of one JSON object, and the token mask it gives a sequence.
#include "phimoe_rt/json_mode.h"

#include <cmath>

namespace phimoe_rt {

namespace {

bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_hex(unsigned char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Number parts (JsonPrefix::aux_ in State::number).
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

} // namespace

bool JsonPrefix::structural_space(unsigned char c) {
  if (!is_space(c))
    return false;
  return ++whitespace_ <= kMaxWhitespace;
}

bool JsonPrefix::value_start(unsigned char c) {
  switch (c) {
  case '"':
    state_ = State::string;
    in_key_ = false;
    aux_ = 0;
    return true;
  case '{':
  case '[':
    if (depth_ == kMaxDepth)
      return false;
    stack_[depth_++] = static_cast<char>(c);
    state_ = c == '{' ? State::key_or_end : State::value_or_end;
    return true;
  case 't':
  case 'f':
  case 'n':
    literal_ = c == 't' ? "true" : c == 'f' ? "false" : "null";
    aux_ = 1;
    state_ = State::literal;
    return true;
  case '-':
    state_ = State::number;
    aux_ = kMinus;
    return true;
  default:
    if (!is_digit(c))
      return false;
    state_ = State::number;
    aux_ = c == '0' ? kZero : kInt;
    return true;
  }
}

// The closing bracket `c` of the innermost container.
bool JsonPrefix::close(unsigned char c) {
  if (depth_ == 0 || stack_[depth_ - 1] != (c == '}' ? '{' : '['))
    return false;
  --depth_;
  state_ = depth_ == 0 ? State::done : State::after_value;
  return true;
}

// The first byte of a multi-byte UTF-8 character in a string (RFC 3629: no overlong forms, no
// surrogates, nothing past U+10FFFF): how many bytes follow, and the range of the next.
bool JsonPrefix::utf8_lead(unsigned char c) {
  utf8_lo_ = 0x80;
  utf8_hi_ = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    aux_ = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    aux_ = 2;
    if (c == 0xE0)
      utf8_lo_ = 0xA0;
    if (c == 0xED)
      utf8_hi_ = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    aux_ = 3;
    if (c == 0xF0)
      utf8_lo_ = 0x90;
    if (c == 0xF4)
      utf8_hi_ = 0x8F;
  } else {
    return false;
  }
  return true;
}

bool JsonPrefix::push(unsigned char c) {
  if (!is_space(c) || state_ == State::string || state_ == State::escape ||
      state_ == State::hex)
    whitespace_ = 0;
  switch (state_) {
  case State::start: // the reply opens with its object (no whitespace to spend tokens on)
    if (c != '{')
      return false;
    stack_[depth_++] = '{';
    state_ = State::key_or_end;
    return true;
  case State::key_or_end:
    if (c == '}')
      return close(c);
    [[fallthrough]];
  case State::key:
    if (c == '"') {
      state_ = State::string;
      in_key_ = true;
      aux_ = 0;
      return true;
    }
    return structural_space(c);
  case State::colon:
    if (c == ':') {
      state_ = State::value;
      return true;
    }
    return structural_space(c);
  case State::value_or_end:
    if (c == ']')
      return close(c);
    [[fallthrough]];
  case State::value:
    return value_start(c) || structural_space(c);
  case State::after_value:
    if (c == ',') {
      state_ = stack_[depth_ - 1] == '{' ? State::key : State::value;
      return true;
    }
    if (c == '}' || c == ']')
      return close(c);
    return structural_space(c);
  case State::string:
    if (aux_ > 0) { // inside a UTF-8 sequence
      if (c < utf8_lo_ || c > utf8_hi_)
        return false;
      --aux_;
      utf8_lo_ = 0x80;
      utf8_hi_ = 0xBF;
      return true;
    }
    if (c >= 0x80)
      return utf8_lead(c);
    if (c == '"') {
      state_ = in_key_ ? State::colon : State::after_value;
      return true;
    }
    if (c == '\\') {
      state_ = State::escape;
      return true;
    }
    return c >= 0x20; // control characters must be escaped
  case State::escape:
    if (c == 'u') {
      state_ = State::hex;
      aux_ = 4;
      return true;
    }
    if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
        c == 't') {
      state_ = State::string;
      aux_ = 0;
      return true;
    }
    return false;
  case State::hex:
    if (!is_hex(c))
      return false;
    if (--aux_ == 0)
      state_ = State::string; // aux_ 0: no UTF-8 sequence open
    return true;
  case State::number:
    switch (aux_) {
    case kMinus:
      if (!is_digit(c))
        return false;
      aux_ = c == '0' ? kZero : kInt;
      return true;
    case kInt:
      if (is_digit(c))
        return true;
      [[fallthrough]];
    case kZero:
      if (c == '.') {
        aux_ = kDot;
        return true;
      }
      if (c == 'e' || c == 'E') {
        aux_ = kExp;
        return true;
      }
      break; // the end of the number
    case kDot:
      if (!is_digit(c))
        return false;
      aux_ = kFrac;
      return true;
    case kFrac:
      if (is_digit(c))
        return true;
      if (c == 'e' || c == 'E') {
        aux_ = kExp;
        return true;
      }
      break;
    case kExp:
      if (c == '+' || c == '-') {
        aux_ = kExpSign;
        return true;
      }
      [[fallthrough]];
    case kExpSign:
      if (!is_digit(c))
        return false;
      aux_ = kExpDigits;
      return true;
    case kExpDigits:
      if (is_digit(c))
        return true;
      break;
    }
    // The number ended: `c` follows it as it follows any value.
    state_ = State::after_value;
    return push(c);
  case State::literal:
    if (static_cast<unsigned char>(literal_[aux_]) != c)
      return false;
    if (literal_[++aux_] == '\0')
      state_ = State::after_value;
    return true;
  case State::done:
    return false;
  }
  return false;
}

bool JsonPrefix::push(const std::string &bytes) {
  for (char c : bytes)
    if (!push(static_cast<unsigned char>(c)))
      return false;
  return true;
}

JsonMask::JsonMask(const Tokenizer &tokenizer, int vocab) : bytes_(static_cast<size_t>(vocab)) {
  for (int32_t id = 0; id < vocab; ++id)
    if (!tokenizer.is_special(id))
      bytes_[static_cast<size_t>(id)] = tokenizer.token_bytes(id);
}

int JsonMask::apply(const JsonPrefix &prefix, float *logits) const {
  int allowed = 0;
  for (size_t id = 0; id < bytes_.size(); ++id) {
    JsonPrefix probe = prefix;
    if (!bytes_[id].empty() && probe.push(bytes_[id]))
      ++allowed;
    else
      logits[id] = -INFINITY;
  }
  return allowed;
}

} // namespace phimoe_rt
