// longctx eval ppl | passkey | passkey-trace | suite: bits per byte over a long document at several contexts,
// passkey retrieval by length and depth, how an early key fades, and several models in one table.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "commands.h"
#include "eval/passkey.h"
#include "eval/ppl.h"
#include "eval/suite.h"
#include "io/fs.h"
#include "model/pretrained.h"
#include "util/error.h"
#include "util/plot.h"
#include "util/system.h"

namespace longctx::cli {

namespace {

struct PplArgs {
  std::string model, data = "moby-dick", contexts = "256,1024,4096", json_out;
  int64_t chunk = 512, max_bytes = 0;
  std::vector<std::string> sets;
};

struct PasskeyArgs {
  std::string model, lengths = "4096,32768", depths = "0,25,50,75,100", out, device = "cpu";
  std::vector<std::string> sets;
  PasskeyEvalOptions o;
};

struct SuiteArgs {
  std::string models, labels, passkey_lengths = "4096", depths = "0,50,100", ruler_lengths, ruler_tasks = "niah_single_1",
              ppl_data = "val", ppl_context = "trained", out, title;
  SuiteOptions o;
};

struct TraceArgs {
  std::string model, length = "65536", out;
  double depth = 0;
  std::vector<std::string> sets;
  PasskeyTraceOptions o;
};

std::vector<double> parse_depths(const std::string& s) {
  std::vector<double> v;
  for (auto& item : split_commas(s)) {
    char* end = nullptr;
    double d = std::strtod(item.c_str(), &end);
    LCX_CHECK(!item.empty() && end && *end == '\0' && d >= 0 && d <= 100, "--depths: '", item,
              "' is not a depth in percent (0..100)");
    v.push_back(d);
  }
  return v;
}

int run_ppl(const PplArgs& a) {
  auto p = load_pretrained(a.model, a.sets);
  std::string text = eval_text(a.data, a.model);
  if (a.max_bytes > 0 && static_cast<int64_t>(text.size()) > a.max_bytes) text.resize(a.max_bytes);
  auto toks = p.tokenizer->encode(text);
  double bpt = double(text.size()) / double(toks.size());
  std::printf("model %s (%s, %.2fM parameters), data %s: %zu bytes, %zu tokens\n", a.model.c_str(),
              p.model_config.mixer_type().c_str(), p.model->num_parameters() / 1e6, a.data.c_str(), text.size(),
              toks.size());
  std::printf("%10s %12s %14s %12s %12s %12s\n", "context", "bits/byte", "tokens scored", "tokens/s", "state", "peak RSS");
  nlohmann::json results = nlohmann::json::array();
  for (auto c : parse_lengths(a.contexts, "--context")) {
    PplOptions o;
    o.context = c;
    o.chunk = a.chunk;
    auto r = eval_bits_per_byte(p.model, toks, bpt, o);
    std::printf("%10lld %12.4f %14lld %12.0f %12s %12s\n", (long long)r.context, r.bits_per_byte,
                (long long)r.tokens_scored, r.tokens_per_s, human_bytes(r.state_bytes).c_str(),
                human_bytes(r.peak_rss).c_str());
    std::fflush(stdout);
    results.push_back({{"context", r.context}, {"bits_per_byte", r.bits_per_byte}, {"nats_per_token", r.nats_per_token},
                       {"tokens_scored", r.tokens_scored}, {"windows", r.windows}, {"seconds", r.seconds},
                       {"tokens_per_s", r.tokens_per_s}, {"state_bytes", r.state_bytes}, {"peak_rss_bytes", r.peak_rss}});
  }
  if (!a.json_out.empty())
    write_file_atomic(a.json_out,
                      nlohmann::json({{"model", a.model}, {"data", a.data}, {"results", results}}).dump(2) + "\n");
  return 0;
}

int run_passkey(PasskeyArgs a, int threads) {
  auto p = load_pretrained(a.model, a.sets);
  if (a.device == "cuda") {
    LCX_CHECK(torch::cuda::is_available(), "--device cuda: this libtorch sees no CUDA device");
    p.model->to(torch::kCUDA);
  } else {
    LCX_CHECK(a.device == "cpu", "--device: '", a.device, "' is not cpu or cuda");
  }
  auto& o = a.o;
  o.lengths = parse_lengths(a.lengths, "--lengths");
  o.depths = parse_depths(a.depths);
  std::filesystem::create_directories(a.out);
  std::string samples_path = a.out + "/samples.jsonl";
  std::ofstream samples(samples_path + ".tmp");
  o.on_sample = [&](const nlohmann::json& j) {  // generations need not be UTF-8: U+FFFD for what is not
    samples << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  };
  o.log = [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
  std::fprintf(stderr, "passkey: model %s (%s, %.2fM parameters, %s state), %lld samples per cell, seed %llu\n",
               a.model.c_str(), p.model_config.mixer_type().c_str(), p.model->num_parameters() / 1e6,
               p.model->state_bounded() ? "bounded" : "growing", (long long)o.samples, (unsigned long long)o.seed);
  auto cells = eval_passkey(p.model, *p.tokenizer, o);
  samples.close();
  std::filesystem::rename(samples_path + ".tmp", samples_path);
  nlohmann::json summary = nlohmann::json::array();
  for (auto& c : cells) summary.push_back(c.to_json());
  write_file_atomic(a.out + "/summary.json", summary.dump(2) + "\n");
  write_file_atomic(a.out + "/run.json", nlohmann::json({{"model", a.model},
                                                         {"mechanism", p.model_config.mixer_type()},
                                                         {"mixer", p.model_config.mixer},
                                                         {"overrides", a.sets},
                                                         {"parameters", p.model->num_parameters()},
                                                         {"samples", o.samples},
                                                         {"seed", o.seed},
                                                         {"lengths", o.lengths},
                                                         {"depths", o.depths},
                                                         {"key_min", o.key_min},
                                                         {"key_max", o.key_max},
                                                         {"device", a.device},
                                                         {"threads", threads}})
                                                 .dump(2) + "\n");
  write_file_atomic(a.out + "/heatmap.svg",
                    passkey_heatmap_svg(cells, "passkey accuracy: " + std::filesystem::path(a.model).filename().string() +
                                                   " (" + std::to_string(o.samples) + " samples per cell)"));
  std::printf("%s", passkey_table(cells).c_str());
  std::printf("wrote %s/summary.json, samples.jsonl, heatmap.svg\n", a.out.c_str());
  return 0;
}

int run_suite_cmd(SuiteArgs a) {
  auto& o = a.o;
  o.passkey_lengths = a.passkey_lengths == "none" ? std::vector<int64_t>{} : parse_lengths(a.passkey_lengths, "--passkey-lengths");
  o.depths = parse_depths(a.depths);
  o.ruler_lengths = a.ruler_lengths.empty() ? std::vector<int64_t>{} : parse_lengths(a.ruler_lengths, "--ruler-lengths");
  o.ruler_tasks = split_commas(a.ruler_tasks);
  if (a.ppl_context == "trained") {
    o.ppl_context = -1;
  } else {
    auto c = parse_lengths(a.ppl_context, "--ppl-context");
    LCX_CHECK(c.size() == 1, "--ppl-context: one context ('trained', a length or 'all'), got '", a.ppl_context, "'");
    o.ppl_context = c[0];
  }
  if (a.ppl_data != "none") {
    const std::string data = a.ppl_data;
    o.ppl_text = [data](const std::string& dir) { return eval_text(data, dir); };
  }
  o.out = a.out;
  o.log = [](const std::string& s) { std::fprintf(stderr, "suite: %s\n", s.c_str()); };
  auto rows = run_suite(split_commas(a.models), split_commas(a.labels), o);
  nlohmann::json all = nlohmann::json::array();
  for (auto& r : rows) all.push_back(r.to_json());
  const std::string md = suite_markdown(rows);
  write_file_atomic(a.out + "/table.json",
                    nlohmann::json({{"settings", o.settings()}, {"ppl_data", a.ppl_data}, {"rows", all}}).dump(2) + "\n");
  write_file_atomic(a.out + "/table.md", md);
  write_file_atomic(a.out + "/table.svg",
                    suite_heatmap(rows, a.title.empty() ? "passkey accuracy and RULER score by model and length" : a.title));
  std::printf("%s", md.c_str());
  std::printf("wrote %s/table.md, table.json, table.svg (passkey details in %s/MODEL/)\n", a.out.c_str(), a.out.c_str());
  return 0;
}

int run_trace(TraceArgs a) {
  auto p = load_pretrained(a.model, a.sets);
  auto& o = a.o;
  o.length = parse_lengths(a.length, "--length").at(0);
  LCX_CHECK(a.depth >= 0 && a.depth <= 100, "--depth: ", a.depth, " is not in [0, 100]");
  o.depth = a.depth / 100.0;
  std::filesystem::create_directories(a.out);
  const std::string path = a.out + "/trace.jsonl";
  std::ofstream lines(path + ".tmp");
  std::printf("%10s %8s %-10s %8s  margins of the answer's tokens | per layer: imprint / read_diff / ||M|| / read_rms\n", "filler", "correct", "answer",
              "margin");
  o.on_point = [&](const nlohmann::json& pt) {
    lines << pt.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    lines.flush();
    std::printf("%10lld %8s %-10s %8.2f ", (long long)pt["filler_after_key"].get<int64_t>(),
                pt["correct"].get<bool>() ? "yes" : "no", nlohmann::json(pt["answer"]).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str(),
                pt["margin"].get<double>());
    for (auto& m : pt["margins"]) std::printf(" %5.1f", m.get<double>());
    for (auto& L : pt["layers"])
      if (L.contains("imprint"))
        std::printf(" | %.3f %.3f %.0f %.3f", L["imprint"].get<double>(), L.value("read_diff", 0.0),
                    L["memory_norm"].get<double>(), L.value("read_rms", 0.0));
    std::printf("\n");
    std::fflush(stdout);
  };
  auto pts = passkey_trace(p.model, *p.tokenizer, o);
  lines.close();
  std::filesystem::rename(path + ".tmp", path);
  std::vector<Series> imprint, margin;
  for (auto& pt : pts) {
    const double x = std::max<double>(1, pt["filler_after_key"].get<double>());
    const auto& ms = pt["margins"];
    if (margin.size() < ms.size()) margin.resize(ms.size());
    for (size_t j = 0; j < ms.size(); ++j) {
      margin[j].label = "answer token " + std::to_string(j) + (j == 0 ? " (the space)" : j == 1 ? " (first digit)" : "");
      margin[j].points.push_back({x, ms[j].get<double>()});
    }
    for (auto& L : pt["layers"]) {
      if (!L.contains("imprint")) continue;
      const size_t i = L["layer"].get<size_t>();
      if (imprint.size() < 2 * (i + 1)) imprint.resize(2 * (i + 1));
      imprint[2 * i].label = "layer " + std::to_string(i) + ": ||M - M'|| / ||M||";
      imprint[2 * i + 1].label = "layer " + std::to_string(i) + ": read at the question, relative difference";
      imprint[2 * i].points.push_back({x, L["imprint"].get<double>()});
      imprint[2 * i + 1].points.push_back({x, L.value("read_diff", 0.0)});
    }
  }
  std::vector<Series> shown;
  for (auto& s : imprint)
    if (!s.points.empty()) shown.push_back(s);
  PlotOptions po;
  po.logx = true;
  po.xlabel = "filler tokens after the key";
  po.title = "the key's imprint on memory: " + std::filesystem::path(a.model).filename().string();
  po.ylabel = "relative difference, key vs other key";
  write_file_atomic(a.out + "/imprint.svg", svg_line_plot(shown, po));
  po.title = "the answer's tokens, right answer fed: " + std::filesystem::path(a.model).filename().string();
  po.ylabel = "log p(right token) - log p(best other)";
  write_file_atomic(a.out + "/margin.svg", svg_line_plot(margin, po));
  std::printf("wrote %s/trace.jsonl, imprint.svg, margin.svg\n", a.out.c_str());
  return 0;
}

}  // namespace

void add_eval(CLI::App& app, Commands& cmds, const Globals& g) {
  auto* ev = app.add_subcommand("eval", "evaluate a model");
  ev->require_subcommand(1);

  auto pa = std::make_shared<PplArgs>();
  auto* ppl = ev->add_subcommand("ppl", "bits per byte over a long document, streamed, at several contexts");
  ppl->add_option("--model", pa->model, "model folder")->required();
  ppl->add_option("--data", pa->data, "corpus (moby-dick, bible, sotu, brown, file:PATH) or val (the model's held-out documents)");
  ppl->add_option("--context", pa->contexts, "comma-separated window lengths in tokens; 'all' = the whole document");
  ppl->add_option("--chunk", pa->chunk, "tokens per forward call (memory)");
  ppl->add_option("--set", pa->sets, "override a model config field, e.g. model.mixer={\"type\":\"sliding_window\",\"window\":256}");
  ppl->add_option("--json", pa->json_out, "also write the results as JSON to this file");
  ppl->add_option("--max-bytes", pa->max_bytes, "use only the first N bytes of the document (0 = all)");
  cmds.push_back({ppl, [pa] { return run_ppl(*pa); }});

  auto pk = std::make_shared<PasskeyArgs>();
  auto* pkc = ev->add_subcommand("passkey", "passkey retrieval by length and depth (JSONL per sample, summary.json, heatmap)");
  pkc->add_option("--model", pk->model, "model folder")->required();
  pkc->add_option("--lengths", pk->lengths, "prompt lengths in the model's tokens (4096, 4K, 1M, ...)");
  pkc->add_option("--depths", pk->depths, "depths of the key in percent (0 = start, 100 = just before the question)");
  pkc->add_option("--samples", pk->o.samples, "prompts (random keys) per length and depth");
  pkc->add_option("--seed", pk->o.seed, "seed of the keys");
  pkc->add_option("--out", pk->out, "folder for summary.json, samples.jsonl, heatmap.svg")->required();
  pkc->add_option("--chunk", pk->o.chunk, "tokens per forward call (memory; results do not depend on it)");
  pkc->add_option("--key-min", pk->o.key_min, "smallest key");
  pkc->add_option("--key-max", pk->o.key_max, "largest key");
  pkc->add_option("--max-new-tokens", pk->o.max_new_tokens, "generation limit (0 = digits of --key-max + 4)");
  pkc->add_option("--set", pk->sets, "override a model config field");
  pkc->add_option("--device", pk->device, "cpu or cuda");
  cmds.push_back({pkc, [pk, &g] { return run_passkey(*pk, g.threads); }});

  auto su = std::make_shared<SuiteArgs>();
  auto* suc = ev->add_subcommand(
      "suite", "several models measured the same way, one table: held-out bits per byte, tokens/s and state bytes "
               "streaming at batch 1 (beside full attention's KV cache), passkey and RULER by length (resumable; "
               "table.md, table.json, table.svg)");
  suc->add_option("--models", su->models, "comma-separated model folders")->required();
  suc->add_option("--labels", su->labels, "comma-separated row names (default: the folder names)");
  suc->add_option("--passkey-lengths", su->passkey_lengths, "passkey prompt lengths in tokens, or none");
  suc->add_option("--depths", su->depths, "passkey depths in percent");
  suc->add_option("--samples", su->o.passkey_samples, "passkey prompts per length and depth");
  suc->add_option("--ruler-lengths", su->ruler_lengths, "RULER lengths in tokens (default: no RULER)");
  suc->add_option("--ruler-tasks", su->ruler_tasks, "comma-separated RULER tasks (those needing no QA files)");
  suc->add_option("--ruler-samples", su->o.ruler_samples, "RULER samples per task and length");
  suc->add_option("--stream-tokens", su->o.stream_tokens,
                  "random tokens streamed at batch 1 for tokens/s and state bytes (0: the longest passkey length; -1: none)");
  suc->add_option("--chunk", su->o.chunk, "tokens per forward call");
  suc->add_option("--ppl-data", su->ppl_data, "held-out text for bits per byte: val (each model's held-out documents), a corpus, or none");
  suc->add_option("--ppl-context", su->ppl_context, "context of the bits per byte: trained (each model's data.seq_len), a length, or all");
  suc->add_option("--ppl-bytes", su->o.ppl_bytes, "first bytes of that text (0 = all)");
  suc->add_option("--seed", su->o.seed, "seed of the keys, RULER's samples and the streamed tokens");
  suc->add_option("--title", su->title, "heatmap title");
  suc->add_option("--out", su->out, "folder for table.md, table.json, table.svg, rows/ and per-model details")->required();
  cmds.push_back({suc, [su] { return run_suite_cmd(*su); }});

  auto tr = std::make_shared<TraceArgs>();
  auto* trc = ev->add_subcommand("passkey-trace",
                                 "how a key written early fades: two prompts differing only in the key, asked the "
                                 "question every --every tokens (trace.jsonl, imprint.svg, margin.svg)");
  trc->add_option("--model", tr->model, "model folder")->required();
  trc->add_option("--length", tr->length, "prompt length in the model's tokens (65536, 64K, ...)");
  trc->add_option("--depth", tr->depth, "depth of the key in percent");
  trc->add_option("--key", tr->o.key, "the key");
  trc->add_option("--other-key", tr->o.other_key, "the key of the second prompt (same number of tokens)");
  trc->add_option("--every", tr->o.every, "tokens of filler between points");
  trc->add_option("--chunk", tr->o.chunk, "tokens per forward call");
  trc->add_option("--set", tr->sets, "override a model config field");
  trc->add_option("--out", tr->out, "folder for trace.jsonl and the plots")->required();
  cmds.push_back({trc, [tr] { return run_trace(*tr); }});
}

}  // namespace longctx::cli
