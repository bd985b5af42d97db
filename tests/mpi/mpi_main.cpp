// main() of the MPI test executables: they run under `mpirun -np N` (and also alone, as one
// rank). MPI starts before GoogleTest and ends after it; a rank whose tests failed ends the whole
// job (abort_processes), so no peer waits in a collective for it.
#include <gtest/gtest.h>

#include "comm/process.h"

int main(int argc, char** argv) {
  moe::init_processes(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  if (moe::process_info().rank != 0) {
    // Rank 0 prints the progress; the others print only their failures.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int rc = RUN_ALL_TESTS();
  if (rc != 0 && moe::process_info().size > 1) moe::abort_processes(rc);
  moe::finalize_processes();
  return rc;
}
