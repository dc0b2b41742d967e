// SHA-256 of files and buffers, as lowercase hex (OpenSSL's EVP digest underneath).
#pragma once
#include <cstddef>
#include <string>

namespace nt {

std::string sha256_hex(const void* data, size_t size);
// Streams the file; throws std::runtime_error naming the file when it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace nt
