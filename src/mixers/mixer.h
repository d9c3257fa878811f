// The one streaming interface every mechanism implements.
//
// A mixer reads a segment of activations x [B, T, D] and returns [B, T, D], reading and updating
// the State it carried from earlier segments. Contracts, tested for every mixer:
//   1. streaming equivalence: one call on a sequence == any split of it into calls, within float
//      tolerance (token by token included);
//   2. bounded state: state.bytes() does not grow with tokens seen (unless state_bounded() says so);
//   3. round trip: a state saved and loaded continues exactly.
// Under autograd, gradients flow through the state produced inside a call (back-propagation
// through time); State::detach_() truncates it.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "nn/state.h"

namespace longctx {

// What one forward call shares between layers (the per-call plan, not persistent state).
struct StepContext {
  bool training = false;
  // False when the state after this call is not read again: a mixer may skip computing it.
  bool hand_on = true;
  // The length of the stream being read, when the caller knows it (0: unknown). A mixer may
  // plan by it (Activation Beacon picks its condensing ratio).
  int64_t expected_tokens = 0;
  // Tensors one layer hands to the next within the call (e.g. a mechanism's side stream).
  std::map<std::string, torch::Tensor> carry;
  // When set, mixers that have per-token values worth inspecting (Infini-attention's DeltaNet
  // write strengths) append one map of detached tensors per call, in layer order.
  std::vector<std::map<std::string, torch::Tensor>>* record = nullptr;
  // This layer's part of the memory a training run keeps between calls (never null inside
  // CausalLM): the counters of a mixer's random draws, TransformerFAM's passed memory, the
  // values diagnostics() reports. The trainer saves it with checkpoints, so a resumed run
  // continues exactly; outside a trainer it is fresh per call.
  State* run_memory = nullptr;
};

// The layer around a mixer, for mechanisms that pass rows of their own through the whole layer
// (TransformerFAM's memory goes through the same norm and feed-forward as the tokens).
struct LayerFns {
  std::function<torch::Tensor(const torch::Tensor&)> pre_norm;  // the norm before the mixer
  std::function<torch::Tensor(const torch::Tensor&)> ff;        // A -> FF(PreLN(A)) + A
};

class Mixer : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x, State& state, StepContext& ctx) = 0;
  virtual std::string kind() const = 0;
  // True when state.bytes() is independent of the number of tokens seen.
  virtual bool state_bounded() const = 0;
  // Every field this mixer keeps in a stream's State: name, shape, dtype kind. Saved states are
  // checked against it on load; the contract tests check that what the mixer writes matches.
  virtual StateSchema state_schema() const = 0;
  // Values worth logging during training (e.g. Infini-attention's gates), by name, from the
  // parameters and this layer's run memory (StepContext::run_memory).
  virtual std::map<std::string, std::vector<double>> diagnostics(const State& run_memory) const {
    (void)run_memory;
    return {};
  }
  // Called once by the block that holds the mixer; most mixers do not need it.
  virtual void attach_layer(LayerFns) {}
  // Called once by the model on layer 0's mixer: mechanisms whose parameters sit at the
  // embedding level (TransformerFAM's initial memory, Activation Beacon's beacon embedding)
  // register them there, initialised with init_std.
  virtual void hold_first_layer_parameters(double init_std) { (void)init_std; }
  // Called by the model after its generic initialisation: parameters whose initial value is part
  // of the mechanism (DeltaNet's short convolution starts as the identity) are set here.
  virtual void init_own_parameters() {}
};

}  // namespace longctx
