// spec.h - what a loaded tokenizer is made of: vocabulary, model, text pipeline, added tokens.
#ifndef PHIMOE_RT_TOKENIZER_SPEC_H
#define PHIMOE_RT_TOKENIZER_SPEC_H

#include "piece_map.h"

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace phimoe_rt::tok {

// A normalizer step (tokenizer.json "normalizer"): Prepend adds its text to a non-empty
// segment, Replace replaces every occurrence of a literal string.
struct norm_step {
  enum class kind { prepend, replace } k;
  std::string pattern, content; // prepend: content only
};

enum class prepend_scheme { always, first, never };

// A pre-tokenizer step (tokenizer.json "pre_tokenizer", or what a GGUF model implies).
struct pre_step {
  enum class kind { metaspace, byte_level } k;
  // metaspace
  std::string replacement = "\xE2\x96\x81"; // U+2581
  prepend_scheme scheme = prepend_scheme::always;
  bool split = true;
  // byte_level
  bool add_prefix_space = false;
  bool use_regex = true;
};

// A decoder step (tokenizer.json "decoder").
struct dec_step {
  enum class kind { replace, byte_fallback, fuse, strip, metaspace, byte_level } k;
  std::string pattern, content; // replace; strip: content
  size_t start = 0, stop = 0;   // strip
  std::string replacement;      // metaspace
  prepend_scheme scheme = prepend_scheme::always;
};

// A token matched in the raw (or normalized) text before the model sees it.
struct added_token {
  std::string content;
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, single_word = false;
  bool normalized = false;
};

enum class model_kind {
  bpe_ranks,  // merges ranked by position (tokenizer.json BPE, GGUF "gpt2")
  bpe_scores, // SentencePiece BPE: the best-scoring adjacent pair first (GGUF "llama")
};

struct spec {
  model_kind model = model_kind::bpe_ranks;
  std::vector<std::string> pieces; // by id; empty for an id no token has
  std::vector<uint8_t> has_piece;  // 1 where pieces[id] is a token
  piece_map vocab;                 // the model's pieces (added tokens not among them)

  // bpe_ranks: (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;
  bool ignore_merges = false;
  // bpe_scores: a score per id, and whether a piece may be produced by merging
  std::vector<float> scores;
  std::vector<uint8_t> mergeable;
  std::vector<uint8_t> unused; // SentencePiece UNUSED pieces: split back into their parts

  bool byte_fallback = false;
  bool fuse_unk = false;
  std::optional<int32_t> unk;

  std::vector<norm_step> normalizer;
  std::vector<pre_step> pre_tokenizer;
  bool has_decoder = false; // without one, pieces are joined with spaces (as HF does)
  std::vector<dec_step> decoder;
  std::vector<added_token> added;

  std::optional<int32_t> bos, eos;
  bool add_bos = false, add_eos = false;
  std::string chat_template;
};

} // namespace phimoe_rt::tok

#endif // PHIMOE_RT_TOKENIZER_SPEC_H
