// CPU tensors in an anonymous memory mapping of their own, grown in place with mremap.
//
// Growing a buffer by copying holds the old and the new contents at once: a cache that doubles
// peaks at up to twice its size just when it is largest (full attention at 64K tokens: 906 MiB
// resident for 512 MiB of keys and values). mremap moves the pages instead: nothing is copied,
// the old contents are never resident twice, and pages never touched (the spare capacity) cost
// no memory. Every tensor sharing the storage (views, a rollback snapshot) keeps reading the
// same elements at the new address, because the storage's pointer is swapped, not the tensors'.
//
// On systems without mremap (not Linux) mapped_empty is torch::empty and grow_mapped refuses.
#pragma once
#include <torch/types.h>

#include <cstddef>

namespace longctx {

// An uninitialised (zero-filled, as fresh pages are) CPU tensor with the given sizes and
// strides, in its own mapping; the mapping is released with the storage.
torch::Tensor mapped_empty(at::IntArrayRef sizes, at::IntArrayRef strides, torch::ScalarType dtype);

// Whether t's storage is a mapping made by mapped_empty.
bool is_mapped(const torch::Tensor& t);

// Grows t's storage to at least `bytes` in place: existing bytes keep their values, every tensor
// on the storage sees the new address. False (nothing changed) when the storage is not a
// mapping of mapped_empty's or the system refuses; the caller then copies.
bool grow_mapped(const torch::Tensor& t, size_t bytes);

}  // namespace longctx
