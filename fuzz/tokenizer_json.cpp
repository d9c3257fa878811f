// libFuzzer target: tokenizer.json text -> BpeTokenizer, then encode and decode with it. Any
// input must end in a tokenizer or one longctx error; crashes, leaks and hangs are bugs.
//   make fuzz     (clang's -fsanitize=fuzzer,address; runs FUZZ_RUNS executions per target)
#include <cstddef>
#include <cstdint>
#include <string>

#include "text/bpe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    auto t = longctx::BpeTokenizer::from_string(text, "fuzz.json");
    for (const std::string s : {std::string("Hello, world! 12345 it's\n\n  x"), text.substr(0, 256)}) {
      auto ids = t->encode(s);
      t->decode(ids);
    }
  } catch (const std::exception&) {
    // one clear error: expected for most inputs
  }
  return 0;
}
