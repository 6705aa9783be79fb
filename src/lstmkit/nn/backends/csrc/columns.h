// Small batches: the hidden units, not the rows, are shared out among the threads.
//
// With fewer rows than the threads can share (batch 1 above all), the row split of
// recurrence.h leaves one thread to stream the whole of W_hh from cache every step. Here each
// thread owns a block of hidden units u0..u1 and the weight rows of their gates (packed
// once per call: transposed for the forward product, as contiguous (G, nu) columns for the
// backward one), so each thread reads only its share of W_hh per step:
//
//   forward:   z[:, own] = h' @ W_hh[own]^T            (B, 4 nu; 3 nu for CIFG)
//              gates, c[:, own], h[:, own] = cell(...)  unit-local for the plain and peephole cells
//              barrier: every thread needs all of h for the next step
//   backward:  dz[:, own], dc[:, own] = cell_backward(dh[:, own] + dout[:, own], ...)
//              barrier: dh'[:, own] = dz @ W_hh[:, own] needs all of dz
//
// The running h (forward) and dz (backward) are double-buffered, so one barrier per step
// suffices: a thread overwrites a buffer only after every thread has passed the barrier that
// follows its last read of it. The layer-norm cell (a norm over all 4H gates) and projections
// use the row split.
#pragma once

#include "barrier.h"
#include "recurrence.h"

namespace lstmkit {

// The least W_hh multiply-adds per row and step (4H * P) for which splitting the units pays;
// settable from Python so that tests can run this path at small sizes.
inline int64_t& column_split_min_work() {
  static int64_t min_work = int64_t(1) << 15;
  return min_work;
}

// Threads for the unit split, or 1 where the row split (or one thread) is the better path.
// No more threads than the process may run at once: its threads meet at every step, so one
// waiting for a core holds up the others (at (1, 100, 32, 128), 4 threads on 2 cores took
// about 20 times as long as 2).
inline int64_t column_threads(const Shapes& n, int64_t kind, bool proj) {
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), omp_get_num_procs());
  if (proj || kind == kLayerNorm || threads < 2 || n.B >= 4 * threads) return 1;
  if (n.G * n.P < column_split_min_work()) return 1;
  return std::min<int64_t>(threads, n.H);
}

// Units [u0, u1) of thread `tid` of `nt`.
inline std::pair<int64_t, int64_t> unit_block(int64_t H, int64_t tid, int64_t nt) {
  return {H * tid / nt, H * (tid + 1) / nt};
}

// Copies the own units of each of the `nb` gate blocks between the global layout [i|f|g|o]
// (nb H) and the local one (nb nu).
template <typename T>
inline void gather_gates(const T* global, int64_t nb, int64_t H, int64_t u0, int64_t nu,
                         T* local) {
  for (int64_t q = 0; q < nb; ++q) std::memcpy(local + q * nu, global + q * H + u0, sizeof(T) * nu);
}
template <typename T>
inline void scatter_gates(const T* local, int64_t nb, int64_t H, int64_t u0, int64_t nu,
                          T* global) {
  for (int64_t q = 0; q < nb; ++q) std::memcpy(global + q * H + u0, local + q * nu, sizeof(T) * nu);
}

// Each thread packs its own share of the forward weights (no ATen calls: at batch 1 their
// overhead is comparable with the whole recurrence). `w_hh` is (nb H, P) row-major; the packed
// w (P, nb nu) has column q nu + j = W_hh[q H + u0 + j], transposed in the column blocks of
// transposed_blocks (gemm.h) for a thread with more than 256 of them.
// The backward product reads W_hh's own columns packed contiguously (G, nu): read in place,
// P apart, the backward loop at (1, 100, 32, 128) took about 200 µs against 177 µs packed
// (benchmarks/kernel_parts.py), the copy included.
template <typename T>
inline void pack_forward_units(const T* w_hh, int64_t nb, int64_t H, int64_t P, int64_t u0,
                               int64_t nu, T* w) {
  // own column c = q nu + j (gate q of unit u0 + j) lies in block c / kColumns; a gate's
  // columns may span two blocks
  const int64_t G = nb * nu;
  for (int64_t c0 = 0; c0 < G; c0 += kColumns) {
    const int64_t width = std::min(kColumns, G - c0);
    for (int64_t q = 0; q < nb; ++q) {
      const int64_t r0 = std::max(c0, q * nu), r1 = std::min(c0 + width, (q + 1) * nu);
      if (r0 < r1)
        transpose_into(w_hh + (q * H + u0 + r0 - q * nu) * P, r1 - r0, P, P,
                       w + c0 * P + (r0 - c0), width);
    }
  }
}

// The peephole cell's (3, H) weights, own columns only: (3, nu).
template <typename T>
inline void pack_peepholes(const T* peep, int64_t H, int64_t u0, int64_t nu, T* out) {
  if (peep != nullptr)
    for (int64_t q = 0; q < 3; ++q) std::memcpy(out + q * nu, peep + q * H + u0, sizeof(T) * nu);
}

template <typename T>
CellParams<T> unit_params(int64_t kind, int64_t nu, const T* peep) {
  CellParams<T> p;
  p.kind = kind;
  p.H = nu;
  if (kind == kPeephole) p.peep = peep;
  return p;
}

template <typename T>
std::vector<at::Tensor> forward_columns(const at::Tensor& xproj, const at::Tensor& h0,
                                        const at::Tensor& c0, const at::Tensor& w_hh,
                                        const std::optional<at::Tensor>& peep,
                                        const std::optional<at::Tensor>& bias,
                                        const std::optional<at::Tensor>& lengths, bool reverse,
                                        int64_t kind, bool save, at::Tensor& out, int64_t nt) {
  const Shapes n{xproj.size(0), xproj.size(1), c0.size(1), xproj.size(2), h0.size(1)};
  const auto opts = xproj.options();
  const at::Tensor whh = w_hh.contiguous();
  const bool has_peep = kind == kPeephole;
  const int64_t nb = gate_blocks(kind);
  // every thread's share: W_hh (P, nb nu), peepholes (3, nu), bias (nb nu)
  const at::Tensor packed = pooled_empty({n.G * n.P + 3 * n.H + n.G}, opts);
  const int64_t* len = lengths ? lengths->data_ptr<int64_t>() : nullptr;
  at::Tensor gates = pooled_empty({save ? n.T : 1, n.B, n.G}, opts);
  at::Tensor cells = pooled_empty({save ? n.T + 1 : 2, n.B, n.H}, opts);
  cells[0].copy_(c0);
  at::Tensor hbuf = at::empty({2, n.B, n.P}, opts);
  hbuf[0].copy_(h0);
  at::Tensor scratch = at::empty({nt, n.B * n.G + n.G}, opts);  // per thread: z (B, nb nu), x
  const TimeMajor<T> x = time_major<T>(xproj), o = time_major<T>(out);
  T* cp = cells.data_ptr<T>();
  T* gp = gates.data_ptr<T>();
  T* hb = hbuf.data_ptr<T>();

  SpinBarrier barrier;

#pragma omp parallel num_threads(nt)
  {
    // the team may be smaller than asked for (nested regions, OMP_DYNAMIC): share by its size
    const int64_t tid = omp_get_thread_num(), nth = omp_get_num_threads();
    int sense = 0;
    const auto [u0, u1] = unit_block(n.H, tid, nth);
    const int64_t nu = u1 - u0, G = nb * nu;
    T* w = packed.data_ptr<T>() + u0 * nb * n.P;
    T* pp = packed.data_ptr<T>() + n.G * n.P + 3 * u0;
    pack_forward_units(whh.data_ptr<T>(), nb, n.H, n.P, u0, nu, w);
    pack_peepholes(has_peep ? peep->data_ptr<T>() : nullptr, n.H, u0, nu, pp);
    T* bl = bias ? packed.data_ptr<T>() + n.G * n.P + 3 * n.H + nb * u0 : nullptr;
    if (bl != nullptr) gather_gates(bias->data_ptr<T>(), nb, n.H, u0, nu, bl);
    const CellParams<T> p = unit_params<T>(kind, nu, pp);
    T* z = scratch.data_ptr<T>() + tid * (n.B * n.G + n.G);
    T* xl = z + n.B * G;
    const LNSaved<T> no_ln;
    for (int64_t s = 0; s < n.T; ++s) {
      const T* h_cur = hb + (s % 2) * n.B * n.P;
      T* h_nxt = hb + ((s + 1) % 2) * n.B * n.P;
      const T* c_prev = cp + (save ? s : s % 2) * n.B * n.H;
      T* c_next = cp + (save ? s + 1 : (s + 1) % 2) * n.B * n.H;
      if (nu > 0) gemm_blocks(n.B, G, n.P, h_cur, n.P, w, z, G);
      for (int64_t b = 0; b < n.B && nu > 0; ++b) {
        const int64_t lb = len ? len[b] : n.T;
        if (s >= lb) {  // padding: carry the state, output zero
          std::memcpy(c_next + b * n.H + u0, c_prev + b * n.H + u0, sizeof(T) * nu);
          std::memcpy(h_nxt + b * n.P + u0, h_cur + b * n.P + u0, sizeof(T) * nu);
          std::memset(o.row(s, b) + u0, 0, sizeof(T) * nu);
          continue;
        }
        const int64_t t = reverse ? lb - 1 - s : s;
        T* zb = z + b * G;
        gather_gates(x.row(t, b), nb, n.H, u0, nu, xl);
        if (bl != nullptr) {
#pragma omp simd
          for (int64_t j = 0; j < G; ++j) xl[j] += bl[j];
        }
        cell_forward_row(p, zb, xl, c_prev + b * n.H + u0, c_next + b * n.H + u0,
                         h_nxt + b * n.P + u0, no_ln, static_cast<T*>(nullptr));
        if (save) scatter_gates(zb, nb, n.H, u0, nu, gp + (s * n.B + b) * n.G);
        std::memcpy(o.row(t, b) + u0, h_nxt + b * n.P + u0, sizeof(T) * nu);
      }
      barrier.wait(nth, sense);
    }
  }
  const at::Tensor h_n = hbuf[n.T % 2].clone();
  const at::Tensor c_n = cells[save ? n.T : n.T % 2].clone();
  if (!save) return {h_n, c_n};
  return {h_n, c_n, gates, cells, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
}

// The loop over time of backward_direction for the unit split: fills grad_xproj (= da for these
// cells), `dh` with the gradient of h0, `dc` with that of c0, row 0 of `acc` with the peephole
// gradients and row 0 of `db_acc` with the bias gradients (double), global layout.
template <typename T>
void backward_columns(const Shapes& n, const std::optional<TimeMajor<T>>& go,
                      const TimeMajor<T>& dx, const at::Tensor& w_hh,
                      const std::optional<at::Tensor>& peep, const int64_t* len, bool reverse,
                      int64_t kind, bool with_bias, const at::Tensor& gates_t,
                      const at::Tensor& cells_t,
                      at::Tensor& dh, at::Tensor& dc, at::Tensor& acc, at::Tensor& db_acc,
                      int64_t nt) {
  const auto opts = gates_t.options();
  const bool has_peep = kind == kPeephole;
  const int64_t nb = gate_blocks(kind);
  const at::Tensor packed = at::empty({3 * n.H}, opts);  // every thread's own peepholes
  const at::Tensor wcols = pooled_empty({n.G * n.P}, opts);  // every thread's W_hh[:, own]
  at::Tensor dhbuf = at::empty({2, n.B, n.P}, opts);
  dhbuf[0].copy_(dh);
  at::Tensor dabuf = at::empty({2, n.B, n.G}, opts);  // dz of all units, by parity of the step
  at::Tensor scratch = at::empty({nt, 3 * n.G + 3 * n.H}, opts);
  at::Tensor local_acc = at::zeros({nt, 3 * n.H}, opts);  // peepholes (3 nu), local layout
  at::Tensor local_db = at::zeros({with_bias ? nt : 0, n.G}, opts.dtype(at::kDouble));  // (nb nu)
  const T* gates = gates_t.data_ptr<T>();
  const T* cells = cells_t.data_ptr<T>();
  T* dhb = dhbuf.data_ptr<T>();
  T* dab = dabuf.data_ptr<T>();
  T* dcp = dc.data_ptr<T>();

  SpinBarrier barrier;

#pragma omp parallel num_threads(nt)
  {
    const int64_t tid = omp_get_thread_num(), nth = omp_get_num_threads();
    int sense = 0;
    const auto [u0, u1] = unit_block(n.H, tid, nth);
    const int64_t nu = u1 - u0;
    T* w = wcols.data_ptr<T>() + n.G * u0;  // W_hh[:, own units] (nb H, nu), rows nu apart
    for (int64_t r = 0; r < n.G && nu > 0; ++r)
      std::memcpy(w + r * nu, w_hh.data_ptr<T>() + r * n.P + u0, sizeof(T) * nu);
    T* pp = packed.data_ptr<T>() + 3 * u0;
    pack_peepholes(has_peep ? peep->data_ptr<T>() : nullptr, n.H, u0, nu, pp);
    const CellParams<T> p = unit_params<T>(kind, nu, pp);
    T* gl = scratch.data_ptr<T>() + tid * (3 * n.G + 3 * n.H);  // gates (nb nu)
    T* dz = gl + n.G;                                           // (nb nu)
    T* dm = dz + n.G;                                           // (nu)
    T* a = local_acc.data_ptr<T>() + tid * 3 * n.H;
    double* a_bias = with_bias ? local_db.data_ptr<double>() + tid * n.G : nullptr;
    CellGrads<T> g_acc;
    g_acc.peep = a;
    const LNSaved<T> no_ln;
    for (int64_t s = n.T - 1; s >= 0; --s) {
      const int64_t k = n.T - 1 - s;
      const T* dh_cur = dhb + (k % 2) * n.B * n.P;
      T* dh_nxt = dhb + ((k + 1) % 2) * n.B * n.P;
      T* da = dab + (k % 2) * n.B * n.G;
      for (int64_t b = 0; b < n.B && nu > 0; ++b) {
        const int64_t lb = len ? len[b] : n.T;
        if (s >= lb) {  // padding: zero gradients, dh and dc pass through
          for (int64_t q = 0; q < nb; ++q) {
            std::memset(dx.row(s, b) + q * n.H + u0, 0, sizeof(T) * nu);
            std::memset(da + b * n.G + q * n.H + u0, 0, sizeof(T) * nu);
          }
          continue;
        }
        const int64_t t = reverse ? lb - 1 - s : s;
        const T* g = go ? go->row(t, b) + u0 : nullptr;
#pragma omp simd
        for (int64_t j = 0; j < nu; ++j) dm[j] = dh_cur[b * n.P + u0 + j] + (g ? g[j] : T(0));
        gather_gates(gates + (s * n.B + b) * n.G, nb, n.H, u0, nu, gl);
        cell_backward_row(p, gl, cells + (s * n.B + b) * n.H + u0,
                          cells + ((s + 1) * n.B + b) * n.H + u0, dm, dcp + b * n.H + u0, dz, dz,
                          no_ln, g_acc, static_cast<T*>(nullptr), static_cast<T*>(nullptr));
        scatter_gates(dz, nb, n.H, u0, nu, dx.row(t, b));
        scatter_gates(dz, nb, n.H, u0, nu, da + b * n.G);
        if (with_bias) {
#pragma omp simd
          for (int64_t j = 0; j < nb * nu; ++j) a_bias[j] += dz[j];
        }
      }
      barrier.wait(nth, sense);
      if (nu == 0) continue;
      gemm(n.B, nu, n.G, da, n.G, w, nu, dh_nxt + u0, n.P);
      for (int64_t b = 0; b < n.B; ++b) {
        const int64_t lb = len ? len[b] : n.T;
        if (s >= lb) std::memcpy(dh_nxt + b * n.P + u0, dh_cur + b * n.P + u0, sizeof(T) * nu);
      }
    }
    // into row 0 of acc and db_acc; the threads' blocks of units are disjoint
    if (has_peep) {  // [p_i | p_f | p_o], each H wide
      T* out = acc.data_ptr<T>();
      for (int64_t q = 0; q < 3; ++q)
        for (int64_t j = 0; j < nu; ++j) out[q * n.H + u0 + j] += a[q * nu + j];
    }
    if (with_bias) {  // [i | f | g | o] ([f | g | o] for CIFG), each H wide
      double* out = db_acc.data_ptr<double>();
      for (int64_t q = 0; q < nb; ++q)
        for (int64_t j = 0; j < nu; ++j) out[q * n.H + u0 + j] += a_bias[q * nu + j];
    }
  }
  dh.copy_(dhbuf[n.T % 2]);
}

}  // namespace lstmkit
