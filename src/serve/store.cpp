#include "serve/store.h"

#include <sqlite3.h>

#include "util/error.h"

namespace longctx {

namespace {
// A prepared statement, finalized on scope exit.
struct Stmt {
  sqlite3_stmt* s = nullptr;
  Stmt(sqlite3* db, const char* sql, const std::string& where) {
    LCX_CHECK(sqlite3_prepare_v2(db, sql, -1, &s, nullptr) == SQLITE_OK, where, ": ", sqlite3_errmsg(db));
  }
  ~Stmt() { sqlite3_finalize(s); }
};

SessionRow read_row(sqlite3_stmt* s, bool with_state) {
  SessionRow r;
  r.id = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
  r.tokens = sqlite3_column_int64(s, 1);
  r.created = sqlite3_column_double(s, 2);
  r.updated = sqlite3_column_double(s, 3);
  if (with_state) {
    const void* b = sqlite3_column_blob(s, 4);
    int n = sqlite3_column_bytes(s, 4);
    if (b && n > 0) r.state.assign(static_cast<const char*>(b), size_t(n));
  }
  return r;
}
}  // namespace

SessionStore::SessionStore(const std::string& path) : path_(path.empty() ? ":memory:" : path) {
  int rc = sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    LCX_CHECK(false, "--db ", path_, ": cannot open the session database (", msg, ")");
  }
  sqlite3_busy_timeout(db_, 10000);
  try {
    if (!path.empty()) exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
    exec("CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, tokens INTEGER NOT NULL, created REAL NOT NULL, "
         "updated REAL NOT NULL, state BLOB)");
    // A database of another program, or a table of another shape, is refused by name.
    Stmt s(db_, "SELECT id, tokens, created, updated, state FROM sessions LIMIT 0", "--db " + path_);
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

SessionStore::~SessionStore() {
  if (db_) sqlite3_close(db_);
}

void SessionStore::exec(const char* sql) const {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    LCX_CHECK(false, "--db ", path_, ": ", msg, " (in: ", sql, ")");
  }
}

void SessionStore::put(const SessionRow& row) {
  std::lock_guard<std::mutex> g(mu_);
  Stmt s(db_, "INSERT OR REPLACE INTO sessions (id, tokens, created, updated, state) VALUES (?, ?, ?, ?, ?)",
         "--db " + path_);
  sqlite3_bind_text(s.s, 1, row.id.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s.s, 2, row.tokens);
  sqlite3_bind_double(s.s, 3, row.created);
  sqlite3_bind_double(s.s, 4, row.updated);
  if (row.state.empty()) sqlite3_bind_null(s.s, 5);
  else sqlite3_bind_blob64(s.s, 5, row.state.data(), row.state.size(), SQLITE_STATIC);
  LCX_CHECK(sqlite3_step(s.s) == SQLITE_DONE, "--db ", path_, ": cannot write session ", row.id, " (",
            sqlite3_errmsg(db_), ")");
}

std::optional<SessionRow> SessionStore::get(const std::string& id, bool with_state) const {
  std::lock_guard<std::mutex> g(mu_);
  Stmt s(db_, "SELECT id, tokens, created, updated, state FROM sessions WHERE id = ?", "--db " + path_);
  sqlite3_bind_text(s.s, 1, id.c_str(), -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(s.s);
  if (rc == SQLITE_DONE) return std::nullopt;
  LCX_CHECK(rc == SQLITE_ROW, "--db ", path_, ": cannot read session ", id, " (", sqlite3_errmsg(db_), ")");
  return read_row(s.s, with_state);
}

bool SessionStore::remove(const std::string& id) {
  std::lock_guard<std::mutex> g(mu_);
  Stmt s(db_, "DELETE FROM sessions WHERE id = ?", "--db " + path_);
  sqlite3_bind_text(s.s, 1, id.c_str(), -1, SQLITE_TRANSIENT);
  LCX_CHECK(sqlite3_step(s.s) == SQLITE_DONE, "--db ", path_, ": cannot delete session ", id);
  return sqlite3_changes(db_) > 0;
}

int64_t SessionStore::count() const {
  std::lock_guard<std::mutex> g(mu_);
  Stmt s(db_, "SELECT COUNT(*) FROM sessions", "--db " + path_);
  LCX_CHECK(sqlite3_step(s.s) == SQLITE_ROW, "--db ", path_, ": cannot count sessions");
  return sqlite3_column_int64(s.s, 0);
}

std::vector<SessionRow> SessionStore::list() const {
  std::lock_guard<std::mutex> g(mu_);
  Stmt s(db_, "SELECT id, tokens, created, updated, NULL FROM sessions ORDER BY created", "--db " + path_);
  std::vector<SessionRow> v;
  while (sqlite3_step(s.s) == SQLITE_ROW) v.push_back(read_row(s.s, false));
  return v;
}

}  // namespace longctx
