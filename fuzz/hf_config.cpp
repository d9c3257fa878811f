// libFuzzer target: a Hugging Face config.json -> longctx's config -> ModelConfig::from_json
// (every field checked, the mechanism's fields too). Any input must give a config or one error,
// and nothing is allocated for the model.
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

#include "model/config.h"
#include "model/hf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto hf = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(data), size));
    auto c = longctx::hf_to_longctx_config(hf, "fuzz/config.json");
    auto m = longctx::ModelConfig::from_json(c["model"], "fuzz/config.json");
    (void)m.approx_parameters();
  } catch (const std::exception&) {
  }
  return 0;
}
