#include "io/json_fields.h"

#include <filesystem>
#include <fstream>

#include "io/fs.h"

namespace longctx {

std::vector<nlohmann::json> resume_jsonl(const std::string& path, int64_t keep) {
  std::vector<nlohmann::json> v;
  if (!std::filesystem::exists(path)) return v;
  std::ifstream in(path);
  for (std::string line; int64_t(v.size()) < keep && std::getline(in, line);) {
    if (in.eof() && !line.empty()) break;  // no trailing newline: the last write did not finish
    try {
      v.push_back(nlohmann::json::parse(line));
    } catch (const nlohmann::json::exception&) {
      break;
    }
  }
  in.close();
  std::string kept;
  for (auto& j : v) kept += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  write_file_atomic(path, kept);
  return v;
}

Fields::Fields(const nlohmann::json& j, std::string where, std::string path)
    : j_(j.is_null() ? nlohmann::json::object() : j), where_(std::move(where)), path_(std::move(path)) {
  LCX_CHECK(j_.is_object(), where_, ": '", path_.empty() ? "(top level)" : path_,
            "' must be a JSON object, got ", j_.dump());
}

Fields Fields::sub(const std::string& key) {
  seen_.insert(key);
  return Fields(j_.contains(key) ? j_[key] : nlohmann::json::object(), where_, name(key));
}

nlohmann::json Fields::raw(const std::string& key) {
  seen_.insert(key);
  return j_.contains(key) ? j_[key] : nlohmann::json();
}

void Fields::done() const {
  for (auto it = j_.begin(); it != j_.end(); ++it)
    LCX_CHECK(seen_.count(it.key()), where_, ": unknown field '", name(it.key()), "'");
}

}  // namespace longctx
