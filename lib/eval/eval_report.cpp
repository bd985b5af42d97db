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
  for (const ResultRow& row : result_rows(r.tasks, r.groups)) {
    if (row.depth != 0) continue;
    const MetricValue* m = nullptr;
    if (row.is_group) {
      m = r.groups[row.index].find("acc");
    } else {
      const TaskResult& t = r.tasks[row.index];
      m = prefer_acc_norm && t.find("acc_norm") ? t.find("acc_norm") : t.find("acc");
    }
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
  // Groups and the tasks in no group (MMLU's 57 subjects are in the JSON, not in the tables).
  for (const ResultRow& row : result_rows(r.tasks, r.groups)) {
    if (row.is_group) {
      const GroupResult& g = r.groups[row.index];
      for (const auto& [name, m] : g.metrics) {
        out.push_back({"zero-shot", g.name + " " + name, m.value, m.stderr_value, true});
      }
      continue;
    }
    if (row.depth != 0) continue;
    const TaskResult& t = r.tasks[row.index];
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
  json groups_json = json::object(), group_subtasks = json::object();
  for (const ResultRow& row : result_rows(r.tasks, r.groups)) {
    if (row.is_group) {
      const GroupResult& g = r.groups[row.index];
      json res = {{"name", g.name}, {"alias", row_alias(row.depth == 0 ? g.name : g.alias, row.depth)},
                  {"sample_len", g.n}};
      json h = json::object();
      for (const auto& [name, m] : g.metrics) {
        res[name + ",none"] = m.value;
        res[name + "_stderr,none"] = num_or_na(m.stderr_value);
        h[name] = true;
      }
      results[g.name] = res;
      groups_json[g.name] = res;
      group_subtasks[g.name] = g.subtasks;
      versions[g.name] = g.version;
      hib[g.name] = h;
      continue;
    }
    const TaskResult& t = r.tasks[row.index];
    json res = {{"name", t.name},
                {"alias", row_alias(row.depth == 0 ? t.name : task_alias(t), row.depth)},
                {"sample_len", t.n_effective}};
    json h = json::object();
    for (const auto& [name, m] : t.metrics) {
      res[name + ",none"] = m.value;
      res[name + "_stderr,none"] = num_or_na(m.stderr_value);
      h[name] = name != "perplexity";
    }
    results[t.name] = res;
    json cfg = {{"task", t.name}};
    if (!t.dataset_name.empty()) cfg["dataset_name"] = t.dataset_name;
    cfg["dataset_path"] = t.source;
    cfg["test_split"] = t.split;
    if (!t.description.empty()) {
      cfg["fewshot_split"] = "dev";
      cfg["description"] = t.description;
      cfg["fewshot_config"] = {{"sampler", "first_n"}};
    }
    cfg["output_type"] = output_type(t.output);
    cfg["target_delimiter"] = " ";
    cfg["fewshot_delimiter"] = "\n\n";
    cfg["num_fewshot"] = t.num_fewshot;
    cfg["metadata"] = {{"version", t.version}};
    configs[t.name] = cfg;
    if (!t.note.empty()) configs[t.name]["moeeval_note"] = t.note;
    versions[t.name] = t.version;
    nshot[t.name] = t.num_fewshot;
    hib[t.name] = h;
    nsamples[t.name] = {{"original", t.n_original}, {"effective", t.n_effective}};
  }
  j["results"] = results;
  if (!groups_json.empty()) j["groups"] = groups_json;
  j["group_subtasks"] = group_subtasks;
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
  // Speed per group and per task in no group: questions (samples) per second as moeinfer's
  // serving mode will time them, and seconds per question.
  json speed = json::object();
  auto speed_entry = [](int64_t n, const ScoringStats& st) {
    return json{{"samples", n},
                {"seconds", st.seconds},
                {"samples_per_second", st.seconds > 0 ? n / st.seconds : 0.0},
                {"seconds_per_sample", n > 0 ? st.seconds / static_cast<double>(n) : 0.0},
                {"tokens_per_second", st.tokens_per_second()},
                {"computed_tokens_per_second", st.computed_tokens_per_second()}};
  };
  for (const ResultRow& row : result_rows(r.tasks, r.groups)) {
    if (row.is_group) {
      const GroupResult& g = r.groups[row.index];
      speed[g.name] = speed_entry(g.n, g.stats);
    } else if (row.depth == 0) {
      const TaskResult& t = r.tasks[row.index];
      speed[t.name] = speed_entry(t.n_effective, t.stats);
    }
  }
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
                  {"zero_shot_requests", zs.requests},
                  {"zero_shot_speed", speed}};
  return j;
}

nlohmann::json reports_to_json(const std::vector<CheckpointReport>& rs, const RunSettings& s) {
  if (rs.size() == 1) return report_to_json(rs[0], s);
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& r : rs) arr.push_back(report_to_json(r, s));
  return {{"checkpoints", arr}};
}

}  // namespace moe::eval
