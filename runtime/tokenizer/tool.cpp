// tool.cpp - phimoe-tokenize: encode text or decode ids with a tokenizer.json, a directory or a
// GGUF file, from the command line.
#include "phimoe_rt/tokenizer.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <system_error>

namespace {

using phimoe_rt::StreamDecoder;
using phimoe_rt::Tokenizer;

int fail(const std::string &message) {
  std::fprintf(stderr, "phimoe-tokenize: %s\n", message.c_str());
  return 1;
}

bool is_gguf(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in && std::memcmp(magic, "GGUF", 4) == 0;
}

std::unique_ptr<Tokenizer> load(const std::string &path, std::string &error) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    return Tokenizer::load_dir(path, error);
  if (!std::filesystem::exists(path, ec)) {
    error = path + ": no such file or directory";
    return nullptr;
  }
  if (is_gguf(path))
    return Tokenizer::load_gguf(path, error);
  return Tokenizer::load_hf(path, "", error);
}

// "1,2,3" (spaces allowed) -> ids.
bool parse_ids(const std::string &text, std::vector<int32_t> &ids, std::string &error) {
  std::string item;
  std::stringstream ss(text);
  while (std::getline(ss, item, ',')) {
    size_t b = item.find_first_not_of(" \t\n"), e = item.find_last_not_of(" \t\n");
    if (b == std::string::npos) {
      if (text.find_first_not_of(" \t\n") == std::string::npos)
        continue; // no ids at all
      error = "an empty id in '" + text + "'";
      return false;
    }
    item = item.substr(b, e - b + 1);
    char *end = nullptr;
    long v = std::strtol(item.c_str(), &end, 10);
    if (*end != '\0' || v < 0 || v > 0x7FFFFFFF) {
      error = "'" + item + "' is not a token id";
      return false;
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  return true;
}

// Requests on stdin as JSON, for tests: {"encode": [texts], "add_special": bool,
// "decode": [[ids]], "skip_special": bool, "stream": [[ids]]} -> the same keys with results.
int batch(const Tokenizer &t) {
  using json = nlohmann::json;
  std::stringstream ss;
  ss << std::cin.rdbuf();
  json req;
  try {
    req = json::parse(ss.str());
  } catch (const json::exception &e) {
    return fail(std::string("batch: malformed JSON on stdin: ") + e.what());
  }
  json res = json::object();
  try {
    bool add_special = req.value("add_special", false);
    bool skip_special = req.value("skip_special", false);
    if (req.contains("encode")) {
      res["encode"] = json::array();
      for (const json &text : req["encode"])
        res["encode"].push_back(t.encode(text.get<std::string>(), add_special));
    }
    if (req.contains("decode")) {
      res["decode"] = json::array();
      for (const json &ids : req["decode"])
        res["decode"].push_back(t.decode(ids.get<std::vector<int32_t>>(), skip_special));
    }
    if (req.contains("stream")) {
      res["stream"] = json::array();
      StreamDecoder d(t);
      for (const json &ids : req["stream"]) {
        std::string text, piece;
        for (int32_t id : ids.get<std::vector<int32_t>>()) {
          piece.clear();
          d.push(id, piece);
          text += piece;
        }
        piece.clear();
        d.finish(piece);
        res["stream"].push_back(text + piece);
      }
    }
  } catch (const json::exception &e) {
    return fail(std::string("batch: bad request: ") + e.what());
  }
  std::cout << res.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"phimoe-tokenize: text <-> token ids with a tokenizer.json, a directory holding "
               "one (with tokenizer_config.json), or a GGUF file"};
  std::string path;
  app.add_option("--tokenizer", path, "tokenizer.json, a directory, or a .gguf file")->required();
  app.require_subcommand(1);

  CLI::App *encode = app.add_subcommand("encode", "print the ids of TEXT, comma-separated");
  bool no_special = false;
  std::string text;
  encode->add_flag("--no-special", no_special,
                   "do not add BOS/EOS (special tokens written in TEXT are still matched)");
  encode->add_option("text", text, "the text")->required();

  CLI::App *decode = app.add_subcommand("decode", "print the text of comma-separated ids");
  bool skip_special = false;
  std::string ids_text;
  decode->add_flag("--skip-special", skip_special, "leave special tokens out");
  decode->add_option("ids", ids_text, "ids, e.g. 1,2,3")->required();

  CLI::App *info = app.add_subcommand("info", "print the vocabulary size and special tokens");
  app.add_subcommand("batch", "JSON requests on stdin (for tests)");

  CLI11_PARSE(app, argc, argv);

  std::string error;
  std::unique_ptr<Tokenizer> t = load(path, error);
  if (!t)
    return fail(error);

  if (encode->parsed()) {
    std::vector<int32_t> ids = t->encode(text, !no_special);
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i)
      line += (i ? "," : "") + std::to_string(ids[i]);
    std::printf("%s\n", line.c_str());
    return 0;
  }
  if (decode->parsed()) {
    std::vector<int32_t> ids;
    if (!parse_ids(ids_text, ids, error))
      return fail(error);
    for (int32_t id : ids)
      if (id >= t->vocab_size())
        return fail("id " + std::to_string(id) + " is outside the vocabulary of " +
                    std::to_string(t->vocab_size()));
    std::string out = t->decode(ids, skip_special);
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fputc('\n', stdout);
    return 0;
  }
  if (info->parsed()) {
    auto opt = [](std::optional<int32_t> v) {
      return v ? std::to_string(*v) : std::string("none");
    };
    std::printf("vocab_size %d\nbos %s\neos %s\nadd_bos %s\nchat_template %s\n", t->vocab_size(),
                opt(t->bos()).c_str(), opt(t->eos()).c_str(), t->add_bos() ? "true" : "false",
                t->chat_template().empty() ? "no" : "yes");
    return 0;
  }
  return batch(*t);
}
