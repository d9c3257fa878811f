// eval suite: several models measured the same way in one table (eval/suite.h).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "eval/suite.h"
#include "io/fs.h"
#include "io/json_file.h"
#include "model/pretrained.h"
#include "test_util.h"

namespace longctx {
namespace {

using longctx::testing::expect_error;
using longctx::testing::source_dir;
using longctx::testing::temp_dir;
using json = nlohmann::json;

// A model folder with random weights, bytes as tokens, trained context `seq_len`.
std::string make_folder(const std::string& dir, const json& mixer, int64_t seq_len = 64) {
  std::filesystem::create_directories(dir);
  json cfg = {{"model", {{"d_model", 32}, {"n_layers", 2}, {"n_heads", 2}, {"d_ff", 64}, {"mixer", mixer}}},
              {"tokenizer", {{"type", "byte"}}},
              {"data", {{"seq_len", seq_len}}}};
  write_file_atomic(dir + "/config.json", cfg.dump(2));
  torch::manual_seed(3);
  CausalLM m(ModelConfig::from_json(cfg["model"], dir + "/config.json"));
  save_weights(dir + "/model.safetensors", m);
  return dir;
}

SuiteOptions small_options(const std::string& out) {
  SuiteOptions o;
  o.passkey_lengths = {260, 300};
  o.depths = {0, 100};
  o.passkey_samples = 1;
  o.stream_tokens = 320;
  o.chunk = 64;
  o.seed = 4;
  o.out = out;
  o.ppl_bytes = 500;
  o.ppl_text = [](const std::string&) {
    std::string t;
    for (int i = 0; i < 40; ++i) t += "The quick brown fox jumps over the lazy dog. ";
    return t;
  };
  return o;
}

TEST(Suite, OneRowPerModelWithStateBesideFullAttentionsKvCache) {
  auto d = temp_dir("suite_rows");
  auto full = make_folder(d + "/full", {{"type", "full_attention"}}, 96);
  auto window = make_folder(d + "/window", {{"type", "sliding_window"}, {"window", 32}});
  auto o = small_options(d + "/out");
  auto rows = run_suite({full, window}, {}, o);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].label, "full");
  EXPECT_EQ(rows[1].label, "window");
  EXPECT_EQ(rows[0].mechanism, "full_attention");
  EXPECT_FALSE(rows[0].bounded);
  EXPECT_TRUE(rows[1].bounded);
  for (auto& r : rows) {
    // 2 x layers x d_model float32 values per token, the same for both rows.
    EXPECT_EQ(r.kv_bytes, 2 * 2 * 32 * 4 * 320);
    EXPECT_EQ(r.stream_tokens, 320);
    EXPECT_GT(r.stream_tokens_per_s, 0);
    EXPECT_GT(r.peak_rss_bytes, 0);
    EXPECT_GT(r.bits_per_byte, 0);
    EXPECT_EQ(r.passkey.size(), 2u);
    EXPECT_TRUE(r.ruler.empty());
  }
  // Full attention keeps that KV cache (plus a few bytes of position); the window at most its 32 positions.
  EXPECT_GE(rows[0].state_bytes, rows[0].kv_bytes);
  EXPECT_LE(rows[0].state_bytes, rows[0].kv_bytes + 1024);
  EXPECT_LE(rows[1].state_bytes, 2 * 2 * 32 * 4 * 32 + 1024);
  // The trained context of each folder: 96 and 64 tokens.
  EXPECT_EQ(rows[0].ppl_context, 96);
  EXPECT_EQ(rows[1].ppl_context, 64);
  // The accuracy per length is the tally of passkey.json's cells.
  for (auto& r : rows) {
    auto cells = read_json_file(o.out + "/" + r.label + "/passkey.json");
    ASSERT_EQ(cells.size(), 4u);
    std::map<int64_t, double> correct;
    for (auto& c : cells) correct[c["length"].get<int64_t>()] += c["correct"].get<double>();
    for (auto L : {260, 300}) EXPECT_DOUBLE_EQ(r.passkey.at(L), correct[L] / 2.0) << r.label << " " << L;
  }
  // Rows written as measured, and the table names every column.
  EXPECT_TRUE(std::filesystem::exists(o.out + "/rows/full.json"));
  auto md = suite_markdown(rows);
  for (auto s : {"| full | full_attention |", "| window | sliding_window |", "passkey 260", "passkey 300", "(grows)",
                 "(bounded)", "(96)"})
    EXPECT_NE(md.find(s), std::string::npos) << s << "\n" << md;
  auto svg = suite_heatmap(rows, "t");
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("passkey 300"), std::string::npos);
}

TEST(Suite, ARowMeasuredUnderTheSameSettingsIsReusedAndOtherSettingsMeasureAgain) {
  auto d = temp_dir("suite_resume");
  auto window = make_folder(d + "/w", {{"type", "sliding_window"}, {"window", 32}});
  auto o = small_options(d + "/out");
  o.passkey_lengths = {260};
  auto first = run_suite({window}, {"w"}, o);
  std::vector<std::string> lines;
  o.log = [&](const std::string& s) { lines.push_back(s); };
  auto again = run_suite({window}, {"w"}, o);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].to_json(), first[0].to_json());  // read back, not measured again
  ASSERT_FALSE(lines.empty());
  EXPECT_NE(lines[0].find("reused"), std::string::npos) << lines[0];
  lines.clear();
  o.passkey_samples = 2;
  auto other = run_suite({window}, {"w"}, o);
  for (auto& l : lines) EXPECT_EQ(l.find("reused"), std::string::npos) << l;
  EXPECT_NE(other[0].seconds, first[0].seconds);
}

TEST(Suite, RulerAverageIsRecordedPerLengthAndNotMeasuredIsNa) {
  auto d = temp_dir("suite_ruler");
  auto window = make_folder(d + "/w", {{"type", "sliding_window"}, {"window", 64}});
  auto o = small_options(d + "/out");
  o.passkey_lengths = {};
  o.ppl_text = nullptr;
  o.stream_tokens = -1;
  o.ruler_lengths = {1024};
  o.ruler_samples = 1;
  auto rows = run_suite({window}, {}, o);
  ASSERT_EQ(rows[0].ruler.size(), 1u);
  auto sum = read_json_file(o.out + "/w/ruler/summary.json");
  EXPECT_FALSE(sum.is_null());
  EXPECT_GE(rows[0].ruler.at(1024), 0.0);
  EXPECT_LE(rows[0].ruler.at(1024), 100.0);
  EXPECT_TRUE(std::isnan(rows[0].bits_per_byte));
  auto md = suite_markdown(rows);
  EXPECT_NE(md.find("RULER 1K"), std::string::npos) << md;
  EXPECT_NE(md.find("n/a"), std::string::npos) << md;
  // NaN survives the row file as null.
  auto back = SuiteRow::from_json(rows[0].to_json());
  EXPECT_TRUE(std::isnan(back.bits_per_byte));
}

TEST(Suite, TheCheckedInRetrievalModelFindsThePasskey) {
  // models/infini-passkey answers every passkey prompt at 4096 (docs/RESULTS.md); a short prompt
  // through the suite must score it so, or the suite's tally is wrong.
  auto model = source_dir() + "/models/infini-passkey";
  if (!std::filesystem::exists(model + "/model.safetensors")) GTEST_SKIP() << model << " not present";
  SuiteOptions o;
  o.passkey_lengths = {1024};
  o.depths = {0, 100};
  o.passkey_samples = 2;
  o.stream_tokens = 1024;
  o.seed = 11;
  o.out = temp_dir("suite_infini");
  auto rows = run_suite({model}, {}, o);
  EXPECT_DOUBLE_EQ(rows[0].passkey.at(1024), 1.0);
  EXPECT_TRUE(rows[0].bounded);
  EXPECT_LT(rows[0].state_bytes, rows[0].kv_bytes);
}

TEST(Suite, TheHeatmapsLeftMarginHoldsTheLongestModelName) {
  SuiteRow a, b;
  a.label = "m";
  b.label = "a-rather-long-model-name-of-forty-chars!";
  a.passkey[4096] = 1.0;
  b.passkey[4096] = 0.5;
  auto svg = suite_heatmap({a, b}, "t");
  // The cells start right of the labels' end anchor, which sits 8 px left of the first cell; the
  // label, about 7 px a character, must fit between the image's left edge and that anchor.
  auto at = svg.find("<rect x=\"", svg.find("</text>"));
  ASSERT_NE(at, std::string::npos);
  const int x = std::stoi(svg.substr(at + 9));
  EXPECT_GE(x - 8, 7 * int(b.label.size())) << svg;
}

TEST(Suite, BadInputIsRefusedBeforeAnythingRuns) {
  auto d = temp_dir("suite_bad");
  auto window = make_folder(d + "/w", {{"type", "sliding_window"}, {"window", 32}});
  auto o = small_options(d + "/out");
  expect_error([&] { run_suite({window, d + "/missing"}, {}, o); }, {d + "/missing", "no config.json"});
  EXPECT_FALSE(std::filesystem::exists(o.out + "/rows/w.json"));  // nothing measured
  expect_error([&] { run_suite({window, window}, {}, o); }, {"two models are labelled 'w'", "--labels"});
  expect_error([&] { run_suite({window}, {"a", "b"}, o); }, {"2 labels for 1 models"});
  o.ruler_lengths = {1024};
  o.ruler_tasks = {"niah_nope"};
  expect_error([&] { run_suite({window}, {}, o); }, {"niah_nope"});
  auto o2 = small_options(d + "/out2");
  o2.passkey_lengths = {100, 4096};
  expect_error([&] { run_suite({window}, {}, o2); }, {"passkey length 100 is shorter than", "/w's passkey prompt"});
  o2.passkey_samples = 0;
  expect_error([&] { run_suite({window}, {}, o2); }, {"passkey samples must be >= 1"});
  // A model without held-out text (as `--ppl-data val` for a folder without split.json) is refused
  // before the one listed first is measured.
  auto bare = make_folder(d + "/bare", {{"type", "sliding_window"}, {"window", 32}});
  auto o3 = small_options(d + "/out3");
  auto text = o3.ppl_text;
  o3.ppl_text = [text](const std::string& dir) {
    LCX_CHECK(std::filesystem::exists(dir + "/split.json"), "held-out text \"val\": ", dir, "/split.json not found");
    return text(dir);
  };
  write_file_atomic(window + "/split.json", "{}");
  expect_error([&] { run_suite({window, bare}, {}, o3); }, {bare + "/split.json not found"});
  EXPECT_FALSE(std::filesystem::exists(o3.out + "/rows/w.json"));
}

}  // namespace
}  // namespace longctx
