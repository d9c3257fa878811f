// `longctx serve`: a model behind the OpenAI-compatible HTTP API (completions, chat completions,
// models, tokenize), plus reading sessions: a stream's bounded state kept in SQLite, appended to
// in any number of calls, continued by completions without re-reading, exported and imported as
// a state file. The endpoints, their errors and the chat template are in docs/SERVE.md.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace longctx {

struct ServeOptions {
  std::string model_dir;
  std::vector<std::string> overrides;  // --set, as for every command
  std::string host = "127.0.0.1";
  int port = 8080;                     // 0 = a free port
  std::string db;                      // the session database; "" = in memory (lost at exit)
  std::string api_key;                 // "" = no key
  int http_threads = 8;                // requests served at once
  int64_t max_body_bytes = 64ll << 20; // a larger body gets 413
  int64_t max_tokens = 4096;           // the largest max_tokens a request may ask
  int64_t max_prompt_tokens = 1 << 20; // a longer prompt (or append) gets 413
  int64_t max_sessions = 1024;         // sessions held in the database
  int64_t chunk = 512;                 // tokens per model call when reading
};

class Server {
 public:
  explicit Server(ServeOptions o);  // loads the model and opens the database
  ~Server();
  int bind();   // binds host:port; returns the port (the free one chosen when port is 0)
  void run();   // serves until stop()
  void stop();
  const std::string& model_id() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace longctx
