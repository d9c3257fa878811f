#include "eval/ruler_http.h"

#include <nlohmann/json.hpp>

#include "util/error.h"

#ifdef LONGCTX_HAVE_HTTPLIB
#include <httplib.h>
#endif

namespace longctx::ruler {

EndpointCompleter::EndpointCompleter(std::string url, std::string api_model, std::shared_ptr<Tokenizer> tok,
                                     double timeout_s, std::string api_key)
    : url_(std::move(url)), api_model_(std::move(api_model)), api_key_(std::move(api_key)), tok_(std::move(tok)),
      timeout_s_(timeout_s) {
#ifndef LONGCTX_HAVE_HTTPLIB
  fail("ruler --endpoint: this build has no HTTP client (install libcpp-httplib-dev and rebuild)");
#endif
  LCX_CHECK(url_.rfind("http://", 0) == 0 || url_.rfind("https://", 0) == 0, "--endpoint '", url_,
            "': expected http://host:port[/path]");
  LCX_CHECK(!api_model_.empty(), "--endpoint needs --api-model NAME");
  auto slash = url_.find('/', url_.find("://") + 3);
  origin_ = slash == std::string::npos ? url_ : url_.substr(0, slash);
  std::string base = slash == std::string::npos ? "" : url_.substr(slash);
  while (!base.empty() && base.back() == '/') base.pop_back();
  path_ = base.size() >= 3 && base.compare(base.size() - 3, 3, "/v1") == 0 ? base + "/completions"
                                                                           : base + "/v1/completions";
}

std::string EndpointCompleter::complete(const std::string& prompt, int64_t max_tokens) {
#ifdef LONGCTX_HAVE_HTTPLIB
  httplib::Client cli(origin_);
  cli.set_connection_timeout(std::chrono::seconds(30));
  cli.set_read_timeout(std::chrono::milliseconds(int64_t(timeout_s_ * 1000)));
  if (!api_key_.empty()) cli.set_bearer_token_auth(api_key_.c_str());
  nlohmann::json body = {{"model", api_model_}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}};
  auto res = cli.Post(path_, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json");
  LCX_CHECK(res, "--endpoint ", origin_ + path_, ": no response (", httplib::to_string(res.error()), ")");
  LCX_CHECK(res->status == 200, "--endpoint ", origin_ + path_, ": HTTP ", res->status, ": ", res->body.substr(0, 300));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(res->body);
  } catch (const nlohmann::json::exception& e) {
    fail("--endpoint ", origin_ + path_, ": the response is not JSON (", e.what(), ")");
  }
  LCX_CHECK(j.contains("choices") && j["choices"].is_array() && !j["choices"].empty() &&
                j["choices"][0].contains("text") && j["choices"][0]["text"].is_string(),
            "--endpoint ", origin_ + path_, ": the response has no choices[0].text: ", res->body.substr(0, 300));
  return j["choices"][0]["text"].get<std::string>();
#else
  fail("ruler --endpoint: this build has no HTTP client");
#endif
}

}  // namespace longctx::ruler
