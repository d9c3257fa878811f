#include "nn/mapped.h"

#include <c10/core/StorageImpl.h>

#include <cerrno>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "util/error.h"

namespace longctx {

#if defined(__linux__)
namespace {
struct Mapping {
  void* p;
  size_t bytes;
};

void unmap(void* ctx) {
  auto* m = static_cast<Mapping*>(ctx);
  munmap(m->p, m->bytes);
  delete m;
}

// Mappings this large ask for transparent huge pages: a long cache is read head by head, 256
// bytes of every row, and with 4 KiB pages every few rows is a TLB miss. Smaller ones keep 4 KiB
// pages, so a short cache (a server's many sessions, a 16K-token prompt of a small model) is not
// rounded up to 2 MiB per tensor (+17 MB of peak RSS in a 16K passkey evaluation at 8 MiB).
constexpr size_t kHugeFrom = size_t(32) << 20;

void advise(void* p, size_t bytes) {
#ifdef MADV_HUGEPAGE
  if (bytes >= kHugeFrom) madvise(p, bytes, MADV_HUGEPAGE);
#endif
}

size_t whole_pages(size_t bytes) {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return (std::max<size_t>(bytes, 1) + page - 1) / page * page;
}

Mapping* mapping_of(const torch::Tensor& t) {
  if (!t.defined() || !t.is_cpu() || !t.has_storage()) return nullptr;
  const c10::StorageImpl* impl = t.storage().unsafeGetStorageImpl();
  return impl->data_ptr().cast_context<Mapping>(&unmap);
}
}  // namespace

torch::Tensor mapped_empty(at::IntArrayRef sizes, at::IntArrayRef strides, torch::ScalarType dtype) {
  LCX_CHECK(sizes.size() == strides.size(), "mapped_empty: ", sizes.size(), " sizes, ", strides.size(), " strides");
  int64_t last = 0;  // the furthest element, in elements
  for (size_t i = 0; i < sizes.size(); ++i) {
    LCX_CHECK(sizes[i] >= 0 && strides[i] >= 0, "mapped_empty: negative size or stride");
    if (sizes[i] == 0) last = -1;
    if (last >= 0) last += (sizes[i] - 1) * strides[i];
  }
  const size_t bytes = whole_pages(static_cast<size_t>(last + 1) * c10::elementSize(dtype));
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  LCX_CHECK(p != MAP_FAILED, "mapped_empty: mapping ", bytes, " bytes failed: ", std::strerror(errno));
  advise(p, bytes);
  auto* m = new Mapping{p, bytes};
  c10::Storage storage(c10::Storage::use_byte_size_t(), bytes, c10::DataPtr(p, m, &unmap, c10::Device(c10::kCPU)),
                       /*allocator=*/nullptr, /*resizable=*/false);
  return torch::empty({0}, torch::dtype(dtype)).set_(storage, 0, sizes, strides);
}

bool is_mapped(const torch::Tensor& t) { return mapping_of(t) != nullptr; }

bool grow_mapped(const torch::Tensor& t, size_t bytes) {
  Mapping* m = mapping_of(t);
  if (!m) return false;
  bytes = whole_pages(bytes);
  if (bytes <= m->bytes) return true;
  void* p = mremap(m->p, m->bytes, bytes, MREMAP_MAYMOVE);
  if (p == MAP_FAILED) return false;
  advise(p, bytes);
  m->p = p;
  m->bytes = bytes;
  c10::StorageImpl* impl = t.storage().unsafeGetStorageImpl();
  // The old DataPtr names the same Mapping: release it without running the deleter.
  impl->set_data_ptr(c10::DataPtr(p, m, &unmap, c10::Device(c10::kCPU))).release_context();
  impl->set_nbytes(bytes);
  return true;
}

#else

torch::Tensor mapped_empty(at::IntArrayRef sizes, at::IntArrayRef strides, torch::ScalarType dtype) {
  return torch::empty_strided(sizes, strides, torch::dtype(dtype));
}
bool is_mapped(const torch::Tensor&) { return false; }
bool grow_mapped(const torch::Tensor&, size_t) { return false; }

#endif

}  // namespace longctx
