// Zero-shot task evaluation: requests -> batched scores -> harness metrics (see zero_shot.h).
#include "eval/zero_shot.h"

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "eval/task_metrics.h"

namespace moe::eval {

const MetricValue* TaskResult::find(const std::string& metric) const {
  for (const auto& [name, value] : metrics) {
    if (name == metric) return &value;
  }
  return nullptr;
}

namespace {
MetricValue mean_metric(const std::vector<double>& xs) { return {mean_of(xs), mean_stderr(xs)}; }
}  // namespace

TaskResult aggregate_task(const Task& task, int64_t n_docs,
                          const std::vector<ScoredRequest>& scores, int64_t bootstrap_iters) {
  TaskResult res;
  res.name = task.name;
  res.split = task.split;
  res.source = task.source;
  res.note = task.note;
  res.output = task.output;
  res.version = task.version;
  res.num_fewshot = task.num_fewshot;
  res.dataset_name = task.dataset_name;
  res.description = task.description;
  res.n_original = static_cast<int64_t>(task.docs.size());
  res.n_effective = n_docs;
  std::vector<double> acc, acc_norm, lls;
  size_t next = 0;
  for (int64_t d = 0; d < n_docs; ++d) {
    const TaskDoc& doc = task.docs[d];
    std::vector<double> doc_lls;
    bool greedy = true;
    SampleRecord rec;
    rec.doc_id = d;
    rec.gold = doc.gold;
    rec.n_chars = doc.choice_chars;
    for (size_t r = 0; r < doc.requests.size(); ++r) {
      MOE_CHECK(next < scores.size(), "aggregate: {} scores for the requests of {} documents",
                scores.size(), n_docs);
      doc_lls.push_back(scores[next].ll);
      greedy = greedy && scores[next].greedy;
      if (r == 0) rec.prompt = doc.requests[r].context;
      rec.choices.push_back(doc.requests[r].continuation);
      rec.greedy.push_back(scores[next].greedy);
      rec.n_tokens.push_back(scores[next].n_targets);
      ++next;
    }
    rec.lls = doc_lls;
    switch (task.output) {
      case TaskOutput::kMultipleChoice: {
        if (task.metric == TaskMetric::kMc2) {
          acc.push_back(mc2_score(doc_lls, doc.labels));
          break;
        }
        const ChoiceScores s = score_choices(doc_lls, doc.choice_chars, doc.gold);
        acc.push_back(s.acc);
        acc_norm.push_back(s.acc_norm);
        std::vector<double> normed(doc_lls.size());
        for (size_t i = 0; i < normed.size(); ++i) normed[i] = doc_lls[i] / doc.choice_chars.at(i);
        rec.pred = argmax_first(doc_lls);
        rec.pred_norm = argmax_first(normed);
        rec.acc = s.acc;
        rec.acc_norm = s.acc_norm;
        break;
      }
      case TaskOutput::kMultipleInput:
        acc.push_back(argmax_first(doc_lls) == doc.gold ? 1.0 : 0.0);
        rec.pred = argmax_first(doc_lls);
        rec.acc = acc.back();
        break;
      case TaskOutput::kLoglikelihood:
        lls.push_back(doc_lls.at(0));
        acc.push_back(greedy ? 1.0 : 0.0);
        rec.acc = acc.back();
        break;
    }
    res.samples.push_back(std::move(rec));
  }
  MOE_CHECK(next == scores.size(), "aggregate: {} scores left over", scores.size() - next);
  if (task.output == TaskOutput::kLoglikelihood) {
    res.metrics.push_back({"perplexity", {perplexity_from_lls(lls),
                                          bootstrap_perplexity_stderr(lls, bootstrap_iters)}});
    res.metrics.push_back({"acc", mean_metric(acc)});
  } else {
    res.metrics.push_back({"acc", mean_metric(acc)});
    if (task.reports_acc_norm) res.metrics.push_back({"acc_norm", mean_metric(acc_norm)});
  }
  return res;
}

TaskResult evaluate_task(const Task& task, ScoringModel& model, const Encoder& encode,
                         const ZeroShotOptions& options) {
  const int64_t total = static_cast<int64_t>(task.docs.size());
  const int64_t n_docs = options.limit > 0 ? std::min(options.limit, total) : total;
  // One request may become several pieces (a continuation longer than the context).
  std::vector<TokenRequest> pieces;
  std::vector<size_t> first_piece;  // per request, then one past the end
  for (int64_t d = 0; d < n_docs; ++d) {
    for (const LoglikRequest& r : task.docs[d].requests) {
      first_piece.push_back(pieces.size());
      for (TokenRequest& p :
           make_token_requests(r, encode, options.start_token, model.max_seq())) {
        pieces.push_back(std::move(p));
      }
    }
  }
  first_piece.push_back(pieces.size());
  const size_t n_requests = first_piece.size() - 1;
  spdlog::info("{}: {} documents, {} requests, {} scored pieces", task.name, n_docs, n_requests,
               pieces.size());
  LoglikScorer scorer(model, int64_t{1} << 28, options.kv_cache);
  const std::vector<ScoredRequest> piece_scores = scorer.score(pieces, options.start_token);
  std::vector<ScoredRequest> scores(n_requests);
  for (size_t i = 0; i < n_requests; ++i) {
    for (size_t p = first_piece[i]; p < first_piece[i + 1]; ++p) {
      scores[i].ll += piece_scores[p].ll;
      scores[i].greedy = scores[i].greedy && piece_scores[p].greedy;
      scores[i].n_targets += piece_scores[p].n_targets;
    }
  }
  TaskResult res = aggregate_task(task, n_docs, scores, options.bootstrap_iters);
  res.stats = scorer.stats();
  return res;
}

}  // namespace moe::eval
