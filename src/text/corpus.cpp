#include "text/corpus.h"

#include <cstdlib>
#include <filesystem>
#include <random>

#include "io/fs.h"
#include "util/error.h"

namespace fs = std::filesystem;

namespace longctx {

std::string data_dir() {
  if (const char* e = std::getenv("LONGCTX_DATA")) return e;
  if (fs::exists("data/.complete")) return "data";
  if (const char* s = std::getenv("LONGCTX_SOURCE_DIR")) return std::string(s) + "/data";
#ifdef LONGCTX_DEFAULT_DATA
  return LONGCTX_DEFAULT_DATA;  // the source tree this binary was built from
#else
  return "data";
#endif
}

static std::string need_dir(const std::string& sub) {
  std::string d = data_dir() + "/" + sub;
  LCX_CHECK(fs::is_directory(d) || fs::exists(d), "corpus folder ", d,
            " not found: run `make data` (scripts/fetch_data.sh) or set LONGCTX_DATA");
  return d;
}

// Brown files: "word/tag word/tag ..." with tab-indented sentences; keep the words.
static std::string brown_text(const std::string& raw) {
  std::string out, tok;
  auto flush = [&] {
    if (tok.empty()) return;
    auto slash = tok.rfind('/');
    std::string w = slash == std::string::npos ? tok : tok.substr(0, slash);
    if (w == "``" || w == "''") w = "\"";
    bool glue_left = w == "." || w == "," || w == ";" || w == ":" || w == "?" || w == "!" || w == ")";
    if (!out.empty() && out.back() != '\n' && !glue_left && out.back() != '(') out += ' ';
    out += w;
    tok.clear();
  };
  for (char c : raw) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      flush();
      if (c == '\n' && !out.empty() && out.back() != '\n') out += '\n';
    } else {
      tok += c;
    }
  }
  flush();
  return out;
}

std::vector<std::string> corpus_names() {
  return {"sotu", "brown", "moby-dick", "moby-dick-chapters", "bible", "file:PATH"};
}

std::vector<Document> load_corpus(const std::string& name) {
  std::vector<Document> docs;
  auto sorted_files = [](const std::string& dir, const std::string& ext) {
    std::vector<fs::path> v;
    for (auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && (ext.empty() || e.path().extension() == ext)) v.push_back(e.path());
    std::sort(v.begin(), v.end());
    return v;
  };
  if (name == "sotu") {
    for (auto& p : sorted_files(need_dir("sotu"), ".txt"))
      docs.push_back({"sotu/" + p.stem().string(), read_file(p.string())});
  } else if (name == "brown") {
    for (auto& p : sorted_files(need_dir("brown"), "")) {
      auto f = p.filename().string();
      if (f.size() != 4 || f[0] != 'c') continue;  // ca01..cr09; skip README, cats.txt, ...
      docs.push_back({"brown/" + f, brown_text(read_file(p.string()))});
    }
  } else if (name == "moby-dick") {
    docs.push_back({"moby-dick", read_file(need_dir("moby-dick") + "/data.txt")});
  } else if (name == "moby-dick-chapters") {
    auto files = sorted_files(need_dir("moby-dick"), ".txt");
    std::vector<std::pair<int, fs::path>> ch;
    for (auto& p : files) {
      auto s = p.stem().string();
      if (s.rfind("chapter_", 0) == 0) ch.push_back({std::atoi(s.c_str() + 8), p});
    }
    std::sort(ch.begin(), ch.end());
    for (auto& [i, p] : ch) docs.push_back({"moby-dick/" + p.stem().string(), read_file(p.string())});
  } else if (name == "bible") {
    docs.push_back({"bible", read_file(need_dir("bible-kjv.txt"))});
  } else if (name.rfind("file:", 0) == 0) {
    docs.push_back({name, read_file(name.substr(5))});
  } else {
    fail("unknown corpus '", name, "' (expected sotu, brown, moby-dick, moby-dick-chapters, bible or file:PATH)");
  }
  LCX_CHECK(!docs.empty(), "corpus '", name, "' has no documents in ", data_dir());
  return docs;
}

uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c) {
  // splitmix64 over the three words: stable across platforms and library versions.
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(a) ^ b) ^ c);
}

Split split_by_document(const std::vector<Document>& docs, int64_t val_docs, uint64_t seed) {
  std::vector<std::string> names;
  for (auto& d : docs) names.push_back(d.name);
  std::sort(names.begin(), names.end());
  LCX_CHECK(val_docs >= 0 && val_docs < static_cast<int64_t>(names.size()), "data.val_docs = ", val_docs,
            " must be in [0, ", names.size(), ") for this corpus");
  // Fisher-Yates with our own generator: the split must not depend on the C++ library.
  std::vector<std::string> sh = names;
  uint64_t st = mix_seed(seed, 0x5eed);
  for (size_t i = sh.size(); i > 1; --i) {
    st = mix_seed(st, i);
    std::swap(sh[i - 1], sh[st % i]);
  }
  Split s;
  s.val.assign(sh.begin(), sh.begin() + val_docs);
  std::sort(s.val.begin(), s.val.end());
  for (auto& n : names)
    if (!std::binary_search(s.val.begin(), s.val.end(), n)) s.train.push_back(n);
  return s;
}

BatchSampler::BatchSampler(const TokenStream& stream, int64_t batch, int64_t seq_len, uint64_t seed)
    : s_(stream), b_(batch), t_(seq_len), seed_(seed) {
  LCX_CHECK(static_cast<int64_t>(s_.tokens.size()) > seq_len + 1, "training data has ", s_.tokens.size(),
            " tokens, fewer than one sequence of ", seq_len + 1);
}

std::pair<torch::Tensor, torch::Tensor> BatchSampler::get(int64_t step, int64_t micro) const {
  auto x = torch::empty({b_, t_}, torch::kInt64), y = torch::empty({b_, t_}, torch::kInt64);
  auto xa = x.accessor<int64_t, 2>(), ya = y.accessor<int64_t, 2>();
  uint64_t range = s_.tokens.size() - t_ - 1;
  for (int64_t b = 0; b < b_; ++b) {
    uint64_t off = mix_seed(seed_, static_cast<uint64_t>(step), static_cast<uint64_t>(micro * b_ + b)) % (range + 1);
    for (int64_t t = 0; t < t_; ++t) {
      xa[b][t] = s_.tokens[off + t];
      ya[b][t] = s_.tokens[off + t + 1];
    }
  }
  return {x, y};
}

std::vector<std::pair<torch::Tensor, torch::Tensor>> sequential_batches(const TokenStream& s, int64_t batch,
                                                                        int64_t seq_len, int64_t max_batches) {
  std::vector<std::pair<torch::Tensor, torch::Tensor>> out;
  int64_t nseq = (static_cast<int64_t>(s.tokens.size()) - 1) / seq_len;
  int64_t take = max_batches > 0 ? std::min(nseq, max_batches * batch) : nseq;
  for (int64_t k0 = 0; k0 < take; k0 += batch) {
    int64_t b = std::min(batch, take - k0);
    auto x = torch::empty({b, seq_len}, torch::kInt64), y = torch::empty({b, seq_len}, torch::kInt64);
    auto xa = x.accessor<int64_t, 2>(), ya = y.accessor<int64_t, 2>();
    for (int64_t i = 0; i < b; ++i) {
      int64_t idx = (k0 + i) * nseq / take;  // evenly spaced window index
      for (int64_t t = 0; t < seq_len; ++t) {
        xa[i][t] = s.tokens[idx * seq_len + t];
        ya[i][t] = s.tokens[idx * seq_len + t + 1];
      }
    }
    out.push_back({x, y});
  }
  return out;
}

}  // namespace longctx
