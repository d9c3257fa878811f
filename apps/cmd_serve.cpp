// longctx serve: the OpenAI-compatible HTTP server with persistent reading sessions (src/serve/).
#include <csignal>
#include <cstdio>

#include "commands.h"
#include "serve/server.h"

namespace longctx::cli {

namespace {
Server* g_server = nullptr;
void on_signal(int) {
  if (g_server) g_server->stop();
}
}  // namespace

void add_serve(CLI::App& app, Commands& cmds) {
  auto o = std::make_shared<ServeOptions>();
  auto* s = app.add_subcommand("serve", "serve a model over the OpenAI-compatible HTTP API, with persistent sessions");
  s->add_option("--model", o->model_dir, "model folder")->required();
  s->add_option("--host", o->host, "address to listen on (loopback by default)");
  s->add_option("--port", o->port, "port (0 = a free port)");
  s->add_option("--db", o->db, "session database (SQLite); without it sessions live in memory only");
  s->add_option("--api-key", o->api_key, "require 'Authorization: Bearer KEY' on every endpoint but /health");
  s->add_option("--http-threads", o->http_threads, "requests served at once");
  s->add_option("--max-body-bytes", o->max_body_bytes, "largest request body (413 above)");
  s->add_option("--max-tokens", o->max_tokens, "largest max_tokens a request may ask (413 above)");
  s->add_option("--max-prompt-tokens", o->max_prompt_tokens, "longest prompt or append (413 above)");
  s->add_option("--max-sessions", o->max_sessions, "sessions held in the database (409 above)");
  s->add_option("--chunk", o->chunk, "tokens per model call when reading");
  s->add_option("--set", o->overrides, "override a model config field (e.g. model.mixer.type=sliding_window)");
  cmds.push_back({s, [o] {
                    Server server(*o);
                    int port = server.bind();
                    std::printf("listening on http://%s:%d\n", o->host.c_str(), port);
                    std::fflush(stdout);
                    g_server = &server;
                    std::signal(SIGINT, on_signal);
                    std::signal(SIGTERM, on_signal);
                    server.run();
                    g_server = nullptr;
                    return 0;
                  }});
}

}  // namespace longctx::cli
