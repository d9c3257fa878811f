// Machine facts: threads, which BLAS is loaded, process memory, a progress bar.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace longctx {

// Sets libtorch's intra-op threads; n <= 0 means every core of this machine.
int set_threads(int n);

// Keeps freed tensor memory in the heap (glibc: mmap threshold 32 MiB, no trimming below 1 GiB)
// instead of returning it to the kernel and faulting it back on the next op. Streaming a long
// prompt in batches spent a third of its time in page faults without it.
void tune_allocator();
// For training, on top of tune_allocator: no allocation gets a mapping of its own (glibc
// M_MMAP_MAX 0), so the activations above 32 MiB (q/k/v and the SwiGLU hidden of 8 x 2048
// tokens) reuse the heap pages the previous step freed instead of being mapped and faulted in
// afresh on every step: bench_train's page faults 1.98M -> 0.69M, +4-10% tokens/s, +4% peak RSS.
void tune_allocator_for_training();

// The BLAS library libtorch is using, resolved through symlinks (e.g. ".../openblas-pthread/...").
std::string loaded_blas();
// Empty when an optimised BLAS is loaded; otherwise a warning to print.
std::string blas_warning();

int64_t peak_rss_bytes();     // VmHWM of this process
int64_t current_rss_bytes();  // VmRSS of this process
// Resets VmHWM to the current RSS (Linux /proc/self/clear_refs "5"), so the peak of one phase
// can be read on its own. Returns false where the kernel refuses.
bool reset_peak_rss();
// MemAvailable of the machine (bytes), 0 when unknown.
int64_t available_memory_bytes();
std::string human_bytes(double bytes);

double now_seconds();

// A progress bar on stderr; redraws in place on a terminal, prints every ~10% otherwise.
class Progress {
 public:
  Progress(std::string label, int64_t total);
  void update(int64_t done, const std::string& suffix = "");
  void finish(const std::string& suffix = "");

 private:
  std::string label_;
  int64_t total_;
  double start_;
  int last_decile_ = -1;
  double last_draw_ = 0;
  bool tty_;
};

}  // namespace longctx
