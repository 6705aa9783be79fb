// lstmkit's CPU kernel: the LSTM recurrence with its loop over time in C++.
//
// Python entry points (built at first use by lstmkit.nn.backends.kernel):
//   layer(kind, directions, proj, bias_in_step, project, lengths, input, h0, c0, params)
//                                                       one layer as one autograd node (layer.h)
//   forward(xproj, h0, c0, w_hh, w_hr, peep, bias, ln, lengths, reverse, kind, save, out)
//   backward(grad_out, grad_hn, grad_cn, grad_xproj, h0, w_hh, w_hr, peep, ln, lengths,
//            reverse, kind, with_bias, saved)     one direction's loop (dW_ih, dW_hh: layer.h)
//   Stepper(layers, kind, hidden, batch).step(x)       streaming inference
//   pair_forward(xq, hh, c0, peep, kind), pair_backward(dh, xq, hh, c0, peep, kind)
//                                                       one step for every (state, input) pair
//   weight_gradients(da, operand, inputs, bias=False)   dW_ih, dW_hh (and db) as the layer does
//   activation(x, name)                                 the cells' exp, sigmoid or tanh
//   set_column_split_min_work(n)                        small-batch threading threshold
//   set_cpu_count_override(n)                           more threads than CPUs (tests)
// All tensors are CPU, float32 or float64; time-major (T, B, F) with the last dim contiguous.
#include <torch/extension.h>

#include "layer.h"
#include "pairs.h"
#include "stepper.h"

namespace lstmkit {

// y (N, F) = x (N, I) @ w^T (I, F) through mm_fast (benchmarks/kernels.py measures its rate).
at::Tensor linear_forward(const at::Tensor& x, const at::Tensor& w) { return mm_fast(x, w.t()); }

at::Tensor empty(const std::vector<int64_t>& shape, const at::Tensor& like) {
  return pooled_empty(shape, like.options());
}

void release_buffers() { BufferPool::instance().release(); }

int64_t held_bytes() { return BufferPool::instance().held_bytes(); }

// One of the cells' activations ("exp", "sigmoid" or "tanh") of every element of a float32
// or float64 tensor, as the loops compute it (tests check its error against float64).
at::Tensor activation(const at::Tensor& x, const std::string& name) {
  TORCH_CHECK(name == "exp" || name == "sigmoid" || name == "tanh",
              "activation: expected 'exp', 'sigmoid' or 'tanh', got '", name, "'");
  const at::Tensor in = x.contiguous();
  at::Tensor out = at::empty_like(in);
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "lstmkit_activation", [&] {
    const scalar_t* a = in.data_ptr<scalar_t>();
    scalar_t* b = out.data_ptr<scalar_t>();
    const int64_t n = in.numel();
    if (name == "exp") {
      for (int64_t i = 0; i < n; ++i) b[i] = exp_approx(a[i]);
    } else if (name == "sigmoid") {
      for (int64_t i = 0; i < n; ++i) b[i] = sigmoid(a[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) b[i] = tanh_approx(a[i]);
    }
  });
  return out;
}

bool has_onednn_matmul() { return &at::native::mkldnn_matmul != nullptr; }

// The least G * P (G = 4H, 3H for CIFG) for which small batches split hidden units across threads (columns.h);
// returns the previous value. Tests lower it to run that path at small sizes.
int64_t set_column_split_min_work(int64_t min_work) {
  const int64_t previous = column_split_min_work();
  column_split_min_work() = min_work;
  return previous;
}

// How long a thread waits at the unit split's barrier before it sleeps (barrier.h), in spins;
// returns the previous value. Tests set 0 to run the sleeping path.
int64_t set_barrier_spins(int64_t spins) {
  const int64_t previous = barrier_spins();
  barrier_spins() = spins;
  return previous;
}

// The CPU count the kernel's threading assumes (0: the process's own); returns the previous
// value. Tests set more than the machine has, so that the unit split runs 3 or 4 threads.
int64_t set_cpu_count_override(int64_t cpus) {
  const int64_t previous = cpu_count_override();
  cpu_count_override() = cpus;
  return previous;
}

// Threads the unit split would use for a batch of `batch` rows (1: it would not be used).
int64_t column_split_threads(int64_t batch, int64_t hidden, int64_t proj_size, int64_t kind) {
  const int64_t P = proj_size > 0 ? proj_size : hidden;
  return column_threads(Shapes{1, batch, hidden, gate_blocks(kind) * hidden, P}, kind,
                        proj_size > 0);
}

}  // namespace lstmkit

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "lstmkit CPU kernel: LSTM forward/backward through time and streaming steps";
  m.def("forward", [](const at::Tensor& xproj, const at::Tensor& h0, const at::Tensor& c0,
                      const at::Tensor& w_hh, const std::optional<at::Tensor>& w_hr,
                      const std::optional<at::Tensor>& peep, const std::optional<at::Tensor>& bias,
                      const std::vector<at::Tensor>& ln, const std::optional<at::Tensor>& lengths,
                      bool reverse, int64_t kind, bool save, at::Tensor out) {
    return lstmkit::forward(xproj, h0, c0, w_hh, w_hr, peep, bias, ln, lengths, reverse, kind,
                            save, out);
  });
  m.def("backward", &lstmkit::backward);
  m.def("linear_forward", &lstmkit::linear_forward);
  m.def("weight_gradients", &lstmkit::weight_gradients, pybind11::arg("da"),
        pybind11::arg("operand"), pybind11::arg("inputs"), pybind11::arg("bias") = false);
  m.def("layer", &lstmkit::layer);
  m.def("pair_forward", &lstmkit::pair_forward);
  m.def("pair_backward", &lstmkit::pair_backward);
  m.def("activation", &lstmkit::activation);
  m.def("has_onednn_matmul", &lstmkit::has_onednn_matmul);
  m.def("set_column_split_min_work", &lstmkit::set_column_split_min_work);
  m.def("column_split_threads", &lstmkit::column_split_threads);
  m.def("set_barrier_spins", &lstmkit::set_barrier_spins);
  m.def("set_cpu_count_override", &lstmkit::set_cpu_count_override);
  m.def("empty", &lstmkit::empty);
  m.def("release_buffers", &lstmkit::release_buffers);
  m.def("held_bytes", &lstmkit::held_bytes);
  pybind11::class_<lstmkit::Stepper>(m, "Stepper")
      .def(pybind11::init<const std::vector<std::vector<std::optional<at::Tensor>>>&, int64_t,
                          int64_t, int64_t>())
      .def("step", &lstmkit::Stepper::step)
      .def("hidden", &lstmkit::Stepper::hidden)
      .def("cells", &lstmkit::Stepper::cells)
      .def("set_state", &lstmkit::Stepper::set_state);
}
