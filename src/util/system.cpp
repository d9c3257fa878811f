#include "util/system.h"

#include <malloc.h>

#include <link.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <ATen/Parallel.h>

namespace longctx {

int set_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  at::set_num_threads(n);
  return n;
}

void tune_allocator() {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

void tune_allocator_for_training() {
  tune_allocator();
#ifdef __GLIBC__
  mallopt(M_MMAP_MAX, 0);
#endif
}

static int collect_blas(struct dl_phdr_info* info, size_t, void* out) {
  if (!info->dlpi_name || !*info->dlpi_name) return 0;
  std::string name = info->dlpi_name;
  auto base = std::filesystem::path(name).filename().string();
  if (base.find("blas") == std::string::npos) return 0;
  std::error_code ec;
  auto real = std::filesystem::canonical(name, ec);
  auto* s = static_cast<std::string*>(out);
  if (!s->empty()) *s += ";";
  *s += ec ? name : real.string();
  return 0;
}

std::string loaded_blas() {
  std::string s;
  dl_iterate_phdr(collect_blas, &s);
  return s;
}

std::string blas_warning() {
  std::string b = loaded_blas();
  if (b.find("openblas") != std::string::npos || b.find("mkl") != std::string::npos ||
      b.find("blis") != std::string::npos)
    return "";
  return "warning: libtorch is not using an optimised BLAS (loaded: " + (b.empty() ? "none" : b) +
         "); matrix products will be ~20x slower. Install libopenblas0-pthread.";
}

static int64_t status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  size_t n = std::string(key).size();
  while (std::getline(f, line))
    if (line.compare(0, n, key) == 0) return std::atoll(line.c_str() + n + 1);
  return 0;
}
int64_t peak_rss_bytes() { return status_kb("VmHWM") * 1024; }
int64_t current_rss_bytes() { return status_kb("VmRSS") * 1024; }

bool reset_peak_rss() {
  FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (!f) return false;
  bool ok = std::fputs("5", f) >= 0;
  ok = (std::fclose(f) == 0) && ok;
  return ok;
}

int64_t available_memory_bytes() {
  FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  long long kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "MemAvailable: %lld kB", &kb) == 1) break;
  std::fclose(f);
  return kb * 1024;
}

std::string human_bytes(double b) {
  const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) b /= 1024, ++i;
  char buf[32];
  std::snprintf(buf, sizeof buf, i == 0 ? "%.0f %s" : "%.2f %s", b, u[i]);
  return buf;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), start_(now_seconds()), tty_(isatty(2)) {}

void Progress::update(int64_t done, const std::string& suffix) {
  double frac = total_ > 0 ? double(done) / total_ : 1.0;
  double t = now_seconds();
  double el = t - start_;
  double eta = frac > 0 ? el * (1 - frac) / frac : 0;
  if (tty_) {
    if (t - last_draw_ < 0.1 && done < total_) return;
    last_draw_ = t;
    int w = 30, f = static_cast<int>(frac * w);
    std::fprintf(stderr, "\r%s [%s%s] %3d%% %lld/%lld %.0fs<%.0fs %s\033[K", label_.c_str(),
                 std::string(f, '#').c_str(), std::string(w - f, '.').c_str(), int(frac * 100),
                 (long long)done, (long long)total_, el, eta, suffix.c_str());
  } else {
    int dec = static_cast<int>(frac * 10);
    if (dec == last_decile_) return;
    last_decile_ = dec;
    std::fprintf(stderr, "%s %3d%% %lld/%lld %.0fs %s\n", label_.c_str(), int(frac * 100),
                 (long long)done, (long long)total_, el, suffix.c_str());
  }
  std::fflush(stderr);
}

void Progress::finish(const std::string& suffix) {
  last_decile_ = -1;
  last_draw_ = 0;
  update(total_, suffix);
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace longctx
