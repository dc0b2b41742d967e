#include "core/metrics.h"

#include <stdexcept>

namespace nt {

void MetricsSink::open(const std::string& path) {
  if (file_) std::fclose(file_);
  file_ = std::fopen(path.c_str(), "a");
  if (!file_) throw std::runtime_error("cannot open metrics file '" + path + "' for appending");
}

MetricsSink::~MetricsSink() {
  if (file_) std::fclose(file_);
}

void MetricsSink::write(const nlohmann::json& record) {
  if (!file_) return;
  const std::string line = record.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

}  // namespace nt
