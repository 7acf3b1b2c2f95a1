// The program capture_test runs under libtiermark_capture.so. Each mode makes a known set of
// allocator calls; the test reads the trace the library wrote and checks them.
//
//   sequence          one of every interposed call, between malloc(123457) and malloc(123458) markers,
//                     with two threads (one frees the other's block); the exact events are in the test
//   fork              forks children (one while two threads allocate), one of which execs `exec-child`;
//                     prints "fork <pid>" and "exec <pid>" lines
//   exec-child        allocates a 434343-byte marker and exits
//   threads W R N     R rounds of W worker threads, N operations each, with cross-thread frees;
//                     every worker allocates kCounted bytes exactly kCountedPerWorker times
//   exit-from-thread  workers allocate without end until one of them calls exit(0)
//
// Built with -fno-builtin and every pointer passed to keep(), so that g++ neither removes a
// malloc/free pair nor turns one call into another (realloc(NULL, n) into malloc(n)).
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <random>
#include <string>
#include <vector>

extern "C" void* __libc_malloc(std::size_t size);  // glibc's own, never interposed

namespace {

constexpr std::size_t kStartMarker = 123457;
constexpr std::size_t kEndMarker = 123458;
constexpr std::size_t kCounted = 77777;
constexpr int kCountedPerWorker = 10;

void keep(void* p) { asm volatile("" : : "r"(p) : "memory"); }

// ---- sequence ----

sem_t g_go_a, g_go_b, g_done;
void* g_from_a = nullptr;

void* thread_a(void*) {
  sem_wait(&g_go_a);
  g_from_a = std::malloc(2001);
  keep(g_from_a);
  sem_post(&g_done);
  return nullptr;
}

void* thread_b(void*) {
  sem_wait(&g_go_b);
  void* mine = std::malloc(2002);
  keep(mine);
  std::free(g_from_a);  // the cross-thread free
  g_from_a = mine;
  sem_post(&g_done);
  return nullptr;
}

int sequence() {
  sem_init(&g_go_a, 0, 0);
  sem_init(&g_go_b, 0, 0);
  sem_init(&g_done, 0, 0);
  pthread_t a, b;
  pthread_create(&a, nullptr, thread_a, nullptr);  // before the start marker: thread creation allocates
  pthread_create(&b, nullptr, thread_b, nullptr);

  void* start = std::malloc(kStartMarker);
  keep(start);
  void* p = std::malloc(100);
  keep(p);
  void* c = std::calloc(3, 40);
  keep(c);
  p = std::realloc(p, 300);
  keep(p);
  void* r = std::realloc(nullptr, 50);
  keep(r);
  keep(std::realloc(r, 0));  // glibc frees r and returns NULL
  int* array = new int[10];
  keep(array);
  void* aligned = ::operator new(256, std::align_val_t{64});
  keep(aligned);
  char* nothrow_array = new (std::nothrow) char[7];
  keep(nothrow_array);
  void* pm = nullptr;
  if (posix_memalign(&pm, 4096, 1000) != 0) return 1;
  keep(pm);
  void* aa = std::aligned_alloc(256, 512);
  keep(aa);
  void* ma = memalign(64, 70);
  keep(ma);
  void* va = valloc(10);
  keep(va);
  void* pv = pvalloc(10);
  keep(pv);
  std::free(nullptr);
  ::operator delete(nullptr);
  void* foreign = __libc_malloc(33);  // the library never saw it: its free is unmatched
  keep(foreign);
  std::free(foreign);
  std::free(c);
  delete[] array;
  ::operator delete(aligned, 256, std::align_val_t{64});
  ::operator delete[](nothrow_array, std::nothrow);
  std::free(pm);
  std::free(aa);
  std::free(ma);
  std::free(va);
  std::free(pv);
  auto* one = new int(5);
  keep(one);
  ::operator delete(one, sizeof(int));
  std::free(p);

  sem_post(&g_go_a);
  sem_wait(&g_done);
  sem_post(&g_go_b);
  sem_wait(&g_done);
  std::free(g_from_a);  // B's block, freed by main
  void* leak = std::malloc(555);  // still live at exit
  keep(leak);
  void* end = std::malloc(kEndMarker);
  keep(end);

  pthread_join(a, nullptr);
  pthread_join(b, nullptr);
  std::free(start);
  std::free(end);
  return 0;
}

// ---- threads: churn, cross-thread frees, thread exits ----

std::mutex g_exchange_mutex;
std::vector<void*> g_exchange;

void* worker(void* arg) {
  const long operations = reinterpret_cast<long>(arg);
  std::minstd_rand random(static_cast<unsigned>(pthread_self()));
  std::vector<void*> live;
  for (int i = 0; i < kCountedPerWorker; ++i) {
    void* p = std::malloc(kCounted);
    keep(p);
    live.push_back(p);
  }
  for (long i = 0; i < operations; ++i) {
    const unsigned choice = random() % 8;
    if (choice < 4 || live.empty()) {
      void* p = choice == 0 ? std::aligned_alloc(64, 64 * (random() % 8 + 1)) : std::malloc(random() % 4096 + 1);
      keep(p);
      live.push_back(p);
    } else if (choice < 6) {
      const std::size_t k = random() % live.size();
      std::free(live[k]);
      live[k] = live.back();
      live.pop_back();
    } else if (choice == 6) {
      const std::size_t k = random() % live.size();
      live[k] = std::realloc(live[k], random() % 8192 + 1);
      keep(live[k]);
    } else {
      std::lock_guard lock(g_exchange_mutex);
      if (!g_exchange.empty() && random() % 2 == 0) {
        live.push_back(g_exchange.back());  // another thread's block, freed here later
        g_exchange.pop_back();
      } else {
        g_exchange.push_back(live.back());
        live.pop_back();
      }
    }
  }
  for (void* p : live) std::free(p);
  return nullptr;
}

int threads(int workers, int rounds, long operations) {
  for (int round = 0; round < rounds; ++round) {
    std::vector<pthread_t> ids(static_cast<std::size_t>(workers));
    for (auto& id : ids) pthread_create(&id, nullptr, worker, reinterpret_cast<void*>(operations));
    for (auto& id : ids) pthread_join(id, nullptr);
  }
  for (void* p : g_exchange) std::free(p);
  return 0;
}

// ---- exit from a thread while others allocate ----

std::atomic<bool> g_stop{false};

void* hammer(void*) {
  std::minstd_rand random(static_cast<unsigned>(pthread_self()));
  std::vector<void*> live(64, nullptr);
  while (!g_stop.load(std::memory_order_relaxed)) {
    void*& slot = live[random() % live.size()];
    std::free(slot);
    slot = std::malloc(random() % 1024 + 1);
    keep(slot);
  }
  for (void* p : live) std::free(p);
  return nullptr;
}

void* exiter(void*) {
  usleep(50 * 1000);
  std::exit(0);
}

int exit_from_thread() {
  std::vector<pthread_t> ids(4);
  for (auto& id : ids) pthread_create(&id, nullptr, hammer, nullptr);
  pthread_t e;
  pthread_create(&e, nullptr, exiter, nullptr);
  for (auto& id : ids) pthread_join(id, nullptr);  // never returns: exit() ends the process
  return 1;
}

// ---- fork and exec ----

int fork_and_exec(const char* self) {
  std::vector<pthread_t> ids(2);
  for (auto& id : ids) pthread_create(&id, nullptr, hammer, nullptr);
  std::vector<pid_t> children;
  for (int i = 0; i < 3; ++i) {
    const pid_t pid = fork();
    if (pid == 0) {
      void* marker = std::malloc(424242);
      keep(marker);
      std::free(marker);
      std::exit(0);
    }
    children.push_back(pid);
  }
  g_stop.store(true);
  for (auto& id : ids) pthread_join(id, nullptr);
  const pid_t exec_pid = fork();
  if (exec_pid == 0) {
    execl(self, self, "exec-child", static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  for (pid_t pid : children) {
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
    std::printf("fork %d\n", static_cast<int>(pid));
  }
  if (waitpid(exec_pid, &status, 0) != exec_pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
  std::printf("exec %d\n", static_cast<int>(exec_pid));
  void* marker = std::malloc(414141);
  keep(marker);
  std::free(marker);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "sequence") return sequence();
  if (mode == "threads" && argc == 5) return threads(std::atoi(argv[2]), std::atoi(argv[3]), std::atol(argv[4]));
  if (mode == "exit-from-thread") return exit_from_thread();
  if (mode == "fork") return fork_and_exec(argv[0]);
  if (mode == "exec-child") {
    void* marker = std::malloc(434343);
    keep(marker);
    std::free(marker);
    return 0;
  }
  std::fprintf(stderr, "usage: capture_target sequence | fork | exec-child | threads W R N | exit-from-thread\n");
  return 2;
}
