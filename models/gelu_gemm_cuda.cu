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

#include "core/cuda_check.h"
#include "models/gelu_gemm_cuda.h"
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
  MatmulDesc() { NT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F)); }
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

using AlgoKey = std::tuple<int, int, int, int64_t, int64_t, int64_t, int, int, int, int, int, int>;
struct CachedAlgo {
  bool found = false;
  cublasLtMatmulAlgo_t algo;
};

constexpr int kCandidates = 8;  // the heuristic's best algorithms, timed on first use
constexpr int kTimedReps = 3;   // launches timed per candidate, after one untimed

// The mean time in ms of kTimedReps launches of `algo` (after one untimed launch) on `stream`,
// or a negative value when cuBLASLt refuses to launch it. The products write only their outputs
// (D, and the aux matrix or bias gradient), which the caller's own launch then overwrites.
float time_algo(cublasLtHandle_t handle, const MatmulDesc& desc, const Layout& A, const Layout& B, const Layout& D,
                const cublasLtMatmulAlgo_t& algo, const Product& p, void* workspace, cudaStream_t stream) {
  const float alpha = 1.0f, beta = 0.0f;
  auto launch = [&] {
    return cublasLtMatmul(handle, desc.d, &alpha, p.a, A.l, p.b, B.l, &beta, p.d, D.l, p.d, D.l, &algo, workspace,
                          kWorkspaceBytes, stream);
  };
  if (launch() != CUBLAS_STATUS_SUCCESS) return -1.f;
  cudaEvent_t start = nullptr, stop = nullptr;
  NT_CUDA_CHECK(cudaEventCreate(&start));
  NT_CUDA_CHECK(cudaEventCreate(&stop));
  NT_CUDA_CHECK(cudaEventRecord(start, stream));
  bool ok = true;
  for (int i = 0; i < kTimedReps && ok; ++i) ok = launch() == CUBLAS_STATUS_SUCCESS;
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
    default: return "plain";
  }
}

std::string fmt_ms(float ms) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f ms", ms);
  return buf;
}

bool run(const Product& p, Dtype dtype, void* workspace, size_t workspace_bytes, int device, void* stream) {
  if (workspace_bytes < kWorkspaceBytes)
    throw std::runtime_error(where(__FILE__, __LINE__, "gelu gemm: workspace of " + std::to_string(workspace_bytes) +
                                                           " bytes, needs " + std::to_string(kWorkspaceBytes)));
  CudaDeviceScope scope(device);
  thread_local Handles handles;
  thread_local std::map<AlgoKey, CachedAlgo> algos;
  const cublasLtHandle_t handle = handles.get(device);
  const cudaDataType_t type = dtype == Dtype::bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);

  const ColumnMajorProduct& l = p.l;
  auto describe = [&](MatmulDesc& desc, cublasLtEpilogue_t epilogue) {
    desc.set(CUBLASLT_MATMUL_DESC_TRANSA, l.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N);
    desc.set(CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue);
    if (epilogue == CUBLASLT_EPILOGUE_DEFAULT) return;
    desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, p.bias);
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, p.aux);
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, l.ldd);
  };
  MatmulDesc desc;
  describe(desc, p.epilogue);
  const Layout A(type, l.a_rows, l.a_cols, l.lda);
  const Layout B(type, l.k, l.n, l.ldb);
  const Layout D(type, l.m, l.n, l.ldd);

  const AlgoKey key{device, static_cast<int>(p.epilogue), static_cast<int>(dtype), l.m, l.n, l.k,
                    alignment(p.a), alignment(p.b), alignment(p.d), alignment(p.bias), alignment(p.aux),
                    l.transpose_a ? 1 : 0};
  auto it = algos.find(key);
  if (it == algos.end()) {
    // First use of these shapes on this thread: the heuristic's best candidates are each timed
    // and the fastest is kept (its first choice may be far from the fastest for an epilogue).
    // Any failure of the heuristic (not supported, or a layout it rejects) declines: the caller
    // falls back to LibTorch's ops.
    Preference pref;
    cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
    int found = 0;
    const cublasStatus_t rc =
        cublasLtMatmulAlgoGetHeuristic(handle, desc.d, A.l, B.l, D.l, D.l, pref.p, kCandidates, results, &found);
    CachedAlgo c;
    if (rc == CUBLAS_STATUS_SUCCESS && found > 0) {
      int best = -1;
      float best_ms = 0.f, first_ms = -1.f;
      for (int i = 0; i < found; ++i) {
        if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
        const float ms = time_algo(handle, desc, A, B, D, results[i].algo, p, workspace, s);
        if (i == 0) first_ms = ms;
        if (ms >= 0.f && (best < 0 || ms < best_ms)) best = i, best_ms = ms;
      }
      if (best >= 0) {
        c.found = true;
        c.algo = results[best].algo;
        // The same product without an epilogue, for comparison in the log.
        MatmulDesc plain;
        describe(plain, CUBLASLT_EPILOGUE_DEFAULT);
        cublasLtMatmulHeuristicResult_t pr{};
        int pf = 0;
        float plain_ms = -1.f;
        if (cublasLtMatmulAlgoGetHeuristic(handle, plain.d, A.l, B.l, D.l, D.l, pref.p, 1, &pr, &pf) ==
                CUBLAS_STATUS_SUCCESS &&
            pf > 0)
          plain_ms = time_algo(handle, plain, A, B, D, pr.algo, p, workspace, s);
        log_info("cuBLASLt " + std::string(epilogue_name(p.epilogue)) + " product [" + std::to_string(l.m) + " x " +
                 std::to_string(l.n) + " x " + std::to_string(l.k) + "]: " + std::to_string(found) +
                 " algorithms timed, fastest " + fmt_ms(best_ms) + " (candidate " + std::to_string(best) +
                 "; the heuristic's first " + (first_ms >= 0 ? fmt_ms(first_ms) : std::string("failed")) +
                 "); without the epilogue " + (plain_ms >= 0 ? fmt_ms(plain_ms) : std::string("n/a")));
      }
    }
    it = algos.emplace(key, c).first;
  }
  if (!it->second.found) return false;
  const float alpha = 1.0f, beta = 0.0f;
  NT_CUBLAS_CHECK(cublasLtMatmul(handle, desc.d, &alpha, p.a, A.l, p.b, B.l, &beta, p.d, D.l, p.d, D.l,
                                 &it->second.algo, workspace, kWorkspaceBytes, s));
  return true;
}

void check_sizes(const char* op, int64_t M, int64_t N, int64_t K) {
  if (M <= 0 || N <= 0 || K <= 0)
    throw std::runtime_error(std::string(op) + ": empty product " + std::to_string(M) + " x " + std::to_string(N) +
                             " x " + std::to_string(K));
}

}  // namespace

bool gemm_bias_gelu(const void* x, const void* w, const void* bias, void* out, void* pre, int64_t M, int64_t N,
                    int64_t K, Dtype dtype, void* workspace, size_t workspace_bytes, int device, void* stream) {
  check_sizes("gemm_bias_gelu", M, N, K);
  const Product p{CUBLASLT_EPILOGUE_GELU_AUX_BIAS, bias_gelu_layout(M, N, K), w, x, out, bias, pre};
  return run(p, dtype, workspace, workspace_bytes, device, stream);
}

bool gemm_dgelu_bgrad(const void* dy, const void* w, const void* pre, void* dpre, void* dbias, int64_t M, int64_t N,
                      int64_t O, Dtype dtype, void* workspace, size_t workspace_bytes, int device, void* stream) {
  check_sizes("gemm_dgelu_bgrad", M, N, O);
  const Product p{CUBLASLT_EPILOGUE_DGELU_BGRAD, dgelu_layout(M, N, O), w, dy, dpre, dbias, pre};
  return run(p, dtype, workspace, workspace_bytes, device, stream);
}

size_t gelu_gemm_workspace_bytes() { return kWorkspaceBytes; }

}  // namespace nt::cuda
