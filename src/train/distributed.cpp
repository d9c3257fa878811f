#include "train/distributed.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>

#include "util/error.h"
#include "util/system.h"

#if defined(LONGCTX_HAVE_C10D)
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace longctx {

namespace {

// A variable's integer value, or `def` when it is unset; anything else is refused by name.
int env_int(const char* name, int def, int lo) {
  const char* v = std::getenv(name);
  if (!v || !*v) return def;
  char* end = nullptr;
  errno = 0;
  long x = std::strtol(v, &end, 10);
  LCX_CHECK(errno == 0 && end && *end == '\0' && x >= lo && x <= 1 << 20, "environment variable ", name, "='", v,
            "' must be an integer >= ", lo);
  return int(x);
}

}  // namespace

DistEnv DistEnv::from_environment() {
  DistEnv e;
  e.world = env_int("WORLD_SIZE", 1, 1);
  e.rank = env_int("RANK", 0, 0);
  e.local_rank = env_int("LOCAL_RANK", e.rank, 0);
  e.local_world = env_int("LOCAL_WORLD_SIZE", e.world, 1);
  LCX_CHECK(e.rank < e.world, "environment: RANK ", e.rank, " must be < WORLD_SIZE ", e.world);
  LCX_CHECK(e.local_rank < e.local_world, "environment: LOCAL_RANK ", e.local_rank, " must be < LOCAL_WORLD_SIZE ",
            e.local_world);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", e.master_port, 1);
  LCX_CHECK(e.master_port <= 65535, "environment: MASTER_PORT ", e.master_port, " must be <= 65535");
  LCX_CHECK(e.world == 1 || std::getenv("MASTER_PORT"), "environment: WORLD_SIZE ", e.world,
            " needs MASTER_ADDR and MASTER_PORT (torchrun sets them; `longctx train --nproc N` too)");
  return e;
}

#if defined(LONGCTX_HAVE_C10D)

bool distributed_available() { return true; }

namespace {
using PG = c10d::ProcessGroupGloo;
using WorkPtr = decltype(std::declval<PG&>().allreduce(std::declval<std::vector<at::Tensor>&>()));
}  // namespace

struct Dist::Work {
  WorkPtr w;
  torch::Tensor t;
};

namespace {
c10::intrusive_ptr<c10d::Store>& store_of(const std::shared_ptr<void>& p) {
  return *static_cast<c10::intrusive_ptr<c10d::Store>*>(p.get());
}
c10::intrusive_ptr<PG>& pg_of(const std::shared_ptr<void>& p) { return *static_cast<c10::intrusive_ptr<PG>*>(p.get()); }
}  // namespace

Dist::Dist(const DistEnv& env, const std::string& backend, std::chrono::milliseconds timeout)
    : env_(env), timeout_(timeout) {
  LCX_CHECK(backend.empty() || backend == "gloo", "train: --backend ", backend,
            " is not built into this libtorch (gloo is; nccl needs a CUDA build with NCCL)");
  try {
    c10d::TCPStoreOptions so;
    so.port = uint16_t(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = env.world;
    so.waitWorkers = true;
    so.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    store_ = std::make_shared<c10::intrusive_ptr<c10d::Store>>(store);
    auto opts = PG::Options::create(timeout);
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname && *ifname) opts->devices.push_back(PG::createDeviceForInterface(ifname));
    else if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost")
      opts->devices.push_back(PG::createDeviceForHostname("127.0.0.1"));
    else
      opts->devices.push_back(PG::createDefaultDevice());
    pg_ = std::make_shared<c10::intrusive_ptr<PG>>(c10::make_intrusive<PG>(store, env.rank, env.world, opts));
  } catch (const std::exception& e) {
    fail("train: rank ", env.rank, " of ", env.world, " could not join the group at ", env.master_addr, ":",
         env.master_port, " within ", timeout.count() / 1000.0, " s (", e.what(), ")");
  }
}

Dist::~Dist() = default;

void Dist::mark(int64_t step) {
  step_ = step;
  arrive("step " + std::to_string(step));
}

// The store holds "SEQ STEP WHAT" per rank: SEQ counts what the rank entered.
void Dist::arrive(const std::string& what) {
  const auto v = std::to_string(++seq_) + " " + std::to_string(step_) + " " + what;
  try {
    store_of(store_)->set("longctx/at/" + std::to_string(env_.rank), std::vector<uint8_t>(v.begin(), v.end()));
  } catch (const std::exception& e) {
    fail("train: rank ", env_.rank, " of ", env_.world, ": the group's store at rank 0 does not answer at ", what, " (",
         e.what(), ")");
  }
}

std::string Dist::laggards() const {
  // The store is rank 0's: if it still answers, the ranks that entered fewer collectives than
  // this one are the ones that died or hang.
  std::string out, same;
  try {
    auto& st = store_of(store_);
    st->setTimeout(std::chrono::milliseconds(3000));
    for (int r = 0; r < env_.world; ++r) {
      if (r == env_.rank) continue;
      const auto key = "longctx/at/" + std::to_string(r);
      int64_t seq = 0;
      std::string where = "never reached the first step";
      if (st->check({key})) {
        auto b = st->get(key);
        std::string v(b.begin(), b.end());
        char* rest = nullptr;
        seq = std::strtoll(v.c_str(), &rest, 10);
        const auto sp = v.find(' ', v.find(' ') + 1);
        where = "is still at " + (sp == std::string::npos ? v : v.substr(sp + 1));
      }
      if (seq < seq_) out += (out.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + " " + where;
      else if (seq == seq_) same += (same.empty() ? "" : ", ") + std::to_string(r);
    }
  } catch (const std::exception&) {
    return "rank 0, which holds the group's store, does not answer (it died)";
  }
  // None behind: the one that hangs entered this collective and never answered (with two ranks,
  // the other one).
  if (out.empty() && !same.empty()) out = "rank " + same + " entered it and did not answer";
  return out;
}

void Dist::failed(const std::string& what, const std::exception& e) const {
  std::string msg = e.what();
  if (msg.size() > 300) msg = msg.substr(0, 300) + "...";
  const auto behind = laggards();
  fail("train: rank ", env_.rank, " of ", env_.world, ": ", what, " failed: ",
       behind.empty() ? "another rank died or did not answer" : behind, "; a collective waits at most ",
       timeout_.count() / 1000.0, " s (", msg, ")");
}

void Dist::allreduce_sum(torch::Tensor& t, const std::string& what) { wait(allreduce_async(t), what); }

std::shared_ptr<Dist::Work> Dist::allreduce_async(torch::Tensor& t) {
  std::vector<at::Tensor> v = {t};
  auto w = std::make_shared<Work>();
  w->t = t;
  w->w = pg_of(pg_)->allreduce(v);
  return w;
}

void Dist::wait(const std::shared_ptr<Work>& w, const std::string& what) {
  arrive(what);
  try {
    w->w->wait();
  } catch (const std::exception& e) {
    failed(what, e);
  }
}

torch::Tensor Dist::allgather_cat(const torch::Tensor& t, const std::string& what) {
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < env_.world; ++r) out[0].push_back(torch::empty_like(t));
  std::vector<at::Tensor> in = {t.contiguous()};
  arrive(what);
  try {
    pg_of(pg_)->allgather(out, in)->wait();
  } catch (const std::exception& e) {
    failed(what, e);
  }
  return torch::cat(out[0], 0);
}

void Dist::broadcast(torch::Tensor& t, int root, const std::string& what) {
  std::vector<at::Tensor> v = {t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  arrive(what);
  try {
    pg_of(pg_)->broadcast(v, o)->wait();
  } catch (const std::exception& e) {
    failed(what, e);
  }
}

void Dist::barrier(const std::string& what, std::chrono::milliseconds timeout) {
  // A barrier as an all-reduce of one number, so that its timeout is the one given.
  auto t = torch::ones({1});
  std::vector<at::Tensor> v = {t};
  c10d::AllreduceOptions o;
  o.timeout = timeout.count() > 0 ? timeout : timeout_;
  arrive(what);
  try {
    pg_of(pg_)->allreduce(v, o)->wait();
  } catch (const std::exception& e) {
    failed(what, e);
  }
}

#else  // no c10d in this libtorch: a world of one only

bool distributed_available() { return false; }
struct Dist::Work {};
Dist::Dist(const DistEnv& env, const std::string&, std::chrono::milliseconds timeout) : env_(env), timeout_(timeout) {
  LCX_CHECK(env.world == 1, "train: a world of ", env.world,
            " ranks needs c10d, and this build has none (libtorch without Gloo, or libgloo-dev missing at build time)");
}
Dist::~Dist() = default;
void Dist::failed(const std::string& what, const std::exception& e) const { fail(what, ": ", e.what()); }
void Dist::mark(int64_t step) { step_ = step; }
void Dist::arrive(const std::string&) {}
std::string Dist::laggards() const { return ""; }
void Dist::allreduce_sum(torch::Tensor&, const std::string&) {}
std::shared_ptr<Dist::Work> Dist::allreduce_async(torch::Tensor&) { return std::make_shared<Work>(); }
void Dist::wait(const std::shared_ptr<Work>&, const std::string&) {}
torch::Tensor Dist::allgather_cat(const torch::Tensor& t, const std::string&) { return t; }
void Dist::broadcast(torch::Tensor&, int, const std::string&) {}
void Dist::barrier(const std::string&, std::chrono::milliseconds) {}

#endif

// ---- the bucketed, overlapped all-reduce ----

namespace {
struct ReadyHook : torch::autograd::FunctionPostHook {
  explicit ReadyHook(std::function<void()> f) : f_(std::move(f)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    f_();
    return outputs;
  }
  std::function<void()> f_;
};
}  // namespace

GradReducer::GradReducer(Dist& dist, const std::vector<torch::Tensor>& params, int64_t bucket_bytes)
    : dist_(dist), params_(params) {
  // Buckets in reverse order of the parameters: the backward pass reaches the last layers first.
  int64_t bytes = bucket_bytes;
  for (size_t i = params_.size(); i-- > 0;) {
    const int64_t b = params_[i].numel() * int64_t(params_[i].element_size());
    if (buckets_.empty() || bytes + b > bucket_bytes) buckets_.emplace_back(), bytes = 0;
    buckets_.back().push_back(i);
    bytes += b;
  }
  bucket_of_.resize(params_.size());
  for (size_t b = 0; b < buckets_.size(); ++b)
    for (size_t i : buckets_[b]) bucket_of_[i] = b;
  pending_.assign(buckets_.size(), 0);
  flat_.resize(buckets_.size());
  work_.resize(buckets_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    auto acc = torch::autograd::impl::grad_accumulator(params_[i]);
    LCX_CHECK(acc, "train: parameter ", i, " has no gradient accumulator (not a leaf that requires grad)");
    acc->add_post_hook(std::make_unique<ReadyHook>([this, i] { ready(i); }));
    hooks_.push_back(acc);
  }
}

GradReducer::~GradReducer() = default;

void GradReducer::arm() {
  armed_ = true;
  next_ = 0;
  for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = int64_t(buckets_[b].size()), work_[b].reset();
}

void GradReducer::ready(size_t i) {
  if (!armed_) return;
  const size_t b = bucket_of_[i];
  if (--pending_[b] == 0) launch_ready();
}

void GradReducer::launch_ready() {
  while (next_ < buckets_.size() && pending_[next_] <= 0) {
    std::vector<torch::Tensor> parts;
    for (size_t i : buckets_[next_]) {
      auto& g = params_[i].grad();
      parts.push_back(g.defined() ? g.reshape({-1}) : torch::zeros({params_[i].numel()}, params_[i].options()));
    }
    flat_[next_] = torch::cat(parts);
    work_[next_] = dist_.allreduce_async(flat_[next_]);
    ++next_;
  }
}

void GradReducer::finish(int64_t step) {
  LCX_CHECK(armed_, "GradReducer::finish without arm()");
  armed_ = false;
  for (auto& p : pending_) p = 0;  // parameters that got no gradient: zeros
  launch_ready();
  const double t0 = now_seconds();
  for (size_t b = 0; b < buckets_.size(); ++b) {
    dist_.wait(work_[b], "the gradients' all-reduce at step " + std::to_string(step));
    int64_t off = 0;
    for (size_t i : buckets_[b]) {
      auto& p = params_[i];
      auto sum = flat_[b].narrow(0, off, p.numel()).view_as(p);
      off += p.numel();
      if (p.grad().defined()) p.mutable_grad().copy_(sum);
      else p.mutable_grad() = sum.clone();
    }
  }
  wait_s_ += now_seconds() - t0;
}

// ---- the local launcher ----

namespace {
int free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  LCX_CHECK(s >= 0, "train --nproc: cannot open a socket (", std::strerror(errno), ")");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  const bool ok = ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(s);
  LCX_CHECK(ok, "train --nproc: cannot find a free port on 127.0.0.1 (", std::strerror(errno), ")");
  return ntohs(a.sin_port);
}

std::string how_it_ended(int status) {
  if (WIFSIGNALED(status))
    return "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}
}  // namespace

int launch_local_ranks(int nproc, int threads, const std::vector<std::string>& argv, int master_port) {
  LCX_CHECK(nproc >= 1, "train: --nproc ", nproc, " must be >= 1");
  LCX_CHECK(nproc == 1 || distributed_available(), "train: --nproc ", nproc,
            " needs c10d, and this build has none (libtorch without Gloo, or libgloo-dev missing at build time)");
  const int port = master_port > 0 ? master_port : free_port();
  std::map<pid_t, int> ranks;
  for (int r = 0; r < nproc; ++r) {
    pid_t pid = ::fork();
    LCX_CHECK(pid >= 0, "train --nproc: fork failed (", std::strerror(errno), ")");
    if (pid == 0) {
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::vector<std::string> args = {argv[0], "--threads", std::to_string(threads)};
      args.insert(args.end(), argv.begin() + 1, argv.end());
      std::vector<char*> cargs;
      for (auto& a : args) cargs.push_back(const_cast<char*>(a.c_str()));
      cargs.push_back(nullptr);
      ::execv("/proc/self/exe", cargs.data());
      std::fprintf(stderr, "longctx: error: train --nproc: cannot run %s (%s)\n", argv[0].c_str(), std::strerror(errno));
      ::_exit(127);
    }
    ranks[pid] = r;
    std::fprintf(stderr, "rank %d: pid %d\n", r, int(pid));
  }
  std::fflush(stderr);
  std::string first_failure;
  while (!ranks.empty()) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    auto it = ranks.find(pid);
    if (it == ranks.end()) continue;
    const int r = it->second;
    ranks.erase(it);
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok && first_failure.empty()) {
      first_failure = "rank " + std::to_string(r) + " " + how_it_ended(status);
      // The others would wait for it until their timeout: end them (SIGKILL for a stopped one).
      for (auto& [p, rr] : ranks) ::kill(p, SIGTERM);
      const double t0 = now_seconds();
      while (!ranks.empty() && now_seconds() - t0 < 3) {
        int st = 0;
        pid_t q = ::waitpid(-1, &st, WNOHANG);
        if (q > 0) ranks.erase(q);
        else ::usleep(20000);
      }
      for (auto& [p, rr] : ranks) ::kill(p, SIGKILL);
    }
  }
  if (!first_failure.empty()) {
    std::fprintf(stderr, "longctx: error: train --nproc %d: %s; the other ranks were stopped\n", nproc,
                 first_failure.c_str());
    return 1;
  }
  return 0;
}

}  // namespace longctx
