// Checkpoint directories: atomic save, listing, pruning, verification and loading (see
// checkpoint.h for the layout and the guarantees).
#include "checkpoint/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "io/safetensors.h"
#include "model/weights_io.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

constexpr const char* kFiles[] = {"model.safetensors", "optimizer.safetensors", "config.yaml",
                                  "tokenizer.model", "trainer_state.json"};
constexpr int kStateFormat = 1;

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  MOE_CHECK(fd >= 0, "cannot open '{}' to sync it: {}", path, std::strerror(errno));
  bool ok = ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  MOE_CHECK(ok, "cannot fsync '{}': {}", path, std::strerror(err));
}

// step_ followed by exactly 8 digits: the name of a complete checkpoint.
bool parse_checkpoint_name(const std::string& name, int64_t* step) {
  if (name.size() != 13 || name.rfind("step_", 0) != 0) return false;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
  }
  *step = std::stoll(name.substr(5));
  return true;
}

nlohmann::json state_to_json(const TrainerState& s) {
  return {{"format", kStateFormat}, {"step", s.step},    {"tokens_seen", s.tokens_seen},
          {"lr", s.lr},             {"data", s.data_state}};
}

}  // namespace

std::string checkpoint_name(int64_t step) { return fmt::format("step_{:08d}", step); }

std::string checkpoints_root(const std::string& run_dir) {
  return (fs::path(run_dir) / "checkpoints").string();
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  const fs::path root = checkpoints_root(run_dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  for (const auto& entry : fs::directory_iterator(root)) {
    int64_t step = 0;
    if (entry.is_directory() && parse_checkpoint_name(entry.path().filename().string(), &step)) {
      out.emplace_back(step, entry.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string latest_checkpoint(const std::string& run_dir) {
  auto all = list_checkpoints(run_dir);
  return all.empty() ? "" : all.back().second;
}

std::string resolve_resume_checkpoint(const std::string& dir) {
  MOE_USAGE_CHECK(fs::is_directory(dir), "--resume {}: no such directory", dir);
  if (fs::exists(fs::path(dir) / "trainer_state.json") ||
      fs::exists(fs::path(dir) / "manifest.json")) {
    return fs::path(dir).lexically_normal().string();
  }
  std::string latest = latest_checkpoint(dir);
  MOE_USAGE_CHECK(!latest.empty(), "--resume {}: expected a run directory with checkpoints/"
                  "step_XXXXXXXX/ or a checkpoint directory, found neither", dir);
  return latest;
}

std::string run_dir_of_checkpoint(const std::string& checkpoint_dir) {
  fs::path p = fs::path(checkpoint_dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.parent_path().parent_path().string();
}

std::string save_checkpoint(const std::string& run_dir, const Config& cfg, MoeModel& model,
                            OptimizerStateIO& optimizer, const std::string& tokenizer_model_bytes,
                            const TrainerState& state) {
  const fs::path root = checkpoints_root(run_dir);
  fs::create_directories(root);
  const fs::path final_dir = root / checkpoint_name(state.step);
  MOE_CHECK(!fs::exists(final_dir), "checkpoint '{}' already exists; refusing to overwrite it",
            final_dir.string());
  const fs::path tmp = root / (checkpoint_name(state.step) + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  // A failed save (a full disk) removes its temporary directory: it would only eat the space a
  // later attempt needs.
  try {
    fs::create_directories(tmp);
    // The tokenizer's hash goes with the weights, so a loader can tell a swapped tokenizer.model
    // even where no manifest is (checkpoint/model_checkpoint.h).
    save_weights(model, (tmp / "model.safetensors").string(),
                 {{kTokenizerHashKey, fmt::format("{:016x}", hash_bytes(
                       tokenizer_model_bytes.data(), tokenizer_model_bytes.size()))}});
    SafeTensorsWriter opt;
    optimizer.save(opt);
    opt.write((tmp / "optimizer.safetensors").string(), /*atomic=*/false);
    for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
      fsync_path((tmp / f).string());
    }
    write_file_synced((tmp / "config.yaml").string(), config_to_yaml(cfg));
    write_file_synced((tmp / "tokenizer.model").string(), tokenizer_model_bytes);
    write_file_synced((tmp / "trainer_state.json").string(), state_to_json(state).dump(2) + "\n");

    nlohmann::json manifest = {{"format", kStateFormat}, {"step", state.step}};
    for (const char* f : kFiles) {
      uint64_t size = 0;
      uint64_t hash = hash_file((tmp / f).string(), &size);
      manifest["files"][f] = {{"bytes", size}, {"hash", fmt::format("{:016x}", hash)}};
    }
    write_file_synced((tmp / "manifest.json").string(), manifest.dump(2) + "\n");
    fsync_path(tmp.string());
    std::error_code ec;
    fs::rename(tmp, final_dir, ec);
    MOE_CHECK(!ec, "cannot rename '{}' to '{}': {}", tmp.string(), final_dir.string(), ec.message());
  } catch (...) {
    std::error_code rm;
    fs::remove_all(tmp, rm);
    throw;
  }
  fsync_path(root.string());
  return final_dir.string();
}

void prune_checkpoints(const std::string& run_dir, int64_t keep_last) {
  auto all = list_checkpoints(run_dir);
  const int64_t keep = std::max<int64_t>(1, keep_last);
  for (int64_t i = 0; i + keep < static_cast<int64_t>(all.size()); ++i) {
    std::error_code ec;
    fs::remove_all(all[static_cast<size_t>(i)].second, ec);
    if (ec) spdlog::warn("could not delete old checkpoint {}: {}", all[i].second, ec.message());
  }
}

void verify_checkpoint(const std::string& dir) {
  const fs::path d(dir);
  MOE_USAGE_CHECK(fs::is_directory(d), "checkpoint '{}' does not exist", dir);
  const fs::path manifest_path = d / "manifest.json";
  MOE_USAGE_CHECK(fs::exists(manifest_path), "checkpoint '{}' is incomplete: manifest.json is missing "
            "(interrupted while saving?)", dir);
  nlohmann::json manifest;
  try {
    manifest = nlohmann::json::parse(read_file(manifest_path.string()));
  } catch (const nlohmann::json::exception& e) {
    MOE_USAGE_FAIL("checkpoint '{}': manifest.json is corrupt: {}", dir, e.what());
  }
  for (const char* f : kFiles) {
    const fs::path file = d / f;
    MOE_USAGE_CHECK(manifest.contains("files") && manifest["files"].is_object() &&
                        manifest["files"].contains(f),
              "checkpoint '{}': manifest.json does not list {}", dir, f);
    MOE_USAGE_CHECK(fs::exists(file), "checkpoint '{}' is incomplete: {} is missing", dir, f);
    uint64_t want_size = 0;
    std::string want_hash;
    try {
      want_size = manifest["files"][f].at("bytes").get<uint64_t>();
      want_hash = manifest["files"][f].at("hash").get<std::string>();
    } catch (const nlohmann::json::exception& e) {
      MOE_USAGE_FAIL("checkpoint '{}': manifest.json is corrupt: {}", dir, e.what());
    }
    uint64_t size = 0;
    uint64_t hash = hash_file(file.string(), &size);
    MOE_USAGE_CHECK(size == want_size, "checkpoint '{}' is damaged: {} has {} bytes, the manifest "
              "says {} (truncated?)", dir, f, size, want_size);
    MOE_USAGE_CHECK(fmt::format("{:016x}", hash) == want_hash,
              "checkpoint '{}' is damaged: the content hash of {} does not match the manifest",
              dir, f);
  }
}

Config load_checkpoint_config(const std::string& dir) {
  return load_config((fs::path(dir) / "config.yaml").string());
}

TrainerState load_trainer_state(const std::string& dir) {
  const std::string path = (fs::path(dir) / "trainer_state.json").string();
  TrainerState s;
  // Validated in full before the trainer touches anything of the run (a forged step < 0 once
  // wiped metrics.jsonl): every problem is bad input, exit code 2.
  try {
    auto j = nlohmann::json::parse(read_file(path));
    // Integers only: nlohmann converts a float such as 2e112 to int64 by a cast that is
    // undefined behaviour when out of range (UBSan, found by fuzz_checkpoint_state).
    auto integer = [&](const char* key) -> int64_t {
      const nlohmann::json& v = j.at(key);
      MOE_USAGE_CHECK(v.is_number_integer(), "{}: \"{}\" must be an integer, found {}", path,
                      key, v.dump());
      return v.get<int64_t>();
    };
    const int64_t format = integer("format");
    MOE_USAGE_CHECK(format == kStateFormat, "{}: format {} is not supported (expected {})", path,
                    format, kStateFormat);
    s.step = integer("step");
    s.tokens_seen = integer("tokens_seen");
    s.lr = j.at("lr").get<double>();
    s.data_state = j.at("data");
  } catch (const nlohmann::json::exception& e) {
    MOE_USAGE_FAIL("{}: not a valid trainer state: {}", path, clip_text(e.what()));
  }
  MOE_USAGE_CHECK(s.step >= 0, "{}: step must be >= 0, found {}", path, s.step);
  MOE_USAGE_CHECK(s.tokens_seen >= 0, "{}: tokens_seen must be >= 0, found {}", path,
                  s.tokens_seen);
  MOE_USAGE_CHECK(std::isfinite(s.lr) && s.lr >= 0, "{}: lr must be finite and >= 0, found {}",
                  path, s.lr);
  MOE_USAGE_CHECK(s.data_state.is_object(), "{}: data must be an object, found {}", path,
                  s.data_state.type_name());
  int64_t named_step = 0;
  const std::string name = fs::path(dir).lexically_normal().filename().string();
  if (parse_checkpoint_name(name, &named_step)) {
    MOE_USAGE_CHECK(named_step == s.step, "{}: step {} does not match the checkpoint's name {}",
                    path, s.step, name);
  }
  return s;
}

void load_training_state(const std::string& dir, MoeModel& model, OptimizerStateIO& optimizer) {
  // A file that passed the manifest but does not parse, or does not fit the model, is bad input
  // (exit code 2) like any damaged checkpoint.
  try {
    load_weights(model, (fs::path(dir) / "model.safetensors").string());
    SafeTensorsReader opt((fs::path(dir) / "optimizer.safetensors").string());
    optimizer.load(opt);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kUsage) throw;
    MOE_USAGE_FAIL("checkpoint {} is damaged: {}", dir, e.what());
  }
}

}  // namespace moe
