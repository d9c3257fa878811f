// Config fields declared once. A config struct lists its fields in one member template,
//
//   template <class V> void visit(V& v) {
//     v("steps", steps, "optimizer steps", at_least<int64_t>(1));
//     v.object("selective", selective, "RHO-1 selective language modeling", [](auto& s) { return s.enabled(); });
//   }
//
// and every use walks that list: reading JSON (types and rules checked, unknown fields refused
// by name), writing it, listing the fields for --help, and checking a --set path names a field.
// Rules that tie fields together stay in the reader's caller. Like gemma.cpp's VisitFields.
#pragma once
#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "io/json_fields.h"

namespace longctx {

template <class T>
struct Rule {
  std::function<bool(const T&)> ok;
  std::string text;  // what the value must be: "must be >= 1"
};

namespace detail {
template <class T>
std::string show(const T& x) {
  std::ostringstream s;
  s << x;
  return s.str();
}
}  // namespace detail

template <class T>
Rule<T> at_least(T lo, std::string note = "") {
  return {[lo](const T& x) { return x >= lo; }, "must be >= " + detail::show(lo) + note};
}
template <class T>
Rule<T> above(T lo, std::string note = "") {
  return {[lo](const T& x) { return x > lo; }, "must be > " + detail::show(lo) + note};
}
template <class T>
Rule<T> within(T lo, T hi) {
  return {[lo, hi](const T& x) { return x >= lo && x <= hi; },
          "must be in [" + detail::show(lo) + ", " + detail::show(hi) + "]"};
}
inline Rule<std::string> one_of(std::vector<std::string> allowed) {
  std::string text = "must be one of";
  for (size_t i = 0; i < allowed.size(); ++i) text += (i ? ", " : " ") + allowed[i];
  return {[allowed](const std::string& x) { return std::find(allowed.begin(), allowed.end(), x) != allowed.end(); },
          text};
}

// How a field is written: always, or only when it differs from its default.
enum class Write { always, unless_default };

// Reads a struct's fields from a JSON object through Fields: each present field converted
// (its type checked) and its rule checked; absent ones keep the struct's default.
class ConfigReader {
 public:
  explicit ConfigReader(Fields& f) : f_(f) {}
  template <class T>
  void operator()(const char* name, T& field, const char* help, Rule<T> rule = {}, Write = Write::always) {
    (void)help;
    field = f_.get<T>(name, field);
    if (rule.ok) f_.check(rule.ok(field), name, show(field), rule.text);
  }
  template <class T>
  void operator()(const char* name, T& field, const char* help, Write w) {
    (*this)(name, field, help, Rule<T>{}, w);
  }
  // A nested object: read when present (absent: its defaults).
  template <class T, class P = std::nullptr_t>
  void object(const char* name, T& field, const char* help, P when = nullptr) {
    (void)help, (void)when;
    if (!f_.has(name)) {
      f_.raw(name);
      return;
    }
    auto g = f_.sub(name);
    ConfigReader r(g);
    field.visit(r);
    g.done();
  }
  // An array of objects.
  template <class T>
  void list(const char* name, std::vector<T>& field, const char* help) {
    (void)help;
    auto arr = f_.raw(name);
    if (arr.is_null()) return;
    LCX_CHECK(arr.is_array(), f_.where(), ": field '", f_.name(name), "' must be an array");
    field.clear();
    for (size_t i = 0; i < arr.size(); ++i) {
      Fields g(arr[i], f_.where(), f_.name(name) + "[" + std::to_string(i) + "]");
      T item;
      ConfigReader r(g);
      item.visit(r);
      g.done();
      field.push_back(item);
    }
  }

 private:
  template <class T>
  static std::string show(const T& x) {
    if constexpr (std::is_same_v<T, std::string>) return "\"" + x + "\"";
    else if constexpr (std::is_arithmetic_v<T>) return detail::show(x);
    else return nlohmann::json(x).dump();
  }
  Fields& f_;
};

// Writes a struct's fields as JSON.
class ConfigWriter {
 public:
  explicit ConfigWriter(nlohmann::json& j) : j_(j) {}
  template <class T>
  void operator()(const char* name, const T& field, const char* help, Rule<T> = {}, Write w = Write::always) {
    (void)help;
    if (w == Write::unless_default && nlohmann::json(field) == default_of(name)) return;
    j_[name] = field;
  }
  template <class T>
  void operator()(const char* name, const T& field, const char* help, Write w) {
    (*this)(name, field, help, Rule<T>{}, w);
  }
  // Written when `when(field)` holds (no predicate: always).
  template <class T, class P = std::nullptr_t>
  void object(const char* name, const T& field, const char* help, P when = nullptr) {
    (void)help;
    if constexpr (!std::is_same_v<P, std::nullptr_t>)
      if (!when(field)) return;
    j_[name] = write(field);
  }
  template <class T>
  void list(const char* name, const std::vector<T>& field, const char* help) {
    (void)help;
    auto arr = nlohmann::json::array();
    for (auto& item : field) arr.push_back(write(item));
    j_[name] = arr;
  }
  // `c` as JSON; Write::unless_default fields are left out when equal to T{}'s.
  template <class T>
  static nlohmann::json write(const T& c) {
    nlohmann::json defaults = nlohmann::json::object();
    {
      ConfigWriter d(defaults);
      T().visit(d);
    }
    nlohmann::json j = nlohmann::json::object();
    ConfigWriter w(j);
    w.defaults_ = defaults;
    const_cast<T&>(c).visit(w);
    return j;
  }

 private:
  nlohmann::json default_of(const char* name) const {
    return defaults_.contains(name) ? defaults_[name] : nlohmann::json();
  }
  nlohmann::json& j_;
  nlohmann::json defaults_ = nlohmann::json::object();
};

// One line per field: its dotted path, default and help (the defaults of a default struct).
struct FieldDoc {
  std::string path, type, value, help, rule;
};

class ConfigLister {
 public:
  ConfigLister(std::vector<FieldDoc>& out, std::string prefix) : out_(out), prefix_(std::move(prefix)) {}
  template <class T>
  void operator()(const char* name, const T& field, const char* help, Rule<T> rule = {}, Write = Write::always) {
    out_.push_back({path(name), type_name<T>(), nlohmann::json(field).dump(), help, rule.text});
  }
  template <class T>
  void operator()(const char* name, const T& field, const char* help, Write w) {
    (*this)(name, field, help, Rule<T>{}, w);
  }
  template <class T, class P = std::nullptr_t>
  void object(const char* name, const T& field, const char* help, P = nullptr) {
    out_.push_back({path(name), "object", "", help, ""});
    ConfigLister l(out_, path(name));
    const_cast<T&>(field).visit(l);
  }
  template <class T>
  void list(const char* name, const std::vector<T>& field, const char* help) {
    out_.push_back({path(name), "array", "[]", help, ""});
    T item;
    ConfigLister l(out_, path(name) + "[]");
    item.visit(l);
  }

 private:
  std::string path(const char* name) const { return prefix_.empty() ? name : prefix_ + "." + name; }
  template <class T>
  static std::string type_name() {
    if constexpr (std::is_same_v<T, bool>) return "bool";
    else if constexpr (std::is_integral_v<T>) return "integer";
    else if constexpr (std::is_floating_point_v<T>) return "number";
    else if constexpr (std::is_same_v<T, std::string>) return "string";
    else return "json";
  }
  std::vector<FieldDoc>& out_;
  std::string prefix_;
};

// Reads `T` from the object `f` (every field declared by T::visit; others refused by name).
template <class T>
T read_config(Fields& f, T c = T{}) {
  ConfigReader r(f);
  c.visit(r);
  f.done();
  return c;
}

// Writes `c`; Write::unless_default fields are left out when equal to T{}'s.
template <class T>
nlohmann::json write_config(const T& c) {
  return ConfigWriter::write(c);
}

template <class T>
std::vector<FieldDoc> list_config(const std::string& prefix) {
  std::vector<FieldDoc> v;
  ConfigLister l(v, prefix);
  T().visit(l);
  return v;
}

// Throws unless `path` (a --set path: "train.lr", "train.param_groups[0].match") names a field
// of `docs`, naming the fields beside it; paths under a prefix of `free` belong to another parser.
inline void check_field_path(const std::string& path, const std::vector<FieldDoc>& docs,
                             const std::vector<std::string>& free) {
  for (auto& f : free)
    if (path.rfind(f, 0) == 0) return;
  std::string generic;  // param_groups[3].match -> param_groups[].match
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '[') {
      generic += "[]";
      while (i < path.size() && path[i] != ']') ++i;
    } else {
      generic += path[i];
    }
  }
  std::vector<std::string> near;
  const std::string parent = generic.substr(0, generic.rfind('.') == std::string::npos ? 0 : generic.rfind('.'));
  for (auto& d : docs) {
    if (d.path == generic) return;
    if (!parent.empty() && d.path.rfind(parent + ".", 0) == 0 && d.path.find('.', parent.size() + 1) == std::string::npos)
      near.push_back(d.path);
  }
  std::string hint;
  for (size_t i = 0; i < near.size() && i < 40; ++i) hint += (i ? ", " : "") + near[i];
  fail("--set ", path, ": no such config field", hint.empty() ? std::string() : " (" + parent + " has: " + hint + ")",
       "; `longctx train --help` lists every field");
}

}  // namespace longctx
