#include "mixers/activation_beacon.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "mixers/projections.h"
#include "nn/attention.h"

namespace longctx {

BeaconOptions BeaconOptions::parse(Fields& f, int64_t max_position_embeddings) {
  BeaconOptions o;
  o.window = f.get<int64_t>("window", o.window);
  f.check(o.window > 0, "window", o.window, "must be > 0");
  o.ratios = f.get<std::vector<int64_t>>("ratios", o.ratios);
  f.check(!o.ratios.empty(), "ratios", "[]", "must name at least one ratio");
  for (auto r : o.ratios)
    f.check(r > 0 && o.window % r == 0, "ratios", r, "must be > 0 and divide the window (" + std::to_string(o.window) + ")");
  std::sort(o.ratios.begin(), o.ratios.end());
  o.ratio = f.get<int64_t>("ratio", o.ratio);
  f.check(o.ratio >= 0 && (o.ratio == 0 || o.window % o.ratio == 0), "ratio", o.ratio,
          "must be 0 (auto) or divide the window (" + std::to_string(o.window) + ")");
  o.max_positions = f.get<int64_t>("max_positions", max_position_embeddings);
  f.check(o.max_positions == 0 || o.max_positions > o.window, "max_positions", o.max_positions,
          "must be 0 (unknown) or more than the window (" + std::to_string(o.window) + ")");
  o.attend = f.get<std::string>("attend", o.attend);
  f.check(o.attend == "step" || o.attend == "segment" || o.attend == "full", "attend", o.attend,
          "must be \"step\" (stepwise expansion), \"segment\" or \"full\"");
  o.beacons = f.get<bool>("beacons", o.beacons);
  o.seed = f.get<uint64_t>("seed", o.seed);
  return o;
}

int64_t BeaconOptions::reach(int64_t alpha) const { return (max_positions - window) * alpha + window; }

int64_t BeaconOptions::choose(int64_t expected) const {
  if (expected > 0 && max_positions > window)
    for (auto r : ratios)
      if (reach(r) >= expected) return r;
  return ratios.back();
}

BeaconMixer::BeaconMixer(AttentionMixerOptions a, BeaconOptions b) : AttentionMixer(a), b_(std::move(b)) {
  LCX_CHECK(!o_.rope.interleaved, "activation_beacon: expects rotate-halves RoPE");
  // The beacons' projections, registered after the base's (which keep Hugging Face's names).
  auto lin = [](int64_t i, int64_t j) { return Linear(torch::nn::LinearOptions(i, j).bias(false)); };
  // Shaped like the base's (grouped-query heads, head_dim), without biases.
  const int64_t D = o_.d_model, Q = o_.n_heads * dh_, KV = kvh() * dh_;
  beacon_q_proj = register_module("beacon_q_proj", lin(D, Q));
  beacon_k_proj = register_module("beacon_k_proj", lin(D, KV));
  beacon_v_proj = register_module("beacon_v_proj", lin(D, KV));
  beacon_o_proj = register_module("beacon_o_proj", lin(Q, D));
}

void BeaconMixer::hold_first_layer_parameters(double init_std) {
  if (beacon_embed.defined()) return;
  torch::NoGradGuard ng;
  beacon_embed = register_parameter("beacon_embed", torch::randn({o_.d_model}) * init_std);
}

std::map<std::string, std::vector<double>> BeaconMixer::diagnostics(const State& run) const {
  if (!b_.beacons) return {};
  return {{"ratio", {double(run.counter("ratio"))}}};
}

StateSchema BeaconMixer::state_schema() const {
  if (!b_.beacons) return AttentionMixer::state_schema();
  const int64_t B = StateField::kBatch, any = StateField::kAny, H = kvh(), d = dh_;
  return {StateField::count("pos", "tokens seen"), StateField::count("ratio", "the stream's condensing ratio"),
          StateField::tensor("k", {B, H, any, d}, "the current window's raw keys", b_.window),
          StateField::tensor("v", {B, H, any, d}, "the current window's raw values", b_.window),
          StateField::tensor("mk", {B, H, any, d}, "the beacons' keys (grows by 1/ratio per token)"),
          StateField::tensor("mv", {B, H, any, d}, "the beacons' values")};
}

torch::Tensor beacon_visibility(int64_t m, int64_t l, int64_t alpha, const std::string& attend) {
  const int64_t k = l / alpha;
  auto i = torch::arange(k, torch::kInt64).unsqueeze(1);   // beacon i (0-based) covers raw i*alpha .. (i+1)*alpha-1
  auto raw = torch::arange(l, torch::kInt64).unsqueeze(0);
  torch::Tensor sees_raw;
  if (attend == "step") sees_raw = raw < (i + 1) * alpha;
  else if (attend == "segment") sees_raw = (raw >= i * alpha).logical_and(raw < (i + 1) * alpha);
  else sees_raw = torch::ones({k, l}, torch::kBool);
  auto sees_memory = torch::ones({k, m}, torch::kBool);
  auto sees_beacons = torch::eye(k, torch::kBool);  // only itself inside the window
  return torch::cat({sees_memory, sees_raw, sees_beacons}, 1);
}

torch::Tensor BeaconMixer::condense(const torch::Tensor& h, const torch::Tensor& raw_k, const torch::Tensor& raw_v,
                                    int64_t alpha, State& state) {
  const int64_t B = h.size(0), k = h.size(1), H = o_.n_heads, G = kvh(), l = b_.window;
  const int64_t m = KVCache::length(state, "m");
  auto parts = project_qkv(layer_.pre_norm(h), beacon_q_proj, beacon_k_proj, beacon_v_proj).view({B, k, H + 2 * G, dh_}).split_with_sizes({H + G, G}, 2);
  // Inside the window beacon i (1-based) sits at m + i * alpha; in memory at its slot m + i - 1.
  auto qk = rope_.apply(parts[0], torch::arange(1, k + 1, torch::kInt64) * alpha + m, 1).split_with_sizes({H, G}, 2);
  auto q = qk[0].transpose(1, 2), kw = qk[1].transpose(1, 2), v = parts[1].transpose(1, 2);
  std::vector<torch::Tensor> ks, vs;
  if (m > 0) ks.push_back(state.at("mk")), vs.push_back(state.at("mv"));
  ks.insert(ks.end(), {raw_k, kw});
  vs.insert(vs.end(), {raw_v, v});
  auto K = torch::cat(ks, 2), V = torch::cat(vs, 2);
  if (G != H) K = K.repeat_interleave(H / G, 1), V = V.repeat_interleave(H / G, 1);
  auto scores = torch::matmul(q, K.transpose(-2, -1)) * (1.0 / std::sqrt(double(dh_)));
  scores = scores.masked_fill(beacon_visibility(m, l, alpha, b_.attend).logical_not().to(q.device()),
                              -std::numeric_limits<double>::infinity());
  auto y = torch::matmul(torch::softmax(scores, -1), V).transpose(1, 2).reshape({B, k, H * dh_});
  auto out = layer_.ff(beacon_o_proj(y) + h);

  auto k_mem = rope_.apply(parts[0].narrow(2, H, G), torch::arange(m, m + k, torch::kInt64), 1).transpose(1, 2);
  if (torch::GradMode::is_enabled()) KVCache::append(state, "m", k_mem, v);
  else KVCache::append(state, "m", k_mem.contiguous(), v.contiguous());
  return out;
}

torch::Tensor BeaconMixer::forward(const torch::Tensor& x, State& state, StepContext& ctx) {
  if (!b_.beacons) return AttentionMixer::forward(x, state, ctx);
  LCX_CHECK(layer_.ff, "activation_beacon: the mixer is not inside a layer (attach_layer was not called)");
  const int64_t B = x.size(0), T = x.size(1), H = o_.n_heads, G = kvh(), l = b_.window;
  const int64_t pos0 = state.counter("pos");
  int64_t fill = pos0 % l;

  // The ratio of this stream: drawn (training) or chosen (inference) by the first layer of the
  // first call, then kept in every layer's state.
  int64_t alpha = state.counter("ratio");
  if (alpha == 0) {
    auto it = ctx.carry.find("beacon.ratio");
    if (it != ctx.carry.end()) {
      alpha = it->second.item<int64_t>();
    } else {
      if (ctx.training) {
        State call_local;  // a mixer called outside CausalLM: a memory that lasts this call
        State& run = ctx.run_memory ? *ctx.run_memory : call_local;
        const auto n = b_.ratios.size();
        alpha = b_.ratios[std::min(n - 1, size_t(run.draw_uniform("ratio", b_.seed) * double(n)))];
      }
      else
        alpha = b_.ratio > 0 ? b_.ratio : b_.choose(ctx.expected_tokens);
      ctx.carry["beacon.ratio"] = torch::tensor(alpha, torch::kInt64);
    }
    state.set_counter("ratio", alpha);
  }
  if (ctx.run_memory) ctx.run_memory->set_counter("ratio", alpha);
  const int64_t k_per = l / alpha;

  // Raw tokens: the base model's projections (one GEMM, as the base computes them).
  auto parts = project_qkv(x, q_proj, k_proj, v_proj).view({B, T, H + 2 * G, dh_}).split_with_sizes({H + G, G}, 2);
  SegmentBuffer held(state, {"k", "v"}, l);  // the current window's raw keys and values
  auto example = parts[1].narrow(1, 0, 1).transpose(1, 2);
  held.reserve({example, example}, fill);
  AttentionOptions ao;
  ao.q_block = o_.q_block;

  std::vector<torch::Tensor> outs;
  int64_t completed = 0;  // windows completed in this call: the beacon rows pass layer to layer
  for (int64_t t = 0; t < T;) {
    const int64_t len = std::min(l - fill, T - t);
    const int64_t m = KVCache::length(state, "m");
    auto pos = torch::arange(m + fill, m + fill + len, torch::kInt64);
    auto qk = rope_.apply(parts[0].narrow(1, t, len), pos, /*time_dim=*/1).split_with_sizes({H, G}, 2);
    auto q = qk[0].transpose(1, 2);
    auto win = held.extend(fill, {qk[1].transpose(1, 2), parts[1].narrow(1, t, len).transpose(1, 2)});
    // The memory and the window are read where they lie: the memory (1/ratio of every token
    // seen) is not copied on every call.
    std::vector<torch::Tensor> keys{win[0]}, vals{win[1]};
    if (m > 0) keys.insert(keys.begin(), state.at("mk")), vals.insert(vals.begin(), state.at("mv"));
    auto y = attention_pieces(q, keys, vals, pos, torch::arange(0, m + fill + len, torch::kInt64), ao);
    outs.push_back(o_proj(y.transpose(1, 2).reshape({B, len, H * dh_})));

    if (fill + len == l) {  // the window is complete: condense it
      const std::string key = "beacon.rows." + std::to_string(completed++);
      torch::Tensor rows;
      if (beacon_embed.defined()) {
        rows = beacon_embed.to(x.scalar_type()).view({1, 1, o_.d_model}).expand({B, k_per, o_.d_model});
      } else {
        auto it = ctx.carry.find(key);
        LCX_CHECK(it != ctx.carry.end(), "activation_beacon: no beacon rows from the layer below (layer 0 holds the "
                                         "beacon embedding)");
        rows = it->second;
      }
      ctx.carry[key] = condense(rows, win[0], win[1], alpha, state);
    }
    fill = held.advance(fill, len, win);
    t += len;
  }
  state.set_counter("pos", pos0 + T);
  return outs.size() == 1 ? outs[0] : torch::cat(outs, 1);
}

Mechanism beacon_mechanism() {
  auto options = [](const LayerSpec& s) {
    return parse_mixer_fields(s, [&](Fields& f) {
      auto a = AttentionMixerOptions::parse(f, s.d_model, s.n_heads, s.rope(), false);
      auto b = BeaconOptions::parse(f, s.max_position_embeddings);
      return std::make_pair(a, b);
    });
  };
  Mechanism m;
  m.type = "activation_beacon";
  m.validate = [options](const LayerSpec& s) { options(s); };
  m.make_mixer = [options](const LayerSpec& s, int64_t) {
    auto [a, b] = options(s);
    return std::make_shared<BeaconMixer>(a, b);
  };
  return m;
}

}  // namespace longctx
