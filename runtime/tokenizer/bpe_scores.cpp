// bpe_scores.cpp - SentencePiece BPE: characters, then repeatedly the adjacent pair whose
// concatenation is the best-scoring piece (leftmost on ties); leftovers by byte fallback.
#include "bpe.h"

#include "utf8.h"

#include <queue>

namespace phimoe_rt::tok {

namespace {

struct bigram {
  float score;
  int32_t left, right;
  uint32_t len;
};

struct worse {
  bool operator()(const bigram &a, const bigram &b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

} // namespace

void bpe_scores_encode(const spec &s, const byte_table &byte_ids, std::string_view word,
                       bpe_workspace &ws, std::vector<int32_t> &out) {
  if (word.empty())
    return;
  auto &syms = ws.symbols;
  auto &nodes = ws.nodes;
  syms.clear();
  nodes.clear();
  for (size_t i = 0; i < word.size();) {
    uint32_t len = utf8_next(word, i).len;
    auto idx = static_cast<int32_t>(syms.size());
    nodes.push_back({static_cast<uint32_t>(i), len, -1, -1});
    syms.push_back({-1, static_cast<uint32_t>(i), len, idx - 1, -1, idx});
    if (idx > 0)
      syms[idx - 1].next = idx;
    i += len;
  }

  std::priority_queue<bigram, std::vector<bigram>, worse> agenda;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0)
      return;
    uint32_t len = syms[left].len + syms[right].len;
    int32_t id = s.vocab.find(word.substr(syms[left].begin, len));
    if (id < 0 || !s.mergeable[id])
      return;
    agenda.push({s.scores[id], left, right, len});
  };
  for (size_t k = 1; k < syms.size(); ++k)
    try_add(static_cast<int32_t>(k - 1), static_cast<int32_t>(k));

  while (!agenda.empty()) {
    bigram b = agenda.top();
    agenda.pop();
    auto &left = syms[b.left];
    auto &right = syms[b.right];
    if (left.len == 0 || right.len == 0 || left.len + right.len != b.len || left.next != b.right)
      continue; // stale
    nodes.push_back({left.begin, b.len, left.node, right.node});
    left.node = static_cast<int32_t>(nodes.size() - 1);
    left.len = b.len;
    right.len = 0;
    left.next = right.next;
    if (left.next >= 0)
      syms[left.next].prev = b.left;
    try_add(left.prev, b.left);
    try_add(b.left, left.next);
  }

  auto &stack = ws.stack;
  for (int32_t k = 0; k >= 0 && k < static_cast<int32_t>(syms.size()); k = syms[k].next) {
    stack.assign(1, syms[k].node);
    while (!stack.empty()) {
      const auto node = nodes[stack.back()];
      stack.pop_back();
      std::string_view text = word.substr(node.begin, node.len);
      int32_t id = s.vocab.find(text);
      if (id >= 0 && s.mergeable[id] && s.unused[id] && node.left >= 0) {
        stack.push_back(node.right); // an UNUSED piece: its parts, left first
        stack.push_back(node.left);
        continue;
      }
      if (id >= 0 && s.mergeable[id]) {
        out.push_back(id);
        continue;
      }
      bool bytes = s.byte_fallback;
      for (char c : text)
        bytes = bytes && byte_ids[static_cast<uint8_t>(c)] >= 0;
      if (bytes) {
        for (char c : text)
          out.push_back(byte_ids[static_cast<uint8_t>(c)]);
      } else if (s.unk) {
        out.push_back(*s.unk);
      }
    }
  }
}

} // namespace phimoe_rt::tok
