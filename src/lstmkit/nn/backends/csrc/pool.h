// A small cache of large CPU buffers, reused from call to call.
//
// Every forward/backward pass needs several buffers of T*B*4H values (the input projection, the
// saved gates, their gradients). Fresh allocations of that size come straight from the OS and
// pay one page fault per 4 KiB on first touch, which on some machines costs more than the
// arithmetic. The pool keeps buffers it handed out and hands one out again once nothing else
// holds its storage (use_count 1). It keeps at most `kMaxBytes`; `release()` empties it.
//
// From 128 KiB, glibc's first mmap threshold: above it a freed block may go back to the OS
// (unmapped, or trimmed off the heap's top), and the next call's faults again (a training call
// at (64, 100, 32, 128) had 4-46 of them a call with a 1 MiB floor, from the weight gradients,
// dx and the batch-first input's copy; about 1.3 µs each on this machine).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <list>
#include <mutex>

namespace lstmkit {

class BufferPool {
 public:
  static constexpr int64_t kMinBytes = int64_t(1) << 17;  // smaller ones are cheap to allocate
  static constexpr int64_t kMaxBytes = int64_t(2) << 30;  // never hold more than this

  static BufferPool& instance() {
    static BufferPool pool;
    return pool;
  }

  // An uninitialised tensor of `shape`, backed by a reused buffer when one is free.
  at::Tensor empty(at::IntArrayRef shape, const at::TensorOptions& opts) {
    int64_t numel = 1;
    for (int64_t s : shape) numel *= s;
    const int64_t bytes = numel * static_cast<int64_t>(c10::elementSize(opts.dtype().toScalarType()));
    if (bytes < kMinBytes || opts.device().type() != at::kCPU) return at::empty(shape, opts);
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      const int64_t have = it->nbytes();
      if (it->storage().use_count() == 1 && it->scalar_type() == opts.dtype().toScalarType() &&
          have >= bytes && have <= 2 * bytes) {
        at::Tensor buffer = *it;
        free_.splice(free_.begin(), free_, it);  // most recently used first
        return alias(buffer, shape, opts);
      }
    }
    at::Tensor buffer = at::empty({numel}, opts);
    free_.push_front(buffer);
    held_ += buffer.nbytes();
    trim();
    return alias(buffer, shape, opts);
  }

  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.clear();
    held_ = 0;
  }

  int64_t held_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return held_;
  }

 private:
  // A contiguous tensor of `shape` on the buffer's storage that is not a view of it: autograd
  // lets a caller edit a custom node's outputs in place only when they are not views.
  static at::Tensor alias(const at::Tensor& buffer, at::IntArrayRef shape,
                          const at::TensorOptions& opts) {
    return at::empty({0}, opts).set_(buffer.storage(), 0, shape);
  }

  void trim() {  // drop least recently used buffers beyond the cap
    while (held_ > kMaxBytes && !free_.empty()) {
      held_ -= free_.back().nbytes();
      free_.pop_back();
    }
  }

  std::mutex mutex_;
  std::list<at::Tensor> free_;
  int64_t held_ = 0;
};

inline at::Tensor pooled_empty(at::IntArrayRef shape, const at::TensorOptions& opts) {
  return BufferPool::instance().empty(shape, opts);
}

}  // namespace lstmkit
