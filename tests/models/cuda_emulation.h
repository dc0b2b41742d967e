// A CPU run of CUDA kernel code, for tests: the kernels of models/fused_kernels_device.h compiled
// by the host compiler and launched here, a block's threads as real threads (so that
// __syncthreads and warp shuffles synchronise as they do on a GPU), blocks one after another.
// Slow and only for small shapes; it checks indexing, bounds and reductions, not speed. One
// difference from a GPU: rsqrtf is exact here (CUDA's is within 2 ulp). The warp-level tensor-core
// products of models/warp_mma_device.h (mma.sync, ldmatrix) move the fragments' elements between
// a warp's threads by the PTX ISA's layouts (bf16 and tf32 inputs), and dynamic shared memory (launch_shared) starts as
// NaNs.
#pragma once
#include <cuda_bf16.h>
#include <driver_types.h>  // cudaStream_t
#include <vector_types.h>  // dim3, uint3

#include <array>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
// The warp-level products' exchange (warp_mma, warp_ldmatrix): a thread's registers, its address.
inline std::vector<std::array<uint32_t, 6>> fragment_slots;
inline std::vector<const void*> address_slots;
// The block's dynamic shared memory (launch_shared; 16-byte aligned).
inline std::vector<std::array<unsigned char, 16>> dynamic_shared_storage;
inline void* dynamic_shared() { return dynamic_shared_storage.data(); }

// kernel<<<grid, block>>>(args...) on the CPU (1-D blocks, grids up to 2-D): block.x threads go
// through the blocks together, meeting after each one, so that one block runs at a time.
template <typename Kernel, typename... Args>
void launch(dim3 grid, dim3 block, Kernel kernel, Args... args) {
  gridDim = grid;
  blockDim = block;
  Barrier barrier(block.x);
  block_barrier = &barrier;
  shuffle_slots.assign(block.x, 0.f);
  fragment_slots.assign(block.x, {});
  address_slots.assign(block.x, nullptr);
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

// launch with `bytes` of dynamic shared memory, filled with 0xff bytes (bf16 and fp32 NaNs), so
// that a kernel that reads what it did not write gives NaNs.
template <typename Kernel, typename... Args>
void launch_shared(dim3 grid, dim3 block, size_t bytes, Kernel kernel, Args... args) {
  std::array<unsigned char, 16> nan;
  nan.fill(0xff);
  dynamic_shared_storage.assign((bytes + 15) / 16, nan);
  launch(grid, block, kernel, args...);
}

}  // namespace nt::emu

inline void __syncthreads() {
  nt::emu::block_barrier->wait();
  asm volatile("" ::: "memory");
}

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

namespace nt::emu {

// The bf16 (as float) in half `hi` of a 32-bit fragment register.
inline float bf16_half(uint32_t r, int hi) {
  const uint32_t bits = (hi ? r >> 16 : r & 0xffffu) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// A warp's fragment registers: 6 a thread (a's from 0, b's from 4), 32 threads.
using WarpRegisters = std::array<std::array<uint32_t, 6>, 32>;

// d += A B (m16 x kK times kK x n8) for this lane's four outputs of the calling warp, where `mine`
// holds this thread's fragment registers (a's from 0, b's from 4) and A(warp, row, k), B(warp, k,
// col) read the matrices' elements from the warp's registers by their layout. Every thread of the
// block calls it together (as the kernels' warps all run the same products); the sums run over k
// in order.
template <typename FA, typename FB>
inline void warp_mma_with(float (&d)[4], const std::array<uint32_t, 6>& mine, int kK, FA&& A, FB&& B) {
  const unsigned tid = threadIdx.x, base = tid & ~31u, lane = tid & 31u;
  fragment_slots[tid] = mine;
  __syncthreads();
  WarpRegisters warp;
  for (unsigned l = 0; l < 32; ++l) warp[l] = fragment_slots[base + l];
  __syncthreads();
  const int g = static_cast<int>(lane / 4), t = static_cast<int>(lane % 4);
  // The four outputs one by one: written as a loop over them, GCC 12's vectorizer at -O3 gave
  // zeros for rows 8..15 (this program, 2026-11-28; -O2 and -fno-tree-vectorize gave the sums).
  auto dot = [&](int row, int col, float acc) {
    for (int k = 0; k < kK; ++k) acc += A(warp, row, k) * B(warp, k, col);
    return acc;
  };
  d[0] = dot(g, 2 * t, d[0]);
  d[1] = dot(g, 2 * t + 1, d[1]);
  d[2] = dot(g + 8, 2 * t, d[2]);
  d[3] = dot(g + 8, 2 * t + 1, d[3]);
}

// mma.sync m16 n8 k<K> (K = 16: a 4 registers, b 2; K = 8: a 2, b 1), bf16 inputs, fp32
// accumulators: d += a b for the calling warp, by the layouts of models/warp_mma_device.h.
template <int K>
inline void warp_mma(float (&d)[4], const uint32_t (&a)[K / 4], const uint32_t (&b)[K / 8]) {
  std::array<uint32_t, 6> mine{};
  for (int i = 0; i < K / 4; ++i) mine[i] = a[i];
  for (int i = 0; i < K / 8; ++i) mine[4 + i] = b[i];
  auto A = [](const WarpRegisters& w, int row, int k) {  // (row, k) of the m16 x kK matrix
    return bf16_half(w[(row % 8) * 4 + (k % 8) / 2][(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k % 2);
  };
  auto B = [](const WarpRegisters& w, int k, int col) {  // (k, col) of the kK x n8 matrix
    return bf16_half(w[col * 4 + (k % 8) / 2][4 + (k >= 8 ? 1 : 0)], k % 2);
  };
  warp_mma_with(d, mine, K, A, B);
}

// mma.sync m16 n8 k8 with tf32 inputs (a 4 registers, b 2; fp32 bits, the low 13 of each
// ignored: truncated, as the tensor cores do), fp32 accumulators, by the layouts of
// models/warp_mma_device.h. Each product is exact in fp32 (11 x 11 bits).
inline void warp_mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  auto value = [](uint32_t r) {
    r &= 0xffffe000u;
    float f;
    std::memcpy(&f, &r, 4);
    return f;
  };
  auto A = [&](const WarpRegisters& w, int row, int k) {
    return value(w[(row % 8) * 4 + k % 4][(row >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0)]);
  };
  auto B = [&](const WarpRegisters& w, int k, int col) { return value(w[col * 4 + k % 4][4 + (k >= 4 ? 1 : 0)]); };
  warp_mma_with(d, {a[0], a[1], a[2], a[3], b[0], b[1]}, 8, A, B);
}

// cp.async as a GPU may run it: a thread's copies wait in groups (async_commit) and land only
// when async_wait lets at most `pending` groups stay in flight, so that a kernel that reads
// shared memory before its wait reads the launch's NaNs. Copies not yet committed belong to no
// group and no wait lands them, as on a GPU (cp.async.wait_group waits for committed groups only).
// Both addresses must be 16-byte aligned (the instruction's requirement): the run stops otherwise.
// With async_land_at_issue set (before a launch), each copy lands as it is issued instead, the
// other order a GPU may take: a kernel that refills shared memory other warps still read then
// reads the new rows. A kernel right in both orders neither reads before its wait nor overwrites
// before its barrier.
struct AsyncCopy {
  void* dst;
  const void* src;
};
inline thread_local std::vector<std::vector<AsyncCopy>> async_groups;
inline thread_local std::vector<AsyncCopy> async_open;
inline bool async_land_at_issue = false;
// Sets async_land_at_issue for a scope, then puts it back.
struct LandAtIssue {
  bool before = async_land_at_issue;
  LandAtIssue() { async_land_at_issue = true; }
  ~LandAtIssue() { async_land_at_issue = before; }
  LandAtIssue(const LandAtIssue&) = delete;
  LandAtIssue& operator=(const LandAtIssue&) = delete;
};
inline void require_aligned_16(const void* p, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) {
    std::fprintf(stderr, "cuda_emulation: %s address %p is not 16-byte aligned\n", what, p);
    std::abort();
  }
}
inline void async_copy_16(void* dst, const void* src) {
  require_aligned_16(dst, "cp.async destination");
  require_aligned_16(src, "cp.async source");
  if (async_land_at_issue)
    std::memcpy(dst, src, 16);
  else
    async_open.push_back({dst, src});
}
inline void async_commit() {
  async_groups.push_back(std::move(async_open));
  async_open.clear();
}
inline void async_wait(int pending) {
  while (async_groups.size() > static_cast<size_t>(pending < 0 ? 0 : pending)) {
    for (const AsyncCopy& c : async_groups.front()) std::memcpy(c.dst, c.src, 16);
    async_groups.erase(async_groups.begin());
  }
}

// ldmatrix .x<mats> (.trans): register i of lane 4g + t gets matrix i's row g, elements 2t, 2t+1
// (trans: elements (2t, g) and (2t+1, g)); matrix i's row addresses come from lanes 8i .. 8i+7,
// each 16-byte aligned (the run stops otherwise).
inline void warp_ldmatrix(uint32_t* r, int mats, bool trans, const void* row) {
  const unsigned tid = threadIdx.x, base = tid & ~31u, lane = tid & 31u;
  if (static_cast<int>(lane) < 8 * mats) require_aligned_16(row, "ldmatrix row");
  address_slots[tid] = row;
  __syncthreads();
  const unsigned g = lane / 4, t = lane % 4;
  for (int i = 0; i < mats; ++i) {
    auto element = [&](unsigned rr, unsigned c) {
      uint16_t v;
      std::memcpy(&v, static_cast<const unsigned char*>(address_slots[base + 8 * i + rr]) + 2 * c, 2);
      return static_cast<uint32_t>(v);
    };
    const uint32_t lo = trans ? element(2 * t, g) : element(g, 2 * t);
    const uint32_t hi = trans ? element(2 * t + 1, g) : element(g, 2 * t + 1);
    r[i] = lo | (hi << 16);
  }
  __syncthreads();
}

}  // namespace nt::emu
