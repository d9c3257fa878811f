// Data-parallel training over c10d (Gloo on loopback), run as a user runs it: `longctx train
// --nproc 2` beside `--nproc 1` with the same global batch. The loss lines agree to 1e-5
// relative, for the transformer and for a bounded mixer with weighted passkey losses and
// truncated back-propagation, and for RHO-1's selection from the whole batch; checkpoints move
// between 2 ranks and 1 both ways; a killed or stopped rank ends the run naming it.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "test_util.h"
#include "train/distributed.h"
#include "util/system.h"

using namespace longctx;
using nlohmann::json;

namespace {

std::string exe() { return (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "longctx").string(); }

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Runs `longctx ARGS`; returns the exit code, stderr in *err.
int run_longctx(const std::string& args, std::string* err = nullptr) {
  const auto e = longctx::testing::temp_dir("dp-stderr") + "/err.txt";
  const int rc = std::system((exe() + " " + args + " > /dev/null 2> " + e).c_str());
  if (err) *err = slurp(e);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

// The training lines of a run's log: step -> the field.
std::map<int64_t, double> log_field(const std::string& dir, const std::string& field) {
  std::map<int64_t, double> out;
  std::ifstream f(dir + "/log.jsonl");
  for (std::string line; std::getline(f, line);) {
    auto j = json::parse(line, nullptr, false);
    if (j.is_object() && j.contains(field)) out[j["step"].get<int64_t>()] = j[field].get<double>();
  }
  return out;
}

void expect_same_lines(const std::string& a, const std::string& b, const std::string& field, int64_t lines,
                       double tol = 1e-5) {
  auto la = log_field(a, field), lb = log_field(b, field);
  ASSERT_EQ(int64_t(la.size()), lines) << a << " " << field;
  ASSERT_EQ(la.size(), lb.size()) << b << " " << field;
  for (auto& [step, v] : la) {
    ASSERT_TRUE(lb.count(step)) << field << " at step " << step;
    EXPECT_NEAR(lb[step], v, tol * std::abs(v)) << field << " at step " << step << ": " << a << " vs " << b;
  }
}

const std::string kTransformer =
    "--config " + longctx::testing::source_dir() +
    "/configs/transformer-tiny.json --set model.n_layers=2 --set model.d_model=64 --set model.d_ff=176 "
    "--set train.steps=20 --set train.batch_size=8 --set train.grad_accum=2 --set train.log_every=1 "
    "--set train.eval_every=10 --set train.eval_batches=2 --set train.checkpoint_every=10 --set train.warmup_steps=4";

// The retrieval recipe's bounded mixer: DeltaNet memory with a window, passkey rows weighted,
// truncated back-propagation over 128-token windows.
const std::string kBounded =
    kTransformer +
    " --set 'model.mixer={\"type\":\"infini_attention\",\"segment\":32,\"update\":\"deltanet\",\"read\":\"token\","
    "\"local\":\"window\",\"chunk\":16,\"qk_conv\":4}' --set data.seq_len=320 --set train.batch_size=4 "
    "--set train.tbptt=128 --set data.passkey.fraction=0.5 --set data.passkey.min_length=120 "
    "--set data.passkey.max_length=300 --set data.passkey.answer_weight=20 --set data.passkey.eval_samples=0";

}  // namespace

TEST(DataParallel, TwoRanksLogTheOneProcessLossesForTheTransformerAndABoundedMixer) {
  ASSERT_TRUE(distributed_available()) << "this build has no c10d (libgloo-dev)";
  for (auto& [name, args] : std::vector<std::pair<std::string, std::string>>{{"transformer", kTransformer},
                                                                              {"bounded", kBounded}}) {
    const auto one = longctx::testing::temp_dir("dp-" + name + "-1"), two = longctx::testing::temp_dir("dp-" + name + "-2");
    std::string err;
    ASSERT_EQ(run_longctx("--threads 2 train " + args + " --out " + one + " --nproc 1", &err), 0) << err;
    ASSERT_EQ(run_longctx("--threads 2 train " + args + " --out " + two + " --nproc 2", &err), 0) << err;
    EXPECT_NE(err.find("data parallel: 2 ranks"), std::string::npos) << err;
    expect_same_lines(one, two, "loss", 20);
    expect_same_lines(one, two, "grad_norm", 20, 1e-4);
    expect_same_lines(one, two, "val_loss", 2);
    if (name == "bounded") expect_same_lines(one, two, "answer_loss", 20, 1e-4);
    EXPECT_EQ(log_field(two, "allreduce_wait_s").size(), 20u) << "the all-reduce time is logged";
    // One log and one set of checkpoints, written by rank 0.
    EXPECT_TRUE(std::filesystem::exists(two + "/checkpoint-20/model.safetensors"));
  }
}

TEST(DataParallel, RhoOneSelectsFromTheWholeBatchOnEveryRank) {
  // A reference model, then selective training (top 60% of excess loss) on 1 and 2 ranks: the
  // kept fraction is of the global batch, so the lines agree.
  const auto ref = longctx::testing::temp_dir("dp-ref");
  ASSERT_EQ(run_longctx("--threads 2 train " + kTransformer + " --set train.steps=10 --out " + ref), 0);
  const std::string sel = kTransformer + " --set train.selective.reference=" + ref + " --set train.selective.keep=0.6";
  const auto one = longctx::testing::temp_dir("dp-sel-1"), two = longctx::testing::temp_dir("dp-sel-2");
  std::string err;
  ASSERT_EQ(run_longctx("--threads 2 train " + sel + " --out " + one, &err), 0) << err;
  ASSERT_EQ(run_longctx("--threads 2 train " + sel + " --out " + two + " --nproc 2", &err), 0) << err;
  expect_same_lines(one, two, "loss", 20);
  expect_same_lines(one, two, "kept_fraction", 20, 1e-9);
  expect_same_lines(one, two, "kept_loss", 20, 1e-4);
  for (auto& [step, f] : log_field(two, "kept_fraction")) EXPECT_NEAR(f, 0.6, 0.01) << step;
}

TEST(DataParallel, ACheckpointOfTwoRanksResumesOnOneAndTheReverse) {
  const auto ref = longctx::testing::temp_dir("dp-resume-ref");
  ASSERT_EQ(run_longctx("--threads 2 train " + kTransformer + " --out " + ref), 0);
  for (auto [first, second] : std::vector<std::pair<int, int>>{{2, 1}, {1, 2}}) {
    const auto dir = longctx::testing::temp_dir("dp-resume-" + std::to_string(first) + std::to_string(second));
    std::string err;
    ASSERT_EQ(run_longctx("--threads 2 train " + kTransformer + " --out " + dir + " --stop-at 10 --nproc " +
                          std::to_string(first), &err), 0) << err;
    ASSERT_EQ(run_longctx("--threads 2 train " + kTransformer + " --out " + dir + " --resume --nproc " +
                          std::to_string(second), &err), 0) << err;
    expect_same_lines(ref, dir, "loss", 20);
    expect_same_lines(ref, dir, "val_loss", 2);
  }
  // Started as torchrun starts ranks: one process each, the environment naming rank and world.
  const auto tr = longctx::testing::temp_dir("dp-torchrun");
  std::string env = "WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                    std::to_string(29400 + getpid() % 500);
  std::string cmd;
  for (int r = 0; r < 2; ++r)
    cmd += "RANK=" + std::to_string(r) + " LOCAL_RANK=" + std::to_string(r) + " " + env + " " + exe() + " train " +
           kTransformer + " --out " + tr + " > /dev/null 2> " + tr + "-err" + std::to_string(r) + ".txt & p" +
           std::to_string(r) + "=$!; ";
  cmd += "wait $p0 && wait $p1";
  ASSERT_EQ(std::system(("sh -c '" + cmd + "'").c_str()), 0) << slurp(tr + "-err0.txt") << slurp(tr + "-err1.txt");
  expect_same_lines(ref, tr, "loss", 20);
}

TEST(DataParallel, AKilledOrStoppedRankEndsTheRunNamingIt) {
  for (int sig : {SIGKILL, SIGSTOP}) {
    const auto dir = longctx::testing::temp_dir("dp-fault");
    const auto err = dir + "/err.txt";
    const double t0 = now_seconds();
    pid_t pid = fork();
    if (pid == 0) {
      const auto cmd = exe() + " --threads 2 train " + kTransformer +
                       " --set train.steps=100000 --set train.checkpoint_every=0 --set train.eval_every=0 --nproc 2 "
                       "--timeout 3 --out " + dir + "/run 2> " + err + " > /dev/null";
      execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
      _exit(127);
    }
    // Wait for a few steps, then find rank 1's pid in the launcher's output.
    pid_t victim = -1;
    for (int i = 0; i < 600 && victim < 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (log_field(dir + "/run", "loss").size() < 3) continue;
      auto text = slurp(err);
      auto at = text.find("rank 1: pid ");
      if (at != std::string::npos) victim = std::atoi(text.c_str() + at + 12);
    }
    ASSERT_GT(victim, 0) << "the run did not start: " << slurp(err);
    const double t_fault = now_seconds();
    ::kill(victim, sig);
    int status = 0;
    waitpid(pid, &status, 0);
    const double waited = now_seconds() - t_fault;
    auto text = slurp(err);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << text;
    EXPECT_LT(waited, 3 + 3 + 10) << "the run must end within the collective timeout";
    if (sig == SIGKILL) {
      EXPECT_NE(text.find("rank 1 was killed by signal 9"), std::string::npos) << text;
    } else {
      // Rank 0 times out and names the rank that did not answer.
      EXPECT_NE(text.find("rank 1 "), std::string::npos) << text;
      EXPECT_NE(text.find("waits at most 3 s"), std::string::npos) << text;
      ::kill(victim, SIGKILL);
    }
    (void)t0;
  }
}

TEST(DataParallel, WhatCannotBeSplitIsRefusedByName) {
  std::string err;
  const auto dir = longctx::testing::temp_dir("dp-refuse");
  EXPECT_NE(run_longctx("--threads 2 train " + kTransformer + " --set train.batch_size=7 --nproc 2 --out " + dir, &err), 0);
  EXPECT_NE(err.find("train.batch_size 7 is not divisible by the 2 ranks"), std::string::npos) << err;
  EXPECT_NE(run_longctx("--threads 2 train " + kTransformer + " --set train.carry_fraction=0.5 --nproc 2 --out " + dir + "2", &err),
            0);
  EXPECT_NE(err.find("train.carry_fraction"), std::string::npos) << err;
  // torchrun's variables, checked by name.
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("RANK", "2", 1);
  ::setenv("MASTER_PORT", "29999", 1);
  longctx::testing::expect_error([] { DistEnv::from_environment(); }, {"RANK 2", "WORLD_SIZE 2"});
  ::setenv("RANK", "x", 1);
  longctx::testing::expect_error([] { DistEnv::from_environment(); }, {"RANK", "'x'"});
  ::unsetenv("MASTER_PORT");
  ::setenv("RANK", "1", 1);
  longctx::testing::expect_error([] { DistEnv::from_environment(); }, {"MASTER_PORT"});
  ::unsetenv("WORLD_SIZE");
  ::unsetenv("RANK");
  auto e = DistEnv::from_environment();
  EXPECT_EQ(e.world, 1);
  EXPECT_EQ(e.rank, 0);
}
