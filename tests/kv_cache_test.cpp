// KVCache: appends and a kept window without per-token copies of the whole cache.
#include <gtest/gtest.h>

#include <set>

#include "nn/mapped.h"
#include "nn/state.h"
#include "util/system.h"

using namespace longctx;

TEST(KVCache, SlidingWindowDecodeHoldsTheLastRowsAndCopiesThemOncePerWindow) {
  torch::manual_seed(11);
  torch::NoGradGuard ng;
  const int64_t window = 50, steps = 1000;
  State s;
  std::vector<torch::Tensor> all_k, all_v;
  std::set<const void*> buffers;
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t add = t == 0 ? 7 : 1;  // a prompt, then one token per call
    auto k = torch::randn({2, 3, add, 4}), v = torch::randn({2, 3, add, 4});
    all_k.push_back(k), all_v.push_back(v);
    auto kv = KVCache::append(s, "", k, v);
    auto want_k = torch::cat(all_k, 2), want_v = torch::cat(all_v, 2);
    const int64_t seen = KVCache::length(s, "");
    ASSERT_TRUE(torch::equal(kv.first, want_k.narrow(2, want_k.size(2) - seen, seen)));
    ASSERT_TRUE(torch::equal(kv.second, want_v.narrow(2, want_v.size(2) - seen, seen)));
    KVCache::keep_last(s, "", window - 1);
    buffers.insert(s.at("k").storage().data());
    ASSERT_EQ(KVCache::length(s, ""), std::min<int64_t>(window - 1, want_k.size(2)));
    ASSERT_TRUE(torch::equal(s.at("k"), want_k.narrow(2, want_k.size(2) - s.at("k").size(2), s.at("k").size(2))));
  }
  // A copy of the window every ~window tokens: 1000 steps over a 50-token window need ~20-40
  // buffers, not 1000.
  EXPECT_LE(buffers.size(), size_t(2 * steps / window + 2));
  EXPECT_LE(s.at("k").storage().nbytes(), size_t(2 * 3 * 4 * 4 * 2 * window + 64 * 2 * 3 * 4 * 4));
}

TEST(KVCache, ASnapshotTakenBeforeAnAppendStillReadsWhatItHeld) {
  torch::NoGradGuard ng;
  State s;
  KVCache::append(s, "", torch::randn({1, 2, 5, 4}), torch::randn({1, 2, 5, 4}));
  KVCache::append(s, "", torch::randn({1, 2, 1, 4}), torch::randn({1, 2, 1, 4}));  // now in a buffer with room
  KVCache::keep_last(s, "", 4);
  auto snapshot = s.at("k");
  auto before = snapshot.clone();
  for (int i = 0; i < 20; ++i) {
    KVCache::append(s, "", torch::randn({1, 2, 1, 4}), torch::randn({1, 2, 1, 4}));
    KVCache::keep_last(s, "", 4);
  }
  EXPECT_TRUE(torch::equal(snapshot, before));
}

TEST(KVCache, KeepLastOfTheCallersTensorCopiesInsteadOfKeepingItAlive) {
  torch::NoGradGuard ng;
  State s;
  auto big = torch::randn({1, 100, 2, 4}).transpose(1, 2);  // [1, 2, 100, 4], strided like a projection
  KVCache::append(s, "", big, big);
  KVCache::keep_last(s, "", 3);
  EXPECT_NE(s.at("k").storage().data(), big.storage().data());
  EXPECT_EQ(s.at("k").storage().nbytes(), size_t(1 * 2 * 3 * 4 * 4));
}

TEST(KVCache, AGrowingCacheStaysInOneStorageAndHoldsEveryRow) {
  torch::manual_seed(12);
  torch::NoGradGuard ng;
  State s;
  std::vector<torch::Tensor> all_k, all_v;
  const c10::StorageImpl* first_storage = nullptr;
  for (int t = 0; t < 300; ++t) {
    const int64_t add = 1 + (t * 7) % 13;
    auto k = torch::randn({2, 3, add, 5}), v = torch::randn({2, 3, add, 5});
    all_k.push_back(k), all_v.push_back(v);
    auto kv = KVCache::append(s, "", k, v);
    ASSERT_TRUE(torch::equal(kv.first, torch::cat(all_k, 2)));
    ASSERT_TRUE(torch::equal(kv.second, torch::cat(all_v, 2)));
    if (t == 1) first_storage = s.at("k").storage().unsafeGetStorageImpl();
  }
  // From the second append on, the keys live in one mapping grown in place (no copies).
  EXPECT_TRUE(is_mapped(s.at("k")));
  EXPECT_EQ(s.at("k").storage().unsafeGetStorageImpl(), first_storage);
}

TEST(KVCache, ASnapshotOfAGrowingCacheReadsItsRowsAfterTheBufferMoved) {
  torch::NoGradGuard ng;
  State s;
  KVCache::append(s, "", torch::randn({1, 4, 8, 16}), torch::randn({1, 4, 8, 16}));
  KVCache::append(s, "", torch::randn({1, 4, 8, 16}), torch::randn({1, 4, 8, 16}));
  auto snapshot = s.at("k");
  auto before = snapshot.clone();
  const void* address = snapshot.data_ptr();
  for (int i = 0; i < 40; ++i) KVCache::append(s, "", torch::randn({1, 4, 512, 16}), torch::randn({1, 4, 512, 16}));
  EXPECT_TRUE(torch::equal(snapshot, before));
  EXPECT_TRUE(torch::equal(s.at("k").narrow(2, 0, 16), before));
  // 40 x 128 KiB of growth moved the mapping at least once; the snapshot followed it.
  EXPECT_NE(snapshot.data_ptr(), address);
}

TEST(MappedBuffer, GrowingKeepsTheBytesAndEveryViewSeesTheNewAddress) {
  auto t = mapped_empty({1000, 3}, {3, 1}, torch::kFloat64);
  ASSERT_TRUE(is_mapped(t));
  t.copy_(torch::randn({1000, 3}, torch::kFloat64));
  auto want = t.clone();
  auto view = t.narrow(0, 500, 10);
  ASSERT_TRUE(grow_mapped(t, 64 << 20));
  EXPECT_GE(t.storage().nbytes(), size_t(64 << 20));
  EXPECT_TRUE(torch::equal(t, want));
  EXPECT_TRUE(torch::equal(view, want.narrow(0, 500, 10)));
  EXPECT_FALSE(grow_mapped(torch::randn({4}), 1 << 20));  // not a mapping: refused, unchanged
  EXPECT_FALSE(is_mapped(torch::randn({4})));
}

// Full attention's cache is the state: peak memory while it grows must be the cache plus a
// constant, not the old and the new buffer at once (up to 2x the cache with copies).
TEST(KVCache, PeakMemoryOfAGrowingCacheIsTheCachePlusAConstant) {
  torch::NoGradGuard ng;
  auto k = torch::randn({1, 4, 512, 64}), v = torch::randn({1, 4, 512, 64});
  State s;
  KVCache::append(s, "", k, v);
  KVCache::append(s, "", k, v);
  if (!reset_peak_rss()) GTEST_SKIP() << "the kernel does not reset VmHWM";
  const int64_t rss0 = current_rss_bytes();
  // The buffer doubles when 97,792 rows are needed (2,048 -> 5,120 -> ... -> 97,280 rows); stopping
  // just after that is where a copy would hold both buffers, ~2x the cache.
  const int64_t chunks = 191;
  for (int64_t i = 2; i < chunks; ++i) KVCache::append(s, "", k, v);
  const int64_t kv_bytes = 2 * chunks * k.numel() * 4;  // 191 MiB
  const int64_t grown = peak_rss_bytes() - rss0;
  EXPECT_LE(grown, kv_bytes + (24 << 20)) << "peak grew by " << grown << " bytes for " << kv_bytes << " of cache";
  EXPECT_GE(grown, kv_bytes * 9 / 10);  // the measure itself works
}
