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
