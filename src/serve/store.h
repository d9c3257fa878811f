// Where `longctx serve` keeps its reading sessions: one SQLite database (WAL journal, full sync),
// one row per session holding the state file's bytes (state_to_bytes: the stream's state and its
// next-token logits) and the tokens read. A row is replaced in one transaction, so a session
// that answered is on disk whole, and a server killed at any point restarts with every session
// as its last answered request left it. Thread-safe (one connection behind a mutex).
#pragma once
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace longctx {

struct SessionRow {
  std::string id;
  int64_t tokens = 0;      // tokens read so far
  double created = 0, updated = 0;  // seconds since the epoch
  std::string state;       // a longctx-state file's bytes (empty: nothing read yet)
};

class SessionStore {
 public:
  // path: a file (created when absent), or "" for a database in memory (lost at exit).
  explicit SessionStore(const std::string& path);
  ~SessionStore();
  SessionStore(const SessionStore&) = delete;
  SessionStore& operator=(const SessionStore&) = delete;

  void put(const SessionRow& row);  // insert or replace, atomically
  std::optional<SessionRow> get(const std::string& id, bool with_state = true) const;
  bool remove(const std::string& id);  // false when absent
  int64_t count() const;
  std::vector<SessionRow> list() const;  // without their states
  const std::string& path() const { return path_; }

 private:
  void exec(const char* sql) const;
  sqlite3* db_ = nullptr;
  std::string path_;
  mutable std::mutex mu_;
};

}  // namespace longctx
