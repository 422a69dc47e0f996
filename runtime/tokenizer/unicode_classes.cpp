// unicode_classes.cpp - lookups in the generated Unicode class table.
#include "unicode_classes.h"

#include <algorithm>

namespace phimoe_rt::tok {

uclass unicode_class(uint32_t cp) {
  if (cp < 0x80) {
    if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
      return uclass::letter;
    if (cp >= '0' && cp <= '9')
      return uclass::number;
    return cp == '_' ? uclass::connector : uclass::other;
  }
  const unicode_range *end = unicode_ranges + unicode_range_count;
  const unicode_range *it = std::upper_bound(
      unicode_ranges, end, cp, [](uint32_t c, const unicode_range &r) { return c < r.lo; });
  if (it == unicode_ranges)
    return uclass::other;
  --it;
  return cp <= it->hi ? it->cls : uclass::other;
}

bool unicode_is_space(uint32_t cp) {
  switch (cp) {
  case 0x09:
  case 0x0A:
  case 0x0B:
  case 0x0C:
  case 0x0D:
  case 0x20:
  case 0x85:
  case 0xA0:
  case 0x1680:
  case 0x2028:
  case 0x2029:
  case 0x202F:
  case 0x205F:
  case 0x3000:
    return true;
  default:
    return cp >= 0x2000 && cp <= 0x200A;
  }
}

bool unicode_is_word(uint32_t cp) {
  return unicode_class(cp) != uclass::other || cp == 0x200C || cp == 0x200D;
}

} // namespace phimoe_rt::tok
