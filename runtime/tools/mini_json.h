// mini_json.h - a small JSON reader for phimoe-pack (pack plans, safetensors headers): objects,
// arrays, strings, integers and numbers; no writer. Plain C++17, no dependencies, so that the
// project phimoec --emit-project writes builds where only a compiler is.
#ifndef PHIMOE_TOOLS_MINI_JSON_H
#define PHIMOE_TOOLS_MINI_JSON_H

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace phimoe_tools {

struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool boolean = false;
  bool integral = false;     // a number written without fraction or exponent
  bool negative = false;
  uint64_t magnitude = 0;    // |value| of an integral number
  double number = 0.0;
  std::string text;
  std::vector<Json> items;
  std::map<std::string, Json> fields;

  const Json *find(const std::string &key) const {
    auto it = fields.find(key);
    return kind == Object && it != fields.end() ? &it->second : nullptr;
  }
};

// Parses `text`; throws std::runtime_error("... at byte N") on malformed input.
inline Json parse_json(const std::string &text) {
  struct Parser {
    const std::string &s;
    size_t i = 0;
    [[noreturn]] void fail(const std::string &what) {
      throw std::runtime_error(what + " at byte " + std::to_string(i));
    }
    void ws() {
      while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t'))
        ++i;
    }
    bool eat(char c) {
      ws();
      if (i < s.size() && s[i] == c) {
        ++i;
        return true;
      }
      return false;
    }
    void expect(char c) {
      if (!eat(c))
        fail(std::string("expected '") + c + "'");
    }
    static void utf8(std::string &out, uint32_t cp) {
      if (cp < 0x80) {
        out += static_cast<char>(cp);
      } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      }
    }
    uint32_t hex4() {
      if (i + 4 > s.size())
        fail("truncated \\u escape");
      uint32_t v = 0;
      for (int k = 0; k < 4; ++k) {
        const char c = s[i++];
        v <<= 4;
        if (c >= '0' && c <= '9')
          v |= c - '0';
        else if (c >= 'a' && c <= 'f')
          v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
          v |= c - 'A' + 10;
        else
          fail("bad \\u escape");
      }
      return v;
    }
    std::string string() {
      expect('"');
      std::string out;
      while (true) {
        if (i >= s.size())
          fail("unterminated string");
        const char c = s[i++];
        if (c == '"')
          return out;
        if (c != '\\') {
          out += c;
          continue;
        }
        if (i >= s.size())
          fail("unterminated escape");
        const char e = s[i++];
        switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && i + 1 < s.size() && s[i] == '\\' && s[i + 1] == 'u') {
            i += 2;
            const uint32_t low = hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          utf8(out, cp);
          break;
        }
        default: fail("bad escape");
        }
      }
    }
    Json value(int depth) {
      if (depth > 64)
        fail("nested too deeply");
      ws();
      if (i >= s.size())
        fail("unexpected end");
      Json v;
      const char c = s[i];
      if (c == '{') {
        ++i;
        v.kind = Json::Object;
        if (eat('}'))
          return v;
        do {
          ws();
          std::string key = string();
          expect(':');
          v.fields[key] = value(depth + 1);
        } while (eat(','));
        expect('}');
      } else if (c == '[') {
        ++i;
        v.kind = Json::Array;
        if (eat(']'))
          return v;
        do
          v.items.push_back(value(depth + 1));
        while (eat(','));
        expect(']');
      } else if (c == '"') {
        v.kind = Json::String;
        v.text = string();
      } else if (s.compare(i, 4, "true") == 0 || s.compare(i, 5, "false") == 0) {
        v.kind = Json::Bool;
        v.boolean = s[i] == 't';
        i += v.boolean ? 4 : 5;
      } else if (s.compare(i, 4, "null") == 0) {
        i += 4;
      } else if (c == '-' || (c >= '0' && c <= '9')) {
        const size_t begin = i;
        v.kind = Json::Number;
        v.negative = c == '-';
        if (v.negative)
          ++i;
        v.integral = true;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
          const uint64_t d = static_cast<uint64_t>(s[i++] - '0');
          if (v.magnitude > (UINT64_MAX - d) / 10)
            v.integral = false; // too large: kept as a double only
          v.magnitude = v.magnitude * 10 + d;
        }
        while (i < s.size() && (s[i] == '.' || s[i] == 'e' || s[i] == 'E' || s[i] == '+' ||
                                s[i] == '-' || (s[i] >= '0' && s[i] <= '9'))) {
          v.integral = false;
          ++i;
        }
        v.number = std::strtod(s.substr(begin, i - begin).c_str(), nullptr);
      } else {
        fail("unexpected character");
      }
      return v;
    }
  } parser{text};
  Json v = parser.value(0);
  parser.ws();
  if (parser.i != text.size())
    parser.fail("trailing characters");
  return v;
}

} // namespace phimoe_tools

#endif // PHIMOE_TOOLS_MINI_JSON_H
