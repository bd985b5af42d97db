// Flattening and the harness-shaped JSON of moeeval's results (see eval_report.h).
#include "eval/eval_report.h"

#include <chrono>
#include <cmath>
#include <filesystem>

#include <spdlog/fmt/fmt.h>

namespace moe::eval {
namespace {

nlohmann::json num_or_na(const std::optional<double>& v) {
  if (!v || !std::isfinite(*v)) return "N/A";
  return *v;
}

nlohmann::json finite_or_null(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
}

std::string file_label(const std::string& source) {
  // The section key of a perplexity / routing source: the specs as given.
  return source;
}

const char* output_type(TaskOutput o) {
  return o == TaskOutput::kLoglikelihood ? "loglikelihood" : "multiple_choice";
}

}  // namespace

std::optional<double> zero_shot_average(const CheckpointReport& r, bool prefer_acc_norm) {
  double sum = 0;
  int n = 0;
  for (const TaskResult& t : r.tasks) {
    const MetricValue* m = prefer_acc_norm && t.find("acc_norm") ? t.find("acc_norm") : t.find("acc");
    if (!m) continue;
    sum += m->value;
    ++n;
  }
  if (n == 0) return std::nullopt;
  return sum / n;
}

std::vector<FlatMetric> flatten(const CheckpointReport& r) {
  std::vector<FlatMetric> out;
  for (const PerplexityResult& p : r.ppl) {
    const std::string f = std::filesystem::path(p.source).filename().string();
    out.push_back({"perplexity", f + " ppl", p.perplexity, std::nullopt, false});
    out.push_back({"perplexity", f + " bits/byte", p.bits_per_byte, std::nullopt, false});
  }
  for (const TaskResult& t : r.tasks) {
    for (const auto& [name, m] : t.metrics) {
      out.push_back({"zero-shot", t.name + " " + name, m.value, m.stderr_value, name != "perplexity"});
    }
  }
  if (auto a = zero_shot_average(r, false)) out.push_back({"zero-shot", "average acc", *a, {}, true});
  if (auto a = zero_shot_average(r, true)) {
    out.push_back({"zero-shot", "average acc_norm|acc", *a, {}, true});
  }
  for (const RoutingEvalResult& re : r.routing) {
    const RoutingSummary& s = re.summary;
    const std::string f = std::filesystem::path(re.source).filename().string() + " ";
    out.push_back({"routing", f + "entropy", s.entropy, {}, false});
    out.push_back({"routing", f + "entropy/logE", s.entropy_normalized, {}, false});
    out.push_back({"routing", f + "top-k mass", s.topk_mass, {}, true});
    out.push_back({"routing", f + "overlap cos^2", s.overlap, {}, false});
    out.push_back({"routing", f + "load max/mean", s.load_max_over_mean, {}, false});
    out.push_back({"routing", f + "load cv", s.load_cv, {}, false});
    out.push_back({"routing", f + "pathway row entropy", s.row_entropy, {}, false});
    out.push_back({"routing", f + "pathway top-1 acc", s.top1_accuracy, {}, true});
  }
  return out;
}

nlohmann::json report_to_json(const CheckpointReport& r, const RunSettings& s) {
  using nlohmann::json;
  json j;
  json results = json::object(), configs = json::object(), versions = json::object();
  json nshot = json::object(), hib = json::object(), nsamples = json::object();
  for (const TaskResult& t : r.tasks) {
    json res = {{"name", t.name}, {"alias", t.name}, {"sample_len", t.n_effective}};
    json h = json::object();
    for (const auto& [name, m] : t.metrics) {
      res[name + ",none"] = m.value;
      res[name + "_stderr,none"] = num_or_na(m.stderr_value);
      h[name] = name != "perplexity";
    }
    results[t.name] = res;
    configs[t.name] = {{"task", t.name},
                       {"dataset_path", t.source},
                       {"test_split", t.split},
                       {"output_type", output_type(t.output)},
                       {"target_delimiter", " "},
                       {"fewshot_delimiter", "\n\n"},
                       {"num_fewshot", 0},
                       {"metadata", {{"version", t.version}}}};
    if (!t.note.empty()) configs[t.name]["moeeval_note"] = t.note;
    versions[t.name] = t.version;
    nshot[t.name] = 0;
    hib[t.name] = h;
    nsamples[t.name] = {{"original", t.n_original}, {"effective", t.n_effective}};
  }
  j["results"] = results;
  j["group_subtasks"] = json::object();
  j["configs"] = configs;
  j["versions"] = versions;
  j["n-shot"] = nshot;
  j["higher_is_better"] = hib;
  j["n-samples"] = nsamples;
  j["config"] = {{"model", "moeeval"},
                 {"model_args", "checkpoint=" + r.checkpoint},
                 {"model_num_parameters", r.params_total},
                 {"model_dtype", "float32"},
                 {"batch_size", std::to_string(s.batch_size)},
                 {"batch_sizes", json::array()},
                 {"device", s.device},
                 {"use_cache", nullptr},
                 {"limit", s.limit > 0 ? json(s.limit) : json()},
                 {"bootstrap_iters", s.bootstrap_iters},
                 {"gen_kwargs", nullptr},
                 {"random_seed", 0},
                 {"numpy_seed", 1234},
                 {"torch_seed", 1234},
                 {"fewshot_seed", 1234}};
  j["git_hash"] = nullptr;
  j["date"] = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
                  .count();
  j["max_length"] = r.max_length;
  j["model_name"] = r.checkpoint;
  j["total_evaluation_time_seconds"] = fmt::format("{:.3f}", r.seconds);

  json ppl = json::object();
  for (const PerplexityResult& p : r.ppl) {
    ppl[file_label(p.source)] = {{"documents", p.documents},
                                 {"tokens", p.tokens},
                                 {"bytes", p.bytes},
                                 {"words", p.words},
                                 {"nll_sum", p.nll_sum},
                                 {"perplexity", finite_or_null(p.perplexity)},
                                 {"bits_per_byte", finite_or_null(p.bits_per_byte)},
                                 {"byte_perplexity", finite_or_null(p.byte_perplexity)},
                                 {"word_perplexity", finite_or_null(p.word_perplexity)},
                                 {"tokens_per_second", p.stats.tokens_per_second()}};
  }
  j["perplexity"] = ppl;
  json routing = json::object();
  for (const RoutingEvalResult& re : r.routing) {
    json rj = routing_summary_to_json(re.summary, true);
    rj["tokens_per_second"] = re.stats.tokens_per_second();
    routing[file_label(re.source)] = rj;
  }
  j["routing"] = routing;
  ScoringStats zs;
  for (const TaskResult& t : r.tasks) zs.add(t.stats);
  const auto avg = zero_shot_average(r, false), avg_norm = zero_shot_average(r, true);
  j["moeeval"] = {{"checkpoint", r.checkpoint},
                  {"step", r.step},
                  {"arch", r.arch},
                  {"losses", r.losses},
                  {"params_total", r.params_total},
                  {"params_active", r.params_active},
                  {"zero_shot_average", {{"acc", avg ? json(*avg) : json()},
                                         {"acc_norm_or_acc", avg_norm ? json(*avg_norm) : json()}}},
                  {"zero_shot_tokens_per_second", zs.tokens_per_second()},
                  {"zero_shot_computed_tokens_per_second", zs.computed_tokens_per_second()},
                  {"zero_shot_request_tokens", zs.request_tokens},
                  {"zero_shot_computed_tokens", zs.input_tokens},
                  {"zero_shot_padded_tokens", zs.padded_tokens},
                  {"zero_shot_seconds", zs.seconds},
                  {"zero_shot_cached_contexts", zs.cached_contexts},
                  {"zero_shot_kv_cache", s.kv_cache},
                  {"zero_shot_forward_passes", zs.forward_passes},
                  {"zero_shot_rows", zs.rows},
                  {"zero_shot_requests", zs.requests}};
  return j;
}

nlohmann::json reports_to_json(const std::vector<CheckpointReport>& rs, const RunSettings& s) {
  if (rs.size() == 1) return report_to_json(rs[0], s);
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& r : rs) arr.push_back(report_to_json(r, s));
  return {{"checkpoints", arr}};
}

}  // namespace moe::eval
