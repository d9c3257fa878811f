// The RULER task mixture for training (data.ruler): reference answers that score 100 with the
// task's own metric, which tasks fit a budget, and the training rows themselves (prompt
// unweighted, answer weighted, the prompt within the drawn budget, determinism).
#include <cmath>
#include <filesystem>
#include <regex>

#include "eval/ruler.h"
#include "io/fs.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "train/config.h"
#include "train/data.h"

using namespace longctx;
using namespace longctx::testing;
namespace r = longctx::ruler;

namespace {
const r::Resources& res() { return ruler_fixture_resources(); }
TokenStream letters() { return letter_stream(); }
}  // namespace

TEST(RulerMix, ReferenceAnswerScoresFullMarksAndFollowsTheWorkedExamplesFormat) {
  for (auto& task : r::tasks()) {
    for (int64_t i = 0; i < 3; ++i) {
      auto s = r::build(task, task == "fwe" ? 200 : 3, res(), 21, i);
      auto a = r::reference_answer(s);
      EXPECT_EQ(r::score(task, a, s.outputs), 100.0) << task << ": " << a;
      EXPECT_EQ(a.find('\n'), std::string::npos) << task;
      // The prompt ends with the answer prefix; a prefix ending in a space takes a bare answer.
      EXPECT_EQ(a.empty() || a[0] == ' ', s.answer_prefix.back() != ' ') << task << ": '" << a << "'";
    }
  }
  auto one = r::build("niah_single_1", 4, res(), 3, 0);
  EXPECT_EQ(r::reference_answer(one), " " + one.outputs[0] + ".");
  auto four = r::build("niah_multivalue", 4, res(), 3, 0);
  ASSERT_EQ(four.outputs.size(), 4u);
  EXPECT_EQ(r::reference_answer(four),
            " " + four.outputs[0] + ", " + four.outputs[1] + ", " + four.outputs[2] + ", " + four.outputs[3] + ".");
  auto vt = r::build("vt", 4, res(), 3, 0);
  EXPECT_TRUE(std::regex_match(r::reference_answer(vt), std::regex("[A-Z]{5}( [A-Z]{5}){4}")));
  auto cwe = r::build("cwe", 10, res(), 3, 0);
  EXPECT_TRUE(std::regex_match(r::reference_answer(cwe), std::regex("( ([1-9]|10)\\. [^ ]+){10}")));
  EXPECT_EQ(r::reference_answer(cwe).substr(0, 4 + cwe.outputs[0].size()), " 1. " + cwe.outputs[0]);
}

TEST(RulerMix, MixtureLeavesOutQaWithoutFilesAndTasksLongerThanTheBudget) {
  ByteTokenizer tok;
  r::Resources no_qa = res();
  no_qa.squad = {};
  no_qa.hotpotqa = {};
  std::vector<std::string> why;
  auto tasks = r::mixture_tasks({}, 2048, tok, no_qa, &why);
  EXPECT_EQ(tasks.size(), 10u) << "13 less the two QA tasks and cwe (about 5K bytes)";
  EXPECT_EQ(std::count(tasks.begin(), tasks.end(), "cwe"), 0);
  ASSERT_EQ(why.size(), 3u);
  EXPECT_NE(why[0].find("cwe: its smallest sample needs"), std::string::npos) << why[0];
  EXPECT_NE(why[1].find("qa_1: no SQuAD v2 file given"), std::string::npos) << why[1];
  EXPECT_NE(why[2].find("qa_2: no HotpotQA file given"), std::string::npos) << why[2];
  // The smallest budget is exact: the task fits there and not one token below.
  const int64_t m = r::min_length("niah_single_1", tok, res());
  EXPECT_NO_THROW(r::generate("niah_single_1", m, tok, res(), 0, 0));
  expect_error([&] { r::generate("niah_single_1", m - 1, tok, res(), 0, 0); }, {"niah_single_1", "does not fit"});
  EXPECT_EQ(r::mixture_tasks({"vt", "qa_1"}, 2048, tok, res(), nullptr), (std::vector<std::string>{"vt", "qa_1"}));
  EXPECT_EQ(r::mixture_tasks({}, 8192, tok, res(), nullptr).size(), 13u);
  expect_error([&] { r::mixture_tasks({"niah_single_9"}, 1024, tok, res(), nullptr); }, {"niah_single_9", "unknown task"});
}

TEST(RulerMix, TrainingRowsWeighTheAnswerNotThePromptAndFitTheDrawnBudget) {
  ByteTokenizer tok;
  TokenStream text = letters();
  DataConfig d;
  d.seq_len = 1600;  // vt needs about 1.4K bytes
  d.ruler.fraction = 1.0;
  d.ruler.min_length = 300;
  d.ruler.max_length = 1600;
  d.ruler.answer_weight = 5;
  TrainBatches tb(d, text, tok, 4, 7);
  EXPECT_EQ(tb.ruler_tasks().size(), 10u);
  std::set<std::string> seen;
  const std::vector<std::string> prefixes = {" mentioned in the provided text is", " mentioned in the provided text are",
                                             "they are: ", "appeared words are:"};
  for (int64_t step = 0; step < 6; ++step) {
    auto b = tb.get(step, 0), again = tb.get(step, 0);
    EXPECT_TRUE(torch::equal(b.x, again.x) && torch::equal(b.w, again.w)) << "a batch depends on (seed, step, micro)";
    for (int64_t row = 0; row < 4; ++row) {
      std::vector<int64_t> ids(b.x[row].data_ptr<int64_t>(), b.x[row].data_ptr<int64_t>() + 1600);
      ids.push_back(b.y[row][1599].item<int64_t>());
      const std::string s = tok.decode(ids);
      // The answer: the tokens of weight 5, right after the prefix, then a newline of weight 1.
      int64_t a0 = -1, a1 = -1;
      for (int64_t t = 0; t < 1600; ++t) {
        float w = b.w[row][t].item<float>();
        if (w == 5.f && a0 < 0) a0 = t + 1;  // w[t] weighs the target at x index t + 1
        if (w == 5.f) a1 = t + 2;
        if (a0 < 0) {
          EXPECT_EQ(w, 0.f) << "the prompt carries no loss (step " << step << ", row " << row << ")";
        }
      }
      ASSERT_GT(a0, 0) << s;
      EXPECT_EQ(s[a1], '\n');
      EXPECT_EQ(b.w[row][a1 - 1].item<float>(), 1.f);
      const std::string prompt = s.substr(0, a0), answer = s.substr(a0, a1 - a0);
      EXPECT_LE(a0 + 30, 1600) << "prompt + the task's tokens to generate (>= 30) fit max_length";
      bool prefixed = false;
      for (auto& p : prefixes) prefixed |= prompt.size() >= p.size() && prompt.substr(prompt.size() - p.size()) == p;
      EXPECT_TRUE(prefixed) << prompt.substr(prompt.size() - 60);
      // Needle tasks: the answer holds the asked key's value, read back from the needle.
      std::smatch m;
      if (std::regex_search(prompt, m, std::regex("What is the special magic (number|uuid) for ([^ ]+) mentioned"))) {
        std::smatch v;
        ASSERT_TRUE(std::regex_search(prompt, v, std::regex("One of the special magic " + m[1].str() + "s for " +
                                                              m[2].str() + " is: ([^ \n]+)\\."))) << prompt;
        EXPECT_EQ(answer, " " + v[1].str() + ".");
        seen.insert(prompt.find("The grass is green") != std::string::npos ? "noise" : "other");
      } else if (prompt.find("VAR ") != std::string::npos) {
        EXPECT_TRUE(std::regex_match(answer, std::regex("[A-Z]{5}( [A-Z]{5}){4}"))) << answer;
        seen.insert("vt");
      } else {
        seen.insert("rest");
      }
    }
  }
  EXPECT_GE(seen.size(), 3u) << "24 rows draw several kinds of task";
}

TEST(RulerMix, ConfigErrorsNameTheField) {
  auto j = nlohmann::json::parse(R"({"model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "mixer": {"type": "full_attention"}},
      "tokenizer": {"type": "byte"}, "data": {"seq_len": 512, "ruler": {"fraction": 0.5}}, "train": {"steps": 3}})");
  auto c = RunConfig::from_json(j, "c.json");
  EXPECT_EQ(c.data.ruler.max_length, 512);
  EXPECT_EQ(RunConfig::from_json(c.to_json(), "c2.json").to_json().dump(), c.to_json().dump());
  j["data"]["ruler"]["max_length"] = 600;
  expect_error([&] { RunConfig::from_json(j, "c.json"); }, {"c.json", "data.ruler.max_length", "seq_len"});
  j["data"]["ruler"]["max_length"] = 512;
  j["data"]["passkey"] = {{"fraction", 0.7}};
  expect_error([&] { RunConfig::from_json(j, "c.json"); }, {"data.ruler.fraction", "data.passkey.fraction"});
  j["data"].erase("passkey");
  j["data"]["ruler"]["tasks"] = {"vt", "niah_single_9"};
  DataConfig d = RunConfig::from_json(j, "c.json").data;
  ByteTokenizer tok;
  TokenStream text = letters();
  expect_error([&] { TrainBatches(d, text, tok, 2, 0); }, {"data.ruler.tasks", "niah_single_9"});
}

namespace {
// Answers the needle tasks by reading the prompt (the asked key's value), nothing else.
class NeedleReader : public r::Completer {
 public:
  const Tokenizer& tokenizer() const override { return tok_; }
  std::string name() const override { return "needle-reader"; }
  std::string complete(const std::string& p, int64_t) override {
    std::smatch m, v;
    if (std::regex_search(p, m, std::regex("What is the special magic number for ([^ ]+) mentioned")) &&
        std::regex_search(p, v, std::regex("magic numbers for " + m[1].str() + " is: ([0-9]+)\\.")))
      return " " + v[1].str() + ".";
    return "";
  }

 private:
  ByteTokenizer tok_;
};
}  // namespace

TEST(RulerRun, ATaskLongerThanALengthIsNotRunThereAndLeftOutOfItsAverage) {
  NeedleReader reader;
  r::RunOptions o;
  o.tasks = {"niah_single_1", "cwe"};
  o.lengths = {4096, 8192};
  o.samples = 2;
  o.out = temp_dir("ruler_nofit");
  auto sum = r::run(reader, res(), o);
  EXPECT_EQ(sum.score["niah_single_1"][4096], 100.0);
  EXPECT_TRUE(std::isnan(sum.score["cwe"][4096])) << "cwe needs about 5.3K byte tokens";
  EXPECT_EQ(sum.average[4096], 100.0) << "the average of the tasks that ran";
  EXPECT_EQ(sum.score["cwe"][8192], 0.0);
  EXPECT_EQ(sum.average[8192], 50.0);
  EXPECT_FALSE(std::filesystem::exists(o.out + "/4096/cwe.jsonl"));
  auto j = nlohmann::json::parse(read_file(o.out + "/summary.json"));
  EXPECT_TRUE(j["scores"]["cwe"]["4096"].is_null());
  EXPECT_EQ(j["average"]["4096"].get<double>(), 100.0);
  EXPECT_NE(read_file(o.out + "/summary.csv").find("cwe,4096,n/a,2,"), std::string::npos);
}
