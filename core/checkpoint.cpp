#include "core/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "core/sha256.h"

namespace fs = std::filesystem;

namespace nt {
namespace {

void fsync_path(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0) throw CheckpointError("cannot open '" + p.string() + "' to make it durable");
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw CheckpointError("fsync failed on '" + p.string() + "'");
}

std::optional<int64_t> step_of(const std::string& name) {
  static const std::regex re("^step_([0-9]+)$");
  std::smatch m;
  if (!std::regex_match(name, m, re)) return std::nullopt;
  return std::stoll(m[1]);
}

}  // namespace

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step_%08lld", static_cast<long long>(step));
  return buf;
}

std::string begin_checkpoint(const std::string& ckpt_root, int64_t step) {
  fs::path tmp = fs::path(ckpt_root) / (".tmp-" + checkpoint_name(step));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) throw CheckpointError("cannot create '" + tmp.string() + "': " + ec.message());
  return tmp.string();
}

std::string seal_checkpoint_file(const std::string& path) {
  fsync_path(path);
  return sha256_file(path);
}

std::string commit_checkpoint(const std::string& ckpt_root, int64_t step, nlohmann::json manifest,
                              const std::map<std::string, std::string>& sealed) {
  const fs::path root(ckpt_root);
  const fs::path tmp = root / (".tmp-" + checkpoint_name(step));
  const fs::path final_dir = root / checkpoint_name(step);
  nlohmann::json files = nlohmann::json::object();
  for (const auto& [name, digest] : sealed) {
    if (!fs::is_regular_file(tmp / name))
      throw CheckpointError("'" + (tmp / name).string() + "' was sealed by its writer but is not in the folder");
    files[name] = digest;
  }
  for (const auto& e : fs::directory_iterator(tmp)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || name == "manifest.json" || sealed.count(name)) continue;
    files[name] = seal_checkpoint_file(e.path().string());
  }
  manifest["files"] = files;
  manifest["step"] = step;
  {
    std::ofstream out(tmp / "manifest.json");
    out << manifest.dump(2) << "\n";
    if (!out) throw CheckpointError("cannot write '" + (tmp / "manifest.json").string() + "'");
  }
  fsync_path(tmp / "manifest.json");
  fsync_path(tmp);
  std::error_code ec;
  if (fs::exists(final_dir)) fs::remove_all(final_dir, ec);  // a rewrite of the same step
  fs::rename(tmp, final_dir, ec);
  if (ec) throw CheckpointError("cannot rename '" + tmp.string() + "' to '" + final_dir.string() + "': " + ec.message());
  fsync_path(root);
  // latest -> step folder, replaced atomically.
  const fs::path link_tmp = root / ".latest.tmp";
  fs::remove(link_tmp, ec);
  fs::create_directory_symlink(checkpoint_name(step), link_tmp, ec);
  if (ec) throw CheckpointError("cannot create '" + link_tmp.string() + "': " + ec.message());
  fs::rename(link_tmp, root / "latest", ec);
  if (ec) throw CheckpointError("cannot update '" + (root / "latest").string() + "': " + ec.message());
  fsync_path(root);
  return final_dir.string();
}

nlohmann::json read_manifest(const std::string& dir) {
  const fs::path d(dir);
  const fs::path mpath = d / "manifest.json";
  if (!fs::is_directory(d)) throw CheckpointError("checkpoint folder '" + dir + "' does not exist");
  if (!fs::exists(mpath))
    throw CheckpointError("'" + mpath.string() + "' is missing: the checkpoint is incomplete");
  nlohmann::json m;
  try {
    std::ifstream in(mpath);
    m = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw CheckpointError("'" + mpath.string() + "' is not valid JSON: " + e.what());
  }
  if (!m.contains("files") || !m["files"].is_object() || !m.contains("step"))
    throw CheckpointError("'" + mpath.string() + "' lacks 'files' or 'step'");
  return m;
}

void verify_checkpoint_files(const std::string& dir, const nlohmann::json& manifest,
                             const std::vector<std::string>& names) {
  const fs::path d(dir);
  for (const auto& name : names) {
    const fs::path f = d / name;
    if (!manifest.at("files").contains(name))
      throw CheckpointError("'" + (d / "manifest.json").string() + "' does not list '" + name + "'");
    if (!fs::exists(f)) throw CheckpointError("checkpoint file '" + f.string() + "' is missing");
    if (sha256_file(f.string()) != manifest["files"][name].get<std::string>())
      throw CheckpointError("checkpoint file '" + f.string() + "' is corrupted (SHA-256 mismatch)");
  }
}

nlohmann::json read_verified_manifest(const std::string& dir) {
  nlohmann::json m = read_manifest(dir);
  std::vector<std::string> names;
  for (const auto& [name, digest] : m["files"].items()) names.push_back(name);
  verify_checkpoint_files(dir, m, names);
  return m;
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& ckpt_root) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(ckpt_root, ec)) return out;
  for (const auto& e : fs::directory_iterator(ckpt_root, ec)) {
    if (e.is_symlink() || !e.is_directory()) continue;
    auto step = step_of(e.path().filename().string());
    if (step && fs::exists(e.path() / "manifest.json")) out.emplace_back(*step, e.path().string());
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return out;
}

void warn_incomplete_checkpoints(const std::string& ckpt_root, const std::function<void(const std::string&)>& warn) {
  std::error_code ec;
  if (!fs::is_directory(ckpt_root, ec)) return;
  for (const auto& e : fs::directory_iterator(ckpt_root, ec)) {
    if (e.is_symlink() || !e.is_directory()) continue;
    if (step_of(e.path().filename().string()) && !fs::exists(e.path() / "manifest.json"))
      warn("ignoring '" + e.path().string() + "': no manifest.json (incomplete checkpoint)");
  }
}

std::optional<std::string> find_resume_checkpoint(const std::string& ckpt_root,
                                                  const std::function<void(const std::string&)>& warn) {
  warn_incomplete_checkpoints(ckpt_root, warn);
  for (const auto& [step, dir] : list_checkpoints(ckpt_root)) {
    try {
      read_verified_manifest(dir);
      return dir;
    } catch (const CheckpointError& e) {
      warn(std::string(e.what()) + "; falling back to the previous checkpoint");
    }
  }
  return std::nullopt;
}

namespace {
constexpr const char* kReadingPrefix = ".reading-";
constexpr auto kStaleReadLock = std::chrono::hours(1);

// The checkpoint names that fresh read markers under ckpt_root protect.
std::set<std::string> folders_being_read(const std::string& ckpt_root) {
  std::set<std::string> names;
  std::error_code ec;
  const auto now = fs::file_time_type::clock::now();
  for (const auto& e : fs::directory_iterator(ckpt_root, ec)) {
    const std::string f = e.path().filename().string();
    if (f.rfind(kReadingPrefix, 0) != 0) continue;
    const auto t = fs::last_write_time(e.path(), ec);
    if (ec || now - t > kStaleReadLock) continue;
    const std::string rest = f.substr(std::strlen(kReadingPrefix));  // step_XXXXXXXX-host-pid-n
    names.insert(rest.substr(0, rest.find('-')));
  }
  return names;
}
}  // namespace

CheckpointReadLock::CheckpointReadLock(const std::string& dir) {
  static std::atomic<int> counter{0};
  const fs::path d = fs::path(dir).lexically_normal();
  const fs::path name = d.filename().empty() ? d.parent_path().filename() : d.filename();
  const fs::path root = d.filename().empty() ? d.parent_path().parent_path() : d.parent_path();
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  for (char& c : host)
    if (c == '-' || c == '/') c = '_';
  marker_ = (root / (std::string(kReadingPrefix) + name.string() + "-" + host + "-" + std::to_string(::getpid()) +
                     "-" + std::to_string(counter++)))
                .string();
  std::ofstream(marker_).put('\n');  // best effort: a read-only folder cannot be pruned by us either
}

CheckpointReadLock::~CheckpointReadLock() {
  std::error_code ec;
  fs::remove(marker_, ec);
}

void apply_retention(const std::string& ckpt_root, int64_t keep_last, int64_t keep_every) {
  std::error_code ec;
  const std::set<std::string> being_read = folders_being_read(ckpt_root);
  fs::path latest_target;
  const fs::path latest = fs::path(ckpt_root) / "latest";
  if (fs::is_symlink(latest, ec)) latest_target = fs::canonical(latest, ec);
  int64_t kept = 0;
  for (const auto& [step, dir] : list_checkpoints(ckpt_root)) {
    const bool newest = kept < keep_last;
    const bool milestone = keep_every > 0 && step % keep_every == 0;
    const bool is_latest = !latest_target.empty() && fs::canonical(dir, ec) == latest_target;
    if (newest) ++kept;
    if (newest || milestone || is_latest) continue;
    if (being_read.count(fs::path(dir).filename().string())) continue;
    fs::remove_all(dir, ec);
  }
}

}  // namespace nt
