// A longctx model as a RULER target (ruler::run in eval/ruler.h runs any target).
#pragma once
#include <memory>
#include <string>

#include "eval/ruler.h"
#include "model/lm.h"

namespace longctx::ruler {

// A longctx model: the prompt fed in chunks (bounded memory for bounded mixers), then greedy
// decoding of max_tokens tokens.
class ModelCompleter : public Completer {
 public:
  ModelCompleter(CausalLM model, std::shared_ptr<Tokenizer> tok, std::string name, int64_t chunk = 4096);
  const Tokenizer& tokenizer() const override { return *tok_; }
  std::string complete(const std::string& prompt, int64_t max_tokens) override;
  std::string name() const override { return name_; }

 private:
  CausalLM model_;
  std::shared_ptr<Tokenizer> tok_;
  std::string name_;
  int64_t chunk_;
};

}  // namespace longctx::ruler
