// test_main.cpp — runs every TEST (or those whose name contains argv[1]) and reports failures.
#include <chrono>

#include "test_util.h"

int main(int argc, char** argv) {
  auto& reg = t::Registry::get();
  int ran = 0, failed_tests = 0;
  for (auto& [name, fn] : reg.tests) {
    if (argc > 1 && name.find(argv[1]) == std::string::npos) continue;
    const int before = reg.failures;
    const auto t0 = std::chrono::steady_clock::now();
    std::fprintf(stderr, "[ RUN  ] %s\n", name.c_str());
    fn();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const bool ok = reg.failures == before;
    failed_tests += !ok;
    ++ran;
    std::fprintf(stderr, "[ %s ] %s (%.0f ms)\n", ok ? " OK " : "FAIL", name.c_str(), ms);
  }
  std::fprintf(stderr, "%d tests, %d failed, %d failed checks\n", ran, failed_tests, reg.failures);
  return failed_tests ? 1 : 0;
}
