// The weight gradients of one direction, after its backward loop:
//
//   [dW_ih | dW_hh] = da^T [x | h'],   da (N, G) (dz, or the layer-norm cell's gradient before
//                                     its norm), [x | h'] (N, I + P), N = T B steps and rows
//
// in one of three ways, each returning both gradients contiguous. The products on the BRGEMM
// micro-kernel also give the biases' gradient, db = Σ da over the rows, when asked: one more
// row of dW^T, from a row of ones under each transposed chunk (for one chunk, a plain sum).
// The layer asks where they run, and its loops then skip their own sum of every row of dz in
// double: a training call 0.985-0.996 of its time at (64, 100, 32, 128), 0.985-0.989 at batch 1
// (benchmarks/ab_kernel.py against 9066dc2). db there is a float sum, as dW's are.
//
// The three ways:
//   - on the BRGEMM micro-kernel (float, where dW^T takes at most 512 KiB), by the rows there are:
//     - at most 128 (one chunk): each thread transposes its share of da's columns and multiplies
//       it straight into its rows of dW_ih and dW_hh;
//     - fewer than 128 a thread: dW^T += [x | h']_chunk^T da_chunk, 128 rows at a time (da read
//       in place, its rows as they lie; each chunk of [x | h'], 128 rows of I + P, transposed),
//       each thread over every row for its share of the columns, then transposed into dW_ih
//       and dW_hh;
//     - at least 128 a thread: the same chunks, each thread over its share of the rows into a
//       partial sum of its own; the threads then add them up and transpose the sum, each over
//       its share of the columns;
//   - small (mm_small takes the product, gemm.h): one copy of da^T with contiguous rows and two
//     products straight into dW_ih and dW_hh;
//   - otherwise one product on oneDNN's matmul (mm_fast) and both copied out of it (one product
//     of I + P columns ran faster there than two of I and P: 2.3-2.6 ms against 2.5-2.8 at
//     (64, 100, 32, 128), benchmarks/kernel_parts.py).
// A training call against the version before each (benchmarks/ab_kernel.py, 2 threads): the
// chunks by rows 0.975-0.979 of its time at (64, 100, 32, 128), where oneDNN's merged product
// took 2.44-2.64 ms and they 2.20-2.37 timed alone; by columns 0.986 at (1, 100, 32, 128), where
// the small products took 59 µs and they 42 timed alone (the unit split's backward leaves dz
// spread over both cores' caches; splitting the columns as it splits the units gained nothing
// more); one chunk against the chunks by columns 0.985-0.996 there, 0.991-0.992 at
// (2, 60, 16, 64), but 1.007-1.021 at (1, 250, 32, 128), two chunks (hence only up to one).
#pragma once

#include "gemm.h"

namespace lstmkit {

// Columns [c0, c0 + n) of the 2-D contiguous `m` as a new contiguous tensor, row by row (for
// the merged product: at (1, 100, 32, 128), when that shape still took it, 8 µs in a training
// call where ATen's copy of the two column slices took 11 µs).
inline at::Tensor column_block(const at::Tensor& m, int64_t c0, int64_t n) {
  at::Tensor out = at::empty({m.size(0), n}, m.options());
  const int64_t rows = m.size(0), ld = m.size(1), bytes = n * m.element_size();
  const char* src = static_cast<const char*>(m.data_ptr()) + c0 * m.element_size();
  char* dst = static_cast<char*>(out.data_ptr());
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(dst + r * bytes, src + r * ld * m.element_size(), bytes);
  return out;
}

// Rows of [x | h'] per chunk of the chunked product, and the most bytes of dW^T (I + P, G) for
// which it runs. Split by rows, against oneDNN's matmul (2 threads, data in L3): at
// G = 512 and I + P = 160 (320 KiB) 0.90-0.98 of its time from N = 600 to 6400; at G = 1024 and
// I + P = 320 (1.25 MiB) 0.96-1.06 from N = 2000 to 12800, level; at 4.5 MiB and more, with the
// partial sums beyond L2 (1 MiB a core here), up to 1.3 times its time.
constexpr int64_t kGradientChunk = 128;
constexpr int64_t kGradientPartialBytes = int64_t(1) << 19;  // 512 KiB

// Thread `tid` of `nth`'s share of G columns, [first, last): whole 16-column tiles, but for
// the last thread's.
inline std::pair<int64_t, int64_t> column_share(int64_t G, int64_t tid, int64_t nth) {
  const int64_t tiles = (G + 15) / 16;
  return {std::min(G, 16 * (tiles * tid / nth)),
          tid + 1 == nth ? G : std::min(G, 16 * (tiles * (tid + 1) / nth))};
}

// Whether the products on the BRGEMM micro-kernel take G gate columns and an operand of W
// columns in `dtype` (W + 1 with the biases' row of ones): float, dW^T within
// kGradientPartialBytes.
inline bool gradients_in_chunks(at::ScalarType dtype, int64_t G, int64_t W) {
  return dtype == at::kFloat && W * G * int64_t(sizeof(float)) <= kGradientPartialBytes;
}

// Whether they take da (N, G) and the operand (N, W) as laid out: rows of both contiguous too.
inline bool chunked_gradients(const at::Tensor& da, const at::Tensor& operand, bool bias) {
  return da.scalar_type() == operand.scalar_type() && da.stride(1) == 1 &&
         da.stride(0) >= da.size(1) && operand.is_contiguous() &&
         gradients_in_chunks(da.scalar_type(), da.size(1), operand.size(1) + int64_t(bias));
}

// The gradients a product returns, allocated, and where to write them.
struct GradientOutputs {
  at::Tensor dw_ih, dw_hh, db;  // (G, I) undefined when I = 0; (G, P); (G,) only with `bias`
  float* ih = nullptr;
  float* hh = nullptr;
  float* b = nullptr;
  GradientOutputs(int64_t G, int64_t I, int64_t P, bool bias, const at::TensorOptions& opts)
      : dw_ih(I > 0 ? at::empty({G, I}, opts) : at::Tensor()),
        dw_hh(at::empty({G, P}, opts)),
        db(bias ? at::empty({G}, opts) : at::Tensor()) {
    if (I > 0) ih = dw_ih.data_ptr<float>();
    hh = dw_hh.data_ptr<float>();
    if (bias) b = db.data_ptr<float>();
  }
  std::vector<at::Tensor> list() const { return {dw_ih, dw_hh, db}; }
};

// {dW_ih, dW_hh, db} through the chunked product (see the top of this file); dW_ih undefined
// when I = 0, db without `bias`. `by_rows`: each thread sums over its share of the rows, then
// the threads add up their partial sums; else each thread runs all the rows for its share of
// the columns (every thread transposes every chunk: for few rows, where adding up partial sums
// costs more).
inline std::vector<at::Tensor> weight_gradients_in_chunks(const at::Tensor& da,
                                                          const at::Tensor& operand, int64_t I,
                                                          bool by_rows, bool bias) {
  const int64_t N = da.size(0), G = da.size(1), W = operand.size(1), P = W - I;
  const int64_t ld = da.stride(0), tiles = (G + 15) / 16;
  const int64_t M = W + int64_t(bias);  // rows of dW^T: with `bias`, a last one of Σ da
  const int64_t nt = std::max<int64_t>(
      1, std::min(usable_threads(), by_rows ? N / kGradientChunk : tiles));
  const auto opts = operand.options();
  at::Tensor partial = at::empty({by_rows ? nt : 1, M, G}, opts);  // dW^T, each thread's
  at::Tensor chunks = at::empty({nt, M, kGradientChunk}, opts);
  const GradientOutputs out(G, I, P, bias, opts);
  const float* pa = da.data_ptr<float>();
  const float* px = operand.data_ptr<float>();
  float* sums = partial.data_ptr<float>();
  float *d_ih = out.ih, *d_hh = out.hh, *d_b = out.b;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int64_t tid = omp_get_thread_num(), nth = omp_get_num_threads();
    const auto [g0, g1] = column_share(G, tid, nth);  // this thread's columns
    const int64_t r0 = by_rows ? N * tid / nth : 0, r1 = by_rows ? N * (tid + 1) / nth : N;
    const int64_t c0 = by_rows ? 0 : g0, c1 = by_rows ? G : g1;  // the columns it multiplies
    float* a = chunks.data_ptr<float>() + tid * M * kGradientChunk;
    float* c = sums + (by_rows ? tid * M * G : 0);
    if (bias) std::fill(a + W * kGradientChunk, a + M * kGradientChunk, 1.0f);  // row of ones
    if (r0 == r1)
      for (int64_t r = 0; r < M; ++r) std::fill(c + r * G + c0, c + r * G + c1, 0.0f);
    for (int64_t k0 = r0; k0 < r1; k0 += kGradientChunk) {
      const int64_t kn = std::min(kGradientChunk, r1 - k0);
      transpose_into(px + k0 * W, kn, W, W, a, kGradientChunk);  // (W, kn)
      for (int64_t n0 = c0; n0 < c1; n0 += kColumns)
        at::native::cpublas::brgemm(M, std::min(kColumns, c1 - n0), kn, kGradientChunk, ld, G,
                                    /*add_C=*/k0 > r0, a, pa + k0 * ld + n0, c + n0, false);
    }
    if (by_rows) {
#pragma omp barrier
      for (int64_t t = 1; t < nth; ++t)
        for (int64_t r = 0; r < M; ++r) {
          float* dst = sums + r * G;
          const float* src = sums + (t * M + r) * G;
#pragma omp simd
          for (int64_t g = g0; g < g1; ++g) dst[g] += src[g];
        }
    }
    if (g1 > g0) {
      if (I > 0) transpose_into(sums + g0, I, g1 - g0, G, d_ih + g0 * I, I);
      transpose_into(sums + I * G + g0, P, g1 - g0, G, d_hh + g0 * P, P);
      if (bias) std::memcpy(d_b + g0, sums + W * G + g0, sizeof(float) * (g1 - g0));
    }
  }
  return out.list();
}

// {dW_ih, dW_hh, db} for at most one chunk of rows (see the top of this file): each thread
// transposes its own columns of da and multiplies them straight into its rows of dW_ih and
// dW_hh, with no transposes of [x | h'] or of the results, and with `bias` sums them over the
// rows; dW_ih undefined when I = 0, db without `bias`.
inline std::vector<at::Tensor> weight_gradients_one_chunk(const at::Tensor& da,
                                                       const at::Tensor& operand, int64_t I,
                                                       bool bias) {
  const int64_t N = da.size(0), G = da.size(1), W = operand.size(1), P = W - I;
  const int64_t ld = da.stride(0), tiles = (G + 15) / 16;
  const int64_t nt = std::max<int64_t>(1, std::min(usable_threads(), tiles));
  const auto opts = operand.options();
  // every thread's columns of da, transposed, at its first column's row (a team smaller than
  // nt gives each thread more columns: shares are by the team's size)
  at::Tensor scratch = at::empty({G, std::max<int64_t>(N, 1)}, opts);
  const GradientOutputs out(G, I, P, bias, opts);
  const float* pa = da.data_ptr<float>();
  const float* px = operand.data_ptr<float>();
  float *d_ih = out.ih, *d_hh = out.hh, *d_b = out.b;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int64_t tid = omp_get_thread_num(), nth = omp_get_num_threads();
    const auto [g0, g1] = column_share(G, tid, nth);  // this thread's columns
    float* a = scratch.data_ptr<float>() + g0 * std::max<int64_t>(N, 1);
    if (bias && g1 > g0) {  // Σ da over the rows, its own columns
      std::fill(d_b + g0, d_b + g1, 0.0f);
      for (int64_t r = 0; r < N; ++r) {
        const float* row = pa + r * ld;
#pragma omp simd
        for (int64_t g = g0; g < g1; ++g) d_b[g] += row[g];
      }
    }
    if (g1 > g0) {
      if (N == 0) {
        if (I > 0) std::fill(d_ih + g0 * I, d_ih + g1 * I, 0.0f);
        std::fill(d_hh + g0 * P, d_hh + g1 * P, 0.0f);
      } else {
        transpose_into(pa + g0, N, g1 - g0, ld, a, N);  // (g1 - g0, N)
        if (I > 0) gemm(g1 - g0, I, N, a, N, px, W, d_ih + g0 * I, I);
        gemm(g1 - g0, P, N, a, N, px + I, W, d_hh + g0 * P, P);
      }
    }
  }
  return out.list();
}

// {dW_ih, dW_hh, db} = da^T [x | h'] split at column I of the operand, and with `bias` the sum
// of da's rows, where the products on the BRGEMM micro-kernel run (chunked_gradients: one row
// of ones more in their operand); dW_ih undefined when I = 0, db undefined without `bias` or on
// the other paths (see the top of this file), whose caller sums the biases' gradient itself.
inline std::vector<at::Tensor> weight_gradients(const at::Tensor& da, const at::Tensor& operand,
                                                int64_t I, bool bias = false) {
  TORCH_CHECK(da.dim() == 2 && operand.dim() == 2 && da.size(0) == operand.size(0),
              "weight_gradients: da (N, G) and [x | h'] (N, I + P) need the same rows, got da ",
              da.sizes(), " and [x | h'] ", operand.sizes());
  TORCH_CHECK(I >= 0 && I <= operand.size(1), "weight_gradients: x's columns must lie in 0..",
              operand.size(1), ", got ", I);
  TORCH_CHECK(da.scalar_type() == operand.scalar_type(), "weight_gradients: one dtype, got ",
              da.scalar_type(), " and ", operand.scalar_type());
  const at::Tensor da_t = da.t();  // (G, N)
  const int64_t P = operand.size(1) - I;
  at::Tensor dw_ih, dw_hh;
  if (chunked_gradients(da, operand, bias)) {
    if (da.size(0) <= kGradientChunk) return weight_gradients_one_chunk(da, operand, I, bias);
    const bool by_rows = da.size(0) >= kGradientChunk * usable_threads();
    return weight_gradients_in_chunks(da, operand, I, by_rows, bias);
  } else if (small_product(da_t, operand)) {
    const at::Tensor a = row_major(da_t);
    if (I > 0) dw_ih = mm_fast(a, operand.narrow(1, 0, I));
    dw_hh = mm_fast(a, operand.narrow(1, I, P));
  } else {
    const at::Tensor dw = mm_fast(da_t, operand);
    if (I > 0) dw_ih = column_block(dw, 0, I);
    dw_hh = column_block(dw, I, P);
  }
  return {dw_ih, dw_hh, at::Tensor()};
}

}  // namespace lstmkit
