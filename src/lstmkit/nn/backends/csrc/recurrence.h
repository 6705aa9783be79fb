// One direction of one layer over time: the forward loop and the backward-through-time loop.
//
// Both loops split the batch into one block of rows per thread; rows never interact through
// time, so the threads run the whole sequence without synchronising. Per step and block:
//
//   forward:   z = h' @ W_hh^T                       one GEMM (M, 4H) x (P, 4H)
//              gates, c, m = cell(z + xproj[t] + b)   fused, per row (b: b_ih + b_hh, or
//                                                     none when xproj holds the biases)
//              h = m @ W_hr^T (projection only)       one GEMM
//   backward:  dm = dh @ W_hr (projection only)       one GEMM
//              dz, da, dc' = cell_backward(...)       fused, per row
//              dh' = da @ W_hh                        one GEMM
//
// Time index of row b at step s: t = s forward; t = len_b - 1 - s backward (each sequence is
// reversed within its own length, so padding never enters the state). Steps s >= len_b are
// padding: the state is carried, the output and every gradient there are zero.
#pragma once

#include <ATen/ATen.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "cells.h"
#include "gemm.h"
#include "pool.h"

namespace lstmkit {

struct Shapes {
  int64_t T, B, H, G, P;
};

// The time of step s where every row runs all T steps (no lengths): s going forward, T - 1 - s
// going backward.
inline int64_t time_of_step(int64_t s, int64_t T, bool reverse) {
  return reverse ? T - 1 - s : s;
}

// Per-step views into the time-major tensors of one direction (last dim contiguous).
template <typename T>
struct TimeMajor {
  T* data;
  int64_t st, sb;  // strides of the step and batch dims
  T* row(int64_t t, int64_t b) const { return data + t * st + b * sb; }
};

template <typename T>
inline TimeMajor<T> time_major(const at::Tensor& x) {
  return {x.data_ptr<T>(), x.stride(0), x.stride(1)};
}

// Threads for a batch of `rows` whose step costs `work` multiply-adds: one per block of at least
// four rows, and one thread when a step is too small to pay for waking the others.
inline int64_t thread_count(int64_t rows, int64_t work) {
  if (work < (int64_t(1) << 16)) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows / 4));
}

template <typename T>
CellParams<T> cell_params(int64_t kind, int64_t H, const std::optional<at::Tensor>& peep,
                          const std::vector<at::Tensor>& ln) {
  CellParams<T> p;
  p.kind = kind;
  p.H = H;
  if (kind == kPeephole) p.peep = peep->data_ptr<T>();
  if (kind == kLayerNorm) {
    p.ln_h_w = ln[0].data_ptr<T>();
    p.ln_h_b = ln[1].data_ptr<T>();
    p.ln_c_w = ln[2].data_ptr<T>();
    p.ln_c_b = ln[3].data_ptr<T>();
  }
  return p;
}

// The h' half of the weight gradients' operand [x_t | h'_t] (layer.h), filled by the forward
// loop as it writes each h: h'_t, the state the step at time t starts from, is h at time t - 1
// going forward and at t + 1 going backward (the layer writes h0 at each row's first step).
// Positions past a row's length meet a zero dz; none is left unset (going forward, position len
// holds h at len - 1, the last valid step's, and the rest zeros; backward, all zeros). Writing
// here while h is in cache spares a pass over the output after the loop (at (64, 100, 32, 128)
// a copy of 3.3 MB that took about 0.2 ms).
template <typename T>
struct History {
  T* data = nullptr;  // none: no weight needs a gradient, or nothing is saved
  int64_t st = 0, sb = 0, steps = 0;
  bool reverse = false;

  // h (n values, from column `col`) of row b at time t, a valid step
  void put(int64_t t, int64_t b, const T* h, int64_t n, int64_t col = 0) const {
    const int64_t pos = reverse ? t - 1 : t + 1;
    if (data != nullptr && pos >= 0 && pos < steps)
      std::memcpy(data + pos * st + b * sb + col, h, sizeof(T) * n);
  }
  // row b at step s >= its length: zero where no valid step writes
  void pad(int64_t s, int64_t b, int64_t n, int64_t col = 0) const {
    const int64_t pos = reverse ? s : s + 1;
    if (data != nullptr && pos < steps) std::memset(data + pos * st + b * sb + col, 0, sizeof(T) * n);
  }
};

// `hist`: a (T, B, P) view with contiguous rows, or undefined for none.
template <typename T>
inline History<T> history(const at::Tensor& hist, bool reverse) {
  if (!hist.defined()) return {};
  return {hist.data_ptr<T>(), hist.stride(0), hist.stride(1), hist.size(0), reverse};
}

// A state (B, n) into `dst`, `count` = B n values: a memcpy where ATen's copy_ costs about a
// microsecond, as much as the rest of a batch-1 step. The state must hold exactly those values
// in the loop's dtype (the layer casts a state autocast let through; this does not broadcast).
template <typename T>
inline void load_state(const at::Tensor& src, T* dst, int64_t count) {
  TORCH_CHECK(src.numel() == count && src.scalar_type() == c10::CppTypeToScalarType<T>::value,
              "load_state: expected ", count, " values of ", c10::CppTypeToScalarType<T>::value,
              ", got a ", src.scalar_type(), " state of shape ", src.sizes());
  const at::Tensor s = src.is_contiguous() ? src : src.contiguous();
  std::memcpy(dst, s.data_ptr<T>(), sizeof(T) * count);
}

// A final state, B n values at `src`, in `slot` (its row of the layer's h_n or c_n, contiguous)
// or, without one, in a new tensor of `shape`.
template <typename T>
inline at::Tensor final_state(const T* src, const at::Tensor& slot, at::IntArrayRef shape,
                              const at::TensorOptions& opts) {
  TORCH_CHECK(!slot.defined() || slot.is_contiguous(), "final_state: the slot must be contiguous");
  at::Tensor out = slot.defined() ? slot : at::empty(shape, opts);
  std::memcpy(out.data_ptr<T>(), src, sizeof(T) * out.numel());
  return out;
}

// Saved for the backward pass: the gates in time order, the rest in step order (s; t = s going
// forward, t = len - 1 - s backward). Undefined when not saving (the cells then hold two steps).
struct Saved {
  at::Tensor gates;   // (T, B, G) activated [i f g o], G = 4H ([f g o], 3H, for CIFG), in time
                      // order (row (t, b), as xproj and dz), rows contiguous
  at::Tensor cells;   // (T+1, B, H) c_s, with c_0 first
  at::Tensor xhat_h;  // (T, B, 4H) layer norm only
  at::Tensor rstd_h;  // (T, B)
  at::Tensor xhat_c;  // (T, B, H)
  at::Tensor rstd_c;  // (T, B)
};

template <typename T>
std::vector<at::Tensor> forward_direction(const at::Tensor& xproj, const at::Tensor& h0,
                                          const at::Tensor& c0, const at::Tensor& w_hh,
                                          const std::optional<at::Tensor>& w_hr,
                                          const std::optional<at::Tensor>& peep,
                                          const std::optional<at::Tensor>& bias,
                                          const std::vector<at::Tensor>& ln,
                                          const std::optional<at::Tensor>& lengths,
                                          bool reverse, int64_t kind, bool save,
                                          at::Tensor& out, const at::Tensor& hist,
                                          bool over_input, const at::Tensor& h_out,
                                          const at::Tensor& c_out) {
  const Shapes n{xproj.size(0), xproj.size(1), c0.size(1), xproj.size(2), h0.size(1)};
  const bool proj = w_hr.has_value();
  const auto opts = xproj.options();
  const at::Tensor whh_t = transposed_blocks(w_hh);                          // (P, 4H), blocks
  const at::Tensor whr_t = proj ? transposed_blocks(*w_hr) : at::Tensor();   // (H, P), blocks
  const int64_t* len = lengths ? lengths->data_ptr<int64_t>() : nullptr;
  const bool ln_cell = kind == kLayerNorm;
  // Each step's product goes to a (B, G) buffer that stays in cache; the cell writes the
  // activated gates from there to where they are saved, at each row's time t: over xproj itself
  // with `over_input` (the caller's own buffer, each row read just before it is written), which
  // spares a buffer the size of xproj (the backward pass writes dz over them in turn: layer.h).
  const bool over = save && over_input;
  Saved sv;
  sv.gates = over ? xproj : save ? pooled_empty({n.T, n.B, n.G}, opts) : at::Tensor();
  const at::Tensor zstep = pooled_empty({n.B, n.G}, opts);
  sv.cells = pooled_empty({save ? n.T + 1 : 2, n.B, n.H}, opts);
  if (save && ln_cell) {
    sv.xhat_h = pooled_empty({n.T, n.B, n.G}, opts);
    sv.rstd_h = pooled_empty({n.T, n.B}, opts);
    sv.xhat_c = pooled_empty({n.T, n.B, n.H}, opts);
    sv.rstd_c = pooled_empty({n.T, n.B}, opts);
  }
  load_state(c0, sv.cells.data_ptr<T>(), n.B * n.H);
  TORCH_CHECK(!h_out.defined() || h_out.is_contiguous(), "forward: h_out must be contiguous");
  // (B, P) the running state, h_n at the end
  at::Tensor h = h_out.defined() ? h_out : at::empty({n.B, n.P}, opts);
  load_state(h0, h.data_ptr<T>(), n.B * n.P);
  at::Tensor m = at::empty({n.B, n.H}, opts);                   // (B, H) before projection
  at::Tensor h_new = proj ? at::empty({n.B, n.P}, opts) : at::Tensor();
  const int64_t nt = thread_count(n.B, n.B * n.G * n.P);
  at::Tensor scratch = at::empty({nt, 4 * n.H}, opts);
  TORCH_CHECK(!(bias && ln_cell), "forward: the layer-norm cell takes its biases in xproj (after "
              "its norm), not in the step");
  CellParams<T> p = cell_params<T>(kind, n.H, peep, ln);
  if (bias) p.bias = bias->data_ptr<T>();  // added as the cell reads xproj
  const TimeMajor<T> x = time_major<T>(xproj), o = time_major<T>(out);
  const History<T> hs = history<T>(hist, reverse);
  const TimeMajor<T> saved_gates = save ? time_major<T>(sv.gates) : TimeMajor<T>{nullptr, 0, 0};
  T* z = zstep.data_ptr<T>();
  T* cells = sv.cells.data_ptr<T>();
  T* hp = h.data_ptr<T>();
  T* mp = m.data_ptr<T>();
  T* hn = proj ? h_new.data_ptr<T>() : nullptr;
  const T* whh = whh_t.data_ptr<T>();
  const T* whr = proj ? whr_t.data_ptr<T>() : nullptr;

  // Without a projection or lengths, each step's h goes straight to its rows of the output,
  // and the next step's product reads it there (every row's step s is at the same time t).
  const bool direct = !proj && len == nullptr && n.T > 0;

#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int64_t tid = omp_get_thread_num(), nth = omp_get_num_threads();
    const int64_t r0 = n.B * tid / nth, r1 = n.B * (tid + 1) / nth, rows = r1 - r0;
    T* scr = scratch.data_ptr<T>() + tid * 4 * n.H;
    for (int64_t s = 0; s < n.T; ++s) {
      const T* c_prev = cells + (save ? s : s % 2) * n.B * n.H;
      T* c_next = cells + (save ? s + 1 : (s + 1) % 2) * n.B * n.H;
      if (direct && s > 0)
        gemm_blocks(rows, n.G, n.P, o.row(time_of_step(s - 1, n.T, reverse), r0), o.sb, whh,
                    z + r0 * n.G, n.G);
      else
        gemm_blocks(rows, n.G, n.P, hp + r0 * n.P, n.P, whh, z + r0 * n.G, n.G);
      for (int64_t b = r0; b < r1; ++b) {
        const int64_t lb = len ? len[b] : n.T;
        if (s >= lb) {  // padding: carry the state, output zero
          std::memcpy(c_next + b * n.H, c_prev + b * n.H, sizeof(T) * n.H);
          std::memset(o.row(s, b), 0, sizeof(T) * n.P);
          hs.pad(s, b, n.P);
          continue;
        }
        const int64_t t = reverse ? lb - 1 - s : s;
        LNSaved<T> lns;
        if (save && ln_cell) {
          lns.xhat_h = sv.xhat_h.data_ptr<T>() + (s * n.B + b) * n.G;
          lns.rstd_h = sv.rstd_h.data_ptr<T>() + s * n.B + b;
          lns.xhat_c = sv.xhat_c.data_ptr<T>() + (s * n.B + b) * n.H;
          lns.rstd_c = sv.rstd_c.data_ptr<T>() + s * n.B + b;
        }
        T* m_row = proj ? mp + b * n.H : direct ? o.row(t, b) : hp + b * n.P;
        cell_forward_row(p, z + b * n.G, x.row(t, b), c_prev + b * n.H, c_next + b * n.H, m_row,
                         lns, scr, save ? saved_gates.row(t, b) : nullptr);
        if (!proj) {
          if (!direct) std::memcpy(o.row(t, b), m_row, sizeof(T) * n.P);
          hs.put(t, b, m_row, n.P);
        }
      }
      if (proj) {
        gemm_blocks(rows, n.P, n.H, mp + r0 * n.H, n.H, whr, hn + r0 * n.P, n.P);
        for (int64_t b = r0; b < r1; ++b) {
          const int64_t lb = len ? len[b] : n.T;
          if (s >= lb) continue;
          const int64_t t = reverse ? lb - 1 - s : s;
          std::memcpy(hp + b * n.P, hn + b * n.P, sizeof(T) * n.P);
          std::memcpy(o.row(t, b), hn + b * n.P, sizeof(T) * n.P);
          hs.put(t, b, hn + b * n.P, n.P);
        }
      }
    }
  }
  if (direct)  // h_n: the last step's rows of the output
    for (int64_t b = 0; b < n.B; ++b)
      std::memcpy(hp + b * n.P, o.row(time_of_step(n.T - 1, n.T, reverse), b),
                  sizeof(T) * n.P);
  const at::Tensor c_n =
      final_state(cells + (save ? n.T : n.T % 2) * n.B * n.H, c_out, {n.B, n.H}, opts);
  if (!save) return {h, c_n};
  return {h, c_n, sv.gates, sv.cells, sv.xhat_h, sv.rstd_h, sv.xhat_c, sv.rstd_c};
}

}  // namespace lstmkit
