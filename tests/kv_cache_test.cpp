// KVCache: appends and a kept window without per-token copies of the whole cache.
#include <gtest/gtest.h>

#include <set>

#include "nn/state.h"

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
