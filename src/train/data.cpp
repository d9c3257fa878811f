#include "train/data.h"

#include <set>

namespace longctx {

nlohmann::json RunData::split_json() const {
  return {{"train", split.train}, {"val", split.val}, {"train_tokens", train.tokens.size()},
          {"val_tokens", val.tokens.size()}, {"train_bytes", train.bytes}, {"val_bytes", val.bytes}};
}

TokenStream tokenize_documents(const std::vector<const Document*>& docs, const Tokenizer& tok,
                               const std::string& separator) {
  TokenStream s;
  auto sep = tok.encode(separator);
  for (auto* d : docs) {
    auto ids = tok.encode(d->text);
    s.tokens.insert(s.tokens.end(), ids.begin(), ids.end());
    s.tokens.insert(s.tokens.end(), sep.begin(), sep.end());
    s.bytes += static_cast<int64_t>(d->text.size() + separator.size());
  }
  return s;
}

RunData prepare_data(const DataConfig& d, const Tokenizer& tok) {
  RunData r;
  std::vector<Document> all;
  std::vector<const Document*> tr, va;
  std::vector<std::vector<Document>> corpora;
  for (auto& name : d.train) corpora.push_back(load_corpus(name));
  r.split = split_by_document(corpora[0], d.val_docs, d.split_seed);
  std::set<std::string> val(r.split.val.begin(), r.split.val.end());
  for (size_t c = 0; c < corpora.size(); ++c)
    for (auto& doc : corpora[c]) {
      if (c == 0 && val.count(doc.name)) va.push_back(&doc);
      else tr.push_back(&doc);
    }
  for (size_t c = 1; c < corpora.size(); ++c)
    for (auto& doc : corpora[c]) r.split.train.push_back(doc.name);
  r.train = tokenize_documents(tr, tok, d.separator);
  r.val = tokenize_documents(va, tok, d.separator);
  return r;
}

}  // namespace longctx
