#include "launch/python_torch.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace nt::test {

const char* const kPython = "/usr/bin/python3";

bool have_torch() { return run_command(std::string(kPython) + " -c 'import torch'") == 0; }

void run_python(const std::string& dir, const std::string& code) {
  write_text(dir + "/make.py", code);
  std::string out;
  ASSERT_EQ(run_command(std::string(kPython) + " " + dir + "/make.py", &out), 0) << out;
}

std::string convert_weights(const std::string& args, int* rc) {
  std::string out;
  *rc = run_command(std::string(kPython) + " " + NT_SOURCE_DIR + "/scripts/convert-weights " + args, &out);
  return out;
}

}  // namespace nt::test
