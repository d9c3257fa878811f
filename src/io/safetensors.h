// safetensors (https://github.com/huggingface/safetensors): 8-byte little-endian header length N,
// N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the raw little-endian data buffer, fully covered by the tensors with no holes.
#pragma once
#include <torch/types.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace longctx {

struct TensorFile {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;  // in file order
  std::map<std::string, std::string> metadata;

  bool has(const std::string& name) const;
  // Throws naming `origin` and the tensor when absent.
  const torch::Tensor& at(const std::string& name) const;
  std::string origin;  // file name, for error messages
};

// Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
std::string safetensors_serialize(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});
TensorFile safetensors_parse(const std::string& bytes, const std::string& origin);

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});  // atomic
TensorFile load_safetensors(const std::string& path);

// One tensor of a safetensors file as its header describes it; [begin, end) is relative to the
// data buffer.
struct TensorEntry {
  std::string name;
  torch::ScalarType dtype = torch::kFloat32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

// A safetensors file whose header is read and checked as safetensors_parse checks it (the same
// errors), and whose tensors are then read one at a time from disk: the whole file is never in
// memory, and a tensor can be read straight into its destination (a model's parameter).
class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path);
  const std::vector<TensorEntry>& entries() const { return entries_; }  // in file order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorEntry* find(const std::string& name) const;  // null when absent
  // A new CPU tensor in the file's dtype and shape.
  torch::Tensor read(const TensorEntry& e) const;
  // Reads into `dst`: a contiguous CPU tensor of e's dtype and element count.
  void read_into(const TensorEntry& e, const torch::Tensor& dst) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  uint64_t data_start_ = 0;
  std::vector<TensorEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace longctx
