// load.cpp - Tokenizer's factories: tokenizer.json, a GGUF file, or a directory holding one.
#include "bpe_tokenizer.h"
#include "loaders.h"

#include "phimoe_rt/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

namespace phimoe_rt {

std::unique_ptr<Tokenizer> Tokenizer::load_hf(const std::string &tokenizer_json,
                                              const std::string &tokenizer_config_json,
                                              std::string &error) {
  tok::spec s;
  if (!tok::load_hf_spec(tokenizer_json, tokenizer_config_json, s, error))
    return nullptr;
  return tok::bpe_tokenizer::create(std::move(s), tokenizer_json, error);
}

std::unique_ptr<Tokenizer> Tokenizer::load_gguf(const std::string &path, std::string &error) {
  tok::spec s;
  if (!tok::load_gguf_spec(path, s, error))
    return nullptr;
  return tok::bpe_tokenizer::create(std::move(s), path, error);
}

std::unique_ptr<Tokenizer> Tokenizer::load_dir(const std::string &dir, std::string &error) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    error = dir + ": not a directory";
    return nullptr;
  }
  fs::path json = fs::path(dir) / "tokenizer.json";
  if (fs::exists(json, ec)) {
    fs::path config = fs::path(dir) / "tokenizer_config.json";
    std::unique_ptr<Tokenizer> t =
        load_hf(json.string(), fs::exists(config, ec) ? config.string() : std::string(), error);
    // Newer transformers save the chat template beside the config.
    fs::path jinja = fs::path(dir) / "chat_template.jinja";
    if (t && t->chat_template_.empty() && fs::exists(jinja, ec)) {
      std::ifstream in(jinja, std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      if (!in) {
        error = jinja.string() + ": cannot read";
        return nullptr;
      }
      t->chat_template_ = ss.str();
    }
    return t;
  }
  std::vector<fs::path> ggufs;
  for (const fs::directory_entry &e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".gguf")
      ggufs.push_back(e.path());
  if (ec) {
    error = dir + ": cannot list (" + ec.message() + ")";
    return nullptr;
  }
  if (ggufs.empty()) {
    error = dir + ": no tokenizer.json and no .gguf file";
    return nullptr;
  }
  // Split models keep the metadata in the first part, which sorts first.
  std::sort(ggufs.begin(), ggufs.end());
  return load_gguf(ggufs.front().string(), error);
}

} // namespace phimoe_rt
