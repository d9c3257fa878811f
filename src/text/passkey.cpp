#include "text/passkey.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace longctx {

std::string PasskeyText::info(int64_t key) {
  auto k = std::to_string(key);
  return "The pass key is " + k + ". Remember it. " + k + " is the pass key.";
}

PasskeyBuilder::PasskeyBuilder(const Tokenizer& tok) : tok_(tok) {
  unit_ = tok.encode(std::string(PasskeyText::noise) + " ");
  head_ = tok.encode(std::string(PasskeyText::task) + "\n");
  ask_ = tok.encode(std::string("\n") + PasskeyText::ask);
  LCX_CHECK(!unit_.empty(), "passkey: the tokenizer encodes the noise to no tokens");
}

int64_t PasskeyBuilder::fixed_tokens(int64_t key, bool with_task) const {
  PasskeyPrompt p = make(-1, 0.0, key, with_task);
  return p.length();
}

PasskeyPrompt PasskeyBuilder::make(int64_t length, double depth, int64_t key, bool with_task) const {
  LCX_CHECK(depth >= 0 && depth <= 1, "passkey: depth ", depth, " must be in [0, 1]");
  LCX_CHECK(key >= 0, "passkey: key ", key, " must be a non-negative integer");
  PasskeyPrompt p;
  p.key = key;
  if (with_task) p.head = head_;
  p.ask = ask_;
  // The info framed by the joining newlines; its first key located for loss masking.
  auto k = std::to_string(key);
  auto a = tok_.encode("\nThe pass key is ");
  auto kk = tok_.encode(k);
  auto b = tok_.encode(". Remember it. " + k + " is the pass key.\n");
  p.info = a;
  p.key_begin = int64_t(a.size());
  p.info.insert(p.info.end(), kk.begin(), kk.end());
  p.key_end = int64_t(p.info.size());
  p.info.insert(p.info.end(), b.begin(), b.end());
  if (length < 0) return p;  // fixed part only
  int64_t fixed = p.length();
  LCX_CHECK(length >= fixed, "passkey: length ", length, " is shorter than the prompt without noise (", fixed,
            " tokens)");
  int64_t noise = length - fixed;
  p.n_prefix = std::llround(depth * double(noise));
  p.n_suffix = noise - p.n_prefix;
  return p;
}

void PasskeyBuilder::noise(int64_t from, int64_t n, std::vector<int64_t>& out) const {
  const int64_t P = int64_t(unit_.size());
  for (int64_t i = 0; i < n; ++i) out.push_back(unit_[(from + i) % P]);
}

void PasskeyBuilder::tokens(const PasskeyPrompt& p, int64_t from, int64_t n, std::vector<int64_t>& out) const {
  LCX_CHECK(from >= 0 && n >= 0 && from + n <= p.length(), "passkey: token range [", from, ", ", from + n,
            ") outside a prompt of ", p.length());
  int64_t end = from + n;
  auto take_vec = [&](const std::vector<int64_t>& v, int64_t base) {
    int64_t lo = std::max(from, base), hi = std::min(end, base + int64_t(v.size()));
    for (int64_t i = lo; i < hi; ++i) out.push_back(v[i - base]);
    return base + int64_t(v.size());
  };
  auto take_noise = [&](int64_t count, int64_t base) {
    int64_t lo = std::max(from, base), hi = std::min(end, base + count);
    if (hi > lo) noise(lo - base, hi - lo, out);
    return base + count;
  };
  int64_t b = take_vec(p.head, 0);
  b = take_noise(p.n_prefix, b);
  b = take_vec(p.info, b);
  b = take_noise(p.n_suffix, b);
  take_vec(p.ask, b);
}

std::vector<int64_t> PasskeyBuilder::all_tokens(const PasskeyPrompt& p) const {
  std::vector<int64_t> v;
  v.reserve(p.length());
  tokens(p, 0, p.length(), v);
  return v;
}

std::vector<int64_t> PasskeyBuilder::answer(int64_t key) const { return tok_.encode(" " + std::to_string(key) + "."); }

int64_t first_integer(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && !(text[i] >= '0' && text[i] <= '9')) ++i;
  if (i == text.size()) return -1;
  int64_t v = 0;
  for (size_t n = 0; i < text.size() && text[i] >= '0' && text[i] <= '9' && n < 18; ++i, ++n) v = v * 10 + (text[i] - '0');
  return v;
}

}  // namespace longctx
