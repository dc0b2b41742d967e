// cuBLASLt products with the tanh-GELU epilogues (see models/gelu_gemm_cuda.h); the column-major
// layouts of the row-major products are in models/gelu_gemm_layout.h.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "core/cuda_check.h"
#include "models/gelu_gemm_cuda.h"
#include "models/gelu_kernels_device.h"  // the GELU's derivative, the column sums, the GELU again
#include "models/gelu_gemm_layout.h"

// Every cuBLASLt call goes through it: "file:line (rank R): cuBLAS call <call> failed: <status>".
#define NT_CUBLAS_CHECK(call)                                                                    \
  do {                                                                                           \
    const cublasStatus_t nt_cublas_rc_ = (call);                                                 \
    if (nt_cublas_rc_ != CUBLAS_STATUS_SUCCESS)                                                  \
      throw std::runtime_error(::nt::where(__FILE__, __LINE__,                                   \
                                           std::string("cuBLAS call ") + #call + " failed: " +   \
                                               cublasLtGetStatusString(nt_cublas_rc_)));         \
  } while (0)

namespace nt::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

// One cuBLASLt handle per thread and device (forward and backward run on different threads).
class Handles {
 public:
  cublasLtHandle_t get(int device) {
    auto it = handles_.find(device);
    if (it != handles_.end()) return it->second;
    cublasLtHandle_t h = nullptr;
    NT_CUBLAS_CHECK(cublasLtCreate(&h));
    handles_[device] = h;
    return h;
  }
  ~Handles() {
    for (auto& [device, h] : handles_) cublasLtDestroy(h);  // at thread exit; failures ignored
  }

 private:
  std::map<int, cublasLtHandle_t> handles_;
};

// Owners of the descriptors one product needs.
struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  explicit MatmulDesc(cublasComputeType_t compute) {
    NT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d, compute, CUDA_R_32F));
  }
  ~MatmulDesc() { cublasLtMatmulDescDestroy(d); }
  template <typename V>
  void set(cublasLtMatmulDescAttributes_t attr, const V& value) {
    NT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, attr, &value, sizeof(value)));
  }
};

struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  Layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
    NT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld));
  }
  ~Layout() { cublasLtMatrixLayoutDestroy(l); }
};

struct Preference {
  cublasLtMatmulPreference_t p = nullptr;
  Preference() {
    NT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&p));
    const uint64_t bytes = kWorkspaceBytes;
    NT_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &bytes, sizeof(bytes)));
  }
  ~Preference() { cublasLtMatmulPreferenceDestroy(p); }
};

// The largest power of two up to 16 that divides the address (cuBLASLt picks algorithms by it).
int alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  int al = 1;
  while (al < 16 && a % (2 * al) == 0) al *= 2;
  return al;
}

// One product: its layout, operands, and an epilogue reading or writing `bias` and `aux`.
struct Product {
  cublasLtEpilogue_t epilogue;
  ColumnMajorProduct l;
  const void* a;
  const void* b;
  void* d;
  const void* bias;  // bias (forward) or bias gradient (backward), length l.m
  const void* aux;   // the GELU's input, laid out like D
};

// The operands' type and, for fp32, how the products multiply.
struct Numerics {
  Dtype dtype;
  Fp32Math math;
  cudaDataType_t type() const { return dtype == Dtype::bf16 ? CUDA_R_16BF : CUDA_R_32F; }
  cublasComputeType_t compute() const {
    return dtype == Dtype::f32 && math == Fp32Math::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  }
};

using AlgoKey = std::tuple<int, int, int, int, int64_t, int64_t, int64_t, int, int, int, int, int, int>;
struct Tuned {
  bool found = false;
  cublasLtMatmulAlgo_t algo;
  float ms = -1.f;  // its measured time
};

constexpr int kCandidates = 8;  // the heuristic's best algorithms, timed on first use
constexpr int kTimedReps = 3;   // launches timed per candidate, after one untimed

// The descriptors of one product with a given epilogue (DEFAULT: the plain product).
struct Described {
  MatmulDesc desc;
  Layout A, B, D;
  Described(const Product& p, const Numerics& num, cublasLtEpilogue_t epilogue)
      : desc(num.compute()),
        A(num.type(), p.l.a_rows, p.l.a_cols, p.l.lda),
        B(num.type(), p.l.k, p.l.n, p.l.ldb),
        D(num.type(), p.l.m, p.l.n, p.l.ldd) {
    desc.set(CUBLASLT_MATMUL_DESC_TRANSA, p.l.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N);
    desc.set(CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue);
    if (epilogue == CUBLASLT_EPILOGUE_DEFAULT) return;
    if (p.bias) desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, p.bias);
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, p.aux);
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, p.l.ldd);
  }
};

cublasStatus_t launch(cublasLtHandle_t handle, const Described& d, const cublasLtMatmulAlgo_t& algo, const Product& p,
                      void* workspace, cudaStream_t stream) {
  const float alpha = 1.0f, beta = 0.0f;
  return cublasLtMatmul(handle, d.desc.d, &alpha, p.a, d.A.l, p.b, d.B.l, &beta, p.d, d.D.l, p.d, d.D.l, &algo,
                        workspace, kWorkspaceBytes, stream);
}

// The mean time in ms of kTimedReps calls of `work` (after one untimed) on `stream`; negative
// when a call reports failure. Products write only their outputs (D, and the aux matrix or bias
// gradient), which the caller's own launch then overwrites.
template <typename Work>
float time_ms(Work work, cudaStream_t stream) {
  if (!work()) return -1.f;
  cudaEvent_t start = nullptr, stop = nullptr;
  NT_CUDA_CHECK(cudaEventCreate(&start));
  NT_CUDA_CHECK(cudaEventCreate(&stop));
  NT_CUDA_CHECK(cudaEventRecord(start, stream));
  bool ok = true;
  for (int i = 0; i < kTimedReps && ok; ++i) ok = work();
  NT_CUDA_CHECK(cudaEventRecord(stop, stream));
  NT_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0.f;
  NT_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  NT_CUDA_CHECK(cudaEventDestroy(start));
  NT_CUDA_CHECK(cudaEventDestroy(stop));
  return ok ? ms / kTimedReps : -1.f;
}

const char* epilogue_name(cublasLtEpilogue_t e) {
  switch (e) {
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS: return "bias+GELU (aux)";
    case CUBLASLT_EPILOGUE_DGELU_BGRAD: return "GELU'+bias gradient";
    case CUBLASLT_EPILOGUE_DGELU: return "GELU'";
    default: return "plain";
  }
}

std::string fmt_ms(float ms) {
  if (ms < 0) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f ms", ms);
  return buf;
}

std::string shape(const ColumnMajorProduct& l) {
  return "[" + std::to_string(l.m) + " x " + std::to_string(l.n) + " x " + std::to_string(l.k) +
         (l.transpose_a ? ", A transposed]" : "]");
}

const char* numerics_name(const Numerics& num) {
  if (num.dtype == Dtype::bf16) return " bf16";
  return num.math == Fp32Math::tf32 ? " fp32 (TF32)" : " fp32";
}

AlgoKey key_of(const Product& p, const Numerics& num, int device) {
  return AlgoKey{device, static_cast<int>(p.epilogue), static_cast<int>(num.dtype), static_cast<int>(num.compute()),
                 p.l.m, p.l.n, p.l.k,
                 alignment(p.a), alignment(p.b), alignment(p.d), alignment(p.bias), alignment(p.aux),
                 p.l.transpose_a ? 1 : 0};
}

thread_local Handles handles;  // one cuBLASLt handle per thread and device

// The fastest algorithm for p's shapes, alignments and epilogue, found on their first use on this
// thread: the heuristic's best candidates are each timed and the fastest kept (its first choice
// may be far from the fastest for an epilogue); rank 0 logs the timing, an epilogue's beside the
// same product without it. found = false when the heuristic fails or finds none (not supported, or
// a layout it rejects): the caller then falls back.
const Tuned& tuned(const Product& p, const Numerics& num, void* workspace, int device, cudaStream_t s) {
  thread_local std::map<AlgoKey, Tuned> cache;
  const AlgoKey key = key_of(p, num, device);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const cublasLtHandle_t handle = handles.get(device);
  const Described d(p, num, p.epilogue);
  Preference pref;
  cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
  int found = 0;
  const cublasStatus_t rc =
      cublasLtMatmulAlgoGetHeuristic(handle, d.desc.d, d.A.l, d.B.l, d.D.l, d.D.l, pref.p, kCandidates, results, &found);
  Tuned t;
  if (rc == CUBLAS_STATUS_SUCCESS && found > 0) {
    int best = -1;
    float first_ms = -1.f;
    for (int i = 0; i < found; ++i) {
      if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
      const float ms = time_ms(
          [&] { return launch(handle, d, results[i].algo, p, workspace, s) == CUBLAS_STATUS_SUCCESS; }, s);
      if (i == 0) first_ms = ms;
      if (ms >= 0.f && (best < 0 || ms < t.ms)) best = i, t.ms = ms;
    }
    if (best >= 0) {
      t.found = true;
      t.algo = results[best].algo;
      std::string against;  // an epilogue's product is timed against the same product without it
      if (p.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
        const Described plain(p, num, CUBLASLT_EPILOGUE_DEFAULT);
        cublasLtMatmulHeuristicResult_t pr{};
        int pf = 0;
        float plain_ms = -1.f;
        if (cublasLtMatmulAlgoGetHeuristic(handle, plain.desc.d, plain.A.l, plain.B.l, plain.D.l, plain.D.l, pref.p,
                                           1, &pr, &pf) == CUBLAS_STATUS_SUCCESS &&
            pf > 0)
          plain_ms = time_ms(
              [&] { return launch(handle, plain, pr.algo, p, workspace, s) == CUBLAS_STATUS_SUCCESS; }, s);
        against = "; without the epilogue " + fmt_ms(plain_ms);
      }
      log_info("cuBLASLt " + std::string(epilogue_name(p.epilogue)) + " product " + shape(p.l) + numerics_name(num) +
               ": " + std::to_string(found) + " algorithms timed, fastest " + fmt_ms(t.ms) + " (candidate " +
               std::to_string(best) + "; the heuristic's first " + fmt_ms(first_ms) + ")" + against);
    }
  }
  return cache.emplace(key, t).first->second;
}

// Runs p with its tuned algorithm; false (nothing done) when there is none.
bool run(const Product& p, const Numerics& num, void* workspace, int device, cudaStream_t s) {
  const Tuned& t = tuned(p, num, workspace, device, s);
  if (!t.found) return false;
  NT_CUBLAS_CHECK(launch(handles.get(device), Described(p, num, p.epilogue), t.algo, p, workspace, s));
  return true;
}

void check_workspace(size_t workspace_bytes) {
  if (workspace_bytes < kWorkspaceBytes)
    throw std::runtime_error(where(__FILE__, __LINE__, "gelu gemm: workspace of " + std::to_string(workspace_bytes) +
                                                           " bytes, needs " + std::to_string(kWorkspaceBytes)));
}

void check_sizes(const char* op, int64_t M, int64_t N, int64_t K) {
  if (M <= 0 || N <= 0 || K <= 0)
    throw std::runtime_error(std::string(op) + ": empty product " + std::to_string(M) + " x " + std::to_string(N) +
                             " x " + std::to_string(K));
}

// The own kernel after a product (models/gelu_kernels_device.h): dbias = the column sums of dpre
// (accumulate_bias: dbias += them), dpre formed first from g = dpre's contents with `derivative`;
// act where not null. Its partial sums go in the workspace (after the product on the same stream,
// which is done with it).
void gelu_bias_gradient(const void* pre, void* dpre, void* dbias, void* act, int64_t M, int64_t N, bool derivative,
                        Dtype dtype, void* workspace, cudaStream_t s, bool accumulate_bias) {
  if (static_cast<size_t>(device::gelu_bias_gradient_workspace(M, static_cast<int>(N))) * sizeof(float) >
      kWorkspaceBytes)
    throw std::runtime_error(where(__FILE__, __LINE__, "gemm_dgelu_bgrad: the bias gradient's partial sums of " +
                                                           std::to_string(N) + " columns exceed the workspace"));
  float* part = static_cast<float*>(workspace);
  if (dtype == Dtype::bf16) {
    using T = __nv_bfloat16;
    device::launch_gelu_bias_gradient(static_cast<const T*>(dpre), static_cast<const T*>(pre), static_cast<T*>(dpre),
                                      static_cast<T*>(act), static_cast<T*>(dbias), part, M, static_cast<int>(N),
                                      derivative, s, accumulate_bias);
  } else {
    device::launch_gelu_bias_gradient(static_cast<const float*>(dpre), static_cast<const float*>(pre),
                                      static_cast<float*>(dpre), static_cast<float*>(act), static_cast<float*>(dbias),
                                      part, M, static_cast<int>(N), derivative, s, accumulate_bias);
  }
  NT_CUDA_CHECK(cudaGetLastError());
}

void gelu(const void* pre, void* act, int64_t n, Dtype dtype, cudaStream_t s) {
  if (dtype == Dtype::bf16)
    device::launch_gelu(static_cast<const __nv_bfloat16*>(pre), static_cast<__nv_bfloat16*>(act), n, s);
  else
    device::launch_gelu(static_cast<const float*>(pre), static_cast<float*>(act), n, s);
  NT_CUDA_CHECK(cudaGetLastError());
}

// Stream-ordered device memory for the timing runs' bias gradient, where the caller's may only be
// added to once (a few KB, on the first call of given shapes only); none for 0 bytes.
struct Scratch {
  void* p = nullptr;
  cudaStream_t s;
  Scratch(size_t bytes, cudaStream_t stream) : s(stream) {
    if (bytes > 0) NT_CUDA_CHECK(cudaMallocAsync(&p, bytes, s));
  }
  ~Scratch() {
    if (p) cudaFreeAsync(p, s);  // failures ignored (a destructor)
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

const char* way_name(GeluBackward how) {
  switch (how) {
    case GeluBackward::epilogue: return "the GELU'+bias-gradient epilogue";
    case GeluBackward::epilogue_and_sums: return "the GELU' epilogue and column sums";
    case GeluBackward::product_and_kernel: return "the plain product and our GELU'+sums kernel";
    default: return "automatic";
  }
}

}  // namespace

bool gemm_bias_gelu(const void* x, const void* w, const void* bias, void* out, void* pre, int64_t M, int64_t N,
                    int64_t K, Dtype dtype, Fp32Math math, void* workspace, size_t workspace_bytes, int device,
                    void* stream) {
  check_sizes("gemm_bias_gelu", M, N, K);
  check_workspace(workspace_bytes);
  CudaDeviceScope scope(device);
  const Product p{CUBLASLT_EPILOGUE_GELU_AUX_BIAS, bias_gelu_layout(M, N, K), w, x, out, bias, pre};
  return run(p, Numerics{dtype, math}, workspace, device, static_cast<cudaStream_t>(stream));
}

bool gemm_dgelu_bgrad(const void* dy, const void* w, bool w_transposed, const void* pre, void* dpre, void* dbias,
                      bool accumulate_bias, void* act, int64_t M, int64_t N, int64_t O, Dtype dtype, Fp32Math math,
                      void* workspace, size_t workspace_bytes, int device, void* stream, GeluBackward how) {
  check_sizes("gemm_dgelu_bgrad", M, N, O);
  check_workspace(workspace_bytes);
  CudaDeviceScope scope(device);
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const Numerics num{dtype, math};
  const ColumnMajorProduct l = w_transposed ? dgelu_transposed_layout(M, N, O) : dgelu_layout(M, N, O);
  const Product with_bias{CUBLASLT_EPILOGUE_DGELU_BGRAD, l, w, dy, dpre, dbias, pre};
  const Product dgelu{CUBLASLT_EPILOGUE_DGELU, l, w, dy, dpre, nullptr, pre};
  const Product plain{CUBLASLT_EPILOGUE_DEFAULT, l, w, dy, dpre, nullptr, nullptr};
  // Each way, its bias gradient written to bias_out or, with `add`, added into it; false (nothing
  // done) when cuBLASLt declines its product, and for the epilogue asked to add (cuBLASLt's
  // bias-gradient epilogue writes).
  auto way = [&](GeluBackward h, void* bias_out, bool add) {
    switch (h) {
      case GeluBackward::epilogue: {
        if (add) return false;
        Product p = with_bias;
        p.bias = bias_out;
        if (!run(p, num, workspace, device, s)) return false;
        if (act) gelu(pre, act, M * N, dtype, s);
        return true;
      }
      case GeluBackward::epilogue_and_sums:
        if (!run(dgelu, num, workspace, device, s)) return false;
        gelu_bias_gradient(pre, dpre, bias_out, act, M, N, /*derivative=*/false, dtype, workspace, s, add);
        return true;
      default:
        if (!run(plain, num, workspace, device, s)) return false;
        gelu_bias_gradient(pre, dpre, bias_out, act, M, N, /*derivative=*/true, dtype, workspace, s, add);
        return true;
    }
  };
  if (how != GeluBackward::automatic) return way(how, dbias, accumulate_bias);
  // Automatic: on the first call of these shapes on this thread, the ways are timed whole (their
  // products tuned first, so the timing sees the tuned algorithms), the fastest kept. Adding into
  // dbias, the timing runs write a scratch bias gradient instead, and the epilogue is no candidate.
  thread_local std::map<std::tuple<AlgoKey, bool, bool>, GeluBackward> choice;
  const auto key = std::make_tuple(key_of(with_bias, num, device), act != nullptr, accumulate_bias);
  auto it = choice.find(key);
  if (it == choice.end()) {
    std::string timing;
    GeluBackward pick = GeluBackward::automatic;
    float best_ms = -1.f;
    const std::pair<GeluBackward, const Product*> ways[] = {{GeluBackward::epilogue, &with_bias},
                                                            {GeluBackward::epilogue_and_sums, &dgelu},
                                                            {GeluBackward::product_and_kernel, &plain}};
    const Scratch scratch(accumulate_bias ? static_cast<size_t>(N * element_bytes(dtype)) : 0, s);
    void* timing_bias = accumulate_bias ? scratch.p : dbias;
    for (const auto& candidate : ways) {
      const GeluBackward h = candidate.first;
      if (accumulate_bias && h == GeluBackward::epilogue) continue;
      const float ms = tuned(*candidate.second, num, workspace, device, s).found
                           ? time_ms([&] { return way(h, timing_bias, false); }, s)
                           : -1.f;
      timing += std::string(timing.empty() ? "" : ", ") + way_name(h) + " " + fmt_ms(ms);
      if (ms >= 0.f && (best_ms < 0.f || ms < best_ms)) pick = h, best_ms = ms;
    }
    if (pick == GeluBackward::automatic) return false;  // decided again next time (the tunings are cached)
    log_info("cuBLASLt GELU' product " + shape(l) + numerics_name(num) + (act ? " with the GELU again" : "") +
             (accumulate_bias ? " adding its bias gradient" : "") + ": " + timing + "; takes " + way_name(pick));
    it = choice.emplace(key, pick).first;
  }
  return way(it->second, dbias, accumulate_bias);
}

size_t gelu_gemm_workspace_bytes() { return kWorkspaceBytes; }

}  // namespace nt::cuda
