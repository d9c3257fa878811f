#include "io/json_fields.h"

namespace longctx {

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
