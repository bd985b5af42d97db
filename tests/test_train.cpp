// Trainer pieces that do not need a model: the learning-rate schedule, the clipping factor, the
// content hash, and the checkpoint directory rules (listing, *.tmp directories ignored, pruning
// to keep_last, resume-directory resolution, atomic file writes).
#include <cmath>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "core/error.h"
#include "support/paths.h"
#include "checkpoint/checkpoint.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

TrainConfig schedule_config(const std::string& kind) {
  TrainConfig t;
  t.lr = 1e-3;
  t.min_lr_ratio = 0.1;
  t.warmup_steps = 10;
  t.max_steps = 110;
  t.schedule = kind;
  return t;
}

TEST(Schedule, WarmupRisesLinearlyFromZero) {
  TrainConfig t = schedule_config("cosine");
  EXPECT_DOUBLE_EQ(learning_rate(t, 0), 1e-4);  // lr * 1/10: the first update is never lr 0
  EXPECT_DOUBLE_EQ(learning_rate(t, 4), 5e-4);
  EXPECT_DOUBLE_EQ(learning_rate(t, 9), 1e-3);
}

TEST(Schedule, CosineEndsAtMinimum) {
  TrainConfig t = schedule_config("cosine");
  EXPECT_DOUBLE_EQ(learning_rate(t, 10), 1e-3);    // p = 0
  EXPECT_NEAR(learning_rate(t, 60), 1e-4 + 0.9e-3 * 0.5 * (1 + std::cos(M_PI * 50.0 / 99.0)),
              1e-15);
  EXPECT_NEAR(learning_rate(t, 109), 1e-4, 1e-15);  // the last update: exactly lr*min_lr_ratio
  EXPECT_NEAR(learning_rate(t, 500), 1e-4, 1e-15);  // past the end: stays at the minimum
  for (int64_t s = 11; s < 110; ++s) EXPECT_LT(learning_rate(t, s), learning_rate(t, s - 1));
}

TEST(Schedule, LinearAndConstant) {
  TrainConfig lin = schedule_config("linear");
  EXPECT_DOUBLE_EQ(learning_rate(lin, 10), 1e-3);
  EXPECT_NEAR(learning_rate(lin, 10 + 33), 1e-3 - 0.9e-3 * 33.0 / 99.0, 1e-15);
  EXPECT_NEAR(learning_rate(lin, 109), 1e-4, 1e-15);
  TrainConfig con = schedule_config("constant");
  EXPECT_DOUBLE_EQ(learning_rate(con, 5), 6e-4);
  EXPECT_DOUBLE_EQ(learning_rate(con, 10), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(con, 109), 1e-3);
}

TEST(Schedule, NoWarmup) {
  TrainConfig t = schedule_config("cosine");
  t.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(learning_rate(t, 0), 1e-3);
}

TEST(Clipping, ScaleIsMinOfOneAndClipOverNorm) {
  EXPECT_FLOAT_EQ(AdamW::clip_scale(0.5, 1.0), 1.0f);
  EXPECT_FLOAT_EQ(AdamW::clip_scale(4.0, 1.0), static_cast<float>(1.0 / (4.0 + 1e-6)));
  EXPECT_FLOAT_EQ(AdamW::clip_scale(1e9, 0.0), 1.0f);  // clipping off
  // After scaling, the norm is at most the threshold.
  for (double norm : {1.5, 10.0, 1e4}) {
    EXPECT_LE(norm * AdamW::clip_scale(norm, 2.0), 2.0 + 1e-5);
  }
}

TEST(Hash, DetectsTruncationAndChanges) {
  std::string a(1000, 'x');
  std::string b = a;
  b[537] = 'y';
  EXPECT_NE(hash_bytes(a.data(), a.size()), hash_bytes(b.data(), b.size()));
  EXPECT_NE(hash_bytes(a.data(), a.size()), hash_bytes(a.data(), a.size() - 1));
  EXPECT_NE(hash_bytes(a.data(), 8), hash_bytes(a.data(), 9));
  // The streamed file hash equals the in-memory one, for sizes around the 8-byte word.
  std::string dir = test::make_temp_dir("hash");
  for (size_t n : {size_t{0}, size_t{7}, size_t{8}, size_t{13}, size_t{1000}}) {
    std::string path = dir + "/f" + std::to_string(n);
    write_file_synced(path, a.substr(0, n));
    uint64_t size = 0;
    EXPECT_EQ(hash_file(path, &size), hash_bytes(a.data(), n)) << n;
    EXPECT_EQ(size, n);
  }
}

void make_fake_checkpoint(const std::string& run_dir, const std::string& name) {
  fs::create_directories(fs::path(run_dir) / "checkpoints" / name);
  std::ofstream(fs::path(run_dir) / "checkpoints" / name / "trainer_state.json") << "{}";
}

TEST(CheckpointDirs, ListsCompleteCheckpointsAndIgnoresTmp) {
  std::string run = test::make_temp_dir("ckdirs");
  EXPECT_EQ(latest_checkpoint(run), "");
  make_fake_checkpoint(run, "step_00000020");
  make_fake_checkpoint(run, "step_00000100");
  make_fake_checkpoint(run, "step_00000300.tmp-1234");  // a crashed save: never complete
  make_fake_checkpoint(run, "step_123");                // not our name
  auto all = list_checkpoints(run);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 20);
  EXPECT_EQ(all[1].first, 100);
  EXPECT_EQ(fs::path(latest_checkpoint(run)).filename(), "step_00000100");
  EXPECT_EQ(fs::path(resolve_resume_checkpoint(run)).filename(), "step_00000100");
  // A checkpoint directory given directly is used as is.
  std::string direct = run + "/checkpoints/step_00000020";
  EXPECT_EQ(fs::path(resolve_resume_checkpoint(direct)).filename(), "step_00000020");
  EXPECT_EQ(fs::path(run_dir_of_checkpoint(direct)), fs::path(run).lexically_normal());
}

TEST(CheckpointDirs, ResumeWithoutCheckpointIsUsageError) {
  std::string run = test::make_temp_dir("ckempty");
  try {
    resolve_resume_checkpoint(run);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), 2);
    EXPECT_NE(std::string(e.what()).find(run), std::string::npos) << e.what();
  }
  EXPECT_THROW(resolve_resume_checkpoint(run + "/nope"), Error);
}

TEST(CheckpointDirs, PruneKeepsTheNewest) {
  std::string run = test::make_temp_dir("ckprune");
  for (int s : {10, 20, 30, 40, 50}) make_fake_checkpoint(run, checkpoint_name(s));
  make_fake_checkpoint(run, "step_00000060.tmp-99");
  prune_checkpoints(run, 2);
  auto all = list_checkpoints(run);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 40);
  EXPECT_EQ(all[1].first, 50);
  prune_checkpoints(run, 0);  // never deletes the newest
  all = list_checkpoints(run);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].first, 50);
  EXPECT_TRUE(fs::exists(fs::path(run) / "checkpoints" / "step_00000060.tmp-99"));
}

TEST(CheckpointDirs, VerifyRejectsMissingManifest) {
  std::string run = test::make_temp_dir("ckverify");
  make_fake_checkpoint(run, "step_00000001");
  try {
    verify_checkpoint(run + "/checkpoints/step_00000001");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("manifest.json is missing"), std::string::npos);
  }
}

TEST(Files, AtomicWriteReplacesWholeFile) {
  std::string dir = test::make_temp_dir("atomic");
  std::string path = dir + "/f.txt";
  write_file_atomic(path, "first version, long");
  write_file_atomic(path, "second");
  EXPECT_EQ(read_file(path), "second");
  int entries = 0;
  for (auto& e : fs::directory_iterator(dir)) { (void)e; ++entries; }
  EXPECT_EQ(entries, 1);  // no temporary file left behind
}

}  // namespace
}  // namespace moe
