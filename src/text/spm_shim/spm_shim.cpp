// A C interface to SentencePiece, built as its own shared library and loaded with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND) by text/tokenizer.cpp. Debian's libsentencepiece carries a
// private protobuf 3.14 whose symbols clash with the protobuf 3.21 libtorch loads; isolated this
// way, neither sees the other. This file must not include torch headers.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace {
void set_err(char* err, size_t n, const std::string& m) {
  if (err && n) {
    std::strncpy(err, m.c_str(), n - 1);
    err[n - 1] = '\0';
  }
}
}  // namespace

extern "C" {

void* lcx_spm_load(const char* blob, size_t n, char* err, size_t errn) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  auto st = sp->LoadFromSerializedProto(std::string(blob, n));
  if (!st.ok()) {
    set_err(err, errn, st.ToString());
    delete sp;
    return nullptr;
  }
  return sp;
}

void lcx_spm_destroy(void* h) { delete static_cast<sentencepiece::SentencePieceProcessor*>(h); }
void lcx_spm_free(void* p) { std::free(p); }
int lcx_spm_size(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h)->GetPieceSize(); }

int lcx_spm_encode(void* h, const char* text, size_t n, int** out, size_t* outn, char* err, size_t errn) {
  std::vector<int> ids;
  auto st = static_cast<sentencepiece::SentencePieceProcessor*>(h)->Encode(std::string(text, n), &ids);
  if (!st.ok()) return set_err(err, errn, st.ToString()), 1;
  *out = static_cast<int*>(std::malloc(sizeof(int) * (ids.size() + 1)));
  std::memcpy(*out, ids.data(), sizeof(int) * ids.size());
  *outn = ids.size();
  return 0;
}

int lcx_spm_decode(void* h, const int* ids, size_t n, char** out, size_t* outn, char* err, size_t errn) {
  std::string s;
  auto st = static_cast<sentencepiece::SentencePieceProcessor*>(h)->Decode(std::vector<int>(ids, ids + n), &s);
  if (!st.ok()) return set_err(err, errn, st.ToString()), 1;
  *out = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(*out, s.data(), s.size());
  *outn = s.size();
  return 0;
}

// flags: 1 control, 2 unknown, 4 byte. Returns the piece (malloc'd, NUL-terminated).
char* lcx_spm_piece(void* h, int id, int* flags) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  *flags = (sp->IsControl(id) ? 1 : 0) | (sp->IsUnknown(id) ? 2 : 0) | (sp->IsByte(id) ? 4 : 0);
  std::string p = sp->IdToPiece(id);
  char* out = static_cast<char*>(std::malloc(p.size() + 1));
  std::memcpy(out, p.c_str(), p.size() + 1);
  return out;
}

int lcx_spm_train(const char* args, char* err, size_t errn) {
  auto st = sentencepiece::SentencePieceTrainer::Train(args);
  if (!st.ok()) return set_err(err, errn, st.ToString()), 1;
  return 0;
}

}  // extern "C"
