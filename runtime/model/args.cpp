// args.cpp - what the CPU and CUDA command lines of phimoe-bin share: where the executable
// lives, and token ids given on the command line.
#include "phimoe_rt/session.h"

#include <climits>
#include <cstdlib>
#include <sstream>
#include <unistd.h>

namespace phimoe_rt {

std::string executable_dir() {
  char buf[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (len <= 0)
    return ".";
  std::string path(buf, static_cast<size_t>(len));
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

bool parse_token_ids(const std::string &text, const char *what, int vocab,
                     std::vector<int32_t> &ids, std::string &error) {
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    char *end = nullptr;
    long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0') {
      error = std::string(what) + ": '" + item + "' is not a token id";
      return false;
    }
    if (v < 0 || v >= vocab) {
      error = std::string(what) + ": id " + item + " is outside the vocabulary [0, " +
              std::to_string(vocab) + ")";
      return false;
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) {
    error = std::string(what) + ": no token ids given";
    return false;
  }
  return true;
}

} // namespace phimoe_rt
