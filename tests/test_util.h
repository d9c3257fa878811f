#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "eval/ruler.h"
#include "text/corpus.h"
#include "util/error.h"

namespace longctx::testing {

inline std::string source_dir() {
#ifdef LONGCTX_SOURCE_DIR
  return LONGCTX_SOURCE_DIR;
#else
  return ".";
#endif
}

// A fresh temporary folder per test.
inline std::string temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("longctx_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

// Expects `f` to throw longctx::Error whose message contains every needle.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    std::string m = e.what();
    for (auto& n : needles) EXPECT_NE(m.find(n), std::string::npos) << "message: " << m << "\nmissing: " << n;
  }
}

// A token stream of 'a'..'z' repeated (n tokens): text rows whose every token is known.
inline TokenStream letter_stream(int n = 20000) {
  TokenStream text;
  for (int i = 0; i < n; ++i) text.tokens.push_back('a' + i % 26);
  text.bytes = n;
  return text;
}

// RULER's resources with the QA fixtures of tests/fixtures/ruler (loaded once).
inline const ruler::Resources& ruler_fixture_resources() {
  static const ruler::Resources R = ruler::Resources::load(source_dir() + "/tests/fixtures/ruler/squad_v2_small.json",
                                                           source_dir() + "/tests/fixtures/ruler/hotpotqa_small.json");
  return R;
}

}  // namespace longctx::testing
