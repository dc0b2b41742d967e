// A CPU run of CUDA kernel code, for tests: the kernels of models/fused_kernels_device.h compiled
// by the host compiler and launched here, a block's threads as real threads (so that
// __syncthreads and warp shuffles synchronise as they do on a GPU), blocks one after another.
// Slow and only for small shapes; it checks indexing, bounds and reductions, not speed. One
// difference from a GPU: rsqrtf is exact here (CUDA's is within 2 ulp).
#pragma once
#include <cuda_bf16.h>
#include <driver_types.h>  // cudaStream_t
#include <vector_types.h>  // dim3, uint3

#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

namespace nt::emu {

// The block's threads meet here; reusable (a generation count).
class Barrier {
 public:
  explicit Barrier(unsigned n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    const unsigned gen = generation_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != gen; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  unsigned n_, arrived_ = 0, generation_ = 0;
};

inline Barrier* block_barrier = nullptr;
inline std::vector<float> shuffle_slots;  // one per thread of the block

// kernel<<<grid, block>>>(args...) on the CPU (1-D blocks, grids up to 2-D): block.x threads go
// through the blocks together, meeting after each one, so that one block runs at a time.
template <typename Kernel, typename... Args>
void launch(dim3 grid, dim3 block, Kernel kernel, Args... args) {
  gridDim = grid;
  blockDim = block;
  Barrier barrier(block.x);
  block_barrier = &barrier;
  shuffle_slots.assign(block.x, 0.f);
  std::vector<std::thread> threads;
  threads.reserve(block.x);
  for (unsigned t = 0; t < block.x; ++t)
    threads.emplace_back([=, &barrier] {
      threadIdx = {t, 0, 0};
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          blockIdx = {bx, by, 0};
          kernel(args...);
          barrier.wait();  // the block is done (its threads may have returned early)
        }
    });
  for (auto& th : threads) th.join();
}

}  // namespace nt::emu

inline void __syncthreads() { nt::emu::block_barrier->wait(); }

// Every thread of the block must call it together, as in the kernels' full-block reductions.
inline float __shfl_xor_sync(unsigned /*mask*/, float v, int lane_mask) {
  auto& slots = nt::emu::shuffle_slots;
  slots[threadIdx.x] = v;
  __syncthreads();
  const float other = slots[threadIdx.x ^ static_cast<unsigned>(lane_mask)];
  __syncthreads();
  return other;
}

inline float rsqrtf(float v) { return 1.f / std::sqrt(v); }
