// Helpers shared by the tests: scratch folders and running the project's executables.
#pragma once
#include <gtest/gtest.h>

#include <string>

// Substring expectations with a message that shows the whole text.
#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "'" << (text) << "' lacks '" << (part) << "'"
#define EXPECT_LACKS(text, part)                             \
  EXPECT_EQ(std::string(text).find(part), std::string::npos) \
      << "'" << (text) << "' should not contain '" << (part) << "'"

namespace nt::test {

// A fresh, empty folder under the build tree, unique to the calling test.
std::string scratch_dir();
// Runs a shell command; returns its exit code and puts stdout+stderr into *output.
int run_command(const std::string& cmd, std::string* output = nullptr);
// Path of a project executable built in the build tree, e.g. exe("launch/tread_run").
std::string exe(const std::string& relative);

// A whole file as bytes ("" if it cannot be read), and writing one (a test failure if not).
std::string read_text(const std::string& path);
void write_text(const std::string& path, const std::string& text);

// The message of the E that f() throws; a test failure (and "") if it throws nothing or
// another exception.
template <typename E, typename F>
std::string thrown_message(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected another exception type, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected an exception, nothing was thrown";
  return "";
}

// Runs a project executable with stdout and stderr kept apart (stderr through a file in
// `scratch`).
struct ToolResult {
  int rc = -1;
  std::string out, err;
};
ToolResult tool(const std::string& name, const std::string& args, const std::string& scratch);

}  // namespace nt::test
