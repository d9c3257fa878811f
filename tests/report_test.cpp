// `longctx compare`: curves read from run folders and eval ppl JSON, tabulated.
#include <fstream>

#include "eval/report.h"
#include "io/fs.h"
#include "test_util.h"

using namespace longctx;
using namespace longctx::testing;

TEST(Report, RunCurvesPutTheMetricAgainstTrainingTokens) {
  auto d = temp_dir("report_run");
  write_file_atomic(d + "/config.json", R"({"train": {"batch_size": 4, "grad_accum": 2}, "data": {"seq_len": 100}})");
  write_file_atomic(d + "/log.jsonl",
                    "{\"step\": 10, \"loss\": 2.5}\n{\"step\": 20, \"val_bpb\": 1.75}\n{\"step\": 30, \"val_bpb\": 1.5}\n");
  auto s = run_curves({d}, {"mine"}, "val_bpb");
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].label, "mine");
  ASSERT_EQ(s[0].points.size(), 2u);
  EXPECT_EQ(s[0].points[0], std::make_pair(16000.0, 1.75));  // 20 steps x 800 tokens
  auto t = markdown_table(s, "tokens");
  EXPECT_NE(t.find("| 24000 | 1.5000 |"), std::string::npos) << t;
  EXPECT_NE(markdown_table(s, "tokens", 1).find("| 24000 | 1.5 |"), std::string::npos);
  expect_error([&] { run_curves({d}, {}, "val_loss"); }, {"log.jsonl", "val_loss"});
  expect_error([&] { run_curves({d + "/nope"}, {}, "val_bpb"); }, {"nope", "config.json"});
}

TEST(Report, PplCurvesCountTheWholeDocumentAsItsTokens) {
  auto d = temp_dir("report_ppl");
  write_file_atomic(d + "/a.json", R"({"model": "models/x", "results": [
      {"context": 1024, "bits_per_byte": 2.0, "tokens_scored": 5000},
      {"context": 0, "bits_per_byte": 1.8, "tokens_scored": 9999}]})");
  auto s = ppl_curves({d + "/a.json"}, {});
  ASSERT_EQ(s[0].points.size(), 2u);
  EXPECT_EQ(s[0].label, "x");
  EXPECT_EQ(s[0].points[1].first, 10000.0);
  write_file_atomic(d + "/b.json", R"({"model": "m"})");
  expect_error([&] { ppl_curves({d + "/b.json"}, {}); }, {"b.json", "results"});
}

TEST(Report, PplSeriesJoinedByPlusTakesEveryFileSortedByContext) {
  auto d = temp_dir("report_ppl_join");
  write_file_atomic(d + "/m-2.json", R"({"model": "m", "results": [{"context": 256, "bits_per_byte": 2.5}]})");
  write_file_atomic(d + "/m-1.json", R"({"model": "m", "results": [{"context": 128, "bits_per_byte": 2.0}]})");
  auto s = ppl_curves({d + "/m-2.json+" + d + "/m-1.json", d + "/m-1.json"}, {"joined"});
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].label, "joined");
  ASSERT_EQ(s[0].points.size(), 2u);
  EXPECT_EQ(s[0].points[0], std::make_pair(128.0, 2.0));
  EXPECT_EQ(s[0].points[1], std::make_pair(256.0, 2.5));
  EXPECT_EQ(s[1].points.size(), 1u);
  expect_error([&] { ppl_curves({d + "/m-1.json+" + d + "/missing.json"}, {}); }, {"missing.json"});
}

TEST(Report, RulerTableHasOneRowPerModelAndDashesWhereALengthWasNotRun) {
  auto d = temp_dir("report_ruler");
  std::filesystem::create_directories(d + "/a");
  std::filesystem::create_directories(d + "/b");
  write_file_atomic(d + "/a/summary.json", R"({"target": "a", "effective_length": 8192,
      "average": {"4096": 90.0, "8192": 87.25, "16384": 10.0}})");
  write_file_atomic(d + "/b/summary.json", R"({"target": "b", "effective_length": 0,
      "average": {"4096": 12.5, "8192": null}})");
  auto rows = ruler_rows({d + "/a", d + "/b"}, {"", "swa"});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].label, "a");
  EXPECT_EQ(rows[1].label, "swa");
  EXPECT_EQ(ruler_markdown(rows),
            "| model | 4K | 8K | 16K | effective length |\n|---|---|---|---|---|\n"
            "| a | 90.0 | 87.2 | 10.0 | 8K |\n| swa | 12.5 | - | - | < 4K |\n");
  auto svg = ruler_heatmap(rows, "t");
  EXPECT_NE(svg.find("n/a"), std::string::npos) << "cells not run are grey";
  expect_error([&] { ruler_rows({d + "/none"}, {}); }, {"none/summary.json", "longctx ruler"});
}

TEST(Report, LitmCurvesHaveOneSeriesPerSizeWithOneBasedPositions) {
  auto d = temp_dir("report_litm");
  write_file_atomic(d + "/summary.json", R"({"target": "m", "setup": "kv",
      "accuracy": {"75": {"0": 50.0, "74": 100.0, "37": 25.0}, "140": {"0": 10.0}}})");
  auto s = litm_curves({d}, {});
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[1].label, "m, 75 pairs");
  EXPECT_EQ(s[1].points, (std::vector<std::pair<double, double>>{{1, 50}, {38, 25}, {75, 100}}));
  EXPECT_EQ(litm_curves({d}, {}, 140).size(), 1u);
}
