// The layers of DESIGN.md import downward only: a file of src/<layer>/ includes headers of its
// own layer or of layers below it, never above (apps/ may include everything).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include "test_util.h"

namespace {

int rank_of(const std::string& layer) {
  static const std::map<std::string, int> rank = {
      {"util", 0}, {"io", 0}, {"text", 0}, {"nn", 1}, {"mixers", 2}, {"model", 3},
      {"train", 4}, {"infer", 4}, {"eval", 4}, {"search", 4}, {"serve", 5}};
  auto it = rank.find(layer);
  return it == rank.end() ? -1 : it->second;
}

}  // namespace

TEST(Layering, EveryIncludeInSrcPointsToTheSameLayerOrBelow) {
  namespace fs = std::filesystem;
  const std::regex inc("^#include \"([a-z_]+)/[^\"]+\"");
  int files = 0, includes = 0;
  std::vector<std::string> upward;
  for (auto& e : fs::recursive_directory_iterator(longctx::testing::source_dir() + "/src")) {
    auto ext = e.path().extension();
    if (ext != ".h" && ext != ".cpp") continue;
    auto rel = fs::relative(e.path(), longctx::testing::source_dir() + "/src").string();
    auto slash = rel.find('/');
    if (slash == std::string::npos) continue;  // pch.h
    const std::string layer = rel.substr(0, slash);
    const int mine = rank_of(layer);
    ASSERT_GE(mine, 0) << "src/" << layer << "/ is not a layer of DESIGN.md";
    ++files;
    std::ifstream in(e.path());
    for (std::string line; std::getline(in, line);) {
      std::smatch m;
      if (!std::regex_search(line, m, inc)) continue;
      const int theirs = rank_of(m[1]);
      if (theirs < 0) continue;  // a third-party or generated header
      ++includes;
      if (theirs > mine) upward.push_back("src/" + rel + " includes " + line.substr(9));
    }
  }
  EXPECT_GT(files, 50);
  EXPECT_GT(includes, 100);
  std::string all;
  for (auto& u : upward) all += "\n  " + u;
  EXPECT_TRUE(upward.empty()) << "includes pointing up a layer:" << all;
}
