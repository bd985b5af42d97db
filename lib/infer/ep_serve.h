// moeinfer --serve-ep: measured expert-parallel serving throughput, the paper's experiment
// (samples/s scoring MMLU under expert parallelism, with path-aware placement against the usual
// one; docs/infer.md). Run under `mpirun -np P`: each of the P ranks scores every P-th document
// of each task (its home tokens) through ResidentExpertParallel (resident_ep.h) with the
// experts a Placement gives it. Every placement is run `repetitions` times, the placements in
// turn within each repetition, so slow drifts of the machine fall on all of them alike.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "eval/task.h"
#include "eval/token_requests.h"
#include "infer/resident_ep.h"
#include "model/model.h"
#include "routing/placement.h"

namespace moe::infer {

struct EpServeOptions {
  int64_t repetitions = 3;
  int64_t limit = 0;       // documents per task (0: all), before they are split over the ranks
  int64_t batch_size = 8;  // rows per forward pass on each rank
  int32_t start_token = 2;
};

struct EpServeRow {
  std::string placement;
  int64_t devices = 0, samples = 0, tokens = 0;  // documents and home tokens, over all ranks
  double acc = 0;                  // fraction of documents answered correctly (all ranks)
  std::vector<double> samples_per_second;  // one per repetition
  std::vector<double> comm_share;          // collective wall time / forward wall time (rank 0)
  // Max over ranks / mean over ranks (last repetition) of the resident tokens x layers (the
  // dense work) and of the expert rows computed (the routed-expert work).
  double load_imbalance = 0, expert_imbalance = 0;
  // Per layer: sum over layers and passes of the busiest rank's resident tokens / of the mean.
  double layer_imbalance = 0;
  ResidentEpStats stats;           // the last repetition, summed over the ranks
};

// Collective over `comm`. Returns the same rows on every rank.
std::vector<EpServeRow> run_ep_serve(MoeModel& model, Communicator& comm,
                                     const std::vector<eval::Task>& tasks,
                                     const eval::Encoder& encode,
                                     const std::vector<routing::Placement>& placements,
                                     const EpServeOptions& options);
// md (default) | csv | json.
std::string format_ep_serve(const std::vector<EpServeRow>& rows, const std::string& format,
                            const std::string& header);

}  // namespace moe::infer
