// Validated JSON objects: every field read by name with its type and range checked, and
// unknown fields rejected by name ("config.json: unknown field 'model.d_modle'").
#pragma once
#include <nlohmann/json.hpp>

#include <set>
#include <string>
#include <vector>

#include "util/error.h"

namespace longctx {

// A JSONL results file to continue (resumable evaluations): its complete records, at most
// `keep` of them; a torn last line (a killed run) and records past `keep` are dropped, and the
// file is rewritten atomically to hold exactly what is returned. No file: none.
std::vector<nlohmann::json> resume_jsonl(const std::string& path, int64_t keep);

class Fields {
 public:
  // `where` names the file and `path` the object inside it ("model", "train.schedule").
  Fields(const nlohmann::json& j, std::string where, std::string path);

  template <class T>
  T get(const std::string& key, const T& def) {
    seen_.insert(key);
    if (!j_.contains(key) || j_[key].is_null()) return def;
    return convert<T>(key);
  }
  template <class T>
  T req(const std::string& key) {
    seen_.insert(key);
    LCX_CHECK(j_.contains(key), where_, ": missing required field '", name(key), "'");
    return convert<T>(key);
  }
  bool has(const std::string& key) const { return j_.contains(key); }
  // A nested object (empty when absent).
  Fields sub(const std::string& key);
  nlohmann::json raw(const std::string& key);  // marks the key as seen
  // Throws on any field never read.
  void done() const;
  std::string name(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  const std::string& where() const { return where_; }
  // Range check with a message naming the field.
  template <class T>
  void check(bool ok, const std::string& key, const T& value, const std::string& rule) const {
    LCX_CHECK(ok, where_, ": field '", name(key), "' = ", value, " ", rule);
  }

 private:
  template <class T>
  T convert(const std::string& key) {
    const auto& v = j_[key];
    try {
      if constexpr (std::is_same_v<T, bool>) {
        LCX_CHECK(v.is_boolean(), "expected true/false");
      } else if constexpr (std::is_integral_v<T>) {
        LCX_CHECK(v.is_number_integer(), "expected an integer");
      } else if constexpr (std::is_floating_point_v<T>) {
        LCX_CHECK(v.is_number(), "expected a number");
      } else if constexpr (std::is_same_v<T, std::string>) {
        LCX_CHECK(v.is_string(), "expected a string");
      }
      return v.get<T>();
    } catch (const std::exception& e) {
      fail(where_, ": field '", name(key), "' has the wrong type (", e.what(), "), got ", v.dump());
    }
  }
  nlohmann::json j_;
  std::string where_, path_;
  std::set<std::string> seen_;
};

}  // namespace longctx
