// common.h — the engine's error and the pool's row splitter.
//
// lathe::Error carries a lathe_status and where it was raised; engine.cpp turns it (and
// std::bad_alloc, and anything else) into a status + message at the C boundary. Its message
// ends in " (at src/model.cpp:123)": the file (from libs/engine/) and line of the throw. They
// default to the caller's (__builtin_FILE/__builtin_LINE as default arguments, the C++17
// spelling of std::source_location::current()), so `throw Error(status, msg)` records its own
// line, and a helper that throws for its caller takes the same two defaulted parameters and
// passes them on (model.cpp's fail, engine.cpp's need).
// parallel_rows splits [0, n) into contiguous ranges for the pool.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "lathe_engine.h"
#include "threads.h"

namespace lathe {

// `file` from its last "src/" or "include/" on: the path inside libs/engine, not the build machine's.
inline const char* engine_path(const char* file) {
  const char* best = file;
  for (const char* dir : {"/src/", "/include/"})
    for (const char* p = std::strstr(file, dir); p; p = std::strstr(p + 1, dir)) best = std::max(best, p + 1);
  return best;
}

struct Error : std::runtime_error {
  lathe_status status;
  const char* file;
  int line;
  Error(lathe_status s, const std::string& msg, const char* file_ = __builtin_FILE(), int line_ = __builtin_LINE())
      : std::runtime_error(msg + " (at " + engine_path(file_) + ":" + std::to_string(line_) + ")"), status(s), file(engine_path(file_)), line(line_) {}
};

template <class F>
void parallel_rows(ThreadPool& pool, int64_t n, F&& fn /* fn(begin, end, thread) */) {
  if (n <= 0) return;
  const int64_t tasks = std::min<int64_t>(n, static_cast<int64_t>(pool.size()) * 4);
  pool.run(tasks, [&](int64_t t, int thread) {
    const int64_t b = n * t / tasks, e = n * (t + 1) / tasks;
    if (b < e) fn(b, e, thread);
  });
}

}  // namespace lathe
