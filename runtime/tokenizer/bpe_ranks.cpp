// bpe_ranks.cpp - BPE as HF tokenizers' model does it: characters (or their byte-fallback
// pieces, or unk), then the lowest-ranked merge first, leftmost on ties.
#include "bpe.h"

#include "utf8.h"

#include <queue>

namespace phimoe_rt::tok {

namespace {

struct merge_candidate {
  int32_t rank, pos, new_id;
};

struct later {
  bool operator()(const merge_candidate &a, const merge_candidate &b) const {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  }
};

using symbol = bpe_workspace::symbol;

void add_symbol(std::vector<symbol> &syms, int32_t id, uint32_t begin, uint32_t len) {
  int32_t idx = static_cast<int32_t>(syms.size());
  syms.push_back({id, begin, len, idx - 1, -1, -1});
  if (idx > 0)
    syms[idx - 1].next = idx;
}

} // namespace

void bpe_ranks_encode(const spec &s, const byte_table &byte_ids, std::string_view word,
                      bpe_workspace &ws, std::vector<int32_t> &out) {
  if (word.empty())
    return;
  if (s.ignore_merges) {
    int32_t id = s.vocab.find(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  std::vector<symbol> &syms = ws.symbols;
  syms.clear();
  // A pending unknown: (begin, len), fused with the following unknowns when fuse_unk.
  bool unk_pending = false;
  uint32_t unk_begin = 0, unk_len = 0;
  for (size_t i = 0; i < word.size();) {
    uint32_t len = utf8_next(word, i).len; // an ill-formed byte is a character of its own
    std::string_view ch = word.substr(i, len);
    int32_t id = s.vocab.find(ch);
    auto begin = static_cast<uint32_t>(i);
    i += len;
    if (id >= 0) {
      if (unk_pending) {
        add_symbol(syms, *s.unk, unk_begin, unk_len);
        unk_pending = false;
      }
      add_symbol(syms, id, begin, len);
      continue;
    }
    if (s.byte_fallback) {
      bool all = true;
      for (char c : ch)
        all = all && byte_ids[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        for (uint32_t k = 0; k < len; ++k)
          add_symbol(syms, byte_ids[static_cast<uint8_t>(ch[k])], begin + k, 1);
        continue;
      }
    }
    if (!s.unk)
      continue; // no unk piece: HF drops the character
    if (unk_pending && s.fuse_unk) {
      unk_len += len;
      continue;
    }
    if (unk_pending)
      add_symbol(syms, *s.unk, unk_begin, unk_len);
    unk_pending = true;
    unk_begin = begin;
    unk_len = len;
  }
  if (unk_pending)
    add_symbol(syms, *s.unk, unk_begin, unk_len);

  auto pair_key = [](int32_t a, int32_t b) {
    return static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b);
  };
  std::priority_queue<merge_candidate, std::vector<merge_candidate>, later> queue;
  for (size_t k = 0; k + 1 < syms.size(); ++k) {
    auto it = s.merges.find(pair_key(syms[k].id, syms[k + 1].id));
    if (it != s.merges.end())
      queue.push({it->second.first, static_cast<int32_t>(k), it->second.second});
  }
  while (!queue.empty()) {
    merge_candidate top = queue.top();
    queue.pop();
    symbol &left = syms[top.pos];
    if (left.len == 0 || left.next < 0)
      continue;
    symbol &right = syms[left.next];
    auto it = s.merges.find(pair_key(left.id, right.id));
    if (it == s.merges.end() || it->second.second != top.new_id)
      continue; // stale
    left.id = top.new_id;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (left.next >= 0)
      syms[left.next].prev = top.pos;
    if (left.prev >= 0) {
      auto p = s.merges.find(pair_key(syms[left.prev].id, left.id));
      if (p != s.merges.end())
        queue.push({p->second.first, left.prev, p->second.second});
    }
    if (left.next >= 0) {
      auto n = s.merges.find(pair_key(left.id, syms[left.next].id));
      if (n != s.merges.end())
        queue.push({n->second.first, top.pos, n->second.second});
    }
  }
  for (const symbol &sym : syms)
    if (sym.len != 0)
      out.push_back(sym.id);
}

} // namespace phimoe_rt::tok
