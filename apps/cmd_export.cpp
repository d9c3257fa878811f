// longctx export: a model folder (config, weights, tokenizer, split) with F32/F16/BF16 weights.
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "io/fs.h"
#include "model/pretrained.h"
#include "util/system.h"

namespace longctx::cli {

namespace {
struct Args {
  std::string model, out, dtype = "F16";
};

int run(const Args& a) {
  namespace fs = std::filesystem;
  auto p = load_pretrained(a.model);
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
  cmds.push_back({ex, [a] { return run(*a); }});
}

}  // namespace longctx::cli
