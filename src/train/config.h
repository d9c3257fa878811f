// A run's config file: {"model", "tokenizer", "data", "train"}, each validated field by field.
#pragma once
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "io/config_fields.h"
#include "model/config.h"
#include "text/noise.h"

namespace longctx {

struct TokenizerConfig {
  std::string type = "byte";  // byte | sentencepiece
  std::string path;           // sentencepiece: an existing tokenizer.model, or empty to train one
  int64_t vocab_size = 0;     // sentencepiece training: vocabulary size
  template <class V>
  void visit(V& v) {
    v("type", type, "byte or sentencepiece", one_of({"byte", "sentencepiece"}));
    v("path", path, "sentencepiece: an existing tokenizer.model, or empty to train one", Write::unless_default);
    v("vocab_size", vocab_size, "sentencepiece training: vocabulary size", Write::unless_default);
  }
};

// Passkey prompts mixed into training (MECHANISMS.md section 4): each row is, with probability
// `fraction`, a prompt of length in [min_length, L(step)] followed by its answer " {key}." and
// ordinary text; L stays at min_length for curriculum_hold steps (short prompts, where copying
// the key is learned first), then grows linearly to max_length over curriculum_steps, so the
// key moves further from the question as training goes on. The other rows are plain text.
struct PasskeyMixConfig {
  double fraction = 0;          // 0 = off
  int64_t min_length = 256;     // tokens
  int64_t max_length = 0;       // 0 = seq_len - 16
  int64_t curriculum_steps = 0; // 0 = max_length from the start
  int64_t curriculum_hold = 0;  // steps at min_length before the growth starts
  int64_t key_min = 10000, key_max = 99999;
  double answer_weight = 1.0;   // loss weight of each answer token (other tokens weigh 1)
  bool prompt_loss = true;      // LM loss on the prompt (the first key's tokens always weigh 0)
  bool pack = false;            // several prompts per row while they are short (more answers per step)
  double bare_fraction = 0;     // share of prompts without the task line (shorter: more answers per step)
  // Segment boundaries (../shared/RETRIEVAL.md section 3): this share of prompts is sized so
  // that, in its row, the answer (half of them) or the key's first digit (the other half)
  // falls within 4 tokens of a multiple of boundary_period (the model's segment).
  double boundary_fraction = 0;
  int64_t boundary_period = 0;  // tokens; required when boundary_fraction > 0
  // Share of keys whose digits are all different (the first non-zero): "the digit after this
  // digit" is then unambiguous, so copying must follow the key's order. Needs a key range of
  // exactly 10^(n-1)..10^n - 1 with n <= 10.
  double distinct_digits = 0;
  std::vector<int64_t> eval_lengths;  // passkey accuracy at each evaluation (default: max_length)
  int64_t eval_samples = 4;     // per (length, depth); depths 0, 50, 100
  template <class V>
  void visit(V& v) {
    v("fraction", fraction, "share of rows that are passkey prompts; 0 = off", within(0.0, 1.0));
    v("min_length", min_length, "shortest prompt, tokens", at_least<int64_t>(1));
    v("max_length", max_length, "longest prompt, tokens (0 = seq_len - 16)", at_least<int64_t>(0));
    v("curriculum_steps", curriculum_steps, "steps over which the longest prompt grows to max_length (0 = at once)",
      at_least<int64_t>(0));
    v("curriculum_hold", curriculum_hold, "steps at min_length before the growth starts", at_least<int64_t>(0));
    v("key_min", key_min, "smallest key", at_least<int64_t>(0));
    v("key_max", key_max, "largest key", within<int64_t>(0, 999999999999LL));
    v("answer_weight", answer_weight, "loss weight of each answer token", above(0.0));
    v("prompt_loss", prompt_loss, "LM loss on the prompt");
    v("pack", pack, "several prompts per row while they are short");
    v("bare_fraction", bare_fraction, "share of prompts without the task line", within(0.0, 1.0));
    v("boundary_fraction", boundary_fraction, "share of prompts whose answer or key starts at a segment edge",
      within(0.0, 1.0), Write::unless_default);
    v("boundary_period", boundary_period, "the model's segment, tokens (with boundary_fraction)", Write::unless_default);
    v("distinct_digits", distinct_digits, "share of keys whose digits are all different", within(0.0, 1.0),
      Write::unless_default);
    v("eval_lengths", eval_lengths, "passkey accuracy at each evaluation at these lengths (default: max_length)");
    v("eval_samples", eval_samples, "prompts per (length, depth) at each evaluation; 0 = none", at_least<int64_t>(0));
  }
};

// RULER's tasks mixed into training (text/ruler_tasks.h; MECHANISMS.md section 5): each row is, with
// probability `fraction`, one task sample (a task drawn uniformly from `tasks`, a length drawn
// uniformly in [min_length, max_length] and the haystack fitted to it with the run's tokenizer)
// followed by its reference answer (ruler::reference_answer) and a newline, then ordinary text.
// A task whose smallest sample does not fit max_length is left out of the mixture, and said so;
// the QA tasks need SQuAD v2 / HotpotQA files. Prompts are never the evaluation's samples: each
// training sample is drawn with its own 64-bit seed from (train.seed, step, row).
struct RulerMixConfig {
  double fraction = 0;             // 0 = off; passkey rows are drawn first, then these
  int64_t min_length = 256;        // tokens, the budget of a sample (prompt + tokens to generate)
  int64_t max_length = 0;          // 0 = seq_len
  std::vector<std::string> tasks;  // empty = every RULER task that fits (QA only with its file);
                                   // also litm_kv, litm_qa (lost in the middle, text/litm_tasks.h) by name
  double answer_weight = 1.0;      // loss weight of each answer token
  bool prompt_loss = false;        // LM loss on the prompt (haystack, needles, question)
  std::string squad, hotpotqa;     // QA files (their public JSON formats); empty = no QA tasks
  template <class V>
  void visit(V& v) {
    v("fraction", fraction, "share of rows that are RULER samples; 0 = off", within(0.0, 1.0));
    v("min_length", min_length, "shortest sample budget, tokens", at_least<int64_t>(1));
    v("max_length", max_length, "longest sample budget, tokens (0 = seq_len)", at_least<int64_t>(0));
    v("tasks", tasks, "RULER task names (empty = every task that fits), also litm_kv, litm_qa");
    v("answer_weight", answer_weight, "loss weight of each answer token", above(0.0));
    v("prompt_loss", prompt_loss, "LM loss on the prompt (haystack, needles, question)");
    v("squad", squad, "SQuAD v2 JSON for qa_1", Write::unless_default);
    v("hotpotqa", hotpotqa, "HotpotQA JSON for qa_2", Write::unless_default);
  }
};

struct DataConfig {
  std::vector<std::string> train = {"sotu"};  // corpora (text/corpus.h); split by document
  int64_t val_docs = 12;                      // documents of the first corpus held out
  uint64_t split_seed = 1234;
  int64_t seq_len = 256;
  std::string separator = "\n\n";             // between documents in the token stream
  PasskeyMixConfig passkey;
  RulerMixConfig ruler;
  // Low-value text mixed into the training documents (text/noise.h); never into validation.
  NoiseConfig noise;
  // Documents of the first corpus held out, after the validation ones, as a small clean set
  // for a reference model (selective training). `subset` picks what a run trains on:
  // "main" = every training document except those (noise added), "reference" = those only.
  int64_t ref_docs = 0;
  std::string subset = "main";
  template <class V>
  void visit(V& v) {
    v("train", train, "training corpora (sotu, brown, moby-dick, bible, file:PATH); split by document",
      Rule<std::vector<std::string>>{[](const std::vector<std::string>& t) { return !t.empty(); },
                                     "must name at least one corpus"});
    v("val_docs", val_docs, "documents of the first corpus held out for validation", at_least<int64_t>(1));
    v("split_seed", split_seed, "seed of the train/validation split");
    v("seq_len", seq_len, "tokens per training row", at_least<int64_t>(2));
    v("separator", separator, "text between documents in the token stream");
    v.object("passkey", passkey, "passkey prompts mixed into training", [](const PasskeyMixConfig& p) { return p.fraction > 0; });
    v.object("ruler", ruler, "RULER samples mixed into training", [](const RulerMixConfig& q) { return q.fraction > 0; });
    v.object("noise", noise, "low-value text mixed into training documents", [](const NoiseConfig& n) { return n.share > 0; });
    v("ref_docs", ref_docs, "documents held out after the validation ones for a reference model", at_least<int64_t>(0),
      Write::unless_default);
    v("subset", subset, "main (the training documents) or reference (the ref_docs only)", one_of({"main", "reference"}),
      Write::unless_default);
  }
};

struct ParamGroupRule {
  std::string match;          // substring of the parameter name
  double lr_scale = 1.0;      // group lr = train.lr * lr_scale (follows the schedule)
  double weight_decay = 0.0;
  template <class V>
  void visit(V& v) {
    v("match", match, "substring of the parameter name",
      Rule<std::string>{[](const std::string& m) { return !m.empty(); }, "must not be empty"});
    v("lr_scale", lr_scale, "group lr = train.lr * lr_scale", at_least(0.0, " (0 freezes the group)"));
    v("weight_decay", weight_decay, "AdamW weight decay of the group", at_least(0.0));
  }
};

// RHO-1 selective language modeling (MECHANISMS.md section 9): each micro-batch keeps the
// ceil(keep * n) of its n scorable targets with the highest excess loss (this model's loss
// minus the reference model's) and averages the loss over those only. select = "random" keeps a
// random ceil(keep * n) instead (the control; no reference needed).
struct SelectiveConfig {
  std::string reference;       // model folder (config.json + model.safetensors); "" with select = random
  double keep = 0.6;           // k in (0, 1]
  std::string select = "excess";
  // Reference losses of every training batch, computed once before training and reused by
  // runs with the same data and batches ("" = computed on the fly each step).
  std::string cache;
  bool enabled() const { return !reference.empty() || select == "random"; }
  template <class V>
  void visit(V& v) {
    v("reference", reference, "the reference model's folder (select = excess)");
    v("keep", keep, "share of targets kept", Rule<double>{[](double k) { return k > 0 && k <= 1; }, "must be in (0, 1]"});
    v("select", select, "excess (reference model) or random (the control)", one_of({"excess", "random"}));
    v("cache", cache, "file of the reference losses of every batch (\"\" = computed each step)");
  }
};

struct TrainConfig {
  int64_t steps = 1000;
  int64_t batch_size = 16;
  int64_t grad_accum = 1;
  double lr = 3e-3;
  double min_lr_ratio = 0.1;  // cosine decays to lr * min_lr_ratio
  int64_t warmup_steps = 50;
  double weight_decay = 0.1;  // matrices only; vectors (norms) get 0
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double clip = 1.0;          // global grad-norm clip; 0 = off
  int64_t eval_every = 200;
  int64_t eval_batches = 16;
  int64_t checkpoint_every = 500;
  int64_t keep_checkpoints = 2;
  int64_t log_every = 10;
  uint64_t seed = 0;
  std::vector<ParamGroupRule> param_groups;
  std::string device = "cpu";  // cpu | cuda
  // Start from these weights (a model or checkpoint folder with model.safetensors) instead of
  // a fresh initialisation; the optimizer starts fresh. Ignored when resuming.
  std::string init_from;
  // Names containing one of these need not match between init_from and the model: such tensors
  // of the file are skipped and such parameters the file lacks keep their initialisation (e.g.
  // ["memory_gate", "fam_init"] to start TransformerFAM from an Infini-attention checkpoint).
  std::vector<std::string> init_ignore;
  // Parameters the init_from file lacks, initialised from another of its tensors: a name fragment
  // of the model -> the fragment of the file (load_weights; Activation Beacon's projections).
  std::map<std::string, std::string> init_copy;
  // When not empty, only parameters whose names contain one of these train; every other is
  // frozen (no gradient, not in the optimizer): Activation Beacon trains only "beacon_".
  std::vector<std::string> trainable;
  SelectiveConfig selective;
  // Per-token losses of a fixed probe of training tokens at every evaluation, and the shares
  // of RHO-1's token categories (H->H, L->H, H->L, L->L) between the evaluations so far.
  int64_t category_tokens = 0;  // probe size; 0 = off
  // Truncated back-propagation through time: each row is read in windows of this many tokens,
  // the state carried from one to the next and detached, the loss back-propagated per window
  // (the same loss as one pass; the gradient stops at window edges). 0 = the whole row at once.
  int64_t tbptt = 0;
  // Share of steps whose rows start from the state the previous step's rows ended in (detached):
  // training on the states long streams produce (Buitrago Ruiz and Gu, 2507.02782). The carried
  // state is saved with each checkpoint, so a resumed run continues it.
  double carry_fraction = 0;
  template <class V>
  void visit(V& v) {
    v("steps", steps, "optimizer steps", at_least<int64_t>(1));
    v("batch_size", batch_size, "rows per micro-batch", at_least<int64_t>(1));
    v("grad_accum", grad_accum, "micro-batches per step", at_least<int64_t>(1));
    v("lr", lr, "peak learning rate", Rule<double>{[](double x) { return x > 0 && x < 1; }, "must be in (0, 1)"});
    v("min_lr_ratio", min_lr_ratio, "the cosine decays to lr * min_lr_ratio", within(0.0, 1.0));
    v("warmup_steps", warmup_steps, "linear warmup steps", at_least<int64_t>(0));
    v("weight_decay", weight_decay, "AdamW weight decay of matrices (vectors get 0)", at_least(0.0));
    v("beta1", beta1, "AdamW beta1", Rule<double>{[](double x) { return x >= 0 && x < 1; }, "must be in [0, 1)"});
    v("beta2", beta2, "AdamW beta2", Rule<double>{[](double x) { return x >= 0 && x < 1; }, "must be in [0, 1)"});
    v("eps", eps, "AdamW epsilon", above(0.0));
    v("clip", clip, "global gradient-norm clip; 0 = off", at_least(0.0));
    v("eval_every", eval_every, "steps between evaluations", at_least<int64_t>(0, " (0 = only at the end)"));
    v("eval_batches", eval_batches, "validation batches per periodic evaluation", at_least<int64_t>(1));
    v("checkpoint_every", checkpoint_every, "steps between checkpoints", at_least<int64_t>(0, " (0 = only at the end)"));
    v("keep_checkpoints", keep_checkpoints, "newest checkpoints kept", at_least<int64_t>(1));
    v("log_every", log_every, "steps between log lines", at_least<int64_t>(1));
    v("seed", seed, "seed of the initialisation and the data order");
    v.list("param_groups", param_groups, "optimizer groups by parameter name");
    v("device", device, "cpu or cuda", one_of({"cpu", "cuda"}));
    v("init_from", init_from, "start from this model or checkpoint folder's weights", Write::unless_default);
    v("init_ignore", init_ignore, "name fragments that need not match init_from", Write::unless_default);
    v("init_copy", init_copy, "parameters init_from lacks, copied from another tensor: fragment -> fragment",
      Write::unless_default);
    v("trainable", trainable, "when set, only parameters with one of these fragments train", Write::unless_default);
    v.object("selective", selective, "RHO-1 selective language modeling", [](const SelectiveConfig& s) { return s.enabled(); });
    v("category_tokens", category_tokens, "probe tokens for RHO-1's token categories; 0 = off", at_least<int64_t>(0),
      Write::unless_default);
    v("tbptt", tbptt, "truncated back-propagation window, tokens; 0 = whole rows",
      at_least<int64_t>(0, " (tokens per back-propagation window; 0 = whole rows)"), Write::unless_default);
    v("carry_fraction", carry_fraction, "share of steps whose rows continue the previous step's state", within(0.0, 1.0),
      Write::unless_default);
  }
};

struct RunConfig {
  ModelConfig model;
  TokenizerConfig tokenizer;
  DataConfig data;
  TrainConfig train;
  nlohmann::json to_json() const;
  // `where` names the file in errors. vocab_size absent from "model" is taken from the tokenizer.
  static RunConfig from_json(const nlohmann::json& j, const std::string& where);
  static RunConfig from_file(const std::string& path, const std::vector<std::string>& overrides = {});
  // Every field of a run's config: dotted path, type, default and help (`longctx train --help`).
  static std::vector<FieldDoc> fields();
  // Throws unless `path` (a --set path such as "train.lr") names a declared field, naming it
  // and the nearest fields; model.mixer.* and model.rope_scaling.* belong to their parsers.
  static void check_override_path(const std::string& path);
};

}  // namespace longctx
