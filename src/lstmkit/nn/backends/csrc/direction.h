// One direction of one layer: the entry points that pick the threading (rows or hidden units,
// columns.h) and the dtype, forward and backward through time.
#pragma once

#include "backward.h"

namespace lstmkit {

inline std::vector<at::Tensor> forward(const at::Tensor& xproj, const at::Tensor& h0,
                                const at::Tensor& c0, const at::Tensor& w_hh,
                                const std::optional<at::Tensor>& w_hr,
                                const std::optional<at::Tensor>& peep,
                                const std::optional<at::Tensor>& bias,
                                const std::vector<at::Tensor>& ln,
                                const std::optional<at::Tensor>& lengths, bool reverse,
                                int64_t kind, bool save, at::Tensor out,
                                const at::Tensor& hist = at::Tensor(), bool over_input = false,
                                const at::Tensor& h_out = at::Tensor(),
                                const at::Tensor& c_out = at::Tensor()) {
  TORCH_CHECK(!bias || (bias->is_contiguous() && bias->numel() == xproj.size(2)),
              "bias must be contiguous with one value per gate pre-activation");
  TORCH_CHECK(xproj.stride(2) == 1 && out.stride(2) == 1, "last dim must be contiguous");
  std::vector<at::Tensor> result;
  const Shapes n{xproj.size(0), xproj.size(1), c0.size(1), xproj.size(2), h0.size(1)};
  const int64_t ncol = column_threads(n, kind, w_hr.has_value());
  AT_DISPATCH_FLOATING_TYPES(xproj.scalar_type(), "lstmkit_forward", [&] {
    result = ncol > 1 ? forward_columns<scalar_t>(xproj, h0, c0, w_hh, peep, bias, lengths,
                                                  reverse, kind, save, out, hist, ncol, h_out,
                                                  c_out)
                      : forward_direction<scalar_t>(xproj, h0, c0, w_hh, w_hr, peep, bias, ln,
                                                    lengths, reverse, kind, save, out, hist,
                                                    over_input, h_out, c_out);
  });
  return result;
}

inline std::vector<at::Tensor> backward(const std::optional<at::Tensor>& grad_out,
                                 const std::optional<at::Tensor>& grad_hn,
                                 const std::optional<at::Tensor>& grad_cn, at::Tensor grad_xproj,
                                 const at::Tensor& h0,
                                 const at::Tensor& w_hh, const std::optional<at::Tensor>& w_hr,
                                 const std::optional<at::Tensor>& peep,
                                 const std::vector<at::Tensor>& ln,
                                 const std::optional<at::Tensor>& lengths, bool reverse,
                                 int64_t kind, bool with_bias,
                                 const std::vector<at::Tensor>& saved) {
  TORCH_CHECK(grad_xproj.stride(2) == 1, "last dim must be contiguous");
  std::vector<at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(grad_xproj.scalar_type(), "lstmkit_backward", [&] {
    result = backward_direction<scalar_t>(grad_out, grad_hn, grad_cn, grad_xproj, h0, w_hh,
                                          w_hr, peep, ln, lengths, reverse, kind, with_bias,
                                          saved);
  });
  return result;
}

}  // namespace lstmkit
