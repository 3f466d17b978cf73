// threads.h — a small persistent thread pool owned by a model (no globals).
//
// run(n, fn) calls fn(task, thread) for task in [0, n) on the pool's threads (the caller is
// thread 0) and returns when all are done. Tasks are handed out dynamically, so each task must
// write only its own outputs; results are then independent of scheduling (deterministic).
// An exception thrown by a task is rethrown in the caller. Calls must not nest.
// Between calls a worker spins briefly before it sleeps, and so does the caller before it waits
// for the last task: a training step makes thousands of calls a few hundred microseconds apart,
// and a futex wake-up costs tens of microseconds each way (more in a virtual machine).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lathe {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);  // <= 0: std::thread::hardware_concurrency()
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  void run(int64_t num_tasks, const std::function<void(int64_t task, int thread)>& fn);
  // Per-thread scratch memory (grown on demand, kept between calls).
  float* scratch(int thread, size_t floats);

 private:
  void worker(int thread);
  void drain(int thread);

  std::vector<std::thread> workers_;
  std::vector<std::vector<float>> scratch_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t num_tasks_ = 0;
  int64_t next_task_ = 0;  // guarded by mu_
  // Written under mu_; read without it by the short spins before a thread sleeps.
  std::atomic<int> active_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
};

}  // namespace lathe
