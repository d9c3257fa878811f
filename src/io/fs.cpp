#include "io/fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace fs = std::filesystem;

namespace longctx {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LCX_CHECK(f.good(), path, ": cannot open (", std::strerror(errno), ")");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  fs::path p(path);
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  LCX_CHECK(fd >= 0, tmp, ": cannot create (", std::strerror(errno), ")");
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail(tmp, ": write failed (", std::strerror(e), ")");
    }
    off += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    fail(tmp, ": fsync/close failed (", std::strerror(errno), ")");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    fail(path, ": rename failed (", std::strerror(e), ")");
  }
  fsync_dir(p.parent_path().string());
}

void rename_dir_atomic(const std::string& from, const std::string& to) {
  LCX_CHECK(::rename(from.c_str(), to.c_str()) == 0, "cannot rename ", from, " to ", to, " (",
            std::strerror(errno), ")");
  fsync_dir(fs::path(to).parent_path().string());
}

}  // namespace longctx
