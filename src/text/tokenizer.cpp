#include "text/tokenizer.h"

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>

#include <cstdlib>

#include <filesystem>

#include "io/fs.h"
#include "util/error.h"

namespace longctx {

std::vector<int64_t> ByteTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string s(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    LCX_CHECK(ids[i] >= 0 && ids[i] < 256, "byte tokenizer: id ", ids[i], " out of range [0, 256)");
    s[i] = static_cast<char>(ids[i]);
  }
  return s;
}

std::string ByteTokenizer::piece(int64_t id, bool) const { return decode({id}); }

// SentencePiece through the isolated shim (see spm_shim/spm_shim.cpp for why).
namespace {
struct SpmApi {
  void* (*load)(const char*, size_t, char*, size_t);
  void (*destroy)(void*);
  void (*free_)(void*);
  int (*size)(void*);
  int (*encode)(void*, const char*, size_t, int**, size_t*, char*, size_t);
  int (*decode)(void*, const int*, size_t, char**, size_t*, char*, size_t);
  char* (*piece)(void*, int, int*);
  int (*train)(const char*, char*, size_t);
};

std::string self_dir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : p.parent_path().string();
}

const SpmApi& spm() {
  static SpmApi api = [] {
    std::vector<std::string> candidates;
    if (const char* e = std::getenv("LONGCTX_SPM_LIB")) candidates.push_back(e);
    candidates.push_back(self_dir() + "/liblongctx_spm.so");
#ifdef LONGCTX_SPM_LIB
    candidates.push_back(LONGCTX_SPM_LIB);
#endif
    void* h = nullptr;
    std::string errors;
    for (auto& c : candidates) {
      h = dlmopen(LM_ID_NEWLM, c.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (h) break;
      errors += "\n  " + c + ": " + dlerror();
    }
    LCX_CHECK(h, "cannot load the SentencePiece shim liblongctx_spm.so (build it with `make build`, or set "
                 "LONGCTX_SPM_LIB):", errors);
    auto sym = [&](const char* n) {
      void* f = dlsym(h, n);
      LCX_CHECK(f, "liblongctx_spm.so: missing symbol ", n);
      return f;
    };
    SpmApi a;
    a.load = reinterpret_cast<decltype(a.load)>(sym("lcx_spm_load"));
    a.destroy = reinterpret_cast<decltype(a.destroy)>(sym("lcx_spm_destroy"));
    a.free_ = reinterpret_cast<decltype(a.free_)>(sym("lcx_spm_free"));
    a.size = reinterpret_cast<decltype(a.size)>(sym("lcx_spm_size"));
    a.encode = reinterpret_cast<decltype(a.encode)>(sym("lcx_spm_encode"));
    a.decode = reinterpret_cast<decltype(a.decode)>(sym("lcx_spm_decode"));
    a.piece = reinterpret_cast<decltype(a.piece)>(sym("lcx_spm_piece"));
    a.train = reinterpret_cast<decltype(a.train)>(sym("lcx_spm_train"));
    return a;
  }();
  return api;
}
}  // namespace

struct SentencePieceTokenizer::Impl {
  void* h = nullptr;
  ~Impl() {
    if (h) spm().destroy(h);
  }
};

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path) : impl_(new Impl) {
  blob_ = read_file(model_path);
  char err[512] = {0};
  impl_->h = spm().load(blob_.data(), blob_.size(), err, sizeof err);
  LCX_CHECK(impl_->h, model_path, ": not a SentencePiece model (", err, ")");
}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

int64_t SentencePieceTokenizer::vocab_size() const { return spm().size(impl_->h); }

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text) const {
  int* ids = nullptr;
  size_t n = 0;
  char err[512] = {0};
  LCX_CHECK(spm().encode(impl_->h, text.data(), text.size(), &ids, &n, err, sizeof err) == 0,
            "sentencepiece encode: ", err);
  std::vector<int64_t> out(ids, ids + n);
  spm().free_(ids);
  return out;
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> v(ids.begin(), ids.end());
  for (auto i : v)
    LCX_CHECK(i >= 0 && i < vocab_size(), "sentencepiece decode: id ", i, " out of range [0, ", vocab_size(), ")");
  char* s = nullptr;
  size_t n = 0;
  char err[512] = {0};
  LCX_CHECK(spm().decode(impl_->h, v.data(), v.size(), &s, &n, err, sizeof err) == 0, "sentencepiece decode: ", err);
  std::string out(s, n);
  spm().free_(s);
  return out;
}

std::string SentencePieceTokenizer::piece(int64_t id, bool first) const {
  int flags = 0;
  char* raw = spm().piece(impl_->h, static_cast<int>(id), &flags);
  std::string p(raw);
  spm().free_(raw);
  if (flags & 2) return "?";
  if (flags & 1) return "";
  if (flags & 4) {  // <0xAB>
    return std::string(1, static_cast<char>(std::strtol(p.substr(3, 2).c_str(), nullptr, 16)));
  }
  std::string out;
  const std::string sep = "\xe2\x96\x81";  // U+2581, SentencePiece's word boundary
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, 3, sep) == 0) {
      if (!(first && i == 0)) out += ' ';
      i += 3;
    } else {
      out += p[i++];
    }
  }
  return out;
}

void SentencePieceTokenizer::save(const std::string& dir) const {
  write_file_atomic(dir + "/tokenizer.model", blob_);
}

void SentencePieceTokenizer::train(const std::vector<std::string>& texts, const std::string& prefix,
                                   int vocab_size, const std::string& model_type) {
  namespace fs = std::filesystem;
  LCX_CHECK(vocab_size >= 64, "tokenizer train: vocab size ", vocab_size, " must be >= 64");
  LCX_CHECK(model_type == "unigram" || model_type == "bpe", "tokenizer train: model type '", model_type,
            "' must be unigram or bpe");
  std::string input = prefix + ".train.txt";
  std::string all;
  for (auto& t : texts) {
    all += t;
    all += '\n';
  }
  write_file_atomic(input, all);
  std::string args = "--input=" + input + " --model_prefix=" + prefix +
                     " --vocab_size=" + std::to_string(vocab_size) + " --model_type=" + model_type +
                     " --character_coverage=1.0 --byte_fallback=true --max_sentence_length=100000" +
                     " --input_sentence_size=2000000 --shuffle_input_sentence=true" +
                     " --num_threads=2 --minloglevel=2 --split_digits=true --remove_extra_whitespaces=false";
  char err[1024] = {0};
  int rc = spm().train(args.c_str(), err, sizeof err);
  fs::remove(input);
  LCX_CHECK(rc == 0, "tokenizer train: ", err);
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& type, const std::string& dir) {
  if (type == "byte") return std::make_unique<ByteTokenizer>();
  if (type == "sentencepiece") return std::make_unique<SentencePieceTokenizer>(dir + "/tokenizer.model");
  fail("unknown tokenizer type '", type, "' (expected byte or sentencepiece)");
}

}  // namespace longctx
