// Stable string hashing for seeds derived from names (task names, setups): the same name gives
// the same seed on every platform and build, unlike std::hash.
#pragma once
#include <cstdint>
#include <string_view>

namespace longctx {

// FNV-1a, 64 bits.
inline uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace longctx
