// bpe_tokenizer.cpp - encode (added tokens, normalizer, pre-tokenizer, BPE) and decode.
#include "bpe_tokenizer.h"

#include "decoder.h"
#include "text_pipeline.h"

#include <cstdio>

namespace phimoe_rt::tok {

std::unique_ptr<bpe_tokenizer> bpe_tokenizer::create(spec s, const std::string &source,
                                                     std::string &error) {
  const auto n = static_cast<int32_t>(s.pieces.size());
  s.has_piece.resize(n, 0);
  for (const added_token &t : s.added) {
    if (t.id < 0 || t.id >= n) {
      error = source + ": added token '" + t.content + "' has id " + std::to_string(t.id) +
              ", outside the vocabulary";
      return nullptr;
    }
    // An added token's text replaces the model's piece for that id.
    s.pieces[t.id] = t.content;
    s.has_piece[t.id] = 1;
  }
  for (auto [name, id] : {std::pair<const char *, std::optional<int32_t>>{"bos", s.bos},
                          {"eos", s.eos},
                          {"unk", s.unk}}) {
    if (id && (*id < 0 || *id >= n || !s.has_piece[*id])) {
      error = source + ": the " + name + " token id " + std::to_string(*id) +
              " is not in the vocabulary";
      return nullptr;
    }
  }
  if (s.model == model_kind::bpe_scores) {
    s.scores.resize(n, 0.0f);
    s.mergeable.resize(n, 1);
    s.unused.resize(n, 0);
  }
  std::unique_ptr<bpe_tokenizer> t(new bpe_tokenizer(std::move(s)));
  spec &sp = t->s_;
  t->bos_ = sp.bos;
  t->eos_ = sp.eos;
  t->add_bos_ = sp.add_bos && sp.bos.has_value();
  t->add_eos_ = sp.add_eos && sp.eos.has_value();
  t->chat_template_ = sp.chat_template;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    t->byte_ids_[b] = sp.vocab.find(name);
  }
  t->special_.assign(n, 0);
  std::vector<const added_token *> raw, norm;
  std::vector<std::string> raw_patterns, norm_patterns;
  for (const added_token &a : sp.added) {
    t->added_ids_.set(a.content, a.id);
    if (a.special)
      t->special_[a.id] = 1;
    if (a.normalized) {
      norm.push_back(&a);
      norm_patterns.emplace_back();
      normalize(sp.normalizer, a.content, norm_patterns.back());
      // HF gives a normalized token its normalized text as its piece (decode shows "▁tok").
      sp.pieces[a.id] = norm_patterns.back();
    } else {
      raw.push_back(&a);
      raw_patterns.push_back(a.content);
    }
  }
  t->raw_matcher_.build(raw, raw_patterns);
  t->normalized_matcher_.build(norm, norm_patterns);
  return t;
}

std::optional<int32_t> bpe_tokenizer::token_id(std::string_view piece) const {
  int32_t id = added_ids_.find(piece);
  if (id < 0)
    id = s_.vocab.find(piece);
  if (id < 0)
    return std::nullopt;
  return id;
}

bool bpe_tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < static_cast<int32_t>(special_.size()) && special_[id];
}

void bpe_tokenizer::encode_words(std::string_view segment, bool at_text_start,
                                 std::vector<std::string> &words, bpe_workspace &ws,
                                 std::vector<int32_t> &out) const {
  words.clear();
  pre_tokenize(s_.pre_tokenizer, segment, at_text_start, words);
  for (const std::string &w : words) {
    if (s_.model == model_kind::bpe_scores)
      bpe_scores_encode(s_, byte_ids_, w, ws, out);
    else
      bpe_ranks_encode(s_, byte_ids_, w, ws, out);
  }
}

std::vector<int32_t> bpe_tokenizer::encode(std::string_view text, bool add_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  if (add_special && add_bos_)
    ids.push_back(*bos_);
  std::vector<text_part> parts, sub;
  raw_matcher_.split(text, parts);
  std::string normalized;
  std::vector<std::string> words;
  bpe_workspace ws;
  for (const text_part &p : parts) {
    if (p.id >= 0) {
      ids.push_back(p.id);
      continue;
    }
    normalize(s_.normalizer, text.substr(p.begin, p.end - p.begin), normalized);
    if (normalized_matcher_.empty()) {
      encode_words(normalized, p.begin == 0, words, ws, ids);
      continue;
    }
    sub.clear();
    normalized_matcher_.split(normalized, sub);
    for (const text_part &q : sub) {
      if (q.id >= 0)
        ids.push_back(q.id);
      else
        encode_words(std::string_view(normalized).substr(q.begin, q.end - q.begin),
                     p.begin == 0 && q.begin == 0, words, ws, ids);
    }
  }
  if (add_special && add_eos_)
    ids.push_back(*eos_);
  return ids;
}

void bpe_tokenizer::decode_append(const int32_t *ids, size_t n, bool skip_special, bool raw,
                                  std::vector<std::string> &scratch, std::string &out) const {
  size_t k = 0;
  for (size_t i = 0; i < n; ++i) {
    int32_t id = ids[i];
    if (id < 0 || id >= static_cast<int32_t>(s_.pieces.size()) || !s_.has_piece[id])
      continue; // HF drops ids it has no token for
    if (skip_special && special_[id])
      continue;
    if (scratch.size() <= k)
      scratch.resize(k + 1);
    scratch[k++].assign(s_.pieces[id]);
  }
  if (!s_.has_decoder) {
    for (size_t i = 0; i < k; ++i) {
      if (i)
        out += ' ';
      out += scratch[i];
    }
    return;
  }
  run_decoder(s_.decoder, scratch, k, raw, out);
}

std::string bpe_tokenizer::decode(const std::vector<int32_t> &ids, bool skip_special) const {
  std::vector<std::string> scratch;
  std::string out;
  decode_append(ids.data(), ids.size(), skip_special, false, scratch, out);
  return out;
}

} // namespace phimoe_rt::tok
