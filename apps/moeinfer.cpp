// moeinfer: generation, latency runs and pathway-based inference speed for moetrain checkpoints
// (docs/infer.md). Modes: --prompt / --prompt-file (generation), --bench (llama-bench-like
// latency runs), --trace OUT --text FILE... (routing traces), --placement (expert placement under
// expert parallelism, counted on traces), --serve-ep TASKS (measured expert-parallel serving under
// mpirun: samples/s scoring a multiple-choice task per placement); --expert-cache C
// [--prefetch pathway] applies to generation and --bench. Exit codes: 0 ok, 2 usage / input
// error, 1 runtime failure.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "bench/profiling_backend.h"
#include "checkpoint/model_checkpoint.h"
#include "comm/process.h"
#include "config/cli.h"
#include "core/error.h"
#include "core/omp_wait_policy.h"
#include "eval/task_readers.h"
#include "infer/bench.h"
#include "infer/ep_serve.h"
#include "infer/expert_cache.h"
#include "infer/placement_report.h"
#include "infer/prompt_run.h"
#include "infer/trace_record.h"

namespace {

struct Options {
  std::string checkpoint, prompt, prompt_file, device = "cpu", log_level = "warn";
  std::string out_format = "md";
  std::string trace_out, calibration, heldout, prefetch = "none", jsonl_field = "text";
  std::string task_dir = "data/zeroshot";
  std::vector<std::string> text, placements, serve_tasks;
  std::vector<int64_t> devices, bench_p{128}, bench_n{128}, bench_b{1};
  int64_t max_new_tokens = 64, batch_size = 8, bench_r = 5, max_tokens = 0, expert_cache = 0;
  int64_t placement_seed = 1, a2a_bytes = 2, limit = 0;
  moe::infer::SamplingOptions sampling;
  bool bench = false;
  int threads = 0;
};

std::optional<moe::routing::TransitionGraph> calibration_graph(const Options& o, uint64_t fp) {
  if (o.calibration.empty()) return std::nullopt;
  const moe::routing::RoutingTrace t = moe::routing::read_trace(o.calibration);
  moe::routing::check_trace_model(t, fp, o.calibration);
  return moe::routing::transition_graph(t);
}

int run_generation(const Options& o, moe::LoadedCheckpoint& ck) {
  const bool from_file = !o.prompt_file.empty();
  std::vector<std::string> texts, sources;
  if (from_file) {
    texts = moe::infer::read_prompt_file(o.prompt_file);
    for (size_t i = 0; i < texts.size(); ++i) {
      sources.push_back(o.prompt_file + ":" + std::to_string(i + 1));
    }
  } else {
    texts = {o.prompt};
    sources = {"--prompt"};
  }
  moe::infer::PromptRunOptions po;
  po.max_new_tokens = o.max_new_tokens;
  po.batch_size = o.batch_size;
  po.sampling = o.sampling;
  po.stepwise_prompts = o.expert_cache > 0;
  moe::infer::run_prompts(*ck.model, *ck.tokenizer, texts, sources, /*stream=*/!from_file, po,
                          stdout);
  return 0;
}

// --serve-ep: every rank of the job loads the checkpoint, builds each placement for P = the
// number of ranks, and scores its share of the tasks under each (ep_serve.h). Rank 0 prints.
int run_serve(const Options& o, moe::LoadedCheckpoint& ck, uint64_t fp) {
  const std::vector<std::string> kinds =
      o.placements.empty() ? std::vector<std::string>{"round-robin"} : o.placements;
  auto comm = moe::make_world_communicator(ck.model->backend());
  const int P = comm->size();
  const moe::ModelConfig& mc = ck.config.model;
  moe::routing::check_devices(mc.n_experts, P);
  moe::routing::TransitionGraph graph;
  const bool need_calibration =
      std::find(kinds.begin(), kinds.end(), "path-aware") != kinds.end();
  MOE_USAGE_CHECK(!need_calibration || !o.calibration.empty(),
                  "--placement path-aware needs --calibration TRACE (moeinfer --trace)");
  if (!o.calibration.empty()) {
    const auto t = moe::routing::read_trace(o.calibration);
    moe::routing::check_trace_model(t, fp, o.calibration);
    graph = moe::routing::transition_graph(t);
  } else {
    graph.n_layers = mc.n_layers - mc.dense_layers;
    graph.n_experts = mc.n_experts;
  }
  std::vector<moe::routing::Placement> placements;
  for (const std::string& kind : kinds) {
    placements.push_back(moe::routing::make_placement(kind, graph, P, o.placement_seed));
  }
  std::vector<moe::eval::Task> tasks;
  for (const std::string& name : o.serve_tasks) {
    for (auto& t : moe::eval::load_tasks(name, o.task_dir, 0, "")) tasks.push_back(std::move(t));
  }
  const moe::data::Tokenizer& tok = *ck.tokenizer;
  const moe::eval::Encoder encode = [&tok](const std::string& s) { return tok.encode(s); };
  moe::infer::EpServeOptions so;
  so.repetitions = o.bench_r;
  so.limit = o.limit;
  so.batch_size = o.batch_size;
  so.start_token = tok.eos_id();
  const auto rows = moe::infer::run_ep_serve(*ck.model, *comm, tasks, encode, placements, so);
  if (comm->rank() == 0) {
    std::string names;
    for (const auto& n : o.serve_tasks) names += (names.empty() ? "" : ",") + n;
    const std::string header = fmt::format(
        "moeinfer --serve-ep {}: {} ({} {} experts, top-{}), {} ranks, {} threads each, batch {} "
        "rows, limit {}, {} repetitions", names, ck.dir, mc.arch, mc.n_experts, mc.top_k, P,
        o.threads, o.batch_size, o.limit, o.bench_r);
    std::fputs(moe::infer::format_ep_serve(rows, o.out_format, header).c_str(), stdout);
  }
  return 0;
}

int run(const Options& o) {
  // Logs and progress go to stderr: stdout carries the tables, JSON and generated text.
  spdlog::set_default_logger(spdlog::stderr_color_mt("moeinfer"));
  moe::set_log_level(o.log_level);
  if (moe::process_info().rank != 0) {  // under mpirun: rank 0 logs, the others only warn
    spdlog::set_level(std::max(spdlog::get_level(), spdlog::level::warn));
  }
  MOE_USAGE_CHECK(!o.checkpoint.empty(), "--checkpoint DIR is required");
  const bool gen = !o.prompt.empty() || !o.prompt_file.empty();
  const bool serve = !o.serve_tasks.empty();
  const bool count_placements = !o.placements.empty() && !serve;
  const int modes = (gen ? 1 : 0) + (o.bench ? 1 : 0) + (!o.trace_out.empty() ? 1 : 0) +
                    (count_placements ? 1 : 0) + (serve ? 1 : 0);
  MOE_USAGE_CHECK(modes == 1, "give exactly one mode: --prompt TEXT / --prompt-file F, --bench, "
                  "--trace OUT --text FILE..., --placement KINDS --devices P --calibration T "
                  "--heldout T, or --serve-ep TASKS --placement KINDS (under mpirun)");
  MOE_USAGE_CHECK(serve || moe::process_info().size == 1, "only --serve-ep runs on several "
                  "ranks; this mode was started on {} (run it without mpirun)",
                  moe::process_info().size);
  MOE_USAGE_CHECK(o.prompt.empty() || o.prompt_file.empty(), "give --prompt or --prompt-file, "
                  "not both");
  MOE_USAGE_CHECK(o.batch_size >= 1, "--batch-size must be >= 1, got {}", o.batch_size);
  MOE_USAGE_CHECK(o.limit >= 0, "--limit must be >= 0, got {}", o.limit);
  moe::infer::validate_sampling(o.sampling);
  if (count_placements) {  // traces only: no model weights needed beyond the fingerprint
    MOE_USAGE_CHECK(!o.devices.empty() && !o.calibration.empty() && !o.heldout.empty(),
                    "--placement needs --devices P[,P...], --calibration TRACE and --heldout "
                    "TRACE");
  }
  auto inner = moe::make_backend(o.device, o.threads);
  moe::ProfilingBackend backend(*inner);
  int64_t rows = o.batch_size;
  if (o.bench) rows = *std::max_element(o.bench_b.begin(), o.bench_b.end());
  moe::LoadedCheckpoint ck = moe::load_model_checkpoint(o.checkpoint, backend, rows);
  const uint64_t fp = moe::routing::model_fingerprint(*ck.model);
  const moe::ModelConfig& mc = ck.config.model;

  if (!o.trace_out.empty()) {
    MOE_USAGE_CHECK(!o.text.empty(), "--trace OUT needs --text FILE... (the text to route)");
    const auto trace = moe::infer::record_trace(*ck.model, *ck.tokenizer, o.text, o.jsonl_field,
                                                o.max_tokens, o.batch_size);
    moe::routing::write_trace(o.trace_out, trace);
    std::fprintf(stderr, "moeinfer: wrote %s (%lld tokens, %lld sequences, %lld MoE layers)\n",
                 o.trace_out.c_str(), static_cast<long long>(trace.n_tokens()),
                 static_cast<long long>(trace.seq_lens.size()),
                 static_cast<long long>(trace.n_moe_layers()));
    return 0;
  }
  if (serve) return run_serve(o, ck, fp);
  if (count_placements) {
    const auto calib = moe::routing::read_trace(o.calibration);
    moe::routing::check_trace_model(calib, fp, o.calibration);
    const auto held = moe::routing::read_trace(o.heldout);
    moe::routing::check_trace_model(held, fp, o.heldout);
    const auto rows_out = moe::infer::evaluate_placements(calib, held, o.placements, o.devices,
                                                          mc.d_model, o.a2a_bytes,
                                                          o.placement_seed);
    std::fputs(moe::infer::format_placements(rows_out, o.out_format).c_str(), stdout);
    return 0;
  }
  std::unique_ptr<moe::infer::ExpertCache> cache;
  std::optional<moe::routing::TransitionGraph> graph = calibration_graph(o, fp);
  if (o.expert_cache > 0 || o.prefetch != "none") {
    MOE_USAGE_CHECK(o.expert_cache > 0, "--prefetch {} needs --expert-cache C", o.prefetch);
    cache = std::make_unique<moe::infer::ExpertCache>(*ck.model, ck.dir + "/model.safetensors",
                                                      o.expert_cache, o.prefetch,
                                                      graph ? &*graph : nullptr);
  }
  if (gen) {
    const int rc = run_generation(o, ck);
    if (cache) {
      const auto& s = cache->stats();
      std::fprintf(stderr, "moeinfer: expert cache C=%lld prefetch %s: hit rate %.1f%%, %.0f "
                   "bytes read per token\n", static_cast<long long>(o.expert_cache),
                   o.prefetch.c_str(), 100 * s.hit_rate(), s.bytes_per_token());
    }
    return rc;
  }
  moe::infer::BenchOptions bo;
  bo.prompt_lengths = o.bench_p;
  bo.gen_lengths = o.bench_n;
  bo.batch_sizes = o.bench_b;
  bo.repetitions = o.bench_r;
  const auto results = moe::infer::run_bench(*ck.model, backend, bo, cache.get());
  std::fprintf(stderr, "bench: measuring memory bandwidth\n");
  const double bw = moe::infer::measure_copy_bandwidth();
  const std::string header = fmt::format(
      "moeinfer --bench: {} ({} {}, {} params, {} active), {} device, {} threads{}", ck.dir,
      mc.arch, mc.n_experts, ck.model->n_params_total(), ck.model->n_params_active(), o.device,
      o.threads, cache ? fmt::format(", expert cache C={} prefetch {}", o.expert_cache,
                                     o.prefetch) : std::string());
  std::fputs(moe::infer::format_bench(results, o.out_format, header, bw).c_str(), stdout);
  return 0;
}


int run_main(int argc, char** argv) {
  Options o;
  CLI::App app{"moeinfer: generation, latency runs, routing traces and pathway-based expert "
               "placement / offload for moetrain checkpoints"};
  app.add_option("--checkpoint", o.checkpoint, "checkpoint directory, or a run directory");
  app.add_option("--prompt", o.prompt, "generate from this text (streamed to stdout)");
  app.add_option("--prompt-file", o.prompt_file, "one prompt per line; JSONL output");
  app.add_option("--max-new-tokens", o.max_new_tokens, "tokens to generate per prompt");
  app.add_option("--temperature", o.sampling.temperature, "0: greedy (default)");
  app.add_option("--top-k", o.sampling.top_k, "sample among the k most likely tokens (0: off)");
  app.add_option("--top-p", o.sampling.top_p, "nucleus sampling mass (1: off)");
  app.add_option("--seed", o.sampling.seed, "sampling seed");
  app.add_option("--batch-size", o.batch_size, "sequences per pass (generation, --trace)");
  app.add_flag("--bench", o.bench, "latency runs (llama-bench-like)");
  app.add_option("-p", o.bench_p, "--bench prompt lengths, e.g. 128,512")->delimiter(',');
  app.add_option("-n", o.bench_n, "--bench generation lengths")->delimiter(',');
  app.add_option("-b", o.bench_b, "--bench batch sizes, e.g. 1,8,32")->delimiter(',');
  app.add_option("-r", o.bench_r, "--bench / --serve-ep repetitions");
  app.add_option("-o", o.out_format, "output of --bench / --placement / --serve-ep: md, csv or json");
  app.add_option("--trace", o.trace_out, "record a routing trace of --text into this file");
  app.add_option("--text", o.text, "text files / directories / globs / .jsonl to route")
      ->take_all();
  app.add_option("--jsonl-field", o.jsonl_field, "text field of .jsonl files");
  app.add_option("--max-tokens", o.max_tokens, "--trace: stop after N tokens (0: all)");
  app.add_option("--placement", o.placements, "round-robin, contiguous, path-aware (a list)")
      ->delimiter(',');
  app.add_option("--devices", o.devices, "expert-parallel device counts, e.g. 2,4,8")
      ->delimiter(',');
  app.add_option("--calibration", o.calibration, "calibration trace (placement, prefetch)");
  app.add_option("--heldout", o.heldout, "held-out trace the placements are measured on");
  app.add_option("--serve-ep", o.serve_tasks, "measured expert-parallel serving (mpirun -np P): "
                 "score these multiple-choice tasks under each --placement")->delimiter(',');
  app.add_option("--task-dir", o.task_dir, "--serve-ep: folder of task files");
  app.add_option("--limit", o.limit, "--serve-ep: first N documents of each task (0: all)");
  app.add_option("--placement-seed", o.placement_seed, "METIS seed (path-aware)");
  app.add_option("--a2a-bytes", o.a2a_bytes, "bytes per hidden-state value sent (2: bf16)");
  app.add_option("--expert-cache", o.expert_cache, "keep at most C routed experts per layer");
  app.add_option("--prefetch", o.prefetch, "none or pathway (needs --calibration)");
  app.add_option("--device", o.device, "cpu, cuda or cuda:N");
  app.add_option("--threads", o.threads, "CPU threads (0: all cores)");
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error, off");
  const int parsed = moe::parse_command_line(app, argc, argv);
  if (parsed >= 0) return parsed;
  if (app.count("--prompt") > 0 && o.prompt.empty()) {
    std::fprintf(stderr, "moeinfer: error: --prompt: empty prompt\n");
    return 2;
  }
  try {
    return run(o);
  } catch (const moe::Error& e) {
    std::fprintf(stderr, "moeinfer: error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moeinfer: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace

// Under mpirun (--serve-ep) every rank runs main; a failure on any rank ends the whole job, so
// no rank waits forever in a collective for a peer that failed.
int main(int argc, char** argv) {
  moe::prefer_passive_omp_wait(argv);  // before any OpenMP region and MPI_Init: it may re-exec
  try {
    moe::init_processes(&argc, &argv);
  } catch (const moe::Error& e) {
    std::fprintf(stderr, "moeinfer: error: %s\n", e.what());
    return e.exit_code();
  }
  const int code = run_main(argc, argv);
  if (code != 0 && moe::process_info().size > 1) moe::abort_processes(code);
  moe::finalize_processes();
  return code;
}
