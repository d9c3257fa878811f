#include <algorithm>
#include "serve/server.h"

#ifdef LONGCTX_HAVE_HTTPLIB
#include <httplib.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <random>
#include <sstream>

#include "infer/session.h"
#include "model/pretrained.h"
#include "serve/store.h"
#include "serve_page.h"  // generated from src/serve/page.html
#include "util/error.h"

namespace longctx {

using nlohmann::json;

namespace {

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// JSON text out: strings that are not UTF-8 are repaired (see sanitize_utf8), never an exception.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// An error a handler raises: becomes an OpenAI-style JSON body with this status.
struct HttpError {
  int status;
  std::string message, type, param, code;
};

[[noreturn]] void http_fail(int status, std::string message, std::string param = "", std::string code = "") {
  const char* type = status == 401 ? "authentication_error"
                     : status == 404 ? "not_found_error"
                     : status == 409 ? "conflict_error"
                     : status == 413 ? "request_too_large"
                     : status >= 500 ? "server_error"
                                     : "invalid_request_error";
  throw HttpError{status, std::move(message), type, std::move(param), std::move(code)};
}

void send_error(httplib::Response& res, const HttpError& e) {
  json err = {{"message", e.message}, {"type", e.type}, {"param", e.param.empty() ? json() : json(e.param)},
              {"code", e.code.empty() ? json() : json(e.code)}};
  res.status = e.status;
  res.set_content(dump(json{{"error", err}}), "application/json");
}

// The longest prefix of s that ends on a whole UTF-8 character (a byte model may stop inside one).
size_t utf8_complete_prefix(const std::string& s) {
  size_t n = s.size(), i = n;
  int back = 0;
  while (i > 0 && back < 4) {
    unsigned char c = static_cast<unsigned char>(s[i - 1]);
    if ((c & 0xC0) != 0x80) {  // a lead byte (or ASCII) at i - 1
      int need = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
      return (n - (i - 1)) >= size_t(need) ? n : i - 1;
    }
    --i, ++back;
  }
  return n;
}

// Text for JSON: what is not UTF-8 becomes U+FFFD, one for each maximal ill-formed subpart (the
// Unicode recommendation, and what nlohmann::json's replace handler does). A byte-level model
// can emit any byte; JSON strings must be UTF-8.
std::string sanitize_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  auto cont = [](unsigned char b, unsigned char lo, unsigned char hi) { return b >= lo && b <= hi; };
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out += char(c);
      ++i;
      continue;
    }
    size_t need = (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
    size_t k = need ? 1 : 0;
    while (k > 0 && k < need && i + k < s.size()) {
      const unsigned char b = static_cast<unsigned char>(s[i + k]);
      unsigned char lo = 0x80, hi = 0xBF;
      if (k == 1) {  // the second byte's range excludes overlongs, surrogates and > U+10FFFF
        if (c == 0xE0) lo = 0xA0;
        else if (c == 0xED) hi = 0x9F;
        else if (c == 0xF0) lo = 0x90;
        else if (c == 0xF4) hi = 0x8F;
      }
      if (!cont(b, lo, hi)) break;
      ++k;
    }
    if (need && k == need) {
      out.append(s, i, need);
      i += need;
    } else {
      out += "\xEF\xBF\xBD";
      i += std::max<size_t>(1, k);
    }
  }
  return out;
}


// Fields of a request body, with their types checked and named in errors.
struct Body {
  json j;
  template <class T>
  T get(const char* name, T def) const {
    if (!j.contains(name) || j[name].is_null()) return def;
    try {
      return j[name].get<T>();
    } catch (const std::exception&) {
      http_fail(400, std::string("'") + name + "' has the wrong type: " + j[name].dump().substr(0, 80), name);
    }
  }
};

Body parse_body(const httplib::Request& req) {
  Body b;
  if (req.body.empty()) http_fail(400, "the request body is empty; expected a JSON object");
  try {
    b.j = json::parse(req.body);
  } catch (const std::exception& e) {
    http_fail(400, std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!b.j.is_object()) http_fail(400, "the request body must be a JSON object");
  return b;
}

// What a completion asks for, read from a request body.
struct Ask {
  std::vector<std::vector<int64_t>> prompts;  // token ids per prompt
  std::vector<std::string> prompt_texts;
  int64_t max_tokens = 16, n = 1, logprobs = -1;  // -1: no logprobs
  SamplingOptions so;
  bool echo = false, stream = false, commit = false;
  std::vector<std::string> stop;
  std::string session;
};

}  // namespace

struct Server::Impl {
  ServeOptions o;
  Pretrained p;
  std::vector<int64_t> eos_;  // generation ends at these (a Hugging Face model's eos_token_id)
  std::string model_id;
  std::unique_ptr<SessionStore> store;
  httplib::Server http;
  int port = 0;
  double started = wall_seconds();

  // Sessions read from the store are kept here; a request on a session holds its mutex, so
  // requests on one session run one at a time and different sessions run concurrently.
  struct Live {
    std::mutex mu;
    bool loaded = false, deleted = false;
    ModelState state;
    torch::Tensor logits;  // after the last token read ([V]; undefined before any)
    SessionRow row;        // without its state bytes
  };
  std::mutex live_mu;
  std::map<std::string, std::shared_ptr<Live>> live;

  // Metrics.
  std::mutex metrics_mu;
  std::map<std::pair<std::string, int>, int64_t> requests;  // (route, status) -> count
  double latency_sum = 0;
  int64_t latency_count = 0;
  std::vector<double> latency_buckets = {0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300};
  std::vector<int64_t> latency_hist = std::vector<int64_t>(9, 0);
  std::atomic<int64_t> tokens_in{0}, tokens_out{0};
  std::mt19937_64 id_rng{std::random_device{}()};
  std::mutex id_mu;

  explicit Impl(ServeOptions opt) : o(std::move(opt)) {
    LCX_CHECK(o.max_tokens > 0, "serve: --max-tokens ", o.max_tokens, " must be > 0");
    LCX_CHECK(o.max_body_bytes > 0, "serve: --max-body-bytes ", o.max_body_bytes, " must be > 0");
    LCX_CHECK(o.max_sessions > 0, "serve: --max-sessions ", o.max_sessions, " must be > 0");
    LCX_CHECK(o.http_threads > 0, "serve: --http-threads ", o.http_threads, " must be > 0");
    LCX_CHECK(o.chunk > 0, "serve: chunk ", o.chunk, " must be > 0");
    p = load_pretrained(o.model_dir, o.overrides);
    eos_ = eos_token_ids(p);
    p.model->eval();
    std::string d = o.model_dir;
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    model_id = d.substr(d.find_last_of('/') == std::string::npos ? 0 : d.find_last_of('/') + 1);
    store = std::make_unique<SessionStore>(o.db);
    routes();
  }

  // ---- reading ----
  // Feeds tokens in chunks; returns the logits after the last one. With lps, also the log
  // probability of each token given what came before (NaN for a first token with no logits).
  torch::Tensor feed(ModelState& st, const std::vector<int64_t>& toks, torch::Tensor last,
                     std::vector<double>* lps = nullptr, std::vector<std::vector<std::pair<int64_t, double>>>* tops = nullptr,
                     int64_t top_n = 0) {
    if (toks.empty()) return last;
    std::function<void(const torch::Tensor&, size_t)> score;
    torch::Tensor prev = last.defined() ? torch::log_softmax(last.to(torch::kFloat64), -1) : torch::Tensor();
    if (lps)
      score = [&](const torch::Tensor& h, size_t first) {
        auto lg = torch::log_softmax(p.model->logits(h).squeeze(0).to(torch::kFloat64), -1);  // [n, V]
        for (int64_t t = 0; t < lg.size(0); ++t) record_logprob(t == 0 ? prev : lg[t - 1], toks[first + size_t(t)], lps, tops, top_n);
        prev = lg[lg.size(0) - 1];
      };
    return feed_tokens(p.model, st, toks, o.chunk, score);
  }

  static void record_logprob(const torch::Tensor& logp, int64_t tok, std::vector<double>* lps,
                             std::vector<std::vector<std::pair<int64_t, double>>>* tops, int64_t top_n) {
    if (!logp.defined()) {
      lps->push_back(std::nan(""));
      if (tops) tops->push_back({});
      return;
    }
    lps->push_back(logp[tok].item<double>());
    if (tops) {
      std::vector<std::pair<int64_t, double>> v;
      if (top_n > 0) {
        auto tk = logp.topk(std::min<int64_t>(top_n, logp.size(0)));
        auto vals = std::get<0>(tk).contiguous(), idx = std::get<1>(tk).contiguous();
        for (int64_t k = 0; k < vals.size(0); ++k) v.push_back({idx[k].item<int64_t>(), vals[k].item<double>()});
      }
      tops->push_back(std::move(v));
    }
  }

  std::string piece_text(int64_t id) const { return sanitize_utf8(p.tokenizer->decode({id})); }

  // ---- sessions ----
  std::string new_id() {
    std::lock_guard<std::mutex> g(id_mu);
    static const char* hex = "0123456789abcdef";
    std::string s = "sess_";
    for (int i = 0; i < 24; ++i) s += hex[id_rng() % 16];
    return s;
  }

  static bool valid_id(const std::string& id) {
    if (id.empty() || id.size() > 128) return false;
    for (char c : id)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
    return true;
  }

  // The session, locked by the caller through its mutex; 404 when unknown.
  std::shared_ptr<Live> session(const std::string& id) {
    if (!valid_id(id)) http_fail(404, "no session '" + id.substr(0, 64) + "'", "session", "session_not_found");
    std::shared_ptr<Live> l;
    {
      std::lock_guard<std::mutex> g(live_mu);
      auto& slot = live[id];
      if (!slot) slot = std::make_shared<Live>();
      l = slot;
    }
    return l;
  }

  // Under l->mu: reads the session from the store when not in memory yet.
  void load(Live& l, const std::string& id) {
    if (l.deleted) http_fail(404, "no session '" + id + "'", "session", "session_not_found");
    if (l.loaded) return;
    auto row = store->get(id);
    if (!row) {
      l.deleted = true;
      http_fail(404, "no session '" + id + "'", "session", "session_not_found");
    }
    if (row->state.empty()) {
      l.state = p.model->new_state();
      l.logits = torch::Tensor();
    } else {
      std::map<std::string, torch::Tensor> extra;
      l.state = state_from_bytes(row->state, *p.model, "session " + id, &extra);
      l.logits = extra.count("logits") ? extra["logits"] : torch::Tensor();
    }
    row->state.clear();
    l.row = *row;
    l.loaded = true;
  }

  // Writes the session (its new state) and then makes it the live one: all or nothing.
  void commit(Live& l, ModelState st, torch::Tensor logits) {
    SessionRow row = l.row;
    row.tokens = st.tokens;
    row.updated = wall_seconds();
    std::map<std::string, torch::Tensor> extra;
    if (logits.defined()) extra["logits"] = logits.to(torch::kFloat32).contiguous();
    row.state = state_to_bytes(st, p.model_config, extra);
    store->put(row);
    row.state.clear();
    l.row = row;
    l.state = std::move(st);
    l.logits = logits;
  }

  json session_json(const Live& l) const {
    return {{"id", l.row.id},         {"object", "session"},       {"model", model_id},
            {"tokens", l.row.tokens}, {"state_bytes", l.state.bytes()}, {"created", int64_t(l.row.created)},
            {"updated", int64_t(l.row.updated)}};
  }

  // ---- completions ----
  std::vector<int64_t> encode_checked(const std::string& text, const char* what) {
    auto ids = p.tokenizer->encode(text);
    if (int64_t(ids.size()) > o.max_prompt_tokens)
      http_fail(413, std::string(what) + " has " + std::to_string(ids.size()) + " tokens, over the limit of " +
                    std::to_string(o.max_prompt_tokens) + " (--max-prompt-tokens)", what);
    return ids;
  }

  Ask read_ask(const Body& b, bool chat) {
    Ask a;
    if (b.j.contains("model") && !b.j["model"].is_null()) {
      auto m = b.get<std::string>("model", "");
      if (m != model_id && m != o.model_dir)
        http_fail(404, "the model '" + m + "' does not exist; this server serves '" + model_id + "'", "model", "model_not_found");
    }
    if (chat) {
      if (!b.j.contains("messages") || !b.j["messages"].is_array() || b.j["messages"].empty())
        http_fail(400, "'messages' must be a non-empty array of {role, content}", "messages");
      std::string text;
      for (auto& m : b.j["messages"]) {
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content"))
          http_fail(400, "each message must be {\"role\": string, \"content\": string or text parts}", "messages");
        // Content: a string, or a list of parts of which the text ones are read ({"type": "text",
        // "text": ...}, as newer clients send).
        std::string content;
        if (m["content"].is_string()) {
          content = m["content"].get<std::string>();
        } else if (m["content"].is_array()) {
          for (auto& part : m["content"]) {
            if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
              http_fail(400, "message content parts must be {\"type\": \"text\", \"text\": string}", "messages");
            content += part["text"].get<std::string>();
          }
        } else {
          http_fail(400, "each message must be {\"role\": string, \"content\": string or text parts}", "messages");
        }
        auto role = m["role"].get<std::string>();
        if (role != "system" && role != "user" && role != "assistant")
          http_fail(400, "message role '" + role + "' is not system, user or assistant", "messages");
        role[0] = char(std::toupper(role[0]));
        text += role + ": " + content + "\n";
      }
      text += "Assistant:";
      a.prompt_texts.push_back(text);
      a.prompts.push_back(encode_checked(text, "messages"));
      a.stop.push_back("\nUser:");
    } else {
      if (!b.j.contains("prompt") && b.get<std::string>("session", "").empty())
        http_fail(400, "'prompt' is required (a string, a list of strings, or token ids)", "prompt");
      const json pr = b.j.contains("prompt") ? b.j["prompt"] : json("");
      auto add_ids = [&](const json& v) {
        std::vector<int64_t> ids;
        for (auto& t : v) {
          if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= p.tokenizer->vocab_size())
            http_fail(400, "prompt token " + t.dump() + " is not an id of this vocabulary (0.." +
                          std::to_string(p.tokenizer->vocab_size() - 1) + ")", "prompt");
          ids.push_back(t.get<int64_t>());
        }
        if (int64_t(ids.size()) > o.max_prompt_tokens) http_fail(413, "prompt is over --max-prompt-tokens", "prompt");
        a.prompt_texts.push_back(p.tokenizer->decode(ids));
        a.prompts.push_back(ids);
      };
      if (pr.is_string()) {
        a.prompt_texts.push_back(pr.get<std::string>());
        a.prompts.push_back(encode_checked(pr.get<std::string>(), "prompt"));
      } else if (pr.is_array() && !pr.empty() && pr[0].is_number_integer()) {
        add_ids(pr);
      } else if (pr.is_array() && !pr.empty()) {
        for (auto& e : pr) {
          if (e.is_string()) {
            a.prompt_texts.push_back(e.get<std::string>());
            a.prompts.push_back(encode_checked(e.get<std::string>(), "prompt"));
          } else if (e.is_array()) {
            add_ids(e);
          } else {
            http_fail(400, "'prompt' must be a string, a list of strings, or token ids", "prompt");
          }
        }
      } else {
        http_fail(400, "'prompt' must be a string, a list of strings, or token ids", "prompt");
      }
    }
    a.max_tokens = b.get<int64_t>(chat ? "max_completion_tokens" : "max_tokens", -1);
    if (a.max_tokens < 0) a.max_tokens = b.get<int64_t>("max_tokens", chat ? o.max_tokens : 16);
    if (a.max_tokens < 0) http_fail(400, "'max_tokens' must be >= 0", "max_tokens");
    if (a.max_tokens > o.max_tokens)
      http_fail(413, "'max_tokens' " + std::to_string(a.max_tokens) + " is over the limit of " + std::to_string(o.max_tokens) +
                    " (--max-tokens)", "max_tokens");
    a.n = b.get<int64_t>("n", 1);
    if (a.n < 1 || a.n > 16) http_fail(400, "'n' must be in 1..16", "n");
    a.so.temperature = b.get<double>("temperature", 1.0);
    if (!(a.so.temperature >= 0 && a.so.temperature <= 100)) http_fail(400, "'temperature' must be in [0, 100]", "temperature");
    a.so.top_p = b.get<double>("top_p", 1.0);
    if (!(a.so.top_p > 0 && a.so.top_p <= 1)) http_fail(400, "'top_p' must be in (0, 1]", "top_p");
    a.so.top_k = b.get<int64_t>("top_k", 0);
    if (a.so.top_k < 0) http_fail(400, "'top_k' must be >= 0", "top_k");
    if (b.j.contains("seed") && !b.j["seed"].is_null()) {
      a.so.seed = uint64_t(b.get<int64_t>("seed", 0));
    } else {
      std::lock_guard<std::mutex> g(id_mu);
      a.so.seed = id_rng();
    }
    if (b.j.contains("stop") && !b.j["stop"].is_null()) {
      const auto& s = b.j["stop"];
      if (s.is_string()) a.stop.push_back(s.get<std::string>());
      else if (s.is_array() && s.size() <= 4) {
        for (auto& e : s) {
          if (!e.is_string()) http_fail(400, "'stop' must be a string or up to 4 strings", "stop");
          a.stop.push_back(e.get<std::string>());
        }
      } else {
        http_fail(400, "'stop' must be a string or up to 4 strings", "stop");
      }
      for (auto& s : a.stop)
        if (s.empty()) http_fail(400, "'stop' strings must not be empty", "stop");
    }
    a.echo = !chat && b.get<bool>("echo", false);
    a.stream = b.get<bool>("stream", false);
    if (!chat && b.j.contains("logprobs") && !b.j["logprobs"].is_null()) {
      a.logprobs = b.get<int64_t>("logprobs", 0);
      if (a.logprobs < 0 || a.logprobs > 20) http_fail(400, "'logprobs' must be in 0..20", "logprobs");
    }
    a.session = b.get<std::string>("session", "");
    a.commit = b.get<bool>("commit", false);
    if (a.commit && a.session.empty()) http_fail(400, "'commit' needs a 'session'", "commit");
    if (!a.session.empty() && (a.prompts.size() != 1 || a.n != 1))
      http_fail(400, "a completion on a session takes one prompt and n = 1", "session");
    if (a.stream && a.n != 1) http_fail(400, "'stream' takes n = 1", "n");
    return a;
  }

  // One choice: reads the prompt from `st` (after `last` logits), generates, and reports the text
  // through on_text as it becomes final (stop strings held back). Returns the choice JSON.
  struct Choice {
    std::string text, completion, finish;  // text: with the prompt when echoed
    std::vector<int64_t> ids;
    json logprobs;
  };
  Choice complete_one(ModelState& st, torch::Tensor& last, const std::vector<int64_t>& prompt, const std::string& prompt_text,
                      const Ask& a, uint64_t seed, const std::function<bool(const std::string&)>& on_text) {
    Choice c;
    std::vector<double> lps;
    std::vector<std::vector<std::pair<int64_t, double>>> tops;
    const bool want_lp = a.logprobs >= 0;
    if (!prompt.empty()) {
      last = feed(st, prompt, last, want_lp && a.echo ? &lps : nullptr, want_lp && a.echo ? &tops : nullptr, a.logprobs);
      tokens_in += int64_t(prompt.size());
    }
    if (a.max_tokens > 0 && !last.defined()) http_fail(400, "nothing to continue: the prompt is empty and the session has read nothing", "prompt");
    std::vector<int64_t> prompt_ids_for_lp = a.echo ? prompt : std::vector<int64_t>{};
    SamplingOptions so = a.so;
    so.seed = seed;
    Sampler sampler(so);
    std::string out;
    size_t sent = 0, max_stop = 0;
    for (auto& s : a.stop) max_stop = std::max(max_stop, s.size());
    c.finish = "length";
    torch::NoGradGuard ng;
    for (int64_t i = 0; i < a.max_tokens; ++i) {
      int64_t id = sampler.sample(last);
      if (std::find(eos_.begin(), eos_.end(), id) != eos_.end()) {  // the model's end of sequence
        c.finish = "stop";
        break;
      }
      if (want_lp) record_logprob(torch::log_softmax(last.to(torch::kFloat64), -1), id, &lps, &tops, a.logprobs);
      c.ids.push_back(id);
      tokens_out += 1;
      const auto raw = p.tokenizer->decode(c.ids);
      out = sanitize_utf8(raw.substr(0, utf8_complete_prefix(raw)));  // whole characters only
      // Stop strings: the text ends before the first one.
      size_t cut = std::string::npos;
      for (auto& s : a.stop) {
        auto at = out.find(s, sent > s.size() ? sent - s.size() : 0);
        if (at != std::string::npos) cut = std::min(cut, at);
      }
      if (cut != std::string::npos) {
        out.resize(cut);
        c.finish = "stop";
        break;
      }
      // Continue: feed the token (the last one is fed only when a session commits).
      if (i + 1 < a.max_tokens) last = feed(st, {id}, last);
      if (on_text) {  // hold back what could still turn out to start a stop string
        size_t safe = out.size();
        if (max_stop > 1) safe = out.size() > max_stop - 1 ? out.size() - (max_stop - 1) : 0;
        while (safe > 0 && safe < out.size() && (static_cast<unsigned char>(out[safe]) & 0xC0) == 0x80) --safe;
        if (safe > sent) {
          if (!on_text(out.substr(sent, safe - sent))) {
            c.finish = "cancelled";
            break;
          }
          sent = safe;
        }
      }
    }
    if (c.finish == "length") out = sanitize_utf8(p.tokenizer->decode(c.ids));  // an unfinished character too
    if (on_text && c.finish != "cancelled" && out.size() > sent) on_text(out.substr(sent));
    c.completion = out;
    c.text = a.echo ? sanitize_utf8(prompt_text) + out : out;
    if (want_lp) {
      json toks = json::array(), tlp = json::array(), top = json::array(), off = json::array();
      std::vector<int64_t> all = prompt_ids_for_lp;
      all.insert(all.end(), c.ids.begin(), c.ids.end());
      size_t offset = 0;
      for (size_t k = 0; k < all.size() && k < lps.size(); ++k) {
        auto t = piece_text(all[k]);
        toks.push_back(t);
        tlp.push_back(std::isnan(lps[k]) ? json() : json(lps[k]));
        json tj = json::object();
        for (auto& [tid, lp] : tops[k]) tj[piece_text(tid)] = lp;
        top.push_back(tops[k].empty() && std::isnan(lps[k]) ? json() : tj);
        off.push_back(offset);
        offset += t.size();
      }
      c.logprobs = {{"tokens", toks}, {"token_logprobs", tlp}, {"top_logprobs", top}, {"text_offset", off}};
    }
    return c;
  }

  // Under l's mutex: the session takes the prompt and the completion. Generation fed every token
  // but the last; that one is fed now. A completion cut by a stop string keeps only the text
  // before it: the session then reads the prompt and that text's tokens from where it was.
  void commit_choice(Live& l, ModelState& st, torch::Tensor& last, const std::vector<int64_t>& prompt, const Choice& c) {
    if (c.finish == "stop") {
      auto again = l.state.clone();
      std::vector<int64_t> toks = prompt;
      auto kept = p.tokenizer->encode(c.completion);
      toks.insert(toks.end(), kept.begin(), kept.end());
      auto lg = toks.empty() ? l.logits : feed(again, toks, l.logits);
      commit(l, std::move(again), lg);
      return;
    }
    if (!c.ids.empty()) last = feed(st, {c.ids.back()}, last);
    commit(l, std::move(st), last);
  }

  void handle_completion(const httplib::Request& req, httplib::Response& res, bool chat) {
    auto b = parse_body(req);
    Ask a = read_ask(b, chat);
    const std::string id = (chat ? "chatcmpl-" : "cmpl-") + new_id().substr(5);
    const int64_t created = int64_t(wall_seconds());
    const char* object = chat ? "chat.completion" : "text_completion";

    // The state a choice starts from: a fresh one, or a clone of the session's (committed back
    // only when asked and only when the whole request succeeded).
    std::shared_ptr<Live> l;
    std::unique_lock<std::mutex> lock;
    if (!a.session.empty()) {
      l = session(a.session);
      lock = std::unique_lock<std::mutex>(l->mu);
      load(*l, a.session);
    }
    auto start = [&](ModelState& st, torch::Tensor& last) {
      if (l) st = l->state.clone(), last = l->logits;
      else st = p.model->new_state(), last = torch::Tensor();
    };
    auto finish_session = [&](ModelState& st, torch::Tensor& last, const std::vector<int64_t>& prompt, const Choice& c) {
      if (!l || !a.commit) return;
      commit_choice(*l, st, last, prompt, c);
    };

    if (a.stream) {
      res.set_header("Cache-Control", "no-cache");
      auto self = this;
      auto shared_a = std::make_shared<Ask>(a);
      auto live = l;
      auto holder = std::make_shared<std::unique_lock<std::mutex>>(std::move(lock));
      res.set_chunked_content_provider(
          "text/event-stream",
          [self, shared_a, live, holder, id, created, object, chat](size_t, httplib::DataSink& sink) {
            const Ask& a = *shared_a;
            auto emit = [&](const json& j) {
              std::string s = "data: " + dump(j) + "\n\n";
              return sink.is_writable() && sink.write(s.data(), s.size());
            };
            auto chunk_json = [&](const std::string& text, const json& finish) {
              json choice = {{"index", 0}, {"finish_reason", finish}};
              if (chat) choice["delta"] = text.empty() && !finish.is_null() ? json::object() : json{{"content", text}};
              else choice["text"] = text, choice["logprobs"] = nullptr;
              return json{{"id", id}, {"object", chat ? "chat.completion.chunk" : object}, {"created", created},
                          {"model", self->model_id}, {"choices", json::array({choice})}};
            };
            try {
              ModelState st;
              torch::Tensor last;
              if (live) st = live->state.clone(), last = live->logits;
              else st = self->p.model->new_state();
              if (chat) {
                auto first = chunk_json("", nullptr);
                first["choices"][0]["delta"] = {{"role", "assistant"}, {"content", ""}};
                if (!emit(first)) return false;
              }
              if (a.echo && !a.prompt_texts[0].empty() && !emit(chunk_json(a.prompt_texts[0], nullptr))) return false;
              Ask a2 = a;
              a2.echo = false;
              auto c = self->complete_one(st, last, a.prompts[0], a.prompt_texts[0], a2, a.so.seed,
                                          [&](const std::string& t) { return emit(chunk_json(t, nullptr)); });
              if (c.finish == "cancelled") return false;  // the client left: nothing committed
              if (live && a.commit) self->commit_choice(*live, st, last, a.prompts[0], c);
              emit(chunk_json("", c.finish));
              std::string done = "data: [DONE]\n\n";
              sink.write(done.data(), done.size());
            } catch (const HttpError& e) {
              emit(json{{"error", {{"message", e.message}, {"type", e.type}}}});
            } catch (const std::exception& e) {
              emit(json{{"error", {{"message", e.what()}, {"type", "server_error"}}}});
            }
            sink.done();
            return true;
          });
      return;
    }

    json choices = json::array();
    int64_t prompt_tokens = 0, completion_tokens = 0;
    for (size_t pi = 0; pi < a.prompts.size(); ++pi) {
      for (int64_t k = 0; k < a.n; ++k) {
        ModelState st;
        torch::Tensor last;
        start(st, last);
        auto c = complete_one(st, last, a.prompts[pi], a.prompt_texts[pi], a, a.so.seed + uint64_t(k), {});
        prompt_tokens += int64_t(a.prompts[pi].size());
        completion_tokens += int64_t(c.ids.size());
        json choice = {{"index", int64_t(choices.size())}, {"finish_reason", c.finish}};
        if (chat) choice["message"] = {{"role", "assistant"}, {"content", c.text}};
        else choice["text"] = c.text, choice["logprobs"] = a.logprobs >= 0 ? c.logprobs : json();
        choices.push_back(choice);
        finish_session(st, last, a.prompts[pi], c);
      }
    }
    json r = {{"id", id}, {"object", object}, {"created", created}, {"model", model_id}, {"choices", choices},
              {"usage", {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens},
                         {"total_tokens", prompt_tokens + completion_tokens}}}};
    if (l) r["session"] = session_json(*l);
    res.set_content(dump(r), "application/json");
  }

  // ---- routes ----
  template <class F>
  auto wrap(const std::string& route, F f) {
    return [this, route, f](const httplib::Request& req, httplib::Response& res) {
      const double t0 = wall_seconds();
      try {
        authorize(req, route);
        f(req, res);
      } catch (const HttpError& e) {
        send_error(res, e);
      } catch (const std::exception& e) {
        send_error(res, HttpError{500, e.what(), "server_error", "", ""});
      }
      const double dt = wall_seconds() - t0;
      std::lock_guard<std::mutex> g(metrics_mu);
      requests[{route, res.status <= 0 ? 200 : res.status}] += 1;
      latency_sum += dt;
      latency_count += 1;
      for (size_t i = 0; i < latency_buckets.size(); ++i)
        if (dt <= latency_buckets[i]) latency_hist[i] += 1;
    };
  }

  void authorize(const httplib::Request& req, const std::string& route) {
    if (o.api_key.empty() || route == "/health" || route == "/") return;
    auto h = req.get_header_value("Authorization");
    if (h.empty()) http_fail(401, "no API key: send 'Authorization: Bearer KEY'", "", "invalid_api_key");
    if (h != "Bearer " + o.api_key) http_fail(401, "incorrect API key", "", "invalid_api_key");
  }

  void routes() {
    http.set_payload_max_length(size_t(o.max_body_bytes));
    const int threads = o.http_threads;
    http.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
    http.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 413) send_error(res, HttpError{413, "the request body is over --max-body-bytes (" +
                                                                std::to_string(o.max_body_bytes) + ")", "request_too_large", "", ""});
      else if (res.status == 404) send_error(res, HttpError{404, "no such endpoint", "not_found_error", "", ""});
      else if (res.status == 405) send_error(res, HttpError{405, "method not allowed", "invalid_request_error", "", ""});
      else if (res.status >= 400)
        send_error(res, HttpError{res.status, "the request could not be read (a POST or PUT needs a Content-Length: send a "
                                              "body, e.g. {})", res.status >= 500 ? "server_error" : "invalid_request_error", "", ""});
    });

    http.Get("/", wrap("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(kServePage, sizeof(kServePage) - 1, "text/html; charset=utf-8");
    }));
    http.Get("/health", wrap("/health", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(dump(json{{"status", "ok"}, {"model", model_id}}), "application/json");
    }));
    http.Get("/v1/models", wrap("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      json m = {{"id", model_id}, {"object", "model"}, {"created", int64_t(started)}, {"owned_by", "longctx"},
                {"mechanism", p.model_config.mixer_type()}, {"parameters", p.model->num_parameters()},
                {"vocab_size", p.tokenizer->vocab_size()}};
      res.set_content(dump(json{{"object", "list"}, {"data", json::array({m})}}), "application/json");
    }));
    http.Post("/v1/completions", wrap("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      handle_completion(req, res, false);
    }));
    http.Post("/v1/chat/completions", wrap("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      handle_completion(req, res, true);
    }));
    http.Post("/tokenize", wrap("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
      auto b = parse_body(req);
      std::string text = b.j.contains("content") ? b.get<std::string>("content", "") : b.get<std::string>("prompt", "");
      if (!b.j.contains("content") && !b.j.contains("prompt")) http_fail(400, "'content' (a string) is required", "content");
      auto ids = encode_checked(text, "content");
      res.set_content(dump(json{{"tokens", ids}}), "application/json");
    }));
    http.Post("/detokenize", wrap("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
      auto b = parse_body(req);
      if (!b.j.contains("tokens") || !b.j["tokens"].is_array()) http_fail(400, "'tokens' (a list of ids) is required", "tokens");
      std::vector<int64_t> ids;
      for (auto& t : b.j["tokens"]) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= p.tokenizer->vocab_size())
          http_fail(400, "token " + t.dump() + " is not an id of this vocabulary", "tokens");
        ids.push_back(t.get<int64_t>());
      }
      res.set_content(dump(json{{"content", p.tokenizer->decode(ids)}}), "application/json");
    }));
    http.Get("/metrics", wrap("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_text(), "text/plain; version=0.0.4");
    }));

    // Sessions.
    http.Post("/v1/sessions", wrap("/v1/sessions", [this](const httplib::Request&, httplib::Response& res) {
      if (store->count() >= o.max_sessions)
        http_fail(409, "the server holds " + std::to_string(o.max_sessions) + " sessions (--max-sessions); delete one first",
             "", "too_many_sessions");
      auto id = new_id();
      auto l = session(id);
      std::lock_guard<std::mutex> g(l->mu);
      l->row.id = id;
      l->row.created = l->row.updated = wall_seconds();
      l->loaded = true;
      commit(*l, p.model->new_state(), torch::Tensor());
      res.status = 201;
      res.set_content(dump(session_json(*l)), "application/json");
    }));
    http.Get("/v1/sessions", wrap("/v1/sessions", [this](const httplib::Request&, httplib::Response& res) {
      json data = json::array();
      for (auto& r : store->list())
        data.push_back({{"id", r.id}, {"object", "session"}, {"tokens", r.tokens}, {"created", int64_t(r.created)},
                        {"updated", int64_t(r.updated)}});
      res.set_content(dump(json{{"object", "list"}, {"data", data}}), "application/json");
    }));
    const std::string sid = R"(/v1/sessions/([A-Za-z0-9_\-]+))";
    http.Get(sid, wrap("/v1/sessions/{id}", [this](const httplib::Request& req, httplib::Response& res) {
      auto id = req.matches[1].str();
      auto l = session(id);
      std::lock_guard<std::mutex> g(l->mu);
      load(*l, id);
      res.set_content(dump(session_json(*l)), "application/json");
    }));
    http.Delete(sid, wrap("/v1/sessions/{id}", [this](const httplib::Request& req, httplib::Response& res) {
      auto id = req.matches[1].str();
      auto l = session(id);
      std::lock_guard<std::mutex> g(l->mu);
      if (l->deleted || !store->remove(id)) {
        l->deleted = true;
        http_fail(404, "no session '" + id + "'", "session", "session_not_found");
      }
      l->deleted = true;
      l->loaded = false;
      l->state = ModelState();
      {
        std::lock_guard<std::mutex> g2(live_mu);
        live.erase(id);
      }
      res.set_content(dump(json{{"id", id}, {"object", "session"}, {"deleted", true}}), "application/json");
    }));
    http.Post(sid + "/append", wrap("/v1/sessions/{id}/append", [this](const httplib::Request& req, httplib::Response& res) {
      auto id = req.matches[1].str();
      auto b = parse_body(req);
      if (!b.j.contains("text") || !b.j["text"].is_string()) http_fail(400, "'text' (a string) is required", "text");
      auto ids = encode_checked(b.j["text"].get<std::string>(), "text");
      auto l = session(id);
      std::lock_guard<std::mutex> g(l->mu);
      load(*l, id);
      auto st = l->state.clone();
      auto last = feed(st, ids, l->logits);
      tokens_in += int64_t(ids.size());
      commit(*l, std::move(st), last);
      auto j = session_json(*l);
      j["appended"] = int64_t(ids.size());
      res.set_content(dump(j), "application/json");
    }));
    http.Get(sid + "/state", wrap("/v1/sessions/{id}/state", [this](const httplib::Request& req, httplib::Response& res) {
      auto id = req.matches[1].str();
      auto l = session(id);
      std::lock_guard<std::mutex> g(l->mu);
      load(*l, id);
      std::map<std::string, torch::Tensor> extra;
      if (l->logits.defined()) extra["logits"] = l->logits.to(torch::kFloat32).contiguous();
      res.set_header("Content-Disposition", "attachment; filename=\"" + id + ".safetensors\"");
      res.set_content(state_to_bytes(l->state, p.model_config, extra), "application/octet-stream");
    }));
    http.Put(sid + "/state", wrap("/v1/sessions/{id}/state", [this](const httplib::Request& req, httplib::Response& res) {
      auto id = req.matches[1].str();
      if (!valid_id(id)) http_fail(400, "a session id is letters, digits, '_' and '-' (at most 128)", "id");
      std::map<std::string, torch::Tensor> extra;
      ModelState st;
      try {
        st = state_from_bytes(req.body, *p.model, "the uploaded state", &extra);
      } catch (const std::exception& e) {
        http_fail(400, e.what(), "state", "invalid_state");
      }
      for (auto& [n, t] : extra)
        if (n != "logits") http_fail(400, "the uploaded state holds an unknown extra tensor '" + n + "'", "state", "invalid_state");
      torch::Tensor logits = extra.count("logits") ? extra["logits"] : torch::Tensor();
      if (logits.defined() && (logits.dim() != 1 || logits.size(0) != p.model_config.vocab_size))
        http_fail(400, "the uploaded state's logits have shape " + std::to_string(logits.dim() ? logits.size(0) : 0) +
                      ", not [vocab_size]", "state", "invalid_state");
      if (st.tokens > 0 && !logits.defined())
        http_fail(400, "the uploaded state has read tokens but holds no 'extra.logits' to continue from", "state", "invalid_state");
      auto l = session(id);
      std::lock_guard<std::mutex> g(l->mu);
      bool exists = store->get(id, false).has_value();
      if (!exists && store->count() >= o.max_sessions)
        http_fail(409, "the server holds " + std::to_string(o.max_sessions) + " sessions (--max-sessions)", "", "too_many_sessions");
      l->deleted = false;
      if (!exists || !l->loaded) {
        auto row = store->get(id, false);
        l->row = row ? *row : SessionRow{id, 0, wall_seconds(), wall_seconds(), ""};
      }
      l->loaded = true;
      commit(*l, std::move(st), logits);
      res.status = exists ? 200 : 201;
      res.set_content(dump(session_json(*l)), "application/json");
    }));
  }

  std::string metrics_text() {
    std::ostringstream m;
    m << "# HELP longctx_requests_total HTTP requests by route and status.\n# TYPE longctx_requests_total counter\n";
    std::lock_guard<std::mutex> g(metrics_mu);
    for (auto& [k, v] : requests)
      m << "longctx_requests_total{route=\"" << k.first << "\",status=\"" << k.second << "\"} " << v << "\n";
    m << "# HELP longctx_tokens_in_total Tokens read (prompts and appends).\n# TYPE longctx_tokens_in_total counter\n"
      << "longctx_tokens_in_total " << tokens_in.load() << "\n";
    m << "# HELP longctx_tokens_out_total Tokens generated.\n# TYPE longctx_tokens_out_total counter\n"
      << "longctx_tokens_out_total " << tokens_out.load() << "\n";
    m << "# HELP longctx_request_seconds Request latency.\n# TYPE longctx_request_seconds histogram\n";
    for (size_t i = 0; i < latency_buckets.size(); ++i)
      m << "longctx_request_seconds_bucket{le=\"" << latency_buckets[i] << "\"} " << latency_hist[i] << "\n";
    m << "longctx_request_seconds_bucket{le=\"+Inf\"} " << latency_count << "\n"
      << "longctx_request_seconds_sum " << latency_sum << "\nlongctx_request_seconds_count " << latency_count << "\n";
    int64_t loaded = 0, bytes = 0;
    {
      std::lock_guard<std::mutex> g2(live_mu);
      for (auto& [id, l] : live) {
        std::unique_lock<std::mutex> lk(l->mu, std::try_to_lock);
        if (lk.owns_lock() && l->loaded) ++loaded, bytes += l->state.bytes();
      }
    }
    m << "# HELP longctx_sessions Sessions in the database.\n# TYPE longctx_sessions gauge\nlongctx_sessions "
      << store->count() << "\n";
    m << "# HELP longctx_sessions_loaded Sessions held in memory.\n# TYPE longctx_sessions_loaded gauge\n"
      << "longctx_sessions_loaded " << loaded << "\n";
    m << "# HELP longctx_state_bytes Bytes of the states held in memory.\n# TYPE longctx_state_bytes gauge\n"
      << "longctx_state_bytes " << bytes << "\n";
    return m.str();
  }
};

Server::Server(ServeOptions o) : impl_(std::make_unique<Impl>(std::move(o))) {}
Server::~Server() { stop(); }

int Server::bind() {
  auto& i = *impl_;
  if (i.o.port == 0) {
    i.port = i.http.bind_to_any_port(i.o.host);
  } else {
    i.port = i.http.bind_to_port(i.o.host, i.o.port) ? i.o.port : -1;
  }
  LCX_CHECK(i.port > 0, "serve: cannot listen on ", i.o.host, ":", i.o.port, " (in use, or not an address of this machine)");
  return i.port;
}

void Server::run() { impl_->http.listen_after_bind(); }
void Server::stop() {
  if (impl_) impl_->http.stop();
}
const std::string& Server::model_id() const { return impl_->model_id; }

}  // namespace longctx

#else  // built without cpp-httplib (libcpp-httplib-dev): the server refuses to start, by name

#include "util/error.h"

namespace longctx {
struct Server::Impl {};
Server::Server(ServeOptions) { LCX_CHECK(false, "serve: this build has no HTTP server (install libcpp-httplib-dev and rebuild)"); }
Server::~Server() = default;
int Server::bind() { return -1; }
void Server::run() {}
void Server::stop() {}
const std::string& Server::model_id() const {
  static std::string none;
  return none;
}
}  // namespace longctx

#endif
