// longctx tokenizer train: a SentencePiece tokenizer on a corpus's training split.
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "text/corpus.h"
#include "text/tokenizer.h"

namespace longctx::cli {

namespace {
struct Args {
  std::string data = "sotu", out, type = "unigram";
  int vocab = 4096;
  int64_t val_docs = 12;
  uint64_t split_seed = 1234;
};

int run(const Args& a) {
  auto docs = load_corpus(a.data);
  auto split = split_by_document(docs, a.val_docs, a.split_seed);
  std::vector<std::string> texts;
  for (auto& d : docs)
    if (std::binary_search(split.train.begin(), split.train.end(), d.name)) texts.push_back(d.text);
  std::filesystem::create_directories(a.out);
  SentencePieceTokenizer::train(texts, a.out + "/tokenizer", a.vocab, a.type);
  SentencePieceTokenizer t(a.out + "/tokenizer.model");
  std::printf("wrote %s/tokenizer.model (%lld pieces, trained on %zu documents)\n", a.out.c_str(),
              (long long)t.vocab_size(), texts.size());
  return 0;
}
}  // namespace

void add_tokenizer(CLI::App& app, Commands& cmds) {
  auto a = std::make_shared<Args>();
  auto* tk = app.add_subcommand("tokenizer", "tokenizers");
  tk->require_subcommand(1);
  auto* tkt = tk->add_subcommand("train", "train a SentencePiece tokenizer on a corpus's training split");
  tkt->add_option("--data", a->data, "corpus");
  tkt->add_option("--vocab-size", a->vocab, "vocabulary size");
  tkt->add_option("--model-type", a->type, "unigram or bpe");
  tkt->add_option("--val-docs", a->val_docs, "documents held out (same rule as data.val_docs)");
  tkt->add_option("--split-seed", a->split_seed, "split seed (same rule as data.split_seed)");
  tkt->add_option("--out", a->out, "folder to write tokenizer.model into")->required();
  cmds.push_back({tkt, [a] { return run(*a); }});
}

}  // namespace longctx::cli
