// Tokenizers: bytes (default; any text, no training) and SentencePiece (subwords).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace longctx {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string type() const = 0;  // "byte" | "sentencepiece" | "bpe"
  virtual int64_t vocab_size() const = 0;
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  // Bytes of one token when printed as part of a stream (generation prints as it goes).
  virtual std::string piece(int64_t id, bool first) const = 0;
  // Writes what a checkpoint folder needs to load it again (tokenizer.model for SentencePiece).
  virtual void save(const std::string& dir) const = 0;
};

class ByteTokenizer : public Tokenizer {
 public:
  std::string type() const override { return "byte"; }
  int64_t vocab_size() const override { return 256; }
  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  std::string piece(int64_t id, bool) const override;
  void save(const std::string&) const override {}
};

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& model_path);
  ~SentencePieceTokenizer() override;
  std::string type() const override { return "sentencepiece"; }
  int64_t vocab_size() const override;
  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  std::string piece(int64_t id, bool first) const override;
  void save(const std::string& dir) const override;

  // Trains a model from documents; writes <prefix>.model and <prefix>.vocab.
  static void train(const std::vector<std::string>& texts, const std::string& prefix, int vocab_size,
                    const std::string& model_type = "unigram");

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string blob_;
};

// type "byte", "sentencepiece" (dir/tokenizer.model) or "bpe" (dir/tokenizer.json, text/bpe.h).
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& type, const std::string& dir);
// The tokenizer of a folder: a longctx model's (its config.json names it), else tokenizer.json
// (byte-level BPE), else tokenizer.model (SentencePiece).
std::unique_ptr<Tokenizer> load_folder_tokenizer(const std::string& dir);
// "bpe" for a byte-level tokenizer.json, else "sentencepiece" for tokenizer.model.
std::string folder_tokenizer_type(const std::string& dir);

}  // namespace longctx
