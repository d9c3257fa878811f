// RULER against an OpenAI-compatible completions server, end to end: a small server of our own
// (cpp-httplib) that reads needles like a perfect model, the same harness as for longctx models,
// and the errors a user meets (no server, a bad status, a response without choices).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <filesystem>
#include <regex>
#include <thread>

#include "eval/litm.h"
#include "eval/ruler.h"
#include "eval/ruler_http.h"
#include "io/fs.h"
#include "util/error.h"

#include "test_util.h"

#ifdef LONGCTX_HAVE_HTTPLIB
#include <httplib.h>

using namespace longctx;
namespace r = longctx::ruler;

namespace {

std::string temp(const std::string& name) { return longctx::testing::temp_dir(name); }  // tests/test_util.h

// The answer a perfect reader gives: the values of the key the answer prefix asks about.
std::string read_needles(const std::string& prompt) {
  std::smatch q;
  // Lost in the middle's key-value retrieval: the asked key's value.
  if (std::regex_search(prompt, q, std::regex("Key: \"([0-9a-f-]+)\"\nCorresponding value:$"))) {
    auto at = prompt.find("\"" + q[1].str() + "\": \"");
    return at == std::string::npos ? "none" : " " + prompt.substr(at + q[1].length() + 5, 36);
  }
  const std::string prefix = prompt.substr(prompt.rfind('?') + 1);
  if (!std::regex_match(prefix, q, std::regex(" The special magic (?:number|uuid)s? for (.+) mentioned in the provided text (?:is|are)")))
    return "I do not know.";
  std::string out, keys = q[1];
  std::regex sep(", and |, ");  // multi-query asks "k1, k2, k3, and k4"
  for (std::sregex_token_iterator k(keys.begin(), keys.end(), sep, -1), kend; k != kend; ++k) {
    std::regex nd("One of the special magic (?:numbers|uuids) for " + k->str() + " is: ([^ ]+)\\.");
    for (std::sregex_iterator it(prompt.begin(), prompt.end(), nd), end; it != end; ++it) out += " " + (*it)[1].str();
  }
  return out;
}

struct Server {
  httplib::Server svr;
  std::thread th;
  int port = 0;
  int requests = 0;
  std::string last_model;
  int64_t last_max_tokens = 0;
  double last_temperature = -1;
  explicit Server(int status = 200, bool choices = true) {
    svr.Post("/v1/completions", [this, status, choices](const httplib::Request& req, httplib::Response& res) {
      ++requests;
      auto j = nlohmann::json::parse(req.body);
      last_model = j.at("model");
      last_max_tokens = j.at("max_tokens");
      last_temperature = j.at("temperature");
      nlohmann::json out = {{"id", "cmpl-1"}, {"object", "text_completion"}, {"model", last_model}};
      if (choices) out["choices"] = {{{"index", 0}, {"text", read_needles(j.at("prompt"))}, {"finish_reason", "stop"}}};
      res.status = status;
      res.set_content(status == 200 ? out.dump() : "{\"error\": \"overloaded\"}", "application/json");
    });
    port = svr.bind_to_any_port("127.0.0.1");  // bound and listening: requests queue until the loop runs
    th = std::thread([this] { svr.listen_after_bind(); });
    while (!svr.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // so stop() is not lost
  }
  ~Server() {
    svr.stop();
    th.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }
};

const r::Resources& res() {
  static const r::Resources R = r::Resources::load();
  return R;
}

}  // namespace

TEST(RulerEndpoint, ALocalCompletionsServerRunsEndToEnd) {
  Server s;
  r::EndpointCompleter target(s.url(), "reader-1", std::make_shared<ByteTokenizer>());
  r::RunOptions o;
  o.tasks = {"niah_single_2", "niah_multivalue", "niah_multiquery", "cwe"};
  o.lengths = {8192};
  o.samples = 2;
  o.seed = 3;
  o.out = temp("ruler_endpoint");
  auto sum = r::run(target, res(), o);
  EXPECT_EQ(s.requests, 8);
  EXPECT_EQ(s.last_model, "reader-1");
  EXPECT_EQ(s.last_max_tokens, 120);  // cwe's tokens to generate
  EXPECT_EQ(s.last_temperature, 0);   // greedy
  EXPECT_DOUBLE_EQ(sum.score["niah_single_2"][8192], 100);
  EXPECT_DOUBLE_EQ(sum.score["niah_multivalue"][8192], 100);
  EXPECT_DOUBLE_EQ(sum.score["niah_multiquery"][8192], 100);
  EXPECT_DOUBLE_EQ(sum.score["cwe"][8192], 0);
  EXPECT_DOUBLE_EQ(sum.average[8192], 75);
  auto line = read_file(o.out + "/8192/niah_single_2.jsonl");
  EXPECT_NE(line.find("\"prediction\":\" "), std::string::npos);
  // "http://host:port/v1" is the same endpoint.
  r::EndpointCompleter v1(s.url() + "/v1/", "reader-1", std::make_shared<ByteTokenizer>());
  EXPECT_EQ(v1.complete("x", 3), "I do not know.");
}

TEST(RulerEndpoint, LostInTheMiddleRunsThroughTheSameEndpoint) {
  Server s;
  r::EndpointCompleter target(s.url(), "reader-2", std::make_shared<ByteTokenizer>());
  litm::RunOptions o;
  o.setup = "kv";
  o.sizes = {75};
  o.samples = 2;
  o.out = temp("litm_endpoint");
  auto sum = litm::run(target, o);
  EXPECT_EQ(s.requests, 5 * 2);
  EXPECT_EQ(s.last_max_tokens, 100);
  for (auto& [g, a] : sum.accuracy[75]) EXPECT_DOUBLE_EQ(a, 100) << "gold " << g;
  EXPECT_EQ(sum.accuracy[75].size(), 5u);
}

TEST(RulerEndpoint, ErrorsNameTheEndpointAndWhatWentWrong) {
  auto tok = std::make_shared<ByteTokenizer>();
  {
    Server busy(503);
    r::EndpointCompleter t(busy.url(), "m", tok);
    try {
      t.complete("hello", 4);
      ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find("HTTP 503"), std::string::npos) << m;
      EXPECT_NE(m.find("/v1/completions"), std::string::npos) << m;
    }
  }
  {
    Server odd(200, false);
    r::EndpointCompleter t(odd.url(), "m", tok);
    EXPECT_THROW(t.complete("hello", 4), Error);
  }
  int closed_port = 0;
  {
    Server gone;
    closed_port = gone.port;
  }
  r::EndpointCompleter t("http://127.0.0.1:" + std::to_string(closed_port), "m", tok, 5);
  EXPECT_THROW(t.complete("hello", 4), Error);
  EXPECT_THROW(r::EndpointCompleter("localhost:8000", "m", tok), Error);
  EXPECT_THROW(r::EndpointCompleter("http://localhost:8000", "", tok), Error);
}

#else
TEST(RulerEndpoint, BuiltWithoutHttpClient) { GTEST_SKIP() << "cpp-httplib not found at build time"; }
#endif
