//===- Config.cpp - a PhiMoE checkpoint's config.json ---------------------===//

#include "compiler/frontend/Config.h"

#include <nlohmann/json.hpp>

#include <fstream>

using namespace phimoe;
using nlohmann::json;

namespace {

/// Reads fields of one JSON object, collecting the first error.
class Fields {
public:
  Fields(const std::string &file, const json &object, std::string prefix = "")
      : file_(file), object_(object), prefix_(std::move(prefix)) {}

  bool has(const char *key) const {
    return object_.contains(key) && !object_[key].is_null();
  }

  void integer(const char *key, int64_t &out, bool required, int64_t min = 1) {
    if (!has(key)) {
      if (required)
        error(key, "is missing");
      return;
    }
    const json &v = object_[key];
    if (!v.is_number_integer() || v.get<int64_t>() < min)
      return error(key, "must be an integer >= " + std::to_string(min) + ", got " + v.dump());
    out = v.get<int64_t>();
  }

  void number(const char *key, double &out, bool positive = true) {
    if (!has(key))
      return;
    const json &v = object_[key];
    if (!v.is_number() || (positive && !(v.get<double>() > 0)))
      return error(key, std::string("must be a ") + (positive ? "positive " : "") +
                            "number, got " + v.dump());
    out = v.get<double>();
  }

  void boolean(const char *key, bool &out) {
    if (!has(key))
      return;
    if (!object_[key].is_boolean())
      return error(key, "must be true or false, got " + object_[key].dump());
    out = object_[key].get<bool>();
  }

  void floats(const char *key, std::vector<float> &out) {
    if (!has(key))
      return error(key, "is missing");
    const json &v = object_[key];
    if (!v.is_array())
      return error(key, "must be a list of numbers, got " + v.dump());
    out.clear();
    for (const json &x : v) {
      if (!x.is_number() || !(x.get<double>() > 0))
        return error(key, "must be a list of positive numbers, got " + x.dump() + " in it");
      out.push_back(static_cast<float>(x.get<double>()));
    }
  }

  void error(const char *key, const std::string &message) {
    if (!message_.empty())
      return;
    message_ = file_ + ": field '" + prefix_ + key + "' " + message;
  }

  llvm::Error take() {
    if (message_.empty())
      return llvm::Error::success();
    return llvm::createStringError(message_);
  }

private:
  const std::string &file_;
  const json &object_;
  std::string prefix_;
  std::string message_;
};

/// What is wrong with the routing fields for phimoec's kernels (which route each token to a
/// pair of experts), if anything.
std::optional<std::string> checkRouting(const PhiMoEConfig &c) {
  const char *family = c.arch == Arch::PhiMoE    ? "PhiMoE"
                       : c.arch == Arch::Mixtral ? "Mixtral"
                                                 : "phixtral";
  if (c.topK != 2)
    return "field 'num_experts_per_tok' is " + std::to_string(c.topK) +
           (c.arch == Arch::PhiMoE ? ": PhiMoE's sparsemixer routing is defined for 2"
                                   : ": phimoec's " + std::string(family) +
                                         " kernels route each token to 2 experts");
  if (c.experts < 2)
    return "field 'num_local_experts' is " + std::to_string(c.experts) +
           ": top-2 routing needs at least 2 experts";
  return std::nullopt;
}

/// A phixtral config.json: phi-2's configuration_phi.py (model_type "phi-msft") with
/// num_local_experts and num_experts_per_tok. phi-2's code fixes what the file does not
/// say: RoPE base 10000, biases in every linear layer and in the LM head.
llvm::Expected<PhiMoEConfig> readPhixtral(const std::string &path, const json &root) {
  auto fail = [&](const std::string &message) {
    return llvm::createStringError(path + ": " + message);
  };
  PhiMoEConfig c;
  c.arch = Arch::Phixtral;
  c.ropeTheta = 10000.0;
  c.routerJitter = 0.0;
  c.attentionBias = c.lmHeadBias = true;
  c.maxPosition = 2048;
  c.bos = 50256;
  Fields f(path, root);
  f.integer("n_embd", c.hidden, true);
  f.integer("n_layer", c.layers, true);
  f.integer("n_head", c.heads, true);
  f.integer("vocab_size", c.vocab, true);
  if (!f.has("num_local_experts"))
    f.error("num_local_experts", "is missing: a phi-msft checkpoint without experts is a "
                                 "dense phi-2, which phimoec does not compile");
  f.integer("num_local_experts", c.experts, true);
  f.integer("num_experts_per_tok", c.topK, true);
  c.kvHeads = c.heads;
  f.integer("n_head_kv", c.kvHeads, false);
  c.intermediate = 4 * c.hidden;
  f.integer("n_inner", c.intermediate, false);
  f.integer("n_positions", c.maxPosition, false);
  f.number("layer_norm_epsilon", c.eps);
  f.boolean("tie_word_embeddings", c.tieEmbeddings);
  if (f.has("activation_function") && (!root["activation_function"].is_string() ||
                                       root["activation_function"] != "gelu_new"))
    f.error("activation_function", "is " + root["activation_function"].dump() +
                                       ": phixtral's experts are phi-2 MLPs (\"gelu_new\")");
  for (const char *key : {"torch_dtype", "dtype"})
    if (f.has(key) && root[key].is_string())
      c.dtype = root[key];
  if (llvm::Error e = f.take())
    return std::move(e);
  if (c.hidden % c.heads != 0)
    return fail("field 'n_head' (" + std::to_string(c.heads) + ") does not divide 'n_embd' (" +
                std::to_string(c.hidden) + ")");
  c.headDim = c.hidden / c.heads;
  if (c.heads % c.kvHeads != 0)
    return fail("field 'n_head_kv' (" + std::to_string(c.kvHeads) +
                ") does not divide 'n_head' (" + std::to_string(c.heads) + ")");
  c.rotaryDim = c.headDim;
  Fields r(path, root);
  r.integer("rotary_dim", c.rotaryDim, true);
  if (llvm::Error e = r.take())
    return std::move(e);
  if (c.rotaryDim % 2 != 0 || c.rotaryDim > c.headDim)
    return fail("field 'rotary_dim' is " + std::to_string(c.rotaryDim) +
                ": RoPE rotates pairs of a head's lanes, so it must be even and at most "
                "the head size " + std::to_string(c.headDim));
  if (std::optional<std::string> error = checkRouting(c))
    return fail(*error);
  c.originalMaxPosition = c.maxPosition;
  c.shortFactor.assign(c.rotaryDim / 2, 1.0f);
  c.longFactor.assign(c.rotaryDim / 2, 1.0f);
  return c;
}

} // namespace

llvm::Expected<PhiMoEConfig> phimoe::readConfig(const std::string &path) {
  auto fail = [&](const std::string &message) {
    return llvm::createStringError(path + ": " + message);
  };
  std::ifstream in(path);
  if (!in)
    return fail("cannot read (is this a Hugging Face checkpoint directory?)");
  json root;
  try {
    root = json::parse(in);
  } catch (const json::exception &e) {
    return fail(std::string("malformed JSON: ") + e.what());
  }
  if (!root.is_object())
    return fail("not a JSON object");
  if (!root.contains("model_type") || !root["model_type"].is_string())
    return fail("field 'model_type' is missing");
  std::string modelType = root["model_type"];
  if (modelType != "phimoe" && modelType != "mixtral" && modelType != "phi-msft")
    return fail("field 'model_type' is \"" + modelType +
                "\": phimoec compiles \"phimoe\" (Phi-3.5-MoE), \"mixtral\" and \"phi-msft\" "
                "(phixtral) checkpoints");
  if (modelType == "phi-msft")
    return readPhixtral(path, root);

  PhiMoEConfig c;
  if (modelType == "mixtral") {
    // MixtralConfig's defaults where they differ from PhimoeConfig's.
    c.arch = Arch::Mixtral;
    c.experts = 8;
    c.maxPosition = c.originalMaxPosition = 4096 * 32;
    c.routerJitter = 0.0;
  }
  const char *family = c.arch == Arch::Mixtral ? "Mixtral" : "PhiMoE";
  Fields f(path, root);
  f.integer("hidden_size", c.hidden, true);
  f.integer("intermediate_size", c.intermediate, true);
  f.integer("num_hidden_layers", c.layers, true);
  f.integer("num_attention_heads", c.heads, true);
  f.integer("vocab_size", c.vocab, true);
  c.kvHeads = c.heads;
  f.integer("num_key_value_heads", c.kvHeads, false);
  f.integer("num_local_experts", c.experts, false);
  f.integer("num_experts_per_tok", c.topK, false);
  f.integer("max_position_embeddings", c.maxPosition, false);
  f.number("rms_norm_eps", c.eps);
  f.number("router_jitter_noise", c.routerJitter, false);
  if (c.arch == Arch::PhiMoE) { // Mixtral has neither bias (MixtralConfig has no such field)
    f.boolean("attention_bias", c.attentionBias);
    f.boolean("lm_head_bias", c.lmHeadBias);
  }
  f.boolean("tie_word_embeddings", c.tieEmbeddings);
  f.integer("bos_token_id", c.bos, false, 0);
  if (f.has("sliding_window")) {
    int64_t window = 0;
    f.integer("sliding_window", window, true);
    c.slidingWindow = window;
  }
  if (f.has("hidden_act") &&
      (!root["hidden_act"].is_string() || root["hidden_act"] != "silu"))
    f.error("hidden_act", "is " + root["hidden_act"].dump() + ": " + family +
                              " experts use \"silu\"");
  if (f.has("eos_token_id")) {
    const json &eos = root["eos_token_id"];
    for (const json &id : eos.is_array() ? eos : json::array({eos}))
      if (id.is_number_integer())
        c.eos.push_back(id.get<int64_t>());
  }
  for (const char *key : {"torch_dtype", "dtype"})
    if (f.has(key) && root[key].is_string())
      c.dtype = root[key];
  if (llvm::Error e = f.take())
    return std::move(e);

  c.headDim = c.hidden / c.heads;
  if (root.contains("head_dim") && !root["head_dim"].is_null()) {
    Fields h(path, root);
    h.integer("head_dim", c.headDim, true);
    if (llvm::Error e = h.take())
      return std::move(e);
  }
  if (c.hidden % c.heads != 0 && !root.contains("head_dim"))
    return fail("field 'num_attention_heads' (" + std::to_string(c.heads) +
                ") does not divide 'hidden_size' (" + std::to_string(c.hidden) + ")");
  if (c.headDim % 2 != 0)
    return fail("head_dim " + std::to_string(c.headDim) + " is odd: RoPE rotates pairs");
  if (c.heads % c.kvHeads != 0)
    return fail("field 'num_key_value_heads' (" + std::to_string(c.kvHeads) +
                ") does not divide 'num_attention_heads' (" + std::to_string(c.heads) + ")");
  if (std::optional<std::string> error = checkRouting(c))
    return fail(*error);

  // RoPE: transformers 5 writes rope_parameters {rope_type, rope_theta, ...};
  // older checkpoints (Phi-3.5-MoE-instruct itself) write rope_theta and
  // rope_scaling {type: longrope, ...} at top level.
  c.originalMaxPosition = c.maxPosition;
  f.number("rope_theta", c.ropeTheta);
  f.integer("original_max_position_embeddings", c.originalMaxPosition, false);
  const char *scalingKey = nullptr;
  for (const char *key : {"rope_parameters", "rope_scaling"})
    if (root.contains(key) && root[key].is_object()) {
      scalingKey = key;
      break;
    }
  if (llvm::Error e = f.take())
    return std::move(e);
  std::string ropeType = "default";
  if (scalingKey) {
    const json &s = root[scalingKey];
    Fields r(path, s, std::string(scalingKey) + ".");
    for (const char *key : {"rope_type", "type"})
      if (s.contains(key) && s[key].is_string()) {
        ropeType = s[key];
        break;
      }
    r.number("rope_theta", c.ropeTheta);
    r.integer("original_max_position_embeddings", c.originalMaxPosition, false);
    if (ropeType == "longrope") {
      r.floats("short_factor", c.shortFactor);
      r.floats("long_factor", c.longFactor);
      if (!r.has("short_mscale") || !r.has("long_mscale"))
        r.error(r.has("short_mscale") ? "long_mscale" : "short_mscale", "is missing");
      r.number("short_mscale", c.shortMscale);
      r.number("long_mscale", c.longMscale);
    } else if (ropeType != "default") {
      r.error("rope_type", "is \"" + ropeType + "\": phimoec supports \"longrope\" or none");
    }
    if (llvm::Error e = r.take())
      return std::move(e);
  }
  c.rotaryDim = c.headDim;
  size_t half = c.headDim / 2;
  if (ropeType != "longrope") {
    c.shortFactor.assign(half, 1.0f);
    c.longFactor.assign(half, 1.0f);
  } else if (c.shortFactor.size() != half || c.longFactor.size() != half) {
    return fail("field '" + std::string(scalingKey) + ".short_factor' has " +
                std::to_string(c.shortFactor.size()) + " values and 'long_factor' " +
                std::to_string(c.longFactor.size()) + ", but head_dim " +
                std::to_string(c.headDim) + " needs " + std::to_string(half));
  }
  return c;
}
