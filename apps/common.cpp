#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>

#include "commands.h"
#include "eval/ruler_http.h"
#include "eval/ruler_run.h"
#include "model/pretrained.h"
#include "io/fs.h"
#include "text/corpus.h"
#include "util/error.h"

namespace longctx::cli {

std::vector<int64_t> parse_lengths(const std::string& s, const char* what) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == "all") {
      v.push_back(0);
      continue;
    }
    char* end = nullptr;
    long long x = std::strtoll(item.c_str(), &end, 10);
    if (end && (*end == 'K' || *end == 'k')) x *= 1024, ++end;
    else if (end && (*end == 'M' || *end == 'm')) x *= 1024 * 1024, ++end;
    LCX_CHECK(!item.empty() && end && *end == '\0' && x > 0, what, ": '", item,
              "' is not a positive length (numbers, 4K, 1M or all)");
    v.push_back(x);
  }
  LCX_CHECK(!v.empty(), what, ": no lengths given");
  return v;
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');) v.push_back(x);
  return v;
}

std::string eval_text(const std::string& data, const std::string& model_dir) {
  namespace fs = std::filesystem;
  if (data == "val") {
    std::string sp = model_dir + "/split.json";
    LCX_CHECK(fs::exists(sp), "held-out text \"val\": ", sp, " not found (the model was not trained by longctx train; give a corpus instead)");
    auto split = nlohmann::json::parse(read_file(sp));
    auto cfg = nlohmann::json::parse(read_file(model_dir + "/config.json"));
    std::string sep = cfg.contains("data") ? cfg["data"].value("separator", "\n\n") : "\n\n";
    std::set<std::string> val;
    for (auto& n : split["val"]) val.insert(n.get<std::string>());
    std::string corpus = cfg["data"]["train"][0];
    std::string text;
    for (auto& d : load_corpus(corpus))
      if (val.count(d.name)) text += d.text + sep;
    return text;
  }
  std::string text;
  for (auto& d : load_corpus(data)) text += d.text;
  return text;
}

void TargetArgs::add_options(CLI::App* sub, const std::string& tokenizer_help) {
  sub->add_option("--model", model, "the model to run");
  sub->add_option("--endpoint", endpoint, "an OpenAI-compatible server to run instead of --model (http://host:port)");
  sub->add_option("--api-model", api_model, "the model name the endpoint serves");
  sub->add_option("--api-key", api_key, "the endpoint's key, sent as 'Authorization: Bearer KEY' (default: $OPENAI_API_KEY)");
  sub->add_option("--tokenizer", tokenizer, tokenizer_help);
  sub->add_option("--chunk", chunk, "prompt tokens per forward call (memory)");
  sub->add_option("--set", sets, "override a model config field (as eval ppl)");
}

std::unique_ptr<Tokenizer> endpoint_tokenizer(const std::string& spec) {
  return spec == "byte" ? make_tokenizer("byte", "") : load_folder_tokenizer(spec);
}

std::unique_ptr<ruler::Completer> make_target(const std::string& cmd, const TargetArgs& t) {
  LCX_CHECK(t.model.empty() != t.endpoint.empty(), cmd, ": give exactly one of --model DIR and --endpoint URL");
  if (!t.model.empty()) {
    auto p = load_pretrained(t.model, t.sets);
    std::shared_ptr<Tokenizer> tok(std::move(p.tokenizer));
    return std::make_unique<ruler::ModelCompleter>(p.model, tok, std::filesystem::path(t.model).filename().string(),
                                                   t.chunk);
  }
  LCX_CHECK(!t.api_model.empty(), cmd, ": --endpoint needs --api-model NAME");
  std::shared_ptr<Tokenizer> tok = endpoint_tokenizer(t.tokenizer);
  std::string key = t.api_key;
  if (key.empty() && std::getenv("OPENAI_API_KEY")) key = std::getenv("OPENAI_API_KEY");
  return std::make_unique<ruler::EndpointCompleter>(t.endpoint, t.api_model, tok, 600, key);
}

}  // namespace longctx::cli
