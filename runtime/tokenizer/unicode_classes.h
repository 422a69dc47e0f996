// unicode_classes.h - the Unicode classes the tokenizer needs: \p{L}, \p{N}, \p{M}, \s, \w.
#ifndef PHIMOE_RT_TOKENIZER_UNICODE_CLASSES_H
#define PHIMOE_RT_TOKENIZER_UNICODE_CLASSES_H

#include <cstddef>
#include <cstdint>

namespace phimoe_rt::tok {

enum class uclass : uint8_t { other, letter, number, mark, connector };

struct unicode_range {
  uint32_t lo, hi;
  uclass cls;
};
// Sorted, disjoint ranges (unicode_classes_table.cpp, generated).
extern const unicode_range unicode_ranges[];
extern const size_t unicode_range_count;

// The general category class of cp (letter: L*, number: N*, mark: M*, connector: Pc).
uclass unicode_class(uint32_t cp);
// The White_Space property: what \s matches in the regex engines of tokenizers.
bool unicode_is_space(uint32_t cp);
// \w as Rust's regex crate has it, near enough: letters, marks, numbers, connectors.
bool unicode_is_word(uint32_t cp);

} // namespace phimoe_rt::tok

#endif // PHIMOE_RT_TOKENIZER_UNICODE_CLASSES_H
