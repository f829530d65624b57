// torch.distributed's C++ core (c10d) for llm_core::distributed: the
// rendezvous store (`TCPStore`, rank 0 serves it at MASTER_ADDR:MASTER_PORT)
// and the Gloo process group, which libtorch_cpu.so already contains: the
// same objects `torch.distributed.init_process_group("gloo")` makes.
//
// The torch wheel lacks gloo's own headers, which ProcessGroupGloo.hpp
// includes; csrc/gloo_decl/ declares the few gloo types the header names
// (all behind pointers). Every gloo object is made inside libtorch.
//
// Errors (c10::Error, gloo's exceptions) are caught here: each entry point
// returns -1 (or null) and leaves the message for llm_dist_last_error().
#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {
thread_local std::string dist_error;

int fail(const std::exception& e) {
  dist_error = e.what();
  return -1;
}

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

std::vector<at::Tensor> tensors_of(at::Tensor** ts, int n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) out.push_back(*ts[i]);
  return out;
}
}  // namespace

extern "C" {

const char* llm_dist_last_error() { return dist_error.c_str(); }

// Rendezvous at host:port and make the Gloo group of `world` ranks. With
// `serve`, rank 0 serves the store (as init_process_group's env://); without
// it every rank connects to a store someone else serves (torchrun's agent).
// Our keys live under "llm/" (the agent's store holds its own). Returns the
// group, or null (see llm_dist_last_error).
void* llm_dist_init(const char* host, int port, int rank, int world,
                    int64_t timeout_ms, int serve) {
  try {
    std::chrono::milliseconds timeout(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = serve && rank == 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = serve != 0;
    opts.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    c10::intrusive_ptr<c10d::Store> store =
        c10::make_intrusive<c10d::PrefixStore>("llm", tcp);
    auto options = c10d::ProcessGroupGloo::Options::create_default(timeout);
    auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        store, rank, world, options);
    return new Group{store, gloo, timeout};
  } catch (const std::exception& e) {
    fail(e);
    return nullptr;
  }
}

void llm_dist_free(void* group) { delete static_cast<Group*>(group); }

// Sum (op 0), average (op 1) or max (op 2) `n` tensors across the group, in place.
int llm_dist_all_reduce(void* group, at::Tensor** ts, int n, int op) {
  try {
    auto* g = static_cast<Group*>(group);
    std::vector<at::Tensor> tensors = tensors_of(ts, n);
    c10d::AllreduceOptions opts;
    opts.reduceOp = op == 2 ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
    opts.timeout = g->timeout;
    if (n == 1) {
      g->backend->allreduce(tensors, opts)->wait(g->timeout);
    } else {
      c10d::AllreduceCoalescedOptions copts;
      copts.reduceOp = opts.reduceOp;
      copts.timeout = g->timeout;
      g->backend->allreduce_coalesced(tensors, copts)->wait(g->timeout);
    }
    if (op == 1) {
      for (auto& t : tensors) t.div_(g->backend->getSize());
    }
    return 0;
  } catch (const std::exception& e) {
    return fail(e);
  }
}

// Copy `n` tensors from rank `root` to every rank, in place.
int llm_dist_broadcast(void* group, at::Tensor** ts, int n, int root) {
  try {
    auto* g = static_cast<Group*>(group);
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = g->timeout;
    for (int i = 0; i < n; ++i) {
      std::vector<at::Tensor> one{*ts[i]};
      g->backend->broadcast(one, opts)->wait(g->timeout);
    }
    return 0;
  } catch (const std::exception& e) {
    return fail(e);
  }
}

int llm_dist_barrier(void* group) {
  try {
    auto* g = static_cast<Group*>(group);
    c10d::BarrierOptions opts;
    opts.timeout = g->timeout;
    g->backend->barrier(opts)->wait(g->timeout);
    return 0;
  } catch (const std::exception& e) {
    return fail(e);
  }
}

// The store's counter `key` plus `delta` (0 reads it); -1 on an error.
int llm_dist_store_add(void* group, const char* key, int64_t delta, int64_t* out) {
  try {
    auto* g = static_cast<Group*>(group);
    *out = g->store->add(std::string(key), delta);
    return 0;
  } catch (const std::exception& e) {
    return fail(e);
  }
}

}  // extern "C"
