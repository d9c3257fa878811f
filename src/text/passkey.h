// The passkey retrieval prompt (MECHANISMS.md section 4, the test of Landmark Attention, LongLoRA,
// LongRoPE and Infini-attention), built in tokens of any tokenizer:
//
//   prompt = join("\n", [task, noise_prefix, info, noise_suffix, ask])
//
// noise_prefix and noise_suffix are cut from the noise repeated (" ".join), to token counts that
// make the whole prompt exactly `length` tokens with the info at `depth` (0 = right after the
// task, 1 = right before the question). The noise is the token sequence of one noise unit
// (the sentence group plus its joining space) repeated, so a 1M-token prompt is never
// materialised: tokens are produced by range.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace longctx {

struct PasskeyText {
  static constexpr const char* task =
      "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz "
      "you about the important information there.";
  static constexpr const char* noise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
  static std::string info(int64_t key);  // "The pass key is {key}. Remember it. {key} is the pass key."
  static constexpr const char* ask = "What is the pass key? The pass key is";
};

struct PasskeyPrompt {
  int64_t key = 0;
  std::vector<int64_t> head;  // task + "\n"
  int64_t n_prefix = 0;       // noise tokens before the info
  std::vector<int64_t> info;  // "\n"-framed info; key_begin..key_end: its first key's tokens
  int64_t key_begin = 0, key_end = 0;
  int64_t n_suffix = 0;       // noise tokens after the info
  std::vector<int64_t> ask;   // "\n" + ask
  int64_t length() const { return int64_t(head.size() + info.size() + ask.size()) + n_prefix + n_suffix; }
};

class PasskeyBuilder {
 public:
  explicit PasskeyBuilder(const Tokenizer& tok);
  // A prompt of exactly `length` tokens, info at `depth` in [0, 1]. Fails, naming the limit,
  // when `length` is shorter than the prompt's fixed part.
  // with_task = false leaves out the task line (a training curriculum's short prompts only).
  PasskeyPrompt make(int64_t length, double depth, int64_t key, bool with_task = true) const;
  int64_t fixed_tokens(int64_t key, bool with_task = true) const;
  // Noise tokens [from, from + n) of the repeated noise.
  void noise(int64_t from, int64_t n, std::vector<int64_t>& out) const;
  // Prompt tokens [from, from + n) (from the concatenation head, noise, info, noise, ask).
  void tokens(const PasskeyPrompt& p, int64_t from, int64_t n, std::vector<int64_t>& out) const;
  std::vector<int64_t> all_tokens(const PasskeyPrompt& p) const;
  // The training target after the ask: " {key}." (the answer the model should generate).
  std::vector<int64_t> answer(int64_t key) const;
  const Tokenizer& tokenizer() const { return tok_; }

 private:
  const Tokenizer& tok_;
  std::vector<int64_t> unit_, head_, ask_;
};

// The score's reading of a generation: the first run of ASCII digits as an integer, or -1.
int64_t first_integer(const std::string& text);

}  // namespace longctx
