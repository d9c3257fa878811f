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

// SplitMix64's output step: the golden-ratio increment, then the finaliser. The generator of
// every seeded draw the project makes without the C++ library's distributions.
inline uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace longctx
