#include "text/bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <queue>
#include <sstream>

#include "io/fs.h"
#include "util/error.h"

namespace longctx {

namespace {

constexpr int64_t kMaxVocab = int64_t(1) << 22;  // 4,194,304 entries: far above any released model
constexpr int64_t kMaxMerges = int64_t(1) << 22;
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6)), s += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += char(0xE0 | (cp >> 12)), s += char(0x80 | ((cp >> 6) & 0x3F)), s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xF0 | (cp >> 18)), s += char(0x80 | ((cp >> 12) & 0x3F)), s += char(0x80 | ((cp >> 6) & 0x3F)),
        s += char(0x80 | (cp & 0x3F));
  }
}

// Decodes one UTF-8 character at s[i] (valid input assumed: vocabulary strings came from JSON).
uint32_t next_utf8(const std::string& s, size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  int n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k < n && i + size_t(k) < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + size_t(k)]) & 0x3F);
  i += size_t(n);
  return cp;
}

struct Regex {
  pcre2_code* code = nullptr;
  std::string pattern;
  Regex(const std::string& pat, const std::string& origin) : pattern(pat) {
    int err = 0;
    PCRE2_SIZE off = 0;
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.data()), pat.size(),
                         PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      fail(origin, ": pre_tokenizer regex '", pat, "' does not compile at offset ", off, ": ",
           reinterpret_cast<const char*>(msg));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // faster where the JIT exists; plain matching otherwise
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex() { pcre2_code_free(code); }

  // Splits [b, e) of s into matches and the gaps between them ("Isolated"), appending to out.
  void split(const std::string& s, size_t b, size_t e, std::vector<std::pair<size_t, size_t>>& out) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
    const auto* subj = reinterpret_cast<PCRE2_SPTR>(s.data() + b);
    const size_t len = e - b;
    size_t at = 0, last = 0;
    while (at < len) {
      int rc = pcre2_match(code, subj, len, at, 0, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        pcre2_match_data_free(md);
        fail("bpe: regex '", pattern, "' failed with PCRE2 error ", rc);
      }
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      size_t m0 = ov[0], m1 = ov[1];
      if (m1 == m0) {  // an empty match: step one byte (the patterns in use never match empty)
        at = m0 + 1;
        continue;
      }
      if (m0 > last) out.push_back({b + last, b + m0});
      out.push_back({b + m0, b + m1});
      last = at = m1;
    }
    if (last < len) out.push_back({b + last, e});
    pcre2_match_data_free(md);
  }
};

struct Added {
  std::string content;
  int64_t id;
  bool lstrip, rstrip;
};

// Unicode NFC (Qwen2's normalizer), through ICU. Text that is not valid UTF-8 is left as it is
// (Hugging Face's strings are always valid; bytes that are not still round-trip).
std::string nfc(const std::string& s) {
  bool ascii = true;
  for (unsigned char c : s) ascii = ascii && c < 0x80;
  if (ascii) return s;
  UErrorCode e = U_ZERO_ERROR;
  int32_t n16 = 0;
  u_strFromUTF8(nullptr, 0, &n16, s.data(), int32_t(s.size()), &e);
  if (e != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(e)) return s;  // not UTF-8
  e = U_ZERO_ERROR;
  std::u16string w(size_t(n16), u'\0');
  u_strFromUTF8(reinterpret_cast<UChar*>(w.data()), n16, nullptr, s.data(), int32_t(s.size()), &e);
  if (U_FAILURE(e)) return s;
  const UNormalizer2* norm = unorm2_getNFCInstance(&e);
  LCX_CHECK(U_SUCCESS(e), "bpe: ICU's NFC normaliser is unavailable (", u_errorName(e), ")");
  auto src = reinterpret_cast<const UChar*>(w.data());
  if (unorm2_isNormalized(norm, src, n16, &e) && U_SUCCESS(e)) return s;
  e = U_ZERO_ERROR;
  std::u16string out(size_t(n16) * 3 + 16, u'\0');
  int32_t m = unorm2_normalize(norm, src, n16, reinterpret_cast<UChar*>(out.data()), int32_t(out.size()), &e);
  LCX_CHECK(U_SUCCESS(e), "bpe: NFC failed (", u_errorName(e), ")");
  int32_t n8 = 0;
  e = U_ZERO_ERROR;
  u_strToUTF8(nullptr, 0, &n8, reinterpret_cast<const UChar*>(out.data()), m, &e);
  e = U_ZERO_ERROR;
  std::string r(size_t(n8), '\0');
  u_strToUTF8(r.data(), n8, nullptr, reinterpret_cast<const UChar*>(out.data()), m, &e);
  LCX_CHECK(U_SUCCESS(e), "bpe: NFC failed (", u_errorName(e), ")");
  return r;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

}  // namespace

const std::vector<std::string>& gpt2_byte_chars() {
  static const std::vector<std::string> chars = [] {
    std::vector<std::string> v(256);
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      append_utf8(v[b], printable ? b : 256 + n++);
    }
    return v;
  }();
  return chars;
}

struct BpeTokenizer::Impl {
  std::string origin;
  std::unordered_map<std::string, int64_t> vocab;  // token text (byte characters) -> id
  std::vector<std::string> id_bytes;               // id -> the bytes it stands for
  std::vector<char> id_known;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (left, right) -> (rank, merged)
  std::array<int32_t, 256> byte_id{};
  std::vector<std::unique_ptr<Regex>> splits;
  bool add_prefix_space = false, ignore_merges = false, nfc = false;
  std::vector<Added> added;  // longest first
  std::array<std::vector<size_t>, 256> added_by_first;  // first byte -> indices into added
  int64_t bos = -1, n_ids = 0;
  mutable std::mutex mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  void bpe(const std::string& piece, std::vector<int64_t>& out) const {
    {
      std::lock_guard<std::mutex> g(mu);
      auto it = cache.find(piece);
      if (it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> ids;
    if (ignore_merges) {
      std::string mapped;
      for (unsigned char c : piece) mapped += gpt2_byte_chars()[c];
      auto it = vocab.find(mapped);
      if (it != vocab.end()) ids.push_back(int32_t(it->second));
    }
    if (ids.empty()) ids = merge(piece);
    out.insert(out.end(), ids.begin(), ids.end());
    if (piece.size() > 256) return;  // long pieces (no pre-tokenizer regex) are not worth keeping
    std::lock_guard<std::mutex> g(mu);
    if (cache.size() > 200000) cache.clear();
    cache.emplace(piece, std::move(ids));
  }

  // Merges by rank, lowest first, leftmost first among equals (a heap over a linked list).
  std::vector<int32_t> merge(const std::string& piece) const {
    const size_t n = piece.size();
    std::vector<int32_t> sym(n);
    std::vector<int64_t> prev(n), next(n);
    for (size_t i = 0; i < n; ++i) {
      sym[i] = byte_id[static_cast<unsigned char>(piece[i])];
      LCX_CHECK(sym[i] >= 0, origin, ": byte ", int(static_cast<unsigned char>(piece[i])), " ('",
                gpt2_byte_chars()[static_cast<unsigned char>(piece[i])], "') has no token in the vocabulary");
      prev[i] = int64_t(i) - 1, next[i] = i + 1 < n ? int64_t(i) + 1 : -1;
    }
    using Entry = std::tuple<int32_t, int64_t, int32_t, int32_t>;  // rank, position, left, right
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
    auto push = [&](int64_t i) {
      if (i < 0 || next[size_t(i)] < 0) return;
      auto it = merges.find(key(sym[size_t(i)], sym[size_t(next[size_t(i)])]));
      if (it != merges.end()) heap.emplace(it->second.first, i, sym[size_t(i)], sym[size_t(next[size_t(i)])]);
    };
    for (size_t i = 0; i + 1 < n; ++i) push(int64_t(i));
    while (!heap.empty()) {
      auto [rank, i, l, r] = heap.top();
      heap.pop();
      const auto ui = size_t(i);
      if (sym[ui] != l || next[ui] < 0 || sym[size_t(next[ui])] != r) continue;  // stale
      const auto j = size_t(next[ui]);
      sym[ui] = merges.at(key(l, r)).second;
      sym[j] = -1;
      next[ui] = next[j];
      if (next[j] >= 0) prev[size_t(next[j])] = i;
      push(prev[ui]);
      push(i);
    }
    std::vector<int32_t> ids;
    for (int64_t i = n ? 0 : -1; i >= 0; i = next[size_t(i)]) ids.push_back(sym[size_t(i)]);
    return ids;
  }

  void encode_text(const std::string& text, size_t b, size_t e, std::vector<int64_t>& out) const {
    if (b >= e) return;
    std::string buf;
    const std::string* s = &text;
    if (nfc) {
      buf = longctx::nfc(text.substr(b, e - b));
      s = &buf, b = 0, e = buf.size();
    }
    if (add_prefix_space && (*s)[b] != ' ') {
      buf = " " + s->substr(b, e - b);
      s = &buf, b = 0, e = buf.size();
    }
    std::vector<std::pair<size_t, size_t>> pieces = {{b, e}}, next_pieces;
    for (auto& re : splits) {
      next_pieces.clear();
      for (auto [pb, pe] : pieces) re->split(*s, pb, pe, next_pieces);
      pieces.swap(next_pieces);
    }
    for (auto [pb, pe] : pieces) bpe(s->substr(pb, pe - pb), out);
  }
};

BpeTokenizer::BpeTokenizer(const std::string& path, int64_t max_bytes) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  LCX_CHECK(!ec, path, ": cannot read (", ec.message(), ")");
  LCX_CHECK(int64_t(size) <= max_bytes, path, ": ", size, " bytes is over the limit of ", max_bytes,
            " bytes for a tokenizer.json");
  load(read_file(path), path);
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_string(const std::string& json_text, const std::string& origin) {
  std::unique_ptr<BpeTokenizer> t(new BpeTokenizer());
  t->load(json_text, origin);
  return t;
}

BpeTokenizer::~BpeTokenizer() = default;

void BpeTokenizer::load(const std::string& text, const std::string& origin) {
  impl_ = std::make_unique<Impl>();
  auto& I = *impl_;
  I.origin = origin;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    fail(origin, ": not valid JSON (", e.what(), ")");
  }
  LCX_CHECK(j.is_object(), origin, ": expected a JSON object at the top level");
  auto str_or = [&](const nlohmann::json& o, const char* k, const std::string& dflt, const std::string& where) {
    if (!o.contains(k) || o[k].is_null()) return dflt;
    LCX_CHECK(o[k].is_string(), origin, ": ", where, ".", k, " must be a string");
    return o[k].get<std::string>();
  };
  auto bool_or = [&](const nlohmann::json& o, const char* k, bool dflt, const std::string& where) {
    if (!o.contains(k) || o[k].is_null()) return dflt;
    LCX_CHECK(o[k].is_boolean(), origin, ": ", where, ".", k, " must be true or false");
    return o[k].get<bool>();
  };

  // model
  LCX_CHECK(j.contains("model") && j["model"].is_object(), origin, ": no \"model\" object");
  const auto& m = j["model"];
  const auto mtype = str_or(m, "type", "BPE", "model");
  LCX_CHECK(mtype == "BPE", origin, ": model.type '", mtype, "' is not supported (only byte-level \"BPE\")");
  LCX_CHECK(!bool_or(m, "byte_fallback", false, "model"), origin, ": model.byte_fallback is not supported (a SentencePiece-style BPE; use tokenizer.model)");
  LCX_CHECK(str_or(m, "continuing_subword_prefix", "", "model").empty(), origin, ": model.continuing_subword_prefix is not supported");
  LCX_CHECK(str_or(m, "end_of_word_suffix", "", "model").empty(), origin, ": model.end_of_word_suffix is not supported");
  I.ignore_merges = bool_or(m, "ignore_merges", false, "model");
  LCX_CHECK(m.contains("vocab") && m["vocab"].is_object(), origin, ": model.vocab must be an object of token -> id");
  const auto& vocab = m["vocab"];
  LCX_CHECK(int64_t(vocab.size()) <= kMaxVocab, origin, ": model.vocab has ", vocab.size(), " entries, over the limit of ", kMaxVocab);
  const auto& added_json = j.contains("added_tokens") && !j["added_tokens"].is_null() ? j["added_tokens"] : nlohmann::json::array();
  LCX_CHECK(added_json.is_array(), origin, ": added_tokens must be an array");
  LCX_CHECK(int64_t(added_json.size()) <= kMaxVocab, origin, ": added_tokens has ", added_json.size(), " entries, over the limit of ", kMaxVocab);
  const int64_t id_limit = int64_t(vocab.size() + added_json.size()) + 65536;  // ids are dense in practice
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    LCX_CHECK(it.value().is_number_integer(), origin, ": model.vocab['", it.key(), "'] must be an integer id");
    const auto id = it.value().get<int64_t>();
    LCX_CHECK(id >= 0 && id < id_limit, origin, ": model.vocab['", it.key(), "'] = ", id, " is outside [0, ", id_limit, ")");
    max_id = std::max(max_id, id);
  }
  for (auto& a : added_json) {
    LCX_CHECK(a.is_object() && a.contains("id") && a["id"].is_number_integer() && a.contains("content") && a["content"].is_string(),
              origin, ": every added_tokens entry needs an integer \"id\" and a string \"content\"");
    const auto id = a["id"].get<int64_t>();
    LCX_CHECK(id >= 0 && id < id_limit, origin, ": added token '", a["content"].get<std::string>(), "' has id ", id,
              " outside [0, ", id_limit, ")");
    max_id = std::max(max_id, id);
  }
  I.n_ids = max_id + 1;
  I.id_bytes.assign(size_t(I.n_ids), std::string());
  I.id_known.assign(size_t(I.n_ids), 0);
  std::unordered_map<uint32_t, unsigned char> char_byte;
  for (int b = 0; b < 256; ++b) {
    size_t i = 0;
    char_byte[next_utf8(gpt2_byte_chars()[size_t(b)], i)] = static_cast<unsigned char>(b);
  }
  I.vocab.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const auto id = it.value().get<int64_t>();
    LCX_CHECK(!I.id_known[size_t(id)], origin, ": model.vocab gives id ", id, " to two tokens (one is '", it.key(), "')");
    I.id_known[size_t(id)] = 1;
    I.vocab.emplace(it.key(), id);
    std::string bytes;
    const std::string& t = it.key();
    bool mapped = true;
    for (size_t i = 0; i < t.size();) {
      auto c = char_byte.find(next_utf8(t, i));
      if (c == char_byte.end()) {
        mapped = false;
        break;
      }
      bytes += char(c->second);
    }
    I.id_bytes[size_t(id)] = mapped ? bytes : t;  // not a byte-level string: shown as written
  }
  I.byte_id.fill(-1);
  for (int b = 0; b < 256; ++b) {
    auto it = I.vocab.find(gpt2_byte_chars()[size_t(b)]);
    if (it != I.vocab.end()) I.byte_id[size_t(b)] = int32_t(it->second);
  }

  // merges
  const auto& merges = m.contains("merges") && !m["merges"].is_null() ? m["merges"] : nlohmann::json::array();
  LCX_CHECK(merges.is_array(), origin, ": model.merges must be an array");
  LCX_CHECK(int64_t(merges.size()) <= kMaxMerges, origin, ": model.merges has ", merges.size(), " entries, over the limit of ", kMaxMerges);
  I.merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& e = merges[r];
    std::string a, b;
    if (e.is_string()) {
      const auto& s = e.get_ref<const std::string&>();
      const auto sp = s.find(' ');
      LCX_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < s.size() && s.find(' ', sp + 1) == std::string::npos, origin,
                ": model.merges[", r, "] = '", s, "' is not two tokens separated by one space");
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else {
      LCX_CHECK(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string(), origin, ": model.merges[", r,
                "] must be \"a b\" or [\"a\", \"b\"]");
      a = e[0].get<std::string>(), b = e[1].get<std::string>();
    }
    auto ia = I.vocab.find(a), ib = I.vocab.find(b), iab = I.vocab.find(a + b);
    LCX_CHECK(ia != I.vocab.end() && ib != I.vocab.end(), origin, ": model.merges[", r, "] ('", a, "', '", b,
              "') uses a token that is not in model.vocab");
    LCX_CHECK(iab != I.vocab.end(), origin, ": model.merges[", r, "] ('", a, "', '", b, "') makes '", a + b,
              "', which is not in model.vocab");
    I.merges.emplace(Impl::key(int32_t(ia->second), int32_t(ib->second)), std::make_pair(int32_t(r), int32_t(iab->second)));
  }

  // added tokens
  for (auto& a : added_json) {
    Added t{a["content"].get<std::string>(), a["id"].get<int64_t>(), bool_or(a, "lstrip", false, "added_tokens[]"),
            bool_or(a, "rstrip", false, "added_tokens[]")};
    LCX_CHECK(!t.content.empty(), origin, ": added token ", t.id, " has empty content");
    I.id_bytes[size_t(t.id)] = t.content;
    I.id_known[size_t(t.id)] = 1;
    I.vocab.emplace(t.content, t.id);
    I.added.push_back(t);
  }
  std::stable_sort(I.added.begin(), I.added.end(), [](const Added& x, const Added& y) { return x.content.size() > y.content.size(); });
  for (size_t i = 0; i < I.added.size(); ++i) I.added_by_first[static_cast<unsigned char>(I.added[i].content[0])].push_back(i);

  // normalizer
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    const auto& nz = j["normalizer"];
    LCX_CHECK(nz.is_object(), origin, ": normalizer must be an object or null");
    const auto ntype = str_or(nz, "type", "", "normalizer");
    LCX_CHECK(ntype == "NFC", origin, ": normalizer '", ntype, "' is not supported (none, or NFC as Qwen2 has it)");
    I.nfc = true;
  }

  // pre_tokenizer
  auto byte_level = [&](const nlohmann::json& p, const std::string& where) {
    I.add_prefix_space = bool_or(p, "add_prefix_space", false, where);
    if (bool_or(p, "use_regex", true, where)) I.splits.push_back(std::make_unique<Regex>(kGpt2Pattern, origin));
  };
  auto split = [&](const nlohmann::json& p, const std::string& where) {
    LCX_CHECK(p.contains("pattern") && p["pattern"].is_object(), origin, ": ", where, ".pattern must be {\"Regex\": ...} or {\"String\": ...}");
    const auto behavior = str_or(p, "behavior", "Isolated", where);
    LCX_CHECK(behavior == "Isolated", origin, ": ", where, ".behavior '", behavior, "' is not supported (only Isolated)");
    LCX_CHECK(!bool_or(p, "invert", false, where), origin, ": ", where, ".invert is not supported");
    std::string pat;
    if (p["pattern"].contains("Regex")) {
      pat = str_or(p["pattern"], "Regex", "", where + ".pattern");
    } else {
      const auto lit = str_or(p["pattern"], "String", "", where + ".pattern");
      LCX_CHECK(!lit.empty(), origin, ": ", where, ".pattern is empty");
      pat = "\\Q" + lit + "\\E";
    }
    I.splits.push_back(std::make_unique<Regex>(pat, origin));
  };
  if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) {
    const auto& p = j["pre_tokenizer"];
    LCX_CHECK(p.is_object(), origin, ": pre_tokenizer must be an object");
    const auto ptype = str_or(p, "type", "", "pre_tokenizer");
    if (ptype == "ByteLevel") {
      byte_level(p, "pre_tokenizer");
    } else if (ptype == "Sequence") {
      LCX_CHECK(p.contains("pretokenizers") && p["pretokenizers"].is_array(), origin, ": pre_tokenizer.pretokenizers must be an array");
      bool saw_byte_level = false;
      for (size_t i = 0; i < p["pretokenizers"].size(); ++i) {
        const auto& q = p["pretokenizers"][i];
        const auto where = "pre_tokenizer.pretokenizers[" + std::to_string(i) + "]";
        LCX_CHECK(q.is_object(), origin, ": ", where, " must be an object");
        const auto qtype = str_or(q, "type", "", where);
        if (qtype == "Split") split(q, where);
        else if (qtype == "ByteLevel") byte_level(q, where), saw_byte_level = true;
        else fail(origin, ": ", where, ".type '", qtype, "' is not supported (Split, ByteLevel)");
      }
      LCX_CHECK(saw_byte_level, origin, ": pre_tokenizer has no ByteLevel step (only byte-level BPE is supported)");
    } else {
      fail(origin, ": pre_tokenizer.type '", ptype, "' is not supported (ByteLevel, or a Sequence of Split and ByteLevel)");
    }
  } else {
    fail(origin, ": no pre_tokenizer (only byte-level BPE is supported)");
  }

  // decoder
  if (j.contains("decoder") && !j["decoder"].is_null()) {
    const auto dtype = str_or(j["decoder"], "type", "", "decoder");
    LCX_CHECK(dtype == "ByteLevel", origin, ": decoder.type '", dtype, "' is not supported (ByteLevel)");
  }

  // post_processor: a template whose first piece is a special token puts BOS first.
  if (j.contains("post_processor") && j["post_processor"].is_object()) {
    auto pp = j["post_processor"];
    std::vector<nlohmann::json> procs = {pp};
    if (pp.value("type", std::string()) == "Sequence" && pp.contains("processors") && pp["processors"].is_array())
      procs.assign(pp["processors"].begin(), pp["processors"].end());
    for (auto& q : procs)
      if (q.is_object() && q.value("type", std::string()) == "TemplateProcessing" && q.contains("single") &&
          q["single"].is_array() && !q["single"].empty()) {
        const auto& first = q["single"][0];
        if (first.is_object() && first.contains("SpecialToken") && first["SpecialToken"].is_object()) {
          const auto name = str_or(first["SpecialToken"], "id", "", "post_processor.single[0].SpecialToken");
          auto it = I.vocab.find(name);
          LCX_CHECK(it != I.vocab.end(), origin, ": post_processor puts '", name, "' first, which is not a token");
          I.bos = it->second;
        }
      }
  }
  json_ = text;
}

int64_t BpeTokenizer::vocab_size() const { return impl_->n_ids; }

std::vector<int64_t> BpeTokenizer::encode(const std::string& text) const {
  const auto& I = *impl_;
  std::vector<int64_t> out;
  size_t start = 0, i = 0;
  while (i < text.size()) {
    const Added* hit = nullptr;
    for (size_t k : I.added_by_first[static_cast<unsigned char>(text[i])]) {
      const auto& a = I.added[k];
      if (text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;  // longest first
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    size_t before = i, after = i + hit->content.size();
    if (hit->lstrip)
      while (before > start && is_space(text[before - 1])) --before;
    if (hit->rstrip)
      while (after < text.size() && is_space(text[after])) ++after;
    I.encode_text(text, start, before, out);
    out.push_back(hit->id);
    start = i = after;
  }
  I.encode_text(text, start, text.size(), out);
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string s;
  for (auto id : ids) s += piece(id, false);
  return s;
}

std::string BpeTokenizer::piece(int64_t id, bool) const {
  const auto& I = *impl_;
  LCX_CHECK(id >= 0 && id < I.n_ids && I.id_known[size_t(id)], "bpe: token id ", id, " is not in the vocabulary of ",
            I.origin);
  return I.id_bytes[size_t(id)];
}

void BpeTokenizer::save(const std::string& dir) const { write_file_atomic(dir + "/tokenizer.json", json_); }

int64_t BpeTokenizer::token_id(const std::string& content) const {
  auto it = impl_->vocab.find(content);
  return it == impl_->vocab.end() ? -1 : it->second;
}

int64_t BpeTokenizer::bos_id() const { return impl_->bos; }

}  // namespace longctx
