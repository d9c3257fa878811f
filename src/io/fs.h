// Files: whole-file reads, atomic writes (temp file, fsync, rename, fsync of the folder).
#pragma once
#include <string>

namespace longctx {

std::string read_file(const std::string& path);
void write_file_atomic(const std::string& path, const std::string& bytes);
void fsync_dir(const std::string& dir);
// Renames a fully written temporary folder into place and fsyncs the parent.
void rename_dir_atomic(const std::string& from, const std::string& to);

}  // namespace longctx
