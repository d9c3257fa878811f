#include <map>

#include "infer/session.h"
#include "text/corpus.h"
#include "text/tokenizer.h"
#include "test_util.h"

using namespace longctx;
using namespace longctx::testing;

TEST(ByteTokenizer, RoundTripsAnyUtf8) {
  ByteTokenizer t;
  std::string s = "Call me Ishmael \xe2\x80\x94 na\xc3\xafve\n\t\x01";
  auto ids = t.encode(s);
  EXPECT_EQ(ids.size(), s.size());
  EXPECT_EQ(t.decode(ids), s);
  expect_error([&] { t.decode({300}); }, {"300"});
}

TEST(Corpus, SotuSplitByDocumentIsDeterministicAndDisjoint) {
  auto docs = load_corpus("sotu");
  EXPECT_GE(docs.size(), 230u);
  auto a = split_by_document(docs, 12, 1234), b = split_by_document(docs, 12, 1234), c = split_by_document(docs, 12, 99);
  EXPECT_EQ(a.val, b.val);
  EXPECT_NE(a.val, c.val);
  EXPECT_EQ(a.val.size(), 12u);
  EXPECT_EQ(a.train.size() + a.val.size(), docs.size());
  for (auto& v : a.val) EXPECT_FALSE(std::binary_search(a.train.begin(), a.train.end(), v));
  expect_error([&] { split_by_document(docs, 100000, 1); }, {"val_docs"});
}

TEST(Corpus, BrownTagsAreStripped) {
  auto docs = load_corpus("brown");
  EXPECT_EQ(docs.size(), 500u);
  EXPECT_EQ(docs[0].text.rfind("The Fulton County Grand Jury said Friday an investigation", 0), 0u) << docs[0].text.substr(0, 80);
  EXPECT_EQ(docs[0].text.find("/at"), std::string::npos);
}

TEST(Corpus, EvaluationBooksLoad) {
  EXPECT_GT(load_corpus("moby-dick")[0].text.size(), 1000000u);
  EXPECT_GT(load_corpus("moby-dick-chapters").size(), 100u);
  EXPECT_GT(load_corpus("bible")[0].text.size(), 4000000u);
  expect_error([] { load_corpus("wikipedia"); }, {"unknown corpus 'wikipedia'"});
}

TEST(Batches, DependOnlyOnSeedAndStepAndTargetsAreShiftedInputs) {
  TokenStream s;
  for (int i = 0; i < 5000; ++i) s.tokens.push_back(i % 251);
  BatchSampler a(s, 4, 16, 7), b(s, 4, 16, 7);
  auto [x1, y1] = a.get(12, 1);
  auto [x2, y2] = b.get(12, 1);
  EXPECT_TRUE(torch::equal(x1, x2));
  EXPECT_TRUE(torch::equal(x1.narrow(1, 1, 15), y1.narrow(1, 0, 15)));
  EXPECT_FALSE(torch::equal(a.get(13, 1).first, x1));
}

TEST(Batches, ValidationWindowsSpreadOverTheWholeStream) {
  TokenStream s;
  for (int i = 0; i < 5000; ++i) s.tokens.push_back(i % 251);
  auto all = sequential_batches(s, 3, 100, 0);  // 49 windows of 100 targets
  int64_t n = 0;
  for (auto& b : all) n += b.first.size(0);
  EXPECT_EQ(n, 49);
  EXPECT_EQ(all.back().second[0][99].item<int64_t>(), s.tokens[4900]);
  auto some = sequential_batches(s, 3, 100, 2);  // 6 windows, evenly spaced: 0, 8, 16, 24, 32, 40
  ASSERT_EQ(some.size(), 2u);
  EXPECT_EQ(some[0].first[1][0].item<int64_t>(), s.tokens[800]);
  EXPECT_EQ(some[1].first[2][0].item<int64_t>(), s.tokens[4000]);
}

TEST(SentencePiece, TrainsLoadsAndRoundTrips) {
  auto docs = load_corpus("sotu");
  std::vector<std::string> texts;
  for (int i = 0; i < 10; ++i) texts.push_back(docs[i].text);
  auto d = temp_dir("spm");
  SentencePieceTokenizer::train(texts, d + "/tokenizer", 512);
  auto t = make_tokenizer("sentencepiece", d);
  EXPECT_EQ(t->vocab_size(), 512);
  std::string s = "Fellow-Citizens of the Senate and House of Representatives: \xe2\x80\x94 1790!";
  auto ids = t->encode(s);
  EXPECT_LT(ids.size(), s.size());
  EXPECT_EQ(t->decode(ids), s);
  std::string streamed;
  for (size_t i = 0; i < ids.size(); ++i) streamed += t->piece(ids[i], i == 0);
  EXPECT_EQ(streamed, s);
  expect_error([&] { make_tokenizer("sentencepiece", d + "/nope"); }, {"tokenizer.model"});
}

TEST(Sampler, GreedyTopKAndTopPPickTheArgmax) {
  auto logits = torch::tensor({0.1, 2.0, 1.9, -1.0});
  SamplingOptions g;
  g.temperature = 0;
  EXPECT_EQ(Sampler(g).sample(logits), 1);
  SamplingOptions k;
  k.top_k = 1;
  k.seed = 3;
  Sampler sk(k);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sk.sample(logits), 1);
  SamplingOptions p;
  p.top_p = 0.01;
  Sampler sp(p);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sp.sample(logits), 1);
}

TEST(Sampler, FrequenciesFollowTheSoftmaxAndSeedsReproduce) {
  auto logits = torch::tensor({0.0, 1.0, 2.0});
  SamplingOptions o;
  o.temperature = 1.0;
  o.seed = 42;
  Sampler s(o);
  std::map<int64_t, int> n;
  const int N = 30000;
  std::vector<int64_t> seq;
  for (int i = 0; i < N; ++i) seq.push_back(s.sample(logits)), n[seq.back()]++;
  auto p = torch::softmax(logits.to(torch::kFloat64), 0);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(n[i] / double(N), p[i].item<double>(), 0.015);
  Sampler s2(o);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(s2.sample(logits), seq[i]);
  // top_p = 0.7 keeps {2, 1} (0.665 + 0.245 >= 0.7), never 0.
  o.top_p = 0.7;
  Sampler s3(o);
  for (int i = 0; i < 2000; ++i) EXPECT_NE(s3.sample(logits), 0);
}
