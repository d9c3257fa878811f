#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
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

namespace {

// Parses and checks the JSON header (hl bytes at h) of a file whose data buffer holds `buf`
// bytes: every entry's dtype, shape and span, no holes, overlaps or trailing bytes.
void parse_header(const char* h, uint64_t hl, uint64_t buf, const std::string& origin, std::vector<TensorEntry>& out,
                  std::map<std::string, std::string>& metadata) {
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(h, h + hl);
  } catch (const std::exception& e) {
    fail(origin, ": header is not valid JSON (", e.what(), ")");
  }
  LCX_CHECK(header.is_object(), origin, ": header is not a JSON object");
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& e = it.value();
    if (name == "__metadata__") {
      LCX_CHECK(e.is_object(), origin, ": __metadata__ must be an object of strings");
      for (auto m = e.begin(); m != e.end(); ++m) {
        LCX_CHECK(m.value().is_string(), origin, ": __metadata__ value '", m.key(),
                  "' is not a string");
        metadata[m.key()] = m.value().get<std::string>();
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
    TensorEntry t;
    t.name = name;
    bool known = false;
    for (auto& [n, s] : dtypes())
      if (n == dt) t.dtype = s, known = true;
    LCX_CHECK(known, where("dtype"), " '", dt, "' is not supported");
    uint64_t numel = 1;
    for (auto& d : e["shape"]) {
      LCX_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
                where("shape"), " has a negative or non-integer dimension");
      uint64_t v = d.get<uint64_t>();
      LCX_CHECK(v == 0 || numel <= (uint64_t(1) << 62) / v, where("shape"), " overflows");
      numel *= v;
      t.shape.push_back(static_cast<int64_t>(v));
    }
    auto& o = e["data_offsets"];
    LCX_CHECK(o[0].is_number_unsigned() && o[1].is_number_unsigned(), where("data_offsets"),
              " are not non-negative integers");
    uint64_t b = o[0], en = o[1];
    LCX_CHECK(b <= en && en <= buf, where("data_offsets"), " [", b, ", ", en,
              "] exceed the data buffer (", buf, " bytes)");
    uint64_t esz = torch::elementSize(t.dtype);
    LCX_CHECK(en - b == numel * esz, where("data_offsets"), " span ", en - b, " bytes but dtype ", dt,
              " and shape need ", numel * esz);
    spans.push_back({b, en});
    t.begin = b, t.end = en;
    out.push_back(std::move(t));
  }
  std::sort(spans.begin(), spans.end());
  uint64_t pos = 0;
  for (auto& [b, e] : spans) {
    LCX_CHECK(b == pos, origin, ": data buffer has a hole or overlap at byte ", pos);
    pos = e;
  }
  LCX_CHECK(pos == buf, origin, ": data buffer has ", buf - pos, " trailing bytes not covered by any tensor");
  // File order is data order (the JSON object is unordered).
  std::stable_sort(out.begin(), out.end(), [](const TensorEntry& a, const TensorEntry& b) { return a.begin < b.begin; });
}

// The header length of a file of `size` bytes whose first 8 bytes are `first8`, checked.
uint64_t header_length(const char* first8, uint64_t size, const std::string& origin) {
  LCX_CHECK(size >= 8, origin, ": not a safetensors file (", size, " bytes, shorter than the 8-byte header length)");
  uint64_t hl;
  std::memcpy(&hl, first8, 8);
  LCX_CHECK(hl <= kMaxHeader, origin, ": header length ", hl, " exceeds the 100 MB limit");
  LCX_CHECK(hl <= size - 8, origin, ": header length ", hl, " exceeds the file size (", size, " bytes)");
  return hl;
}

}  // namespace

TensorFile safetensors_parse(const std::string& bytes, const std::string& origin) {
  TensorFile f;
  f.origin = origin;
  const uint64_t hl = header_length(bytes.data(), bytes.size(), origin);
  std::vector<TensorEntry> entries;
  parse_header(bytes.data() + 8, hl, bytes.size() - 8 - hl, origin, entries, f.metadata);
  const char* base = bytes.data() + 8 + hl;
  for (auto& e : entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), base + e.begin, e.end - e.begin);
    f.tensors.emplace_back(e.name, t);
  }
  return f;
}

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  LCX_CHECK(in.good(), path, ": cannot open");
  const uint64_t size = static_cast<uint64_t>(in.tellg());
  char first8[8] = {0};
  in.seekg(0);
  in.read(first8, std::min<uint64_t>(8, size));
  const uint64_t hl = header_length(first8, size, path);
  std::string h(hl, '\0');
  in.read(h.data(), static_cast<std::streamsize>(hl));
  LCX_CHECK(in.good(), path, ": could not read the ", hl, "-byte header");
  data_start_ = 8 + hl;
  parse_header(h.data(), hl, size - 8 - hl, path, entries_, metadata_);
}

const TensorEntry* SafetensorsReader::find(const std::string& name) const {
  for (auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

torch::Tensor SafetensorsReader::read(const TensorEntry& e) const {
  auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
  read_into(e, t);
  return t;
}

void SafetensorsReader::read_into(const TensorEntry& e, const torch::Tensor& dst) const {
  LCX_CHECK(dst.device().is_cpu() && dst.is_contiguous() && dst.scalar_type() == e.dtype &&
                uint64_t(dst.numel()) * dst.element_size() == e.end - e.begin,
            path_, ": tensor '", e.name, "' cannot be read into a ", dst.scalar_type(), " tensor of shape ", dst.sizes());
  if (e.end == e.begin) return;
  std::ifstream in(path_, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(data_start_ + e.begin));
  in.read(static_cast<char*>(dst.data_ptr()), static_cast<std::streamsize>(e.end - e.begin));
  LCX_CHECK(in.good(), path_, ": tensor '", e.name, "': could not read its ", e.end - e.begin, " bytes (the file changed?)");
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
