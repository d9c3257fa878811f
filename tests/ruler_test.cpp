// RULER's generators against the templates of MECHANISMS.md section 5, written out here as
// literal strings; the metrics' edge cases; the effective length; the haystack fitted to the
// token budget exactly with byte and SentencePiece tokenizers.
#include <regex>

#include "eval/ruler.h"
#include "io/fs.h"
#include "test_util.h"
#include "text/corpus.h"
#include "text/tokenizer.h"

using namespace longctx;
using namespace longctx::testing;
namespace r = longctx::ruler;

namespace {

const r::Resources& res() { return ruler_fixture_resources(); }

const std::string kNoise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

int64_t count(const std::string& hay, const std::string& needle) {
  int64_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  size_t a = 0;
  for (size_t b; (b = s.find('\n', a)) != std::string::npos; a = b + 1) v.push_back(s.substr(a, b - a));
  v.push_back(s.substr(a));
  return v;
}

// The needles of a context: (key, value) in order of appearance.
std::vector<std::pair<std::string, std::string>> needles(const std::string& ctx, const std::string& type) {
  std::regex re("One of the special magic " + type + " for ([^ ]+) is: ([^ ]+)\\.");
  std::vector<std::pair<std::string, std::string>> v;
  for (std::sregex_iterator it(ctx.begin(), ctx.end(), re), end; it != end; ++it) v.push_back({(*it)[1], (*it)[2]});
  return v;
}

}  // namespace

TEST(Ruler, TaskTableHasThe13TasksWithTheirBudgetsAndMetrics) {
  const std::vector<std::string> want{"niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1",
                                      "niah_multikey_2", "niah_multikey_3", "niah_multivalue", "niah_multiquery",
                                      "vt", "cwe", "fwe", "qa_1", "qa_2"};
  EXPECT_EQ(r::tasks(), want);
  EXPECT_EQ(r::tokens_to_generate("niah_multiquery"), 128);
  EXPECT_EQ(r::tokens_to_generate("vt"), 30);
  EXPECT_EQ(r::tokens_to_generate("cwe"), 120);
  EXPECT_EQ(r::tokens_to_generate("fwe"), 50);
  EXPECT_EQ(r::tokens_to_generate("qa_2"), 32);
  EXPECT_EQ(r::metric("qa_1"), "string_match_part");
  EXPECT_EQ(r::metric("cwe"), "string_match_all");
  expect_error([] { r::tokens_to_generate("niah"); }, {"unknown task 'niah'", "niah_single_1"});
}

TEST(Ruler, NeedleTasksFollowTheTemplatesByteForByte) {
  const std::string sing_head =
      "A special magic {T} is hidden within the following text. Make sure to memorize it. I will quiz you about the "
      "{T} afterwards.\n";
  const std::string sing_q = "\nWhat is the special magic {T} for {Q} mentioned in the provided text?";
  const std::string sing_p = " The special magic {T} for {Q} mentioned in the provided text is";
  const std::string plur_head =
      "Some special magic {T}s are hidden within the following text. Make sure to memorize it. I will quiz you about "
      "the {T}s afterwards.\n";
  const std::string plur_q = "\nWhat are all the special magic {T}s for {Q} mentioned in the provided text?";
  const std::string plur_p = " The special magic {T}s for {Q} mentioned in the provided text are";
  auto fill = [](std::string s, const std::string& t, const std::string& q) {
    for (size_t p; (p = s.find("{T}")) != std::string::npos;) s.replace(p, 3, t);
    for (size_t p; (p = s.find("{Q}")) != std::string::npos;) s.replace(p, 3, q);
    return s;
  };
  const std::regex number("[1-9][0-9]{6}");
  const std::regex uuid("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
  const std::regex word("[a-z]+-[a-z]+");
  for (const std::string task : {"niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
                                 "niah_multikey_3", "niah_multivalue", "niah_multiquery"}) {
    for (int64_t idx : {0, 1, 2}) {
      const int64_t n = 7 + idx;
      auto s = r::build(task, n, res(), /*seed=*/42, idx);
      const bool uuids = task == "niah_single_3" || task == "niah_multikey_3";
      const bool plural = task == "niah_multivalue" || task == "niah_multiquery";
      const std::string T = uuids ? "uuid" : "number";
      const std::string head = fill(plural ? plur_head : sing_head, T, "");
      ASSERT_EQ(s.input.rfind(head, 0), 0u) << task;
      auto qpos = s.input.rfind("\nWhat ");
      ASSERT_NE(qpos, std::string::npos);
      const std::string ctx = s.input.substr(head.size(), qpos - head.size());
      auto found = needles(ctx, T + "s");
      std::vector<std::string> keys;
      for (auto& [k, v] : found)
        if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
      std::string query;
      // Rebuild the whole input from the template and compare.
      std::smatch m;
      std::string qline = s.input.substr(qpos);
      std::regex qre(plural ? "\nWhat are all the special magic [a-z]+s for (.+) mentioned in the provided text\\?"
                            : "\nWhat is the special magic [a-z]+ for (.+) mentioned in the provided text\\?");
      ASSERT_TRUE(std::regex_match(qline, m, qre)) << task << ": " << qline;
      query = m[1];
      EXPECT_EQ(s.input, head + ctx + fill(plural ? plur_q : sing_q, T, query)) << task;
      EXPECT_EQ(s.answer_prefix, fill(plural ? plur_p : sing_p, T, query)) << task;
      // The expected outputs are the values of the asked key(s), in the query's order.
      std::vector<std::string> want;
      if (task == "niah_multiquery") {
        std::vector<std::string> qkeys;
        std::string rest = query;
        std::regex sep(", and |, ");
        for (std::sregex_token_iterator it(rest.begin(), rest.end(), sep, -1), end; it != end; ++it) qkeys.push_back(*it);
        ASSERT_EQ(qkeys.size(), 4u) << query;
        for (auto& k : qkeys)
          for (auto& [fk, fv] : found)
            if (fk == k) want.push_back(fv);
        EXPECT_EQ(query, qkeys[0] + ", " + qkeys[1] + ", " + qkeys[2] + ", and " + qkeys[3]);
      } else {
        for (auto& [fk, fv] : found)
          if (fk == query) want.push_back(fv);
      }
      EXPECT_EQ(s.outputs, want) << task;
      const size_t values = task == "niah_multivalue" ? 4 : task == "niah_multiquery" ? 4 : 1;
      EXPECT_EQ(s.outputs.size(), values) << task;
      for (auto& v : s.outputs) EXPECT_TRUE(std::regex_match(v, uuids ? uuid : number)) << task << " value " << v;
      const bool uuid_keys = task == "niah_multikey_3";
      for (auto& k : keys) EXPECT_TRUE(std::regex_match(k, uuid_keys ? uuid : word)) << task << " key " << k;
      // The haystack: noise lines, the essays' first n words, or n distractor needles.
      if (task == "niah_single_1") {
        int64_t noise = 0;
        for (auto& l : lines(ctx)) {
          if (l == kNoise) ++noise;
          else EXPECT_EQ(l, "One of the special magic numbers for " + query + " is: " + s.outputs[0] + ".");
        }
        EXPECT_EQ(noise, n);
      } else if (task == "niah_multikey_2" || task == "niah_multikey_3") {
        EXPECT_EQ(int64_t(lines(ctx).size()), n + 1);
        EXPECT_EQ(int64_t(found.size()), n + 1);
        EXPECT_EQ(count(ctx, " for " + query + " is: "), 1) << "the asked key is unique";
      } else {
        std::string plain = ctx;
        for (auto& [k, v] : found) {  // needles sit between sentences, joined by single spaces
          std::string nd = "One of the special magic " + T + "s for " + k + " is: " + v + ".";
          auto p = plain.find(nd);
          ASSERT_NE(p, std::string::npos);
          if (p > 0) {
            ASSERT_EQ(plain[p - 1], ' ');
            plain.erase(p - 1, nd.size() + 1);
          } else {
            plain.erase(0, nd.size() + (plain.size() > nd.size() ? 1 : 0));
          }
        }
        std::string first;
        for (int64_t i = 0; i < n; ++i) first += (i ? " " : "") + res().essay_words[i];
        EXPECT_EQ(plain, first) << task;
        if (task == "niah_multikey_1") {
          EXPECT_EQ(keys.size(), 4u);
        }
      }
    }
  }
}

TEST(Ruler, VariableTrackingFollowsItsTemplateAfterOneWorkedExample) {
  auto s = r::build("vt", 20, res(), 7, 3);
  const std::string head = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n";
  // Two prompts: the worked example (3-letter names, with its answer) then the task.
  EXPECT_EQ(count(s.input, head), 2);
  auto task_at = s.input.rfind(head);
  std::string example = s.input.substr(0, task_at), task = s.input.substr(task_at);
  ASSERT_EQ(s.outputs.size(), 5u);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(task, m, std::regex("VAR ([A-Z]{5}) = ([0-9]{5}) \n")));
  const std::string value = m[2];
  EXPECT_EQ(m[1], s.outputs[0]);
  EXPECT_GE(std::stoi(value), 10000);
  EXPECT_LE(std::stoi(value), 99998);
  for (int i = 1; i < 5; ++i)
    EXPECT_EQ(count(task, "VAR " + s.outputs[i] + " = VAR " + s.outputs[i - 1] + " "), 1) << i;
  EXPECT_LT(task.find("VAR " + s.outputs[0] + " ="), task.find("VAR " + s.outputs[4] + " ="));
  EXPECT_EQ(count(task, kNoise), 20);
  const std::string tail = "\nQuestion: Find all variables that are assigned the value " + value + " in the text above.";
  ASSERT_GT(task.size(), tail.size());
  EXPECT_EQ(task.substr(task.size() - tail.size()), tail);
  EXPECT_EQ(s.answer_prefix, " Answer: According to the chain(s) of variable assignment in the text above, 5 variables "
                             "are assigned the value " + value + ", they are: ");
  // The example ends with its own answer prefix and five 3-letter names, then a newline.
  EXPECT_TRUE(std::regex_search(example, std::regex(", they are: [A-Z]{3} [A-Z]{3} [A-Z]{3} [A-Z]{3} [A-Z]{3}\n$")));
}

TEST(Ruler, CommonWordsRepeatTenWords30TimesAndTheRestThreeTimes) {
  auto s = r::build("cwe", 25, res(), 1, 0);
  const std::string head = "Below is a numbered list of words. In these words, some appear more often than others. "
                           "Memorize the ones that appear most often.\n";
  EXPECT_EQ(count(s.input, head), 2);
  auto task = s.input.substr(s.input.rfind(head));
  const std::string question = "\nQuestion: What are the 10 most common words in the above list?";
  auto q = task.find(question);
  ASSERT_NE(q, std::string::npos);
  EXPECT_EQ(q + question.size(), task.size());
  EXPECT_EQ(s.answer_prefix, " Answer: The top 10 words that appear most often in the list are:");
  // "1. w 2. w ...": numbered from 1, 10 x 30 + 25 x 3 entries.
  std::string list = task.substr(head.size(), q - head.size());
  std::map<std::string, int> freq;
  std::istringstream in(list);
  int expect_no = 1;
  for (std::string num, w; in >> num >> w; ++expect_no) {
    EXPECT_EQ(num, std::to_string(expect_no) + ".");
    ++freq[w];
  }
  EXPECT_EQ(expect_no - 1, 10 * 30 + 25 * 3);
  ASSERT_EQ(s.outputs.size(), 10u);
  for (auto& w : s.outputs) EXPECT_EQ(freq[w], 30) << w;
  for (auto& [w, c] : freq) EXPECT_TRUE(c == 30 || c == 3) << w;
  // The worked example ends with its answer "1. w 2. w ... 10. w".
  auto ex = s.input.substr(0, s.input.rfind(head));
  EXPECT_TRUE(std::regex_search(ex, std::regex("are: 1\\. [a-z]+ 2\\. [a-z]+ .* 10\\. [a-z]+\n$")));
}

TEST(Ruler, FrequentWordsFollowZipfWithTheDotsFirst) {
  const int64_t n = 2000;
  auto s = r::build("fwe", n, res(), 3, 1);
  const std::string head = "Read the following coded text and track the frequency of each coded word. Find the three "
                           "most frequently appeared coded words. ";
  ASSERT_EQ(s.input.rfind(head, 0), 0u);
  const std::string tail = "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the "
                           "three most frequently appeared words in the above coded text?";
  ASSERT_EQ(s.input.substr(s.input.size() - tail.size()), tail);
  EXPECT_EQ(s.answer_prefix, " Answer: According to the coded text above, the three most frequently appeared words are:");
  std::map<std::string, int64_t> freq;
  std::istringstream in(s.input.substr(head.size(), s.input.size() - head.size() - tail.size()));
  for (std::string w; in >> w;) ++freq[w];
  const double z = M_PI * M_PI / 6;
  EXPECT_EQ(freq["..."], int64_t(std::floor(n / z)));
  for (int k = 2; k <= 4; ++k) EXPECT_EQ(freq[s.outputs[k - 2]], int64_t(std::floor(n / (k * k * z)))) << k;
  for (auto& [w, c] : freq)
    if (w != "...") {
      EXPECT_TRUE(std::regex_match(w, std::regex("[a-z]{6}"))) << w;
    }
}

TEST(Ruler, QaReadsBothPublicFormatsAndPlacesTheGoldDocument) {
  for (const std::string task : {"qa_1", "qa_2"}) {
    auto s = r::build(task, 2, res(), 5, 0);
    const std::string instr =
        "Answer the question based on the given documents. Only give me the answer and do not output any other words.";
    ASSERT_EQ(s.input.rfind(instr + "\n\nThe following are given documents.\n\nDocument 1:\n", 0), 0u) << task;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(s.input, m, std::regex("\n\n" + instr + "\n\nQuestion: ([^\n]+)$"))) << task;
    EXPECT_EQ(s.answer_prefix, " Answer:");
    const int64_t docs = count(s.input, "Document ");
    EXPECT_EQ(docs, task == "qa_1" ? 3 : 4) << "2 distractors + the gold document(s)";
    for (int64_t i = 1; i <= docs; ++i) EXPECT_EQ(count(s.input, "Document " + std::to_string(i) + ":\n"), 1);
    ASSERT_FALSE(s.outputs.empty());
  }
  // SQuAD's impossible question is never asked; its answers keep every distinct text.
  auto sq = r::read_squad(source_dir() + "/tests/fixtures/ruler/squad_v2_small.json");
  EXPECT_EQ(sq.items.size(), 3u);
  EXPECT_EQ(sq.documents.size(), 5u);
  EXPECT_EQ(sq.items[0].answers, (std::vector<std::string>{"1874", "in 1874"}));
  auto hp = r::read_hotpotqa(source_dir() + "/tests/fixtures/ruler/hotpotqa_small.json");
  EXPECT_EQ(hp.items[0].gold.size(), 2u);
  EXPECT_EQ(hp.items[0].gold[1], "Kell Museum\nThe Kell Museum is an art museum. It is in Dunmore.");
  // Without QA data the task says what to give.
  r::Resources none = res();
  none.squad = {};
  expect_error([&] { r::build("qa_1", 2, none, 1, 0); }, {"qa_1", "SQuAD v2", "--squad"});
  auto d = temp_dir("ruler_badqa");
  write_file_atomic(d + "/x.json", "{\"data\": 3}");
  expect_error([&] { r::read_squad(d + "/x.json"); }, {"x.json", "data"});
  write_file_atomic(d + "/y.json", R"({"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "q", "answers": [{"x": 1}]}]}]}]})");
  expect_error([&] { r::read_squad(d + "/y.json"); }, {"y.json", "not SQuAD v2 JSON"});
  expect_error([&] { r::read_hotpotqa(d + "/x.json"); }, {"x.json", "HotpotQA"});
}

TEST(Ruler, SamplesAreReproducibleAndDifferByIndexAndSeed) {
  auto a = r::build("niah_single_2", 50, res(), 9, 4), b = r::build("niah_single_2", 50, res(), 9, 4);
  EXPECT_EQ(a.input, b.input);
  EXPECT_NE(a.input, r::build("niah_single_2", 50, res(), 9, 5).input);
  EXPECT_NE(a.input, r::build("niah_single_2", 50, res(), 10, 4).input);
  // The haystack size changes the haystack only: the needle stays.
  EXPECT_EQ(r::build("niah_single_2", 80, res(), 9, 4).outputs, a.outputs);
}

TEST(Ruler, HaystackFillsTheTokenBudgetExactlyForBytesAndSentencePiece) {
  ByteTokenizer bytes;
  auto docs = load_corpus("sotu");
  std::vector<std::string> texts;
  for (int i = 0; i < 8; ++i) texts.push_back(docs[i].text);
  auto d = temp_dir("ruler_spm");
  SentencePieceTokenizer::train(texts, d + "/tokenizer", 400);
  auto spm = make_tokenizer("sentencepiece", d);
  for (const Tokenizer* tok : std::vector<const Tokenizer*>{&bytes, spm.get()}) {
    for (const std::string task : {"niah_single_1", "niah_single_2", "niah_multikey_3", "vt", "cwe", "fwe", "qa_2"}) {
      const int64_t L = 8192;  // cwe needs about 5K bytes (and as many SentencePiece tokens here: digits split)
      auto s = r::generate(task, L, *tok, res(), 11, 0);
      const int64_t gen = r::tokens_to_generate(task);
      EXPECT_EQ(s.prompt_tokens, int64_t(tok->encode(s.input + s.answer_prefix).size()));
      EXPECT_LE(s.prompt_tokens + gen, L) << task << " " << tok->type();
      EXPECT_EQ(s.length, L);
      if (task == "qa_2") continue;  // the fixture has few documents: the search may run out of them
      auto more = r::build(task, s.haystack + 1, res(), 11, 0);
      EXPECT_GT(int64_t(tok->encode(more.input + more.answer_prefix).size()) + gen, L)
          << task << " " << tok->type() << ": one more haystack unit would still fit";
    }
  }
  expect_error([&] { r::generate("niah_single_2", 100, bytes, res(), 1, 0); }, {"niah_single_2", "100 tokens"});
}

TEST(Ruler, MetricsMatchRulersDefinitions) {
  EXPECT_EQ(r::clean_prediction("  \t 123\x01" "4567\x1f  \n"), "123\n4567");
  // string_match_all: the fraction of references found, case-insensitive, averaged over samples.
  EXPECT_DOUBLE_EQ(r::string_match_all({"The numbers are 1234567 and 7654321."}, {{"1234567", "7654321"}}), 100);
  EXPECT_DOUBLE_EQ(r::string_match_all({"only 1234567"}, {{"1234567", "7654321"}}), 50);
  EXPECT_DOUBLE_EQ(r::string_match_all({"ABC-DEF", "nothing"}, {{"abc-def"}, {"x"}}), 50);
  EXPECT_DOUBLE_EQ(r::string_match_all({}, {}), 0);
  // string_match_part: any reference found counts the sample in full.
  EXPECT_DOUBLE_EQ(r::string_match_part({"in 1874, I think"}, {{"1874", "in 1874"}}), 100);
  EXPECT_DOUBLE_EQ(r::string_match_part({"1875", "Ada"}, {{"1874"}, {"ada lind", "Ada"}}), 50);
  EXPECT_DOUBLE_EQ(r::score("qa_1", "x", {"y"}), 0);
  EXPECT_DOUBLE_EQ(r::score("vt", " AAAAA BBBBB", {"AAAAA", "BBBBB", "CCCCC", "DDDDD"}), 50);
  expect_error([] { r::string_match_all({"a"}, {}); }, {"1 predictions for 0 references"});
}

TEST(Ruler, EffectiveLengthIsTheLargestLengthAboveTheThreshold) {
  EXPECT_EQ(r::effective_length({{4096, 95}, {8192, 90}, {16384, 86}, {32768, 70}}), 16384);
  EXPECT_EQ(r::effective_length({{4096, 85.6}, {8192, 40}}), 0);  // the threshold itself does not pass
  EXPECT_EQ(r::effective_length({{4096, 85.7}}), 4096);
  EXPECT_EQ(r::effective_length({}), 0);
  EXPECT_EQ(r::effective_length({{4096, 50}, {8192, 60}}, 55), 8192);
}
