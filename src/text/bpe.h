// Byte-level BPE from a Hugging Face tokenizer.json (GPT-2, Llama 3, Qwen2 and their kin):
// added tokens split out first, then the pre-tokenizer's regex (PCRE2), bytes mapped to GPT-2's
// printable characters, merges applied by rank, ids from the vocabulary. Decoding maps the
// characters back to bytes, so any byte string round-trips.
//
// Supported: model.type "BPE" (merges as "a b" strings or [a, b] pairs, ignore_merges),
// pre_tokenizer ByteLevel (its GPT-2 regex, add_prefix_space) or a Sequence of Split (Regex,
// Isolated) and ByteLevel without regex, decoder ByteLevel, normalizer none. Anything else is
// refused by name.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "text/tokenizer.h"

namespace longctx {

class BpeTokenizer : public Tokenizer {
 public:
  // Reads tokenizer.json; errors name the file and the field. Files over max_bytes are refused
  // before they are read.
  explicit BpeTokenizer(const std::string& path, int64_t max_bytes = int64_t(1) << 29);
  // From the text of a tokenizer.json; `origin` names it in errors.
  static std::unique_ptr<BpeTokenizer> from_string(const std::string& json_text, const std::string& origin);
  ~BpeTokenizer() override;

  std::string type() const override { return "bpe"; }
  int64_t vocab_size() const override;
  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  std::string piece(int64_t id, bool first) const override;
  void save(const std::string& dir) const override;  // dir/tokenizer.json, as read

  // The id of a token's exact text (an added token or a vocabulary entry), or -1.
  int64_t token_id(const std::string& content) const;
  // The BOS token the post-processor puts first (Llama 3's <|begin_of_text|>), or -1.
  int64_t bos_id() const;

 private:
  BpeTokenizer() = default;
  void load(const std::string& json_text, const std::string& origin);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string json_;
};

// The GPT-2 byte-to-character map: printable bytes stand for themselves, the rest for U+0100 on.
const std::vector<std::string>& gpt2_byte_chars();

}  // namespace longctx
