// The `longctx` subcommands, one file each (apps/cmd_*.cpp), thin over the library. Each add_*
// registers its subcommand(s) on the app with their options and appends what runs them; main()
// (longctx.cpp) parses, sets up threads, and runs the one chosen. Library errors are thrown with
// a message naming the file, field or limit and printed once by main().
#pragma once
#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace longctx {
class Tokenizer;
}
namespace longctx::ruler {
class Completer;
}

namespace longctx::cli {

// Set by main() before a command runs.
struct Globals {
  int threads = 0;  // intra-op threads in use
  std::vector<std::string> argv;  // the command line as given (train --nproc runs it again per rank)
};

struct Command {
  CLI::App* sub;             // runs when this (sub)command was given; the first match wins
  std::function<int()> run;  // returns the exit code
};
using Commands = std::vector<Command>;

void add_train(CLI::App& app, Commands& cmds, const Globals& g);
void add_eval(CLI::App& app, Commands& cmds, const Globals& g);  // eval ppl, passkey, passkey-trace, suite
void add_generate(CLI::App& app, Commands& cmds);
void add_info(CLI::App& app, Commands& cmds);
void add_compare(CLI::App& app, Commands& cmds);
void add_export(CLI::App& app, Commands& cmds);
void add_tokenizer(CLI::App& app, Commands& cmds);   // tokenizer train
void add_search(CLI::App& app, Commands& cmds);      // search longrope
void add_ruler(CLI::App& app, Commands& cmds);       // ruler, ruler prepare
void add_litm(CLI::App& app, Commands& cmds);
void add_serve(CLI::App& app, Commands& cmds);    // serve

// Helpers shared by the commands (apps/common.cpp).
// "4096,32K,1M,all" -> lengths (all = 0); `what` names the option in errors.
std::vector<int64_t> parse_lengths(const std::string& s, const char* what);
std::vector<std::string> split_commas(const std::string& s);
// Documents for evaluation: a corpus name, or "val" = the model's held-out documents (split.json).
std::string eval_text(const std::string& data, const std::string& model_dir);
// What `ruler` and `litm` run: a model folder, or an OpenAI-compatible endpoint (exactly one).
struct TargetArgs {
  std::string model, endpoint, api_model, api_key, tokenizer = "byte";
  std::vector<std::string> sets;
  int64_t chunk = 4096;
  void add_options(CLI::App* sub, const std::string& tokenizer_help);
};
std::unique_ptr<ruler::Completer> make_target(const std::string& cmd, const TargetArgs& t);
// --tokenizer of an endpoint target: "byte", or a folder (tokenizer.json, tokenizer.model, or a
// longctx model's).
std::unique_ptr<longctx::Tokenizer> endpoint_tokenizer(const std::string& spec);

}  // namespace longctx::cli
