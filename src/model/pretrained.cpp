#include "model/pretrained.h"

#include <filesystem>

#include "io/fs.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/hf.h"
#include "text/tokenizer.h"
#include "util/error.h"

namespace longctx {

std::vector<int64_t> eos_token_ids(const Pretrained& p) {
  std::vector<int64_t> ids;
  for (auto key : {"generation_config", "hf_config"}) {
    if (!p.config.contains(key) || !p.config[key].is_object() || !p.config[key].contains("eos_token_id")) continue;
    const auto& e = p.config[key]["eos_token_id"];
    if (e.is_number_integer()) ids.push_back(e.get<int64_t>());
    if (e.is_array())
      for (auto& x : e)
        if (x.is_number_integer()) ids.push_back(x.get<int64_t>());
    if (!ids.empty()) break;
  }
  return ids;
}

void apply_overrides(nlohmann::json& j, const std::vector<std::string>& overrides) {
  for (auto& o : overrides) {
    auto eq = o.find('=');
    LCX_CHECK(eq != std::string::npos && eq > 0, "override '", o, "' must look like path.to.field=value");
    std::string path = o.substr(0, eq), val = o.substr(eq + 1);
    nlohmann::json v;
    try {
      v = nlohmann::json::parse(val);
    } catch (...) {
      v = val;
    }
    nlohmann::json* cur = &j;
    size_t start = 0;
    while (true) {
      auto dot = path.find('.', start);
      std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      LCX_CHECK(!key.empty(), "override '", o, "': empty field name");
      if (dot == std::string::npos) {
        (*cur)[key] = v;
        break;
      }
      if (!cur->contains(key) || !(*cur)[key].is_object()) (*cur)[key] = nlohmann::json::object();
      cur = &(*cur)[key];
      start = dot + 1;
    }
  }
}

std::vector<std::pair<std::string, torch::Tensor>> named_weights(CausalLM& model) {
  std::vector<std::pair<std::string, torch::Tensor>> v;
  for (auto& item : model->named_parameters()) v.push_back({item.key(), item.value()});
  return v;
}

static torch::ScalarType dtype_of(const std::string& d) {
  if (d == "F32") return torch::kFloat32;
  if (d == "F16") return torch::kFloat16;
  if (d == "BF16") return torch::kBFloat16;
  fail("weights dtype '", d, "' is not one of F32, F16, BF16");
}

void save_weights(const std::string& path, CausalLM& model, const std::string& dtype,
                  const std::map<std::string, std::string>& extra) {
  auto st = dtype_of(dtype);
  std::vector<std::pair<std::string, torch::Tensor>> t;
  for (auto& [n, p] : named_weights(model)) t.push_back({n, p.detach().to(st)});
  std::map<std::string, std::string> meta = {{"format", "pt"},  // what transformers expects
                                             {"longctx_config_hash", model->config().hash()}};
  for (auto& [k, v] : extra) meta[k] = v;
  save_safetensors(path, t, meta);
}

void load_weights(const std::string& path, CausalLM& model) { load_weights(path, model, {}); }

namespace {
bool keeps(const torch::Tensor& p, torch::ScalarType stored, bool keep_stored, const std::set<const c10::TensorImpl*>& matrices) {
  return keep_stored && (stored == torch::kBFloat16 || stored == torch::kFloat16) && p.scalar_type() == torch::kFloat32 &&
         p.device().is_cpu() && matrices.count(p.unsafeGetTensorImpl());
}
}  // namespace

void fill_weight(torch::Tensor& p, const SafetensorsReader& f, const TensorEntry& e, bool keep_stored,
                 const std::set<const c10::TensorImpl*>& matrices) {
  torch::NoGradGuard ng;
  if (keeps(p, e.dtype, keep_stored, matrices)) {
    p.set_data(torch::empty(p.sizes(), p.options().dtype(e.dtype)));  // the float32 allocation goes, never written
    f.read_into(e, p);
  } else if (e.dtype == p.scalar_type() && p.is_contiguous() && p.device().is_cpu()) {
    f.read_into(e, p);
  } else {
    p.copy_(f.read(e));
  }
}

void fill_weight(torch::Tensor& p, const torch::Tensor& t, bool keep_stored, const std::set<const c10::TensorImpl*>& matrices) {
  torch::NoGradGuard ng;
  if (keeps(p, t.scalar_type(), keep_stored, matrices))
    p.set_data(t.contiguous());
  else
    p.copy_(t.to(p.scalar_type()));
}

void load_weights(const std::string& path, CausalLM& model, const std::vector<std::string>& ignore,
                  const std::map<std::string, std::string>& copies, bool keep_stored) {
  LCX_CHECK(std::filesystem::exists(path), path, ": no such file");
  SafetensorsReader f(path);
  const auto matrices = matrix_weights(*model);
  std::set<std::string> used;
  auto ignored = [&](const std::string& n) {
    for (auto& s : ignore)
      if (n.find(s) != std::string::npos) return true;
    return false;
  };
  for (auto& [n, p] : named_weights(model)) {
    std::string from = n;
    if (!f.find(n))
      for (auto& [to, src] : copies)
        if (auto at = n.find(to); at != std::string::npos) {
          from = n.substr(0, at) + src + n.substr(at + to.size());
          LCX_CHECK(f.find(from), path, ": parameter '", n, "' is to be copied from '", from, "', which the file lacks");
          break;
        }
    if (!f.find(from) && ignored(n)) continue;  // keeps its fresh initialisation
    const TensorEntry* e = f.find(from);
    LCX_CHECK(e, path, ": missing tensor '", n, "' for this model's config");
    LCX_CHECK(torch::IntArrayRef(e->shape) == p.sizes(), path, ": tensor '", n, "' has shape ", torch::IntArrayRef(e->shape),
              ", the model expects ", p.sizes());
    LCX_CHECK(torch::isFloatingType(e->dtype), path, ": tensor '", n, "' is not floating point");
    fill_weight(p, f, *e, keep_stored, matrices);
    used.insert(from);
  }
  for (auto& e : f.entries())
    LCX_CHECK(used.count(e.name) || ignored(e.name), path, ": tensor '", e.name, "' is not a parameter of this model's config");
}

Pretrained load_pretrained(const std::string& dir, const std::vector<std::string>& overrides) {
  namespace fs = std::filesystem;
  LCX_CHECK(fs::is_directory(dir), "model folder '", dir, "' does not exist");
  Pretrained p;
  p.dir = dir;
  std::string cfg_path = dir + "/config.json";
  p.config = read_json_file(cfg_path);
  std::string hf_type;  // a Hugging Face folder: its config converted, its weights mapped
  if (is_hf_config(p.config)) {
    auto c = hf_to_longctx_config(p.config, cfg_path);
    hf_type = c["hf_model_type"].get<std::string>();
    nlohmann::json conv = {{"model", c["model"]}, {"tokenizer", {{"type", folder_tokenizer_type(dir)}}}, {"hf_config", p.config}};
    if (std::filesystem::exists(dir + "/generation_config.json"))
      conv["generation_config"] = read_json_file(dir + "/generation_config.json");
    p.config = conv;
  }
  const nlohmann::json hf_mixer = hf_type.empty() ? nlohmann::json() : p.config["model"]["mixer"];
  LCX_CHECK(p.config.is_object() && p.config.contains("model"), cfg_path, ": no 'model' object");
  for (auto& o : overrides) {  // a model folder's config: the model's fields only
    auto eq = o.find('=');
    if (eq != std::string::npos && eq > 0)
      check_field_path(o.substr(0, eq), list_config<ModelConfig>("model"), {"model.mixer.", "model.rope_scaling."});
  }
  apply_overrides(p.config, overrides);
  if (!hf_type.empty()) {
    // A mixer set over a pretrained model keeps the checkpoint's attention shape unless it says otherwise.
    auto& mx = p.config["model"]["mixer"];
    if (mx.is_object())
      for (auto k : {"n_kv_heads", "head_dim", "qkv_bias"})
        if (hf_mixer.contains(k) && !mx.contains(k)) mx[k] = hf_mixer[k];
  }
  p.model_config = ModelConfig::from_json(p.config["model"], cfg_path);
  std::string tok = p.config.contains("tokenizer") ? p.config["tokenizer"].value("type", "byte") : "byte";
  p.tokenizer = make_tokenizer(tok, dir);
  LCX_CHECK(p.tokenizer->vocab_size() <= p.model_config.vocab_size, cfg_path, ": tokenizer has ",
            p.tokenizer->vocab_size(), " tokens, model.vocab_size is ", p.model_config.vocab_size);
  {
    WeightsFromFile from_file;  // every weight is read next: none is initialised first
    p.model = CausalLM(p.model_config);
  }
  const bool keep = weight_policy().keep_stored;
  if (!hf_type.empty()) load_hf_weights(dir, hf_type, p.model, keep);
  else load_weights(dir + "/model.safetensors", p.model, {}, {}, keep);
  p.model->eval();
  return p;
}

}  // namespace longctx
