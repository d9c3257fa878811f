#include <chrono>

#include "io/fs.h"
#include "model/config.h"
#include "model/pretrained.h"
#include "test_util.h"
#include "train/config.h"

using namespace longctx;
using namespace longctx::testing;
using nlohmann::json;

namespace {
json tiny() {
  return json::parse(R"({"model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "mixer": {"type": "full_attention"}},
                         "tokenizer": {"type": "byte"}, "data": {"seq_len": 16}, "train": {"steps": 3}})");
}
}  // namespace

TEST(Config, ShippedConfigsParse) {
  for (auto& e : std::filesystem::directory_iterator(source_dir() + "/configs")) {
    if (e.path().extension() != ".json") continue;
    EXPECT_NO_THROW(RunConfig::from_file(e.path().string())) << e.path();
  }
}

TEST(Config, RoundTripThroughJsonIsIdentity) {
  auto c = RunConfig::from_json(tiny(), "t.json");
  auto c2 = RunConfig::from_json(c.to_json(), "t2.json");
  EXPECT_EQ(c.to_json().dump(), c2.to_json().dump());
  EXPECT_EQ(c.model.hash(), c2.model.hash());
  EXPECT_EQ(c.model.vocab_size, 256);
}

TEST(Config, UnknownFieldsAreRejectedByName) {
  auto j = tiny();
  j["model"]["d_modle"] = 3;
  expect_error([&] { RunConfig::from_json(j, "cfg.json"); }, {"cfg.json", "unknown field 'model.d_modle'"});
  j = tiny();
  j["train"]["learning_rate"] = 3;
  expect_error([&] { RunConfig::from_json(j, "cfg.json"); }, {"'train.learning_rate'"});
  j = tiny();
  j["extra"] = 1;
  expect_error([&] { RunConfig::from_json(j, "cfg.json"); }, {"unknown field 'extra'"});
  j = tiny();
  j["model"]["mixer"]["windoe"] = 3;
  expect_error([&] { RunConfig::from_json(j, "cfg.json"); }, {"'model.mixer.windoe'"});
}

TEST(Config, WrongTypesAndRangesNameTheField) {
  auto j = tiny();
  j["model"]["d_model"] = "wide";
  expect_error([&] { RunConfig::from_json(j, "c.json"); }, {"'model.d_model'", "wrong type"});
  j = tiny();
  j["model"]["n_heads"] = 3;
  expect_error([&] { RunConfig::from_json(j, "c.json"); }, {"'model.n_heads'"});
  j = tiny();
  j["train"]["lr"] = -1;
  expect_error([&] { RunConfig::from_json(j, "c.json"); }, {"'train.lr'"});
  j = tiny();
  j["model"]["mixer"] = {{"type", "sliding_window"}};
  expect_error([&] { RunConfig::from_json(j, "c.json"); }, {"missing required field 'model.mixer.window'"});
  j = tiny();
  j["model"]["mixer"] = {{"type", "quantum"}};
  expect_error([&] { RunConfig::from_json(j, "c.json"); }, {"'quantum'", "full_attention", "sliding_window"});
}

TEST(Config, ConfigsThatCannotFitAreRefusedBeforeAnyAllocation) {
  // These would hang or die allocating; each is refused at once, naming the field or the size.
  auto j = tiny();
  j["model"]["n_layers"] = 999999999;
  auto t0 = std::chrono::steady_clock::now();
  expect_error([&] { RunConfig::from_json(j, "c.json"); }, {"c.json", "'model.n_layers' = 999999999", "limit"});
  j = tiny();
  j["model"]["d_model"] = 1 << 20;
  expect_error([&] { RunConfig::from_json(j, "c.json"); }, {"'model.d_model'", "limit"});
  j = tiny();
  j["model"]["d_model"] = 32768;  // within the width limit: 4000 layers of it are ~80 TB of weights
  j["model"]["n_layers"] = 4000;
  j["model"]["n_heads"] = 64;
  expect_error([&] { RunConfig::from_json(j, "c.json"); }, {"c.json", "weights would take", "n_layers 4000"});
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
}

TEST(Config, OverridesSetNestedFields) {
  auto j = tiny();
  apply_overrides(j, {"model.mixer={\"type\":\"sliding_window\",\"window\":8}", "train.steps=7", "data.train=[\"brown\"]"});
  auto c = RunConfig::from_json(j, "o.json");
  EXPECT_EQ(c.model.mixer_type(), "sliding_window");
  EXPECT_EQ(c.train.steps, 7);
  EXPECT_EQ(c.data.train[0], "brown");
  expect_error([&] { apply_overrides(j, {"novalue"}); }, {"novalue"});
}

// Every field the declarations list (the --help text) is one the reader accepts: set alone to
// its listed default, each is read back with that value.
TEST(Config, EveryListedFieldIsAcceptedByTheReader) {
  auto docs = RunConfig::fields();
  ASSERT_GT(docs.size(), 60u);
  int checked = 0;
  for (auto& d : docs) {
    if (d.type == "object" || d.type == "array" || d.path.find("[]") != std::string::npos) continue;
    if (d.path == "model.mixer" || d.path == "model.rope_scaling") continue;  // objects parsed by their owners
    auto j = tiny();
    j["data"]["seq_len"] = 1024;
    json value = json::parse(d.value);
    // Defaults that stand for a value derived from others ("0 = seq_len") are given one.
    if (d.path == "data.passkey.max_length" || d.path == "data.ruler.max_length") value = 512;
    if (d.path == "data.passkey.eval_lengths") value = json::array({512});
    if (d.path == "data.seq_len") value = 1024;
    if (d.path.rfind("train.selective.", 0) == 0) j["train"]["selective"] = {{"select", "random"}, {"reference", "x"}};
    if (d.path.rfind("train.init_", 0) == 0) j["train"]["init_from"] = "somewhere";
    if (d.path == "model.vocab_size") value = 256;
    // Place the value at its path.
    json* cur = &j;
    std::string p = d.path;
    for (size_t dot; (dot = p.find('.')) != std::string::npos; p = p.substr(dot + 1)) {
      std::string k = p.substr(0, dot);
      if (!cur->contains(k)) (*cur)[k] = json::object();
      cur = &(*cur)[k];
    }
    (*cur)[p] = value;
    RunConfig c;
    ASSERT_NO_THROW(c = RunConfig::from_json(j, "fields.json")) << d.path << " = " << value.dump();
    // And it is written back with that value.
    json back = c.to_json();
    json* b = &back;
    p = d.path;
    bool present = true;
    for (size_t dot; (dot = p.find('.')) != std::string::npos; p = p.substr(dot + 1)) {
      std::string k = p.substr(0, dot);
      if (!b->contains(k)) { present = false; break; }
      b = &(*b)[k];
    }
    if (present && b->contains(p)) {
      EXPECT_EQ((*b)[p], value) << d.path;
    }
    ++checked;
  }
  EXPECT_GT(checked, 50);
}

TEST(Config, ASetPathThatNamesNoFieldIsRefusedNamingItsNeighbours) {
  auto dir = temp_dir("setpath");
  write_file_atomic(dir + "/c.json", tiny().dump());
  expect_error([&] { RunConfig::from_file(dir + "/c.json", {"train.stesp=5"}); },
               {"--set train.stesp", "no such config field", "train.steps", "train.lr"});
  expect_error([&] { RunConfig::from_file(dir + "/c.json", {"data.passkey.fractoin=0.5"}); },
               {"data.passkey.fractoin", "data.passkey.fraction"});
  // The mechanism's own fields are its parser's: a wrong one is named by it.
  expect_error([&] { RunConfig::from_file(dir + "/c.json", {"model.mixer.windoe=5"}); }, {"'model.mixer.windoe'"});
  EXPECT_EQ(RunConfig::from_file(dir + "/c.json", {"train.steps=5"}).train.steps, 5);
}

TEST(Config, FieldsWrittenOnlyWhenSetStayOutOfTheDefaultConfig) {
  auto j = RunConfig::from_json(tiny(), "t.json").to_json();
  EXPECT_FALSE(j["data"].contains("passkey"));
  EXPECT_FALSE(j["data"].contains("ruler"));
  EXPECT_FALSE(j["train"].contains("selective"));
  EXPECT_FALSE(j["train"].contains("init_from"));
  EXPECT_FALSE(j["model"].contains("max_position_embeddings"));
  EXPECT_TRUE(j["train"].contains("lr"));
}
