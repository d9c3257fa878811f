// A JSON file read whole and parsed; errors name the file ("PATH: not valid JSON (...)").
#pragma once
#include <nlohmann/json.hpp>

#include <string>

namespace longctx {

nlohmann::json read_json_file(const std::string& path);

}  // namespace longctx
