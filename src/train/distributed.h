// Data-parallel training over PyTorch's c10d (Gloo on CPU; NCCL where libtorch has CUDA): the
// torchrun environment, a process group, and gradients all-reduced in buckets while the backward
// pass still runs (the buckets complete as autograd reaches their parameters, and each goes out
// in a fixed order, the same on every rank). Without c10d in the libtorch at hand (built without
// USE_C10D_GLOO) a world of one still works and a larger one is refused by name.
#pragma once
#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace longctx {

// torchrun's variables: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
// All absent: a world of one. Malformed or inconsistent values are refused, naming the variable.
struct DistEnv {
  int rank = 0, world = 1, local_rank = 0, local_world = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  static DistEnv from_environment();
};

// True when this build can form a process group of more than one rank.
bool distributed_available();

class ProcessGroup;  // c10d's, behind a pointer so this header stays light

class Dist {
 public:
  // Joins the group (rank 0 hosts the TCPStore at master_addr:master_port). backend: "gloo",
  // "nccl" or "" (gloo on CPU, nccl on CUDA). `timeout`: how long one collective may wait for the
  // others before the run ends with an error naming the step and the ranks.
  Dist(const DistEnv& env, const std::string& backend, std::chrono::milliseconds timeout);
  ~Dist();
  int rank() const { return env_.rank; }
  int world() const { return env_.world; }
  const DistEnv& env() const { return env_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // In place, summed over ranks; `what` names the collective in errors.
  void allreduce_sum(torch::Tensor& t, const std::string& what);
  // Every rank's tensor (same shape everywhere), in rank order, concatenated along dim 0.
  torch::Tensor allgather_cat(const torch::Tensor& t, const std::string& what);
  // Rank `root`'s tensor into every rank's `t` (same shape).
  void broadcast(torch::Tensor& t, int root, const std::string& what);
  // Waits for every rank; `timeout` overrides the group's (rank 0's evaluations).
  void barrier(const std::string& what, std::chrono::milliseconds timeout = std::chrono::milliseconds(0));

  // Records in the group's store where this rank is (the step, and each collective it enters),
  // so that a failed collective can name the ranks that were behind: the ones that died or hang.
  void mark(int64_t step);

  struct Work;  // an all-reduce in flight
  std::shared_ptr<Work> allreduce_async(torch::Tensor& t);
  void wait(const std::shared_ptr<Work>& w, const std::string& what);

 private:
  [[noreturn]] void failed(const std::string& what, const std::exception& e) const;
  void arrive(const std::string& what);
  std::string laggards() const;
  DistEnv env_;
  std::chrono::milliseconds timeout_;
  int64_t step_ = -1, seq_ = 0;
  std::shared_ptr<void> store_, pg_;  // c10d::Store, c10d::ProcessGroup (held as intrusive pointers)
};

// The bucketed all-reduce of gradients, overlapped with the backward pass: post-hooks on every
// parameter's gradient accumulator mark it ready during an armed backward; a bucket (about
// `bucket_bytes` of gradients, parameters in reverse order of registration, as autograd reaches
// them) is flattened and sent as soon as it and every bucket before it are ready. finish() sends
// what is left (parameters that got no gradient count as zeros), waits, and writes the sums back.
class GradReducer {
 public:
  GradReducer(Dist& dist, const std::vector<torch::Tensor>& params, int64_t bucket_bytes = 1 << 20);
  ~GradReducer();
  void arm();  // the next backward is the step's last: reduce as it runs
  void finish(int64_t step);
  int64_t buckets() const { return int64_t(buckets_.size()); }
  double seconds_waiting() const { return wait_s_; }  // in finish(): the all-reduce time not hidden

 private:
  void ready(size_t param);
  void launch_ready();
  Dist& dist_;
  std::vector<torch::Tensor> params_;
  std::vector<std::vector<size_t>> buckets_;  // parameter indices
  std::vector<size_t> bucket_of_;
  std::vector<int64_t> pending_;              // per bucket: parameters not yet ready
  std::vector<torch::Tensor> flat_;
  std::vector<std::shared_ptr<Dist::Work>> work_;
  size_t next_ = 0;                           // the next bucket to send
  bool armed_ = false;
  double wait_s_ = 0;
  std::vector<std::shared_ptr<void>> hooks_;  // keeps the accumulators (and their hooks) alive
};

// `longctx train --nproc N`: runs this binary N times as ranks 0..N-1 of one machine (torchrun's
// variables set, `threads` each), forwards their output, and waits. The first rank to fail ends
// the others; returns 0, or an error naming the rank and how it ended.
int launch_local_ranks(int nproc, int threads, const std::vector<std::string>& argv, int master_port);

}  // namespace longctx
