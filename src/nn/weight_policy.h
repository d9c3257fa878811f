// How weights read from a file are held and multiplied (nn/linear.h), in a header without torch.
#pragma once

namespace longctx {

// Process-wide; the CLI's --weights and --matmul-precision set it, as
// torch.set_float32_matmul_precision does in Python.
struct WeightPolicy {
  // F16 / BF16 matrices of Linear and Embedding layers stay in that dtype when a model is read
  // for inference (load_pretrained); false widens them to float32 at load.
  bool keep_stored = true;
  // A BF16 matrix multiplies in BF16 (activations rounded to BF16, float32 accumulation: fast on
  // CPUs with AVX512-BF16 or AMX, not exact). False widens it to float32 per use: the result is
  // that of the float32 model, bit for bit.
  bool bf16_matmul = false;
};
WeightPolicy& weight_policy();

}  // namespace longctx
