// Reads YAML into the typed Config, applies `--set a.b=value` overrides, validates, and writes the
// resolved config back out.
//
// Every key is one row of a field table (full path, type, member pointer): parsing, overrides,
// the "did you mean" suggestions and config_to_yaml all walk the same table, so a key added to
// config.h and to the table is handled everywhere at once. Range checks live in
// config_validate.cpp; validate() runs after the overrides so that a cross-field rule
// (top_k <= n_experts) sees the final values.
// Every failure is a usage error (exit code 2) that names the key and, when the YAML came from a
// file, the file and line.
#include "config/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "config/config_internal.h"
#include "core/error.h"

namespace moe {
namespace {

// Where a value came from: "configs/x.yaml:12" or "--set train.lr=abc".
std::string location(const std::string& source, const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return source;
  return fmt::format("{}:{}", source, mark.line + 1);
}

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null: return "nothing (null)";
    case YAML::NodeType::Scalar: return fmt::format("'{}'", node.Scalar());
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    default: return "an undefined value";
  }
}

[[noreturn]] void type_error(const std::string& key, const std::string& expected,
                             const YAML::Node& node, const std::string& where) {
  MOE_USAGE_FAIL("{}: {}: expected {}, found {}", where, key, expected, describe(node));
}

// ---- scalar readers ------------------------------------------------------------------------

int64_t read_int(const std::string& key, const YAML::Node& node, const std::string& where) {
  if (!node.IsScalar()) type_error(key, "an integer", node, where);
  int64_t v = 0;
  if (YAML::convert<int64_t>::decode(node, v)) return v;
  // Accept integral floating-point spellings such as 1e6 for sizes and step counts.
  double d = 0;
  if (YAML::convert<double>::decode(node, d) && std::isfinite(d) && d == std::floor(d) &&
      std::fabs(d) < 9.0e15) {
    return static_cast<int64_t>(d);
  }
  type_error(key, "an integer", node, where);
}

double read_double(const std::string& key, const YAML::Node& node, const std::string& where) {
  if (!node.IsScalar()) type_error(key, "a number", node, where);
  double v = 0;
  // .inf and .nan are refused here, where the file and line are known: no key takes them, and
  // a config holding one could not be written back out and read again.
  if (!YAML::convert<double>::decode(node, v)) type_error(key, "a number", node, where);
  if (!std::isfinite(v)) type_error(key, "a finite number", node, where);
  return v;
}

bool read_bool(const std::string& key, const YAML::Node& node, const std::string& where) {
  if (!node.IsScalar()) type_error(key, "true or false", node, where);
  bool v = false;
  if (!YAML::convert<bool>::decode(node, v)) type_error(key, "true or false", node, where);
  return v;
}

std::string read_string(const std::string& key, const YAML::Node& node, const std::string& where) {
  if (node.IsNull()) return "";
  if (!node.IsScalar()) type_error(key, "a string", node, where);
  return node.Scalar();
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(text);
  while (std::getline(in, item, ',')) {
    auto b = item.find_first_not_of(" \t");
    auto e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

// A list of strings: a YAML sequence, or one scalar. With comma_list, the scalar "lb,sp" is split
// at commas (the loss names); otherwise it is one item (a path may contain a comma).
std::vector<std::string> read_list(const std::string& key, const YAML::Node& node,
                                   const std::string& where, bool comma_list) {
  if (node.IsNull()) return {};
  if (node.IsScalar()) {
    if (comma_list) return split_commas(node.Scalar());
    return {node.Scalar()};
  }
  if (!node.IsSequence()) type_error(key, "a list of strings", node, where);
  std::vector<std::string> out;
  for (const auto& item : node) {
    if (!item.IsScalar()) type_error(key, "a list of strings", item, where);
    out.push_back(item.Scalar());
  }
  return out;
}

// ---- the field table -----------------------------------------------------------------------

struct Field {
  std::string path;  // "model.n_experts"
  std::function<void(Config&, const YAML::Node&, const std::string& where)> read;
  std::function<void(const Config&, YAML::Emitter&)> emit;
};

std::string format_double(double v) {
  // fmt's shortest representation round-trips exactly; keep a '.' or exponent so the YAML value
  // still reads as a float to a human.
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

template <typename Section>
struct FieldAdder {
  std::vector<Field>& fields;
  std::string section;
  Section Config::*sec;

  void add_int(const char* name, int64_t Section::*m) {
    std::string path = section + "." + name;
    auto s = sec;
    fields.push_back({path,
                      [=](Config& c, const YAML::Node& n, const std::string& w) {
                        (c.*s).*m = read_int(path, n, w);
                      },
                      [=](const Config& c, YAML::Emitter& e) { e << (c.*s).*m; }});
  }
  void add_double(const char* name, double Section::*m) {
    std::string path = section + "." + name;
    auto s = sec;
    fields.push_back({path,
                      [=](Config& c, const YAML::Node& n, const std::string& w) {
                        (c.*s).*m = read_double(path, n, w);
                      },
                      [=](const Config& c, YAML::Emitter& e) {
                        e << YAML::Value << format_double((c.*s).*m);
                      }});
  }
  void add_bool(const char* name, bool Section::*m) {
    std::string path = section + "." + name;
    auto s = sec;
    fields.push_back({path,
                      [=](Config& c, const YAML::Node& n, const std::string& w) {
                        (c.*s).*m = read_bool(path, n, w);
                      },
                      [=](const Config& c, YAML::Emitter& e) { e << YAML::TrueFalseBool << (c.*s).*m; }});
  }
  void add_string(const char* name, std::string Section::*m) {
    std::string path = section + "." + name;
    auto s = sec;
    fields.push_back({path,
                      [=](Config& c, const YAML::Node& n, const std::string& w) {
                        (c.*s).*m = read_string(path, n, w);
                      },
                      [=](const Config& c, YAML::Emitter& e) {
                        e << YAML::DoubleQuoted << (c.*s).*m;
                      }});
  }
  void add_list(const char* name, std::vector<std::string> Section::*m, bool comma_list) {
    std::string path = section + "." + name;
    auto s = sec;
    fields.push_back({path,
                      [=](Config& c, const YAML::Node& n, const std::string& w) {
                        (c.*s).*m = read_list(path, n, w, comma_list);
                      },
                      [=](const Config& c, YAML::Emitter& e) {
                        e << YAML::Flow << YAML::BeginSeq;
                        for (const auto& item : (c.*s).*m) e << YAML::DoubleQuoted << item;
                        e << YAML::EndSeq;
                      }});
  }
};

std::vector<Field> build_fields() {
  std::vector<Field> f;
  FieldAdder<ModelConfig> model{f, "model", &Config::model};
  model.add_string("arch", &ModelConfig::arch);
  model.add_int("vocab_size", &ModelConfig::vocab_size);
  model.add_int("d_model", &ModelConfig::d_model);
  model.add_int("n_layers", &ModelConfig::n_layers);
  model.add_int("n_heads", &ModelConfig::n_heads);
  model.add_int("n_kv_heads", &ModelConfig::n_kv_heads);
  model.add_int("head_dim", &ModelConfig::head_dim);
  model.add_int("ffn_dim", &ModelConfig::ffn_dim);
  model.add_int("n_experts", &ModelConfig::n_experts);
  model.add_int("top_k", &ModelConfig::top_k);
  model.add_int("expert_ffn_dim", &ModelConfig::expert_ffn_dim);
  model.add_int("n_shared_experts", &ModelConfig::n_shared_experts);
  model.add_int("shared_expert_ffn_dim", &ModelConfig::shared_expert_ffn_dim);
  model.add_int("dense_layers", &ModelConfig::dense_layers);
  model.add_bool("norm_topk_prob", &ModelConfig::norm_topk_prob);
  model.add_bool("tie_embeddings", &ModelConfig::tie_embeddings);
  model.add_double("rope_theta", &ModelConfig::rope_theta);
  model.add_double("norm_eps", &ModelConfig::norm_eps);
  model.add_int("max_seq_len", &ModelConfig::max_seq_len);
  model.add_double("init_std", &ModelConfig::init_std);
  model.add_double("capacity_factor", &ModelConfig::capacity_factor);

  FieldAdder<LossConfig> loss{f, "loss", &Config::loss};
  loss.add_list("losses", &LossConfig::losses, /*comma_list=*/true);
  loss.add_double("lb_coef", &LossConfig::lb_coef);
  loss.add_double("z_coef", &LossConfig::z_coef);
  loss.add_double("sp_coef", &LossConfig::sp_coef);
  loss.add_double("cp_coef", &LossConfig::cp_coef);
  loss.add_string("balance", &LossConfig::balance);
  loss.add_double("bias_gamma", &LossConfig::bias_gamma);

  FieldAdder<DataConfig> data{f, "data", &Config::data};
  data.add_list("train", &DataConfig::train, /*comma_list=*/false);
  data.add_list("valid", &DataConfig::valid, /*comma_list=*/false);
  data.add_double("valid_fraction", &DataConfig::valid_fraction);
  data.add_string("jsonl_field", &DataConfig::jsonl_field);
  data.add_string("tokenizer", &DataConfig::tokenizer);
  data.add_int("tokenizer_vocab_size", &DataConfig::tokenizer_vocab_size);
  data.add_int("tokenizer_train_bytes", &DataConfig::tokenizer_train_bytes);
  data.add_string("cache_dir", &DataConfig::cache_dir);
  data.add_bool("shuffle", &DataConfig::shuffle);

  FieldAdder<TrainConfig> train{f, "train", &Config::train};
  train.add_string("device", &TrainConfig::device);
  train.add_string("dtype", &TrainConfig::dtype);
  train.add_int("seed", &TrainConfig::seed);
  train.add_int("batch_size", &TrainConfig::batch_size);
  train.add_int("seq_len", &TrainConfig::seq_len);
  train.add_int("grad_accum", &TrainConfig::grad_accum);
  train.add_int("max_steps", &TrainConfig::max_steps);
  train.add_double("lr", &TrainConfig::lr);
  train.add_double("min_lr_ratio", &TrainConfig::min_lr_ratio);
  train.add_int("warmup_steps", &TrainConfig::warmup_steps);
  train.add_string("schedule", &TrainConfig::schedule);
  train.add_double("weight_decay", &TrainConfig::weight_decay);
  train.add_double("beta1", &TrainConfig::beta1);
  train.add_double("beta2", &TrainConfig::beta2);
  train.add_double("eps", &TrainConfig::eps);
  train.add_double("grad_clip", &TrainConfig::grad_clip);
  train.add_int("threads", &TrainConfig::threads);
  train.add_bool("recompute", &TrainConfig::recompute);
  train.add_int("zero", &TrainConfig::zero);
  train.add_double("grad_bucket_mb", &TrainConfig::grad_bucket_mb);

  FieldAdder<RunConfig> run{f, "run", &Config::run};
  run.add_string("out_dir", &RunConfig::out_dir);
  run.add_double("step_timeout_s", &RunConfig::step_timeout_s);
  run.add_int("log_every", &RunConfig::log_every);
  run.add_int("eval_every", &RunConfig::eval_every);
  run.add_int("eval_batches", &RunConfig::eval_batches);
  run.add_int("save_every", &RunConfig::save_every);
  run.add_int("keep_last", &RunConfig::keep_last);
  return f;
}

const std::vector<Field>& fields() {
  static const std::vector<Field> table = build_fields();
  return table;
}

const char* const kSections[] = {"model", "loss", "data", "train", "run"};

std::string leaf(const std::string& path) { return path.substr(path.rfind('.') + 1); }

// The valid key closest to an unknown one. A key whose leaf name exists in another section
// ("model.lr") is pointed at that section ("train.lr"); otherwise the full path with the
// smallest edit distance wins (ties: table order).
std::string nearest_key(const std::string& unknown) {
  const std::string unknown_leaf = leaf(unknown);
  if (unknown.find('.') != std::string::npos) {
    for (const auto& f : fields()) {
      if (leaf(f.path) == unknown_leaf) return f.path;
    }
  }
  std::vector<std::string> candidates;
  if (unknown.find('.') == std::string::npos) {
    for (const char* s : kSections) candidates.push_back(s);
  }
  for (const auto& f : fields()) candidates.push_back(f.path);
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const auto& c : candidates) {
    size_t d = detail::edit_distance(unknown, c);
    if (d < best_d) { best_d = d; best = c; }
  }
  return best;
}

const Field* find_field(const std::string& path) {
  for (const auto& f : fields()) {
    if (f.path == path) return &f;
  }
  return nullptr;
}

[[noreturn]] void unknown_key(const std::string& key, const std::string& where) {
  MOE_USAGE_FAIL("{}: unknown key '{}' (did you mean '{}'?)", where, key, nearest_key(key));
}

bool is_section(const std::string& name) {
  for (const char* s : kSections) if (name == s) return true;
  return false;
}

void read_document(Config& cfg, const YAML::Node& root, const std::string& source) {
  if (root.IsNull()) return;  // an empty file: all defaults
  if (!root.IsMap()) {
    MOE_USAGE_FAIL("{}: expected a mapping with the sections model, loss, data, train, run; "
                   "found {}", location(source, root.Mark()), describe(root));
  }
  std::set<std::string> seen;
  for (const auto& section : root) {
    const std::string name = section.first.Scalar();
    const std::string where = location(source, section.first.Mark());
    if (!is_section(name)) unknown_key(name, where);
    MOE_USAGE_CHECK(seen.insert(name).second, "{}: duplicate section '{}'", where, name);
    const YAML::Node& body = section.second;
    if (body.IsNull()) continue;
    if (!body.IsMap()) type_error(name, "a mapping of keys", body, where);
    for (const auto& kv : body) {
      const std::string path = name + "." + kv.first.Scalar();
      const std::string key_where = location(source, kv.first.Mark());
      const Field* field = find_field(path);
      if (!field) unknown_key(path, key_where);
      MOE_USAGE_CHECK(seen.insert(path).second, "{}: duplicate key '{}'", key_where, path);
      field->read(cfg, kv.second, key_where);
    }
  }
}

YAML::Node parse_yaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    MOE_USAGE_FAIL("{}:{}:{}: malformed YAML: {}", source, e.mark.line + 1, e.mark.column + 1,
                   e.msg);
  }
}

}  // namespace

size_t detail::edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

Config config_from_yaml_string(const std::string& yaml, const std::string& source_name,
                               const std::vector<std::string>& overrides) {
  Config cfg;
  read_document(cfg, parse_yaml(yaml, source_name), source_name);
  for (const auto& o : overrides) apply_override(cfg, o);
  validate(cfg);
  return cfg;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  MOE_USAGE_CHECK(in.good(), "config file '{}' cannot be read (does it exist?)", path);
  std::stringstream text;
  text << in.rdbuf();
  return config_from_yaml_string(text.str(), path, overrides);
}

void apply_override(Config& cfg, const std::string& assignment) {
  const std::string where = "--set " + assignment;
  auto eq = assignment.find('=');
  MOE_USAGE_CHECK(eq != std::string::npos && eq > 0,
                  "{}: expected KEY=VALUE with a key such as train.lr", where);
  const std::string key = assignment.substr(0, eq);
  const std::string value = assignment.substr(eq + 1);
  const Field* field = find_field(key);
  if (!field) unknown_key(key, where);
  YAML::Node node;
  try {
    node = YAML::Load(value);
  } catch (const YAML::ParserException& e) {
    MOE_USAGE_FAIL("{}: the value is not a YAML scalar or flow list: {}", where, e.msg);
  }
  field->read(cfg, node, where);
}

std::string config_to_yaml(const Config& cfg) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string current;
  for (const auto& f : fields()) {
    const std::string section = f.path.substr(0, f.path.find('.'));
    if (section != current) {
      if (!current.empty()) out << YAML::EndMap;
      out << YAML::Key << section << YAML::Value << YAML::BeginMap;
      current = section;
    }
    out << YAML::Key << leaf(f.path) << YAML::Value;
    f.emit(cfg, out);
  }
  out << YAML::EndMap << YAML::EndMap;
  MOE_CHECK(out.good(), "config_to_yaml: YAML emitter failed: {}", out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

}  // namespace moe
