// Small batches: the hidden units, not the rows, are shared out among the threads.
//
// With fewer rows than the threads can share (batch 1 above all), the row split of
// recurrence.h leaves one thread to stream the whole of W_hh from cache every step. Here each
// thread owns a block of hidden units u0..u1 and the rows of W_hh of their gates (copied once
// per call: transposed for the forward product, as they are for the backward one), so each
// thread reads only its share of W_hh per step:
//
//   forward:   z[:, own] = h'[:, own] @ W_hh[own, own]^T (B, 4 nu; 3 nu for CIFG): h' of its own
//                                                     units, which this thread wrote itself
//              barrier (await): the other threads' units of h'
//              z[:, own] += h'[:, rest] @ W_hh[own, rest]^T
//              gates, c[:, own], h[:, own] = cell(...)  unit-local for the plain and peephole cells
//              barrier (arrive): this thread's units of h are written
//   backward:  barrier (await): every thread's partial of the last step
//              dh'[:, own] = Σ_threads partial[:, own] (+ dout[:, own])
//              dz[:, own], dc[:, own] = cell_backward(dh'[:, own], ...)
//              partial[:, rest] = dz[:, own] @ W_hh[own, rest]   this thread's share of
//              barrier (arrive): the others' columns are written  dh' = dz W_hh, (B, P)
//              partial[:, own] = dz[:, own] @ W_hh[own, own]     (only this thread reads them)
//
// The running h (forward) and the partials (backward) are double-buffered, so one barrier per
// step suffices: a thread overwrites a buffer only after every thread has passed the barrier
// that follows its last read of it. The layer-norm cell (a norm over all 4H gates) and projections
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
  const int64_t threads = usable_threads();
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
// transposed_blocks (gemm.h) for a thread with more than 256 of them. (The backward pass
// copies the same rows untransposed: backward_columns.)
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
                                        int64_t kind, bool save, at::Tensor& out,
                                        const at::Tensor& hist, int64_t nt,
                                        const at::Tensor& h_out, const at::Tensor& c_out) {
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
  load_state(c0, cells.data_ptr<T>(), n.B * n.H);
  at::Tensor hbuf = at::empty({2, n.B, n.P}, opts);
  load_state(h0, hbuf.data_ptr<T>(), n.B * n.P);
  at::Tensor scratch = at::empty({nt, n.B * n.G}, opts);  // per thread: z (B, nb nu)
  const TimeMajor<T> x = time_major<T>(xproj), o = time_major<T>(out);
  const History<T> hs = history<T>(hist, reverse);
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
    CellParams<T> p = unit_params<T>(kind, nu, pp);
    p.bias = bl;         // added as the cell reads the projection
    p.x_stride = n.H;    // which it reads in place, its units of each gate block,
    if (save) p.gates_stride = n.H;  // and the gates it saves, written in place likewise
    T* z = scratch.data_ptr<T>() + tid * n.B * n.G;
    const LNSaved<T> no_ln;
    for (int64_t s = 0; s < n.T; ++s) {
      const T* h_cur = hb + (s % 2) * n.B * n.P;
      T* h_nxt = hb + ((s + 1) % 2) * n.B * n.P;
      const T* c_prev = cp + (save ? s : s % 2) * n.B * n.H;
      T* c_next = cp + (save ? s + 1 : (s + 1) % 2) * n.B * n.H;
      // the product over its own units of h' while the others' are on their way (P = H here)
      if (nu > 0) gemm_blocks_depth(n.B, G, n.P, u0, u1, h_cur, n.P, w, z, G, false);
      if (s > 0) barrier.await_all(sense);
      if (nu > 0 && u0 > 0) gemm_blocks_depth(n.B, G, n.P, 0, u0, h_cur, n.P, w, z, G, true);
      if (nu > 0 && u1 < n.P) gemm_blocks_depth(n.B, G, n.P, u1, n.P, h_cur, n.P, w, z, G, true);
      for (int64_t b = 0; b < n.B && nu > 0; ++b) {
        const int64_t lb = len ? len[b] : n.T;
        if (s >= lb) {  // padding: carry the state, output zero
          std::memcpy(c_next + b * n.H + u0, c_prev + b * n.H + u0, sizeof(T) * nu);
          std::memcpy(h_nxt + b * n.P + u0, h_cur + b * n.P + u0, sizeof(T) * nu);
          std::memset(o.row(s, b) + u0, 0, sizeof(T) * nu);
          hs.pad(s, b, nu, u0);
          continue;
        }
        const int64_t t = reverse ? lb - 1 - s : s;
        T* zb = z + b * G;
        T* gates_row = save ? gp + (t * n.B + b) * n.G + u0 : zb;  // time order
        cell_forward_row(p, zb, x.row(t, b) + u0, c_prev + b * n.H + u0, c_next + b * n.H + u0,
                         h_nxt + b * n.P + u0, no_ln, static_cast<T*>(nullptr), gates_row);
        std::memcpy(o.row(t, b) + u0, h_nxt + b * n.P + u0, sizeof(T) * nu);
        hs.put(t, b, h_nxt + b * n.P + u0, nu, u0);
      }
      barrier.arrive(nth, sense);
    }
  }
  const at::Tensor h_n = final_state(hb + (n.T % 2) * n.B * n.P, h_out, {n.B, n.P}, opts);
  const at::Tensor c_n = final_state(cp + (save ? n.T : n.T % 2) * n.B * n.H, c_out, {n.B, n.H}, opts);
  if (!save) return {h_n, c_n};
  return {h_n, c_n, gates, cells, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
}

// The loop over time of backward_direction for the unit split: fills grad_xproj (= da for these
// cells), `dh` with the gradient of h0, `dc` with that of c0, row 0 of `acc` with the peephole
// gradients and row 0 of `db_acc` with the bias gradients (double), global layout.
//
// dh' = dz W_hh is summed over the threads' own gate rows: each thread multiplies its own dz by
// its own rows of W_hh (the rows the forward product reads) into a partial dh' of all P
// columns, and the next step's dh'[:, own] is the sum of every thread's partial there. A thread
// reads P / nt values of each other thread per row and step, where a split of dh' by columns
// would need all of dz.
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
  const int64_t BP = n.B * n.P;
  TORCH_CHECK(dh.is_contiguous() && dc.is_contiguous(),
              "backward_columns: dh and dc must be contiguous, got strides ", dh.strides(), " and ",
              dc.strides());
  // All the scratch in one buffer, carved up here (at batch 1 an ATen call costs about as much
  // as a small copy; there were seven):
  //   partial  (2, nt, B, P)  every thread's partial dh', by parity of the step; the first step
  //                           reads parity 0, which holds dh (the gradient of h_n) as thread
  //                           0's partial, the rest zero
  //   sums     (nt, 3H)       peephole gradients, local layout (3 nu), zero
  //   scratch  (nt, per)      per thread: dm (nu), the carried dh' of padded rows (B, nu),
  //                           dz (B, nb nu)
  //   peeps    (3H)           every thread's own peepholes
  //   rows     (G P)          every thread's own rows of W_hh, in two blocks (below)
  const int64_t per_thread = n.H + n.B * n.H + n.B * n.G;
  const int64_t zeroed = 2 * nt * BP + nt * 3 * n.H;
  at::Tensor work = pooled_empty({zeroed + nt * per_thread + 3 * n.H + n.G * n.P}, opts);
  T* part = work.data_ptr<T>();
  std::fill(part, part + zeroed, T(0));
  std::memcpy(part, dh.data_ptr<T>(), sizeof(T) * BP);
  T* sums = part + 2 * nt * BP;
  T* scratch = sums + nt * 3 * n.H;
  T* peeps = scratch + nt * per_thread;
  T* rows = peeps + 3 * n.H;
  at::Tensor local_db = at::zeros({with_bias ? nt : 0, n.G}, opts.dtype(at::kDouble));  // (nb nu)
  const TimeMajor<T> gv = time_major<T>(gates_t);  // in time order, as dz (Saved, recurrence.h)
  const T* cells = cells_t.data_ptr<T>();
  const T* whh = w_hh.data_ptr<T>();
  T* dcp = dc.data_ptr<T>();

  SpinBarrier barrier;

#pragma omp parallel num_threads(nt)
  {
    const int64_t tid = omp_get_thread_num(), nth = omp_get_num_threads();
    int sense = 0;
    const auto [u0, u1] = unit_block(n.H, tid, nth);
    const int64_t nu = u1 - u0;
    T* dm = scratch + tid * per_thread;  // (nu)
    T* carry = dm + n.H;                  // (B, nu)
    T* dz = carry + n.B * n.H;            // (B, nb nu)
    T* a = sums + tid * 3 * n.H;
    // own rows of W_hh, copied (read in place, one run of rows per gate, far apart, the product
    // at hidden 128 took 1.0 µs a step against 0.7 µs from a copy) as two blocks: the other
    // threads' columns (K, P - nu), [0, u0) then [u1, P), and its own (K, nu), K = nb nu, so
    // that each of the two products below streams one block
    const int64_t K = nb * nu, R = n.P - nu;
    T* w_rest = rows + nb * u0 * n.P;
    T* w_own = w_rest + K * R;
    for (int64_t q = 0; q < nb; ++q)
      for (int64_t r = 0; r < nu; ++r) {
        const T* src = whh + (q * n.H + u0 + r) * n.P;
        const int64_t i = q * nu + r;
        std::memcpy(w_rest + i * R, src, sizeof(T) * u0);
        std::memcpy(w_rest + i * R + u0, src + u1, sizeof(T) * (n.P - u1));
        std::memcpy(w_own + i * nu, src + u0, sizeof(T) * nu);
      }
    T* own_peep = peeps + 3 * u0;
    pack_peepholes(has_peep ? peep->data_ptr<T>() : nullptr, n.H, u0, nu, own_peep);
    CellParams<T> p = unit_params<T>(kind, nu, own_peep);
    p.gates_stride = n.H;  // the cell reads its units of the saved gates in place
    double* a_bias = with_bias ? local_db.data_ptr<double>() + tid * n.G : nullptr;
    CellGrads<T> g_acc;
    g_acc.peep = a;
    const LNSaved<T> no_ln;
    for (int64_t s = n.T - 1; s >= 0; --s) {
      if (s < n.T - 1) barrier.await_all(sense);
      if (nu == 0) {  // (not while nt <= H) a thread without units still meets every barrier
        barrier.arrive(nth, sense);
        continue;
      }
      const int64_t k = n.T - 1 - s;
      const T* in = part + (k % 2) * nt * BP;        // every thread's partial of the last step
      T* out = part + ((k + 1) % 2) * nt * BP + tid * BP;  // this thread's partial of this one
      for (int64_t b = 0; b < n.B; ++b) {
        // dh'[b, own] from every thread's partial
        for (int64_t j = 0; j < nu; ++j) dm[j] = T(0);
        for (int64_t r = 0; r < nth; ++r) {
          const T* src = in + r * BP + b * n.P + u0;
#pragma omp simd
          for (int64_t j = 0; j < nu; ++j) dm[j] += src[j];
        }
        T* dzb = dz + b * nb * nu;
        const int64_t lb = len ? len[b] : n.T;
        if (s >= lb) {  // padding: zero gradients, dh' and dc pass through
          std::memcpy(carry + b * nu, dm, sizeof(T) * nu);
          std::memset(dzb, 0, sizeof(T) * nb * nu);
          for (int64_t q = 0; q < nb; ++q)
            std::memset(dx.row(s, b) + q * n.H + u0, 0, sizeof(T) * nu);
          continue;
        }
        const int64_t t = reverse ? lb - 1 - s : s;
        // (the output's gradient added to dh' as the cell reads them)
        cell_backward_row(p, gv.row(t, b) + u0, cells + (s * n.B + b) * n.H + u0,
                          cells + ((s + 1) * n.B + b) * n.H + u0, dm, dcp + b * n.H + u0, dzb,
                          dzb, no_ln, g_acc, static_cast<T*>(nullptr), static_cast<T*>(nullptr),
                          go ? go->row(t, b) + u0 : nullptr);
        scatter_gates(dzb, nb, n.H, u0, nu, dx.row(t, b));
        if (with_bias) {
#pragma omp simd
          for (int64_t j = 0; j < nb * nu; ++j) a_bias[j] += dzb[j];
        }
      }
      // this thread's partial dh' = dz[:, own gates] @ W_hh[own rows]  (B, P): the columns
      // the other threads read, then its own while theirs are on their way
      if (u0 > 0) gemm(n.B, u0, K, dz, K, w_rest, R, out, n.P);
      if (u1 < n.P) gemm(n.B, n.P - u1, K, dz, K, w_rest + u0, R, out + u1, n.P);
      barrier.arrive(nth, sense);
      gemm(n.B, nu, K, dz, K, w_own, nu, out + u0, n.P);
      for (int64_t b = 0; b < n.B; ++b) {  // a padded row carries its dh'[own] unchanged
        const int64_t lb = len ? len[b] : n.T;
        if (s >= lb)
          for (int64_t j = 0; j < nu; ++j) out[b * n.P + u0 + j] += carry[b * nu + j];
      }
    }
    // into row 0 of acc and db_acc; the threads' blocks of units are disjoint
    if (has_peep) {  // [p_i | p_f | p_o], each H wide
      T* dst = acc.data_ptr<T>();
      for (int64_t q = 0; q < 3; ++q)
        for (int64_t j = 0; j < nu; ++j) dst[q * n.H + u0 + j] += a[q * nu + j];
    }
    if (with_bias) {  // [i | f | g | o] ([f | g | o] for CIFG), each H wide
      double* dst = db_acc.data_ptr<double>();
      for (int64_t q = 0; q < nb; ++q)
        for (int64_t j = 0; j < nu; ++j) dst[q * n.H + u0 + j] += a_bias[q * nu + j];
    }
  }
  // the gradient of h0: the sum of every thread's last partial
  T* dst = dh.data_ptr<T>();
  const T* last = part + (n.T % 2) * nt * BP;
  for (int64_t j = 0; j < BP; ++j) {
    T sum = T(0);
    for (int64_t r = 0; r < nt; ++r) sum += last[r * BP + j];
    dst[j] = sum;
  }
}

}  // namespace lstmkit
