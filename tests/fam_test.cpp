// TransformerFAM and BSWA (MECHANISMS.md section 3) against a float64 reference written as plain
// loops over blocks, tokens and heads, plus the mask as a table and the training options.
#include <cmath>

#include "mixers/fam.h"
#include "model/block.h"
#include "model/lm.h"
#include "test_util.h"

using namespace longctx;
using namespace longctx::testing;

namespace {

using Vec = std::vector<double>;

Vec row(const torch::Tensor& t) {  // [D] float64 -> vector
  auto c = t.to(torch::kFloat64).contiguous();
  return Vec(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}
torch::Tensor tensor(const Vec& v) { return torch::tensor(v, torch::kFloat64); }

// Rotate-halves RoPE on one head's vector at position p.
Vec rope(const Vec& x, int64_t p, double base) {
  const int64_t d = x.size();
  Vec r(d);
  for (int64_t i = 0; i < d / 2; ++i) {
    double th = double(p) * std::pow(base, -2.0 * i / double(d));
    r[i] = x[i] * std::cos(th) - x[i + d / 2] * std::sin(th);
    r[i + d / 2] = x[i + d / 2] * std::cos(th) + x[i] * std::sin(th);
  }
  return r;
}

struct Row {  // one key/value row, all heads: k rotated
  std::vector<Vec> k, v;
};

// One layer (a PreNormBlock holding a FamMixer), token by token, in float64. x: [T, D]; f0:
// [F, D] (F = 0: BSWA). Returns the layer's output [T, D] and the next layer's F_0.
struct Reference {
  PreNormBlock& blk;
  FamMixer& mx;
  int64_t H, d, Lb, m, F;
  double base = 10000;

  torch::Tensor lin(const Linear& l, const torch::Tensor& x) const { return torch::matmul(l->weight, x); }
  torch::Tensor norm(const torch::Tensor& x) const { return blk.input_layernorm(x.view({1, -1})).view({-1}); }
  torch::Tensor ff(const torch::Tensor& a) const {
    auto a2 = a.view({1, -1});
    return (a2 + blk.mlp(blk.post_attention_layernorm(a2))).view({-1});
  }
  std::vector<Vec> heads(const torch::Tensor& x, bool rotate, int64_t p) const {
    std::vector<Vec> out;
    auto all = row(x);
    for (int64_t h = 0; h < H; ++h) {
      Vec e(all.begin() + h * d, all.begin() + (h + 1) * d);
      out.push_back(rotate ? rope(e, p, base) : e);
    }
    return out;
  }
  Row kv(const torch::Tensor& x, int64_t p) const {
    auto n = norm(x);
    return {heads(lin(mx.k_proj, n), true, p), heads(lin(mx.v_proj, n), false, p)};
  }
  // Attention output (after o_proj) of query x at position p over `keys`.
  torch::Tensor attend(const torch::Tensor& x, int64_t p, const std::vector<Row>& keys) const {
    auto q = heads(lin(mx.q_proj, norm(x)), true, p);
    Vec cat;
    for (int64_t h = 0; h < H; ++h) {
      Vec s;
      double mxs = -1e300;
      for (auto& r : keys) {
        double dot = 0;
        for (int64_t i = 0; i < d; ++i) dot += q[h][i] * r.k[h][i];
        s.push_back(dot / std::sqrt(double(d)));
        mxs = std::max(mxs, s.back());
      }
      double sum = 0;
      for (auto& e : s) sum += (e = std::exp(e - mxs));
      for (int64_t c = 0; c < d; ++c) {
        double o = 0;
        for (size_t j = 0; j < keys.size(); ++j) o += s[j] / sum * keys[j].v[h][c];
        cat.push_back(o);
      }
    }
    return lin(mx.o_proj, tensor(cat));
  }

  std::pair<torch::Tensor, torch::Tensor> run(const torch::Tensor& x, const torch::Tensor& f0) const {
    const int64_t T = x.size(0);
    std::vector<torch::Tensor> fam;
    for (int64_t i = 0; i < F; ++i) fam.push_back(f0[i]);
    bool fresh = true;
    std::vector<Row> memory;  // the previous m blocks
    std::vector<torch::Tensor> out;
    for (int64_t b0 = 0; b0 < T; b0 += Lb) {
      std::vector<Row> fam_rows, block;
      for (int64_t i = 0; i < F; ++i) fam_rows.push_back(kv(fam[i], b0 - F + i));
      for (int64_t p = b0; p < std::min(T, b0 + Lb); ++p) {
        block.push_back(kv(x[p], p));
        std::vector<Row> keys = memory;  // memory: all; FAM: all; block: causal
        keys.insert(keys.end(), fam_rows.begin(), fam_rows.end());
        keys.insert(keys.end(), block.begin(), block.end());
        out.push_back(ff(x[p] + attend(x[p], p, keys)));
      }
      if (b0 + Lb > T) break;  // an incomplete block updates nothing
      if (F > 0) {             // FAM queries: FAM and the whole block, never the memory
        std::vector<Row> keys = fam_rows;
        keys.insert(keys.end(), block.begin(), block.end());
        std::vector<torch::Tensor> next;
        for (int64_t i = 0; i < F; ++i) {
          auto a = attend(fam[i], b0 + Lb - F + i, keys);
          next.push_back(ff(fresh ? a : a + fam[i]));
        }
        fam = next;
        fresh = false;
      }
      memory.insert(memory.end(), block.begin(), block.end());
      if (int64_t(memory.size()) > m * Lb) memory.erase(memory.begin(), memory.end() - m * Lb);
    }
    // The next layer's F_0: F_0 through this layer as F tokens at positions -F..-1, all visible.
    std::vector<torch::Tensor> nf;
    if (F > 0) {
      std::vector<Row> keys;
      for (int64_t i = 0; i < F; ++i) keys.push_back(kv(f0[i], -F + i));
      for (int64_t i = 0; i < F; ++i) nf.push_back(ff(f0[i] + attend(f0[i], -F + i, keys)));
    }
    return {torch::stack(out), F > 0 ? torch::stack(nf) : torch::Tensor()};
  }
};

ModelConfig config(const std::string& mixer, int64_t layers = 2) {
  ModelConfig c;
  c.d_model = 16, c.n_layers = layers, c.n_heads = 2, c.d_ff = 32;
  c.mixer = nlohmann::json::parse(mixer);
  return c;
}

// Both layers of the model against the reference, for a sequence fed in the given pieces.
void check_against_reference(const std::string& mixer, int64_t T, std::vector<int64_t> pieces) {
  torch::NoGradGuard ng;
  torch::manual_seed(3);
  auto c = config(mixer);
  CausalLM model(c);
  model->to(torch::kFloat64);
  model->eval();
  // fam_init is small at init (std 0.02): give it weight so the test sees its path.
  if (auto* f = dynamic_cast<FamMixer*>(model->blocks[0]->mixer()); f->fam_init.defined())
    f->fam_init.normal_(0, 1);
  auto x = torch::randn({1, T, c.d_model}, torch::kFloat64);
  auto st = model->new_state();
  StepContext ctx;
  std::vector<torch::Tensor> got;
  int64_t at = 0;
  for (auto n : pieces) {
    StepContext call;  // one context per call, as the model does
    auto h = x.narrow(1, at, n);
    for (size_t l = 0; l < model->blocks.size(); ++l) h = model->blocks[l]->forward(h, st.layers[l], call);
    got.push_back(h);
    at += n;
  }
  auto mine = torch::cat(got, 1)[0];

  torch::Tensor h = x[0], f0;
  for (size_t l = 0; l < model->blocks.size(); ++l) {
    auto* blk = dynamic_cast<PreNormBlock*>(model->blocks[l].get());
    auto* mx = dynamic_cast<FamMixer*>(blk->mixer());
    const auto& o = mx->options();
    if (l == 0 && o.fam_tokens > 0) f0 = mx->fam_init;
    Reference ref{*blk, *mx, c.n_heads, c.d_model / c.n_heads, o.block, o.memory_blocks, o.fam_tokens};
    auto r = ref.run(h, f0);
    h = r.first;
    f0 = r.second;
  }
  EXPECT_LT(max_abs_diff(mine, h), 1e-10) << mixer;
}

}  // namespace

TEST(Fam, MaskTableForBlockAndFamQueries) {
  // 2 memory keys, 1 FAM key, block of 3 of which 1 was seen before this call: 2 new queries.
  auto block = fam_visibility(2, 1, 1, 2, false);
  // keys:        m  m  F  b0 b1 b2
  int want_block[2][6] = {{1, 1, 1, 1, 1, 0},   // block token 1
                          {1, 1, 1, 1, 1, 1}};  // block token 2
  ASSERT_EQ(block.sizes(), (std::vector<int64_t>{2, 6}));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 6; ++j) EXPECT_EQ(block[i][j].item<bool>(), bool(want_block[i][j])) << i << "," << j;
  // FAM queries of a completed block of 3: FAM and block, no memory.
  auto fam = fam_visibility(2, 1, 3, 1, true);
  int want_fam[6] = {0, 0, 1, 1, 1, 1};
  ASSERT_EQ(fam.sizes(), (std::vector<int64_t>{1, 6}));
  for (int j = 0; j < 6; ++j) EXPECT_EQ(fam[0][j].item<bool>(), bool(want_fam[j])) << j;
}

TEST(Fam, BswaMatchesTheFloat64LoopReference) {
  check_against_reference(R"({"type": "bswa", "block": 5, "memory_blocks": 2})", 23, {23});
  check_against_reference(R"({"type": "bswa", "block": 4, "memory_blocks": 0})", 13, {3, 1, 6, 3});
}

TEST(Fam, FamMatchesTheFloat64LoopReferenceInAnyPieces) {
  const char* m1 = R"({"type": "fam", "block": 5, "memory_blocks": 1, "fam_tokens": 3})";
  check_against_reference(m1, 23, {23});
  check_against_reference(m1, 23, {1, 4, 7, 2, 9});
  check_against_reference(R"({"type": "fam", "block": 4, "memory_blocks": 0, "fam_tokens": 2})", 17, {17});
  // More FAM tokens than the block has: positions before the block start.
  check_against_reference(R"({"type": "fam", "block": 3, "memory_blocks": 2, "fam_tokens": 5})", 14, {6, 8});
}

TEST(Fam, FamWithZeroTokensEqualsBswaExactly) {
  torch::NoGradGuard ng;
  torch::manual_seed(4);
  CausalLM bswa(config(R"({"type": "bswa", "block": 8, "memory_blocks": 1})"));
  CausalLM fam0(config(R"({"type": "fam", "block": 8, "memory_blocks": 1, "fam_tokens": 0})"));
  auto pa = bswa->named_parameters(), pb = fam0->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());  // no fam_init without FAM tokens
  for (auto& p : pa) pb[p.key()].copy_(p.value());
  auto tok = torch::randint(0, 256, {2, 40}, torch::kInt64);
  auto sa = bswa->new_state(), sb = fam0->new_state();
  EXPECT_TRUE(torch::equal(bswa->forward(tok, sa), fam0->forward(tok, sb)));
  EXPECT_EQ(sa.bytes(), sb.bytes());
}

TEST(Fam, FamCarriesInformationPastTheWindowWhereBswaCannot) {
  // Block 0 of 4 can reach the last block through the FAM, or through the memory blocks of
  // both layers when they reach that far (receptive field: layers x m blocks).
  auto grad_to_first_block = [](const std::string& mixer) {
    torch::manual_seed(5);
    CausalLM model(config(mixer, 2));
    auto x = torch::randint(0, 256, {1, 32}, torch::kInt64);
    auto emb = model->model->embed_tokens(x).detach().requires_grad_();
    auto st = model->new_state();
    StepContext ctx;
    auto h = emb;
    for (size_t l = 0; l < model->blocks.size(); ++l) h = model->blocks[l]->forward(h, st.layers[l], ctx);
    h.narrow(1, 24, 8).pow(2).sum().backward();  // the last block's outputs
    return emb.grad().narrow(1, 0, 8).abs().sum().item<double>();
  };
  EXPECT_EQ(grad_to_first_block(R"({"type": "bswa", "block": 8, "memory_blocks": 0})"), 0.0);
  // Two layers of BSWA with m = 1 reach 2 blocks back; m = 2 reaches block 0 from block 3.
  EXPECT_EQ(grad_to_first_block(R"({"type": "bswa", "block": 8, "memory_blocks": 1})"), 0.0);
  EXPECT_GT(grad_to_first_block(R"({"type": "bswa", "block": 8, "memory_blocks": 2})"), 0.0);
  EXPECT_GT(grad_to_first_block(R"({"type": "fam", "block": 8, "memory_blocks": 0, "fam_tokens": 2,
                                    "state_passing": 0})"),
            0.0);
}

TEST(Fam, InitialFamAndProjectionsLearn) {
  torch::manual_seed(6);
  CausalLM model(config(R"({"type": "fam", "block": 6, "memory_blocks": 0, "fam_tokens": 2})"));
  auto tok = torch::randint(0, 256, {2, 30}, torch::kInt64);
  auto st = model->new_state();
  model->forward(tok, st, true).pow(2).mean().backward();
  auto* f = dynamic_cast<FamMixer*>(model->blocks[0]->mixer());
  ASSERT_TRUE(f->fam_init.defined());
  EXPECT_GT(f->fam_init.grad().abs().sum().item<double>(), 0);
  EXPECT_FALSE(dynamic_cast<FamMixer*>(model->blocks[1]->mixer())->fam_init.defined());  // layer 0 only
}

TEST(Fam, RandomStatePassingStartsFromThePreviousCallsFam) {
  torch::NoGradGuard ng;  // training flag without gradients: same code path
  auto run_twice = [](double p) {
    torch::manual_seed(7);
    CausalLM model(config(
        R"({"type": "fam", "block": 4, "memory_blocks": 0, "fam_tokens": 2, "position_offset": false, "state_passing": )" +
        std::to_string(p) + "}"));
    auto a = torch::randint(0, 256, {2, 12}, torch::kInt64), b = torch::randint(0, 256, {2, 12}, torch::kInt64);
    auto run = model->new_state();  // the run's memory, as the trainer keeps it between calls
    auto s1 = model->new_state();
    s1.run_memory = &run.layers;
    model->forward(a, s1, true);
    auto s2 = model->new_state();
    s2.run_memory = &run.layers;
    auto second = model->forward(b, s2, true);
    auto s3 = model->new_state();
    auto fresh = model->forward(b, s3, false);
    auto passed = model->blocks[0]->mixer()->diagnostics(run.layers[0])["state_passed"][0];
    // The passed FAM is the first example's, shared by the batch.
    auto f = s1.layers[1].at("fam");
    return std::make_tuple(max_abs_diff(second, fresh), passed, max_abs_diff(f[0], f[1]));
  };
  auto [d0, passed0, spread0] = run_twice(0.0);
  EXPECT_EQ(d0, 0.0);
  EXPECT_EQ(passed0, 0.0);
  auto [d1, passed1, spread1] = run_twice(1.0);
  EXPECT_GT(d1, 1e-4);
  EXPECT_EQ(passed1, 1.0);
  EXPECT_GT(spread1, 0.0);  // the two examples' FAMs differ; only the first one is passed on
}

TEST(Fam, RandomPositionOffsetShiftsEveryRotationTogether) {
  // RoPE scores depend on position differences only, so an offset applied to every query, key
  // and FAM row alike changes the outputs only by rounding; one applied to some rows only would not.
  torch::NoGradGuard ng;
  torch::manual_seed(8);
  auto c = config(R"({"type": "fam", "block": 5, "memory_blocks": 1, "fam_tokens": 2, "state_passing": 0})");
  CausalLM model(c);
  model->to(torch::kFloat64);
  auto tok = torch::randint(0, 256, {6, 23}, torch::kInt64);
  auto s1 = model->new_state(), s2 = model->new_state();
  auto with = model->forward(tok, s1, true);
  auto without = model->forward(tok, s2, false);
  auto off = s1.layers[0].at("offset");
  EXPECT_EQ(off.size(0), 6);
  EXPECT_GT(off.abs().sum().item<int64_t>(), 0);  // about half the examples get one
  EXPECT_TRUE(torch::equal(off, s1.layers[1].at("offset")));  // the same in every layer
  EXPECT_LT(max_abs_diff(with, without), 1e-8);
}

TEST(Fam, ConfigErrorsNameTheField) {
  auto bad = [](const std::string& m, std::initializer_list<std::string> needles) {
    expect_error([&] { CausalLM model(config(m)); }, needles);
  };
  bad(R"({"type": "fam", "block": 0})", {"block"});
  bad(R"({"type": "fam", "fam_tokens": -1})", {"fam_tokens"});
  bad(R"({"type": "fam", "state_passing": 1.5})", {"state_passing"});
  bad(R"({"type": "bswa", "fam_tokens": 4})", {"fam_tokens"});  // not a BSWA field
  bad(R"({"type": "bswa", "memory_blocks": -1})", {"memory_blocks"});
}
