// prefer_passive_omp_wait (see omp_wait_policy.h): setenv + execv of the program itself.
#include "core/omp_wait_policy.h"

#include <unistd.h>

#include <cstdlib>

namespace moe {

void prefer_passive_omp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) {
    return;  // the user's choice (or the re-executed image, which has OMP_WAIT_POLICY set)
  }
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  reexec_self(argv);
  // Only reached when exec failed (no /proc, say): keep running, with the policy libgomp has
  // already read; the variable stays set for child processes, which is harmless.
}

void reexec_self(char** argv) {
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n > 0 && static_cast<size_t>(n) < sizeof(path) - 1) {
    path[n] = '\0';
    execv(path, argv);
  }
  execv("/proc/self/exe", argv);  // the file may have been replaced or renamed meanwhile
}

}  // namespace moe
