#include "test_util.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sys/wait.h>

namespace nt::test {

std::string scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "misc";
  for (char& ch : name)
    if (ch == '/') ch = '_';
  std::filesystem::path dir = std::filesystem::path(NT_BINARY_DIR) / "test_scratch" / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

int run_command(const std::string& cmd, std::string* output) {
  std::string full = cmd + " 2>&1";
  FILE* pipe = popen(full.c_str(), "r");
  if (!pipe) return -1;
  std::array<char, 4096> buf;
  std::string out;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  int status = pclose(pipe);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string exe(const std::string& relative) {
  return (std::filesystem::path(NT_BINARY_DIR) / relative).string();
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  EXPECT_TRUE(f.good()) << "cannot write " << path;
}

ToolResult tool(const std::string& name, const std::string& args, const std::string& scratch) {
  ToolResult r;
  const std::string err_file = scratch + "/stderr.txt";
  r.rc = run_command("(" + exe(name) + " " + args + " 2> " + err_file + ")", &r.out);
  r.err = read_text(err_file);
  return r;
}

}  // namespace nt::test
