// longctx tokenizer train | encode | decode: a SentencePiece tokenizer on a corpus's training split;
// text to ids (a JSON list) and back with a model folder's tokenizer (longctx, tokenizer.json or
// tokenizer.model).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "text/corpus.h"
#include "io/fs.h"
#include "text/bpe.h"
#include "text/tokenizer.h"
#include "util/error.h"

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
struct CodecArgs {
  std::string model, file, out;
  bool bos = false;
};

std::string read_input(const std::string& file) {
  if (file.empty() || file == "-") return std::string(std::istreambuf_iterator<char>(std::cin), {});
  return read_file(file);
}

void write_output(const std::string& out, const std::string& bytes) {
  if (out.empty() || out == "-") {
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    std::fflush(stdout);
  } else {
    write_file_atomic(out, bytes);
  }
}

int run_encode(const CodecArgs& a) {
  auto tok = load_folder_tokenizer(a.model);
  auto ids = tok->encode(read_input(a.file));
  if (a.bos) {
    auto* bpe = dynamic_cast<const BpeTokenizer*>(tok.get());
    LCX_CHECK(bpe && bpe->bos_id() >= 0, "tokenizer encode --bos: ", a.model, "'s tokenizer puts no BOS token first");
    ids.insert(ids.begin(), bpe->bos_id());
  }
  write_output(a.out, nlohmann::json(ids).dump() + "\n");
  return 0;
}

int run_decode(const CodecArgs& a) {
  auto tok = load_folder_tokenizer(a.model);
  const auto origin = a.file.empty() || a.file == "-" ? std::string("stdin") : a.file;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_input(a.file));
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer decode: ", origin, " is not JSON (", e.what(), ")");
  }
  LCX_CHECK(j.is_array(), "tokenizer decode: ", origin, " must hold a JSON list of token ids");
  std::vector<int64_t> ids;
  ids.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    LCX_CHECK(j[i].is_number_integer(), "tokenizer decode: ", origin, "[", i, "] is not an integer id");
    const auto id = j[i].get<int64_t>();
    LCX_CHECK(id >= 0 && id < tok->vocab_size(), "tokenizer decode: ", origin, "[", i, "] = ", id,
              " is outside the vocabulary [0, ", tok->vocab_size(), ")");
    ids.push_back(id);
  }
  write_output(a.out, tok->decode(ids));
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

  auto e = std::make_shared<CodecArgs>();
  auto* enc = tk->add_subcommand("encode", "text to token ids, printed as a JSON list");
  enc->add_option("--model", e->model, "model folder (longctx model, or a folder with tokenizer.json / tokenizer.model)")->required();
  enc->add_option("--file", e->file, "text file to encode (default: stdin)");
  enc->add_option("--out", e->out, "write the JSON list here (default: stdout)");
  enc->add_flag("--bos", e->bos, "put the BOS token of tokenizer.json's post-processor first (Llama 3)");
  cmds.push_back({enc, [e] { return run_encode(*e); }});

  auto d = std::make_shared<CodecArgs>();
  auto* dec = tk->add_subcommand("decode", "a JSON list of token ids back to text (bytes, as encoded)");
  dec->add_option("--model", d->model, "model folder")->required();
  dec->add_option("--file", d->file, "file holding the JSON list (default: stdin)");
  dec->add_option("--out", d->out, "write the text here (default: stdout)");
  cmds.push_back({dec, [d] { return run_decode(*d); }});
}

}  // namespace longctx::cli
