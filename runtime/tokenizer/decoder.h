// decoder.h - the decoder chain (tokenizer.json "decoder"): pieces -> text.
#ifndef PHIMOE_RT_TOKENIZER_DECODER_H
#define PHIMOE_RT_TOKENIZER_DECODER_H

#include "spec.h"

#include <string>
#include <vector>

namespace phimoe_rt::tok {

// Runs the steps over tokens[0, n) in place, as HF's decode_chain does, and appends the joined
// result to out. With `raw` (for the stream decoder), ByteFallback and ByteLevel hand over their
// bytes unchecked (the stream decoder repairs ill-formed UTF-8 itself) and Strip leaves the end
// alone, so that the text of a longer run of tokens extends that of a shorter one; otherwise
// all is as HF does. Slots of `tokens` past n may be used as scratch; no allocation once their
// capacity suffices.
void run_decoder(const std::vector<dec_step> &steps, std::vector<std::string> &tokens, size_t n,
                 bool raw, std::string &out);

} // namespace phimoe_rt::tok

#endif // PHIMOE_RT_TOKENIZER_DECODER_H
