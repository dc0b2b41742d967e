// GPU time of work queued on a CUDA stream, read later without waiting for it (event_timer_cuda.cu;
// no LibTorch in this interface): models/product_forms.h times the two forms of a product inside
// the training step this way, where the kernels meet the caches and clocks they meet in training.
#pragma once
#include <optional>

namespace nt::cuda {

class EventTimer {
 public:
  // Records the start on `stream` (nullptr: the legacy default stream, LibTorch's default) of
  // CUDA device `device`.
  EventTimer(int device, void* stream);
  ~EventTimer();
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;

  void stop();  // records the end on the same stream
  // The milliseconds between start and end once the end has run; nullopt before that (or before stop()).
  std::optional<float> ms() const;

 private:
  void* start_ = nullptr;
  void* end_ = nullptr;
  void* stream_ = nullptr;
  int device_ = 0;
  bool stopped_ = false;
};

}  // namespace nt::cuda
