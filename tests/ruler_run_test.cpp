// The RULER runner end to end: a target that reads the needles perfectly scores 100 and the
// files say so; a run killed mid-file continues where it stopped; a longctx model runs through
// the same path with greedy decoding.
#include <fstream>
#include <regex>

#include "eval/ruler_run.h"
#include "io/fs.h"
#include "test_util.h"

using namespace longctx;
using namespace longctx::testing;
namespace r = longctx::ruler;

namespace {

const r::Resources& res() {
  static const r::Resources R = r::Resources::load();
  return R;
}

// A target that answers needle questions by reading the prompt: what a perfect model would say.
class Reader : public r::Completer {
 public:
  const Tokenizer& tokenizer() const override { return tok_; }
  std::string complete(const std::string& prompt, int64_t max_tokens) override {
    ++calls;
    std::smatch q;
    const std::string prefix = prompt.substr(prompt.rfind('?') + 1);  // the answer prefix
    if (!std::regex_match(prefix, q, std::regex(" The special magic (?:number|uuid)s? for (.+) mentioned in the provided text (?:is|are)")))
      return "no idea";
    std::string key = q[1], out;
    std::regex nd("One of the special magic (?:numbers|uuids) for " + key + " is: ([^ ]+)\\.");
    for (std::sregex_iterator it(prompt.begin(), prompt.end(), nd), end; it != end; ++it) out += " " + (*it)[1].str();
    return out;
  }
  std::string name() const override { return "reader"; }
  int calls = 0;

 private:
  ByteTokenizer tok_;
};

std::vector<std::string> file_lines(const std::string& p) {
  std::ifstream in(p);
  std::vector<std::string> v;
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

}  // namespace

TEST(RulerRun, APerfectReaderScores100AndTheFilesSaySo) {
  Reader reader;
  r::RunOptions o;
  o.tasks = {"niah_single_1", "niah_multikey_2", "vt"};
  o.lengths = {2048, 4096};
  o.samples = 3;
  o.seed = 4;
  o.out = temp_dir("ruler_reader");
  auto sum = r::run(reader, res(), o);
  EXPECT_DOUBLE_EQ(sum.score["niah_single_1"][2048], 100);
  EXPECT_DOUBLE_EQ(sum.score["niah_multikey_2"][4096], 100);
  EXPECT_DOUBLE_EQ(sum.score["vt"][4096], 0);  // the reader knows no variable tracking
  EXPECT_NEAR(sum.average[2048], 200.0 / 3, 1e-9);
  EXPECT_EQ(sum.effective_length, 0);  // 66.7 is below 85.6
  auto lines = file_lines(o.out + "/2048/niah_single_1.jsonl");
  ASSERT_EQ(lines.size(), 3u);
  auto j = nlohmann::json::parse(lines[1]);
  for (auto k : {"index", "input", "outputs", "length", "answer_prefix", "prediction", "score"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["index"], 1);
  EXPECT_EQ(j["length"], 2048);
  auto csv = read_file(o.out + "/summary.csv");
  EXPECT_NE(csv.find("task,length,score,samples,metric\n"), std::string::npos);
  EXPECT_NE(csv.find("niah_single_1,2048,100.00,3,string_match_all\n"), std::string::npos);
  EXPECT_NE(csv.find("average,2048,66.67,,\n"), std::string::npos);
  EXPECT_NE(read_file(o.out + "/heatmap.svg").find("<svg"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(read_file(o.out + "/summary.json"))["effective_length"], 0);
  // Only the needle tasks at 2048: the average passes the threshold.
  o.tasks = {"niah_single_1", "niah_multikey_2"};
  EXPECT_EQ(r::run(reader, res(), o).effective_length, 4096);
}

TEST(RulerRun, AKilledRunContinuesWhereItStopped) {
  Reader reader;
  r::RunOptions o;
  o.tasks = {"niah_single_1"};
  o.lengths = {1024};
  o.samples = 2;
  o.out = temp_dir("ruler_resume");
  r::run(reader, res(), o);
  EXPECT_EQ(reader.calls, 2);
  const std::string f = o.out + "/1024/niah_single_1.jsonl";
  auto before = file_lines(f);
  // A torn last line (the process died while writing it) is dropped and redone.
  {
    std::ofstream app(f, std::ios::app);
    app << "{\"index\": 2, \"inp";
  }
  o.samples = 4;
  auto sum = r::run(reader, res(), o);
  EXPECT_EQ(reader.calls, 4);  // samples 2 and 3 only
  auto after = file_lines(f);
  ASSERT_EQ(after.size(), 4u);
  EXPECT_EQ(after[0], before[0]);
  EXPECT_EQ(after[1], before[1]);
  EXPECT_EQ(nlohmann::json::parse(after[3])["index"], 3);
  EXPECT_DOUBLE_EQ(sum.score["niah_single_1"][1024], 100);
}

TEST(RulerRun, ALongctxModelRunsThroughTheSamePath) {
  ModelConfig c;
  c.d_model = 32, c.n_layers = 2, c.n_heads = 2, c.d_ff = 64;
  c.mixer = nlohmann::json::parse(R"({"type": "sliding_window", "window": 64})");
  torch::manual_seed(0);
  CausalLM model(c);
  r::ModelCompleter target(model, std::make_shared<ByteTokenizer>(), "tiny", 256);
  auto out = target.complete("The pass key is 12345.", 7);
  EXPECT_EQ(out.size(), 7u);  // bytes: seven tokens, greedy
  EXPECT_EQ(out, target.complete("The pass key is 12345.", 7));
  r::RunOptions o;
  o.tasks = {"niah_single_1"};
  o.lengths = {1024};
  o.samples = 1;
  o.out = temp_dir("ruler_model");
  auto sum = r::run(target, res(), o);
  auto j = nlohmann::json::parse(file_lines(o.out + "/1024/niah_single_1.jsonl")[0]);
  EXPECT_FALSE(j["prediction"].get<std::string>().empty());  // 128 generated bytes
  EXPECT_DOUBLE_EQ(sum.score["niah_single_1"][1024], j["score"].get<double>());
}
