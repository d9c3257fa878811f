// Corpora fetched into data/ by scripts/fetch_data.sh, as lists of documents; the split by
// document; batches of fixed-length sequences drawn deterministically from (seed, step).
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace longctx {

struct Document {
  std::string name;  // e.g. "sotu/1790_george_washington_n"
  std::string text;
};

// The data folder: $LONGCTX_DATA, else ./data (when fetched there), else the data/ folder of
// the source tree the binary was built from.
std::string data_dir();

// Corpus names:
//   sotu         233 State of the Union addresses, one document each
//   brown        Brown corpus, 500 documents, tags stripped
//   moby-dick    the novel as one document (evaluation book: never train on it)
//   moby-dick-chapters   one document per chapter
//   bible        the King James Bible as one document (evaluation book)
//   file:PATH    any UTF-8 text file as one document
std::vector<Document> load_corpus(const std::string& name);
std::vector<std::string> corpus_names();

// Holds out `val_docs` documents chosen by a seeded shuffle of the sorted names.
struct Split {
  std::vector<std::string> train, val;  // document names
  std::vector<std::string> ref;         // held out for a reference model (train/data.h), else empty
};
Split split_by_document(const std::vector<Document>& docs, int64_t val_docs, uint64_t seed);

// A token stream: the documents' tokens joined with a separator, plus document boundaries.
struct TokenStream {
  std::vector<int64_t> tokens;
  // 1 where a token is a separator or the first token of a document: predicting it crosses a
  // document boundary (selective training leaves such targets out of its ranking).
  std::vector<uint8_t> boundary;
  int64_t bytes = 0;  // UTF-8 bytes of the text behind the tokens (for bits per byte)
};

// Random windows of T+1 tokens; batch (step, micro) depends only on (seed, step, micro), so a
// resumed run sees the same data as an uninterrupted one.
class BatchSampler {
 public:
  BatchSampler(const TokenStream& stream, int64_t batch, int64_t seq_len, uint64_t seed);
  // Returns (inputs [B, T], targets [B, T]) as int64.
  std::pair<torch::Tensor, torch::Tensor> get(int64_t step, int64_t micro) const;
  // [B, T] bool: the targets of get(step, micro) that lie on a document boundary (all false
  // when the stream has no boundaries recorded).
  torch::Tensor boundary(int64_t step, int64_t micro) const;

 private:
  const TokenStream& s_;
  int64_t b_, t_;
  uint64_t seed_;
};

// Non-overlapping windows of T+1 tokens (consecutive windows share one token) over the stream.
// With max_batches < all, the windows taken are spread evenly over the whole stream (so a
// periodic evaluation sees every held-out document, not the first ones); 0 = all windows.
std::vector<std::pair<torch::Tensor, torch::Tensor>> sequential_batches(const TokenStream& s, int64_t batch,
                                                                        int64_t seq_len, int64_t max_batches);

uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c = 0);

}  // namespace longctx
