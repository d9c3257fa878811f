// Low-value text of the kinds web crawls are full of, inserted into clean documents so that
// selective language modeling (RHO-1) has something to select against. Reproducible: the same
// (seed, document name) always gives the same noisy document.
//
// Kinds (each block sits on its own lines, inserted at sentence boundaries):
//   boilerplate  2-6 lines drawn from a fixed list of navigation / cookie / footer lines,
//                so the same lines recur verbatim across the corpus;
//   table        3-8 rows of 4-6 columns of random numbers ("| 1907 | 38,214 | 4.7% |");
//   markup       4-12 fragments of HTML/wiki debris with random ids ("<div class=\"nav-3f2a\">");
//   shuffled     a sentence of the same document with its words in random order.
// Blocks are added until they make up `share` of the document's bytes, each kind drawn with
// equal probability.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/config_fields.h"
#include "text/corpus.h"

namespace longctx {

struct NoiseConfig {
  double share = 0;  // fraction of the noisy document's bytes that are noise; 0 = off
  uint64_t seed = 1;
  std::vector<std::string> kinds = {"boilerplate", "table", "markup", "shuffled"};
  static const std::vector<std::string>& all_kinds();
  template <class V>
  void visit(V& v) {
    v("share", share, "fraction of a noisy document's bytes that are noise; 0 = off", within(0.0, 0.9));
    v("seed", seed, "seed of the noise");
    v("kinds", kinds, "noise kinds drawn (boilerplate, table, markup, shuffled)",
      Rule<std::vector<std::string>>{[](const std::vector<std::string>& k) {
                                       if (k.empty()) return false;
                                       for (auto& x : k)
                                         if (std::find(all_kinds().begin(), all_kinds().end(), x) == all_kinds().end())
                                           return false;
                                       return true;
                                     },
                                     "must name at least one noise kind, each of boilerplate, table, markup, shuffled"});
  }
};

struct NoiseStats {
  int64_t clean_bytes = 0;
  std::map<std::string, int64_t> noise_bytes;  // by kind
  int64_t total_noise() const;
  void add(const NoiseStats& o);
};

// The document with noise blocks inserted; `stats` (optional) accumulates byte counts.
std::string add_noise(const Document& doc, const NoiseConfig& c, NoiseStats* stats = nullptr);

}  // namespace longctx
