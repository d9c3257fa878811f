// Weights multiplied together (q/k/v, gate/up) live in one buffer and are read in place.
#include <gtest/gtest.h>

#include "nn/layers.h"
#include "nn/linear.h"
#include "nn/stacked.h"

#include <nlohmann/json.hpp>

#include "io/fs.h"
#include "mixers/attention.h"
#include "model/pretrained.h"
#include "test_util.h"

using namespace longctx;

TEST(Stacked, StackRowsKeepsValuesAndStackedWeightIsAViewWithoutGrad) {
  torch::manual_seed(7);
  Linear a(torch::nn::LinearOptions(8, 3).bias(false)), b(torch::nn::LinearOptions(8, 5).bias(false));
  auto before = torch::cat({a->weight, b->weight}, 0).detach().clone();
  stack_rows({a->weight, b->weight});
  EXPECT_TRUE(torch::equal(torch::cat({a->weight, b->weight}, 0), before));
  {
    torch::NoGradGuard ng;
    auto w = stacked_weight({a->weight, b->weight});
    EXPECT_TRUE(torch::equal(w, before));
    EXPECT_EQ(w.data_ptr(), a->weight.data_ptr());  // no copy
  }
  // With autograd the product still sends each parameter its own gradient.
  auto x = torch::randn({4, 8});
  auto w = stacked_weight({a->weight, b->weight});
  (torch::matmul(x, w.t()) * torch::arange(8).to(torch::kFloat)).sum().backward();
  ASSERT_TRUE(a->weight.grad().defined() && b->weight.grad().defined());
  auto ref_a = a->weight.detach().clone().requires_grad_(), ref_b = b->weight.detach().clone().requires_grad_();
  (torch::matmul(x, torch::cat({ref_a, ref_b}, 0).t()) * torch::arange(8).to(torch::kFloat)).sum().backward();
  EXPECT_TRUE(torch::allclose(a->weight.grad(), ref_a.grad()));
  EXPECT_TRUE(torch::allclose(b->weight.grad(), ref_b.grad()));
  // An optimizer's in-place update stays in the shared buffer.
  {
    torch::NoGradGuard ng;
    b->weight.add_(1.0);
    EXPECT_TRUE(torch::equal(stacked_weight({a->weight, b->weight}).narrow(0, 3, 5), b->weight));
  }
}

TEST(Stacked, AReplacedWeightFallsBackToConcatenation) {
  Linear a(torch::nn::LinearOptions(4, 2).bias(false)), b(torch::nn::LinearOptions(4, 2).bias(false));
  stack_rows({a->weight, b->weight});
  torch::NoGradGuard ng;
  b->weight.set_data(torch::randn({2, 4}));  // e.g. a checkpoint's stored dtype replacing it
  auto w = stacked_weight({a->weight, b->weight});
  EXPECT_NE(w.data_ptr(), a->weight.data_ptr());
  EXPECT_TRUE(torch::equal(w, torch::cat({a->weight, b->weight}, 0)));
}

TEST(Stacked, SwiGLUReadsGateAndUpInPlaceAndMatchesTheUnstackedProduct) {
  torch::manual_seed(8);
  SwiGLU f(16, 24);
  EXPECT_EQ(static_cast<const char*>(f->up_proj->weight.data_ptr()),
            static_cast<const char*>(f->gate_proj->weight.data_ptr()) + f->gate_proj->weight.nbytes());
  auto x = torch::randn({3, 16});
  torch::NoGradGuard ng;
  auto want = f->down_proj(torch::silu(f->gate_proj(x)) * f->up_proj(x));
  EXPECT_LT((f(x) - want).abs().max().item<double>(), 1e-5);
}

TEST(Stacked, OneRowProductIsAMatrixVectorProductEqualToTheGemm) {
  // A decoded token goes through torch::mv (no packing of the weight): same values, gradients too.
  torch::manual_seed(9);
  auto w = torch::randn({40, 16}).requires_grad_();
  for (auto shape : {std::vector<int64_t>{16}, std::vector<int64_t>{1, 16}, std::vector<int64_t>{1, 1, 16}}) {
    auto x = torch::randn(shape).requires_grad_();
    auto y = matmul_t(x, w);
    auto want = torch::matmul(x, w.t());
    ASSERT_EQ(y.sizes(), want.sizes());
    EXPECT_LT((y - want).abs().max().item<double>(), 1e-5);
    auto g = torch::randn(want.sizes());
    auto gx = torch::autograd::grad({(y * g).sum()}, {x, w});
    auto ref = torch::autograd::grad({(want * g).sum()}, {x, w});
    EXPECT_LT((gx[0] - ref[0]).abs().max().item<double>(), 1e-5);
    EXPECT_LT((gx[1] - ref[1]).abs().max().item<double>(), 1e-5);
  }
}

TEST(Stacked, OneRowWithoutGradientIsTheFloat64ProductInBothDtypes) {
  // Without autograd a row goes straight to BLAS's GEMV: checked against a float64 product, for
  // float and double, every row shape, odd sizes, and a weight that is a view (not contiguous).
  torch::NoGradGuard ng;
  for (auto dt : {torch::kFloat32, torch::kFloat64})
    for (auto shape : {std::vector<int64_t>{37}, std::vector<int64_t>{1, 37}, std::vector<int64_t>{1, 1, 37}}) {
      auto w = torch::randn({53, 37}, dt);
      auto x = torch::randn(shape, dt);
      auto want = torch::matmul(x.to(torch::kFloat64), w.to(torch::kFloat64).t());
      auto y = matmul_t(x, w);
      ASSERT_EQ(y.sizes(), want.sizes());
      EXPECT_EQ(y.scalar_type(), dt);
      EXPECT_LT((y.to(torch::kFloat64) - want).abs().max().item<double>(), dt == torch::kFloat64 ? 1e-12 : 1e-4);
      auto wide = torch::randn({53, 74}, dt);
      auto wv = wide.narrow(1, 0, 37);  // strided rows: the general path
      auto want2 = torch::matmul(x.to(torch::kFloat64), wv.to(torch::kFloat64).t());
      EXPECT_LT((matmul_t(x, wv).to(torch::kFloat64) - want2).abs().max().item<double>(),
                dt == torch::kFloat64 ? 1e-12 : 1e-4);
    }
}

TEST(Stacked, ALoadedModelHasItsGroupsInOneBufferAgainAndTheSameOutputs) {
  // load_pretrained builds under WeightsFromFile and reads every weight in place: q/k/v and
  // gate/up must still be one buffer each (no concatenation per call), values unchanged.
  auto dir = longctx::testing::temp_dir("stacked_loaded");
  nlohmann::json cfg = {{"model", {{"d_model", 32}, {"n_layers", 2}, {"n_heads", 2}, {"d_ff", 64},
                                   {"mixer", {{"type", "sliding_window"}, {"window", 16}}}}},
                        {"tokenizer", {{"type", "byte"}}}};
  longctx::write_file_atomic(dir + "/config.json", cfg.dump());
  torch::manual_seed(4);
  longctx::CausalLM built(longctx::ModelConfig::from_json(cfg["model"], dir + "/config.json"));
  longctx::save_weights(dir + "/model.safetensors", built);
  auto p = longctx::load_pretrained(dir);
  torch::NoGradGuard ng;
  int groups = 0;
  for (auto& item : p.model->named_modules()) {
    const std::string name = item.key();
    auto ch = item.value()->named_children();
    auto* q = ch.find("q_proj");
    auto* g = ch.find("gate_proj");
    if (q) {
      auto w = [&](const char* n) -> torch::Tensor { return dynamic_cast<longctx::LinearImpl*>(ch.find(n)->get())->weight; };
      auto st = longctx::stacked_weight(std::vector<torch::Tensor>{w("q_proj"), w("k_proj"), w("v_proj")});
      EXPECT_EQ(st.data_ptr(), w("q_proj").data_ptr()) << name << ": q/k/v not in one buffer";
      ++groups;
    }
    if (g) {
      auto w = [&](const char* n) -> torch::Tensor { return dynamic_cast<longctx::LinearImpl*>(ch.find(n)->get())->weight; };
      auto st = longctx::stacked_weight(std::vector<torch::Tensor>{w("gate_proj"), w("up_proj")});
      EXPECT_EQ(st.data_ptr(), w("gate_proj").data_ptr()) << name << ": gate/up not in one buffer";
      ++groups;
    }
  }
  EXPECT_EQ(groups, 4);  // two layers, each an attention and a SwiGLU
  // Same parameters by name and value, same logits.
  auto a = built->named_parameters(), b = p.model->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (auto& item : a) EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
  auto x = torch::randint(0, 256, {1, 40}, torch::kInt64);
  auto sa = built->new_state(), sb = p.model->new_state();
  EXPECT_TRUE(torch::equal(built->forward(x, sa), p.model->forward(x, sb)));
}
