#include "train/config.h"

#include "io/fs.h"
#include "io/json_fields.h"
#include "io/json_file.h"
#include "model/pretrained.h"

namespace longctx {

nlohmann::json RunConfig::to_json() const {
  nlohmann::json j;
  j["model"] = model.to_json();
  j["tokenizer"] = write_config(tokenizer);
  j["data"] = write_config(data);
  j["train"] = write_config(train);
  return j;
}

RunConfig RunConfig::from_json(const nlohmann::json& j, const std::string& where) {
  Fields top(j, where, "");
  RunConfig c;
  {
    auto f = top.sub("tokenizer");
    c.tokenizer = read_config<TokenizerConfig>(f);
    if (c.tokenizer.type == "sentencepiece")
      f.check(!c.tokenizer.path.empty() || c.tokenizer.vocab_size >= 64, "vocab_size", c.tokenizer.vocab_size,
              "must be >= 64 when no tokenizer path is given (a tokenizer is trained)");
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
    c.data = read_config<DataConfig>(f);
    auto& d = c.data;
    // The rules that tie fields together (each field's own rule was checked as it was read).
    if (f.has("passkey")) {
      auto g = f.sub("passkey");
      auto& p = d.passkey;
      if (p.max_length == 0) p.max_length = d.seq_len - 16;
      g.check(p.max_length >= p.min_length && p.max_length <= d.seq_len - 8, "max_length", p.max_length,
              "must be in [min_length, seq_len - 8] (the answer must fit in the sequence)");
      g.check(p.key_max >= p.key_min, "key_max", p.key_max, "must be >= key_min");
      g.check(p.boundary_fraction == 0 || p.boundary_period >= 16, "boundary_period", p.boundary_period,
              "must be >= 16 when boundary_fraction > 0 (the model's segment, in tokens)");
      if (p.distinct_digits > 0) {
        bool pow10 = false;
        for (int64_t n = 1, lo = 1; n <= 10; ++n, lo *= 10)
          pow10 = pow10 || (p.key_min == (n == 1 ? 0 : lo) && p.key_max == lo * 10 - 1);
        g.check(pow10, "distinct_digits", p.distinct_digits,
                "needs key_min..key_max to be every n-digit number (10000..99999), n <= 10");
      }
      if (p.eval_lengths.empty()) p.eval_lengths = {p.max_length};
      for (auto L : p.eval_lengths) g.check(L >= 1, "eval_lengths", L, "must be >= 1");
    }
    if (f.has("ruler")) {
      auto g = f.sub("ruler");
      auto& q = d.ruler;
      g.check(q.fraction + d.passkey.fraction <= 1 + 1e-12, "fraction", q.fraction,
              "plus data.passkey.fraction must be <= 1");
      if (q.max_length == 0) q.max_length = d.seq_len;
      g.check(q.max_length >= q.min_length && q.max_length <= d.seq_len, "max_length", q.max_length,
              "must be in [min_length, seq_len] (a sample and its answer must fit in the sequence)");
    }
    f.check(d.subset == "main" || d.ref_docs > 0, "subset", d.subset,
            "needs data.ref_docs > 0 (the documents a reference model trains on)");
  }
  {
    auto f = top.sub("train");
    c.train = read_config<TrainConfig>(f);
    auto& t = c.train;
    f.check(t.init_ignore.empty() || !t.init_from.empty(), "init_ignore", "(set)", "needs train.init_from");
    f.check(t.init_copy.empty() || !t.init_from.empty(), "init_copy", "(set)", "needs train.init_from");
    for (auto& [to, from] : t.init_copy)
      f.check(!to.empty() && !from.empty(), "init_copy", to + ": " + from, "needs non-empty name fragments");
    for (auto& s : t.trainable) f.check(!s.empty(), "trainable", "\"\"", "must not hold an empty fragment");
    if (f.has("selective")) {
      auto g = f.sub("selective");
      const auto& sl = t.selective;
      g.check(sl.select == "random" || !sl.reference.empty(), "reference", "\"\"",
              "must name a model folder when select is \"excess\"");
      g.check(sl.cache.empty() || sl.select == "excess", "cache", sl.cache, "only applies to select = \"excess\"");
    }
  }
  top.done();
  return c;
}

std::vector<FieldDoc> RunConfig::fields() {
  std::vector<FieldDoc> v;
  for (auto part : {std::make_pair("model", list_config<ModelConfig>("model")),
                    std::make_pair("tokenizer", list_config<TokenizerConfig>("tokenizer")),
                    std::make_pair("data", list_config<DataConfig>("data")),
                    std::make_pair("train", list_config<TrainConfig>("train"))})
    v.insert(v.end(), part.second.begin(), part.second.end());
  return v;
}

void RunConfig::check_override_path(const std::string& path) {
  // The mechanism's own fields and rope_scaling's are checked by their parsers.
  check_field_path(path, fields(), {"model.mixer.", "model.rope_scaling."});
}

RunConfig RunConfig::from_file(const std::string& path, const std::vector<std::string>& overrides) {
  auto j = read_json_file(path);
  for (auto& o : overrides) {
    auto eq = o.find('=');
    if (eq != std::string::npos && eq > 0) check_override_path(o.substr(0, eq));
  }
  apply_overrides(j, overrides);
  return from_json(j, path);
}

}  // namespace longctx
