// Matrix products. Per step of the recurrence, row-major C (M, N) = A (M, K) @ B (K, N):
// float uses oneDNN's BRGEMM micro-kernel through ATen (AVX-512 where the CPU has it), or a
// hand-written AVX-512 product for a single row (batch 1), where BRGEMM's blocking does not pay
// off (16 accumulators over 256 columns, or over 16 * NV columns and 16 / NV rows of B);
// double (the float64 gradient checks) a plain loop. Products over all steps go through
// `mm_fast`: small float ones (below 16M multiply-adds, at most 512 deep, 32 rows a thread) on
// `mm_small`, the step's `gemm` on every thread; the others on oneDNN's matmul when torch
// exports it, else at::mm (MKL on x86, which does not use AVX-512 on every CPU), and below a
// million multiply-adds on at::mm, which is quicker to set up.
#pragma once

#include <ATen/ATen.h>
#include <ATen/native/CPUBlas.h>

#include "pool.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace lstmkit {

#if defined(__AVX512F__)
// One 16 x 16 float tile, dst = src^T, in registers: 16 loads, four rounds of shuffles (32-bit
// pairs, 64-bit pairs, then 128-bit lanes twice), 16 stores.
inline void transpose_tile_avx512(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int h = 0; h < 16; h += 8)
    for (int i = 0; i < 4; ++i) {
      t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
    }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ldd, r[i]);
}
#endif

// dst (cols, rows) = src (rows, cols)^T, in 16 x 16 tiles so that reads and writes both stay
// within a few cache lines per tile (the plain double loop cost ~83 µs against ~9 µs for the
// unit split's 256 x 128 float block here). Full float tiles are transposed in AVX-512
// registers where the CPU has them: 6.3 µs against 10.6 µs for the tile loop at 256 x 128.
template <typename T>
inline void transpose_into(const T* src, int64_t rows, int64_t cols, int64_t lds, T* dst,
                           int64_t ldd) {
  constexpr int64_t kTile = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    const int64_t rn = std::min(kTile, rows - r0);
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t cn = std::min(kTile, cols - c0);
#if defined(__AVX512F__)
      if constexpr (std::is_same_v<T, float>) {
        if (rn == kTile && cn == kTile) {
          transpose_tile_avx512(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd);
          continue;
        }
      }
#endif
      for (int64_t r = 0; r < rn; ++r) {
        const T* in = src + (r0 + r) * lds + c0;
        for (int64_t c = 0; c < cn; ++c) dst[(c0 + c) * ldd + r0 + r] = in[c];
      }
    }
  }
}

// The width of the column blocks in which the step products run (gemm below).
constexpr int64_t kColumns = 256;

// C (M, N) = A (M, K) @ B (K, N), any leading dimensions; a plain loop the compiler vectorises.
// With `accumulate`, C += A @ B (so every product below).
template <typename T>
inline void gemm_loop(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                      int64_t ldb, T* C, int64_t ldc, bool accumulate = false) {
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (!accumulate)
      for (int64_t j = 0; j < N; ++j) c[j] = T(0);
    for (int64_t k = 0; k < K; ++k) {
      const T a = A[i * lda + k];
      const T* b = B + k * ldb;
#pragma omp simd
      for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
    }
  }
}

#if defined(__AVX512F__)
// One row of A against a narrow B (N = 16 * NV < 256 columns, as the unit split's backward
// product): 16 / NV consecutive k share the 16 accumulators, so that the FMA chains overlap.
template <int NV>
inline void gemv_narrow_avx512(int64_t K, const float* a, const float* B, int64_t ldb, float* c,
                               bool accumulate) {
  constexpr int U = 16 / NV;
  __m512 acc[U][NV];
  for (int u = 0; u < U; ++u)
    for (int v = 0; v < NV; ++v) acc[u][v] = _mm512_setzero_ps();
  if (accumulate)
    for (int v = 0; v < NV; ++v) acc[0][v] = _mm512_loadu_ps(c + 16 * v);
  int64_t k = 0;
  for (; k + U <= K; k += U) {
    for (int u = 0; u < U; ++u) {
      const __m512 av = _mm512_set1_ps(a[k + u]);
      const float* b = B + (k + u) * ldb;
      for (int v = 0; v < NV; ++v) acc[u][v] = _mm512_fmadd_ps(av, _mm512_loadu_ps(b + 16 * v), acc[u][v]);
    }
  }
  for (; k < K; ++k) {
    const __m512 av = _mm512_set1_ps(a[k]);
    for (int v = 0; v < NV; ++v)
      acc[0][v] = _mm512_fmadd_ps(av, _mm512_loadu_ps(B + k * ldb + 16 * v), acc[0][v]);
  }
  for (int v = 0; v < NV; ++v) {
    __m512 sum = acc[0][v];
    for (int u = 1; u < U; ++u) sum = _mm512_add_ps(sum, acc[u][v]);
    _mm512_storeu_ps(c + 16 * v, sum);
  }
}

// The narrow product for any NV from 1 to 15 (N = 16 NV columns).
inline void gemv_narrow_any(int64_t nv, int64_t K, const float* a, const float* B, int64_t ldb,
                            float* c, bool accumulate) {
  switch (nv) {
    case 1: return gemv_narrow_avx512<1>(K, a, B, ldb, c, accumulate);
    case 2: return gemv_narrow_avx512<2>(K, a, B, ldb, c, accumulate);
    case 3: return gemv_narrow_avx512<3>(K, a, B, ldb, c, accumulate);
    case 4: return gemv_narrow_avx512<4>(K, a, B, ldb, c, accumulate);
    case 5: return gemv_narrow_avx512<5>(K, a, B, ldb, c, accumulate);
    case 6: return gemv_narrow_avx512<6>(K, a, B, ldb, c, accumulate);
    case 7: return gemv_narrow_avx512<7>(K, a, B, ldb, c, accumulate);
    case 8: return gemv_narrow_avx512<8>(K, a, B, ldb, c, accumulate);
    case 9: return gemv_narrow_avx512<9>(K, a, B, ldb, c, accumulate);
    case 10: return gemv_narrow_avx512<10>(K, a, B, ldb, c, accumulate);
    case 11: return gemv_narrow_avx512<11>(K, a, B, ldb, c, accumulate);
    case 12: return gemv_narrow_avx512<12>(K, a, B, ldb, c, accumulate);
    case 13: return gemv_narrow_avx512<13>(K, a, B, ldb, c, accumulate);
    case 14: return gemv_narrow_avx512<14>(K, a, B, ldb, c, accumulate);
    case 15: return gemv_narrow_avx512<15>(K, a, B, ldb, c, accumulate);
    default: return;
  }
}

// One row of A against B (N % 16 == 0): 256 columns at a time in 16 zmm accumulators, then the
// rest (the CIFG cell's 3 gate blocks leave 192 columns per thread at hidden 128) narrow.
inline void gemv_avx512(int64_t N, int64_t K, const float* a, const float* B, int64_t ldb,
                        float* c, bool accumulate) {
  int64_t n0 = 0;
  for (; n0 + 256 <= N; n0 += 256) {
    __m512 acc[16];
    for (int q = 0; q < 16; ++q)
      acc[q] = accumulate ? _mm512_loadu_ps(c + n0 + 16 * q) : _mm512_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
      const __m512 av = _mm512_set1_ps(a[k]);
      const float* b = B + k * ldb + n0;
      for (int q = 0; q < 16; ++q) acc[q] = _mm512_fmadd_ps(av, _mm512_loadu_ps(b + 16 * q), acc[q]);
    }
    for (int q = 0; q < 16; ++q) _mm512_storeu_ps(c + n0 + 16 * q, acc[q]);
  }
  if (n0 < N) gemv_narrow_any((N - n0) / 16, K, a, B + n0, ldb, c + n0, accumulate);
}
#endif

inline void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float* C, int64_t ldc, bool accumulate = false) {
  if (M == 0 || N == 0) return;
#if defined(__AVX512F__)
  if (M == 1 && N % 16 == 0) return gemv_avx512(N, K, A, B, ldb, C, accumulate);
#endif
  // In blocks of 256 columns and 512 of depth: one call over all 4H columns of a wide layer
  // streams the whole of B (K x 4H) past each block of rows, where a block of B stays in L2
  // for all the rows; depth blocks accumulate into C. At (B, T, I, H) = (256, 200, 64, 256)
  // the column blocks cut the forward loop from about 86 to 73 ms, and the depth blocks (the
  // backward's 4H-deep dh' = dz W_hh) a training call by about 6%.
  constexpr int64_t kDepth = 512;
  for (int64_t n0 = 0; n0 < N; n0 += kColumns)
    for (int64_t k0 = 0; k0 < K; k0 += kDepth)
      at::native::cpublas::brgemm(M, std::min(kColumns, N - n0), std::min(kDepth, K - k0), lda,
                                  ldb, ldc, accumulate || k0 > 0, A + k0, B + k0 * ldb + n0,
                                  C + n0, false);
}

inline void gemm(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
                 int64_t ldb, double* C, int64_t ldc, bool accumulate = false) {
  gemm_loop(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}

// w^T (K, N) = (w (N, K))^T in column blocks, through the tiled transpose (ATen's copy of a
// transposed view is the slower of the two for a weight matrix). Block j, the columns from
// j kColumns, is a contiguous (K, width) matrix starting at j kColumns K. gemm reads one block
// at a time, and a block whose rows lie apart in memory (ldb = N) streams from L2 more slowly:
// a single-row product of 128 x 512 took 1.9 µs from the plain transpose against 1.3 µs from
// the blocks here.
inline at::Tensor transposed_blocks(const at::Tensor& w) {
  const at::Tensor src = w.contiguous();
  const int64_t N = src.size(0), K = src.size(1);
  at::Tensor dst = at::empty({K, N}, src.options());
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "lstmkit_transposed_blocks", [&] {
    for (int64_t n0 = 0; n0 < N; n0 += kColumns) {
      const int64_t width = std::min(kColumns, N - n0);
      transpose_into(src.data_ptr<scalar_t>() + n0 * K, width, K, K,
                     dst.data_ptr<scalar_t>() + n0 * K, width);
    }
  });
  return dst;
}

// C (M, N) = A (M, K) @ B (K, N), B in the column blocks of transposed_blocks.
template <typename T>
inline void gemm_blocks(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                        T* C, int64_t ldc) {
  for (int64_t n0 = 0; n0 < N; n0 += kColumns) {
    const int64_t width = std::min(kColumns, N - n0);
    gemm(M, width, K, A, lda, B + n0 * K, width, C + n0, ldc);
  }
}

// The part of that product over the depth [k0, k1), k0 < k1: C (+)= A[:, k0:k1] @ B[k0:k1, :].
template <typename T>
inline void gemm_blocks_depth(int64_t M, int64_t N, int64_t K, int64_t k0, int64_t k1,
                              const T* A, int64_t lda, const T* B, T* C, int64_t ldc,
                              bool accumulate) {
  for (int64_t n0 = 0; n0 < N; n0 += kColumns) {
    const int64_t width = std::min(kColumns, N - n0);
    gemm(M, width, k1 - k0, A + k0, lda, B + n0 * K + k0 * width, width, C + n0, ldc, accumulate);
  }
}

}  // namespace lstmkit

namespace at::native {
// oneDNN matmul, exported by libtorch_cpu but not in its public headers; weak, so a torch
// without it still loads this extension and `mm_fast` falls back to at::mm.
__attribute__((weak)) void mkldnn_matmul(const Tensor& mat1, const Tensor& mat2,
                                         const Tensor& result, float beta, float alpha);
}  // namespace at::native

namespace lstmkit {

// A matrix with contiguous rows: `m` itself, or a copy of it (a transposed float view is
// transposed back in tiles, which ATen's copy of it is the slower of).
inline at::Tensor row_major(const at::Tensor& m) {
  if (m.stride(1) == 1 && (m.size(0) <= 1 || m.stride(0) >= m.size(1))) return m;
  if (m.scalar_type() != at::kFloat || m.stride(0) != 1 || m.stride(1) < m.size(0))
    return m.contiguous();
  at::Tensor out = at::empty({m.size(0), m.size(1)}, m.options());
  transpose_into(m.data_ptr<float>(), m.size(1), m.size(0), m.stride(1), out.data_ptr<float>(),
                 m.size(1));
  return out;
}

// A float product of fewer multiply-adds than this, at most kSmallDepth deep and of at least
// kSmallRows rows per thread, runs on `mm_small`; others on oneDNN's matmul or at::mm.
constexpr int64_t kSmallProduct = int64_t(1) << 24;
constexpr int64_t kSmallDepth = 512;
constexpr int64_t kSmallRows = 32;

// The CPUs the process may run on, as far as the kernel's threading goes: omp_get_num_procs(),
// unless set (> 0) from Python: tests claim more to run the unit split with more threads than
// a 2-CPU machine would.
inline int64_t& cpu_count_override() {
  static int64_t cpus = 0;
  return cpus;
}

// Threads that can run at once: torch's thread count, but no more than the process has CPUs.
inline int64_t usable_threads() {
  const int64_t cpus = cpu_count_override() > 0 ? cpu_count_override() : omp_get_num_procs();
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), cpus));
}

// Whether mm_fast runs a @ b on `mm_small`.
inline bool small_product(const at::Tensor& a, const at::Tensor& b) {
  return a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat &&
         a.size(1) <= kSmallDepth && a.size(0) >= kSmallRows * usable_threads() &&
         a.size(0) * a.size(1) * b.size(1) < kSmallProduct;
}

// out (M, N) = a (M, K) @ b (K, N) in float on `gemm` (brgemm) on every thread, each taking an
// even share of the rows in blocks of 32. oneDNN's matmul costs about 12 µs more to set up and
// run at the sizes of a short sequence at batch 1: at (1, 100, 32, 128) the input projection
// took 8.4 against 20.8 µs, dx 7.6 against 19.6 and the weight gradients' product 35.7 against
// 47.2 (2 threads; at 13M multiply-adds 53-61 against 69-71 µs). It is level or slower from
// about 60M multiply-adds on, slower at depths of thousands, which oneDNN shares out and this
// does not, and slower with fewer rows than threads x 32, shared out by columns: hence
// small_product.
inline void mm_small(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0), "mm_small: cannot multiply ",
              a.sizes(), " by ", b.sizes());
  TORCH_CHECK(a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat &&
                  out.scalar_type() == at::kFloat,
              "mm_small: float32 only, got ", a.scalar_type(), " x ", b.scalar_type(), " into ",
              out.scalar_type());
  TORCH_CHECK(out.dim() == 2 && out.size(0) == a.size(0) && out.size(1) == b.size(1) &&
                  out.stride(1) == 1,
              "mm_small: the output must be ", a.size(0), " x ", b.size(1),
              " with contiguous rows, got ", out.sizes());
  const at::Tensor A = row_major(a), B = row_major(b);
  const int64_t M = A.size(0), K = A.size(1), N = B.size(1);
  const float* pa = A.data_ptr<float>();
  const float* pb = B.data_ptr<float>();
  float* pc = out.data_ptr<float>();
  const int64_t lda = A.stride(0), ldb = B.stride(0), ldc = out.stride(0);
  const int64_t nt = std::max<int64_t>(1, std::min(usable_threads(), M / kSmallRows));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int64_t tid = omp_get_thread_num(), nth = omp_get_num_threads();
    const int64_t m0 = M * tid / nth, m1 = M * (tid + 1) / nth;
    for (int64_t i = m0; i < m1; i += kSmallRows)
      gemm(std::min(kSmallRows, m1 - i), N, K, pa + i * lda, lda, pb, ldb, pc + i * ldc, ldc);
  }
}

// `m` as oneDNN's matmul takes it without a copy of its own: contiguous, or the transpose of a
// contiguous matrix. ATen copies any other operand to contiguous first, and for the transpose of
// a matrix whose rows lie apart (one direction's dz inside a bidirectional layer's (T, B, 2G)
// gradient, transposed for the weight gradients) that copy reads column by column: 2.8 ms at
// (32, 50, 16, 128) where copying the rows first and transposing the view takes 0.1 ms.
inline at::Tensor onednn_operand(const at::Tensor& m) {
  if (m.stride(0) == 1 && m.stride(1) > m.size(0) && m.size(1) > 1)
    return pooled_empty({m.size(1), m.size(0)}, m.options()).copy_(m.t()).t();
  return m;
}

// out = beta * out + a @ b for 2-D tensors whose rows or columns are contiguous.
inline void mm_fast(const at::Tensor& a, const at::Tensor& b, at::Tensor& out, float beta) {
  if (a.size(0) == 0 || b.size(1) == 0) return;
  if (a.size(1) == 0) {
    if (beta == 0.0f) out.zero_();
    return;
  }
  if (beta == 0.0f && out.stride(1) == 1 && small_product(a, b)) return mm_small(a, b, out);
  // (the products mm_small does not take) oneDNN's matmul costs ~15 µs to set up: below about
  // a million multiply-adds ATen's GEMM is the faster of the two.
  const bool large = a.size(0) * a.size(1) * b.size(1) >= (int64_t(1) << 20);
  if (large && &at::native::mkldnn_matmul != nullptr && a.scalar_type() == at::kFloat) {
    at::native::mkldnn_matmul(onednn_operand(a), onednn_operand(b), out, beta, 1.0f);
  } else if (beta == 0.0f) {
    at::mm_out(out, a, b);
  } else {
    out.addmm_(a, b);
  }
}

inline at::Tensor mm_fast(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor out = pooled_empty({a.size(0), b.size(1)}, a.options());
  mm_fast(a, b, out, 0.0f);
  return out;
}

}  // namespace lstmkit
