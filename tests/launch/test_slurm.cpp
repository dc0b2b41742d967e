// The Slurm batch templates launch/slurm/*.sbatch: bash syntax, the #SBATCH header that lets a
// run outlive its time limit (--signal=B:USR1@..., --requeue, one rank per GPU), the srun line
// that starts tread_run, and the signal path run for real with a fake srun and scontrol first in
// PATH: USR1 to the batch script reaches the job step, the script waits for the step, exits with
// its status and requeues the job only when the step stopped cleanly on that signal.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace fs = std::filesystem;

namespace {

using nt::test::read_text;
using nt::test::run_command;
using nt::test::scratch_dir;
using nt::test::write_text;

std::vector<std::string> templates() {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(fs::path(NT_SOURCE_DIR) / "launch" / "slurm"))
    if (e.path().extension() == ".sbatch") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The #SBATCH directives sbatch reads: those before the first command (it ignores later ones).
std::vector<std::string> sbatch_options(const std::string& path) {
  std::vector<std::string> out;
  for (const std::string& line : lines_of(read_text(path))) {
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') {
      if (line.rfind("#SBATCH", 0) == 0) {
        std::istringstream words(line.substr(7));
        for (std::string w; words >> w && w[0] != '#';) out.push_back(w);
      }
      continue;
    }
    break;
  }
  return out;
}

// The value of --name=V among the options, or "" when absent.
std::string option_value(const std::vector<std::string>& opts, const std::string& name) {
  for (const std::string& o : opts)
    if (o.rfind(name + "=", 0) == 0) return o.substr(name.size() + 1);
  return "";
}

// The commands of a script with their backslash continuations joined, comments left out.
std::vector<std::string> commands(const std::string& path) {
  std::vector<std::string> out;
  std::string cur;
  for (std::string line : lines_of(read_text(path))) {
    const auto first = line.find_first_not_of(" \t");
    if (cur.empty() && (first == std::string::npos || line[first] == '#')) continue;
    const bool continued = !line.empty() && line.back() == '\\';
    if (continued) line.pop_back();
    cur += line.substr(cur.empty() ? first : 0);
    if (!continued) {
      out.push_back(cur);
      cur.clear();
    }
  }
  return out;
}

TEST(SlurmTemplates, TheThreeKindsExist) {
  const auto all = templates();
  for (const char* name : {"train_single.sbatch", "train_multinode.sbatch", "train_eval.sbatch"})
    EXPECT_TRUE(fs::exists(fs::path(NT_SOURCE_DIR) / "launch" / "slurm" / name)) << name;
  EXPECT_GE(all.size(), 3u);
}

TEST(SlurmTemplates, PassBashSyntaxCheck) {
  for (const std::string& t : templates()) {
    std::string out;
    EXPECT_EQ(run_command("bash -n '" + t + "'", &out), 0) << t << ":\n" << out;
  }
}

TEST(SlurmTemplates, AskForTheStopSignalRequeueAndOneRankPerGpu) {
  for (const std::string& t : templates()) {
    SCOPED_TRACE(t);
    const auto opts = sbatch_options(t);
    const std::string signal = option_value(opts, "--signal");
    EXPECT_EQ(signal.rfind("B:USR1@", 0), 0u) << "want #SBATCH --signal=B:USR1@<seconds>, got '" << signal << "'";
    EXPECT_GE(std::atoi(signal.substr(signal.find('@') + 1).c_str()), 60) << "too little time to checkpoint";
    EXPECT_NE(std::find(opts.begin(), opts.end(), "--requeue"), opts.end()) << "no #SBATCH --requeue";
    // A requeued job runs the script again under the same job id: keep the earlier output.
    EXPECT_EQ(option_value(opts, "--open-mode"), "append");
    // GPU = local rank (dist/topology): as many ranks per node as GPUs per node, no per-task binding.
    EXPECT_FALSE(option_value(opts, "--gpus-per-node").empty());
    EXPECT_EQ(option_value(opts, "--ntasks-per-node"), option_value(opts, "--gpus-per-node"));
    EXPECT_EQ(option_value(opts, "--gpus-per-task"), "");
  }
}

TEST(SlurmTemplates, StartTreadRunWithSrunInTheBackground) {
  for (const std::string& t : templates()) {
    SCOPED_TRACE(t);
    int found = 0;
    const auto cmds = commands(t);
    for (const std::string& c : cmds) {
      if (c.rfind("srun ", 0) != 0) continue;
      ++found;
      // The executable: tread_run itself, or "$TREAD_RUN" defaulting to it.
      if (c.find("\"$TREAD_RUN\"") != std::string::npos) {
        const auto def = std::find_if(cmds.begin(), cmds.end(), [](const std::string& x) {
          return x.rfind("TREAD_RUN=\"${TREAD_RUN:-", 0) == 0 && x.find("/tread_run}\"") != std::string::npos;
        });
        EXPECT_NE(def, cmds.end()) << "srun starts \"$TREAD_RUN\" but no TREAD_RUN=\"${TREAD_RUN:-.../tread_run}\"";
      } else {
        EXPECT_CONTAINS(c, "tread_run");
      }
      EXPECT_CONTAINS(c, "--config \"$config\"");
      EXPECT_CONTAINS(c, "\"$@\"");
      EXPECT_EQ(c.back(), '&') << "srun must run in the background so that the trap can forward USR1: " << c;
    }
    EXPECT_EQ(found, 1);
  }
}

// A fake Slurm: srun logs its arguments; by default it runs until USR1, then (after a pause
// that shows whether the batch script waits for it) exits with FAKE_SRUN_STOP_RC; with
// FAKE_SRUN_EXIT it exits at once with that code. scontrol logs its arguments. Both stop by
// themselves after 10 s so that nothing outlives a broken run.
constexpr const char* kFakeSrun = R"SH(#!/bin/bash
log="$FAKE_SLURM_LOG"
echo "srun" >> "$log"
printf 'arg:%s\n' "$@" >> "$log"
if [ -n "$FAKE_SRUN_EXIT" ]; then echo "srun exits $FAKE_SRUN_EXIT" >> "$log"; exit "$FAKE_SRUN_EXIT"; fi
stop_rc="${FAKE_SRUN_STOP_RC:-0}"
trap 'echo "srun got USR1" >> "$log"; : > "$log.usr1"; sleep 0.3; echo "srun exits $stop_rc" >> "$log"; exit "$stop_rc"' USR1
trap 'echo "srun got TERM" >> "$log"; exit 143' TERM
: > "$log.started"
for i in $(seq 400); do sleep 0.025; done
echo "srun timed out" >> "$log"
exit 99
)SH";

constexpr const char* kFakeScontrol = R"SH(#!/bin/bash
echo "scontrol $*" >> "$FAKE_SLURM_LOG"
)SH";

// drive.sh TEMPLATE SEND_USR1: runs the template as sbatch would (in the submit folder, with the
// job's variables), sends USR1 to the batch script until the step reports it (when asked),
// prints "rc=N", the script's exit status. A watchdog ends the script after 10 s.
constexpr const char* kDriver = R"SH(#!/bin/bash
dir=$(cd "$(dirname "$0")" && pwd)
cd "$dir" || exit 90
export PATH="$dir/bin:$PATH" SLURM_JOB_ID=4242 SLURM_CPUS_PER_TASK=3 FAKE_SLURM_LOG="$dir/log"
unset SLURM_RESTART_COUNT EVAL_RANKS TREAD_RUN SRUN_MPI
rm -f log log.started log.usr1 out
bash "$1" configs/x.toml --set train.steps=7 --set 'run.name=a b' > out 2>&1 &
pid=$!
( sleep 10; kill -KILL "$pid" ) > /dev/null 2>&1 &
dog=$!
if [ "$2" = 1 ]; then
  for i in $(seq 200); do
    [ -e log.usr1 ] && break
    [ -e log.started ] && kill -USR1 "$pid" 2> /dev/null
    sleep 0.05
  done
fi
wait "$pid"
rc=$?
kill "$dog" 2> /dev/null
echo "rc=$rc"
)SH";

struct ScriptRun {
  std::string rc_line, log, out;
};

class SlurmSignal : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = scratch_dir();
    fs::create_directories(dir_ + "/bin");
    write_text(dir_ + "/bin/srun", kFakeSrun);
    write_text(dir_ + "/bin/scontrol", kFakeScontrol);
    write_text(dir_ + "/drive.sh", kDriver);
    for (const char* f : {"/bin/srun", "/bin/scontrol", "/drive.sh"})
      fs::permissions(dir_ + f, fs::perms::owner_all, fs::perm_options::add);
  }

  ScriptRun run_template(const std::string& tmpl, bool send_usr1, const std::string& env = "") {
    ScriptRun r;
    std::string output;
    run_command(env + " bash '" + dir_ + "/drive.sh' '" + tmpl + "' " + (send_usr1 ? "1" : "0"), &output);
    r.rc_line = output.substr(output.rfind("rc=") == std::string::npos ? output.size() : output.rfind("rc="));
    while (!r.rc_line.empty() && r.rc_line.back() == '\n') r.rc_line.pop_back();
    r.log = read_text(dir_ + "/log");
    r.out = read_text(dir_ + "/out");
    return r;
  }

  std::string dir_;
};

// The time-limit path: USR1 -> step checkpoints and exits 0 -> script requeues, exits 0.
TEST_F(SlurmSignal, Usr1ReachesTheStepAndACleanStopIsRequeued) {
  for (const std::string& t : templates()) {
    SCOPED_TRACE(t);
    const ScriptRun r = run_template(t, /*send_usr1=*/true);
    const std::string ctx = "\nlog:\n" + r.log + "\nscript output:\n" + r.out;
    EXPECT_EQ(r.rc_line, "rc=0") << ctx;
    EXPECT_CONTAINS(r.log, "srun got USR1");
    EXPECT_LACKS(r.log, "srun got TERM");
    EXPECT_LACKS(r.log, "timed out");
    // The script waited for the step's own exit, then requeued its job.
    const auto exited = r.log.find("srun exits 0"), requeued = r.log.find("scontrol requeue 4242");
    ASSERT_NE(exited, std::string::npos) << ctx;
    ASSERT_NE(requeued, std::string::npos) << ctx;
    EXPECT_LT(exited, requeued) << ctx;
    // srun starts tread_run with the config, an eval.ranks the user's --set can override, and
    // the user's arguments intact; it is told the cores per task (not inherited since 22.05).
    EXPECT_CONTAINS(r.log, "arg:--cpus-per-task=3");
    EXPECT_CONTAINS(r.log, "tread_run\narg:--config\narg:configs/x.toml\n");
    const auto eval = r.log.find("\narg:eval.ranks="), user = r.log.find("\narg:train.steps=7\n");
    ASSERT_NE(eval, std::string::npos) << ctx;
    ASSERT_NE(user, std::string::npos) << ctx;
    EXPECT_LT(eval, user);
    EXPECT_CONTAINS(r.log, "\narg:run.name=a b\n");
  }
}

// A step that fails while stopping (e.g. the checkpoint could not be written) is not requeued.
TEST_F(SlurmSignal, AFailedStopIsNotRequeued) {
  for (const std::string& t : templates()) {
    SCOPED_TRACE(t);
    const ScriptRun r = run_template(t, /*send_usr1=*/true, "FAKE_SRUN_STOP_RC=1");
    EXPECT_EQ(r.rc_line, "rc=1") << r.log << r.out;
    EXPECT_CONTAINS(r.log, "srun got USR1");
    EXPECT_LACKS(r.log, "scontrol");
  }
}

// Without a signal the script ends with the step's status (finished: 0, failed: non-zero) and
// never requeues.
TEST_F(SlurmSignal, WithoutASignalTheScriptEndsWithTheStepStatus) {
  for (const std::string& t : templates()) {
    SCOPED_TRACE(t);
    ScriptRun r = run_template(t, /*send_usr1=*/false, "FAKE_SRUN_EXIT=3");
    EXPECT_EQ(r.rc_line, "rc=3") << r.log << r.out;
    EXPECT_LACKS(r.log, "scontrol");
    r = run_template(t, /*send_usr1=*/false, "FAKE_SRUN_EXIT=0");
    EXPECT_EQ(r.rc_line, "rc=0") << r.log << r.out;
    EXPECT_LACKS(r.log, "scontrol");
  }
}

// A missing config argument stops the script before srun, with the usage on stderr.
TEST_F(SlurmSignal, WithoutAConfigTheScriptPrintsItsUsage) {
  for (const std::string& t : templates()) {
    SCOPED_TRACE(t);
    std::string out;
    const int rc = run_command("cd '" + dir_ + "' && PATH='" + dir_ + "/bin':\"$PATH\" FAKE_SLURM_LOG='" + dir_ +
                                   "/log0' bash '" + t + "'",
                               &out);
    EXPECT_NE(rc, 0);
    EXPECT_CONTAINS(out, "usage: sbatch launch/slurm/" + fs::path(t).filename().string() + " CONFIG");
    EXPECT_FALSE(fs::exists(dir_ + "/log0"));
  }
}

}  // namespace
