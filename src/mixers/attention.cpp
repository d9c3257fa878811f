#include "mixers/attention.h"

#include "mixers/projections.h"
#include "nn/attention.h"

namespace longctx {

AttentionMixerOptions AttentionMixerOptions::parse(Fields& f, int64_t d_model, int64_t n_heads,
                                                   const RopeOptions& rope, bool sliding) {
  AttentionMixerOptions o;
  o.d_model = d_model;
  o.n_heads = n_heads;
  o.n_kv_heads = f.get<int64_t>("n_kv_heads", 0);
  o.q_block = f.get<int64_t>("q_block", 256);
  f.check(o.q_block > 0, "q_block", o.q_block, "must be > 0");
  int64_t kvh = o.n_kv_heads ? o.n_kv_heads : n_heads;
  f.check(kvh > 0 && n_heads % kvh == 0, "n_kv_heads", o.n_kv_heads, "must divide n_heads");
  o.head_dim = f.get<int64_t>("head_dim", 0);
  f.check(o.head_dim >= 0 && o.head_dim % 2 == 0 && o.head_dim <= 1024, "head_dim", o.head_dim,
          "must be 0 (d_model / n_heads) or an even width <= 1024");
  o.qkv_bias = f.get<bool>("qkv_bias", false);
  if (sliding) {
    o.window = f.req<int64_t>("window");
    f.check(o.window > 0, "window", o.window, "must be > 0");
    o.sinks = f.get<int64_t>("sinks", 0);
    f.check(o.sinks >= 0, "sinks", o.sinks, "must be >= 0");
  }
  o.rope = rope;
  if (o.head_dim > 0) o.rope.dim = o.head_dim;
  return o;
}

AttentionMixer::AttentionMixer(AttentionMixerOptions o) : o_(o), rope_(o.rope) {
  dh_ = o_.head_dim > 0 ? o_.head_dim : o_.d_model / o_.n_heads;
  int64_t kvh = o_.n_kv_heads ? o_.n_kv_heads : o_.n_heads;
  register_qkvo(*this, o_.d_model, o_.n_heads * dh_, kvh * dh_, q_proj, k_proj, v_proj, o_proj, o_.qkv_bias);
}

StateSchema AttentionMixer::state_schema() const {
  const int64_t kvh = o_.n_kv_heads ? o_.n_kv_heads : o_.n_heads;
  const int64_t cap = o_.window > 0 ? o_.window : 0;  // the window's cache holds at most window - 1 between calls
  return {StateField::count("pos", "tokens seen"),
          StateField::count("rope_len", "the length whose RoPE-scaling plan rotated the cached keys"),
          StateField::tensor("k", {StateField::kBatch, kvh, StateField::kAny, dh_}, "cached keys, rotated", cap),
          StateField::tensor("v", {StateField::kBatch, kvh, StateField::kAny, dh_}, "cached values", cap),
          StateField::tensor("sink_k", {StateField::kBatch, kvh, StateField::kAny, dh_}, "attention sinks' keys", o_.sinks),
          StateField::tensor("sink_v", {StateField::kBatch, kvh, StateField::kAny, dh_}, "attention sinks' values", o_.sinks)};
}

torch::Tensor AttentionMixer::forward(const torch::Tensor& x, State& state, StepContext& ctx) {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t kvh = o_.n_kv_heads ? o_.n_kv_heads : o_.n_heads;
  const int64_t pos0 = state.counter("pos");
  auto pos = torch::arange(pos0, pos0 + T, torch::kInt64);
  Rope rope = rope_;  // a copy per call: the plan depends on the call's length, not on the module
  if (o_.scaling.active()) {
    auto plan = o_.scaling.plan(dh_, o_.rope.base, pos0 + T);
    rope.set_scaling(plan.lambda, plan.attention, o_.scaling.n_hat);
    const int64_t was = state.counter("rope_len");  // the length whose plan rotated the cache
    if (was > 0 && (state.has("k") || state.has("sink_k"))) {
      auto old = o_.scaling.plan(dh_, o_.rope.base, was);
      if (!torch::equal(old.lambda, plan.lambda) || old.attention != plan.attention) {
        Rope from = rope_;
        from.set_scaling(old.lambda, old.attention, o_.scaling.n_hat);
        auto rerotate = [&](const std::string& name, int64_t first_pos) {
          if (!state.has(name)) return;
          auto& k = state.at(name);
          auto kp = torch::arange(first_pos, first_pos + k.size(2), torch::kInt64);
          auto turned = rope.rotate(k, rope.angles(kp) - from.angles(kp), plan.attention / old.attention);
          k = turned;  // a new tensor: a snapshot of the state keeps the keys as they were
        };
        rerotate("sink_k", 0);
        rerotate("k", pos0 - (state.has("k") ? state.at("k").size(2) : 0));
      }
    }
    state.set_counter("rope_len", pos0 + T);
  }

  // One GEMM for q, k and v (weights concatenated; the parameters keep their HF names).
  // split (not narrow): its backward is one cat instead of a zero-filled tensor per slice.
  auto qkv = project_qkv(x, q_proj, k_proj, v_proj).view({B, T, o_.n_heads + 2 * kvh, dh_});
  auto parts = qkv.split_with_sizes({o_.n_heads + kvh, kvh}, 2);
  auto qk_rot = rope.apply(parts[0], pos, /*time_dim=*/1).split_with_sizes({o_.n_heads, kvh}, 2);
  auto qr = qk_rot[0].transpose(1, 2);  // [B, H, T, dh], q and k rotated in one pass
  auto k = qk_rot[1].transpose(1, 2);
  auto v = parts[1].transpose(1, 2);

  // Keys visible to this segment: [sinks][cache][segment].
  torch::Tensor kpos;
  auto ck = state.get("k");
  int64_t cache_len = ck.defined() ? ck.size(2) : 0;
  int64_t n_sink_cached = state.has("sink_k") ? state.at("sink_k").size(2) : 0;
  auto kv = KVCache::append(state, "", k, v);
  std::vector<torch::Tensor> keys{kv.first}, vals{kv.second};  // read where they lie, not concatenated
  kpos = torch::arange(pos0 - cache_len, pos0 + T, torch::kInt64);
  if (n_sink_cached > 0) {
    keys.insert(keys.begin(), state.at("sink_k"));
    vals.insert(vals.begin(), state.at("sink_v"));
    kpos = torch::cat({torch::arange(0, n_sink_cached, torch::kInt64), kpos});
  }
  AttentionOptions ao;
  ao.window = o_.window;
  ao.n_sink = o_.sinks;
  ao.q_block = o_.q_block;
  torch::Tensor q_sink;
  if (o_.window > 0 && o_.sinks > 0)
    q_sink = rope.apply(parts[0].narrow(2, 0, o_.n_heads), torch::clamp_max(pos, o_.sinks + o_.window - 1), 1)
                 .transpose(1, 2);
  auto y = attention_pieces(qr, keys, vals, pos, kpos, ao, q_sink);
  y = o_proj(y.transpose(1, 2).reshape({B, T, o_.n_heads * dh_}));

  // Bound the cache: move the first `sinks` tokens aside once, keep the last `window`.
  if (o_.window > 0) {
    if (o_.sinks > n_sink_cached && pos0 < o_.sinks) {
      int64_t start = n_sink_cached;  // position of the first sink not yet moved
      int64_t have = std::min<int64_t>(o_.sinks, pos0 + T) - start;
      // the cache now spans positions [pos0 - cache_len, pos0 + T)
      auto sk = state.at("k").narrow(2, start - (pos0 - cache_len), have);
      auto sv = state.at("v").narrow(2, start - (pos0 - cache_len), have);
      state.set("sink_k", n_sink_cached ? torch::cat({state.at("sink_k"), sk}, 2) : sk.contiguous());
      state.set("sink_v", n_sink_cached ? torch::cat({state.at("sink_v"), sv}, 2) : sv.contiguous());
    }
    // The window cache holds only positions >= sinks (sinks live in sink_k/v).
    int64_t end = pos0 + T;
    int64_t keep = std::min<int64_t>(o_.window - 1, end - std::min<int64_t>(o_.sinks, end));
    KVCache::keep_last(state, "", std::max<int64_t>(keep, 0));
  }
  state.set_counter("pos", pos0 + T);
  return y;
}

Mechanism attention_mechanism(bool sliding) {
  auto options = [sliding](const LayerSpec& s) {
    auto o = parse_mixer_fields(
        s, [&](Fields& f) { return AttentionMixerOptions::parse(f, s.d_model, s.n_heads, s.rope(), sliding); });
    o.scaling = RopeScaling::parse(s.rope_scaling, s.max_position_embeddings, s.where);
    return o;
  };
  Mechanism m;
  m.type = sliding ? "sliding_window" : "full_attention";
  m.validate = [options](const LayerSpec& s) { options(s); };
  m.make_mixer = [options](const LayerSpec& s, int64_t) { return std::make_shared<AttentionMixer>(options(s)); };
  m.rope_scaling = true;
  return m;
}

}  // namespace longctx
