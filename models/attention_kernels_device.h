// The bodies of the project's attention kernels (models/attention_cuda.cu launches them for the
// fused_attention op), compiled by nvcc for the GPU and by the host compiler for the CPU run of
// tests/models/cuda_emulation.h, like the kernels of models/fused_kernels_device.h.
//
// o = softmax(q k^T * scale) v per sample n and head h, for sequences of at most kAttnMaxT tokens
// and head widths HD (a multiple of 8) that nvcc instantiates, with inputs of type E:
//   bf16: products on bf16 fragments with fp32 accumulators (the bf16 blocks under autocast);
//   fp32: 3xTF32 products (each operand split into two tf32 parts, three TF32 products, fp32's
//         accuracy, as LibTorch's memory-efficient kernel computes fp32 attention): TREAD's block
//         after a route, which runs outside autocast.
// A block streams one (n, h)'s keys and values (or queries and output gradients) through shared
// memory in tiles, and its warps take 16 rows each, with mma.sync products
// (models/attention_fragments_device.h: where the two types differ). Tile sizes per type: AttnTiling.
// Head widths need not be multiples of 16: HD = 72 (DiT-XL/2) runs in bf16 as 4 k16 steps and one
// k8 step, and as 9 n8 tiles, where cuDNN's kernels pad it to 128.
//
//   forward  (attention_forward_kernel; a block per kRows queries of one (n, h)):
//     s = q k^T * scale * log2(e) (scores in base 2), over key tiles with the running row maximum
//     m and sum l (the online softmax: p = 2^(s - m) in fp32, l summed from those p, o accumulated
//     from p: in bf16 rounded to bf16 first, as FlashAttention's and cuDNN's kernels do), then o / l
//     and lse = m + log2(l) (fp32, kept for backward).
//   backward (two kernels, no atomics; each recomputes s from q, k and lse):
//     attention_dq_kernel   (a block per kRows queries): delta = rowsum(do * o), kept for the next
//                           kernel; p = 2^(s - lse), dp = do v^T, ds = p * (dp - delta),
//                           dq = ds k * scale (ds, as p, rounded to bf16 in the bf16 kernels).
//     attention_dkv_kernel  (a block per kKeyRows keys): p^T, dp^T and ds^T as above, from the
//                           keys' side: dv = p^T do, dk = ds^T q * scale.
//   The dq kernel's products: s, dp, dq; the dkv kernel's: s, dp, dv, dk (7 products where one
//   kernel with atomic dq sums would run 5, and cuDNN's kernel runs 5 padded to width 128).
//
// Grid: blockIdx.x = pair * tiles + tile (pair = n * H + h; tiles of a block's rows).
// Layouts: q, k, v (and their gradients) [N, H, T, HD] with unit stride along HD and strides
// (s_n, s_h, s_t) shared by the three (views of qkv's output [N, T, 3, H, HD] have them); o and
// its gradient's source do: o [N, T, H, HD] contiguous (the proj product's input as it is), do
// with strides of its own; lse and delta [N * H, T] fp32.
#pragma once
#include <cmath>
#include <cstdint>

#include "models/attention_fragments_device.h"

#ifdef __CUDACC__
#define NT_BOUNDS_BLOCKS(threads, blocks) __launch_bounds__(threads, blocks)
#define NT_LAUNCH_SHARED(kernel, grid, block, bytes, stream, ...) \
  kernel<<<(grid), (block), (bytes), (stream)>>>(__VA_ARGS__)
#else
#define NT_BOUNDS_BLOCKS(threads, blocks)
#define NT_LAUNCH_SHARED(kernel, grid, block, bytes, stream, ...) \
  ::nt::emu::launch_shared((grid), (block), (bytes), kernel, __VA_ARGS__)
#endif

namespace nt::cuda::device {

constexpr int kAttnMaxT = 16384;  // tokens (a 128 x 128 grid of patches)

// The kernels' tiles for inputs of type E.
//   kWarps:        the forward's and the dq kernel's warps (16 queries each: kRows a block)
//   kKeyWarps:     the dk/dv kernel's (16 keys each: kKeyRows a block)
//   kForwardTile:  keys a step of the forward's online softmax
//   kBackwardTile: keys (dq) or queries (dkv) a step of backward
//   k*Slots:       tiles a block holds in shared memory at once; longer sequences stream through
//                  these slots, tile j in slot j % kSlots
//   kForwardBlocks, kDqBlocks: blocks an SM keeps of the forward and dq kernels (their launch
//                  bounds: registers a thread at most 65536 / (blocks * threads))
// bf16: 256 rows at once (for T <= 256 the whole sequence, copied once). The dk/dv kernel takes
// 168-178 registers a thread at width 72, so that 8 warps would leave one block an SM, whose copy
// of the queries and output gradients into shared memory would then overlap with no other block's
// products. 2 blocks an SM of the others (128 registers a thread) up to width 72, where nvcc then
// spills a few words outside the loops; wider heads take all registers, one block an SM.
// fp32: twice the bytes a row and three products per product, so blocks of 4 warps and 3 slots of
// 32 rows (58 KB of shared memory at width 72: 3 blocks an SM fit). At width 72 the forward keeps 3
// blocks an SM (168 registers, 40 bytes spilled; 2 blocks: 200 registers), the dq kernel 2 (255
// registers, 16 bytes spilled; 3 blocks: 760 bytes spilled). Width 128 keeps 2 forward blocks and
// 255 registers (56 bytes spilled); its backward spills 1.1 KB (dq) and 1.7 KB (dk/dv): correct,
// not fast.
template <typename E>
struct AttnTiling {
  static constexpr bool kBf16 = sizeof(E) == 2;
  static constexpr int kWarps = kBf16 ? 8 : 4, kKeyWarps = 4;
  static constexpr int kForwardTile = kBf16 ? 64 : 32, kBackwardTile = 32;
  static constexpr int kForwardSlots = kBf16 ? 4 : 3, kBackwardSlots = kBf16 ? 8 : 3;
  template <int HD>
  static constexpr int kForwardBlocks = kBf16 ? (HD <= 72 ? 2 : 1) : (HD <= 72 ? 3 : 2);
  template <int HD>
  static constexpr int kDqBlocks = kBf16 ? kForwardBlocks<HD> : 2;
};
template <typename E>
constexpr int kAttnThreads = 32 * AttnTiling<E>::kWarps;
template <typename E>
constexpr int kAttnRows = 16 * AttnTiling<E>::kWarps;
template <typename E>
constexpr int kAttnKeyThreads = 32 * AttnTiling<E>::kKeyWarps;
template <typename E>
constexpr int kAttnKeyRows = 16 * AttnTiling<E>::kKeyWarps;
template <typename E, int HD>
constexpr int kAttnForwardBlocks = AttnTiling<E>::template kForwardBlocks<HD>;
template <typename E, int HD>
constexpr int kAttnDqBlocks = AttnTiling<E>::template kDqBlocks<HD>;

NT_HOST_DEVICE constexpr int round_up(int v, int m) { return (v + m - 1) / m * m; }
// Grids: one block per tile of a block's rows of each (n, h), a pair's tiles next to each other,
// so that they run together and the later ones read the pair's rows from L2.
NT_HOST_DEVICE inline int attn_tiles(int T, int rows) { return (T + rows - 1) / rows; }

#ifdef __CUDACC__
NT_DEVICE unsigned char* attn_shared() {
  extern __shared__ __align__(16) unsigned char nt_attn_shared[];
  return nt_attn_shared;
}
#else
inline unsigned char* attn_shared() { return static_cast<unsigned char*>(::nt::emu::dynamic_shared()); }
#endif

template <typename E>
struct AttnArgs {
  const E *q, *k, *v;        // [N, H, T, HD], strides s_n, s_h, s_t
  int64_t s_n, s_h, s_t;
  E* o;                      // [N, T, H, HD] contiguous
  float* lse;                // [N * H, T]
  const E* dout;             // backward: o's gradient [N, H, T, HD], strides d_n, d_h, d_t
  int64_t d_n, d_h, d_t;
  float* delta;              // backward: [N * H, T], written by the dq kernel, read by the dkv kernel
  E *dq, *dk, *dv;           // backward: [N, H, T, HD], strides s_n, s_h, s_t (as q, k, v)
  int H, T;
  float scale;               // the softmax's scale (1 / sqrt(HD))
};

// 16 bytes from global to shared memory without registers (cp.async, sm_80 and later); they
// land by copy_async_wait. The CPU run (cuda_emulation.h) holds them back until that wait too.
NT_DEVICE void copy_async_16(void* dst, const void* src) {
#ifdef __CUDACC__
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  const uint64_t s = static_cast<uint64_t>(__cvta_generic_to_global(src));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(s));
#else
  ::nt::emu::async_copy_16(dst, src);
#endif
}
// Closes this thread's group of copy_async_16 copies.
NT_DEVICE void copy_async_commit() {
#ifdef __CUDACC__
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#else
  ::nt::emu::async_commit();
#endif
}
// Waits until at most `pending` (0 .. 7) of this thread's groups are still in flight.
NT_DEVICE void copy_async_wait(int pending) {
#ifdef __CUDACC__
  switch (pending) {  // the count is an immediate
    case 7: asm volatile("cp.async.wait_group 7;\n" ::: "memory"); break;
    case 6: asm volatile("cp.async.wait_group 6;\n" ::: "memory"); break;
    case 5: asm volatile("cp.async.wait_group 5;\n" ::: "memory"); break;
    case 4: asm volatile("cp.async.wait_group 4;\n" ::: "memory"); break;
    case 3: asm volatile("cp.async.wait_group 3;\n" ::: "memory"); break;
    case 2: asm volatile("cp.async.wait_group 2;\n" ::: "memory"); break;
    case 1: asm volatile("cp.async.wait_group 1;\n" ::: "memory"); break;
    default: asm volatile("cp.async.wait_group 0;\n" ::: "memory"); break;
  }
#else
  ::nt::emu::async_wait(pending);
#endif
}

// Rows [r0, r0 + kTile) of two [T, HD] matrices (row strides stride_a, stride_b) into shared
// memory at da and db (a slot of kTile rows, pitch attn_pitch<E>(HD)) in 16-byte words, rows from T
// on zeros, as one group of copies: the block works on one tile while the next ones are in flight
// (AttnThread::await). The copies take no registers: a thread has all its words in flight at
// once, where loads through registers would wait for each before storing it.
template <typename E, int HD, int kThreads, int kTile>
NT_DEVICE void copy_tile(E* da, const E* sa, int64_t stride_a, E* db, const E* sb, int64_t stride_b, int r0, int T) {
  constexpr int kPerWord = 16 / static_cast<int>(sizeof(E)), kWords = HD / kPerWord, P = attn_pitch<E>(HD);
  for (int i = static_cast<int>(threadIdx.x); i < 2 * kTile * kWords; i += kThreads) {
    const int m = i / (kTile * kWords), r = (i / kWords) % kTile, c = i % kWords;
    E* dst = (m == 0 ? da : db) + r * P + kPerWord * c;
    if (r0 + r < T)
      copy_async_16(dst, (m == 0 ? sa + (r0 + r) * stride_a : sb + (r0 + r) * stride_b) + kPerWord * c);
    else
      store_word(dst, uint4{0u, 0u, 0u, 0u});
  }
  copy_async_commit();
}

constexpr float kLog2e = 1.4426950408889634f;

// The sum (or maximum) of v over the 4 lanes of a quad (the lanes that share an accumulator row).
NT_DEVICE float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
NT_DEVICE float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

// The rows of shared memory's slots for T tokens: min(T rounded to kTile, kSlots * kTile).
NT_HOST_DEVICE constexpr int attn_slot_rows(int T, int tile, int slots) {
  return round_up(T, tile) < slots * tile ? round_up(T, tile) : slots * tile;
}

// Where a thread of an attention kernel works: its block's (n, h) pair (nh = n * H + h) and tile
// of kRows rows, the pair's offset in q, k, v (base), this lane's rows r0 and r0 + 8 of the tile
// (16 a warp), and the block's two shared matrices of attn_slot_rows rows (`first`, `second`),
// through which the pair's two [T, HD] matrices stream in tiles of kTile rows (kSlots at once).
template <typename E, int HD, int kRows, int kTile, int kSlots>
struct AttnThread {
  static constexpr int P = attn_pitch<E>(HD);
  int T, tiles, nh, n, h, lane, t, r0;
  int64_t base;
  E *first, *second;
  NT_DEVICE explicit AttnThread(const AttnArgs<E>& a) : T(a.T), tiles(attn_tiles(a.T, kTile)) {
    const int blocks = attn_tiles(T, kRows), block = static_cast<int>(blockIdx.x);
    nh = block / blocks;
    n = nh / a.H;
    h = nh % a.H;
    base = n * a.s_n + h * a.s_h;
    lane = static_cast<int>(threadIdx.x) % 32;
    t = lane % 4;
    r0 = block % blocks * kRows + static_cast<int>(threadIdx.x) / 32 * 16 + lane / 4;
    first = reinterpret_cast<E*>(attn_shared());
    second = first + attn_slot_rows(T, kTile, kSlots) * P;
  }
  // The first row of tile j's slot in `first` and `second`.
  NT_DEVICE static int slot(int j) { return j % kSlots * kTile; }
  // Tile j of the two matrices (a's rows into `first`, b's into `second`): copy_tile.
  NT_DEVICE void copy(int j, const E* a, int64_t stride_a, const E* b, int64_t stride_b) const {
    copy_tile<E, HD, 2 * kRows, kTile>(first + slot(j) * P, a, stride_a, second + slot(j) * P, b, stride_b, j * kTile,
                                       T);  // 32 threads a 16 rows
  }
  // Issues the tiles that fit at once, from the first (copy_tile_j(j) issues tile j): returns how
  // many.
  template <typename CopyTile>
  NT_DEVICE int fill(CopyTile&& copy_tile_j) const {
    const int first = tiles < kSlots ? tiles : kSlots;
    for (int j = 0; j < first; ++j) copy_tile_j(j);
    return first;
  }
  // The pair's keys and values (the forward's and the dq kernel's two matrices): tile j, and the
  // first tiles (fill; returns how many).
  NT_DEVICE void copy_keys(int j, const AttnArgs<E>& a) const { copy(j, a.k + base, a.s_t, a.v + base, a.s_t); }
  NT_DEVICE int fill_keys(const AttnArgs<E>& a) const {
    return fill([&](int j) { copy_keys(j, a); });
  }
  // Before the block reads tile j, with tiles 0 .. issued - 1 issued: this thread's copies of tile j
  // have landed, then every thread's (and what the block stored before). Every thread is then past
  // tile j - 1: true where a tile is left to issue, which the caller then copies into that slot.
  NT_DEVICE bool await(int j, int issued) const {
    copy_async_wait(issued - 1 - j);
    __syncthreads();
    return j > 0 && issued < tiles;
  }
  // The pair's rows of o ([N, T, H, HD]: o_stride apart) and of o's gradient (d_t apart).
  NT_DEVICE static int64_t o_stride(const AttnArgs<E>& a) { return static_cast<int64_t>(a.H) * HD; }
  NT_DEVICE E* o(const AttnArgs<E>& a) const { return a.o + static_cast<int64_t>(n) * T * o_stride(a) + h * HD; }
  NT_DEVICE const E* dout(const AttnArgs<E>& a) const { return a.dout + n * a.d_n + h * a.d_h; }
  // The pair's first row in lse and delta ([N * H, T]).
  NT_DEVICE int64_t rows() const { return static_cast<int64_t>(nh) * T; }
};

template <typename E, int HD>
NT_GLOBAL void NT_BOUNDS_BLOCKS(kAttnThreads<E>, (kAttnForwardBlocks<E, HD>))
    attention_forward_kernel(AttnArgs<E> a) {
  using Tiling = AttnTiling<E>;
  constexpr int kTile = Tiling::kForwardTile;
  const AttnThread<E, HD, kAttnRows<E>, kTile, Tiling::kForwardSlots> at(a);
  int issued = at.fill_keys(a);
  const E *ks = at.first, *vs = at.second;  // keys, values: slots of kTile rows, pitch P
  const int T = at.T, lane = at.lane, t = at.t, r0 = at.r0;
  const int64_t base = at.base;
  RowFragments<E, HD> q;
  q.load(a.q + base, a.s_t, r0, T, t);
  const float scale = a.scale * kLog2e;
  float o[HD / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // rows r0, r0 + 8 (this lane's share of l)
  for (int j = 0; j < at.tiles; ++j) {
    if (at.await(j, issued)) at.copy_keys(issued++, a);
    const int j0 = j * kTile, slot = at.slot(j);
    float s[kTile / 8][4];  // [16, kTile]: scores, then p
    mma_rows_t<HD, kTile>(s, q, ks, slot, lane);
    float mx[2] = {m[0], m[1]};
NT_UNROLL
    for (int i = 0; i < kTile / 8; ++i)
NT_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int key = j0 + 8 * i + 2 * t + e % 2;
        s[i][e] = key < T ? s[i][e] * scale : -INFINITY;
        mx[e / 2] = fmaxf(mx[e / 2], s[i][e]);
      }
    float corr[2];
NT_UNROLL
    for (int r = 0; r < 2; ++r) {
      mx[r] = quad_max(mx[r]);  // finite: the first tile holds key 0
      corr[r] = exp2f(m[r] - mx[r]);
      m[r] = mx[r];
      l[r] *= corr[r];
    }
NT_UNROLL
    for (int d = 0; d < HD / 8; ++d)
NT_UNROLL
      for (int e = 0; e < 4; ++e) o[d][e] *= corr[e / 2];
NT_UNROLL
    for (int i = 0; i < kTile / 8; ++i)
NT_UNROLL
      for (int e = 0; e < 4; ++e) {
        s[i][e] = exp2f(s[i][e] - m[e / 2]);
        l[e / 2] += s[i][e];
      }
    mma_rows_n<HD, kTile>(o, ProductRows<E, kTile>(s), vs, slot, lane);
  }
  float inv[2];
NT_UNROLL
  for (int r = 0; r < 2; ++r) {
    l[r] = quad_sum(l[r]);
    inv[r] = 1.f / l[r];
  }
  store_rows<HD>(at.o(a), at.o_stride(a), o, r0, T, t, inv);
  if (t == 0)
NT_UNROLL
    for (int r = 0; r < 2; ++r)
      if (r0 + 8 * r < T) a.lse[at.rows() + r0 + 8 * r] = m[r] + log2f(l[r]);
}

template <typename E, int HD>
NT_GLOBAL void NT_BOUNDS_BLOCKS(kAttnThreads<E>, (kAttnDqBlocks<E, HD>))
    attention_dq_kernel(AttnArgs<E> a) {
  using Tiling = AttnTiling<E>;
  constexpr int kTile = Tiling::kBackwardTile;
  const AttnThread<E, HD, kAttnRows<E>, kTile, Tiling::kBackwardSlots> at(a);
  int issued = at.fill_keys(a);
  const E *ks = at.first, *vs = at.second;  // keys, values: slots of kTile rows, pitch P
  const int T = at.T, lane = at.lane, t = at.t, r0 = at.r0;
  const int64_t base = at.base;
  // delta = rowsum(do * o) for rows r0, r0 + 8: o's elements where this lane holds do's. do and o
  // first, q after delta: with q's fragments loaded first as well, nvcc (at 128 registers) split
  // these loads into 10 batches (scripts/sass-summary).
  RowFragments<E, HD> dout, o, q;
  dout.load(at.dout(a), a.d_t, r0, T, t);
  o.load(at.o(a), at.o_stride(a), r0, T, t);
  float delta[2] = {0.f, 0.f}, lse[2];
NT_UNROLL
  for (int r = 0; r < 2; ++r) lse[r] = r0 + 8 * r < T ? a.lse[at.rows() + r0 + 8 * r] : 0.f;
  dout.add_row_dots(delta, o);
NT_UNROLL
  for (int r = 0; r < 2; ++r) {
    delta[r] = quad_sum(delta[r]);
    if (t == 0 && r0 + 8 * r < T) a.delta[at.rows() + r0 + 8 * r] = delta[r];
  }
  q.load(a.q + base, a.s_t, r0, T, t);
  const float scale = a.scale * kLog2e;
  float dq[HD / 8][4] = {};
  for (int j = 0; j < at.tiles; ++j) {
    if (at.await(j, issued)) at.copy_keys(issued++, a);
    const int j0 = j * kTile, slot = at.slot(j);
    float s[kTile / 8][4], dp[kTile / 8][4];
    mma_rows_t<HD, kTile>(s, q, ks, slot, lane);
    mma_rows_t<HD, kTile>(dp, dout, vs, slot, lane);
NT_UNROLL
    for (int i = 0; i < kTile / 8; ++i)
NT_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int key = j0 + 8 * i + 2 * t + e % 2;
        const float p = key < T ? exp2f(s[i][e] * scale - lse[e / 2]) : 0.f;
        s[i][e] = p * (dp[i][e] - delta[e / 2]);  // ds
      }
    mma_rows_n<HD, kTile>(dq, ProductRows<E, kTile>(s), ks, slot, lane);
  }
  const float mul[2] = {a.scale, a.scale};
  store_rows<HD>(a.dq + base, a.s_t, dq, r0, T, t, mul);
}

template <typename E, int HD>
NT_GLOBAL void NT_BOUNDS(kAttnKeyThreads<E>) attention_dkv_kernel(AttnArgs<E> a) {
  using Tiling = AttnTiling<E>;
  constexpr int kTile = Tiling::kBackwardTile;
  const AttnThread<E, HD, kAttnKeyRows<E>, kTile, Tiling::kBackwardSlots> at(a);  // r0: this lane's keys
  const int T = at.T, lane = at.lane, t = at.t, r0 = at.r0;
  const int64_t base = at.base;
  const E *q = a.q + base, *dout = at.dout(a);
  const E *qs = at.first, *dos = at.second;  // queries, output gradients: slots of kTile rows, pitch P
  const int rows = attn_slot_rows(T, kTile, Tiling::kBackwardSlots);
  float* lse = reinterpret_cast<float*>(at.second + rows * at.P);  // [rows], slots as qs's
  float* delta = lse + rows;                                                  // [rows]
  // lse and delta of the queries of tiles i .. i + n - 1 into their slots (stores; queries from T
  // on: p = 2^(s - inf) = 0): all the first tiles' in one loop, as their rows' slots follow one
  // another, then one tile's with each refill.
  auto scalars = [&](int i, int n) {
    for (int r = static_cast<int>(threadIdx.x); r < n * kTile; r += kAttnKeyThreads<E>) {
      const int query = i * kTile + r;
      lse[at.slot(i) + r] = query < T ? a.lse[at.rows() + query] : INFINITY;
      delta[at.slot(i) + r] = query < T ? a.delta[at.rows() + query] : 0.f;
    }
  };
  auto copy = [&](int i) { at.copy(i, q, a.s_t, dout, a.d_t); };  // queries, output gradients
  int issued = at.fill(copy);
  scalars(0, issued);
  RowFragments<E, HD> k, v;
  k.load(a.k + base, a.s_t, r0, T, t);
  v.load(a.v + base, a.s_t, r0, T, t);
  const float scale = a.scale * kLog2e;
  float dk[HD / 8][4] = {}, dv[HD / 8][4] = {};
  for (int i = 0; i < at.tiles; ++i) {
    if (at.await(i, issued)) {  // the await also covers the tiles' lse and delta
      copy(issued);
      scalars(issued++, 1);
    }
    const int slot = at.slot(i);
    float s[kTile / 8][4], dp[kTile / 8][4];  // [16 keys, kTile queries]: s^T, dp^T
    mma_rows_t<HD, kTile>(s, k, qs, slot, lane);
    mma_rows_t<HD, kTile>(dp, v, dos, slot, lane);
NT_UNROLL
    for (int c = 0; c < kTile / 8; ++c)
NT_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int query = slot + 8 * c + 2 * t + e % 2;  // its row in the slots
        const float p = exp2f(s[c][e] * scale - lse[query]);
        s[c][e] = p;
        dp[c][e] = p * (dp[c][e] - delta[query]);
      }
    const ProductRows<E, kTile> pa(s), ds(dp);
    mma_rows_n<HD, kTile>(dv, pa, dos, slot, lane);  // p^T do
    mma_rows_n<HD, kTile>(dk, ds, qs, slot, lane);   // ds^T q
  }
  const float one[2] = {1.f, 1.f}, mul[2] = {a.scale, a.scale};
  store_rows<HD>(a.dv + base, a.s_t, dv, r0, T, t, one);
  store_rows<HD>(a.dk + base, a.s_t, dk, r0, T, t, mul);
}

// ---- launch ----------------------------------------------------------------------------------

// Dynamic shared memory (bytes) of each kernel for T tokens: AttnThread's two matrices of
// attn_slot_rows rows, and in the dk/dv kernel lse's and delta's slots (floats) after them.
template <typename E, int HD>
constexpr int64_t attn_matrices_shared(int T, int tile, int slots) {
  return int64_t{2} * attn_slot_rows(T, tile, slots) * attn_pitch<E>(HD) * static_cast<int64_t>(sizeof(E));
}
template <typename E, int HD>
constexpr int64_t attn_forward_shared(int T) {
  return attn_matrices_shared<E, HD>(T, AttnTiling<E>::kForwardTile, AttnTiling<E>::kForwardSlots);
}
template <typename E, int HD>
constexpr int64_t attn_dq_shared(int T) {
  return attn_matrices_shared<E, HD>(T, AttnTiling<E>::kBackwardTile, AttnTiling<E>::kBackwardSlots);
}
template <typename E, int HD>
constexpr int64_t attn_dkv_shared(int T) {
  return attn_dq_shared<E, HD>(T) +
         int64_t{2} * attn_slot_rows(T, AttnTiling<E>::kBackwardTile, AttnTiling<E>::kBackwardSlots) * sizeof(float);
}

inline dim3 attn_grid(int64_t pairs, int T, int rows) { return dim3(static_cast<unsigned>(pairs * attn_tiles(T, rows))); }

// The kernels' launches for `pairs` (n, h) pairs of T tokens: launch(kernel, grid, threads,
// shared bytes) runs one (attention_cuda.cu's on a stream, the CPU test's through the emulation).
template <typename E, int HD, typename Launch>
void attention_forward_launches(int64_t pairs, int T, Launch&& launch) {
  launch(attention_forward_kernel<E, HD>, attn_grid(pairs, T, kAttnRows<E>), kAttnThreads<E>,
         attn_forward_shared<E, HD>(T));
}
// The dq kernel (which also writes delta), then the dk/dv kernel.
template <typename E, int HD, typename Launch>
void attention_backward_launches(int64_t pairs, int T, Launch&& launch) {
  launch(attention_dq_kernel<E, HD>, attn_grid(pairs, T, kAttnRows<E>), kAttnThreads<E>, attn_dq_shared<E, HD>(T));
  launch(attention_dkv_kernel<E, HD>, attn_grid(pairs, T, kAttnKeyRows<E>), kAttnKeyThreads<E>,
         attn_dkv_shared<E, HD>(T));
}

}  // namespace nt::cuda::device
