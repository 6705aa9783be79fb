// Streaming inference: one new observation at a time through every layer, no autograd.
//
// A Stepper copies the weights once, transposed in column blocks for the row-major products
// (transposed_blocks, gemm.h), and keeps the state (h, c) of every layer. step(x) runs, per
// layer:  z = x W_ih^T (+ LN) + b + h' W_hh^T (+ LN), then the fused cell, then the
// projection; it returns a new tensor with the top layer's h.
#pragma once

#include "recurrence.h"

namespace lstmkit {

struct StepLayer {
  at::Tensor wih_t;   // (I, 4H), (I, 3H) for CIFG; all three in column blocks
  at::Tensor bias;    // (4H,) b_ih + b_hh, or zeros (3H for CIFG)
  at::Tensor whh_t;   // (P, 4H) (P, 3H for CIFG)
  at::Tensor whr_t;   // (H, P) or undefined
  at::Tensor peep;    // (3, H) or undefined
  std::vector<at::Tensor> ln;  // [ln_h_w, ln_h_b, ln_c_w, ln_c_b, ln_x_w, ln_x_b] or empty
};

class Stepper {
 public:
  // layers[l] = [w_ih, bias, w_hh, w_hr?, peep?, ln_h_w?, ln_h_b?, ln_c_w?, ln_c_b?, ln_x_w?,
  // ln_x_b?] with undefined (None) entries where the cell has none.
  Stepper(const std::vector<std::vector<std::optional<at::Tensor>>>& layers, int64_t kind,
          int64_t hidden, int64_t batch)
      : kind_(kind), H_(hidden), B_(batch) {
    for (const auto& w : layers) {
      StepLayer l;
      l.wih_t = transposed_blocks(*w[0]);
      l.bias = w[1]->contiguous();
      l.whh_t = transposed_blocks(*w[2]);
      if (w[3]) l.whr_t = transposed_blocks(*w[3]);
      if (w[4]) l.peep = w[4]->contiguous();
      if (kind == kLayerNorm)
        for (int k = 5; k < 11; ++k) l.ln.push_back(w[k]->contiguous());
      layers_.push_back(std::move(l));
    }
    const auto opts = layers_[0].whh_t.options();
    const int64_t P = layers_[0].whh_t.size(0);
    for (size_t i = 0; i < layers_.size(); ++i) {
      h_.push_back(at::zeros({B_, P}, opts));
      c_.push_back(at::zeros({B_, H_}, opts));
    }
    zx_ = at::empty({B_, gate_blocks(kind) * H_}, opts);
    zh_ = at::empty({B_, gate_blocks(kind) * H_}, opts);
    m_ = at::empty({B_, H_}, opts);
    scratch_ = at::empty({4 * H_}, opts);
  }

  at::Tensor step(const at::Tensor& x) {
    const at::Tensor& w = layers_[0].wih_t;  // (I, G)
    TORCH_CHECK(x.dim() == 2 && x.size(0) == B_ && x.size(1) == w.size(0), "Stepper.step: x must be (",
                B_, ", ", w.size(0), "), got ", x.sizes());
    TORCH_CHECK(x.scalar_type() == w.scalar_type() && x.device() == w.device(),
                "Stepper.step: x must be ", w.scalar_type(), " on ", w.device(), ", got ",
                x.scalar_type(), " on ", x.device());
    at::Tensor input = x.contiguous();
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lstmkit_step", [&] {
      for (size_t l = 0; l < layers_.size(); ++l) {
        step_layer<scalar_t>(layers_[l], input, h_[l], c_[l]);
        input = h_[l];
      }
    });
    return h_.back().clone();
  }

  std::vector<at::Tensor> hidden() const { return h_; }
  std::vector<at::Tensor> cells() const { return c_; }
  void set_state(const std::vector<at::Tensor>& h, const std::vector<at::Tensor>& c) {
    for (size_t l = 0; l < layers_.size(); ++l) {
      h_[l].copy_(h[l]);
      c_[l].copy_(c[l]);
    }
  }

 private:
  template <typename T>
  void step_layer(const StepLayer& l, const at::Tensor& x, at::Tensor& h, at::Tensor& c) {
    const int64_t I = l.wih_t.size(0), G = gate_blocks(kind_) * H_, P = l.whh_t.size(0);
    const bool proj = l.whr_t.defined();
    std::optional<at::Tensor> peep;
    if (l.peep.defined()) peep = l.peep;
    const CellParams<T> p = cell_params<T>(kind_, H_, peep, l.ln);
    T* zx = zx_.data_ptr<T>();
    T* zh = zh_.data_ptr<T>();
    T* hp = h.data_ptr<T>();
    T* cp = c.data_ptr<T>();
    const T* bias = l.bias.data_ptr<T>();
    gemm_blocks(B_, G, I, x.data_ptr<T>(), I, l.wih_t.data_ptr<T>(), zx, G);
    gemm_blocks(B_, G, P, hp, P, l.whh_t.data_ptr<T>(), zh, G);
    T* m = proj ? m_.data_ptr<T>() : hp;
    for (int64_t b = 0; b < B_; ++b) {
      T* zxb = zx + b * G;
      if (kind_ == kLayerNorm) {
        normalize_row(zxb, G, p.eps);
        const T* w = l.ln[4].data_ptr<T>();
        const T* s = l.ln[5].data_ptr<T>();
#pragma omp simd
        for (int64_t j = 0; j < G; ++j) zxb[j] = zxb[j] * w[j] + s[j] + bias[j];
      } else {
#pragma omp simd
        for (int64_t j = 0; j < G; ++j) zxb[j] += bias[j];
      }
      // c is updated in place: the cell reads c' before writing c, element by element
      cell_forward_row(p, zh + b * G, zxb, cp + b * H_, cp + b * H_, m + b * (proj ? H_ : P),
                       LNSaved<T>{}, scratch_.data_ptr<T>());
    }
    if (proj) gemm_blocks(B_, P, H_, m, H_, l.whr_t.data_ptr<T>(), hp, P);
  }

  int64_t kind_, H_, B_;
  std::vector<StepLayer> layers_;
  std::vector<at::Tensor> h_, c_;
  at::Tensor zx_, zh_, m_, scratch_;
};

}  // namespace lstmkit
