#include "io/safetensors.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "io/fs.h"
#include "util/error.h"

namespace longctx {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

constexpr uint64_t kMaxHeader = 100u << 20;  // the reference implementation's limit (100 MB)

const std::vector<std::pair<std::string, torch::ScalarType>>& dtypes() {
  static const std::vector<std::pair<std::string, torch::ScalarType>> d = {
      {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16},
      {"BF16", torch::kBFloat16}, {"I64", torch::kInt64}, {"I32", torch::kInt32},
      {"I16", torch::kInt16},   {"I8", torch::kInt8},     {"U8", torch::kUInt8},
      {"BOOL", torch::kBool}};
  return d;
}

std::string dtype_name(torch::ScalarType t) {
  for (auto& [n, s] : dtypes())
    if (s == t) return n;
  fail("safetensors: unsupported tensor dtype ", c10::toString(t));
}

}  // namespace

bool TensorFile::has(const std::string& name) const {
  for (auto& [n, t] : tensors)
    if (n == name) return true;
  return false;
}

const torch::Tensor& TensorFile::at(const std::string& name) const {
  for (auto& [n, t] : tensors)
    if (n == name) return t;
  fail(origin, ": missing tensor '", name, "'");
}

std::string safetensors_serialize(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  uint64_t off = 0;
  for (auto& [name, t0] : tensors) {
    LCX_CHECK(name != "__metadata__", "safetensors: '__metadata__' is not a tensor name");
    LCX_CHECK(!header.contains(name), "safetensors: duplicate tensor name '", name, "'");
    auto t = t0.detach().to(torch::kCPU).contiguous();
    uint64_t n = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype_name(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {off, off + n}}};
    off += n;
    data.push_back(t);
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // align the data buffer to 8 bytes, as Python does
  std::string out(8, '\0');
  uint64_t hl = h.size();
  std::memcpy(out.data(), &hl, 8);
  out += h;
  out.reserve(out.size() + off);
  for (auto& t : data)
    out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  return out;
}

TensorFile safetensors_parse(const std::string& bytes, const std::string& origin) {
  TensorFile f;
  f.origin = origin;
  LCX_CHECK(bytes.size() >= 8, origin, ": not a safetensors file (", bytes.size(),
            " bytes, shorter than the 8-byte header length)");
  uint64_t hl;
  std::memcpy(&hl, bytes.data(), 8);
  LCX_CHECK(hl <= kMaxHeader, origin, ": header length ", hl, " exceeds the 100 MB limit");
  LCX_CHECK(hl <= bytes.size() - 8, origin, ": header length ", hl, " exceeds the file size (",
            bytes.size(), " bytes)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + hl);
  } catch (const std::exception& e) {
    fail(origin, ": header is not valid JSON (", e.what(), ")");
  }
  LCX_CHECK(header.is_object(), origin, ": header is not a JSON object");
  const char* base = bytes.data() + 8 + hl;
  uint64_t buf = bytes.size() - 8 - hl;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& e = it.value();
    if (name == "__metadata__") {
      LCX_CHECK(e.is_object(), origin, ": __metadata__ must be an object of strings");
      for (auto m = e.begin(); m != e.end(); ++m) {
        LCX_CHECK(m.value().is_string(), origin, ": __metadata__ value '", m.key(),
                  "' is not a string");
        f.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto where = [&](const char* field) { return origin + ": tensor '" + name + "': " + field; };
    LCX_CHECK(e.is_object(), where("entry"), " is not an object");
    LCX_CHECK(e.contains("dtype") && e["dtype"].is_string(), where("dtype"), " missing or not a string");
    LCX_CHECK(e.contains("shape") && e["shape"].is_array(), where("shape"), " missing or not an array");
    LCX_CHECK(e.contains("data_offsets") && e["data_offsets"].is_array() && e["data_offsets"].size() == 2,
              where("data_offsets"), " missing or not [begin, end]");
    std::string dt = e["dtype"];
    torch::ScalarType st = torch::kFloat32;
    bool known = false;
    for (auto& [n, s] : dtypes())
      if (n == dt) st = s, known = true;
    LCX_CHECK(known, where("dtype"), " '", dt, "' is not supported");
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (auto& d : e["shape"]) {
      LCX_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
                where("shape"), " has a negative or non-integer dimension");
      uint64_t v = d.get<uint64_t>();
      LCX_CHECK(v == 0 || numel <= (uint64_t(1) << 62) / v, where("shape"), " overflows");
      numel *= v;
      shape.push_back(static_cast<int64_t>(v));
    }
    auto& o = e["data_offsets"];
    LCX_CHECK(o[0].is_number_unsigned() && o[1].is_number_unsigned(), where("data_offsets"),
              " are not non-negative integers");
    uint64_t b = o[0], en = o[1];
    LCX_CHECK(b <= en && en <= buf, where("data_offsets"), " [", b, ", ", en,
              "] exceed the data buffer (", buf, " bytes)");
    uint64_t esz = torch::elementSize(st);
    LCX_CHECK(en - b == numel * esz, where("data_offsets"), " span ", en - b, " bytes but dtype ", dt,
              " and shape need ", numel * esz);
    spans.push_back({b, en});
    auto t = torch::empty(shape, torch::TensorOptions().dtype(st));
    if (en > b) std::memcpy(t.data_ptr(), base + b, en - b);
    f.tensors.emplace_back(name, t);
  }
  std::sort(spans.begin(), spans.end());
  uint64_t pos = 0;
  for (auto& [b, e] : spans) {
    LCX_CHECK(b == pos, origin, ": data buffer has a hole or overlap at byte ", pos);
    pos = e;
  }
  LCX_CHECK(pos == buf, origin, ": data buffer has ", buf - pos, " trailing bytes not covered by any tensor");
  // Keep file order as data order (the JSON object is unordered).
  std::sort(f.tensors.begin(), f.tensors.end(), [&](auto& a, auto& b) {
    return header[a.first]["data_offsets"][0].template get<uint64_t>() <
           header[b.first]["data_offsets"][0].template get<uint64_t>();
  });
  return f;
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, safetensors_serialize(tensors, metadata));
}

TensorFile load_safetensors(const std::string& path) {
  return safetensors_parse(read_file(path), path);
}

}  // namespace longctx
