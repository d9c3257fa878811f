// Which BLAS the executables load (CMakeLists.txt): OpenBLAS's OpenMP build where it is installed,
// so GEMM threads and libtorch's OpenMP threads are one pool.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "util/system.h"

TEST(Blas, TheOpenMpBuildOfOpenBlasIsLoadedWhereInstalled) {
  torch::mm(torch::randn({64, 64}), torch::randn({64, 64}));  // the BLAS is loaded by now
  const auto blas = longctx::loaded_blas();
  EXPECT_EQ(longctx::blas_warning(), "") << blas;
  if (!std::filesystem::exists("/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3"))
    GTEST_SKIP() << "libopenblas0-openmp is not installed; loaded: " << blas;
  EXPECT_NE(blas.find("openblas-openmp"), std::string::npos) << "loaded: " << blas;
  EXPECT_EQ(blas.find("openblas-pthread"), std::string::npos) << "both builds loaded: " << blas;
}
