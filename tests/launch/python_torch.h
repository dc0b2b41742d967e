// Debian's Python with PyTorch (/usr/bin/python3, package python3-torch) for the tests that make
// reference-format files (torch.save checkpoints) and run scripts/convert-weights; the tests skip
// where it is missing.
#pragma once
#include <string>

namespace nt::test {

extern const char* const kPython;  // "/usr/bin/python3"
bool have_torch();
// Runs `code` as dir/make.py; a test failure with its output if it fails.
void run_python(const std::string& dir, const std::string& code);
// Runs scripts/convert-weights with `args`; its exit code goes to *rc, its output is returned.
std::string convert_weights(const std::string& args, int* rc);

}  // namespace nt::test
