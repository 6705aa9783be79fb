// The gate arithmetic of one step for one sequence (one row), forward and backward, per cell.
//
// Gate blocks follow torch's layout along the last dim: z = [i | f | g | o], each H wide.
//   plain:     c = σ(f) c' + σ(i) tanh(g),             m = σ(o) tanh(c)
//   peephole:  i, f also see c' (p_i, p_f), o sees the new c (p_o)
//   layernorm: z = xproj + LN_h(W_hh h') ;  m = σ(o) tanh(LN_c(c))
//   cifg:      three blocks z = [f | g | o]; the input gate is 1 - σ(f):
//              c = σ(f) c' + (1 - σ(f)) tanh(g),       m = σ(o) tanh(c)
// m is the hidden output before the optional projection h = W_hr m.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace lstmkit {

enum CellKind : int64_t { kPlain = 0, kPeephole = 1, kLayerNorm = 2, kCIFG = 3 };

// Gate blocks of H rows each in W_ih, W_hh and the biases: 3 for CIFG, else 4.
inline int64_t gate_blocks(int64_t kind) { return kind == kCIFG ? 3 : 4; }

// exp for float: Cephes' range reduction and polynomial (about 1 ulp), branch-free so that
// loops over it vectorise; double uses the library's exp.
__attribute__((always_inline)) inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);  // in this order a NaN passes (torch's does too)
  // n = round(x / ln 2): adding 1.5 * 2^23 leaves it in the low bits of t (|x / ln 2| < 2^22).
  // Two float ops where truncating x / ln 2 ± 1/2 took a copysign and two conversions: the
  // plain cell's forward of 32 rows of 128 units, 6.7 -> 5.6 µs; the same worst error over all
  // floats (exp 1 ulp, tanh 3, checked exhaustively).
  const float t = x * 1.44269504088896341f + 12582912.0f;
  const int32_t ni = __builtin_bit_cast(int32_t, t) - 0x4B400000;
  const float n = t - 12582912.0f;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * __builtin_bit_cast(float, (ni + 127) << 23);  // 2^n
}
inline double exp_approx(double x) { return std::exp(x); }

template <typename T>
__attribute__((always_inline)) inline T sigmoid(T x) {
  return T(1) / (T(1) + exp_approx(-x));
}
// tanh for float, within 3 ulp: Cephes' odd polynomial below |x| = 0.625, 1 - 2 / (1 + e^2x)
// above. The exp form alone loses small values to cancellation: about 1e-7 absolute, so 1%
// relative at |x| = 1e-4 and nearly all of it at 1e-6, where torch's tanh keeps every digit.
// Both are computed and one kept, so that loops over it still vectorise.
__attribute__((always_inline)) inline float tanh_approx(float x) {
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  const float large = 1.0f - 2.0f / (1.0f + exp_approx(2.0f * x));
  // a select by bit masks: GCC leaves a conditional over two computed values as a branch,
  // which keeps the loops around it from vectorising (they ran 2.4x slower)
  const uint32_t pick = 0u - static_cast<uint32_t>(std::fabs(x) < 0.625f);  // all ones: small
  return __builtin_bit_cast(float, (__builtin_bit_cast(uint32_t, small) & pick) |
                                       (__builtin_bit_cast(uint32_t, large) & ~pick));
}
inline double tanh_approx(double x) { return std::tanh(x); }

// Layer norm of one row in place: x <- (x - mean) * rstd; returns rstd.
template <typename T>
inline T normalize_row(T* x, int64_t n, T eps) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += x[j];
  const T mean = sum / T(n);
  T sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t j = 0; j < n; ++j) sq += (x[j] - mean) * (x[j] - mean);
  const T rstd = T(1) / std::sqrt(sq / T(n) + eps);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) x[j] = (x[j] - mean) * rstd;
  return rstd;
}

// dx of y = LN(x) (no affine) given dy and x̂ = normalised x: rstd (dy - mean(dy) - x̂ mean(dy x̂)).
template <typename T>
inline void normalize_row_backward(const T* dy, const T* xhat, T rstd, int64_t n, T* dx) {
  T s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t j = 0; j < n; ++j) {
    s1 += dy[j];
    s2 += dy[j] * xhat[j];
  }
  s1 /= T(n);
  s2 /= T(n);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) dx[j] = rstd * (dy[j] - s1 - xhat[j] * s2);
}

// Parameters of a cell beyond the weight matrices (null where the cell has none).
template <typename T>
struct CellParams {
  int64_t kind = kPlain;
  int64_t H = 0;
  const T* peep = nullptr;     // (3, H) p_i, p_f, p_o
  const T* ln_h_w = nullptr;   // (4H,) gain of LN over the recurrent pre-activations
  const T* ln_h_b = nullptr;   // (4H,)
  const T* ln_c_w = nullptr;   // (H,) gain of LN over c_t
  const T* ln_c_b = nullptr;   // (H,)
  const T* bias = nullptr;     // (G,) b_ih + b_hh, added to x by the plain, peephole and CIFG
                               // cells (the layer-norm cell's x holds its biases)
  // Strides between the gate blocks of x and of the gates (which the forward cell writes and
  // the backward one reads), where they lie in a wider row (0: H, blocks side by side): the
  // unit split's threads read and write their units of the global rows in place (plain,
  // peephole and CIFG cells).
  int64_t x_stride = 0;
  int64_t gates_stride = 0;
  T eps = T(1e-5);
};

// Per-row saved statistics of the layer-norm cell (null for other cells or without grad).
template <typename T>
struct LNSaved {
  T* xhat_h = nullptr;  // (4H,) normalised recurrent pre-activation
  T* rstd_h = nullptr;  // scalar
  T* xhat_c = nullptr;  // (H,) normalised c_t
  T* rstd_c = nullptr;  // scalar
};

// The layer-norm cell's forward of one row (cell_forward_row): the activated gates over z.
template <typename T>
inline void cell_forward_row_ln(const CellParams<T>& p, T* z, const T* x, const T* c_prev, T* c,
                                T* m, const LNSaved<T>& ln, T* scratch) {
  const int64_t H = p.H;
  T* zi = z;
  T* zf = z + H;
  T* zg = z + 2 * H;
  T* zo = z + 3 * H;
  const T rstd = normalize_row(z, 4 * H, p.eps);
  if (ln.xhat_h != nullptr) {
    std::memcpy(ln.xhat_h, z, sizeof(T) * 4 * H);
    *ln.rstd_h = rstd;
  }
#pragma omp simd
  for (int64_t j = 0; j < 4 * H; ++j) z[j] = z[j] * p.ln_h_w[j] + p.ln_h_b[j] + x[j];
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const T i = sigmoid(zi[j]), f = sigmoid(zf[j]), g = tanh_approx(zg[j]);
    zi[j] = i;
    zf[j] = f;
    zg[j] = g;
    zo[j] = sigmoid(zo[j]);
    c[j] = f * c_prev[j] + i * g;
    scratch[j] = c[j];
  }
  const T rstd_c = normalize_row(scratch, H, p.eps);
  if (ln.xhat_c != nullptr) {
    std::memcpy(ln.xhat_c, scratch, sizeof(T) * H);
    *ln.rstd_c = rstd_c;
  }
#pragma omp simd
  for (int64_t j = 0; j < H; ++j)
    m[j] = zo[j] * tanh_approx(scratch[j] * p.ln_c_w[j] + p.ln_c_b[j]);
}

// The plain, peephole and CIFG cells' forward of one row (cell_forward_row), with x + b as the
// input projection where kBias. The biases are added here, as each element is read, rather than
// in a pass of their own over x first: the same sums, z + (x + b), so the same results to the
// bit.
template <typename T, bool kBias>
inline void cell_forward_gates(const CellParams<T>& p, const T* z, const T* x, const T* c_prev,
                               T* c, T* m, T* gates) {
  const int64_t H = p.H;
  const int64_t xs = p.x_stride ? p.x_stride : H, gs = p.gates_stride ? p.gates_stride : H;
  const T* b = p.bias;
  // gate block q's unit j of the input projection (plus its bias)
  const auto in = [x, b, xs, H](int64_t q, int64_t j) {
    return kBias ? x[q * xs + j] + b[q * H + j] : x[q * xs + j];
  };
  const T* zi = z;
  const T* zf = z + H;
  const T* zg = z + 2 * H;
  const T* zo = z + 3 * H;
  T* oi = gates;
  T* of = gates + gs;
  T* og = gates + 2 * gs;
  T* oo = gates + 3 * gs;
  // Each cell in two loops: the gates that c needs and c, then the output gate and m (which
  // reads c back). One loop with all five activations kept more values live than the registers
  // hold: the plain cell's 32 rows of 128 units took 5.4-5.7 µs in one loop, 4.2-4.45 µs in
  // two, with the same results to the bit (the same operations on each element); a forward pass
  // 0.982-0.989 of its time at (64, 100, 32, 128) and batch 1, a training call 0.984-0.994
  // (benchmarks/ab_kernel.py).
  if (p.kind == kPeephole) {
    const T* pi = p.peep;
    const T* pf = p.peep + H;
    const T* po = p.peep + 2 * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T cp = c_prev[j];
      const T i = sigmoid(zi[j] + in(0, j) + pi[j] * cp);
      const T f = sigmoid(zf[j] + in(1, j) + pf[j] * cp);
      const T g = tanh_approx(zg[j] + in(2, j));
      oi[j] = i;
      of[j] = f;
      og[j] = g;
      c[j] = f * cp + i * g;
    }
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T cn = c[j];
      const T o = sigmoid(zo[j] + in(3, j) + po[j] * cn);
      oo[j] = o;
      m[j] = o * tanh_approx(cn);
    }
  } else if (p.kind == kCIFG) {  // blocks [f g o]
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T f = sigmoid(z[j] + in(0, j));
      const T g = tanh_approx(z[H + j] + in(1, j));
      gates[j] = f;
      gates[gs + j] = g;
      c[j] = f * c_prev[j] + (T(1) - f) * g;
    }
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T o = sigmoid(z[2 * H + j] + in(2, j));
      gates[2 * gs + j] = o;
      m[j] = o * tanh_approx(c[j]);
    }
  } else {
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T i = sigmoid(zi[j] + in(0, j));
      const T f = sigmoid(zf[j] + in(1, j));
      const T g = tanh_approx(zg[j] + in(2, j));
      oi[j] = i;
      of[j] = f;
      og[j] = g;
      c[j] = f * c_prev[j] + i * g;
    }
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T o = sigmoid(zo[j] + in(3, j));
      oo[j] = o;
      m[j] = o * tanh_approx(c[j]);
    }
  }
}

// Forward of one row. `z` (4H; 3H for CIFG) holds W_hh h' on entry; `x` (the same width) is the
// input projection, without the biases where p.bias holds them. Writes the activated gates
// [i f g o] ([f g o]) to `gates` (z when null; it may be x too: each unit's gates are read before
// they are written), c (H) and m (H). c may be c_prev (the Stepper updates it in place): c_prev
// is read before c is written, and the second loop reads the new c.
template <typename T>
inline void cell_forward_row(const CellParams<T>& p, T* z, const T* x, const T* c_prev, T* c,
                             T* m, const LNSaved<T>& ln, T* scratch, T* gates = nullptr) {
  if (gates == nullptr) gates = z;
  if (p.kind == kLayerNorm) {  // z is the norm's workspace; the gates go out at the end
    cell_forward_row_ln(p, z, x, c_prev, c, m, ln, scratch);
    if (gates != z) std::memcpy(gates, z, sizeof(T) * 4 * p.H);
  } else if (p.bias != nullptr) {
    cell_forward_gates<T, true>(p, z, x, c_prev, c, m, gates);
  } else {
    cell_forward_gates<T, false>(p, z, x, c_prev, c, m, gates);
  }
}

// Accumulators for the per-unit parameters of one thread (null where the cell has none).
template <typename T>
struct CellGrads {
  T* peep = nullptr;    // (3, H)
  T* ln_h_w = nullptr;  // (4H,)
  T* ln_h_b = nullptr;  // (4H,)
  T* ln_c_w = nullptr;  // (H,)
  T* ln_c_b = nullptr;  // (H,)
};

// cell_backward_row, with dm + dm_add for dm where kAdd.
template <typename T, bool kAdd>
inline void cell_backward_impl(const CellParams<T>& p, const T* gates, const T* c_prev,
                               const T* c, const T* dm_in, const T* dm_add, T* dc, T* dz, T* da,
                               const LNSaved<T>& ln, const CellGrads<T>& g_acc, T* m_out,
                               T* scratch) {
  const int64_t H = p.H;
  const int64_t gs = p.gates_stride ? p.gates_stride : H;
  // (an indexable dm whose element j is dm_in[j] + dm_add[j] where kAdd)
  struct Sum {
    const T* a;
    const T* b;
    T operator[](int64_t j) const { return kAdd ? a[j] + b[j] : a[j]; }
  } const dm{dm_in, dm_add};
  const T* gi = gates;
  const T* gf = gates + gs;
  const T* gg = gates + 2 * gs;
  const T* go = gates + 3 * gs;
  if (p.kind == kLayerNorm) {
    T* dchat = scratch;  // (H,) gradient of LN_c(c), then of c through the norm
    T* dcn = scratch + H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T xc = ln.xhat_c[j];
      const T th = tanh_approx(xc * p.ln_c_w[j] + p.ln_c_b[j]);
      const T o = go[j];
      if (m_out != nullptr) m_out[j] = o * th;
      dz[3 * H + j] = dm[j] * th * o * (T(1) - o);
      const T dy = dm[j] * o * (T(1) - th * th);
      g_acc.ln_c_w[j] += dy * xc;
      g_acc.ln_c_b[j] += dy;
      dchat[j] = dy * p.ln_c_w[j];
    }
    normalize_row_backward(dchat, ln.xhat_c, *ln.rstd_c, H, dcn);
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T i = gi[j], f = gf[j], g = gg[j];
      const T d = dc[j] + dcn[j];
      dz[j] = d * g * i * (T(1) - i);
      dz[H + j] = d * c_prev[j] * f * (T(1) - f);
      dz[2 * H + j] = d * i * (T(1) - g * g);
      dc[j] = d * f;
    }
    T* dxhat = scratch;  // (4H,) reuses the scratch
#pragma omp simd
    for (int64_t j = 0; j < 4 * H; ++j) {
      g_acc.ln_h_w[j] += dz[j] * ln.xhat_h[j];
      g_acc.ln_h_b[j] += dz[j];
      dxhat[j] = dz[j] * p.ln_h_w[j];
    }
    normalize_row_backward(dxhat, ln.xhat_h, *ln.rstd_h, 4 * H, da);
    return;
  }
  if (p.kind == kPeephole) {
    const T* pi = p.peep;
    const T* pf = p.peep + H;
    const T* po = p.peep + 2 * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T i = gi[j], f = gf[j], g = gg[j], o = go[j], cp = c_prev[j], cn = c[j];
      const T tc = tanh_approx(cn);
      if (m_out != nullptr) m_out[j] = o * tc;
      const T dzo = dm[j] * tc * o * (T(1) - o);
      const T d = dc[j] + dm[j] * o * (T(1) - tc * tc) + dzo * po[j];
      const T dzi = d * g * i * (T(1) - i);
      const T dzf = d * cp * f * (T(1) - f);
      dz[j] = dzi;
      dz[H + j] = dzf;
      dz[2 * H + j] = d * i * (T(1) - g * g);
      dz[3 * H + j] = dzo;
      dc[j] = d * f + dzi * pi[j] + dzf * pf[j];
      g_acc.peep[j] += dzi * cp;
      g_acc.peep[H + j] += dzf * cp;
      g_acc.peep[2 * H + j] += dzo * cn;
    }
  } else if (p.kind == kCIFG) {  // blocks [f g o]; i = 1 - f
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T f = gates[j], g = gates[gs + j], o = gates[2 * gs + j];
      const T tc = tanh_approx(c[j]);
      if (m_out != nullptr) m_out[j] = o * tc;
      const T d = dc[j] + dm[j] * o * (T(1) - tc * tc);
      dz[j] = d * (c_prev[j] - g) * f * (T(1) - f);
      dz[H + j] = d * (T(1) - f) * (T(1) - g * g);
      dz[2 * H + j] = dm[j] * tc * o * (T(1) - o);
      dc[j] = d * f;
    }
  } else {
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T i = gi[j], f = gf[j], g = gg[j], o = go[j];
      const T tc = tanh_approx(c[j]);
      if (m_out != nullptr) m_out[j] = o * tc;
      const T d = dc[j] + dm[j] * o * (T(1) - tc * tc);
      dz[j] = d * g * i * (T(1) - i);
      dz[H + j] = d * c_prev[j] * f * (T(1) - f);
      dz[2 * H + j] = d * i * (T(1) - g * g);
      dz[3 * H + j] = dm[j] * tc * o * (T(1) - o);
      dc[j] = d * f;
    }
  }
  if (da != dz) std::memcpy(da, dz, sizeof(T) * gate_blocks(p.kind) * H);
}

// Backward of one row. Given the saved gates (4H; 3H for CIFG), c' and c, dm (H) and the carried
// dc (H, updated in place to dc'), writes dz (the gates' width, the input projection's gradient)
// and da (the same width, the gradient of W_hh h'; the same as dz except in the layer-norm
// cell), and returns m in `m_out` if not null. With `dm_add` (H), the cell's dm is
// dm + dm_add, summed as each element is read (the output's gradient added to the carried dh,
// without a pass of their own over the row first).
template <typename T>
inline void cell_backward_row(const CellParams<T>& p, const T* gates, const T* c_prev,
                              const T* c, const T* dm, T* dc, T* dz, T* da,
                              const LNSaved<T>& ln, const CellGrads<T>& g_acc, T* m_out,
                              T* scratch, const T* dm_add = nullptr) {
  if (dm_add != nullptr)
    cell_backward_impl<T, true>(p, gates, c_prev, c, dm, dm_add, dc, dz, da, ln, g_acc, m_out,
                                scratch);
  else
    cell_backward_impl<T, false>(p, gates, c_prev, c, dm, dm_add, dc, dz, da, ln, g_acc, m_out,
                                 scratch);
}

}  // namespace lstmkit
