// Checkpoint folders: ckpt/step_XXXXXXXX/ holding the trainer ranks' safetensors files, the
// resolved config and manifest.json (which lists every file with its SHA-256). A folder is
// written as ckpt/.tmp-step_XXXXXXXX/, its files made durable (fsync), then renamed into place;
// ckpt/latest (a symlink) is replaced last. A folder without a valid manifest is never used.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace nt {

struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string checkpoint_name(int64_t step);  // "step_00000123"

// Creates (afresh) the temporary folder for `step` under `ckpt_root`; returns its path.
std::string begin_checkpoint(const std::string& ckpt_root, int64_t step);
// Makes a file of a checkpoint being written durable (fsync) and returns its SHA-256: each
// trainer rank seals its own file, on its own node, in parallel with the others.
std::string seal_checkpoint_file(const std::string& path);
// Adds "files": {name: sha256} for every regular file in the temporary folder, writes
// manifest.json, fsyncs, renames the folder to step_XXXXXXXX, then points `latest` at it.
// `sealed`: files already sealed by their writers (name -> SHA-256), taken as they are; the
// others are hashed and made durable here. A sealed name missing from the folder is an error.
// Returns the final folder.
std::string commit_checkpoint(const std::string& ckpt_root, int64_t step, nlohmann::json manifest,
                              const std::map<std::string, std::string>& sealed = {});

// Reads dir/manifest.json and checks every listed file exists with its SHA-256 (and that no
// listed file is missing). Throws CheckpointError naming the offending file.
nlohmann::json read_verified_manifest(const std::string& dir);
// Reads dir/manifest.json without checking the files it lists (a reader then checks those it
// reads with verify_checkpoint_files). Throws CheckpointError for a missing or malformed manifest.
nlohmann::json read_manifest(const std::string& dir);
// Checks that the listed files `names` of a checkpoint exist with the manifest's SHA-256; a name
// the manifest does not list is an error too. Throws CheckpointError naming the offending file.
void verify_checkpoint_files(const std::string& dir, const nlohmann::json& manifest,
                             const std::vector<std::string>& names);

// Complete checkpoint folders under ckpt_root (name step_N with a manifest), newest first.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& ckpt_root);

// Reports to `warn` every step_N folder under ckpt_root without a manifest (incomplete: never
// resumed from).
void warn_incomplete_checkpoints(const std::string& ckpt_root, const std::function<void(const std::string&)>& warn);

// The newest checkpoint whose manifest verifies (every listed file hashed); each one refused is
// reported to `warn` (naming the file and why) before falling back to the previous one, and so
// are incomplete folders. (The trainer's ranks check a checkpoint together instead, each the files
// it reads: launch/trainer.cpp.)
std::optional<std::string> find_resume_checkpoint(const std::string& ckpt_root,
                                                  const std::function<void(const std::string&)>& warn);

// Deletes checkpoints beyond the newest `keep_last`, except steps that are multiples of
// `keep_every` (> 0), the folder `latest` points to and folders being read (a
// CheckpointReadLock younger than an hour). Temporary folders are left alone.
void apply_retention(const std::string& ckpt_root, int64_t keep_last, int64_t keep_every);

// Marks a checkpoint folder as being read for as long as the object lives (a marker file
// ckpt/.reading-step_XXXXXXXX-<host>-<pid>-<n> beside it), so that retention in another process
// keeps it. A marker older than an hour (its reader died) no longer protects the folder.
class CheckpointReadLock {
 public:
  explicit CheckpointReadLock(const std::string& dir);
  ~CheckpointReadLock();
  CheckpointReadLock(const CheckpointReadLock&) = delete;
  CheckpointReadLock& operator=(const CheckpointReadLock&) = delete;

 private:
  std::string marker_;
};

}  // namespace nt
