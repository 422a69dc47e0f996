// sparsemixer.h - top-2 routing of one row of router logits: PhiMoE's eval-mode sparsemixer,
// and Mixtral's softmax top-2.
#ifndef PHIMOE_RT_SPARSEMIXER_H
#define PHIMOE_RT_SPARSEMIXER_H

#include <cmath>

// The same routing runs on the host and, in CUDA builds, on the device (phimoe_cuda).
#ifdef __CUDACC__
#define PHIMOE_RT_HOST_DEVICE __host__ __device__
#else
#define PHIMOE_RT_HOST_DEVICE
#endif

namespace phimoe_rt {

// The two experts of a row and their (not renormalised) weights.
struct Route {
  int i1, i2;
  float w1, w2;
};

// transformers' sparsemixer(scores, jitter_eps, training=False), in float:
//   i1 = argmax s (first index on ties), m1 = s[i1];
//   j is masked when (m1 - s[j]) / max(|s[j]|, m1) > 2*eps (a nan ratio keeps j);
//   w1 = softmax of the unmasked logits at i1.
//   Stage 2 repeats this with s[i1] = -inf: i2, m2 = s[i2], the same test with m2 (on the
//   ORIGINAL logits) and i1 always excluded; w2 = that softmax at i2.
template <int E> PHIMOE_RT_HOST_DEVICE inline Route sparsemixer(const float *s, float eps) {
  static_assert(E >= 2, "sparsemixer needs at least two experts");
  const float threshold = 2.0f * eps;
  Route r;
  r.i1 = 0;
  for (int j = 1; j < E; ++j)
    if (s[j] > s[r.i1])
      r.i1 = j;
  const float m1 = s[r.i1];
  float sum = 0.0f;
  for (int j = 0; j < E; ++j) {
    const float factor = fabsf(s[j]) < m1 ? m1 : fabsf(s[j]);
    if (!((m1 - s[j]) / factor > threshold))
      sum += expf(s[j] - m1);
  }
  r.w1 = 1.0f / sum; // exp(m1 - m1) / sum

  r.i2 = r.i1 == 0 ? 1 : 0;
  for (int j = r.i2 + 1; j < E; ++j)
    if (j != r.i1 && s[j] > s[r.i2])
      r.i2 = j;
  const float m2 = s[r.i2];
  sum = 0.0f;
  for (int j = 0; j < E; ++j) {
    if (j == r.i1)
      continue;
    const float factor = fabsf(s[j]) < m2 ? m2 : fabsf(s[j]);
    if (!((m2 - s[j]) / factor > threshold))
      sum += expf(s[j] - m2);
  }
  r.w2 = 1.0f / sum;
  return r;
}

// Mixtral's routing (transformers' MixtralSparseMoeBlock): softmax over all E logits, the two
// largest (first index on ties), their probabilities renormalised to sum to one. With
// e = exp(s[i2] - s[i1]) (at most 1): w1 = 1 / (1 + e), w2 = e / (1 + e); the softmax's
// normaliser cancels.
template <int E> PHIMOE_RT_HOST_DEVICE inline Route softmax_top2(const float *s) {
  static_assert(E >= 2, "softmax_top2 needs at least two experts");
  Route r;
  r.i1 = 0;
  for (int j = 1; j < E; ++j)
    if (s[j] > s[r.i1])
      r.i1 = j;
  r.i2 = r.i1 == 0 ? 1 : 0;
  for (int j = r.i2 + 1; j < E; ++j)
    if (j != r.i1 && s[j] > s[r.i2])
      r.i2 = j;
  const float e = expf(s[r.i2] - s[r.i1]);
  r.w1 = 1.0f / (1.0f + e);
  r.w2 = e / (1.0f + e);
  return r;
}

// The routing of a MoE kernel: RouteKind::Sparsemixer (eps is its jitter) or SoftmaxTop2.
enum class RouteKind { Sparsemixer, SoftmaxTop2 };

template <RouteKind K, int E> PHIMOE_RT_HOST_DEVICE inline Route route(const float *s, float eps) {
  if constexpr (K == RouteKind::SoftmaxTop2)
    return softmax_top2<E>(s);
  else
    return sparsemixer<E>(s, eps);
}

} // namespace phimoe_rt

#endif // PHIMOE_RT_SPARSEMIXER_H
