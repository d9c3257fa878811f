#include "text/noise.h"

#include <algorithm>
#include <random>

#include "util/error.h"

namespace longctx {

namespace {

const std::vector<std::string> kBoilerplate = {
    "Home | About Us | Contact | Privacy Policy | Terms of Use",
    "This website uses cookies to improve your experience. Accept all cookies?",
    "Copyright (c) 2009-2024 All rights reserved.",
    "Subscribe to our newsletter for the latest updates!",
    "Click here to read more.",
    "Share this article: Facebook Twitter Email Print",
    "Skip to main content",
    "Posted by admin in Uncategorized | Leave a comment",
    "Related posts:",
    "Sign in | Register | Forgot your password?",
    "Advertisement",
    "Page 1 of 12 | Next >>",
    "Back to top",
    "Loading comments...",
    "You are here: Home > Archive > Documents",
    "Tags: news, politics, history, archive",
    "Please enable JavaScript to view this page.",
    "Download PDF (1.2 MB)",
    "Last updated: Monday, March 3, 2014 at 10:42 AM",
    "Follow us on social media",
    "All times are GMT -5. The time now is 04:17 PM.",
    "Report abuse | Bookmark | Print this page",
    "Your cart is empty. Continue shopping.",
    "Search this site...",
};

const std::vector<std::string> kTags = {"div", "span", "a", "li", "ul", "td", "tr", "p", "section", "nav"};
const std::vector<std::string> kAttrs = {"class", "id", "style", "data-id", "href"};
const std::vector<std::string> kEntities = {"&nbsp;", "&amp;", "&quot;", "&#8217;", "&raquo;", "&lt;br&gt;"};

std::string hex(std::mt19937_64& rng, int n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < n; ++i) s += d[rng() % 16];
  return s;
}

int64_t uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {  // [lo, hi]
  return lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo + 1));
}

std::string boilerplate(std::mt19937_64& rng) {
  std::string s;
  for (int64_t i = 0, n = uniform(rng, 2, 6); i < n; ++i) s += kBoilerplate[rng() % kBoilerplate.size()] + "\n";
  return s;
}

std::string with_commas(int64_t v) {
  std::string d = std::to_string(v), s;
  for (size_t i = 0; i < d.size(); ++i) {
    if (i > 0 && (d.size() - i) % 3 == 0) s += ',';
    s += d[i];
  }
  return s;
}

std::string table(std::mt19937_64& rng) {
  const int64_t cols = uniform(rng, 4, 6), rows = uniform(rng, 3, 8);
  std::string s;
  for (int64_t r = 0; r < rows; ++r) {
    s += "|";
    for (int64_t c = 0; c < cols; ++c) {
      std::string cell;
      switch (c == 0 ? 0 : uniform(rng, 1, 3)) {
        case 0: cell = std::to_string(uniform(rng, 1800, 2024)); break;
        case 1: cell = with_commas(uniform(rng, 0, 999999)); break;
        case 2: cell = std::to_string(uniform(rng, 0, 99)) + "." + std::to_string(uniform(rng, 0, 9)) + "%"; break;
        default: cell = "0." + std::to_string(uniform(rng, 100, 999)); break;
      }
      s += " " + cell + " |";
    }
    s += "\n";
  }
  return s;
}

std::string markup(std::mt19937_64& rng) {
  std::string s;
  for (int64_t i = 0, n = uniform(rng, 4, 12); i < n; ++i) {
    const auto& tag = kTags[rng() % kTags.size()];
    switch (uniform(rng, 0, 5)) {
      case 0: s += "<" + tag + " " + kAttrs[rng() % kAttrs.size()] + "=\"" + tag + "-" + hex(rng, 4) + "\">"; break;
      case 1: s += "</" + tag + ">"; break;
      case 2: s += kEntities[rng() % kEntities.size()]; break;
      case 3: s += "{{cite web|id=" + hex(rng, 6) + "}}"; break;
      case 4: s += "[[File:img_" + std::to_string(uniform(rng, 1000, 9999)) + ".jpg|thumb]]"; break;
      default: s += "<!-- ad slot " + std::to_string(uniform(rng, 1, 40)) + " -->"; break;
    }
  }
  return s + "\n";
}

// Sentence boundaries: positions just after ". ", "? ", "! " or a newline.
std::vector<size_t> boundaries(const std::string& t) {
  std::vector<size_t> b;
  for (size_t i = 1; i + 1 < t.size(); ++i)
    if ((t[i] == ' ' && (t[i - 1] == '.' || t[i - 1] == '?' || t[i - 1] == '!')) || t[i] == '\n') b.push_back(i + 1);
  return b;
}

std::string shuffled(std::mt19937_64& rng, const std::string& text, const std::vector<size_t>& bounds) {
  // A sentence of 8..40 words, else any 20-word stretch.
  std::vector<std::string> words;
  for (int attempt = 0; attempt < 8 && (words.size() < 8 || words.size() > 40); ++attempt) {
    words.clear();
    size_t a = bounds.empty() ? 0 : bounds[rng() % bounds.size()];
    auto e = std::upper_bound(bounds.begin(), bounds.end(), a);
    size_t b = e == bounds.end() ? text.size() : *e;
    std::string w;
    for (size_t i = a; i < b; ++i) {
      if (std::isspace(static_cast<unsigned char>(text[i]))) {
        if (!w.empty()) words.push_back(w), w.clear();
      } else {
        w += text[i];
      }
    }
    if (!w.empty()) words.push_back(w);
  }
  if (words.size() > 40) words.resize(20);
  for (size_t i = words.size(); i > 1; --i) std::swap(words[i - 1], words[rng() % i]);
  std::string s;
  for (auto& w : words) s += (s.empty() ? "" : " ") + w;
  return s + "\n";
}

}  // namespace

const std::vector<std::string>& NoiseConfig::all_kinds() {
  static const std::vector<std::string> k = {"boilerplate", "table", "markup", "shuffled"};
  return k;
}

int64_t NoiseStats::total_noise() const {
  int64_t n = 0;
  for (auto& [k, v] : noise_bytes) n += v;
  return n;
}

void NoiseStats::add(const NoiseStats& o) {
  clean_bytes += o.clean_bytes;
  for (auto& [k, v] : o.noise_bytes) noise_bytes[k] += v;
}

std::string add_noise(const Document& doc, const NoiseConfig& c, NoiseStats* stats) {
  LCX_CHECK(c.share >= 0 && c.share < 1, "noise share ", c.share, " must be in [0, 1)");
  LCX_CHECK(!c.kinds.empty(), "noise: no kinds given");
  for (auto& k : c.kinds)
    LCX_CHECK(std::count(NoiseConfig::all_kinds().begin(), NoiseConfig::all_kinds().end(), k), "noise: unknown kind '",
              k, "' (boilerplate, table, markup, shuffled)");
  if (stats) stats->clean_bytes += static_cast<int64_t>(doc.text.size());
  if (c.share <= 0 || doc.text.empty()) return doc.text;
  uint64_t h = 1469598103934665603ull;  // FNV-1a of the name: the stream of one document
  for (unsigned char ch : doc.name) h = (h ^ ch) * 1099511628211ull;
  std::mt19937_64 rng(mix_seed(c.seed, h));
  auto bounds = boundaries(doc.text);
  const double target = double(doc.text.size()) * c.share / (1 - c.share);
  std::vector<std::pair<size_t, std::string>> blocks;  // (insert position, text)
  double made = 0;
  while (made < target) {
    const auto& kind = c.kinds[rng() % c.kinds.size()];
    std::string b = kind == "boilerplate" ? boilerplate(rng)
                    : kind == "table"     ? table(rng)
                    : kind == "markup"    ? markup(rng)
                                          : shuffled(rng, doc.text, bounds);
    b = "\n" + b;
    size_t at = bounds.empty() ? doc.text.size() : bounds[rng() % bounds.size()];
    made += double(b.size());
    if (stats) stats->noise_bytes[kind] += static_cast<int64_t>(b.size());
    blocks.push_back({at, std::move(b)});
  }
  std::stable_sort(blocks.begin(), blocks.end(), [](auto& a, auto& b) { return a.first < b.first; });
  std::string out;
  out.reserve(doc.text.size() + static_cast<size_t>(made));
  size_t prev = 0;
  for (auto& [at, b] : blocks) {
    out.append(doc.text, prev, at - prev);
    out += b;
    prev = at;
  }
  out.append(doc.text, prev, std::string::npos);
  return out;
}

}  // namespace longctx
