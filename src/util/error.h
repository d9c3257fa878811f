// Errors: thrown inside with a message naming the file, field and value; translated once at
// the CLI or API boundary.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace longctx {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... A>
std::string concat(const A&... a) {
  std::ostringstream os;
  (os << ... << a);
  return os.str();
}
}  // namespace detail

template <class... A>
[[noreturn]] void fail(const A&... a) {
  throw Error(detail::concat(a...));
}

}  // namespace longctx

// LCX_CHECK(cond, "file ", path, ": field 'x' must be > 0, got ", x)
#define LCX_CHECK(cond, ...)                                   \
  do {                                                         \
    if (!(cond)) ::longctx::fail(__VA_ARGS__);                 \
  } while (0)
