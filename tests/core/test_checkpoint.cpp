// Checkpoint folders (core/checkpoint.h): naming, the manifest with SHA-256 of every file, the
// `latest` link, refusal of incomplete or corrupted folders with a fallback to the previous
// one, rolling retention, and temporary folders never being listed.
#include "core/checkpoint.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/sha256.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {


void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

std::string read_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Flips the bits of one byte in the middle of a file.
void flip_byte(const fs::path& path) {
  std::string bytes = read_file(path);
  ASSERT_FALSE(bytes.empty()) << path;
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0xff);
  write_file(path, bytes);
}

// The contents the test writes for checkpoint `step` (different per step and per file).
std::string rank_bytes(int64_t step) { return "rank file of step " + std::to_string(step) + std::string(100, 'x'); }
std::string config_bytes(int64_t step) { return "[train]\nsteps = " + std::to_string(step) + "\n"; }

// A complete checkpoint for `step` with two files, through begin/commit.
std::string write_checkpoint(const std::string& root, int64_t step) {
  const std::string tmp = nt::begin_checkpoint(root, step);
  write_file(fs::path(tmp) / "rank_00000.safetensors", rank_bytes(step));
  write_file(fs::path(tmp) / "config.toml", config_bytes(step));
  return nt::commit_checkpoint(root, step, {{"format", "test"}, {"world_size", 1}});
}

std::set<int64_t> listed_steps(const std::string& root) {
  std::set<int64_t> s;
  for (const auto& [step, dir] : nt::list_checkpoints(root)) s.insert(step);
  return s;
}

// Runs find_resume_checkpoint collecting its warnings.
std::optional<std::string> resume(const std::string& root, std::vector<std::string>* warnings) {
  return nt::find_resume_checkpoint(root, [&](const std::string& w) { warnings->push_back(w); });
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& w : v) s += w + "\n";
  return s;
}

TEST(Checkpoint, Name) {
  EXPECT_EQ(nt::checkpoint_name(0), "step_00000000");
  EXPECT_EQ(nt::checkpoint_name(123), "step_00000123");
  EXPECT_EQ(nt::checkpoint_name(400000), "step_00400000");
}

TEST(Checkpoint, CommitWritesManifestWithDigestsAndLatest) {
  const std::string root = nt::test::scratch_dir() + "/ckpt";
  const std::string tmp = nt::begin_checkpoint(root, 7);
  EXPECT_EQ(fs::path(tmp).filename().string(), ".tmp-step_00000007");
  EXPECT_TRUE(fs::is_directory(tmp));
  // A temporary folder is never a checkpoint.
  EXPECT_TRUE(nt::list_checkpoints(root).empty());
  write_file(fs::path(tmp) / "rank_00000.safetensors", rank_bytes(7));
  write_file(fs::path(tmp) / "config.toml", config_bytes(7));
  const std::string dir = nt::commit_checkpoint(root, 7, {{"format", "test"}, {"world_size", 1}});

  EXPECT_EQ(fs::path(dir), fs::path(root) / "step_00000007");
  EXPECT_FALSE(fs::exists(tmp)) << "the temporary folder must have been renamed";
  ASSERT_TRUE(fs::exists(fs::path(dir) / "manifest.json"));
  const auto m = nlohmann::json::parse(read_file(fs::path(dir) / "manifest.json"));
  EXPECT_EQ(m.at("step").get<int64_t>(), 7);
  EXPECT_EQ(m.at("format"), "test");  // the caller's fields are kept
  ASSERT_TRUE(m.at("files").is_object());
  EXPECT_EQ(m["files"].size(), 2u) << m.dump() << " (manifest.json must not list itself)";
  const std::string r = rank_bytes(7), c = config_bytes(7);
  EXPECT_EQ(m["files"].at("rank_00000.safetensors"), nt::sha256_hex(r.data(), r.size()));
  EXPECT_EQ(m["files"].at("config.toml"), nt::sha256_hex(c.data(), c.size()));

  const fs::path latest = fs::path(root) / "latest";
  ASSERT_TRUE(fs::is_symlink(latest));
  EXPECT_EQ(fs::canonical(latest), fs::canonical(dir));
  EXPECT_EQ(nt::read_verified_manifest(dir).at("step").get<int64_t>(), 7);
  EXPECT_EQ(nt::read_verified_manifest(latest.string()).at("step").get<int64_t>(), 7);
}

// Rank files sealed by their writers (fsync + SHA-256 on each rank) enter the manifest with the
// digests given, unhashed by the committer; the other files are hashed at commit. A wrong digest
// given shows up at the next verification; a sealed name missing from the folder is refused.
TEST(Checkpoint, SealedFilesEnterTheManifestWithTheirWritersDigests) {
  const std::string root = nt::test::scratch_dir() + "/ckpt";
  std::string tmp = nt::begin_checkpoint(root, 3);
  write_file(fs::path(tmp) / "rank_00000.safetensors", rank_bytes(3));
  write_file(fs::path(tmp) / "config.toml", config_bytes(3));
  const std::string digest = nt::seal_checkpoint_file((fs::path(tmp) / "rank_00000.safetensors").string());
  const std::string r = rank_bytes(3);
  EXPECT_EQ(digest, nt::sha256_hex(r.data(), r.size()));
  std::string dir = nt::commit_checkpoint(root, 3, {{"world_size", 1}}, {{"rank_00000.safetensors", digest}});
  EXPECT_EQ(nt::read_verified_manifest(dir).at("files").size(), 2u);

  tmp = nt::begin_checkpoint(root, 4);
  write_file(fs::path(tmp) / "rank_00000.safetensors", rank_bytes(4));
  dir = nt::commit_checkpoint(root, 4, {{"world_size", 1}}, {{"rank_00000.safetensors", digest}});  // step 3's
  EXPECT_CONTAINS(nt::test::thrown_message<nt::CheckpointError>([&] { nt::read_verified_manifest(dir); }),
                  "corrupted (SHA-256 mismatch)");

  tmp = nt::begin_checkpoint(root, 5);
  write_file(fs::path(tmp) / "config.toml", config_bytes(5));
  EXPECT_CONTAINS(nt::test::thrown_message<nt::CheckpointError>([&] {
                    nt::commit_checkpoint(root, 5, {{"world_size", 1}}, {{"rank_00000.safetensors", digest}});
                  }),
                  "was sealed by its writer but is not in the folder");
  EXPECT_FALSE(fs::exists(fs::path(root) / "step_00000005"));
}

TEST(Checkpoint, LatestFollowsTheNewestAndListIsNewestFirst) {
  const std::string root = nt::test::scratch_dir() + "/ckpt";
  for (int64_t step : {4, 8, 12}) {
    const std::string dir = write_checkpoint(root, step);
    EXPECT_EQ(fs::canonical(fs::path(root) / "latest"), fs::canonical(dir)) << "after step " << step;
  }
  const auto list = nt::list_checkpoints(root);
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].first, 12);
  EXPECT_EQ(list[1].first, 8);
  EXPECT_EQ(list[2].first, 4);
  EXPECT_EQ(fs::path(list[0].second).filename(), "step_00000012");
  std::vector<std::string> warnings;
  auto found = resume(root, &warnings);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(fs::path(*found).filename(), "step_00000012");
  EXPECT_TRUE(warnings.empty()) << joined(warnings);
  // Rewriting a step replaces the folder.
  write_checkpoint(root, 8);
  EXPECT_EQ(listed_steps(root), (std::set<int64_t>{4, 8, 12}));
  EXPECT_EQ(fs::canonical(fs::path(root) / "latest").filename(), "step_00000008");
}

TEST(Checkpoint, NoCheckpointsNoResume) {
  const std::string root = nt::test::scratch_dir() + "/ckpt";
  std::vector<std::string> warnings;
  EXPECT_FALSE(resume(root, &warnings).has_value());  // the folder does not even exist
  fs::create_directories(root);
  EXPECT_FALSE(resume(root, &warnings).has_value());
  EXPECT_TRUE(warnings.empty()) << joined(warnings);
}

TEST(Checkpoint, FolderWithoutManifestIsNeverChosen) {
  const std::string root = nt::test::scratch_dir() + "/ckpt";
  write_checkpoint(root, 3);
  // A newer step folder without manifest.json (e.g. copied by hand, or written by a tool
  // that died): it has the right name and files, but must be ignored.
  const fs::path incomplete = fs::path(root) / "step_00000005";
  fs::create_directories(incomplete);
  write_file(incomplete / "rank_00000.safetensors", rank_bytes(5));
  write_file(incomplete / "config.toml", config_bytes(5));

  EXPECT_EQ(listed_steps(root), std::set<int64_t>{3});
  std::vector<std::string> warnings;
  auto found = resume(root, &warnings);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(fs::path(*found).filename(), "step_00000003");
  ASSERT_FALSE(warnings.empty()) << "the incomplete folder must be reported";
  EXPECT_CONTAINS(joined(warnings), "step_00000005");
  EXPECT_CONTAINS(joined(warnings), "manifest");
  EXPECT_THROW(nt::read_verified_manifest(incomplete.string()), nt::CheckpointError);

  // Only an incomplete folder: nothing to resume from.
  const std::string root2 = nt::test::scratch_dir() + "/ckpt2";
  fs::create_directories(fs::path(root2) / "step_00000009");
  warnings.clear();
  EXPECT_FALSE(resume(root2, &warnings).has_value());
  EXPECT_CONTAINS(joined(warnings), "step_00000009");
}

TEST(Checkpoint, CorruptedFileIsNamedAndResumeFallsBack) {
  const std::string root = nt::test::scratch_dir() + "/ckpt";
  write_checkpoint(root, 4);
  const std::string newest = write_checkpoint(root, 8);
  const fs::path bad = fs::path(newest) / "rank_00000.safetensors";
  flip_byte(bad);
  try {
    nt::read_verified_manifest(newest);
    FAIL() << "a corrupted file must be refused";
  } catch (const nt::CheckpointError& e) {
    EXPECT_CONTAINS(e.what(), bad.string());
    EXPECT_CONTAINS(e.what(), "SHA-256");
  }
  std::vector<std::string> warnings;
  auto found = resume(root, &warnings);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(fs::path(*found).filename(), "step_00000004");
  ASSERT_EQ(warnings.size(), 1u) << joined(warnings);
  EXPECT_CONTAINS(warnings[0], bad.string());
  EXPECT_CONTAINS(warnings[0], "falling back");

  // The older one corrupted too: nothing verifies, both are reported.
  flip_byte(fs::path(root) / "step_00000004" / "config.toml");
  warnings.clear();
  EXPECT_FALSE(resume(root, &warnings).has_value());
  EXPECT_EQ(warnings.size(), 2u) << joined(warnings);
  EXPECT_CONTAINS(joined(warnings), (fs::path(root) / "step_00000004" / "config.toml").string());
}

TEST(Checkpoint, MissingListedFileIsNamedAndResumeFallsBack) {
  const std::string root = nt::test::scratch_dir() + "/ckpt";
  write_checkpoint(root, 4);
  const std::string newest = write_checkpoint(root, 8);
  const fs::path gone = fs::path(newest) / "config.toml";
  fs::remove(gone);
  try {
    nt::read_verified_manifest(newest);
    FAIL() << "a missing listed file must be refused";
  } catch (const nt::CheckpointError& e) {
    EXPECT_CONTAINS(e.what(), gone.string());
    EXPECT_CONTAINS(e.what(), "missing");
  }
  std::vector<std::string> warnings;
  auto found = resume(root, &warnings);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(fs::path(*found).filename(), "step_00000004");
  ASSERT_EQ(warnings.size(), 1u) << joined(warnings);
  EXPECT_CONTAINS(warnings[0], gone.string());
}

TEST(Checkpoint, BrokenManifestIsRefused) {
  const std::string root = nt::test::scratch_dir() + "/ckpt";
  write_checkpoint(root, 4);
  const std::string newest = write_checkpoint(root, 8);
  const fs::path manifest = fs::path(newest) / "manifest.json";
  write_file(manifest, "{\"step\": 8, \"files\": {");  // truncated
  try {
    nt::read_verified_manifest(newest);
    FAIL() << "a truncated manifest must be refused";
  } catch (const nt::CheckpointError& e) {
    EXPECT_CONTAINS(e.what(), manifest.string());
  }
  std::vector<std::string> warnings;
  auto found = resume(root, &warnings);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(fs::path(*found).filename(), "step_00000004");
  EXPECT_CONTAINS(joined(warnings), manifest.string());
  EXPECT_THROW(nt::read_verified_manifest(root + "/step_00000099"), nt::CheckpointError);
}

TEST(Checkpoint, RetentionKeepLastAndKeepEvery) {
  const std::string root = nt::test::scratch_dir() + "/ckpt";
  for (int64_t step = 1; step <= 10; ++step) write_checkpoint(root, step);
  nt::apply_retention(root, /*keep_last=*/3, /*keep_every=*/4);
  EXPECT_EQ(listed_steps(root), (std::set<int64_t>{4, 8, 9, 10}));
  EXPECT_FALSE(fs::exists(fs::path(root) / "step_00000005"));  // deleted, not just unlisted
  EXPECT_EQ(fs::canonical(fs::path(root) / "latest").filename(), "step_00000010");

  // keep_every = 0 keeps no milestones.
  nt::apply_retention(root, /*keep_last=*/2, /*keep_every=*/0);
  EXPECT_EQ(listed_steps(root), (std::set<int64_t>{9, 10}));
  // Applying it again changes nothing.
  nt::apply_retention(root, 2, 0);
  EXPECT_EQ(listed_steps(root), (std::set<int64_t>{9, 10}));
  nt::apply_retention(root, 1, 0);
  EXPECT_EQ(listed_steps(root), (std::set<int64_t>{10}));
}

TEST(Checkpoint, RetentionNeverDeletesWhatLatestPointsTo) {
  const std::string root = nt::test::scratch_dir() + "/ckpt";
  for (int64_t step = 1; step <= 6; ++step) write_checkpoint(root, step);
  // Point latest at an old checkpoint (as after a user's manual roll-back).
  const fs::path latest = fs::path(root) / "latest";
  fs::remove(latest);
  fs::create_directory_symlink("step_00000002", latest);
  nt::apply_retention(root, /*keep_last=*/1, /*keep_every=*/0);
  EXPECT_EQ(listed_steps(root), (std::set<int64_t>{2, 6}));
  EXPECT_TRUE(fs::is_symlink(latest));
  EXPECT_EQ(fs::canonical(latest).filename(), "step_00000002");
  EXPECT_EQ(nt::read_verified_manifest(latest.string()).at("step").get<int64_t>(), 2);
}

// A checkpoint being read (an evaluator or a resume holds a CheckpointReadLock) survives
// retention; once the reader is done, the next retention removes it. A stale marker (its reader
// died over an hour ago) protects nothing.
TEST(Checkpoint, RetentionKeepsWhatIsBeingRead) {
  const std::string root = nt::test::scratch_dir() + "/ckpt";
  for (int64_t step = 1; step <= 4; ++step) write_checkpoint(root, step);
  {
    const nt::CheckpointReadLock reading(root + "/step_00000002");
    nt::CheckpointReadLock trailing_slash(root + "/step_00000003/");
    nt::apply_retention(root, /*keep_last=*/1, /*keep_every=*/0);
    EXPECT_EQ(listed_steps(root), (std::set<int64_t>{2, 3, 4}));
  }
  nt::apply_retention(root, 1, 0);
  EXPECT_EQ(listed_steps(root), (std::set<int64_t>{4}));
  for (const auto& e : fs::directory_iterator(root))  // the readers' markers are gone
    EXPECT_NE(e.path().filename().string().rfind(".reading-", 0), 0u) << e.path();

  write_checkpoint(root, 5);
  const fs::path stale = fs::path(root) / ".reading-step_00000004-host-1-0";
  write_file(stale, "\n");
  nt::apply_retention(root, 1, 0);
  EXPECT_EQ(listed_steps(root), (std::set<int64_t>{4, 5}));
  fs::last_write_time(stale, fs::file_time_type::clock::now() - std::chrono::hours(2));
  nt::apply_retention(root, 1, 0);
  EXPECT_EQ(listed_steps(root), (std::set<int64_t>{5}));
}

TEST(Checkpoint, TemporaryFoldersAreNeverListedNorDeleted) {
  const std::string root = nt::test::scratch_dir() + "/ckpt";
  write_checkpoint(root, 2);
  write_checkpoint(root, 4);
  // A save that died before its commit: a temporary folder, even with a manifest in it.
  const std::string tmp = nt::begin_checkpoint(root, 6);
  write_file(fs::path(tmp) / "rank_00000.safetensors", rank_bytes(6));
  write_file(fs::path(tmp) / "manifest.json", "{\"step\": 6, \"files\": {}}");
  EXPECT_EQ(listed_steps(root), (std::set<int64_t>{2, 4}));
  std::vector<std::string> warnings;
  auto found = resume(root, &warnings);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(fs::path(*found).filename(), "step_00000004");
  EXPECT_TRUE(warnings.empty()) << joined(warnings);
  nt::apply_retention(root, 1, 0);
  EXPECT_EQ(listed_steps(root), std::set<int64_t>{4});
  EXPECT_TRUE(fs::is_directory(tmp)) << "retention must leave temporary folders alone";
  // begin_checkpoint starts the temporary folder afresh.
  const std::string again = nt::begin_checkpoint(root, 6);
  EXPECT_EQ(again, tmp);
  EXPECT_TRUE(fs::is_empty(again));
  write_file(fs::path(again) / "config.toml", config_bytes(6));
  nt::commit_checkpoint(root, 6, nlohmann::json::object());
  EXPECT_EQ(listed_steps(root), (std::set<int64_t>{4, 6}));
  EXPECT_EQ(nt::read_verified_manifest(root + "/step_00000006").at("files").size(), 1u);
}

}  // namespace
