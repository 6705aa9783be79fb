// One layer, every direction, as a single autograd node written in C++.
//
//   layer(kind, directions, proj, bias_in_step, project, lengths, input, h0, c0, params)
//       -> [out (T, B, D*P), h_n (D, B, P), c_n (D, B, H)]
//
// With `project`, `input` is the layer's input x (T, B, I) and the node also runs the input
// projection, x W_ih^T for every step and direction in one GEMM, and its backward (dx in one
// GEMM, dW_ih with dW_hh, below). Without it (the layer-norm cell, whose norm of that
// projection is written in PyTorch ops), `input` is the projection (T, B, D*4H) itself.
//
// `params` holds, per direction: [W_ih if project] W_hh [W_hr] [peepholes (3, H)]
// [b_ih b_hh if bias_in_step] [the four layer-norm tensors]. The step adds b_ih + b_hh; both get
// the same gradient.
//
// One C++ node in place of two Python autograd Functions and a bias sum: at batch 1 a training
// call is mostly per-call overhead, and this is the part of it that is ours.
//
// The weight gradients of a direction come from GEMMs after its backward loop,
//   [dW_ih | dW_hh] = Σ_t dz_t^T [x_t | h_{t-1}],
// over the operand [x | h'] that the forward pass saves (previous_inputs), as weights.h computes
// them. Neither is saved nor run when no weight needs a gradient.
#pragma once

#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/graph_task.h>

#include "direction.h"
#include "weights.h"

namespace lstmkit {

struct LayerSpec {
  int64_t kind, directions;
  bool proj, bias_in_step, project;
};

// One direction's parameters, as views into `params`.
struct DirectionParams {
  at::Tensor w_ih, w_hh;  // w_ih undefined without `project`
  std::optional<at::Tensor> w_hr, peep, b_ih, b_hh;
  std::vector<at::Tensor> ln;
};

inline std::vector<DirectionParams> unpack(const LayerSpec& s, at::TensorList params) {
  const int64_t per = static_cast<int64_t>(params.size()) / s.directions;
  const int64_t fixed = int64_t(s.project) + 1 + int64_t(s.proj) + int64_t(s.kind == kPeephole) +
                        2 * int64_t(s.bias_in_step);
  const int64_t ln = s.kind == kLayerNorm ? 4 : 0;
  TORCH_CHECK(per * s.directions == static_cast<int64_t>(params.size()) && per == fixed + ln,
              "layer: expected ", (fixed + ln) * s.directions, " parameter tensors, got ",
              params.size());
  std::vector<DirectionParams> out(s.directions);
  for (int64_t d = 0; d < s.directions; ++d) {
    int64_t i = d * per;
    DirectionParams& p = out[d];
    if (s.project) p.w_ih = params[i++];
    p.w_hh = params[i++];
    if (s.proj) p.w_hr = params[i++];
    if (s.kind == kPeephole) p.peep = params[i++];
    if (s.bias_in_step) {
      p.b_ih = params[i++];
      p.b_hh = params[i++];
    }
    for (int64_t k = 0; k < ln; ++k) p.ln.push_back(params[i++].contiguous());
  }
  return out;
}

// W_ih of every direction, stacked: (D*4H, I).
inline at::Tensor input_weights(const std::vector<DirectionParams>& dirs) {
  if (dirs.size() == 1) return dirs[0].w_ih;
  std::vector<at::Tensor> w;
  for (const auto& p : dirs) w.push_back(p.w_ih);
  return at::cat(w);
}

struct LayerForward {
  at::Tensor out, h_n, c_n;
  std::vector<std::vector<at::Tensor>> saved;  // per direction, what backward() reads
};

// `operands`: per direction, the weight gradients' operand [x | h'] (previous_inputs), whose h'
// half the loop fills; empty when no weight needs a gradient.
inline LayerForward layer_forward(const LayerSpec& s, const std::optional<at::Tensor>& lengths,
                                  const at::Tensor& input, const at::Tensor& h0,
                                  const at::Tensor& c0,
                                  const std::vector<DirectionParams>& dirs, bool save,
                                  const std::vector<at::Tensor>& operands = {}) {
  const int64_t T = input.size(0), B = input.size(1);
  LayerForward r;
  at::Tensor xproj = input;
  if (s.project) {
    // a batch-first input (a transposed view) is copied, into a pooled buffer
    const at::Tensor x_flat = input.is_contiguous()
                                  ? input.view({T * B, input.size(2)})
                                  : pooled_empty(input.sizes(), input.options())
                                        .copy_(input)
                                        .view({T * B, input.size(2)});
    xproj = mm_fast(x_flat, input_weights(dirs).t()).view({T, B, -1});
  }
  const int64_t G = xproj.size(2) / s.directions, P = h0.size(2), H = c0.size(2);
  r.out = pooled_empty({T, B, s.directions * P}, xproj.options());
  // each direction writes its final state into its row: new tensors, never views (autograd lets
  // a caller edit a custom node's outputs in place only when they are not views)
  r.h_n = at::empty({s.directions, B, P}, xproj.options());
  r.c_n = at::empty({s.directions, B, H}, xproj.options());
  for (int64_t d = 0; d < s.directions; ++d) {
    const DirectionParams& p = dirs[d];
    std::optional<at::Tensor> bias;
    if (s.bias_in_step) bias = at::add(*p.b_ih, *p.b_hh);
    const at::Tensor hist =
        operands.empty() ? at::Tensor() : operands[d].narrow(2, operands[d].size(2) - P, P);
    std::vector<at::Tensor> res =
        forward(xproj.slice(2, d * G, (d + 1) * G), h0[d], c0[d], p.w_hh, p.w_hr, p.peep, bias,
                p.ln, lengths, d == 1, s.kind, save, r.out.slice(2, d * P, (d + 1) * P), hist,
                /*over_input=*/s.project, r.h_n[d], r.c_n[d]);
    std::vector<at::Tensor> kept;
    for (size_t k = 2; k < res.size(); ++k)
      if (res[k].defined()) kept.push_back(res[k]);
    r.saved.push_back(std::move(kept));
  }
  return r;
}

// The weight gradients' operand [x_t | h'_t] at every step t of one direction, (T, B, I + P), in
// time order, where h'_t is the state the step at t starts from: the direction's output one step
// earlier in its own order, or h0 at each sequence's first step (t = 0 forward, t = len - 1
// backward). Without x (I = 0), h' alone. This writes x and h0; the forward loop writes the rest
// of h' as it goes (History, recurrence.h), finite past each length, where dz is zero. x is the
// input as given (the Python layer zeroes it past each length, so that NaN padding stays out).
inline at::Tensor previous_inputs(const at::Tensor& x, const at::Tensor& h0,
                                  const std::optional<at::Tensor>& lengths, bool reverse,
                                  int64_t T, int64_t B) {
  const int64_t P = h0.size(1);
  const int64_t I = x.defined() ? x.size(2) : 0;
  at::Tensor xh = pooled_empty({T, B, I + P}, h0.options());
  // small inputs row by row (at batch 1 ATen's copies of the two slices cost more than the data
  // they move); large ones on ATen's copy, which shares them out among the threads
  const int64_t size = xh.element_size(), W = I + P;
  char* dst = static_cast<char*>(xh.data_ptr());
  const bool small = T * B * I < (int64_t(1) << 15);
  if (I > 0 && (!small || x.stride(2) != 1 || x.scalar_type() != xh.scalar_type())) {
    xh.narrow(2, 0, I).copy_(x);
  } else if (I > 0) {
    const char* src = static_cast<const char*>(x.data_ptr());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t b = 0; b < B; ++b)
        std::memcpy(dst + (t * B + b) * W * size, src + (t * x.stride(0) + b * x.stride(1)) * size,
                    I * size);
  }
  // h0 at each sequence's first step: t = 0 forward; backward its last valid one
  const at::Tensor h0c = h0.contiguous();  // (B, P)
  const char* h = static_cast<const char*>(h0c.data_ptr());
  const int64_t* len = lengths ? lengths->data_ptr<int64_t>() : nullptr;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t t = !reverse ? 0 : len ? len[b] - 1 : T - 1;
    std::memcpy(dst + ((t * B + b) * W + I) * size, h + b * P * size, P * size);
  }
  return xh;
}

// Every direction's saved gates as one (T, B, D*G) tensor laid out as dz, (B*D*G, D*G, 1), when
// they lie so (direction d's G columns at d*G of each row), else undefined. `first`: the index of
// direction 0's saved gates in `kept`, each direction's `per` tensors after it.
inline at::Tensor gates_in_one(const torch::autograd::variable_list& kept, int64_t first,
                               int64_t per, int64_t directions) {
  const at::Tensor& g0 = kept[first];
  const int64_t T = g0.size(0), B = g0.size(1), G = g0.size(2), W = directions * G;
  const auto lies_as_dz = [&](const at::Tensor& g, int64_t d) {
    return g.size(0) == T && g.size(1) == B && g.size(2) == G && g.stride(2) == 1 &&
           (B == 1 || g.stride(1) == W) && (T == 1 || g.stride(0) == B * W) &&
           g.storage().is_alias_of(g0.storage()) &&
           g.storage_offset() == g0.storage_offset() + d * G;
  };
  for (int64_t d = 0; d < directions; ++d)
    if (!lies_as_dz(kept[first + d * per], d)) return at::Tensor();
  if (directions == 1 && g0.is_contiguous()) return g0;
  return g0.as_strided({T, B, W}, {B * W, W, 1}, g0.storage_offset());
}

struct LayerFunction : public torch::autograd::Function<LayerFunction> {
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, int64_t kind, int64_t directions, bool proj,
      bool bias_in_step, bool project, const std::optional<at::Tensor>& lengths,
      const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
      at::TensorList params) {
    const LayerSpec s{kind, directions, proj, bias_in_step, project};
    const std::vector<DirectionParams> dirs = unpack(s, params);
    bool need_w_ih = false, need_w_hh = false;  // x is saved only for W_ih's gradient
    for (const auto& p : dirs) {
      need_w_ih = need_w_ih || (p.w_ih.defined() && p.w_ih.requires_grad());
      need_w_hh = need_w_hh || p.w_hh.requires_grad();
    }
    // The weight gradients' operand [x | h'], one contiguous buffer per direction, its h' filled
    // by the forward loop: a copy of the output, so the caller may edit the returned output in
    // place (an in-place ReLU or dropout) as with torch.nn.LSTM.
    std::vector<at::Tensor> operands;
    if (need_w_ih || need_w_hh)
      for (int64_t d = 0; d < directions; ++d)
        operands.push_back(previous_inputs(need_w_ih ? input : at::Tensor(), h0[d], lengths,
                                           d == 1, input.size(0), input.size(1)));
    LayerForward r = layer_forward(s, lengths, input, h0, c0, dirs, /*save=*/true, operands);
    ctx->set_materialize_grads(false);
    ctx->saved_data["kind"] = kind;
    ctx->saved_data["directions"] = directions;
    ctx->saved_data["proj"] = proj;
    ctx->saved_data["bias_in_step"] = bias_in_step;
    ctx->saved_data["project"] = project;
    ctx->saved_data["lengths"] = lengths;
    ctx->saved_data["num_params"] = static_cast<int64_t>(params.size());
    ctx->saved_data["num_saved"] = static_cast<int64_t>(r.saved[0].size());
    torch::autograd::variable_list keep{h0};
    for (int64_t d = 0; d < directions; ++d)
      keep.push_back(operands.empty() ? at::Tensor() : operands[d]);
    keep.insert(keep.end(), params.begin(), params.end());
    for (const auto& per_direction : r.saved) keep.insert(keep.end(), per_direction.begin(), per_direction.end());
    ctx->save_for_backward(keep);
    return {r.out, r.h_n, r.c_n};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "the kernel backend's backward pass cannot itself be differentiated "
                "(create_graph=True); run the layer with backend='reference' for higher-order "
                "gradients");
    const LayerSpec s{ctx->saved_data["kind"].toInt(), ctx->saved_data["directions"].toInt(),
                      ctx->saved_data["proj"].toBool(), ctx->saved_data["bias_in_step"].toBool(),
                      ctx->saved_data["project"].toBool()};
    const c10::IValue& len_value = ctx->saved_data["lengths"];
    const std::optional<at::Tensor> lengths =
        len_value.isNone() ? std::nullopt : std::optional<at::Tensor>(len_value.toTensor());
    const int64_t num_params = ctx->saved_data["num_params"].toInt();
    const int64_t num_saved = ctx->saved_data["num_saved"].toInt();
    const torch::autograd::variable_list kept = ctx->get_saved_variables();
    const at::Tensor& h0 = kept[0];
    const int64_t first_param = 1 + s.directions;  // after h0 and each direction's [x | h']
    const at::TensorList params(kept.data() + first_param, num_params);
    const std::vector<DirectionParams> dirs = unpack(s, params);
    const at::Tensor &g_out = grads[0], &g_hn = grads[1], &g_cn = grads[2];

    const at::Tensor& gates0 = kept[first_param + num_params];  // (T, B, G), saved first
    const int64_t T = gates0.size(0), B = gates0.size(1), P = h0.size(2);
    const int64_t G = dirs[0].w_hh.size(0);  // 4H (3H for the CIFG cell)
    // dz, the gradient of the input projection (every element written by the backward loops),
    // written over the saved gates where autograd frees the saved tensors after this pass: the
    // loops read each row (t, b) of the gates just before they write the same row of dz, and
    // the gates are saved in time order (recurrence.h). That keeps a buffer of (T, B, D*G) out of
    // the cache: at (64, 100, 32, 128) 13 MB of the call's 50, beside a 32 MB L3. Every
    // direction's gates must lie as dz does: one direction's contiguous (T, B, G), or all of them
    // in the one (T, B, D*G) projection they were written over (the row split with `project`).
    // (A saved-tensor pack hook that keeps its own reference to the gates sees them turn into
    // dz; autograd's own use of them ends here.)
    const at::Tensor over = gates_in_one(kept, first_param + num_params, num_saved, s.directions);
    const bool overwrite = over.defined() && !torch::autograd::get_current_graph_task_keep_graph();
    at::Tensor grad_xproj =
        overwrite ? over : pooled_empty({T, B, s.directions * G}, gates0.options());
    std::vector<at::Tensor> dh0, dc0;
    std::vector<std::vector<at::Tensor>> dparams(s.directions);
    for (int64_t d = 0; d < s.directions; ++d) {
      const DirectionParams& p = dirs[d];
      const int64_t first_saved = first_param + num_params + d * num_saved;
      const std::vector<at::Tensor> saved(kept.begin() + first_saved,
                                          kept.begin() + first_saved + num_saved);
      const at::Tensor dz = grad_xproj.slice(2, d * G, (d + 1) * G);
      // The biases' gradient, Σ dz over every step and row: summed in double by the loops, or,
      // where the weight gradients run on the BRGEMM micro-kernel (weights.h, which decides
      // with the same test on the same tensors), with them (one more row of their product, or
      // for one chunk of rows a plain sum), which spares the loops a pass over each row of dz
      // in double. (The layer-norm cell has no biases in the step: da there is not dz.)
      const at::Tensor& xh = kept[1 + d];  // undefined when no weight needs a gradient
      const at::Tensor xh_rows = xh.defined() ? xh.view({T * B, xh.size(2)}) : at::Tensor();
      const at::Tensor dz_rows = dz.view({T * B, G});  // (a slice of rows D G apart)
      const bool bias_in_product = s.bias_in_step && xh.defined() && s.kind != kLayerNorm &&
                                   chunked_gradients(dz_rows, xh_rows, /*bias=*/true);
      std::vector<at::Tensor> res = lstmkit::backward(
          g_out.defined() ? std::optional<at::Tensor>(g_out.slice(2, d * P, (d + 1) * P))
                          : std::nullopt,
          g_hn.defined() ? std::optional<at::Tensor>(g_hn[d]) : std::nullopt,
          g_cn.defined() ? std::optional<at::Tensor>(g_cn[d]) : std::nullopt, dz,
          h0[d].contiguous(), p.w_hh, p.w_hr, p.peep, p.ln, lengths, d == 1, s.kind,
          s.bias_in_step && !bias_in_product, saved);
      dh0.push_back(res[0]);
      dc0.push_back(res[1]);
      // [dW_ih | dW_hh] (weight_gradients), from dz (or from da, before the layer norm:
      // res[2]), each returned contiguous (a view of the product would fail a hook's or
      // autograd.grad caller's .view(); AccumulateGrad takes a contiguous one over as it is);
      // with bias_in_product, the biases' gradient too
      at::Tensor dw_ih, dw_hh, db = bias_in_product ? at::Tensor() : res[5];
      if (xh.defined()) {
        const int64_t I = xh.size(2) - P;  // x's columns (0 without W_ih's gradient)
        const at::Tensor da_rows = s.kind == kLayerNorm ? res[2].reshape({T * B, G}) : dz_rows;
        const std::vector<at::Tensor> dw = weight_gradients(da_rows, xh_rows, I, bias_in_product);
        dw_ih = dw[0];
        dw_hh = dw[1];
        if (bias_in_product) {
          TORCH_CHECK(dw[2].defined(), "layer backward: the weight gradients' products did not "
                      "sum the biases' gradient for a (", T * B, ", ", G, ") dz");
          db = dw[2];
        }
      }
      // res: dh0, dc0, da, dW_hr, dpeep, dbias, dln... (undefined where the cell has none)
      std::vector<at::Tensor>& dp = dparams[d];
      if (s.project) dp.push_back(dw_ih);
      dp.push_back(dw_hh);
      if (s.proj) dp.push_back(res[3]);
      if (s.kind == kPeephole) dp.push_back(res[4]);
      if (s.bias_in_step) {
        dp.push_back(db);
        dp.push_back(db);  // b_hh: the same sum as b_ih
      }
      for (size_t k = 6; k < res.size(); ++k) dp.push_back(res[k]);
    }

    // Edges: one per tensor argument that was given (lengths, when given, is the first).
    const size_t edge0 = lengths ? 1 : 0;
    at::Tensor d_input;
    if (!s.project) {
      if (ctx->needs_input_grad(edge0)) d_input = grad_xproj;
    } else if (ctx->needs_input_grad(edge0)) {
      const at::Tensor flat = grad_xproj.view({T * B, s.directions * G});
      d_input = mm_fast(flat, input_weights(dirs)).view({T, B, dirs[0].w_ih.size(1)});
    }
    torch::autograd::variable_list result(6);  // kind .. lengths: no gradient
    result.push_back(d_input);
    result.push_back(s.directions == 1 ? dh0[0].unsqueeze(0) : at::stack(dh0));
    result.push_back(s.directions == 1 ? dc0[0].unsqueeze(0) : at::stack(dc0));
    for (auto& dp : dparams) result.insert(result.end(), dp.begin(), dp.end());
    return result;
  }
};

// Python entry: the node when a gradient is needed, else the same forward without saving.
inline std::vector<at::Tensor> layer(int64_t kind, int64_t directions, bool proj,
                                     bool bias_in_step, bool project,
                                     const std::optional<at::Tensor>& lengths,
                                     const at::Tensor& input, const at::Tensor& h0,
                                     const at::Tensor& c0, const std::vector<at::Tensor>& params) {
  TORCH_CHECK(input.dim() == 3 && input.size(0) > 0,
              "layer: the input must be (T, B, features) with at least one step, got shape ",
              input.sizes());
  bool needs_grad = false;
  if (at::GradMode::is_enabled()) {
    needs_grad = input.requires_grad() || h0.requires_grad() || c0.requires_grad();
    for (const auto& t : params) needs_grad = needs_grad || t.requires_grad();
  }
  if (needs_grad)
    return LayerFunction::apply(kind, directions, proj, bias_in_step, project, lengths, input, h0,
                                c0, at::TensorList(params));
  const LayerSpec s{kind, directions, proj, bias_in_step, project};
  LayerForward r = layer_forward(s, lengths, input, h0, c0, unpack(s, params), /*save=*/false);
  return {r.out, r.h_n, r.c_n};
}

}  // namespace lstmkit
