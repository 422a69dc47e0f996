// loaders.h - build a tokenizer spec from tokenizer.json (+ tokenizer_config.json) or a GGUF.
#ifndef PHIMOE_RT_TOKENIZER_LOADERS_H
#define PHIMOE_RT_TOKENIZER_LOADERS_H

#include "spec.h"

#include <string>

namespace phimoe_rt::tok {

// On failure these return false and say why, naming the file and the field.
bool load_hf_spec(const std::string &tokenizer_json, const std::string &tokenizer_config_json,
                  spec &out, std::string &error);
bool load_gguf_spec(const std::string &path, spec &out, std::string &error);

} // namespace phimoe_rt::tok

#endif // PHIMOE_RT_TOKENIZER_LOADERS_H
