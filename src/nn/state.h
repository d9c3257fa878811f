// The state a layer carries from one segment to the next: named tensors. Every mechanism's
// state fits this one type (a KV cache, Infini-attention's M and z, MEGALODON's CEMA hidden
// and norm statistics, FAM activations, beacon KV), so bytes(), save/load, detach and copy are
// written once for all of them.
#pragma once
#include <torch/types.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace longctx {

// A State is a value: copies are explicit (clone(), a deep copy) so that two streams never
// write into storage they share; moves are free. Mixers never write into storage a state
// already held as its content when the call began: appends go past the end of a cache, and a
// segment buffer is overwritten from slot 0 only when the call began with it empty (otherwise
// the next segment gets fresh buffers). So snapshot(), which shares the tensors, is a valid point
// to roll back to when the step that follows fails part way (CausalLM commits a step only when
// every layer succeeded); it is not valid after a second step.
class State {
 public:
  State() = default;
  State(State&&) = default;
  State& operator=(State&&) = default;
  State(const State&) = delete;             // use clone()
  State& operator=(const State&) = delete;  // use clone()

  bool has(const std::string& name) const { return t_.count(name) > 0; }
  torch::Tensor& at(const std::string& name);
  const torch::Tensor& at(const std::string& name) const;
  torch::Tensor get(const std::string& name) const;  // undefined tensor when absent
  void set(const std::string& name, torch::Tensor t) { t_[name] = std::move(t); }
  void erase(const std::string& name) { t_.erase(name); }
  bool empty() const { return t_.empty(); }

  // Counters (positions, token counts) stored as int64 scalars so they save with the tensors.
  int64_t counter(const std::string& name) const;
  void set_counter(const std::string& name, int64_t v);

  int64_t bytes() const;   // sum of tensor bytes
  void detach_();          // truncated back-propagation through time
  State clone() const;     // deep copy (explicit: the cost should be visible)
  // Shares the tensors: a rollback point for the step that follows (see above), not a copy to
  // feed.
  State snapshot() const;

  // The n-th uniform draw in [0, 1) of stream `name`, from a counter-based generator (SplitMix64
  // of seed, name and n). The counter is a state field ("draws.<name>"), so a run continued from
  // a saved state draws what the uninterrupted run drew.
  double draw_uniform(const std::string& name, uint64_t seed);
  const std::map<std::string, torch::Tensor>& tensors() const { return t_; }

 private:
  std::map<std::string, torch::Tensor> t_;
};

// One field of a mechanism's memory, as the mechanism declares it (Mixer::state_schema). A
// dimension is a size, kBatch (the streams; the same in every field of a state) or kAny (a length
// that varies, at most max_len when max_len > 0). Counters are int64 scalars.
struct StateField {
  static constexpr int64_t kBatch = -1, kAny = -2;
  std::string name;
  bool counter = false;
  bool floating = true;  // tensors: floating point of any width (false: int64)
  std::vector<int64_t> shape;
  int64_t max_len = 0;
  std::string doc;  // what it holds, for messages and `longctx info`
  static StateField count(std::string name, std::string doc) { return {std::move(name), true, false, {}, 0, std::move(doc)}; }
  static StateField tensor(std::string name, std::vector<int64_t> shape, std::string doc, int64_t max_len = 0,
                           bool floating = true) {
    return {std::move(name), false, floating, std::move(shape), max_len, std::move(doc)};
  }
};
using StateSchema = std::vector<StateField>;

// Checks every field of `s` against `schema`: known by name, counters int64 scalars, tensors of
// the declared rank, sizes and kind of dtype, one batch across fields (`batch`: in and out, -1
// while unknown). An error names `where`, the field (`prefix` + name), what it is and what the
// schema declares.
void check_state(const State& s, const StateSchema& schema, const std::string& where, const std::string& prefix,
                 const std::string& mechanism, int64_t& batch);

// A key/value cache that appends. Under autograd it concatenates (gradients flow through the
// cache); without autograd it grows a buffer geometrically, so decoding token by token is
// amortised O(1) per token rather than O(L) copies.
struct KVCache {
  // Appends k, v ([B, H, T, dh]) under names "<prefix>k", "<prefix>v"; returns the full cache.
  static std::pair<torch::Tensor, torch::Tensor> append(State& s, const std::string& prefix,
                                                        const torch::Tensor& k, const torch::Tensor& v);
  // Keeps only the last `keep` entries: a view of the buffer's rows without autograd (the next
  // appends fill its spare rows; a full buffer is replaced by one twice the length), so a
  // sliding window decoded token by token copies its rows once per ~window tokens.
  static void keep_last(State& s, const std::string& prefix, int64_t keep);
  static int64_t length(const State& s, const std::string& prefix);
};

// The tokens of a segment that is not complete yet (Infini-attention's segment, MEGALODON's
// chunk), as named [B, H, *, d] tensors. Without autograd they live in fixed buffers of N slots,
// so state bytes stay constant while the segment fills; under autograd they are kept as the
// exact concatenations, so gradients flow through them. Per piece of input:
//   SegmentBuffer buf(state, {"k", "v"}, N);
//   buf.reserve(examples, fill);                // once per call
//   auto seg = buf.extend(fill, pieces);        // the segment so far, this piece included
//   fill = buf.advance(fill, len, seg);         // stores it, or clears it when complete
class SegmentBuffer {
 public:
  SegmentBuffer(State& s, std::vector<std::string> names, int64_t segment);
  // Without autograd: makes the fixed buffers (shapes and dtypes of `examples`, batch included),
  // keeping the first `fill` entries of what the state held.
  void reserve(const std::vector<torch::Tensor>& examples, int64_t fill);
  // [held[:fill]; piece] per name.
  std::vector<torch::Tensor> extend(int64_t fill, const std::vector<torch::Tensor>& pieces) const;
  // Records that `len` tokens were added to the `fill` held (seg as extend returned it) and
  // returns the new fill: 0 when the segment completed (its tensors are then dropped under
  // autograd; without it the next segment overwrites the buffers from slot 0, or gets fresh ones
  // once per call when the call began with slots filled, which a rollback point reads: see State).
  int64_t advance(int64_t fill, int64_t len, const std::vector<torch::Tensor>& seg);
  // Drops the held tensors under autograd (after a call that ended on a segment boundary).
  void clear_if_graph();

 private:
  State& s_;
  std::vector<std::string> names_;
  int64_t n_;
  bool graph_;
  int64_t held_ = 0;  // slots [0, held_) held when the call began (reserve's fill): never overwritten
};

}  // namespace longctx
