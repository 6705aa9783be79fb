// One LSTM step for every pair of a state and an input: the segment forecaster's decoder.
//
//   pair_forward(xq (C, M, G), hh (B, C, G), c0 (B, C, H), peep, kind) -> h (B, C, M, H)
//
// Pair (b, c, j) starts from state row (b, c) with pre-activations xq[c, j] + hh[b, c]: xq is
// the input projection of query j of group c (biases included), hh the recurrent one of the
// state, h0 W_hh^T. Only the gate arithmetic runs per pair, fused and in cache, where the same
// step in PyTorch ops writes and reads B*C*M*G values several times over. Nothing is saved:
//
//   pair_backward(dh, xq, hh, c0, peep, kind) -> [dxq, dhh, dc0, dpeep]
//
// recomputes each pair's gates and runs the cell's backward with no gradient arriving on the
// new c: dhh[b, c] and dc0[b, c] sum over j, dxq[c, j] sums over b (per thread, then across).
// Cells: plain, peephole, CIFG, without projection (the layer-norm cell's norm would be redone
// for every pair; the caller keeps that cell in PyTorch ops).
#pragma once

#include <ATen/ATen.h>
#include <omp.h>

#include <cstring>
#include <vector>

#include "cells.h"

namespace lstmkit {

struct PairShapes {
  int64_t B, C, M, G, H;
};

inline PairShapes pair_shapes(const at::Tensor& xq, const at::Tensor& hh, const at::Tensor& c0,
                              int64_t kind) {
  TORCH_CHECK(xq.dim() == 3 && hh.dim() == 3 && c0.dim() == 3,
              "pair step: expected xq (C, M, G), hh (B, C, G), c0 (B, C, H)");
  const PairShapes n{hh.size(0), hh.size(1), xq.size(1), xq.size(2), c0.size(2)};
  TORCH_CHECK(kind != kLayerNorm, "pair step: the layer-norm cell is not supported");
  for (const at::Tensor* t : {&hh, &c0})
    TORCH_CHECK(t->scalar_type() == xq.scalar_type() && t->device() == xq.device() &&
                    xq.device().is_cpu(),
                "pair step: xq, hh and c0 must be CPU tensors of one dtype");
  TORCH_CHECK(xq.size(0) == n.C && c0.size(0) == n.B && c0.size(1) == n.C &&
                  hh.size(2) == n.G && n.G == gate_blocks(kind) * n.H,
              "pair step: shapes do not match: xq ", xq.sizes(), ", hh ", hh.sizes(), ", c0 ",
              c0.sizes());
  return n;
}

template <typename T>
CellParams<T> pair_params(int64_t kind, int64_t H, const std::optional<at::Tensor>& peep) {
  CellParams<T> p;
  p.kind = kind;
  p.H = H;
  if (kind == kPeephole) {
    TORCH_CHECK(peep && peep->is_contiguous() && peep->numel() == 3 * H &&
                    peep->scalar_type() == c10::CppTypeToScalarType<T>::value && peep->is_cpu(),
                "pair step: the peephole cell needs its (3, H) weights, on the CPU, in the "
                "inputs' dtype");
    p.peep = peep->data_ptr<T>();
  }
  return p;
}

// Gates, c and h of pair (b, c, j) into z (G), cn (H) and m (H).
template <typename T>
inline void pair_cell(const CellParams<T>& p, const PairShapes& n, const T* xq, const T* hh,
                      const T* c0, int64_t row, int64_t j, T* z, T* cn, T* m) {
  const int64_t c = row % n.C;
  std::memcpy(z, hh + row * n.G, sizeof(T) * n.G);
  cell_forward_row(p, z, xq + (c * n.M + j) * n.G, c0 + row * n.H, cn, m, LNSaved<T>{},
                   static_cast<T*>(nullptr));
}

template <typename T>
at::Tensor pair_forward_impl(const at::Tensor& xq_t, const at::Tensor& hh_t,
                             const at::Tensor& c0_t, const std::optional<at::Tensor>& peep,
                             int64_t kind) {
  const PairShapes n = pair_shapes(xq_t, hh_t, c0_t, kind);
  const at::Tensor xq = xq_t.contiguous(), hh = hh_t.contiguous(), c0 = c0_t.contiguous();
  at::Tensor h = at::empty({n.B, n.C, n.M, n.H}, xq.options());
  const CellParams<T> p = pair_params<T>(kind, n.H, peep);
  const T* xp = xq.data_ptr<T>();
  const T* hp = hh.data_ptr<T>();
  const T* cp = c0.data_ptr<T>();
  T* out = h.data_ptr<T>();
  const int64_t rows = n.B * n.C;
#pragma omp parallel if (rows * n.M * n.G > (int64_t(1) << 16))
  {
    std::vector<T> z(n.G), cn(n.H);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t j = 0; j < n.M; ++j)
        pair_cell(p, n, xp, hp, cp, row, j, z.data(), cn.data(), out + (row * n.M + j) * n.H);
  }
  return h;
}

template <typename T>
std::vector<at::Tensor> pair_backward_impl(const at::Tensor& dh_t, const at::Tensor& xq_t,
                                           const at::Tensor& hh_t, const at::Tensor& c0_t,
                                           const std::optional<at::Tensor>& peep, int64_t kind) {
  const PairShapes n = pair_shapes(xq_t, hh_t, c0_t, kind);
  const at::Tensor xq = xq_t.contiguous(), hh = hh_t.contiguous(), c0 = c0_t.contiguous();
  const at::Tensor dh = dh_t.contiguous();
  TORCH_CHECK(dh.sizes() == at::IntArrayRef({n.B, n.C, n.M, n.H}),
              "pair step: the output gradient has shape ", dh.sizes());
  const auto opts = xq.options();
  at::Tensor dhh = at::empty({n.B, n.C, n.G}, opts);
  at::Tensor dc0 = at::empty({n.B, n.C, n.H}, opts);
  const int64_t rows = n.B * n.C;
  const bool parallel = rows * n.M * n.G > (int64_t(1) << 16);
  const int64_t nt = parallel ? at::get_num_threads() : 1;
  // per thread: dxq (C M G) and the peephole gradients (3H), summed after the loop
  at::Tensor acc = at::zeros({nt, n.C * n.M * n.G + 3 * n.H}, opts);
  const CellParams<T> p = pair_params<T>(kind, n.H, peep);
  const T* xp = xq.data_ptr<T>();
  const T* hp = hh.data_ptr<T>();
  const T* cp = c0.data_ptr<T>();
  const T* dhp = dh.data_ptr<T>();
  T* dhhp = dhh.data_ptr<T>();
  T* dc0p = dc0.data_ptr<T>();
#pragma omp parallel num_threads(nt) if (parallel)
  {
    const int64_t tid = omp_get_thread_num();
    T* a = acc.data_ptr<T>() + tid * (n.C * n.M * n.G + 3 * n.H);
    CellGrads<T> g_acc;
    g_acc.peep = a + n.C * n.M * n.G;
    std::vector<T> z(n.G), cn(n.H), m(n.H), dc(n.H), dz(n.G);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t c = row % n.C;
      T* dhh_row = dhhp + row * n.G;
      T* dc0_row = dc0p + row * n.H;
      std::memset(dhh_row, 0, sizeof(T) * n.G);
      std::memset(dc0_row, 0, sizeof(T) * n.H);
      for (int64_t j = 0; j < n.M; ++j) {
        pair_cell(p, n, xp, hp, cp, row, j, z.data(), cn.data(), m.data());
        std::fill(dc.begin(), dc.end(), T(0));  // nothing arrives on the new c
        cell_backward_row(p, z.data(), cp + row * n.H, cn.data(), dhp + (row * n.M + j) * n.H,
                          dc.data(), dz.data(), dz.data(), LNSaved<T>{}, g_acc,
                          static_cast<T*>(nullptr), static_cast<T*>(nullptr));
        T* dxq_row = a + (c * n.M + j) * n.G;
#pragma omp simd
        for (int64_t k = 0; k < n.G; ++k) {
          dhh_row[k] += dz[k];
          dxq_row[k] += dz[k];
        }
#pragma omp simd
        for (int64_t k = 0; k < n.H; ++k) dc0_row[k] += dc[k];
      }
    }
  }
  const at::Tensor total = acc.sum(0);
  at::Tensor dxq = total.slice(0, 0, n.C * n.M * n.G).view({n.C, n.M, n.G});
  at::Tensor dpeep = kind == kPeephole ? total.slice(0, n.C * n.M * n.G).view({3, n.H})
                                       : at::Tensor();
  return {dxq, dhh, dc0, dpeep};
}

inline at::Tensor pair_forward(const at::Tensor& xq, const at::Tensor& hh, const at::Tensor& c0,
                               const std::optional<at::Tensor>& peep, int64_t kind) {
  at::Tensor h;
  AT_DISPATCH_FLOATING_TYPES(xq.scalar_type(), "lstmkit_pair_forward", [&] {
    h = pair_forward_impl<scalar_t>(xq, hh, c0, peep, kind);
  });
  return h;
}

inline std::vector<at::Tensor> pair_backward(const at::Tensor& dh, const at::Tensor& xq,
                                             const at::Tensor& hh, const at::Tensor& c0,
                                             const std::optional<at::Tensor>& peep,
                                             int64_t kind) {
  std::vector<at::Tensor> grads;
  AT_DISPATCH_FLOATING_TYPES(xq.scalar_type(), "lstmkit_pair_backward", [&] {
    grads = pair_backward_impl<scalar_t>(dh, xq, hh, c0, peep, kind);
  });
  return grads;
}

}  // namespace lstmkit
