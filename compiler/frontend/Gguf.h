//===- Gguf.h - a GGUF model file (llama.cpp's format) as a checkpoint -*- C++ -*-===//
//
// llama.cpp's converter (convert_hf_to_gguf.py) writes a Hugging Face checkpoint as one
// GGUF file: the config as metadata keys, the tokenizer as tokenizer.* keys, every tensor
// under ggml's names with its dimensions innermost first, the experts of a layer stacked
// into one tensor, and llama-quantize stores the tensors in block formats. This reader
// gives back what the safetensors frontend gives: a PhiMoEConfig and a Checkpoint whose
// tensors have the Hugging Face names and shapes (each expert a view of its stack), so
// that the model builder, the passes and the packer work unchanged. Block-quantized
// tensors (Q8_0, Q4_K, Q6_K) are declared in their formats and copied as they are.
//
//===----------------------------------------------------------------------===//

#ifndef PHIMOE_COMPILER_FRONTEND_GGUF_H
#define PHIMOE_COMPILER_FRONTEND_GGUF_H

#include "compiler/frontend/Config.h"
#include "compiler/frontend/Safetensors.h"

#include <optional>

namespace phimoe {

struct GgufOptions {
  /// LongRoPE's attention scale (transformers' short_mscale and long_mscale), which
  /// a GGUF does not hold: its rope.scaling.attn_factor is the converter's generic
  /// sqrt(1 + ln(s)/ln(original context)), 1.19 for Phi-3.5-MoE, where transformers
  /// reads 1.2431... from config.json. Unset: the file's value, with a warning.
  std::optional<double> ropeMscale;
};

struct GgufModel {
  PhiMoEConfig config;
  std::unique_ptr<Checkpoint> checkpoint;
  /// A GGUF file of the model's vocabulary alone: its general.architecture,
  /// general.name and tokenizer.* entries, as they are, and no tensors.
  std::string vocabulary;
  /// What the user should know about the conversion (printed as warnings).
  std::vector<std::string> warnings;
};

/// Whether `path` is a file that begins with GGUF's magic.
bool isGgufFile(const std::string &path);

/// Reads a GGUF model file of architecture "phimoe". Errors name the file and the key or
/// tensor.
llvm::Expected<GgufModel> readGguf(const std::string &path, const GgufOptions &options);

} // namespace phimoe

#endif // PHIMOE_COMPILER_FRONTEND_GGUF_H
