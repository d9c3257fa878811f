#include "nn/state.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "nn/mapped.h"
#include "util/error.h"
#include "util/hash.h"

namespace longctx {

torch::Tensor& State::at(const std::string& name) {
  auto it = t_.find(name);
  LCX_CHECK(it != t_.end(), "state: no tensor '", name, "'");
  return it->second;
}
const torch::Tensor& State::at(const std::string& name) const {
  auto it = t_.find(name);
  LCX_CHECK(it != t_.end(), "state: no tensor '", name, "'");
  return it->second;
}
torch::Tensor State::get(const std::string& name) const {
  auto it = t_.find(name);
  return it == t_.end() ? torch::Tensor() : it->second;
}

int64_t State::counter(const std::string& name) const {
  auto it = t_.find(name);
  return it == t_.end() ? 0 : it->second.item<int64_t>();
}
void State::set_counter(const std::string& name, int64_t v) { t_[name] = torch::tensor(v, torch::kInt64); }

int64_t State::bytes() const {
  int64_t b = 0;
  for (auto& [n, t] : t_)
    if (t.defined()) b += t.numel() * t.element_size();
  return b;
}

void State::detach_() {
  for (auto& [n, t] : t_)
    if (t.defined()) t = t.detach();
}

State State::clone() const {
  State s;
  for (auto& [n, t] : t_) s.t_[n] = t.defined() ? t.detach().clone() : t;
  return s;
}

State State::snapshot() const {
  State s;
  s.t_ = t_;
  return s;
}

double State::draw_uniform(const std::string& name, uint64_t seed) {
  const std::string c = "draws." + name;
  const int64_t n = counter(c);
  set_counter(c, n + 1);
  // The n-th output of a SplitMix64 stream started at seed ^ hash(name).
  const uint64_t z = splitmix64((seed ^ fnv1a(name)) + 0x9e3779b97f4a7c15ull * uint64_t(n));
  return double(z >> 11) * 0x1.0p-53;
}

namespace {
std::string dims_text(const std::vector<int64_t>& shape, int64_t max_len) {
  std::string r = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) r += ", ";
    if (shape[i] == StateField::kBatch) r += "B";
    else if (shape[i] == StateField::kAny) r += max_len > 0 ? "<=" + std::to_string(max_len) : "*";
    else r += std::to_string(shape[i]);
  }
  return r + "]";
}
std::string sizes_text(const torch::Tensor& t) {
  std::string r = "[";
  for (int64_t i = 0; i < t.dim(); ++i) r += (i ? ", " : "") + std::to_string(t.size(i));
  return r + "]";
}
}  // namespace

void check_state(const State& s, const StateSchema& schema, const std::string& where, const std::string& prefix,
                 const std::string& mechanism, int64_t& batch) {
  for (auto& [name, t] : s.tensors()) {
    const StateField* f = nullptr;
    for (auto& g : schema)
      if (g.name == name) f = &g;
    const std::string field = "'" + prefix + name + "'";
    if (!f) {
      std::string known;
      for (auto& g : schema) known += (known.empty() ? "" : ", ") + g.name;
      fail(where, ": field ", field, " is not part of ", mechanism, "'s memory (", known.empty() ? "none" : known, ")");
    }
    LCX_CHECK(t.defined(), where, ": field ", field, " is empty");
    if (f->counter) {
      LCX_CHECK(t.dim() == 0 && t.scalar_type() == torch::kInt64, where, ": field ", field, " (", f->doc,
                ") must be an int64 scalar, got ", t.scalar_type(), " ", sizes_text(t));
      LCX_CHECK(t.item<int64_t>() >= 0, where, ": field ", field, " (", f->doc, ") is ", t.item<int64_t>(),
                ", must be >= 0");
      continue;
    }
    const bool fl = torch::isFloatingType(t.scalar_type());
    LCX_CHECK(f->floating ? fl : t.scalar_type() == torch::kInt64, where, ": field ", field, " (", f->doc, ") has dtype ",
              t.scalar_type(), "; ", mechanism, " declares ", f->floating ? "a floating type" : "int64");
    bool ok = t.dim() == int64_t(f->shape.size());
    for (int64_t i = 0; ok && i < t.dim(); ++i) {
      const int64_t want = f->shape[i], got = t.size(i);
      if (want == StateField::kBatch) {
        if (batch < 0) batch = got;
        ok = got == batch && got > 0;
      } else if (want == StateField::kAny) {
        ok = f->max_len <= 0 || got <= f->max_len;
      } else {
        ok = got == want;
      }
    }
    LCX_CHECK(ok, where, ": field ", field, " (", f->doc, ") has shape ", sizes_text(t), "; ", mechanism, " declares ",
              dims_text(f->shape, f->max_len), batch >= 0 ? " with B = " + std::to_string(batch) : std::string());
  }
}

namespace {
// A cache's rows are time-major: row t holds every batch element's and head's key at t, so a
// [cap, B, H, dh] buffer grows at its end (grow_mapped, no copy) and c, a [B, H, len, dh] view,
// has strides {H dh, dh, B H dh, 1}. Where c sits in such a buffer: rows [first, first + len)
// of cap. cap 0 when c is not laid out so (then it is someone else's tensor).
struct Rows {
  int64_t cap = 0, first = 0;
};
Rows rows_of(const torch::Tensor& c) {
  const int64_t B = c.size(0), H = c.size(1), dh = c.size(3), row = B * H * dh;
  if (!(row > 0 && c.stride(3) == 1 && c.stride(1) == dh && c.stride(0) == H * dh && c.stride(2) == row &&
        c.storage_offset() % row == 0))
    return {};
  const int64_t cap = static_cast<int64_t>(c.storage().nbytes()) / (row * c.element_size());
  const int64_t first = c.storage_offset() / row;
  if (first + c.size(2) > cap) return {};
  return {cap, first};
}

// Rows [first, first + n) of the time-major buffer `buf` (any tensor on its storage).
torch::Tensor rows(const torch::Tensor& buf, int64_t B, int64_t H, int64_t dh, int64_t first, int64_t n) {
  return buf.as_strided({B, H, n, dh}, {H * dh, dh, B * H * dh, 1}, first * B * H * dh);
}

// Appends x to c along dim 2. c may be rows [first, first + len) of a time-major buffer with
// spare rows after it (as this function and KVCache::keep_last leave it); then x is copied into
// them. A full buffer whose rows start at 0 (a growing cache) is grown in place on the CPU
// (grow_mapped: its pages move, nothing is copied or resident twice). Otherwise a buffer of
// twice the needed length is allocated: a mapping when the cache grows past its buffer (later
// growth is then in place), the heap when a kept window moves on to a buffer of its old size
// (malloc hands back the one just freed: no fresh pages). A cache kept to its last N rows is so
// copied once every ~N appends, not on every one. Rows before first + len are never written: a
// snapshot taken before the append still reads what it held.
torch::Tensor append_rows(const torch::Tensor& c, const torch::Tensor& x) {
  const int64_t B = c.size(0), H = c.size(1), len = c.size(2), dh = c.size(3), add = x.size(2);
  const int64_t need = len + add, row_bytes = B * H * dh * c.element_size();
  const Rows r = rows_of(c);
  auto place = [&](const torch::Tensor& buf, int64_t first) {
    rows(buf, B, H, dh, first + len, add).copy_(x);
    return rows(buf, B, H, dh, first, need);
  };
  if (r.cap > 0 && r.first + need <= r.cap) return place(c, r.first);
  const int64_t ncap = std::max<int64_t>(2 * need, 64);
  const bool grows = need > r.cap;
#ifdef __GLIBC__
  // The cache grows (O(log T) times): hand what the heap holds freed back to the OS, so that the
  // peak is the cache and what is live (tune_allocator keeps up to 1 GiB freed otherwise). Not when
  // a window moves on to a buffer of its old size, which reuses the one it frees.
  if (grows && c.is_cpu()) malloc_trim(0);
#endif
  if (r.cap > 0 && r.first == 0 && grow_mapped(c, static_cast<size_t>(ncap * row_bytes))) return place(c, 0);
  const std::vector<int64_t> sizes{ncap, B, H, dh}, strides{B * H * dh, H * dh, dh, 1};
  auto full = c.is_cpu() && grows ? mapped_empty(sizes, strides, c.scalar_type())
                                  : torch::empty_strided(sizes, strides, c.options());
  rows(full, B, H, dh, 0, len).copy_(c);
  return place(full, 0);
}
}  // namespace

std::pair<torch::Tensor, torch::Tensor> KVCache::append(State& s, const std::string& prefix,
                                                        const torch::Tensor& k, const torch::Tensor& v) {
  std::string kn = prefix + "k", vn = prefix + "v";
  if (!s.has(kn)) {
    s.set(kn, k);
    s.set(vn, v);
    return {k, v};
  }
  auto& ck = s.at(kn);
  auto& cv = s.at(vn);
  if (torch::GradMode::is_enabled() && (ck.requires_grad() || k.requires_grad())) {
    ck = torch::cat({ck, k}, 2);  // keep the graph through the cache
    cv = torch::cat({cv, v}, 2);
  } else {
    ck = append_rows(ck, k);
    cv = append_rows(cv, v);
  }
  return {ck, cv};
}

void KVCache::keep_last(State& s, const std::string& prefix, int64_t keep) {
  for (auto n : {prefix + "k", prefix + "v"}) {
    if (!s.has(n)) continue;
    auto& c = s.at(n);
    int64_t len = c.size(2);
    if (len <= keep) continue;
    // Under autograd keep the graph. Otherwise a view when c is rows of append_rows' buffer
    // (bounded: that buffer is at most twice the rows it ever held at once), else a compact copy
    // (a view would keep the caller's whole tensor alive).
    auto tail = c.narrow(2, len - keep, keep);
    const bool graph = torch::GradMode::is_enabled() && c.requires_grad();
    c = graph || rows_of(c).cap > 0 ? tail : tail.contiguous();
  }
}

int64_t KVCache::length(const State& s, const std::string& prefix) {
  auto k = s.get(prefix + "k");
  return k.defined() ? k.size(2) : 0;
}

SegmentBuffer::SegmentBuffer(State& s, std::vector<std::string> names, int64_t segment)
    : s_(s), names_(std::move(names)), n_(segment), graph_(torch::GradMode::is_enabled()) {}

void SegmentBuffer::reserve(const std::vector<torch::Tensor>& examples, int64_t fill) {
  LCX_CHECK(examples.size() == names_.size(), "SegmentBuffer: ", examples.size(), " examples for ", names_.size(),
            " names");
  if (graph_) return;
  const auto& first = examples[0];
  held_ = fill;  // rows a rollback point may still read
  if (s_.has(names_[0]) && s_.at(names_[0]).size(2) == n_ && s_.at(names_[0]).size(0) == first.size(0)) return;
  held_ = 0;  // fresh buffers: nothing else refers to them
  for (size_t i = 0; i < names_.size(); ++i) {
    const auto& e = examples[i];
    // Zeros, not empty: slots past the fill are never read, but they are saved with the state,
    // whose bytes must not depend on uninitialised memory.
    auto buf = torch::zeros({e.size(0), e.size(1), n_, e.size(3)}, e.options());
    if (fill > 0) buf.narrow(2, 0, fill).copy_(s_.at(names_[i]).narrow(2, 0, fill));
    s_.set(names_[i], buf);
  }
}

std::vector<torch::Tensor> SegmentBuffer::extend(int64_t fill, const std::vector<torch::Tensor>& pieces) const {
  std::vector<torch::Tensor> seg = pieces;
  if (fill > 0)
    for (size_t i = 0; i < names_.size(); ++i) seg[i] = torch::cat({s_.at(names_[i]).narrow(2, 0, fill), pieces[i]}, 2);
  return seg;
}

int64_t SegmentBuffer::advance(int64_t fill, int64_t len, const std::vector<torch::Tensor>& seg) {
  if (fill + len == n_) {
    if (graph_) {
      clear_if_graph();
    } else if (held_ > 0) {
      // The next segment writes from slot 0. The first held_ slots were there when the call began
      // and a rollback point may read them: the next segment goes to fresh buffers, once per call.
      // Otherwise the buffers are overwritten in place (a rollback point reads none of their slots).
      for (auto& n : names_) s_.set(n, torch::zeros_like(s_.at(n)));
      held_ = 0;
    }
    return 0;
  }
  for (size_t i = 0; i < names_.size(); ++i) {
    if (graph_)
      s_.set(names_[i], seg[i]);
    else
      s_.at(names_[i]).narrow(2, fill, len).copy_(seg[i].narrow(2, fill, len));
  }
  return fill + len;
}

void SegmentBuffer::clear_if_graph() {
  if (graph_)
    for (auto& n : names_) s_.erase(n);
}

}  // namespace longctx
