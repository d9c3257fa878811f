// longctx export: a model folder (config, weights, tokenizer, split) with F32/F16/BF16 weights, in
// longctx's layout or, with --format hf, as a Hugging Face folder transformers loads.
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "io/fs.h"
#include "model/hf.h"
#include "model/pretrained.h"
#include "util/error.h"
#include "util/system.h"

namespace longctx::cli {

namespace {
struct Args {
  std::string model, out, dtype = "F16", format = "longctx";
};

int run(const Args& a) {
  namespace fs = std::filesystem;
  auto p = load_pretrained(a.model);
  LCX_CHECK(a.format == "longctx" || a.format == "hf", "export --format: '", a.format, "' is not longctx or hf");
  if (a.format == "hf") {
    save_hf_folder(p, a.out, a.dtype);
    auto check = load_pretrained(a.out);  // read back through the Hugging Face loader: the same logits
    torch::NoGradGuard ng;
    auto ids = torch::randint(0, p.model_config.vocab_size, {1, 64}, torch::kInt64);
    auto s1 = p.model->new_state(), s2 = check.model->new_state();
    auto want = p.model->forward(ids, s1).to(torch::kFloat32), got = check.model->forward(ids, s2).to(torch::kFloat32);
    const double err = (want - got).abs().max().item<double>(), scale = want.abs().max().item<double>();
    const double tol = a.dtype == "F32" ? 1e-4 : 0.05;  // rounding the weights to 16 bits moves the logits
    LCX_CHECK(err <= tol * std::max(1.0, scale), "export --format hf: the folder read back gives logits ", err,
              " away from the model's (limit ", tol * std::max(1.0, scale), ")");
    std::printf("wrote %s (Hugging Face %s, %s weights, %s; read back: logits within %.2g)\n", a.out.c_str(),
                check.config["hf_config"]["model_type"].get<std::string>().c_str(), a.dtype.c_str(),
                human_bytes(fs::file_size(a.out + "/model.safetensors")).c_str(), err);
    return 0;
  }
  fs::create_directories(a.out);
  write_file_atomic(a.out + "/config.json", p.config.dump(2) + "\n");
  save_weights(a.out + "/model.safetensors", p.model, a.dtype, {{"exported_from", a.model}});
  p.tokenizer->save(a.out);
  for (auto f : {"split.json", "log.jsonl", "loss.svg"})
    if (fs::exists(a.model + "/" + f)) write_file_atomic(a.out + "/" + f, read_file(a.model + "/" + f));
  auto check = load_pretrained(a.out);  // refuse to leave a folder that does not load
  std::printf("wrote %s (%s weights, %s)\n", a.out.c_str(), a.dtype.c_str(),
              human_bytes(fs::file_size(a.out + "/model.safetensors")).c_str());
  return 0;
}
}  // namespace

void add_export(CLI::App& app, Commands& cmds) {
  auto a = std::make_shared<Args>();
  auto* ex = app.add_subcommand("export", "write a model folder (config, weights, tokenizer, split) with F32/F16/BF16 weights");
  ex->add_option("--model", a->model, "model or run folder")->required();
  ex->add_option("--out", a->out, "destination folder")->required();
  ex->add_option("--dtype", a->dtype, "F32, F16 or BF16");
  ex->add_option("--format", a->format, "longctx (default) or hf (config.json, model.safetensors and tokenizer as transformers reads them)");
  cmds.push_back({ex, [a] { return run(*a); }});
}

}  // namespace longctx::cli
