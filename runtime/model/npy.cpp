// npy.cpp - writes float32 arrays in NumPy's .npy format (version 1.0).
#include "phimoe_rt/session.h"

#include <cstdio>
#include <cstring>
#include <unistd.h>

namespace phimoe_rt {

bool write_npy(const std::string &path, const float *data, int64_t rows, int64_t cols,
               std::string &error) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                     std::to_string(rows) + ", " + std::to_string(cols) + "), }";
  // magic (6) + version (2) + header length (2) + dict + padding + '\n' = 64k
  size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  std::string tmp = path + ".tmp";
  FILE *f = std::fopen(tmp.c_str(), "wb");
  if (!f) {
    error = path + ": cannot write: " + std::strerror(errno);
    return false;
  }
  uint16_t length = static_cast<uint16_t>(dict.size());
  bool ok = std::fwrite("\x93NUMPY\x01\x00", 1, 8, f) == 8 &&
            std::fwrite(&length, 2, 1, f) == 1 &&
            std::fwrite(dict.data(), 1, dict.size(), f) == dict.size() &&
            std::fwrite(data, sizeof(float), static_cast<size_t>(rows * cols), f) ==
                static_cast<size_t>(rows * cols);
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    error = path + ": cannot write: " + std::strerror(errno);
    unlink(tmp.c_str());
    return false;
  }
  return true;
}

} // namespace phimoe_rt
