// The causal language model: embeddings, a stack of blocks, final norm, output projection.
// Parameter names follow Hugging Face's Llama (model.embed_tokens, model.layers.N.self_attn.q_proj,
// model.norm, lm_head), so the weights read like a transformers checkpoint.
#pragma once
#include <torch/torch.h>

#include <vector>

#include "model/block.h"
#include "model/config.h"
#include "nn/linear.h"
#include "nn/timestep_norm.h"

namespace longctx {

// Everything a model carries between calls: one State per layer and the tokens seen. A value
// like State: clone() is the only copy.
struct ModelState {
  ModelState() = default;
  ModelState(ModelState&&) = default;
  ModelState& operator=(ModelState&&) = default;
  ModelState(const ModelState&) = delete;             // use clone()
  ModelState& operator=(const ModelState&) = delete;  // use clone()

  std::vector<State> layers;
  State head;          // model-level state (e.g. a final norm with running statistics)
  int64_t tokens = 0;  // tokens fed so far
  // False when the caller drops this state after the call (a training row): mixers may then
  // skip computing what they would hand on to a next call.
  bool hand_on = true;
  // The whole stream's length when the caller knows it (an evaluation document), else 0.
  int64_t expected_tokens = 0;
  // When set, mixers append per-token values worth inspecting here (StepContext::record); a
  // request of the caller's, not state: clone() and save leave it out.
  std::vector<std::map<std::string, torch::Tensor>>* record = nullptr;
  // A training run's memory, one State per layer, that outlives this stream (StepContext::
  // run_memory); set by the trainer on its rows, saved with its checkpoints. Not part of this
  // state: clone() and save leave it out.
  std::vector<State>* run_memory = nullptr;
  int64_t bytes() const;
  void detach_();
  ModelState clone() const;
  // Repeats a batch-1 state n times along the batch dimension (one stream becomes n).
  void expand_batch(int64_t n);
};

class CausalLMImpl : public torch::nn::Module {
 public:
  explicit CausalLMImpl(const ModelConfig& c);
  // tokens [B, T] int64 -> logits [B, T, V] (float32). Continues `state`. All or nothing: when
  // a layer throws, `state` is left as it was before the call.
  torch::Tensor forward(const torch::Tensor& tokens, ModelState& state, bool training = false);
  ModelState new_state() const;
  const ModelConfig& config() const { return cfg_; }
  int64_t num_parameters() const;
  // What each layer's State and the head State may hold (Mixer::state_schema).
  StateSchema layer_schema(int64_t layer) const;
  StateSchema head_schema() const;
  // True when every layer's state is bounded (no KV cache that grows with the tokens seen).
  bool state_bounded() const;
  torch::Device device() const;
  // Hidden states before the output projection (for chunked loss computation).
  torch::Tensor hidden(const torch::Tensor& tokens, ModelState& state, bool training = false);
  torch::Tensor logits(const torch::Tensor& hidden);

  struct Body : torch::nn::Module {
    Embedding embed_tokens{nullptr};  // [V, D]
    torch::nn::ModuleList layers;
    RMSNorm norm{nullptr};                     // [D]; or, for MEGALODON:
    TimestepNorm timestep_norm{nullptr};       // registered as "norm" too, state in ModelState::head
  };
  std::shared_ptr<Body> model;
  Linear lm_head{nullptr};  // [V, D]; absent when tied to embed_tokens
  std::vector<std::shared_ptr<Block>> blocks;

 private:
  void init_weights();
  ModelConfig cfg_;
};
TORCH_MODULE(CausalLM);

// States on disk: safetensors with tensors "layers.N.name" / "head.name" and metadata naming
// the format, version, mechanism and config hash; a mismatch is refused by name.
void save_state(const std::string& path, const ModelState& s, const ModelConfig& c);
// The same bytes in memory (a session's state in a database or an HTTP body). `extra`: tensors
// stored beside the state under "extra.NAME" (a session's next-token logits).
std::string state_to_bytes(const ModelState& s, const ModelConfig& c,
                           const std::map<std::string, torch::Tensor>& extra = {});
// Parses and checks like load_state(path, model); `origin` names the bytes in errors. Extra
// tensors go to *extra (refused when extra is null).
ModelState state_from_bytes(const std::string& bytes, const CausalLMImpl& model, const std::string& origin,
                            std::map<std::string, torch::Tensor>* extra = nullptr);
// Checks the format, the mechanism and the config hash (not the fields: for a run memory).
ModelState load_state(const std::string& path, const ModelConfig& c);
// Also checks every field against the model's schemas: a field that is unknown, of another
// shape, dtype or batch is refused by name before the state is used.
ModelState load_state(const std::string& path, const CausalLMImpl& model);

}  // namespace longctx
