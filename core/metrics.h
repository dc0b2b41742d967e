// Metrics sink: one JSON object per line appended to <run>/metrics.jsonl, flushed per line.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

namespace nt {

class MetricsSink {
 public:
  MetricsSink() = default;
  explicit MetricsSink(const std::string& path) { open(path); }
  void open(const std::string& path);  // for appending; throws naming the path
  ~MetricsSink();
  MetricsSink(const MetricsSink&) = delete;
  MetricsSink& operator=(const MetricsSink&) = delete;
  void write(const nlohmann::json& record);  // no-op while not open

 private:
  std::FILE* file_ = nullptr;
};

}  // namespace nt
