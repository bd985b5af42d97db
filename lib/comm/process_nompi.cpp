// process.h for a build without MPI: always one rank. A process that an MPI launcher started
// more than once is a usage error rather than N independent single-rank runs over one directory.
#include <cstdlib>

#include "comm/mpi_communicator.h"
#include "comm/process.h"
#include "core/error.h"

namespace moe {
namespace {
ProcessInfo g_info;
}

bool built_with_mpi() { return false; }

ProcessInfo init_processes(int*, char***) {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    const char* v = std::getenv(var);
    MOE_USAGE_CHECK(v == nullptr || std::atoi(v) <= 1, "{}={}: started by an MPI launcher with "
                    "several processes, but this build has no MPI (install libopenmpi-dev and "
                    "rebuild)", var, v);
  }
  return g_info;
}
const ProcessInfo& process_info() { return g_info; }
void finalize_processes() {}
void abort_processes(int code) { std::exit(code); }

std::unique_ptr<Communicator> make_mpi_world_communicator() {
  MOE_FAIL("this build has no MPI: install libopenmpi-dev and rebuild");
}

}  // namespace moe
