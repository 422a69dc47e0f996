// bpe.h - the two BPE models: merges by rank (tokenizer.json, GPT-2) and by score (SentencePiece).
#ifndef PHIMOE_RT_TOKENIZER_BPE_H
#define PHIMOE_RT_TOKENIZER_BPE_H

#include "spec.h"

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

namespace phimoe_rt::tok {

// Storage reused across the words of one encode call.
struct bpe_workspace {
  struct symbol {
    int32_t id;          // ranks: the piece id
    uint32_t begin, len; // bytes of the word; len 0: merged away
    int32_t prev, next;  // neighbours in the list, -1 at the ends
    int32_t node;        // scores: the merge tree node (for UNUSED pieces)
  };
  struct node {
    uint32_t begin, len;
    int32_t left, right; // children, -1 for a character
  };
  std::vector<symbol> symbols;
  std::vector<node> nodes;
  std::vector<int32_t> stack;
};

// The id of piece "<0xNN>" for every byte, or -1 (byte_ids[b]).
using byte_table = std::array<int32_t, 256>;

// Appends the ids of one pre-tokenized word.
void bpe_ranks_encode(const spec &s, const byte_table &byte_ids, std::string_view word,
                      bpe_workspace &ws, std::vector<int32_t> &out);
void bpe_scores_encode(const spec &s, const byte_table &byte_ids, std::string_view word,
                       bpe_workspace &ws, std::vector<int32_t> &out);

} // namespace phimoe_rt::tok

#endif // PHIMOE_RT_TOKENIZER_BPE_H
