// text_pipeline.h - normalizer and pre-tokenizer steps: text segment -> words for the model.
#ifndef PHIMOE_RT_TOKENIZER_TEXT_PIPELINE_H
#define PHIMOE_RT_TOKENIZER_TEXT_PIPELINE_H

#include "spec.h"

#include <string>
#include <string_view>
#include <vector>

namespace phimoe_rt::tok {

// Applies the normalizer steps to one segment (the text between added tokens).
void normalize(const std::vector<norm_step> &steps, std::string_view in, std::string &out);

// Splits a normalized segment into words. `at_text_start`: the segment starts the input text
// (Metaspace's prepend_scheme "first"). Words are appended to `words` as strings.
void pre_tokenize(const std::vector<pre_step> &steps, std::string_view segment, bool at_text_start,
                  std::vector<std::string> &words);

} // namespace phimoe_rt::tok

#endif // PHIMOE_RT_TOKENIZER_TEXT_PIPELINE_H
