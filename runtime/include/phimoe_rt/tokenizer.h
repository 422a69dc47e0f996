// tokenizer.h - text <-> token ids: Hugging Face tokenizer.json and GGUF vocabularies.
#ifndef PHIMOE_RT_TOKENIZER_H
#define PHIMOE_RT_TOKENIZER_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace phimoe_rt {

// A tokenizer of the Llama/Phi-3 SentencePiece-BPE kind (byte fallback, "▁" for
// spaces, a "▁" prepended to the text) or GPT-2's byte-level BPE, with added
// and special tokens (matched inside the text before the model's pieces, with
// their lstrip/rstrip rules).
class Tokenizer {
public:
  // tokenizer.json (and, when the path is not empty, tokenizer_config.json for
  // add_bos_token/add_eos_token, the chat template and the bos/eos tokens).
  static std::unique_ptr<Tokenizer> load_hf(const std::string &tokenizer_json,
                                            const std::string &tokenizer_config_json,
                                            std::string &error);
  // The tokenizer.ggml.* keys of a GGUF file (model "llama" or "gpt2").
  static std::unique_ptr<Tokenizer> load_gguf(const std::string &path, std::string &error);
  // Whichever of the above `dir` holds (tokenizer.json preferred, else a *.gguf).
  static std::unique_ptr<Tokenizer> load_dir(const std::string &dir, std::string &error);
  virtual ~Tokenizer() = default;

  // Encodes text; special tokens written in the text become their ids. With
  // add_special, prepends BOS (and appends EOS) as the tokenizer's config says.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special) const = 0;
  // Decodes ids to text (SentencePiece: the leading space of the first piece
  // is dropped, as HF's decoder does); special tokens are kept unless
  // skip_special.
  virtual std::string decode(const std::vector<int32_t> &ids, bool skip_special) const = 0;

  virtual int32_t vocab_size() const = 0;
  virtual std::optional<int32_t> token_id(std::string_view piece) const = 0;
  virtual bool is_special(int32_t id) const = 0;
  std::optional<int32_t> bos() const { return bos_; }
  std::optional<int32_t> eos() const { return eos_; }
  bool add_bos() const { return add_bos_; }
  // The bytes that token `id` adds to a text it continues: a SentencePiece word's leading
  // space stays (decode() drops it from a text's first piece), and a byte-fallback or
  // byte-level token gives its raw bytes, which need not be whole UTF-8. A special token gives
  // its text; an id without a token, nothing.
  std::string token_bytes(int32_t id) const;
  // The Jinja chat template of the checkpoint, or empty.
  const std::string &chat_template() const { return chat_template_; }

protected:
  friend class StreamDecoder;
  // Appends the text of ids[0, n) to `out`, as decode does. With `raw` (for StreamDecoder), the
  // bytes that byte-fallback or byte-level pieces spell are passed through even where they are
  // not (yet) well-formed UTF-8, for StreamDecoder to hold or repair, and nothing is stripped
  // from the end of the text. `scratch` is storage the call may reuse. The default calls
  // decode().
  virtual void decode_append(const int32_t *ids, size_t n, bool skip_special, bool raw,
                             std::vector<std::string> &scratch, std::string &out) const;

  std::optional<int32_t> bos_, eos_;
  bool add_bos_ = false, add_eos_ = false;
  std::string chat_template_;
};

// Turns a stream of ids into text as soon as it is complete UTF-8: byte-fallback
// pieces of one character arrive over several tokens. Special tokens are not shown:
// the pieces add up to decode(ids, true), except that ill-formed UTF-8 is replaced
// per maximal subpart rather than per byte, and a decoder that strips the end of the
// text (Strip with stop > 0) does not strip it here. Allocates nothing per token once
// warm.
class StreamDecoder {
public:
  explicit StreamDecoder(const Tokenizer &tokenizer) : tokenizer_(tokenizer) {}
  // Appends the text that `id` completes to `out` (possibly nothing yet).
  void push(int32_t id, std::string &out);
  // Whatever is still held (an incomplete sequence is flushed as U+FFFD).
  void finish(std::string &out);
  void reset();
  // Resets, then continues after the last tokens of `context` (a prompt): the text of the
  // ids pushed next is what they add to the context's text, so a SentencePiece space that
  // opens the first of them is kept (decode() of those ids alone would strip it). When the
  // context ends with a special token (a chat prompt ending in <|assistant|>), the ids
  // pushed next start a text of their own, as decode() of them alone gives.
  void prime(const int32_t *context, size_t n);

private:
  // Appends the text that ids_[read_, end) adds to ids_[0, read_), the context already shown;
  // at_end: also what an incomplete UTF-8 sequence at the end holds (as U+FFFD).
  void emit(bool at_end, std::string &out);

  const Tokenizer &tokenizer_;
  std::vector<int32_t> ids_; // a window: ids_[0, read_) shown already, the rest not yet
  size_t read_ = 0;
  std::string emitted_; // the text of ids_[0, read_)
  std::string text_;    // the text of ids_
  std::vector<std::string> scratch_;
};

} // namespace phimoe_rt

#endif // PHIMOE_RT_TOKENIZER_H
