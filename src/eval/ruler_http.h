// An OpenAI-compatible completions endpoint as a RULER target, so the same harness measures
// other engines (vLLM, llama.cpp's server, TGI, ...): POST {url}/v1/completions with
// {"model", "prompt", "max_tokens", "temperature": 0}; the prediction is choices[0].text.
// Tokens are counted with the tokenizer given (the haystack is fitted with it). Built on
// cpp-httplib; without it (a build that lacks the package) construction throws.
#pragma once
#include <memory>
#include <string>

#include "eval/ruler.h"

namespace longctx::ruler {

class EndpointCompleter : public Completer {
 public:
  // url: "http://host:port" or with a base path ("http://host:port/v1" is taken as the v1 root).
  // api_key: sent as "Authorization: Bearer KEY" when not empty.
  EndpointCompleter(std::string url, std::string api_model, std::shared_ptr<Tokenizer> tok, double timeout_s = 600,
                    std::string api_key = "");
  const Tokenizer& tokenizer() const override { return *tok_; }
  std::string complete(const std::string& prompt, int64_t max_tokens) override;
  std::string name() const override { return api_model_ + " @ " + url_; }

 private:
  std::string url_, api_model_, origin_, path_, api_key_;
  std::shared_ptr<Tokenizer> tok_;
  double timeout_s_;
};

}  // namespace longctx::ruler
