#include "model/lm.h"

#include <cmath>

#include "io/safetensors.h"
#include "model/factory.h"
#include "util/error.h"

namespace longctx {

int64_t ModelState::bytes() const {
  int64_t b = head.bytes();
  for (auto& s : layers) b += s.bytes();
  return b;
}
void ModelState::detach_() {
  head.detach_();
  for (auto& s : layers) s.detach_();
}
ModelState ModelState::clone() const {
  ModelState m;
  m.tokens = tokens;
  m.hand_on = hand_on;
  m.expected_tokens = expected_tokens;
  m.head = head.clone();
  for (auto& s : layers) m.layers.push_back(s.clone());
  return m;
}

void ModelState::expand_batch(int64_t n) {
  auto expand = [n](State& st) {
    for (auto& [name, t] : std::map<std::string, torch::Tensor>(st.tensors())) {
      if (!t.defined() || t.dim() == 0) continue;  // counters
      LCX_CHECK(t.size(0) == 1, "state: cannot expand tensor '", name, "' of batch ", t.size(0), " (expected 1)");
      std::vector<int64_t> reps(t.dim(), 1);
      reps[0] = n;
      st.set(name, t.repeat(reps));
    }
  };
  expand(head);
  for (auto& s : layers) expand(s);
}

CausalLMImpl::CausalLMImpl(const ModelConfig& c) : cfg_(c) {
  model = register_module("model", std::make_shared<Body>());
  model->embed_tokens = model->register_module("embed_tokens", Embedding(c.vocab_size, c.d_model));
  model->layers = model->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.n_layers; ++i) {
    auto b = make_block(c, i);
    model->layers->push_back(b);
    blocks.push_back(b);
  }
  if (int64_t g = timestep_final_norm_groups(c))
    model->timestep_norm = model->register_module("norm", TimestepNorm(c.d_model, g, c.norm_eps));
  else
    model->norm = model->register_module("norm", RMSNorm(c.d_model, c.norm_eps));
  if (!c.tie_embeddings)
    lm_head = register_module("lm_head", Linear(torch::nn::LinearOptions(c.d_model, c.vocab_size).bias(false)));
  init_weights();
}

void CausalLMImpl::init_weights() {
  torch::NoGradGuard ng;
  double out_std = cfg_.init_std / std::sqrt(2.0 * cfg_.n_layers);
  std::vector<std::string> own;  // blocks that initialise themselves
  for (size_t i = 0; i < blocks.size(); ++i)
    if (blocks[i]->own_init()) own.push_back("model.layers." + std::to_string(i) + ".");
  for (auto& item : named_parameters()) {
    const auto& name = item.key();
    auto& p = item.value();
    if (p.dim() < 2) continue;  // norms: ones
    if (weights_from_file()) continue;  // filled from a file next: left unwritten, so not resident
    bool skip = false;
    for (auto& o : own) skip = skip || name.rfind(o, 0) == 0;
    if (skip) continue;
    bool out = name.find("o_proj") != std::string::npos || name.find("down_proj") != std::string::npos;
    p.normal_(0.0, out ? out_std : cfg_.init_std);
  }
  for (auto& b : blocks) {
    if (b->own_init()) b->reset_parameters();
    if (b->mixer()) b->mixer()->init_own_parameters();
  }
}

int64_t CausalLMImpl::num_parameters() const {
  int64_t n = 0;
  for (auto& p : parameters()) n += p.numel();
  return n;
}

bool CausalLMImpl::state_bounded() const {
  for (auto& b : blocks)
    if (!b->mixer() || !b->mixer()->state_bounded()) return false;
  return true;
}

StateSchema CausalLMImpl::layer_schema(int64_t layer) const {
  LCX_CHECK(layer >= 0 && layer < int64_t(blocks.size()), "model: no layer ", layer);
  return blocks[size_t(layer)]->state_schema();
}

StateSchema CausalLMImpl::head_schema() const {
  if (model->timestep_norm.is_empty()) return {};
  return timestep_norm_schema("norm_", model->timestep_norm->groups());
}

torch::Device CausalLMImpl::device() const { return model->embed_tokens->weight.device(); }

ModelState CausalLMImpl::new_state() const {
  ModelState s;
  s.layers.resize(cfg_.n_layers);
  return s;
}

torch::Tensor CausalLMImpl::hidden(const torch::Tensor& tokens, ModelState& state, bool training) {
  LCX_CHECK(tokens.dim() == 2, "model: tokens must be [B, T]");
  if (state.layers.empty()) state.layers.resize(cfg_.n_layers);
  LCX_CHECK(static_cast<int64_t>(state.layers.size()) == cfg_.n_layers, "model: state has ", state.layers.size(),
            " layers, model has ", cfg_.n_layers);
  StepContext ctx;
  ctx.training = training;
  ctx.hand_on = state.hand_on;
  ctx.expected_tokens = state.expected_tokens;
  ctx.record = state.record;
  if (state.run_memory) {
    LCX_CHECK(static_cast<int64_t>(state.run_memory->size()) == cfg_.n_layers, "model: run memory has ",
              state.run_memory->size(), " layers, model has ", cfg_.n_layers);
  }
  std::vector<State> scratch(state.run_memory ? 0 : blocks.size());  // a call without a run's memory
  auto& run = state.run_memory ? *state.run_memory : scratch;
  // The rollback point: mixers never write into storage a state holds (State), so sharing the
  // tensors is enough to undo a step that fails part way.
  std::vector<State> before;
  before.reserve(state.layers.size());
  for (auto& s : state.layers) before.push_back(s.snapshot());
  State head_before = state.head.snapshot();
  std::vector<State> run_before;
  for (auto& s : run) run_before.push_back(s.snapshot());
  try {
    auto h = model->embed_tokens(tokens);
    for (size_t i = 0; i < blocks.size(); ++i) {
      ctx.run_memory = &run[i];
      h = blocks[i]->forward(h, state.layers[i], ctx);
    }
    h = !model->timestep_norm.is_empty() ? model->timestep_norm(h, state.head, "norm_") : model->norm(h);
    state.tokens += tokens.size(1);
    return h;
  } catch (...) {
    state.layers = std::move(before);
    state.head = std::move(head_before);
    for (size_t i = 0; i < run.size(); ++i) run[i] = std::move(run_before[i]);
    throw;
  }
}

torch::Tensor CausalLMImpl::logits(const torch::Tensor& h) {
  return cfg_.tie_embeddings ? matmul_t(h, model->embed_tokens->weight) : lm_head(h);
}

torch::Tensor CausalLMImpl::forward(const torch::Tensor& tokens, ModelState& state, bool training) {
  return logits(hidden(tokens, state, training));
}

static const char* kStateFormat = "longctx-state";
static const char* kStateVersion = "1";

namespace {
std::vector<std::pair<std::string, torch::Tensor>> state_tensors(const ModelState& s,
                                                               const std::map<std::string, torch::Tensor>& extra) {
  std::vector<std::pair<std::string, torch::Tensor>> t;
  for (size_t i = 0; i < s.layers.size(); ++i)
    for (auto& [n, x] : s.layers[i].tensors()) t.push_back({"layers." + std::to_string(i) + "." + n, x});
  for (auto& [n, x] : s.head.tensors()) t.push_back({"head." + n, x});
  for (auto& [n, x] : extra) t.push_back({"extra." + n, x});
  return t;
}

std::map<std::string, std::string> state_metadata(const ModelState& s, const ModelConfig& c) {
  return {{"format", kStateFormat},
          {"version", kStateVersion},
          {"mechanism", c.mixer_type()},
          {"config_hash", c.hash()},
          {"n_layers", std::to_string(c.n_layers)},
          {"tokens", std::to_string(s.tokens)}};
}

ModelState parse_state(const TensorFile& f, const ModelConfig& c, const std::string& path,
                       std::map<std::string, torch::Tensor>* extra) {
  auto meta = [&](const std::string& k) {
    auto it = f.metadata.find(k);
    LCX_CHECK(it != f.metadata.end(), path, ": not a longctx state (metadata '", k, "' missing)");
    return it->second;
  };
  LCX_CHECK(meta("format") == kStateFormat, path, ": format '", meta("format"), "' is not ", kStateFormat);
  LCX_CHECK(meta("version") == kStateVersion, path, ": state version ", meta("version"), " is not supported (expected ",
            kStateVersion, ")");
  LCX_CHECK(meta("mechanism") == c.mixer_type(), path, ": state of mechanism '", meta("mechanism"),
            "' cannot continue a '", c.mixer_type(), "' model");
  LCX_CHECK(meta("config_hash") == c.hash(), path, ": state was written by a model with config hash ",
            meta("config_hash"), ", this model's is ", c.hash());
  ModelState s;
  s.layers.resize(c.n_layers);
  try {
    s.tokens = std::stoll(meta("tokens"));
  } catch (const std::exception&) {
    LCX_CHECK(false, path, ": metadata 'tokens' = '", meta("tokens"), "' is not an integer");
  }
  LCX_CHECK(s.tokens >= 0, path, ": metadata 'tokens' = ", s.tokens, " is negative");
  for (auto& [n, x] : f.tensors) {
    if (n.rfind("head.", 0) == 0) {
      s.head.set(n.substr(5), x);
      continue;
    }
    if (n.rfind("extra.", 0) == 0) {
      LCX_CHECK(extra, path, ": unexpected tensor '", n, "' (extra tensors are read only by sessions)");
      (*extra)[n.substr(6)] = x;
      continue;
    }
    LCX_CHECK(n.rfind("layers.", 0) == 0, path, ": unexpected tensor '", n, "'");
    auto dot = n.find('.', 7);
    LCX_CHECK(dot != std::string::npos && dot > 7 && n.find_first_not_of("0123456789", 7) == dot, path,
              ": malformed tensor name '", n, "'");
    int64_t i = std::stoll(n.substr(7, dot - 7));
    LCX_CHECK(i >= 0 && i < c.n_layers, path, ": tensor '", n, "' names layer ", i, " of ", c.n_layers);
    s.layers[i].set(n.substr(dot + 1), x);
  }
  return s;
}

void check_state_fields(const ModelState& s, const CausalLMImpl& model, const std::string& path) {
  int64_t batch = -1;
  const auto mech = model.config().mixer_type();
  for (size_t i = 0; i < s.layers.size(); ++i)
    check_state(s.layers[i], model.layer_schema(int64_t(i)), path, "layers." + std::to_string(i) + ".", mech, batch);
  check_state(s.head, model.head_schema(), path, "head.", mech, batch);
}
}  // namespace

void save_state(const std::string& path, const ModelState& s, const ModelConfig& c) {
  save_safetensors(path, state_tensors(s, {}), state_metadata(s, c));
}

std::string state_to_bytes(const ModelState& s, const ModelConfig& c, const std::map<std::string, torch::Tensor>& extra) {
  return safetensors_serialize(state_tensors(s, extra), state_metadata(s, c));
}

ModelState load_state(const std::string& path, const ModelConfig& c) {
  return parse_state(load_safetensors(path), c, path, nullptr);
}

ModelState load_state(const std::string& path, const CausalLMImpl& model) {
  auto s = load_state(path, model.config());
  check_state_fields(s, model, path);
  return s;
}

ModelState state_from_bytes(const std::string& bytes, const CausalLMImpl& model, const std::string& origin,
                            std::map<std::string, torch::Tensor>* extra) {
  auto s = parse_state(safetensors_parse(bytes, origin), model.config(), origin, extra);
  check_state_fields(s, model, origin);
  return s;
}

}  // namespace longctx
