//===- Gguf.cpp - a GGUF model file (llama.cpp's format) as a checkpoint --===//

#include "compiler/frontend/Gguf.h"

#include "runtime/tokenizer/gguf_reader.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/FileSystem.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>

using namespace phimoe;
using phimoe_rt::tok::gguf_metadata;
using phimoe_rt::tok::gguf_tensor;
using phimoe_rt::tok::gguf_type;
using phimoe_rt::tok::gguf_value;

namespace {

/// ggml_type numbers (ggml.h) and the formats phimoec reads.
std::optional<DType> dtypeOf(uint32_t type) {
  switch (type) {
  case 0:
    return DType::F32;
  case 1:
    return DType::F16;
  case 8:
    return DType::Q8_0;
  case 12:
    return DType::Q4_K;
  case 14:
    return DType::Q6_K;
  case 2:
    return DType::Q4_0;
  case 3:
    return DType::Q4_1;
  case 6:
    return DType::Q5_0;
  case 7:
    return DType::Q5_1;
  case 10:
    return DType::Q2_K;
  case 11:
    return DType::Q3_K;
  case 13:
    return DType::Q5_K;
  case 30:
    return DType::BF16;
  default:
    return std::nullopt;
  }
}

std::string ggmlTypeName(uint32_t type) {
  static const std::map<uint32_t, const char *> names = {
      {0, "F32"},      {1, "F16"},      {2, "Q4_0"},    {3, "Q4_1"},    {6, "Q5_0"},
      {7, "Q5_1"},     {8, "Q8_0"},     {9, "Q8_1"},    {10, "Q2_K"},   {11, "Q3_K"},
      {12, "Q4_K"},    {13, "Q5_K"},    {14, "Q6_K"},   {15, "Q8_K"},   {16, "IQ2_XXS"},
      {17, "IQ2_XS"},  {18, "IQ3_XXS"}, {19, "IQ1_S"},  {20, "IQ4_NL"}, {21, "IQ3_S"},
      {22, "IQ2_S"},   {23, "IQ4_XS"},  {24, "I8"},     {25, "I16"},    {26, "I32"},
      {27, "I64"},     {28, "F64"},     {29, "IQ1_M"},  {30, "BF16"},   {34, "TQ1_0"},
      {35, "TQ2_0"},   {39, "MXFP4"},   {40, "NVFP4"},  {41, "Q1_0"}};
  auto it = names.find(type);
  return it != names.end() ? it->second : "ggml type " + std::to_string(type);
}

/// The Hugging Face name of a per-layer GGUF tensor (after "blk.N."), by llama.cpp's
/// tensor map for phimoe; the stacked experts are handled apart.
const std::map<std::string, std::string> kLayerNames = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_norm.bias", "input_layernorm.bias"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"attn_output.bias", "self_attn.o_proj.bias"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_norm.bias", "post_attention_layernorm.bias"},
    {"ffn_gate_inp.weight", "block_sparse_moe.gate.weight"},
};
/// The stacked experts: [experts, rows, columns], one w1/w2/w3 matrix per expert.
const std::map<std::string, std::string> kExpertNames = {
    {"ffn_gate_exps.weight", "w1"}, {"ffn_down_exps.weight", "w2"}, {"ffn_up_exps.weight", "w3"}};
const std::map<std::string, std::string> kModelNames = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output_norm.bias", "model.norm.bias"},
    {"output.weight", "lm_head.weight"},
    {"output.bias", "lm_head.bias"},
};

/// Reads metadata keys of one architecture, collecting the first error.
class Keys {
public:
  Keys(const std::string &path, const gguf_metadata &m, std::string arch)
      : path(path), m(m), arch(std::move(arch)) {}

  /// `arch.key` as an integer >= min; absent: `fallback`, or an error when required.
  int64_t integer(const std::string &key, std::optional<int64_t> fallback, int64_t min = 1) {
    const gguf_value *v = m.find(arch + "." + key);
    if (!v) {
      if (!fallback)
        error(key, "is missing");
      return fallback.value_or(0);
    }
    if (!v->is_integer() || v->type == gguf_type::boolean || v->i < min) {
      error(key, v->type == gguf_type::array
                     ? "is an array (one value per layer), which phimoec does not take"
                     : "must be an integer >= " + std::to_string(min));
      return fallback.value_or(0);
    }
    return v->i;
  }
  double number(const std::string &key, double fallback) {
    const gguf_value *v = m.find(arch + "." + key);
    if (!v)
      return fallback;
    if (v->is_float() && v->f > 0 && std::isfinite(v->f))
      return v->f;
    if (v->is_integer() && v->type != gguf_type::boolean && v->i > 0)
      return static_cast<double>(v->i);
    error(key, "must be a positive number");
    return fallback;
  }
  bool has(const std::string &key) const { return m.find(arch + "." + key) != nullptr; }
  void error(const std::string &key, const std::string &message) {
    if (message_.empty())
      message_ = path + ": metadata '" + arch + "." + key + "' " + message;
  }
  const std::string &message() const { return message_; }

private:
  const std::string &path;
  const gguf_metadata &m;
  std::string arch;
  std::string message_;
};

/// The integer value of a tokenizer key, if it has one.
std::optional<int64_t> tokenId(const gguf_metadata &m, const char *key) {
  const gguf_value *v = m.find(key);
  if (!v || !v->is_integer() || v->type == gguf_type::boolean || v->i < 0)
    return std::nullopt;
  return v->i;
}

/// The GGUF name of a Hugging Face tensor name (for errors): the maps above read backwards.
std::string ggufNameOf(llvm::StringRef name) {
  for (const auto &[gguf, hf] : kModelNames)
    if (name == hf)
      return gguf;
  if (!name.consume_front("model.layers."))
    return name.str();
  auto [layer, rest] = name.split('.');
  for (const auto &[gguf, hf] : kLayerNames)
    if (rest == hf)
      return "blk." + layer.str() + "." + gguf;
  if (rest.consume_front("block_sparse_moe.experts.")) {
    auto [expert, matrix] = rest.split('.');
    for (const auto &[gguf, w] : kExpertNames)
      if (matrix == w + ".weight")
        return "blk." + layer.str() + "." + gguf + "[" + expert.str() + "]";
  }
  return name.str();
}

/// The matrix (w1, w2, w3) and the expert of an older per-expert tensor name
/// ("ffn_gate.3.weight"), if it is one.
std::optional<std::pair<std::string, int64_t>> perExpert(llvm::StringRef rest) {
  for (auto [prefix, w] : {std::pair("ffn_gate.", "w1"), std::pair("ffn_down.", "w2"),
                           std::pair("ffn_up.", "w3")}) {
    llvm::StringRef tail = rest;
    if (!tail.consume_front(prefix) || !tail.consume_back(".weight"))
      continue;
    int64_t expert;
    if (tail.getAsInteger(10, expert) || expert < 0)
      return std::nullopt;
    return std::pair(std::string(w), expert);
  }
  return std::nullopt;
}

void putU32(std::string &out, uint32_t v) { out.append(reinterpret_cast<const char *>(&v), 4); }
void putU64(std::string &out, uint64_t v) { out.append(reinterpret_cast<const char *>(&v), 8); }

} // namespace

bool phimoe::isGgufFile(const std::string &path) {
  if (!llvm::sys::fs::is_regular_file(path))
    return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

llvm::Expected<GgufModel> phimoe::readGguf(const std::string &path,
                                           const GgufOptions &options) {
  auto fail = [&](const std::string &message) {
    return llvm::createStringError(path + ": " + message);
  };
  std::string error;
  std::optional<gguf_metadata> read = phimoe_rt::tok::read_gguf(path, error, true);
  if (!read)
    return llvm::createStringError(error);
  const gguf_metadata &m = *read;
  if (const gguf_value *no = m.find("split.no"); no && no->is_integer() && no->i != 0) {
    const gguf_value *count = m.find("split.count");
    return fail("file " + std::to_string(no->i + 1) + " of " +
                (count && count->is_integer() ? std::to_string(count->i) : std::string("the")) +
                " split files: the first of them, named *-00001-of-*.gguf, is the one to give");
  }
  const gguf_value *archValue = m.find("general.architecture");
  if (!archValue || archValue->type != gguf_type::string)
    return fail("metadata 'general.architecture' is missing");
  const std::string arch = archValue->str;
  // llama.cpp converts Mixtral as a "llama" with experts.
  const bool mixtral = arch == "llama";
  if (arch != "phimoe" && !mixtral)
    return fail("general.architecture is \"" + arch +
                "\": phimoec compiles GGUF files of \"phimoe\" (Phi-3.5-MoE) and of \"llama\" "
                "with experts (Mixtral); for phixtral give the Hugging Face checkpoint directory");
  if (mixtral && !m.find("llama.expert_count"))
    return fail("a \"llama\" GGUF without llama.expert_count is a dense Llama, not a mixture of "
                "experts");

  auto mapped = MappedFile::open(path);
  if (!mapped)
    return mapped.takeError();
  GgufModel model;
  model.checkpoint = Checkpoint::over(path, std::move(*mapped));
  Checkpoint &ckpt = *model.checkpoint;
  ckpt.setFileNames(ggufNameOf, "the file's metadata");
  PhiMoEConfig &c = model.config;

  Keys k(path, m, arch);
  c.arch = mixtral ? Arch::Mixtral : Arch::PhiMoE;
  c.layers = k.integer("block_count", std::nullopt);
  c.hidden = k.integer("embedding_length", std::nullopt);
  c.intermediate = k.integer("feed_forward_length", std::nullopt);
  c.heads = k.integer("attention.head_count", std::nullopt);
  c.kvHeads = k.integer("attention.head_count_kv", c.heads);
  c.experts = k.integer("expert_count", std::nullopt);
  c.topK = k.integer("expert_used_count", std::nullopt);
  c.maxPosition = k.integer("context_length", std::nullopt);
  c.originalMaxPosition = k.integer("rope.scaling.original_context_length", c.maxPosition);
  c.eps = k.number(k.has("attention.layer_norm_rms_epsilon") ? "attention.layer_norm_rms_epsilon"
                                                          : "attention.layer_norm_epsilon",
                   1e-5);
  c.ropeTheta = k.number("rope.freq_base", 10000.0); // llama.cpp's default
  if (mixtral) // LongRoPE is PhiMoE's
    c.originalMaxPosition = c.maxPosition;
  if (int64_t window = k.integer("attention.sliding_window", 0, 0); window > 0)
    c.slidingWindow = window;
  if (!k.message().empty())
    return llvm::createStringError(k.message());
  if (c.heads > 0 && c.hidden % c.heads != 0 && !k.has("attention.key_length"))
    return fail("attention.head_count (" + std::to_string(c.heads) +
                ") does not divide embedding_length (" + std::to_string(c.hidden) + ")");
  c.headDim = k.integer("attention.key_length", c.hidden / c.heads);
  if (k.integer("attention.value_length", c.headDim) != c.headDim)
    k.error("attention.value_length", "differs from attention.key_length");
  c.rotaryDim = k.integer("rope.dimension_count", c.headDim);
  if (c.rotaryDim != c.headDim)
    k.error("rope.dimension_count", "is " + std::to_string(c.rotaryDim) +
                                        ": PhiMoE rotates whole heads of " +
                                        std::to_string(c.headDim));
  if (!k.message().empty())
    return llvm::createStringError(k.message());
  if (c.headDim % 2 != 0)
    return fail("head size " + std::to_string(c.headDim) + " is odd: RoPE rotates pairs");
  if (c.heads % c.kvHeads != 0)
    return fail("attention.head_count_kv (" + std::to_string(c.kvHeads) +
                ") does not divide attention.head_count (" + std::to_string(c.heads) + ")");
  if (c.topK != 2)
    return fail(arch + ".expert_used_count is " + std::to_string(c.topK) +
                (mixtral ? ": phimoec's Mixtral kernels route each token to 2 experts"
                         : ": PhiMoE's sparsemixer routing is defined for 2"));
  if (c.experts < 2)
    return fail(arch + ".expert_count is " + std::to_string(c.experts) +
                ": top-2 routing needs at least 2 experts");
  // Not in a GGUF: transformers' PhimoeConfig default (Phi-3.5-MoE's config.json has it too);
  // Mixtral's routing has none.
  c.routerJitter = mixtral ? 0.0 : 0.01;
  if (auto bos = tokenId(m, "tokenizer.ggml.bos_token_id"))
    c.bos = *bos;
  if (auto eos = tokenId(m, "tokenizer.ggml.eos_token_id"))
    c.eos.push_back(*eos);

  // A split GGUF (gguf-split, convert_hf_to_gguf.py --split-max-size): the first file holds
  // the metadata, every file tensors, and the others are named as the first.
  std::vector<const gguf_metadata *> shards = {&m};
  std::vector<std::string> shardPaths = {path};
  std::vector<gguf_metadata> others;
  if (const gguf_value *count = m.find("split.count"); count && count->i > 1) {
    if (!count->is_integer() || count->i > 9999)
      return fail("metadata 'split.count' is not a number of files");
    auto five = [](int64_t n) {
      std::string digits = std::to_string(n);
      return std::string(5 - std::min<size_t>(5, digits.size()), '0') + digits;
    };
    const std::string suffix = "-00001-of-" + five(count->i) + ".gguf";
    if (path.size() <= suffix.size() ||
        path.compare(path.size() - suffix.size(), suffix.size(), suffix) != 0)
      return fail("the first of " + std::to_string(count->i) + " split files, named *" +
                  suffix + ", is the one to give");
    const std::string prefix = path.substr(0, path.size() - suffix.size());
    others.reserve(static_cast<size_t>(count->i - 1));
    for (int64_t i = 2; i <= count->i; ++i) {
      std::string shardPath = prefix + "-" + five(i) + "-of-" + five(count->i) + ".gguf";
      std::optional<gguf_metadata> shard = phimoe_rt::tok::read_gguf(shardPath, error, true);
      if (!shard)
        return llvm::createStringError(error);
      const gguf_value *no = shard->find("split.no");
      if (!no || !no->is_integer() || no->i != i - 1)
        return llvm::createStringError(shardPath + ": metadata 'split.no' is not " +
                                       std::to_string(i - 1));
      auto file = MappedFile::open(shardPath);
      if (!file)
        return file.takeError();
      ckpt.addFile(std::move(*file));
      others.push_back(std::move(*shard));
      shardPaths.push_back(shardPath);
    }
    for (const gguf_metadata &shard : others)
      shards.push_back(&shard);
  }

  // The tensors, renamed; the stacked experts cut into one view per expert.
  std::map<std::string, int> requantized; // tensors of formats without kernels, by format
  std::vector<float> shortFactor, longFactor;
  for (size_t file = 0; file < shards.size(); ++file) {
    for (const gguf_tensor &t : shards[file]->tensors) {
      const gguf_metadata &shard = *shards[file];
      const uint64_t dataBytes = shard.file_size - std::min(shard.file_size, shard.data_offset);
      const std::string where = "tensor '" + t.name + "'";
      auto fail = [&](const std::string &message) {
        return llvm::createStringError(shardPaths[file] + ": " + message);
      };
      std::optional<DType> dtype = dtypeOf(t.type);
      if (!dtype)
        return fail(where + " is " + ggmlTypeName(t.type) +
                    ": phimoec reads GGUF tensors in F32, F16, BF16, Q8_0, Q4_K, Q6_K, Q5_K, "
                    "Q3_K, Q2_K, Q4_0, Q4_1, Q5_0 and Q5_1 (for the IQ types, compile the "
                    "checkpoint itself with phimoec compile --quant)");
      if (*dtype != DType::Q8_0 && *dtype != DType::Q4_K && *dtype != DType::Q6_K &&
          dtypeIsBlock(*dtype))
        ++requantized[dtypeName(*dtype)];
      TensorInfo info;
      info.dtype = *dtype;
      for (auto d = t.dims.rbegin(); d != t.dims.rend(); ++d)
        info.shape.push_back(static_cast<int64_t>(*d));
      if (t.dims[0] % static_cast<uint64_t>(dtypeBlockValues(*dtype)) != 0)
        return fail(where + ": rows of " + std::to_string(t.dims[0]) + " values are not whole " +
                    dtypeName(*dtype) + " blocks");
      info.numBytes = dtypeBytes(*dtype, static_cast<uint64_t>(info.numElements()));
      if (t.offset > dataBytes || info.numBytes > dataBytes - t.offset)
        return fail("truncated: " + where + " ends at byte " +
                    std::to_string(t.offset + info.numBytes) + " of the data section, which has " +
                    std::to_string(dataBytes));
      info.file = static_cast<unsigned>(file);
      info.offset = shard.data_offset + t.offset;

      auto add = [&](TensorInfo tensor, const std::string &name) -> llvm::Error {
        tensor.name = name;
        if (!ckpt.add(std::move(tensor)))
          return llvm::createStringError(shardPaths[file] + ": " + where + " is defined twice");
        return llvm::Error::success();
      };
      if (t.name == "rope_factors_short.weight" || t.name == "rope_factors_long.weight") {
        if (info.dtype != DType::F32 || t.dims.size() != 1)
          return fail(where + " must be a vector of F32");
        std::vector<float> &out = t.name == "rope_factors_short.weight" ? shortFactor : longFactor;
        out.resize(t.dims[0]);
        std::memcpy(out.data(), ckpt.files()[file]->data() + info.offset, info.numBytes);
        continue;
      }
      if (auto it = kModelNames.find(t.name); it != kModelNames.end()) {
        if (llvm::Error e = add(std::move(info), it->second))
          return std::move(e);
        continue;
      }
      // blk.N.<name>
      int64_t layer = -1;
      std::string rest;
      if (t.name.rfind("blk.", 0) == 0) {
        size_t dot = t.name.find('.', 4);
        std::string number = t.name.substr(4, dot == std::string::npos ? 0 : dot - 4);
        if (!number.empty() && number.size() < 6 &&
            number.find_first_not_of("0123456789") == std::string::npos) {
          layer = std::stoll(number);
          rest = t.name.substr(dot + 1);
        }
      }
      if (layer < 0 || layer >= c.layers)
        return fail(where + " is not a tensor of a phimoe model phimoec knows" +
                    (layer >= c.layers ? " (its layer is past block_count)" : ""));
      const std::string prefix = "model.layers." + std::to_string(layer) + ".";
      if (auto it = kLayerNames.find(rest); it != kLayerNames.end()) {
        // llama.cpp's converter reorders a llama's q and k rows for its interleaved RoPE.
        if (mixtral && (rest == "attn_q.weight" || rest == "attn_k.weight"))
          info.ropeHeadDim = c.headDim;
        if (llvm::Error e = add(std::move(info), prefix + it->second))
          return std::move(e);
        continue;
      }
      // Older Mixtral GGUFs: one tensor per expert, blk.N.ffn_gate.E.weight.
      if (std::optional<std::pair<std::string, int64_t>> one = perExpert(rest)) {
        if (info.shape.size() != 2 || one->second >= c.experts)
          return fail(where + " is not a matrix of one of " + std::to_string(c.experts) +
                      " experts");
        std::string name = prefix + "block_sparse_moe.experts." + std::to_string(one->second) +
                           "." + one->first + ".weight";
        if (llvm::Error e = add(std::move(info), name))
          return std::move(e);
        continue;
      }
      auto ex = kExpertNames.find(rest);
      if (ex == kExpertNames.end())
        return fail(where + " is not a tensor of a phimoe model phimoec knows");
      if (info.shape.size() != 3 || info.shape[0] != c.experts)
        return fail(where + " has " + std::to_string(info.shape.size()) +
                    " dimensions, not [" + std::to_string(c.experts) +
                    " experts, rows, columns] (" + arch + ".expert_count is " +
                    std::to_string(c.experts) + ")");
      const uint64_t each = info.numBytes / static_cast<uint64_t>(c.experts);
      for (int64_t e = 0; e < c.experts; ++e) {
        TensorInfo expert = info;
        expert.shape = {info.shape[1], info.shape[2]};
        expert.offset = info.offset + static_cast<uint64_t>(e) * each;
        expert.numBytes = each;
        std::string name =
            prefix + "block_sparse_moe.experts." + std::to_string(e) + "." + ex->second + ".weight";
        if (llvm::Error err = add(std::move(expert), name))
          return std::move(err);
      }
    }
  }

  if (!requantized.empty()) {
    std::string list;
    for (const auto &[name, count] : requantized)
      list += (list.empty() ? "" : ", ") + std::to_string(count) + " " + name;
    model.warnings.push_back(
        path + ": phimoec has no kernels for the formats of " + list +
        " tensors: under --quant keep they are stored as q6k (Q5_0, Q5_1, Q5_K) or q4k (Q2_K, "
        "Q3_K, Q4_0, Q4_1), their values quantized again (q8_0 where a row is not whole "
        "k-quant blocks)");
  }

  const TensorInfo *embed = ckpt.find("model.embed_tokens.weight");
  if (!embed || embed->shape.size() != 2)
    return fail("tensor 'token_embd.weight' is missing");
  c.vocab = embed->shape[0];
  c.attentionBias = !mixtral && ckpt.find("model.layers.0.self_attn.q_proj.bias") != nullptr;
  c.lmHeadBias = !mixtral && ckpt.find("lm_head.bias") != nullptr;
  if (mixtral && (ckpt.find("model.layers.0.self_attn.q_proj.bias") || ckpt.find("lm_head.bias")))
    return fail("a Mixtral has no attention or LM head biases, and this file has them");
  c.tieEmbeddings = ckpt.find("lm_head.weight") == nullptr;

  // LongRoPE: the factor sets as tensors, the attention scale as a key (see GgufOptions).
  const size_t half = static_cast<size_t>(c.headDim / 2);
  if (shortFactor.empty() != longFactor.empty())
    return fail(std::string("tensor '") +
                (shortFactor.empty() ? "rope_factors_short" : "rope_factors_long") +
                ".weight' is missing (the other LongRoPE factor set is there)");
  if (shortFactor.empty()) {
    c.shortFactor.assign(half, 1.0f);
    c.longFactor.assign(half, 1.0f);
    if (options.ropeMscale)
      model.warnings.push_back("--rope-mscale ignored: " + path +
                               " has no LongRoPE factors (rope_factors_short/long)");
  } else {
    if (shortFactor.size() != half || longFactor.size() != half)
      return fail("the LongRoPE factors have " + std::to_string(shortFactor.size()) + " and " +
                  std::to_string(longFactor.size()) + " values, but heads of " +
                  std::to_string(c.headDim) + " need " + std::to_string(half));
    for (const std::vector<float> *set : {&shortFactor, &longFactor})
      for (float f : *set)
        if (!(f > 0) || !std::isfinite(f))
          return fail("a LongRoPE factor is " + std::to_string(f) + ": they must be positive");
    c.shortFactor = shortFactor;
    c.longFactor = longFactor;
    double fileScale = k.number("rope.scaling.attn_factor", 1.0);
    if (!k.message().empty())
      return llvm::createStringError(k.message());
    c.shortMscale = c.longMscale = options.ropeMscale.value_or(fileScale);
    if (!options.ropeMscale) {
      char value[32];
      std::snprintf(value, sizeof value, "%.9g", fileScale);
      model.warnings.push_back(
          path + ": LongRoPE's attention scale is the file's " + arch +
          ".rope.scaling.attn_factor, " + value +
          "; GGUF does not carry transformers' short_mscale/long_mscale, which are "
          "1.243163121016122 for Phi-3.5-MoE-instruct (pass --rope-mscale to use the "
          "checkpoint's own value)");
    }
  }

  // The vocabulary travels as a GGUF of its own: the tokenizer's entries, copied byte for
  // byte, under a version-3 header without tensors.
  std::ifstream in(path, std::ios::binary);
  std::string entries;
  uint64_t count = 0;
  for (const auto &[key, value] : m.values) {
    if (key.rfind("tokenizer.", 0) != 0 && key != "general.architecture" &&
        key != "general.name")
      continue;
    std::string bytes(value.entry_end - value.entry_begin, '\0');
    in.seekg(static_cast<std::streamoff>(value.entry_begin));
    if (!in.read(bytes.data(), static_cast<std::streamsize>(bytes.size())))
      return fail("cannot read metadata '" + key + "' again");
    entries += bytes;
    ++count;
  }
  if (!m.find("tokenizer.ggml.model"))
    return fail("metadata 'tokenizer.ggml.model' is missing: the file has no vocabulary, "
                "which phimoe-bin needs");
  model.vocabulary = "GGUF";
  putU32(model.vocabulary, 3);
  putU64(model.vocabulary, 0);
  putU64(model.vocabulary, count);
  model.vocabulary += entries;
  return std::move(model);
}
