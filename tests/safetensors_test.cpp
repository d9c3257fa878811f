#include <cstring>
#include <random>

#include "io/fs.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace longctx;
using namespace longctx::testing;

TEST(Safetensors, RoundTripEveryDtypeBitExact) {
  torch::manual_seed(1);
  std::vector<std::pair<std::string, torch::Tensor>> t = {
      {"f32", torch::randn({3, 5})},
      {"f64", torch::randn({4}, torch::kFloat64)},
      {"f16", torch::randn({2, 2}).to(torch::kFloat16)},
      {"bf16", torch::randn({7}).to(torch::kBFloat16)},
      {"i64", torch::randint(-1000000000000LL, 1000000000000LL, {5}, torch::kInt64)},
      {"i32", torch::randint(-100, 100, {3}, torch::kInt32)},
      {"u8", torch::randint(0, 255, {9}, torch::kUInt8)},
      {"bool", torch::randint(0, 2, {4}).to(torch::kBool)},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::empty({0, 3})},
      {"noncontig", torch::randn({4, 6}).t()},
  };
  auto dir = temp_dir("st_rt");
  save_safetensors(dir + "/a.safetensors", t, {{"k", "v"}});
  auto f = load_safetensors(dir + "/a.safetensors");
  ASSERT_EQ(f.tensors.size(), t.size());
  EXPECT_EQ(f.metadata.at("k"), "v");
  for (auto& [n, x] : t) {
    auto y = f.at(n);
    EXPECT_EQ(y.scalar_type(), x.scalar_type()) << n;
    EXPECT_EQ(y.sizes(), x.sizes()) << n;
    EXPECT_TRUE(torch::equal(y, x.contiguous())) << n;
  }
}

TEST(Safetensors, ReaderReadsEachTensorFromDiskAsTheWholeFileParseDoes) {
  torch::manual_seed(3);
  std::vector<std::pair<std::string, torch::Tensor>> t = {
      {"w", torch::randn({17, 9})}, {"h", torch::randn({5}).to(torch::kFloat16)},
      {"b", torch::randn({3, 4}).to(torch::kBFloat16)}, {"e", torch::empty({0})}, {"i", torch::arange(7)}};
  auto dir = temp_dir("st_reader");
  save_safetensors(dir + "/a.safetensors", t, {{"format", "pt"}});
  SafetensorsReader r(dir + "/a.safetensors");
  auto whole = load_safetensors(dir + "/a.safetensors");
  ASSERT_EQ(r.entries().size(), whole.tensors.size());
  EXPECT_EQ(r.metadata().at("format"), "pt");
  for (size_t i = 0; i < whole.tensors.size(); ++i) {
    const auto& e = r.entries()[i];
    EXPECT_EQ(e.name, whole.tensors[i].first);  // file order
    auto x = r.read(e);
    EXPECT_EQ(x.scalar_type(), whole.tensors[i].second.scalar_type()) << e.name;
    EXPECT_TRUE(torch::equal(x, whole.tensors[i].second)) << e.name;
  }
  // Straight into a destination of the same dtype; refused, naming the tensor, into another.
  auto dst = torch::empty({17, 9});
  r.read_into(*r.find("w"), dst);
  EXPECT_TRUE(torch::equal(dst, t[0].second));
  auto wrong = torch::empty({17, 9}, torch::kFloat64);
  expect_error([&] { r.read_into(*r.find("w"), wrong); }, {"a.safetensors", "'w'"});
  EXPECT_EQ(r.find("absent"), nullptr);
  // A file cut short after its header was read: the read names the tensor.
  auto bytes = read_file(dir + "/a.safetensors");
  SafetensorsReader r2(dir + "/a.safetensors");
  write_file_atomic(dir + "/a.safetensors", bytes.substr(0, bytes.size() - 40));
  expect_error([&] { r2.read(*r2.find("i")); }, {"a.safetensors", "'i'"});
}

TEST(Safetensors, HeaderIsAlignedAndDataContiguous) {
  auto bytes = safetensors_serialize({{"a", torch::ones({3})}, {"b", torch::zeros({1}, torch::kInt64)}});
  uint64_t hl;
  std::memcpy(&hl, bytes.data(), 8);
  EXPECT_EQ(hl % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + hl + 3 * 4 + 8);
}

TEST(Safetensors, ReadsFileInPythonLayout) {
  auto f = load_safetensors(source_dir() + "/tests/fixtures/python_layout.safetensors");
  EXPECT_EQ(f.metadata.at("format"), "pt");
  auto w = f.at("model.embed.weight");
  EXPECT_EQ(w.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(torch::allclose(w, torch::arange(6, torch::kFloat32).reshape({2, 3}) * 0.5 - 1));
  auto h = f.at("half");
  EXPECT_EQ(h.scalar_type(), torch::kFloat16);
  EXPECT_TRUE(torch::equal(h.to(torch::kFloat32), torch::tensor({1.5f, -2.25f, 65504.0f})));
  auto b = f.at("brain");
  EXPECT_EQ(b.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(b.to(torch::kFloat32), torch::tensor({1.0f, -3.0f, 0.5f})));
  auto i = f.at("ids");
  EXPECT_EQ(i[1].item<int64_t>(), int64_t(1) << 40);
  EXPECT_EQ(i[0].item<int64_t>(), -1);
  EXPECT_EQ(f.at("empty").numel(), 0);
  // Our own writer produces a file the same reader accepts, tensor for tensor.
  auto again = safetensors_parse(safetensors_serialize(f.tensors, f.metadata), "again");
  for (auto& [n, x] : f.tensors) EXPECT_TRUE(torch::equal(again.at(n), x)) << n;
}

namespace {
std::string header_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}
}  // namespace

TEST(Safetensors, MalformedFilesGiveOneClearError) {
  const auto dir = temp_dir("st_malformed");
  auto bad = [&](const std::string& bytes, std::initializer_list<std::string> needles) {
    expect_error([&] { safetensors_parse(bytes, "bad.safetensors"); }, needles);
    // The reader that reads tensors from disk checks the header the same way, before any read.
    write_file_atomic(dir + "/bad.safetensors", bytes);
    expect_error([&] { SafetensorsReader r(dir + "/bad.safetensors"); }, needles);
  };
  bad("abc", {"bad.safetensors", "shorter than"});
  bad(header_file("{}", "").substr(0, 6), {"bad.safetensors"});
  std::string huge(8, '\0');
  uint64_t n = 1ull << 40;
  std::memcpy(huge.data(), &n, 8);
  bad(huge, {"bad.safetensors", "header length"});
  bad(header_file("{not json", ""), {"bad.safetensors", "JSON"});
  bad(header_file("[1,2]", ""), {"not a JSON object"});
  bad(header_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234"), {"'a'", "exceed"});
  bad(header_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "12345678"), {"'a'", "need 12"});
  bad(header_file(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", "12345678"), {"'a'", "Q4"});
  bad(header_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", "12345678"), {"'a'", "shape"});
  bad(header_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", "12345678"), {"hole"});
  bad(header_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "12345678"), {"trailing"});
  bad(header_file(R"({"a":{"dtype":"F32","shape":[1]}})", "1234"), {"'a'", "data_offsets"});
  bad(header_file(R"({"__metadata__":{"x":1}})", ""), {"__metadata__"});
  expect_error([] { load_safetensors("/nonexistent/x.safetensors"); }, {"/nonexistent/x.safetensors"});
}

TEST(Safetensors, RandomCorruptionNeverCrashes) {
  auto good = safetensors_serialize({{"w", torch::randn({4, 4})}, {"i", torch::arange(5)}});
  std::mt19937 rng(7);
  int errors = 0;
  for (int trial = 0; trial < 500; ++trial) {
    std::string b = good;
    int flips = 1 + rng() % 4;
    for (int k = 0; k < flips; ++k) b[rng() % std::min<size_t>(b.size(), 120)] = static_cast<char>(rng());
    if (trial % 7 == 0) b.resize(rng() % b.size());
    try {
      safetensors_parse(b, "fuzz");
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
}

TEST(Fs, AtomicWriteReplacesWholeFileAndLeavesNoTemp) {
  auto d = temp_dir("atomic");
  write_file_atomic(d + "/f", "first");
  write_file_atomic(d + "/f", "second");
  EXPECT_EQ(read_file(d + "/f"), "second");
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(d)) (void)e, ++n;
  EXPECT_EQ(n, 1);
}
