// libFuzzer target: bytes -> safetensors_parse (the header length, the JSON header, dtypes,
// shapes, offsets, holes and overlaps). Any input must give tensors or one longctx error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = longctx::safetensors_parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
    for (auto& [name, t] : f.tensors) (void)t.sum();  // touch every tensor's data
  } catch (const std::exception&) {
  }
  return 0;
}
