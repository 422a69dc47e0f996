// kv_cache.cpp - allocation of the per-layer key/value cache.
#include "phimoe_rt/runtime.h"

namespace phimoe_rt {

// (Re)allocates the cache for `capacity` positions of every layer and zero-fills it:
// previous contents are discarded.
void KVCache::resize(int layers_, int capacity_, int kv_heads_, int head_dim_) {
  layers = layers_ > 0 ? layers_ : 0;
  capacity = capacity_ > 0 ? capacity_ : 0;
  kv_heads = kv_heads_ > 0 ? kv_heads_ : 0;
  head_dim = head_dim_ > 0 ? head_dim_ : 0;
  const size_t total = static_cast<size_t>(layers) * capacity * row();
  k.assign(total, 0.0f);
  v.assign(total, 0.0f);
}

} // namespace phimoe_rt
