// A barrier for the threads of one OpenMP parallel region, spinning on one cache line.
//
// The unit split (columns.h) meets a barrier at every step: 200 in a training call at
// (1, 100, 32, 128). libgomp's `#pragma omp barrier` costs about 200 ns here against about
// 55 ns for this one (2 threads, no work between barriers), and in that loop the difference
// is a tenth of a step. A thread that has spun for a while sleeps (std::atomic::wait, a futex on
// Linux) until the last one wakes it, so that a team with more threads than free cores, whose
// last thread may be waiting for a core, is not held up by the others' spinning.
//
// Sense-reversing: each thread flips its own sense at every arrival; the last to arrive resets the
// count and publishes the new sense, which releases the others. The count's acq_rel and the
// sense's release/acquire make every write before the barrier visible after it.
//
// A wait is an arrive() and an await_all(), which a thread may also call apart, with work
// between them that needs nothing from the others: that work then overlaps their arrival and
// the cache line's trip between the CPUs (the unit split's loops, forward and backward:
// columns.h).
#pragma once

#include <atomic>
#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LSTMKIT_PAUSE() _mm_pause()
#else
#define LSTMKIT_PAUSE() ((void)0)
#endif

namespace lstmkit {

// How many times a waiting thread checks (with a pause, about 24 ns here) before it sleeps;
// settable from Python so that tests can run the sleeping path.
inline int64_t& barrier_spins() {
  static int64_t spins = 512;  // about 12 µs
  return spins;
}

class SpinBarrier {
 public:
  // `threads`: the team's size (omp_get_num_threads() inside the region); `sense`: the calling
  // thread's own flag, 0 before its first wait.
  void wait(int64_t threads, int& sense) {
    arrive(threads, sense);
    await_all(sense);
  }

  // This thread has done its share of the step: its writes so far are visible to any thread
  // whose await_all() for this barrier returns.
  void arrive(int64_t threads, int& sense) {
    sense ^= 1;
    if (count_.fetch_add(1, std::memory_order_acq_rel) == threads - 1) {
      count_.store(0, std::memory_order_relaxed);
      // seq_cst, not release: notify_all first reads whether anyone sleeps, and that read must
      // not move ahead of this store (a sleeper would be missed)
      sense_.store(sense, std::memory_order_seq_cst);
      sense_.notify_all();
    }
  }

  // Returns once every thread has arrived at the barrier this thread last arrived at (`sense`
  // as that arrive() left it).
  void await_all(int sense) {
    for (int64_t spins = 0, limit = barrier_spins(); spins < limit; ++spins) {
      if (sense_.load(std::memory_order_acquire) == sense) return;
      LSTMKIT_PAUSE();
    }
    for (int seen = 1 - sense; seen != sense; seen = sense_.load(std::memory_order_acquire))
      sense_.wait(seen, std::memory_order_acquire);  // sleeps until notified of a change
  }

 private:
  alignas(64) std::atomic<int64_t> count_{0};
  alignas(64) std::atomic<int> sense_{0};
};

}  // namespace lstmkit
