#include "mixers/fam.h"
#include "nn/attention.h"

#include <cmath>
#include <limits>

#include "mixers/projections.h"

namespace longctx {

FamOptions FamOptions::parse(Fields& f, int64_t d_model, int64_t n_heads, const RopeOptions& rope, bool fam) {
  FamOptions o;
  o.d_model = d_model;
  o.n_heads = n_heads;
  o.block = f.get<int64_t>("block", o.block);
  f.check(o.block > 0, "block", o.block, "must be > 0");
  o.memory_blocks = f.get<int64_t>("memory_blocks", o.memory_blocks);
  f.check(o.memory_blocks >= 0, "memory_blocks", o.memory_blocks, "must be >= 0");
  if (fam) {
    o.fam_tokens = f.get<int64_t>("fam_tokens", o.fam_tokens);
    f.check(o.fam_tokens >= 0, "fam_tokens", o.fam_tokens, "must be >= 0 (0 = BSWA)");
    o.state_passing = f.get<double>("state_passing", o.state_passing);
    f.check(o.state_passing >= 0 && o.state_passing <= 1, "state_passing", o.state_passing, "must be in [0, 1]");
    o.position_offset = f.get<bool>("position_offset", o.position_offset);
    o.seed = f.get<uint64_t>("seed", o.seed);
  } else {
    o.fam_tokens = 0;
    o.state_passing = 0;
    o.position_offset = false;
  }
  o.rope = rope;
  return o;
}

FamMixer::FamMixer(FamOptions o) : o_(o), rope_(o.rope) {
  LCX_CHECK(!o_.rope.interleaved, "fam: expects rotate-halves RoPE");
  dh_ = o_.d_model / o_.n_heads;
  register_qkvo(*this, o_.d_model, o_.d_model, o_.d_model, q_proj, k_proj, v_proj, o_proj);
}

void FamMixer::hold_first_layer_parameters(double init_std) {
  if (o_.fam_tokens == 0 || fam_init.defined()) return;
  torch::NoGradGuard ng;
  fam_init = register_parameter("fam_init", torch::randn({o_.fam_tokens, o_.d_model}) * init_std);
}

StateSchema FamMixer::state_schema() const {
  const int64_t B = StateField::kBatch, any = StateField::kAny, H = o_.n_heads, d = dh_, Lb = o_.block;
  StateSchema s = {StateField::count("pos", "tokens seen"),
                   StateField::tensor("k", {B, H, any, d}, "the current block's keys", Lb),
                   StateField::tensor("v", {B, H, any, d}, "the current block's values", Lb),
                   StateField::tensor("mk", {B, H, any, d}, "the previous blocks' keys", o_.memory_blocks * Lb),
                   StateField::tensor("mv", {B, H, any, d}, "the previous blocks' values", o_.memory_blocks * Lb),
                   StateField::tensor("offset", {B}, "the training position offset per stream", 0, /*floating=*/false)};
  if (o_.fam_tokens > 0) {
    s.push_back(StateField::tensor("fam", {B, o_.fam_tokens, o_.d_model}, "the feedback memory F"));
    s.push_back(StateField::count("fam_fresh", "1 while the FAM is the initial one"));
  }
  return s;
}

std::map<std::string, std::vector<double>> FamMixer::diagnostics(const State& run) const {
  if (o_.fam_tokens == 0) return {};
  return {{"state_passed", {double(run.counter("state_passed"))}}};
}

std::pair<torch::Tensor, torch::Tensor> FamMixer::project(const torch::Tensor& x) const {
  const int64_t B = x.size(0), n = x.size(1), H = o_.n_heads;
  auto parts = project_qkv(x, q_proj, k_proj, v_proj).view({B, n, 3 * H, dh_}).split_with_sizes({2 * H, H}, 2);
  return {parts[0], parts[1]};
}

torch::Tensor FamMixer::rotate(const torch::Tensor& y, const torch::Tensor& pos, const torch::Tensor& offset) const {
  if (!offset.defined()) return rope_.apply(y, pos, /*time_dim=*/1);
  // A position offset per example: angles [B, n, 1, d/2], rotate-halves as in Rope.
  const int64_t B = y.size(0), n = y.size(1);
  auto ang = rope_.angles((pos.unsqueeze(0) + offset.unsqueeze(1)).reshape({-1})).view({B, n, 1, dh_ / 2});
  auto full = torch::cat({ang, ang}, -1);
  auto partner = torch::cat({-y.narrow(-1, dh_ / 2, dh_ / 2), y.narrow(-1, 0, dh_ / 2)}, -1);
  return y * torch::cos(full).to(y.scalar_type()) + partner * torch::sin(full).to(y.scalar_type());
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> FamMixer::qkv(const torch::Tensor& x, const torch::Tensor& pos,
                                                                      const torch::Tensor& offset) const {
  auto [qk, v] = project(x);
  auto rot = rotate(qk, pos, offset).split_with_sizes({o_.n_heads, o_.n_heads}, 2);
  return {rot[0].transpose(1, 2), rot[1].transpose(1, 2), v.transpose(1, 2)};
}

FamMask fam_mask(int64_t n_mem, int64_t n_fam, int64_t fill, int64_t n_queries, bool fam_queries) {
  FamMask m;
  m.n_keys = n_mem + n_fam + fill + (fam_queries ? 0 : n_queries);
  if (fam_queries) {  // FAM sees the FAM and the whole block, never the memory blocks
    m.q_pos = torch::full({n_queries}, m.n_keys - 1, torch::kInt64);
    m.window = m.n_keys - n_mem;
  } else {  // block token fill + i sees the memory, the FAM and block tokens 0 .. fill + i
    m.q_pos = torch::arange(n_mem + n_fam + fill, n_mem + n_fam + fill + n_queries, torch::kInt64);
  }
  return m;
}

torch::Tensor fam_visibility(int64_t n_mem, int64_t n_fam, int64_t fill, int64_t n_queries, bool fam_queries) {
  auto m = fam_mask(n_mem, n_fam, fill, n_queries, fam_queries);
  auto d = m.q_pos.unsqueeze(1) - torch::arange(m.n_keys, torch::kInt64).unsqueeze(0);
  return m.window > 0 ? (d >= 0) & (d < m.window) : d >= 0;
}

torch::Tensor FamMixer::attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const FamMask& mask) const {
  const int64_t B = q.size(0), nq = q.size(2);
  LCX_CHECK(k.size(2) == mask.n_keys, "fam: ", k.size(2), " keys where the mask has ", mask.n_keys);
  AttentionOptions ao;
  ao.window = mask.window;
  auto y = attention(q, k, v, mask.q_pos, torch::arange(mask.n_keys, torch::kInt64), ao);
  return matmul_t(y.transpose(1, 2).reshape({B, nq, o_.d_model}), o_proj->weight);
}

torch::Tensor FamMixer::through_layer(const torch::Tensor& f0) const {
  const int64_t F = o_.fam_tokens;
  auto [q, k, v] = qkv(layer_.pre_norm(f0), torch::arange(-F, 0, torch::kInt64), {});
  return layer_.ff(attend(q, k, v, fam_mask(0, F, 0, F, true)) + f0);
}

torch::Tensor FamMixer::forward(const torch::Tensor& x, State& state, StepContext& ctx) {
  const int64_t B = x.size(0), T = x.size(1), Lb = o_.block, F = o_.fam_tokens, m = o_.memory_blocks;
  const bool graph = torch::GradMode::is_enabled();
  const int64_t pos0 = state.counter("pos");
  int64_t fill = pos0 % Lb;
  LCX_CHECK(!(F > 0 && !layer_.ff), "fam: the mixer is not inside a layer (attach_layer was not called)");

  // Random position offset (training): drawn once per sequence by the first layer, kept in the
  // state so that a sequence fed in several calls keeps it.
  State call_local;  // a mixer called outside CausalLM: a memory that lasts this call
  State& run = ctx.run_memory ? *ctx.run_memory : call_local;  // draws, the passed FAM, diagnostics
  torch::Tensor offset = state.get("offset");
  if (!offset.defined() && ctx.training && o_.position_offset && pos0 == 0) {
    auto it = ctx.carry.find("fam.offset");
    if (it == ctx.carry.end()) {
      std::vector<int64_t> off(B);
      for (auto& o : off) {
        const double u = run.draw_uniform("offset", o_.seed) * (2 * M_PI * 10000.0);
        const double on = std::round(run.draw_uniform("offset_on", o_.seed));
        o = int64_t(std::floor(u * on));
      }
      offset = ctx.carry["fam.offset"] = torch::tensor(off, torch::kInt64);
    } else {
      offset = it->second;
    }
    state.set("offset", offset);
  }

  // F_{tau-1}: from the state, or at the start of a sequence from F_0 (or, in training, the
  // FAM the previous call ended with).
  torch::Tensor fam;
  bool fresh = false;  // true while fam is F_0: the next update then uses a zero residual
  if (F > 0) {
    if (state.has("fam")) {
      fam = state.at("fam");
      fresh = state.counter("fam_fresh") != 0;
    } else {
      bool pass = false;
      if (ctx.training && o_.state_passing > 0) {
        auto it = ctx.carry.find("fam.pass");
        if (it == ctx.carry.end()) {
          pass = run.draw_uniform("pass", o_.seed) < o_.state_passing && run.has("passed");
          ctx.carry["fam.pass"] = torch::tensor(int64_t(pass));
        } else {
          pass = it->second.item<int64_t>() != 0;
        }
        LCX_CHECK(!pass || run.has("passed"), "fam: state passing without a FAM from the previous call");
      }
      if (ctx.training) run.set_counter("state_passed", pass ? 1 : 0);
      if (pass) {
        fam = run.at("passed").to(x.scalar_type()).expand({B, F, o_.d_model}).contiguous();
      } else {
        torch::Tensor f0;
        if (fam_init.defined()) {
          f0 = fam_init.to(x.scalar_type()).unsqueeze(0);
        } else {
          auto it = ctx.carry.find("fam.init");
          LCX_CHECK(it != ctx.carry.end(), "fam: no initial FAM from the layer below (layer 0 holds it)");
          f0 = it->second;
        }
        ctx.carry["fam.init"] = through_layer(f0);  // the next layer's F_0
        fam = f0.expand({B, F, o_.d_model}).contiguous();
        fresh = true;
      }
    }
    LCX_CHECK(fam.size(0) == B, "fam: state has batch ", fam.size(0), ", input has ", B);
  }

  auto [q, k, v] = qkv(x, torch::arange(pos0, pos0 + T, torch::kInt64), offset);
  SegmentBuffer held(state, {"k", "v"}, Lb);  // the current block's keys and values
  held.reserve({k, v}, fill);
  auto mk = state.get("mk"), mv = state.get("mv");  // the previous m blocks
  int64_t block_start = pos0 - fill;
  // F_{tau-1} is projected once per block: its keys sit at the last F positions before the
  // block; its queries (the update, when the block completes) at the block's last F positions.
  const int64_t H = o_.n_heads;
  torch::Tensor fam_qk, fk, fv;
  auto fam_kv = [&](int64_t at) {
    auto [qk, val] = project(layer_.pre_norm(fam));
    fam_qk = qk;
    fk = rotate(qk.narrow(2, H, H), torch::arange(at - F, at, torch::kInt64), offset).transpose(1, 2);
    fv = val.transpose(1, 2);
  };
  if (F > 0) fam_kv(block_start);

  std::vector<torch::Tensor> outs;
  for (int64_t t = 0; t < T;) {
    const int64_t len = std::min(Lb - fill, T - t);
    auto blk = held.extend(fill, {k.narrow(2, t, len), v.narrow(2, t, len)});
    // Block tokens: [memory | FAM | block], the block causally.
    std::vector<torch::Tensor> keys, vals;
    if (mk.defined()) keys.push_back(mk), vals.push_back(mv);
    if (F > 0) keys.push_back(fk), vals.push_back(fv);
    keys.push_back(blk[0]), vals.push_back(blk[1]);
    const int64_t n_mem = mk.defined() ? mk.size(2) : 0;
    auto K = torch::cat(keys, 2), V = torch::cat(vals, 2);
    outs.push_back(attend(q.narrow(2, t, len), K, V, fam_mask(n_mem, F, fill, len, false)));

    if (fill + len == Lb) {  // the block is complete
      if (F > 0) {
        // FAM update: F_{tau-1} queries the same keys (the memory masked out) at the last F
        // positions of the block; then the layer's feed-forward.
        const int64_t end = block_start + Lb;
        auto fq = rotate(fam_qk.narrow(2, 0, H), torch::arange(end - F, end, torch::kInt64), offset).transpose(1, 2);
        auto a = attend(fq, K, V, fam_mask(n_mem, F, Lb, F, true));
        fam = layer_.ff(fresh ? a : a + fam);
        fresh = false;
        fam_kv(end);
      }
      if (m > 0) {  // the block joins the memory; the oldest leaves it
        mk = mk.defined() ? torch::cat({mk, blk[0]}, 2) : blk[0];
        mv = mv.defined() ? torch::cat({mv, blk[1]}, 2) : blk[1];
        if (mk.size(2) > m * Lb) mk = mk.narrow(2, mk.size(2) - m * Lb, m * Lb), mv = mv.narrow(2, mv.size(2) - m * Lb, m * Lb);
        if (!graph) mk = mk.contiguous(), mv = mv.contiguous();
      }
      block_start += Lb;
    }
    fill = held.advance(fill, len, blk);
    t += len;
  }
  if (mk.defined()) state.set("mk", mk), state.set("mv", mv);
  if (F > 0) {
    state.set("fam", fam);
    state.set_counter("fam_fresh", fresh ? 1 : 0);
    if (ctx.training) run.set("passed", fam.narrow(0, 0, 1).detach().clone());
  }
  state.set_counter("pos", pos0 + T);
  return outs.size() == 1 ? outs[0] : torch::cat(outs, 1);
}

Mechanism fam_mechanism(bool fam) {
  auto options = [fam](const LayerSpec& s) {
    return parse_mixer_fields(s, [&](Fields& f) { return FamOptions::parse(f, s.d_model, s.n_heads, s.rope(), fam); });
  };
  Mechanism m;
  m.type = fam ? "fam" : "bswa";
  m.validate = [options](const LayerSpec& s) { options(s); };
  m.make_mixer = [options](const LayerSpec& s, int64_t) { return std::make_shared<FamMixer>(options(s)); };
  return m;
}

}  // namespace longctx
