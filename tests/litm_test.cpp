// Lost in the middle: the paper's prompts byte for byte, the gold positions, the samples (gold
// where asked, answerable by exactly one record or document), the scoring, and a resumable run
// against a target that solves the task by reading the prompt.
#include <fstream>
#include <regex>
#include <set>

#include "eval/litm.h"
#include "io/fs.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "train/data.h"

using namespace longctx;
using namespace longctx::testing;

namespace {

int64_t count(const std::string& hay, const std::string& needle) {
  int64_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

// A target that answers by reading the prompt: the value of the asked key (kv), the title of the
// one document holding the quote (qa). It solves every sample, so any miss is the harness's.
class Reader : public ruler::Completer {
 public:
  const Tokenizer& tokenizer() const override { return tok_; }
  std::string name() const override { return "reader"; }
  std::string complete(const std::string& p, int64_t max_tokens) override {
    ++calls;
    std::smatch m;
    if (std::regex_search(p, m, std::regex("Key: \"([0-9a-f-]+)\"\nCorresponding value:$"))) {
      auto at = p.find("\"" + m[1].str() + "\": \"");
      return " " + p.substr(at + m[1].length() + 5, 36);
    }
    if (std::regex_search(p, m, std::regex("says \"([^\"]+)\"\\?\nAnswer:$"))) {
      auto at = p.find(m[1].str());
      auto doc = p.rfind("(Title: ", at);
      auto title = p.substr(doc + 8, p.find(')', doc) - doc - 8);
      return " " + title.substr(title.find(", ") + 2) + ".";
    }
    return " I do not know.";
  }
  int64_t calls = 0;

 private:
  ByteTokenizer tok_;
};

}  // namespace

TEST(Litm, PromptsAreThePapersByteForByte) {
  EXPECT_EQ(litm::kv_prompt({{"k1", "v1"}, {"k2", "v2"}, {"k3", "v3"}}, "k2"),
            "Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n"
            "{\"k1\": \"v1\",\n \"k2\": \"v2\",\n \"k3\": \"v3\"}\n\nKey: \"k2\"\nCorresponding value:");
  EXPECT_EQ(litm::qa_prompt("who?", {{"T1", "one."}, {"T2", "two."}}),
            "Write a high-quality answer for the given question using only the provided search results (some of "
            "which might be irrelevant).\n\nDocument [1](Title: T1) one.\nDocument [2](Title: T2) two.\n\n"
            "Question: who?\nAnswer:");
  expect_error([] { litm::kv_prompt({{"k", "v"}}, "k"); }, {"at least 2 records"});
}

TEST(Litm, GoldPositionsAreThePapers) {
  EXPECT_EQ(litm::qa_positions(10), (std::vector<int64_t>{0, 4, 9}));
  EXPECT_EQ(litm::qa_positions(20), (std::vector<int64_t>{0, 4, 9, 14, 19}));
  EXPECT_EQ(litm::qa_positions(30), (std::vector<int64_t>{0, 4, 9, 14, 19, 24, 29}));
  EXPECT_EQ(litm::kv_positions(75), (std::vector<int64_t>{0, 19, 37, 56, 74}));
  EXPECT_EQ(litm::kv_positions(300, 7), (std::vector<int64_t>{0, 50, 100, 150, 199, 249, 299}));
  EXPECT_EQ(litm::kv_positions(3, 5), (std::vector<int64_t>{0, 1, 2})) << "no position twice";
}

TEST(Litm, KeyValueSamplesHoldDistinctUuidsWithTheGoldAtItsIndex) {
  const std::regex uuid("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
  for (int64_t gold : {0, 37, 74}) {
    auto s = litm::kv_sample(75, gold, 3, 1);
    std::regex rec("[{ ]\"([0-9a-f-]{36})\": \"([0-9a-f-]{36})\"[,}]");
    std::vector<std::pair<std::string, std::string>> recs;
    for (std::sregex_iterator it(s.prompt.begin(), s.prompt.end(), rec), end; it != end; ++it)
      recs.push_back({(*it)[1], (*it)[2]});
    ASSERT_EQ(recs.size(), 75u);
    std::set<std::string> keys;
    for (auto& [k, v] : recs) {
      keys.insert(k);
      EXPECT_TRUE(std::regex_match(k, uuid) && std::regex_match(v, uuid)) << k << " " << v;
    }
    EXPECT_EQ(keys.size(), 75u);
    EXPECT_NE(s.prompt.find("Key: \"" + recs[gold].first + "\"\nCorresponding value:"), std::string::npos);
    EXPECT_EQ(s.outputs, (std::vector<std::string>{recs[gold].second}));
    EXPECT_EQ(litm::kv_sample(75, gold, 3, 1).prompt, s.prompt) << "reproducible";
    EXPECT_NE(litm::kv_sample(75, gold, 3, 2).prompt, s.prompt);
  }
}

TEST(Litm, QaSamplesHaveOneAnsweringDocumentAtTheGoldIndex) {
  auto passages = litm::sotu_passages();
  EXPECT_GT(passages.size(), 10000u);
  EXPECT_EQ(passages[0].title, "1790 State of the Union, George Washington");
  for (int64_t gold : litm::qa_positions(20)) {
    auto s = litm::qa_sample(passages, 20, gold, 5, 0);
    EXPECT_EQ(count(s.prompt, "Document ["), 20);
    std::smatch q;
    ASSERT_TRUE(std::regex_search(s.prompt, q, std::regex("says \"([^\"]+)\"\\?\nAnswer:$")));
    EXPECT_EQ(count(s.prompt, q[1].str()), 2) << "the quote: in the question and in one document";
    // The document holding the quote is the gold one, and only its president answers.
    auto at = s.prompt.find(q[1].str());
    auto doc = s.prompt.rfind("Document [", at);
    EXPECT_EQ(s.prompt.substr(doc, 12 + (gold + 1 >= 10)), "Document [" + std::to_string(gold + 1) + "]");
    ASSERT_EQ(s.outputs.size(), 2u);
    EXPECT_EQ(count(s.prompt, ", " + s.outputs[0] + ")"), 1) << s.outputs[0];
  }
  auto mid = litm::qa_sample(passages, 10, 4, 5, 0);
  EXPECT_EQ(litm::qa_sample(passages, 10, 4, 5, 0).prompt, mid.prompt);
}

TEST(Litm, ScoringNormalizesLikeThePaper) {
  litm::Sample qa;
  qa.setup = "qa";
  qa.outputs = {"Franklin D. Roosevelt", "Roosevelt"};
  EXPECT_TRUE(litm::correct(qa, " It was Franklin D Roosevelt."));
  EXPECT_TRUE(litm::correct(qa, "ROOSEVELT"));
  EXPECT_FALSE(litm::correct(qa, " Rooseveltian"));
  EXPECT_FALSE(litm::correct(qa, ""));
  EXPECT_EQ(litm::normalize("  The  Answer, an apple!"), "answer apple");
  litm::Sample kv;
  kv.setup = "kv";
  kv.outputs = {"0a1b-c"};
  EXPECT_TRUE(litm::correct(kv, " \"0a1b-c\""));
  EXPECT_FALSE(litm::correct(kv, " 0A1B-C")) << "uuids are matched exactly";
}

TEST(Litm, RunWritesTheCurveAndContinuesWhereItStopped) {
  Reader reader;
  litm::RunOptions o;
  o.setup = "kv";
  o.sizes = {10, 20};
  o.positions = 3;
  o.samples = 2;
  o.out = temp_dir("litm_run");
  auto sum = litm::run(reader, o);
  EXPECT_EQ(reader.calls, 2 * 3 * 2);
  for (int64_t n : {10, 20})
    for (auto& [g, acc] : sum.accuracy[n]) EXPECT_EQ(acc, 100.0) << n << " gold " << g;
  EXPECT_EQ(sum.accuracy[10].size(), 3u);
  EXPECT_GT(sum.prompt_tokens[20], sum.prompt_tokens[10]);
  // Rerun complete: nothing is asked again, and the prompt lengths come from the files.
  auto again = litm::run(reader, o);
  EXPECT_EQ(reader.calls, 2 * 3 * 2);
  EXPECT_EQ(again.prompt_tokens, sum.prompt_tokens);
  EXPECT_EQ(again.accuracy, sum.accuracy);
  EXPECT_NE(read_file(o.out + "/kv-10/gold-0.jsonl").find("\"prompt_tokens\":"), std::string::npos);
  o.samples = 3;  // one more sample per point: only those are run
  litm::run(reader, o);
  EXPECT_EQ(reader.calls, 2 * 3 * 3);
  auto csv = read_file(o.out + "/summary.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "setup,size,gold,accuracy,samples,prompt_tokens");
  EXPECT_NE(csv.find("kv,20,19,100.00,3,"), std::string::npos) << csv;
  EXPECT_NE(read_file(o.out + "/ucurve.svg").find("<svg"), std::string::npos);
  EXPECT_EQ(count(read_file(o.out + "/kv-10/gold-9.jsonl"), "\n"), 3);
  // A torn last line (a killed run) is dropped and that sample run again.
  {
    std::ofstream f(o.out + "/kv-10/gold-0.jsonl", std::ios::app);
    f << "{\"index\": 3, \"corr";
  }
  o.samples = 4;
  litm::run(reader, o);
  EXPECT_EQ(reader.calls, 2 * 3 * 4);
  o.setup = "qa";
  o.sizes = {10};
  o.samples = 2;
  auto q = litm::run(reader, o);
  for (auto& [g, acc] : q.accuracy[10]) EXPECT_EQ(acc, 100.0) << "qa gold " << g;
  EXPECT_EQ(q.accuracy[10].size(), 3u);
}

TEST(Litm, FittedSamplesAreTheLargestThatFitAndTrainAsMixtureRows) {
  ByteTokenizer tok;
  auto passages = litm::sotu_passages();
  for (const std::string setup : {"kv", "qa"}) {
    auto s = litm::fit_sample(setup, 3000, tok, passages, 17);
    EXPECT_LE(int64_t(s.prompt.size()) + 48, 3000) << setup;
    auto bigger = setup == "kv" ? litm::kv_sample(s.size + 1, s.gold, 0, 0) : litm::qa_sample(passages, s.size + 1, s.gold, 0, 0);
    EXPECT_GT(int64_t(bigger.prompt.size()) + 48, 3000 - 200) << setup << ": one more item would (nearly) not fit";
    EXPECT_TRUE(s.gold >= 0 && s.gold < s.size);
    EXPECT_TRUE(litm::correct(s, litm::reference_answer(s))) << setup;
  }
  expect_error([&] { litm::fit_sample("kv", 100, tok, passages, 1); }, {"kv", "does not fit in 100 tokens"});
  // As rows of the training mixture (data.ruler.tasks by name): the answer weighs, the prompt not.
  TokenStream text = letter_stream();
  DataConfig d;
  d.seq_len = 2400;
  d.ruler.fraction = 1.0;
  d.ruler.min_length = 400;
  d.ruler.max_length = 2400;
  d.ruler.answer_weight = 3;
  d.ruler.tasks = {"litm_kv", "litm_qa"};
  TrainBatches tb(d, text, tok, 4, 1);
  EXPECT_EQ(tb.ruler_tasks(), (std::vector<std::string>{"litm_kv", "litm_qa"}));
  int kv = 0, qa = 0;
  for (int64_t step = 0; step < 4; ++step) {
    auto b = tb.get(step, 0);
    for (int64_t r = 0; r < 4; ++r) {
      std::vector<int64_t> ids(b.x[r].data_ptr<int64_t>(), b.x[r].data_ptr<int64_t>() + 2400);
      std::string s = tok.decode(ids), answer;
      int64_t a0 = -1;
      for (int64_t t = 0; t < 2399; ++t)
        if (b.w[r][t].item<float>() == 3.f) {
          if (a0 < 0) a0 = t + 1;
          answer += s[t + 1];
        }
      ASSERT_GT(a0, 0);
      const std::string prompt = s.substr(0, a0);
      std::smatch m;
      if (std::regex_search(prompt, m, std::regex("Key: \"([0-9a-f-]+)\"\nCorresponding value:$"))) {
        ++kv;
        auto at = prompt.find("\"" + m[1].str() + "\": \"");
        EXPECT_EQ(answer, " " + prompt.substr(at + m[1].length() + 5, 36));
      } else {
        ASSERT_TRUE(std::regex_search(prompt, m, std::regex("says \"([^\"]+)\"\\?\nAnswer:$"))) << prompt;
        ++qa;
        auto doc = prompt.rfind("(Title: ", prompt.find(m[1].str()));
        auto title = prompt.substr(doc + 8, prompt.find(')', doc) - doc - 8);
        EXPECT_EQ(answer, " " + title.substr(title.find(", ") + 2) + ".");
      }
    }
  }
  EXPECT_GT(kv, 0);
  EXPECT_GT(qa, 0);
}
