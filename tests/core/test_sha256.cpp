// SHA-256: FIPS 180-2 test vectors for buffers, and files (streamed in 1 MiB blocks) against
// the buffer digest and against Python's hashlib.
#include "core/sha256.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>

#include "test_util.h"

namespace {

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(nt::sha256_hex("", 0),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(nt::sha256_hex("abc", 3),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(nt::sha256_hex(two_blocks.data(), two_blocks.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million_a(1000000, 'a');
  EXPECT_EQ(nt::sha256_hex(million_a.data(), million_a.size()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, FilesMatchBuffers) {
  const std::string dir = nt::test::scratch_dir();
  // Sizes around the 1 MiB block boundary, and an empty file.
  std::mt19937 gen(7);
  for (size_t size : {size_t(0), size_t(3), size_t(1) << 20, (size_t(1) << 20) + 1,
                      (size_t(5) << 19) + 17}) {
    std::string bytes(size, '\0');
    for (char& c : bytes) c = static_cast<char>(gen() & 0xff);
    const std::string path = dir + "/data_" + std::to_string(size) + ".bin";
    write_file(path, bytes);
    const std::string from_file = nt::sha256_file(path);
    EXPECT_EQ(from_file, nt::sha256_hex(bytes.data(), bytes.size())) << "size " << size;
    // An independent implementation: Python's hashlib.
    std::string out;
    ASSERT_EQ(nt::test::run_command("python3 -c \"import hashlib,sys; print(hashlib.sha256("
                                    "open(sys.argv[1],'rb').read()).hexdigest())\" " + path,
                                    &out),
              0)
        << out;
    EXPECT_EQ(from_file + "\n", out) << "size " << size;
  }
  write_file(dir + "/abc.txt", "abc");
  EXPECT_EQ(nt::sha256_file(dir + "/abc.txt"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, UnreadableFileNamesThePath) {
  const std::string dir = nt::test::scratch_dir();
  const std::string missing = dir + "/no_such_file.bin";
  try {
    nt::sha256_file(missing);
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  // A folder opens but cannot be read.
  try {
    nt::sha256_file(dir);
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(dir), std::string::npos) << e.what();
  }
}

}  // namespace
