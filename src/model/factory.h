// The one place that knows which mechanisms exist: the registry of mixers/mechanism.h entries,
// one line each (factory.cpp). Nothing above model/ names a mixer.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/block.h"
#include "model/config.h"

namespace longctx {

// The fields a mechanism's layer is built from.
LayerSpec layer_spec(const ModelConfig& c, const std::string& where);
// Validates the "mixer" object of a model config (throws naming the field); builds nothing.
void validate_mixer_config(const ModelConfig& c, const std::string& where);
std::shared_ptr<Block> make_block(const ModelConfig& c, int64_t layer);
// The final norm before the output projection: 0 = RMSNorm; g > 0 = a TimestepNorm with g
// groups (MEGALODON), whose running statistics live in ModelState::head.
int64_t timestep_final_norm_groups(const ModelConfig& c);
std::vector<std::string> mixer_types();

}  // namespace longctx
