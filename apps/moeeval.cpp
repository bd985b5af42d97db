// moeeval: evaluates moetrain checkpoints. Modes (combinable): --ppl FILE... (perplexity, bits
// per byte), --tasks LIST --task-dir DIR (zero-shot, lm-evaluation-harness conventions),
// --routing FILE... (routing and pathway statistics of docs/model.md §4). Prints a table per checkpoint,
// or one side-by-side table with deltas against the first when several are given; --out writes
// the harness-shaped results JSON. Exit codes: 0 ok, 2 usage / input error, 1 runtime failure.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "backend/backend.h"
#include "config/cli.h"
#include "core/error.h"
#include "core/omp_wait_policy.h"
#include "checkpoint/model_checkpoint.h"
#include "eval/moe_scoring.h"
#include "eval/paper_suite.h"
#include "eval/report_table.h"
#include "eval/task_readers.h"
#include "eval/text_utils.h"
#include "routing/trace.h"

namespace {

struct Options {
  std::vector<std::string> checkpoints, ppl, routing, routing_traces;
  std::string tasks, task_dir, out, device = "cpu", log_level = "info", jsonl_field = "text";
  std::string dump_requests, suite, log_samples, split;
  int64_t num_fewshot = 0;
  int64_t limit = 0, batch_size = 16, bootstrap_iters = 100000, routing_max_tokens = 0;
  int threads = 0;
  bool no_kv_cache = false;
};

// The task names of --tasks and --suite, in order, without duplicates.
std::vector<std::string> task_names(const Options& o) {
  std::vector<std::string> names;
  auto add = [&names](const std::string& n) {
    if (!n.empty() && std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  };
  if (!o.suite.empty()) {
    MOE_USAGE_CHECK(o.suite == "paper", "--suite '{}': unknown suite (expected: paper)", o.suite);
    for (const auto& c : moe::eval::paper_columns()) add(c.load);
  }
  for (const std::string& name : moe::eval::py_split(o.tasks, ",")) add(name);
  return names;
}

// MMLU takes --num-fewshot; the other tasks are 0-shot as their harness YAMLs are.
int64_t shots_for(const std::string& name, const Options& o) {
  if (o.num_fewshot > 0 && !moe::eval::supports_fewshot(name)) {
    spdlog::warn("--num-fewshot {}: {} has no few-shot split here; scored 0-shot", o.num_fewshot,
                 name);
    return 0;
  }
  return o.num_fewshot;
}

std::vector<moe::eval::Task> load_tasks(const Options& o) {
  std::vector<moe::eval::Task> tasks;
  const std::vector<std::string> names = task_names(o);
  if (names.empty()) return tasks;
  MOE_USAGE_CHECK(!o.task_dir.empty() || moe::eval::ends_with(o.tasks, ".jsonl"),
                  "--tasks / --suite need --task-dir DIR (the folder holding the task files, "
                  "e.g. data/zeroshot)");
  MOE_USAGE_CHECK(o.num_fewshot >= 0, "--num-fewshot must be >= 0, got {}", o.num_fewshot);
  auto append = [&tasks](std::vector<moe::eval::Task> more) {
    for (auto& t : more) tasks.push_back(std::move(t));
  };
  const std::vector<std::string> asked = moe::eval::py_split(o.tasks, ",");
  for (const std::string& name : names) {
    if (name == "all") {  // every built-in task whose file is present
      const size_t before = tasks.size();
      for (const auto& b : moe::eval::builtin_task_names()) {
        try {
          append(moe::eval::load_tasks(b, o.task_dir, shots_for(b, o), o.split));
        } catch (const moe::Error& e) {
          spdlog::warn("--tasks all: skipping {}: {}", b, e.what());
        }
      }
      MOE_USAGE_CHECK(tasks.size() > before, "--tasks all: no task files found under --task-dir "
                      "{} (expected e.g. piqa/valid.jsonl, arc_easy/ARC-Easy-Test.jsonl; see "
                      "docs/eval.md)", o.task_dir);
      continue;
    }
    if (!o.suite.empty() && std::find(asked.begin(), asked.end(), name) == asked.end()) {
      // A suite task whose file is not there is reported as missing in the suite's table.
      try {
        append(moe::eval::load_tasks(name, o.task_dir, shots_for(name, o), o.split));
      } catch (const moe::Error& e) {
        if (e.kind() != moe::ErrorKind::kUsage) throw;
        spdlog::warn("--suite {}: {} is left out: {}", o.suite, name, e.what());
      }
      continue;
    }
    append(moe::eval::load_tasks(name, o.task_dir, shots_for(name, o), o.split));
  }
  return tasks;
}

moe::eval::CheckpointReport evaluate(const std::string& dir, const Options& o,
                                     const std::vector<moe::eval::Task>& tasks,
                                     moe::Backend& backend) {
  using namespace moe::eval;
  const auto t0 = std::chrono::steady_clock::now();
  moe::LoadedCheckpoint ck = moe::load_model_checkpoint(dir, backend, o.batch_size);
  MoeScoring model(*ck.model, o.batch_size);
  const moe::data::Tokenizer& tok = *ck.tokenizer;
  const Encoder encode = [&tok](const std::string& s) { return tok.encode(s); };
  const int32_t eos = tok.eos_id();
  CheckpointReport r;
  r.checkpoint = ck.dir;
  r.step = ck.step;
  r.arch = ck.config.model.arch;
  for (const auto& l : ck.config.loss.losses) r.losses += (r.losses.empty() ? "" : ",") + l;
  r.params_total = ck.model->n_params_total();
  r.params_active = ck.model->n_params_active();
  r.max_length = ck.config.model.max_seq_len;
  spdlog::info("checkpoint {} (step {}): {} {}, losses {}", r.checkpoint, r.step, r.arch,
               r.params_total, r.losses);
  for (const auto& f : o.ppl) {
    r.ppl.push_back(evaluate_perplexity({f}, o.jsonl_field, model, encode, eos));
  }
  ZeroShotOptions zs;
  zs.limit = o.limit;
  zs.bootstrap_iters = o.bootstrap_iters;
  zs.start_token = eos;
  zs.kv_cache = !o.no_kv_cache;
  for (const Task& t : tasks) r.tasks.push_back(evaluate_task(t, model, encode, zs));
  r.groups = aggregate_groups(r.tasks);
  for (const auto& f : o.routing) {
    r.routing.push_back(evaluate_routing({f}, o.jsonl_field, model, encode, eos,
                                         /*overlap_measured=*/true, o.routing_max_tokens));
  }
  // Routing traces recorded by moeinfer --trace: pathway statistics of the recorded selections.
  const uint64_t fingerprint =
      o.routing_traces.empty() ? 0 : moe::routing::model_fingerprint(*ck.model);
  for (const auto& f : o.routing_traces) {
    const moe::routing::RoutingTrace trace = moe::routing::read_trace(f);
    moe::routing::check_trace_model(trace, fingerprint, f);
    moe::routing::RoutingAccumulator acc(/*overlap_measured=*/false);  // ids only
    acc.add(moe::routing::trace_as_routing(trace));
    RoutingEvalResult res;
    res.source = f + " (trace)";
    res.summary = acc.finish();
    r.routing.push_back(std::move(res));
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

// --dump-requests DIR: the rendered (context, continuation) pairs of every task, one JSONL file
// per task, for checking the prompts against the harness (tools/reference/check_task_prompts.py).
// MMLU lines also carry the CSV record as parsed ("fields"), and DIR/<task>.shots.jsonl the dev
// records of the shots, so that the check compares the parse with Python's csv module.
void dump_requests(const std::vector<moe::eval::Task>& tasks, const std::string& dir) {
  for (const auto& t : tasks) {
    const std::string path = dir + "/" + t.name + ".jsonl";
    std::ofstream f(path, std::ios::binary);
    MOE_USAGE_CHECK(f.good(), "--dump-requests: cannot write {}", path);
    for (const auto& d : t.docs) {
      nlohmann::json reqs = nlohmann::json::array();
      for (const auto& r : d.requests) reqs.push_back({r.context, r.continuation});
      nlohmann::json line = {{"requests", reqs}, {"gold", d.gold}, {"choice_chars", d.choice_chars}};
      if (!d.labels.empty()) line["labels"] = d.labels;
      if (!d.fields.empty()) line["fields"] = d.fields;
      f << line.dump() << "\n";
    }
    if (!t.shot_fields.empty()) {  // the few-shot records, for the same check
      std::ofstream shots(dir + "/" + t.name + ".shots.jsonl", std::ios::binary);
      for (const auto& f : t.shot_fields) shots << nlohmann::json(f).dump() << "\n";
      MOE_USAGE_CHECK(shots.good(), "--dump-requests: cannot write {}.shots.jsonl", t.name);
    }
    spdlog::info("wrote {} ({} documents)", path, t.docs.size());
  }
}

// --log-samples DIR: one JSONL per task (DIR/samples_<task>.jsonl; DIR/checkpoint_<i>/... when
// several checkpoints are given), one line per scored document with the fields of the
// harness's samples files: doc_id, the prompt, the choices, target (the gold index),
// filtered_resps ([log-likelihood, is_greedy] per choice), the token and character counts of each
// choice, the acc and acc_norm predictions (argmax of ll and of ll / chars) and the metrics.
void log_samples(const moe::eval::CheckpointReport& r, const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  for (const auto& t : r.tasks) {
    const std::string path = dir + "/samples_" + t.name + ".jsonl", tmp = path + ".tmp";
    {
      std::ofstream f(tmp, std::ios::binary);
      MOE_USAGE_CHECK(f.good(), "--log-samples: cannot write {}", tmp);
      for (const auto& s : t.samples) {
        nlohmann::json resps = nlohmann::json::array();
        for (size_t i = 0; i < s.lls.size(); ++i) resps.push_back({s.lls[i], bool(s.greedy[i])});
        nlohmann::json line = {{"doc_id", s.doc_id}, {"prompt", s.prompt},
                               {"choices", s.choices}, {"target", s.gold},
                               {"filtered_resps", resps}, {"n_tokens", s.n_tokens},
                               {"n_chars", s.n_chars}, {"acc", s.acc}};
        if (s.pred >= 0) line["pred"] = s.pred;
        if (t.output == moe::eval::TaskOutput::kMultipleChoice) {
          line["pred_norm"] = s.pred_norm;
          line["acc_norm"] = s.acc_norm;
        }
        f << line.dump() << "\n";
      }
      MOE_CHECK(f.good(), "--log-samples: write failed: {}", tmp);
    }
    fs::rename(tmp, path);
    spdlog::info("wrote {} ({} documents)", path, t.samples.size());
  }
}

int run(const Options& o) {
  moe::set_log_level(o.log_level);
  if (!o.dump_requests.empty()) {
    dump_requests(load_tasks(o), o.dump_requests);
    if (o.checkpoints.empty()) return 0;
  }
  MOE_USAGE_CHECK(!o.checkpoints.empty(), "--checkpoint DIR is required");
  MOE_USAGE_CHECK(!o.ppl.empty() || !o.tasks.empty() || !o.suite.empty() || !o.routing.empty() ||
                      !o.routing_traces.empty(),
                  "nothing to do: give --ppl FILE, --tasks LIST --task-dir DIR, --suite paper, "
                  "--routing FILE and/or --routing-trace FILE");
  MOE_USAGE_CHECK(o.batch_size >= 1, "--batch-size must be >= 1, got {}", o.batch_size);
  MOE_USAGE_CHECK(o.limit >= 0, "--limit must be >= 0, got {}", o.limit);
  const std::vector<moe::eval::Task> tasks = load_tasks(o);  // input errors before any model work
  MOE_USAGE_CHECK(o.log_samples.empty() || !tasks.empty(), "--log-samples DIR needs --tasks LIST "
                  "(it writes the per-document scores of zero-shot tasks)");
  auto backend = moe::make_backend(o.device, o.threads);
  std::vector<moe::eval::CheckpointReport> reports;
  for (const auto& dir : o.checkpoints) reports.push_back(evaluate(dir, o, tasks, *backend));
  if (!o.log_samples.empty()) {
    for (size_t i = 0; i < reports.size(); ++i) {
      log_samples(reports[i], reports.size() == 1
                                  ? o.log_samples
                                  : o.log_samples + "/checkpoint_" + std::to_string(i));
    }
  }
  moe::eval::RunSettings settings;
  settings.device = o.device;
  settings.batch_size = o.batch_size;
  settings.limit = o.limit;
  settings.bootstrap_iters = o.bootstrap_iters;
  settings.threads = o.threads;
  settings.kv_cache = !o.no_kv_cache;
  if (reports.size() == 1) {
    std::fputs(moe::eval::format_single_report(reports[0]).c_str(), stdout);
  } else {
    std::fputs(moe::eval::format_side_by_side(reports).c_str(), stdout);
  }
  if (!o.suite.empty()) std::fputs(("\n" + moe::eval::format_paper_table(reports)).c_str(), stdout);
  if (!o.out.empty()) {
    nlohmann::json out = moe::eval::reports_to_json(reports, settings);
    if (!o.suite.empty()) {  // the suite's row in each checkpoint's moeeval section
      if (reports.size() == 1) {
        out["moeeval"]["paper_suite"] = moe::eval::paper_table_json(reports[0]);
      } else {
        for (size_t i = 0; i < reports.size(); ++i) {
          out["checkpoints"][i]["moeeval"]["paper_suite"] = moe::eval::paper_table_json(reports[i]);
        }
      }
    }
    const std::string text = out.dump(2);
    const std::string tmp = o.out + ".tmp";
    {
      std::ofstream f(tmp, std::ios::binary);
      MOE_USAGE_CHECK(f.good(), "--out {}: cannot write {}", o.out, tmp);
      f << text << "\n";
      MOE_CHECK(f.good(), "--out {}: write failed", o.out);
    }
    std::rename(tmp.c_str(), o.out.c_str());
    spdlog::info("wrote {}", o.out);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  moe::prefer_passive_omp_wait(argv);  // before any OpenMP region: see omp_wait_policy.h
  Options o;
  CLI::App app{"moeeval: perplexity, zero-shot accuracy (lm-evaluation-harness conventions) and "
               "routing/pathway statistics of moetrain checkpoints"};
  app.add_option("--checkpoint", o.checkpoints,
                 "checkpoint directory, or a run directory (its newest checkpoint); repeatable")
      ->take_all();
  app.add_option("--ppl", o.ppl, "text files / directories / globs / .jsonl to score")->take_all();
  app.add_option("--tasks", o.tasks,
                 "comma-separated tasks: hellaswag, piqa, arc_easy, arc_challenge, openbookqa, "
                 "boolq, lambada_openai, copa, winogrande, sciq, mmlu (or mmlu_stem, "
                 "mmlu_other, mmlu_social_sciences, mmlu_humanities, mmlu_<subject>), "
                 "truthfulqa_mc1, truthfulqa_mc2, all, or a user task NAME (DIR/NAME.jsonl) / "
                 "FILE.jsonl");
  app.add_option("--suite", o.suite,
                 "paper: the paper's six tasks (mmlu, arc_easy, arc_challenge, piqa, hellaswag, "
                 "truthfulqa_mc2) and one table row per checkpoint beside the paper's numbers");
  app.add_option("--num-fewshot", o.num_fewshot,
                 "MMLU: K examples from the dev split before each question (the harness's "
                 "first_n sampler; 5 for the usual 5-shot); other tasks stay 0-shot");
  app.add_option("--task-dir", o.task_dir, "folder of task files (e.g. data/zeroshot)");
  app.add_option("--limit", o.limit, "score only the first N documents of each task (0: all)");
  app.add_option("--routing", o.routing, "texts to measure the routing statistics on")->take_all();
  app.add_option("--routing-trace", o.routing_traces,
                 "routing traces recorded by moeinfer --trace on this checkpoint: pathway "
                 "statistics of the recorded selections (probability statistics are NaN)")
      ->take_all();
  app.add_option("--routing-max-tokens", o.routing_max_tokens, "stop routing after N tokens (0: all)");
  app.add_option("--split", o.split,
                 "the split to score where a task folder holds several (test, validation/dev): "
                 "arc_easy, arc_challenge, openbookqa; default: test if present");
  app.add_option("--log-samples", o.log_samples,
                 "write each task's per-document scores to DIR/samples_<task>.jsonl (the fields "
                 "of the harness's samples files)");
  app.add_option("--out", o.out, "write the results JSON (lm-eval harness shape) here");
  app.add_option("--batch-size", o.batch_size, "sequences per forward pass");
  app.add_flag("--no-kv-cache", o.no_kv_cache,
               "zero-shot: recompute a context shared by several choices once per choice instead "
               "of once through the KV cache (same scores; for speed comparisons)");
  app.add_option("--bootstrap-iters", o.bootstrap_iters,
                 "bootstrap resamples for lambada's perplexity stderr (harness default 100000)");
  app.add_option("--jsonl-field", o.jsonl_field, "text field of .jsonl corpora");
  app.add_option("--device", o.device, "cpu, cuda or cuda:N");
  app.add_option("--threads", o.threads, "CPU threads (0: all cores)")
      ->check(CLI::Range(0, 1024));  // the limit of train.threads: OpenMP crashed at 100000
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error, off");
  app.add_option("--dump-requests", o.dump_requests,
                 "write each task's rendered requests to DIR/<task>.jsonl (needs no checkpoint)");
  const int parsed = moe::parse_command_line(app, argc, argv);
  if (parsed >= 0) return parsed;
  try {
    return run(o);
  } catch (const moe::Error& e) {
    std::fprintf(stderr, "moeeval: error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moeeval: error: %s\n", e.what());
    return 1;
  }
}
