// Backward through time for one direction of one layer (see recurrence.h for the layout).
//
// The loop writes dz, the gradient of the input projection, in time order. dW_hh (with dW_ih,
// in GEMMs over all steps: weight_gradients) is the layer's to compute (layer.h), from dz, or
// from da, the gradient before the layer norm, which this function then returns. It computes
//   dW_hr = Σ_t dh_t^T m_t         (projection only), one GEMM after the loop,
// and db = Σ_t dz_t, the gradient of the biases the step adds (with_bias), summed in the loop
// in double (per thread, then across threads): tens of thousands of float32 rows otherwise
// round off more than a pairwise sum would.
#pragma once

#include "columns.h"

namespace lstmkit {

template <typename T>
std::vector<at::Tensor> backward_direction(
    const std::optional<at::Tensor>& grad_out, const std::optional<at::Tensor>& grad_hn,
    const std::optional<at::Tensor>& grad_cn, at::Tensor& grad_xproj, const at::Tensor& h0,
    const at::Tensor& w_hh, const std::optional<at::Tensor>& w_hr,
    const std::optional<at::Tensor>& peep, const std::vector<at::Tensor>& ln,
    const std::optional<at::Tensor>& lengths, bool reverse, int64_t kind, bool with_bias,
    const std::vector<at::Tensor>& saved) {
  const at::Tensor& gates_t = saved[0];
  const at::Tensor& cells_t = saved[1];
  const Shapes n{gates_t.size(0), gates_t.size(1), cells_t.size(2), gates_t.size(2), h0.size(1)};
  const bool proj = w_hr.has_value();
  const bool ln_cell = kind == kLayerNorm;
  const auto opts = gates_t.options();
  const int64_t* len = lengths ? lengths->data_ptr<int64_t>() : nullptr;
  const at::Tensor whh = w_hh.contiguous();                   // (4H, P)
  const at::Tensor whr = proj ? w_hr->contiguous() : at::Tensor();  // (P, H)
  at::Tensor dh = grad_hn ? grad_hn->contiguous().clone() : at::zeros({n.B, n.P}, opts);
  at::Tensor dc = grad_cn ? grad_cn->contiguous().clone() : at::zeros({n.B, n.H}, opts);
  at::Tensor da_hist = ln_cell ? pooled_empty({n.T, n.B, n.G}, opts).zero_() : at::Tensor();
  at::Tensor dh_hist = proj ? pooled_empty({n.T, n.B, n.P}, opts).zero_() : at::Tensor();
  at::Tensor m_hist = proj ? pooled_empty({n.T, n.B, n.H}, opts).zero_() : at::Tensor();
  at::Tensor g_out;  // rows must be contiguous: copy a gradient that is not (an expanded one,
  if (grad_out) {   // as out.sum() gives) into a pooled buffer, which has no first-touch cost
    g_out = *grad_out;
    if (g_out.stride(2) != 1) g_out = pooled_empty(g_out.sizes(), opts).copy_(*grad_out);
  }
  const int64_t nt = thread_count(n.B, n.B * n.G * n.P);
  // per-thread accumulators of the per-unit parameters, [peep 3H | ln_h_w 4H | ln_h_b 4H |
  // ln_c_w H | ln_c_b H], and of the step's biases (4H, in double)
  const int64_t acc_width = 13 * n.H;
  at::Tensor acc = at::zeros({nt, acc_width}, opts);
  at::Tensor db_acc = at::zeros({with_bias ? nt : 0, n.G}, opts.dtype(at::kDouble));
  const CellParams<T> p = cell_params<T>(kind, n.H, peep, ln);
  const TimeMajor<T> dx = time_major<T>(grad_xproj);
  const std::optional<TimeMajor<T>> go =
      grad_out ? std::optional<TimeMajor<T>>(time_major<T>(g_out)) : std::nullopt;
  const TimeMajor<T> gv = time_major<T>(gates_t);  // in time order, as dz (Saved, recurrence.h)
  const T* cells = cells_t.data_ptr<T>();

  const int64_t ncol = column_threads(n, kind, proj);
  if (ncol > 1) {
    backward_columns<T>(n, go, dx, whh, peep, len, reverse, kind, with_bias, gates_t, cells_t, dh,
                        dc, acc, db_acc, ncol);
  } else {
  // Without a projection, the layer-norm cell or lengths (every row's step s at the same time
  // t), the cell reads the output's gradient as it reads dh', and dh' = dz W_hh multiplies the
  // rows of dz where the cell wrote them: no pass over each row summing the two first, no copy
  // of dz for the product.
  const bool direct = !proj && !ln_cell && len == nullptr;
  at::Tensor dh_next = at::empty({n.B, n.P}, opts);
  at::Tensor dh_tot = at::empty({n.B, n.P}, opts);
  at::Tensor dm = proj ? at::empty({n.B, n.H}, opts) : dh_tot;
  at::Tensor da = at::empty({n.B, n.G}, opts);
  at::Tensor scratch = at::empty({nt, 4 * n.H}, opts);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int64_t tid = omp_get_thread_num(), nth = omp_get_num_threads();
    const int64_t r0 = n.B * tid / nth, r1 = n.B * (tid + 1) / nth, rows = r1 - r0;
    T* scr = scratch.data_ptr<T>() + tid * 4 * n.H;
    T* a = acc.data_ptr<T>() + tid * acc_width;
    CellGrads<T> g_acc{a, a + 3 * n.H, a + 7 * n.H, a + 11 * n.H, a + 12 * n.H};
    T* dh_cur = dh.data_ptr<T>();
    T* dh_nxt = dh_next.data_ptr<T>();
    T* dtot = dh_tot.data_ptr<T>();
    T* dmp = dm.data_ptr<T>();
    T* dap = da.data_ptr<T>();
    T* dcp = dc.data_ptr<T>();
    for (int64_t s = n.T - 1; s >= 0; --s) {
      for (int64_t b = r0; b < r1 && !direct; ++b) {
        const int64_t lb = len ? len[b] : n.T;
        if (s >= lb) {  // padding: zero gradients, dh and dc pass through
          std::memset(dx.row(s, b), 0, sizeof(T) * n.G);
          continue;
        }
        const int64_t t = reverse ? lb - 1 - s : s;
        T* d = dtot + b * n.P;
        const T* g = go ? go->row(t, b) : nullptr;
#pragma omp simd
        for (int64_t j = 0; j < n.P; ++j) d[j] = dh_cur[b * n.P + j] + (g ? g[j] : T(0));
        if (proj) std::memcpy(dh_hist.data_ptr<T>() + (t * n.B + b) * n.P, d, sizeof(T) * n.P);
      }
      if (proj) gemm(rows, n.H, n.P, dtot + r0 * n.P, n.P, whr.data_ptr<T>(), n.H, dmp + r0 * n.H, n.H);
      for (int64_t b = r0; b < r1; ++b) {
        const int64_t lb = len ? len[b] : n.T;
        if (s >= lb) continue;
        const int64_t t = reverse ? lb - 1 - s : s;
        LNSaved<T> lns;
        if (ln_cell) {
          lns.xhat_h = saved[2].data_ptr<T>() + (s * n.B + b) * n.G;
          lns.rstd_h = saved[3].data_ptr<T>() + s * n.B + b;
          lns.xhat_c = saved[4].data_ptr<T>() + (s * n.B + b) * n.H;
          lns.rstd_c = saved[5].data_ptr<T>() + s * n.B + b;
        }
        T* m_out = proj ? m_hist.data_ptr<T>() + (t * n.B + b) * n.H : nullptr;
        if (direct)  // dm = dh' + the output's gradient, summed in the cell; da is dz
          cell_backward_row(p, gv.row(t, b), cells + (s * n.B + b) * n.H,
                            cells + ((s + 1) * n.B + b) * n.H, dh_cur + b * n.P, dcp + b * n.H,
                            dx.row(t, b), dx.row(t, b), lns, g_acc, m_out, scr,
                            go ? go->row(t, b) : nullptr);
        else
          cell_backward_row(p, gv.row(t, b), cells + (s * n.B + b) * n.H,
                            cells + ((s + 1) * n.B + b) * n.H, dmp + b * n.H, dcp + b * n.H,
                            dx.row(t, b), dap + b * n.G, lns, g_acc, m_out, scr);
        if (with_bias) {  // the step's biases: dz, as written to dx (plain and peephole cells)
          double* db = db_acc.data_ptr<double>() + tid * n.G;
          const T* dz = dx.row(t, b);
#pragma omp simd
          for (int64_t j = 0; j < n.G; ++j) db[j] += dz[j];
        }
        if (ln_cell)
          std::memcpy(da_hist.data_ptr<T>() + (t * n.B + b) * n.G, dap + b * n.G, sizeof(T) * n.G);
      }
      if (direct)  // dh' = dz W_hh over this step's rows of dz, where the cell wrote them
        gemm(rows, n.P, n.G, dx.row(time_of_step(s, n.T, reverse), r0), dx.sb,
             whh.data_ptr<T>(), n.P, dh_nxt + r0 * n.P, n.P);
      else
        gemm(rows, n.P, n.G, dap + r0 * n.G, n.G, whh.data_ptr<T>(), n.P, dh_nxt + r0 * n.P, n.P);
      for (int64_t b = r0; b < r1; ++b) {
        const int64_t lb = len ? len[b] : n.T;
        if (s >= lb) std::memcpy(dh_nxt + b * n.P, dh_cur + b * n.P, sizeof(T) * n.P);
      }
      std::swap(dh_cur, dh_nxt);
    }
    if (dh_cur != dh.data_ptr<T>())  // an odd number of swaps: bring this block home
      std::memcpy(dh.data_ptr<T>() + r0 * n.P, dh_cur + r0 * n.P, sizeof(T) * rows * n.P);
  }
  }

  // per thread, one row each; a single thread's row is the sum (at batch 1 no reduction runs)
  const auto total = [](const at::Tensor& rows) {
    return rows.size(0) == 1 ? rows[0] : rows.sum(0);
  };
  const at::Tensor grads = kind == kPeephole || ln_cell ? total(acc) : at::Tensor();
  std::vector<at::Tensor> result{dh, dc, ln_cell ? da_hist : at::Tensor()};
  result.push_back(proj ? mm_fast(dh_hist.view({-1, n.P}).t(), m_hist.view({-1, n.H}))
                        : at::Tensor());
  result.push_back(kind == kPeephole ? grads.slice(0, 0, 3 * n.H).view({3, n.H}) : at::Tensor());
  result.push_back(with_bias ? total(db_acc).to(gates_t.scalar_type()) : at::Tensor());
  if (ln_cell) {
    result.push_back(grads.slice(0, 3 * n.H, 7 * n.H));
    result.push_back(grads.slice(0, 7 * n.H, 11 * n.H));
    result.push_back(grads.slice(0, 11 * n.H, 12 * n.H));
    result.push_back(grads.slice(0, 12 * n.H, 13 * n.H));
  }
  return result;
}

}  // namespace lstmkit
