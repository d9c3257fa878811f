// `longctx serve` through plain HTTP (cpp-httplib's client, no server code): the OpenAI endpoints
// and their errors, SSE framing, logprobs against the model computed directly, sessions (append,
// continue, commit, export/import, delete), persistence across a restart on the same database,
// a failed request leaving a session as it was, and concurrent clients.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "eval/ruler.h"
#include "eval/ruler_http.h"
#include "infer/session.h"
#include "io/fs.h"
#include "text/tokenizer.h"
#include "model/pretrained.h"
#include "serve/server.h"

#include "test_util.h"

#ifdef LONGCTX_HAVE_HTTPLIB
#include <httplib.h>

using namespace longctx;
using nlohmann::json;

namespace {

std::string temp(const std::string& name) { return longctx::testing::temp_dir(name); }  // tests/test_util.h

// A small Infini-attention (DeltaNet memory, window) model with random weights, bytes as tokens.
std::string make_model(const std::string& dir) {
  json cfg = {{"model",
               {{"d_model", 32}, {"n_layers", 2}, {"n_heads", 2}, {"d_ff", 64},
                {"mixer", {{"type", "infini_attention"}, {"segment", 16}, {"update", "deltanet"}, {"read", "token"},
                           {"local", "window"}, {"chunk", 8}}}}},
              {"tokenizer", {{"type", "byte"}}}};
  write_file_atomic(dir + "/config.json", cfg.dump(2));
  torch::manual_seed(5);
  CausalLM m(ModelConfig::from_json(cfg["model"], dir + "/config.json"));
  save_weights(dir + "/model.safetensors", m);
  return dir;
}

struct Running {
  std::unique_ptr<Server> server;
  std::thread thread;
  int port = 0;
  Running(ServeOptions o) {
    o.port = 0;
    server = std::make_unique<Server>(o);
    port = server->bind();
    thread = std::thread([this] { server->run(); });
  }
  ~Running() {
    server->stop();
    thread.join();
  }
  httplib::Client client(const std::string& key = "") const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    if (!key.empty()) c.set_bearer_token_auth(key.c_str());
    return c;
  }
};

json post(httplib::Client& c, const std::string& path, const json& body, int want = 200) {
  auto r = c.Post(path.c_str(), body.dump(), "application/json");
  EXPECT_TRUE(r) << path;
  if (!r) return {};
  EXPECT_EQ(r->status, want) << path << ": " << r->body;
  return json::parse(r->body);
}

// Text as a JSON string carries it (nlohmann's own replacement of what is not UTF-8 by U+FFFD):
// a byte-level model with random weights emits arbitrary bytes.
std::string as_json_text(const std::string& raw) {
  return json::parse(json(raw).dump(-1, ' ', false, json::error_handler_t::replace)).get<std::string>();
}

json with(json j, const json& extra) {
  j.update(extra);
  return j;
}

void expect_error(const httplib::Result& r, int status, const std::string& fragment) {
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, status) << r->body;
  auto j = json::parse(r->body);
  ASSERT_TRUE(j.contains("error")) << r->body;
  EXPECT_NE(j["error"]["message"].get<std::string>().find(fragment), std::string::npos) << r->body;
  EXPECT_TRUE(j["error"].contains("type"));
}

}  // namespace

TEST(Serve, EndpointsAnswerAndEveryBadRequestGetsAnOpenAIErrorWithItsStatus) {
  auto dir = make_model(temp("endpoints"));
  ServeOptions o;
  o.model_dir = dir;
  o.api_key = "k123";
  o.max_tokens = 50;
  o.max_body_bytes = 4096;
  Running s(o);
  auto open = s.client();
  auto c = s.client("k123");
  auto h = open.Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);  // no key needed
  expect_error(open.Get("/v1/models"), 401, "API key");
  expect_error(s.client("wrong").Get("/v1/models"), 401, "incorrect");
  auto m = c.Get("/v1/models");
  ASSERT_TRUE(m);
  auto mj = json::parse(m->body);
  const std::string id = mj["data"][0]["id"];
  EXPECT_EQ(id, std::filesystem::path(dir).filename().string());
  expect_error(c.Post("/v1/completions", "{not json", "application/json"), 400, "not valid JSON");
  expect_error(c.Post("/v1/completions", R"({"model": "gpt-9", "prompt": "a"})", "application/json"), 404, "gpt-9");
  expect_error(c.Post("/v1/completions", R"({"prompt": "a", "max_tokens": 51})", "application/json"), 413, "--max-tokens");
  expect_error(c.Post("/v1/completions", R"({"prompt": "a", "temperature": "hot"})", "application/json"), 400, "temperature");
  expect_error(c.Post("/v1/completions", R"({"prompt": [300]})", "application/json"), 400, "vocabulary");
  expect_error(c.Post("/v1/completions", json{{"prompt", std::string(5000, 'a')}}.dump(), "application/json"), 413,
               "--max-body-bytes");
  expect_error(c.Post("/v1/completions", R"({"prompt": "a", "session": "sess_nope"})", "application/json"), 404, "sess_nope");
  expect_error(c.Get("/v1/nothing"), 404, "no such endpoint");
  // Tokenize and detokenize are each other's inverse; ids out of the vocabulary are refused.
  auto t = post(c, "/tokenize", {{"content", "héllo"}});
  EXPECT_EQ(t["tokens"].size(), 6u);
  EXPECT_EQ(post(c, "/detokenize", {{"tokens", t["tokens"]}})["content"], "héllo");
  expect_error(c.Post("/detokenize", R"({"tokens": [256]})", "application/json"), 400, "vocabulary");
  // A completion and a chat completion, with usage.
  auto r = post(c, "/v1/completions", {{"model", id}, {"prompt", "The sky"}, {"max_tokens", 7}, {"seed", 3}});
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["usage"]["prompt_tokens"], 7);
  EXPECT_EQ(r["usage"]["completion_tokens"], 7);
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  auto ch = post(c, "/v1/chat/completions",
                 {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 5}, {"seed", 1}});
  EXPECT_EQ(ch["object"], "chat.completion");
  EXPECT_EQ(ch["choices"][0]["message"]["role"], "assistant");
  expect_error(c.Post("/v1/chat/completions", R"({"messages": [{"role": "robot", "content": "x"}]})", "application/json"),
               400, "robot");
  // Content as text parts reads as the same text: the same prompt, so the same greedy answer.
  json greedy_chat = {{"max_tokens", 6}, {"temperature", 0}};
  auto as_string = post(c, "/v1/chat/completions", with(greedy_chat, {{"messages", {{{"role", "user"}, {"content", "hello there"}}}}}));
  auto as_parts = post(c, "/v1/chat/completions",
                       with(greedy_chat, {{"messages", {{{"role", "user"},
                                                         {"content", {{{"type", "text"}, {"text", "hello "}},
                                                                      {{"type", "text"}, {"text", "there"}}}}}}}}));
  EXPECT_EQ(as_parts["choices"], as_string["choices"]);
  EXPECT_EQ(as_parts["usage"]["prompt_tokens"], as_string["usage"]["prompt_tokens"]);
  // Chat streamed: the first chunk names the role, then deltas, a finish reason, [DONE].
  auto cs = c.Post("/v1/chat/completions",
                   json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 5}, {"seed", 1}, {"stream", true}}.dump(),
                   "application/json");
  ASSERT_TRUE(cs);
  EXPECT_EQ(cs->body.rfind("data: {", 0), 0u);
  auto first = json::parse(cs->body.substr(6, cs->body.find("\n\n") - 6));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_NE(cs->body.find("\"finish_reason\":\"length\""), std::string::npos);
  EXPECT_EQ(cs->body.substr(cs->body.size() - 14), "data: [DONE]\n\n");
  // Metrics in Prometheus' text format count what happened.
  auto mt = c.Get("/metrics");
  ASSERT_TRUE(mt);
  EXPECT_NE(mt->body.find("longctx_requests_total{route=\"/v1/completions\",status=\"413\"}"), std::string::npos);
  EXPECT_NE(mt->body.find("longctx_tokens_out_total 29"), std::string::npos) << mt->body;
}

TEST(Serve, SessionsBeyondTheLimitAreRefusedWith409) {
  auto dir = make_model(temp("limit"));
  ServeOptions o;
  o.model_dir = dir;
  o.max_sessions = 2;
  Running s(o);
  auto c = s.client();
  auto a = post(c, "/v1/sessions", json::object(), 201);
  post(c, "/v1/sessions", json::object(), 201);
  expect_error(c.Post("/v1/sessions", "{}", "application/json"), 409, "--max-sessions");
  ASSERT_TRUE(c.Delete(("/v1/sessions/" + a["id"].get<std::string>()).c_str()));
  post(c, "/v1/sessions", json::object(), 201);  // room again
}

TEST(Serve, CompletionsMatchTheModelRunDirectlyAndStreamAsServerSentEvents) {
  auto dir = make_model(temp("direct"));
  ServeOptions o;
  o.model_dir = dir;
  Running s(o);
  auto c = s.client();
  const std::string prompt = "A whale of a tale, told at sea by sailors.";
  // Greedy text equals the library's Session, run here beside the server.
  auto r = post(c, "/v1/completions", {{"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0}});
  auto p = load_pretrained(dir);
  Session sess(p.model);
  auto ids = p.tokenizer->encode(prompt);
  sess.feed(ids);
  SamplingOptions greedy;
  greedy.temperature = 0;
  auto out = sess.generate(12, greedy);
  EXPECT_EQ(r["choices"][0]["text"].get<std::string>(), as_json_text(p.tokenizer->decode(out)));
  // The same seed gives the same sample.
  json ask = {{"prompt", prompt}, {"max_tokens", 10}, {"seed", 42}, {"temperature", 0.9}};
  auto a1 = post(c, "/v1/completions", ask), a2 = post(c, "/v1/completions", ask);
  EXPECT_EQ(a1["choices"][0]["text"], a2["choices"][0]["text"]);
  // echo + logprobs with max_tokens 0 (how lm-evaluation-harness scores text): the prompt's
  // token log probabilities equal a full forward pass's log-softmax.
  auto lp = post(c, "/v1/completions", {{"prompt", prompt}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 1}});
  auto& tl = lp["choices"][0]["logprobs"]["token_logprobs"];
  ASSERT_EQ(tl.size(), ids.size());
  EXPECT_TRUE(tl[0].is_null());
  torch::NoGradGuard ng;
  auto st = p.model->new_state();
  auto x = torch::tensor(ids, torch::kInt64).unsqueeze(0);
  auto logp = torch::log_softmax(p.model->forward(x, st).squeeze(0).to(torch::kFloat64), -1);
  for (size_t i = 1; i < ids.size(); ++i)
    EXPECT_NEAR(tl[i].get<double>(), logp[int64_t(i) - 1][ids[i]].item<double>(), 1e-4) << "token " << i;
  EXPECT_EQ(lp["choices"][0]["text"], prompt);
  // Streaming: "data: {json}\n\n" events ending with "data: [DONE]"; the text pieces join to the
  // non-streamed completion with the same seed.
  ask["stream"] = true;
  auto sr = c.Post("/v1/completions", ask.dump(), "application/json");
  ASSERT_TRUE(sr);
  EXPECT_EQ(sr->status, 200);
  EXPECT_NE(sr->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  std::string body = sr->body, joined, finish;
  size_t at = 0, events = 0;
  bool done = false;
  while (at < body.size()) {
    auto end = body.find("\n\n", at);
    ASSERT_NE(end, std::string::npos) << "an event without its blank line: " << body.substr(at);
    auto ev = body.substr(at, end - at);
    ASSERT_EQ(ev.rfind("data: ", 0), 0u) << ev;
    ASSERT_FALSE(done) << "an event after [DONE]";
    if (ev == "data: [DONE]") {
      done = true;
    } else {
      auto j = json::parse(ev.substr(6));
      joined += j["choices"][0]["text"].get<std::string>();
      if (!j["choices"][0]["finish_reason"].is_null()) finish = j["choices"][0]["finish_reason"];
      ++events;
    }
    at = end + 2;
  }
  EXPECT_TRUE(done);
  EXPECT_GE(events, 2u);
  EXPECT_EQ(joined, a1["choices"][0]["text"].get<std::string>());
  EXPECT_EQ(finish, "length");
  // A stop string ends the text before it (an ASCII character of the sampled text, past its first).
  auto full = a1["choices"][0]["text"].get<std::string>();
  size_t at_stop = std::string::npos;
  for (size_t i = 1; i < full.size() && at_stop == std::string::npos; ++i)
    if (full[i] > 32 && full[i] < 127) at_stop = i;
  if (at_stop != std::string::npos) {
    ask["stream"] = false;
    ask["stop"] = full.substr(at_stop, 1);
    auto st2 = post(c, "/v1/completions", ask);
    EXPECT_EQ(st2["choices"][0]["text"].get<std::string>(), full.substr(0, full.find(full[at_stop])));
    EXPECT_EQ(st2["choices"][0]["finish_reason"], "stop");
  }
}

TEST(Serve, SessionsReadInPiecesContinueWithoutRereadingAndSurviveARestart) {
  auto dir = make_model(temp("sessions"));
  auto db = temp("sessions_db") + "/sessions.db";
  ServeOptions o;
  o.model_dir = dir;
  o.db = db;
  const std::string book = "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money "
                           "in my purse, and nothing particular to interest me on shore, I thought I would sail about.";
  std::string id;
  json before;
  json ask = {{"prompt", " The sea"}, {"max_tokens", 9}, {"seed", 7}, {"temperature", 0.8}, {"logprobs", 2}};
  {
    Running s(o);
    auto c = s.client();
    auto created = post(c, "/v1/sessions", json::object(), 201);
    id = created["id"];
    EXPECT_EQ(created["tokens"], 0);
    // The book in three appends.
    size_t third = book.size() / 3;
    for (int k = 0; k < 3; ++k) {
      auto piece = book.substr(k * third, k == 2 ? std::string::npos : third);
      post(c, "/v1/sessions/" + id + "/append", {{"text", piece}});
    }
    auto g = c.Get(("/v1/sessions/" + id).c_str());
    ASSERT_TRUE(g);
    auto gj = json::parse(g->body);
    EXPECT_EQ(gj["tokens"], int64_t(book.size()));
    EXPECT_GT(gj["state_bytes"].get<int64_t>(), 0);
    // Continuing the session equals reading the book and the prompt in one request (greedy).
    json greedy = {{"prompt", " The sea"}, {"max_tokens", 9}, {"temperature", 0}};
    auto on_session = post(c, "/v1/completions", with(greedy, {{"session", id}}));
    auto whole = post(c, "/v1/completions", with(greedy, {{"prompt", book + " The sea"}}));
    EXPECT_EQ(on_session["choices"][0]["text"], whole["choices"][0]["text"]);
    // Without commit the session is unchanged; a failed request leaves it as it was too.
    expect_error(c.Post(("/v1/sessions/" + id + "/append").c_str(), R"({"text": 5})", "application/json"), 400, "text");
    before = post(c, "/v1/completions", with(ask, {{"session", id}}));
    EXPECT_EQ(post(c, "/v1/completions", with(ask, {{"session", id}}))["choices"], before["choices"]);
    // Export, import under a new id: the same continuation.
    auto exp = c.Get(("/v1/sessions/" + id + "/state").c_str());
    ASSERT_TRUE(exp);
    auto imp = c.Put("/v1/sessions/copy-1/state", exp->body, "application/octet-stream");
    ASSERT_TRUE(imp);
    EXPECT_EQ(imp->status, 201) << imp->body;
    auto on_copy = post(c, "/v1/completions", with(ask, {{"session", "copy-1"}}));
    EXPECT_EQ(on_copy["choices"], before["choices"]);
    // A state that is not one is refused by name, and changes nothing.
    expect_error(c.Put("/v1/sessions/copy-1/state", "garbage", "application/octet-stream"), 400, "uploaded state");
    EXPECT_EQ(post(c, "/v1/completions", with(ask, {{"session", "copy-1"}}))["choices"], before["choices"]);
    // Commit: the session reads the prompt and the completion.
    auto committed = post(c, "/v1/completions", with(ask, {{"session", "copy-1"}, {"commit", true}}));
    EXPECT_EQ(committed["session"]["tokens"], int64_t(book.size() + 8 + 9));
    // Delete.
    auto del = c.Delete("/v1/sessions/copy-1");
    ASSERT_TRUE(del);
    EXPECT_EQ(del->status, 200);
    expect_error(c.Get("/v1/sessions/copy-1"), 404, "copy-1");
  }
  // A new server on the same database: the session continues bit for bit.
  Running s2(o);
  auto c2 = s2.client();
  auto after = post(c2, "/v1/completions", with(ask, {{"session", id}}));
  EXPECT_EQ(after["choices"], before["choices"]);
  expect_error(c2.Get("/v1/sessions/copy-1"), 404, "copy-1");
}

TEST(Serve, ConcurrentClientsOnTheirOwnSessionsAllSucceedAndReadExactly) {
  auto dir = make_model(temp("concurrent"));
  ServeOptions o;
  o.model_dir = dir;
  o.db = temp("concurrent_db") + "/s.db";
  Running s(o);
  const int clients = 8, rounds = 4;
  std::vector<std::string> ids(clients);
  std::vector<int> failures(clients, 0);
  std::vector<std::thread> th;
  for (int k = 0; k < clients; ++k)
    th.emplace_back([&, k] {
      auto c = s.client();
      auto r = c.Post("/v1/sessions", "{}", "application/json");
      if (!r || r->status != 201) return void(++failures[k]);
      ids[k] = json::parse(r->body)["id"];
      for (int i = 0; i < rounds; ++i) {
        auto a = c.Post(("/v1/sessions/" + ids[k] + "/append").c_str(), json{{"text", "round " + std::to_string(i) + ". "}}.dump(),
                        "application/json");
        if (!a || a->status != 200) ++failures[k];
        auto q = c.Post("/v1/completions", json{{"session", ids[k]}, {"prompt", "x"}, {"max_tokens", 3}}.dump(),
                        "application/json");
        if (!q || q->status != 200) ++failures[k];
      }
    });
  for (auto& t : th) t.join();
  auto c = s.client();
  for (int k = 0; k < clients; ++k) {
    EXPECT_EQ(failures[k], 0) << "client " << k;
    auto g = c.Get(("/v1/sessions/" + ids[k]).c_str());
    ASSERT_TRUE(g);
    EXPECT_EQ(json::parse(g->body)["tokens"], rounds * 9) << "client " << k;  // "round i. " is 9 bytes
  }
}

// `longctx serve` as its own process (the binary beside this test's): started, its port read
// from the "listening on" line, killed with SIGKILL.
struct Process {
  pid_t pid = -1;
  int port = 0;
  Process(const std::string& model, const std::string& db) {
    auto exe = std::filesystem::read_symlink("/proc/self/exe").parent_path() / "longctx";
    int fd[2];
    if (pipe(fd) != 0) throw std::runtime_error("pipe");
    pid = fork();
    if (pid == 0) {
      dup2(fd[1], 1);
      close(fd[0]);
      execl(exe.c_str(), exe.c_str(), "--threads", "1", "serve", "--model", model.c_str(), "--port", "0", "--db",
            db.c_str(), (char*)nullptr);
      _exit(127);
    }
    close(fd[1]);
    FILE* f = fdopen(fd[0], "r");
    char line[256] = {0};
    if (f && std::fgets(line, sizeof line, f)) {
      std::string l = line;
      auto colon = l.rfind(':');
      if (l.rfind("listening on http://", 0) == 0 && colon != std::string::npos) port = std::atoi(l.c_str() + colon + 1);
    }
    if (f) std::fclose(f);
  }
  void kill9() {
    if (pid > 0) ::kill(pid, SIGKILL), waitpid(pid, nullptr, 0), pid = -1;
  }
  ~Process() { kill9(); }
};

TEST(Serve, ASessionThatAnsweredSurvivesKillDashNineBitForBit) {
  auto dir = make_model(temp("kill9"));
  auto db = temp("kill9_db") + "/s.db";
  json ask = {{"prompt", " and then"}, {"max_tokens", 12}, {"seed", 11}, {"temperature", 0.9}, {"logprobs", 3}};
  std::string id;
  json expect_next, committed;
  {
    Process p(dir, db);
    ASSERT_GT(p.port, 0) << "the server did not print its port";
    httplib::Client c("127.0.0.1", p.port);
    c.set_read_timeout(120, 0);
    id = post(c, "/v1/sessions", json::object(), 201)["id"];
    post(c, "/v1/sessions/" + id + "/append", {{"text", "It was the best of times, it was the worst of times."}});
    committed = post(c, "/v1/completions", with(ask, {{"session", id}, {"commit", true}}));
    // What the uninterrupted server answers next, with the same seed (the session unchanged by it).
    expect_next = post(c, "/v1/completions", with(ask, {{"session", id}}));
    p.kill9();  // no shutdown: the answered requests must already be on disk
  }
  Process p2(dir, db);
  ASSERT_GT(p2.port, 0);
  httplib::Client c2("127.0.0.1", p2.port);
  c2.set_read_timeout(120, 0);
  auto g = c2.Get(("/v1/sessions/" + id).c_str());
  ASSERT_TRUE(g);
  EXPECT_EQ(json::parse(g->body)["tokens"], committed["session"]["tokens"]);
  auto next = post(c2, "/v1/completions", with(ask, {{"session", id}}));
  EXPECT_EQ(next["choices"], expect_next["choices"]);
}

int64_t rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  return -1;
}

TEST(Serve, ThirtyTwoClientsForThirtySecondsNoFailureNoSessionCorruptedMemoryFlat) {
  auto dir = make_model(temp("load"));
  Process p(dir, temp("load_db") + "/s.db");
  ASSERT_GT(p.port, 0);
  const int clients = 32;
  const double seconds = 30;
  std::vector<int64_t> failures(clients, 0), requests(clients, 0), expected(clients, 0);
  std::vector<std::string> ids(clients), first_failure(clients);
  std::atomic<int64_t> rss_early{-1};
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  std::vector<std::thread> th;
  for (int k = 0; k < clients; ++k)
    th.emplace_back([&, k] {
      httplib::Client c("127.0.0.1", p.port);
      c.set_read_timeout(120, 0);
      // Counts a failed request, keeping the first one's description for the report.
      auto failed = [&](const char* what, const httplib::Result& res) {
        if (!failures[k]++)
          first_failure[k] = std::string(what) + ": " +
                             (res ? "status " + std::to_string(res->status) + " " + res->body
                                  : "no response (" + httplib::to_string(res.error()) + ")");
      };
      auto r = c.Post("/v1/sessions", "{}", "application/json");
      if (!r || r->status != 201) return failed("POST /v1/sessions", r);
      ids[k] = json::parse(r->body)["id"];
      for (int i = 0; elapsed() < seconds; ++i) {
        const std::string text = "client " + std::to_string(k) + " round " + std::to_string(i) + ". ";
        auto a = c.Post(("/v1/sessions/" + ids[k] + "/append").c_str(), json{{"text", text}}.dump(), "application/json");
        ++requests[k];
        if (!a || a->status != 200) failed("append", a);
        else expected[k] += int64_t(text.size());
        const bool commit = i % 3 == 0;
        auto q = c.Post("/v1/completions",
                        json{{"session", ids[k]}, {"prompt", "x"}, {"max_tokens", 4}, {"commit", commit}}.dump(),
                        "application/json");
        ++requests[k];
        if (!q || q->status != 200) failed("session completion", q);
        else if (commit) expected[k] += 1 + int64_t(json::parse(q->body)["usage"]["completion_tokens"].get<int64_t>());
        auto plain = c.Post("/v1/completions", json{{"prompt", text}, {"max_tokens", 3}}.dump(), "application/json");
        ++requests[k];
        if (!plain || plain->status != 200) failed("completion", plain);
        if (k == 0 && rss_early < 0 && elapsed() > seconds / 3) rss_early = rss_kib(p.pid);
      }
    });
  for (auto& t : th) t.join();
  const int64_t rss_late = rss_kib(p.pid);
  httplib::Client c("127.0.0.1", p.port);
  int64_t total = 0;
  for (int k = 0; k < clients; ++k) {
    total += requests[k];
    EXPECT_EQ(failures[k], 0) << "client " << k << ", first failure: " << first_failure[k];
    if (ids[k].empty()) continue;
    auto g = c.Get(("/v1/sessions/" + ids[k]).c_str());
    ASSERT_TRUE(g);
    EXPECT_EQ(json::parse(g->body)["tokens"].get<int64_t>(), expected[k]) << "session of client " << k;
  }
  EXPECT_GT(total, clients * 3);
  ASSERT_GT(rss_early.load(), 0);
  // Memory flat: the last two thirds of the run add less than 10% (+16 MiB of allocator slack).
  EXPECT_LT(rss_late, rss_early * 11 / 10 + 16 * 1024) << "RSS " << rss_early << " KiB -> " << rss_late << " KiB";
  std::printf("[ 32 clients, %.0f s: %lld requests, server RSS %lld -> %lld KiB ]\n", seconds, (long long)total,
              (long long)rss_early.load(), (long long)rss_late);
}

// The web page at / in headless Chromium (Debian's): ?demo= makes the page create a session,
// append a text and stream a continuation; the DOM it ends with and the requests the server
// received are asserted, and a screenshot is left in the test's temporary folder.
TEST(Serve, TheWebPageDrivesASessionInHeadlessChromium) {
  if (std::system("command -v chromium >/dev/null 2>&1") != 0) GTEST_SKIP() << "chromium is not installed (make setup)";
  auto dir = make_model(temp("page"));
  ServeOptions o;
  o.model_dir = dir;
  Running s(o);
  const std::string url = "http://127.0.0.1:" + std::to_string(s.port) + "/?demo=";
  const std::string out = temp("page_out");
  const std::string flags = "chromium --headless --no-sandbox --disable-gpu --virtual-time-budget=30000 ";
  ASSERT_EQ(std::system((flags + "--dump-dom '" + url + "' > " + out + "/dom.html 2>/dev/null").c_str()), 0);
  auto dom = read_file(out + "/dom.html");
  // The demo text is 63 characters, one token each: the page shows the session's tokens read.
  EXPECT_NE(dom.find("tokens read: <b id=\"tokens\">63</b>"), std::string::npos) << dom.substr(0, 3000);
  EXPECT_NE(dom.find("(63 tokens)"), std::string::npos);
  EXPECT_EQ(dom.find("class=\"error\""), std::string::npos) << "the page reported an error";
  ASSERT_EQ(std::system((flags + "--window-size=1000,900 --screenshot=" + out + "/page.png '" + url + "' >/dev/null 2>&1").c_str()), 0);
  EXPECT_GT(std::filesystem::file_size(out + "/page.png"), 10000u);
  std::printf("[ screenshot: %s/page.png ]\n", out.c_str());
  // The page's own requests, as the server counted them (two page loads).
  auto m = s.client().Get("/metrics");
  ASSERT_TRUE(m);
  for (auto line : {"route=\"/\",status=\"200\"} 2", "route=\"/v1/sessions\",status=\"201\"} 2",
                    "route=\"/v1/sessions/{id}/append\",status=\"200\"} 2", "route=\"/v1/completions\",status=\"200\"} 2"})
    EXPECT_NE(m->body.find(line), std::string::npos) << line << "\n" << m->body;
}

TEST(Serve, AClientThatLeavesMidStreamFreesItsSessionAndCommitsNothing) {
  auto dir = make_model(temp("leave"));
  ServeOptions o;
  o.model_dir = dir;
  o.max_tokens = 100000;
  Running s(o);
  auto c = s.client();
  const std::string id = post(c, "/v1/sessions", json::object(), 201)["id"];
  post(c, "/v1/sessions/" + id + "/append", {{"text", "Some text to start from."}});
  // A raw socket: ask for a long committed stream, read its first bytes, hang up.
  const std::string body = json{{"session", id}, {"prompt", " and"}, {"max_tokens", 100000}, {"stream", true},
                                {"commit", true}}.dump();
  const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(s.port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(send(fd, req.data(), req.size(), 0), ssize_t(req.size()));
  char buf[512];
  ASSERT_GT(recv(fd, buf, sizeof buf, 0), 0);  // the stream has started (the session is held)
  close(fd);
  // The session is free again soon (not after 100000 tokens), and holds what it held.
  const auto t0 = std::chrono::steady_clock::now();
  auto g = c.Get(("/v1/sessions/" + id).c_str());
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(g);
  EXPECT_EQ(json::parse(g->body)["tokens"], 24);
  EXPECT_LT(waited, 20.0) << "the abandoned stream kept the session";
}

TEST(Serve, RulerRunsEndToEndAgainstTheServerWithItsKey) {
  auto dir = make_model(temp("ruler"));
  ServeOptions o;
  o.model_dir = dir;
  o.api_key = "sk-ruler";
  Running s(o);
  const std::string url = "http://127.0.0.1:" + std::to_string(s.port);
  const std::string id = std::filesystem::path(dir).filename().string();
  auto tok = std::make_shared<ByteTokenizer>();
  // Without the key: the harness stops with the server's 401, named.
  ruler::EndpointCompleter keyless(url, id, tok);
  try {
    keyless.complete("x", 2);
    ADD_FAILURE() << "a keyless request was served";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("HTTP 401"), std::string::npos) << e.what();
  }
  ruler::EndpointCompleter target(url, id, tok, 600, "sk-ruler");
  ruler::RunOptions ro;
  ro.tasks = {"niah_single_1", "vt"};
  ro.lengths = {2048};
  ro.samples = 2;
  ro.seed = 4;
  ro.out = temp("ruler_out");
  auto sum = ruler::run(target, ruler::Resources::load(), ro);
  EXPECT_TRUE(sum.score.count("niah_single_1"));
  EXPECT_TRUE(std::filesystem::exists(ro.out + "/2048/niah_single_1.jsonl"));
  // Every prompt went through the server: 4 completions answered 200.
  auto m = s.client("sk-ruler").Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("longctx_requests_total{route=\"/v1/completions\",status=\"200\"} 4"), std::string::npos)
      << m->body;
}

#endif  // LONGCTX_HAVE_HTTPLIB
