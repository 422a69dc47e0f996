//===- Config.h - a PhiMoE checkpoint's config.json -------------*- C++ -*-===//

#ifndef PHIMOE_COMPILER_FRONTEND_CONFIG_H
#define PHIMOE_COMPILER_FRONTEND_CONFIG_H

#include "llvm/Support/Error.h"

#include <optional>
#include <string>
#include <vector>

namespace phimoe {

/// The architectures phimoec compiles: model_type "phimoe" (Phi-3.5-MoE: LayerNorms with
/// bias, sparsemixer routing, LongRoPE), "mixtral" (RMSNorms, softmax top-2 routing,
/// plain RoPE; the same tensor names) and "phi-msft" with num_local_experts (phixtral:
/// phi-2 blocks, attention and MLP in parallel from one LayerNorm, partial rotary,
/// biased gelu_tanh experts, softmax top-2 routing; phi-2's tensor names).
enum class Arch { PhiMoE, Mixtral, Phixtral };

/// Every field of config.json that the forward pass depends on.
/// Absent optional fields take transformers' PhimoeConfig (MixtralConfig) defaults, or
/// for phixtral those of phi-2's own configuration_phi.py.
struct PhiMoEConfig {
  Arch arch = Arch::PhiMoE;
  int64_t hidden = 0, intermediate = 0, layers = 0, heads = 0, kvHeads = 0, headDim = 0;
  int64_t rotaryDim = 0; // the lanes of a head that RoPE rotates (headDim but for phixtral)
  int64_t experts = 16, topK = 2, vocab = 0;
  int64_t maxPosition = 131072, originalMaxPosition = 131072;
  double eps = 1e-5, ropeTheta = 1e6, routerJitter = 0.01;
  // LongRoPE; without rope scaling the factors are 1 and the mscales 1.
  std::vector<float> shortFactor, longFactor;
  double shortMscale = 1.0, longMscale = 1.0;
  bool attentionBias = false, lmHeadBias = false, tieEmbeddings = false;
  std::optional<int64_t> slidingWindow;
  int64_t bos = 1;
  std::vector<int64_t> eos;
  std::string dtype; // torch_dtype / dtype as written, may be empty
};

/// Reads and checks `path` (a config.json). Errors name the file and field.
llvm::Expected<PhiMoEConfig> readConfig(const std::string &path);

} // namespace phimoe

#endif // PHIMOE_COMPILER_FRONTEND_CONFIG_H
