#include "text/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <filesystem>

#include "io/fs.h"
#include "util/error.h"

namespace longctx {

std::vector<int64_t> ByteTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string s(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    LCX_CHECK(ids[i] >= 0 && ids[i] < 256, "byte tokenizer: id ", ids[i], " out of range [0, 256)");
    s[i] = static_cast<char>(ids[i]);
  }
  return s;
}

std::string ByteTokenizer::piece(int64_t id, bool) const { return decode({id}); }

struct SentencePieceTokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path) : impl_(new Impl) {
  blob_ = read_file(model_path);
  auto st = impl_->sp.LoadFromSerializedProto(blob_);
  LCX_CHECK(st.ok(), model_path, ": not a SentencePiece model (", st.ToString(), ")");
}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

int64_t SentencePieceTokenizer::vocab_size() const { return impl_->sp.GetPieceSize(); }

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  auto st = impl_->sp.Encode(text, &ids);
  LCX_CHECK(st.ok(), "sentencepiece encode: ", st.ToString());
  return {ids.begin(), ids.end()};
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> v(ids.begin(), ids.end());
  std::string out;
  auto st = impl_->sp.Decode(v, &out);
  LCX_CHECK(st.ok(), "sentencepiece decode: ", st.ToString());
  return out;
}

std::string SentencePieceTokenizer::piece(int64_t id, bool first) const {
  std::string p = impl_->sp.IdToPiece(static_cast<int>(id));
  if (impl_->sp.IsControl(id) || impl_->sp.IsUnknown(id)) return impl_->sp.IsUnknown(id) ? "?" : "";
  if (impl_->sp.IsByte(id)) return decode({id});
  std::string out;
  const std::string sep = "\xe2\x96\x81";  // U+2581, SentencePiece's word boundary
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, 3, sep) == 0) {
      if (!(first && out.empty() && i == 0)) out += ' ';
      i += 3;
    } else {
      out += p[i++];
    }
  }
  return out;
}

void SentencePieceTokenizer::save(const std::string& dir) const {
  write_file_atomic(dir + "/tokenizer.model", blob_);
}

void SentencePieceTokenizer::train(const std::vector<std::string>& texts, const std::string& prefix,
                                   int vocab_size, const std::string& model_type) {
  namespace fs = std::filesystem;
  LCX_CHECK(vocab_size >= 64, "tokenizer train: vocab size ", vocab_size, " must be >= 64");
  std::string input = prefix + ".train.txt";
  std::string all;
  for (auto& t : texts) {
    all += t;
    all += '\n';
  }
  write_file_atomic(input, all);
  std::string args = "--input=" + input + " --model_prefix=" + prefix +
                     " --vocab_size=" + std::to_string(vocab_size) + " --model_type=" + model_type +
                     " --character_coverage=1.0 --byte_fallback=true --max_sentence_length=100000" +
                     " --input_sentence_size=2000000 --shuffle_input_sentence=true" +
                     " --num_threads=2 --minloglevel=2 --split_digits=true --remove_extra_whitespaces=false";
  auto st = sentencepiece::SentencePieceTrainer::Train(args);
  fs::remove(input);
  LCX_CHECK(st.ok(), "tokenizer train: ", st.ToString());
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& type, const std::string& dir) {
  if (type == "byte") return std::make_unique<ByteTokenizer>();
  if (type == "sentencepiece") return std::make_unique<SentencePieceTokenizer>(dir + "/tokenizer.model");
  fail("unknown tokenizer type '", type, "' (expected byte or sentencepiece)");
}

}  // namespace longctx
