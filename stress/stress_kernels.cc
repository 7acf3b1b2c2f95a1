#include <algorithm>

#include "stress/churn_kernel.h"
#include "stress/peer_kernels.h"
#include "stress/stress_kernel.h"

namespace tiermark {

const std::vector<StressKernel>& stress_kernels() {
  static const std::vector<StressKernel> kernels = {
      {"churn", "random churn: sizes from a distribution, cross-thread frees, verified contents (tiermark's own)", run_churn},
      {"larson", "mimalloc-bench larson: threads replace random 8-1000 B blocks, successors free them", run_larson},
      {"xmalloc-test", "mimalloc-bench xmalloc-test: producers allocate 64 B objects, consumers free them", run_xmalloc_test},
      {"cache-scratch", "mimalloc-bench cache-scratch: passive false sharing of freed 1-byte objects", run_cache_scratch},
      {"cache-thrash", "mimalloc-bench cache-thrash: active false sharing between threads' 1-byte objects", run_cache_thrash},
      {"glibc-thread", "mimalloc-bench glibc-thread: glibc's bench-malloc-thread, 4 B-32 KiB working sets", run_glibc_thread},
      {"mstress", "mimalloc-bench mstress: mimalloc's stress test, objects transferred and outliving threads", run_mstress},
      {"rptest", "mimalloc-bench rptest: rpmalloc's benchmark, 8-16000 B working set, batched remote frees", run_rptest},
  };
  return kernels;
}

const StressKernel* find_stress_kernel(std::string_view name) {
  const auto& kernels = stress_kernels();
  const auto it = std::find_if(kernels.begin(), kernels.end(), [&](const StressKernel& k) { return k.name == name; });
  return it == kernels.end() ? nullptr : &*it;
}

}  // namespace tiermark
