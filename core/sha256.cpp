// SHA-256 of buffers and files through OpenSSL's EVP interface; files are streamed in 1 MiB
// blocks so checkpoint shards of any size hash in constant memory.
#include "core/sha256.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

namespace nt {
namespace {

struct CtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

// One digest in progress; every OpenSSL call is checked.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_) throw std::runtime_error("sha256: EVP_MD_CTX_new failed (out of memory?)");
    if (EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
      throw std::runtime_error("sha256: EVP_DigestInit_ex failed");
  }
  void update(const void* data, size_t size) {
    if (size > 0 && EVP_DigestUpdate(ctx_.get(), data, size) != 1)
      throw std::runtime_error("sha256: EVP_DigestUpdate failed");
  }
  std::string hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), digest, &len) != 1)
      throw std::runtime_error("sha256: EVP_DigestFinal_ex failed");
    static const char* kHex = "0123456789abcdef";
    std::string out;
    out.reserve(2 * len);
    for (unsigned int i = 0; i < len; ++i) {
      out.push_back(kHex[digest[i] >> 4]);
      out.push_back(kHex[digest[i] & 15]);
    }
    return out;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, CtxFree> ctx_;
};

struct FileCloser {
  void operator()(FILE* f) const {
    if (f) std::fclose(f);
  }
};

}  // namespace

std::string sha256_hex(const void* data, size_t size) {
  Sha256 h;
  h.update(data, size);
  return h.hex();
}

std::string sha256_file(const std::string& path) {
  std::unique_ptr<FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file)
    throw std::runtime_error("sha256: cannot open '" + path + "': " + std::strerror(errno));
  Sha256 h;
  std::vector<unsigned char> block(1 << 20);  // 1 MiB
  for (;;) {
    const size_t got = std::fread(block.data(), 1, block.size(), file.get());
    h.update(block.data(), got);
    if (got < block.size()) {
      if (std::ferror(file.get()))
        throw std::runtime_error("sha256: reading '" + path + "' failed: " +
                                 std::strerror(errno));
      break;  // end of file
    }
  }
  return h.hex();
}

}  // namespace nt
