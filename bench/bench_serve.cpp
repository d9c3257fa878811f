// `longctx serve` under load, and what a session saves, in one run (the server in this process,
// its clients over loopback HTTP):
//   1. requests/s and generated tokens/s for 1, 8 and 32 concurrent clients, each sending
//      completions (a 64-byte prompt, 16 tokens, greedy) for --seconds; latency p50 / p95;
//   2. a session that has read --session-tokens tokens of Moby Dick answers a question, against a
//      plain completion that re-reads the same text with the question (the reference, same run).
//   build/bench_serve [--model models/infini-passkey] [--clients 1,8,32] [--seconds 10]
//                     [--session-tokens 65536] [--threads N]
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <sstream>
#include <thread>

#include "bench_common.h"
#include "io/fs.h"
#include "serve/server.h"
#include "text/corpus.h"
#include "util/system.h"

using namespace longctx;
using nlohmann::json;

namespace {
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::string post(httplib::Client& c, const std::string& path, const json& body) {
  auto r = c.Post(path.c_str(), body.dump(), "application/json");
  if (!r || r->status >= 300) {
    std::fprintf(stderr, "bench_serve: %s failed: %s\n", path.c_str(), r ? r->body.c_str() : "no response");
    std::exit(1);
  }
  return r->body;
}
}  // namespace

int main(int argc, char** argv) {
  bench::check_flags(argc, argv, {"model", "clients", "seconds", "session-tokens", "threads"},
                     "usage: bench_serve [--model models/infini-passkey] [--clients 1,8,32] [--seconds 10]\n"
                     "                   [--session-tokens 65536] [--threads N]\n");
  int threads = set_threads(std::atoi(bench::flag(argc, argv, "threads", "0").c_str()));
  const std::string model = bench::flag(argc, argv, "model", "models/infini-passkey");
  const double seconds = std::atof(bench::flag(argc, argv, "seconds", "10").c_str());
  const int64_t session_tokens = std::atoll(bench::flag(argc, argv, "session-tokens", "65536").c_str());
  std::vector<int> clients;
  {
    std::stringstream ss(bench::flag(argc, argv, "clients", "1,8,32"));
    for (std::string x; std::getline(ss, x, ',');) clients.push_back(std::atoi(x.c_str()));
  }
  ServeOptions o;
  o.model_dir = model;
  o.port = 0;
  o.db = (std::filesystem::temp_directory_path() / ("bench_serve_" + std::to_string(::getpid()) + ".db")).string();
  o.http_threads = *std::max_element(clients.begin(), clients.end());
  o.max_prompt_tokens = std::max<int64_t>(o.max_prompt_tokens, 2 * session_tokens);
  o.max_body_bytes = std::max<int64_t>(o.max_body_bytes, 4 * session_tokens + (1 << 20));
  Server server(o);
  const int port = server.bind();
  std::thread run([&] { server.run(); });
  std::printf("model %s, %d threads, server on port %d\n\n", model.c_str(), threads, port);
  std::printf("| clients | requests | requests/s | generated tokens/s | latency p50 | latency p95 |\n|---|---|---|---|---|---|\n");
  const std::string prompt = "It was the best of times, it was the worst of times, it was the age of";  // 64+ bytes
  for (int n : clients) {
    std::vector<std::vector<double>> lat(n);
    std::vector<int64_t> gen(n, 0);
    const double t0 = now();
    std::vector<std::thread> th;
    for (int k = 0; k < n; ++k)
      th.emplace_back([&, k] {
        httplib::Client c("127.0.0.1", port);
        c.set_read_timeout(600, 0);
        while (now() - t0 < seconds) {
          const double a = now();
          auto body = post(c, "/v1/completions", {{"prompt", prompt}, {"max_tokens", 16}, {"temperature", 0}});
          lat[k].push_back(now() - a);
          gen[k] += json::parse(body)["usage"]["completion_tokens"].get<int64_t>();
        }
      });
    for (auto& t : th) t.join();
    const double dt = now() - t0;
    std::vector<double> all;
    int64_t g = 0;
    for (int k = 0; k < n; ++k) all.insert(all.end(), lat[k].begin(), lat[k].end()), g += gen[k];
    std::sort(all.begin(), all.end());
    auto pct = [&](double p) { return all.empty() ? 0.0 : all[std::min(all.size() - 1, size_t(p * all.size()))]; };
    std::printf("| %d | %zu | %.1f | %.0f | %.0f ms | %.0f ms |\n", n, all.size(), all.size() / dt, g / dt,
                1000 * pct(0.5), 1000 * pct(0.95));
    std::fflush(stdout);
  }

  // A session that has read the book, against re-reading it.
  std::string book;
  for (auto& d : load_corpus("moby-dick")) {
    book += d.text;
    if (int64_t(book.size()) >= session_tokens) break;
  }
  while (int64_t(book.size()) < session_tokens) book += book;
  book.resize(size_t(session_tokens));  // bytes = tokens for a byte-level model
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(3600, 0);
  const std::string id = json::parse(post(c, "/v1/sessions", json::object()))["id"];
  double t_read = now();
  const size_t piece = 1 << 16;
  for (size_t at = 0; at < book.size(); at += piece)
    post(c, "/v1/sessions/" + id + "/append", {{"text", book.substr(at, piece)}});
  t_read = now() - t_read;
  const json q = {{"prompt", " What is the whale's name? It is"}, {"max_tokens", 8}, {"temperature", 0}};
  json qs = q;
  qs["session"] = id;
  double t_session = now();
  auto a1 = json::parse(post(c, "/v1/completions", qs));
  t_session = now() - t_session;
  json qr = q;
  qr["prompt"] = book + q["prompt"].get<std::string>();
  double t_reread = now();
  auto a2 = json::parse(post(c, "/v1/completions", qr));
  t_reread = now() - t_reread;
  auto sess = json::parse(c.Get(("/v1/sessions/" + id).c_str())->body);
  std::printf("\nsession of %lld tokens (read in %.1f s, state %lld bytes):\n\n", (long long)session_tokens, t_read,
              (long long)sess["state_bytes"].get<int64_t>());
  std::printf("| answer | seconds | ratio |\n|---|---|---|\n");
  std::printf("| from the session (8 tokens) | %.3f | 1 |\n", t_session);
  std::printf("| re-reading the text with the question (reference) | %.3f | %.0fx |\n", t_reread, t_reread / t_session);
  std::printf("\nthe same answer both ways: %s\n", a1["choices"][0]["text"] == a2["choices"][0]["text"] ? "yes" : "no");
  server.stop();
  run.join();
  std::filesystem::remove(o.db);
  return 0;
}
