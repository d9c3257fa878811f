#include "train/config.h"

#include "io/fs.h"
#include "io/json_fields.h"
#include "model/pretrained.h"

namespace longctx {

nlohmann::json RunConfig::to_json() const {
  nlohmann::ordered_json j;
  j["model"] = model.to_json();
  nlohmann::ordered_json t;
  t["type"] = tokenizer.type;
  if (!tokenizer.path.empty()) t["path"] = tokenizer.path;
  if (tokenizer.vocab_size) t["vocab_size"] = tokenizer.vocab_size;
  j["tokenizer"] = t;
  j["data"] = {{"train", data.train},
               {"val_docs", data.val_docs},
               {"split_seed", data.split_seed},
               {"seq_len", data.seq_len},
               {"separator", data.separator}};
  if (data.noise.share > 0)
    j["data"]["noise"] = {{"share", data.noise.share}, {"seed", data.noise.seed}, {"kinds", data.noise.kinds}};
  if (data.ref_docs > 0) j["data"]["ref_docs"] = data.ref_docs;
  if (data.subset != "main") j["data"]["subset"] = data.subset;
  if (data.passkey.fraction > 0) {
    const auto& p = data.passkey;
    j["data"]["passkey"] = {{"fraction", p.fraction},         {"min_length", p.min_length},
                            {"max_length", p.max_length},     {"curriculum_steps", p.curriculum_steps}, {"curriculum_hold", p.curriculum_hold},
                            {"key_min", p.key_min},           {"key_max", p.key_max},
                            {"answer_weight", p.answer_weight}, {"prompt_loss", p.prompt_loss}, {"pack", p.pack}, {"bare_fraction", p.bare_fraction},
                            {"eval_lengths", p.eval_lengths}, {"eval_samples", p.eval_samples}};
    if (p.boundary_fraction > 0) {
      j["data"]["passkey"]["boundary_fraction"] = p.boundary_fraction;
      j["data"]["passkey"]["boundary_period"] = p.boundary_period;
    }
    if (p.distinct_digits > 0) j["data"]["passkey"]["distinct_digits"] = p.distinct_digits;
  }
  if (data.ruler.fraction > 0) {
    const auto& q = data.ruler;
    j["data"]["ruler"] = {{"fraction", q.fraction},           {"min_length", q.min_length},
                          {"max_length", q.max_length},       {"tasks", q.tasks},
                          {"answer_weight", q.answer_weight}, {"prompt_loss", q.prompt_loss}};
    if (!q.squad.empty()) j["data"]["ruler"]["squad"] = q.squad;
    if (!q.hotpotqa.empty()) j["data"]["ruler"]["hotpotqa"] = q.hotpotqa;
  }
  nlohmann::ordered_json tr;
  tr["steps"] = train.steps;
  tr["batch_size"] = train.batch_size;
  tr["grad_accum"] = train.grad_accum;
  tr["lr"] = train.lr;
  tr["min_lr_ratio"] = train.min_lr_ratio;
  tr["warmup_steps"] = train.warmup_steps;
  tr["weight_decay"] = train.weight_decay;
  tr["beta1"] = train.beta1;
  tr["beta2"] = train.beta2;
  tr["eps"] = train.eps;
  tr["clip"] = train.clip;
  tr["eval_every"] = train.eval_every;
  tr["eval_batches"] = train.eval_batches;
  tr["checkpoint_every"] = train.checkpoint_every;
  tr["keep_checkpoints"] = train.keep_checkpoints;
  tr["log_every"] = train.log_every;
  tr["seed"] = train.seed;
  auto groups = nlohmann::json::array();
  for (auto& g : train.param_groups)
    groups.push_back({{"match", g.match}, {"lr_scale", g.lr_scale}, {"weight_decay", g.weight_decay}});
  tr["param_groups"] = groups;
  tr["device"] = train.device;
  if (!train.init_from.empty()) tr["init_from"] = train.init_from;
  if (!train.init_ignore.empty()) tr["init_ignore"] = train.init_ignore;
  if (!train.init_copy.empty()) tr["init_copy"] = train.init_copy;
  if (!train.trainable.empty()) tr["trainable"] = train.trainable;
  if (train.selective.enabled())
    tr["selective"] = {{"reference", train.selective.reference}, {"keep", train.selective.keep},
                       {"select", train.selective.select}, {"cache", train.selective.cache}};
  if (train.category_tokens > 0) tr["category_tokens"] = train.category_tokens;
  if (train.tbptt > 0) tr["tbptt"] = train.tbptt;
  if (train.carry_fraction > 0) tr["carry_fraction"] = train.carry_fraction;
  j["train"] = tr;
  return nlohmann::json(j);
}

RunConfig RunConfig::from_json(const nlohmann::json& j, const std::string& where) {
  Fields top(j, where, "");
  RunConfig c;
  {
    auto f = top.sub("tokenizer");
    c.tokenizer.type = f.get<std::string>("type", "byte");
    f.check(c.tokenizer.type == "byte" || c.tokenizer.type == "sentencepiece", "type", c.tokenizer.type,
            "must be byte or sentencepiece");
    c.tokenizer.path = f.get<std::string>("path", "");
    c.tokenizer.vocab_size = f.get<int64_t>("vocab_size", 0);
    if (c.tokenizer.type == "sentencepiece")
      f.check(!c.tokenizer.path.empty() || c.tokenizer.vocab_size >= 64, "vocab_size", c.tokenizer.vocab_size,
              "must be >= 64 when no tokenizer path is given (a tokenizer is trained)");
    f.done();
  }
  {
    auto m = top.raw("model");
    LCX_CHECK(m.is_object(), where, ": missing 'model' object");
    if (!m.contains("vocab_size")) {
      if (c.tokenizer.type == "byte") m["vocab_size"] = 256;
      else if (c.tokenizer.vocab_size) m["vocab_size"] = c.tokenizer.vocab_size;
      else m["vocab_size"] = make_tokenizer("sentencepiece", std::filesystem::path(c.tokenizer.path).parent_path().string())->vocab_size();
    }
    c.model = ModelConfig::from_json(m, where);
  }
  {
    auto f = top.sub("data");
    c.data.train = f.get<std::vector<std::string>>("train", c.data.train);
    f.check(!c.data.train.empty(), "train", "[]", "must name at least one corpus");
    c.data.val_docs = f.get<int64_t>("val_docs", c.data.val_docs);
    f.check(c.data.val_docs >= 1, "val_docs", c.data.val_docs, "must be >= 1");
    c.data.split_seed = f.get<uint64_t>("split_seed", c.data.split_seed);
    c.data.seq_len = f.get<int64_t>("seq_len", c.data.seq_len);
    f.check(c.data.seq_len >= 2, "seq_len", c.data.seq_len, "must be >= 2");
    c.data.separator = f.get<std::string>("separator", c.data.separator);
    if (f.has("passkey")) {
      auto g = f.sub("passkey");
      auto& p = c.data.passkey;
      p.fraction = g.get<double>("fraction", p.fraction);
      g.check(p.fraction >= 0 && p.fraction <= 1, "fraction", p.fraction, "must be in [0, 1]");
      p.min_length = g.get<int64_t>("min_length", p.min_length);
      g.check(p.min_length >= 1, "min_length", p.min_length, "must be >= 1");
      p.max_length = g.get<int64_t>("max_length", c.data.seq_len - 16);
      g.check(p.max_length >= p.min_length && p.max_length <= c.data.seq_len - 8, "max_length", p.max_length,
              "must be in [min_length, seq_len - 8] (the answer must fit in the sequence)");
      p.curriculum_steps = g.get<int64_t>("curriculum_steps", p.curriculum_steps);
      g.check(p.curriculum_steps >= 0, "curriculum_steps", p.curriculum_steps, "must be >= 0");
      p.curriculum_hold = g.get<int64_t>("curriculum_hold", p.curriculum_hold);
      g.check(p.curriculum_hold >= 0, "curriculum_hold", p.curriculum_hold, "must be >= 0");
      p.key_min = g.get<int64_t>("key_min", p.key_min);
      g.check(p.key_min >= 0, "key_min", p.key_min, "must be >= 0");
      p.key_max = g.get<int64_t>("key_max", p.key_max);
      g.check(p.key_max >= p.key_min && p.key_max < 1000000000000LL, "key_max", p.key_max,
              "must be in [key_min, 1e12)");
      p.answer_weight = g.get<double>("answer_weight", p.answer_weight);
      g.check(p.answer_weight > 0, "answer_weight", p.answer_weight, "must be > 0");
      p.prompt_loss = g.get<bool>("prompt_loss", p.prompt_loss);
      p.pack = g.get<bool>("pack", p.pack);
      p.bare_fraction = g.get<double>("bare_fraction", p.bare_fraction);
      g.check(p.bare_fraction >= 0 && p.bare_fraction <= 1, "bare_fraction", p.bare_fraction, "must be in [0, 1]");
      p.boundary_fraction = g.get<double>("boundary_fraction", p.boundary_fraction);
      g.check(p.boundary_fraction >= 0 && p.boundary_fraction <= 1, "boundary_fraction", p.boundary_fraction,
              "must be in [0, 1]");
      p.boundary_period = g.get<int64_t>("boundary_period", p.boundary_period);
      g.check(p.boundary_fraction == 0 || p.boundary_period >= 16, "boundary_period", p.boundary_period,
              "must be >= 16 when boundary_fraction > 0 (the model's segment, in tokens)");
      p.distinct_digits = g.get<double>("distinct_digits", p.distinct_digits);
      g.check(p.distinct_digits >= 0 && p.distinct_digits <= 1, "distinct_digits", p.distinct_digits,
              "must be in [0, 1]");
      if (p.distinct_digits > 0) {
        bool pow10 = false;
        for (int64_t n = 1, lo = 1; n <= 10; ++n, lo *= 10)
          pow10 = pow10 || (p.key_min == (n == 1 ? 0 : lo) && p.key_max == lo * 10 - 1);
        g.check(pow10, "distinct_digits", p.distinct_digits,
                "needs key_min..key_max to be every n-digit number (10000..99999), n <= 10");
      }
      p.eval_lengths = g.get<std::vector<int64_t>>("eval_lengths", {p.max_length});
      for (auto L : p.eval_lengths) g.check(L >= 1, "eval_lengths", L, "must be >= 1");
      p.eval_samples = g.get<int64_t>("eval_samples", p.eval_samples);
      g.check(p.eval_samples >= 0, "eval_samples", p.eval_samples, "must be >= 0 (0 = no passkey evaluation)");
      g.done();
    }
    if (f.has("ruler")) {
      auto g = f.sub("ruler");
      auto& q = c.data.ruler;
      q.fraction = g.get<double>("fraction", q.fraction);
      g.check(q.fraction >= 0 && q.fraction <= 1, "fraction", q.fraction, "must be in [0, 1]");
      g.check(q.fraction + c.data.passkey.fraction <= 1 + 1e-12, "fraction", q.fraction,
              "plus data.passkey.fraction must be <= 1");
      q.min_length = g.get<int64_t>("min_length", q.min_length);
      g.check(q.min_length >= 1, "min_length", q.min_length, "must be >= 1");
      q.max_length = g.get<int64_t>("max_length", c.data.seq_len);
      g.check(q.max_length >= q.min_length && q.max_length <= c.data.seq_len, "max_length", q.max_length,
              "must be in [min_length, seq_len] (a sample and its answer must fit in the sequence)");
      q.tasks = g.get<std::vector<std::string>>("tasks", q.tasks);
      q.answer_weight = g.get<double>("answer_weight", q.answer_weight);
      g.check(q.answer_weight > 0, "answer_weight", q.answer_weight, "must be > 0");
      q.prompt_loss = g.get<bool>("prompt_loss", q.prompt_loss);
      q.squad = g.get<std::string>("squad", q.squad);
      q.hotpotqa = g.get<std::string>("hotpotqa", q.hotpotqa);
      g.done();
    }
    if (f.has("noise")) {
      auto g = f.sub("noise");
      auto& n = c.data.noise;
      n.share = g.get<double>("share", n.share);
      g.check(n.share >= 0 && n.share <= 0.9, "share", n.share, "must be in [0, 0.9]");
      n.seed = g.get<uint64_t>("seed", n.seed);
      n.kinds = g.get<std::vector<std::string>>("kinds", n.kinds);
      g.check(!n.kinds.empty(), "kinds", "[]", "must name at least one kind");
      for (auto& k : n.kinds) {
        const auto& all = NoiseConfig::all_kinds();
        g.check(std::find(all.begin(), all.end(), k) != all.end(), "kinds", k,
                "is not a noise kind (boilerplate, table, markup, shuffled)");
      }
      g.done();
    }
    c.data.ref_docs = f.get<int64_t>("ref_docs", c.data.ref_docs);
    f.check(c.data.ref_docs >= 0, "ref_docs", c.data.ref_docs, "must be >= 0");
    c.data.subset = f.get<std::string>("subset", c.data.subset);
    f.check(c.data.subset == "main" || c.data.subset == "reference", "subset", c.data.subset,
            "must be \"main\" or \"reference\"");
    f.check(c.data.subset == "main" || c.data.ref_docs > 0, "subset", c.data.subset,
            "needs data.ref_docs > 0 (the documents a reference model trains on)");
    f.done();
  }
  {
    auto f = top.sub("train");
    auto& t = c.train;
    t.steps = f.get<int64_t>("steps", t.steps);
    f.check(t.steps >= 1, "steps", t.steps, "must be >= 1");
    t.batch_size = f.get<int64_t>("batch_size", t.batch_size);
    f.check(t.batch_size >= 1, "batch_size", t.batch_size, "must be >= 1");
    t.grad_accum = f.get<int64_t>("grad_accum", t.grad_accum);
    f.check(t.grad_accum >= 1, "grad_accum", t.grad_accum, "must be >= 1");
    t.lr = f.get<double>("lr", t.lr);
    f.check(t.lr > 0 && t.lr < 1, "lr", t.lr, "must be in (0, 1)");
    t.min_lr_ratio = f.get<double>("min_lr_ratio", t.min_lr_ratio);
    f.check(t.min_lr_ratio >= 0 && t.min_lr_ratio <= 1, "min_lr_ratio", t.min_lr_ratio, "must be in [0, 1]");
    t.warmup_steps = f.get<int64_t>("warmup_steps", t.warmup_steps);
    f.check(t.warmup_steps >= 0, "warmup_steps", t.warmup_steps, "must be >= 0");
    t.weight_decay = f.get<double>("weight_decay", t.weight_decay);
    f.check(t.weight_decay >= 0, "weight_decay", t.weight_decay, "must be >= 0");
    t.beta1 = f.get<double>("beta1", t.beta1);
    f.check(t.beta1 >= 0 && t.beta1 < 1, "beta1", t.beta1, "must be in [0, 1)");
    t.beta2 = f.get<double>("beta2", t.beta2);
    f.check(t.beta2 >= 0 && t.beta2 < 1, "beta2", t.beta2, "must be in [0, 1)");
    t.eps = f.get<double>("eps", t.eps);
    f.check(t.eps > 0, "eps", t.eps, "must be > 0");
    t.clip = f.get<double>("clip", t.clip);
    f.check(t.clip >= 0, "clip", t.clip, "must be >= 0");
    t.eval_every = f.get<int64_t>("eval_every", t.eval_every);
    f.check(t.eval_every >= 0, "eval_every", t.eval_every, "must be >= 0 (0 = only at the end)");
    t.eval_batches = f.get<int64_t>("eval_batches", t.eval_batches);
    f.check(t.eval_batches >= 1, "eval_batches", t.eval_batches, "must be >= 1");
    t.checkpoint_every = f.get<int64_t>("checkpoint_every", t.checkpoint_every);
    f.check(t.checkpoint_every >= 0, "checkpoint_every", t.checkpoint_every, "must be >= 0 (0 = only at the end)");
    t.keep_checkpoints = f.get<int64_t>("keep_checkpoints", t.keep_checkpoints);
    f.check(t.keep_checkpoints >= 1, "keep_checkpoints", t.keep_checkpoints, "must be >= 1");
    t.log_every = f.get<int64_t>("log_every", t.log_every);
    f.check(t.log_every >= 1, "log_every", t.log_every, "must be >= 1");
    t.seed = f.get<uint64_t>("seed", t.seed);
    t.device = f.get<std::string>("device", t.device);
    f.check(t.device == "cpu" || t.device == "cuda", "device", t.device, "must be \"cpu\" or \"cuda\"");
    t.init_from = f.get<std::string>("init_from", "");
    t.init_ignore = f.get<std::vector<std::string>>("init_ignore", {});
    f.check(t.init_ignore.empty() || !t.init_from.empty(), "init_ignore", "(set)", "needs train.init_from");
    t.init_copy = f.get<std::map<std::string, std::string>>("init_copy", {});
    f.check(t.init_copy.empty() || !t.init_from.empty(), "init_copy", "(set)", "needs train.init_from");
    for (auto& [to, from] : t.init_copy)
      f.check(!to.empty() && !from.empty(), "init_copy", to + ": " + from, "needs non-empty name fragments");
    t.trainable = f.get<std::vector<std::string>>("trainable", {});
    for (auto& s : t.trainable) f.check(!s.empty(), "trainable", "\"\"", "must not hold an empty fragment");
    if (f.has("selective")) {
      auto g = f.sub("selective");
      auto& sl = t.selective;
      sl.reference = g.get<std::string>("reference", "");
      sl.keep = g.get<double>("keep", sl.keep);
      g.check(sl.keep > 0 && sl.keep <= 1, "keep", sl.keep, "must be in (0, 1]");
      sl.select = g.get<std::string>("select", sl.select);
      g.check(sl.select == "excess" || sl.select == "random", "select", sl.select, "must be \"excess\" or \"random\"");
      g.check(sl.select == "random" || !sl.reference.empty(), "reference", "\"\"",
              "must name a model folder when select is \"excess\"");
      sl.cache = g.get<std::string>("cache", "");
      g.check(sl.cache.empty() || sl.select == "excess", "cache", sl.cache, "only applies to select = \"excess\"");
      g.done();
    }
    t.category_tokens = f.get<int64_t>("category_tokens", t.category_tokens);
    f.check(t.category_tokens >= 0, "category_tokens", t.category_tokens, "must be >= 0");
    t.tbptt = f.get<int64_t>("tbptt", t.tbptt);
    f.check(t.tbptt >= 0, "tbptt", t.tbptt, "must be >= 0 (tokens per back-propagation window; 0 = whole rows)");
    t.carry_fraction = f.get<double>("carry_fraction", t.carry_fraction);
    f.check(t.carry_fraction >= 0 && t.carry_fraction <= 1, "carry_fraction", t.carry_fraction, "must be in [0, 1]");
    auto groups = f.raw("param_groups");
    if (!groups.is_null()) {
      LCX_CHECK(groups.is_array(), where, ": field 'train.param_groups' must be an array");
      for (size_t i = 0; i < groups.size(); ++i) {
        Fields g(groups[i], where, "train.param_groups[" + std::to_string(i) + "]");
        ParamGroupRule r;
        r.match = g.req<std::string>("match");
        g.check(!r.match.empty(), "match", "\"\"", "must not be empty");
        r.lr_scale = g.get<double>("lr_scale", 1.0);
        g.check(r.lr_scale >= 0, "lr_scale", r.lr_scale, "must be >= 0 (0 freezes the group)");
        r.weight_decay = g.get<double>("weight_decay", 0.0);
        g.check(r.weight_decay >= 0, "weight_decay", r.weight_decay, "must be >= 0");
        g.done();
        t.param_groups.push_back(r);
      }
    }
    f.done();
  }
  top.done();
  return c;
}

RunConfig RunConfig::from_file(const std::string& path, const std::vector<std::string>& overrides) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  apply_overrides(j, overrides);
  return from_json(j, path);
}

}  // namespace longctx
